/* pyunicode: str character data -> UTF-8. Real str data (linetable_vectors.h holds the bytes
 * of real CPython str objects of every kind, read from their memory, with the UTF-8 CPython
 * produces for them) decoded at every output size, plus hand-written cases for each kind, the
 * replacement of invalid code points, truncation and argument edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "linetable_vectors.h"
#include "pyunicode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the UTF-8 sequence starting with lead, or 0 if lead cannot start one. */
static size_t utf8_sequence_length(uint8_t lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

/* Structural UTF-8 validity (lead bytes and continuation bytes). */
static int is_utf8(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence_length((uint8_t)s[i]);
        if (n == 0 || i + n > len) return 0;
        for (size_t k = 1; k < n; k++)
            if (((uint8_t)s[i + k] & 0xC0) != 0x80) return 0;
        i += n;
    }
    return 1;
}

/* Decodes a copy of data (length code points of kind 1, 2 or 4) into an exactly-sized heap
 * buffer *out, so ASan sees any overread or overflow. */
static int decode(const uint8_t *data, size_t length, int kind, char **out, size_t outsize)
{
    *out = malloc(outsize ? outsize : 1);
    assert_non_null(*out);
    uint8_t *copy = malloc(length * (size_t)kind + 1);
    assert_non_null(copy);
    if (length) memcpy(copy, data, length * (size_t)kind);
    int n = pyunicode_to_utf8(copy, length, kind, *out, outsize);
    free(copy);
    return n;
}

static void assert_decodes_to(const uint8_t *data, size_t length, int kind, const char *want)
{
    char *out;
    int n = decode(data, length, kind, &out, strlen(want) + 1);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, strlen(want) + 1);
    free(out);
}

/* Checks the output of v at one output size against v's full UTF-8. */
static void check_cut(const struct pyunicode_vector *v, size_t outsize)
{
    char *out;
    int n = decode(v->data, v->length, v->kind, &out, outsize);
    assert_true(n >= 0);
    size_t got = (size_t)n;
    if (outsize == 0) {
        assert_int_equal(got, 0);
        free(out);
        return;
    }
    assert_true(got <= outsize - 1);
    assert_int_equal(out[got], '\0');
    size_t cap = outsize - 1;
    if (v->utf8_len <= cap) { /* fits: exact */
        assert_int_equal(got, v->utf8_len);
        assert_memory_equal(out, v->utf8, got);
    } else if (cap < 3) { /* only room for part of the ellipsis */
        assert_int_equal(got, cap);
        assert_memory_equal(out, "...", got);
    } else { /* cut: the longest whole-character prefix that leaves room for "..." */
        assert_true(got >= 3);
        assert_memory_equal(out + got - 3, "...", 3);
        size_t kept = got - 3;
        assert_memory_equal(out, v->utf8, kept);
        assert_true(kept == v->utf8_len || utf8_sequence_length((uint8_t)v->utf8[kept]) != 0);
        size_t next = utf8_sequence_length((uint8_t)v->utf8[kept]);
        assert_true(kept + next + 3 > cap);
    }
    assert_true(is_utf8(out, got));
    free(out);
}

static void test_real_str_objects(void **state)
{
    (void)state;
    size_t sizes = 0, per_kind[5] = {0};
    for (size_t i = 0; i < PYUNICODE_VECTOR_COUNT; i++) {
        const struct pyunicode_vector *v = &pyunicode_vectors[i];
        char *out;
        int n = decode(v->data, v->length, v->kind, &out, v->utf8_len + 1);
        if (n < 0 || (size_t)n != v->utf8_len || memcmp(out, v->utf8, v->utf8_len) != 0)
            fail_msg("%s (kind %d): wrong UTF-8 (%d bytes, want %zu)", v->text, v->kind, n,
                     v->utf8_len);
        free(out);
        for (size_t outsize = 0; outsize <= v->utf8_len + 2; outsize++, sizes++)
            check_cut(v, outsize);
        per_kind[v->kind]++;
    }
    assert_true(per_kind[1] > 0 && per_kind[2] > 0 && per_kind[4] > 0);
    printf("    %zu str objects (kind 1: %zu, 2: %zu, 4: %zu), %zu output sizes\n",
           (size_t)PYUNICODE_VECTOR_COUNT, per_kind[1], per_kind[2], per_kind[4], sizes);
}

static void test_ascii_and_latin1(void **state)
{
    (void)state;
    assert_decodes_to((const uint8_t *)"hello_world", 11, 1, "hello_world");
    assert_decodes_to(NULL, 0, 1, "");
    const uint8_t cafe[] = {'c', 'a', 'f', 0xE9};
    assert_decodes_to(cafe, sizeof cafe, 1, "caf\xC3\xA9");
    const uint8_t strasse[] = {'s', 't', 'r', 'a', 0xDF, 'e'};
    assert_decodes_to(strasse, sizeof strasse, 1,
                      "stra\xC3\x9F"
                      "e");
    const uint8_t edges[] = {0x7F, 0x80, 0xFF};
    assert_decodes_to(edges, sizeof edges, 1, "\x7F\xC2\x80\xC3\xBF");
}

static void test_ucs2(void **state)
{
    (void)state;
    const uint16_t greek[] = {0x0395, 0x03BB, 0x03BB, 0x03B7, 0x03BD, 0x03B9, 0x03BA, 0x03AC};
    assert_decodes_to((const uint8_t *)greek, 8, 2,
                      "\xCE\x95\xCE\xBB\xCE\xBB\xCE\xB7\xCE\xBD\xCE\xB9\xCE\xBA\xCE\xAC");
    const uint16_t japan[] = {0x65E5, 0x672C};
    assert_decodes_to((const uint8_t *)japan, 2, 2, "\xE6\x97\xA5\xE6\x9C\xAC");
    const uint16_t edges[] = {'a', 0x07FF, 0x0800, 0xFFFF};
    assert_decodes_to((const uint8_t *)edges, 4, 2, "a\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF");
    /* lone surrogates (a str can hold them) -> U+FFFD each, a pair is not joined */
    const uint16_t surrogates[] = {0xD800, 'x', 0xDFFF, 0xD83D, 0xDC0D};
    assert_decodes_to((const uint8_t *)surrogates, 5, 2,
                      "\xEF\xBF\xBDx\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

static void test_ucs4(void **state)
{
    (void)state;
    const uint32_t snake[] = {'a', 0x1F40D, 'b'};
    assert_decodes_to((const uint8_t *)snake, 3, 4,
                      "a\xF0\x9F\x90\x8D"
                      "b");
    const uint32_t edges[] = {0x10000, 0x10FFFF};
    assert_decodes_to((const uint8_t *)edges, 2, 4, "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF");
    const uint32_t invalid[] = {0xD800, 0x110000, 0xFFFFFFFF, 0xDFFF};
    assert_decodes_to((const uint8_t *)invalid, 4, 4,
                      "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

static void test_unaligned_data(void **state)
{
    (void)state;
    uint8_t buf[1 + 8];
    const uint32_t snake[] = {0x1F40D, 0x65E5};
    memcpy(buf + 1, snake, sizeof snake);
    char out[16];
    assert_int_equal(pyunicode_to_utf8(buf + 1, 2, 4, out, sizeof out), 7);
    assert_string_equal(out, "\xF0\x9F\x90\x8D\xE6\x97\xA5");
    const uint16_t greek[] = {0x0395, 0x03BB};
    memcpy(buf + 1, greek, sizeof greek);
    assert_int_equal(pyunicode_to_utf8(buf + 1, 2, 2, out, sizeof out), 4);
    assert_string_equal(out, "\xCE\x95\xCE\xBB");
}

static void test_truncation(void **state)
{
    (void)state;
    char out[16];
    /* outsize 0 writes nothing at all */
    memset(out, 'Z', sizeof out);
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abc", 3, 1, out, 0), 0);
    assert_int_equal(out[0], 'Z');
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abc", 3, 1, NULL, 0), 0);
    /* outsize 1: just the NUL */
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abc", 3, 1, out, 1), 0);
    assert_string_equal(out, "");
    assert_int_equal(pyunicode_to_utf8(NULL, 0, 1, out, 1), 0);
    assert_string_equal(out, "");
    /* too small for "...": as much of it as fits */
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abc", 3, 1, out, 2), 1);
    assert_string_equal(out, ".");
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abc", 3, 1, out, 3), 2);
    assert_string_equal(out, "..");
    /* exactly fits: no ellipsis */
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abc", 3, 1, out, 4), 3);
    assert_string_equal(out, "abc");
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abcd", 4, 1, out, 4), 3);
    assert_string_equal(out, "...");
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"abcdefghij", 10, 1, out, 8), 7);
    assert_string_equal(out, "abcd...");
    /* multi-byte characters are never split */
    const uint8_t e_acute[] = {0xE9, 0xE9, 0xE9, 0xE9, 0xE9};
    assert_int_equal(pyunicode_to_utf8(e_acute, 5, 1, out, 8), 7);
    assert_string_equal(out, "\xC3\xA9\xC3\xA9...");
    assert_int_equal(pyunicode_to_utf8(e_acute, 5, 1, out, 7), 5);
    assert_string_equal(out, "\xC3\xA9...");
    const uint32_t snakes[] = {0x1F40D, 0x1F40D, 0x1F40D};
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)snakes, 3, 4, out, 11), 7);
    assert_string_equal(out, "\xF0\x9F\x90\x8D...");
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)snakes, 3, 4, out, 13), 12);
    assert_string_equal(out, "\xF0\x9F\x90\x8D\xF0\x9F\x90\x8D\xF0\x9F\x90\x8D");
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char out[8];
    const int bad_kinds[] = {0, 3, 5, 8, -1, 1 << 20};
    for (size_t i = 0; i < sizeof bad_kinds / sizeof bad_kinds[0]; i++)
        assert_int_equal(pyunicode_to_utf8((const uint8_t *)"ab", 2, bad_kinds[i], out, 8), -1);
    assert_int_equal(pyunicode_to_utf8(NULL, 2, 1, out, sizeof out), -1);
    assert_int_equal(pyunicode_to_utf8((const uint8_t *)"ab", 2, 1, NULL, 8), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_str_objects),
        cmocka_unit_test(test_ascii_and_latin1),
        cmocka_unit_test(test_ucs2),
        cmocka_unit_test(test_ucs4),
        cmocka_unit_test(test_unaligned_data),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
