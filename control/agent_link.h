/* agent_link: the agent's websocket client to conprof-console (control/PROTOCOL.md, agent side).
 *
 * Contract:
 *   - agent_link_open() loads the session table from the state file (control_state.h; a corrupt
 *     file is logged with its path and reason and the table starts empty: fail closed), restarts
 *     profiling-time accounting, and creates a client-only libwebsockets context. It does not
 *     connect; agent_link_service() does.
 *   - Driving it (the daemon's poll loop, which wakes at least every 250 ms): call
 *       agent_link_service(link, now);   // lws I/O without blocking, (re)connect, heartbeat
 *       agent_link_tick(link, now);      // lease expiry (fail closed, also while disconnected)
 *       if (agent_link_generation(link) != seen) { re-match targets with agent_link_sessions() }
 *     `now` is Unix seconds (time(NULL)); it is the clock for leases and commands. Reconnect and
 *     heartbeat timing use CLOCK_MONOTONIC internally. agent_link_service() never blocks on
 *     sockets (lws_service with timeout -1: poll(..., 0)); the only blocking step is the name
 *     lookup of a non-numeric console host at connect time (lws 4.1.6 has no async DNS).
 *   - Connect: Authorization: Bearer <token>, subprotocol conprof-agent-v1; wss:// always
 *     verifies the console certificate and host name (against ca_file, else the system store).
 *     After a failure (connect call fails, connection error, close) the next attempt waits
 *     uniform-random in [min, min(max, min * 2^failures)] ms ("full jitter", defaults 1 s ..
 *     60 s); failures reset after a connection that lasted AGENT_LINK_HEALTHY_S.
 *     Keepalive: lws validity ping after ping_s idle, hang-up when nothing arrives in hangup_s.
 *   - On connect the first message is hello (targets from agent_link_set_targets(), sessions
 *     held in the table), then the queued events; status every status_s while connected.
 *   - Commands are parsed with proto_parse_command(), applied with control_state_apply(); a
 *     change saves the state file and bumps agent_link_generation(); the answer is ack or nack
 *     (a nack changes nothing). Frames without a readable command id (invalid JSON, binary,
 *     oversized) are logged, counted (frames_ignored) and ignored; the connection stays up.
 *   - agent_link_tick() expires running sessions whose lease ended, queues lease_expired or
 *     quota_exhausted events for them, saves the state file and bumps the generation.
 *   - Events wait in a bounded queue (AGENT_LINK_EVENTS_MAX; when full the oldest is dropped and
 *     counted) until sent after hello.
 *   - Pointers returned by agent_link_sessions() stay valid until the next call of
 *     agent_link_service(), agent_link_tick() or agent_link_close().
 * Not thread-safe: one owner (the daemon loop). No global state of its own; it lowers lws's
 * process-wide log level to errors and warnings.
 */
#ifndef CONPROF_CONTROL_AGENT_LINK_H
#define CONPROF_CONTROL_AGENT_LINK_H

#include "control_state.h"
#include "error.h"
#include "protocol.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_LINK_STATUS_S 10
#define AGENT_LINK_PING_S 20
#define AGENT_LINK_HANGUP_S 30
#define AGENT_LINK_BACKOFF_MIN_MS 1000
#define AGENT_LINK_BACKOFF_MAX_MS 60000
#define AGENT_LINK_HEALTHY_S 60
#define AGENT_LINK_EVENTS_MAX 64
#define AGENT_LINK_OUTBOX_MAX 256 /* acks, nacks, status waiting for a writable socket */

struct agent_link_options {
    const char *url;                 /* ws://HOST[:PORT][/PATH] or wss://...; required */
    const char *token;               /* agent token, sent as Authorization: Bearer; required */
    const char *ca_file;             /* wss: PEM CA bundle; NULL: the system store */
    const char *agent_id;            /* hello.agent_id; NULL: node */
    const char *node;                /* hello.node; required */
    const char *agent_version;       /* hello.agent_version; required */
    const char *const *capabilities; /* NULL-terminated, hello.capabilities; NULL: [] */
    const char *state_file;          /* sessions + leases; NULL: memory only (tests) */
    int ping_s, hangup_s;            /* 0: AGENT_LINK_PING_S / AGENT_LINK_HANGUP_S; hangup > ping */
    int status_s;                    /* 0: AGENT_LINK_STATUS_S */
    uint32_t backoff_min_ms, backoff_max_ms; /* 0: the defaults above */
    /* One line per thing worth a human's attention; NULL: stderr "conprof-agent: console: ". */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
};

/* Reported in status heartbeats; the daemon fills it whenever it likes. */
struct agent_link_counters {
    int64_t samples, sample_errors;
    int64_t uploads_sent, uploads_failed, uploads_spooled, uploads_evicted;
};

struct agent_link_stats {
    bool connected;
    const char *url;           /* borrowed from the link */
    uint64_t connect_attempts; /* connect calls made */
    uint64_t connects;         /* websocket handshakes completed */
    uint64_t disconnects;      /* established connections that ended */
    uint64_t commands_acked, commands_nacked;
    uint64_t frames_ignored; /* frames without a readable id (invalid, binary, oversized) */
    uint64_t events_dropped; /* events pushed out of the full queue */
    uint64_t save_errors;    /* state file writes that failed */
    size_t sessions_held, sessions_active;
    int64_t next_attempt_ms; /* when disconnected: ms until the next attempt; else 0 */
    char last_error[512];    /* "" when none */
};

struct agent_link;

struct agent_link *agent_link_open(const struct agent_link_options *o, struct cp_err *err);
void agent_link_close(struct agent_link *link); /* NULL is fine; closes the connection */

void agent_link_service(struct agent_link *link, int64_t now);
void agent_link_tick(struct agent_link *link, int64_t now);
uint64_t agent_link_generation(const struct agent_link *link);

/* The sessions in force at `now` (running, now < lease_until); returns how many (<= max). */
size_t agent_link_sessions(struct agent_link *link, int64_t now, const struct control_session **out,
                           size_t max);

/* The node's Python processes as an array of TARGET objects (proto_target_json()); steals the
 * reference (NULL: []). Used by the next hello and status. */
void agent_link_set_targets(struct agent_link *link, json_t *targets);
void agent_link_set_counters(struct agent_link *link, const struct agent_link_counters *c);
/* How many targets a session profiles (status.sessions[].targets); unknown sessions ignored. */
void agent_link_set_session_targets(struct agent_link *link, const char *session_id,
                                    int64_t targets);

/* Queues an event; session_id, message, target may be NULL (target is borrowed). */
void agent_link_event(struct agent_link *link, enum proto_event_kind kind, const char *session_id,
                      const char *message, const json_t *target);

void agent_link_stats(const struct agent_link *link, int64_t now, struct agent_link_stats *out);
/* For `conprof-agent status`: {url, connected, connects, disconnects, last_error, commands_acked,
 * commands_nacked, events_dropped, sessions:[{session_id, state, project, environment,
 * lease_until, profiling_s}]}; new reference, NULL on allocation failure. */
json_t *agent_link_status_json(const struct agent_link *link, int64_t now);

/* The reconnect delay after `failures` consecutive failures for a uniform `random`:
 * min + random % (min(max, min << failures) - min + 1). Exposed for tests. */
uint32_t agent_link_backoff_ms(unsigned failures, uint32_t min_ms, uint32_t max_ms,
                               uint64_t random);

#endif
