/* config: defaults, real files + flags + environment and their precedence, every rejection with
 * its exact message, secrets files, reload semantics (a bad file leaves the running config
 * alone), agreement with selector.c's parser, and docs/agent-config.md naming every key and flag.
 * Leaks after failed loads are caught by LeakSanitizer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "selector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARGC(a) ((int)(sizeof(a) / sizeof(a)[0]))

static char tmpdir[64];
static char cfgpath[128];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/conprof-config-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(cfgpath, sizeof cfgpath, "%s/agent.json", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *text)
{
    static char path[160];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Writes `json` as the config file (unless NULL), parses argv, loads. "" on success (cfg
 * filled), else the error message (cfg empty). */
static const char *load(const char *json, int argc, char **argv, const struct config_env *env,
                        struct agent_config *cfg)
{
    static struct cp_err err;
    if (json) write_file("agent.json", json);
    struct config_args args;
    struct config_env none = {0};
    memset(cfg, 0, sizeof *cfg);
    if (config_args_parse(argc, argv, &args, &err) < 0) {
        assert_null(args.labels);
        return err.msg;
    }
    int r = config_load(&args, env ? env : &none, cfg, &err);
    config_args_free(&args);
    if (r == 0) return "";
    assert_null(cfg->sink.dir);
    assert_null(cfg->labels);
    return err.msg;
}

static const char *load_file(const char *json, struct agent_config *cfg)
{
    char *argv[] = {"run", "--config", cfgpath};
    return load(json, ARGC(argv), argv, NULL, cfg);
}

/* The message of a rejected file, without the "config <path>: " prefix. */
static const char *file_error(const char *json)
{
    struct agent_config cfg;
    const char *msg = load_file(json, &cfg);
    if (!msg[0]) {
        config_free(&cfg);
        fail_msg("accepted: %s", json);
    }
    char prefix[200];
    snprintf(prefix, sizeof prefix, "config %s: ", cfgpath);
    if (!strncmp(msg, prefix, strlen(prefix))) return msg + strlen(prefix);
    return msg;
}

static const char *args_error(int argc, char **argv)
{
    struct agent_config cfg;
    const char *msg = load(NULL, argc, argv, NULL, &cfg);
    if (!msg[0]) config_free(&cfg);
    return msg;
}

static void test_defaults(void **state)
{
    (void)state;
    struct agent_config c;
    char *argv[] = {"run"};
    assert_string_equal(load(NULL, 1, argv, NULL, &c), "");
    assert_null(c.file);
    assert_int_equal(c.rate_hz, 100);
    assert_int_equal(c.period_s, 45);
    assert_int_equal(c.upload_timeout_s, 10);
    assert_int_equal(c.discovery_interval_s, 5);
    assert_int_equal(c.sink.type, SINK_DIR);
    assert_string_equal(c.sink.dir, "/var/lib/conprof/profiles");
    assert_null(c.sink.url);
    assert_null(c.sink.bearer_token);
    assert_string_equal(c.spool.dir, "/var/lib/conprof/spool");
    assert_int_equal(c.spool.max_bytes, 64u << 20);
    assert_int_equal(json_array_size(c.selectors), 0);
    assert_int_equal(json_object_size(c.labels), 0);
    assert_string_equal(c.status_socket, "/run/conprof/agent.sock");
    assert_null(c.metrics_listen);
    assert_false(c.metrics_allow_remote);
    assert_false(c.kubelet.enabled);
    assert_string_equal(c.kubelet.url, "https://127.0.0.1:10250");
    assert_string_equal(c.kubelet.token_file,
                        "/var/run/secrets/kubernetes.io/serviceaccount/token");
    assert_int_equal(c.log_level, CONFIG_LOG_INFO);
    assert_string_equal(config_log_level_name(c.log_level), "info");
    assert_null(c.node_name);
    config_free(&c);
}

static void test_full_file(void **state)
{
    (void)state;
    char token[200];
    snprintf(token, sizeof token, "%s", write_file("token", "s3cr3t-token\n"));
    char ca[200];
    snprintf(ca, sizeof ca, "%s", write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n"));
    char json[2048];
    snprintf(json, sizeof json,
             "{\"rate_hz\": 250, \"period_s\": 60, \"upload_timeout_s\": 20,"
             " \"discovery_interval_s\": 2,"
             " \"sink\": {\"type\": \"http\", \"url\": \"https://pyro:4040\","
             "   \"bearer_token_file\": \"%s\", \"ca_file\": \"%s\"},"
             " \"spool\": {\"dir\": \"/data/spool\", \"max_bytes\": 1048576},"
             " \"selectors\": [{\"project\": \"p1\", \"environment\": \"main\"},"
             "   {\"k8s_namespace\": \"shop\", \"k8s_labels\": {\"app\": \"web\"},"
             "    \"container_id\": \"3F9A0E7C1B2D\"}],"
             " \"labels\": {\"team\": \"core\", \"region.zone\": \"eu-1\"},"
             " \"status_socket\": \"/tmp/x/agent.sock\", \"metrics_listen\": \"[::1]:9464\","
             " \"metrics_allow_remote\": false,"
             " \"kubelet\": {\"enabled\": true, \"url\": \"https://10.0.0.1:10250\","
             "   \"token_file\": \"/t\", \"ca_file\": \"/c\"},"
             " \"log_level\": \"debug\", \"node_name\": \"node-7.eu\"}",
             token, ca);
    struct agent_config c;
    assert_string_equal(load_file(json, &c), "");
    assert_string_equal(c.file, cfgpath);
    assert_int_equal(c.rate_hz, 250);
    assert_int_equal(c.period_s, 60);
    assert_int_equal(c.upload_timeout_s, 20);
    assert_int_equal(c.discovery_interval_s, 2);
    assert_int_equal(c.sink.type, SINK_HTTP);
    assert_string_equal(c.sink.url, "https://pyro:4040");
    assert_string_equal(c.sink.bearer_token_file, token);
    assert_string_equal(c.sink.bearer_token, "s3cr3t-token");
    assert_string_equal(c.sink.ca_file, ca);
    assert_string_equal(c.spool.dir, "/data/spool");
    assert_int_equal(c.spool.max_bytes, 1048576);
    assert_int_equal(json_array_size(c.selectors), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(c.selectors, 0), "project")), "p1");
    assert_string_equal(json_string_value(json_object_get(c.labels, "region.zone")), "eu-1");
    assert_string_equal(c.status_socket, "/tmp/x/agent.sock");
    assert_string_equal(c.metrics_listen, "[::1]:9464");
    assert_true(c.kubelet.enabled);
    assert_string_equal(c.kubelet.url, "https://10.0.0.1:10250");
    assert_string_equal(c.kubelet.token_file, "/t");
    assert_string_equal(c.kubelet.ca_file, "/c");
    assert_int_equal(c.log_level, CONFIG_LOG_DEBUG);
    assert_string_equal(c.node_name, "node-7.eu");

    /* what config accepted, selector.c accepts too */
    struct selector_list list;
    struct cp_err err;
    assert_int_equal(selector_list_parse(c.selectors, "selectors", &list, &err), 0);
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[1].container_id, "3f9a0e7c1b2d");
    selector_list_free(&list);
    config_free(&c);
}

static void test_precedence(void **state)
{
    (void)state;
    const char *json = "{\"rate_hz\": 50, \"period_s\": 30, \"node_name\": \"file-node\","
                       " \"log_level\": \"warn\","
                       " \"sink\": {\"type\": \"http\", \"url\": \"http://file:4040\"}}";
    struct config_env env = {.sink_url = "http://env:4040",
                             .node_name = "env-node",
                             .log_level = "debug",
                             .bearer_token_file = ""};
    struct agent_config c;

    char *flags[] = {"run", "--config", cfgpath, "--rate", "200", "--node-name=flag-node"};
    assert_string_equal(load(json, ARGC(flags), flags, &env, &c), "");
    assert_int_equal(c.rate_hz, 200);                   /* flag over file */
    assert_int_equal(c.period_s, 30);                   /* file over default */
    assert_string_equal(c.node_name, "flag-node");      /* flag over env over file */
    assert_string_equal(c.sink.url, "http://env:4040"); /* env over file */
    assert_int_equal(c.log_level, CONFIG_LOG_DEBUG);
    config_free(&c);

    char *no_flags[] = {"run", "--config", cfgpath};
    assert_string_equal(load(json, ARGC(no_flags), no_flags, &env, &c), "");
    assert_int_equal(c.rate_hz, 50);
    assert_string_equal(c.node_name, "env-node");
    config_free(&c);

    assert_string_equal(load(json, ARGC(no_flags), no_flags, NULL, &c), "");
    assert_string_equal(c.node_name, "file-node");
    assert_string_equal(c.sink.url, "http://file:4040");
    assert_int_equal(c.log_level, CONFIG_LOG_WARN);
    config_free(&c);

    /* --sink-dir beats both the file's and the environment's HTTP sink */
    char *dir[] = {"run", "--config", cfgpath, "--sink-dir", "/out"};
    assert_string_equal(load(json, ARGC(dir), dir, &env, &c), "");
    assert_int_equal(c.sink.type, SINK_DIR);
    assert_string_equal(c.sink.dir, "/out");
    config_free(&c);

    /* CONPROF_SINK_URL turns a default directory sink into an HTTP one */
    char *none[] = {"run"};
    struct config_env url_only = {.sink_url = "https://ingest.example:443/base"};
    assert_string_equal(load(NULL, 1, none, &url_only, &c), "");
    assert_int_equal(c.sink.type, SINK_HTTP);
    assert_string_equal(c.sink.url, "https://ingest.example:443/base");
    config_free(&c);
}

static void test_config_file_from_env(void **state)
{
    (void)state;
    write_file("other.json", "{\"rate_hz\": 7}");
    char other[200];
    snprintf(other, sizeof other, "%s/other.json", tmpdir);
    struct config_env env = {.config = other};
    struct agent_config c;
    char *none[] = {"run"};
    assert_string_equal(load("{\"rate_hz\": 9}", 1, none, &env, &c), "");
    assert_int_equal(c.rate_hz, 7);
    assert_string_equal(c.file, other);
    config_free(&c);
    char *flag[] = {"run", "--config", cfgpath}; /* --config wins over CONPROF_CONFIG */
    assert_string_equal(load("{\"rate_hz\": 9}", ARGC(flag), flag, &env, &c), "");
    assert_int_equal(c.rate_hz, 9);
    config_free(&c);
    struct config_env missing = {.config = "/nonexistent/agent.json"};
    assert_string_equal(load(NULL, 1, none, &missing, &c),
                        "config: cannot open /nonexistent/agent.json: No such file or directory");
}

static void test_labels_merge_selectors_replace(void **state)
{
    (void)state;
    const char *json = "{\"labels\": {\"a\": \"1\", \"b\": \"2\"},"
                       " \"selectors\": [{\"project\": \"p\"}, {\"application\": \"x\"}]}";
    char *argv[] = {"run",     "--config",   cfgpath,
                    "--label", "b=3=three",  "--label",
                    "c=",      "--selector", "project=q,k8s_labels.app=web,environment=main"};
    struct agent_config c;
    assert_string_equal(load(json, ARGC(argv), argv, NULL, &c), "");
    assert_int_equal(json_object_size(c.labels), 3);
    assert_string_equal(json_string_value(json_object_get(c.labels, "a")), "1");
    assert_string_equal(json_string_value(json_object_get(c.labels, "b")), "3=three");
    assert_string_equal(json_string_value(json_object_get(c.labels, "c")), "");
    assert_int_equal(json_array_size(c.selectors), 1);
    json_t *sel = json_array_get(c.selectors, 0);
    assert_string_equal(json_string_value(json_object_get(sel, "project")), "q");
    assert_string_equal(json_string_value(json_object_get(sel, "environment")), "main");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(sel, "k8s_labels"), "app")), "web");
    config_free(&c);

    /* an empty --selector selects everything, as {} does */
    char *all[] = {"run", "--selector", ""};
    assert_string_equal(load(NULL, ARGC(all), all, NULL, &c), "");
    assert_int_equal(json_object_size(json_array_get(c.selectors, 0)), 0);
    config_free(&c);

    /* but KEY= with nothing after it is a mistake, not "any" */
    char *empty_value[] = {"run", "--selector", "environment=main,project="};
    assert_string_equal(args_error(ARGC(empty_value), empty_value),
                        "--selector 'environment=main,project=': project= has no value; leave "
                        "project out to match any value");
}

static void test_sink_type_inferred(void **state)
{
    (void)state;
    struct agent_config c;
    assert_string_equal(load_file("{\"sink\": {\"url\": \"http://127.0.0.1:4040\"}}", &c), "");
    assert_int_equal(c.sink.type, SINK_HTTP);
    config_free(&c);
    assert_string_equal(load_file("{\"sink\": {\"dir\": \"/p\"}}", &c), "");
    assert_int_equal(c.sink.type, SINK_DIR);
    assert_string_equal(c.sink.dir, "/p");
    config_free(&c);
}

struct rejection {
    const char *json;
    const char *message;
};

static const struct rejection FILE_REJECTIONS[] = {
    {"{\"spool\": {\"max_bytes\": \"big\"}}",
     "spool.max_bytes: expected an integer >= 1048576, got \"big\""},
    {"{\"spool\": {\"max_bytes\": 1000}}",
     "spool.max_bytes: expected an integer >= 1048576, got 1000"},
    {"{\"rate_hz\": 0}", "rate_hz: expected an integer from 1 to 1000, got 0"},
    {"{\"rate_hz\": 1001}", "rate_hz: expected an integer from 1 to 1000, got 1001"},
    {"{\"rate_hz\": 100.0}", "rate_hz: expected an integer from 1 to 1000, got 100.0"},
    {"{\"rate_hz\": null}", "rate_hz: expected an integer from 1 to 1000, got null"},
    {"{\"period_s\": 0}", "period_s: expected an integer from 1 to 3600, got 0"},
    {"{\"period_s\": 3601}", "period_s: expected an integer from 1 to 3600, got 3601"},
    {"{\"upload_timeout_s\": 301}", "upload_timeout_s: expected an integer from 1 to 300, got 301"},
    {"{\"discovery_interval_s\": \"5\"}",
     "discovery_interval_s: expected an integer from 1 to 60, got \"5\""},
    {"{\"typo\": 1}",
     "typo: unknown key (expected one of rate_hz, period_s, upload_timeout_s, "
     "discovery_interval_s, sink, spool, selectors, labels, status_socket, metrics_listen, "
     "metrics_allow_remote, kubelet, console, log_level, node_name)"},
    {"{\"sink\": {\"kind\": \"dir\"}}",
     "sink.kind: unknown key (expected one of type, dir, url, bearer_token_file, ca_file)"},
    {"{\"spool\": {\"size\": 1}}", "spool.size: unknown key (expected one of dir, max_bytes)"},
    {"{\"kubelet\": {\"port\": 1}}",
     "kubelet.port: unknown key (expected one of enabled, url, token_file, ca_file)"},
    {"{\"sink\": {\"type\": \"s3\"}}", "sink.type: expected one of \"dir\", \"http\", got \"s3\""},
    {"{\"sink\": \"dir\"}", "sink: expected an object, got \"dir\""},
    {"{\"sink\": {\"url\": \"ftp://x\"}}",
     "sink.url: expected an http:// or https:// URL of at most 2048 bytes without blanks, got "
     "\"ftp://x\""},
    {"{\"sink\": {\"url\": \"http://a b\"}}",
     "sink.url: expected an http:// or https:// URL of at most 2048 bytes without blanks, got "
     "\"http://a b\""},
    {"{\"sink\": {\"url\": \"https:///x\"}}",
     "sink.url: expected an http:// or https:// URL of at most 2048 bytes without blanks, got "
     "\"https:///x\""},
    {"{\"sink\": {\"type\": \"dir\", \"url\": \"http://x\"}}",
     "sink.url: only used when sink.type is \"http\""},
    {"{\"sink\": {\"type\": \"dir\", \"ca_file\": \"/ca\"}}",
     "sink.ca_file: only used when sink.type is \"http\""},
    {"{\"sink\": {\"type\": \"http\", \"url\": \"http://x\", \"dir\": \"/d\"}}",
     "sink.dir: only used when sink.type is \"dir\""},
    {"{\"sink\": {\"dir\": \"\"}}",
     "sink.dir: expected a non-empty path of at most 4095 bytes without control characters, got "
     "\"\""},
    {"{\"spool\": {\"dir\": \"/a\\nb\"}}",
     "spool.dir: expected a non-empty path of at most 4095 bytes without control characters, got "
     "\"/a\\x0ab\""},
    {"{\"selectors\": {}}", "selectors: expected an array of selectors, got an object"},
    {"{\"selectors\": [\"x\"]}",
     "selectors[0]: expected an object with any of project, environment, application, "
     "container_id, k8s_namespace, k8s_labels, got \"x\""},
    {"{\"selectors\": [{\"project\": 1}]}",
     "selectors[0].project: expected a string of at most 512 bytes, got 1"},
    {"{\"selectors\": [{}, {\"container_id\": \"xyz\"}]}",
     "selectors[1].container_id: expected 12 to 64 hex digits (a container id or its prefix), "
     "got \"xyz\""},
    {"{\"selectors\": [{\"namespace\": \"x\"}]}",
     "selectors[0].namespace: unknown key (expected one of project, environment, application, "
     "container_id, k8s_namespace, k8s_labels)"},
    {"{\"selectors\": [{\"k8s_labels\": {\"app\": 5}}]}",
     "selectors[0].k8s_labels.app: expected a string of at most 512 bytes, got 5"},
    {"{\"selectors\": [{\"k8s_labels\": [\"app\"]}]}",
     "selectors[0].k8s_labels: expected an object of label names to string values, got an array"},
    {"{\"labels\": []}",
     "labels: expected an object of label names to string values, got an array"},
    {"{\"labels\": {\"team\": 1}}",
     "labels.team: expected a string of at most 512 bytes without control characters, got 1"},
    {"{\"labels\": {\"bad key\": \"x\"}}",
     "labels: expected label names of 1 to 128 letters, digits, '_' or '.', starting with a letter "
     "or '_' (not \"__\"), got \"bad key\""},
    {"{\"labels\": {\"__name__\": \"x\"}}",
     "labels: expected label names of 1 to 128 letters, digits, '_' or '.', starting with a letter "
     "or '_' (not \"__\"), got \"__name__\""},
    {"{\"status_socket\": "
     "\"/run/conprof/"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"}",
     "status_socket: expected a socket path of at most 90 bytes without control characters, or "
     "\"\" for none, got \"/run/conprof/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\""},
    {"{\"metrics_listen\": \"127.0.0.1\"}",
     "metrics_listen: expected HOST:PORT with a numeric IP address or localhost and a port from 1 "
     "to 65535 (e.g. \"127.0.0.1:9464\"), or \"\" for none, got \"127.0.0.1\""},
    {"{\"metrics_listen\": \"127.0.0.1:0\"}",
     "metrics_listen: expected HOST:PORT with a numeric IP address or localhost and a port from 1 "
     "to 65535 (e.g. \"127.0.0.1:9464\"), or \"\" for none, got \"127.0.0.1:0\""},
    {"{\"metrics_listen\": \"example.com:9464\"}",
     "metrics_listen: expected HOST:PORT with a numeric IP address or localhost and a port from 1 "
     "to 65535 (e.g. \"127.0.0.1:9464\"), or \"\" for none, got \"example.com:9464\""},
    {"{\"metrics_allow_remote\": \"yes\"}",
     "metrics_allow_remote: expected true or false, got \"yes\""},
    {"{\"kubelet\": {\"enabled\": 1}}", "kubelet.enabled: expected true or false, got 1"},
    {"{\"log_level\": \"loud\"}",
     "log_level: expected one of \"error\", \"warn\", \"info\", \"debug\", got \"loud\""},
    {"{\"node_name\": \"has space\"}",
     "node_name: expected a node name of 1 to 253 letters, digits, '.', '-' or '_', got \"has "
     "space\""},
    {"[1, 2]", "expected a JSON object at the top level, got an array"},
    {"{\"rate_hz\": 1,}", "line 1 column 15: string or '}' expected near '}'"},
    {"{\"rate_hz\": 1, \"rate_hz\": 2}",
     "line 1 column 24: duplicate object key near '\"rate_hz\"'"},
};

static void test_file_rejections(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof FILE_REJECTIONS / sizeof FILE_REJECTIONS[0]; i++) {
        const char *msg = file_error(FILE_REJECTIONS[i].json);
        if (strcmp(msg, FILE_REJECTIONS[i].message))
            fail_msg("%s\n  got:      %s\n  expected: %s", FILE_REJECTIONS[i].json, msg,
                     FILE_REJECTIONS[i].message);
    }
}

static void test_cross_checks(void **state)
{
    (void)state;
    struct agent_config c;
    assert_string_equal(load_file("{\"sink\": {\"type\": \"http\"}}", &c),
                        "config: sink.url: required when sink.type is \"http\" (set it in the "
                        "config file, with --sink-url or with CONPROF_SINK_URL)");
    const char *remote = "config: metrics_listen: %s is not a loopback address; set "
                         "metrics_allow_remote to true (or --metrics-allow-remote) to serve "
                         "metrics beyond this host";
    char expected[400];
    snprintf(expected, sizeof expected, remote, "0.0.0.0:9464");
    assert_string_equal(load_file("{\"metrics_listen\": \"0.0.0.0:9464\"}", &c), expected);
    snprintf(expected, sizeof expected, remote, "[::]:9464");
    assert_string_equal(load_file("{\"metrics_listen\": \"[::]:9464\"}", &c), expected);
    /* allowed explicitly; loopback forms always */
    const char *ok[] = {
        "{\"metrics_listen\": \"0.0.0.0:9464\", \"metrics_allow_remote\": true}",
        "{\"metrics_listen\": \"localhost:9464\"}", "{\"metrics_listen\": \"127.3.2.1:1\"}",
        "{\"metrics_listen\": \"[::ffff:127.0.0.1]:65535\"}", "{\"metrics_listen\": \"\"}"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_string_equal(load_file(ok[i], &c), "");
        config_free(&c);
    }
    char *flag[] = {"run", "--metrics-listen", "10.1.2.3:9464"};
    snprintf(expected, sizeof expected, remote, "10.1.2.3:9464");
    assert_string_equal(args_error(ARGC(flag), flag), expected);
    char *allowed[] = {"run", "--metrics-listen", "10.1.2.3:9464", "--metrics-allow-remote"};
    assert_string_equal(args_error(ARGC(allowed), allowed), "");
}

static void test_file_bounds(void **state)
{
    (void)state;
    struct agent_config c;
    size_t big = CONFIG_FILE_MAX + 10;
    char *text = malloc(big + 1);
    assert_non_null(text);
    memset(text, ' ', big);
    memcpy(text, "{}", 2);
    text[big] = '\0';
    write_file("agent.json", text);
    free(text);
    char expected[300];
    snprintf(expected, sizeof expected, "config: %s is larger than 1048576 bytes", cfgpath);
    assert_string_equal(load_file(NULL, &c), expected);
    /* exactly at the bound is fine */
    text = malloc(CONFIG_FILE_MAX + 1);
    memset(text, ' ', CONFIG_FILE_MAX);
    memcpy(text, "{}", 2);
    text[CONFIG_FILE_MAX] = '\0';
    write_file("agent.json", text);
    free(text);
    assert_string_equal(load_file(NULL, &c), "");
    config_free(&c);

    char *dir[] = {"run", "--config", tmpdir};
    snprintf(expected, sizeof expected, "config: %s is not a regular file", tmpdir);
    assert_string_equal(args_error(ARGC(dir), dir), expected);
}

static void test_flag_rejections(void **state)
{
    (void)state;
    static const struct {
        char *argv[6];
        const char *message;
    } cases[] = {
        {{"run", "--rate", "fast"}, "--rate: expected an integer from 1 to 1000, got \"fast\""},
        {{"run", "--rate", "0"}, "--rate: expected an integer from 1 to 1000, got 0"},
        {{"run", "--rate=2000"}, "--rate: expected an integer from 1 to 1000, got 2000"},
        {{"run", "--rate", " 5"}, "--rate: expected an integer from 1 to 1000, got \" 5\""},
        {{"run", "--rate", "99999999999999999999"},
         "--rate: expected an integer from 1 to 1000, got \"99999999999999999999\""},
        {{"run", "--period", "0"}, "--period: expected an integer from 1 to 3600, got 0"},
        {{"run", "--upload-timeout", "0"},
         "--upload-timeout: expected an integer from 1 to 300, got 0"},
        {{"run", "--discovery-interval", "61"},
         "--discovery-interval: expected an integer from 1 to 60, got 61"},
        {{"run", "--spool-max-bytes", "big"},
         "--spool-max-bytes: expected an integer >= 1048576, got \"big\""},
        {{"run", "--sink-url", "ftp://x"},
         "--sink-url: expected an http:// or https:// URL of at most 2048 bytes without blanks, "
         "got \"ftp://x\""},
        {{"run", "--sink-dir", ""},
         "--sink-dir: expected a non-empty path of at most 4095 bytes without control "
         "characters, got \"\""},
        {{"run", "--log-level", "trace"},
         "--log-level: expected one of \"error\", \"warn\", \"info\", \"debug\", got \"trace\""},
        {{"run", "--node-name", "a/b"},
         "--node-name: expected a node name of 1 to 253 letters, digits, '.', '-' or '_', got "
         "\"a/b\""},
        {{"run", "--label", "noequals"}, "--label: expected NAME=VALUE, got 'noequals'"},
        {{"run", "--label", "bad name=x"},
         "--label: expected label names of 1 to 128 letters, digits, '_' or '.', starting with a "
         "letter or '_' (not \"__\"), got \"bad name\""},
        {{"run", "--selector", "project=a,foo=b"},
         "--selector 'project=a,foo=b': foo: unknown key (expected one of project, environment, "
         "application, container_id, k8s_namespace, k8s_labels)"},
        {{"run", "--selector", "project"},
         "--selector 'project': expected KEY=VALUE[,KEY=VALUE...], got 'project'"},
        {{"run", "--selector", "project=a,,environment=b"},
         "--selector 'project=a,,environment=b': expected KEY=VALUE[,KEY=VALUE...], got ''"},
        {{"run", "--selector", "container_id=xyz"},
         "--selector 'container_id=xyz': container_id: expected 12 to 64 hex digits (a container "
         "id or its prefix), got \"xyz\""},
        {{"run", "--selector", "project=a,project=b"},
         "--selector 'project=a,project=b': project given twice"},
        {{"run", "--selector", "k8s_labels=x"},
         "--selector 'k8s_labels=x': write Kubernetes labels as k8s_labels.NAME=VALUE"},
        {{"run", "--bogus"}, "run: unknown option '--bogus' (see --help)"},
        {{"run", "positional"}, "run: unexpected argument 'positional' (see --help)"},
        {{"run", "--rate"}, "run: --rate needs a value"},
        {{"run", "--metrics-allow-remote=yes"}, "run: --metrics-allow-remote takes no value"},
        {{"run", "--sink-dir", "/a", "--sink-url", "http://b"},
         "run: --sink-dir and --sink-url exclude each other"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int argc = 0;
        while (argc < 6 && cases[i].argv[argc])
            argc++;
        struct config_args args;
        struct cp_err err;
        if (config_args_parse(argc, (char **)cases[i].argv, &args, &err) == 0) {
            config_args_free(&args);
            fail_msg("accepted: %s %s", cases[i].argv[1], argc > 2 ? cases[i].argv[2] : "");
        }
        assert_int_equal(err.code, CP_ERR_INVALID);
        if (strcmp(err.msg, cases[i].message))
            fail_msg("%s\n  got:      %s\n  expected: %s", cases[i].argv[1], err.msg,
                     cases[i].message);
    }
}

static void test_env_rejections(void **state)
{
    (void)state;
    struct agent_config c;
    char *none[] = {"run"};
    struct config_env level = {.log_level = "loud"};
    assert_string_equal(load(NULL, 1, none, &level, &c),
                        "CONPROF_LOG_LEVEL: expected one of \"error\", \"warn\", \"info\", "
                        "\"debug\", got \"loud\"");
    struct config_env url = {.sink_url = "localhost:4040"};
    assert_string_equal(load(NULL, 1, none, &url, &c),
                        "CONPROF_SINK_URL: expected an http:// or https:// URL of at most 2048 "
                        "bytes without blanks, got \"localhost:4040\"");
    struct config_env node = {.node_name = "a b"};
    assert_string_equal(load(NULL, 1, none, &node, &c),
                        "CONPROF_NODE_NAME: expected a node name of 1 to 253 letters, digits, "
                        "'.', '-' or '_', got \"a b\"");
    /* empty variables count as unset */
    struct config_env empty = {.config = "", .sink_url = "", .node_name = "", .log_level = ""};
    assert_string_equal(load(NULL, 1, none, &empty, &c), "");
    assert_int_equal(c.sink.type, SINK_DIR);
    assert_null(c.node_name);
    config_free(&c);
}

/* The control channel: a ws(s) URL, a token file that is read, the state file's default, and
 * whether a sink was named (an unnamed one means the console's ingest). */
static void test_console(void **state)
{
    (void)state;
    struct agent_config c;
    char token[200];
    snprintf(token, sizeof token, "%s", write_file("console-token", "cpa_abc\n"));
    char *argv[] = {"run", "--console", "wss://console.example:8443/agent/v1",
                    "--console-token-file", token};
    assert_string_equal(load(NULL, ARGC(argv), argv, NULL, &c), "");
    assert_string_equal(c.console.url, "wss://console.example:8443/agent/v1");
    assert_string_equal(c.console.token, "cpa_abc");
    assert_string_equal(c.console.state_file, "/var/lib/conprof/control-state.json");
    assert_string_equal(c.console.ingest_url, "https://console.example:8443");
    assert_false(c.sink.named);
    config_free(&c);

    char *named[] = {
        "run",        "--console", "ws://127.0.0.1:1/agent/v1", "--console-token-file", token,
        "--sink-dir", "/tmp/p"};
    assert_string_equal(load(NULL, ARGC(named), named, NULL, &c), "");
    assert_true(c.sink.named);
    config_free(&c);

    char *http[] = {"run", "--console", "https://console/agent/v1", "--console-token-file", token};
    assert_string_equal(args_error(ARGC(http), http),
                        "--console: expected a wss:// (or ws://) URL of at most 2048 bytes "
                        "without blanks, got \"https://console/agent/v1\"");
    char *no_token[] = {"run", "--console", "wss://console/agent/v1"};
    assert_string_equal(
        args_error(ARGC(no_token), no_token),
        "config: console.token_file: required with console.url: the console only talks to "
        "agents with a token (create one with `conprof-console token create --name NODE`, then "
        "set --console-token-file or CONPROF_CONSOLE_TOKEN_FILE)");
    struct config_env env = {.console_url = "wss://c/agent/v1",
                             .console_token_file = "/nonexistent/token"};
    char *none[] = {"run"};
    assert_string_equal(load(NULL, 1, none, &env, &c),
                        "CONPROF_CONSOLE_TOKEN_FILE: cannot open /nonexistent/token: No such file "
                        "or directory");
}

static void test_secrets(void **state)
{
    (void)state;
    struct agent_config c;
    char path[200], json[600], expected[400];
    snprintf(path, sizeof path, "%s", write_file("tok", "  abc.def-ghi_jkl  \r\n\n"));
    char *http[] = {"run", "--sink-url", "https://x", "--bearer-token-file", path};
    /* leading blanks are part of nothing: only trailing ones are trimmed, so this one is bad */
    snprintf(expected, sizeof expected,
             "--bearer-token-file: %s: the token holds characters other than visible ASCII", path);
    assert_string_equal(args_error(ARGC(http), http), expected);
    write_file("tok", "abc.def-ghi_jkl\n");
    assert_string_equal(load(NULL, ARGC(http), http, NULL, &c), "");
    assert_string_equal(c.sink.bearer_token, "abc.def-ghi_jkl");
    config_free(&c);
    write_file("tok", "abc\r\nX-Injected: 1\n");
    snprintf(expected, sizeof expected,
             "--bearer-token-file: %s: the token holds characters other than visible ASCII", path);
    assert_string_equal(args_error(ARGC(http), http), expected);
    write_file("tok", "\n");
    snprintf(expected, sizeof expected, "--bearer-token-file: %s: the token file is empty", path);
    assert_string_equal(args_error(ARGC(http), http), expected);

    struct config_env env = {.bearer_token_file = "/nonexistent/token"};
    char *url[] = {"run", "--sink-url", "https://x"};
    assert_string_equal(load(NULL, ARGC(url), url, &env, &c),
                        "CONPROF_BEARER_TOKEN_FILE: cannot open /nonexistent/token: No such "
                        "file or directory");
    /* a directory sink never reads the token */
    char *dir[] = {"run"};
    assert_string_equal(load(NULL, 1, dir, &env, &c), "");
    assert_null(c.sink.bearer_token);
    config_free(&c);
    /* ... but a token flag given with a directory sink is a mistake */
    char *flag_dir[] = {"run", "--sink-dir", "/tmp/p", "--bearer-token-file", path};
    assert_string_equal(load(NULL, ARGC(flag_dir), flag_dir, NULL, &c),
                        "--bearer-token-file: only the HTTP sink sends a token, but the sink is "
                        "the directory /tmp/p; add --sink-url to upload, or leave the flag out");

    snprintf(json, sizeof json,
             "{\"sink\": {\"url\": \"https://x\", \"ca_file\": \"%s/missing.pem\"}}", tmpdir);
    snprintf(expected, sizeof expected,
             "config: sink.ca_file: cannot open %s/missing.pem: No such file or directory", tmpdir);
    assert_string_equal(load_file(json, &c), expected);
}

/* SIGHUP: a new struct from the same args; a bad file leaves the running one untouched. */
static void test_reload(void **state)
{
    (void)state;
    char *argv[] = {"run", "--config", cfgpath, "--period", "20"};
    struct config_args args;
    struct config_env env = {0};
    struct cp_err err;
    write_file("agent.json", "{\"rate_hz\": 10, \"labels\": {\"v\": \"1\"}}");
    assert_int_equal(config_args_parse(ARGC(argv), argv, &args, &err), 0);
    struct agent_config running, next;
    assert_int_equal(config_load(&args, &env, &running, &err), 0);
    assert_int_equal(running.rate_hz, 10);
    assert_int_equal(running.period_s, 20);

    write_file("agent.json", "{\"rate_hz\": \"ten\"}");
    assert_int_equal(config_load(&args, &env, &next, &err), -1);
    assert_non_null(strstr(err.msg, "rate_hz: expected an integer from 1 to 1000, got \"ten\""));
    assert_int_equal(running.rate_hz, 10);
    assert_string_equal(json_string_value(json_object_get(running.labels, "v")), "1");

    write_file("agent.json", "{\"rate_hz\": 20, \"labels\": {\"v\": \"2\"}}");
    assert_int_equal(config_load(&args, &env, &next, &err), 0);
    assert_int_equal(next.rate_hz, 20);
    assert_int_equal(next.period_s, 20); /* the flag still applies */
    assert_string_equal(json_string_value(json_object_get(next.labels, "v")), "2");
    config_free(&running);
    config_free(&next);
    config_args_free(&args);
}

static void test_parse_text_and_file_only(void **state)
{
    (void)state;
    struct agent_config c;
    struct cp_err err;
    const char *text = "{\"status_socket\": \"\", \"sink\": {\"type\": \"http\","
                       " \"url\": \"http://x\", \"bearer_token_file\": \"/nonexistent\"}}";
    assert_int_equal(config_parse_text(text, strlen(text), "inline", &c, &err), 0);
    assert_string_equal(c.status_socket, ""); /* disabled */
    assert_null(c.sink.bearer_token);         /* no I/O */
    config_free(&c);
    assert_int_equal(config_parse_text("{\"x\":1}", 7, "inline", &c, &err), -1);
    assert_string_equal(err.msg, "config inline: x: unknown key (expected one of rate_hz, "
                                 "period_s, upload_timeout_s, discovery_interval_s, sink, spool, "
                                 "selectors, labels, status_socket, metrics_listen, "
                                 "metrics_allow_remote, kubelet, console, log_level, node_name)");
    /* config_load_file: the file only, even when the env would be needed to complete it */
    write_file("agent.json", "{\"sink\": {\"type\": \"http\"}, \"status_socket\": \"/s.sock\"}");
    assert_int_equal(config_load_file(cfgpath, &c, &err), 0);
    assert_string_equal(c.status_socket, "/s.sock");
    config_free(&c);
}

static void test_help(void **state)
{
    (void)state;
    struct config_args args;
    struct cp_err err;
    char *argv[] = {"run", "--rate", "5", "-h", "--bogus"};
    assert_int_equal(config_args_parse(ARGC(argv), argv, &args, &err), 0);
    assert_true(args.help);
    config_args_free(&args);
}

/* docs/agent-config.md must name every flag of --help and every key the parser knows. */
static void test_docs_cover_everything(void **state)
{
    (void)state;
    FILE *f = fopen("docs/agent-config.md", "r");
    if (!f) skip(); /* run from the repository root */
    static char docs[200000];
    size_t n = fread(docs, 1, sizeof docs - 1, f);
    docs[n] = '\0';
    fclose(f);

    char *usage = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&usage, &len);
    config_usage(mem);
    fclose(mem);
    int flags = 0;
    for (char *p = strstr(usage, "--"); p; p = strstr(p + 2, "--")) {
        char flag[64];
        size_t k = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz-");
        snprintf(flag, sizeof flag, "`--%.*s", (int)k, p + 2);
        if (!strstr(docs, flag)) fail_msg("docs/agent-config.md does not document %s`", flag);
        flags++;
    }
    free(usage);
    assert_true(flags >= 18);

    const char *objects[] = {"{\"?\": 1}", "{\"sink\": {\"?\": 1}}", "{\"spool\": {\"?\": 1}}",
                             "{\"kubelet\": {\"?\": 1}}"};
    const char *prefix[] = {"", "sink.", "spool.", "kubelet."};
    for (size_t i = 0; i < 4; i++) {
        struct agent_config c;
        struct cp_err err;
        assert_int_equal(config_parse_text(objects[i], strlen(objects[i]), "x", &c, &err), -1);
        char *list = strstr(err.msg, "one of ") + 7;
        list[strcspn(list, ")")] = '\0';
        for (char *key = strtok(list, ", "); key; key = strtok(NULL, ", ")) {
            char name[128];
            snprintf(name, sizeof name, "`%s%s`", prefix[i], key);
            if (!strstr(docs, name)) fail_msg("docs/agent-config.md does not document %s", name);
        }
    }
    const char *vars[] = {"CONPROF_CONFIG", "CONPROF_SINK_URL", "CONPROF_BEARER_TOKEN_FILE",
                          "CONPROF_NODE_NAME", "CONPROF_LOG_LEVEL"};
    for (size_t i = 0; i < 5; i++)
        assert_non_null(strstr(docs, vars[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_config_file_from_env),
        cmocka_unit_test(test_labels_merge_selectors_replace),
        cmocka_unit_test(test_sink_type_inferred),
        cmocka_unit_test(test_file_rejections),
        cmocka_unit_test(test_cross_checks),
        cmocka_unit_test(test_file_bounds),
        cmocka_unit_test(test_flag_rejections),
        cmocka_unit_test(test_env_rejections),
        cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_console),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_parse_text_and_file_only),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_docs_cover_everything),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
