/* Unit tests for the collapsed-stack writer: exact text, rounding, sorting, sanitizing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "profile_writers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int setup(void **state)
{
    struct agg *a = calloc(1, sizeof *a);
    if (!a || agg_init(a) < 0) return -1;
    uint32_t thread = agg_frame_id_str(a, "thread 1 (MainThread)", "", 0);
    uint32_t main10 = agg_frame_id_str(a, "main", "app.py", 10);
    uint32_t work20 = agg_frame_id_str(a, "Worker.run", "app.py", 20);
    uint32_t work25 = agg_frame_id_str(a, "Worker.run", "app.py", 25);
    uint32_t helper = agg_frame_id_str(a, "helper", "lib/util.py", 5);
    uint32_t weird = agg_frame_id_str(a, "a;b\nc", "x;y.py", 3);
    uint32_t semi = agg_frame_id_str(a, "p;q", "m.py", 1);
    uint32_t colon = agg_frame_id_str(a, "p:q", "m.py", 1);
    uint32_t s1[] = {work20, main10, thread}, s2[] = {work25, main10, thread};
    uint32_t s3[] = {helper, work20, main10, thread}, s4[] = {main10, thread};
    uint32_t s5[] = {weird, thread}, s6[] = {semi, thread}, s7[] = {colon, thread};
    for (int i = 0; i < 3; i++)
        agg_add(a, s1, 3, 10000000, 10000000);
    agg_add(a, s2, 3, 5000400, 10000500); /* 5000.4 us -> 5000; 10000.5 us -> 10001 */
    agg_add(a, s3, 4, 0, 20000000);       /* no CPU: left out of the CPU output */
    agg_add(a, s4, 2, 499, 1500);         /* 0.499 us rounds to 0: left out; 1.5 us -> 2 */
    agg_add(a, s5, 2, 1000000, 0);
    agg_add(a, s6, 2, 600, 0); /* same text as s7 once ';' -> ':': merged, then rounded */
    agg_add(a, s7, 2, 600, 0);
    *state = a;
    return 0;
}

static int teardown(void **state)
{
    agg_free(*state);
    free(*state);
    return 0;
}

static void test_cpu_exact_text(void **state)
{
    struct buf out = {0};
    struct cp_err err;
    assert_int_equal(collapsed_write(*state, AGG_CPU, &out, &err), 0);
    assert_string_equal(out.data,
                        "thread 1 (MainThread);a:b c (x:y.py:3) 1000\n"
                        "thread 1 (MainThread);main (app.py:10);Worker.run (app.py:20) 30000\n"
                        "thread 1 (MainThread);main (app.py:10);Worker.run (app.py:25) 5000\n"
                        "thread 1 (MainThread);p:q (m.py:1) 1\n");
    buf_free(&out);
}

static void test_wall_exact_text(void **state)
{
    struct buf out = {0};
    struct cp_err err;
    assert_int_equal(collapsed_write(*state, AGG_WALL, &out, &err), 0);
    assert_string_equal(
        out.data,
        "thread 1 (MainThread);main (app.py:10) 2\n"
        "thread 1 (MainThread);main (app.py:10);Worker.run (app.py:20) 30000\n"
        "thread 1 (MainThread);main (app.py:10);Worker.run (app.py:20);helper (lib/util.py:5) "
        "20000\n"
        "thread 1 (MainThread);main (app.py:10);Worker.run (app.py:25) 10001\n");
    buf_free(&out);
}

static void test_appends_and_is_stable(void **state)
{
    struct buf first = {0}, second = {0};
    struct cp_err err;
    assert_int_equal(buf_append_str(&second, "# header\n"), 0);
    assert_int_equal(collapsed_write(*state, AGG_CPU, &first, &err), 0);
    assert_int_equal(collapsed_write(*state, AGG_CPU, &second, &err), 0);
    assert_int_equal(second.len, first.len + 9);
    assert_memory_equal(second.data, "# header\n", 9);
    assert_string_equal(second.data + 9, first.data);
    buf_free(&first);
    buf_free(&second);
}

static void test_every_line_parses(void **state)
{
    struct agg *a = *state;
    struct buf out = {0};
    struct cp_err err;
    assert_int_equal(collapsed_write(a, AGG_WALL, &out, &err), 0);
    long long sum = 0;
    int lines = 0;
    for (char *line = out.data; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        char *sp = nl;
        while (sp > line && sp[-1] != ' ')
            sp--;
        assert_true(sp > line);
        sum += strtoll(sp, NULL, 10);
        lines++;
        line = nl + 1;
    }
    assert_int_equal(lines, 4);
    assert_int_equal(sum, 2 + 30000 + 20000 + 10001);
    buf_free(&out);
}

static void test_empty_aggregate(void **state)
{
    (void)state;
    struct agg a;
    assert_int_equal(agg_init(&a), 0);
    struct buf out = {0};
    struct cp_err err;
    assert_int_equal(collapsed_write(&a, AGG_CPU, &out, &err), 0);
    assert_int_equal(out.len, 0);
    buf_free(&out);
    agg_free(&a);
}

static void test_many_stacks_sorted(void **state)
{
    (void)state;
    struct agg a;
    assert_int_equal(agg_init(&a), 0);
    uint32_t ids[50];
    char name[16];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "f%02d", i);
        ids[i] = agg_frame_id_str(&a, name, "m.py", i);
    }
    uint32_t st[5];
    for (uint32_t s = 0; s < 5000; s++) {
        for (int d = 0; d < 5; d++)
            st[d] = ids[(s / (d + 1) + (uint32_t)d * 7) % 50];
        agg_add(&a, st, 5, 1000, 1000);
    }
    struct buf out = {0};
    struct cp_err err;
    assert_int_equal(collapsed_write(&a, AGG_CPU, &out, &err), 0);
    const char *prev = NULL;
    size_t prev_len = 0, lines = 0;
    long long sum = 0;
    for (const char *line = out.data; *line; lines++) {
        const char *nl = strchr(line, '\n');
        const char *sp = memrchr(line, ' ', (size_t)(nl - line));
        sum += strtoll(sp + 1, NULL, 10);
        size_t len = (size_t)(sp - line);
        if (prev) {
            size_t n = len < prev_len ? len : prev_len;
            int c = memcmp(prev, line, n);
            assert_true(c < 0 || (c == 0 && prev_len < len)); /* sorted, no duplicates */
        }
        prev = line;
        prev_len = len;
        line = nl + 1;
    }
    assert_int_equal(lines, a.nstacks);
    assert_int_equal(sum, 5000);
    buf_free(&out);
    agg_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cpu_exact_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wall_exact_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_appends_and_is_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_line_parses, setup, teardown),
        cmocka_unit_test(test_empty_aggregate),
        cmocka_unit_test(test_many_stacks_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
