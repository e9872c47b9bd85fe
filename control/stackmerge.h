/* stackmerge: many profiles' stacks summed into one merged profile, and its three writers
 * (gzipped pprof, collapsed text, Pyroscope flamebearer JSON) for the query API's merge.
 *
 * Contract: a stackmerge interns frames by (function, file, line) and stacks by their frame ids;
 * stackmerge_add() adds `value` to the stack's sum (a new stack starts at 0). Stacks are given
 * leaf first (pprof's order); adding a stack of depth 0 counts it under the root (it still adds to
 * the total). Values are int64 and sums saturate at INT64_MAX / INT64_MIN; writers leave out
 * stacks whose sum is 0. Strings are copied (the caller's profile may be freed after the add).
 * Bounds: depth <= STACKMERGE_MAX_DEPTH (deeper stacks keep their STACKMERGE_MAX_DEPTH frames
 * nearest the root, i.e. the outermost ones), at most STACKMERGE_MAX_STACKS distinct stacks
 * (more is CP_ERR_NOMEM naming the bound; the merge is then unchanged).
 *
 * Writers append to `out` and leave it unchanged on error:
 *  - pprof: one sample type (type, unit), period_type the same, period 0 unless given; one
 *    Location per distinct frame (one Line), one Function per distinct (function, file); gzipped
 *    (`go tool pprof` reads it).
 *  - collapsed: "root;...;leaf VALUE\n" per stack, a frame written "function (file:line)" with
 *    ';' and newlines in names replaced by ':' / ' '; lines sorted by stack text.
 *  - flamebearer (Pyroscope "single" format): {"version":1,"flamebearer":{"names","levels",
 *    "numTicks","maxSelf"},"metadata":{"format":"single","spyName","sampleRate","units","name"}}.
 *    names[0] is "total" (the root); levels[d] holds [offset, total, self, name_index] quadruples,
 *    offset delta-encoded per level as Pyroscope does (x minus the end of the previous node on
 *    the same level); children sorted by name. Frame names follow `name_style`: the Upsun form is a
 *    JSON-encoded location {"filename","name","line"}; the plain form is "function (file:line)".
 *    Nodes whose total is below min_ticks (0 = keep all) are folded into their parent's self.
 *    Stacks whose sum is negative or 0 are left out (numTicks is the sum of the positive ones).
 * Not thread-safe per object.
 */
#ifndef CONPROF_STACKMERGE_H
#define CONPROF_STACKMERGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

#define STACKMERGE_MAX_DEPTH 1024u
#define STACKMERGE_MAX_STACKS (4u << 20)

struct stackmerge;

struct stackmerge_frame {
    const char *function;
    const char *file;
    int64_t line;
};

struct stackmerge *stackmerge_new(void); /* NULL when memory runs out */
void stackmerge_free(struct stackmerge *m);

/* Adds value to the stack frames[0..depth) (frames[0] = leaf). 0, or -1 (err set). */
int stackmerge_add(struct stackmerge *m, const struct stackmerge_frame *frames, size_t depth,
                   int64_t value, struct cp_err *err);

struct pprof_decoded; /* pprof_read.h */
/* Adds every sample of a decoded profile with its value of sample type type_index (samples whose
 * value is 0 are skipped). Faster than stackmerge_add per sample: frames are looked up by their
 * string pointers within the profile. 0, or -1 (err set; samples added before stay added). */
int stackmerge_add_decoded(struct stackmerge *m, const struct pprof_decoded *p, size_t type_index,
                           struct cp_err *err);

/* Adds every stack of src to dst (e.g. merges built by several threads). 0, or -1 (err set). */
int stackmerge_merge(struct stackmerge *dst, const struct stackmerge *src, struct cp_err *err);

size_t stackmerge_stack_count(const struct stackmerge *m); /* distinct stacks added */
int64_t stackmerge_total(const struct stackmerge *m);      /* sum of all values (saturating) */

struct stackmerge_pprof_meta {
    const char *type, *unit; /* sample_type, e.g. "cpu", "nanoseconds" */
    int64_t time_nanos, duration_nanos, period;
};
int stackmerge_write_pprof(const struct stackmerge *m, const struct stackmerge_pprof_meta *meta,
                           struct buf *out_gzip, struct cp_err *err);
/* The same profile without the gzip wrapper (tests, other containers). */
int stackmerge_encode_pprof(const struct stackmerge *m, const struct stackmerge_pprof_meta *meta,
                            struct buf *out, struct cp_err *err);

int stackmerge_write_collapsed(const struct stackmerge *m, struct buf *out, struct cp_err *err);

enum stackmerge_name_style {
    STACKMERGE_NAMES_LOCATION_JSON =
        0,                  /* Upsun: "{\"filename\":\"a.py\",\"name\":\"f\",\"line\":3}" */
    STACKMERGE_NAMES_PLAIN, /* "f (a.py:3)" */
};
struct stackmerge_flamebearer_meta {
    const char *spy_name; /* "conprof" when NULL */
    int sample_rate;      /* 100 when 0 */
    const char *units;    /* Pyroscope units: "nanoseconds", "samples", "objects", "bytes" */
    const char *name;     /* metadata.name, e.g. the profile type "cpu" */
    enum stackmerge_name_style name_style;
    int64_t min_ticks;
};
/* Appends the flamebearer JSON text to out, followed inside the top-level object by the members
 * of `extra` (an object, or NULL) — the Upsun fields. 0, or -1 (err set, out unchanged). */
int stackmerge_write_flamebearer(const struct stackmerge *m,
                                 const struct stackmerge_flamebearer_meta *meta,
                                 const json_t *extra, struct buf *out, struct cp_err *err);
/* The same as a new json_t reference, or NULL (err set). */
json_t *stackmerge_flamebearer(const struct stackmerge *m,
                               const struct stackmerge_flamebearer_meta *meta, struct cp_err *err);

#endif
