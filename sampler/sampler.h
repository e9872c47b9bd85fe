/* sampler: one target process sampled into an aggregate, one tick at a time.
 *
 * Contract: sampler_open() attaches (pyproc) and sets up the per-process state; each
 * sampler_tick() reads every Python thread's stack once, symbolizes it and adds it to the
 * aggregate with 1/rate s of wall time and the CPU time the thread used since its previous sample.
 * A torn read is retried once, then the thread's sample is dropped and counted. The caller owns
 * timing (when to tick) and the aggregate. sampler_tick() returns -1 with CP_ERR_NOPROC when the
 * target has exited; other failures are counted in the stats and return 0.
 * Never stops, signals or writes to the target. Not thread-safe; one sampler per target.
 */
#ifndef CONPROF_SAMPLER_H
#define CONPROF_SAMPLER_H

#include "aggregate.h"
#include "cputime.h"
#include "error.h"
#include "pyproc.h"
#include "pystack.h"
#include "pythreads.h"
#include "symbolizer.h"

#include <stdbool.h>
#include <stdint.h>

struct sampler_opts {
    int rate_hz;        /* samples per second per thread, > 0 */
    bool thread_frames; /* add a "thread <tid> (<name>)" frame at the root of every stack */
};

struct sampler_stats {
    uint64_t ticks;
    uint64_t thread_samples; /* stacks added */
    uint64_t retries;        /* torn reads that succeeded on the second try */
    uint64_t errors;         /* thread samples dropped after the retry */
    uint64_t empty;          /* threads without Python frames */
    uint64_t truncated;      /* stacks deeper than the bound */
    struct cp_err last_error;
};

struct sampler_thread; /* per-thread state (sampler.c) */

struct sampler {
    struct py_proc proc;
    struct sampler_opts opts;
    struct agg *agg;
    struct pythreads_state threads_state;
    struct pystack_walker walker;
    struct symbolizer sym;
    struct cputime cpu;
    struct py_thread *threads;
    struct sampler_thread *tstate;
    uint32_t ntstate, tstate_cap;
    struct py_stack *stack;
    uint32_t *frame_ids;
    struct sampler_stats stats;
};

/* attach_timeout_ms > 0 waits that long for a starting interpreter (see pyproc_attach_wait). */
int sampler_open(struct sampler *s, pid_t pid, struct agg *agg, const struct sampler_opts *opts,
                 int attach_timeout_ms, struct cp_err *err);
/* The same through a /proc handle (procfs.h), see pyproc_attach_at(). */
int sampler_open_at(struct sampler *s, int procfd, pid_t pid, struct agg *agg,
                    const struct sampler_opts *opts, int attach_timeout_ms, struct cp_err *err);
int sampler_tick(struct sampler *s, struct cp_err *err);
void sampler_close(struct sampler *s);

/* Walks and symbolizes one thread into frame ids (leaf first); used by tick and by `dump`.
 * Returns the depth, or -1 with err set after the retry. */
int sampler_thread_frames(struct sampler *s, const struct py_thread *t, uint32_t *frame_ids,
                          struct cp_err *err);

#endif
