/* pystack: frame walks over a fake address space laid out with the real generated offsets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fake_memory.h"
#include "pystack.h"

#define CODE_A 0x500000
#define CODE_B 0x510000
#define CODE_C 0x520000

/* 3.12: frames in a data-stack chunk, one shim frame (owner 3) between them, one frame (a
 * generator's) outside the chunk. */
static void test_cframe_layout_walk(void **state)
{
    (void)state;
    const struct py_offsets *off = py_offsets_for_version(PY_HEX(3, 12, 1));
    assert_non_null(off);
    assert_int_equal(off->layout, PY_LAYOUT_CFRAME);
    struct fake_memory m = {0};
    const uint64_t chunk = 0x100000, cframe = 0x200000, gen_frame = 0x300000;
    fake_region(&m, chunk, 4096);
    fake_region(&m, cframe, 64);
    fake_region(&m, gen_frame, 256);
    uint64_t f_main = chunk + 32, f_shim = chunk + 32 + 128, f_leaf = chunk + 32 + 256;
    uint64_t adaptive = (uint64_t)off->code_code_adaptive;
    /* leaf (in chunk) -> shim -> generator frame (outside) -> main (in chunk) */
    fake_put_u64(&m, cframe + (uint64_t)off->cframe_current_frame, f_leaf);
    fake_put_u64(&m, f_leaf + (uint64_t)off->frame_code, CODE_C);
    fake_put_u64(&m, f_leaf + (uint64_t)off->frame_lasti, CODE_C + adaptive + 10);
    fake_put_u64(&m, f_leaf + (uint64_t)off->frame_back, f_shim);
    fake_put_u64(&m, f_shim + (uint64_t)off->frame_code, CODE_B);
    fake_put_u8(&m, f_shim + (uint64_t)off->frame_owner, 3);
    fake_put_u64(&m, f_shim + (uint64_t)off->frame_back, gen_frame);
    fake_put_u64(&m, gen_frame + (uint64_t)off->frame_code, CODE_B);
    fake_put_u64(&m, gen_frame + (uint64_t)off->frame_lasti, CODE_B + adaptive + 4);
    fake_put_u64(&m, gen_frame + (uint64_t)off->frame_back, f_main);
    fake_put_u64(&m, f_main + (uint64_t)off->frame_code, CODE_A);
    fake_put_u64(&m, f_main + (uint64_t)off->frame_lasti, CODE_A + adaptive - 2); /* not started */
    struct memreader mem = fake_reader(&m);
    struct pystack_walker w;
    pystack_walker_init(&w, &mem, off, 0);
    struct py_thread t = {.frame = cframe, .datastack_chunk = chunk};
    static struct py_stack stack;
    struct cp_err err;
    assert_int_equal(pystack_walk(&w, &t, NULL, &stack, &err), 0);
    assert_int_equal(stack.depth, 3);
    assert_int_equal(stack.frames[0].code, CODE_C);
    assert_int_equal(stack.frames[0].offset, 10);
    assert_int_equal(stack.frames[1].code, CODE_B);
    assert_int_equal(stack.frames[1].offset, 4);
    assert_int_equal(stack.frames[2].code, CODE_A);
    assert_int_equal(stack.frames[2].offset, -1);
    /* cframe read + one chunk copy + the generator frame: 3 reads, not one per frame */
    assert_int_equal(m.reads, 3);
    pystack_walker_free(&w);
    fake_memory_free(&m);
}

static uint64_t objframe(struct fake_memory *m, const struct py_offsets *off, uint64_t addr,
                         uint64_t code, int32_t lasti, uint64_t back)
{
    fake_region(m, addr, 512);
    fake_put_u64(m, addr + (uint64_t)off->frame_code, code);
    fake_put_u64(m, addr + (uint64_t)off->frame_back, back);
    uint64_t word = (uint32_t)lasti;
    fake_put_u64(m, addr + (uint64_t)off->frame_lasti, word);
    return addr;
}

/* 3.9 heap frame objects: the second walk of a steady stack costs one vectored read. */
static void test_frameobject_walk_uses_hint(void **state)
{
    (void)state;
    const struct py_offsets *off = py_offsets_for_version(PY_HEX(3, 9, 18));
    assert_non_null(off);
    struct fake_memory m = {0};
    uint64_t f3 = objframe(&m, off, 0x700000, CODE_A, 6, 0);
    uint64_t f2 = objframe(&m, off, 0x710000, CODE_B, 20, f3);
    uint64_t f1 = objframe(&m, off, 0x720000, CODE_C, 44, f2);
    struct memreader mem = fake_reader(&m);
    struct pystack_walker w;
    pystack_walker_init(&w, &mem, off, 0);
    struct pystack_hint hint = {0};
    struct py_thread t = {.frame = f1};
    static struct py_stack stack;
    struct cp_err err;
    assert_int_equal(pystack_walk(&w, &t, &hint, &stack, &err), 0);
    assert_int_equal(stack.depth, 3);
    assert_int_equal(stack.frames[0].offset, 44);
    assert_int_equal(stack.frames[2].code, CODE_A);
    unsigned calls_first = m.reads + m.readvs;
    assert_int_equal(calls_first, 3);
    m.reads = m.readvs = 0;
    assert_int_equal(pystack_walk(&w, &t, &hint, &stack, &err), 0);
    assert_int_equal(stack.depth, 3);
    assert_int_equal(m.reads, 0);
    assert_int_equal(m.readvs, 1);
    /* a new leaf on top: prefetched frames still used, only the new one read */
    uint64_t f0 = objframe(&m, off, 0x730000, CODE_A, 2, f1);
    t.frame = f0;
    m.reads = m.readvs = 0;
    assert_int_equal(pystack_walk(&w, &t, &hint, &stack, &err), 0);
    assert_int_equal(stack.depth, 4);
    assert_int_equal(m.reads, 1);
    pystack_hint_free(&hint);
    pystack_walker_free(&w);
    fake_memory_free(&m);
}

static void test_cycle_is_an_error(void **state)
{
    (void)state;
    const struct py_offsets *off = py_offsets_for_version(PY_HEX(3, 10, 13));
    struct fake_memory m = {0};
    objframe(&m, off, 0x800000, CODE_A, 0, 0x810000);
    objframe(&m, off, 0x810000, CODE_B, 0, 0x800000);
    struct memreader mem = fake_reader(&m);
    struct pystack_walker w;
    pystack_walker_init(&w, &mem, off, 0);
    struct py_thread t = {.frame = 0x800000};
    static struct py_stack stack;
    struct cp_err err;
    assert_int_equal(pystack_walk(&w, &t, NULL, &stack, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "cycle"));
    pystack_walker_free(&w);
    fake_memory_free(&m);
}

static void test_deep_chain_is_truncated(void **state)
{
    (void)state;
    const struct py_offsets *off = py_offsets_for_version(PY_HEX(3, 8, 18));
    struct fake_memory m = {0};
    const int n = 5000, stride = 128;
    uint8_t *r = fake_region(&m, 0x1000000, (size_t)n * stride);
    for (int i = 0; i < n; i++) {
        uint64_t back = i + 1 < n ? 0x1000000 + (uint64_t)(i + 1) * stride : 0;
        uint64_t code = CODE_A;
        memcpy(r + i * stride + off->frame_back, &back, 8);
        memcpy(r + i * stride + off->frame_code, &code, 8);
    }
    struct memreader mem = fake_reader(&m);
    struct pystack_walker w;
    pystack_walker_init(&w, &mem, off, 0);
    struct py_thread t = {.frame = 0x1000000};
    static struct py_stack stack;
    struct cp_err err;
    assert_int_equal(pystack_walk(&w, &t, NULL, &stack, &err), 0);
    assert_int_equal(stack.depth, PYSTACK_MAX_DEPTH);
    assert_true(stack.truncated);
    pystack_walker_free(&w);
    fake_memory_free(&m);
}

static void test_unreadable_frame_fails(void **state)
{
    (void)state;
    const struct py_offsets *off = py_offsets_for_version(PY_HEX(3, 11, 7));
    struct fake_memory m = {0};
    fake_region(&m, 0x200000, 64);
    fake_put_u64(&m, 0x200000 + (uint64_t)off->cframe_current_frame, 0xdead0000);
    struct memreader mem = fake_reader(&m);
    struct pystack_walker w;
    pystack_walker_init(&w, &mem, off, 0);
    struct py_thread t = {.frame = 0x200000, .datastack_chunk = 0};
    static struct py_stack stack;
    struct cp_err err;
    assert_int_equal(pystack_walk(&w, &t, NULL, &stack, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    pystack_walker_free(&w);
    fake_memory_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cframe_layout_walk),
        cmocka_unit_test(test_frameobject_walk_uses_hint),
        cmocka_unit_test(test_cycle_is_an_error),
        cmocka_unit_test(test_deep_chain_is_truncated),
        cmocka_unit_test(test_unreadable_frame_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
