/* console_server: the libwebsockets side of conprof-console: one lws context and vhost serving
 * HTTP (the REST API, ingest) and the /agent/v1 websocket on one port, optionally with TLS.
 *
 * Contract: console_server_run() opens the store in data_dir, builds the hub and the api, listens,
 * and serves until *stop becomes non-zero (a signal handler sets it; the loop wakes at least every
 * tick), then closes every connection and the store and returns 0. It returns -1 with err set when
 * it cannot start (port in use, bad address, unwritable data dir, unreadable cert/key).
 * HTTP bodies are accumulated per request up to the route's limit (api_body_limit(); larger is
 * 413 without reading further); the websocket checks the bearer token in
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE (401 on the upgrade) and again in
 * LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION, before any message is read. Frames above
 * PROTO_FRAME_MAX are dropped (counted by the hub) without closing the connection.
 * Each connection's outgoing frames are queued (at most CONSOLE_SEND_QUEUE_MAX) and written when
 * writable. Single-threaded.
 */
#ifndef CONPROF_CONSOLE_SERVER_H
#define CONPROF_CONSOLE_SERVER_H

#include "error.h"

#include <signal.h>
#include <stdint.h>

#define CONSOLE_SEND_QUEUE_MAX 4096 /* frames queued for one agent before new ones are dropped */
#define CONSOLE_DEFAULT_FREE_BUDGET 900
#define CONSOLE_DEFAULT_MAX_LEASE 300
#define CONSOLE_DEFAULT_RETENTION_MIN (56 * 24 * 60)
#define CONSOLE_DEFAULT_TICK_MS 1000

struct console_options {
    const char *listen_host; /* "127.0.0.1", "0.0.0.0", "::" */
    int listen_port;
    const char *data_dir;
    const char *cert_path; /* both or neither */
    const char *key_path;
    int64_t free_budget_s;
    int64_t max_lease_s;
    int64_t retention_minutes;
    int tick_ms;
    int period_s; /* the profile period sessions are started with (0: HUB_DEFAULT_PERIOD) */
};

int console_server_run(const struct console_options *opts, volatile sig_atomic_t *stop,
                       struct cp_err *err);

#endif
