/* agent_channel: the websocket client of the control channel (see agent_channel.h).
 *
 * Design: one client-only lws context with one protocol ("conprof-agent-v1"); at most one
 * connection. Reconnects are ours, not lws's retry machinery: service() connects when no
 * connection exists and the backoff delay has passed, so both failure paths of lws 4.1.6 (NULL
 * from lws_client_connect_via_info, or a later CLIENT_CONNECTION_ERROR / CLOSED callback) end the
 * same way: wsi = NULL and a next attempt scheduled. Keepalive uses lws's validity policy
 * (ping after AGENT_CHANNEL_PING_S idle, hang-up after AGENT_CHANNEL_HANGUP_S), passed as the
 * connection's retry_and_idle_policy.
 * Outgoing frames wait in a FIFO of malloc'd texts and are written one per WRITEABLE callback
 * (with the LWS_PRE headroom lws_write needs). While disconnected only events are kept (bounded);
 * the FIFO is rebuilt on connect: hello first, then the waiting events.
 * Incoming frames are reassembled from fragments up to PROTO_FRAME_MAX; a larger frame is read
 * to its end and dropped (counted), never parsed. Time for leases is the caller's `now`; the
 * monotonic clock only paces reconnects and heartbeats.
 */
#include "agent_channel.h"

#include "protocol.h"

#include <errno.h>
#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct out_msg {
    struct out_msg *next;
    size_t len;
    bool is_event;
    char text[]; /* LWS_PRE bytes of headroom, then the frame */
};

struct agent_channel {
    struct lws_context *context;
    struct lws *wsi;
    lws_retry_bo_t keepalive;
    char url_copy[2048];
    const char *address, *path_tail;
    char path[2048];
    int port;
    bool tls;
    char host_header[600];
    char auth[20000];
    char ca_file[4096];
    char state_file[4096];
    char node[PROTO_NODE_MAX + 1];
    char agent_id[PROTO_AGENT_ID_MAX + 1];
    char agent_version[PROTO_VERSION_STR_MAX + 1];
    void (*log)(void *ctx, const char *line);
    void *log_ctx;

    struct control_state state;
    uint64_t generation;
    json_t *targets;
    struct agent_channel_counters counters;

    struct out_msg *head, *tail;
    size_t queued_events;
    char rx[PROTO_FRAME_MAX];
    size_t rx_len;
    bool rx_oversize;

    int attempts;        /* failed connects since the last healthy connection */
    double next_connect; /* monotonic seconds */
    double connected_at; /* monotonic; 0 while not connected */
    double next_status;  /* monotonic */
    struct agent_channel_stats stats;
    bool closing; /* lws_context_destroy() calls back: ignore it */
};

static double mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void say(struct agent_channel *ch, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(struct agent_channel *ch, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (ch->log)
        ch->log(ch->log_ctx, line);
    else
        fprintf(stderr, "conprof-agent: console: %s\n", line);
}

static void set_error(struct agent_channel *ch, const char *what)
{
    snprintf(ch->stats.last_error, sizeof ch->stats.last_error, "%s", what);
}

/* ---- the outgoing queue ------------------------------------------------------------------ */

static void queue_push(struct agent_channel *ch, char *text, bool is_event, bool front)
{
    if (!text) return;
    size_t len = strlen(text);
    struct out_msg *m = malloc(sizeof *m + LWS_PRE + len + 1);
    if (!m) {
        free(text);
        return;
    }
    m->len = len;
    m->is_event = is_event;
    memcpy(m->text + LWS_PRE, text, len + 1);
    free(text);
    if (front) {
        m->next = ch->head;
        ch->head = m;
        if (!ch->tail) ch->tail = m;
    } else {
        m->next = NULL;
        if (ch->tail)
            ch->tail->next = m;
        else
            ch->head = m;
        ch->tail = m;
    }
    if (is_event) ch->queued_events++;
    if (ch->wsi) lws_callback_on_writable(ch->wsi);
}

static struct out_msg *queue_pop(struct agent_channel *ch)
{
    struct out_msg *m = ch->head;
    if (!m) return NULL;
    ch->head = m->next;
    if (!ch->head) ch->tail = NULL;
    if (m->is_event) ch->queued_events--;
    return m;
}

/* On disconnect: only events are worth keeping for the next connection. */
static void queue_keep_events(struct agent_channel *ch)
{
    struct out_msg *keep = NULL, **end = &keep, *m;
    struct out_msg *last = NULL;
    while ((m = queue_pop(ch))) {
        if (!m->is_event) {
            free(m);
            continue;
        }
        *end = m;
        end = &m->next;
        last = m;
    }
    *end = NULL;
    ch->head = keep;
    ch->tail = last;
    ch->queued_events = 0;
    for (m = keep; m; m = m->next)
        ch->queued_events++;
}

static void queue_event(struct agent_channel *ch, enum proto_event_kind kind,
                        const char *session_id, const char *message, const json_t *target)
{
    struct cp_err err;
    char *text = proto_build_event(kind, session_id, message, target, &err);
    if (!text) {
        say(ch, "event not sent: %s", err.msg);
        return;
    }
    while (ch->queued_events >= AGENT_CHANNEL_EVENTS_MAX) { /* drop the oldest event */
        struct out_msg **p = &ch->head, *prev = NULL;
        while (*p && !(*p)->is_event) {
            prev = *p;
            p = &(*p)->next;
        }
        struct out_msg *old = *p;
        if (!old) break;
        *p = old->next;
        if (ch->tail == old) ch->tail = prev;
        ch->queued_events--;
        ch->stats.events_dropped++;
        free(old);
    }
    queue_push(ch, text, true, false);
}

/* ---- messages ---------------------------------------------------------------------------- */

static void send_hello(struct agent_channel *ch)
{
    struct proto_session_ref refs[CONTROL_STATE_SESSIONS_MAX];
    struct proto_hello h = {0};
    snprintf(h.agent_id, sizeof h.agent_id, "%s", ch->agent_id);
    snprintf(h.node, sizeof h.node, "%s", ch->node);
    snprintf(h.agent_version, sizeof h.agent_version, "%s", ch->agent_version);
    json_t *caps = json_pack("[s, s]", "cpu", "wall");
    h.capabilities = caps;
    h.targets = ch->targets;
    h.session_count = control_state_session_refs(&ch->state, refs, CONTROL_STATE_SESSIONS_MAX);
    h.sessions = refs;
    struct cp_err err;
    char *text = proto_build_hello(&h, &err);
    json_decref(caps);
    if (!text)
        say(ch, "hello not sent: %s", err.msg);
    else
        queue_push(ch, text, false, true); /* before the events waiting since the last link */
}

static void send_status(struct agent_channel *ch)
{
    struct proto_session_status sessions[CONTROL_STATE_SESSIONS_MAX];
    struct proto_status st = {0};
    st.targets = ch->targets;
    st.samples = (int64_t)ch->counters.samples;
    st.sample_errors = (int64_t)ch->counters.sample_errors;
    st.uploads = (struct proto_uploads){
        (int64_t)ch->counters.uploads_sent, (int64_t)ch->counters.uploads_failed,
        (int64_t)ch->counters.uploads_spooled, (int64_t)ch->counters.uploads_evicted};
    for (size_t i = 0; i < ch->state.count; i++)
        control_session_status(&ch->state.sessions[i], &sessions[i]);
    st.sessions = sessions;
    st.session_count = ch->state.count;
    struct cp_err err;
    char *text = proto_build_status(&st, &err);
    if (!text)
        say(ch, "status not sent: %s", err.msg);
    else
        queue_push(ch, text, false, false);
}

static void save_state(struct agent_channel *ch)
{
    ch->generation++;
    struct cp_err err;
    if (ch->state_file[0] && control_state_save(&ch->state, ch->state_file, &err) < 0) {
        say(ch, "sessions not saved: %s", err.msg);
        set_error(ch, err.msg);
    }
}

static void answer(struct agent_channel *ch, const char *id, const struct proto_nack *nack)
{
    struct cp_err err;
    char *text =
        nack ? proto_build_nack(id, nack->field, nack->error, &err) : proto_build_ack(id, &err);
    if (!text) {
        say(ch, "answer to %s not sent: %s", id, err.msg);
        return;
    }
    queue_push(ch, text, false, false);
}

static void handle_frame(struct agent_channel *ch, const char *text, size_t len)
{
    struct proto_command cmd;
    struct proto_nack nack;
    if (proto_parse_command(text, len, &cmd, &nack) < 0) {
        ch->stats.commands_nacked++;
        say(ch, "command refused: %s%s%s", nack.field, nack.field[0] ? ": " : "", nack.error);
        if (nack.id[0]) answer(ch, nack.id, &nack); /* without an id there is nobody to answer */
        return;
    }
    bool changed = false;
    if (control_state_apply(&ch->state, &cmd, (int64_t)time(NULL), &changed, &nack) < 0) {
        ch->stats.commands_nacked++;
        say(ch, "%s %s refused: %s: %s", proto_type_name(cmd.type), cmd.session_id, nack.field,
            nack.error);
        answer(ch, cmd.id, &nack);
    } else {
        ch->stats.commands_acked++;
        if (changed) {
            if (cmd.type != PROTO_LEASE) /* renewals come every few minutes: not news */
                say(ch, "%s %s", proto_type_name(cmd.type), cmd.session_id);
            save_state(ch);
        }
        answer(ch, cmd.id, NULL);
    }
    proto_command_free(&cmd);
}

/* ---- libwebsockets ----------------------------------------------------------------------- */

static void connection_ended(struct agent_channel *ch, const char *why)
{
    double now = mono_now();
    if (ch->connected_at) {
        ch->stats.disconnects++;
        if (now - ch->connected_at >= AGENT_CHANNEL_HEALTHY_S) ch->attempts = 0;
        say(ch, "disconnected from %s: %s", ch->url_copy, why);
    } else {
        say(ch, "cannot connect to %s: %s", ch->url_copy, why);
    }
    set_error(ch, why);
    ch->wsi = NULL;
    ch->connected_at = 0;
    ch->stats.connected = false;
    ch->rx_len = 0;
    ch->rx_oversize = false;
    queue_keep_events(ch);
    int exp = ch->attempts < 6 ? ch->attempts : 6;
    double delay = (double)(1 << exp);
    if (delay > AGENT_CHANNEL_BACKOFF_MAX_S) delay = AGENT_CHANNEL_BACKOFF_MAX_S;
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) r = (uint32_t)(now * 1e6);
    ch->next_connect = now + delay / 2 + (delay / 2) * ((double)r / 4294967296.0);
    ch->attempts++;
}

static void received(struct agent_channel *ch, struct lws *wsi, const char *in, size_t len)
{
    if (lws_frame_is_binary(wsi)) {
        ch->rx_oversize = true; /* dropped like an oversized frame: commands are text */
    } else if (!ch->rx_oversize && ch->rx_len + len <= sizeof ch->rx) {
        memcpy(ch->rx + ch->rx_len, in, len);
        ch->rx_len += len;
    } else {
        ch->rx_oversize = true;
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi)) return;
    if (ch->rx_oversize) {
        ch->stats.commands_nacked++;
        say(ch, "dropped a binary or oversized frame (commands are JSON text of at most %d bytes)",
            PROTO_FRAME_MAX);
    } else {
        handle_frame(ch, ch->rx, ch->rx_len);
    }
    ch->rx_len = 0;
    ch->rx_oversize = false;
}

static int write_one(struct agent_channel *ch, struct lws *wsi)
{
    struct out_msg *m = queue_pop(ch);
    if (!m) return 0;
    int n = lws_write(wsi, (unsigned char *)m->text + LWS_PRE, m->len, LWS_WRITE_TEXT);
    free(m);
    if (n < 0) return -1;
    if (ch->head) lws_callback_on_writable(wsi);
    return 0;
}

static int on_event(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    (void)user;
    struct agent_channel *ch = lws_context_user(lws_get_context(wsi));
    if (!ch || ch->closing) return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        unsigned char **p = (unsigned char **)in, *end = *p + len;
        /* lws 4.1.6 writes the name verbatim: the colon is ours to add */
        if (lws_add_http_header_by_name(
                wsi, (const unsigned char *)"authorization:", (const unsigned char *)ch->auth,
                (int)strlen(ch->auth), p, end))
            return -1;
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        ch->connected_at = mono_now();
        ch->stats.connected = true;
        ch->stats.connects++;
        ch->stats.last_error[0] = '\0';
        say(ch, "connected to %s", ch->url_copy);
        send_hello(ch);
        ch->next_status = mono_now() + AGENT_CHANNEL_STATUS_S;
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        received(ch, wsi, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (write_one(ch, wsi) < 0) return -1;
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char why[300];
        snprintf(why, sizeof why, "%.*s", in ? (int)(len ? len : strlen(in)) : 0,
                 in ? (const char *)in : "");
        if (wsi == ch->wsi || !ch->wsi) connection_ended(ch, why[0] ? why : "connection error");
        break;
    }
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (wsi == ch->wsi) connection_ended(ch, "closed");
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols PROTOCOLS[] = {
    {PROTO_SUBPROTOCOL, on_event, 0, PROTO_FRAME_MAX, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void connect_now(struct agent_channel *ch)
{
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = ch->context;
    ci.address = ch->address;
    ci.port = ch->port;
    ci.path = ch->path;
    ci.host = ch->host_header;
    ci.origin = ch->host_header;
    ci.protocol = PROTO_SUBPROTOCOL;
    ci.ssl_connection = ch->tls ? LCCSCF_USE_SSL : 0;
    ci.retry_and_idle_policy = &ch->keepalive;
    ci.pwsi = &ch->wsi;
    ch->next_connect = mono_now() + AGENT_CHANNEL_BACKOFF_MAX_S; /* until the attempt ends */
    if (!lws_client_connect_via_info(&ci)) {
        ch->wsi = NULL;
        connection_ended(ch, "connect failed (address or DNS)");
    }
}

/* ---- the API ----------------------------------------------------------------------------- */

static int parse_url(struct agent_channel *ch, const char *url, struct cp_err *err)
{
    if (strlen(url) >= sizeof ch->url_copy) {
        cp_err_set(err, CP_ERR_INVALID, "console url: longer than %zu bytes",
                   sizeof ch->url_copy - 1);
        return -1;
    }
    char work[sizeof ch->url_copy];
    snprintf(ch->url_copy, sizeof ch->url_copy, "%s", url);
    snprintf(work, sizeof work, "%s", url);
    const char *scheme, *address, *path;
    int port = 0;
    if (lws_parse_uri(work, &scheme, &address, &port, &path) ||
        (strcmp(scheme, "ws") && strcmp(scheme, "wss")) || !address[0]) {
        cp_err_set(err, CP_ERR_INVALID,
                   "console url %s: expected ws://HOST[:PORT]/PATH or wss://...", url);
        return -1;
    }
    ch->tls = !strcmp(scheme, "wss");
    if (!strstr(url + strlen(scheme) + 3, ":")) port = ch->tls ? 443 : 80;
    ch->port = port;
    /* lws_parse_uri cut `work` into pieces; keep copies that outlive it */
    snprintf(ch->host_header, sizeof ch->host_header, "%s", address);
    snprintf(ch->path, sizeof ch->path, "/%s", path);
    ch->address = ch->host_header;
    return 0;
}

struct agent_channel *agent_channel_open(const struct agent_channel_options *o, struct cp_err *err)
{
    struct agent_channel *ch = calloc(1, sizeof *ch);
    if (!ch) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    ch->log = o->log;
    ch->log_ctx = o->log_ctx;
    if (parse_url(ch, o->url, err) < 0) goto fail;
    snprintf(ch->auth, sizeof ch->auth, "Bearer %s", o->token ? o->token : "");
    snprintf(ch->ca_file, sizeof ch->ca_file, "%s", o->ca_file ? o->ca_file : "");
    snprintf(ch->state_file, sizeof ch->state_file, "%s", o->state_file ? o->state_file : "");
    snprintf(ch->node, sizeof ch->node, "%s", o->node && o->node[0] ? o->node : "unknown");
    snprintf(ch->agent_id, sizeof ch->agent_id, "%.*s", (int)sizeof ch->agent_id - 1,
             o->agent_id && o->agent_id[0] ? o->agent_id : ch->node);
    for (char *c = ch->agent_id; *c; c++) /* the id's charset is narrower than a node name's */
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-", *c))
            *c = '_';
    snprintf(ch->agent_version, sizeof ch->agent_version, "%s",
             o->agent_version ? o->agent_version : "unknown");
    ch->targets = json_array();

    if (ch->state_file[0]) {
        struct cp_err lerr;
        if (control_state_load(&ch->state, ch->state_file, &lerr) < 0) {
            say(ch, "%s", lerr.msg); /* fail closed: no sessions */
            set_error(ch, lerr.msg);
        }
        control_state_resume(&ch->state, (int64_t)time(NULL));
    }

    ch->keepalive.secs_since_valid_ping = AGENT_CHANNEL_PING_S;
    ch->keepalive.secs_since_valid_hangup = AGENT_CHANNEL_HANGUP_S;
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = PROTOCOLS;
    info.user = ch;
    info.gid = -1;
    info.uid = -1;
    if (ch->tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        if (ch->ca_file[0]) info.client_ssl_ca_filepath = ch->ca_file;
    }
    if (!(ch->context = lws_create_context(&info))) {
        cp_err_set(err, CP_ERR_IO, "cannot create the websocket client (libwebsockets)%s",
                   ch->ca_file[0] ? "; is the console CA file readable PEM?" : "");
        goto fail;
    }
    ch->next_connect = mono_now();
    return ch;
fail:
    agent_channel_close(ch);
    return NULL;
}

void agent_channel_close(struct agent_channel *ch)
{
    if (!ch) return;
    if (ch->context) {
        struct lws_context *c = ch->context;
        ch->closing = true;
        ch->context = NULL;
        ch->wsi = NULL;
        lws_context_destroy(c);
    }
    struct out_msg *m;
    while ((m = queue_pop(ch)))
        free(m);
    json_decref(ch->targets);
    control_state_free(&ch->state);
    free(ch);
}

void agent_channel_service(struct agent_channel *ch)
{
    if (!ch->context) return;
    if (!ch->wsi && mono_now() >= ch->next_connect) connect_now(ch);
    lws_service(ch->context, -1); /* handles what is ready, never waits */
}

static void on_expired(const struct control_session *s, bool quota_exhausted, void *ctx)
{
    struct agent_channel *ch = ctx;
    say(ch, "session %s (%s/%s) ended: %s", s->session_id, s->project, s->environment,
        quota_exhausted ? "the quota is used up" : "its lease ran out without renewal");
    queue_event(ch, quota_exhausted ? PROTO_EVENT_QUOTA_EXHAUSTED : PROTO_EVENT_LEASE_EXPIRED,
                s->session_id,
                quota_exhausted ? "the lease the budget allowed has ended"
                                : "the lease ended without renewal",
                NULL);
}

void agent_channel_tick(struct agent_channel *ch, int64_t now)
{
    if (control_state_expire(&ch->state, now, on_expired, ch) > 0) save_state(ch);
    if (ch->wsi && ch->connected_at && mono_now() >= ch->next_status) {
        send_status(ch);
        ch->next_status = mono_now() + AGENT_CHANNEL_STATUS_S;
    }
}

void agent_channel_event(struct agent_channel *ch, enum proto_event_kind kind,
                         const char *session_id, const char *message, const json_t *target)
{
    queue_event(ch, kind, session_id, message, target);
}

uint64_t agent_channel_generation(const struct agent_channel *ch)
{
    return ch->generation;
}

size_t agent_channel_sessions(struct agent_channel *ch, int64_t now,
                              const struct control_session **out, size_t max)
{
    return control_state_active(&ch->state, now, out, max);
}

void agent_channel_set_targets(struct agent_channel *ch, json_t *targets)
{
    if (!targets) return;
    json_decref(ch->targets);
    ch->targets = targets;
}

void agent_channel_set_counters(struct agent_channel *ch, const struct agent_channel_counters *c)
{
    ch->counters = *c;
}

void agent_channel_get_stats(const struct agent_channel *ch, struct agent_channel_stats *out)
{
    *out = ch->stats;
    double wait = ch->next_connect - mono_now();
    out->next_connect_s = ch->wsi || wait < 0 ? 0 : wait;
}

json_t *agent_channel_status_json(const struct agent_channel *ch, int64_t now)
{
    struct agent_channel_stats st;
    agent_channel_get_stats(ch, &st);
    json_t *sessions = json_array();
    for (size_t i = 0; i < ch->state.count; i++) {
        const struct control_session *s = &ch->state.sessions[i];
        json_array_append_new(
            sessions,
            json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:i}", "session_id", s->session_id,
                      "project", s->project, "environment", s->environment, "state",
                      proto_session_state_name(s->state), "active", control_session_active(s, now),
                      "lease_until", (json_int_t)s->lease_until, "budget_left",
                      (json_int_t)s->budget_left, "profiling_s", (json_int_t)s->profiling_s,
                      "period_s", s->period));
    }
    return json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:o}", "url", ch->url_copy,
                     "connected", st.connected, "connects", (json_int_t)st.connects, "disconnects",
                     (json_int_t)st.disconnects, "commands_acked", (json_int_t)st.commands_acked,
                     "commands_nacked", (json_int_t)st.commands_nacked, "events_dropped",
                     (json_int_t)st.events_dropped, "next_connect_s", st.next_connect_s,
                     "last_error", st.last_error, "sessions", sessions);
}
