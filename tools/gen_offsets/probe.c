/* probe: prints the `struct py_offsets` initializer of the CPython whose headers it is compiled
 * against (tools/gen_offsets/gen_offsets.sh compiles it once per installed version).
 *
 * Every number comes from offsetof/sizeof on the real internal structs (built with Py_BUILD_CORE),
 * never from a hand-typed value; the few version differences (field renames, structs that moved)
 * are #if PY_VERSION_HEX branches. Output is one `.field = value,` line per struct py_offsets
 * field, in declaration order, so the generator can compare two installs line by line. The
 * *_size fields are "bytes to read": the largest offsetof + sizeof over the fields listed for
 * that struct. It prints only to stdout and includes no conprof header on purpose: it must
 * compile against 3.7's headers as well as 3.13's.
 */
#define Py_BUILD_CORE 1

#include "Python.h"

#if PY_VERSION_HEX < 0x03080000
#include "frameobject.h"
#include "internal/pystate.h"
#elif PY_VERSION_HEX < 0x03090000
#include "frameobject.h"
#include "pycore_pystate.h"
#elif PY_VERSION_HEX < 0x030B0000
#include "frameobject.h"
#include "pycore_interp.h"
#include "pycore_runtime.h"
#else
#include "pycore_code.h"
#include "pycore_frame.h"
#include "pycore_interp.h"
#include "pycore_runtime.h"
#endif

#include <stddef.h>
#include <stdio.h>

#define FIELD_END(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
#define MAX2(a, b) ((a) > (b) ? (a) : (b))

static void print_value(const char *name, long value)
{
    printf("    .%s = %ld,\n", name, value);
}

static void print_none(const char *name)
{
    printf("    .%s = PYOFF_NONE,\n", name);
}

static void print_word(const char *name, const char *word)
{
    printf("    .%s = %s,\n", name, word);
}

#define OFF(name, type, field) print_value(name, (long)offsetof(type, field))

/* --- the version's names for the structs and fields the sampler reads --------------------- */

#if PY_VERSION_HEX < 0x030B0000
typedef PyFrameObject frame_t;
#define FRAME_BACK f_back
#define FRAME_CODE f_code
#define FRAME_LASTI f_lasti
#define TSTATE_FRAME frame
#define INTERP_TSTATE_HEAD tstate_head
#elif PY_VERSION_HEX < 0x030D0000
typedef struct _PyInterpreterFrame frame_t;
#define FRAME_BACK previous
#define FRAME_CODE f_code
#define FRAME_LASTI prev_instr
#define TSTATE_FRAME cframe
#define INTERP_TSTATE_HEAD threads.head
#else
typedef struct _PyInterpreterFrame frame_t;
#define FRAME_BACK previous
#define FRAME_CODE f_executable
#define FRAME_LASTI instr_ptr
#define TSTATE_FRAME current_frame
#define INTERP_TSTATE_HEAD threads.head
#endif

#if PY_VERSION_HEX < 0x030A0000
#define CODE_LINETABLE co_lnotab
#else
#define CODE_LINETABLE co_linetable
#endif

static void print_kinds(void)
{
#if PY_VERSION_HEX < 0x030A0000
    print_word("layout", "PY_LAYOUT_FRAMEOBJECT");
    print_word("lines", "PY_LINES_LNOTAB");
    print_word("lasti", "PY_LASTI_BYTES");
#elif PY_VERSION_HEX < 0x030B0000
    print_word("layout", "PY_LAYOUT_FRAMEOBJECT");
    print_word("lines", "PY_LINES_LINETABLE310");
    print_word("lasti", "PY_LASTI_CODEUNITS");
#elif PY_VERSION_HEX < 0x030D0000
    print_word("layout", "PY_LAYOUT_CFRAME");
    print_word("lines", "PY_LINES_LOCATIONS311");
    print_word("lasti", "PY_LASTI_INSTR_PTR");
#else
    print_word("layout", "PY_LAYOUT_IFRAME");
    print_word("lines", "PY_LINES_LOCATIONS311");
    print_word("lasti", "PY_LASTI_INSTR_PTR");
#endif
}

static void print_runtime(void)
{
    OFF("runtime_interpreters_head", _PyRuntimeState, interpreters.head);
#if PY_VERSION_HEX < 0x030C0000
    OFF("runtime_tstate_current", _PyRuntimeState, gilstate.tstate_current);
#else
    print_none("runtime_tstate_current");
#endif
}

static void print_interp(void)
{
    OFF("interp_next", PyInterpreterState, next);
    OFF("interp_id", PyInterpreterState, id);
    OFF("interp_tstate_head", PyInterpreterState, INTERP_TSTATE_HEAD);
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    OFF("interp_gil_ptr", PyInterpreterState, ceval.gil);
#else
    print_none("interp_gil_ptr");
#endif
#if PY_VERSION_HEX >= 0x030D0000
    OFF("interp_gil_locked", PyInterpreterState, _gil.locked);
    OFF("interp_gil_last_holder", PyInterpreterState, _gil.last_holder);
#else
    print_none("interp_gil_locked");
    print_none("interp_gil_last_holder");
#endif
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    OFF("gil_locked", struct _gil_runtime_state, locked);
    OFF("gil_last_holder", struct _gil_runtime_state, last_holder);
#else
    print_none("gil_locked");
    print_none("gil_last_holder");
#endif
}

static void print_tstate(void)
{
    size_t size = FIELD_END(PyThreadState, next);
    size = MAX2(size, FIELD_END(PyThreadState, interp));
    size = MAX2(size, FIELD_END(PyThreadState, TSTATE_FRAME));
    size = MAX2(size, FIELD_END(PyThreadState, thread_id));
#if PY_VERSION_HEX >= 0x030B0000
    size = MAX2(size, FIELD_END(PyThreadState, native_thread_id));
    size = MAX2(size, FIELD_END(PyThreadState, datastack_chunk));
#endif
    print_value("tstate_size", (long)size);
    OFF("tstate_next", PyThreadState, next);
    OFF("tstate_interp", PyThreadState, interp);
    OFF("tstate_frame", PyThreadState, TSTATE_FRAME);
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
    OFF("cframe_current_frame", _PyCFrame, current_frame);
#else
    print_none("cframe_current_frame");
#endif
    OFF("tstate_thread_id", PyThreadState, thread_id);
#if PY_VERSION_HEX >= 0x030B0000
    OFF("tstate_native_thread_id", PyThreadState, native_thread_id);
    OFF("tstate_datastack_chunk", PyThreadState, datastack_chunk);
#else
    print_none("tstate_native_thread_id");
    print_none("tstate_datastack_chunk");
#endif
}

static void print_frame(void)
{
    size_t size = FIELD_END(frame_t, FRAME_BACK);
    size = MAX2(size, FIELD_END(frame_t, FRAME_CODE));
    size = MAX2(size, FIELD_END(frame_t, FRAME_LASTI));
#if PY_VERSION_HEX >= 0x030C0000
    size = MAX2(size, FIELD_END(frame_t, owner));
#elif PY_VERSION_HEX >= 0x030B0000
    size = MAX2(size, FIELD_END(frame_t, is_entry));
#endif
    print_value("frame_size", (long)size);
    OFF("frame_back", frame_t, FRAME_BACK);
    OFF("frame_code", frame_t, FRAME_CODE);
    OFF("frame_lasti", frame_t, FRAME_LASTI);
#if PY_VERSION_HEX >= 0x030C0000
    OFF("frame_owner", frame_t, owner);
#else
    print_none("frame_owner");
#endif
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    OFF("frame_is_entry", frame_t, is_entry);
#else
    print_none("frame_is_entry");
#endif
}

static size_t code_bytes_to_read(void)
{
    size_t size = FIELD_END(PyCodeObject, co_argcount);
    size = MAX2(size, FIELD_END(PyCodeObject, co_flags));
    size = MAX2(size, FIELD_END(PyCodeObject, co_firstlineno));
    size = MAX2(size, FIELD_END(PyCodeObject, co_filename));
    size = MAX2(size, FIELD_END(PyCodeObject, co_name));
    size = MAX2(size, FIELD_END(PyCodeObject, CODE_LINETABLE));
#if PY_VERSION_HEX < 0x030B0000
    size = MAX2(size, FIELD_END(PyCodeObject, co_code));
#else
    size = MAX2(size, FIELD_END(PyCodeObject, ob_base.ob_size));
    size = MAX2(size, FIELD_END(PyCodeObject, co_qualname));
    size = MAX2(size, FIELD_END(PyCodeObject, co_code_adaptive));
#endif
    return size;
}

static void print_code(void)
{
    print_value("code_size", (long)code_bytes_to_read());
#if PY_VERSION_HEX >= 0x030B0000
    OFF("code_ob_size", PyCodeObject, ob_base.ob_size);
#else
    print_none("code_ob_size");
#endif
    OFF("code_argcount", PyCodeObject, co_argcount);
    OFF("code_flags", PyCodeObject, co_flags);
    OFF("code_firstlineno", PyCodeObject, co_firstlineno);
#if PY_VERSION_HEX < 0x030B0000
    OFF("code_code", PyCodeObject, co_code);
#else
    print_none("code_code");
#endif
    OFF("code_filename", PyCodeObject, co_filename);
    OFF("code_name", PyCodeObject, co_name);
#if PY_VERSION_HEX >= 0x030B0000
    OFF("code_qualname", PyCodeObject, co_qualname);
#else
    print_none("code_qualname");
#endif
    OFF("code_linetable", PyCodeObject, CODE_LINETABLE);
#if PY_VERSION_HEX >= 0x030B0000
    OFF("code_code_adaptive", PyCodeObject, co_code_adaptive);
#else
    print_none("code_code_adaptive");
#endif
}

static void print_objects(void)
{
    OFF("object_type", PyObject, ob_type);
    OFF("bytes_size", PyBytesObject, ob_base.ob_size);
    OFF("bytes_sval", PyBytesObject, ob_sval);
    OFF("unicode_length", PyASCIIObject, length);
    OFF("unicode_state", PyASCIIObject, state);
    print_value("unicode_ascii_size", (long)sizeof(PyASCIIObject));
    print_value("unicode_compact_size", (long)sizeof(PyCompactUnicodeObject));
    OFF("unicode_data_any", PyUnicodeObject, data.any);
}

int main(void)
{
    printf("    .version_hex = 0x%08lx,\n", (unsigned long)PY_VERSION_HEX);
    print_kinds();
    print_runtime();
    print_interp();
    print_tstate();
    print_frame();
    print_code();
    print_objects();
#if PY_VERSION_HEX >= 0x030D0000
    /* Not a struct py_offsets field: lets pyoffsets.c check its own copy of the layout. */
    printf("    /* sizeof(_Py_DebugOffsets) = %zu */\n", sizeof(_Py_DebugOffsets));
#endif
    return 0;
}
