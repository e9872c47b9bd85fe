/* `conprof-agent run`: the per-node daemon (see daemon.h). This file turns the configuration
 * (config.h: file < environment < flags) into daemon settings and reloads it on SIGHUP; the loop
 * lives in daemon.c. */
#include "caps.h"
#include "cli.h"
#include "config.h"
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the settings borrow from: kept alive while the daemon uses them. */
struct run_state {
    struct config_args args;
    struct config_env env;
    struct agent_config cfg;
    struct selector_list selectors;
    struct agent_config old_cfg; /* the previous generation, freed at the next reload */
    struct selector_list old_selectors;
};

static int to_settings(struct agent_config *c, struct selector_list *sel, struct daemon_settings *s,
                       struct cp_err *err)
{
    memset(s, 0, sizeof *s);
    if (selector_list_parse(c->selectors, "selectors", sel, err) < 0) return -1;
    s->rate_hz = c->rate_hz;
    s->period_s = c->period_s;
    s->upload_timeout_s = c->upload_timeout_s;
    s->discovery_interval_s = c->discovery_interval_s;
    s->selectors = *sel;
    s->labels = c->labels;
    sink_config_defaults(&s->sink);
    s->sink.kind = c->sink.type;
    s->sink.dir = c->sink.dir;
    s->sink.url = c->sink.url;
    s->sink.bearer_token = c->sink.bearer_token;
    s->sink.ca_file = c->sink.ca_file;
    if (c->console.url && !c->sink.named) { /* the console's own ingest, with the agent token */
        s->sink.kind = SINK_HTTP;
        s->sink.url = c->console.ingest_url;
        s->sink.bearer_token = c->console.token;
        s->sink.ca_file = c->console.ca_file;
    }
    s->kubelet.enabled = c->kubelet.enabled;
    s->kubelet.url = c->kubelet.url;
    s->kubelet.token_file = c->kubelet.token_file;
    s->kubelet.ca_file = c->kubelet.ca_file;
    s->console.url = c->console.url;
    s->console.token = c->console.token;
    s->console.ca_file = c->console.ca_file;
    s->console.state_file = c->console.state_file;
    s->sink.upload_timeout_ms = c->upload_timeout_s * 1000;
    s->sink.spool_dir = c->spool.dir;
    s->sink.spool_max_bytes = c->spool.max_bytes;
    s->status_socket = c->status_socket;
    s->metrics_listen = c->metrics_listen;
    s->metrics_allow_remote = c->metrics_allow_remote;
    s->node_name = c->node_name;
    s->config_file = c->file;
    s->enter_mntns = true;
    return 0;
}

/* SIGHUP: a whole new configuration, or the reason it was refused (the old one stays). */
static int reload(void *ctx, struct daemon_settings *out, struct cp_err *err)
{
    struct run_state *st = ctx;
    struct agent_config next = {0};
    struct selector_list sel = {0};
    if (config_load(&st->args, &st->env, &next, err) < 0) return -1;
    if (to_settings(&next, &sel, out, err) < 0) {
        config_free(&next);
        return -1;
    }
    /* the generation before the running one is no longer borrowed from */
    config_free(&st->old_cfg);
    selector_list_free(&st->old_selectors);
    st->old_cfg = st->cfg;
    st->old_selectors = st->selectors;
    st->cfg = next;
    st->selectors = sel;
    return 0;
}

static void report_capabilities(void)
{
    char missing[128];
    struct cp_err err;
    if (caps_restrict_agent(missing, sizeof missing, &err) < 0) {
        cli_error("%s", err.msg);
        return;
    }
    if (missing[0] && getuid() == 0)
        cli_error("running without %s: processes of other users and containers may not be "
                  "readable; grant the capability to profile them",
                  missing);
    else if (missing[0])
        cli_error("running as an ordinary user without %s: profiling this user's own processes "
                  "only",
                  missing);
}

int cmd_run(int argc, char **argv)
{
    struct run_state *st = calloc(1, sizeof *st);
    struct cp_err err;
    int rc = EXIT_USAGE;
    if (!st) {
        cli_error("out of memory");
        return EXIT_FAILURE_RUN;
    }
    if (config_args_parse(argc, argv, &st->args, &err) < 0) {
        cli_error("%s", err.msg);
        goto out;
    }
    if (st->args.help) {
        puts("usage: conprof-agent run [options]\n\n"
             "Finds the Python processes of this node, samples them from outside and writes or "
             "uploads\none profile per application every period. Settings: defaults < config "
             "file < environment < flags\n(docs/agent-config.md).\n");
        config_usage(stdout);
        rc = EXIT_OK;
        goto out;
    }
    config_env_from_process(&st->env);
    struct daemon_settings settings;
    if (config_load(&st->args, &st->env, &st->cfg, &err) < 0 ||
        to_settings(&st->cfg, &st->selectors, &settings, &err) < 0) {
        cli_error("%s", err.msg);
        goto out;
    }
    report_capabilities();
    rc = daemon_run(&settings, reload, st);
out:
    config_free(&st->cfg);
    config_free(&st->old_cfg);
    selector_list_free(&st->selectors);
    selector_list_free(&st->old_selectors);
    config_args_free(&st->args);
    free(st);
    return rc;
}
