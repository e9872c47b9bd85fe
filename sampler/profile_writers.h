/* profile_writers: turn an aggregate into the files `record` writes.
 *
 * Contract: each writer reads the aggregate (never changes it) and appends to a caller-owned buf.
 *   - pprof: gzipped profile.proto written by hand (writer: pprof.c). Sample types, in this order:
 *     samples/count, wall/nanoseconds, cpu/nanoseconds (the last one is what pprof shows by
 *     default). string_table[0] is "", ids are non-zero, time_nanos/duration_nanos/period set,
 *     period_type cpu/nanoseconds, period = 1e9 / rate. `go tool pprof` reads it.
 *   - collapsed (collapsed.c): one line per stack, "root;...;leaf VALUE", frames as
 *     agg_frame_label(); VALUE is the chosen dimension in microseconds; stacks whose value rounds
 *     to 0 are left out. Lines sorted for stable output.
 *   - flame graph SVG (flamegraph.c): a self-contained interactive SVG (hover shows function,
 *     file:line, time, samples and %; click zooms; a search box highlights matches), weighed by the
 *     chosen dimension.
 * All return 0, or -1 with err set (memory, zlib).
 */
#ifndef CONPROF_PROFILE_WRITERS_H
#define CONPROF_PROFILE_WRITERS_H

#include "aggregate.h"
#include "buf.h"
#include "error.h"

#include <stddef.h>
#include <stdint.h>

struct pprof_meta {
    int64_t time_nanos;          /* start of collection, ns since the epoch */
    int64_t duration_nanos;      /* length of collection */
    int64_t period_nanos;        /* 1e9 / sampling rate */
    const char *const *comments; /* optional human-readable comments, may be NULL */
    size_t ncomments;
};

int pprof_write(const struct agg *a, const struct pprof_meta *meta, struct buf *out_gzip,
                struct cp_err *err);
/* Uncompressed protobuf (used by pprof_write and by tests). */
int pprof_encode(const struct agg *a, const struct pprof_meta *meta, struct buf *out,
                 struct cp_err *err);

int collapsed_write(const struct agg *a, enum agg_dimension dim, struct buf *out,
                    struct cp_err *err);

struct flamegraph_opts {
    const char *title;    /* e.g. "conprof: python3 app.py (pid 123), CPU" */
    const char *subtitle; /* may be NULL */
    enum agg_dimension dim;
};

int flamegraph_svg_write(const struct agg *a, const struct flamegraph_opts *opts, struct buf *out,
                         struct cp_err *err);

#endif
