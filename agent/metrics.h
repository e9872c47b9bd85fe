/* metrics: Prometheus text exposition (format version 0.0.4) served over a tiny HTTP/1.1 responder.
 *
 * Contract:
 *   - The daemon owns the numbers: at each scrape the server calls fill() for a fresh struct
 *     metrics_values and renders it (metrics_render). Metric names start with conprof_; only
 *     low-cardinality labels (result, reason, version), never a pid or a target.
 *   - The server listens on one address (metrics_parse_address: "127.0.0.1:9464", "[::1]:9464",
 *     "localhost:9464"); a non-loopback address is refused unless allow_remote. It answers
 *     GET/HEAD /metrics (a query string is ignored) with 200, other paths with 404, other methods
 *     on /metrics with 405, malformed requests with 400, a request head over
 *     METRICS_REQUEST_MAX bytes or with more than METRICS_HEADERS_MAX headers with 431, and a client that has not sent its request head within
 *     METRICS_TIMEOUT_MS with 408. Every response closes the connection.
 *   - Nothing blocks: the server exposes ONE file descriptor (an epoll set holding the listening
 *     socket, the clients and a timer). The daemon polls it for POLLIN and then calls
 *     metrics_server_handle(); timeouts also show up as readiness of that fd.
 *   - At most METRICS_MAX_CLIENTS connections at once; more are accepted and closed at once.
 *   - Not thread-safe; one owner.
 */
#ifndef CONPROF_AGENT_METRICS_H
#define CONPROF_AGENT_METRICS_H

#include "buf.h"
#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define METRICS_REQUEST_MAX 8192 /* bytes of request line + headers */
#define METRICS_HEADERS_MAX 100
#define METRICS_TIMEOUT_MS 2000 /* to receive the request head; then again to send the reply */
#define METRICS_MAX_CLIENTS 16
#define METRICS_ADDRESS_MAX 64 /* bytes of a "HOST:PORT" text */

struct metrics_values {
    const char *version; /* conprof_info{version=...} */
    double start_time_s; /* unix time the agent started */
    uint64_t samples_total;
    uint64_t sample_errors_total;
    uint64_t targets;   /* gauge: targets being profiled */
    uint64_t processes; /* gauge: Python processes being profiled */
    uint64_t workers;   /* gauge: worker processes running */
    uint64_t worker_crashes_total;
    uint64_t worker_hangs_total;
    uint64_t profiles_total;
    uint64_t profile_errors_total;
    uint64_t uploads_sent_total;    /* uploads_total{result="sent"} */
    uint64_t uploads_failed_total;  /* uploads_total{result="failed"}: dropped for good */
    uint64_t uploads_retried_total; /* uploads_total{result="retried"}: attempts to try again */
    uint64_t spooled_total;         /* profiles written to the spool */
    uint64_t spool_evictions_total;
    uint64_t spool_corrupt_total;
    uint64_t spool_bytes;      /* gauge */
    uint64_t spool_files;      /* gauge */
    uint64_t upload_queue;     /* gauge: profiles waiting in memory */
    uint64_t uploads_inflight; /* gauge */
    uint64_t discovery_passes_total;
    double discovery_last_duration_s;
    uint64_t config_reloads_ok_total;
    uint64_t config_reloads_failed_total;
};

typedef void metrics_fill_fn(void *ctx, struct metrics_values *out);

struct metrics_address {
    struct sockaddr_storage addr;
    socklen_t len;
    int port; /* 0..65535 */
    bool loopback;
};

/* "IPv4:PORT", "[IPv6]:PORT" or "localhost:PORT" (127.0.0.1); numeric addresses only, no DNS. */
int metrics_parse_address(const char *text, struct metrics_address *out, struct cp_err *err);

/* Appends the exposition text of v to out. 0, or -1 when memory runs out. */
int metrics_render(const struct metrics_values *v, struct buf *out);

/* ---- the HTTP request head parser (separate so it can be fuzzed) ----------------------- */

enum metrics_http_parse_result {
    METRICS_HTTP_INCOMPLETE = 0, /* need more bytes */
    METRICS_HTTP_COMPLETE = 1,   /* request line and headers parsed */
    METRICS_HTTP_BAD = 2,        /* malformed: answer 400 */
    METRICS_HTTP_TOO_LARGE = 3,  /* no end of headers within METRICS_REQUEST_MAX bytes, or more
                                    than METRICS_HEADERS_MAX header lines: answer 431 */
};

struct metrics_http_request {
    char method[16]; /* e.g. "GET" */
    char path[256];  /* target up to '?', e.g. "/metrics"; "" when longer than the buffer */
    size_t head_len; /* bytes of request line + headers + blank line */
    unsigned header_count;
};

/* Parses the request head at the start of data[0..len). Looks at no more than
 * METRICS_REQUEST_MAX bytes; fills *out only on COMPLETE. */
enum metrics_http_parse_result metrics_http_parse(const char *data, size_t len,
                                                  struct metrics_http_request *out);

/* ---- the server ---------------------------------------------------------------------- */

struct metrics_server;

struct metrics_server *metrics_server_open(const char *listen_address, bool allow_remote,
                                           metrics_fill_fn *fill, void *ctx, struct cp_err *err);
/* The one fd to poll for POLLIN. */
int metrics_server_fd(const struct metrics_server *s);
/* The port actually bound (useful with port 0). */
int metrics_server_port(const struct metrics_server *s);
/* Accepts, reads, answers and times out connections without blocking. 0, or -1 with err when
 * something worth a log line happened (the server keeps working either way). */
int metrics_server_handle(struct metrics_server *s, struct cp_err *err);
void metrics_server_close(struct metrics_server *s);

#endif
