/* Fuzzes the config paths that take outside text: the JSON file (config_parse_text, no I/O) and
 * the command line (the same bytes split at newlines into argv). Whatever the input: no crash,
 * leak or hang; a rejection carries a message; an accepted config has every value within its
 * documented range, and its selectors are accepted by selector.c's own parser too (the two
 * validators must agree, or the daemon would fail on a config that passed the check). */
#include "config.h"
#include "metrics.h"
#include "selector.h"
#include "status.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64

static void check_config(const struct agent_config *c)
{
    if (c->rate_hz < 1 || c->rate_hz > 1000 || c->period_s < 1 || c->period_s > 3600 ||
        c->upload_timeout_s < 1 || c->upload_timeout_s > 300 || c->discovery_interval_s < 1 ||
        c->discovery_interval_s > 60 || c->spool.max_bytes < CONFIG_MIN_SPOOL_MAX_BYTES)
        abort();
    if (!c->sink.dir || !c->spool.dir || !c->status_socket || !c->kubelet.url) abort();
    if (c->sink.type != SINK_DIR && (c->sink.type != SINK_HTTP || !c->sink.url)) abort();
    if (strlen(c->status_socket) > STATUS_SOCKET_PATH_MAX) abort();
    if (!json_is_object(c->labels) || json_object_size(c->labels) > CONFIG_LABELS_MAX) abort();
    if ((unsigned)c->log_level > CONFIG_LOG_DEBUG) abort();
    if (c->metrics_listen) {
        struct metrics_address a;
        struct cp_err err;
        if (metrics_parse_address(c->metrics_listen, &a, &err) < 0 || a.port == 0) abort();
        if (!a.loopback && !c->metrics_allow_remote) abort();
    }
    struct selector_list list;
    struct cp_err err;
    if (selector_list_parse(c->selectors, "selectors", &list, &err) < 0) abort();
    selector_list_free(&list);
}

static void check_error(const struct cp_err *err)
{
    if (!memchr(err->msg, '\0', sizeof err->msg) || err->msg[0] == '\0') abort();
    if (err->code != CP_ERR_INVALID && err->code != CP_ERR_NOMEM) abort();
}

static void fuzz_json(const char *text, size_t size)
{
    struct agent_config cfg;
    struct cp_err err;
    if (config_parse_text(text, size, "fuzz", &cfg, &err) == 0) {
        check_config(&cfg);
        config_free(&cfg);
    } else {
        check_error(&err);
        if (cfg.labels || cfg.sink.dir) abort(); /* left empty */
    }
}

/* Each line is one argument; the whole input is copied so the argument strings outlive it. */
static void fuzz_args(const char *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy) return;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *argv[MAX_ARGS + 1] = {"run"};
    int argc = 1;
    for (char *p = copy; argc < MAX_ARGS && p <= copy + size;) {
        char *nl = memchr(p, '\n', (size_t)(copy + size - p));
        if (nl) *nl = '\0';
        argv[argc++] = p;
        if (!nl) break;
        p = nl + 1;
    }
    struct config_args args;
    struct cp_err err;
    if (config_args_parse(argc, argv, &args, &err) < 0) {
        check_error(&err);
    } else {
        /* without file options, loading does no I/O */
        if (!args.config_file && !args.bearer_token_file && !args.help) {
            struct config_env env = {0};
            struct agent_config cfg;
            if (config_load(&args, &env, &cfg, &err) == 0) {
                check_config(&cfg);
                config_free(&cfg);
            } else {
                check_error(&err);
            }
        }
        config_args_free(&args);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_json((const char *)data, size);
    if (size <= 4096) fuzz_args((const char *)data, size);
    return 0;
}
