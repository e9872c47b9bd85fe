/* agent_link: the agent's websocket client to conprof-console.
 *
 * Design:
 *   - The link, not lws, owns the reconnect schedule: lws's retry helpers only add a jitter
 *     percentage, while the protocol wants full jitter with a reset after a healthy connection.
 *     A link is IDLE (waiting for next_attempt_ms), CONNECTING or OPEN; every failure path
 *     (connect call returning NULL, CONNECTION_ERROR, CLIENT_CLOSED, CLOSED_CLIENT_HTTP) goes
 *     through one function that only acts in CONNECTING/OPEN, so a failure reported twice by lws
 *     is counted once. lws's retry policy struct is still passed, for its validity ping/hangup.
 *   - No foreign event loop: agent_link_service() calls lws_service(ctx, -1), which in 4.1.6
 *     polls with a zero timeout (a timeout of 0 would mean "wait up to 23 days",
 *     lib/plat/unix/unix-service.c). One lws_service() reads at most one buffer (4 KiB) from
 *     the socket and writes one frame per WRITEABLE callback, so service repeats the
 *     zero-timeout poll, a bounded number of times, while frames are waiting or the socket has
 *     more to read (else a 64 KiB frame would take 16 daemon wake-ups, i.e. 4 s, to arrive).
 *   - Outgoing frames: hello is built when the socket is writable (so it carries the newest
 *     targets and sessions), then the outbox (ack, nack, status: dropped on disconnect, they
 *     belong to one connection), then the event queue (kept across connections, an event leaves
 *     the queue only once written).
 *   - Commands are applied with the `now` of the service call that read them: lease time has one
 *     clock, the caller's.
 */
#include "agent_link.h"

#include "buf.h"

#include <errno.h>
#include <libwebsockets.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define URL_MAX 2048
#define TOKEN_MAX 4096
#define SERVICE_ROUNDS 64 /* zero-timeout polls per service call while there is I/O to do */

enum link_phase { LINK_IDLE, LINK_CONNECTING, LINK_OPEN };

/* A ring of malloc'd frames. */
struct frame_ring {
    char *items[AGENT_LINK_OUTBOX_MAX];
    size_t head, count, cap;
};

struct session_targets {
    char session_id[PROTO_ID_MAX + 1];
    int64_t targets;
};

struct agent_link {
    char *url, *auth, *ca_file, *state_file;
    char *address, *host_header, *path;
    int port;
    bool tls;
    struct proto_hello hello; /* agent_id, node, agent_version, capabilities */
    int status_s;
    uint32_t backoff_min_ms, backoff_max_ms;
    void (*log)(void *ctx, const char *line);
    void *log_ctx;

    struct lws_protocols protocols[2];
    lws_retry_bo_t validity;
    struct lws_context *ctx;
    struct lws *wsi;
    enum link_phase phase;
    bool closing, hello_pending;
    int64_t next_attempt_ms, connected_at_ms, next_status_ms;
    unsigned failures;
    uint64_t rng;
    char peer_close[160];
    char cert_error[256];

    struct control_state state;
    int64_t now;
    uint64_t generation;
    json_t *targets;
    struct agent_link_counters counters;
    struct session_targets session_targets[CONTROL_STATE_SESSIONS_MAX];

    struct frame_ring outbox, events;
    struct buf rx;
    bool rx_in_message, rx_oversized, rx_binary;

    struct agent_link_stats stats;
};

/* ---- small helpers ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng_next(struct agent_link *link)
{
    uint64_t x = link->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    link->rng = x;
    return x * UINT64_C(2685821657736338717);
}

static void link_log(struct agent_link *link, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void link_log(struct agent_link *link, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (link->log)
        link->log(link->log_ctx, line);
    else
        fprintf(stderr, "conprof-agent: console: %s\n", line);
}

static void set_error(struct agent_link *link, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_error(struct agent_link *link, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(link->stats.last_error, sizeof link->stats.last_error, fmt, ap);
    va_end(ap);
    link_log(link, "%s", link->stats.last_error);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Cuts s to at most max bytes without splitting a UTF-8 character. */
static void trim_utf8(char *s, size_t max)
{
    size_t len = strlen(s);
    if (len <= max) return;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    s[max] = '\0';
}

uint32_t agent_link_backoff_ms(unsigned failures, uint32_t min_ms, uint32_t max_ms, uint64_t random)
{
    if (min_ms == 0) min_ms = 1;
    if (max_ms < min_ms) max_ms = min_ms;
    uint64_t cap = min_ms;
    for (unsigned i = 0; i < failures && cap < max_ms; i++)
        cap *= 2;
    if (cap > max_ms) cap = max_ms;
    return (uint32_t)(min_ms + random % (cap - min_ms + 1));
}

/* ---- frame rings ---- */

static void ring_init(struct frame_ring *r, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->cap = cap;
}

/* Takes `frame`; when full the oldest is dropped and 1 is returned. */
static int ring_push(struct frame_ring *r, char *frame)
{
    int dropped = 0;
    if (r->count == r->cap) {
        free(r->items[r->head]);
        r->head = (r->head + 1) % r->cap;
        r->count--;
        dropped = 1;
    }
    r->items[(r->head + r->count) % r->cap] = frame;
    r->count++;
    return dropped;
}

static const char *ring_peek(const struct frame_ring *r)
{
    return r->count ? r->items[r->head] : NULL;
}

static void ring_pop(struct frame_ring *r)
{
    if (!r->count) return;
    free(r->items[r->head]);
    r->head = (r->head + 1) % r->cap;
    r->count--;
}

static void ring_clear(struct frame_ring *r)
{
    while (r->count)
        ring_pop(r);
}

/* ---- url ---- */

static int parse_url(struct agent_link *link, const char *url, struct cp_err *err)
{
    const char *rest;
    if (!strncasecmp(url, "wss://", 6)) {
        link->tls = true;
        rest = url + 6;
    } else if (!strncasecmp(url, "ws://", 5)) {
        rest = url + 5;
    } else {
        cp_err_set(err, CP_ERR_INVALID, "console url %s: expected ws:// or wss://", url);
        return -1;
    }
    size_t authority_len = strcspn(rest, "/?#");
    const char *path = rest + authority_len;
    const char *host = rest, *host_end, *port_text = NULL;
    if (*host == '[') {
        host_end = memchr(host, ']', authority_len);
        if (!host_end) goto bad;
        host++;
        if (host_end + 1 < rest + authority_len) {
            if (host_end[1] != ':') goto bad;
            port_text = host_end + 2;
        }
    } else {
        host_end = memchr(host, ':', authority_len);
        if (host_end)
            port_text = host_end + 1;
        else
            host_end = rest + authority_len;
    }
    if (host_end == host) goto bad;
    link->port = link->tls ? 443 : 80;
    if (port_text) {
        char *end;
        long port = strtol(port_text, &end, 10);
        if (end != rest + authority_len || end == port_text || port < 1 || port > 65535) goto bad;
        link->port = (int)port;
    }
    link->address = strndup(host, (size_t)(host_end - host));
    link->host_header = strndup(rest, authority_len);
    link->path = strdup(*path == '/' ? path : PROTO_PATH);
    if (!link->address || !link->host_header || !link->path) {
        cp_err_set(err, CP_ERR_NOMEM, "console url: out of memory");
        return -1;
    }
    return 0;
bad:
    cp_err_set(err, CP_ERR_INVALID, "console url %s: expected ws[s]://HOST[:PORT][/PATH]", url);
    return -1;
}

/* ---- state ---- */

static void save_state(struct agent_link *link)
{
    link->generation++;
    if (!link->state_file) return;
    struct cp_err err = {0};
    if (control_state_save(&link->state, link->state_file, &err) < 0) {
        link->stats.save_errors++;
        set_error(link, "saving the session state: %s", err.msg);
    }
}

static void load_state(struct agent_link *link, int64_t now)
{
    if (!link->state_file) return;
    struct cp_err err = {0};
    if (control_state_load(&link->state, link->state_file, &err) < 0) {
        control_state_free(&link->state);
        set_error(link,
                  "ignoring the session state (no session runs until the console "
                  "starts it): %s",
                  err.msg);
        return;
    }
    control_state_resume(&link->state, now);
    link_log(link, "loaded %zu session(s) from %s", link->state.count, link->state_file);
}

/* ---- outgoing frames ---- */

static void want_write(struct agent_link *link)
{
    if (link->phase == LINK_OPEN && link->wsi) lws_callback_on_writable(link->wsi);
}

static bool frames_waiting(const struct agent_link *link)
{
    return link->phase == LINK_OPEN &&
           (link->hello_pending || link->outbox.count || link->events.count);
}

static void outbox_push(struct agent_link *link, char *frame)
{
    if (!frame) return;
    ring_push(&link->outbox, frame);
    want_write(link);
}

/* Builds hello or status; when the targets do not fit in one frame, sends as many as fit. */
typedef char *(*build_fn)(struct agent_link *link, json_t *targets, struct cp_err *err);

static char *build_fitting(struct agent_link *link, build_fn build, const char *what)
{
    size_t n = link->targets ? json_array_size(link->targets) : 0;
    if (n > PROTO_TARGETS_MAX) n = PROTO_TARGETS_MAX;
    struct cp_err err = {0};
    for (;;) {
        json_t *slice = json_array();
        for (size_t i = 0; slice && i < n; i++)
            json_array_append(slice, json_array_get(link->targets, i));
        char *text = slice ? build(link, slice, &err) : NULL;
        json_decref(slice);
        if (text || n == 0) {
            if (!text) link_log(link, "cannot build %s: %s", what, err.msg);
            return text;
        }
        n /= 2;
    }
}

static char *build_hello(struct agent_link *link, json_t *targets, struct cp_err *err)
{
    struct proto_session_ref refs[CONTROL_STATE_SESSIONS_MAX];
    link->hello.targets = targets;
    link->hello.sessions = refs;
    link->hello.session_count =
        control_state_session_refs(&link->state, refs, CONTROL_STATE_SESSIONS_MAX);
    char *text = proto_build_hello(&link->hello, err);
    link->hello.targets = NULL;
    link->hello.sessions = NULL;
    return text;
}

static int64_t targets_of(const struct agent_link *link, const char *session_id)
{
    for (size_t i = 0; i < CONTROL_STATE_SESSIONS_MAX; i++)
        if (!strcmp(link->session_targets[i].session_id, session_id))
            return link->session_targets[i].targets;
    return 0;
}

static char *build_status(struct agent_link *link, json_t *targets, struct cp_err *err)
{
    struct proto_session_status sessions[CONTROL_STATE_SESSIONS_MAX];
    const struct agent_link_counters *c = &link->counters;
    struct proto_status st = {
        .targets = targets,
        .samples = c->samples,
        .sample_errors = c->sample_errors,
        .uploads = {c->uploads_sent, c->uploads_failed, c->uploads_spooled, c->uploads_evicted},
        .sessions = sessions,
    };
    for (size_t i = 0; i < link->state.count; i++) {
        control_session_status(&link->state.sessions[i], &sessions[i]);
        sessions[i].targets = targets_of(link, sessions[i].session_id);
    }
    st.session_count = link->state.count;
    return proto_build_status(&st, err);
}

static int write_frame(struct agent_link *link, const char *text)
{
    size_t len = strlen(text);
    unsigned char *frame = malloc(LWS_PRE + len);
    if (!frame) return -1;
    memcpy(frame + LWS_PRE, text, len);
    int n = lws_write(link->wsi, frame + LWS_PRE, len, LWS_WRITE_TEXT);
    free(frame);
    if (n < (int)len) {
        set_error(link, "writing to %s failed", link->url);
        return -1;
    }
    return 0;
}

/* One frame per WRITEABLE callback: hello, then the outbox, then the events. */
static int on_writeable(struct agent_link *link)
{
    int rc = 0;
    if (link->hello_pending) {
        char *hello = build_fitting(link, build_hello, "hello");
        link->hello_pending = false;
        if (!hello) return -1; /* without hello the console cannot use the connection */
        rc = write_frame(link, hello);
        free(hello);
    } else if (link->outbox.count) {
        rc = write_frame(link, ring_peek(&link->outbox));
        ring_pop(&link->outbox);
    } else if (link->events.count) {
        rc = write_frame(link, ring_peek(&link->events));
        if (rc == 0) ring_pop(&link->events);
    }
    if (rc == 0 && frames_waiting(link)) lws_callback_on_writable(link->wsi);
    return rc;
}

/* ---- incoming frames ---- */

static void answer(struct agent_link *link, const char *id, const struct proto_nack *nack)
{
    struct cp_err err = {0};
    char *frame;
    if (nack) {
        link->stats.commands_nacked++;
        link_log(link, "refused command %s: %s: %s", id, nack->field, nack->error);
        frame = proto_build_nack(id, nack->field, nack->error, &err);
    } else {
        link->stats.commands_acked++;
        frame = proto_build_ack(id, &err);
    }
    if (!frame) link_log(link, "cannot answer command %s: %s", id, err.msg);
    outbox_push(link, frame);
}

static void apply_command(struct agent_link *link, const struct proto_command *cmd)
{
    struct proto_nack nack = {0};
    bool changed = false;
    if (control_state_apply(&link->state, cmd, link->now, &changed, &nack) < 0) {
        answer(link, cmd->id, &nack);
        return;
    }
    if (changed) {
        if (cmd->type != PROTO_LEASE) /* renewals are routine: every max_lease / 3 */
            link_log(link, "%s %s (command %s)", proto_type_name(cmd->type), cmd->session_id,
                     cmd->id);
        save_state(link);
    }
    answer(link, cmd->id, NULL);
}

static void ignore_frame(struct agent_link *link, const char *why)
{
    link->stats.frames_ignored++;
    link_log(link, "ignored a frame from the console: %s", why);
}

static void handle_frame(struct agent_link *link)
{
    if (link->rx_oversized) {
        ignore_frame(link, "larger than 65536 bytes");
        return;
    }
    if (link->rx_binary) {
        ignore_frame(link, "binary frame");
        return;
    }
    struct proto_command cmd;
    struct proto_nack nack = {0};
    const char *text = link->rx.data ? link->rx.data : "";
    if (proto_parse_command(text, link->rx.len, &cmd, &nack) == 0) {
        apply_command(link, &cmd);
    } else if (nack.id[0]) {
        answer(link, nack.id, &nack);
    } else {
        char why[PROTO_FIELD_MAX + PROTO_MESSAGE_MAX + 4];
        snprintf(why, sizeof why, "%s%s%s", nack.field, nack.field[0] ? ": " : "", nack.error);
        ignore_frame(link, why);
    }
    proto_command_free(&cmd);
}

static void on_receive(struct agent_link *link, struct lws *wsi, const void *in, size_t len)
{
    if (!link->rx_in_message) {
        buf_reset(&link->rx);
        link->rx_in_message = true;
        link->rx_oversized = false;
        link->rx_binary = lws_frame_is_binary(wsi);
    }
    if (!link->rx_oversized) {
        if (link->rx.len + len > PROTO_FRAME_MAX || buf_append(&link->rx, in, len) < 0) {
            link->rx_oversized = true;
            buf_reset(&link->rx);
        }
    }
    if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
        link->rx_in_message = false;
        handle_frame(link);
    }
}

/* ---- connection ---- */

static void schedule_retry(struct agent_link *link)
{
    uint32_t delay = agent_link_backoff_ms(link->failures, link->backoff_min_ms,
                                           link->backoff_max_ms, rng_next(link));
    if (link->failures < 64) link->failures++;
    link->next_attempt_ms = mono_ms() + delay;
}

/* The one place a connection attempt or connection ends. */
static void connection_ended(struct agent_link *link, struct lws *wsi, const char *why)
{
    if (link->closing || link->phase == LINK_IDLE) return;
    if (wsi && link->wsi && wsi != link->wsi) return; /* a late report about an older attempt */
    if (link->phase == LINK_OPEN) {
        link->stats.disconnects++;
        if (mono_ms() - link->connected_at_ms >= AGENT_LINK_HEALTHY_S * 1000) link->failures = 0;
        set_error(link, "connection to %s closed%s%s", link->url, why ? ": " : "", why ? why : "");
    } else {
        set_error(link, "cannot connect to %s: %s", link->url, why ? why : "connection failed");
    }
    link->phase = LINK_IDLE;
    link->wsi = NULL;
    link->hello_pending = false;
    link->rx_in_message = false;
    ring_clear(&link->outbox);
    schedule_retry(link);
}

static void on_established(struct agent_link *link, struct lws *wsi)
{
    link->phase = LINK_OPEN;
    link->wsi = wsi;
    link->stats.connects++;
    link->connected_at_ms = mono_ms();
    link->next_status_ms = link->connected_at_ms + (int64_t)link->status_s * 1000;
    link->hello_pending = true;
    link->peer_close[0] = '\0';
    ring_clear(&link->outbox);
    link_log(link, "connected to %s", link->url);
    lws_callback_on_writable(wsi);
}

static int append_auth(struct agent_link *link, struct lws *wsi, void *in, size_t len)
{
    unsigned char **p = in, *end = *p + len;
    /* lws 4.1.6 writes the name verbatim: it must carry the colon. */
    if (lws_add_http_header_by_name(
            wsi, (const unsigned char *)"authorization:", (const unsigned char *)link->auth,
            (int)strlen(link->auth), p, end))
        return -1;
    return 0;
}

static void note_peer_close(struct agent_link *link, const unsigned char *in, size_t len)
{
    int code = len >= 2 ? (in[0] << 8) | in[1] : 0;
    int reason_len = len > 2 ? (int)(len - 2) : 0;
    if (reason_len > 100) reason_len = 100;
    snprintf(link->peer_close, sizeof link->peer_close, "closed by the console (code %d%s%.*s)",
             code, reason_len ? ": " : "", reason_len, len > 2 ? (const char *)in + 2 : "");
}

/* OpenSSL's verdict on the console certificate (lws only logs it to stderr). */
static void note_cert_verdict(struct agent_link *link, void *x509_ctx, int preverify_ok)
{
    int code = x509_ctx ? X509_STORE_CTX_get_error(x509_ctx) : X509_V_OK;
    if (preverify_ok || code == X509_V_OK) return;
    if (code == X509_V_ERR_HOSTNAME_MISMATCH || code == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        /* The chain is trusted; blaming the CA file would send the reader the wrong way. */
        snprintf(link->cert_error, sizeof link->cert_error,
                 "console certificate not valid for %s: %s (the certificate must name the "
                 "URL's host)",
                 link->address, X509_verify_cert_error_string(code));
        return;
    }
    snprintf(link->cert_error, sizeof link->cert_error,
             "console certificate not trusted: %s (depth %d; %s)",
             X509_verify_cert_error_string(code), X509_STORE_CTX_get_error_depth(x509_ctx),
             link->ca_file ? "not signed by the CA file" : "set the console CA file");
}

static void describe_failure(struct agent_link *link, struct lws *wsi, const void *in, size_t len,
                             char *why, size_t size)
{
    unsigned status = wsi ? lws_http_client_http_response(wsi) : 0;
    int n = snprintf(why, size, "%.*s", in ? (int)len : 0, in ? (const char *)in : "");
    if (link->cert_error[0])
        snprintf(why, size, "%s", link->cert_error);
    else if (status == 401 || strstr(why, "unauthorized"))
        snprintf(why, size, "HTTP 401: the console refused the agent token");
    else if (status && status != 101)
        snprintf(why + n, size - (size_t)n, "%sHTTP %u", n ? ", " : "", status);
    else if (!n)
        snprintf(why, size, "connection failed");
}

static int link_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    (void)user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct agent_link *link = ctx ? lws_context_user(ctx) : NULL;
    if (!link) return 0;
    char why[256];
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        return append_auth(link, wsi, in, len);
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        on_established(link, wsi);
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        describe_failure(link, wsi, in, len, why, sizeof why);
        connection_ended(link, wsi, why);
        break;
    case LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION:
        note_cert_verdict(link, user, (int)len);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        connection_ended(link, wsi, link->peer_close[0] ? link->peer_close : NULL);
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        note_peer_close(link, in, len);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (wsi == link->wsi) on_receive(link, wsi, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (link->phase == LINK_OPEN && wsi == link->wsi) return on_writeable(link);
        break;
    default:
        break;
    }
    return 0;
}

static void start_connect(struct agent_link *link)
{
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = link->ctx;
    ci.address = link->address;
    ci.port = link->port;
    ci.path = link->path;
    ci.host = link->host_header;
    ci.origin = link->host_header;
    ci.protocol = PROTO_SUBPROTOCOL;
    ci.local_protocol_name = PROTO_SUBPROTOCOL;
    ci.ssl_connection = link->tls ? LCCSCF_USE_SSL : 0;
    ci.retry_and_idle_policy = &link->validity;
    ci.ietf_version_or_minus_one = -1;
    link->stats.connect_attempts++;
    link->phase = LINK_CONNECTING;
    link->peer_close[0] = '\0';
    link->cert_error[0] = '\0';
    struct lws *wsi = lws_client_connect_via_info(&ci);
    if (!wsi) {
        connection_ended(link, NULL, "connect call failed (name lookup or socket)");
    } else if (link->phase != LINK_IDLE) {
        link->wsi = wsi;
    }
}

/* ---- open / close ---- */

static int copy_options(struct agent_link *link, const struct agent_link_options *o,
                        struct cp_err *err)
{
    if (!o->url || !o->token || !o->node || !o->agent_version || strlen(o->url) > URL_MAX) {
        cp_err_set(err, CP_ERR_INVALID,
                   "console link: url, token, node and agent_version are "
                   "required (url at most %d bytes)",
                   URL_MAX);
        return -1;
    }
    size_t token_len = strlen(o->token);
    if (!token_len || token_len > TOKEN_MAX || strpbrk(o->token, "\r\n")) {
        cp_err_set(err, CP_ERR_INVALID, "console token: expected 1..%d bytes on one line",
                   TOKEN_MAX);
        return -1;
    }
    const char *agent_id = o->agent_id ? o->agent_id : o->node;
    if (!proto_id_valid(agent_id, strlen(agent_id), PROTO_AGENT_ID_MAX) ||
        !proto_name_valid(o->node, strlen(o->node), PROTO_NODE_MAX) ||
        !proto_name_valid(o->agent_version, strlen(o->agent_version), PROTO_VERSION_STR_MAX)) {
        cp_err_set(err, CP_ERR_INVALID,
                   "console link: agent id %s, node or agent version is not "
                   "valid for the protocol",
                   agent_id);
        return -1;
    }
    snprintf(link->hello.agent_id, sizeof link->hello.agent_id, "%s", agent_id);
    snprintf(link->hello.node, sizeof link->hello.node, "%s", o->node);
    snprintf(link->hello.agent_version, sizeof link->hello.agent_version, "%s", o->agent_version);
    link->hello.capabilities = json_array();
    for (size_t i = 0; o->capabilities && o->capabilities[i] && i < PROTO_CAPABILITIES_MAX; i++)
        json_array_append_new(link->hello.capabilities, json_string(o->capabilities[i]));
    link->url = strdup(o->url);
    link->ca_file = dup_or_null(o->ca_file);
    link->state_file = dup_or_null(o->state_file);
    link->auth = malloc(token_len + 8);
    if (link->auth) snprintf(link->auth, token_len + 8, "Bearer %s", o->token);
    if (!link->url || !link->auth || !link->hello.capabilities || (o->ca_file && !link->ca_file) ||
        (o->state_file && !link->state_file)) {
        cp_err_set(err, CP_ERR_NOMEM, "console link: out of memory");
        return -1;
    }
    return 0;
}

static int copy_timing(struct agent_link *link, const struct agent_link_options *o,
                       struct cp_err *err)
{
    int ping = o->ping_s > 0 ? o->ping_s : AGENT_LINK_PING_S;
    int hangup = o->hangup_s > 0 ? o->hangup_s : AGENT_LINK_HANGUP_S;
    if (hangup <= ping || hangup > 65535) {
        cp_err_set(err, CP_ERR_INVALID,
                   "console link: hangup (%d s) must be longer than ping "
                   "(%d s)",
                   hangup, ping);
        return -1;
    }
    link->validity.secs_since_valid_ping = (uint16_t)ping;
    link->validity.secs_since_valid_hangup = (uint16_t)hangup;
    link->status_s = o->status_s > 0 ? o->status_s : AGENT_LINK_STATUS_S;
    link->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : AGENT_LINK_BACKOFF_MIN_MS;
    link->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : AGENT_LINK_BACKOFF_MAX_MS;
    if (link->backoff_max_ms < link->backoff_min_ms) link->backoff_max_ms = link->backoff_min_ms;
    if (getrandom(&link->rng, sizeof link->rng, 0) != sizeof link->rng)
        link->rng = (uint64_t)mono_ms();
    link->rng |= 1;
    return 0;
}

static int create_context(struct agent_link *link, struct cp_err *err)
{
    if (link->tls && link->ca_file && access(link->ca_file, R_OK) < 0) {
        cp_err_set(err, CP_ERR_IO, "console CA file %s: %s", link->ca_file, strerror(errno));
        return -1;
    }
    link->protocols[0].name = PROTO_SUBPROTOCOL;
    link->protocols[0].callback = link_callback;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = link->protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = link;
    if (link->tls) {
        info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.client_ssl_ca_filepath = link->ca_file;
    }
    lws_set_log_level(LLL_ERR, NULL);
    link->ctx = lws_create_context(&info);
    if (!link->ctx) {
        cp_err_set(err, CP_ERR_IO, "console link: cannot create the websocket client%s",
                   link->tls ? " (TLS setup failed: check the CA file)" : "");
        return -1;
    }
    return 0;
}

struct agent_link *agent_link_open(const struct agent_link_options *o, struct cp_err *err)
{
    struct agent_link *link = calloc(1, sizeof *link);
    if (!link) {
        cp_err_set(err, CP_ERR_NOMEM, "console link: out of memory");
        return NULL;
    }
    link->log = o->log;
    link->log_ctx = o->log_ctx;
    ring_init(&link->outbox, AGENT_LINK_OUTBOX_MAX);
    ring_init(&link->events, AGENT_LINK_EVENTS_MAX);
    link->now = (int64_t)time(NULL);
    if (copy_options(link, o, err) < 0 || copy_timing(link, o, err) < 0 ||
        parse_url(link, o->url, err) < 0 || create_context(link, err) < 0) {
        agent_link_close(link);
        return NULL;
    }
    load_state(link, link->now);
    link->stats.url = link->url;
    return link;
}

void agent_link_close(struct agent_link *link)
{
    if (!link) return;
    link->closing = true;
    if (link->ctx) lws_context_destroy(link->ctx);
    ring_clear(&link->outbox);
    ring_clear(&link->events);
    buf_free(&link->rx);
    control_state_free(&link->state);
    json_decref(link->targets);
    json_decref(link->hello.capabilities);
    free(link->url);
    if (link->auth) explicit_bzero(link->auth, strlen(link->auth));
    free(link->auth);
    free(link->ca_file);
    free(link->state_file);
    free(link->address);
    free(link->host_header);
    free(link->path);
    free(link);
}

/* ---- driving ---- */

static void queue_status(struct agent_link *link, int64_t now_ms)
{
    link->next_status_ms = now_ms + (int64_t)link->status_s * 1000;
    outbox_push(link, build_fitting(link, build_status, "status"));
}

/* Whether the connection's socket has bytes (or a hang-up) lws has not read yet. */
static bool socket_readable(const struct agent_link *link)
{
    int fd = link->wsi && link->phase != LINK_IDLE ? lws_get_socket_fd(link->wsi) : -1;
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

void agent_link_service(struct agent_link *link, int64_t now)
{
    if (!link) return;
    link->now = now;
    int64_t now_ms = mono_ms();
    if (link->phase == LINK_IDLE && now_ms >= link->next_attempt_ms) start_connect(link);
    if (link->phase == LINK_OPEN && now_ms >= link->next_status_ms) queue_status(link, now_ms);
    lws_service(link->ctx, -1);
    for (int i = 0; i < SERVICE_ROUNDS && (frames_waiting(link) || socket_readable(link)); i++)
        lws_service(link->ctx, -1);
}

static void on_expired(const struct control_session *s, bool quota_exhausted, void *ctx)
{
    struct agent_link *link = ctx;
    link_log(link, "session %s: %s at %lld", s->session_id,
             quota_exhausted ? "quota exhausted" : "lease expired", (long long)s->lease_until);
    agent_link_event(link,
                     quota_exhausted ? PROTO_EVENT_QUOTA_EXHAUSTED : PROTO_EVENT_LEASE_EXPIRED,
                     s->session_id,
                     quota_exhausted ? "the lease capped by the budget ended"
                                     : "the lease ended without renewal",
                     NULL);
}

void agent_link_tick(struct agent_link *link, int64_t now)
{
    if (!link) return;
    link->now = now;
    if (control_state_expire(&link->state, now, on_expired, link) > 0) save_state(link);
}

uint64_t agent_link_generation(const struct agent_link *link)
{
    return link ? link->generation : 0;
}

size_t agent_link_sessions(struct agent_link *link, int64_t now, const struct control_session **out,
                           size_t max)
{
    return link ? control_state_active(&link->state, now, out, max) : 0;
}

void agent_link_set_targets(struct agent_link *link, json_t *targets)
{
    if (!link) {
        json_decref(targets);
        return;
    }
    json_decref(link->targets);
    link->targets = json_is_array(targets) ? targets : NULL;
    if (targets && !link->targets) json_decref(targets);
}

void agent_link_set_counters(struct agent_link *link, const struct agent_link_counters *c)
{
    if (link && c) link->counters = *c;
}

void agent_link_set_session_targets(struct agent_link *link, const char *session_id,
                                    int64_t targets)
{
    if (!link || !session_id || !control_state_find(&link->state, session_id)) return;
    struct session_targets *free_slot = NULL;
    for (size_t i = 0; i < CONTROL_STATE_SESSIONS_MAX; i++) {
        struct session_targets *t = &link->session_targets[i];
        if (!strcmp(t->session_id, session_id)) {
            t->targets = targets;
            return;
        }
        if (!free_slot && (!t->session_id[0] || !control_state_find(&link->state, t->session_id)))
            free_slot = t;
    }
    if (!free_slot) return;
    snprintf(free_slot->session_id, sizeof free_slot->session_id, "%s", session_id);
    free_slot->targets = targets;
}

void agent_link_event(struct agent_link *link, enum proto_event_kind kind, const char *session_id,
                      const char *message, const json_t *target)
{
    if (!link) return;
    char text[PROTO_MESSAGE_MAX + 1];
    snprintf(text, sizeof text, "%s", message ? message : "");
    trim_utf8(text, PROTO_MESSAGE_MAX);
    struct cp_err err = {0};
    char *frame = proto_build_event(kind, session_id, text, target, &err);
    if (!frame) {
        link_log(link, "dropped a %s event: %s", proto_event_kind_name(kind), err.msg);
        return;
    }
    if (ring_push(&link->events, frame)) link->stats.events_dropped++;
    want_write(link);
}

/* ---- reporting ---- */

void agent_link_stats(const struct agent_link *link, int64_t now, struct agent_link_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!link) return;
    *out = link->stats;
    out->connected = link->phase == LINK_OPEN;
    out->sessions_held = link->state.count;
    for (size_t i = 0; i < link->state.count; i++)
        if (control_session_active(&link->state.sessions[i], now)) out->sessions_active++;
    if (link->phase == LINK_IDLE) {
        int64_t left = link->next_attempt_ms - mono_ms();
        out->next_attempt_ms = left > 0 ? left : 0;
    }
}

static json_t *session_summary(const struct control_session *s, int64_t now)
{
    return json_pack("{s:s, s:s, s:b, s:s, s:s, s:I, s:I, s:I, s:i}", "session_id", s->session_id,
                     "state", proto_session_state_name(s->state), "active",
                     control_session_active(s, now), "project", s->project, "environment",
                     s->environment, "lease_until", (json_int_t)s->lease_until, "budget_left",
                     (json_int_t)s->budget_left, "profiling_s", (json_int_t)s->profiling_s,
                     "period_s", s->period);
}

json_t *agent_link_status_json(const struct agent_link *link, int64_t now)
{
    if (!link) return NULL;
    struct agent_link_stats st;
    agent_link_stats(link, now, &st);
    json_t *sessions = json_array();
    for (size_t i = 0; sessions && i < link->state.count; i++)
        json_array_append_new(sessions, session_summary(&link->state.sessions[i], now));
    return json_pack("{s:s, s:b, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:o*}", "url", link->url,
                     "connected", st.connected, "connects", (json_int_t)st.connects, "disconnects",
                     (json_int_t)st.disconnects, "last_error", st.last_error, "commands_acked",
                     (json_int_t)st.commands_acked, "commands_nacked",
                     (json_int_t)st.commands_nacked, "events_dropped",
                     (json_int_t)st.events_dropped, "active_sessions",
                     (json_int_t)st.sessions_active, "sessions", sessions);
}
