/* aggregate: the frame table and the stack table, both open-addressing hash tables.
 *
 * Design: a stack is looked up by content. agg_add() hashes the frame-id array once (8 bytes per
 * step, mixed with a 64x64->128-bit multiply) and probes `stack_slots` linearly; each slot keeps
 * the 32-bit hash next to the stack index, so a probe only touches the stack and its frames
 * (depth check + memcmp) when the hashes agree, and growing the table never rehashes frames.
 * An existing stack costs one hash, a probe or two and a memcmp: no allocation. A new stack has
 * its frame ids validated (so writers can index `frames[]` blindly) and appended to one arena.
 * Frames (name, file, line) live in a second, simpler table keyed by the three ints. Tables
 * double before passing 70% load; every size is checked against its field's range first.
 */
#include "aggregate.h"

#include "hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_FRAMES 256u
#define INITIAL_STACKS 256u
#define INITIAL_ARENA 4096u
#define MAX_SLOTS (1u << 31)

static inline uint32_t hash_ids(const uint32_t *ids, uint32_t n)
{
    uint64_t h = HASH_K0 ^ n;
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t lo, hi;
        memcpy(&lo, ids + i, 8);
        memcpy(&hi, ids + i + 2, 8);
        h = hash_fold_mul(lo ^ HASH_K1, hi ^ h);
    }
    for (; i < n; i++)
        h = hash_fold_mul((uint64_t)ids[i] ^ HASH_K1, h ^ HASH_K2);
    return (uint32_t)(h ^ (h >> 32));
}

static inline uint32_t hash_frame(uint32_t name, uint32_t file, int32_t line)
{
    uint64_t h =
        hash_fold_mul(((uint64_t)name << 32 | file) ^ HASH_K1, (uint64_t)(uint32_t)line ^ HASH_K2);
    return (uint32_t)(h ^ (h >> 32));
}

static int rebuild_frame_slots(struct agg *a, uint32_t nslots)
{
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return -1;
    uint32_t mask = nslots - 1;
    for (uint32_t id = 1; id <= a->nframes; id++) {
        const struct agg_frame *f = &a->frames[id];
        uint32_t i = hash_frame(f->name, f->file, f->line) & mask;
        while (slots[i])
            i = (i + 1) & mask;
        slots[i] = id;
    }
    free(a->frame_slots);
    a->frame_slots = slots;
    a->frame_nslots = nslots;
    return 0;
}

static int rebuild_stack_slots(struct agg *a, uint32_t nslots)
{
    uint64_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return -1;
    uint32_t mask = nslots - 1;
    for (uint32_t s = 0; s < a->stack_nslots; s++) {
        uint64_t slot = a->stack_slots[s];
        if (!slot) continue;
        uint32_t i = (uint32_t)(slot >> 32) & mask;
        while (slots[i])
            i = (i + 1) & mask;
        slots[i] = slot;
    }
    free(a->stack_slots);
    a->stack_slots = slots;
    a->stack_nslots = nslots;
    return 0;
}

int agg_init(struct agg *a)
{
    memset(a, 0, sizeof *a);
    if (strtab_init(&a->strings) < 0) return -1;
    a->frames = malloc(INITIAL_FRAMES * sizeof *a->frames);
    a->frame_slots = calloc(INITIAL_FRAMES * 2, sizeof *a->frame_slots);
    a->arena = malloc(INITIAL_ARENA * sizeof *a->arena);
    a->stacks = malloc(INITIAL_STACKS * sizeof *a->stacks);
    a->stack_slots = calloc(INITIAL_STACKS * 2, sizeof *a->stack_slots);
    if (!a->frames || !a->frame_slots || !a->arena || !a->stacks || !a->stack_slots) {
        agg_free(a);
        return -1;
    }
    memset(&a->frames[0], 0, sizeof a->frames[0]);
    a->frames_cap = INITIAL_FRAMES;
    a->frame_nslots = INITIAL_FRAMES * 2;
    a->arena_cap = INITIAL_ARENA;
    a->stacks_cap = INITIAL_STACKS;
    a->stack_nslots = INITIAL_STACKS * 2;
    return 0;
}

void agg_free(struct agg *a)
{
    strtab_free(&a->strings);
    free(a->frames);
    free(a->frame_slots);
    free(a->arena);
    free(a->stacks);
    free(a->stack_slots);
    memset(a, 0, sizeof *a);
}

void agg_reset(struct agg *a)
{
    if (a->stack_slots) memset(a->stack_slots, 0, (size_t)a->stack_nslots * sizeof *a->stack_slots);
    a->nstacks = 0;
    a->arena_len = 0;
    a->total_samples = 0;
    a->total_cpu_ns = 0;
    a->total_wall_ns = 0;
}

/* Room for frame id nframes + 1, and the slot table under 70% load with it. */
static int reserve_frame(struct agg *a)
{
    if (a->nframes + 1 >= a->frames_cap) {
        if (a->frames_cap > UINT32_MAX / 2) return -1;
        uint32_t cap = a->frames_cap * 2;
        struct agg_frame *frames = realloc(a->frames, (size_t)cap * sizeof *frames);
        if (!frames) return -1;
        a->frames = frames;
        a->frames_cap = cap;
    }
    if ((uint64_t)(a->nframes + 1) * 10 > (uint64_t)a->frame_nslots * 7) {
        if (a->frame_nslots >= MAX_SLOTS) return -1;
        return rebuild_frame_slots(a, a->frame_nslots * 2);
    }
    return 0;
}

uint32_t agg_frame_id(struct agg *a, uint32_t name_sid, uint32_t file_sid, int32_t line)
{
    if (name_sid >= a->strings.count || file_sid >= a->strings.count) return 0;
    uint32_t h = hash_frame(name_sid, file_sid, line);
    uint32_t mask = a->frame_nslots - 1;
    uint32_t i = h & mask;
    for (uint32_t id; (id = a->frame_slots[i]) != 0; i = (i + 1) & mask) {
        const struct agg_frame *f = &a->frames[id];
        if (f->name == name_sid && f->file == file_sid && f->line == line) return id;
    }
    uint32_t nslots_before = a->frame_nslots;
    if (reserve_frame(a) < 0) return 0;
    if (a->frame_nslots != nslots_before) {
        mask = a->frame_nslots - 1;
        for (i = h & mask; a->frame_slots[i]; i = (i + 1) & mask)
            ;
    }
    uint32_t id = ++a->nframes;
    a->frames[id] = (struct agg_frame){.name = name_sid, .file = file_sid, .line = line};
    a->frame_slots[i] = id;
    return id;
}

uint32_t agg_frame_id_str(struct agg *a, const char *name, const char *file, int32_t line)
{
    uint32_t name_sid = strtab_intern(&a->strings, name ? name : "", name ? strlen(name) : 0);
    uint32_t file_sid = strtab_intern(&a->strings, file ? file : "", file ? strlen(file) : 0);
    if (name_sid == STRTAB_NOMEM || file_sid == STRTAB_NOMEM) return 0;
    return agg_frame_id(a, name_sid, file_sid, line);
}

static int valid_frame_ids(const struct agg *a, const uint32_t *frames, uint32_t depth)
{
    for (uint32_t d = 0; d < depth; d++)
        if (frames[d] == 0 || frames[d] > a->nframes) return 0;
    return 1;
}

/* Room for one more stack of `depth` frames: stack array, arena, and slots under 70% load. */
static int reserve_stack(struct agg *a, uint32_t depth)
{
    if (a->nstacks >= a->stacks_cap) {
        if (a->stacks_cap > UINT32_MAX / 2) return -1;
        uint32_t cap = a->stacks_cap * 2;
        struct agg_stack *stacks = realloc(a->stacks, (size_t)cap * sizeof *stacks);
        if (!stacks) return -1;
        a->stacks = stacks;
        a->stacks_cap = cap;
    }
    if (a->arena_len + depth > UINT32_MAX) /* agg_stack.first is 32-bit */
        return -1;
    if (a->arena_len + depth > a->arena_cap) {
        size_t cap = a->arena_cap;
        while (cap < a->arena_len + depth)
            cap *= 2;
        uint32_t *arena = realloc(a->arena, cap * sizeof *arena);
        if (!arena) return -1;
        a->arena = arena;
        a->arena_cap = cap;
    }
    if ((uint64_t)(a->nstacks + 1) * 10 > (uint64_t)a->stack_nslots * 7) {
        if (a->stack_nslots >= MAX_SLOTS) return -1;
        return rebuild_stack_slots(a, a->stack_nslots * 2);
    }
    return 0;
}

static int add_new_stack(struct agg *a, const uint32_t *frames, uint32_t depth, uint32_t h,
                         int64_t cpu_ns, int64_t wall_ns)
{
    if (!valid_frame_ids(a, frames, depth) || reserve_stack(a, depth) < 0) return -1;
    uint32_t mask = a->stack_nslots - 1;
    uint32_t i = h & mask;
    while (a->stack_slots[i])
        i = (i + 1) & mask;
    uint32_t index = a->nstacks++;
    a->stacks[index] = (struct agg_stack){.first = (uint32_t)a->arena_len,
                                          .depth = depth,
                                          .samples = 1,
                                          .cpu_ns = cpu_ns,
                                          .wall_ns = wall_ns};
    memcpy(a->arena + a->arena_len, frames, (size_t)depth * sizeof *frames);
    a->arena_len += depth;
    a->stack_slots[i] = (uint64_t)h << 32 | (index + 1);
    return 0;
}

int agg_add(struct agg *a, const uint32_t *frames, uint32_t depth, int64_t cpu_ns, int64_t wall_ns)
{
    if (depth == 0 || depth > AGG_MAX_DEPTH) return -1;
    uint32_t h = hash_ids(frames, depth);
    uint32_t mask = a->stack_nslots - 1;
    struct agg_stack *found = NULL;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        uint64_t slot = a->stack_slots[i];
        if (!slot) break;
        if ((uint32_t)(slot >> 32) != h) continue;
        struct agg_stack *s = &a->stacks[(uint32_t)slot - 1];
        if (s->depth == depth &&
            memcmp(a->arena + s->first, frames, (size_t)depth * sizeof *frames) == 0) {
            found = s;
            break;
        }
    }
    if (found) {
        found->samples++;
        found->cpu_ns += cpu_ns;
        found->wall_ns += wall_ns;
    } else if (add_new_stack(a, frames, depth, h, cpu_ns, wall_ns) < 0) {
        return -1;
    }
    a->total_samples++;
    a->total_cpu_ns += cpu_ns;
    a->total_wall_ns += wall_ns;
    return 0;
}

void agg_frame_label(const struct agg *a, uint32_t frame_id, char *out, size_t outsize)
{
    if (outsize == 0) return;
    if (frame_id == 0 || frame_id > a->nframes) {
        snprintf(out, outsize, "?");
        return;
    }
    const struct agg_frame *f = &a->frames[frame_id];
    const char *name = strtab_get(&a->strings, f->name);
    const char *file = strtab_get(&a->strings, f->file);
    if (file[0])
        snprintf(out, outsize, "%s (%s:%d)", name, file, (int)f->line);
    else
        snprintf(out, outsize, "%s", name);
}
