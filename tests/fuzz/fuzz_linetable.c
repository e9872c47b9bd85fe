/* Fuzzes the three line-table decoders. Input: byte 0 picks the format, bytes 1-4 are
 * co_firstlineno, bytes 5-8 the byte offset asked about, the rest is the table. The table is
 * the tail of libFuzzer's exactly-sized buffer, so any read past its end is an ASan error. Each
 * input is also decoded at every even offset up to a bound past the table, to walk every entry.
 * Besides not crashing: a negative offset gives co_firstlineno (-1 if that is negative), any
 * result is -1 or a line >= 0, and the direct decoder and the dispatcher agree. */
#include "linetable.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int decode_direct(int kind, const uint8_t *tab, size_t len, int first, int32_t offset)
{
    if (kind == PY_LINES_LNOTAB) return linetable_lnotab(tab, len, first, offset);
    if (kind == PY_LINES_LINETABLE310) return linetable_310(tab, len, first, offset);
    return linetable_311(tab, len, first, offset);
}

static void check_one(int kind, const uint8_t *tab, size_t len, int first, int32_t offset)
{
    int line = decode_direct(kind, tab, len, first, offset);
    if (line != linetable_line((enum py_linetable_kind)kind, tab, len, first, offset)) abort();
    if (line < -1 || (offset < 0 && line != (first < 0 ? -1 : first))) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9) return 0;
    int kind = PY_LINES_LNOTAB + data[0] % 3;
    int32_t first, offset;
    memcpy(&first, data + 1, sizeof first);
    memcpy(&offset, data + 5, sizeof offset);
    const uint8_t *tab = data + 9;
    size_t len = size - 9;
    check_one(kind, tab, len, first, offset);
    /* An entry covers at most 255 bytes (16 in 3.11+ tables): sweep past the last one, in at
     * most 512 steps so a big input stays fast. */
    int64_t bound = (int64_t)len * (kind == PY_LINES_LOCATIONS311 ? 16 : 128) + 32;
    int64_t step = bound / 512 < 2 ? 2 : (bound / 512) | 1;
    for (int64_t at = 0; at < bound && at < INT32_MAX; at += step)
        check_one(kind, tab, len, first, (int32_t)at);
    return 0;
}
