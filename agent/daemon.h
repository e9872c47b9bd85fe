/* daemon: `conprof-agent run`, the per-node loop.
 *
 * Contract: daemon_run() owns everything it starts and returns the process exit status. One
 * thread, one poll loop over: the sampler workers' channels (one worker per container target,
 * worker.h), the sink (sink.h, uploads never block the loop), the status socket and metrics
 * listener, and a signalfd for SIGTERM/SIGINT (flush the partial period within the upload
 * timeout, then exit 0), SIGHUP (reload the config through the callback; a bad config is
 * rejected with its reason and the old one kept) and SIGCHLD (a worker that died is counted and
 * restarted with exponential backoff). Every discovery interval it rescans /proc and reconciles
 * workers with the targets that match the selectors; every period it asks each worker for one
 * pprof per application and hands them, labelled, to the sink. A worker that does not answer a
 * flush within DAEMON_WORKER_TIMEOUT_S is killed and restarted (counted as hung).
 */
#ifndef CONPROF_AGENT_DAEMON_H
#define CONPROF_AGENT_DAEMON_H

#include "selector.h"
#include "sink.h"

#include <jansson.h>
#include <stdbool.h>

#define DAEMON_WORKER_TIMEOUT_S 10

struct daemon_settings {
    int rate_hz;
    int period_s;
    int upload_timeout_s;
    int discovery_interval_s;
    struct selector_list selectors; /* empty: every Python process */
    json_t *labels;                 /* user labels: object of strings (borrowed) */
    struct sink_config sink;        /* strings borrowed */
    const char *status_socket;      /* NULL or "": none */
    const char *metrics_listen;     /* NULL or "": none */
    bool metrics_allow_remote;
    const char *config_file; /* for the status page; NULL: none */
    const char *node_name;   /* the host label; NULL: gethostname() */
    bool enter_mntns;        /* workers setns into containers (needs CAP_SYS_ADMIN) */
    struct { /* optional pod metadata from the kubelet (kubelet.h); strings borrowed */
        bool enabled;
        const char *url;
        const char *token_file;
        const char *ca_file;
    } kubelet;
    struct { /* the control channel (control/agent_link.h); url NULL: none */
        const char *url;
        const char *token;
        const char *ca_file;
        const char *state_file;
    } console;
};

/* Loads settings again on SIGHUP; returns 0 with *out filled, or -1 with err (old kept). */
typedef int daemon_reload_fn(void *ctx, struct daemon_settings *out, struct cp_err *err);

int daemon_run(const struct daemon_settings *settings, daemon_reload_fn *reload, void *reload_ctx);

#endif
