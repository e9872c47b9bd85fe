/* test_store: the console's SQLite store on a real database in a temporary directory, reopened
 * to check that what was written persists. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    struct store *st;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_store_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    struct cp_err err = {0};
    struct store_options opt = {.free_budget_s = 10};
    f->st = store_open_with(f->dir, &opt, &err);
    if (!f->st) {
        fprintf(stderr, "store_open: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    struct cp_err err = {0};
    store_close(f->st);
    struct store_options opt = {.free_budget_s = 10};
    f->st = store_open_with(f->dir, &opt, &err);
    assert_non_null(f->st);
}

/* Runs SQL on the database file directly and returns the first column of the first row. */
static char *sql_text(const char *dir, const char *sql)
{
    char path[128];
    snprintf(path, sizeof path, "%s/console.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    char *out = NULL;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && sqlite3_column_text(s, 0))
        out = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

/* ---- open ---- */

static void test_open_creates_wal_schema(void **state)
{
    struct fixture *f = *state;
    char *mode = sql_text(f->dir, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    char *version = sql_text(f->dir, "PRAGMA user_version");
    assert_string_equal(version, "1");
    free(version);
}

static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    free(sql_text(f->dir, "PRAGMA user_version = 99"));
    store_close(f->st);
    struct cp_err err = {0};
    f->st = store_open(f->dir, &err);
    assert_null(f->st);
    assert_int_equal(err.code, CP_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "99"));
    free(sql_text(f->dir, "PRAGMA user_version = 1"));
    reopen(f);
}

static void test_open_bad_dir(void **state)
{
    (void)state;
    struct cp_err err = {0};
    assert_null(store_open("/proc/no/such/dir", &err));
    assert_int_equal(err.code, CP_ERR_IO);
}

/* ---- tokens ---- */

static bool is_b64url(const char *s)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
           strlen(s);
}

static void test_tokens_create_check_persist(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    char agent[STORE_TOKEN_TEXT_MAX], api[STORE_TOKEN_TEXT_MAX];
    assert_int_equal(
        store_token_create(f->st, "node-1", STORE_TOKEN_AGENT, "p1", agent, sizeof agent, &err), 0);
    assert_int_equal(
        store_token_create(f->st, "console", STORE_TOKEN_API, NULL, api, sizeof api, &err), 0);
    assert_int_equal(strlen(agent), 47);
    assert_true(!strncmp(agent, "cpa_", 4) && is_b64url(agent + 4));
    assert_true(!strncmp(api, "cpk_", 4) && is_b64url(api + 4));
    assert_string_not_equal(agent + 4, api + 4);

    reopen(f);
    struct store_token_info info;
    assert_int_equal(store_token_check(f->st, agent, &info, &err), 1);
    assert_int_equal(info.kind, STORE_TOKEN_AGENT);
    assert_string_equal(info.name, "node-1");
    assert_string_equal(info.project, "p1");
    assert_int_equal(store_token_check(f->st, api, &info, &err), 1);
    assert_int_equal(info.kind, STORE_TOKEN_API);
    assert_string_equal(info.project, "");

    /* only the hash is stored */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM tokens WHERE hash = '%s' OR name = '%s'", agent,
             agent);
    char *n = sql_text(f->dir, sql);
    assert_string_equal(n, "0");
    free(n);
    char *hash = sql_text(f->dir, "SELECT hash FROM tokens WHERE name = 'node-1'");
    assert_int_equal(strlen(hash), 64);
    free(hash);

    /* wrong, malformed, prefix swapped */
    char wrong[STORE_TOKEN_TEXT_MAX];
    snprintf(wrong, sizeof wrong, "%s", agent);
    wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
    assert_int_equal(store_token_check(f->st, wrong, &info, &err), 0);
    assert_int_equal(store_token_check(f->st, "cpa_short", &info, &err), 0);
    assert_int_equal(store_token_check(f->st, "", &info, &err), 0);
    assert_int_equal(store_token_check(f->st, NULL, &info, &err), 0);
    memcpy(wrong, agent, sizeof wrong);
    memcpy(wrong, "cpk_", 4);
    assert_int_equal(store_token_check(f->st, wrong, &info, &err), 0);
}

static void test_tokens_names_list_revoke(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    char t1[STORE_TOKEN_TEXT_MAX], t2[STORE_TOKEN_TEXT_MAX], t3[STORE_TOKEN_TEXT_MAX];
    assert_int_equal(store_token_create(f->st, "n", STORE_TOKEN_AGENT, NULL, t1, sizeof t1, &err),
                     0);
    assert_int_equal(store_token_create(f->st, "n", STORE_TOKEN_AGENT, NULL, t2, sizeof t2, &err),
                     -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "exists"));
    assert_int_equal(store_token_create(f->st, "n", STORE_TOKEN_API, NULL, t2, sizeof t2, &err), 0);
    assert_int_equal(
        store_token_create(f->st, "bad name", STORE_TOKEN_API, NULL, t3, sizeof t3, &err), -1);
    assert_non_null(strstr(err.msg, "name:"));
    assert_int_equal(store_token_create(f->st, "k", STORE_TOKEN_API, "p1", t3, sizeof t3, &err),
                     -1);
    assert_int_equal(store_token_create(f->st, "m", STORE_TOKEN_AGENT, NULL, t3, sizeof t3, &err),
                     0);

    struct store_token_info *list;
    size_t count;
    assert_int_equal(store_token_list(f->st, &list, &count, &err), 0);
    assert_int_equal(count, 3);
    free(list);

    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    assert_int_equal(store_token_print(f->st, mem, &err), 0);
    fclose(mem);
    assert_non_null(strstr(text, "agent n - "));
    assert_non_null(strstr(text, "api n - "));
    free(text);

    assert_int_equal(store_token_revoke(f->st, "n", &err), 0);
    struct store_token_info info;
    assert_int_equal(store_token_check(f->st, t1, &info, &err), 0);
    assert_int_equal(store_token_check(f->st, t2, &info, &err), 0);
    assert_int_equal(store_token_check(f->st, t3, &info, &err), 1);
    assert_int_equal(store_token_revoke(f->st, "n", &err), -1);
    assert_non_null(strstr(err.msg, "no token named 'n'"));
}

/* ---- projects, environments ---- */

static void test_projects_plans_budget(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    struct store_project p;
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 0);
    assert_int_equal(store_project_put(f->st, "p1", STORE_PLAN_FREE, &p, &err), 0);
    assert_string_equal(p.id, "p1");
    assert_true(p.budget_s == 10); /* the free budget given to store_open_with */
    assert_int_equal(store_project_put(f->st, "p2", STORE_PLAN_ADDON, &p, &err), 0);
    assert_true(p.budget_s == STORE_ADDON_BUDGET_S);
    assert_int_equal(store_project_put(f->st, "bad/id", STORE_PLAN_FREE, &p, &err), -1);
    assert_non_null(strstr(err.msg, "project:"));
    reopen(f);
    struct store_project *list;
    size_t n;
    assert_int_equal(store_project_list(f->st, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "p1");
    assert_int_equal(list[1].plan, STORE_PLAN_ADDON);
    free(list);
    store_set_free_budget(f->st, 0);
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 1);
    assert_true(p.budget_s == STORE_FREE_BUDGET_S);
    enum store_plan plan;
    assert_int_equal(store_plan_parse("addon", &plan), 0);
    assert_int_equal(plan, STORE_PLAN_ADDON);
    assert_int_equal(store_plan_parse("gold", &plan), -1);
}

static void test_env_profiling_sessions(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    struct store_env e;
    /* switching on creates the project (free) and the environment */
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, NULL, 1000, &e, &err), 0);
    assert_true(e.profiling);
    assert_int_equal(strlen(e.session_id), 32);
    assert_int_equal(e.lease_until, 1000);
    char session[STORE_SESSION_MAX + 1];
    snprintf(session, sizeof session, "%s", e.session_id);
    struct store_project p;
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 1);
    assert_int_equal(p.plan, STORE_PLAN_FREE);
    /* on again keeps the session */
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, NULL, 1100, &e, &err), 0);
    assert_string_equal(e.session_id, session);
    assert_int_equal(store_env_set_lease(f->st, "p1", "main", 1200, &err), 1);
    reopen(f);
    assert_int_equal(store_env_get(f->st, "p1", "main", &e, &err), 1);
    assert_string_equal(e.session_id, session);
    assert_int_equal(e.lease_until, 1200);
    assert_int_equal(store_env_put(f->st, "p1", "staging", NULL, &err), 0);
    struct store_env *list;
    size_t n;
    assert_int_equal(store_env_list(f->st, "p1", false, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    free(list);
    assert_int_equal(store_env_list(f->st, NULL, true, &list, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, "main");
    free(list);
    /* off clears session and lease; lease renewal then changes nothing */
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", false, NULL, 0, &e, &err), 0);
    assert_false(e.profiling);
    assert_string_equal(e.session_id, "");
    assert_int_equal(store_env_set_lease(f->st, "p1", "main", 1300, &err), 0);
    assert_int_equal(store_env_get(f->st, "p1", "main", &e, &err), 1);
    assert_int_equal(e.lease_until, 0);
    /* caller-chosen session id */
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, "s-42", 5, &e, &err), 0);
    assert_string_equal(e.session_id, "s-42");
    assert_int_equal(store_env_get(f->st, "p1", "nope", &e, &err), 0);
    assert_int_equal(store_env_get(f->st, "p1", "", &e, &err), -1);
    assert_non_null(strstr(err.msg, "environment:"));
}

static void test_project_json(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, "s1", 77, NULL, &err), 0);
    json_t *j = NULL;
    assert_int_equal(store_project_json(f->st, "p1", &j, &err), 1);
    assert_string_equal(json_string_value(json_object_get(j, "plan")), "free");
    assert_true(json_real_value(json_object_get(j, "budget_s")) == 10);
    assert_true(json_real_value(json_object_get(j, "left_s")) == 10);
    assert_true(json_is_false(json_object_get(j, "exhausted")));
    json_t *env = json_array_get(json_object_get(j, "environments"), 0);
    assert_string_equal(json_string_value(json_object_get(env, "id")), "main");
    assert_true(json_is_true(json_object_get(env, "profiling")));
    assert_string_equal(json_string_value(json_object_get(env, "session_id")), "s1");
    assert_int_equal(json_integer_value(json_object_get(env, "lease_until")), 77);
    json_decref(j);
    assert_int_equal(store_project_json(f->st, "p9", &j, &err), 0);
    json_t *all = store_projects_json(f->st, &err);
    assert_int_equal(json_array_size(json_object_get(all, "projects")), 1);
    json_decref(all);
}

/* ---- quota ---- */

static void test_quota_tick_exhausts(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    struct store_env *stopped;
    size_t n;
    int64_t t = 1000000;
    struct store_env e;
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, NULL, t + 300, &e, &err),
                     0);
    char session[STORE_SESSION_MAX + 1];
    snprintf(session, sizeof session, "%s", e.session_id);
    assert_int_equal(store_env_set_profiling(f->st, "p1", "other", true, NULL, t + 300, NULL, &err),
                     0);
    assert_int_equal(store_env_put(f->st, "p2", "main", NULL, &err), 0); /* never on */
    assert_int_equal(store_quota_tick(f->st, t, &stopped, &n, &err), 0); /* first: baseline */
    assert_int_equal(n, 0);
    assert_int_equal(store_quota_tick(f->st, t + 4, &stopped, &n, &err), 0);
    assert_int_equal(n, 0);
    struct store_project p;
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 1);
    assert_true(p.used_s == 4); /* wall time, not per environment */
    assert_int_equal(store_project_get(f->st, "p2", &p, &err), 1);
    assert_true(p.used_s == 0);
    /* budget 10 s: the tick at +12 exhausts p1 and switches both environments off */
    assert_int_equal(store_quota_tick(f->st, t + 12, &stopped, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(stopped[0].project, "p1");
    assert_string_equal(stopped[0].id, "main");
    assert_string_equal(stopped[0].session_id, session);
    free(stopped);
    reopen(f);
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 1);
    assert_true(p.exhausted);
    assert_true(p.used_s == 12);
    assert_int_equal(store_env_get(f->st, "p1", "main", &e, &err), 1);
    assert_false(e.profiling);
    assert_string_equal(e.session_id, "");
    /* refused until the plan changes; nothing changed by the refusal */
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, NULL, t + 20, &e, &err),
                     STORE_EXHAUSTED);
    assert_int_equal(store_env_set_profiling(f->st, "p1", "new", true, NULL, t + 20, &e, &err),
                     STORE_EXHAUSTED);
    assert_int_equal(store_env_get(f->st, "p1", "new", &e, &err), 0);
    assert_int_equal(store_quota_tick(f->st, t + 20, &stopped, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_project_put(f->st, "p1", STORE_PLAN_ADDON, &p, &err), 0);
    assert_false(p.exhausted);
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, NULL, t + 400, &e, &err),
                     0);
}

static void test_quota_counts_only_until_lease_end_and_across_restart(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    struct store_env *stopped;
    size_t n;
    int64_t t = 2000000;
    assert_int_equal(store_project_put(f->st, "p1", STORE_PLAN_ADDON, NULL, &err), 0);
    assert_int_equal(store_env_set_profiling(f->st, "p1", "main", true, NULL, t + 5, NULL, &err),
                     0);
    assert_int_equal(store_quota_tick(f->st, t, &stopped, &n, &err), 0);
    /* the lease ended at +5: the agents stopped there, so +20 counts 5 s */
    assert_int_equal(store_quota_tick(f->st, t + 20, &stopped, &n, &err), 0);
    struct store_project p;
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 1);
    assert_true(p.used_s == 5);
    /* renewed; the console goes down at +30 and comes back at +1000: only the lease's part
     * of the downtime (until +60) is counted */
    assert_int_equal(store_env_set_lease(f->st, "p1", "main", t + 60, &err), 1);
    assert_int_equal(store_quota_tick(f->st, t + 30, &stopped, &n, &err), 0);
    reopen(f);
    assert_int_equal(store_quota_tick(f->st, t + 1000, &stopped, &n, &err), 0);
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 1);
    assert_true(p.used_s == 5 + 10 + 30);
    /* a clock going backwards counts nothing */
    assert_int_equal(store_quota_tick(f->st, t + 900, &stopped, &n, &err), 0);
    assert_int_equal(store_project_get(f->st, "p1", &p, &err), 1);
    assert_true(p.used_s == 45);
}

/* ---- agents ---- */

static void test_agents(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    json_t *targets = json_pack("[{s:i, s:s}]", "pid", 42, "app", "web");
    struct store_agent a = {"id-1", "node-1", "host-a", "0.1.0", targets, true, 100, 100};
    assert_int_equal(store_agent_upsert(f->st, &a, &err), 0);
    struct store_agent b = {"id-2", "node-2", "host-b", "0.1.0", NULL, true, 110, 120};
    assert_int_equal(store_agent_upsert(f->st, &b, &err), 0);
    a.targets = NULL; /* keep the stored targets */
    a.last_seen = 150;
    assert_int_equal(store_agent_upsert(f->st, &a, &err), 0);
    assert_int_equal(store_agent_disconnect(f->st, "id-2", 160, &err), 0);
    reopen(f);
    json_t *list = store_agents_json(f->st, &err);
    assert_int_equal(json_array_size(list), 2);
    json_t *j1 = json_array_get(list, 0), *j2 = json_array_get(list, 1);
    assert_string_equal(json_string_value(json_object_get(j1, "name")), "node-1");
    assert_string_equal(json_string_value(json_object_get(j1, "node")), "host-a");
    assert_true(json_is_true(json_object_get(j1, "connected")));
    assert_int_equal(json_integer_value(json_object_get(j1, "connected_since")), 100);
    assert_int_equal(json_integer_value(json_object_get(j1, "last_seen")), 150);
    assert_true(json_equal(json_object_get(j1, "targets"), targets));
    assert_true(json_is_false(json_object_get(j2, "connected")));
    assert_true(json_is_null(json_object_get(j2, "connected_since")));
    assert_int_equal(json_integer_value(json_object_get(j2, "last_seen")), 160);
    assert_int_equal(json_array_size(json_object_get(j2, "targets")), 0);
    json_decref(list);
    assert_int_equal(store_agent_disconnect_all(f->st, &err), 0);
    list = store_agents_json(f->st, &err);
    assert_true(json_is_false(json_object_get(json_array_get(list, 0), "connected")));
    json_decref(list);
    json_decref(targets);
}

/* ---- profiles ---- */

#define S 1000000000LL

struct collected {
    int n;
    int64_t ids[16];
    int64_t from[16];
    char apps[16][32];
    size_t pprof_len[16];
    uint8_t first_byte[16];
    int64_t cpu_total[16];
    char labels[16][128];
};

static int collect(const struct store_profile_row *row, void *ctx, struct cp_err *err)
{
    (void)err;
    struct collected *c = ctx;
    int i = c->n++;
    c->ids[i] = row->id;
    c->from[i] = row->from_ns;
    snprintf(c->apps[i], sizeof c->apps[i], "%s", row->app);
    c->pprof_len[i] = row->pprof_len;
    c->first_byte[i] = row->pprof ? row->pprof[0] : 0;
    snprintf(c->labels[i], sizeof c->labels[i], "%s", row->labels_json);
    for (size_t t = 0; t < row->ntypes; t++)
        if (!strcmp(row->types[t], "cpu")) c->cpu_total[i] = row->totals[t];
    return 0;
}

static void add_profile(struct store *st, const char *app, int64_t from_s, int64_t until_s,
                        int64_t cpu, const uint8_t *pb, size_t len)
{
    struct cp_err err = {0};
    const char *types[] = {"cpu", "wall"};
    int64_t totals[] = {cpu, 2 * cpu};
    json_t *labels = json_pack("{s:s, s:s}", "runtime", "python", "host", "h1");
    struct store_profile_in in = {"p1", "main", app,    from_s * S, until_s * S, labels,
                                  2,    types,  totals, pb,         len};
    assert_int_equal(store_profiles_add(st, &in, 1, &err), 0);
    json_decref(labels);
}

static void test_profiles_add_scan_overlap(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    uint8_t pb[5000];
    for (size_t i = 0; i < sizeof pb; i++)
        pb[i] = (uint8_t)(i * 7);
    add_profile(f->st, "web", 100, 145, 11, pb, sizeof pb);
    add_profile(f->st, "web", 145, 190, 22, pb, 10);
    add_profile(f->st, "worker", 120, 165, 33, pb, 0);
    add_profile(f->st, "web", 200, 200, 44, pb, 1); /* zero length */
    reopen(f);
    assert_int_equal(store_profile_count(f->st, &err), 4);
    struct collected c = {0};
    assert_int_equal(store_profile_foreach(f->st, "p1", "main", "web", 0, 1000 * S, STORE_ROW_PPROF,
                                           collect, &c, &err),
                     0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.pprof_len[0], sizeof pb);
    assert_int_equal(c.first_byte[0], 0);
    assert_int_equal(c.cpu_total[1], 22);
    assert_string_equal(c.labels[0], "{\"host\":\"h1\",\"runtime\":\"python\"}");
    /* [145, 146): the first profile ends at 145 and does not overlap */
    memset(&c, 0, sizeof c);
    assert_int_equal(
        store_profile_foreach(f->st, "p1", "main", "web", 145 * S, 146 * S, 0, collect, &c, &err),
        0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.from[0], 145 * S);
    assert_int_equal(c.pprof_len[0], 0); /* not asked for */
    /* every app, ordered by start */
    memset(&c, 0, sizeof c);
    assert_int_equal(
        store_profile_foreach(f->st, "p1", "main", NULL, 0, 1000 * S, 0, collect, &c, &err), 0);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.apps[1], "worker");
    /* the zero-length profile at 200 is in [200, 201) but not in [190, 200) */
    memset(&c, 0, sizeof c);
    store_profile_foreach(f->st, "p1", "main", NULL, 200 * S, 201 * S, 0, collect, &c, &err);
    assert_int_equal(c.n, 1);
    memset(&c, 0, sizeof c);
    store_profile_foreach(f->st, "p1", "main", NULL, 190 * S, 200 * S, 0, collect, &c, &err);
    assert_int_equal(c.n, 0);
    /* other environment: nothing */
    memset(&c, 0, sizeof c);
    store_profile_foreach(f->st, "p1", "staging", NULL, 0, 1000 * S, 0, collect, &c, &err);
    assert_int_equal(c.n, 0);
}

static int stop_after_first(const struct store_profile_row *row, void *ctx, struct cp_err *err)
{
    (void)row;
    (void)err;
    (*(int *)ctx)++;
    return 1;
}

static int fail_cb(const struct store_profile_row *row, void *ctx, struct cp_err *err)
{
    (void)row;
    (void)ctx;
    cp_err_set(err, CP_ERR_INVALID, "callback says no");
    return -1;
}

static void test_profiles_callback_stop_and_fail(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    uint8_t pb[1] = {0};
    add_profile(f->st, "web", 100, 145, 1, pb, 1);
    add_profile(f->st, "web", 145, 190, 1, pb, 1);
    int calls = 0;
    assert_int_equal(store_profile_foreach(f->st, "p1", "main", "web", 0, 1000 * S, 0,
                                           stop_after_first, &calls, &err),
                     0);
    assert_int_equal(calls, 1);
    assert_int_equal(
        store_profile_foreach(f->st, "p1", "main", "web", 0, 1000 * S, 0, fail_cb, NULL, &err), -1);
    assert_string_equal(err.msg, "callback says no");
}

static void test_profiles_batch_all_or_nothing(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    uint8_t pb[4] = {1, 2, 3, 4};
    struct store_profile_in in[2] = {
        {"p1", "main", "web", 1 * S, 2 * S, NULL, 0, NULL, NULL, pb, 4},
        {"p1", "main", "", 1 * S, 2 * S, NULL, 0, NULL, NULL, pb, 4}, /* bad app */
    };
    assert_int_equal(store_profiles_add(f->st, in, 2, &err), -1);
    assert_non_null(strstr(err.msg, "profile 2: application"));
    assert_int_equal(store_profile_count(f->st, &err), 0);
    in[1].app = "api";
    in[1].until_ns = 0; /* until before from */
    assert_int_equal(store_profiles_add(f->st, in, 2, &err), -1);
    assert_int_equal(store_profile_count(f->st, &err), 0);
    in[1].until_ns = 3 * S;
    assert_int_equal(store_profiles_add(f->st, in, 2, &err), 0);
    assert_int_equal(store_profile_count(f->st, &err), 2);
}

static void test_retention(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    uint8_t pb[1] = {0};
    add_profile(f->st, "web", 100, 145, 1, pb, 1);
    add_profile(f->st, "web", 145, 190, 1, pb, 1);
    add_profile(f->st, "web", 190, 235, 1, pb, 1);
    assert_int_equal(store_retention(f->st, 190, &err), 1); /* ended before 190 */
    assert_int_equal(store_retention(f->st, 190, &err), 0);
    reopen(f);
    assert_int_equal(store_profile_count(f->st, &err), 2);
    assert_int_equal(store_retention(f->st, 10000, &err), 2);
    assert_int_equal(store_profile_count(f->st, &err), 0);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_creates_wal_schema),
        T(test_newer_schema_refused),
        cmocka_unit_test(test_open_bad_dir),
        T(test_tokens_create_check_persist),
        T(test_tokens_names_list_revoke),
        T(test_projects_plans_budget),
        T(test_env_profiling_sessions),
        T(test_project_json),
        T(test_quota_tick_exhausts),
        T(test_quota_counts_only_until_lease_end_and_across_restart),
        T(test_agents),
        T(test_profiles_add_scan_overlap),
        T(test_profiles_callback_stop_and_fail),
        T(test_profiles_batch_all_or_nothing),
        T(test_retention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
