/* aggregate: the table of distinct stacks with their CPU time, wall time and sample count.
 *
 * Contract: frames are interned as (name, file, line) string ids of the aggregator's own strtab and
 * get ids >= 1; a stack is a sequence of frame ids, leaf first. agg_add() of a stack already in
 * the table only adds to its counters (no allocation on that path); a new stack copies its frames
 * into an arena. Iteration order is insertion order. agg_reset() empties the stacks (keeping frames
 * and strings, so ids stay valid across periods); agg_free() releases everything.
 * Frame ids run 1..nframes. agg_add() refuses depth 0, depth > AGG_MAX_DEPTH and frame ids that
 * were not handed out. Not thread-safe.
 */
#ifndef CONPROF_AGGREGATE_H
#define CONPROF_AGGREGATE_H

#include "strtab.h"

#include <stddef.h>
#include <stdint.h>

/* PYSTACK_MAX_DEPTH (4096) Python frames plus the sampler's synthetic thread frame. */
#define AGG_MAX_DEPTH 4097u

enum agg_dimension {
    AGG_CPU = 0,
    AGG_WALL = 1,
};

struct agg_frame {
    uint32_t name; /* strtab id: the function's qualified name, or a thread label */
    uint32_t file; /* strtab id: the file name; 0 ("") for synthetic frames (threads) */
    int32_t line;  /* 0 when unknown */
};

struct agg_stack {
    uint32_t first; /* index of the leaf frame id in the frame-id arena */
    uint32_t depth;
    uint64_t samples;
    int64_t cpu_ns;
    int64_t wall_ns;
};

struct agg {
    struct strtab strings;
    struct agg_frame *frames; /* index = frame id; frames[0] unused, ids 1..nframes */
    uint32_t nframes, frames_cap;
    uint32_t *frame_slots; /* hash of frames: slot -> id, 0 = empty */
    uint32_t frame_nslots;
    uint32_t *arena; /* the frame ids of all stacks */
    size_t arena_len, arena_cap;
    struct agg_stack *stacks;
    uint32_t nstacks, stacks_cap;
    uint64_t *stack_slots; /* hash of stacks: slot -> hash << 32 | (index + 1), 0 = empty */
    uint32_t stack_nslots;
    uint64_t total_samples;
    int64_t total_cpu_ns, total_wall_ns;
};

int agg_init(struct agg *a);
void agg_free(struct agg *a);
void agg_reset(struct agg *a);

/* Interns a frame; returns its id (>= 1), or 0 when memory runs out. */
uint32_t agg_frame_id(struct agg *a, uint32_t name_sid, uint32_t file_sid, int32_t line);
/* Convenience: interns the strings too. */
uint32_t agg_frame_id_str(struct agg *a, const char *name, const char *file, int32_t line);

/* Adds one observation of a stack (frame ids, leaf first, depth >= 1). Returns 0 or -1 (memory). */
int agg_add(struct agg *a, const uint32_t *frames, uint32_t depth, int64_t cpu_ns, int64_t wall_ns);

static inline const uint32_t *agg_stack_frames(const struct agg *a, const struct agg_stack *s)
{
    return a->arena + s->first;
}
static inline int64_t agg_stack_value(const struct agg_stack *s, enum agg_dimension d)
{
    return d == AGG_CPU ? s->cpu_ns : s->wall_ns;
}

/* "name (file:line)", or "name" for frames without a file; the text collapsed stacks and the flame
 * graph show. Writes at most outsize bytes, NUL-terminated. */
void agg_frame_label(const struct agg *a, uint32_t frame_id, char *out, size_t outsize);

#endif
