/* bench_session: our sampler attached to one benchmark target, warmed up and checked.
 *
 * Header-only like bench_util.h. A session owns a sampler and its aggregate; opening one attaches
 * with sampler_open() exactly as the agent does, runs the warm-up ticks (so the symbolizer caches
 * and the 3.7-3.10 frame hints are filled before anything is timed) and records the depth of the
 * stack seen most, so a benchmark can tell that it measured the stack it meant to.
 */
#ifndef CONPROF_BENCH_SESSION_H
#define CONPROF_BENCH_SESSION_H

#include "bench_util.h"
#include "sampler.h"

struct bench_session {
    struct agg agg;
    struct sampler *s;
    uint32_t depth; /* depth of the most-sampled stack after the warm-up, 0 if none */
};

static inline const struct agg_stack *bench_top_stack(const struct agg *a)
{
    const struct agg_stack *top = NULL;
    for (uint32_t i = 0; i < a->nstacks; i++)
        if (!top || a->stacks[i].samples > top->samples) top = &a->stacks[i];
    return top;
}

static inline void bench_session_close(struct bench_session *b)
{
    if (b->s) {
        sampler_close(b->s);
        free(b->s);
        agg_free(&b->agg);
    }
    b->s = NULL;
}

static inline int bench_session_open(struct bench_session *b, pid_t pid, int rate_hz,
                                     int warmup_ticks, struct cp_err *err)
{
    memset(b, 0, sizeof *b);
    struct sampler_opts opts = {.rate_hz = rate_hz, .thread_frames = false};
    if (agg_init(&b->agg) < 0 || !(b->s = malloc(sizeof *b->s))) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    if (sampler_open(b->s, pid, &b->agg, &opts, 2000, err) < 0) {
        free(b->s);
        b->s = NULL;
        agg_free(&b->agg);
        return -1;
    }
    for (int i = 0; i < warmup_ticks; i++)
        if (sampler_tick(b->s, err) < 0) {
            bench_session_close(b);
            return -1;
        }
    const struct agg_stack *top = bench_top_stack(&b->agg);
    b->depth = top ? top->depth : 0;
    return 0;
}

/* The name and line of frame i (leaf first) of the most-sampled stack. */
static inline bool bench_session_frame(const struct bench_session *b, uint32_t i, const char **name,
                                       int32_t *line)
{
    const struct agg_stack *top = bench_top_stack(&b->agg);
    if (!top || i >= top->depth) return false;
    const struct agg_frame *f = &b->agg.frames[agg_stack_frames(&b->agg, top)[i]];
    *name = strtab_get(&b->agg.strings, f->name);
    *line = f->line;
    return true;
}

#endif
