/* bench_sample: the cost of one thread-sample (read + unwind + symbolize + aggregate).
 *
 * For every CPython found (bench_util.h) and every depth, a target (bench_target.py) recurses to
 * exactly that many Python frames and then either sleeps (a steady stack: the cached best case)
 * or spins in the leaf (the instruction offset moves: the realistic case of a CPU profile). We
 * attach as the agent does, tick through a warm-up, then time BENCH_TICKS sampler_tick() calls
 * back to back. The headline is our thread's CPU time per thread-sample (CLOCK_THREAD_CPUTIME_ID:
 * user + kernel, so process_vm_readv is in it, but not the time another process held our core,
 * which on a shared 2-core machine dominates a wall-clock mean). The wall-clock figures of single
 * ticks on CLOCK_MONOTONIC (mean, median, 99th percentile) are printed next to it, with the
 * process_vm_readv calls per sample (the procmem counter), the CPU time of the walk alone
 * (read + unwind + symbolize, without the schedstat read and the aggregate) and the floor: the
 * CPU time of one 8-byte process_vm_readv of that target. Back-to-back ticks keep the caches
 * warm; bench_austin measures at 100 Hz.
 */
#include "bench_session.h"
#include "bench_util.h"

#define MAX_DEPTHS 8

struct config {
    long ticks, warmup;
    long depths[MAX_DEPTHS];
    int ndepths;
    const char *modes[2];
    int nmodes;
};

struct result {
    bool ok;
    uint32_t depth_seen;
    double cpu_us;                          /* CPU time per thread-sample: the headline */
    double mean_us, p50_us, p99_us, max_us; /* wall time per thread-sample */
    double walk_us;                         /* CPU time of read + unwind + symbolize only */
    double floor_us;                        /* CPU time of one 8-byte process_vm_readv */
    double calls;                           /* process_vm_readv per thread-sample */
    uint64_t errors;
    char error[160];
};

static void read_config(struct config *c)
{
    c->ticks = bench_env_long("BENCH_TICKS", 2000, 10, 10000000);
    c->warmup = bench_env_long("BENCH_WARMUP", 200, 1, 1000000);
    c->ndepths =
        bench_parse_list(bench_env_str("BENCH_DEPTHS", "10,50,200"), c->depths, MAX_DEPTHS, 900);
    const char *modes = bench_env_str("BENCH_MODES", "sleep,spin");
    c->nmodes = 0;
    if (strstr(modes, "sleep")) c->modes[c->nmodes++] = "sleep";
    if (strstr(modes, "spin")) c->modes[c->nmodes++] = "spin";
}

/* Times `ticks` sampler_tick() calls; fills the per-sample figures. */
static int time_ticks(struct sampler *s, long ticks, struct result *r, struct cp_err *err)
{
    double *tick_us = malloc((size_t)ticks * sizeof *tick_us);
    if (!tick_us) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    uint64_t samples0 = s->stats.thread_samples, calls0 = s->proc.procmem.calls;
    uint64_t errors0 = s->stats.errors;
    int64_t cpu0 = bench_thread_cpu_ns();
    int64_t start = bench_now_ns(), prev = start;
    for (long k = 0; k < ticks; k++) {
        if (sampler_tick(s, err) < 0) {
            free(tick_us);
            return -1;
        }
        int64_t now = bench_now_ns();
        tick_us[k] = (double)(now - prev) / 1e3;
        prev = now;
    }
    int64_t cpu = bench_thread_cpu_ns() - cpu0;
    uint64_t samples = s->stats.thread_samples - samples0;
    double per_tick = samples ? (double)samples / (double)ticks : 1;
    double n = samples ? (double)samples : 1;
    r->cpu_us = (double)cpu / 1e3 / n;
    r->mean_us = (double)(prev - start) / 1e3 / n;
    r->p50_us = bench_quantile(tick_us, (size_t)ticks, 0.5) / per_tick;
    r->p99_us = bench_quantile(tick_us, (size_t)ticks, 0.99) / per_tick;
    r->max_us = tick_us[ticks - 1] / per_tick; /* sorted by bench_quantile */
    r->calls = (double)(s->proc.procmem.calls - calls0) / n;
    r->errors = s->stats.errors - errors0;
    free(tick_us);
    return samples ? 0 : (cp_err_set(err, CP_ERR_INVALID, "no thread-sample was taken"), -1);
}

/* CPU time of the walk the tick does, without the CPU-time read and the aggregate. */
static double time_walks(struct sampler *s, long ticks)
{
    struct cp_err err;
    uint64_t walks = 0;
    int64_t start = bench_thread_cpu_ns();
    for (long k = 0; k < ticks; k++) {
        s->sym.tick++; /* as sampler_tick does: keeps the re-validation schedule */
        int n = pythreads_list(&s->proc, &s->threads_state, s->threads, PYTHREADS_MAX, &err);
        for (int i = 0; i < n; i++)
            if (sampler_thread_frames(s, &s->threads[i], s->frame_ids, &err) >= 0) walks++;
    }
    return walks ? (double)(bench_thread_cpu_ns() - start) / 1e3 / (double)walks : 0;
}

/* CPU time of the cheapest read there is: 8 bytes of _PyRuntime. */
static double time_floor(struct sampler *s, long reads)
{
    uint64_t word;
    long ok = 0;
    int64_t start = bench_thread_cpu_ns();
    for (long k = 0; k < reads; k++)
        ok += mem_read_u64(&s->proc.mem, s->proc.runtime_addr, &word) == 0;
    return ok ? (double)(bench_thread_cpu_ns() - start) / 1e3 / (double)ok : 0;
}

static void measure(const struct bench_python *py, long depth, const char *mode,
                    const struct config *c, struct result *r)
{
    memset(r, 0, sizeof *r);
    struct cp_err err = {0};
    char depth_text[16];
    snprintf(depth_text, sizeof depth_text, "%ld", depth);
    const char *args[] = {"depth", depth_text, mode, NULL};
    struct bench_child target;
    struct bench_session b;
    if (bench_start_target(py->path, args, 0, &target, &err) < 0) {
        snprintf(r->error, sizeof r->error, "%.150s", err.msg);
        return;
    }
    if (bench_session_open(&b, target.pid, 100, (int)c->warmup, &err) == 0) {
        r->depth_seen = b.depth;
        r->ok = time_ticks(b.s, c->ticks, r, &err) == 0;
        if (r->ok) r->walk_us = time_walks(b.s, c->ticks);
        if (r->ok) r->floor_us = time_floor(b.s, c->ticks);
        bench_session_close(&b);
    }
    if (!r->ok) snprintf(r->error, sizeof r->error, "%.150s", err.msg);
    bench_stop(&target);
}

static void print_cell(const struct result *r, long depth)
{
    char cell[40];
    if (!r->ok)
        snprintf(cell, sizeof cell, "failed");
    else
        snprintf(cell, sizeof cell, "%.2f [%.1f]%s", r->cpu_us, r->calls,
                 r->depth_seen != (uint32_t)depth ? "!" : "");
    printf("  %-18s", cell);
}

static void print_mode_table(const struct config *c, const struct bench_python *py, int npy,
                             int mode, struct result *res)
{
    printf("\n%s leaf: CPU µs per thread-sample [process_vm_readv calls per sample]\n",
           !strcmp(c->modes[mode], "sleep") ? "sleeping (steady stack)" : "spinning (busy loop)");
    printf("%-16s", "python");
    for (int d = 0; d < c->ndepths; d++) {
        char h[24];
        snprintf(h, sizeof h, "depth %ld", c->depths[d]);
        printf("  %-18s", h);
    }
    printf("\n");
    for (int p = 0; p < npy; p++) {
        printf("%-16s", py[p].label);
        for (int d = 0; d < c->ndepths; d++)
            print_cell(&res[(p * c->nmodes + mode) * c->ndepths + d], c->depths[d]);
        printf("\n");
    }
}

static void print_details(const struct config *c, const struct bench_python *py, int npy,
                          const struct result *res)
{
    printf("\ndetails, µs per thread-sample: cpu = our CPU time; mean/p50/p99/max = wall time of "
           "ticks;\nwalk = CPU time of read+unwind+symbolize alone; floor = CPU time of one 8-byte "
           "process_vm_readv\n");
    printf("%-12s %-5s %5s %5s %7s %8s %7s %7s %8s %7s %6s %6s %6s\n", "python", "mode", "depth",
           "seen", "cpu", "mean", "p50", "p99", "max", "walk", "floor", "calls", "errors");
    for (int p = 0; p < npy; p++)
        for (int m = 0; m < c->nmodes; m++)
            for (int d = 0; d < c->ndepths; d++) {
                const struct result *r = &res[(p * c->nmodes + m) * c->ndepths + d];
                printf("%-12s %-5s %5ld ", py[p].label, c->modes[m], c->depths[d]);
                if (!r->ok)
                    printf("failed: %s\n", r->error);
                else
                    printf("%5u %7.2f %8.2f %7.2f %7.2f %8.1f %7.2f %6.2f %6.1f %6llu\n",
                           r->depth_seen, r->cpu_us, r->mean_us, r->p50_us, r->p99_us, r->max_us,
                           r->walk_us, r->floor_us, r->calls, (unsigned long long)r->errors);
            }
}

/* The worst depth-50 figure of one family (3.11+ or 3.7-3.10) in one mode, as a summary row. */
static void summarize_family(const struct config *c, const struct bench_python *py, int npy,
                             const struct result *res, int mode, bool new_family)
{
    int d50 = -1;
    for (int d = 0; d < c->ndepths; d++)
        if (c->depths[d] == 50) d50 = d;
    if (d50 < 0) return;
    double limit = new_family ? 5.0 : 20.0;
    const struct result *worst = NULL;
    const char *who = "";
    int failed = 0;
    for (int p = 0; p < npy; p++) {
        if ((bench_minor_of(py[p].path) >= 11) != new_family) continue;
        const struct result *r = &res[(p * c->nmodes + mode) * c->ndepths + d50];
        if (!r->ok) failed++;
        if (r->ok && (!worst || r->cpu_us > worst->cpu_us)) {
            worst = r;
            who = py[p].label;
        }
    }
    if (!worst && !failed) return;
    char figure[96], value[64] = "n/a", target[32], note[64] = "";
    snprintf(figure, sizeof figure, "thread-sample, depth 50, %s leaf, CPython %s (worst)",
             c->modes[mode], new_family ? "3.11+" : "3.7-3.10");
    if (worst) snprintf(value, sizeof value, "%.2f µs (%s)", worst->cpu_us, who);
    snprintf(target, sizeof target, "<= %.0f µs", limit);
    if (worst)
        snprintf(note, sizeof note, "CPU time; wall median %.2f µs%s", worst->p50_us,
                 failed ? ", some interpreters failed" : "");
    else
        snprintf(note, sizeof note, "%d interpreter(s) failed", failed);
    bench_summary(figure, value, target, worst ? worst->cpu_us / limit : 0, note);
}

int main(void)
{
    struct config c;
    read_config(&c);
    struct bench_python py[BENCH_MAX_PYTHONS];
    int npy = bench_find_pythons(py);
    if (npy == 0 || c.ndepths == 0 || c.nmodes == 0) {
        fprintf(stderr, "bench_sample: nothing to measure (interpreters, BENCH_DEPTHS or "
                        "BENCH_MODES)\n");
        return 1;
    }
    printf("bench_sample: %ld timed ticks after %ld warm-up ticks, one thread per target\n",
           c.ticks, c.warmup);
    bench_print_load();
    size_t count = (size_t)npy * (size_t)c.nmodes * (size_t)c.ndepths;
    struct result *res = calloc(count, sizeof *res);
    if (!res) return 1;
    for (int p = 0; p < npy; p++)
        for (int m = 0; m < c.nmodes; m++)
            for (int d = 0; d < c.ndepths; d++)
                measure(&py[p], c.depths[d], c.modes[m], &c,
                        &res[(p * c.nmodes + m) * c.ndepths + d]);
    for (int m = 0; m < c.nmodes; m++)
        print_mode_table(&c, py, npy, m, res);
    printf("(! = the stack seen was not the depth asked for; see \"seen\" below)\n");
    print_details(&c, py, npy, res);
    for (int m = 0; m < c.nmodes; m++) {
        summarize_family(&c, py, npy, res, m, true);
        summarize_family(&c, py, npy, res, m, false);
    }
    free(res);
    return 0;
}
