/* pyoffsets: from a CPython version (or a live 3.13 runtime) to the struct py_offsets the
 * walker reads memory with.
 *
 * 3.7-3.12 are a range lookup in the generated table (pyoffsets_generated.c), on
 * major.minor.micro only: a 3.12.1rc1 and a 3.12.1 share a layout.
 * 3.13 carries its own offsets in _Py_DebugOffsets at the start of _PyRuntime. That struct is
 * only stable within one minor, so it is declared here for 3.13 alone (struct debug_offsets_313,
 * checked against CPython's sizeof by the probe) and anything else is refused by version. It is
 * target memory, so it is read once and distrusted: each struct size must be below 1 MiB and
 * each field, with the width it has in 3.13, must lie inside its struct (a table of field
 * descriptors drives the check), so a corrupt or hostile process cannot make the walker read
 * far outside an object. The few values 3.13 does not publish are constants measured by the
 * probe. Pure functions over const data: no global mutable state.
 */
#include "pyoffsets.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---- version lookup ------------------------------------------------------------------------ */

const struct py_offsets *py_offsets_for_version(uint32_t version_hex)
{
    uint32_t key = version_hex >> 8; /* drops release level and serial */
    for (unsigned i = 0; i < py_offsets_table_len; i++) {
        const struct py_offsets_entry *e = &py_offsets_table[i];
        if (key >= e->min_hex >> 8 && key <= e->max_hex >> 8) return &e->off;
    }
    return NULL;
}

const char *py_version_str(uint32_t version_hex, char *buf, unsigned bufsize)
{
    unsigned major = version_hex >> 24, minor = (version_hex >> 16) & 0xffu;
    unsigned micro = (version_hex >> 8) & 0xffu, level = (version_hex >> 4) & 0xfu;
    unsigned serial = version_hex & 0xfu;
    const char *tag = level == 0xa ? "a" : level == 0xb ? "b" : level == 0xc ? "rc" : NULL;
    if (tag)
        snprintf(buf, bufsize, "%u.%u.%u%s%u", major, minor, micro, tag, serial);
    else
        snprintf(buf, bufsize, "%u.%u.%u", major, minor, micro);
    return buf;
}

/* ---- 3.13 _Py_DebugOffsets ----------------------------------------------------------------- */

/* CPython 3.13's _Py_DebugOffsets (Include/internal/pycore_runtime.h), every field a uint64_t:
 * a struct size or a byte offset inside that struct. */
struct debug_offsets_313 {
    char cookie[8];
    uint64_t version;
    uint64_t free_threaded;
    struct {
        uint64_t size, finalizing, interpreters_head;
    } runtime_state;
    struct {
        uint64_t size, id, next, threads_head, gc, imports_modules, sysdict, builtins, ceval_gil,
            gil_runtime_state, gil_runtime_state_enabled, gil_runtime_state_locked,
            gil_runtime_state_holder;
    } interpreter_state;
    struct {
        uint64_t size, prev, next, interp, current_frame, thread_id, native_thread_id,
            datastack_chunk, status;
    } thread_state;
    struct {
        uint64_t size, previous, executable, instr_ptr, localsplus, owner;
    } interpreter_frame;
    struct {
        uint64_t size, filename, name, qualname, linetable, firstlineno, argcount, localsplusnames,
            localspluskinds, co_code_adaptive;
    } code_object;
    struct {
        uint64_t size, ob_type;
    } pyobject;
    struct {
        uint64_t size, tp_name, tp_repr, tp_flags;
    } type_object;
    struct {
        uint64_t size, ob_item, ob_size;
    } tuple_object;
    struct {
        uint64_t size, ob_item, ob_size;
    } list_object;
    struct {
        uint64_t size, ma_keys, ma_values;
    } dict_object;
    struct {
        uint64_t size, ob_fval;
    } float_object;
    struct {
        uint64_t size, lv_tag, ob_digit;
    } long_object;
    struct {
        uint64_t size, ob_size, ob_sval;
    } bytes_object;
    struct {
        uint64_t size, state, length, asciiobject_size;
    } unicode_object;
    struct {
        uint64_t size, collecting;
    } gc;
};

/* sizeof(_Py_DebugOffsets) on 3.13.0, printed by tools/gen_offsets/probe.c. */
_Static_assert(sizeof(struct debug_offsets_313) == 584, "3.13 _Py_DebugOffsets is 584 bytes");

#define DEBUG_COOKIE "xdebugpy"
#define DEBUG_MAX_STRUCT_SIZE (1u << 20)

/* Not in 3.13's _Py_DebugOffsets: measured by tools/gen_offsets/probe.c against the 3.13.0
 * headers (the #if 0 reference block of pyoffsets_generated.c) and stable within 3.13, whose
 * object layouts do not change between patch releases. */
enum {
    PY313_VAROBJECT_OB_SIZE = 16,    /* offsetof(PyVarObject, ob_size): Py_SIZE(code) */
    PY313_CODE_FLAGS = 48,           /* offsetof(PyCodeObject, co_flags) */
    PY313_COMPACT_UNICODE_SIZE = 56, /* sizeof(PyCompactUnicodeObject) */
    PY313_UNICODE_DATA_ANY = 56,     /* offsetof(PyUnicodeObject, data.any) */
};

/* Widths of the 3.13 fields, in bytes: what must fit between an offset and its struct's end. */
enum {
    W_PTR = 8,  /* pointers, Py_ssize_t, unsigned long, int64_t, uintptr_t, double */
    W_INT = 4,  /* int, the unicode state bitfield word, digit */
    W_CHAR = 1, /* char owner, the first byte of co_code_adaptive / ob_sval, embedded structs */
    W_SIZE = 0, /* the value is itself a size (asciiobject_size): it may equal the struct size */
};

struct debug_field {
    const char *name;
    uint16_t size_at;  /* where the field's struct size is, in struct debug_offsets_313 */
    uint16_t value_at; /* where the field's offset is */
    uint8_t width;
};

#define DEBUG_FIELD(sec, field, field_width)                                                       \
    {                                                                                              \
        .name = #sec "." #field, .size_at = offsetof(struct debug_offsets_313, sec.size),          \
        .value_at = offsetof(struct debug_offsets_313, sec.field), .width = field_width            \
    }

static const struct debug_field debug_fields[] = {
    DEBUG_FIELD(runtime_state, finalizing, W_PTR),
    DEBUG_FIELD(runtime_state, interpreters_head, W_PTR),
    DEBUG_FIELD(interpreter_state, id, W_PTR),
    DEBUG_FIELD(interpreter_state, next, W_PTR),
    DEBUG_FIELD(interpreter_state, threads_head, W_PTR),
    DEBUG_FIELD(interpreter_state, gc, W_CHAR),
    DEBUG_FIELD(interpreter_state, imports_modules, W_PTR),
    DEBUG_FIELD(interpreter_state, sysdict, W_PTR),
    DEBUG_FIELD(interpreter_state, builtins, W_PTR),
    DEBUG_FIELD(interpreter_state, ceval_gil, W_PTR),
    DEBUG_FIELD(interpreter_state, gil_runtime_state, W_CHAR),
    DEBUG_FIELD(interpreter_state, gil_runtime_state_locked, W_INT),
    DEBUG_FIELD(interpreter_state, gil_runtime_state_holder, W_PTR),
    DEBUG_FIELD(thread_state, prev, W_PTR),
    DEBUG_FIELD(thread_state, next, W_PTR),
    DEBUG_FIELD(thread_state, interp, W_PTR),
    DEBUG_FIELD(thread_state, current_frame, W_PTR),
    DEBUG_FIELD(thread_state, thread_id, W_PTR),
    DEBUG_FIELD(thread_state, native_thread_id, W_PTR),
    DEBUG_FIELD(thread_state, datastack_chunk, W_PTR),
    DEBUG_FIELD(thread_state, status, W_INT),
    DEBUG_FIELD(interpreter_frame, previous, W_PTR),
    DEBUG_FIELD(interpreter_frame, executable, W_PTR),
    DEBUG_FIELD(interpreter_frame, instr_ptr, W_PTR),
    DEBUG_FIELD(interpreter_frame, localsplus, W_PTR),
    DEBUG_FIELD(interpreter_frame, owner, W_CHAR),
    DEBUG_FIELD(code_object, filename, W_PTR),
    DEBUG_FIELD(code_object, name, W_PTR),
    DEBUG_FIELD(code_object, qualname, W_PTR),
    DEBUG_FIELD(code_object, linetable, W_PTR),
    DEBUG_FIELD(code_object, firstlineno, W_INT),
    DEBUG_FIELD(code_object, argcount, W_INT),
    DEBUG_FIELD(code_object, localsplusnames, W_PTR),
    DEBUG_FIELD(code_object, localspluskinds, W_PTR),
    DEBUG_FIELD(code_object, co_code_adaptive, W_CHAR),
    DEBUG_FIELD(pyobject, ob_type, W_PTR),
    DEBUG_FIELD(type_object, tp_name, W_PTR),
    DEBUG_FIELD(type_object, tp_repr, W_PTR),
    DEBUG_FIELD(type_object, tp_flags, W_PTR),
    DEBUG_FIELD(tuple_object, ob_item, W_PTR),
    DEBUG_FIELD(tuple_object, ob_size, W_PTR),
    DEBUG_FIELD(list_object, ob_item, W_PTR),
    DEBUG_FIELD(list_object, ob_size, W_PTR),
    DEBUG_FIELD(dict_object, ma_keys, W_PTR),
    DEBUG_FIELD(dict_object, ma_values, W_PTR),
    DEBUG_FIELD(float_object, ob_fval, W_PTR),
    DEBUG_FIELD(long_object, lv_tag, W_PTR),
    DEBUG_FIELD(long_object, ob_digit, W_INT),
    DEBUG_FIELD(bytes_object, ob_size, W_PTR),
    DEBUG_FIELD(bytes_object, ob_sval, W_CHAR),
    DEBUG_FIELD(unicode_object, state, W_INT),
    DEBUG_FIELD(unicode_object, length, W_PTR),
    DEBUG_FIELD(unicode_object, asciiobject_size, W_SIZE),
    DEBUG_FIELD(gc, collecting, W_INT),
};

static uint64_t u64_at(const struct debug_offsets_313 *d, uint16_t at)
{
    uint64_t v;
    memcpy(&v, (const char *)d + at, sizeof v);
    return v;
}

static int read_debug_offsets(const struct memreader *mem, uint64_t addr,
                              struct debug_offsets_313 *d, struct cp_err *err)
{
    if (mem_read(mem, addr, d, sizeof *d) == 0) return 0;
    int e = errno;
    enum cp_err_code code = e == ESRCH                    ? CP_ERR_NOPROC
                            : (e == EPERM || e == EACCES) ? CP_ERR_PERM
                                                          : CP_ERR_INVALID;
    cp_err_set(err, code, "cannot read _Py_DebugOffsets at 0x%llx: %s", (unsigned long long)addr,
               strerror(e));
    return -1;
}

/* Cookie, version and build; sets *version_hex as soon as the version is known. */
static int check_header(const struct debug_offsets_313 *d, uint32_t *version_hex,
                        struct cp_err *err)
{
    char v[16];
    if (memcmp(d->cookie, DEBUG_COOKIE, sizeof d->cookie) != 0) {
        cp_err_set(err, CP_ERR_INVALID,
                   "no _Py_DebugOffsets cookie \"" DEBUG_COOKIE "\" at the start of _PyRuntime");
        return -1;
    }
    if (d->version > UINT32_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "_Py_DebugOffsets version 0x%llx is not a PY_VERSION_HEX",
                   (unsigned long long)d->version);
        return -1;
    }
    *version_hex = (uint32_t)d->version;
    py_version_str(*version_hex, v, sizeof v);
    if ((*version_hex >> 16) != 0x030d) {
        cp_err_set(err, CP_ERR_UNSUPPORTED,
                   "Python %s is not supported: conprof reads _Py_DebugOffsets of CPython 3.13 "
                   "only (its layout changes with each minor version)",
                   v);
        return -1;
    }
    if (d->free_threaded != 0) {
        cp_err_set(err, CP_ERR_UNSUPPORTED,
                   "free-threaded build of Python %s (python3.13t) is not supported", v);
        return -1;
    }
    return 0;
}

/* size < 1 MiB for the field's struct and offset + width <= size; W_SIZE values <= size. */
static int check_field(const struct debug_offsets_313 *d, const struct debug_field *f,
                       struct cp_err *err)
{
    uint64_t size = u64_at(d, f->size_at), off = u64_at(d, f->value_at);
    if (size == 0 || size >= DEBUG_MAX_STRUCT_SIZE) {
        cp_err_set(err, CP_ERR_INVALID, "_Py_DebugOffsets: the struct of %s has size %llu", f->name,
                   (unsigned long long)size);
        return -1;
    }
    if (off > size || size - off < f->width || (f->width && off == size)) {
        cp_err_set(err, CP_ERR_INVALID,
                   "_Py_DebugOffsets: %s = %llu (%u bytes) does not fit its struct of %llu bytes",
                   f->name, (unsigned long long)off, f->width, (unsigned long long)size);
        return -1;
    }
    return 0;
}

/* Relations between fields (gil_runtime_state_enabled is relative to the interpreter's _gil,
 * whose size 3.13 does not publish: it must at least fit in the interpreter state), and the
 * probe-measured constants against the sizes 3.13 reports. */
static int check_relations(const struct debug_offsets_313 *d, struct cp_err *err)
{
    const char *bad = NULL;
    uint64_t gil_room = d->interpreter_state.size - d->interpreter_state.gil_runtime_state;
    if (d->interpreter_state.gc + d->gc.size > d->interpreter_state.size)
        bad = "the gc state does not fit in the interpreter state";
    else if (d->interpreter_state.gil_runtime_state_enabled + W_INT > gil_room)
        bad = "gil_runtime_state_enabled lies outside the interpreter state";
    else if (d->unicode_object.state + W_INT > d->unicode_object.asciiobject_size ||
             d->unicode_object.length + W_PTR > d->unicode_object.asciiobject_size)
        bad = "unicode state/length lie outside PyASCIIObject";
    else if (PY313_UNICODE_DATA_ANY + W_PTR > d->unicode_object.size ||
             PY313_COMPACT_UNICODE_SIZE > d->unicode_object.size)
        bad = "PyUnicodeObject is smaller than CPython 3.13's";
    else if (PY313_CODE_FLAGS + W_INT > d->code_object.size ||
             PY313_VAROBJECT_OB_SIZE + W_PTR > d->code_object.size)
        bad = "PyCodeObject is smaller than CPython 3.13's";
    if (bad) cp_err_set(err, CP_ERR_INVALID, "_Py_DebugOffsets: %s", bad);
    return bad ? -1 : 0;
}

/* Sets *field to the offset and grows *bytes_to_read to cover it. */
static void take(int32_t *field, int32_t *bytes_to_read, uint64_t off, unsigned width)
{
    *field = (int32_t)off;
    if ((int32_t)(off + width) > *bytes_to_read) *bytes_to_read = (int32_t)(off + width);
}

static void fill_thread_and_frame(const struct debug_offsets_313 *d, struct py_offsets *o)
{
    o->tstate_size = 0;
    take(&o->tstate_next, &o->tstate_size, d->thread_state.next, W_PTR);
    take(&o->tstate_interp, &o->tstate_size, d->thread_state.interp, W_PTR);
    take(&o->tstate_frame, &o->tstate_size, d->thread_state.current_frame, W_PTR);
    take(&o->tstate_thread_id, &o->tstate_size, d->thread_state.thread_id, W_PTR);
    take(&o->tstate_native_thread_id, &o->tstate_size, d->thread_state.native_thread_id, W_PTR);
    take(&o->tstate_datastack_chunk, &o->tstate_size, d->thread_state.datastack_chunk, W_PTR);
    o->cframe_current_frame = PYOFF_NONE;

    o->frame_size = 0;
    take(&o->frame_back, &o->frame_size, d->interpreter_frame.previous, W_PTR);
    take(&o->frame_code, &o->frame_size, d->interpreter_frame.executable, W_PTR);
    take(&o->frame_lasti, &o->frame_size, d->interpreter_frame.instr_ptr, W_PTR);
    take(&o->frame_owner, &o->frame_size, d->interpreter_frame.owner, W_CHAR);
    o->frame_is_entry = PYOFF_NONE;
}

static void fill_code_and_objects(const struct debug_offsets_313 *d, struct py_offsets *o)
{
    o->code_size = 0;
    take(&o->code_ob_size, &o->code_size, PY313_VAROBJECT_OB_SIZE, W_PTR);
    take(&o->code_argcount, &o->code_size, d->code_object.argcount, W_INT);
    take(&o->code_flags, &o->code_size, PY313_CODE_FLAGS, W_INT);
    take(&o->code_firstlineno, &o->code_size, d->code_object.firstlineno, W_INT);
    take(&o->code_filename, &o->code_size, d->code_object.filename, W_PTR);
    take(&o->code_name, &o->code_size, d->code_object.name, W_PTR);
    take(&o->code_qualname, &o->code_size, d->code_object.qualname, W_PTR);
    take(&o->code_linetable, &o->code_size, d->code_object.linetable, W_PTR);
    take(&o->code_code_adaptive, &o->code_size, d->code_object.co_code_adaptive, W_CHAR);
    o->code_code = PYOFF_NONE;

    o->object_type = (int32_t)d->pyobject.ob_type;
    o->bytes_size = (int32_t)d->bytes_object.ob_size;
    o->bytes_sval = (int32_t)d->bytes_object.ob_sval;
    o->unicode_length = (int32_t)d->unicode_object.length;
    o->unicode_state = (int32_t)d->unicode_object.state;
    o->unicode_ascii_size = (int32_t)d->unicode_object.asciiobject_size;
    o->unicode_compact_size = PY313_COMPACT_UNICODE_SIZE;
    o->unicode_data_any = PY313_UNICODE_DATA_ANY;
}

static void fill_offsets(const struct debug_offsets_313 *d, uint32_t version_hex,
                         struct py_offsets *o)
{
    memset(o, 0, sizeof *o);
    o->version_hex = version_hex;
    o->layout = PY_LAYOUT_IFRAME;
    o->lines = PY_LINES_LOCATIONS311;
    o->lasti = PY_LASTI_INSTR_PTR;

    o->runtime_interpreters_head = (int32_t)d->runtime_state.interpreters_head;
    o->runtime_tstate_current = PYOFF_NONE;

    o->interp_next = (int32_t)d->interpreter_state.next;
    o->interp_id = (int32_t)d->interpreter_state.id;
    o->interp_tstate_head = (int32_t)d->interpreter_state.threads_head;
    o->interp_gil_ptr = PYOFF_NONE; /* 3.13 publishes the interpreter's own _gil instead */
    o->interp_gil_locked = (int32_t)d->interpreter_state.gil_runtime_state_locked;
    o->interp_gil_last_holder = (int32_t)d->interpreter_state.gil_runtime_state_holder;
    o->gil_locked = PYOFF_NONE;
    o->gil_last_holder = PYOFF_NONE;

    fill_thread_and_frame(d, o);
    fill_code_and_objects(d, o);
}

int py_offsets_from_debug(const struct memreader *mem, uint64_t runtime_addr,
                          struct py_offsets *out, uint32_t *version_hex, struct cp_err *err)
{
    struct debug_offsets_313 d;
    *version_hex = 0;
    if (read_debug_offsets(mem, runtime_addr, &d, err) < 0 ||
        check_header(&d, version_hex, err) < 0)
        return -1;
    for (size_t i = 0; i < sizeof debug_fields / sizeof debug_fields[0]; i++)
        if (check_field(&d, &debug_fields[i], err) < 0) return -1;
    if (check_relations(&d, err) < 0) return -1;
    fill_offsets(&d, *version_hex, out);
    return 0;
}
