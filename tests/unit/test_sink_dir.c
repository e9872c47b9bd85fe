/* Unit tests of the directory sink (agent/sink_dir.c) and, through it, of the dispatcher
 * (agent/sink.c): the files and the sidecar's content, names never overwritten, application
 * names that cannot escape the directory; a sink that fails (its application directory is a
 * file) retries, spools after N attempts, and delivers the spool oldest first once it works
 * again, also after a restart; flush spools what the deadline leaves; bad records are counted.
 * Also the HTTP sink's config checks and its Pyroscope series name (pure functions, no network).
 * Real files in a temporary directory; real pprof bodies from the sampler's writer. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "profile_writers.h"
#include "sink.h"

#include <dirent.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define T0_NS 1714564845500000000 /* 2024-05-01T12:00:45.500Z */
#define PERIOD_NS 45000000000

/* ---- helpers ------------------------------------------------------------------------------ */

struct fixture {
    char root[64];
    char out[96];
    char spool[96];
    char log[8192]; /* every log line, '\n'-separated */
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->root, sizeof fx->root, "/tmp/conprof-sinkdir-XXXXXX");
    if (!mkdtemp(fx->root)) return -1;
    snprintf(fx->out, sizeof fx->out, "%s/out", fx->root);
    snprintf(fx->spool, sizeof fx->spool, "%s/spool", fx->root);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    nftw(fx->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static void capture_log(void *ctx, const char *line)
{
    struct fixture *fx = ctx;
    size_t n = strlen(fx->log);
    snprintf(fx->log + n, sizeof fx->log - n, "%s\n", line);
}

/* A real gzipped pprof whose leaf function is named after i. */
static void make_pprof(struct buf *out, int i)
{
    struct agg a;
    struct cp_err err;
    char fn[32];
    snprintf(fn, sizeof fn, "work_%d", i);
    assert_int_equal(agg_init(&a), 0);
    uint32_t frames[2] = {agg_frame_id_str(&a, fn, "app.py", 10 + i),
                          agg_frame_id_str(&a, "main", "app.py", 3)};
    assert_int_equal(agg_add(&a, frames, 2, 10000000, 10000000), 0);
    struct pprof_meta meta = {
        .time_nanos = T0_NS, .duration_nanos = PERIOD_NS, .period_nanos = 10000000};
    assert_int_equal(pprof_write(&a, &meta, out, &err), 0);
    agg_free(&a);
}

static void make_record(struct profile_record *r, const char *app, int i)
{
    memset(r, 0, sizeof *r);
    r->app_name = strdup(app);
    r->from_ns = T0_NS + (int64_t)i * PERIOD_NS;
    r->until_ns = r->from_ns + PERIOD_NS;
    r->rate_hz = 100;
    assert_int_equal(profile_record_set_label(r, "application_name", app), 0);
    assert_int_equal(profile_record_set_label(r, "host", "node-1"), 0);
    assert_int_equal(profile_record_set_label(r, "environment", "prod\xc3\xa9 \xff"), 0);
    make_pprof(&r->pprof_gz, i);
}

static struct sink *open_dir_sink(struct fixture *fx, bool with_spool, int backoff_ms)
{
    struct sink_config c;
    sink_config_defaults(&c);
    c.kind = SINK_DIR;
    c.dir = fx->out;
    c.spool_dir = with_spool ? fx->spool : NULL;
    c.backoff_base_ms = backoff_ms;
    c.backoff_cap_ms = backoff_ms * 2;
    c.spool_after_attempts = 2;
    c.log = capture_log;
    c.log_ctx = fx;
    struct cp_err err;
    struct sink *s = sink_open(&c, &err);
    if (!s) fail_msg("sink_open: %s", err.msg);
    return s;
}

static void submit(struct sink *s, const char *app, int i)
{
    struct profile_record r;
    struct cp_err err;
    make_record(&r, app, i);
    assert_int_equal(sink_submit(s, &r, &err), 0);
    assert_null(r.app_name); /* ownership moved */
}

static struct sink_stats stats_of(struct sink *s)
{
    struct sink_stats st;
    sink_get_stats(s, &st);
    return st;
}

/* Polls until pred holds or 5 s pass. */
static void poll_until(struct sink *s, bool (*pred)(const struct sink_stats *, uint64_t),
                       uint64_t arg)
{
    struct cp_err err;
    for (int i = 0; i < 500; i++) {
        struct sink_stats st = stats_of(s);
        if (pred(&st, arg)) return;
        assert_int_equal(sink_poll(s, 10, &err), 0);
        usleep(1000);
    }
    struct sink_stats st = stats_of(s);
    fail_msg("timed out: sent %lu retried %lu spooled %lu failed %lu, last error: %s",
             (unsigned long)st.sent, (unsigned long)st.retried, (unsigned long)st.spooled,
             (unsigned long)st.failed, st.last_error);
}

static bool sent_at_least(const struct sink_stats *st, uint64_t n)
{
    return st->sent >= n;
}
static bool spooled_at_least(const struct sink_stats *st, uint64_t n)
{
    return st->spooled >= n;
}

static void read_file(const char *path, struct buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(out, chunk, n), 0);
    fclose(f);
}

/* Sorted names in dir with the given suffix, into names (each up to 127 chars). */
static int list_files(const char *dir, const char *suffix, char names[][128], int max)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < max) {
        size_t len = strlen(de->d_name), slen = strlen(suffix);
        if (len > slen && strcmp(de->d_name + len - slen, suffix) == 0)
            snprintf(names[n++], 128, "%.127s", de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, 128, (int (*)(const void *, const void *))strcmp);
    return n;
}

/* ---- the files ---------------------------------------------------------------------------- */

static void test_writes_pprof_and_sidecar(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, false, 1000);
    struct profile_record expect;
    make_record(&expect, "shop", 0);
    submit(s, "shop", 0);
    struct cp_err err;
    assert_int_equal(sink_poll(s, 0, &err), 0);
    struct sink_stats st = stats_of(s);
    assert_int_equal(st.sent, 1);
    assert_int_equal(st.queued, 0);
    assert_string_equal(st.last_error, "");

    char path[256];
    struct buf body = {0}, side = {0};
    snprintf(path, sizeof path, "%s/shop/20240501T120045Z-000001.pb.gz", fx->out);
    read_file(path, &body);
    assert_int_equal(body.len, expect.pprof_gz.len);
    assert_memory_equal(body.data, expect.pprof_gz.data, body.len);
    assert_memory_equal(body.data, "\x1f\x8b", 2);

    snprintf(path, sizeof path, "%s/shop/20240501T120045Z-000001.json", fx->out);
    read_file(path, &side);
    json_error_t jerr;
    json_t *j = json_loads(side.data, 0, &jerr);
    if (!j) fail_msg("sidecar is not JSON: %s", jerr.text);
    assert_string_equal(json_string_value(json_object_get(j, "application_name")), "shop");
    assert_string_equal(json_string_value(json_object_get(j, "profile")),
                        "20240501T120045Z-000001.pb.gz");
    assert_string_equal(json_string_value(json_object_get(j, "format")), "pprof");
    assert_string_equal(json_string_value(json_object_get(j, "from")), "2024-05-01T12:00:45.500Z");
    assert_string_equal(json_string_value(json_object_get(j, "until")), "2024-05-01T12:01:30.500Z");
    assert_int_equal(json_integer_value(json_object_get(j, "from_unix_ns")), T0_NS);
    assert_int_equal(json_integer_value(json_object_get(j, "until_unix_ns")), T0_NS + PERIOD_NS);
    assert_int_equal(json_integer_value(json_object_get(j, "sample_rate_hz")), 100);
    json_t *labels = json_object_get(j, "labels");
    assert_int_equal(json_object_size(labels), 3);
    assert_string_equal(json_string_value(json_object_get(labels, "application_name")), "shop");
    assert_string_equal(json_string_value(json_object_get(labels, "host")), "node-1");
    /* the invalid byte became U+FFFD, the valid é stayed */
    assert_string_equal(json_string_value(json_object_get(labels, "environment")),
                        "prod\xc3\xa9 \xef\xbf\xbd");
    json_decref(j);

    char names[8][128];
    snprintf(path, sizeof path, "%s/shop", fx->out);
    assert_int_equal(list_files(path, ".tmp", names, 8), 0);
    assert_int_equal(list_files(path, "", names, 8), 4); /* ., .., the two files */
    buf_free(&body);
    buf_free(&side);
    profile_record_free(&expect);
    sink_close(s);
}

static void test_names_never_overwrite(void **state)
{
    struct fixture *fx = *state;
    char dir[200], path[300];
    snprintf(dir, sizeof dir, "%s/shop", fx->out);
    assert_int_equal(mkdir(fx->out, 0755), 0);
    assert_int_equal(mkdir(dir, 0755), 0);
    /* a file of an earlier run under the name the first write would take */
    snprintf(path, sizeof path, "%s/20240501T120045Z-000001.pb.gz", dir);
    FILE *f = fopen(path, "w");
    fputs("earlier", f);
    fclose(f);

    struct sink *s = open_dir_sink(fx, false, 1000);
    submit(s, "shop", 0);
    submit(s, "shop", 0); /* same period start */
    struct cp_err err;
    assert_int_equal(sink_poll(s, 0, &err), 0);
    assert_int_equal(stats_of(s).sent, 2);
    char names[8][128];
    assert_int_equal(list_files(dir, ".pb.gz", names, 8), 3);
    assert_string_equal(names[0], "20240501T120045Z-000001.pb.gz");
    assert_string_equal(names[1], "20240501T120045Z-000002.pb.gz");
    assert_string_equal(names[2], "20240501T120045Z-000003.pb.gz");
    assert_int_equal(list_files(dir, ".json", names, 8), 2); /* none left behind for 000001 */
    struct buf b = {0};
    read_file(path, &b);
    assert_string_equal(b.data, "earlier");
    buf_free(&b);
    sink_close(s);
}

static void test_app_names_stay_inside(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, false, 1000);
    submit(s, "../../etc", 0);
    submit(s, "..", 1);
    submit(s, "a b/c\xc3\xa9", 2);
    struct cp_err err;
    assert_int_equal(sink_poll(s, 0, &err), 0);
    assert_int_equal(stats_of(s).sent, 3);
    char path[300];
    const char *expect[] = {".._.._etc", "_", "a_b_c__"};
    for (int i = 0; i < 3; i++) {
        char names[4][128];
        snprintf(path, sizeof path, "%s/%s", fx->out, expect[i]);
        assert_int_equal(list_files(path, ".pb.gz", names, 4), 1);
    }
    struct profile_record r;
    make_record(&r, ".", 0);
    struct buf stem = {0};
    assert_int_equal(sink_dir_relative_stem(&r, 7, &stem), 0);
    assert_string_equal(stem.data, "_/20240501T120045Z-000007");
    buf_free(&stem);
    profile_record_free(&r);
    sink_close(s);
}

/* ---- the dispatcher ----------------------------------------------------------------------- */

/* Makes <out>/shop a regular file, so writing an application "shop" fails (or works again). */
static void break_app_dir(struct fixture *fx, bool broken)
{
    char path[200];
    snprintf(path, sizeof path, "%s/shop", fx->out);
    if (broken) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fclose(f);
    } else {
        assert_int_equal(unlink(path), 0);
    }
}

static void test_retries_spools_then_delivers_oldest_first(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, true, 2);
    break_app_dir(fx, true);
    for (int i = 0; i < 3; i++)
        submit(s, "shop", i);
    poll_until(s, spooled_at_least, 3);
    struct sink_stats st = stats_of(s);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.failed, 0);
    assert_true(st.retried >= 6); /* 2 attempts each */
    assert_int_equal(st.spool_files, 3);
    assert_non_null(strstr(st.last_error, "shop"));
    assert_non_null(strstr(fx->log, "spooled profile of app 'shop'"));
    assert_non_null(strstr(fx->log, "2 failed attempts"));

    break_app_dir(fx, false);
    poll_until(s, sent_at_least, 3);
    st = stats_of(s);
    assert_int_equal(st.spool_files, 0);
    assert_int_equal(st.spool_bytes, 0);
    assert_non_null(strstr(fx->log, "the sink is back"));
    /* delivered oldest first: the write sequence follows the periods */
    char dir[200], names[8][128];
    snprintf(dir, sizeof dir, "%s/shop", fx->out);
    assert_int_equal(list_files(dir, ".pb.gz", names, 8), 3);
    for (int i = 0; i < 3; i++) {
        char expect[64];
        snprintf(expect, sizeof expect, "20240501T12%02d%02dZ", (45 * i + 45) / 60,
                 (45 * i + 45) % 60);
        if (!strstr(names[i], expect))
            fail_msg("file %d is %s, expected period %s", i, names[i], expect);
    }
    sink_close(s);
}

static void test_flush_spools_what_the_deadline_leaves_and_restart_delivers(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, true, 60000); /* backoff (almost surely) past the deadline */
    break_app_dir(fx, true);
    for (int i = 0; i < 3; i++)
        submit(s, "shop", i);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct cp_err err;
    assert_int_equal(sink_flush(s, 300, &err), 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(took < 1.0); /* no wait for a backoff that ends after the deadline */
    struct sink_stats st = stats_of(s);
    assert_int_equal(st.spooled, 3);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.spool_files, 3);
    assert_true(st.retried >= 1);
    sink_close(s);

    break_app_dir(fx, false);
    s = open_dir_sink(fx, true, 10); /* a new agent */
    assert_int_equal(stats_of(s).spool_files, 3);
    poll_until(s, sent_at_least, 3);
    assert_int_equal(stats_of(s).spool_files, 0);
    sink_close(s);
}

static void test_flush_delivers_when_it_can(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, true, 10);
    submit(s, "shop", 0);
    submit(s, "shop", 1);
    struct cp_err err;
    assert_int_equal(sink_flush(s, 1000, &err), 0);
    struct sink_stats st = stats_of(s);
    assert_int_equal(st.sent, 2);
    assert_int_equal(st.spooled, 0);
    sink_close(s);
}

static void test_backlog_drains_in_bounded_steps(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, false, 1000);
    for (int i = 0; i < 40; i++)
        submit(s, "shop", i);
    struct cp_err err;
    assert_int_equal(sink_poll(s, 0, &err), 0);
    uint64_t sent = stats_of(s).sent;        /* 16 per pump, and sink_poll pumps twice: */
    assert_true(sent >= 16 && sent <= 32);   /* one call does not write the whole backlog */
    assert_int_equal(sink_timeout_ms(s), 0); /* and says there is more to do now */
    while (stats_of(s).queued > 0)
        assert_int_equal(sink_poll(s, 0, &err), 0);
    assert_int_equal(stats_of(s).sent, 40);
    assert_int_equal(sink_timeout_ms(s), -1);
    sink_close(s);
}

static void test_without_spool_drops_and_counts(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, false, 1);
    break_app_dir(fx, true);
    submit(s, "shop", 0);
    struct cp_err err;
    for (int i = 0; i < 100 && stats_of(s).failed == 0; i++) {
        assert_int_equal(sink_poll(s, 5, &err), 0);
        usleep(2000);
    }
    struct sink_stats st = stats_of(s);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.spooled, 0);
    assert_non_null(strstr(st.last_error, "no spool directory"));
    assert_non_null(strstr(fx->log, "dropped profile of app 'shop'"));
    sink_close(s);
}

static void test_unusable_records_counted(void **state)
{
    struct fixture *fx = *state;
    struct sink *s = open_dir_sink(fx, false, 1000);
    struct profile_record r;
    struct cp_err err;
    make_record(&r, "shop", 0);
    buf_free(&r.pprof_gz);
    assert_int_equal(sink_submit(s, &r, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    assert_null(r.app_name); /* freed all the same */
    make_record(&r, "", 0);
    assert_int_equal(sink_submit(s, &r, &err), -1);
    struct sink_stats st = stats_of(s);
    assert_int_equal(st.failed, 2);
    assert_non_null(strstr(st.last_error, "no application name"));
    assert_int_equal(sink_poll(s, 100, &err), 0); /* nothing pending: returns at once */
    assert_int_equal(sink_timeout_ms(s), -1);
    sink_close(s);
}

static void test_bad_configs_refused(void **state)
{
    struct fixture *fx = *state;
    struct sink_config c;
    struct cp_err err;
    sink_config_defaults(&c);
    c.dir = NULL;
    assert_null(sink_open(&c, &err));
    assert_non_null(strstr(err.msg, "dir"));
    sink_config_defaults(&c);
    c.dir = fx->out;
    c.backoff_base_ms = 100, c.backoff_cap_ms = 10;
    assert_null(sink_open(&c, &err));
    assert_non_null(strstr(err.msg, "backoff"));
    sink_config_defaults(&c);
    c.kind = SINK_HTTP;
    c.url = "ftp://example.com";
    assert_null(sink_open(&c, &err));
    assert_non_null(strstr(err.msg, "http"));
    c.url = "http://127.0.0.1:1";
    c.bearer_token = "a\r\nX-Evil: 1";
    assert_null(sink_open(&c, &err));
    assert_non_null(strstr(err.msg, "bearer"));
    c.bearer_token = NULL;
    c.ca_file = "/nonexistent/ca.pem";
    assert_null(sink_open(&c, &err));
    assert_non_null(strstr(err.msg, "ca_file"));
}

static void test_http_series_name(void **state)
{
    (void)state;
    struct profile_record r = {0};
    r.app_name = strdup("my app:v2");
    assert_int_equal(profile_record_set_label(&r, "application_name", "my app:v2"), 0);
    assert_int_equal(profile_record_set_label(&r, "k8s.pod", " web-1,{x}=y "), 0);
    assert_int_equal(profile_record_set_label(&r, "2fa", "on"), 0);
    assert_int_equal(profile_record_set_label(&r, "__name__", "evil"), 0);
    assert_int_equal(profile_record_set_label(&r, "empty", "   "), 0);
    struct buf b = {0};
    assert_int_equal(sink_http_series_name(&r, &b), 0);
    assert_string_equal(b.data,
                        "my_app_v2{_2fa=on,application_name=my app:v2,k8s_pod=web-1__x__y}");
    buf_free(&b);
    profile_record_free(&r);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_writes_pprof_and_sidecar),
        T(test_names_never_overwrite),
        T(test_app_names_stay_inside),
        T(test_retries_spools_then_delivers_oldest_first),
        T(test_flush_spools_what_the_deadline_leaves_and_restart_delivers),
        T(test_flush_delivers_when_it_can),
        T(test_backlog_drains_in_bounded_steps),
        T(test_without_spool_drops_and_counts),
        T(test_unusable_records_counted),
        T(test_bad_configs_refused),
        cmocka_unit_test(test_http_series_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
