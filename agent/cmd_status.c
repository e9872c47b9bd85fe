/* `conprof-agent status`: asks the running agent over its status socket and prints the answer.
 *
 * The socket is found the way the agent chose it: --socket PATH, else the status_socket of the
 * config file (--config FILE or CONPROF_CONFIG), else the default. Exit status: 0 when an agent
 * answered, STATUS_EXIT_NO_AGENT (3) when none runs there, 1 when one runs but could not be
 * asked (permission, timeout, garbled answer), 2 for bad usage or an unreadable config.
 */
#include "cli.h"
#include "config.h"
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STATUS_TIMEOUT_MS 5000

struct status_options {
    bool json;
    const char *socket;
    const char *config;
};

static void status_usage(FILE *out)
{
    fputs("usage: conprof-agent status [--json] [--socket PATH] [--config FILE]\n"
          "\n"
          "Asks the running agent for its state: uptime, profiled processes, uploads, errors.\n"
          "\n"
          "options:\n"
          "      --json         print the agent's JSON document instead of the text page\n"
          "      --socket PATH  the agent's status socket (default: the config's status_socket,\n"
          "                     else " CONFIG_DEFAULT_STATUS_SOCKET ")\n"
          "      --config FILE  the agent's config file, to find its socket (env CONPROF_CONFIG)\n"
          "  -h, --help         this help\n"
          "\n"
          "exit status: 0 the agent answered, 3 no agent runs, 1 it could not be asked.\n",
          out);
}

/* 0: parsed; 1: --help printed; -1: usage error printed. */
static int parse_options(int argc, char **argv, struct status_options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            status_usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--socket") || !strcmp(a, "--config")) {
            if (i + 1 >= argc) {
                cli_error("status: %s needs a value", a);
                return -1;
            }
            *(!strcmp(a, "--socket") ? &o->socket : &o->config) = argv[++i];
        } else if (!strncmp(a, "--socket=", 9)) {
            o->socket = a + 9;
        } else if (!strncmp(a, "--config=", 9)) {
            o->config = a + 9;
        } else {
            cli_error("status: unexpected argument '%s'", a);
            status_usage(stderr);
            return -1;
        }
    }
    return 0;
}

/* The socket path into buf; -1 with a message when the config cannot be read. */
static int socket_path(const struct status_options *o, char *buf, size_t size)
{
    const char *file = o->config;
    const char *env = getenv("CONPROF_CONFIG");
    if (!file && env && env[0]) file = env;
    if (o->socket || !file) {
        snprintf(buf, size, "%s", o->socket ? o->socket : CONFIG_DEFAULT_STATUS_SOCKET);
        return 0;
    }
    struct agent_config cfg;
    struct cp_err err;
    if (config_load_file(file, &cfg, &err) < 0) {
        cli_error("%s", err.msg);
        return -1;
    }
    snprintf(buf, size, "%s", cfg.status_socket);
    config_free(&cfg);
    if (!buf[0]) {
        cli_error("status: %s disables the status socket (status_socket is \"\")", file);
        return -1;
    }
    return 0;
}

int cmd_status(int argc, char **argv)
{
    struct status_options o = {0};
    int r = parse_options(argc, argv, &o);
    if (r != 0) return r > 0 ? EXIT_OK : EXIT_USAGE;
    char path[4096];
    if (socket_path(&o, path, sizeof path) < 0) return EXIT_USAGE;
    json_t *doc = NULL;
    struct cp_err err;
    switch (status_fetch(path, STATUS_TIMEOUT_MS, &doc, &err)) {
    case STATUS_FETCH_NO_AGENT:
        cli_error("%s", err.msg);
        return STATUS_EXIT_NO_AGENT;
    case STATUS_FETCH_ERROR:
        cli_error("%s", err.msg);
        return EXIT_FAILURE_RUN;
    case STATUS_FETCH_OK:
        break;
    }
    if (o.json) {
        char *text = json_dumps(doc, JSON_INDENT(2));
        if (text) puts(text);
        free(text);
    } else {
        status_print_text(stdout, doc, time(NULL));
    }
    json_decref(doc);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAILURE_RUN;
}
