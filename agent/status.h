/* status: the agent's status socket (server, in the daemon) and its client (`conprof-agent status`).
 *
 * Protocol: a client connects to the unix stream socket and reads; the server writes one JSON
 * document followed by "\n" and closes. Nothing is read from the client.
 *
 * The document (built by the daemon through the render callback; every field optional for the
 * client, which prints what it finds):
 *   {
 *     "version": "0.1.0",              agent version
 *     "pid": 1234,                     the agent's pid
 *     "node": "node-1",                the host label
 *     "started_at": 1700000000,        unix seconds
 *     "uptime_s": 8130,
 *     "config": {"file": "/etc/conprof/agent.json", "rate_hz": 100, "period_s": 45,
 *                "sink": "http https://pyroscope:4040"},
 *     "targets": [                     one entry per profiled Python process
 *       {"target": "containerd:3f9a...", "container_id": "3f9a0e7c1b2d...", "pod_uid": "...",
 *        "k8s_namespace": "shop", "k8s_pod": "web-5d8f", "application": "shop-api",
 *        "pid": 4242, "python": "3.12.1", "samples": 120345, "errors": 3,
 *        "state": "sampling" | "attaching" | "failed" | "restarting", "error": "why (when failed)"}
 *     ],
 *     "workers": {"running": 5, "crashes": 0, "hangs": 0},
 *     "samples": 1203450, "sample_errors": 12,     totals since start
 *     "profiles": 320, "profile_errors": 0,
 *     "uploads": {"sent": 318, "failed": 0, "retried": 4, "spooled": 2, "evicted": 0,
 *                 "queued": 0, "inflight": 1, "spool_files": 2, "spool_bytes": 183211},
 *     "last_errors": [{"time": 1700000100, "message": "upload shop-api: HTTP 503"}]   oldest first
 *   }
 *
 * Server contract: status_server_open() creates the parent directory (mode 0700) when missing,
 * binds the socket under a temporary name, sets mode 0600, and renames it over the final path —
 * replacing a stale socket (one nobody answers on) atomically, refusing when another agent
 * answers there or when the path is not a socket. Nothing blocks: the server exposes ONE fd (an
 * epoll set of the listening socket, the clients still being written to and a timer); poll it for
 * POLLIN, then call status_server_handle(). A client that does not read its document within
 * STATUS_CLIENT_TIMEOUT_MS is dropped; only peers running as root or as the agent's own user are
 * answered. status_server_close() removes the socket file if it is still ours.
 *
 * Client contract: status_fetch() connects, reads at most STATUS_REPLY_MAX bytes within
 * timeout_ms, and parses the JSON. It returns STATUS_FETCH_NO_AGENT when nothing runs there (no
 * socket file, or connection refused: a stale socket), so `conprof-agent status` can exit with
 * STATUS_EXIT_NO_AGENT.
 */
#ifndef CONPROF_AGENT_STATUS_H
#define CONPROF_AGENT_STATUS_H

#include "error.h"

#include <jansson.h>
#include <stdio.h>
#include <time.h>

/* Longest socket path: sun_path holds 107 bytes, and the temporary name adds ".tmp.<pid>". */
#define STATUS_SOCKET_PATH_MAX 90
#define STATUS_REPLY_MAX (4u << 20)
#define STATUS_MAX_CLIENTS 8
#define STATUS_CLIENT_TIMEOUT_MS 2000
#define STATUS_EXIT_NO_AGENT 3 /* exit status of `conprof-agent status` when no agent runs */

/* Returns a new reference to the status document, or NULL (the client then gets
 * {"error": "..."}). */
typedef json_t *status_render_fn(void *ctx);

struct status_server;

struct status_server *status_server_open(const char *path, status_render_fn *render, void *ctx,
                                         struct cp_err *err);
int status_server_fd(const struct status_server *s);
/* Accepts and answers clients, drops the ones that timed out; never blocks. 0, or -1 with err
 * when something worth a log line happened (the server keeps working either way). */
int status_server_handle(struct status_server *s, struct cp_err *err);
void status_server_close(struct status_server *s);

enum status_fetch_result {
    STATUS_FETCH_ERROR = -1, /* err says why (permission, timeout, bad reply) */
    STATUS_FETCH_OK = 0,
    STATUS_FETCH_NO_AGENT = 1, /* err says where nothing answered */
};

enum status_fetch_result status_fetch(const char *path, int timeout_ms, json_t **doc,
                                      struct cp_err *err);

/* Writes the human-readable status page of doc to out; `now` is for "time ago" columns. */
void status_print_text(FILE *out, const json_t *doc, time_t now);

#endif
