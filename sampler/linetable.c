/* linetable: bytecode offset -> source line for the three CPython line-table formats.
 *
 * Each decoder replays exactly what CPython's own PyCode_Addr2Line does for that version, so a
 * valid table gives the line the interpreter itself reports (tests/unit/linetable_vectors.h holds
 * real CPython output to prove it):
 *  - lnotab (3.7-3.9): sum the line deltas of every pair whose cumulative address is <= offset.
 *  - 3.10: walk [start, end) ranges; zero-width entries only move the line; -128 means "no line"
 *    and does not move it.
 *  - 3.11+: the line delta is read from the entry's first payload bytes, and the next entry is
 *    found the way CPython finds it, by scanning for the next byte with bit 7 set. That scan is
 *    what keeps a garbage table harmless: every step consumes at least one byte.
 * Lines are accumulated in 64 bits so garbage deltas cannot overflow; a result outside
 * [0, INT_MAX] is reported as -1 ("no line"). Varint shifts stop at 30 bits, the same value
 * CPython computes in its 32-bit unsigned arithmetic for every varint it can produce.
 */
#include "linetable.h"

#include <limits.h>

static int line_or_none(int64_t line)
{
    return line < 0 || line > INT_MAX ? -1 : (int)line;
}

int linetable_lnotab(const uint8_t *tab, size_t len, int firstlineno, int32_t byte_offset)
{
    int64_t addr = 0, line = firstlineno;
    for (size_t i = 0; tab && i + 1 < len; i += 2) {
        addr += tab[i];
        if (addr > byte_offset) break;
        line += (int8_t)tab[i + 1];
    }
    return line_or_none(line);
}

int linetable_310(const uint8_t *tab, size_t len, int firstlineno, int32_t byte_offset)
{
    if (byte_offset < 0) return line_or_none(firstlineno);
    int64_t end = 0, line = firstlineno;
    for (size_t i = 0; tab && i + 1 < len; i += 2) {
        int64_t start = end;
        int8_t line_delta = (int8_t)tab[i + 1];
        end += tab[i];
        if (line_delta != -128) line += line_delta;
        if (start <= byte_offset && byte_offset < end)
            return line_delta == -128 ? -1 : line_or_none(line);
    }
    return -1;
}

enum {
    LOC_ONE_LINE0 = 10,
    LOC_ONE_LINE2 = 12,
    LOC_NO_COLUMNS = 13,
    LOC_LONG = 14,
    LOC_NONE = 15,
    VARINT_MAX_SHIFT = 30,
};

/* 6-bit little-endian chunks, 0x40 = more follow; stops at the end of the table. */
static uint32_t read_varint(const uint8_t *p, const uint8_t *limit)
{
    if (p >= limit) return 0;
    uint8_t chunk = *p++;
    uint32_t value = chunk & 63;
    unsigned shift = 0;
    while ((chunk & 64) && p < limit) {
        chunk = *p++;
        shift += 6;
        if (shift <= VARINT_MAX_SHIFT) value |= (uint32_t)(chunk & 63) << shift;
    }
    return value;
}

static int64_t read_signed_varint(const uint8_t *p, const uint8_t *limit)
{
    uint32_t value = read_varint(p, limit);
    return value & 1 ? -(int64_t)(value >> 1) : (int64_t)(value >> 1);
}

/* The line delta of the entry whose first byte is entry[0]. */
static int64_t entry_line_delta(const uint8_t *entry, const uint8_t *limit)
{
    int code = (entry[0] >> 3) & 15;
    if (code == LOC_NO_COLUMNS || code == LOC_LONG) return read_signed_varint(entry + 1, limit);
    if (code >= LOC_ONE_LINE0 && code <= LOC_ONE_LINE2) return code - LOC_ONE_LINE0;
    return 0; /* short forms and "none" stay on the line */
}

int linetable_311(const uint8_t *tab, size_t len, int firstlineno, int32_t byte_offset)
{
    if (byte_offset < 0) return line_or_none(firstlineno);
    const uint8_t *limit = tab ? tab + len : tab;
    int64_t end = 0, line = firstlineno;
    for (const uint8_t *entry = tab; entry && entry < limit;) {
        line += entry_line_delta(entry, limit);
        end += ((entry[0] & 7) + 1) * 2;                    /* length in 2-byte code units */
        int no_line = (entry[0] >> 3) == (0x10 | LOC_NONE); /* a header with code 15 */
        if (byte_offset < end) return no_line ? -1 : line_or_none(line);
        do
            entry++;
        while (entry < limit && !(entry[0] & 128));
    }
    return -1;
}

int linetable_line(enum py_linetable_kind kind, const uint8_t *tab, size_t len, int firstlineno,
                   int32_t byte_offset)
{
    switch (kind) {
    case PY_LINES_LNOTAB:
        return linetable_lnotab(tab, len, firstlineno, byte_offset);
    case PY_LINES_LINETABLE310:
        return linetable_310(tab, len, firstlineno, byte_offset);
    case PY_LINES_LOCATIONS311:
        return linetable_311(tab, len, firstlineno, byte_offset);
    }
    return -1;
}
