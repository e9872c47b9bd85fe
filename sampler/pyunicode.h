/* pyunicode: decodes the character data of a CPython str into UTF-8.
 *
 * Contract: pure, bounded. `data` holds `length` code points of `kind` bytes each (1 = Latin-1,
 * 2 = UCS-2, 4 = UCS-4; ASCII is kind 1). Writes at most `outsize - 1` bytes plus a NUL, never
 * splitting a UTF-8 sequence; returns the bytes written (without the NUL), or -1 for a bad kind.
 * Code points that are not valid Unicode scalar values (surrogates, > 0x10FFFF) become U+FFFD.
 * A truncated result ends with "..." when it had to be cut.
 */
#ifndef CONPROF_PYUNICODE_H
#define CONPROF_PYUNICODE_H

#include <stddef.h>
#include <stdint.h>

int pyunicode_to_utf8(const uint8_t *data, size_t length, int kind, char *out, size_t outsize);

#endif
