/* worker: the sampler process of one container (or of the host's own processes).
 *
 * Contract: worker_spawn() forks a child that keeps a handle on our /proc, enters the mount
 * namespace of `ns_pid` (when enter_mntns is set and it differs from ours), drops every
 * capability but CAP_SYS_PTRACE, sets no_new_privs, and then serves the worker_proto.h protocol
 * on its end of a socketpair until WP_STOP or the agent closes the channel: it samples the target
 * processes the agent assigns at the agent's rate, one aggregate per application key, and answers
 * WP_FLUSH with a gzipped pprof per application. The child never returns; the parent gets the
 * child's pid and its channel fd (non-blocking, close-on-exec). A worker that cannot enter the
 * namespace carries on outside it (files then come through /proc/PID/root) and says so in its
 * WP_FLUSHED reply.
 */
#ifndef CONPROF_AGENT_WORKER_H
#define CONPROF_AGENT_WORKER_H

#include "error.h"

#include <stdbool.h>
#include <sys/types.h>

struct worker_spec {
    pid_t ns_pid; /* a process of the container, whose mount namespace to enter */
    bool enter_mntns;
    const char *label; /* for messages: the container id or "host" */
};

pid_t worker_spawn(const struct worker_spec *spec, int *channel_fd, struct cp_err *err);

#endif
