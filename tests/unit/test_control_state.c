/* Tests of control/control_state.c: applying commands (idempotence, nacks), the lease clock and
 * the quota_exhausted rule, profiling time accounting, and the state file (real files in a temp
 * directory: atomic save, mode, corrupt files, a tmp file left by a crash). Commands are made
 * with the real protocol parser so they are exactly what the agent would apply. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "control_state.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T0 INT64_C(1700000000)

struct fixture {
    char dir[64];
    char path[128];
    struct control_state state;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_control_state.XXXXXX");
    if (!f || !mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/control-state.json", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    control_state_free(&f->state);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || e->d_name[1] == '.')) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
        if (unlink(p) < 0) rmdir(p);
    }
    if (d) closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void parse(const char *text, struct proto_command *cmd)
{
    struct proto_nack nack;
    if (proto_parse_command(text, strlen(text), cmd, &nack) < 0)
        fail_msg("%s: %s: %s", text, nack.field, nack.error);
}

static void start_cmd(struct proto_command *cmd, const char *session, int period,
                      int64_t lease_until, int64_t budget_left)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"type\":\"start\",\"v\":1,\"id\":\"start-%s\",\"session_id\":\"%s\","
             "\"project\":\"shop\",\"environment\":\"prod\",\"selector\":{\"project\":\"shop\","
             "\"environment\":\"prod\"},\"period\":%d,\"upload_timeout\":10,"
             "\"labels\":{\"team\":\"web\"},\"quota\":{\"plan\":\"free\",\"lease_until\":%lld,"
             "\"budget_left\":%lld}}",
             session, session, period, (long long)lease_until, (long long)budget_left);
    parse(text, cmd);
}

static void simple_cmd(struct proto_command *cmd, const char *type, const char *session,
                       const char *extra)
{
    char text[512];
    snprintf(text, sizeof text, "{\"type\":\"%s\",\"v\":1,\"id\":\"c\",\"session_id\":\"%s\"%s}",
             type, session, extra);
    parse(text, cmd);
}

/* Applies cmd at `now`, expecting success; returns whether it changed the table. */
static bool apply_ok(struct control_state *st, struct proto_command *cmd, int64_t now)
{
    bool changed = true;
    struct proto_nack nack;
    if (control_state_apply(st, cmd, now, &changed, &nack) < 0)
        fail_msg("apply: %s: %s", nack.field, nack.error);
    proto_command_free(cmd);
    return changed;
}

static void apply_refused(struct control_state *st, struct proto_command *cmd, int64_t now,
                          const char *field, const char *error)
{
    bool changed = true;
    struct proto_nack nack;
    assert_int_equal(control_state_apply(st, cmd, now, &changed, &nack), -1);
    assert_false(changed);
    assert_string_equal(nack.field, field);
    assert_non_null(strstr(nack.error, error));
    assert_string_equal(nack.id, cmd->id);
    proto_command_free(cmd);
}

static void start(struct control_state *st, const char *session, int64_t now, int64_t lease_until,
                  int64_t budget_left)
{
    struct proto_command cmd;
    start_cmd(&cmd, session, 45, lease_until, budget_left);
    apply_ok(st, &cmd, now);
}

/* ---- commands ---- */

static void test_start_is_idempotent(void **state)
{
    struct fixture *f = *state;
    struct proto_command cmd;
    start_cmd(&cmd, "s1", 45, T0 + 300, 900);
    assert_true(apply_ok(&f->state, &cmd, T0));
    start_cmd(&cmd, "s1", 45, T0 + 300, 900);
    assert_false(apply_ok(&f->state, &cmd, T0 + 5));
    assert_int_equal(f->state.count, 1);
    struct control_session *s = control_state_find(&f->state, "s1");
    assert_non_null(s);
    assert_string_equal(s->project, "shop");
    assert_string_equal(s->plan, "free");
    assert_int_equal(s->period, 45);
    assert_int_equal(s->upload_timeout, 10);
    assert_string_equal(json_string_value(json_object_get(s->labels, "team")), "web");
    assert_int_equal(s->granted_at, T0); /* the resend did not move it */
    assert_int_equal(s->started_at, T0);
    assert_int_equal(s->state, PROTO_SESSION_RUNNING);

    const struct control_session *active[4];
    assert_int_equal(control_state_active(&f->state, T0 + 299, active, 4), 1);
    assert_ptr_equal(active[0], s);
    assert_int_equal(control_state_active(&f->state, T0 + 300, active, 4), 0);

    /* a start with new settings and a new lease updates both */
    /* what hello and status report */
    struct proto_session_ref refs[2];
    assert_int_equal(control_state_session_refs(&f->state, refs, 2), 1);
    assert_string_equal(refs[0].session_id, "s1");
    assert_int_equal(refs[0].lease_until, T0 + 300);
    struct proto_session_status status;
    control_state_expire(&f->state, T0 + 20, NULL, NULL);
    control_session_status(s, &status);
    assert_string_equal(status.session_id, "s1");
    assert_int_equal(status.state, PROTO_SESSION_RUNNING);
    assert_int_equal(status.profiling_s, 20);
    assert_int_equal(status.lease_until, T0 + 300);

    start_cmd(&cmd, "s1", 60, T0 + 400, 800);
    assert_true(apply_ok(&f->state, &cmd, T0 + 100));
    assert_int_equal(s->period, 60);
    assert_int_equal(s->lease_until, T0 + 400);
    assert_int_equal(s->granted_at, T0 + 100);
    assert_int_equal(s->started_at, T0);
}

static void test_start_with_ended_lease(void **state)
{
    struct fixture *f = *state;
    start(&f->state, "old", T0, T0 - 1, 900);
    struct control_session *s = control_state_find(&f->state, "old");
    assert_int_equal(s->state, PROTO_SESSION_EXPIRED);
    assert_false(control_session_active(s, T0));
    assert_int_equal(control_state_expire(&f->state, T0, NULL, NULL), 0);
}

static void test_stop(void **state)
{
    struct fixture *f = *state;
    struct proto_command cmd;
    simple_cmd(&cmd, "stop", "nobody", "");
    assert_false(apply_ok(&f->state, &cmd, T0)); /* unknown: ack, nothing */
    start(&f->state, "s1", T0, T0 + 300, 900);
    simple_cmd(&cmd, "stop", "s1", ",\"reason\":\"toggle off\"");
    assert_true(apply_ok(&f->state, &cmd, T0 + 30));
    struct control_session *s = control_state_find(&f->state, "s1");
    assert_int_equal(s->state, PROTO_SESSION_STOPPED);
    assert_int_equal(s->profiling_s, 30);
    assert_false(control_session_active(s, T0 + 31));
    simple_cmd(&cmd, "stop", "s1", "");
    assert_false(apply_ok(&f->state, &cmd, T0 + 40));
    /* a stopped session's time does not grow; a lease cannot revive it */
    assert_int_equal(control_state_expire(&f->state, T0 + 400, NULL, NULL), 0);
    assert_int_equal(s->profiling_s, 30);
    simple_cmd(&cmd, "lease", "s1", ",\"lease_until\":1700000900,\"budget_left\":800");
    apply_refused(&f->state, &cmd, T0 + 50, "session_id", "stopped");
    /* a start can */
    start(&f->state, "s1", T0 + 60, T0 + 360, 800);
    assert_int_equal(s->state, PROTO_SESSION_RUNNING);
    assert_int_equal(control_state_expire(&f->state, T0 + 70, NULL, NULL), 0);
    assert_int_equal(s->profiling_s, 40);
}

static void test_config(void **state)
{
    struct fixture *f = *state;
    struct proto_command cmd;
    simple_cmd(&cmd, "config", "nobody", ",\"period\":10");
    apply_refused(&f->state, &cmd, T0, "session_id", "unknown session");
    start(&f->state, "s1", T0, T0 + 300, 900);
    simple_cmd(&cmd, "config", "s1", ",\"period\":10,\"labels\":{\"team\":\"ops\",\"tier\":\"1\"}");
    assert_true(apply_ok(&f->state, &cmd, T0 + 1));
    struct control_session *s = control_state_find(&f->state, "s1");
    assert_int_equal(s->period, 10);
    assert_int_equal(s->upload_timeout, 10);
    assert_string_equal(json_string_value(json_object_get(s->labels, "tier")), "1");
    simple_cmd(&cmd, "config", "s1", ",\"labels\":{\"tier\":\"1\",\"team\":\"ops\"}");
    assert_false(apply_ok(&f->state, &cmd, T0 + 2));
    simple_cmd(&cmd, "config", "s1", ",\"upload_timeout\":30");
    assert_true(apply_ok(&f->state, &cmd, T0 + 3));
    assert_int_equal(s->upload_timeout, 30);
    assert_int_equal(s->period, 10);
}

static void test_lease(void **state)
{
    struct fixture *f = *state;
    struct proto_command cmd;
    simple_cmd(&cmd, "lease", "nobody", ",\"lease_until\":1700000900,\"budget_left\":800");
    apply_refused(&f->state, &cmd, T0, "session_id", "unknown session");
    start(&f->state, "s1", T0, T0 + 300, 900);
    simple_cmd(&cmd, "lease", "s1", ",\"lease_until\":1700000400,\"budget_left\":800");
    assert_true(apply_ok(&f->state, &cmd, T0 + 100));
    struct control_session *s = control_state_find(&f->state, "s1");
    assert_int_equal(s->lease_until, T0 + 400);
    assert_int_equal(s->budget_left, 800);
    assert_int_equal(s->granted_at, T0 + 100);
    simple_cmd(&cmd, "lease", "s1", ",\"lease_until\":1700000400,\"budget_left\":800");
    assert_false(apply_ok(&f->state, &cmd, T0 + 110));
    assert_int_equal(s->granted_at, T0 + 100);
    /* expired, then renewed late: runs again, the gap is not counted */
    assert_int_equal(control_state_expire(&f->state, T0 + 450, NULL, NULL), 1);
    assert_int_equal(s->state, PROTO_SESSION_EXPIRED);
    assert_int_equal(s->profiling_s, 400);
    simple_cmd(&cmd, "lease", "s1", ",\"lease_until\":1700000800,\"budget_left\":500");
    assert_true(apply_ok(&f->state, &cmd, T0 + 500));
    assert_int_equal(s->state, PROTO_SESSION_RUNNING);
    assert_int_equal(control_state_expire(&f->state, T0 + 510, NULL, NULL), 0);
    assert_int_equal(s->profiling_s, 410);
}

struct expired_log {
    char ids[8][PROTO_ID_MAX + 1];
    bool quota[8];
    size_t count;
};

static void on_expired(const struct control_session *s, bool quota_exhausted, void *ctx)
{
    struct expired_log *log = ctx;
    assert_int_equal(s->state, PROTO_SESSION_EXPIRED);
    if (log->count < 8) {
        snprintf(log->ids[log->count], sizeof log->ids[0], "%s", s->session_id);
        log->quota[log->count++] = quota_exhausted;
    }
}

static void test_expire_and_quota_flag(void **state)
{
    struct fixture *f = *state;
    start(&f->state, "plenty", T0, T0 + 300, 900);  /* capped by max lease: lease_expired */
    start(&f->state, "capped", T0, T0 + 120, 120);  /* capped by the budget */
    start(&f->state, "exact", T0, T0 + 300, 300);   /* both caps equal: the budget ran out */
    start(&f->state, "later", T0, T0 + 1000, 5000); /* still running */
    struct expired_log log = {0};
    assert_int_equal(control_state_expire(&f->state, T0 + 119, on_expired, &log), 0);
    assert_int_equal(control_state_expire(&f->state, T0 + 120, on_expired, &log), 1);
    assert_string_equal(log.ids[0], "capped");
    assert_true(log.quota[0]);
    assert_int_equal(control_state_expire(&f->state, T0 + 400, on_expired, &log), 2);
    assert_string_equal(log.ids[1], "plenty");
    assert_false(log.quota[1]);
    assert_string_equal(log.ids[2], "exact");
    assert_true(log.quota[2]);
    /* each expiry is reported once */
    assert_int_equal(control_state_expire(&f->state, T0 + 500, on_expired, &log), 0);
    assert_int_equal(log.count, 3);
    assert_int_equal(control_state_find(&f->state, "capped")->profiling_s, 120);
    assert_int_equal(control_state_find(&f->state, "plenty")->profiling_s, 300);
    assert_int_equal(control_state_find(&f->state, "later")->profiling_s, 500);

    /* a renewal that leaves the budget as the cap: the flag follows the last grant */
    struct proto_command cmd;
    simple_cmd(&cmd, "lease", "later", ",\"lease_until\":1700000700,\"budget_left\":100");
    assert_true(apply_ok(&f->state, &cmd, T0 + 600));
    assert_int_equal(control_state_expire(&f->state, T0 + 700, on_expired, &log), 1);
    assert_string_equal(log.ids[3], "later");
    assert_true(log.quota[3]);
}

static void test_table_full(void **state)
{
    struct fixture *f = *state;
    char id[16];
    for (int i = 0; i < CONTROL_STATE_SESSIONS_MAX; i++) {
        snprintf(id, sizeof id, "s%d", i);
        start(&f->state, id, T0, T0 + 300 + i, 900);
    }
    struct proto_command cmd;
    start_cmd(&cmd, "one-more", 45, T0 + 300, 900);
    apply_refused(&f->state, &cmd, T0, "session_id", "maximum of 64 sessions");
    assert_int_equal(f->state.count, CONTROL_STATE_SESSIONS_MAX);
    simple_cmd(&cmd, "stop", "s7", "");
    assert_true(apply_ok(&f->state, &cmd, T0 + 1));
    start(&f->state, "one-more", T0 + 2, T0 + 300, 900);
    assert_null(control_state_find(&f->state, "s7"));
    assert_non_null(control_state_find(&f->state, "one-more"));
    assert_int_equal(f->state.count, CONTROL_STATE_SESSIONS_MAX);
}

/* ---- files ---- */

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, len, fp), len);
    fclose(fp);
}

static void expect_corrupt(struct fixture *f, const char *text, const char *reason)
{
    write_file(f->path, text, strlen(text));
    struct control_state loaded;
    struct cp_err err = {0};
    assert_int_equal(control_state_load(&loaded, f->path, &err), -1);
    if (!strstr(err.msg, f->path) || !strstr(err.msg, reason))
        fail_msg("%s\n got \"%s\"\n want ~\"%s\"", text, err.msg, reason);
    assert_int_equal(loaded.count, 0);
}

static void test_save_and_load(void **state)
{
    struct fixture *f = *state;
    start(&f->state, "s1", T0, T0 + 300, 900);
    start(&f->state, "s2", T0, T0 + 100, 100);
    struct proto_command cmd;
    simple_cmd(&cmd, "stop", "s2", "");
    apply_ok(&f->state, &cmd, T0 + 50);
    struct cp_err err = {0};
    assert_int_equal(control_state_save(&f->state, f->path, &err), 0);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", f->path);
    assert_int_equal(access(tmp, F_OK), -1);

    struct control_state loaded;
    assert_int_equal(control_state_load(&loaded, f->path, &err), 0);
    assert_int_equal(loaded.count, 2);
    for (size_t i = 0; i < 2; i++) {
        const struct control_session *a = &f->state.sessions[i], *b = &loaded.sessions[i];
        assert_string_equal(a->session_id, b->session_id);
        assert_string_equal(a->project, b->project);
        assert_string_equal(a->environment, b->environment);
        assert_string_equal(a->plan, b->plan);
        assert_true(json_equal(a->selector, b->selector));
        assert_true(json_equal(a->labels, b->labels));
        assert_int_equal(a->period, b->period);
        assert_int_equal(a->upload_timeout, b->upload_timeout);
        assert_int_equal(a->lease_until, b->lease_until);
        assert_int_equal(a->budget_left, b->budget_left);
        assert_int_equal(a->granted_at, b->granted_at);
        assert_int_equal(a->started_at, b->started_at);
        assert_int_equal(a->accounted_at, b->accounted_at);
        assert_int_equal(a->state, b->state);
        assert_int_equal(a->profiling_s, b->profiling_s);
    }
    char *a = control_state_to_text(&f->state, &err), *b = control_state_to_text(&loaded, &err);
    assert_string_equal(a, b);
    free(a);
    free(b);
    control_state_free(&loaded);
}

static void test_restart_resumes_only_open_leases(void **state)
{
    struct fixture *f = *state;
    start(&f->state, "open", T0, T0 + 300, 900);
    start(&f->state, "ended", T0, T0 + 100, 900);
    struct cp_err err = {0};
    assert_int_equal(control_state_save(&f->state, f->path, &err), 0);
    /* the agent was down from T0 to T0 + 200 */
    struct control_state loaded;
    assert_int_equal(control_state_load(&loaded, f->path, &err), 0);
    control_state_resume(&loaded, T0 + 200);
    struct expired_log log = {0};
    assert_int_equal(control_state_expire(&loaded, T0 + 200, on_expired, &log), 1);
    assert_string_equal(log.ids[0], "ended");
    assert_false(log.quota[0]);
    const struct control_session *active[4];
    assert_int_equal(control_state_active(&loaded, T0 + 200, active, 4), 1);
    assert_string_equal(active[0]->session_id, "open");
    assert_int_equal(control_state_expire(&loaded, T0 + 250, NULL, NULL), 0);
    assert_int_equal(active[0]->profiling_s, 50); /* the downtime is not counted */
    control_state_free(&loaded);
}

static void test_missing_file_is_empty(void **state)
{
    struct fixture *f = *state;
    struct control_state loaded;
    struct cp_err err = {0};
    assert_int_equal(control_state_load(&loaded, f->path, &err), 0);
    assert_int_equal(loaded.count, 0);
    /* saving the empty table and loading it back */
    assert_int_equal(control_state_save(&loaded, f->path, &err), 0);
    assert_int_equal(control_state_load(&loaded, f->path, &err), 0);
    assert_int_equal(loaded.count, 0);
}

static void test_corrupt_files(void **state)
{
    struct fixture *f = *state;
    start(&f->state, "s1", T0, T0 + 300, 900);
    struct cp_err err = {0};
    char *good = control_state_to_text(&f->state, &err);
    assert_non_null(good);
    expect_corrupt(f, "", "invalid JSON");
    expect_corrupt(f, "\x01\x02garbage", "invalid JSON");
    expect_corrupt(f, "[]", "expected a JSON object");
    expect_corrupt(f, "{\"version\":2,\"sessions\":[]}", "version: expected 1");
    expect_corrupt(f, "{\"version\":1}", "sessions: expected an array");
    /* a torn write: every proper prefix of a valid file is refused */
    for (size_t cut = 1; cut < strlen(good); cut += 7) {
        char *prefix = strndup(good, cut);
        expect_corrupt(f, prefix, "corrupt control state");
        free(prefix);
    }
    /* one bad field in an otherwise valid session */
    const char *edits[][3] = {
        {"\"period\":45", "\"period\":0", "sessions[0].period: expected an integer from 1 to 3600"},
        {"\"state\":\"running\"", "\"state\":\"zombie\"", "sessions[0].state"},
        {"\"plan\":\"free\"", "\"plan\":\"gold\"", "sessions[0].plan"},
        {"\"session_id\":\"s1\"", "\"session_id\":\"s 1\"", "sessions[0].session_id"},
        {"\"environment\":\"prod\"}", "\"environment\":\"dev\"}",
         "sessions[0].selector.environment"},
        {"\"team\":\"web\"", "\"team\":7", "sessions[0].labels.team"},
        {"\"lease_until\":", "\"lease_until\":-", "sessions[0].lease_until"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char text[2048];
        const char *at = strstr(good, edits[i][0]);
        assert_non_null(at);
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good), good, edits[i][1],
                 at + strlen(edits[i][0]));
        expect_corrupt(f, text, edits[i][2]);
    }
    /* the same session twice */
    char twice[4096];
    const char *list = strchr(good, '[');
    snprintf(twice, sizeof twice, "{\"version\":1,\"sessions\":[%.*s,%.*s]}",
             (int)(strlen(list) - 3), list + 1, (int)(strlen(list) - 3), list + 1);
    expect_corrupt(f, twice, "sessions[1].session_id: duplicate session id");
    free(good);
}

static void test_oversize_and_odd_files(void **state)
{
    struct fixture *f = *state;
    size_t size = CONTROL_STATE_FILE_MAX + 1;
    char *big = malloc(size);
    memset(big, ' ', size);
    big[0] = '{';
    big[size - 1] = '}';
    write_file(f->path, big, size);
    free(big);
    struct control_state loaded;
    struct cp_err err = {0};
    assert_int_equal(control_state_load(&loaded, f->path, &err), -1);
    assert_non_null(strstr(err.msg, "larger than 1048576 bytes"));
    unlink(f->path);
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_int_equal(control_state_load(&loaded, f->path, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    assert_int_equal(loaded.count, 0);
    rmdir(f->path);
    assert_int_equal(mkfifo(f->path, 0600), 0); /* must not block */
    assert_int_equal(control_state_load(&loaded, f->path, &err), -1);
    unlink(f->path);
}

static void test_tmp_file_left_by_crash(void **state)
{
    struct fixture *f = *state;
    start(&f->state, "s1", T0, T0 + 300, 900);
    struct cp_err err = {0};
    assert_int_equal(control_state_save(&f->state, f->path, &err), 0);
    /* a crash between writing the tmp file and the rename */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", f->path);
    write_file(tmp, "{\"version\":1,\"sess", 18);
    chmod(tmp, 0644);
    struct control_state loaded;
    assert_int_equal(control_state_load(&loaded, f->path, &err), 0);
    assert_int_equal(loaded.count, 1);
    /* the next save replaces it */
    start(&loaded, "s2", T0 + 1, T0 + 300, 900);
    assert_int_equal(control_state_save(&loaded, f->path, &err), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    control_state_free(&loaded);
    assert_int_equal(control_state_load(&loaded, f->path, &err), 0);
    assert_int_equal(loaded.count, 2);
    control_state_free(&loaded);
}

static void test_save_errors(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    char path[192];
    snprintf(path, sizeof path, "%s/missing-dir/state.json", f->dir);
    assert_int_equal(control_state_save(&f->state, path, &err), -1);
    assert_int_equal(err.code, CP_ERR_IO);
    assert_non_null(strstr(err.msg, "missing-dir/state.json.tmp"));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_start_is_idempotent),
        T(test_start_with_ended_lease),
        T(test_stop),
        T(test_config),
        T(test_lease),
        T(test_expire_and_quota_flag),
        T(test_table_full),
        T(test_save_and_load),
        T(test_restart_resumes_only_open_leases),
        T(test_missing_file_is_empty),
        T(test_corrupt_files),
        T(test_oversize_and_odd_files),
        T(test_tmp_file_left_by_crash),
        T(test_save_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
