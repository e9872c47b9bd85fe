/* sampler: the per-tick loop body over one process.
 *
 * Per tick: list the threads (one read each), then per thread walk the frames (pystack), turn
 * them into frame ids (symbolizer), ask the kernel for the thread's CPU time since its previous
 * sample (cputime) and add the stack to the aggregate. Per-thread state (the 3.7-3.10 frame-address
 * hint) is keyed by the thread state's address and forgotten when the thread disappears.
 */
#include "sampler.h"

#include "procfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SWEEP_TICKS 100

struct sampler_thread {
    uint64_t tstate;
    uint64_t last_tick;
    uint32_t thread_frame; /* --threads: the root frame of this thread, 0 until made */
    struct pystack_hint hint;
};

int sampler_open(struct sampler *s, pid_t pid, struct agg *agg, const struct sampler_opts *opts,
                 int attach_timeout_ms, struct cp_err *err)
{
    return sampler_open_at(s, PROCFS_DEFAULT, pid, agg, opts, attach_timeout_ms, err);
}

int sampler_open_at(struct sampler *s, int procfd, pid_t pid, struct agg *agg,
                    const struct sampler_opts *opts, int attach_timeout_ms, struct cp_err *err)
{
    memset(s, 0, sizeof *s);
    s->agg = agg;
    s->opts = *opts;
    if (opts->rate_hz <= 0) {
        cp_err_set(err, CP_ERR_INVALID, "the sampling rate must be positive");
        return -1;
    }
    int rc = attach_timeout_ms > 0
                 ? pyproc_attach_wait(procfd, pid, attach_timeout_ms, &s->proc, err)
                 : pyproc_attach_at(procfd, pid, &s->proc, err);
    if (rc < 0) return -1;
    pythreads_state_init(&s->threads_state);
    pystack_walker_init(&s->walker, &s->proc.mem, &s->proc.off, s->proc.none_addr);
    s->threads = calloc(PYTHREADS_MAX, sizeof *s->threads);
    s->stack = malloc(sizeof *s->stack);
    s->frame_ids = malloc((PYSTACK_MAX_DEPTH + 1) * sizeof *s->frame_ids);
    if (!s->threads || !s->stack || !s->frame_ids ||
        symbolizer_init(&s->sym, &s->proc.mem, &s->proc.off, s->proc.code_type_addr, agg) < 0 ||
        cputime_init(&s->cpu, procfd, pid) < 0) {
        sampler_close(s);
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    return 0;
}

void sampler_close(struct sampler *s)
{
    for (uint32_t i = 0; i < s->ntstate; i++)
        pystack_hint_free(&s->tstate[i].hint);
    free(s->tstate);
    free(s->threads);
    free(s->stack);
    free(s->frame_ids);
    symbolizer_free(&s->sym);
    cputime_free(&s->cpu);
    pystack_walker_free(&s->walker);
    pythreads_state_free(&s->threads_state);
    s->tstate = NULL;
    s->threads = NULL;
    s->stack = NULL;
    s->frame_ids = NULL;
    s->ntstate = 0;
}

static struct sampler_thread *thread_state_for(struct sampler *s, uint64_t tstate)
{
    for (uint32_t i = 0; i < s->ntstate; i++)
        if (s->tstate[i].tstate == tstate) return &s->tstate[i];
    if (s->ntstate == s->tstate_cap) {
        uint32_t cap = s->tstate_cap ? s->tstate_cap * 2 : 16;
        struct sampler_thread *p = realloc(s->tstate, cap * sizeof *p);
        if (!p) return NULL;
        s->tstate = p;
        s->tstate_cap = cap;
    }
    struct sampler_thread *t = &s->tstate[s->ntstate++];
    memset(t, 0, sizeof *t);
    t->tstate = tstate;
    return t;
}

static void forget_gone_threads(struct sampler *s)
{
    for (uint32_t i = 0; i < s->ntstate;) {
        if (s->tstate[i].last_tick != s->stats.ticks) {
            pystack_hint_free(&s->tstate[i].hint);
            s->tstate[i] = s->tstate[--s->ntstate];
        } else {
            i++;
        }
    }
}

static int walk_once(struct sampler *s, const struct py_thread *t, struct pystack_hint *hint,
                     uint32_t *frame_ids, struct cp_err *err)
{
    if (pystack_walk(&s->walker, t, hint, s->stack, err) < 0) return -1;
    for (uint32_t i = 0; i < s->stack->depth; i++) {
        const struct py_raw_frame *f = &s->stack->frames[i];
        frame_ids[i] = symbolizer_frame(&s->sym, f->code, f->offset, err);
        if (!frame_ids[i]) return -1;
    }
    return (int)s->stack->depth;
}

int sampler_thread_frames(struct sampler *s, const struct py_thread *t, uint32_t *frame_ids,
                          struct cp_err *err)
{
    struct sampler_thread *st = thread_state_for(s, t->tstate);
    struct pystack_hint *hint = st ? &st->hint : NULL;
    if (st) st->last_tick = s->stats.ticks;
    int depth = walk_once(s, t, hint, frame_ids, err);
    if (depth < 0 && err->code != CP_ERR_NOPROC && err->code != CP_ERR_NOMEM) {
        depth = walk_once(s, t, hint, frame_ids, err);
        if (depth >= 0) s->stats.retries++;
    }
    return depth;
}

static uint32_t thread_frame(struct sampler *s, const struct py_thread *t)
{
    char name[32], label[96];
    pythreads_name(&s->proc, t->native_tid, name, sizeof name);
    if (t->native_tid > 0)
        snprintf(label, sizeof label, "thread %d (%s)", (int)t->native_tid, name[0] ? name : "?");
    else
        snprintf(label, sizeof label, "thread 0x%llx", (unsigned long long)t->thread_id);
    return agg_frame_id_str(s->agg, label, "", 0);
}

static int list_threads(struct sampler *s, struct cp_err *err)
{
    int n = pythreads_list(&s->proc, &s->threads_state, s->threads, PYTHREADS_MAX, err);
    if (n >= 0) return n;
    if (!pyproc_alive(&s->proc)) {
        cp_err_set(err, CP_ERR_NOPROC, "process %d exited", (int)s->proc.pid);
        return -1;
    }
    /* a torn list, or the interpreter was re-created (fork + exec of a new one): look again */
    struct cp_err again;
    if (pyproc_read_interp(&s->proc, &again) == 0)
        n = pythreads_list(&s->proc, &s->threads_state, s->threads, PYTHREADS_MAX, err);
    return n;
}

int sampler_tick(struct sampler *s, struct cp_err *err)
{
    s->stats.ticks++;
    s->sym.tick++;
    int n = list_threads(s, err);
    if (n < 0) {
        if (err->code == CP_ERR_NOPROC) return -1;
        s->stats.errors++;
        s->stats.last_error = *err;
        return 0;
    }
    int64_t wall_ns = 1000000000LL / s->opts.rate_hz;
    for (int i = 0; i < n; i++) {
        const struct py_thread *t = &s->threads[i];
        struct cp_err terr;
        int depth = sampler_thread_frames(s, t, s->frame_ids, &terr);
        int64_t cpu_ns = cputime_delta(&s->cpu, t->native_tid);
        if (cpu_ns < 0) cpu_ns = 0;
        if (depth < 0) {
            if (terr.code == CP_ERR_NOPROC && !pyproc_alive(&s->proc)) {
                *err = terr;
                return -1;
            }
            s->stats.errors++;
            s->stats.last_error = terr;
            continue;
        }
        if (depth == 0) {
            s->stats.empty++;
            uint32_t id = agg_frame_id_str(s->agg, "<no Python frame>", "", 0);
            if (!id) continue;
            s->frame_ids[depth++] = id;
        }
        if (s->stack->truncated) s->stats.truncated++;
        if (s->opts.thread_frames) {
            struct sampler_thread *st = thread_state_for(s, t->tstate);
            uint32_t id = st && st->thread_frame ? st->thread_frame : thread_frame(s, t);
            if (st) st->thread_frame = id;
            if (id) s->frame_ids[depth++] = id;
        }
        if (agg_add(s->agg, s->frame_ids, (uint32_t)depth, cpu_ns, wall_ns) == 0)
            s->stats.thread_samples++;
    }
    forget_gone_threads(s);
    if (s->stats.ticks % SWEEP_TICKS == 0) cputime_sweep(&s->cpu);
    return 0;
}
