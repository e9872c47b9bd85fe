/* agent_channel: the agent's end of the control channel (control/PROTOCOL.md): a websocket client
 * to conprof-console that takes start / stop / config / lease commands into the persistent
 * session table (control_state.h) and reports hello, status heartbeats and events.
 *
 * Contract:
 *   - agent_channel_open() loads the state file (a corrupt one is logged and treated as empty:
 *     fail closed), resumes the sessions whose lease has not ended, and creates a client-only
 *     libwebsockets context. It does not connect yet: agent_channel_service() does, and
 *     reconnects after every failure with exponential backoff and jitter (1 s doubling to 60 s,
 *     each delay drawn from [delay/2, delay]; back to 1 s after a connection that lasted 60 s).
 *   - Driving it: the caller's loop calls agent_channel_service() at least every 250 ms; it
 *     never blocks (lws_service with a negative timeout only handles what is ready), then
 *     agent_channel_tick(now), which ends sessions whose lease is over (fail closed: also while
 *     disconnected), queues their lease_expired / quota_exhausted events and sends the status
 *     heartbeat every AGENT_CHANNEL_STATUS_S while connected.
 *   - Commands are parsed with proto_parse_command(), applied with control_state_apply(), saved
 *     to the state file when they changed something, and answered with ack or nack (a nack
 *     changes nothing). Every change of the session set (a command, an expiry) bumps
 *     agent_channel_generation(), so the caller knows when to re-match processes.
 *   - agent_channel_sessions() lists the sessions in force at `now` (running, lease not over).
 *     The pointers stay valid until the next service() or tick() call.
 *   - Events raised while disconnected wait in a bounded queue (AGENT_CHANNEL_EVENTS_MAX; the
 *     oldest is dropped and counted) and are sent after the next hello.
 *   - Keepalive: a websocket ping after AGENT_CHANNEL_PING_S idle, hang-up when no pong comes
 *     within AGENT_CHANNEL_HANGUP_S. TLS (wss://) always verifies the console's certificate,
 *     against ca_file when given, else the system store.
 * Not thread-safe: one owner (the daemon loop). No global state besides libwebsockets' own.
 */
#ifndef CONPROF_CONTROL_AGENT_CHANNEL_H
#define CONPROF_CONTROL_AGENT_CHANNEL_H

#include "control_state.h"
#include "error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_CHANNEL_STATUS_S 10
#define AGENT_CHANNEL_PING_S 20
#define AGENT_CHANNEL_HANGUP_S 30
#define AGENT_CHANNEL_EVENTS_MAX 64
#define AGENT_CHANNEL_BACKOFF_MAX_S 60
#define AGENT_CHANNEL_HEALTHY_S 60

struct agent_channel_options {
    const char *url;           /* ws://HOST[:PORT]/PATH or wss://... */
    const char *token;         /* the agent token (Authorization: Bearer) */
    const char *ca_file;       /* NULL: the system CA store */
    const char *state_file;    /* sessions and leases; NULL: kept in memory only (tests) */
    const char *node;          /* hello.node */
    const char *agent_id;      /* hello.agent_id; NULL: "<node>" */
    const char *agent_version; /* hello.agent_version */
    /* One line per event worth a human's attention; NULL: "conprof-agent: console: <line>". */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
};

/* What the heartbeat reports, filled by the caller. */
struct agent_channel_counters {
    uint64_t samples, sample_errors;
    uint64_t uploads_sent, uploads_failed, uploads_spooled, uploads_evicted;
};

struct agent_channel_stats {
    bool connected;
    uint64_t connects, disconnects;
    uint64_t commands_acked, commands_nacked;
    uint64_t events_dropped;
    double next_connect_s; /* seconds until the next attempt when disconnected */
    char last_error[512];  /* "" when none */
};

struct agent_channel;

struct agent_channel *agent_channel_open(const struct agent_channel_options *o, struct cp_err *err);
void agent_channel_close(struct agent_channel *ch);

void agent_channel_service(struct agent_channel *ch);
void agent_channel_tick(struct agent_channel *ch, int64_t now);
uint64_t agent_channel_generation(const struct agent_channel *ch);

size_t agent_channel_sessions(struct agent_channel *ch, int64_t now,
                              const struct control_session **out, size_t max);

/* The node's Python processes as TARGET objects (PROTOCOL.md), for hello and status; takes the
 * reference. */
void agent_channel_set_targets(struct agent_channel *ch, json_t *targets);
void agent_channel_set_counters(struct agent_channel *ch, const struct agent_channel_counters *c);

/* Queues an event (PROTOCOL.md); target may be NULL (borrowed). Kept while disconnected, within
 * AGENT_CHANNEL_EVENTS_MAX. */
void agent_channel_event(struct agent_channel *ch, enum proto_event_kind kind,
                         const char *session_id, const char *message, const json_t *target);

void agent_channel_get_stats(const struct agent_channel *ch, struct agent_channel_stats *out);
/* The channel for `conprof-agent status`: url, connected, counters, sessions with their leases. */
json_t *agent_channel_status_json(const struct agent_channel *ch, int64_t now);

#endif
