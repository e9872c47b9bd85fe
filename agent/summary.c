/* summary: self/total time per function (name and file; lines merged), sorted by self time.
 *
 * Frames are (name, file, line); a function is (name, file). Each frame id is mapped to a dense
 * function index through a small open-addressing table keyed by the two string ids, then the
 * stacks are scanned once. Total time counts a stack once per function even under recursion.
 */
#include "summary.h"

#include <stdlib.h>

struct func_time {
    uint32_t frame; /* a representative frame: its name and file */
    int64_t self, total;
    uint32_t last_stack; /* stack index + 1 that last added to total (recursion guard) */
};

static int by_self_desc(const void *pa, const void *pb)
{
    const struct func_time *a = pa, *b = pb;
    if (a->self != b->self) return a->self < b->self ? 1 : -1;
    return a->total < b->total ? 1 : a->total > b->total ? -1 : 0;
}

/* func_of[frame id] = function index; returns the number of functions, or -1. */
static int map_functions(const struct agg *a, uint32_t *func_of, struct func_time *funcs)
{
    uint32_t nslots = 16;
    while (nslots < 2 * (a->nframes + 1))
        nslots *= 2;
    uint64_t *keys = calloc(nslots, sizeof *keys);
    uint32_t *vals = calloc(nslots, sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    uint32_t n = 0;
    for (uint32_t id = 1; id <= a->nframes; id++) {
        uint64_t key = ((uint64_t)a->frames[id].name << 32 | a->frames[id].file) + 1;
        uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & (nslots - 1);
        while (keys[i] && keys[i] != key)
            i = (i + 1) & (nslots - 1);
        if (!keys[i]) {
            keys[i] = key;
            vals[i] = n;
            funcs[n++].frame = id;
        }
        func_of[id] = vals[i];
    }
    free(keys);
    free(vals);
    return (int)n;
}

int summary_print_top(FILE *out, const struct agg *a, enum agg_dimension dim, int n)
{
    uint32_t *func_of = calloc(a->nframes + 1, sizeof *func_of);
    struct func_time *f = calloc(a->nframes + 1, sizeof *f);
    int nfuncs = func_of && f ? map_functions(a, func_of, f) : -1;
    if (nfuncs < 0) {
        free(func_of);
        free(f);
        return -1;
    }
    int64_t all = 0;
    for (uint32_t s = 0; s < a->nstacks; s++) {
        const struct agg_stack *st = &a->stacks[s];
        const uint32_t *ids = agg_stack_frames(a, st);
        int64_t v = agg_stack_value(st, dim);
        all += v;
        f[func_of[ids[0]]].self += v;
        for (uint32_t d = 0; d < st->depth; d++) {
            struct func_time *ft = &f[func_of[ids[d]]];
            if (ft->last_stack != s + 1) {
                ft->total += v;
                ft->last_stack = s + 1;
            }
        }
    }
    qsort(f, (size_t)nfuncs, sizeof *f, by_self_desc);
    fprintf(out, "%8s %6s %8s %6s  function (file)   [%s time, %.2f s in all]\n", "self(s)",
            "self%", "total(s)", "total%", dim == AGG_CPU ? "CPU" : "wall", (double)all / 1e9);
    for (int i = 0; i < n && i < nfuncs && f[i].self > 0; i++) {
        const struct agg_frame *fr = &a->frames[f[i].frame];
        const char *file = strtab_get(&a->strings, fr->file);
        fprintf(out, "%8.2f %5.1f%% %8.2f %5.1f%%  %s%s%s%s\n", (double)f[i].self / 1e9,
                all ? 100.0 * (double)f[i].self / (double)all : 0.0, (double)f[i].total / 1e9,
                all ? 100.0 * (double)f[i].total / (double)all : 0.0,
                strtab_get(&a->strings, fr->name), file[0] ? " (" : "", file, file[0] ? ")" : "");
    }
    free(func_of);
    free(f);
    return 0;
}
