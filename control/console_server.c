/* console_server: libwebsockets plumbing of conprof-console; all decisions live in console_api.c
 * (HTTP) and console_hub.c (agents).
 *
 * Design: one context, one vhost, two protocols. Protocol 0 ("http") gets every HTTP request
 * (there are no mounts, so lws hands every URL to protocol 0's LWS_CALLBACK_HTTP) and the
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE of every websocket upgrade, where the bearer token, the path
 * and the subprotocol are checked and a refusal is answered with an HTTP status. Protocol 1
 * (PROTO_SUBPROTOCOL) carries the agents; it checks the token a second time in
 * LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION and keeps the token's name and project in the
 * connection's user data for hub_agent_connect().
 * HTTP: api_preflight() answers auth / 404 / 405 / 413 from the headers, so a refused upload is
 * never read (the connection is then closed after the answer); otherwise the body is
 * accumulated (bounded by the route's limit) and api_handle() runs at BODY_COMPLETION. The
 * response is written in slices of RESPONSE_SLICE bytes, one per WRITEABLE callback.
 * The query string is rebuilt from lws's URL-decoded argument fragments by percent-encoding each
 * value again, so the api sees an ordinary encoded query (a decoded '&' or '=' inside a value
 * cannot split it).
 * Websocket: fragments are gathered up to PROTO_FRAME_MAX; a larger frame is dropped as a whole
 * and reported to the hub (text NULL) without closing. Outgoing frames wait in a per-connection
 * FIFO (bounded) and are written one per WRITEABLE callback.
 * Timers: one lws_sul drives hub_tick() every tick_ms and the retention sweep hourly.
 */
#include "console_server.h"

#include "console_api.h"
#include "console_hub.h"
#include "protocol.h"
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_SLICE 16384
#define TOKEN_MAX 256
#define PATH_MAX_LEN 2048
#define QUERY_MAX_LEN 16384
#define HEADER_DATA_MAX 24576
#define RETENTION_EVERY_S 3600
#define PING_AFTER_S 20
#define HANGUP_AFTER_S 30

struct server {
    struct lws_context *context;
    struct store *store;
    struct hub *hub;
    struct console_api *api;
    const struct console_options *opts;
    lws_sorted_usec_list_t tick_sul;
    int64_t last_retention;
};

struct http_pss {
    char method[8];
    char *path;
    char *query;
    char *content_type;
    char token[TOKEN_MAX];
    struct buf body;
    size_t limit;
    bool too_large;
    bool close_after; /* the body was not read: close once answered */
    bool responding;
    bool headers_sent;
    size_t sent;
    struct api_response resp;
};

struct out_frame {
    struct out_frame *next;
    size_t len;
    unsigned char data[]; /* LWS_PRE + len */
};

struct agent_pss {
    char token_name[PROTO_NAME_MAX + 1];
    char token_project[PROTO_NAME_MAX + 1];
    struct hub_agent *agent;
    struct out_frame *head, *tail;
    size_t queued;
    struct buf rx;
    size_t rx_dropped; /* bytes of an oversized frame being skipped */
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static struct server *server_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

/* ---- request header helpers ---- */

static char *header_dup(struct lws *wsi, enum lws_token_indexes h, int max)
{
    int len = lws_hdr_total_length(wsi, h);
    if (len <= 0 || len > max) return strdup("");
    char *s = malloc((size_t)len + 1);
    if (s && lws_hdr_copy(wsi, s, len + 1, h) < 0) s[0] = '\0';
    return s;
}

/* The token of "Authorization: Bearer TOKEN" ("" when absent or of another scheme). */
static void bearer_token(struct lws *wsi, char *out, size_t size)
{
    char auth[TOKEN_MAX + 16];
    out[0] = '\0';
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (len <= 0 || len >= (int)sizeof(auth) ||
        lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        return;
    if (strncasecmp(auth, "Bearer ", 7)) return;
    const char *t = auth + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\r'))
        n--;
    if (n >= size) return; /* longer than any token: treated as missing, so 401 */
    memcpy(out, t, n);
    out[n] = '\0';
}

static int64_t content_length(struct lws *wsi)
{
    char v[32];
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (len <= 0 || len >= (int)sizeof(v) ||
        lws_hdr_copy(wsi, v, sizeof(v), WSI_TOKEN_HTTP_CONTENT_LENGTH) < 0)
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < 0) return -1;
    return n;
}

static int append_encoded(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            (c && strchr("-._~", c)))
            rc = buf_append_byte(b, c);
        else
            rc = buf_printf(b, "%%%c%c", hex[c >> 4], hex[c & 15]);
        if (rc) return -1;
    }
    return 0;
}

/* The URL-decoded argument fragments, encoded again and joined with '&'. */
static char *query_string(struct lws *wsi)
{
    struct buf q = {0};
    char frag[QUERY_MAX_LEN];
    if (buf_append_str(&q, "")) return NULL;
    for (int i = 0; i < 256; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen <= 0) break;
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof(frag), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen >= (int)sizeof(frag) || n < 0) {
            buf_free(&q);
            return NULL;
        }
        const char *eq = strchr(frag, '=');
        size_t klen = eq ? (size_t)(eq - frag) : (size_t)n;
        if ((q.len && buf_append_byte(&q, '&')) || append_encoded(&q, frag, klen) ||
            (eq && (buf_append_byte(&q, '=') || append_encoded(&q, eq + 1, strlen(eq + 1)))) ||
            q.len > QUERY_MAX_LEN) {
            buf_free(&q);
            return NULL;
        }
    }
    return q.data;
}

/* ---- HTTP ---- */

static void http_reset(struct http_pss *pss)
{
    free(pss->path);
    free(pss->query);
    free(pss->content_type);
    buf_free(&pss->body);
    api_response_free(&pss->resp);
    memset(pss, 0, sizeof(*pss));
}

static void http_respond(struct lws *wsi, struct http_pss *pss)
{
    pss->responding = true;
    lws_callback_on_writable(wsi);
}

static void http_run(struct lws *wsi, struct http_pss *pss)
{
    struct server *srv = server_of(wsi);
    struct api_request req = {
        .method = pss->method,
        .path = pss->path,
        .query = pss->query,
        .content_type = pss->content_type,
        .body = (const uint8_t *)pss->body.data,
        .body_len = pss->body.len,
        .token = pss->token,
        .now = now_s(),
    };
    if (pss->too_large)
        api_error(&pss->resp, 413, "body larger than %zu bytes", pss->limit);
    else
        api_handle(srv->api, &req, &pss->resp);
    buf_free(&pss->body);
    http_respond(wsi, pss);
}

static int http_begin(struct lws *wsi, struct http_pss *pss)
{
    struct server *srv = server_of(wsi);
    static const char *const methods[] = {"GET",   "POST",   "OPTIONS", "PUT",
                                          "PATCH", "DELETE", "CONNECT", "HEAD"};
    char *uri = NULL;
    int uri_len = 0;
    http_reset(pss);
    int m = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
    if (m < 0 || m >= (int)(sizeof(methods) / sizeof(methods[0])) || uri_len <= 0 ||
        uri_len > PATH_MAX_LEN) {
        api_error(&pss->resp, 400, "unsupported request line");
        pss->close_after = true;
        http_respond(wsi, pss);
        return 0;
    }
    snprintf(pss->method, sizeof(pss->method), "%s", methods[m]);
    pss->path = strndup(uri, (size_t)uri_len);
    pss->query = query_string(wsi);
    pss->content_type = header_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, 1024);
    if (!pss->path || !pss->query || !pss->content_type) {
        api_error(&pss->resp, pss->query ? 500 : 414,
                  pss->query ? "out of memory" : "query string too long");
        pss->close_after = true;
        http_respond(wsi, pss);
        return 0;
    }
    bearer_token(wsi, pss->token, sizeof(pss->token));
    int64_t clen = content_length(wsi);
    pss->limit = api_body_limit(pss->path);
    if (api_preflight(srv->api, pss->method, pss->path, pss->token, clen, &pss->resp)) {
        pss->close_after = clen > 0;
        http_respond(wsi, pss);
        return 0;
    }
    if (clen < 0 && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        /* lws 4.1 does not decode chunked request bodies */
        api_error(&pss->resp, 411,
                  "send the body with a Content-Length (chunked bodies are not accepted)");
        pss->close_after = true;
        http_respond(wsi, pss);
        return 0;
    }
    if (clen <= 0 || !strcmp(pss->method, "GET") || !strcmp(pss->method, "HEAD"))
        http_run(wsi, pss);
    return 0; /* else wait for the body */
}

static void http_body(struct http_pss *pss, const void *in, size_t len)
{
    if (pss->responding || pss->too_large) return;
    if (pss->body.len + len > pss->limit || buf_append(&pss->body, in, len)) {
        pss->too_large = true;
        buf_free(&pss->body);
    }
}

static int http_write_headers(struct lws *wsi, struct http_pss *pss)
{
    unsigned char hdr[LWS_PRE + 1024];
    unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    const struct api_response *r = &pss->resp;
    if (lws_add_http_common_headers(wsi, (unsigned)r->status, r->content_type,
                                    (lws_filepos_t)r->body.len, &p, end))
        return -1;
    if (r->disposition[0] &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"content-disposition:",
                                    (const unsigned char *)r->disposition,
                                    (int)strlen(r->disposition), &p, end))
        return -1;
    if (pss->close_after && lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                                        (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
    pss->headers_sent = true;
    return 0;
}

/* Returns -1 to close the connection. */
static int http_writeable(struct lws *wsi, struct http_pss *pss)
{
    if (!pss->responding) return 0;
    if (!pss->headers_sent) {
        if (http_write_headers(wsi, pss)) return -1;
        if (pss->resp.body.len) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    size_t left = pss->resp.body.len - pss->sent;
    if (left) {
        size_t n = left > RESPONSE_SLICE ? RESPONSE_SLICE : left;
        unsigned char *slice = malloc(LWS_PRE + n);
        if (!slice) return -1;
        memcpy(slice + LWS_PRE, pss->resp.body.data + pss->sent, n);
        int rc =
            lws_write(wsi, slice + LWS_PRE, n, n == left ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
        free(slice);
        if (rc < (int)n) return -1;
        pss->sent += n;
        if (pss->sent < pss->resp.body.len) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    bool close_after = pss->close_after;
    http_reset(pss);
    if (close_after || lws_http_transaction_completed(wsi)) return -1;
    return 0;
}

/* Refuses a websocket upgrade with an HTTP status. lws_return_http_status() would answer
 * "HTTP/1.0" here (the request version is not known yet at this point), which websocket clients
 * refuse to read, so the answer is written whole. */
static int refuse_upgrade(struct lws *wsi, int status, const char *message)
{
    struct api_response resp = {0};
    struct buf text = {0};
    const char *reason = status == 401   ? "Unauthorized"
                         : status == 403 ? "Forbidden"
                         : status == 404 ? "Not Found"
                                         : "Bad Request";
    api_error(&resp, status, "%s", message);
    int rc =
        buf_printf(&text,
                   "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
                   "connection: close\r\n\r\n%s",
                   status, reason, resp.body.len, resp.body.data ? resp.body.data : "");
    unsigned char *out = rc ? NULL : malloc(LWS_PRE + text.len);
    rc = -1; /* hang up when the answer cannot be written */
    if (out) {
        memcpy(out + LWS_PRE, text.data, text.len);
        if (lws_write(wsi, out + LWS_PRE, text.len, LWS_WRITE_HTTP_HEADERS) == (int)text.len)
            rc = 1;
    }
    free(out);
    buf_free(&text);
    api_response_free(&resp);
    return rc;
}

/* The upgrade to the agents' websocket: 0 to allow, 1 after answering with an HTTP error. */
static int confirm_upgrade(struct lws *wsi)
{
    struct server *srv = server_of(wsi);
    char *uri = NULL;
    int uri_len = 0;
    int m = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
    if (m != LWSHUMETH_GET || uri_len != (int)strlen(PROTO_PATH) ||
        memcmp(uri, PROTO_PATH, (size_t)uri_len))
        return refuse_upgrade(wsi, 404, "no websocket here: agents connect to " PROTO_PATH);
    char proto[256] = "";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) >= (int)sizeof(proto) ||
        lws_hdr_copy(wsi, proto, sizeof(proto), WSI_TOKEN_PROTOCOL) < 0 ||
        !strstr(proto, PROTO_SUBPROTOCOL))
        return refuse_upgrade(wsi, 400, "subprotocol " PROTO_SUBPROTOCOL " required");
    char token[TOKEN_MAX], name[PROTO_NAME_MAX + 1], project[PROTO_NAME_MAX + 1];
    bearer_token(wsi, token, sizeof(token));
    int status =
        api_check_agent_token(srv->api, token, name, sizeof(name), project, sizeof(project));
    if (status)
        return refuse_upgrade(wsi, status,
                              status == 401 ? "missing, unknown or revoked agent token"
                                            : "not an agent token");
    return 0;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct http_pss *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return http_begin(wsi, pss);
    case LWS_CALLBACK_HTTP_BODY:
        http_body(pss, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!pss->responding) http_run(wsi, pss);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return http_writeable(wsi, pss);
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(wsi);
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (pss) http_reset(pss);
        return 0;
    default:
        return 0;
    }
}

/* ---- agents' websocket ---- */

static int agent_send(void *conn, const char *text, size_t len, void *ctx)
{
    (void)ctx;
    struct lws *wsi = conn;
    struct agent_pss *pss = lws_wsi_user(wsi);
    if (!pss || pss->queued >= CONSOLE_SEND_QUEUE_MAX) return -1;
    struct out_frame *f = malloc(sizeof(*f) + LWS_PRE + len);
    if (!f) return -1;
    f->next = NULL;
    f->len = len;
    memcpy(f->data + LWS_PRE, text, len);
    if (pss->tail)
        pss->tail->next = f;
    else
        pss->head = f;
    pss->tail = f;
    pss->queued++;
    lws_callback_on_writable(wsi);
    return 0;
}

static void agent_free_queue(struct agent_pss *pss)
{
    while (pss->head) {
        struct out_frame *next = pss->head->next;
        free(pss->head);
        pss->head = next;
    }
    pss->tail = NULL;
    pss->queued = 0;
    buf_free(&pss->rx);
}

static int agent_writeable(struct lws *wsi, struct agent_pss *pss)
{
    struct out_frame *f = pss->head;
    if (!f) return 0;
    int rc = lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT);
    pss->head = f->next;
    if (!pss->head) pss->tail = NULL;
    pss->queued--;
    free(f);
    if (rc < 0) return -1;
    if (pss->head) lws_callback_on_writable(wsi);
    return 0;
}

static int agent_receive(struct lws *wsi, struct agent_pss *pss, const void *in, size_t len)
{
    struct server *srv = server_of(wsi);
    bool final = lws_is_final_fragment(wsi);
    if (pss->rx_dropped || pss->rx.len + len > PROTO_FRAME_MAX) {
        pss->rx_dropped += pss->rx.len + len;
        buf_free(&pss->rx);
    } else if (buf_append(&pss->rx, in, len)) {
        pss->rx_dropped += len;
        buf_free(&pss->rx);
    }
    if (!final) return 0;
    enum hub_verdict v;
    if (pss->rx_dropped)
        v = hub_agent_frame(srv->hub, pss->agent, NULL, pss->rx_dropped, lws_frame_is_binary(wsi),
                            now_s());
    else
        v = hub_agent_frame(srv->hub, pss->agent, pss->rx.data ? pss->rx.data : "", pss->rx.len,
                            lws_frame_is_binary(wsi), now_s());
    pss->rx_dropped = 0;
    buf_reset(&pss->rx);
    if (v == HUB_CLOSE_VERSION) {
        static const char why[] = "this console speaks protocol v1";
        lws_close_reason(wsi, HUB_CLOSE_BAD_VERSION, (unsigned char *)why, strlen(why));
        return -1;
    }
    return 0;
}

static int callback_agent(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
    struct agent_pss *pss = user;
    struct server *srv;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char token[TOKEN_MAX];
        srv = server_of(wsi);
        bearer_token(wsi, token, sizeof(token));
        memset(pss, 0, sizeof(*pss));
        return api_check_agent_token(srv->api, token, pss->token_name, sizeof(pss->token_name),
                                     pss->token_project, sizeof(pss->token_project))
                   ? -1
                   : 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        srv = server_of(wsi);
        pss->agent = hub_agent_connect(srv->hub, wsi, pss->token_name, pss->token_project, now_s());
        return pss->agent ? 0 : -1;
    case LWS_CALLBACK_RECEIVE:
        return pss->agent ? agent_receive(wsi, pss, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return agent_writeable(wsi, pss);
    case LWS_CALLBACK_CLOSED:
        srv = server_of(wsi);
        if (pss->agent) hub_agent_disconnect(srv->hub, pss->agent, now_s());
        pss->agent = NULL;
        agent_free_queue(pss);
        return 0;
    default:
        return 0;
    }
}

/* ---- timers ---- */

static void run_retention(struct server *srv, int64_t now)
{
    struct cp_err err = {0};
    int64_t removed = store_retention(srv->store, now - srv->opts->retention_minutes * 60, &err);
    if (removed < 0)
        console_log("retention: %s", err.msg);
    else if (removed > 0)
        console_log("retention: deleted %lld profiles", (long long)removed);
    srv->last_retention = now;
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    struct server *srv = lws_container_of(sul, struct server, tick_sul);
    struct cp_err err = {0};
    int64_t now = now_s();
    if (hub_tick(srv->hub, now, &err)) console_log("tick: %s", err.msg);
    if (now - srv->last_retention >= RETENTION_EVERY_S) run_retention(srv, now);
    lws_sul_schedule(srv->context, 0, &srv->tick_sul, on_tick,
                     (lws_usec_t)srv->opts->tick_ms * LWS_US_PER_MS);
}

/* ---- start and stop ---- */

static const struct lws_protocols protocols[] = {
    {"http", callback_http, sizeof(struct http_pss), 0, 0, NULL, 0},
    {PROTO_SUBPROTOCOL, callback_agent, sizeof(struct agent_pss), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static const lws_retry_bo_t keepalive = {
    .secs_since_valid_ping = PING_AFTER_S,
    .secs_since_valid_hangup = HANGUP_AFTER_S,
};

/* lws reports a busy port only in its log: try the bind first for a clear message. */
static int check_listen(const struct console_options *o, struct cp_err *err)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, o->listen_host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)o->listen_port);
        sl = sizeof(*in4);
    } else if (inet_pton(AF_INET6, o->listen_host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)o->listen_port);
        sl = sizeof(*in6);
    } else {
        cp_err_set(err, CP_ERR_INVALID,
                   "--listen: '%s' is not an IPv4 or IPv6 address (use e.g. 127.0.0.1:8080)",
                   o->listen_host);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&ss, sl)) {
        cp_err_set(err, CP_ERR_IO, "cannot listen on %s:%d: %s", o->listen_host, o->listen_port,
                   strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int check_tls_files(const struct console_options *o, struct cp_err *err)
{
    const char *paths[] = {o->cert_path, o->key_path};
    const char *flags[] = {"--cert", "--key"};
    for (int i = 0; i < 2; i++)
        if (paths[i] && access(paths[i], R_OK)) {
            cp_err_set(err, CP_ERR_IO, "%s %s: %s", flags[i], paths[i], strerror(errno));
            return -1;
        }
    return 0;
}

static struct lws_context *create_context(struct server *srv, struct cp_err *err)
{
    const struct console_options *o = srv->opts;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = o->listen_port;
    bool any = !strcmp(o->listen_host, "0.0.0.0") || !strcmp(o->listen_host, "::");
    info.iface = any ? NULL : o->listen_host;
    info.protocols = protocols;
    info.user = srv;
    info.max_http_header_data = HEADER_DATA_MAX;
    info.retry_and_idle_policy = &keepalive;
    info.vhost_name = "conprof-console";
    info.alpn = "http/1.1"; /* one HTTP version to reason about (no h2) */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (o->cert_path) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = o->cert_path;
        info.ssl_private_key_filepath = o->key_path;
    }
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx)
        cp_err_set(err, CP_ERR_IO, "cannot start the server on %s:%d (see the messages above)",
                   o->listen_host, o->listen_port);
    return ctx;
}

static void server_close(struct server *srv)
{
    if (srv->context) {
        lws_sul_cancel(&srv->tick_sul);
        lws_context_destroy(srv->context); /* closes the agents: hub_agent_disconnect() */
    }
    if (srv->api) console_api_free(srv->api);
    if (srv->hub) hub_free(srv->hub);
    if (srv->store) store_close(srv->store);
}

static int server_open(struct server *srv, struct cp_err *err)
{
    const struct console_options *o = srv->opts;
    struct hub_config hc = {
        .max_lease_s = o->max_lease_s,
        .free_budget_s = o->free_budget_s,
        .period = o->period_s ? o->period_s : HUB_DEFAULT_PERIOD,
        .upload_timeout = HUB_DEFAULT_UPLOAD_TIMEOUT,
    };
    struct console_api_config ac = {.retention_minutes = o->retention_minutes};
    if (check_tls_files(o, err) || check_listen(o, err)) return -1;
    struct store_options so = {.free_budget_s = (double)o->free_budget_s};
    srv->store = store_open_with(o->data_dir, &so, err);
    if (!srv->store) return -1;
    srv->hub = hub_new(srv->store, &hc, agent_send, srv, err);
    if (!srv->hub) return -1;
    srv->api = console_api_new(srv->store, srv->hub, &ac, err);
    if (!srv->api) return -1;
    srv->context = create_context(srv, err);
    if (!srv->context) return -1;
    run_retention(srv, now_s());
    lws_sul_schedule(srv->context, 0, &srv->tick_sul, on_tick,
                     (lws_usec_t)o->tick_ms * LWS_US_PER_MS);
    return 0;
}

int console_server_run(const struct console_options *opts, volatile sig_atomic_t *stop,
                       struct cp_err *err)
{
    struct server srv;
    memset(&srv, 0, sizeof(srv));
    srv.opts = opts;
    lws_set_log_level(LLL_ERR, NULL);
    if (server_open(&srv, err)) {
        server_close(&srv);
        return -1;
    }
    console_log("listening on %s://%s:%d, data in %s", opts->cert_path ? "https" : "http",
                opts->listen_host, opts->listen_port, opts->data_dir);
    while (!*stop)
        if (lws_service(srv.context, 0) < 0) break;
    console_log("shutting down");
    server_close(&srv);
    return 0;
}
