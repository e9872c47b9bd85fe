/* Unit tests for strtab: dense ids, "" = 0, deduplication, growth and address stability. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "strtab.h"

#include <stdio.h>
#include <string.h>

static void test_empty_string_is_id_zero(void **state)
{
    (void)state;
    struct strtab st;
    assert_int_equal(strtab_init(&st), 0);
    assert_int_equal(st.count, 1);
    assert_string_equal(strtab_get(&st, 0), "");
    assert_int_equal(strtab_intern(&st, "", 0), 0);
    assert_int_equal(strtab_intern(&st, "ignored", 0), 0);
    assert_int_equal(st.count, 1);
    assert_string_equal(strtab_get(&st, 12345), ""); /* out of range reads as "" */
    strtab_free(&st);
}

static void test_ids_dense_and_deduplicated(void **state)
{
    (void)state;
    struct strtab st;
    assert_int_equal(strtab_init(&st), 0);
    assert_int_equal(strtab_intern(&st, "main", 4), 1);
    assert_int_equal(strtab_intern(&st, "app.py", 6), 2);
    assert_int_equal(strtab_intern(&st, "main", 4), 1);
    assert_int_equal(strtab_intern(&st, "mainloop", 4), 1); /* only len bytes count */
    assert_int_equal(strtab_intern(&st, "mai", 3), 3);
    assert_int_equal(st.count, 4);
    assert_string_equal(strtab_get(&st, 1), "main");
    assert_string_equal(strtab_get(&st, 2), "app.py");
    assert_string_equal(strtab_get(&st, 3), "mai");
    assert_int_equal(st.lens[2], 6);
    strtab_free(&st);
}

static void test_embedded_nul_and_binary(void **state)
{
    (void)state;
    struct strtab st;
    assert_int_equal(strtab_init(&st), 0);
    uint32_t a = strtab_intern(&st, "a\0b", 3);
    uint32_t b = strtab_intern(&st, "a\0c", 3);
    uint32_t c = strtab_intern(&st, "a", 1);
    assert_true(a != b && b != c && a != c);
    assert_int_equal(strtab_intern(&st, "a\0b", 3), a);
    assert_int_equal(st.lens[a], 3);
    assert_memory_equal(strtab_get(&st, b), "a\0c", 4);
    strtab_free(&st);
}

static void test_growth_100k_keeps_ids_and_pointers(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct strtab st;
    assert_int_equal(strtab_init(&st), 0);
    char s[64];
    uint32_t first = strtab_intern(&st, "first string", 12);
    const char *first_ptr = strtab_get(&st, first);
    for (uint32_t i = 0; i < N; i++) {
        int n = snprintf(s, sizeof s, "module_%u.function_%u", i % 977, i);
        assert_int_equal(strtab_intern(&st, s, (size_t)n), i + 2);
    }
    assert_int_equal(st.count, N + 2);
    assert_true((uint64_t)st.count * 10 <= (uint64_t)st.nslots * 7); /* load <= 0.7 */
    assert_ptr_equal(strtab_get(&st, first), first_ptr);
    assert_string_equal(first_ptr, "first string");
    for (uint32_t i = 0; i < N; i++) {
        int n = snprintf(s, sizeof s, "module_%u.function_%u", i % 977, i);
        assert_int_equal(strtab_intern(&st, s, (size_t)n), i + 2);
        assert_string_equal(strtab_get(&st, i + 2), s);
    }
    assert_int_equal(st.count, N + 2);
    strtab_free(&st);
    assert_null(st.strings);
}

static void test_long_strings(void **state)
{
    (void)state;
    struct strtab st;
    assert_int_equal(strtab_init(&st), 0);
    char big[5000];
    memset(big, 'x', sizeof big);
    uint32_t id = strtab_intern(&st, big, sizeof big);
    big[4999] = 'y';
    uint32_t id2 = strtab_intern(&st, big, sizeof big);
    assert_int_not_equal(id, id2);
    assert_int_equal(strlen(strtab_get(&st, id2)), sizeof big);
    assert_int_equal(strtab_intern(&st, big, sizeof big), id2);
    strtab_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_string_is_id_zero),
        cmocka_unit_test(test_ids_dense_and_deduplicated),
        cmocka_unit_test(test_embedded_nul_and_binary),
        cmocka_unit_test(test_growth_100k_keeps_ids_and_pointers),
        cmocka_unit_test(test_long_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
