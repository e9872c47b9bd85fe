/* linetable: maps a bytecode offset to its source line, for every CPython line-table format.
 *
 * Contract: pure functions over a copied table; bounded by `len`, never read past it, never loop
 * more than `len` times; a malformed table yields a best-effort line or -1, never a crash.
 * `byte_offset` is the offset in bytes, from the start of the bytecode, of the instruction whose
 * line is wanted (callers convert f_lasti / instruction pointers to bytes first).
 * Returns the line number, or -1 when the instruction has no line (3.10 "no line" entries,
 * 3.11 "none" entries) or the offset is past the table (then callers show co_firstlineno).
 */
#ifndef CONPROF_LINETABLE_H
#define CONPROF_LINETABLE_H

#include "pyoffsets.h"

#include <stddef.h>
#include <stdint.h>

/* 3.7-3.9 co_lnotab */
int linetable_lnotab(const uint8_t *tab, size_t len, int firstlineno, int32_t byte_offset);
/* 3.10 co_linetable (PEP 626) */
int linetable_310(const uint8_t *tab, size_t len, int firstlineno, int32_t byte_offset);
/* 3.11+ co_linetable location table (PEP 657, Objects/locations.md) */
int linetable_311(const uint8_t *tab, size_t len, int firstlineno, int32_t byte_offset);

/* Dispatches on kind. */
int linetable_line(enum py_linetable_kind kind, const uint8_t *tab, size_t len, int firstlineno,
                   int32_t byte_offset);

#endif
