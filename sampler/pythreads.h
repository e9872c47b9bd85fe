/* pythreads: the Python threads of the target's main interpreter.
 *
 * Contract: pythreads_list() walks the PyThreadState list (bounded to PYTHREADS_MAX, cycle-safe)
 * and copies each thread state's fields the walker needs, in one read per thread. It maps each
 * thread to its native thread id as seen from our pid namespace (3.11+: native_thread_id;
 * 3.7-3.10: the tid word inside glibc/musl's struct pthread, found once per process by searching
 * the main thread's struct pthread for the target's pid), and can tell which thread holds the GIL.
 * State that survives between calls (the pthread tid offset, the namespace tid map) lives in
 * struct pythreads_state, owned by the caller. Not thread-safe.
 */
#ifndef CONPROF_PYTHREADS_H
#define CONPROF_PYTHREADS_H

#include "error.h"
#include "pyproc.h"

#include <stdbool.h>
#include <stdint.h>

#define PYTHREADS_MAX 4096
#define PYTHREADS_TSTATE_MAX 512 /* bytes of a PyThreadState we copy */

struct py_thread {
    uint64_t tstate;          /* address of the PyThreadState */
    uint64_t thread_id;       /* pthread_t (threading.get_ident()) */
    int32_t native_tid;       /* in our pid namespace; 0 when unknown */
    uint64_t frame;           /* the top frame field (see pyoffsets.h tstate_frame) */
    uint64_t datastack_chunk; /* 3.11+: the current _PyStackChunk, else 0 */
};

struct pythreads_state {
    int32_t pthread_tid_offset; /* 3.7-3.10: offset of the tid in struct pthread, -1 unknown */
    /* target-namespace tid -> our tid, for targets in another pid namespace */
    struct {
        int32_t inner, outer;
    } * tid_map;
    unsigned tid_map_len, tid_map_cap;
    bool in_other_pidns;
};

void pythreads_state_init(struct pythreads_state *st);
void pythreads_state_free(struct pythreads_state *st);

/* Fills up to max threads (newest first, as CPython links them). Returns the count, or -1. */
int pythreads_list(struct py_proc *p, struct pythreads_state *st, struct py_thread *out, int max,
                   struct cp_err *err);

/* The tstate address of the thread holding the GIL, 0 if none or unknown. */
uint64_t pythreads_gil_holder(struct py_proc *p);

/* The kernel's name of a thread (/proc/PID/task/TID/comm) into buf; "" if unknown. */
void pythreads_name(const struct py_proc *p, int32_t tid, char *buf, size_t size);

#endif
