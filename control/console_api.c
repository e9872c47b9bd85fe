/* console_api: the HTTP API of conprof-console (control/API.md) as request -> response functions.
 *
 * Design: a path is split into at most MAX_SEGMENTS segments and matched against one table of
 * routes (segment patterns, "*" = a name; the allowed methods; the token kind). The same match
 * serves api_preflight() (answerable from the request line: 401/403/404/405/413, so the server
 * never reads a body it will refuse) and api_handle() (which repeats the checks, so a unit test
 * can call it alone). Each route has one short handler; handlers only translate between HTTP and
 * the store / hub / query / ingest functions, which own the rules. Store errors of kind
 * CP_ERR_INVALID (a bad name, say) become 400, everything else 500.
 * Ingest: the upload is parsed whole (ingest.h), every profile is given its project and
 * environment (labels project_id / environment, or the token's project; a token limited to a
 * project may not name another), and the batch goes to the store in one transaction, so an
 * upload is stored completely or not at all.
 */
#include "console_api.h"

#include "console_hub.h"
#include "ingest.h"
#include "query.h"
#include "store.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEGMENTS 12
#define JSON_TYPE "application/json"

struct console_api {
    struct store *store;
    struct hub *hub;
    struct console_api_config cfg;
};

enum auth_kind { AUTH_API, AUTH_AGENT };
enum { M_GET = 1, M_PUT = 2, M_POST = 4 };

struct call;
typedef void (*route_fn)(struct console_api *api, struct call *c);

struct route {
    const char *pattern; /* segments joined by '/', "*" = any name */
    unsigned methods;
    enum auth_kind auth;
    route_fn get, put, post;
};

/* One request being handled: its segments, the token's identity and the response. */
struct call {
    const struct api_request *req;
    struct api_response *resp;
    char *segs[MAX_SEGMENTS];
    size_t nsegs;
    struct store_token_info token;
    char path_copy[2048];
};

struct console_api *console_api_new(struct store *store, struct hub *hub,
                                    const struct console_api_config *config, struct cp_err *err)
{
    struct console_api *api = calloc(1, sizeof(*api));
    if (!api) {
        cp_err_set(err, CP_ERR_NOMEM, "api: out of memory");
        return NULL;
    }
    api->store = store;
    api->hub = hub;
    api->cfg = *config;
    return api;
}

void console_api_free(struct console_api *api)
{
    free(api);
}

void api_response_free(struct api_response *resp)
{
    buf_free(&resp->body);
    memset(resp, 0, sizeof(*resp));
}

void api_error(struct api_response *resp, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{si ss}", "code", status, "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    buf_reset(&resp->body);
    if (!text || buf_append_str(&resp->body, text) || buf_append_byte(&resp->body, '\n'))
        buf_reset(&resp->body);
    free(text);
    resp->status = status;
    resp->content_type = JSON_TYPE;
    resp->disposition[0] = '\0';
}

static void fail(struct api_response *resp, const struct cp_err *err)
{
    api_error(resp, err->code == CP_ERR_INVALID ? 400 : 500, "%s",
              err->msg[0] ? err->msg : "internal error");
}

/* Sends j (stolen) as a JSON answer. */
static void reply_json(struct api_response *resp, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    buf_reset(&resp->body);
    if (!text || buf_append_str(&resp->body, text) || buf_append_byte(&resp->body, '\n')) {
        free(text);
        api_error(resp, 500, "out of memory");
        return;
    }
    free(text);
    resp->status = status;
    resp->content_type = JSON_TYPE;
}

/* ---- handlers: projects and environments ---- */

static void get_projects(struct console_api *api, struct call *c)
{
    struct cp_err err = {0};
    json_t *j = store_projects_json(api->store, &err);
    if (!j)
        fail(c->resp, &err);
    else
        reply_json(c->resp, 200, j);
}

static void reply_project(struct console_api *api, struct call *c, const char *id)
{
    struct cp_err err = {0};
    json_t *j = NULL;
    int rc = store_project_json(api->store, id, &j, &err);
    if (rc < 0)
        fail(c->resp, &err);
    else if (rc == 0)
        api_error(c->resp, 404, "no project '%s'", id);
    else
        reply_json(c->resp, 200, j);
}

static void get_project(struct console_api *api, struct call *c)
{
    reply_project(api, c, c->segs[3]);
}

/* The request body as a JSON object, or NULL after answering 400. */
static json_t *body_object(struct call *c)
{
    json_error_t jerr;
    if (!c->req->body_len) {
        api_error(c->resp, 400, "body: expected a JSON object");
        return NULL;
    }
    json_t *j =
        json_loadb((const char *)c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        api_error(c->resp, 400, "body: expected a JSON object%s%s", j ? "" : ": ",
                  j ? "" : jerr.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

static void put_project(struct console_api *api, struct call *c)
{
    const char *id = c->segs[3];
    struct cp_err err = {0};
    struct store_project cur;
    json_t *body = body_object(c);
    if (!body) return;
    json_t *plan_j = json_object_get(body, "plan");
    enum store_plan plan = STORE_PLAN_FREE;
    int found = plan_j ? 0 : store_project_get(api->store, id, &cur, &err);
    if (found > 0) plan = cur.plan;
    if (plan_j && (!json_is_string(plan_j) || store_plan_parse(json_string_value(plan_j), &plan))) {
        api_error(c->resp, 400, "plan: expected \"free\" or \"addon\"");
    } else if (found < 0 || store_project_put(api->store, id, plan, NULL, &err)) {
        fail(c->resp, &err);
    } else {
        reply_project(api, c, id);
    }
    json_decref(body);
}

static void reply_env(struct call *c, const struct store_env *env)
{
    reply_json(c->resp, 200, store_env_json(env));
}

static void get_env(struct console_api *api, struct call *c)
{
    struct cp_err err = {0};
    struct store_env env;
    int rc = store_env_get(api->store, c->segs[3], c->segs[5], &env, &err);
    if (rc < 0)
        fail(c->resp, &err);
    else if (rc == 0)
        api_error(c->resp, 404, "no environment '%s' in project '%s'", c->segs[5], c->segs[3]);
    else
        reply_env(c, &env);
}

static void put_env(struct console_api *api, struct call *c)
{
    struct cp_err err = {0};
    struct store_env env;
    json_t *body = c->req->body_len ? body_object(c) : json_object();
    if (!body) return;
    json_decref(body);
    if (store_env_put(api->store, c->segs[3], c->segs[5], &env, &err))
        fail(c->resp, &err);
    else
        reply_env(c, &env);
}

static void put_profiling(struct console_api *api, struct call *c)
{
    struct cp_err err = {0};
    const char *project = c->segs[3], *environment = c->segs[5];
    json_t *body = body_object(c);
    if (!body) return;
    json_t *enabled = json_object_get(body, "enabled");
    if (!json_is_boolean(enabled)) {
        api_error(c->resp, 400, "enabled: expected true or false");
        json_decref(body);
        return;
    }
    enum hub_toggle_result r =
        hub_set_profiling(api->hub, project, environment, json_is_true(enabled), c->req->now, &err);
    json_decref(body);
    if (r == HUB_TOGGLE_EXHAUSTED)
        api_error(c->resp, 409,
                  "quota exhausted: project '%s' has used its budget; change its plan to switch "
                  "profiling on",
                  project);
    else if (r != HUB_TOGGLE_OK)
        fail(c->resp, &err);
    else
        get_env(api, c);
}

/* ---- handlers: agents, events ---- */

static void get_agents(struct console_api *api, struct call *c)
{
    struct cp_err err = {0};
    json_t *j = hub_agents_json(api->hub, c->req->now, &err);
    if (!j)
        fail(c->resp, &err);
    else
        reply_json(c->resp, 200, j);
}

static void get_events(struct console_api *api, struct call *c)
{
    reply_json(c->resp, 200, hub_events_json(api->hub));
}

/* ---- handlers: query ---- */

enum query_kind { Q_APPS, Q_TIMELINE, Q_MERGE, Q_FILTER };

static void run_query(struct console_api *api, struct call *c, enum query_kind kind)
{
    struct cp_err err = {0};
    struct query_params p;
    const char *project = c->segs[3], *env = c->segs[5], *app = c->nsegs > 8 ? c->segs[8] : NULL;
    memset(&p, 0, sizeof(p));
    if (query_params_parse(c->req->query, c->req->now, &p, &err)) {
        query_params_free(&p);
        fail(c->resp, &err);
        return;
    }
    json_t *j = NULL;
    int rc = 0;
    if (kind == Q_APPS)
        j = query_applications(api->store, project, env, &p, &err);
    else if (kind == Q_TIMELINE)
        j = query_timeline(api->store, project, env, app, &p, api->cfg.retention_minutes, &err);
    else if (kind == Q_FILTER)
        j = query_filter(api->store, project, env, app, &p, &err);
    else
        rc = query_merge(api->store, project, env, app, &p, &c->resp->body, &c->resp->content_type,
                         c->resp->disposition, sizeof(c->resp->disposition), &err);
    query_params_free(&p);
    if (kind == Q_MERGE ? rc < 0 : !j)
        fail(c->resp, &err);
    else if (kind == Q_MERGE)
        c->resp->status = 200;
    else
        reply_json(c->resp, 200, j);
}

static void get_apps(struct console_api *api, struct call *c)
{
    run_query(api, c, Q_APPS);
}

static void get_timeline(struct console_api *api, struct call *c)
{
    run_query(api, c, Q_TIMELINE);
}

static void get_merge(struct console_api *api, struct call *c)
{
    run_query(api, c, Q_MERGE);
}

static void get_filter(struct console_api *api, struct call *c)
{
    run_query(api, c, Q_FILTER);
}

/* ---- handlers: ingest ---- */

/* Where profile i goes: 0, or -1 after answering (400 / 403). */
static int place_profile(struct call *c, const struct ingest_profile *ip, size_t i,
                         struct store_profile_in *in)
{
    const char *project = json_string_value(json_object_get(ip->labels, "project_id"));
    const char *env = json_string_value(json_object_get(ip->labels, "environment"));
    const char *mine = c->token.project;
    if (!project || !project[0]) project = mine[0] ? mine : NULL;
    if (!project) {
        api_error(c->resp, 400,
                  "profile %zu (%s): no project: give the label project_id (or use a token "
                  "created with --project)",
                  i, ip->source_name ? ip->source_name : "?");
        return -1;
    }
    if (mine[0] && strcmp(project, mine)) {
        api_error(c->resp, 403, "this token may only ingest profiles of project '%s', not '%s'",
                  mine, project);
        return -1;
    }
    if (!env || !env[0]) {
        api_error(c->resp, 400, "profile %zu (%s): no environment: give the label environment", i,
                  ip->source_name ? ip->source_name : "?");
        return -1;
    }
    *in = (struct store_profile_in){
        .project = project,
        .environment = env,
        .app = ip->app,
        .from_ns = ip->from_ns,
        .until_ns = ip->until_ns,
        .labels = ip->labels,
        .ntypes = ip->ntypes,
        .types = (const char *const *)ip->types,
        .totals = ip->totals,
        .pprof = (const uint8_t *)ip->pprof.data,
        .pprof_len = ip->pprof.len,
    };
    return 0;
}

static void store_batch(struct console_api *api, struct call *c, const struct ingest_batch *b)
{
    struct cp_err err = {0};
    struct store_profile_in *items = calloc(b->count ? b->count : 1, sizeof(*items));
    if (!items) {
        api_error(c->resp, 500, "out of memory");
        return;
    }
    size_t i = 0;
    while (i < b->count && place_profile(c, &b->items[i], i, &items[i]) == 0)
        i++;
    if (i == b->count) {
        if (store_profiles_add(api->store, items, b->count, &err))
            fail(c->resp, &err);
        else
            reply_json(c->resp, 200, json_pack("{sI}", "stored", (json_int_t)b->count));
    }
    free(items);
}

static void post_ingest(struct console_api *api, struct call *c, bool multipart)
{
    struct cp_err err = {0};
    struct ingest_batch b = {0};
    const char *ct = c->req->content_type ? c->req->content_type : "";
    int rc = multipart ? ingest_parse_multipart(ct, c->req->body, c->req->body_len, &b, &err)
                       : ingest_parse_pyroscope(c->req->query ? c->req->query : "", c->req->body,
                                                c->req->body_len, &b, &err);
    if (rc)
        fail(c->resp, &err);
    else
        store_batch(api, c, &b);
    ingest_batch_free(&b);
}

static void post_pyroscope(struct console_api *api, struct call *c)
{
    post_ingest(api, c, false);
}

static void post_multipart(struct console_api *api, struct call *c)
{
    post_ingest(api, c, true);
}

/* ---- routing ---- */

#define ENV "api/v1/projects/*/environments/*"
#define CP ENV "/continuous-profiling"

static const struct route routes[] = {
    {"api/v1/projects", M_GET, AUTH_API, get_projects, NULL, NULL},
    {"api/v1/projects/*", M_GET | M_PUT, AUTH_API, get_project, put_project, NULL},
    {ENV, M_GET | M_PUT, AUTH_API, get_env, put_env, NULL},
    {ENV "/profiling", M_GET | M_PUT, AUTH_API, get_env, put_profiling, NULL},
    {CP, M_GET, AUTH_API, get_apps, NULL, NULL},
    {CP "/app/*", M_GET, AUTH_API, get_timeline, NULL, NULL},
    {CP "/app/*/merge", M_GET, AUTH_API, get_merge, NULL, NULL},
    {CP "/app/*/filter", M_GET, AUTH_API, get_filter, NULL, NULL},
    {"api/v1/agents", M_GET, AUTH_API, get_agents, NULL, NULL},
    {"api/v1/events", M_GET, AUTH_API, get_events, NULL, NULL},
    {"ingest", M_POST, AUTH_AGENT, NULL, NULL, post_pyroscope},
    {"profiling/v1/input", M_POST, AUTH_AGENT, NULL, NULL, post_multipart},
};

/* Splits path (copied into c) into segments; false when there are too many or empty ones. */
static bool split_path(struct call *c, const char *path)
{
    if (!path || path[0] != '/' || strlen(path) >= sizeof(c->path_copy)) return false;
    snprintf(c->path_copy, sizeof(c->path_copy), "%s", path + 1);
    size_t n = strlen(c->path_copy);
    if (n && c->path_copy[n - 1] == '/')
        c->path_copy[n - 1] = '\0'; /* a trailing slash is forgiven */
    c->nsegs = 0;
    for (char *s = c->path_copy, *slash; s; s = slash ? slash + 1 : NULL) {
        slash = strchr(s, '/');
        if (slash) *slash = '\0';
        if (!*s || c->nsegs == MAX_SEGMENTS) return false;
        c->segs[c->nsegs++] = s;
    }
    return true;
}

static bool route_matches(const struct route *r, const struct call *c)
{
    const char *p = r->pattern;
    for (size_t i = 0; i < c->nsegs; i++) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (!len) return false;
        if (!(len == 1 && *p == '*') && (strlen(c->segs[i]) != len || memcmp(c->segs[i], p, len)))
            return false;
        p = slash ? slash + 1 : p + len;
        if (!slash && i + 1 < c->nsegs) return false;
    }
    return !*p;
}

static const struct route *find_route(const struct call *c)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (route_matches(&routes[i], c)) return &routes[i];
    return NULL;
}

static unsigned method_bit(const char *m)
{
    return !m                   ? 0
           : !strcmp(m, "GET")  ? M_GET
           : !strcmp(m, "PUT")  ? M_PUT
           : !strcmp(m, "POST") ? M_POST
                                : 0;
}

size_t api_body_limit(const char *path)
{
    if (!path) return 0;
    if (!strcmp(path, "/ingest") || !strcmp(path, "/profiling/v1/input"))
        return API_INGEST_BODY_MAX;
    return strncmp(path, "/api/", 5) ? 0 : API_BODY_MAX;
}

/* 0 when token is of kind want (c->token filled), else 401 / 403 answered. */
static int authenticate(struct console_api *api, struct call *c, const char *token,
                        enum auth_kind want)
{
    struct cp_err err = {0};
    if (!token || !token[0]) {
        api_error(c->resp, 401, "missing token: send Authorization: Bearer <%s token>",
                  want == AUTH_API ? "API" : "agent");
        return 401;
    }
    int rc = store_token_check(api->store, token, &c->token, &err);
    if (rc < 0) {
        fail(c->resp, &err);
        return c->resp->status;
    }
    if (rc == 0) {
        api_error(c->resp, 401, "unknown or revoked token");
        return 401;
    }
    bool is_api = c->token.kind == STORE_TOKEN_API;
    if (is_api != (want == AUTH_API)) {
        api_error(c->resp, 403, "this is an %s token; this path needs an %s token",
                  is_api ? "API" : "agent", want == AUTH_API ? "API" : "agent");
        return 403;
    }
    return 0;
}

/* The checks of the request line and token; 0 or the status answered. */
static int check_call(struct console_api *api, struct call *c, const char *method, const char *path,
                      const char *token, const struct route **route)
{
    size_t limit = api_body_limit(path);
    if (!limit || !split_path(c, path)) {
        api_error(c->resp, 404, "no such path: %s", path ? path : "");
        return 404;
    }
    enum auth_kind kind = limit == API_BODY_MAX ? AUTH_API : AUTH_AGENT;
    int rc = authenticate(api, c, token, kind);
    if (rc) return rc;
    *route = find_route(c);
    if (!*route) {
        api_error(c->resp, 404, "no such path: %s", path);
        return 404;
    }
    if (!(method_bit(method) & (*route)->methods)) {
        api_error(c->resp, 405, "method %s not allowed on %s", method ? method : "", path);
        return 405;
    }
    return 0;
}

int api_preflight(struct console_api *api, const char *method, const char *path, const char *token,
                  int64_t content_length, struct api_response *resp)
{
    struct call c;
    const struct route *route = NULL;
    memset(&c, 0, sizeof(c));
    c.resp = resp;
    int rc = check_call(api, &c, method, path, token, &route);
    if (rc) return rc;
    size_t limit = api_body_limit(path);
    if (content_length > 0 && (uint64_t)content_length > limit) {
        api_error(resp, 413, "body of %lld bytes is larger than the %zu allowed here",
                  (long long)content_length, limit);
        return 413;
    }
    return 0;
}

void api_handle(struct console_api *api, const struct api_request *req, struct api_response *resp)
{
    struct call c;
    const struct route *route = NULL;
    memset(&c, 0, sizeof(c));
    c.req = req;
    c.resp = resp;
    if (check_call(api, &c, req->method, req->path, req->token, &route)) return;
    if (req->body_len > api_body_limit(req->path)) {
        api_error(resp, 413, "body larger than the %zu bytes allowed here",
                  api_body_limit(req->path));
        return;
    }
    unsigned m = method_bit(req->method);
    route_fn fn = m == M_GET ? route->get : m == M_PUT ? route->put : route->post;
    fn(api, &c);
}

int api_check_agent_token(struct console_api *api, const char *token, char *name, size_t name_size,
                          char *project, size_t project_size)
{
    struct call c;
    struct api_response resp = {0};
    memset(&c, 0, sizeof(c));
    c.resp = &resp;
    int rc = authenticate(api, &c, token, AUTH_AGENT);
    api_response_free(&resp);
    if (rc) return rc == 403 ? 403 : 401;
    snprintf(name, name_size, "%s", c.token.name);
    snprintf(project, project_size, "%s", c.token.project);
    return 0;
}
