/* test_query: the query API's data answers over a real store. Profiles are real pprofs: built
 * with stackmerge's writer (exact stacks and values), and one recorded by the agent from a live
 * Python process and stored through the real Pyroscope ingest path. Merged pprof output is read
 * back with `go tool pprof`. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ingest.h"
#include "pprof_read.h"
#include "query.h"
#include "stackmerge.h"
#include "store.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S 1000000000LL
#define T0 1700000000LL /* a minute boundary: 1700000000 = 28333333 * 60 + 20 -> use T0M */
#define T0M (T0 - T0 % 3600)

struct fixture {
    char dir[64];
    struct store *st;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_query_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    struct cp_err err = {0};
    f->st = store_open(f->dir, &err);
    if (!f->st) return -1;
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

/* Stack text "main;mid;leaf" (root first), one value; frames get file "app.py", line = index. */
struct stack_spec {
    const char *stack;
    int64_t value;
};

static void add_stack(struct stackmerge *m, const char *text, int64_t value)
{
    struct cp_err err = {0};
    char copy[256];
    snprintf(copy, sizeof copy, "%s", text);
    const char *names[32];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(copy, ";", &save); t && n < 32;
         t = strtok_r(NULL, ";", &save))
        names[n++] = t;
    struct stackmerge_frame fr[32];
    for (size_t i = 0; i < n; i++) /* leaf first */
        fr[i] = (struct stackmerge_frame){names[n - 1 - i], "app.py", (int64_t)(n - 1 - i) + 1};
    assert_int_equal(stackmerge_add(m, fr, n, value, &err), 0);
}

/* Stores one profile of type cpu holding the given stacks. */
static void store_profile(struct store *st, const char *app, int64_t from_s, int64_t until_s,
                          const struct stack_spec *stacks, size_t n, json_t *labels)
{
    struct cp_err err = {0};
    struct stackmerge *m = stackmerge_new();
    for (size_t i = 0; i < n; i++)
        add_stack(m, stacks[i].stack, stacks[i].value);
    struct buf pb = {0};
    struct stackmerge_pprof_meta meta = {"cpu", "nanoseconds", from_s * S, (until_s - from_s) * S,
                                         0};
    assert_int_equal(stackmerge_encode_pprof(m, &meta, &pb, &err), 0);
    const char *types[] = {"cpu"};
    int64_t totals[] = {stackmerge_total(m)};
    struct store_profile_in in = {"p1",   "main", app,   from_s * S, until_s * S,
                                  labels, 1,      types, totals,     (const uint8_t *)pb.data,
                                  pb.len};
    assert_int_equal(store_profiles_add(st, &in, 1, &err), 0);
    buf_free(&pb);
    stackmerge_free(m);
    json_decref(labels);
}

static json_t *labels(const char *runtime, const char *version, const char *host)
{
    return json_pack("{s:s, s:s, s:s}", "runtime", runtime, "runtime_version", version, "host",
                     host);
}

static const struct stack_spec WEB_A[] = {{"main;handle;render", 30}, {"main;handle;db", 10}};
static const struct stack_spec WEB_B[] = {{"main;handle;render", 20}, {"main;idle", 5}};
static const struct stack_spec WORKER[] = {{"run;job", 7}};

/* web: [T0M+30, T0M+75) python 3.12 host h1; [T0M+200, T0M+245) python 3.11 host h2;
 * worker: [T0M+60, T0M+105) go. */
static void store_sample_data(struct store *st)
{
    store_profile(st, "web", T0M + 30, T0M + 75, WEB_A, 2, labels("python", "3.12", "h1"));
    store_profile(st, "web", T0M + 200, T0M + 245, WEB_B, 2, labels("python", "3.11", "h2"));
    store_profile(st, "worker", T0M + 60, T0M + 105, WORKER, 1, labels("go", "1.21", "h1"));
}

static void parse_ok(const char *q, struct query_params *p)
{
    struct cp_err err = {0};
    int rc = query_params_parse(q, T0M + 3600, p, &err);
    if (rc) fprintf(stderr, "%s: %s\n", q, err.msg);
    assert_int_equal(rc, 0);
}

static void parse_fails(const char *q, const char *msg)
{
    struct cp_err err = {0};
    struct query_params p;
    assert_int_equal(query_params_parse(q, T0M + 3600, &p, &err), -1);
    query_params_free(&p);
    assert_int_equal(err.code, CP_ERR_INVALID);
    if (!strstr(err.msg, msg)) fail_msg("'%s': got '%s', expected '%s'", q, err.msg, msg);
}

/* ---- params ---- */

static void test_params_defaults_and_values(void **state)
{
    (void)state;
    struct query_params p;
    parse_ok(NULL, &p);
    assert_int_equal(p.to, T0M + 3600);
    assert_int_equal(p.from, T0M + 3600 - 1800);
    assert_string_equal(p.profile_type, "cpu");
    assert_int_equal(p.out, QUERY_OUT_FLAMEBEARER);
    query_params_free(&p);
    parse_ok("from=100&to=200&profile_type=wall-time&out=pprof&x=1&", &p);
    assert_int_equal(p.from, 100);
    assert_int_equal(p.to, 200);
    assert_string_equal(p.profile_type, "wall");
    assert_int_equal(p.out, QUERY_OUT_PPROF);
    query_params_free(&p);
    parse_ok("runtime%5B%5D=python&runtime[]=go&runtime_mode=-1&host=a+b%20c&out=collapsed", &p);
    assert_int_equal(p.filters[QUERY_F_RUNTIME].nvalues, 2);
    assert_string_equal(p.filters[QUERY_F_RUNTIME].values[1], "go");
    assert_int_equal(p.filters[QUERY_F_RUNTIME].mode, -1);
    assert_string_equal(p.filters[QUERY_F_HOST].values[0], "a b c");
    assert_int_equal(p.filters[QUERY_F_HOST].mode, 1);
    assert_int_equal(p.out, QUERY_OUT_COLLAPSED);
    query_params_free(&p);
    parse_ok("to=5000", &p);
    assert_int_equal(p.from, 5000 - 1800);
    query_params_free(&p);
}

static void test_params_errors_name_the_parameter(void **state)
{
    (void)state;
    parse_fails("from=abc", "from: expected Unix seconds");
    parse_fails("to=12x", "to: expected Unix seconds");
    parse_fails("profile_type=foo", "profile_type: unknown 'foo'; one of cpu, wall, samples");
    parse_fails("out=dot", "out: unknown 'dot'");
    parse_fails("runtime_mode=2", "runtime_mode: expected 1 (include) or -1 (exclude)");
    parse_fails("from=200&to=100", "from: must be before to");
    parse_fails("from=0&to=999999999", "longer than");
    parse_fails("host=%zz", "bad percent-encoding");
    parse_fails("host=%4", "bad percent-encoding");
    char big[QUERY_MAX_QUERY_LEN + 10];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    parse_fails(big, "query: longer than");
    struct buf many = {0};
    for (int i = 0; i <= QUERY_MAX_FILTER_VALUES; i++)
        buf_printf(&many, "host[]=h%d&", i);
    parse_fails(many.data, "host[]: more than");
    buf_free(&many);
}

/* Garbage query strings: always 0 or -1, never a crash (ASan/UBSan watch). */
static void test_params_garbage(void **state)
{
    (void)state;
    static const char *const pieces[] = {
        "from",         "to",    "=",       "&",    "%",  "%4", "%41",
        "[]",           "_mode", "runtime", "host", "-1", "1",  "99999999999999999999",
        "profile_type", "out",   "+",       "\xff", "",   "cpu"};
    unsigned seed = 12345;
    for (int i = 0; i < 3000; i++) {
        char q[256] = "";
        size_t len = 0;
        int n = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 12;
        for (int k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            const char *piece = pieces[(seed >> 16) % (sizeof pieces / sizeof pieces[0])];
            size_t pl = strlen(piece);
            if (len + pl + 1 >= sizeof q) break;
            memcpy(q + len, piece, pl + 1);
            len += pl;
        }
        struct query_params p;
        struct cp_err err = {0};
        int rc = query_params_parse(q, 1700000000, &p, &err);
        assert_true(rc == 0 || (rc == -1 && err.code == CP_ERR_INVALID && err.msg[0]));
        query_params_free(&p);
    }
}

/* ---- applications ---- */

static void test_applications(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    store_sample_data(f->st);
    struct query_params p;
    char q[128];
    snprintf(q, sizeof q, "from=%lld&to=%lld", T0M, T0M + 3600);
    parse_ok(q, &p);
    json_t *j = query_applications(f->st, "p1", "main", &p, &err);
    assert_non_null(j);
    json_t *apps = json_object_get(j, "applications");
    assert_int_equal(json_object_size(apps), 2);
    json_t *web = json_object_get(apps, "web");
    assert_string_equal(json_string_value(json_object_get(web, "name")), "web");
    json_t *cpu = json_object_get(json_object_get(web, "profile_types"), "cpu");
    assert_string_equal(json_string_value(json_object_get(cpu, "title")), "CPU Time");
    assert_string_equal(json_string_value(json_object_get(cpu, "unit")), "nanoseconds");
    assert_string_equal(json_string_value(json_object_get(cpu, "aggregation")), "sum");
    assert_string_equal(json_string_value(json_array_get(json_object_get(web, "languages"), 0)),
                        "python");
    json_t *worker = json_object_get(apps, "worker");
    assert_string_equal(json_string_value(json_array_get(json_object_get(worker, "languages"), 0)),
                        "go");
    json_decref(j);
    query_params_free(&p);
    /* filtered: runtime go excluded */
    snprintf(q, sizeof q, "from=%lld&to=%lld&runtime[]=go&runtime_mode=-1", T0M, T0M + 3600);
    parse_ok(q, &p);
    j = query_applications(f->st, "p1", "main", &p, &err);
    assert_int_equal(json_object_size(json_object_get(j, "applications")), 1);
    json_decref(j);
    /* unknown environment: empty */
    j = query_applications(f->st, "p1", "nope", &p, &err);
    assert_int_equal(json_object_size(json_object_get(j, "applications")), 0);
    json_decref(j);
    query_params_free(&p);
}

/* ---- timeline ---- */

static void test_timeline_grain_prorate_gaps(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    store_sample_data(f->st);
    struct query_params p;
    char q[128];
    snprintf(q, sizeof q, "from=%lld&to=%lld", T0M, T0M + 3600);
    parse_ok(q, &p);
    json_t *j = query_timeline(f->st, "p1", "main", "web", &p, 80640, &err);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "grain")), 60);
    assert_string_equal(json_string_value(json_object_get(j, "unit")), "nanoseconds_per_second");
    assert_string_equal(json_string_value(json_object_get(j, "aggregation_type")), "sum");
    assert_int_equal(json_integer_value(json_object_get(j, "retention")), 80640);
    assert_int_equal(json_integer_value(json_object_get(j, "from")), T0M);
    json_t *pts = json_object_get(j, "points");
    assert_int_equal(json_array_size(pts), 60);
    /* profile A (total 40 over [30, 75)): 30 s in minute 0, 15 s in minute 1 */
    json_t *p0 = json_array_get(pts, 0), *p1 = json_array_get(pts, 1), *p2 = json_array_get(pts, 2);
    assert_int_equal(json_integer_value(json_object_get(p0, "timestamp")), T0M);
    assert_int_equal(json_integer_value(json_object_get(p1, "timestamp")), T0M + 60);
    double v0 = json_real_value(json_object_get(p0, "value"));
    double v1 = json_real_value(json_object_get(p1, "value"));
    assert_true(v0 > 40.0 * 30 / 45 / 60 - 1e-9 && v0 < 40.0 * 30 / 45 / 60 + 1e-9);
    assert_true(v1 > 40.0 * 15 / 45 / 60 - 1e-9 && v1 < 40.0 * 15 / 45 / 60 + 1e-9);
    /* minute 2 has no profile: no value key at all */
    assert_null(json_object_get(p2, "value"));
    assert_non_null(json_object_get(json_array_get(pts, 3), "value")); /* B: [200, 245) */
    assert_null(json_object_get(json_array_get(pts, 5), "value"));
    /* sum of value * grain over all points = sum of totals of web (40 + 25) */
    double sum = 0;
    size_t i;
    json_t *pt;
    json_array_foreach(pts, i, pt) sum += json_real_value(json_object_get(pt, "value")) * 60;
    assert_true(sum > 65 - 1e-6 && sum < 65 + 1e-6);
    json_decref(j);
    query_params_free(&p);

    /* other profile type: every point is a gap */
    snprintf(q, sizeof q, "from=%lld&to=%lld&profile_type=wall", T0M, T0M + 3600);
    parse_ok(q, &p);
    j = query_timeline(f->st, "p1", "main", "web", &p, 80640, &err);
    json_array_foreach(json_object_get(j, "points"), i, pt)
        assert_null(json_object_get(pt, "value"));
    json_decref(j);
    query_params_free(&p);

    /* filter: host h2 only keeps profile B */
    snprintf(q, sizeof q, "from=%lld&to=%lld&host[]=h2", T0M, T0M + 3600);
    parse_ok(q, &p);
    j = query_timeline(f->st, "p1", "main", "web", &p, 80640, &err);
    assert_null(json_object_get(json_array_get(json_object_get(j, "points"), 0), "value"));
    assert_non_null(json_object_get(json_array_get(json_object_get(j, "points"), 3), "value"));
    json_decref(j);
    query_params_free(&p);
}

static void test_timeline_grain_rule(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    struct {
        int64_t range, grain;
        size_t points;
    } cases[] = {
        {1800, 60, 30},    {12000, 60, 200},       {12060, 120, 101},
        {86400, 600, 144}, {7 * 86400, 3600, 168}, {30 * 86400, 3600, 720},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct query_params p;
        char q[128];
        snprintf(q, sizeof q, "from=%lld&to=%lld", T0M, T0M + (long long)cases[c].range);
        parse_ok(q, &p);
        json_t *j = query_timeline(f->st, "p1", "main", "web", &p, 1, &err);
        assert_int_equal(json_integer_value(json_object_get(j, "grain")), cases[c].grain);
        assert_int_equal(json_array_size(json_object_get(j, "points")), cases[c].points);
        json_decref(j);
        query_params_free(&p);
    }
}

/* ---- merge ---- */

static char *merge_text(struct store *st, const char *q, const char *app, const char **ctype,
                        char *disp)
{
    struct cp_err err = {0};
    struct query_params p;
    parse_ok(q, &p);
    struct buf body = {0};
    int rc = query_merge(st, "p1", "main", app, &p, &body, ctype, disp, 160, &err);
    if (rc) fprintf(stderr, "merge: %s\n", err.msg);
    assert_int_equal(rc, 0);
    query_params_free(&p);
    if (!body.data) buf_append_str(&body, "");
    return body.data;
}

static void test_merge_collapsed_and_filters(void **state)
{
    struct fixture *f = *state;
    store_sample_data(f->st);
    const char *ct;
    char disp[160], q[160];
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=collapsed", T0M, T0M + 3600);
    char *text = merge_text(f->st, q, "web", &ct, disp);
    assert_string_equal(ct, "text/plain; charset=utf-8");
    assert_string_equal(disp, "");
    assert_string_equal(text, "main (app.py:1);handle (app.py:2);db (app.py:3) 10\n"
                              "main (app.py:1);handle (app.py:2);render (app.py:3) 50\n"
                              "main (app.py:1);idle (app.py:2) 5\n");
    free(text);
    /* only the second profile's range */
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=collapsed", T0M + 100, T0M + 3600);
    text = merge_text(f->st, q, "web", &ct, disp);
    assert_string_equal(text, "main (app.py:1);handle (app.py:2);render (app.py:3) 20\n"
                              "main (app.py:1);idle (app.py:2) 5\n");
    free(text);
    /* filter runtime_version 3.12 only */
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=collapsed&runtime_version[]=3.12", T0M,
             T0M + 3600);
    text = merge_text(f->st, q, "web", &ct, disp);
    assert_string_equal(text, "main (app.py:1);handle (app.py:2);db (app.py:3) 10\n"
                              "main (app.py:1);handle (app.py:2);render (app.py:3) 30\n");
    free(text);
    /* exclude both hosts: nothing */
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=collapsed&host[]=h1&host[]=h2&host_mode=-1", T0M,
             T0M + 3600);
    text = merge_text(f->st, q, "web", &ct, disp);
    assert_string_equal(text, "");
    free(text);
    /* another type: nothing */
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=collapsed&profile_type=wall", T0M, T0M + 3600);
    text = merge_text(f->st, q, "web", &ct, disp);
    assert_string_equal(text, "");
    free(text);
}

static void test_merge_flamebearer(void **state)
{
    struct fixture *f = *state;
    store_sample_data(f->st);
    const char *ct;
    char disp[160], q[160];
    snprintf(q, sizeof q, "from=%lld&to=%lld", T0M, T0M + 3600);
    char *text = merge_text(f->st, q, "web", &ct, disp);
    assert_string_equal(ct, "application/json");
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    json_t *fb = json_object_get(j, "flamebearer");
    assert_int_equal(json_integer_value(json_object_get(fb, "numTicks")), 65);
    assert_int_equal(json_integer_value(json_object_get(fb, "maxSelf")), 50);
    assert_string_equal(json_string_value(json_array_get(json_object_get(fb, "names"), 0)),
                        "total");
    json_t *name1 =
        json_loads(json_string_value(json_array_get(json_object_get(fb, "names"), 1)), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(name1, "name")), "main");
    assert_string_equal(json_string_value(json_object_get(name1, "filename")), "app.py");
    json_decref(name1);
    json_t *md = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "format")), "single");
    assert_string_equal(json_string_value(json_object_get(md, "spyName")), "conprof");
    assert_int_equal(json_integer_value(json_object_get(md, "sampleRate")), 100);
    assert_string_equal(json_string_value(json_object_get(md, "units")), "nanoseconds");
    assert_string_equal(json_string_value(json_object_get(md, "name")), "cpu");
    assert_true(json_is_null(json_object_get(j, "timeline")));
    assert_string_equal(json_string_value(json_object_get(j, "_profile_type")), "cpu");
    assert_string_equal(json_string_value(json_object_get(j, "_application")), "web");
    assert_int_equal(json_integer_value(json_object_get(j, "_from")), T0M);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
    json_decref(j);
    free(text);
}

static char *run_capture(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    struct buf out = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
        buf_append(&out, chunk, n);
    int status = pclose(p);
    if (status) fprintf(stderr, "%s failed:\n%s\n", cmd, out.data);
    assert_int_equal(status, 0);
    if (!out.data) buf_append_str(&out, "");
    return out.data;
}

static void test_merge_pprof_read_by_go_tool(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    store_sample_data(f->st);
    struct query_params p;
    char q[160];
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=pprof", T0M, T0M + 3600);
    parse_ok(q, &p);
    struct buf body = {0};
    const char *ct;
    char disp[160];
    assert_int_equal(
        query_merge(f->st, "p1", "main", "web", &p, &body, &ct, disp, sizeof disp, &err), 0);
    query_params_free(&p);
    assert_string_equal(ct, "application/octet-stream");
    assert_string_equal(disp, "attachment; filename=\"web-cpu.pb.gz\"");
    char path[128];
    snprintf(path, sizeof path, "%s/merged.pb.gz", f->dir);
    FILE *out = fopen(path, "wb");
    fwrite(body.data, 1, body.len, out);
    fclose(out);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "go tool pprof -raw %s 2>&1", path);
    char *raw = run_capture(cmd);
    assert_non_null(strstr(raw, "cpu/nanoseconds"));
    assert_non_null(strstr(raw, "render app.py:3"));
    free(raw);
    snprintf(cmd, sizeof cmd, "go tool pprof -top %s 2>&1", path);
    char *top = run_capture(cmd);
    assert_non_null(strstr(top, "65ns total"));
    assert_non_null(strstr(top, "50ns 76.92% 76.92%       50ns 76.92%  render"));
    free(top);
    buf_free(&body);
}

static void test_merge_skips_corrupt_profile(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    store_sample_data(f->st);
    const char *types[] = {"cpu"};
    int64_t totals[] = {99};
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    struct store_profile_in in = {"p1", "main", "web",  (T0M + 80) * S, (T0M + 90) * S, NULL,
                                  1,    types,  totals, junk,           sizeof junk};
    assert_int_equal(store_profiles_add(f->st, &in, 1, &err), 0);
    const char *ct;
    char disp[160], q[160];
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=collapsed", T0M, T0M + 3600);
    char *text = merge_text(f->st, q, "web", &ct, disp);
    assert_non_null(strstr(text, "render (app.py:3) 50\n"));
    free(text);
}

/* ---- filter ---- */

static void test_filter_values(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    store_sample_data(f->st);
    store_profile(f->st, "web", T0M + 300, T0M + 345, WEB_B, 2, labels("python", "3.12", "h1"));
    struct query_params p;
    char q[128];
    snprintf(q, sizeof q, "from=%lld&to=%lld", T0M, T0M + 3600);
    parse_ok(q, &p);
    json_t *j = query_filter(f->st, "p1", "main", "web", &p, &err);
    assert_non_null(j);
    json_t *fields = json_object_get(j, "fields");
    json_t *ver = json_object_get(fields, "runtime_version");
    assert_int_equal(json_integer_value(json_object_get(ver, "distinct_values")), 2);
    json_t *v0 = json_array_get(json_object_get(ver, "values"), 0);
    assert_string_equal(json_string_value(json_object_get(v0, "value")), "3.12");
    assert_int_equal(json_integer_value(json_object_get(v0, "count")), 2);
    json_t *rt = json_object_get(fields, "runtime");
    assert_int_equal(json_integer_value(json_object_get(rt, "distinct_values")), 1);
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(rt, "values"), 0), "count")),
                     3);
    json_t *arch = json_object_get(fields, "runtime_arch");
    assert_int_equal(json_integer_value(json_object_get(arch, "distinct_values")), 0);
    assert_non_null(json_object_get(fields, "probe_version"));
    assert_non_null(json_object_get(fields, "runtime_os"));
    assert_int_equal(json_integer_value(json_object_get(j, "max_applicable_filters")), 5);
    json_decref(j);
    query_params_free(&p);
}

/* ---- the real pipeline: agent -> Pyroscope ingest -> store -> merge ---- */

static void record_agent_profile(struct buf *out)
{
    const char *agent = "build/conprof-agent";
    if (access(agent, X_OK) != 0) fail_msg("%s missing: run `make` first", agent);
    const char *py = "/root/.pyenv/versions/3.11.7/bin/python3";
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(py, py, "-c",
              "def spin(n):\n    return sum(i * i for i in range(n))\n"
              "def serve():\n    return spin(100000)\n"
              "while True:\n    serve()\n",
              (char *)NULL);
        _exit(127);
    }
    usleep(400000);
    char path[] = "/tmp/test_query_agent_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s record --pid %d --duration 1 --format pprof -o %s -q 2>&1", agent,
             (int)pid, path);
    free(run_capture(cmd));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    FILE *f = fopen(path, "rb");
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
    unlink(path);
}

static void test_agent_profile_through_ingest(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    struct buf gz = {0};
    record_agent_profile(&gz);
    struct ingest_batch batch = {0};
    char q[160];
    snprintf(q, sizeof q, "name=api%%7Bruntime%%3Dpython%%7D&from=%lld&until=%lld", T0M + 10,
             T0M + 55);
    int rc = ingest_parse_pyroscope(q, (const uint8_t *)gz.data, gz.len, &batch, &err);
    if (rc) fprintf(stderr, "ingest: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(batch.count, 1);
    struct ingest_profile *ip = &batch.items[0];
    struct store_profile_in in = {"p1",         "main",
                                  ip->app,      ip->from_ns,
                                  ip->until_ns, ip->labels,
                                  ip->ntypes,   (const char *const *)ip->types,
                                  ip->totals,   (const uint8_t *)ip->pprof.data,
                                  ip->pprof.len};
    assert_int_equal(store_profiles_add(f->st, &in, 1, &err), 0);
    int64_t wall_total = 0;
    for (size_t i = 0; i < ip->ntypes; i++)
        if (!strcmp(ip->types[i], "wall")) wall_total = ip->totals[i];
    assert_true(wall_total > 0);
    ingest_batch_free(&batch);

    const char *ct;
    char disp[160];
    snprintf(q, sizeof q, "from=%lld&to=%lld&out=collapsed&profile_type=wall", T0M, T0M + 600);
    char *text = merge_text(f->st, q, "api", &ct, disp);
    assert_non_null(strstr(text, "serve (<string>:4);spin (<string>:2)"));
    int64_t sum = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        char *sp = nl;
        while (sp > line && sp[-1] != ' ')
            sp--;
        sum += strtoll(sp, NULL, 10);
        line = nl + 1;
    }
    assert_int_equal(sum, wall_total); /* the merge keeps every ns of the type */
    free(text);
    struct query_params p;
    snprintf(q, sizeof q, "from=%lld&to=%lld", T0M, T0M + 600);
    parse_ok(q, &p);
    json_t *apps = query_applications(f->st, "p1", "main", &p, &err);
    json_t *types = json_object_get(json_object_get(json_object_get(apps, "applications"), "api"),
                                    "profile_types");
    assert_non_null(json_object_get(types, "cpu"));
    assert_non_null(json_object_get(types, "wall"));
    assert_non_null(json_object_get(types, "samples"));
    json_decref(apps);
    query_params_free(&p);
    buf_free(&gz);
}

/* One hour of one application: 80 profiles of 45 s, ~2,000 distinct stacks each. Timed. */
static void test_merge_one_hour_size(void **state)
{
    struct fixture *f = *state;
    struct cp_err err = {0};
    char stack[256];
    for (int prof = 0; prof < 80; prof++) {
        struct stackmerge *m = stackmerge_new();
        for (int s = 0; s < 2000; s++) {
            int k = (s + prof * 37) % 2600; /* overlapping but shifting stack sets */
            snprintf(stack, sizeof stack, "main;serve;route%d;handler%d;query%d;leaf%d", k % 7,
                     k % 50, k % 400, k);
            add_stack(m, stack, 10000000);
        }
        struct buf pb = {0};
        struct stackmerge_pprof_meta meta = {"cpu", "nanoseconds", 0, 45 * S, 0};
        assert_int_equal(stackmerge_encode_pprof(m, &meta, &pb, &err), 0);
        const char *types[] = {"cpu"};
        int64_t totals[] = {stackmerge_total(m)};
        int64_t from = T0M + prof * 45;
        struct store_profile_in in = {"p1",  "main", "big", from * S, (from + 45) * S,
                                      NULL,  1,      types, totals,   (const uint8_t *)pb.data,
                                      pb.len};
        assert_int_equal(store_profiles_add(f->st, &in, 1, &err), 0);
        buf_free(&pb);
        stackmerge_free(m);
    }
    const enum query_out outs[] = {QUERY_OUT_FLAMEBEARER, QUERY_OUT_PPROF, QUERY_OUT_COLLAPSED};
    const char *names[] = {"flamebearer", "pprof", "collapsed"};
    for (int o = 0; o < 3; o++) {
        struct query_params p;
        char q[128];
        snprintf(q, sizeof q, "from=%lld&to=%lld&out=%s", T0M, T0M + 3600, names[o]);
        parse_ok(q, &p);
        assert_int_equal(p.out, outs[o]);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        struct buf body = {0};
        const char *ct;
        assert_int_equal(query_merge(f->st, "p1", "main", "big", &p, &body, &ct, NULL, 0, &err), 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
        print_message("merge 80 x 2000 stacks -> %s: %.1f ms (%zu bytes; ASan build)\n", names[o],
                      ms, body.len);
        assert_true(body.len > 1000);
        buf_free(&body);
        query_params_free(&p);
    }
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_defaults_and_values),
        cmocka_unit_test(test_params_errors_name_the_parameter),
        cmocka_unit_test(test_params_garbage),
        T(test_applications),
        T(test_timeline_grain_prorate_gaps),
        T(test_timeline_grain_rule),
        T(test_merge_collapsed_and_filters),
        T(test_merge_flamebearer),
        T(test_merge_pprof_read_by_go_tool),
        T(test_merge_skips_corrupt_profile),
        T(test_filter_values),
        T(test_agent_profile_through_ingest),
        T(test_merge_one_hour_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
