/* summary: self/total time per frame, sorted by self time. */
#include "summary.h"

#include <stdlib.h>

struct frame_time {
    uint32_t id;
    int64_t self, total;
    uint32_t last_stack; /* stack index + 1 that last added to total (recursion guard) */
};

static int by_self_desc(const void *pa, const void *pb)
{
    const struct frame_time *a = pa, *b = pb;
    if (a->self != b->self)
        return a->self < b->self ? 1 : -1;
    return a->total < b->total ? 1 : a->total > b->total ? -1 : 0;
}

int summary_print_top(FILE *out, const struct agg *a, enum agg_dimension dim, int n)
{
    struct frame_time *t = calloc(a->nframes + 1, sizeof *t);
    if (!t)
        return -1;
    int64_t all = 0;
    for (uint32_t s = 0; s < a->nstacks; s++) {
        const struct agg_stack *st = &a->stacks[s];
        const uint32_t *ids = agg_stack_frames(a, st);
        int64_t v = agg_stack_value(st, dim);
        all += v;
        t[ids[0]].self += v;
        for (uint32_t d = 0; d < st->depth; d++) {
            if (t[ids[d]].last_stack != s + 1) {
                t[ids[d]].total += v;
                t[ids[d]].last_stack = s + 1;
            }
        }
    }
    for (uint32_t i = 0; i <= a->nframes; i++)
        t[i].id = i;
    qsort(t, a->nframes + 1, sizeof *t, by_self_desc);
    const char *what = dim == AGG_CPU ? "CPU" : "wall";
    fprintf(out, "%8s %6s %8s %6s  function (file:line)   [%s time, %.2f s in all]\n", "self(s)",
            "self%", "total(s)", "total%", what, (double)all / 1e9);
    for (int i = 0; i < n && i <= (int)a->nframes && t[i].self > 0; i++) {
        char label[512];
        agg_frame_label(a, t[i].id, label, sizeof label);
        fprintf(out, "%8.2f %5.1f%% %8.2f %5.1f%%  %s\n", (double)t[i].self / 1e9,
                all ? 100.0 * (double)t[i].self / (double)all : 0.0, (double)t[i].total / 1e9,
                all ? 100.0 * (double)t[i].total / (double)all : 0.0, label);
    }
    free(t);
    return 0;
}
