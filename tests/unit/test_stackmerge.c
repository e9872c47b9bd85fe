/* test_stackmerge: merging stacks and the three writers, checked against exact expected output,
 * against pprof_read (round trip) and against `go tool pprof`, plus a merge of a real profile the
 * agent recorded from a running Python process. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pprof_read.h"
#include "stackmerge.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define F(fn, file, line)                                                                          \
    {                                                                                              \
        fn, file, line                                                                             \
    }

/* leaf first */
static const struct stackmerge_frame STACK_A[] = {F("leaf", "a.py", 3), F("mid", "a.py", 2),
                                                  F("main", "a.py", 1)};
static const struct stackmerge_frame STACK_B[] = {F("other", "b.py", 9), F("main", "a.py", 1)};
static const struct stackmerge_frame STACK_C[] = {F("main", "a.py", 1)};

static struct stackmerge *sample_merge(void)
{
    struct cp_err err = {0};
    struct stackmerge *m = stackmerge_new();
    assert_non_null(m);
    assert_int_equal(stackmerge_add(m, STACK_A, 3, 30, &err), 0);
    assert_int_equal(stackmerge_add(m, STACK_B, 2, 10, &err), 0);
    assert_int_equal(stackmerge_add(m, STACK_A, 3, 20, &err), 0);
    assert_int_equal(stackmerge_add(m, STACK_C, 1, 5, &err), 0);
    return m;
}

static void test_add_sums_identical_stacks(void **state)
{
    (void)state;
    struct stackmerge *m = sample_merge();
    assert_int_equal(stackmerge_stack_count(m), 3);
    assert_int_equal(stackmerge_total(m), 65);
    stackmerge_free(m);
}

static void test_collapsed_exact(void **state)
{
    (void)state;
    struct stackmerge *m = sample_merge();
    struct cp_err err = {0};
    struct buf out = {0};
    assert_int_equal(stackmerge_write_collapsed(m, &out, &err), 0);
    assert_string_equal(out.data, "main (a.py:1) 5\n"
                                  "main (a.py:1);mid (a.py:2);leaf (a.py:3) 50\n"
                                  "main (a.py:1);other (b.py:9) 10\n");
    buf_free(&out);
    stackmerge_free(m);
}

static void test_collapsed_escapes_separators_and_skips_zero(void **state)
{
    (void)state;
    struct cp_err err = {0};
    struct stackmerge *m = stackmerge_new();
    struct stackmerge_frame odd[] = {F("a;b\nc", "x.py", 1)};
    assert_int_equal(stackmerge_add(m, odd, 1, 7, &err), 0);
    assert_int_equal(stackmerge_add(m, STACK_C, 1, 0, &err), 0);
    struct buf out = {0};
    assert_int_equal(stackmerge_write_collapsed(m, &out, &err), 0);
    assert_string_equal(out.data, "a:b c (x.py:1) 7\n");
    buf_free(&out);
    stackmerge_free(m);
}

/* Decodes Pyroscope's delta-encoded levels back to absolute offsets, as its frontend does. */
static void undelta(json_t *levels)
{
    size_t i;
    json_t *level;
    json_array_foreach(levels, i, level)
    {
        json_int_t prev = 0;
        for (size_t j = 0; j < json_array_size(level); j += 4) {
            json_int_t x = json_integer_value(json_array_get(level, j)) + prev;
            json_integer_set(json_array_get(level, j), x);
            prev = x + json_integer_value(json_array_get(level, j + 1));
        }
    }
}

static void test_flamebearer_exact(void **state)
{
    (void)state;
    struct stackmerge *m = sample_merge();
    struct cp_err err = {0};
    struct stackmerge_flamebearer_meta meta = {
        .units = "samples", .name = "cpu", .name_style = STACKMERGE_NAMES_PLAIN};
    json_t *fb = stackmerge_flamebearer(m, &meta, &err);
    assert_non_null(fb);
    char *text = json_dumps(json_object_get(fb, "flamebearer"), JSON_COMPACT | JSON_SORT_KEYS);
    /* root total 65; main 65 (self 5); children sorted by name: mid (50) then other (10);
     * other's delta offset is 0 because it starts where mid ends. */
    assert_string_equal(text,
                        "{\"levels\":[[0,65,0,0],[0,65,5,1],[0,50,0,2,0,10,10,4],[0,50,50,3]],"
                        "\"maxSelf\":50,\"names\":[\"total\",\"main (a.py:1)\",\"mid (a.py:2)\","
                        "\"leaf (a.py:3)\",\"other (b.py:9)\"],\"numTicks\":65}");
    free(text);
    json_t *md = json_object_get(fb, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "format")), "single");
    assert_string_equal(json_string_value(json_object_get(md, "spyName")), "conprof");
    assert_int_equal(json_integer_value(json_object_get(md, "sampleRate")), 100);
    assert_string_equal(json_string_value(json_object_get(md, "units")), "samples");
    assert_string_equal(json_string_value(json_object_get(md, "name")), "cpu");
    assert_int_equal(json_integer_value(json_object_get(fb, "version")), 1);
    json_decref(fb);
    stackmerge_free(m);
}

static void test_flamebearer_delta_with_gap(void **state)
{
    (void)state;
    /* Two roots' children where the first child has self time under it: level 2 nodes of
     * different parents need a non-zero delta. */
    struct cp_err err = {0};
    struct stackmerge *m = stackmerge_new();
    struct stackmerge_frame s1[] = {F("x", "f", 1), F("a", "f", 1)};
    struct stackmerge_frame s2[] = {F("a", "f", 1)};
    struct stackmerge_frame s3[] = {F("y", "f", 1), F("b", "f", 1)};
    assert_int_equal(stackmerge_add(m, s1, 2, 3, &err), 0);
    assert_int_equal(stackmerge_add(m, s2, 1, 4, &err), 0);
    assert_int_equal(stackmerge_add(m, s3, 2, 2, &err), 0);
    struct stackmerge_flamebearer_meta meta = {.name_style = STACKMERGE_NAMES_PLAIN};
    json_t *fb = stackmerge_flamebearer(m, &meta, &err);
    json_t *levels = json_object_get(json_object_get(fb, "flamebearer"), "levels");
    char *raw = json_dumps(json_array_get(levels, 2), JSON_COMPACT);
    /* x at 0 (width 3), y at a's end = 7: delta 7 - 3 = 4 */
    assert_string_equal(raw, "[0,3,3,2,4,2,2,4]");
    free(raw);
    undelta(levels);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(levels, 2), 4)), 7);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(fb, "flamebearer"), "maxSelf")), 4);
    json_decref(fb);
    stackmerge_free(m);
}

static void test_flamebearer_location_json_names(void **state)
{
    (void)state;
    struct stackmerge *m = sample_merge();
    struct cp_err err = {0};
    struct stackmerge_flamebearer_meta meta = {.name_style = STACKMERGE_NAMES_LOCATION_JSON};
    json_t *fb = stackmerge_flamebearer(m, &meta, &err);
    json_t *names = json_object_get(json_object_get(fb, "flamebearer"), "names");
    assert_string_equal(json_string_value(json_array_get(names, 1)),
                        "{\"filename\":\"a.py\",\"name\":\"main\",\"line\":1}");
    json_decref(fb);
    stackmerge_free(m);
}

static void test_flamebearer_min_ticks_folds(void **state)
{
    (void)state;
    struct stackmerge *m = sample_merge();
    struct cp_err err = {0};
    struct stackmerge_flamebearer_meta meta = {.name_style = STACKMERGE_NAMES_PLAIN,
                                               .min_ticks = 20};
    json_t *fb = stackmerge_flamebearer(m, &meta, &err);
    json_t *levels = json_object_get(json_object_get(fb, "flamebearer"), "levels");
    char *raw = json_dumps(levels, JSON_COMPACT);
    /* "other" (10) is folded into main's self: 5 + 10 */
    assert_string_equal(raw, "[[0,65,0,0],[0,65,15,1],[0,50,0,2],[0,50,50,3]]");
    free(raw);
    json_decref(fb);
    stackmerge_free(m);
}

static void test_pprof_round_trip(void **state)
{
    (void)state;
    struct stackmerge *m = sample_merge();
    struct cp_err err = {0};
    struct buf gz = {0}, raw = {0};
    struct stackmerge_pprof_meta meta = {"cpu", "nanoseconds", 1700000000000000000LL,
                                         3600000000000LL, 0};
    assert_int_equal(stackmerge_write_pprof(m, &meta, &gz, &err), 0);
    assert_int_equal((uint8_t)gz.data[0], 0x1f);
    assert_int_equal(pprof_decompress((const uint8_t *)gz.data, gz.len, 1 << 20, &raw, &err), 0);
    struct pprof_decoded d;
    assert_int_equal(pprof_decode((const uint8_t *)raw.data, raw.len, &d, &err), 0);
    assert_int_equal(d.ntypes, 1);
    assert_string_equal(d.type_names[0], "cpu");
    assert_string_equal(d.type_units[0], "nanoseconds");
    assert_int_equal(d.nsamples, 3);
    assert_int_equal(d.time_nanos, 1700000000000000000LL);
    int64_t total = 0;
    pprof_decoded_totals(&d, &total);
    assert_int_equal(total, 65);
    /* merging the decoded profile twice gives the same stacks with doubled values */
    struct stackmerge *m2 = stackmerge_new();
    assert_int_equal(stackmerge_add_decoded(m2, &d, 0, &err), 0);
    assert_int_equal(stackmerge_add_decoded(m2, &d, 0, &err), 0);
    assert_int_equal(stackmerge_stack_count(m2), 3);
    assert_int_equal(stackmerge_total(m2), 130);
    struct buf c = {0};
    assert_int_equal(stackmerge_write_collapsed(m2, &c, &err), 0);
    assert_string_equal(c.data, "main (a.py:1) 10\n"
                                "main (a.py:1);mid (a.py:2);leaf (a.py:3) 100\n"
                                "main (a.py:1);other (b.py:9) 20\n");
    buf_free(&c);
    stackmerge_free(m2);
    pprof_decoded_free(&d);
    buf_free(&gz);
    buf_free(&raw);
    stackmerge_free(m);
}

/* Runs a shell command and returns its stdout (caller frees); asserts exit status 0. */
static char *run_capture(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    struct buf out = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
        assert_int_equal(buf_append(&out, chunk, n), 0);
    int status = pclose(p);
    if (status != 0) fprintf(stderr, "command failed (%d): %s\n%s\n", status, cmd, out.data);
    assert_int_equal(status, 0);
    if (!out.data) buf_append_str(&out, "");
    return out.data;
}

static void write_file(const char *path, const struct buf *b)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b->data, 1, b->len, f), b->len);
    fclose(f);
}

static void test_go_tool_pprof_reads_merge(void **state)
{
    (void)state;
    struct stackmerge *m = sample_merge();
    struct cp_err err = {0};
    struct buf gz = {0};
    struct stackmerge_pprof_meta meta = {"wall", "nanoseconds", 1700000000000000000LL,
                                         60000000000LL, 0};
    assert_int_equal(stackmerge_write_pprof(m, &meta, &gz, &err), 0);
    char path[] = "/tmp/test_stackmerge_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, &gz);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "go tool pprof -raw %s 2>&1", path);
    char *raw = run_capture(cmd);
    assert_non_null(strstr(raw, "wall/nanoseconds"));
    assert_non_null(strstr(raw, "leaf a.py:3"));
    snprintf(cmd, sizeof cmd, "go tool pprof -top -nodecount=10 %s 2>&1", path);
    char *top = run_capture(cmd);
    /* leaf has the most self time: 50 of 65 */
    assert_non_null(strstr(top, "50ns 76.92% 76.92%"));
    assert_non_null(strstr(top, "leaf"));
    free(raw);
    free(top);
    unlink(path);
    buf_free(&gz);
    stackmerge_free(m);
}

static void test_depth_truncation_keeps_root_side(void **state)
{
    (void)state;
    struct cp_err err = {0};
    size_t depth = STACKMERGE_MAX_DEPTH + 10;
    struct stackmerge_frame *fr = calloc(depth, sizeof *fr);
    char(*names)[16] = calloc(depth, 16);
    for (size_t i = 0; i < depth; i++) {
        snprintf(names[i], 16, "f%zu", i);
        fr[i] = (struct stackmerge_frame){names[i], "d.py", (int64_t)i};
    }
    struct stackmerge *m = stackmerge_new();
    assert_int_equal(stackmerge_add(m, fr, depth, 1, &err), 0);
    struct buf out = {0};
    assert_int_equal(stackmerge_write_collapsed(m, &out, &err), 0);
    /* the root (last frame) is kept; the 10 innermost frames are dropped */
    char root[64], leaf[64];
    snprintf(root, sizeof root, "f%zu (d.py:%zu);", depth - 1, depth - 1);
    snprintf(leaf, sizeof leaf, ";f10 (d.py:10) 1\n");
    assert_true(strncmp(out.data, root, strlen(root)) == 0);
    assert_non_null(strstr(out.data, leaf));
    assert_null(strstr(out.data, "f9 (d.py:9)"));
    buf_free(&out);
    stackmerge_free(m);
    free(fr);
    free(names);
}

static void test_saturation_and_negative(void **state)
{
    (void)state;
    struct cp_err err = {0};
    struct stackmerge *m = stackmerge_new();
    assert_int_equal(stackmerge_add(m, STACK_C, 1, INT64_MAX, &err), 0);
    assert_int_equal(stackmerge_add(m, STACK_C, 1, 5, &err), 0);
    assert_int_equal(stackmerge_total(m), INT64_MAX);
    assert_int_equal(stackmerge_add(m, STACK_B, 2, -4, &err), 0);
    struct stackmerge_flamebearer_meta meta = {.name_style = STACKMERGE_NAMES_PLAIN};
    json_t *fb = stackmerge_flamebearer(m, &meta, &err);
    /* the negative stack is left out of the flamebearer */
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(fb, "flamebearer"), "numTicks")),
        INT64_MAX);
    json_decref(fb);
    stackmerge_free(m);
}

static void test_empty_merge_writers(void **state)
{
    (void)state;
    struct cp_err err = {0};
    struct stackmerge *m = stackmerge_new();
    struct buf c = {0}, gz = {0}, raw = {0};
    assert_int_equal(stackmerge_write_collapsed(m, &c, &err), 0);
    assert_int_equal(c.len, 0);
    struct stackmerge_pprof_meta meta = {"cpu", "nanoseconds", 0, 0, 0};
    assert_int_equal(stackmerge_write_pprof(m, &meta, &gz, &err), 0);
    assert_int_equal(pprof_decompress((const uint8_t *)gz.data, gz.len, 1 << 20, &raw, &err), 0);
    struct pprof_decoded d;
    assert_int_equal(pprof_decode((const uint8_t *)raw.data, raw.len, &d, &err), 0);
    assert_int_equal(d.nsamples, 0);
    pprof_decoded_free(&d);
    struct stackmerge_flamebearer_meta meta2 = {0};
    json_t *fb = stackmerge_flamebearer(m, &meta2, &err);
    char *t = json_dumps(json_object_get(fb, "flamebearer"), JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(t, "{\"levels\":[[0,0,0,0]],\"maxSelf\":0,\"names\":[\"total\"],"
                           "\"numTicks\":0}");
    free(t);
    json_decref(fb);
    buf_free(&c);
    buf_free(&gz);
    buf_free(&raw);
    stackmerge_free(m);
}

static void test_merge_of_merges_equals_one_merge(void **state)
{
    (void)state;
    struct cp_err err = {0};
    struct stackmerge *a = stackmerge_new(), *b = stackmerge_new();
    assert_int_equal(stackmerge_add(a, STACK_A, 3, 30, &err), 0);
    assert_int_equal(stackmerge_add(a, STACK_C, 1, 5, &err), 0);
    assert_int_equal(stackmerge_add(b, STACK_B, 2, 10, &err), 0);
    assert_int_equal(stackmerge_add(b, STACK_A, 3, 20, &err), 0);
    assert_int_equal(stackmerge_merge(a, b, &err), 0);
    struct stackmerge *all = sample_merge();
    struct buf x = {0}, y = {0};
    assert_int_equal(stackmerge_write_collapsed(a, &x, &err), 0);
    assert_int_equal(stackmerge_write_collapsed(all, &y, &err), 0);
    assert_string_equal(x.data, y.data);
    assert_int_equal(stackmerge_total(a), 65);
    assert_int_equal(stackmerge_stack_count(a), 3);
    buf_free(&x);
    buf_free(&y);
    stackmerge_free(a);
    stackmerge_free(b);
    stackmerge_free(all);
}

static void test_flamebearer_text_escapes_and_extra(void **state)
{
    (void)state;
    struct cp_err err = {0};
    struct stackmerge *m = stackmerge_new();
    struct stackmerge_frame odd[] = {F("q\"b\\s\x01", "caf\xc3\xa9.py", 1),
                                     F("bad\xff\xfe", "x.py", 2)};
    assert_int_equal(stackmerge_add(m, odd, 2, 3, &err), 0);
    for (int style = 0; style < 2; style++) {
        struct stackmerge_flamebearer_meta meta = {.name_style = style, .units = "a\"b"};
        json_t *extra = json_pack("{s:n, s:s}", "timeline", "_application", "web");
        struct buf out = {0};
        assert_int_equal(stackmerge_write_flamebearer(m, &meta, extra, &out, &err), 0);
        json_error_t jerr;
        json_t *j = json_loads(out.data, 0, &jerr);
        if (!j) fail_msg("not JSON (%s): %s", jerr.text, out.data);
        assert_true(json_is_null(json_object_get(j, "timeline")));
        assert_string_equal(json_string_value(json_object_get(j, "_application")), "web");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(j, "metadata"), "units")), "a\"b");
        json_t *names = json_object_get(json_object_get(j, "flamebearer"), "names");
        const char *leaf = json_string_value(json_array_get(names, 2));
        if (style == STACKMERGE_NAMES_PLAIN)
            assert_string_equal(leaf, "q\"b\\s\x01 (caf\xc3\xa9.py:1)");
        else
            assert_non_null(strstr(leaf, "caf\xc3\xa9.py"));
        const char *root = json_string_value(json_array_get(names, 1));
        assert_non_null(root); /* invalid UTF-8 replaced, still a string */
        json_decref(j);
        json_decref(extra);
        buf_free(&out);
    }
    stackmerge_free(m);
}

/* A profile the agent recorded from a live Python process, merged with itself. */
static void test_merge_real_agent_profile(void **state)
{
    (void)state;
    const char *agent = "build/conprof-agent";
    if (access(agent, X_OK) != 0) fail_msg("%s missing: run `make` first", agent);
    const char *py = "/root/.pyenv/versions/3.12.1/bin/python3";
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(py, py, "-c",
              "def leaf(n):\n    return sum(range(n))\n"
              "def work():\n    return leaf(200000)\n"
              "while True:\n    work()\n",
              (char *)NULL);
        _exit(127);
    }
    usleep(400000);
    char path[] = "/tmp/test_stackmerge_agent_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s record --pid %d --duration 1 --format pprof -o %s -q 2>&1", agent,
             (int)pid, path);
    char *log = run_capture(cmd);
    free(log);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);

    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct buf gz = {0}, raw = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&gz, chunk, n);
    fclose(f);
    struct cp_err err = {0};
    assert_int_equal(pprof_decompress((const uint8_t *)gz.data, gz.len, 64 << 20, &raw, &err), 0);
    struct pprof_decoded d;
    assert_int_equal(pprof_decode((const uint8_t *)raw.data, raw.len, &d, &err), 0);
    assert_int_equal(d.ntypes, 3); /* samples, wall, cpu */
    int64_t totals[3];
    pprof_decoded_totals(&d, totals);
    assert_true(totals[0] > 50); /* ~100 samples in 1 s at 100 Hz */
    struct stackmerge *m = stackmerge_new();
    assert_int_equal(stackmerge_add_decoded(m, &d, 0, &err), 0);
    assert_int_equal(stackmerge_add_decoded(m, &d, 0, &err), 0);
    assert_int_equal(stackmerge_total(m), 2 * totals[0]);
    struct buf c = {0};
    assert_int_equal(stackmerge_write_collapsed(m, &c, &err), 0);
    assert_non_null(strstr(c.data, "work (<string>:4);leaf (<string>:2)"));
    struct buf merged = {0};
    struct stackmerge_pprof_meta meta = {"samples", "count", d.time_nanos, d.duration_nanos, 0};
    assert_int_equal(stackmerge_write_pprof(m, &meta, &merged, &err), 0);
    write_file(path, &merged);
    snprintf(cmd, sizeof cmd, "go tool pprof -top %s 2>&1", path);
    char *top = run_capture(cmd);
    assert_non_null(strstr(top, "leaf"));
    free(top);
    unlink(path);
    buf_free(&merged);
    buf_free(&c);
    buf_free(&gz);
    buf_free(&raw);
    stackmerge_free(m);
    pprof_decoded_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_sums_identical_stacks),
        cmocka_unit_test(test_collapsed_exact),
        cmocka_unit_test(test_collapsed_escapes_separators_and_skips_zero),
        cmocka_unit_test(test_flamebearer_exact),
        cmocka_unit_test(test_flamebearer_delta_with_gap),
        cmocka_unit_test(test_flamebearer_location_json_names),
        cmocka_unit_test(test_flamebearer_min_ticks_folds),
        cmocka_unit_test(test_pprof_round_trip),
        cmocka_unit_test(test_go_tool_pprof_reads_merge),
        cmocka_unit_test(test_depth_truncation_keeps_root_side),
        cmocka_unit_test(test_saturation_and_negative),
        cmocka_unit_test(test_empty_merge_writers),
        cmocka_unit_test(test_merge_of_merges_equals_one_merge),
        cmocka_unit_test(test_flamebearer_text_escapes_and_extra),
        cmocka_unit_test(test_merge_real_agent_profile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
