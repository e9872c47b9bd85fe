/* symbolizer: turns (code object address, instruction offset) into an aggregate frame id.
 *
 * Contract: owns a cache of code objects keyed by address: their qualified name (co_qualname on
 * 3.11+, else co_name), file name and line table are read once (strings decoded to UTF-8 from any
 * unicode kind, bounded) and interned in the aggregate's string table. A cache hit costs no read:
 * it is checked cheaply (the offset must lie inside the code's bytecode), and each entry is
 * re-validated against the target (a few words re-read and compared) after 1, 2, 4, ... up to
 * SYMBOLIZER_RECHECK_TICKS ticks and whenever a new offset shows up in it, so a code object freed
 * and replaced at the same address is noticed within a tick or two. A second cache
 * maps (code, offset) to the frame id so a steady stack does no line-table work. Both caches are
 * bounded and simply cleared when full. Not thread-safe.
 */
#ifndef CONPROF_SYMBOLIZER_H
#define CONPROF_SYMBOLIZER_H

#include "aggregate.h"
#include "error.h"
#include "memreader.h"
#include "pyoffsets.h"

#include <stdint.h>

#define SYMBOLIZER_RECHECK_TICKS 128
#define SYMBOLIZER_MAX_STRING 1024     /* code points kept of a name */
#define SYMBOLIZER_MAX_LINETABLE 65536 /* bytes of a line table */

struct symbolizer_code;
struct symbolizer_line;

struct symbolizer {
    const struct memreader *mem;
    const struct py_offsets *off;
    uint64_t code_type_addr; /* &PyCode_Type, 0 to skip the type check */
    struct agg *agg;
    uint64_t tick; /* advanced by the caller once per sampling tick */
    struct symbolizer_code *codes;
    uint32_t ncodes_slots, ncodes;
    struct symbolizer_line *lines;
    uint32_t nlines_slots, nlines;
    uint32_t next_gen;
    uint64_t code_reads, code_hits, invalidations;
};

int symbolizer_init(struct symbolizer *s, const struct memreader *mem, const struct py_offsets *off,
                    uint64_t code_type_addr, struct agg *agg);
void symbolizer_free(struct symbolizer *s);

/* Returns the frame id (>= 1), or 0 with err set when the code object cannot be read or is not
 * a code object (torn read, freed memory). */
uint32_t symbolizer_frame(struct symbolizer *s, uint64_t code, int32_t offset, struct cp_err *err);

/* Reads a str object into UTF-8 (bounded); used for code names and by tests. */
int symbolizer_read_str(const struct memreader *mem, const struct py_offsets *off, uint64_t addr,
                        char *out, size_t outsize, struct cp_err *err);

#endif
