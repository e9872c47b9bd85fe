/* console_hub: the console side of the control protocol (control/PROTOCOL.md): the connected agents,
 * the profiling sessions, leases and the quota tick.
 *
 * Contract: the hub knows nothing of libwebsockets. A connection is an opaque `conn` pointer of
 * the server; the hub sends a text frame with the `send` callback given to hub_new() (the server
 * queues it and writes it when the socket is writable; the callback returns -1 when the frame
 * could not be queued, which the hub logs and forgets). Tests pass a recording callback.
 * State that must survive a restart (projects, environments, toggles, session ids, leases, used
 * budget, agents seen) lives in the store (store.h); the hub keeps in memory only the connected
 * agents (their last hello/status), the last HUB_EVENTS_MAX events and the renewal clock.
 *
 * Time is always passed in (Unix seconds); nothing here reads a clock. Costs: a toggle or a lease
 * renewal is one pass over the connected agents per changed session; a tick is one store call plus
 * that; a frame touches only its agent. No O(n^2) anywhere (1,000 agents are fine).
 *
 * Who receives what: an agent whose token was created with --project P (token_project "P") gets
 * only the sessions of project P; an agent token without a project gets every session.
 * Not thread-safe: one hub per event loop.
 */
#ifndef CONPROF_CONSOLE_HUB_H
#define CONPROF_CONSOLE_HUB_H

#include "error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct hub;
struct hub_agent;

#define HUB_EVENTS_MAX 512    /* events kept in memory (newest first in hub_events_json) */
#define HUB_DEFAULT_PERIOD 45 /* start.period */
#define HUB_DEFAULT_UPLOAD_TIMEOUT 10
#define HUB_CLOSE_BAD_VERSION 4000 /* websocket close code for a hello of another version */

/* Queues one text frame for `conn`. Returns 0, or -1 when it could not be queued. */
typedef int (*hub_send_fn)(void *conn, const char *text, size_t len, void *ctx);

struct hub_config {
    int64_t max_lease_s;   /* --max-lease, > 0 (300 in production) */
    int64_t free_budget_s; /* --free-budget, budget of the "free" plan (900 in production) */
    int period;            /* start.period (HUB_DEFAULT_PERIOD) */
    int upload_timeout;    /* start.upload_timeout (HUB_DEFAULT_UPLOAD_TIMEOUT) */
};

/* One line "conprof-console: <text>" on stderr: the console's log, for every part of it. */
void console_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The store stays owned by the caller and must outlive the hub. */
struct hub *hub_new(struct store *store, const struct hub_config *config, hub_send_fn send,
                    void *send_ctx, struct cp_err *err);
void hub_free(struct hub *hub);

/* A websocket was accepted for an agent token. token_project is "" (or NULL) when the token may see
 * every project. Returns the agent handle (owned by the hub until hub_agent_disconnect()), or NULL
 * when memory ran out. */
struct hub_agent *hub_agent_connect(struct hub *hub, void *conn, const char *token_name,
                                    const char *token_project, int64_t now);
/* The connection closed: the agent is marked disconnected in the store and forgotten. */
void hub_agent_disconnect(struct hub *hub, struct hub_agent *agent, int64_t now);

enum hub_verdict {
    HUB_KEEP = 0,      /* keep the connection */
    HUB_CLOSE_VERSION, /* close with HUB_CLOSE_BAD_VERSION ("speaks protocol v1") */
};
/* One received frame (binary: a binary frame; text NULL: a frame larger than PROTO_FRAME_MAX that
 * the server dropped, len its size). Malformed, oversized or unknown frames are logged,
 * counted and ignored; hello records the agent and reconciles its sessions (start for every
 * active session the token may see, stop for each listed session that is not active); status
 * updates its targets and sessions; event and nack are logged and kept as events; ack is counted. */
enum hub_verdict hub_agent_frame(struct hub *hub, struct hub_agent *agent, const char *text,
                                 size_t len, bool binary, int64_t now);

enum hub_toggle_result {
    HUB_TOGGLE_OK = 0,
    HUB_TOGGLE_EXHAUSTED, /* switching on a project whose budget is spent: HTTP 409 */
    HUB_TOGGLE_ERROR,     /* err set (store failure, bad name: CP_ERR_INVALID) */
};
/* Switches profiling of project/environment on or off (creating the project on the free plan and
 * the environment when needed). On: a new session id and lease (now + min(max_lease, budget
 * left)) are persisted and `start` is sent to every connected agent that may see the project;
 * switching on an environment that is already on keeps its session. Off: `stop` reason
 * "toggle off". */
enum hub_toggle_result hub_set_profiling(struct hub *hub, const char *project,
                                         const char *environment, bool enabled, int64_t now,
                                         struct cp_err *err);

/* Call every --tick-ms: counts used budget (store_quota_tick), stops the sessions of projects that
 * ran out (`stop` reason "quota exhausted"), and every max_lease/3 renews the lease of every active
 * session (`lease` to the agents that may see it). Returns 0, or -1 with err set on a store error. */
int hub_tick(struct hub *hub, int64_t now, struct cp_err *err);

/* GET /api/v1/agents: {"agents":[...]} (API.md): the agents the store has seen, merged with the
 * connected ones. New reference, or NULL with err set. */
json_t *hub_agents_json(struct hub *hub, int64_t now, struct cp_err *err);
/* GET /api/v1/events: {"events":[{"time","agent","node","kind","session_id","message","field"}...]}
 * newest first; kinds are the agents' event kinds plus "nack" and "rejected_frame". */
json_t *hub_events_json(struct hub *hub);

/* Counters, for tests and logs. */
struct hub_stats {
    size_t agents_connected;
    uint64_t frames_received, frames_rejected, commands_sent, acks, nacks, events;
};
void hub_stats(const struct hub *hub, struct hub_stats *out);

#endif
