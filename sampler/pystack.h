/* pystack: walks one thread's Python frame chain in the target, for every layout family.
 *
 * Contract: produces raw frames (code object address + byte offset of the executing instruction),
 * leaf first, and never interprets code objects (symbolizer.h does). Bounded to PYSTACK_MAX_DEPTH
 * frames; detects cycles; skips the 3.12+ C-stack shim frames (owner FRAME_OWNED_BY_CSTACK) and the
 * 3.13 entry frames whose f_executable is Py_None (the walk goes on to the caller: Python called
 * from C keeps its outer frames). Reads are batched: 3.11+ copies the live part of the thread's
 * data-stack chunk in one read; 3.7-3.10 re-reads the previous walk's frame objects in one
 * vectored read (frame objects are reused, so a steady stack costs one system call).
 * A failed read returns -1 with errno-derived err; the caller retries once and counts.
 */
#ifndef CONPROF_PYSTACK_H
#define CONPROF_PYSTACK_H

#include "error.h"
#include "memreader.h"
#include "pyoffsets.h"
#include "pythreads.h"

#include <stdbool.h>
#include <stdint.h>

#define PYSTACK_MAX_DEPTH 4096
#define PYSTACK_CHUNK_WINDOW (256 * 1024) /* at most this much of a data-stack chunk per read */
#define PYSTACK_MAX_CHUNKS 8 /* data-stack chunks copied per walk; older frames are read singly */

struct py_raw_frame {
    uint64_t code;  /* PyCodeObject address */
    int32_t offset; /* byte offset of the instruction in the bytecode; -1 if not started */
};

struct py_stack {
    uint32_t depth;
    bool truncated; /* deeper than PYSTACK_MAX_DEPTH */
    struct py_raw_frame frames[PYSTACK_MAX_DEPTH];
};

struct pystack_maps;

/* Per-thread memory of the previous walk (3.7-3.10 frame addresses), owned by the caller. */
struct pystack_hint {
    uint64_t *frames;
    uint32_t count, cap;
};

/* Scratch memory reused across walks (no allocation per sample once warm). */
struct pystack_scratch {
    uint8_t *window; /* copy of a data-stack chunk part, or of prefetched frame objects */
    size_t window_cap;
    uint8_t *older[PYSTACK_MAX_CHUNKS - 1]; /* copies of older data-stack chunks */
    size_t older_cap[PYSTACK_MAX_CHUNKS - 1];
    struct mem_range *ranges;
    uint32_t ranges_cap;
    struct pystack_maps *maps; /* address sets (pystack.c) */
};

struct pystack_walker {
    const struct memreader *mem;
    const struct py_offsets *off;
    uint64_t none_addr;
    struct pystack_scratch scratch;
};

void pystack_walker_init(struct pystack_walker *w, const struct memreader *mem,
                         const struct py_offsets *off, uint64_t none_addr);
void pystack_walker_free(struct pystack_walker *w);
void pystack_hint_free(struct pystack_hint *h);

int pystack_walk(struct pystack_walker *w, const struct py_thread *t, struct pystack_hint *hint,
                 struct py_stack *out, struct cp_err *err);

#endif
