/* Unit tests for aggregate: frame interning, stack counting, growth, reset, bounds, labels. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "aggregate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int setup(void **state)
{
    struct agg *a = malloc(sizeof *a);
    if (!a || agg_init(a) < 0) {
        free(a);
        return -1;
    }
    *state = a;
    return 0;
}

static int teardown(void **state)
{
    agg_free(*state);
    free(*state);
    return 0;
}

static void test_frame_ids_interned(void **state)
{
    struct agg *a = *state;
    uint32_t f1 = agg_frame_id_str(a, "main", "app.py", 10);
    uint32_t f2 = agg_frame_id_str(a, "work", "app.py", 20);
    uint32_t f3 = agg_frame_id_str(a, "main", "app.py", 11); /* another line: another frame */
    assert_int_equal(f1, 1);
    assert_int_equal(f2, 2);
    assert_int_equal(f3, 3);
    assert_int_equal(agg_frame_id_str(a, "main", "app.py", 10), f1);
    assert_int_equal(a->nframes, 3);
    uint32_t name = strtab_intern(&a->strings, "work", 4);
    uint32_t file = strtab_intern(&a->strings, "app.py", 6);
    assert_int_equal(agg_frame_id(a, name, file, 20), f2);
    assert_string_equal(strtab_get(&a->strings, a->frames[f2].name), "work");
    assert_string_equal(strtab_get(&a->strings, a->frames[f2].file), "app.py");
    assert_int_equal(a->frames[f2].line, 20);
    assert_int_equal(agg_frame_id(a, 999999, file, 1), 0); /* unknown string id */
}

static void test_counts_and_sums(void **state)
{
    struct agg *a = *state;
    uint32_t m = agg_frame_id_str(a, "main", "app.py", 1);
    uint32_t w = agg_frame_id_str(a, "work", "app.py", 2);
    uint32_t t = agg_frame_id_str(a, "thread 1 (python)", "", 0);
    uint32_t s1[] = {w, m, t}, s2[] = {m, t}, s1_copy[] = {w, m, t};
    assert_int_equal(agg_add(a, s1, 3, 100, 1000), 0);
    assert_int_equal(agg_add(a, s2, 2, 7, 1000), 0);
    assert_int_equal(agg_add(a, s1_copy, 3, 50, 1000), 0);
    assert_int_equal(agg_add(a, s1, 2, 1, 10), 0); /* prefix {w, m}: a different stack */
    assert_int_equal(a->nstacks, 3);
    assert_int_equal(a->stacks[0].depth, 3);
    assert_int_equal(a->stacks[0].samples, 2);
    assert_int_equal(a->stacks[0].cpu_ns, 150);
    assert_int_equal(a->stacks[0].wall_ns, 2000);
    assert_memory_equal(agg_stack_frames(a, &a->stacks[0]), s1, sizeof s1);
    assert_int_equal(a->stacks[1].samples, 1);
    assert_int_equal(agg_stack_value(&a->stacks[1], AGG_CPU), 7);
    assert_int_equal(agg_stack_value(&a->stacks[1], AGG_WALL), 1000);
    assert_int_equal(a->stacks[2].depth, 2);
    assert_int_equal(a->total_samples, 4);
    assert_int_equal(a->total_cpu_ns, 158);
    assert_int_equal(a->total_wall_ns, 3010);
}

static void test_depth_and_id_bounds(void **state)
{
    struct agg *a = *state;
    uint32_t f = agg_frame_id_str(a, "f", "f.py", 1);
    static uint32_t deep[AGG_MAX_DEPTH + 1];
    for (size_t i = 0; i < AGG_MAX_DEPTH + 1; i++)
        deep[i] = f;
    assert_int_equal(agg_add(a, deep, 0, 1, 1), -1);
    assert_int_equal(agg_add(a, deep, AGG_MAX_DEPTH + 1, 1, 1), -1);
    assert_int_equal(agg_add(a, deep, 4096, 1, 1), 0);
    assert_int_equal(agg_add(a, deep, AGG_MAX_DEPTH, 1, 1), 0); /* 4096 Python + thread frame */
    assert_int_equal(a->nstacks, 2);
    uint32_t bad0[] = {f, 0}, bad_big[] = {f, f + 1};
    assert_int_equal(agg_add(a, bad0, 2, 1, 1), -1);
    assert_int_equal(agg_add(a, bad_big, 2, 1, 1), -1);
    assert_int_equal(a->nstacks, 2);
    assert_int_equal(a->total_samples, 2);
}

static void test_growth_past_100k_stacks(void **state)
{
    struct agg *a = *state;
    enum { N = 120000, NFRAMES = 400 };
    uint32_t ids[NFRAMES];
    char name[32];
    for (int i = 0; i < NFRAMES; i++) {
        snprintf(name, sizeof name, "fn_%d", i);
        ids[i] = agg_frame_id_str(a, name, "mod.py", i + 1);
        assert_int_equal(ids[i], (uint32_t)i + 1);
    }
    uint32_t stack[6];
    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < N; i++) {
            uint32_t depth = 3 + i % 4, x = i;
            for (uint32_t d = 0; d < depth; d++) {
                stack[d] = ids[x % NFRAMES];
                x /= NFRAMES;
            }
            assert_int_equal(agg_add(a, stack, depth, (int64_t)i, 10), 0);
        }
    }
    assert_int_equal(a->nstacks, N);
    assert_int_equal(a->total_samples, 2 * N);
    assert_true((uint64_t)a->nstacks * 10 <= (uint64_t)a->stack_nslots * 7);
    for (uint32_t i = 0; i < N; i += 997) {
        assert_int_equal(a->stacks[i].samples, 2);
        assert_int_equal(a->stacks[i].cpu_ns, 2 * (int64_t)i);
        assert_int_equal(a->stacks[i].wall_ns, 20);
        assert_int_equal(a->stacks[i].depth, 3 + i % 4);
        assert_int_equal(agg_stack_frames(a, &a->stacks[i])[0], ids[i % NFRAMES]);
    }
}

static void test_reset_keeps_frames(void **state)
{
    struct agg *a = *state;
    uint32_t m = agg_frame_id_str(a, "main", "app.py", 1);
    uint32_t w = agg_frame_id_str(a, "work", "app.py", 2);
    uint32_t s[] = {w, m};
    for (int i = 0; i < 1000; i++) {
        uint32_t f = agg_frame_id_str(a, "x", "x.py", i + 10);
        uint32_t st[] = {f, m};
        assert_int_equal(agg_add(a, st, 2, 1, 1), 0);
    }
    assert_int_equal(agg_add(a, s, 2, 5, 6), 0);
    uint32_t nframes = a->nframes, nstrings = a->strings.count;
    agg_reset(a);
    assert_int_equal(a->nstacks, 0);
    assert_int_equal(a->arena_len, 0);
    assert_int_equal(a->total_samples, 0);
    assert_int_equal(a->total_cpu_ns, 0);
    assert_int_equal(a->total_wall_ns, 0);
    assert_int_equal(a->nframes, nframes);
    assert_int_equal(a->strings.count, nstrings);
    assert_int_equal(agg_frame_id_str(a, "work", "app.py", 2), w);
    assert_int_equal(agg_add(a, s, 2, 5, 6), 0);
    assert_int_equal(agg_add(a, s, 2, 5, 6), 0);
    assert_int_equal(a->nstacks, 1);
    assert_int_equal(a->stacks[0].samples, 2);
    assert_int_equal(a->stacks[0].cpu_ns, 10);
}

static void test_frame_label(void **state)
{
    struct agg *a = *state;
    uint32_t m = agg_frame_id_str(a, "Cls.method", "/srv/app.py", 42);
    uint32_t t = agg_frame_id_str(a, "thread 7 (worker)", "", 0);
    char out[64];
    agg_frame_label(a, m, out, sizeof out);
    assert_string_equal(out, "Cls.method (/srv/app.py:42)");
    agg_frame_label(a, t, out, sizeof out);
    assert_string_equal(out, "thread 7 (worker)");
    agg_frame_label(a, m, out, 8);
    assert_string_equal(out, "Cls.met");
    agg_frame_label(a, 0, out, sizeof out);
    assert_string_equal(out, "?");
    agg_frame_label(a, 9999, out, sizeof out);
    assert_string_equal(out, "?");
}

static void test_free_on_zeroed_is_safe(void **state)
{
    (void)state;
    struct agg a;
    memset(&a, 0, sizeof a);
    agg_free(&a);
    agg_reset(&a);
    assert_int_equal(agg_init(&a), 0);
    agg_free(&a);
    agg_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_frame_ids_interned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts_and_sums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth_and_id_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_growth_past_100k_stacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_keeps_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frame_label, setup, teardown),
        cmocka_unit_test(test_free_on_zeroed_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
