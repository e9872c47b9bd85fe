/* Fuzzes the str -> UTF-8 decoder. Input: byte 0 picks the kind (1, 2, 4, or an invalid one),
 * byte 1 the output size (0-255), the rest is the character data. The input is decoded once
 * with room for everything and once at the fuzzed size, into exactly-sized heap buffers.
 * Checks: a bad kind gives -1; otherwise both outputs are NUL-terminated, strictly valid UTF-8
 * (no surrogates, nothing above U+10FFFF, no overlong forms) and within their size; the full
 * output takes at most 4 bytes per code point; the cut output is the full output when that fits,
 * and otherwise a prefix of it followed by "..." (or as much of "..." as fits). */
#include "pyunicode.h"

#include <stdlib.h>
#include <string.h>

/* Strict UTF-8 validation; returns 1 if s[0, len) is valid. */
static int valid_utf8(const uint8_t *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint8_t lead = s[i];
        size_t n = lead < 0x80                    ? 1
                   : lead >= 0xC2 && lead <= 0xDF ? 2
                   : lead >= 0xE0 && lead <= 0xEF ? 3
                   : lead >= 0xF0 && lead <= 0xF4 ? 4
                                                  : 0;
        if (n == 0 || i + n > len) return 0;
        uint32_t cp = n == 1 ? lead : n == 2 ? lead & 0x1F : n == 3 ? lead & 0x0F : lead & 0x07;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t smallest[5] = {0, 0, 0x80, 0x800, 0x10000};
        if ((n > 1 && cp < smallest[n]) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n;
    }
    return 1;
}

static void check_output(const char *out, int n, size_t outsize)
{
    if (n < 0 || (outsize == 0 && n != 0)) abort();
    if (outsize == 0) return;
    if ((size_t)n > outsize - 1 || out[n] != '\0' || !valid_utf8((const uint8_t *)out, (size_t)n))
        abort();
}

static void check_cut(const char *full, size_t full_len, const char *cut, size_t cut_len,
                      size_t outsize)
{
    if (outsize == 0) return;
    size_t cap = outsize - 1;
    if (full_len <= cap) {
        if (cut_len != full_len || memcmp(cut, full, full_len) != 0) abort();
    } else if (cap < 3) {
        if (cut_len != cap || memcmp(cut, "...", cap) != 0) abort();
    } else if (cut_len < 3 || memcmp(cut + cut_len - 3, "...", 3) != 0 ||
               memcmp(cut, full, cut_len - 3) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    static const int kinds[8] = {1, 2, 4, 1, 2, 4, 0, 3};
    int kind = kinds[data[0] % 8];
    size_t outsize = data[1];
    const uint8_t *chars = data + 2;
    size_t length = (size - 2) / (kind ? (size_t)kind : 1);
    size_t full_size = length * 4 + 1;
    char *full = malloc(full_size), *cut = malloc(outsize ? outsize : 1);
    if (!full || !cut) abort();
    int full_n = pyunicode_to_utf8(chars, length, kind, full, full_size);
    int cut_n = pyunicode_to_utf8(chars, length, kind, cut, outsize);
    if (kind != 1 && kind != 2 && kind != 4) {
        if (full_n != -1 || cut_n != -1) abort();
    } else {
        check_output(full, full_n, full_size);
        check_output(cut, cut_n, outsize);
        if ((size_t)full_n > length * 4 || (kind == 1 && (size_t)full_n > length * 2)) abort();
        check_cut(full, (size_t)full_n, cut, (size_t)cut_n, outsize);
    }
    free(full);
    free(cut);
    return 0;
}
