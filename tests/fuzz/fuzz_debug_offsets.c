/* Fuzzes py_offsets_from_debug: the input is the target memory that starts at &_PyRuntime (reads
 * past its end fail with EFAULT, as an unmapped page would). Besides not crashing, a success must
 * give offsets the walker can trust: every field inside the bytes-to-read of its struct, every
 * other offset non-negative and below 1 MiB; anything else aborts. The seed corpus holds the real
 * _Py_DebugOffsets of CPython 3.13.0 and two variants (3.14 version, free-threaded). */
#include "pyoffsets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RUNTIME_ADDR 0x7f0000000000ull

struct input_mem {
    const uint8_t *data;
    size_t size;
};

static int input_read(void *ctx, uint64_t addr, void *dst, size_t len)
{
    const struct input_mem *m = ctx;
    if (addr < RUNTIME_ADDR || addr - RUNTIME_ADDR > m->size ||
        len > m->size - (addr - RUNTIME_ADDR)) {
        errno = EFAULT;
        return -1;
    }
    memcpy(dst, m->data + (addr - RUNTIME_ADDR), len);
    return 0;
}

static void check_inside(int32_t off, int width, int32_t size)
{
    if (off != PYOFF_NONE && (off < 0 || off + width > size)) abort();
}

static void check_offsets(const struct py_offsets *o)
{
    if (o->tstate_size <= 0 || o->frame_size <= 0 || o->code_size <= 0) abort();
    const int32_t tstate[] = {
        o->tstate_next,      o->tstate_interp,           o->tstate_frame,
        o->tstate_thread_id, o->tstate_native_thread_id, o->tstate_datastack_chunk};
    for (size_t i = 0; i < sizeof tstate / sizeof tstate[0]; i++)
        check_inside(tstate[i], 8, o->tstate_size);
    const int32_t frame[] = {o->frame_back, o->frame_code, o->frame_lasti};
    for (size_t i = 0; i < sizeof frame / sizeof frame[0]; i++)
        check_inside(frame[i], 8, o->frame_size);
    check_inside(o->frame_owner, 1, o->frame_size);
    const int32_t code[] = {o->code_ob_size, o->code_filename, o->code_name, o->code_qualname,
                            o->code_linetable};
    for (size_t i = 0; i < sizeof code / sizeof code[0]; i++)
        check_inside(code[i], 8, o->code_size);
    const int32_t code_ints[] = {o->code_argcount, o->code_flags, o->code_firstlineno};
    for (size_t i = 0; i < sizeof code_ints / sizeof code_ints[0]; i++)
        check_inside(code_ints[i], 4, o->code_size);
    check_inside(o->code_code_adaptive, 1, o->code_size);
    const int32_t others[] = {o->runtime_interpreters_head,
                              o->interp_next,
                              o->interp_id,
                              o->interp_tstate_head,
                              o->interp_gil_locked,
                              o->interp_gil_last_holder,
                              o->object_type,
                              o->bytes_size,
                              o->bytes_sval,
                              o->unicode_length,
                              o->unicode_state,
                              o->unicode_ascii_size};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        check_inside(others[i], 0, 1 << 20);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input_mem m = {data, size};
    struct memreader r = {.read = input_read, .readv = NULL, .ctx = &m};
    struct py_offsets off;
    uint32_t version = 0;
    struct cp_err err;
    if (py_offsets_from_debug(&r, RUNTIME_ADDR, &off, &version, &err) == 0) {
        if ((version >> 16) != 0x030d || off.version_hex != version) abort();
        check_offsets(&off);
    } else if (err.code != CP_ERR_INVALID && err.code != CP_ERR_UNSUPPORTED) {
        abort();
    }
    return 0;
}
