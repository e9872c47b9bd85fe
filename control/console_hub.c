/* console_hub: the console's half of the control protocol, free of any transport.
 *
 * Design: the store is the source of truth for everything that must survive a restart (toggles,
 * session ids, leases, used budget, agents seen); the hub keeps only what lives as long as a
 * connection: a doubly linked list of connected agents (O(1) connect / disconnect) with their
 * last targets and session states, plus a ring of recent events. A command is built once and
 * sent to every connected agent that may see its project (one pass over the list), so a toggle,
 * a quota stop or a lease renewal costs O(agents) per session, and a frame from an agent touches
 * that agent only. Status heartbeats stay in memory (1,000 agents every 10 s would otherwise be
 * 100 SQLite transactions a second); an agent's record in the store is written on hello and on
 * disconnect. Leases: every session of an environment that is on is renewed together every
 * max_lease / 3 (the first tick after a start renews at once, which refreshes leases that ran out
 * while the console was down). Malformed frames are counted and logged, the first
 * LOG_REJECTS_PER_AGENT of each agent only, so a misbehaving agent cannot flood the log.
 */
#include "console_hub.h"

#include "protocol.h"
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_REJECTS_PER_AGENT 10
#define EVENT_TEXT_MAX 256

struct hub_agent {
    struct hub_agent *prev, *next;
    void *conn;
    char token_name[STORE_ID_MAX + 1];
    char token_project[STORE_ID_MAX + 1]; /* "" = every project */
    bool hello_seen;
    char agent_id[PROTO_AGENT_ID_MAX + 1];
    char node[PROTO_NODE_MAX + 1];
    char version[PROTO_VERSION_STR_MAX + 1];
    int64_t connected_since, last_seen;
    json_t *targets; /* array, owned */
    json_t *
        sessions; /* array of {"session_id","state","lease_until","profiling_s","targets"}, owned */
    uint64_t rejected;
};

struct hub_event {
    int64_t time;
    char agent[STORE_ID_MAX + 1];
    char node[PROTO_NODE_MAX + 1];
    char kind[24];
    char session_id[PROTO_ID_MAX + 1];
    char message[EVENT_TEXT_MAX];
    char field[PROTO_FIELD_MAX + 1];
};

struct hub {
    struct store *store;
    struct hub_config cfg;
    hub_send_fn send;
    void *send_ctx;
    struct hub_agent *agents;
    struct hub_event *events; /* ring of HUB_EVENTS_MAX */
    size_t event_next, event_count;
    int64_t last_renewal;
    int64_t started;
    uint64_t command_seq;
    struct hub_stats stats;
};

void console_log(const char *fmt, ...)
{
    va_list ap;
    fputs("conprof-console: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

struct hub *hub_new(struct store *store, const struct hub_config *config, hub_send_fn send,
                    void *send_ctx, struct cp_err *err)
{
    if (config->max_lease_s <= 0 || config->period < 1 || config->period > PROTO_PERIOD_MAX ||
        config->upload_timeout < 1 || config->upload_timeout > PROTO_UPLOAD_TIMEOUT_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "hub: max_lease, period or upload_timeout out of range");
        return NULL;
    }
    if (store_agent_disconnect_all(store, err)) return NULL;
    struct hub *hub = calloc(1, sizeof(*hub));
    if (hub) hub->events = calloc(HUB_EVENTS_MAX, sizeof(*hub->events));
    if (!hub || !hub->events) {
        free(hub);
        cp_err_set(err, CP_ERR_NOMEM, "hub: out of memory");
        return NULL;
    }
    hub->store = store;
    hub->cfg = *config;
    hub->send = send;
    hub->send_ctx = send_ctx;
    return hub;
}

static void agent_release(struct hub_agent *a)
{
    json_decref(a->targets);
    json_decref(a->sessions);
    free(a);
}

void hub_free(struct hub *hub)
{
    if (!hub) return;
    while (hub->agents) {
        struct hub_agent *next = hub->agents->next;
        agent_release(hub->agents);
        hub->agents = next;
    }
    free(hub->events);
    free(hub);
}

void hub_stats(const struct hub *hub, struct hub_stats *out)
{
    *out = hub->stats;
}

/* ---- events ---- */

static void add_event(struct hub *hub, const struct hub_agent *a, int64_t now, const char *kind,
                      const char *session_id, const char *message, const char *field)
{
    struct hub_event *e = &hub->events[hub->event_next];
    memset(e, 0, sizeof(*e));
    e->time = now;
    if (a) {
        snprintf(e->agent, sizeof(e->agent), "%s", a->token_name);
        snprintf(e->node, sizeof(e->node), "%s", a->node);
    }
    snprintf(e->kind, sizeof(e->kind), "%s", kind);
    snprintf(e->session_id, sizeof(e->session_id), "%s", session_id ? session_id : "");
    snprintf(e->message, sizeof(e->message), "%s", message ? message : "");
    snprintf(e->field, sizeof(e->field), "%s", field ? field : "");
    hub->event_next = (hub->event_next + 1) % HUB_EVENTS_MAX;
    if (hub->event_count < HUB_EVENTS_MAX) hub->event_count++;
}

json_t *hub_events_json(struct hub *hub)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < hub->event_count; i++) {
        const struct hub_event *e =
            &hub->events[(hub->event_next + HUB_EVENTS_MAX - 1 - i) % HUB_EVENTS_MAX];
        json_array_append_new(list, json_pack("{sI ss ss ss ss ss ss}", "time", (json_int_t)e->time,
                                              "agent", e->agent, "node", e->node, "kind", e->kind,
                                              "session_id", e->session_id, "message", e->message,
                                              "field", e->field));
    }
    return list ? json_pack("{so}", "events", list) : NULL;
}

/* ---- sending ---- */

static bool may_see(const struct hub_agent *a, const char *project)
{
    return !a->token_project[0] || !strcmp(a->token_project, project);
}

static void send_text(struct hub *hub, struct hub_agent *a, const char *text)
{
    if (hub->send(a->conn, text, strlen(text), hub->send_ctx))
        console_log("agent %s (%s): send queue full, command dropped", a->token_name, a->node);
    else
        hub->stats.commands_sent++;
}

/* Sends text to every agent that said hello and may see project. */
static void broadcast(struct hub *hub, const char *project, const char *text)
{
    for (struct hub_agent *a = hub->agents; a; a = a->next)
        if (a->hello_seen && may_see(a, project)) send_text(hub, a, text);
}

static void next_command_id(struct hub *hub, char *id)
{
    snprintf(id, PROTO_ID_MAX + 1, "c%lld-%llu", (long long)hub->started,
             (unsigned long long)++hub->command_seq);
}

static int64_t budget_left(const struct store_project *p)
{
    double left = p->budget_s - p->used_s;
    return left > 0 ? (int64_t)left : 0;
}

/* The project of env, or a fresh free-plan one when the store does not know it yet. */
static int project_of(struct hub *hub, const char *id, struct store_project *p, struct cp_err *err)
{
    int rc = store_project_get(hub->store, id, p, err);
    if (rc < 0) return -1;
    if (rc == 0) {
        memset(p, 0, sizeof(*p));
        snprintf(p->id, sizeof(p->id), "%s", id);
        p->plan = STORE_PLAN_FREE;
        p->budget_s = (double)hub->cfg.free_budget_s;
    }
    return 0;
}

static char *build_start(struct hub *hub, const struct store_env *env,
                         const struct store_project *p, struct cp_err *err)
{
    struct proto_command cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PROTO_START;
    next_command_id(hub, cmd.id);
    snprintf(cmd.session_id, sizeof(cmd.session_id), "%s", env->session_id);
    snprintf(cmd.project, sizeof(cmd.project), "%s", env->project);
    snprintf(cmd.environment, sizeof(cmd.environment), "%s", env->id);
    cmd.selector = json_pack("{ss ss}", "project", env->project, "environment", env->id);
    cmd.labels = json_object();
    cmd.period = hub->cfg.period;
    cmd.upload_timeout = hub->cfg.upload_timeout;
    snprintf(cmd.quota.plan, sizeof(cmd.quota.plan), "%s", store_plan_name(p->plan));
    cmd.quota.lease_until = env->lease_until;
    cmd.quota.budget_left = budget_left(p);
    char *text = NULL;
    if (!cmd.selector || !cmd.labels)
        cp_err_set(err, CP_ERR_NOMEM, "start: out of memory");
    else
        text = proto_build_start(&cmd, err);
    json_decref(cmd.selector);
    json_decref(cmd.labels);
    return text;
}

static char *build_stop(struct hub *hub, const char *session_id, const char *reason,
                        struct cp_err *err)
{
    struct proto_command cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PROTO_STOP;
    next_command_id(hub, cmd.id);
    snprintf(cmd.session_id, sizeof(cmd.session_id), "%s", session_id);
    snprintf(cmd.reason, sizeof(cmd.reason), "%s", reason);
    return proto_build_stop(&cmd, err);
}

static char *build_lease(struct hub *hub, const char *session_id, int64_t lease_until, int64_t left,
                         struct cp_err *err)
{
    struct proto_command cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PROTO_LEASE;
    next_command_id(hub, cmd.id);
    snprintf(cmd.session_id, sizeof(cmd.session_id), "%s", session_id);
    cmd.quota.lease_until = lease_until;
    cmd.quota.budget_left = left;
    return proto_build_lease(&cmd, err);
}

static void broadcast_stop(struct hub *hub, const char *project, const char *session_id,
                           const char *reason)
{
    struct cp_err err = {0};
    char *text = build_stop(hub, session_id, reason, &err);
    if (!text) {
        console_log("stop %s: %s", session_id, err.msg);
        return;
    }
    broadcast(hub, project, text);
    free(text);
}

/* ---- toggle ---- */

static int64_t lease_for(const struct hub *hub, const struct store_project *p, int64_t now)
{
    int64_t left = budget_left(p);
    return now + (left < hub->cfg.max_lease_s ? left : hub->cfg.max_lease_s);
}

static enum hub_toggle_result toggle_on(struct hub *hub, const char *project,
                                        const char *environment, int64_t now, struct cp_err *err)
{
    struct store_project p;
    struct store_env env;
    if (project_of(hub, project, &p, err)) return HUB_TOGGLE_ERROR;
    if (p.exhausted || budget_left(&p) <= 0) return HUB_TOGGLE_EXHAUSTED;
    int rc = store_env_set_profiling(hub->store, project, environment, true, NULL,
                                     lease_for(hub, &p, now), &env, err);
    if (rc == STORE_EXHAUSTED) return HUB_TOGGLE_EXHAUSTED;
    if (rc < 0 || project_of(hub, project, &p, err)) return HUB_TOGGLE_ERROR;
    char *text = build_start(hub, &env, &p, err);
    if (!text) return HUB_TOGGLE_ERROR;
    broadcast(hub, project, text);
    free(text);
    console_log("profiling on: %s/%s session %s, lease until %lld", project, environment,
                env.session_id, (long long)env.lease_until);
    return HUB_TOGGLE_OK;
}

static enum hub_toggle_result toggle_off(struct hub *hub, const char *project,
                                         const char *environment, struct cp_err *err)
{
    struct store_env before;
    int found = store_env_get(hub->store, project, environment, &before, err);
    if (found < 0 ||
        store_env_set_profiling(hub->store, project, environment, false, NULL, 0, NULL, err) < 0)
        return HUB_TOGGLE_ERROR;
    if (found && before.session_id[0]) {
        broadcast_stop(hub, project, before.session_id, "toggle off");
        console_log("profiling off: %s/%s session %s", project, environment, before.session_id);
    }
    return HUB_TOGGLE_OK;
}

enum hub_toggle_result hub_set_profiling(struct hub *hub, const char *project,
                                         const char *environment, bool enabled, int64_t now,
                                         struct cp_err *err)
{
    if (!store_valid_id(project) || !store_valid_id(environment)) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected 1 to %d characters of [A-Za-z0-9._:@-]",
                   store_valid_id(project) ? "environment" : "project", STORE_ID_MAX);
        return HUB_TOGGLE_ERROR;
    }
    if (!hub->started) hub->started = now;
    return enabled ? toggle_on(hub, project, environment, now, err)
                   : toggle_off(hub, project, environment, err);
}

/* ---- tick: quota and leases ---- */

static void stop_exhausted(struct hub *hub, const struct store_env *envs, size_t n, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        if (!envs[i].session_id[0]) continue;
        broadcast_stop(hub, envs[i].project, envs[i].session_id, "quota exhausted");
        char where[2 * STORE_ID_MAX + 2];
        snprintf(where, sizeof(where), "%s/%s", envs[i].project, envs[i].id);
        add_event(hub, NULL, now, "quota_exhausted", envs[i].session_id, where, NULL);
        console_log("quota exhausted: %s/%s session %s stopped", envs[i].project, envs[i].id,
                    envs[i].session_id);
    }
}

static int renew_one(struct hub *hub, const struct store_env *env, const struct store_project *p,
                     int64_t now, struct cp_err *err)
{
    int64_t lease = lease_for(hub, p, now);
    int rc = store_env_set_lease(hub->store, env->project, env->id, lease, err);
    if (rc <= 0) return rc;
    char *text = build_lease(hub, env->session_id, lease, budget_left(p), err);
    if (!text) return -1;
    broadcast(hub, env->project, text);
    free(text);
    return 0;
}

static int renew_leases(struct hub *hub, int64_t now, struct cp_err *err)
{
    struct store_env *envs = NULL;
    size_t n = 0;
    struct store_project p = {0};
    if (store_env_list(hub->store, NULL, true, &envs, &n, err)) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!envs[i].session_id[0]) continue;
        if (strcmp(p.id, envs[i].project) && project_of(hub, envs[i].project, &p, err)) {
            rc = -1;
            break;
        }
        rc = renew_one(hub, &envs[i], &p, now, err);
    }
    free(envs);
    hub->last_renewal = now;
    return rc;
}

int hub_tick(struct hub *hub, int64_t now, struct cp_err *err)
{
    struct store_env *stopped = NULL;
    size_t nstopped = 0;
    if (!hub->started) hub->started = now;
    if (store_quota_tick(hub->store, now, &stopped, &nstopped, err)) return -1;
    stop_exhausted(hub, stopped, nstopped, now);
    free(stopped);
    int64_t every = hub->cfg.max_lease_s / 3 > 0 ? hub->cfg.max_lease_s / 3 : 1;
    if (now - hub->last_renewal >= every) return renew_leases(hub, now, err);
    return 0;
}

/* ---- agents ---- */

struct hub_agent *hub_agent_connect(struct hub *hub, void *conn, const char *token_name,
                                    const char *token_project, int64_t now)
{
    struct hub_agent *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    a->targets = json_array();
    a->sessions = json_array();
    if (!a->targets || !a->sessions) {
        agent_release(a);
        return NULL;
    }
    if (!hub->started) hub->started = now;
    a->conn = conn;
    snprintf(a->token_name, sizeof(a->token_name), "%s", token_name ? token_name : "");
    snprintf(a->token_project, sizeof(a->token_project), "%s", token_project ? token_project : "");
    a->connected_since = a->last_seen = now;
    a->next = hub->agents;
    if (hub->agents) hub->agents->prev = a;
    hub->agents = a;
    hub->stats.agents_connected++;
    return a;
}

static void record_agent(struct hub *hub, const struct hub_agent *a, bool connected)
{
    struct cp_err err = {0};
    struct store_agent rec = {
        .agent_id = a->agent_id,
        .name = a->token_name,
        .node = a->node,
        .version = a->version,
        .targets = a->targets,
        .connected = connected,
        .connected_since = a->connected_since,
        .last_seen = a->last_seen,
    };
    if (store_agent_upsert(hub->store, &rec, &err))
        console_log("agent %s: cannot record it: %s", a->token_name, err.msg);
}

void hub_agent_disconnect(struct hub *hub, struct hub_agent *a, int64_t now)
{
    if (a->hello_seen) {
        a->last_seen = now;
        record_agent(hub, a, false);
        console_log("agent %s (%s, %s) disconnected", a->token_name, a->node, a->agent_id);
    }
    if (a->prev)
        a->prev->next = a->next;
    else
        hub->agents = a->next;
    if (a->next) a->next->prev = a->prev;
    hub->stats.agents_connected--;
    agent_release(a);
}

static void reject(struct hub *hub, struct hub_agent *a, int64_t now, const char *why)
{
    hub->stats.frames_rejected++;
    if (a->rejected++ < LOG_REJECTS_PER_AGENT) {
        console_log("agent %s (%s): frame ignored: %s", a->token_name,
                    a->node[0] ? a->node : "before hello", why);
        add_event(hub, a, now, "rejected_frame", NULL, why, NULL);
    }
}

static bool session_listed(const struct store_env *envs, size_t n, const char *session_id)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(envs[i].session_id, session_id)) return true;
    return false;
}

/* start for every active session a may see; stop for each session it holds that is not one. */
static void reconcile(struct hub *hub, struct hub_agent *a, const struct proto_hello *h)
{
    struct cp_err err = {0};
    struct store_env *envs = NULL;
    size_t n = 0, kept = 0;
    struct store_project p = {0};
    if (store_env_list(hub->store, a->token_project[0] ? a->token_project : NULL, true, &envs, &n,
                       &err)) {
        console_log("agent %s: reconcile: %s", a->token_name, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!envs[i].session_id[0]) continue;
        envs[kept++] = envs[i];
        if (strcmp(p.id, envs[i].project) && project_of(hub, envs[i].project, &p, &err)) break;
        char *text = build_start(hub, &envs[i], &p, &err);
        if (!text) break;
        send_text(hub, a, text);
        free(text);
    }
    for (size_t i = 0; !err.msg[0] && i < h->session_count; i++) {
        if (session_listed(envs, kept, h->sessions[i].session_id)) continue;
        char *text = build_stop(hub, h->sessions[i].session_id, "not active", &err);
        if (text) send_text(hub, a, text);
        free(text);
    }
    if (err.msg[0]) console_log("agent %s: reconcile: %s", a->token_name, err.msg);
    free(envs);
}

static void on_hello(struct hub *hub, struct hub_agent *a, struct proto_hello *h, int64_t now)
{
    snprintf(a->agent_id, sizeof(a->agent_id), "%s", h->agent_id);
    snprintf(a->node, sizeof(a->node), "%s", h->node);
    snprintf(a->version, sizeof(a->version), "%s", h->agent_version);
    json_decref(a->targets);
    a->targets = json_incref(h->targets);
    a->hello_seen = true;
    a->last_seen = now;
    record_agent(hub, a, true);
    console_log("agent %s (%s, %s, version %s) said hello: %zu targets, %zu sessions",
                a->token_name, a->node, a->agent_id, a->version, json_array_size(a->targets),
                h->session_count);
    reconcile(hub, a, h);
}

static void on_status(struct hub_agent *a, const struct proto_status *st, int64_t now)
{
    json_t *sessions = json_array();
    for (size_t i = 0; sessions && i < st->session_count; i++) {
        const struct proto_session_status *s = &st->sessions[i];
        json_array_append_new(sessions, json_pack("{ss ss sI sI sI}", "session_id", s->session_id,
                                                  "state", proto_session_state_name(s->state),
                                                  "lease_until", (json_int_t)s->lease_until,
                                                  "profiling_s", (json_int_t)s->profiling_s,
                                                  "targets", (json_int_t)s->targets));
    }
    if (sessions) {
        json_decref(a->sessions);
        a->sessions = sessions;
    }
    json_decref(a->targets);
    a->targets = json_incref(st->targets);
    a->last_seen = now;
}

static void on_event(struct hub *hub, struct hub_agent *a, const struct proto_event *ev,
                     int64_t now)
{
    const char *kind = proto_event_kind_name(ev->kind);
    hub->stats.events++;
    add_event(hub, a, now, kind, ev->session_id, ev->message, NULL);
    console_log("agent %s (%s): event %s%s%s%s%s", a->token_name, a->node, kind,
                ev->session_id[0] ? " session " : "", ev->session_id, ev->message[0] ? ": " : "",
                ev->message);
}

static void on_nack(struct hub *hub, struct hub_agent *a, const struct proto_nack *nack,
                    int64_t now)
{
    hub->stats.nacks++;
    add_event(hub, a, now, "nack", NULL, nack->error, nack->field);
    console_log("agent %s (%s): nack of command %s: %s: %s", a->token_name, a->node,
                nack->id[0] ? nack->id : "?", nack->field, nack->error);
}

static enum hub_verdict dispatch(struct hub *hub, struct hub_agent *a, struct proto_agent_msg *m,
                                 int64_t now)
{
    if (m->type != PROTO_HELLO && !a->hello_seen) {
        reject(hub, a, now, "a message before hello");
        return HUB_KEEP;
    }
    a->last_seen = now;
    switch (m->type) {
    case PROTO_HELLO:
        on_hello(hub, a, &m->hello, now);
        break;
    case PROTO_STATUS:
        on_status(a, &m->status, now);
        break;
    case PROTO_EVENT:
        on_event(hub, a, &m->event, now);
        break;
    case PROTO_ACK:
        hub->stats.acks++;
        break;
    case PROTO_NACK:
        on_nack(hub, a, &m->nack, now);
        break;
    default:
        reject(hub, a, now, "not a message an agent sends");
        break;
    }
    return HUB_KEEP;
}

enum hub_verdict hub_agent_frame(struct hub *hub, struct hub_agent *a, const char *text, size_t len,
                                 bool binary, int64_t now)
{
    hub->stats.frames_received++;
    if (!text || len > PROTO_FRAME_MAX) {
        reject(hub, a, now, "frame larger than 65536 bytes");
        return HUB_KEEP;
    }
    if (binary) {
        reject(hub, a, now, "binary frame");
        return HUB_KEEP;
    }
    struct proto_agent_msg m;
    struct cp_err err = {0};
    memset(&m, 0, sizeof(m));
    if (proto_parse_agent_message(text, len, &m, &err)) {
        enum proto_type type = m.type;
        proto_agent_msg_free(&m);
        if (err.code == CP_ERR_UNSUPPORTED && type == PROTO_HELLO) {
            console_log("agent %s: hello of another protocol version (%s): closing", a->token_name,
                        err.msg);
            return HUB_CLOSE_VERSION;
        }
        reject(hub, a, now, err.msg);
        return HUB_KEEP;
    }
    enum hub_verdict v = dispatch(hub, a, &m, now);
    proto_agent_msg_free(&m);
    return v;
}

/* ---- agents list ---- */

static json_t *connected_index(struct hub *hub)
{
    json_t *index = json_object();
    for (struct hub_agent *a = hub->agents; index && a; a = a->next)
        if (a->hello_seen)
            json_object_set_new(index, a->agent_id, json_integer((json_int_t)(intptr_t)a));
    return index;
}

static void overlay(json_t *rec, const struct hub_agent *a)
{
    json_object_set_new(rec, "connected", json_true());
    json_object_set_new(rec, "connected_since", json_integer(a->connected_since));
    json_object_set_new(rec, "last_seen", json_integer(a->last_seen));
    json_object_set(rec, "targets", a->targets);
    json_object_set(rec, "sessions", a->sessions);
}

json_t *hub_agents_json(struct hub *hub, int64_t now, struct cp_err *err)
{
    (void)now;
    json_t *list = store_agents_json(hub->store, err);
    json_t *index = connected_index(hub);
    if (!list || !index) {
        json_decref(list);
        json_decref(index);
        if (!err->msg[0]) cp_err_set(err, CP_ERR_NOMEM, "agents: out of memory");
        return NULL;
    }
    size_t i;
    json_t *rec;
    json_array_foreach(list, i, rec)
    {
        json_t *ref = json_object_get(index, json_string_value(json_object_get(rec, "agent_id")));
        if (ref) {
            overlay(rec, (const struct hub_agent *)(intptr_t)json_integer_value(ref));
        } else {
            json_object_set_new(rec, "connected", json_false());
            json_object_set_new(rec, "sessions", json_array());
        }
    }
    json_decref(index);
    return json_pack("{so}", "agents", list);
}
