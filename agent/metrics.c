/* metrics: Prometheus exposition text and the HTTP/1.1 responder that serves it (see metrics.h).
 *
 * Design: the daemon's loop must never wait on a scraper, and it should not have to track a
 * changing set of client sockets either. So the server keeps its listening socket, its clients
 * and a timerfd in a private epoll set and hands the daemon that single fd: it becomes readable
 * when a client connects, sends, can be written to, or when the earliest client deadline passes.
 * Each connection moves READING -> WRITING -> DRAINING -> closed: it reads until the request
 * head parses (at most METRICS_REQUEST_MAX bytes, METRICS_TIMEOUT_MS), writes the whole response
 * without blocking, then shuts down its write side and reads and discards whatever the client
 * still sends until it closes (bounded), so a client that sent too much still gets its 431
 * instead of a TCP reset. Sends use MSG_NOSIGNAL: a vanished scraper must not SIGPIPE the agent.
 * The request-head parser is a pure function of the bytes so it can be fuzzed.
 */
#include "metrics.h"

#include "pollset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_MAX (64u << 10) /* bytes discarded after the response before closing */
#define ACCEPT_BATCH 32       /* connections accepted per handle call */
#define ACCEPT_PAUSE_MS 1000  /* after EMFILE and friends */
#define TAG_LISTEN 0
#define TAG_CLIENT 2

/* ---- address ---------------------------------------------------------------------------- */

static int parse_port(const char *text, int *port)
{
    size_t n = strlen(text);
    if (n == 0 || n > 5 || strspn(text, "0123456789") != n) return -1;
    long v = strtol(text, NULL, 10);
    if (v > 65535) return -1;
    *port = (int)v;
    return 0;
}

static int set_ipv4(const char *host, int port, struct metrics_address *out)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->addr;
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) return -1;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    out->len = sizeof *sin;
    out->loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    return 0;
}

static int set_ipv6(const char *host, int port, struct metrics_address *out)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->addr;
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) return -1;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    out->len = sizeof *sin6;
    out->loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
                    (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && sin6->sin6_addr.s6_addr[12] == 127);
    return 0;
}

int metrics_parse_address(const char *text, struct metrics_address *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    size_t len = strnlen(text, METRICS_ADDRESS_MAX + 1);
    char host[METRICS_ADDRESS_MAX + 1];
    const char *port_text = NULL;
    bool bracketed = text[0] == '[';
    if (len > 0 && len <= METRICS_ADDRESS_MAX && bracketed) {
        const char *close = strchr(text, ']');
        if (close && close[1] == ':') {
            snprintf(host, sizeof host, "%.*s", (int)(close - text - 1), text + 1);
            port_text = close + 2;
        }
    } else if (len > 0 && len <= METRICS_ADDRESS_MAX) {
        const char *colon = strrchr(text, ':');
        if (colon && colon != text && !memchr(text, ':', (size_t)(colon - text))) {
            snprintf(host, sizeof host, "%.*s", (int)(colon - text), text);
            port_text = colon + 1;
        }
    }
    int port = 0, r = -1;
    if (port_text && parse_port(port_text, &port) == 0) {
        if (bracketed)
            r = set_ipv6(host, port, out);
        else
            r = set_ipv4(strcmp(host, "localhost") ? host : "127.0.0.1", port, out);
    }
    if (r < 0) {
        cp_err_set(err, CP_ERR_INVALID,
                   "metrics address '%.80s': expected IPv4:PORT, [IPv6]:PORT or localhost:PORT",
                   text);
        return -1;
    }
    out->port = port;
    return 0;
}

/* ---- exposition ------------------------------------------------------------------------- */

enum metric_type { COUNTER, GAUGE };

struct metric_def {
    const char *name;
    enum metric_type type;
    const char *help;
    const char *label; /* "result=\"sent\"" or NULL */
    size_t offset;     /* of a uint64_t in struct metrics_values, or of a double when real */
    bool real;
};

#define V(field) offsetof(struct metrics_values, field)

/* Series of one name are adjacent: HELP and TYPE are written once per name. */
static const struct metric_def METRICS[] = {
    {"conprof_start_time_seconds", GAUGE, "Unix time the agent started.", NULL, V(start_time_s),
     true},
    {"conprof_samples_total", COUNTER, "Stack samples taken.", NULL, V(samples_total), false},
    {"conprof_sample_errors_total", COUNTER,
     "Samples that failed (torn reads, exited processes, unreadable memory).", NULL,
     V(sample_errors_total), false},
    {"conprof_targets", GAUGE, "Targets being profiled (containers or host applications).", NULL,
     V(targets), false},
    {"conprof_processes", GAUGE, "Python processes being profiled.", NULL, V(processes), false},
    {"conprof_workers", GAUGE, "Sampler worker processes running.", NULL, V(workers), false},
    {"conprof_worker_restarts_total", COUNTER, "Sampler workers restarted, by reason.",
     "reason=\"crash\"", V(worker_crashes_total), false},
    {"conprof_worker_restarts_total", COUNTER, NULL, "reason=\"hang\"", V(worker_hangs_total),
     false},
    {"conprof_profiles_total", COUNTER, "Profiles produced (one per application and period).", NULL,
     V(profiles_total), false},
    {"conprof_profile_errors_total", COUNTER, "Profiles that could not be produced.", NULL,
     V(profile_errors_total), false},
    {"conprof_uploads_total", COUNTER,
     "Profile uploads by result: sent, failed (dropped for good), retried (attempt failed, will "
     "be tried again).",
     "result=\"sent\"", V(uploads_sent_total), false},
    {"conprof_uploads_total", COUNTER, NULL, "result=\"failed\"", V(uploads_failed_total), false},
    {"conprof_uploads_total", COUNTER, NULL, "result=\"retried\"", V(uploads_retried_total), false},
    {"conprof_spooled_total", COUNTER, "Profiles written to the on-disk spool.", NULL,
     V(spooled_total), false},
    {"conprof_spool_evictions_total", COUNTER,
     "Spooled profiles deleted, oldest first, to stay under the size cap.", NULL,
     V(spool_evictions_total), false},
    {"conprof_spool_corrupt_total", COUNTER, "Spool files that could not be read back.", NULL,
     V(spool_corrupt_total), false},
    {"conprof_spool_bytes", GAUGE, "Bytes in the spool.", NULL, V(spool_bytes), false},
    {"conprof_spool_files", GAUGE, "Profiles in the spool.", NULL, V(spool_files), false},
    {"conprof_upload_queue", GAUGE, "Profiles waiting in memory for an upload.", NULL,
     V(upload_queue), false},
    {"conprof_uploads_in_flight", GAUGE, "Uploads running.", NULL, V(uploads_inflight), false},
    {"conprof_discovery_passes_total", COUNTER, "Scans of /proc for Python processes.", NULL,
     V(discovery_passes_total), false},
    {"conprof_discovery_last_duration_seconds", GAUGE, "Duration of the last scan of /proc.", NULL,
     V(discovery_last_duration_s), true},
    {"conprof_config_reloads_total", COUNTER, "Config reloads (SIGHUP), by result.",
     "result=\"ok\"", V(config_reloads_ok_total), false},
    {"conprof_config_reloads_total", COUNTER, NULL, "result=\"failed\"",
     V(config_reloads_failed_total), false},
};

static int append_label_value(struct buf *out, const char *s)
{
    for (; *s; s++) {
        int r = *s == '\\'   ? buf_append_str(out, "\\\\")
                : *s == '"'  ? buf_append_str(out, "\\\"")
                : *s == '\n' ? buf_append_str(out, "\\n")
                             : buf_append_byte(out, (uint8_t)*s);
        if (r < 0) return -1;
    }
    return 0;
}

static int render_info(const struct metrics_values *v, struct buf *out)
{
    if (buf_append_str(out, "# HELP conprof_info The agent's version.\n"
                            "# TYPE conprof_info gauge\n"
                            "conprof_info{version=\"") < 0 ||
        append_label_value(out, v->version ? v->version : "") < 0 ||
        buf_append_str(out, "\"} 1\n") < 0)
        return -1;
    return 0;
}

int metrics_render(const struct metrics_values *v, struct buf *out)
{
    if (render_info(v, out) < 0) return -1;
    for (size_t i = 0; i < sizeof METRICS / sizeof METRICS[0]; i++) {
        const struct metric_def *m = &METRICS[i];
        const char *base = (const char *)v + m->offset;
        if (m->help && buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                                  m->type == COUNTER ? "counter" : "gauge") < 0)
            return -1;
        int r = buf_printf(out, "%s%s%s%s ", m->name, m->label ? "{" : "", m->label ? m->label : "",
                           m->label ? "}" : "");
        if (r == 0 && m->real)
            r = buf_printf(out, "%.6f\n", *(const double *)base);
        else if (r == 0)
            r = buf_printf(out, "%" PRIu64 "\n", *(const uint64_t *)base);
        if (r < 0) return -1;
    }
    return 0;
}

/* ---- request head parser ---------------------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool parse_request_line(const char *line, size_t len, struct metrics_http_request *req)
{
    size_t m = 0;
    while (m < len && line[m] >= 'A' && line[m] <= 'Z' && m < sizeof req->method - 1)
        m++;
    if (m == 0 || m >= len || line[m] != ' ') return false;
    memcpy(req->method, line, m);
    req->method[m] = '\0';
    const char *target = line + m + 1;
    size_t rest = len - m - 1, t = 0;
    while (t < rest && (unsigned char)target[t] > 0x20 && (unsigned char)target[t] < 0x7f)
        t++;
    if (t == 0 || target[0] != '/' || t >= rest || target[t] != ' ') return false;
    const char *version = target + t + 1;
    size_t vlen = rest - t - 1;
    if (vlen != 8 || (memcmp(version, "HTTP/1.1", 8) && memcmp(version, "HTTP/1.0", 8)))
        return false;
    size_t plen = strcspn(target, "?# "); /* the target ends with ' ', checked above */
    if (plen < sizeof req->path) {
        memcpy(req->path, target, plen);
        req->path[plen] = '\0';
    }
    return true;
}

static bool valid_header(const char *line, size_t len)
{
    size_t n = 0;
    while (n < len && is_tchar((unsigned char)line[n]))
        n++;
    if (n == 0 || n >= len || line[n] != ':') return false;
    for (size_t i = n + 1; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    }
    return true;
}

/* Whether an unfinished request line can still become valid: garbage such as a TLS handshake
 * is answered at once instead of waiting for a line end that never comes. */
static bool method_prefix_ok(const char *data, size_t len)
{
    size_t m = 0;
    while (m < len && data[m] >= 'A' && data[m] <= 'Z')
        m++;
    return m < sizeof((struct metrics_http_request *)0)->method && (m == len || data[m] == ' ');
}

/* The next line of data[pos..limit) without its "\n" or "\r\n"; -1 when there is no full line,
 * -2 when it holds a stray CR. */
static long next_line(const char *data, size_t pos, size_t limit, size_t *line_len)
{
    const char *nl = memchr(data + pos, '\n', limit - pos);
    if (!nl) return -1;
    size_t n = (size_t)(nl - data) - pos;
    if (n > 0 && data[pos + n - 1] == '\r') n--;
    if (memchr(data + pos, '\r', n)) return -2;
    *line_len = n;
    return (long)((size_t)(nl - data) + 1);
}

enum metrics_http_parse_result metrics_http_parse(const char *data, size_t len,
                                                  struct metrics_http_request *out)
{
    size_t limit = len < METRICS_REQUEST_MAX ? len : METRICS_REQUEST_MAX, line_len = 0;
    enum metrics_http_parse_result short_of_end =
        len >= METRICS_REQUEST_MAX ? METRICS_HTTP_TOO_LARGE : METRICS_HTTP_INCOMPLETE;
    struct metrics_http_request req;
    memset(&req, 0, sizeof req);
    long next = next_line(data, 0, limit, &line_len);
    if (next == -1) return method_prefix_ok(data, limit) ? short_of_end : METRICS_HTTP_BAD;
    if (next == -2 || !parse_request_line(data, line_len, &req)) return METRICS_HTTP_BAD;
    for (size_t pos = (size_t)next;;) {
        next = next_line(data, pos, limit, &line_len);
        if (next == -1) return short_of_end;
        if (next == -2) return METRICS_HTTP_BAD;
        if (line_len == 0) break;
        if (++req.header_count > METRICS_HEADERS_MAX) return METRICS_HTTP_TOO_LARGE;
        if (!valid_header(data + pos, line_len)) return METRICS_HTTP_BAD;
        pos = (size_t)next;
    }
    req.head_len = (size_t)next;
    *out = req;
    return METRICS_HTTP_COMPLETE;
}

/* ---- server ----------------------------------------------------------------------------- */

enum conn_state { CONN_FREE, CONN_READING, CONN_WRITING, CONN_DRAINING };

struct conn {
    enum conn_state state;
    int fd;
    char request[METRICS_REQUEST_MAX];
    size_t request_len;
    struct buf reply;
    size_t reply_sent;
    size_t drained;
    int64_t deadline_ms;
};

struct metrics_server {
    struct pollset events; /* the fd the daemon polls */
    int listen_fd;
    int port;
    metrics_fill_fn *fill;
    void *ctx;
    int64_t accept_paused_until; /* 0: accepting */
    struct conn conns[METRICS_MAX_CLIENTS];
};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int watch(struct metrics_server *s, int op, int fd, uint32_t events, uint64_t tag)
{
    return pollset_watch(&s->events, op, fd, events, tag);
}

static void conn_close(struct metrics_server *s, struct conn *c)
{
    epoll_ctl(s->events.epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    buf_free(&c->reply);
    c->state = CONN_FREE;
    c->fd = -1;
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* The whole response into c->reply; body may be NULL for an empty one. */
static int build_reply(struct conn *c, int code, const char *type, const struct buf *body,
                       bool head_only, const char *extra_header)
{
    size_t body_len = body ? body->len : 0;
    buf_reset(&c->reply);
    if (buf_printf(&c->reply,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                   "Connection: close\r\n\r\n",
                   code, reason_phrase(code), type, body_len, extra_header ? extra_header : "") < 0)
        return -1;
    if (body && !head_only && buf_append(&c->reply, body->data, body->len) < 0) return -1;
    return 0;
}

static int build_text_reply(struct conn *c, int code, const char *text, bool head_only,
                            const char *extra_header)
{
    struct buf body = {0};
    int r = buf_append_str(&body, text);
    if (r == 0)
        r = build_reply(c, code, "text/plain; charset=utf-8", &body, head_only, extra_header);
    buf_free(&body);
    return r;
}

static int build_metrics_reply(struct metrics_server *s, struct conn *c, bool head_only)
{
    struct metrics_values v;
    memset(&v, 0, sizeof v);
    if (s->fill) s->fill(s->ctx, &v);
    struct buf body = {0};
    int r = metrics_render(&v, &body);
    if (r == 0)
        r = build_reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", &body, head_only, NULL);
    buf_free(&body);
    return r;
}

/* Chooses the response to a request head (or to a parse failure). */
static int respond(struct metrics_server *s, struct conn *c, enum metrics_http_parse_result pr,
                   const struct metrics_http_request *req)
{
    if (pr == METRICS_HTTP_BAD) return build_text_reply(c, 400, "bad request\n", false, NULL);
    if (pr == METRICS_HTTP_TOO_LARGE)
        return build_text_reply(c, 431, "request head too large\n", false, NULL);
    bool head = !strcmp(req->method, "HEAD");
    if (strcmp(req->path, "/metrics"))
        return build_text_reply(c, 404, "not found: metrics are at /metrics\n", head, NULL);
    if (!head && strcmp(req->method, "GET"))
        return build_text_reply(c, 405, "method not allowed: use GET\n", false,
                                "Allow: GET, HEAD\r\n");
    return build_metrics_reply(s, c, head);
}

static void start_draining(struct metrics_server *s, struct conn *c, size_t index)
{
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_DRAINING;
    c->deadline_ms = now_ms() + METRICS_TIMEOUT_MS;
    if (watch(s, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLRDHUP, TAG_CLIENT + index) < 0)
        conn_close(s, c);
}

static void conn_write(struct metrics_server *s, struct conn *c, size_t index)
{
    while (c->reply_sent < c->reply.len) {
        ssize_t n = send(c->fd, c->reply.data + c->reply_sent, c->reply.len - c->reply_sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            conn_close(s, c);
            return;
        }
        c->reply_sent += (size_t)n;
    }
    start_draining(s, c, index);
}

static void begin_reply(struct metrics_server *s, struct conn *c, size_t index,
                        enum metrics_http_parse_result pr, const struct metrics_http_request *req)
{
    if (respond(s, c, pr, req) < 0) {
        conn_close(s, c);
        return;
    }
    c->state = CONN_WRITING;
    c->reply_sent = 0;
    c->deadline_ms = now_ms() + METRICS_TIMEOUT_MS;
    if (watch(s, EPOLL_CTL_MOD, c->fd, EPOLLOUT, TAG_CLIENT + index) < 0) {
        conn_close(s, c);
        return;
    }
    conn_write(s, c, index);
}

static void conn_read(struct metrics_server *s, struct conn *c, size_t index)
{
    ssize_t n =
        recv(c->fd, c->request + c->request_len, sizeof c->request - c->request_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { /* gone before sending a whole request */
        conn_close(s, c);
        return;
    }
    c->request_len += (size_t)n;
    struct metrics_http_request req;
    enum metrics_http_parse_result pr = metrics_http_parse(c->request, c->request_len, &req);
    if (pr != METRICS_HTTP_INCOMPLETE) begin_reply(s, c, index, pr, &req);
}

static void conn_drain(struct metrics_server *s, struct conn *c)
{
    char sink[4096];
    ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n > 0) c->drained += (size_t)n;
    if (n <= 0 || c->drained > DRAIN_MAX) conn_close(s, c);
}

static void conn_event(struct metrics_server *s, size_t index)
{
    struct conn *c = &s->conns[index];
    if (c->state == CONN_READING)
        conn_read(s, c, index);
    else if (c->state == CONN_WRITING)
        conn_write(s, c, index);
    else if (c->state == CONN_DRAINING)
        conn_drain(s, c);
}

static void pause_accepting(struct metrics_server *s)
{
    s->accept_paused_until = now_ms() + ACCEPT_PAUSE_MS;
    watch(s, EPOLL_CTL_MOD, s->listen_fd, 0, TAG_LISTEN);
}

static void adopt(struct metrics_server *s, int fd)
{
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        struct conn *c = &s->conns[i];
        if (c->state != CONN_FREE) continue;
        c->fd = fd;
        c->request_len = 0;
        c->drained = 0;
        c->deadline_ms = now_ms() + METRICS_TIMEOUT_MS;
        c->state = CONN_READING;
        if (watch(s, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLRDHUP, TAG_CLIENT + i) < 0) {
            c->state = CONN_FREE;
            close(fd);
        }
        return;
    }
    close(fd); /* too many clients at once */
}

static int accept_clients(struct metrics_server *s, struct cp_err *err)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            adopt(s, fd);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            cp_err_set(err, CP_ERR_IO, "metrics: cannot accept a connection: %s", strerror(errno));
            pause_accepting(s);
            return -1;
        }
        /* ECONNABORTED, EINTR, EPROTO...: that client is gone; try the next one */
    }
    return 0;
}

static void expire(struct metrics_server *s, int64_t now)
{
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        struct conn *c = &s->conns[i];
        if (c->state == CONN_FREE || c->deadline_ms > now) continue;
        if (c->state == CONN_READING &&
            build_text_reply(c, 408, "request timeout\n", false, NULL) == 0)
            send(c->fd, c->reply.data, c->reply.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        conn_close(s, c);
    }
    if (s->accept_paused_until && s->accept_paused_until <= now) {
        s->accept_paused_until = 0;
        watch(s, EPOLL_CTL_MOD, s->listen_fd, EPOLLIN, TAG_LISTEN);
    }
}

static void arm_timer(struct metrics_server *s)
{
    int64_t next = s->accept_paused_until;
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        const struct conn *c = &s->conns[i];
        if (c->state != CONN_FREE && (next == 0 || c->deadline_ms < next)) next = c->deadline_ms;
    }
    pollset_arm(&s->events, next);
}

int metrics_server_handle(struct metrics_server *s, struct cp_err *err)
{
    struct epoll_event evs[METRICS_MAX_CLIENTS + 2];
    int n = pollset_wait(&s->events, evs, METRICS_MAX_CLIENTS + 2);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        if (tag == TAG_LISTEN && accept_clients(s, err) < 0) rc = -1;
        if (tag >= TAG_CLIENT && tag < TAG_CLIENT + METRICS_MAX_CLIENTS)
            conn_event(s, (size_t)(tag - TAG_CLIENT));
    }
    expire(s, now_ms());
    arm_timer(s);
    return rc;
}

static int open_listener(struct metrics_server *s, const struct metrics_address *a,
                         const char *text, struct cp_err *err)
{
    int one = 1;
    s->listen_fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0) {
        cp_err_set(err, CP_ERR_IO, "metrics: socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a->addr.ss_family == AF_INET6)
        setsockopt(s->listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s->listen_fd, (const struct sockaddr *)&a->addr, a->len) < 0 ||
        listen(s->listen_fd, METRICS_MAX_CLIENTS) < 0) {
        cp_err_set(err, errno == EACCES ? CP_ERR_PERM : CP_ERR_IO,
                   "metrics: cannot listen on %s: %s", text, strerror(errno));
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t len = sizeof bound;
    getsockname(s->listen_fd, (struct sockaddr *)&bound, &len);
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

static int open_event_set(struct metrics_server *s, struct cp_err *err)
{
    if (pollset_open(&s->events) < 0 ||
        watch(s, EPOLL_CTL_ADD, s->listen_fd, EPOLLIN, TAG_LISTEN) < 0) {
        cp_err_set(err, CP_ERR_IO, "metrics: epoll: %s", strerror(errno));
        return -1;
    }
    return 0;
}

struct metrics_server *metrics_server_open(const char *listen_address, bool allow_remote,
                                           metrics_fill_fn *fill, void *ctx, struct cp_err *err)
{
    struct metrics_address addr;
    if (metrics_parse_address(listen_address, &addr, err) < 0) return NULL;
    if (!addr.loopback && !allow_remote) {
        cp_err_set(err, CP_ERR_INVALID,
                   "metrics: %s is not a loopback address and remote access is not allowed",
                   listen_address);
        return NULL;
    }
    struct metrics_server *s = calloc(1, sizeof *s);
    if (!s) {
        cp_err_set(err, CP_ERR_NOMEM, "metrics: out of memory");
        return NULL;
    }
    s->events.epoll_fd = s->events.timer_fd = s->listen_fd = -1;
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
        s->conns[i].fd = -1;
    s->fill = fill;
    s->ctx = ctx;
    if (open_listener(s, &addr, listen_address, err) < 0 || open_event_set(s, err) < 0) {
        metrics_server_close(s);
        return NULL;
    }
    return s;
}

int metrics_server_fd(const struct metrics_server *s)
{
    return s->events.epoll_fd;
}

int metrics_server_port(const struct metrics_server *s)
{
    return s->port;
}

void metrics_server_close(struct metrics_server *s)
{
    if (!s) return;
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
        if (s->conns[i].state != CONN_FREE) conn_close(s, &s->conns[i]);
    pollset_close(&s->events);
    if (s->listen_fd >= 0) close(s->listen_fd);
    free(s);
}
