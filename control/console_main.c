/* conprof-console: the command line (serve, token create/list/revoke, version).
 *
 * Design: every subcommand parses its flags with getopt_long into plain values, checks them and
 * calls one library function (console_server_run(), the store's token functions). Exit status:
 * 0 success, 1 failure at run time (port in use, unwritable data dir), 2 bad usage (the message
 * names the flag and what it expects). SIGTERM / SIGINT set a flag that the server loop reads;
 * that sig_atomic_t is the program's only global mutable state, because a signal handler can
 * reach nothing else.
 */
#include "console_hub.h"
#include "console_server.h"
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define CONSOLE_VERSION "0.1.0"

enum { EXIT_OK = 0, EXIT_RUN = 1, EXIT_USAGE = 2 };

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("conprof-console: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see --help)\n", stderr);
    return EXIT_USAGE;
}

static bool parse_i64(const char *text, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all interfaces); the host is copied to host_buf. */
static bool parse_listen(const char *arg, char *host_buf, size_t size, const char **host, int *port)
{
    if (strlen(arg) >= size) return false;
    char *text = strcpy(host_buf, arg);
    char *colon = strrchr(text, ':');
    int64_t p;
    if (!colon || !parse_i64(colon + 1, 1, 65535, &p)) return false;
    *colon = '\0';
    *port = (int)p;
    if (text[0] == '[') {
        size_t n = strlen(text);
        if (n < 3 || text[n - 1] != ']') return false;
        text[n - 1] = '\0';
        text++;
    }
    *host = text[0] ? text : "0.0.0.0";
    return true;
}

/* ---- serve ---- */

static const char serve_help[] =
    "usage: conprof-console serve --listen HOST:PORT --data DIR [options]\n"
    "\n"
    "Serves the REST API (/api/v1), ingest (/ingest, /profiling/v1/input) and the agents'\n"
    "websocket (/agent/v1) on one port. State and profiles live in DIR/console.db (SQLite).\n"
    "\n"
    "  --listen HOST:PORT       address to listen on, e.g. 127.0.0.1:8080 or 0.0.0.0:443\n"
    "  --data DIR               data directory (created if missing)\n"
    "  --cert FILE --key FILE   serve TLS (https / wss) with this PEM certificate and key\n"
    "  --free-budget SECONDS    profiling budget of the free plan (default 900)\n"
    "  --max-lease SECONDS      longest lease granted to agents (default 300)\n"
    "  --retention MINUTES      delete profiles older than this (default 80640 = 56 days)\n"
    "  --tick-ms N              quota / lease timer period in milliseconds (default 1000)\n"
    "  --period SECONDS         profile period of the sessions agents are given, 1-3600\n"
    "                           (default 45)\n";

static int parse_serve(int argc, char **argv, struct console_options *o, char *host_buf,
                       size_t host_size)
{
    static const struct option longopts[] = {
        {"listen", required_argument, 0, 'l'},
        {"data", required_argument, 0, 'd'},
        {"cert", required_argument, 0, 'c'},
        {"key", required_argument, 0, 'k'},
        {"free-budget", required_argument, 0, 'b'},
        {"max-lease", required_argument, 0, 'm'},
        {"retention", required_argument, 0, 'r'},
        {"tick-ms", required_argument, 0, 't'},
        {"period", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int64_t v;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (!parse_listen(optarg, host_buf, host_size, &o->listen_host, &o->listen_port))
                return usage_error("--listen: expected HOST:PORT with a port from 1 to 65535, e.g. "
                                   "127.0.0.1:8080");
            break;
        case 'd':
            o->data_dir = optarg;
            break;
        case 'c':
            o->cert_path = optarg;
            break;
        case 'k':
            o->key_path = optarg;
            break;
        case 'b':
            if (!parse_i64(optarg, 1, INT64_C(1) << 40, &v))
                return usage_error("--free-budget: expected a number of seconds >= 1, e.g. 900");
            o->free_budget_s = v;
            break;
        case 'm':
            if (!parse_i64(optarg, 1, 86400, &v))
                return usage_error("--max-lease: expected seconds from 1 to 86400, e.g. 300");
            o->max_lease_s = v;
            break;
        case 'r':
            if (!parse_i64(optarg, 1, INT64_C(1) << 30, &v))
                return usage_error("--retention: expected a number of minutes >= 1, e.g. 80640");
            o->retention_minutes = v;
            break;
        case 't':
            if (!parse_i64(optarg, 10, 60000, &v))
                return usage_error("--tick-ms: expected milliseconds from 10 to 60000, e.g. 1000");
            o->tick_ms = (int)v;
            break;
        case 'p':
            if (!parse_i64(optarg, 1, 3600, &v))
                return usage_error("--period: expected seconds from 1 to 3600, e.g. 45");
            o->period_s = (int)v;
            break;
        case 'h':
            fputs(serve_help, stdout);
            return -1;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            return usage_error("serve: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return usage_error("serve: unexpected argument '%s'", argv[optind]);
    if (!o->listen_host)
        return usage_error("serve: --listen HOST:PORT is required, e.g. --listen 127.0.0.1:8080");
    if (!o->data_dir)
        return usage_error("serve: --data DIR is required, e.g. --data /var/lib/conprof-console");
    if (!o->cert_path != !o->key_path)
        return usage_error("serve: --cert and --key go together (give both for TLS, or neither)");
    return 0;
}

/* One descriptor per agent: lift the soft limit (often 1024) to the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            console_log("cannot raise the open file limit: %s", strerror(errno));
    }
}

static int cmd_serve(int argc, char **argv)
{
    struct console_options o = {
        .free_budget_s = CONSOLE_DEFAULT_FREE_BUDGET,
        .max_lease_s = CONSOLE_DEFAULT_MAX_LEASE,
        .retention_minutes = CONSOLE_DEFAULT_RETENTION_MIN,
        .tick_ms = CONSOLE_DEFAULT_TICK_MS,
    };
    char host[256];
    int rc = parse_serve(argc, argv, &o, host, sizeof(host));
    if (rc) return rc < 0 ? EXIT_OK : rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: the loop's poll() returns at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    struct cp_err err = {0};
    if (console_server_run(&o, &stop_requested, &err)) {
        console_log("%s", err.msg);
        return err.code == CP_ERR_INVALID ? EXIT_USAGE : EXIT_RUN;
    }
    return EXIT_OK;
}

/* ---- token ---- */

static const char token_help[] =
    "usage: conprof-console token create --data DIR --name NAME [--project P] [--api]\n"
    "       conprof-console token list --data DIR\n"
    "       conprof-console token revoke --data DIR --name NAME\n"
    "\n"
    "create prints a new token once (the store keeps only its SHA-256):\n"
    "  cpa_... an agent token (websocket /agent/v1, ingest); --project P limits it to project P\n"
    "  cpk_... an API token (--api) for /api/v1/...\n";

struct token_args {
    const char *data_dir, *name, *project;
    bool api;
};

static int parse_token(int argc, char **argv, const char *sub, struct token_args *a)
{
    static const struct option longopts[] = {
        {"data", required_argument, 0, 'd'},    {"name", required_argument, 0, 'n'},
        {"project", required_argument, 0, 'p'}, {"api", no_argument, 0, 'a'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            a->data_dir = optarg;
            break;
        case 'n':
            a->name = optarg;
            break;
        case 'p':
            a->project = optarg;
            break;
        case 'a':
            a->api = true;
            break;
        case 'h':
            fputs(token_help, stdout);
            return -1;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            return usage_error("token %s: unknown option '%s'", sub, argv[optind - 1]);
        }
    }
    if (optind < argc) return usage_error("token %s: unexpected argument '%s'", sub, argv[optind]);
    if (!a->data_dir)
        return usage_error("token %s: --data DIR is required (the console's data directory)", sub);
    bool create = !strcmp(sub, "create"), revoke = !strcmp(sub, "revoke");
    if ((create || revoke) && (!a->name || !a->name[0]))
        return usage_error("token %s: --name NAME is required, e.g. --name node-1", sub);
    if (!create && (a->project || a->api))
        return usage_error("token %s: --project and --api only go with 'token create'", sub);
    if (a->api && a->project)
        return usage_error(
            "token create: --project limits agent tokens; an --api token sees every project");
    return 0;
}

static int token_run(const char *sub, const struct token_args *a, struct store *st,
                     struct cp_err *err)
{
    if (!strcmp(sub, "create")) {
        char token[STORE_TOKEN_TEXT_MAX];
        if (store_token_create(st, a->name, a->api ? STORE_TOKEN_API : STORE_TOKEN_AGENT,
                               a->project, token, sizeof(token), err))
            return -1;
        printf("%s\n", token);
        return 0;
    }
    if (!strcmp(sub, "revoke")) return store_token_revoke(st, a->name, err);
    return store_token_print(st, stdout, err);
}

static int cmd_token(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(token_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "create") && strcmp(sub, "list") && strcmp(sub, "revoke"))
        return usage_error("token: unknown subcommand '%s' (create, list or revoke)", sub);
    struct token_args a = {0};
    int rc = parse_token(argc - 1, argv + 1, sub, &a);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    struct cp_err err = {0};
    struct store *st = store_open(a.data_dir, &err);
    if (!st || token_run(sub, &a, st, &err)) {
        console_log("token %s: %s", sub, err.msg);
        if (st) store_close(st);
        return err.code == CP_ERR_INVALID ? EXIT_USAGE : EXIT_RUN;
    }
    store_close(st);
    return EXIT_OK;
}

static void usage(FILE *out)
{
    fputs("usage: conprof-console <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve    run the console: REST API, ingest and the agents' websocket\n"
          "  token    create, list or revoke agent and API tokens\n"
          "  version  print the version\n"
          "\n"
          "Run 'conprof-console <command> --help' for a command's options.\n",
          out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "token")) return cmd_token(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            puts("usage: conprof-console version\n\nPrints the version.");
            return EXIT_OK;
        }
        printf("conprof-console %s\n", CONSOLE_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return EXIT_OK;
    }
    console_log("unknown command '%s'", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
