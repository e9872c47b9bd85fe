/* pyunicode: CPython str character data (Latin-1 / UCS-2 / UCS-4) -> UTF-8.
 *
 * One pass, stopping as soon as the output is full, so the cost is bounded by the output size
 * and not by a (possibly garbage) length. While writing, it remembers the last character
 * boundary that still leaves room for "..." before the NUL; when a character does not fit, the
 * output is rewound to that boundary and "..." goes there. Rewinding only ever lands on a
 * boundary, so a UTF-8 sequence is never split. Code units are read with memcpy in host byte
 * order, which is the target's order (same architecture), and need no alignment.
 */
#include "pyunicode.h"

#include <limits.h>
#include <string.h>

#define REPLACEMENT_CHARACTER 0xFFFDu
#define ELLIPSIS "..."
#define ELLIPSIS_LEN 3

static uint32_t code_point_at(const uint8_t *data, size_t index, int kind)
{
    if (kind == 1) return data[index];
    if (kind == 2) {
        uint16_t unit;
        memcpy(&unit, data + index * 2, sizeof unit);
        return unit;
    }
    uint32_t unit;
    memcpy(&unit, data + index * 4, sizeof unit);
    return unit;
}

/* Encodes cp (replacing non-scalar values) into buf; returns the byte count (1-4). */
static size_t encode_utf8(uint32_t cp, uint8_t buf[4])
{
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = REPLACEMENT_CHARACTER;
    if (cp < 0x80) {
        buf[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (uint8_t)(0xC0 | (cp >> 6));
        buf[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (uint8_t)(0xE0 | (cp >> 12));
        buf[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    buf[0] = (uint8_t)(0xF0 | (cp >> 18));
    buf[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    buf[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    buf[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Puts as much of "..." as fits in cap bytes at out[pos]; returns the new length. */
static size_t append_ellipsis(char *out, size_t pos, size_t cap)
{
    size_t n = cap - pos < ELLIPSIS_LEN ? cap - pos : ELLIPSIS_LEN;
    memcpy(out + pos, ELLIPSIS, n);
    return pos + n;
}

int pyunicode_to_utf8(const uint8_t *data, size_t length, int kind, char *out, size_t outsize)
{
    if ((kind != 1 && kind != 2 && kind != 4) || (!data && length) || (!out && outsize)) return -1;
    if (outsize == 0) return 0;
    size_t cap = outsize - 1 < INT_MAX ? outsize - 1 : INT_MAX, pos = 0, ellipsis_at = 0;
    for (size_t i = 0; i < length; i++) {
        uint8_t buf[4];
        size_t n = encode_utf8(code_point_at(data, i, kind), buf);
        if (pos + ELLIPSIS_LEN <= cap) ellipsis_at = pos;
        if (n > cap - pos) {
            pos = append_ellipsis(out, ellipsis_at, cap);
            break;
        }
        memcpy(out + pos, buf, n);
        pos += n;
    }
    out[pos] = '\0';
    return (int)pos;
}
