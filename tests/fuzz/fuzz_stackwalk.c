/* Fuzzes the frame walker and the symbolizer with a fake target: the input is the target's whole
 * memory. Every address >= 0x1000 reads the input cyclically (address modulo its size), so any
 * pointer the walker follows lands somewhere: chains, cycles, huge lengths and garbage strings
 * all come up quickly. The first byte picks the CPython layout (every generated table, plus the
 * 3.13 layout family). Nothing may crash, hang or read out of bounds. */
#include "aggregate.h"
#include "pyoffsets.h"
#include "pystack.h"
#include "symbolizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fake_mem {
    const uint8_t *data;
    size_t size;
};

static int fake_read(void *ctx, uint64_t addr, void *dst, size_t len)
{
    const struct fake_mem *m = ctx;
    if (addr < 0x1000 || len > (1u << 20)) {
        errno = EFAULT;
        return -1;
    }
    uint8_t *out = dst;
    for (size_t i = 0; i < len; i++)
        out[i] = m->data[(addr + i) % m->size];
    return 0;
}

static uint64_t word(const uint8_t *d, size_t size, size_t at)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v |= (uint64_t)d[(at + i) % size] << (8 * i);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 32 || py_offsets_table_len == 0) return 0;
    struct py_offsets off = py_offsets_table[data[0] % py_offsets_table_len].off;
    if (data[1] & 1 && off.layout == PY_LAYOUT_CFRAME) { /* 3.13 family on a 3.12 layout */
        off.layout = PY_LAYOUT_IFRAME;
        off.cframe_current_frame = PYOFF_NONE;
    }
    struct fake_mem fm = {data, size};
    struct memreader mem = {.read = fake_read, .readv = NULL, .ctx = &fm};
    struct py_thread t = {
        .tstate = 0x1000, .frame = word(data, size, 2), .datastack_chunk = word(data, size, 10)};

    struct agg agg;
    if (agg_init(&agg) < 0) return 0;
    struct symbolizer sym;
    struct pystack_walker w;
    struct pystack_hint hint = {0};
    struct py_stack *stack = malloc(sizeof *stack);
    if (stack &&
        symbolizer_init(&sym, &mem, &off, data[1] & 2 ? word(data, size, 18) : 0, &agg) == 0) {
        pystack_walker_init(&w, &mem, &off, word(data, size, 26));
        for (int round = 0; round < 2; round++) { /* the second round uses the hint */
            struct cp_err err;
            sym.tick += 200; /* force re-validation paths */
            if (pystack_walk(&w, &t, &hint, stack, &err) < 0) continue;
            for (uint32_t i = 0; i < stack->depth && i < 64; i++)
                symbolizer_frame(&sym, stack->frames[i].code, stack->frames[i].offset, &err);
        }
        pystack_walker_free(&w);
        pystack_hint_free(&hint);
        symbolizer_free(&sym);
    }
    free(stack);
    agg_free(&agg);
    return 0;
}
