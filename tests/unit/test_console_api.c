/* Unit tests of console_api + console_hub: a real store in a temporary directory, a hub whose
 * "connections" are fake pointers and whose frames are recorded instead of sent, and the api
 * called as the server calls it. Covers auth (401/403), routing (404/405), size (413), projects,
 * the profiling toggle and what agents receive (start/stop/lease, project-limited tokens), the
 * quota (exhaustion stops sessions, 409, a plan change lifts it), bad agent frames, and ingest
 * (stored whole or not at all). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "aggregate.h"
#include "console_api.h"
#include "console_hub.h"
#include "profile_writers.h"
#include "store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SENT 256
#define NOW 1700000000

struct sent {
    void *conn;
    json_t *msg;
};

struct fx {
    char dir[64];
    struct store *store;
    struct hub *hub;
    struct console_api *api;
    char api_token[STORE_TOKEN_TEXT_MAX];
    char agent_token[STORE_TOKEN_TEXT_MAX];
    char agent_a_token[STORE_TOKEN_TEXT_MAX]; /* --project a */
    struct sent sent[MAX_SENT];
    size_t nsent;
    int refuse_sends;
};

static int record_send(void *conn, const char *text, size_t len, void *ctx)
{
    struct fx *f = ctx;
    if (f->refuse_sends || f->nsent == MAX_SENT) return -1;
    json_error_t jerr;
    f->sent[f->nsent].conn = conn;
    f->sent[f->nsent].msg = json_loadb(text, len, 0, &jerr);
    assert_non_null(f->sent[f->nsent].msg);
    f->nsent++;
    return 0;
}

static void clear_sent(struct fx *f)
{
    for (size_t i = 0; i < f->nsent; i++)
        json_decref(f->sent[i].msg);
    f->nsent = 0;
}

static int fx_open(struct fx *f, double free_budget, int64_t max_lease)
{
    struct cp_err err = {0};
    struct store_options so = {.free_budget_s = free_budget};
    struct hub_config hc = {.max_lease_s = max_lease,
                            .free_budget_s = (int64_t)free_budget,
                            .period = HUB_DEFAULT_PERIOD,
                            .upload_timeout = HUB_DEFAULT_UPLOAD_TIMEOUT};
    struct console_api_config ac = {.retention_minutes = 60};
    f->store = store_open_with(f->dir, &so, &err);
    assert_non_null(f->store);
    f->hub = hub_new(f->store, &hc, record_send, f, &err);
    assert_non_null(f->hub);
    f->api = console_api_new(f->store, f->hub, &ac, &err);
    assert_non_null(f->api);
    return 0;
}

static void fx_close(struct fx *f)
{
    console_api_free(f->api);
    hub_free(f->hub);
    store_close(f->store);
    clear_sent(f);
}

static int setup_budget(void **state, double free_budget)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct cp_err err = {0};
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_console_api.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    fx_open(f, free_budget, 300);
    assert_int_equal(store_token_create(f->store, "ui", STORE_TOKEN_API, NULL, f->api_token,
                                        sizeof(f->api_token), &err),
                     0);
    assert_int_equal(store_token_create(f->store, "node-1", STORE_TOKEN_AGENT, NULL, f->agent_token,
                                        sizeof(f->agent_token), &err),
                     0);
    assert_int_equal(store_token_create(f->store, "node-a", STORE_TOKEN_AGENT, "a",
                                        f->agent_a_token, sizeof(f->agent_a_token), &err),
                     0);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_budget(state, 900);
}

static int setup_small_budget(void **state)
{
    return setup_budget(state, 3);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    fx_close(f);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static struct api_response call_raw(struct fx *f, const char *method, const char *path,
                                    const char *query, const void *body, size_t body_len,
                                    const char *content_type, const char *token)
{
    struct api_response resp = {0};
    struct api_request req = {
        .method = method,
        .path = path,
        .query = query,
        .content_type = content_type,
        .body = body,
        .body_len = body_len,
        .token = token,
        .now = NOW,
    };
    api_handle(f->api, &req, &resp);
    return resp;
}

/* Calls the api and returns the status; *out (if not NULL) gets the parsed JSON answer. */
static int call(struct fx *f, const char *method, const char *path, const char *body,
                const char *token, json_t **out)
{
    struct api_response resp =
        call_raw(f, method, path, NULL, body, body ? strlen(body) : 0, "application/json", token);
    int status = resp.status;
    if (out) {
        json_error_t jerr;
        *out = json_loadb(resp.body.data, resp.body.len, 0, &jerr);
        assert_non_null(*out);
    }
    assert_string_equal(resp.content_type, "application/json");
    api_response_free(&resp);
    return status;
}

static int call_status(struct fx *f, const char *method, const char *path, const char *body,
                       const char *token)
{
    return call(f, method, path, body, token, NULL);
}

static void *conn_id(int i)
{
    return (void *)(intptr_t)(0x1000 + i);
}

static struct hub_agent *agent_hello(struct fx *f, int conn, const char *name, const char *project,
                                     const char *sessions_json)
{
    char hello[512];
    struct hub_agent *a = hub_agent_connect(f->hub, conn_id(conn), name, project, NOW);
    assert_non_null(a);
    snprintf(hello, sizeof(hello),
             "{\"type\":\"hello\",\"v\":1,\"agent_id\":\"id-%s\",\"node\":\"%s\",\"agent_version\":"
             "\"0.1.0\","
             "\"capabilities\":[\"cpu\"],\"targets\":[],\"sessions\":%s}",
             name, name, sessions_json ? sessions_json : "[]");
    assert_int_equal(hub_agent_frame(f->hub, a, hello, strlen(hello), false, NOW), HUB_KEEP);
    return a;
}

/* The index of the n-th frame of `type` sent to conn (n from 0), or -1. */
static int find_sent(struct fx *f, int conn, const char *type, int n)
{
    for (size_t i = 0; i < f->nsent; i++) {
        if (f->sent[i].conn != conn_id(conn)) continue;
        if (strcmp(json_string_value(json_object_get(f->sent[i].msg, "type")), type)) continue;
        if (n-- == 0) return (int)i;
    }
    return -1;
}

static const char *sent_str(struct fx *f, int i, const char *key)
{
    return json_string_value(json_object_get(f->sent[i].msg, key));
}

static json_t *toggle(struct fx *f, const char *project, const char *env, bool on,
                      int expect_status)
{
    char path[256];
    json_t *j = NULL;
    snprintf(path, sizeof(path), "/api/v1/projects/%s/environments/%s/profiling", project, env);
    assert_int_equal(
        call(f, "PUT", path, on ? "{\"enabled\":true}" : "{\"enabled\":false}", f->api_token, &j),
        expect_status);
    return j;
}

/* A gzipped pprof with one Python stack (real writer of `record`). */
static void make_pprof(struct buf *out)
{
    struct agg a;
    struct cp_err err = {0};
    assert_int_equal(agg_init(&a), 0);
    uint32_t frames[2] = {agg_frame_id_str(&a, "leaf", "app.py", 3),
                          agg_frame_id_str(&a, "main", "app.py", 9)};
    assert_int_equal(agg_add(&a, frames, 2, 10000000, 10000000), 0);
    struct pprof_meta meta = {.time_nanos = (int64_t)NOW * 1000000000,
                              .duration_nanos = 10000000000,
                              .period_nanos = 10000000};
    assert_int_equal(pprof_write(&a, &meta, out, &err), 0);
    agg_free(&a);
}

/* ---- auth, routing, limits ---- */

static void test_auth(void **state)
{
    struct fx *f = *state;
    struct cp_err err = {0};
    assert_int_equal(call_status(f, "GET", "/api/v1/projects", NULL, NULL), 401);
    assert_int_equal(call_status(f, "GET", "/api/v1/projects", NULL, ""), 401);
    assert_int_equal(call_status(f, "GET", "/api/v1/projects", NULL, "cpk_nottherealtoken"), 401);
    assert_int_equal(call_status(f, "GET", "/api/v1/projects", NULL, f->agent_token), 403);
    assert_int_equal(call_status(f, "GET", "/api/v1/projects", NULL, f->api_token), 200);
    assert_int_equal(call_status(f, "POST", "/ingest", "x", f->api_token), 403);
    assert_int_equal(call_status(f, "POST", "/profiling/v1/input", "x", NULL), 401);

    char name[STORE_ID_MAX + 1], project[STORE_ID_MAX + 1];
    assert_int_equal(api_check_agent_token(f->api, f->agent_a_token, name, sizeof(name), project,
                                           sizeof(project)),
                     0);
    assert_string_equal(name, "node-a");
    assert_string_equal(project, "a");
    assert_int_equal(
        api_check_agent_token(f->api, f->api_token, name, sizeof(name), project, sizeof(project)),
        403);
    assert_int_equal(
        api_check_agent_token(f->api, "", name, sizeof(name), project, sizeof(project)), 401);

    assert_int_equal(store_token_revoke(f->store, "ui", &err), 0);
    assert_int_equal(call_status(f, "GET", "/api/v1/projects", NULL, f->api_token), 401);
    assert_int_equal(store_token_revoke(f->store, "node-1", &err), 0);
    assert_int_equal(
        api_check_agent_token(f->api, f->agent_token, name, sizeof(name), project, sizeof(project)),
        401);
}

static void test_routing_and_limits(void **state)
{
    struct fx *f = *state;
    json_t *j = NULL;
    assert_int_equal(call(f, "GET", "/api/v1/nothing", NULL, f->api_token, &j), 404);
    assert_int_equal(json_integer_value(json_object_get(j, "code")), 404);
    assert_non_null(json_string_value(json_object_get(j, "message")));
    json_decref(j);
    assert_int_equal(call_status(f, "GET", "/favicon.ico", NULL, f->api_token), 404);
    assert_int_equal(call_status(f, "GET", "/api/v1/projects/a/b", NULL, f->api_token), 404);
    assert_int_equal(call_status(f, "GET", "/api/v1//projects", NULL, f->api_token), 404);
    assert_int_equal(call_status(f, "POST", "/api/v1/projects", "{}", f->api_token), 405);
    assert_int_equal(call_status(f, "DELETE", "/api/v1/projects/p", NULL, f->api_token), 405);
    assert_int_equal(call_status(f, "GET", "/ingest", NULL, f->agent_token), 405);

    /* 413: from the headers (preflight) and from the body itself */
    struct api_response resp = {0};
    assert_int_equal(
        api_preflight(f->api, "PUT", "/api/v1/projects/p", f->api_token, API_BODY_MAX + 1, &resp),
        413);
    assert_int_equal(resp.status, 413);
    api_response_free(&resp);
    assert_int_equal(api_preflight(f->api, "PUT", "/api/v1/projects/p", f->api_token, 100, &resp),
                     0);
    assert_int_equal(
        api_preflight(f->api, "POST", "/ingest", f->agent_token, API_INGEST_BODY_MAX + 1, &resp),
        413);
    api_response_free(&resp);
    assert_int_equal(api_preflight(f->api, "POST", "/ingest", NULL, 10, &resp), 401);
    api_response_free(&resp);
    assert_int_equal(api_preflight(f->api, "GET", "/nowhere", NULL, -1, &resp), 404);
    api_response_free(&resp);
    assert_int_equal(api_body_limit("/ingest"), API_INGEST_BODY_MAX);
    assert_int_equal(api_body_limit("/api/v1/projects"), API_BODY_MAX);

    size_t big_len = API_BODY_MAX + 1;
    char *big = malloc(big_len);
    memset(big, ' ', big_len);
    resp = call_raw(f, "PUT", "/api/v1/projects/p", NULL, big, big_len, "application/json",
                    f->api_token);
    assert_int_equal(resp.status, 413);
    api_response_free(&resp);
    free(big);
    /* nothing was created by the refused request */
    assert_int_equal(call_status(f, "GET", "/api/v1/projects/p", NULL, f->api_token), 404);
}

/* ---- projects ---- */

static void test_projects(void **state)
{
    struct fx *f = *state;
    json_t *j = NULL;
    assert_int_equal(
        call(f, "PUT", "/api/v1/projects/shop", "{\"plan\":\"addon\"}", f->api_token, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "shop");
    assert_string_equal(json_string_value(json_object_get(j, "plan")), "addon");
    assert_int_equal((int64_t)json_number_value(json_object_get(j, "budget_s")), 2592000);
    assert_true(json_is_false(json_object_get(j, "exhausted")));
    json_decref(j);

    assert_int_equal(
        call_status(f, "PUT", "/api/v1/projects/shop", "{\"plan\":\"gold\"}", f->api_token), 400);
    assert_int_equal(call_status(f, "PUT", "/api/v1/projects/shop", "{\"plan\":3}", f->api_token),
                     400);
    assert_int_equal(call_status(f, "PUT", "/api/v1/projects/shop", "{plan", f->api_token), 400);
    assert_int_equal(call_status(f, "PUT", "/api/v1/projects/shop", "[]", f->api_token), 400);
    assert_int_equal(call_status(f, "PUT", "/api/v1/projects/bad%20name", "{}", f->api_token), 400);
    /* no plan: the project keeps its plan */
    assert_int_equal(call(f, "PUT", "/api/v1/projects/shop", "{}", f->api_token, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "plan")), "addon");
    json_decref(j);

    assert_int_equal(call_status(f, "GET", "/api/v1/projects/nope", NULL, f->api_token), 404);
    assert_int_equal(
        call_status(f, "PUT", "/api/v1/projects/shop/environments/prod", "{}", f->api_token), 200);
    assert_int_equal(
        call(f, "GET", "/api/v1/projects/shop/environments/prod", NULL, f->api_token, &j), 200);
    assert_true(json_is_false(json_object_get(j, "profiling")));
    assert_true(json_is_null(json_object_get(j, "session_id")));
    json_decref(j);
    assert_int_equal(
        call_status(f, "GET", "/api/v1/projects/shop/environments/none", NULL, f->api_token), 404);

    assert_int_equal(call(f, "GET", "/api/v1/projects", NULL, f->api_token, &j), 200);
    json_t *list = json_object_get(j, "projects");
    assert_int_equal(json_array_size(list), 1);
    assert_int_equal(json_array_size(json_object_get(json_array_get(list, 0), "environments")), 1);
    json_decref(j);
}

/* ---- toggle and agents ---- */

static void test_toggle_start_stop(void **state)
{
    struct fx *f = *state;
    agent_hello(f, 1, "node-1", "", NULL);
    assert_int_equal(f->nsent, 0); /* nothing is on yet */

    json_t *env = toggle(f, "shop", "prod", true, 200);
    assert_true(json_is_true(json_object_get(env, "profiling")));
    const char *sid = json_string_value(json_object_get(env, "session_id"));
    assert_non_null(sid);
    int64_t lease = json_integer_value(json_object_get(env, "lease_until"));
    assert_int_equal(lease, NOW + 300);

    int i = find_sent(f, 1, "start", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "session_id"), sid);
    assert_string_equal(sent_str(f, i, "project"), "shop");
    assert_string_equal(sent_str(f, i, "environment"), "prod");
    json_t *start = f->sent[i].msg;
    assert_int_equal(json_integer_value(json_object_get(start, "period")), 45);
    assert_int_equal(json_integer_value(json_object_get(start, "upload_timeout")), 10);
    json_t *sel = json_object_get(start, "selector");
    assert_string_equal(json_string_value(json_object_get(sel, "project")), "shop");
    assert_string_equal(json_string_value(json_object_get(sel, "environment")), "prod");
    json_t *quota = json_object_get(start, "quota");
    assert_string_equal(json_string_value(json_object_get(quota, "plan")), "free");
    assert_int_equal(json_integer_value(json_object_get(quota, "lease_until")), lease);
    assert_int_equal(json_integer_value(json_object_get(quota, "budget_left")), 900);

    /* switching on again keeps the session */
    json_t *again = toggle(f, "shop", "prod", true, 200);
    assert_string_equal(json_string_value(json_object_get(again, "session_id")), sid);
    json_decref(again);

    /* a second agent says hello: it gets the running session */
    agent_hello(f, 2, "node-2", "", NULL);
    i = find_sent(f, 2, "start", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "session_id"), sid);

    json_t *off = toggle(f, "shop", "prod", false, 200);
    assert_true(json_is_false(json_object_get(off, "profiling")));
    assert_true(json_is_null(json_object_get(off, "session_id")));
    json_decref(off);
    for (int conn = 1; conn <= 2; conn++) {
        i = find_sent(f, conn, "stop", 0);
        assert_true(i >= 0);
        assert_string_equal(sent_str(f, i, "session_id"), sid);
        assert_string_equal(sent_str(f, i, "reason"), "toggle off");
    }
    json_decref(env);

    assert_int_equal(call_status(f, "PUT", "/api/v1/projects/shop/environments/prod/profiling",
                                 "{\"enabled\":1}", f->api_token),
                     400);
    assert_int_equal(call_status(f, "PUT", "/api/v1/projects/shop/environments/prod/profiling",
                                 "{}", f->api_token),
                     400);
}

static void test_hello_reconciles(void **state)
{
    struct fx *f = *state;
    json_t *env = toggle(f, "shop", "prod", true, 200);
    const char *sid = json_string_value(json_object_get(env, "session_id"));
    char sessions[256];
    snprintf(sessions, sizeof(sessions),
             "[{\"session_id\":\"%s\",\"lease_until\":%d},"
             "{\"session_id\":\"old-session\",\"lease_until\":%d}]",
             sid, NOW + 10, NOW + 10);
    agent_hello(f, 1, "node-1", "", sessions);
    int i = find_sent(f, 1, "start", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "session_id"), sid);
    assert_int_equal(find_sent(f, 1, "start", 1), -1);
    i = find_sent(f, 1, "stop", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "session_id"), "old-session");
    assert_int_equal(find_sent(f, 1, "stop", 1), -1);
    json_decref(env);

    /* the agent list shows it connected, then disconnected */
    json_t *j = NULL;
    assert_int_equal(call(f, "GET", "/api/v1/agents", NULL, f->api_token, &j), 200);
    json_t *agents = json_object_get(j, "agents");
    assert_int_equal(json_array_size(agents), 1);
    json_t *a = json_array_get(agents, 0);
    assert_string_equal(json_string_value(json_object_get(a, "name")), "node-1");
    assert_string_equal(json_string_value(json_object_get(a, "agent_id")), "id-node-1");
    assert_true(json_is_true(json_object_get(a, "connected")));
    json_decref(j);
}

static void test_project_tokens_apart(void **state)
{
    struct fx *f = *state;
    agent_hello(f, 1, "node-a", "a", NULL);
    agent_hello(f, 2, "node-1", "", NULL);
    json_t *eb = toggle(f, "b", "prod", true, 200);
    json_t *ea = toggle(f, "a", "prod", true, 200);
    /* the token of project a sees only a's session; the unrestricted one sees both */
    int i = find_sent(f, 1, "start", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "project"), "a");
    assert_int_equal(find_sent(f, 1, "start", 1), -1);
    assert_true(find_sent(f, 2, "start", 1) >= 0);
    json_decref(toggle(f, "b", "prod", false, 200));
    assert_int_equal(find_sent(f, 1, "stop", 0), -1);
    assert_true(find_sent(f, 2, "stop", 0) >= 0);
    /* a reconnect of the project-a agent reconciles with a's sessions only */
    clear_sent(f);
    json_decref(toggle(f, "b", "prod", true, 200));
    clear_sent(f);
    agent_hello(f, 3, "node-a", "a", NULL);
    i = find_sent(f, 3, "start", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "project"), "a");
    assert_int_equal(find_sent(f, 3, "start", 1), -1);
    json_decref(ea);
    json_decref(eb);
}

static void test_bad_frames_change_nothing(void **state)
{
    struct fx *f = *state;
    struct hub_agent *a = agent_hello(f, 1, "node-1", "", NULL);
    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "42",
        "{\"type\":\"hello\",\"v\":1}",
        "{\"type\":\"nope\",\"v\":1}",
        "{\"type\":\"start\",\"v\":1,\"id\":\"x\",\"session_id\":\"s\"}",
        "{\"type\":\"status\",\"v\":1,\"samples\":\"many\"}",
        "{\"type\":\"ack\",\"v\":1,\"id\":\"bad id with spaces\"}",
    };
    struct hub_stats before, after;
    hub_stats(f->hub, &before);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(hub_agent_frame(f->hub, a, bad[i], strlen(bad[i]), false, NOW), HUB_KEEP);
    assert_int_equal(hub_agent_frame(f->hub, a, "{}", 2, true, NOW), HUB_KEEP);
    assert_int_equal(hub_agent_frame(f->hub, a, NULL, 70000, false, NOW), HUB_KEEP);
    hub_stats(f->hub, &after);
    assert_int_equal(after.frames_rejected - before.frames_rejected,
                     sizeof(bad) / sizeof(bad[0]) + 2);
    assert_int_equal(f->nsent, 0);

    /* a hello of another protocol version closes the connection */
    const char *v2 =
        "{\"type\":\"hello\",\"v\":2,\"agent_id\":\"x\",\"node\":\"n\",\"agent_version\":\"9\"}";
    assert_int_equal(hub_agent_frame(f->hub, a, v2, strlen(v2), false, NOW), HUB_CLOSE_VERSION);

    /* events and nacks are kept */
    const char *ev = "{\"type\":\"event\",\"v\":1,\"kind\":\"error\",\"message\":\"disk full\"}";
    const char *nack =
        "{\"type\":\"nack\",\"v\":1,\"id\":\"c1\",\"field\":\"period\",\"error\":\"too big\"}";
    assert_int_equal(hub_agent_frame(f->hub, a, ev, strlen(ev), false, NOW), HUB_KEEP);
    assert_int_equal(hub_agent_frame(f->hub, a, nack, strlen(nack), false, NOW), HUB_KEEP);
    json_t *j = NULL;
    assert_int_equal(call(f, "GET", "/api/v1/events", NULL, f->api_token, &j), 200);
    json_t *events = json_object_get(j, "events");
    assert_string_equal(json_string_value(json_object_get(json_array_get(events, 0), "kind")),
                        "nack");
    assert_string_equal(json_string_value(json_object_get(json_array_get(events, 0), "field")),
                        "period");
    assert_string_equal(json_string_value(json_object_get(json_array_get(events, 1), "message")),
                        "disk full");
    json_decref(j);

    /* a status updates the targets shown in the agent list */
    const char *status =
        "{\"type\":\"status\",\"v\":1,\"targets\":[{\"pid\":42,\"application\":\"web\"}],"
        "\"sessions\":[{\"session_id\":\"s1\",\"state\":\"running\",\"lease_until\":5,"
        "\"profiling_s\":3,\"targets\":1}]}";
    assert_int_equal(hub_agent_frame(f->hub, a, status, strlen(status), false, NOW + 5), HUB_KEEP);
    assert_int_equal(call(f, "GET", "/api/v1/agents", NULL, f->api_token, &j), 200);
    json_t *ag = json_array_get(json_object_get(j, "agents"), 0);
    assert_int_equal(json_integer_value(
                         json_object_get(json_array_get(json_object_get(ag, "targets"), 0), "pid")),
                     42);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(ag, "sessions"), 0), "state")),
                        "running");
    assert_int_equal(json_integer_value(json_object_get(ag, "last_seen")), NOW + 5);
    json_decref(j);

    /* disconnect: listed as not connected, with its last targets */
    hub_agent_disconnect(f->hub, a, NOW + 6);
    assert_int_equal(call(f, "GET", "/api/v1/agents", NULL, f->api_token, &j), 200);
    ag = json_array_get(json_object_get(j, "agents"), 0);
    assert_true(json_is_false(json_object_get(ag, "connected")));
    assert_int_equal(json_array_size(json_object_get(ag, "targets")), 1);
    json_decref(j);
}

/* ---- quota ---- */

static void test_quota_exhausted(void **state)
{
    struct fx *f = *state; /* free budget 3 s */
    struct cp_err err = {0};
    agent_hello(f, 1, "node-1", "", NULL);
    assert_int_equal(hub_tick(f->hub, NOW, &err), 0);
    json_t *env = toggle(f, "shop", "prod", true, 200);
    assert_int_equal(json_integer_value(json_object_get(env, "lease_until")),
                     NOW + 3); /* capped by the budget */
    const char *sid = json_string_value(json_object_get(env, "session_id"));
    for (int t = 1; t <= 5; t++)
        assert_int_equal(hub_tick(f->hub, NOW + t, &err), 0);
    int i = find_sent(f, 1, "stop", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "session_id"), sid);
    assert_string_equal(sent_str(f, i, "reason"), "quota exhausted");
    json_decref(env);

    json_t *j = NULL;
    assert_int_equal(call(f, "GET", "/api/v1/projects/shop", NULL, f->api_token, &j), 200);
    assert_true(json_is_true(json_object_get(j, "exhausted")));
    assert_true(json_is_false(
        json_object_get(json_array_get(json_object_get(j, "environments"), 0), "profiling")));
    json_decref(j);

    json_t *refused = toggle(f, "shop", "prod", true, 409);
    assert_int_equal(json_integer_value(json_object_get(refused, "code")), 409);
    json_decref(refused);
    assert_int_equal(
        call_status(f, "PUT", "/api/v1/projects/shop", "{\"plan\":\"addon\"}", f->api_token), 200);
    env = toggle(f, "shop", "prod", true, 200);
    assert_int_equal(json_integer_value(json_object_get(env, "lease_until")), NOW + 300);
    json_decref(env);
}

static void test_lease_renewal(void **state)
{
    struct fx *f = *state;
    struct cp_err err = {0};
    agent_hello(f, 1, "node-1", "", NULL);
    assert_int_equal(hub_tick(f->hub, NOW, &err), 0); /* first tick renews (nothing on yet) */
    json_t *env = toggle(f, "shop", "prod", true, 200);
    const char *sid = json_string_value(json_object_get(env, "session_id"));
    assert_int_equal(hub_tick(f->hub, NOW + 50, &err), 0);
    assert_int_equal(find_sent(f, 1, "lease", 0), -1); /* max_lease 300: renew every 100 s */
    assert_int_equal(hub_tick(f->hub, NOW + 100, &err), 0);
    int i = find_sent(f, 1, "lease", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "session_id"), sid);
    assert_int_equal(json_integer_value(json_object_get(f->sent[i].msg, "lease_until")), NOW + 400);
    json_t *j = NULL;
    assert_int_equal(
        call(f, "GET", "/api/v1/projects/shop/environments/prod", NULL, f->api_token, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "lease_until")), NOW + 400);
    json_decref(j);
    json_decref(env);
}

static void test_state_survives_restart(void **state)
{
    struct fx *f = *state;
    json_t *env = toggle(f, "shop", "prod", true, 200);
    char sid[80];
    snprintf(sid, sizeof(sid), "%s", json_string_value(json_object_get(env, "session_id")));
    json_decref(env);
    fx_close(f);
    fx_open(f, 900, 300);
    agent_hello(f, 1, "node-1", "", NULL);
    int i = find_sent(f, 1, "start", 0);
    assert_true(i >= 0);
    assert_string_equal(sent_str(f, i, "session_id"), sid);
}

/* ---- ingest ---- */

static int64_t profile_count(struct fx *f)
{
    struct cp_err err = {0};
    return store_profile_count(f->store, &err);
}

static void test_ingest_pyroscope(void **state)
{
    struct fx *f = *state;
    struct buf pprof = {0};
    make_pprof(&pprof);
    const char *q =
        "name=web%7Bproject_id%3Dshop%2Cenvironment%3Dprod%7D&from=1700000000&until=1700000010"
        "&format=pprof&spyName=conprof";
    struct api_response resp =
        call_raw(f, "POST", "/ingest", q, pprof.data, pprof.len, NULL, f->agent_token);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.body.data, "\"stored\":1"));
    api_response_free(&resp);
    assert_int_equal(profile_count(f), 1);

    /* the query api sees it */
    resp = call_raw(f, "GET", "/api/v1/projects/shop/environments/prod/continuous-profiling",
                    "from=1699999000&to=1700001000", NULL, 0, NULL, f->api_token);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.body.data, "\"web\""));
    api_response_free(&resp);

    /* garbage: 400 and nothing stored */
    resp = call_raw(f, "POST", "/ingest", q, "garbage!", 8, NULL, f->agent_token);
    assert_int_equal(resp.status, 400);
    api_response_free(&resp);
    /* no project */
    resp = call_raw(f, "POST", "/ingest", "name=web%7Benvironment%3Dprod%7D&from=1&until=2",
                    pprof.data, pprof.len, NULL, f->agent_token);
    assert_int_equal(resp.status, 400);
    api_response_free(&resp);
    /* a token of project a may not write into shop, but its own project is the default */
    resp = call_raw(f, "POST", "/ingest", q, pprof.data, pprof.len, NULL, f->agent_a_token);
    assert_int_equal(resp.status, 403);
    api_response_free(&resp);
    resp = call_raw(f, "POST", "/ingest",
                    "name=web%7Benvironment%3Dprod%7D&from=1700000000&until=1700000010", pprof.data,
                    pprof.len, NULL, f->agent_a_token);
    assert_int_equal(resp.status, 200);
    api_response_free(&resp);
    assert_int_equal(profile_count(f), 2);
    buf_free(&pprof);
}

static void add_part(struct buf *b, const char *name, const char *filename, const void *data,
                     size_t len)
{
    buf_printf(b, "--BOUNDARY\r\nContent-Disposition: form-data; name=\"%s\"", name);
    if (filename) buf_printf(b, "; filename=\"%s\"", filename);
    buf_append_str(b, "\r\n\r\n");
    buf_append(b, data, len);
    buf_append_str(b, "\r\n");
}

static void test_ingest_multipart_all_or_nothing(void **state)
{
    struct fx *f = *state;
    struct buf pprof = {0}, body = {0};
    make_pprof(&pprof);
    const char *event =
        "{\"attachments\":[\"cpu.pprof\",\"wall.pprof\"],\"tags_profiler\":"
        "\"service:web,project_id:shop,environment:prod\",\"start\":\"2023-11-14T22:13:20Z\","
        "\"end\":\"2023-11-14T22:14:05Z\",\"family\":\"python\",\"version\":\"4\"}";
    add_part(&body, "event", "event.json", event, strlen(event));
    add_part(&body, "cpu.pprof", "cpu.pprof", pprof.data, pprof.len);
    add_part(&body, "wall.pprof", "wall.pprof", "\x1f\x8b garbage", 10);
    buf_append_str(&body, "--BOUNDARY--\r\n");
    const char *ct = "multipart/form-data; boundary=BOUNDARY";
    struct api_response resp =
        call_raw(f, "POST", "/profiling/v1/input", NULL, body.data, body.len, ct, f->agent_token);
    assert_int_equal(resp.status, 400);
    api_response_free(&resp);
    assert_int_equal(profile_count(f), 0);

    /* the same upload with two good attachments stores both */
    buf_reset(&body);
    add_part(&body, "event", "event.json", event, strlen(event));
    add_part(&body, "cpu.pprof", "cpu.pprof", pprof.data, pprof.len);
    add_part(&body, "wall.pprof", "wall.pprof", pprof.data, pprof.len);
    buf_append_str(&body, "--BOUNDARY--\r\n");
    resp =
        call_raw(f, "POST", "/profiling/v1/input", NULL, body.data, body.len, ct, f->agent_token);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.body.data, "\"stored\":2"));
    api_response_free(&resp);
    assert_int_equal(profile_count(f), 2);

    /* a batch whose second profile names another project is refused whole (token of project a) */
    resp =
        call_raw(f, "POST", "/profiling/v1/input", NULL, body.data, body.len, ct, f->agent_a_token);
    assert_int_equal(resp.status, 403);
    api_response_free(&resp);
    assert_int_equal(profile_count(f), 2);
    buf_free(&body);
    buf_free(&pprof);
}

static void test_query_merge(void **state)
{
    struct fx *f = *state;
    struct buf pprof = {0};
    make_pprof(&pprof);
    const char *q =
        "name=web%7Bproject_id%3Dshop%2Cenvironment%3Dprod%7D&from=1700000000&until=1700000010";
    struct api_response resp =
        call_raw(f, "POST", "/ingest", q, pprof.data, pprof.len, NULL, f->agent_token);
    assert_int_equal(resp.status, 200);
    api_response_free(&resp);
    const char *base = "/api/v1/projects/shop/environments/prod/continuous-profiling/app/web";
    char path[256];
    snprintf(path, sizeof(path), "%s/merge", base);
    const char *range = "from=1699999000&to=1700001000&profile_type=cpu&out=collapsed";
    resp = call_raw(f, "GET", path, range, NULL, 0, NULL, f->api_token);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.body.data, "leaf"));
    assert_string_not_equal(resp.content_type, "application/json");
    api_response_free(&resp);
    resp = call_raw(f, "GET", path, "from=1699999000&to=1700001000&out=pprof", NULL, 0, NULL,
                    f->api_token);
    assert_int_equal(resp.status, 200);
    assert_true(resp.body.len > 2 && (uint8_t)resp.body.data[0] == 0x1f &&
                (uint8_t)resp.body.data[1] == 0x8b);
    assert_non_null(strstr(resp.disposition, "attachment"));
    api_response_free(&resp);
    resp = call_raw(f, "GET", path, "from=x", NULL, 0, NULL, f->api_token);
    assert_int_equal(resp.status, 400);
    api_response_free(&resp);
    resp = call_raw(f, "GET", base, "from=1699999000&to=1700001000", NULL, 0, NULL, f->api_token);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.body.data, "\"points\""));
    api_response_free(&resp);
    buf_free(&pprof);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routing_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_projects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_toggle_start_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hello_reconciles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_project_tokens_apart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_frames_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota_exhausted, setup_small_budget, teardown),
        cmocka_unit_test_setup_teardown(test_lease_renewal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_survives_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_pyroscope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_multipart_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_merge, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
