#!/usr/bin/env python3
"""Writes tests/unit/linetable_vectors.h: line tables and str data taken from real CPythons.

Regenerate from the repository root with one command:

    python3 tools/gen_linetable_vectors.py

Run without arguments, the script is the driver: it runs itself with `--emit` under every
interpreter listed in INTERPRETERS that exists (a missing one is skipped with a note on stderr),
collects their JSON and writes the header. Under `--emit` it is the worker (it must stay valid
Python 3.7): it compiles SOURCES, walks every code object and, for each one, records the raw
line table (co_lnotab before 3.10, co_linetable from 3.10), co_firstlineno, len(co_code) and the
line of every 2-byte code unit offset. Expected lines come from the interpreter's own tools --
dis.findlinestarts (3.7-3.9), co_lines() (3.10+), co_positions() (3.11+, cross-checked) -- and
every one is cross-checked against the interpreter's C function PyCode_Addr2Line through ctypes,
which is what f_lineno uses; any disagreement aborts the run. The line just past the bytecode
(PyCode_Addr2Line at len(co_code)) is recorded too.

The worker also records str test data: the character bytes of real str objects, read from the
object's memory with ctypes (and checked against s.encode('latin-1'/'utf-16-le'/'utf-32-le')),
with their kind and the UTF-8 a decoder must produce (lone surrogates become U+FFFD).
"""
import json
import os
import subprocess
import sys

INTERPRETERS = [
    "/root/.pyenv/versions/3.7.16/bin/python3.7",
    "/root/.pyenv/versions/3.8.18/bin/python3.8",
    "/root/.pyenv/versions/3.9.18/bin/python3.9",
    "/root/.pyenv/versions/3.10.13/bin/python3.10",
    "/root/.pyenv/versions/3.11.7/bin/python3.11",
    "/root/.pyenv/versions/3.12.1/bin/python3.12",
    "/root/.pyenv/versions/3.13.0/bin/python3.13",
    "/usr/bin/python3.11",
]
OUTPUT = os.path.join("tests", "unit", "linetable_vectors.h")

# enum py_linetable_kind in sampler/pyoffsets.h
KIND_LNOTAB, KIND_310, KIND_311 = 1, 2, 3

BASE_SOURCE = '''\
import functools


def simple(a, b):
    c = a + b
    return c


def multi_line_call(x):
    result = max(
        x,
        1,
        2,
    )
    total = (x
             + result
             - 3)
    return total


def loops(n):
    acc = 0
    for i in range(n):
        if i % 2:
            continue
        elif i > 100:
            break
        acc += i
    while acc > 10:
        acc -= 3
    else:
        acc += 1
    return acc


def gaps(x):
    y = x

    # a comment


    # another comment
    z = y
    return z


def try_except(x):
    try:
        y = 1 / x
    except ZeroDivisionError as e:
        y = 0
    except (TypeError,
            ValueError):
        raise
    else:
        y += 1
    finally:
        x = None
    return y


def comprehensions(xs):
    a = [x * 2 for x in xs if x]
    b = {x: x
         for x in xs}
    c = {x for x in xs}
    d = list(x
             for x in xs)
    return a, b, c, d


def lambdas(xs):
    f = lambda x: x + 1
    g = lambda x, y: (
        x *
        y)
    return sorted(xs, key=lambda v: -v), f, g


def decorator(fn):
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        return fn(*args,
                  **kwargs)
    return inner


@decorator
@functools.lru_cache(maxsize=None)
def decorated(x):
    return x


class Klass(object):
    attr = 1

    def method(self):
        return self.attr

    @property
    def prop(self):
        return (self
                .attr)


def generator(n):
    for i in range(n):
        yield i
    yield from range(n)


async def coroutine(x):
    await x
    async with x as y:
        pass
    async for z in y:
        pass
    return z


def with_stmt(path):
    with open(path) as f, \\
            open(path) as g:
        data = f.read() + g.read()
    return data


def nested():
    def level1():
        def level2():
            return 2
        return level2
    return level1


def conditional_expression(a, b, c):
    return (a if
            b else
            c)


def wide_columns(value):
    x = [value, value, value, value, value, value, value, value, value, value, value, value, value, value, (value + 1)]
    return x[0] + x[1] + x[2] + x[3] + x[4] + x[5] + x[6] + x[7] + x[8] + x[9] + x[10] + x[11] + x[12] + x[13] + x[14] + x[-1]


def span_lines_wide(value):
    return (value, value, value, value, value, value, value, value, value, value, value, value, value, value, value,
            value + 1)
'''

WALRUS_SOURCE = '''\
def walrus(xs):
    if (n := len(xs)) > 3:
        return n
    return [y for x in xs if (y := x * 2)]
'''

MATCH_SOURCE = '''\
def matcher(cmd):
    match cmd.split():
        case ["go", direction]:
            return direction
        case ["stop" | "halt"]:
            return None
        case [first, *rest] if first:
            return rest
        case _:
            return cmd
'''


def long_jump_source():
    """A loop body and an if body of > 255 code units: jumps that need EXTENDED_ARG."""
    lines = ["def long_jump(n):", "    v0 = n", "    for i in range(n):"]
    lines += ["        v%d = v%d + %d" % (k, k - 1, k) for k in range(1, 80)]
    lines += ["    if n:"]
    lines += ["        v%d = v%d * %d" % (k, k - 1, k) for k in range(80, 160)]
    lines += ["    one_line = [%s]" % ", ".join(["n"] * 140)]  # > 255 bytes on one line
    lines += ["    return v159, one_line", ""]
    return "\n".join(lines) + "\n"


def big_gaps_source():
    """Line deltas > 127 and > 256 forward, and a large backward delta (a call whose arguments
    sit 200 lines below its name)."""
    return ("def big_gaps(a):\n    b = a\n" + "    # filler\n" * 300 + "    c = b\n" + "\n" * 200 +
            "    d = c\n    return max(\n        a,\n" + "\n" * 200 + "        d)\n")


def huge_gap_source():
    """A 140000-line gap inside one function: a 4-chunk varint in 3.11+ tables, hundreds of
    (0, 127) pairs in older ones; the function after it starts at a large co_firstlineno."""
    return ("def huge_gap(a):\n    b = a\n" + "\n" * 140000 + "    return b\n\n\n" +
            "def after_huge_gap(a):\n    return a\n")


def sources():
    result = [("base.py", BASE_SOURCE), ("long_jump.py", long_jump_source()),
              ("big_gaps.py", big_gaps_source()), ("huge_gap.py", huge_gap_source())]
    if sys.version_info >= (3, 8):
        result.append(("walrus.py", WALRUS_SOURCE))
    if sys.version_info >= (3, 10):
        result.append(("match.py", MATCH_SOURCE))
    return result


STRINGS = [
    "",
    "hello_world",
    "<module>",
    "caf\u00e9",
    "stra\u00dfe",
    "\u00ff\u0080\u00a0x",
    "\u0391\u03b8\u03ae\u03bd\u03b1 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u65e5\u672c",
    "\u65e5\u672c\u8a9e_name",
    "\u0100\uffff",
    "\U0001f40d",
    "a\U0001f40db",
    "\U0010ffff\U00010000",
    "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",
    "\ud800",
    "a\udfffb",
    "\ud83d\udc0d",
    "\ud800\U0001f40d",
    "x\u00e9\u65e5\U0001f40d",
    "\u00e9" * 100,
    "\u65e5\u672c" * 60,
    "\U0001f40d" * 50,
    "long_ascii_function_name_" * 12,
]


# ---------------------------------------------------------------------------------------------
# Worker (runs under every interpreter; keep it Python 3.7 compatible)


def addr2line():
    import ctypes
    fn = ctypes.pythonapi.PyCode_Addr2Line
    fn.argtypes = [ctypes.py_object, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def all_code_objects(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            for inner in all_code_objects(const):
                yield inner


def expected_lines(code):
    """The line of every even byte offset in [0, len(co_code)), from the interpreter's tools."""
    size = len(code.co_code)
    lines = [-1] * (size // 2)
    if sys.version_info >= (3, 10):
        for start, end, line in code.co_lines():
            for offset in range(start, min(end, size), 2):
                lines[offset // 2] = -1 if line is None else line
    else:
        import dis
        starts = sorted(dis.findlinestarts(code))
        current = code.co_firstlineno
        k = 0
        for unit in range(size // 2):
            while k < len(starts) and starts[k][0] <= unit * 2:
                current = starts[k][1]
                k += 1
            lines[unit] = current
    if sys.version_info >= (3, 11):
        for unit, position in enumerate(code.co_positions()):
            line = -1 if position[0] is None else position[0]
            if line != lines[unit]:
                raise SystemExit("co_positions/co_lines disagree: %s unit %d" % (code, unit))
    return lines


def to_runs(lines):
    runs = []
    for unit, line in enumerate(lines):
        if runs and runs[-1][2] == line and runs[-1][1] == unit * 2:
            runs[-1][1] = unit * 2 + 2
        else:
            runs.append([unit * 2, unit * 2 + 2, line])
    return runs


def code_vector(code, c_addr2line):
    lines = expected_lines(code)
    for unit, line in enumerate(lines):
        real = c_addr2line(code, unit * 2)
        if real != line:
            raise SystemExit("PyCode_Addr2Line(%s, %d) = %d, tools say %d" %
                             (code, unit * 2, real, line))
    if sys.version_info >= (3, 10):
        table, kind = code.co_linetable, (KIND_310 if sys.version_info < (3, 11) else KIND_311)
    else:
        table, kind = code.co_lnotab, KIND_LNOTAB
    name = getattr(code, "co_qualname", code.co_name)
    return {
        "name": "%s:%s:%d" % (os.path.basename(code.co_filename), name, code.co_firstlineno),
        "kind": kind,
        "firstlineno": code.co_firstlineno,
        "table": table.hex(),
        "code_len": len(code.co_code),
        "runs": to_runs(lines),
        "past_end_line": c_addr2line(code, len(code.co_code)),
    }


def str_kind(s):
    top = max([ord(c) for c in s] or [0])
    return 1 if top < 0x100 else 2 if top < 0x10000 else 4


def object_char_data(s):
    """The character bytes of s, read from the str object's memory."""
    import ctypes
    state = ctypes.c_uint32.from_address(id(s) + 32).value
    kind, compact, ascii = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
    if not compact:
        raise SystemExit("expected a compact str: %r" % s)
    old_header = sys.version_info < (3, 12)  # wstr went away in 3.12
    header = (48 if old_header else 40) if ascii else (72 if old_header else 56)
    return kind, ctypes.string_at(id(s) + header, len(s) * kind)


def string_vector(s):
    kind, data = object_char_data(s)
    codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[str_kind(s)]
    if kind != str_kind(s) or data != s.encode(codec, "surrogatepass"):
        raise SystemExit("str object memory does not match its encoding: %r" % s)
    scalars = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
    return {"kind": kind, "length": len(s), "data": data.hex(),
            "utf8": scalars.encode("utf-8").hex(), "text": ascii(s)}


def emit():
    c_addr2line = addr2line()
    codes = []
    for filename, source in sources():
        module = compile(source, filename, "exec")
        codes += [code_vector(code, c_addr2line) for code in all_code_objects(module)
                  if code.co_name != "<module>" or filename != "huge_gap.py"]  # keeps it small
    # Build each str at run time so it is a fresh object, not shared with the compiler's.
    strings = [string_vector("".join(list(s))) for s in STRINGS]
    json.dump({"version": sys.version.split()[0], "executable": sys.executable, "codes": codes,
               "strings": strings}, sys.stdout)


# ---------------------------------------------------------------------------------------------
# Driver


def c_bytes(hex_text, indent="    "):
    """A C string literal (split over lines) holding the given bytes."""
    data = bytes.fromhex(hex_text)
    if not data:
        return indent + '""'
    chunks = [data[i:i + 24] for i in range(0, len(data), 24)]
    return "\n".join(indent + '"' + "".join("\\x%02x" % b for b in chunk) + '"' for chunk in chunks)


def c_ints(values, per_line=18, indent="    "):
    rows = [values[i:i + per_line] for i in range(0, len(values), per_line)]
    return "\n".join(indent + ", ".join(str(v) for v in row) + "," for row in rows)


HEADER_TOP = """\
/* linetable_vectors.h: GENERATED by tools/gen_linetable_vectors.py -- do not edit.
 *
 * Regenerate from the repository root with:   python3 tools/gen_linetable_vectors.py
 *
 * Line tables of real code objects compiled by each CPython below, with the line the interpreter
 * itself reports (PyCode_Addr2Line, cross-checked against dis.findlinestarts / co_lines() /
 * co_positions()) for every 2-byte offset, stored as runs [start, end) -> line that cover
 * [0, code_len); -1 means "no line". past_end_line is PyCode_Addr2Line at offset code_len.
 * Also: the character bytes of real str objects (read from their memory) with the UTF-8 a
 * decoder must produce (lone surrogates -> U+FFFD), for tests/unit/test_pyunicode.c.
 */
#ifndef CONPROF_LINETABLE_VECTORS_H
#define CONPROF_LINETABLE_VECTORS_H

#include <stddef.h>
#include <stdint.h>

// clang-format off

struct linetable_vector {
    const char *python;    /* version that produced it (3.11.2 is Debian's /usr/bin/python3.11) */
    const char *name;      /* file:qualname:firstlineno */
    int kind;              /* enum py_linetable_kind */
    int firstlineno;
    const uint8_t *table;
    size_t table_len;
    int32_t code_len;      /* bytes of bytecode */
    const int32_t *runs;   /* start, end, line triples */
    size_t nruns;
    int past_end_line;
};

struct pyunicode_vector {
    const char *text;      /* Python ascii() of the string */
    int kind;              /* 1, 2 or 4 */
    size_t length;         /* code points */
    const uint8_t *data;   /* length * kind bytes */
    const char *utf8;
    size_t utf8_len;
};
"""


def write_header(results, out):
    parts = [HEADER_TOP]
    entries = []
    n = 0
    for result in results:
        python = result["version"]
        for code in result["codes"]:
            table_len = len(code["table"]) // 2
            runs = [v for run in code["runs"] for v in run]
            parts.append("static const uint8_t lt_table_%d[%d] =\n%s;" %
                         (n, table_len + 1, c_bytes(code["table"])))
            parts.append("static const int32_t lt_runs_%d[] = {\n%s\n};" % (n, c_ints(runs)))
            entries.append('    {"%s", "%s", %d, %d, lt_table_%d, %d, %d, lt_runs_%d, %d, %d},' %
                           (python, code["name"], code["kind"], code["firstlineno"], n,
                            table_len, code["code_len"], n, len(code["runs"]),
                            code["past_end_line"]))
            n += 1
    parts.append("static const struct linetable_vector linetable_vectors[] = {\n%s\n};" %
                 "\n".join(entries))
    parts.append("#define LINETABLE_VECTOR_COUNT (sizeof linetable_vectors / "
                 "sizeof linetable_vectors[0])\n")
    strings = results[-1]["strings"]
    for other in results:
        if other["strings"] != strings:
            raise SystemExit("str data differs between %s and %s" %
                             (other["executable"], results[-1]["executable"]))
    entries = []
    for k, s in enumerate(strings):
        data_len = len(s["data"]) // 2
        parts.append("static const uint8_t pu_data_%d[%d] =\n%s;" %
                     (k, data_len + 1, c_bytes(s["data"])))
        parts.append("static const char pu_utf8_%d[] =\n%s;" % (k, c_bytes(s["utf8"])))
        text = s["text"].replace("\\", "\\\\").replace('"', '\\"')
        entries.append('    {"%s", %d, %d, pu_data_%d, pu_utf8_%d, %d},' %
                       (text, s["kind"], s["length"], k, k, len(s["utf8"]) // 2))
    parts.append("static const struct pyunicode_vector pyunicode_vectors[] = {\n%s\n};" %
                 "\n".join(entries))
    parts.append("#define PYUNICODE_VECTOR_COUNT (sizeof pyunicode_vectors / "
                 "sizeof pyunicode_vectors[0])\n")
    parts.append("// clang-format on\n\n#endif\n")
    with open(out, "w") as f:
        f.write("\n".join(parts))


def drive():
    here = os.path.abspath(__file__)
    root = os.path.dirname(os.path.dirname(here))
    results = []
    for python in INTERPRETERS:
        if not os.path.exists(python):
            sys.stderr.write("skipping %s: not installed\n" % python)
            continue
        output = subprocess.check_output([python, here, "--emit"])
        results.append(json.loads(output.decode("utf-8")))
        codes = results[-1]["codes"]
        sys.stderr.write("%s: %d code objects\n" % (python, len(codes)))
    if not results:
        raise SystemExit("no interpreter found")
    out = os.path.join(root, OUTPUT)
    write_header(results, out)
    sys.stderr.write("wrote %s (%d bytes)\n" % (out, os.path.getsize(out)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--emit"]:
        emit()
    elif sys.argv[1:]:
        raise SystemExit("usage: %s [--emit]" % sys.argv[0])
    else:
        drive()
