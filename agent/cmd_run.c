/* `conprof-agent run`: the per-node daemon (see daemon.h). This file turns the command line into
 * daemon settings; the loop lives in daemon.c. */
#include "caps.h"
#include "cli.h"
#include "daemon.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void run_usage(FILE *out)
{
    fputs("usage: conprof-agent run [options]\n"
          "\n"
          "Finds the Python processes of this node, samples them from outside and writes or uploads\n"
          "one profile per application every period.\n"
          "\n"
          "options:\n"
          "      --rate HZ              samples per second (default 100)\n"
          "      --period SECS          profile period (default 45)\n"
          "      --upload-timeout SECS  per upload (default 10)\n"
          "      --discovery-interval SECS  rescan /proc every SECS (default 5)\n"
          "      --sink-dir DIR         write profiles to DIR (default /var/lib/conprof/profiles)\n"
          "      --sink-url URL         upload to a Pyroscope-compatible server instead\n"
          "      --bearer-token-file F  Authorization: Bearer <contents of F>\n"
          "      --spool-dir DIR        keep undelivered profiles here (default /var/lib/conprof/spool)\n"
          "      --spool-max-bytes N    spool size cap (default 67108864)\n"
          "      --label K=V            add a label to every profile (repeatable)\n"
          "      --selector K=V,...     profile only matching processes (repeatable); keys: project,\n"
          "                             environment, application, container_id\n"
          "      --node-name NAME       the host label (default: the host name; env CONPROF_NODE_NAME)\n"
          "  -h, --help                 this help\n",
          out);
}

struct run_args {
    struct daemon_settings s;
    json_t *labels;
    json_t *selectors;
    char *token;
};

static int parse_kv_list(const char *text, json_t *obj)
{
    char *copy = strdup(text), *save = NULL;
    int rc = 0;
    for (char *kv = strtok_r(copy, ",", &save); kv && rc == 0; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv) {
            rc = -1;
            break;
        }
        *eq = '\0';
        json_object_set_new(obj, kv, json_string(eq + 1));
    }
    free(copy);
    return rc;
}

static char *read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char buf[4096] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

static int parse_run_args(int argc, char **argv, struct run_args *a)
{
    enum { O_RATE = 1000, O_PERIOD, O_TIMEOUT, O_DISC, O_DIR, O_URL, O_TOKEN, O_SPOOL,
           O_SPOOL_MAX, O_LABEL, O_SELECTOR, O_NODE };
    static const struct option opts[] = {
        {"rate", required_argument, NULL, O_RATE},
        {"period", required_argument, NULL, O_PERIOD},
        {"upload-timeout", required_argument, NULL, O_TIMEOUT},
        {"discovery-interval", required_argument, NULL, O_DISC},
        {"sink-dir", required_argument, NULL, O_DIR},
        {"sink-url", required_argument, NULL, O_URL},
        {"bearer-token-file", required_argument, NULL, O_TOKEN},
        {"spool-dir", required_argument, NULL, O_SPOOL},
        {"spool-max-bytes", required_argument, NULL, O_SPOOL_MAX},
        {"label", required_argument, NULL, O_LABEL},
        {"selector", required_argument, NULL, O_SELECTOR},
        {"node-name", required_argument, NULL, O_NODE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct daemon_settings *s = &a->s;
    sink_config_defaults(&s->sink);
    s->rate_hz = 100;
    s->period_s = 45;
    s->upload_timeout_s = 10;
    s->discovery_interval_s = 5;
    s->sink.kind = SINK_DIR;
    s->sink.dir = "/var/lib/conprof/profiles";
    s->sink.spool_dir = "/var/lib/conprof/spool";
    s->node_name = getenv("CONPROF_NODE_NAME");
    s->enter_mntns = true;
    a->labels = json_object();
    a->selectors = json_array();
    long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_RATE:
            if (!cli_parse_long(optarg, 1, 1000, &v)) {
                cli_error("--rate expects 1 to 1000 samples per second, got '%s'", optarg);
                return EXIT_USAGE;
            }
            s->rate_hz = (int)v;
            break;
        case O_PERIOD:
            if (!cli_parse_long(optarg, 1, 3600, &v)) {
                cli_error("--period expects 1 to 3600 seconds, got '%s'", optarg);
                return EXIT_USAGE;
            }
            s->period_s = (int)v;
            break;
        case O_TIMEOUT:
            if (!cli_parse_long(optarg, 1, 300, &v)) {
                cli_error("--upload-timeout expects 1 to 300 seconds, got '%s'", optarg);
                return EXIT_USAGE;
            }
            s->upload_timeout_s = (int)v;
            break;
        case O_DISC:
            if (!cli_parse_long(optarg, 1, 60, &v)) {
                cli_error("--discovery-interval expects 1 to 60 seconds, got '%s'", optarg);
                return EXIT_USAGE;
            }
            s->discovery_interval_s = (int)v;
            break;
        case O_DIR: s->sink.kind = SINK_DIR; s->sink.dir = optarg; break;
        case O_URL: s->sink.kind = SINK_HTTP; s->sink.url = optarg; break;
        case O_TOKEN:
            if (!(a->token = read_token(optarg))) {
                cli_error("--bearer-token-file: cannot read '%s'", optarg);
                return EXIT_USAGE;
            }
            s->sink.bearer_token = a->token;
            break;
        case O_SPOOL: s->sink.spool_dir = optarg; break;
        case O_SPOOL_MAX:
            if (!cli_parse_long(optarg, 1 << 20, 1L << 40, &v)) {
                cli_error("--spool-max-bytes expects at least 1048576, got '%s'", optarg);
                return EXIT_USAGE;
            }
            s->sink.spool_max_bytes = (uint64_t)v;
            break;
        case O_LABEL:
            if (parse_kv_list(optarg, a->labels) < 0) {
                cli_error("--label expects KEY=VALUE, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case O_SELECTOR: {
            json_t *sel = json_object();
            if (parse_kv_list(optarg, sel) < 0) {
                json_decref(sel);
                cli_error("--selector expects KEY=VALUE[,KEY=VALUE...], got '%s'", optarg);
                return EXIT_USAGE;
            }
            json_array_append_new(a->selectors, sel);
            break;
        }
        case O_NODE: s->node_name = optarg; break;
        case 'h': run_usage(stdout); return EXIT_OK + 100;
        default: run_usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_error("run: unexpected argument '%s'", argv[optind]);
        return EXIT_USAGE;
    }
    struct cp_err err;
    if (selector_list_parse(a->selectors, "--selector", &s->selectors, &err) < 0) {
        cli_error("%s", err.msg);
        return EXIT_USAGE;
    }
    s->labels = a->labels;
    s->sink.upload_timeout_ms = s->upload_timeout_s * 1000;
    return EXIT_OK;
}

int cmd_run(int argc, char **argv)
{
    struct run_args a = {0};
    int rc = parse_run_args(argc, argv, &a);
    if (rc == EXIT_OK) {
        char missing[128];
        struct cp_err err;
        if (caps_restrict_agent(missing, sizeof missing, &err) < 0) {
            cli_error("%s", err.msg);
            rc = EXIT_FAILURE_RUN;
        } else {
            if (missing[0] && getuid() == 0)
                cli_error("running without %s: %s", missing,
                          "containers' processes may not be readable; grant the capability to "
                          "profile them");
            else if (missing[0])
                cli_error("running as an ordinary user without %s: profiling this user's own "
                          "processes only",
                          missing);
            rc = daemon_run(&a.s, NULL, NULL);
        }
    }
    selector_list_free(&a.s.selectors);
    json_decref(a.labels);
    json_decref(a.selectors);
    free(a.token);
    return rc == EXIT_OK + 100 ? EXIT_OK : rc;
}
