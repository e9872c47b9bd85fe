/* Unit tests of control/multipart.c: the Content-Type boundary, a v4-shaped probe upload with a
 * binary (gzip) attachment whose bytes include CR, LF and dashes, bare-LF bodies, preamble and
 * epilogue, and every bound and malformation (each an error naming the part, never a crash). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "multipart.h"
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_boundary_from_content_type(void **state)
{
    (void)state;
    char b[MULTIPART_MAX_BOUNDARY + 1];
    struct cp_err err;
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=abc123", b, sizeof b, &err),
                     0);
    assert_string_equal(b, "abc123");
    assert_int_equal(multipart_boundary("Multipart/Form-Data;charset=utf-8;BOUNDARY=\"a b:c\"", b,
                                        sizeof b, &err),
                     0);
    assert_string_equal(b, "a b:c");
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=------------------------"
                                        "d74496d66958873e",
                                        b, sizeof b, &err),
                     0);
    assert_string_equal(b, "------------------------d74496d66958873e");

    assert_int_equal(multipart_boundary("application/json", b, sizeof b, &err), -1);
    assert_non_null(strstr(err.msg, "expected multipart/form-data"));
    assert_int_equal(multipart_boundary("multipart/form-data", b, sizeof b, &err), -1);
    assert_non_null(strstr(err.msg, "no boundary"));
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=", b, sizeof b, &err), -1);
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=\"abc", b, sizeof b, &err),
                     -1);
    assert_int_equal(multipart_boundary(NULL, b, sizeof b, &err), -1);
    char longer[200];
    snprintf(longer, sizeof longer, "multipart/form-data; boundary=%071d", 7);
    assert_int_equal(multipart_boundary(longer, b, sizeof b, &err), -1);
    assert_non_null(strstr(err.msg, "70"));
}

/* The shape dd-trace/libdatadog sends (blackfire.md §3.3). */
static const uint8_t PPROF_BYTES[] = {0x1f, 0x8b, 0x08, 0x00, '\r', '\n', '-',  '-',
                                      'x',  '\n', '-',  '-',  '\r', 0x00, 0xff, '\r'};

static void v4_body(struct buf *b, const char *eol)
{
    buf_printf(b, "--XyZ%s", eol);
    buf_printf(b, "Content-Disposition: form-data; name=\"event\"; filename=\"event.json\"%s", eol);
    buf_printf(b, "Content-Type: application/json%s%s", eol, eol);
    buf_printf(b, "{\"attachments\":[\"cpu.pprof\"],\"version\":\"4\"}%s", eol);
    buf_printf(b, "--XyZ%s", eol);
    buf_printf(b, "content-disposition: form-data; name=cpu.pprof; filename=\"cpu.pprof\"%s", eol);
    buf_printf(b, "Content-Type: application/octet-stream  %s%s", eol, eol);
    buf_append(b, PPROF_BYTES, sizeof PPROF_BYTES);
    buf_printf(b, "%s--XyZ%s", eol, eol);
    buf_printf(b, "Content-Disposition: form-data; name=\"empty\"%s%s", eol, eol);
    buf_printf(b, "%s--XyZ--%s", eol, eol);
}

static void check_v4_parts(const struct multipart_part *p, size_t n, size_t pprof_len)
{
    assert_int_equal(n, 3);
    assert_string_equal(p[0].name, "event");
    assert_string_equal(p[0].filename, "event.json");
    assert_string_equal(p[0].content_type, "application/json");
    assert_int_equal(p[0].len, strlen("{\"attachments\":[\"cpu.pprof\"],\"version\":\"4\"}"));
    assert_memory_equal(p[0].data, "{\"attachments\"", 14);
    assert_string_equal(p[1].name, "cpu.pprof");
    assert_string_equal(p[1].filename, "cpu.pprof");
    assert_string_equal(p[1].content_type, "application/octet-stream");
    assert_int_equal(p[1].len, pprof_len);
    assert_memory_equal(p[1].data, PPROF_BYTES, pprof_len);
    assert_string_equal(p[2].name, "empty");
    assert_string_equal(p[2].filename, "");
    assert_string_equal(p[2].content_type, "");
    assert_int_equal(p[2].len, 0);
}

static void test_v4_body_crlf_and_bare_lf(void **state)
{
    (void)state;
    const char *eols[] = {"\r\n", "\n"};
    for (size_t i = 0; i < 2; i++) {
        struct buf b = {0};
        v4_body(&b, eols[i]);
        struct multipart_part parts[8];
        size_t n = 99;
        struct cp_err err;
        if (multipart_parse((uint8_t *)b.data, b.len, "XyZ", parts, 8, &n, &err) < 0)
            fail_msg("%s", err.msg);
        /* The attachment ends in a CR: with CRLF line ends it is kept; a bare-LF body cannot
         * tell it from a CRLF delimiter (RFC 7578 bodies use CRLF; LF is a courtesy). */
        check_v4_parts(parts, n, sizeof PPROF_BYTES - i);
        /* Zero-copy: data points into the body. */
        assert_true(parts[1].data > (uint8_t *)b.data && parts[1].data < (uint8_t *)b.data + b.len);
        buf_free(&b);
    }
}

static void test_preamble_epilogue_and_padding(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_append_str(&b, "This is the preamble.\r\n--XyZ  \t\r\n");
    buf_append_str(&b, "Content-Disposition: form-data; name=\"a\\\"b\"\r\n\r\nvalue\r\n");
    buf_append_str(&b, "--XyZ--\r\nepilogue with --XyZ in it\r\n");
    struct multipart_part parts[4];
    size_t n;
    struct cp_err err;
    assert_int_equal(multipart_parse((uint8_t *)b.data, b.len, "XyZ", parts, 4, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(parts[0].name, "a\"b");
    assert_int_equal(parts[0].len, 5);
    assert_memory_equal(parts[0].data, "value", 5);
    buf_free(&b);
}

static void expect_parse_error(const char *body, size_t max_parts, const char *needle)
{
    struct multipart_part *parts = calloc(MULTIPART_MAX_PARTS, sizeof *parts);
    size_t n = 7;
    struct cp_err err;
    assert_int_equal(
        multipart_parse((const uint8_t *)body, strlen(body), "XyZ", parts, max_parts, &n, &err),
        -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    assert_int_equal(n, 0);
    if (!strstr(err.msg, needle)) fail_msg("expected \"%s\" in \"%s\"", needle, err.msg);
    free(parts);
}

static void test_malformed_bodies(void **state)
{
    (void)state;
    expect_parse_error("", 8, "not found");
    expect_parse_error("no delimiter here", 8, "not found");
    expect_parse_error("--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\ndata", 8,
                       "part 0: no closing boundary");
    expect_parse_error("--XyZ\r\nContent-Type: text/plain\r\n\r\ndata\r\n--XyZ--", 8,
                       "part 0: no Content-Disposition header");
    expect_parse_error("--XyZ\r\nContent-Disposition: form-data; name=a\r\n", 8,
                       "part 0: headers unterminated");
    expect_parse_error("--XyZjunk\r\n", 8, "malformed delimiter line before part 0");
    expect_parse_error("--XyZ\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--XyZ--", 8,
                       "part 0: malformed Content-Disposition");
    expect_parse_error("--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n"
                       "--XyZ\r\nContent-Disposition: form-data; name=b\r\n\r\ny\r\n--XyZ--",
                       1, "more than 1 parts");
}

static void test_bounds(void **state)
{
    (void)state;
    struct buf b = {0};
    struct cp_err err;
    struct multipart_part *parts = calloc(MULTIPART_MAX_PARTS, sizeof *parts);
    size_t n;
    /* 64 parts are fine, 65 are not, whatever max_parts asks. */
    for (int i = 0; i < 65; i++)
        buf_printf(&b, "--XyZ\r\nContent-Disposition: form-data; name=f%d\r\n\r\n%d\r\n", i, i);
    buf_append_str(&b, "--XyZ--\r\n");
    assert_int_equal(multipart_parse((uint8_t *)b.data, b.len, "XyZ", parts, 1000, &n, &err), -1);
    assert_non_null(strstr(err.msg, "more than 64 parts"));
    buf_reset(&b);
    for (int i = 0; i < 64; i++)
        buf_printf(&b, "--XyZ\r\nContent-Disposition: form-data; name=f%d\r\n\r\n%d\r\n", i, i);
    buf_append_str(&b, "--XyZ--\r\n");
    assert_int_equal(multipart_parse((uint8_t *)b.data, b.len, "XyZ", parts, 1000, &n, &err), 0);
    assert_int_equal(n, 64);
    assert_string_equal(parts[63].name, "f63");
    assert_memory_equal(parts[63].data, "63", 2);

    /* Header block over 8 KiB. */
    buf_reset(&b);
    buf_append_str(&b, "--XyZ\r\nContent-Disposition: form-data; name=a\r\n");
    for (int i = 0; i < 200; i++)
        buf_printf(&b, "X-Padding-%03d: %060d\r\n", i, i);
    buf_append_str(&b, "\r\nx\r\n--XyZ--\r\n");
    assert_int_equal(multipart_parse((uint8_t *)b.data, b.len, "XyZ", parts, 8, &n, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 8192 bytes"));

    /* A name that does not fit is an error, not a silent cut. */
    buf_reset(&b);
    buf_printf(&b, "--XyZ\r\nContent-Disposition: form-data; name=\"%0300d\"\r\n\r\nx\r\n--XyZ--",
               1);
    assert_int_equal(multipart_parse((uint8_t *)b.data, b.len, "XyZ", parts, 8, &n, &err), -1);
    assert_non_null(strstr(err.msg, "field name too long"));
    buf_reset(&b);
    buf_printf(&b,
               "--XyZ\r\nContent-Disposition: form-data; name=a; filename=\"%0300d\"\r\n\r\nx\r\n"
               "--XyZ--",
               1);
    assert_int_equal(multipart_parse((uint8_t *)b.data, b.len, "XyZ", parts, 8, &n, &err), -1);
    assert_non_null(strstr(err.msg, "filename too long"));

    /* A NUL inside a header line. */
    const char nul_header[] =
        "--XyZ\r\nContent-Disposition: form-data; name=a\0b\r\n\r\nx\r\n--XyZ--";
    assert_int_equal(multipart_parse((const uint8_t *)nul_header, sizeof nul_header - 1, "XyZ",
                                     parts, 8, &n, &err),
                     -1);
    assert_non_null(strstr(err.msg, "NUL"));

    assert_int_equal(multipart_parse((const uint8_t *)"x", 1, "", parts, 8, &n, &err), -1);
    free(parts);
    buf_free(&b);
}

/* Every prefix of a valid body fails cleanly or parses; never reads outside. */
static void test_every_prefix(void **state)
{
    (void)state;
    struct buf b = {0};
    v4_body(&b, "\r\n");
    struct multipart_part parts[8];
    size_t n;
    struct cp_err err;
    for (size_t cut = 0; cut < b.len; cut++) {
        uint8_t *copy = malloc(cut + 1);
        memcpy(copy, b.data, cut);
        int rc = multipart_parse(copy, cut, "XyZ", parts, 8, &n, &err);
        assert_true(rc == -1 || (rc == 0 && n == 3));
        free(copy);
    }
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary_from_content_type),
        cmocka_unit_test(test_v4_body_crlf_and_bare_lf),
        cmocka_unit_test(test_preamble_epilogue_and_padding),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_every_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
