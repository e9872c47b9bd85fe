/* symbolizer: code objects laid out in a fake address space with the real 3.12 offsets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fake_memory.h"
#include "symbolizer.h"

#define CODE_TYPE 0x9000
#define CODE 0x100000

static const struct py_offsets *off312(void)
{
    return py_offsets_for_version(PY_HEX(3, 12, 1));
}

/* A compact ASCII str object at addr. */
static void put_str(struct fake_memory *m, uint64_t addr, const char *text)
{
    const struct py_offsets *off = off312();
    size_t len = strlen(text);
    uint8_t *obj = fake_region(m, addr, (size_t)off->unicode_ascii_size + len + 1);
    int64_t length = (int64_t)len;
    uint32_t state = (1u << 2) | (1u << 5) | (1u << 6); /* kind 1, compact, ascii */
    memcpy(obj + off->unicode_length, &length, 8);
    memcpy(obj + off->unicode_state, &state, 4);
    memcpy(obj + off->unicode_ascii_size, text, len);
}

static void put_bytes(struct fake_memory *m, uint64_t addr, const uint8_t *data, size_t len)
{
    const struct py_offsets *off = off312();
    uint8_t *obj = fake_region(m, addr, (size_t)off->bytes_sval + len + 1);
    int64_t size = (int64_t)len;
    memcpy(obj + off->bytes_size, &size, 8);
    memcpy(obj + off->bytes_sval, data, len);
}

/* Fills the code object header at CODE (the region must exist). */
static void put_code(struct fake_memory *m, uint64_t name, uint64_t file, uint64_t table,
                     int32_t firstlineno)
{
    const struct py_offsets *off = off312();
    fake_put_u64(m, CODE + (uint64_t)off->object_type, CODE_TYPE);
    fake_put_u64(m, CODE + (uint64_t)off->code_qualname, name);
    fake_put_u64(m, CODE + (uint64_t)off->code_filename, file);
    fake_put_u64(m, CODE + (uint64_t)off->code_linetable, table);
    fake_put_u64(m, CODE + (uint64_t)off->code_ob_size, 16); /* 16 code units */
    for (int i = 0; i < 4; i++)                              /* co_firstlineno, an int */
        fake_put_u8(m, CODE + (uint64_t)off->code_firstlineno + (uint64_t)i,
                    (uint8_t)((uint32_t)firstlineno >> (8 * i)));
}

/* 3.11+ location table: units 0-7 on the first line, units 8-15 three lines further. */
static const uint8_t TABLE[] = {0x80 | (13 << 3) | 7, 0x00, 0x80 | (13 << 3) | 7, 0x06};

/* A fake target with room for a code object at CODE, and a symbolizer over it. */
struct fixture {
    struct fake_memory m;
    struct memreader mem;
    struct agg agg;
    struct symbolizer s;
    struct cp_err err;
};

static struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fake_region(&f->m, CODE, 512);
    f->mem = fake_reader(&f->m);
    assert_int_equal(agg_init(&f->agg), 0);
    assert_int_equal(symbolizer_init(&f->s, &f->mem, off312(), CODE_TYPE, &f->agg), 0);
    return f;
}

static void fixture_free(struct fixture *f)
{
    symbolizer_free(&f->s);
    agg_free(&f->agg);
    fake_memory_free(&f->m);
    free(f);
}

static const char *frame_name(const struct fixture *f, uint32_t id)
{
    return strtab_get(&f->agg.strings, f->agg.frames[id].name);
}

static void test_names_lines_and_cache(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    put_str(&f->m, 0x200000, "Outer.alpha");
    put_str(&f->m, 0x210000, "/srv/app/a.py");
    put_bytes(&f->m, 0x220000, TABLE, sizeof TABLE);
    put_code(&f->m, 0x200000, 0x210000, 0x220000, 10);
    uint32_t a = symbolizer_frame(&f->s, CODE, 4, &f->err);
    assert_int_not_equal(a, 0);
    assert_string_equal(frame_name(f, a), "Outer.alpha");
    assert_string_equal(strtab_get(&f->agg.strings, f->agg.frames[a].file), "/srv/app/a.py");
    assert_int_equal(f->agg.frames[a].line, 10);
    uint32_t b = symbolizer_frame(&f->s, CODE, 20, &f->err); /* unit 10 */
    assert_int_equal(f->agg.frames[b].line, 13);
    assert_int_not_equal(symbolizer_frame(&f->s, CODE, -1, &f->err), 0); /* not started */
    f->m.reads = 0;
    assert_int_equal(symbolizer_frame(&f->s, CODE, 4, &f->err), a); /* a steady frame: no read */
    assert_int_equal(f->m.reads, 0);
    fixture_free(f);
}

/* A code object freed and another allocated at its address is noticed at the next new offset. */
static void test_replaced_code_object(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    put_str(&f->m, 0x200000, "<module>");
    put_str(&f->m, 0x210000, "<string>");
    put_bytes(&f->m, 0x220000, TABLE, sizeof TABLE);
    put_str(&f->m, 0x230000, "replacement");
    put_bytes(&f->m, 0x240000, TABLE, sizeof TABLE);
    put_code(&f->m, 0x200000, 0x210000, 0x220000, 1);
    uint32_t first = symbolizer_frame(&f->s, CODE, 2, &f->err);
    assert_int_equal(f->agg.frames[first].line, 1);
    put_code(&f->m, 0x230000, 0x210000, 0x240000, 40);
    f->s.tick++;
    uint32_t second = symbolizer_frame(&f->s, CODE, 18, &f->err);
    assert_string_equal(frame_name(f, second), "replacement");
    assert_int_equal(f->agg.frames[second].line, 43);
    assert_int_equal(f->s.invalidations, 1);
    /* the old (code, offset) pair is not served from the line cache either */
    f->s.tick += SYMBOLIZER_RECHECK_TICKS;
    uint32_t again = symbolizer_frame(&f->s, CODE, 2, &f->err);
    assert_string_equal(frame_name(f, again), "replacement");
    fixture_free(f);
}

static void test_not_a_code_object(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    put_str(&f->m, 0x200000, "x");
    put_code(&f->m, 0x200000, 0x200000, 0x200000, 1);
    fake_put_u64(&f->m, CODE + (uint64_t)off312()->object_type, 0x1234);
    assert_int_equal(symbolizer_frame(&f->s, CODE, 0, &f->err), 0);
    assert_int_equal(f->err.code, CP_ERR_INVALID);
    assert_int_equal(symbolizer_frame(&f->s, 0xdead0000, 0, &f->err), 0); /* unmapped */
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_lines_and_cache),
        cmocka_unit_test(test_replaced_code_object),
        cmocka_unit_test(test_not_a_code_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
