/* linetable: every decoder against real CPython output (linetable_vectors.h, made by
 * tools/gen_linetable_vectors.py from CPython 3.7-3.13's own PyCode_Addr2Line), plus hand-built
 * tables for each entry form and malformed, truncated and random tables, which must give -1 or a
 * sane line without reading out of bounds. Tables are copied into exactly-sized heap buffers so
 * ASan sees any overread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "linetable.h"
#include "linetable_vectors.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *heap_copy(const uint8_t *src, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, src, len);
    return copy;
}

/* Decodes with the kind's own function and with the dispatcher; both must agree. */
static int line_of(int kind, const uint8_t *tab, size_t len, int firstlineno, int32_t offset)
{
    uint8_t *copy = heap_copy(tab, len);
    int direct = kind == PY_LINES_LNOTAB         ? linetable_lnotab(copy, len, firstlineno, offset)
                 : kind == PY_LINES_LINETABLE310 ? linetable_310(copy, len, firstlineno, offset)
                                                 : linetable_311(copy, len, firstlineno, offset);
    int dispatched = linetable_line((enum py_linetable_kind)kind, copy, len, firstlineno, offset);
    free(copy);
    assert_int_equal(direct, dispatched);
    return direct;
}

/* Checks one vector; returns the number of offsets checked. */
static size_t check_vector(const struct linetable_vector *v)
{
    size_t checked = 0;
    int32_t covered = 0;
    uint8_t *copy = heap_copy(v->table, v->table_len);
    for (size_t r = 0; r < v->nruns; r++) {
        int32_t start = v->runs[3 * r], end = v->runs[3 * r + 1], want = v->runs[3 * r + 2];
        assert_int_equal(start, covered);
        for (int32_t offset = start; offset < end; offset += 2) {
            int got = linetable_line((enum py_linetable_kind)v->kind, copy, v->table_len,
                                     v->firstlineno, offset);
            if (got != want)
                fail_msg("%s %s: offset %d: line %d, CPython says %d", v->python, v->name,
                         (int)offset, got, want);
            checked++;
        }
        covered = end;
    }
    assert_int_equal(covered, v->code_len);
    int past = linetable_line((enum py_linetable_kind)v->kind, copy, v->table_len, v->firstlineno,
                              v->code_len);
    if (past != v->past_end_line)
        fail_msg("%s %s: past the end: line %d, CPython says %d", v->python, v->name, past,
                 v->past_end_line);
    free(copy);
    return checked + 1;
}

static void test_real_cpython_vectors(void **state)
{
    (void)state;
    size_t offsets = 0, per_kind[4] = {0}, pythons = 0;
    const char *last_python = "";
    for (size_t i = 0; i < LINETABLE_VECTOR_COUNT; i++) {
        const struct linetable_vector *v = &linetable_vectors[i];
        assert_true(v->kind >= PY_LINES_LNOTAB && v->kind <= PY_LINES_LOCATIONS311);
        if (strcmp(v->python, last_python) != 0) {
            last_python = v->python;
            pythons++;
        }
        offsets += check_vector(v);
        per_kind[v->kind]++;
    }
    assert_true(per_kind[PY_LINES_LNOTAB] > 0 && per_kind[PY_LINES_LINETABLE310] > 0 &&
                per_kind[PY_LINES_LOCATIONS311] > 0);
    assert_true(pythons >= 7);
    printf("    %zu pythons, %zu code objects (lnotab %zu, 3.10 %zu, 3.11+ %zu), %zu offsets\n",
           pythons, (size_t)LINETABLE_VECTOR_COUNT, per_kind[1], per_kind[2], per_kind[3], offsets);
}

/* --- 3.7-3.9 co_lnotab ------------------------------------------------------------------ */

static void test_lnotab_hand_made(void **state)
{
    (void)state;
    /* line 10 at [0,6), 12 at [6,8) (two pairs at the same address), 9 from 8 (negative delta),
     * 9+127+3 = 139 from 263 (a 255-byte hop carrying no line, then a 127 step). */
    const uint8_t tab[] = {6, 1, 0, 1, 2, 0xfd, 255, 0, 0, 127, 0, 3};
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, 0), 10);
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, 5), 10);
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, 6), 12);
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, 7), 12);
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, 8), 9);
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, 262), 9);
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, 263), 139);
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, INT32_MAX), 139);
    /* before the first instruction, CPython answers co_firstlineno */
    assert_int_equal(line_of(PY_LINES_LNOTAB, tab, sizeof tab, 10, -2), 10);
}

static void test_lnotab_malformed(void **state)
{
    (void)state;
    assert_int_equal(line_of(PY_LINES_LNOTAB, NULL, 0, 7, 0), 7);
    assert_int_equal(linetable_lnotab(NULL, 12, 7, 0), 7);
    const uint8_t odd[] = {2, 1, 2}; /* a trailing half pair is ignored */
    assert_int_equal(line_of(PY_LINES_LNOTAB, odd, sizeof odd, 7, 100), 8);
    const uint8_t up[] = {0, 127, 0, 127, 0, 127};
    assert_int_equal(line_of(PY_LINES_LNOTAB, up, sizeof up, INT_MAX - 200, 0), -1);
    const uint8_t down[] = {0, 0x81, 0, 0x81};
    assert_int_equal(line_of(PY_LINES_LNOTAB, down, sizeof down, 100, 0), -1);
}

/* --- 3.10 co_linetable ------------------------------------------------------------------ */

static void test_310_hand_made(void **state)
{
    (void)state;
    /* [0,4) line 6; zero-width +3 (line 9, covers nothing); [4,10) line 8; [10,12) no line;
     * [12,14) line 9 (the no-line entry did not move it); then a 0-byte entry past the end. */
    const uint8_t tab[] = {4, 1, 0, 3, 6, 0xff, 2, 0x80, 2, 1, 0, 5};
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 0), 6);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 3), 6);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 4), 8);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 9), 8);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 10), -1);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 11), -1);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 12), 9);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, 14), -1);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, INT32_MAX), -1);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, tab, sizeof tab, 5, -2), 5);
}

static void test_310_malformed(void **state)
{
    (void)state;
    assert_int_equal(line_of(PY_LINES_LINETABLE310, NULL, 0, 7, 0), -1);
    assert_int_equal(linetable_310(NULL, 8, 7, 0), -1);
    const uint8_t odd[] = {2, 1, 2};
    assert_int_equal(line_of(PY_LINES_LINETABLE310, odd, sizeof odd, 7, 0), 8);
    assert_int_equal(line_of(PY_LINES_LINETABLE310, odd, sizeof odd, 7, 2), -1);
    const uint8_t zero_width[] = {0, 1, 0, 1, 0, 1, 0, 1};
    assert_int_equal(line_of(PY_LINES_LINETABLE310, zero_width, sizeof zero_width, 7, 0), -1);
    const uint8_t up[] = {0, 127, 0, 127, 2, 127};
    assert_int_equal(line_of(PY_LINES_LINETABLE310, up, sizeof up, INT_MAX - 200, 0), -1);
}

/* --- 3.11+ location table --------------------------------------------------------------- */

struct loc_builder {
    uint8_t bytes[256];
    size_t len;
};

static void put(struct loc_builder *b, uint8_t byte)
{
    assert_true(b->len < sizeof b->bytes);
    b->bytes[b->len++] = byte;
}

static void put_varint(struct loc_builder *b, uint32_t value)
{
    while (value >= 64) {
        put(b, (uint8_t)(64 | (value & 63)));
        value >>= 6;
    }
    put(b, (uint8_t)value);
}

static void put_signed_varint(struct loc_builder *b, int32_t value)
{
    put_varint(b, value < 0 ? ((uint32_t)-value << 1) | 1 : (uint32_t)value << 1);
}

static void put_entry(struct loc_builder *b, int code, int units)
{
    put(b, (uint8_t)(0x80 | (code << 3) | (units - 1)));
}

static void test_311_every_form(void **state)
{
    (void)state;
    struct loc_builder b = {.len = 0};
    put_entry(&b, 14, 2); /* [0,4): long form, line 100+3 */
    put_signed_varint(&b, 3);
    put_varint(&b, 2);   /* end line delta */
    put_varint(&b, 200); /* column + 1, two chunks */
    put_varint(&b, 300); /* end column + 1 */
    put_entry(&b, 5, 1); /* [4,6): short form, same line */
    put(&b, 0x12);
    put_entry(&b, 11, 8); /* [6,22): one-line form, +1 */
    put(&b, 4);
    put(&b, 9);
    put_entry(&b, 12, 1); /* [22,24): +2 */
    put(&b, 1);
    put(&b, 2);
    put_entry(&b, 10, 1); /* [24,26): +0 */
    put(&b, 1);
    put(&b, 2);
    put_entry(&b, 15, 3); /* [26,32): no location */
    put_entry(&b, 13, 1); /* [32,34): no columns, -5 */
    put_signed_varint(&b, -5);
    put_entry(&b, 13, 1); /* [34,36): no columns, +140000 (a 4-chunk varint) */
    put_signed_varint(&b, 140000);
    put_entry(&b, 14, 1); /* [36,38): long form, -140001 */
    put_signed_varint(&b, -140001);
    put_varint(&b, 0);
    put_varint(&b, 1);
    put_varint(&b, 1);
    const int32_t offsets[] = {0, 3, 4, 6, 21, 22, 24, 26, 31, 32, 34, 36, 38, 1000};
    const int want[] = {103, 103, 103, 104, 104, 106, 106, -1, -1, 101, 140101, 100, -1, -1};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++)
        assert_int_equal(line_of(PY_LINES_LOCATIONS311, b.bytes, b.len, 100, offsets[i]), want[i]);
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, b.bytes, b.len, 100, -2), 100);
}

static void test_311_truncated_and_malformed(void **state)
{
    (void)state;
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, NULL, 0, 7, 0), -1);
    assert_int_equal(linetable_311(NULL, 8, 7, 0), -1);
    /* a varint cut by the end of the table: the bytes that are there count */
    const uint8_t cut[] = {0x80 | (13 << 3), 0x40 | 4};
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, cut, sizeof cut, 7, 0), 9);
    const uint8_t header_only[] = {0x80 | (14 << 3) | 7};
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, header_only, sizeof header_only, 7, 15), 7);
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, header_only, sizeof header_only, 7, 16), -1);
    /* an endless continuation: shifts stop growing, no undefined behaviour */
    uint8_t endless[200];
    endless[0] = 0x80 | (13 << 3);
    memset(endless + 1, 0x7f, sizeof endless - 1);
    int line = line_of(PY_LINES_LOCATIONS311, endless, sizeof endless, 7, 0);
    assert_true(line == -1 || line >= 0);
    /* payload bytes without a header: skipped, the first byte is read as a header anyway */
    const uint8_t no_headers[] = {0x05, 0x10, 0x20, 0x7f};
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, no_headers, sizeof no_headers, 7, 0), 7);
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, no_headers, sizeof no_headers, 7, 12), -1);
    uint8_t all_none[64];
    memset(all_none, 0xff, sizeof all_none);
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, all_none, sizeof all_none, 7, 0), -1);
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, all_none, sizeof all_none, 7, 1023), -1);
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, all_none, sizeof all_none, 7, 1024), -1);
    /* deltas that would overflow an int */
    struct loc_builder b = {.len = 0};
    for (int i = 0; i < 4; i++) {
        put_entry(&b, 13, 1);
        put_signed_varint(&b, 0x3fffffff);
    }
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, b.bytes, b.len, 7, 0), 0x3fffffff + 7);
    assert_int_equal(line_of(PY_LINES_LOCATIONS311, b.bytes, b.len, 7, 6), -1);
}

/* --- all formats --------------------------------------------------------------------------- */

static void test_bad_kind(void **state)
{
    (void)state;
    const uint8_t tab[] = {2, 1};
    assert_int_equal(linetable_line((enum py_linetable_kind)0, tab, sizeof tab, 1, 0), -1);
    assert_int_equal(linetable_line((enum py_linetable_kind)99, tab, sizeof tab, 1, 0), -1);
}

static uint64_t next_random(uint64_t *seed)
{
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    return *seed;
}

static void test_random_tables(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 3000; round++) {
        size_t len = next_random(&seed) % 80;
        uint8_t *tab = malloc(len ? len : 1);
        assert_non_null(tab);
        for (size_t i = 0; i < len; i++)
            tab[i] = (uint8_t)next_random(&seed);
        int firstlineno = (int)(next_random(&seed) % 5000);
        for (int kind = PY_LINES_LNOTAB; kind <= PY_LINES_LOCATIONS311; kind++) {
            for (int32_t offset = -2; offset < 700; offset += 1 + (int32_t)(offset / 64)) {
                int line =
                    linetable_line((enum py_linetable_kind)kind, tab, len, firstlineno, offset);
                assert_true(line >= -1);
            }
        }
        free(tab);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_cpython_vectors),
        cmocka_unit_test(test_lnotab_hand_made),
        cmocka_unit_test(test_lnotab_malformed),
        cmocka_unit_test(test_310_hand_made),
        cmocka_unit_test(test_310_malformed),
        cmocka_unit_test(test_311_every_form),
        cmocka_unit_test(test_311_truncated_and_malformed),
        cmocka_unit_test(test_bad_kind),
        cmocka_unit_test(test_random_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
