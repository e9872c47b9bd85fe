/* bench_discovery: the cost of one discovery_scan() pass over a busy node.
 *
 * Starts N (default 2000) children that only pause(), so /proc holds N more processes than the
 * machine already has, then times discovery_scan(): the cold pass (first sight of every process:
 * stat, exe link, maps for non-Python names, details for Python ones), the "young" passes while
 * the children are younger than the settle time (their maps are read again each pass, the price
 * of finding embedders that load libpython late), and the warm passes of a steady system (one
 * stat read per process). Figures are wall-clock milliseconds on CLOCK_MONOTONIC (median of the
 * passes, with min and max) and the CPU time of the pass (CLOCK_PROCESS_CPUTIME_ID), since the
 * machine is shared. Children die with us: PR_SET_PDEATHSIG, checked against the parent's pid
 * after the prctl, plus SIGKILL and waitpid for each at the end, on every exit path.
 * Usage: bench_discovery [N [PASSES]]
 */
#include "discovery.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TARGET_MS 50.0
#define MAX_CHILDREN 20000
#define MAX_PASSES 200

struct children {
    pid_t *pids;
    int count;
};

static int start_children(struct children *c, int n)
{
    pid_t parent = getpid();
    c->pids = calloc((size_t)n, sizeof *c->pids);
    if (!c->pids) return -1;
    for (c->count = 0; c->count < n; c->count++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("bench_discovery: fork");
            return -1;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(0);
            for (;;)
                pause();
        }
        c->pids[c->count] = pid;
    }
    return 0;
}

static void stop_children(struct children *c)
{
    for (int i = 0; i < c->count; i++)
        kill(c->pids[i], SIGKILL);
    for (int i = 0; i < c->count; i++)
        waitpid(c->pids[i], NULL, 0);
    free(c->pids);
    c->pids = NULL;
    c->count = 0;
}

static double now_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

struct timing {
    double wall_ms, cpu_ms;
};

static int timed_scan(struct discovery *d, struct timing *t)
{
    struct cp_err err;
    double wall = now_ms(CLOCK_MONOTONIC), cpu = now_ms(CLOCK_PROCESS_CPUTIME_ID);
    int r = discovery_scan(d, &err);
    t->wall_ms = now_ms(CLOCK_MONOTONIC) - wall;
    t->cpu_ms = now_ms(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    if (r < 0) fprintf(stderr, "bench_discovery: scan: %s\n", err.msg);
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct series {
    double wall_median, wall_min, wall_max, cpu_median;
};

static int run_passes(struct discovery *d, int passes, struct series *s)
{
    double wall[MAX_PASSES], cpu[MAX_PASSES];
    for (int i = 0; i < passes; i++) {
        struct timing t;
        if (timed_scan(d, &t) < 0) return -1;
        wall[i] = t.wall_ms;
        cpu[i] = t.cpu_ms;
    }
    qsort(wall, (size_t)passes, sizeof *wall, cmp_double);
    qsort(cpu, (size_t)passes, sizeof *cpu, cmp_double);
    *s = (struct series){wall[passes / 2], wall[0], wall[passes - 1], cpu[passes / 2]};
    return 0;
}

static void print_reads(const char *what, const struct discovery *d)
{
    const struct discovery_stats *s = discovery_stats(d);
    printf("  %-6s reads: stat %zu, exe %zu, maps %zu, details %zu (python %zu, kernel threads "
           "%zu, unreadable %zu)\n",
           what, s->stat_reads, s->exe_reads, s->maps_reads, s->detail_reads, s->python,
           s->kernel_threads, s->unreadable);
}

static int measure(int passes, unsigned settle)
{
    struct discovery_options opt = discovery_default_options();
    struct cp_err err;
    struct discovery *d = discovery_new(&opt, &err);
    if (!d) {
        fprintf(stderr, "bench_discovery: %s\n", err.msg);
        return -1;
    }
    struct timing cold;
    struct series young, warm;
    int r = timed_scan(d, &cold);
    if (r == 0) print_reads("cold", d);
    if (r == 0) r = run_passes(d, passes, &young);
    if (r == 0) print_reads("young", d);
    if (r == 0) sleep(settle + 1); /* the children are past the settle time now */
    if (r == 0) r = run_passes(d, passes, &warm);
    if (r == 0) print_reads("warm", d);
    size_t n = discovery_stats(d)->processes;
    discovery_free(d);
    if (r < 0) return -1;
    printf("  young passes (children < %u s old): median %.2f ms (min %.2f, max %.2f), cpu %.2f "
           "ms\n",
           settle, young.wall_median, young.wall_min, young.wall_max, young.cpu_median);
    printf("  warm passes: median %.2f ms (min %.2f, max %.2f), cpu %.2f ms; cold cpu %.2f ms\n",
           warm.wall_median, warm.wall_min, warm.wall_max, warm.cpu_median, cold.cpu_ms);
    printf("discovery pass over %zu processes: cold %.1f ms, warm %.1f ms (target <= %.0f ms)\n", n,
           cold.wall_ms, warm.wall_median, TARGET_MS);
    printf(
        "SUMMARY\tdiscovery pass (%zu processes, warm)\t%.1f ms\t<= %.0f ms\t%.2f\tcold %.1f ms\n",
        n, warm.wall_median, TARGET_MS, warm.wall_median / TARGET_MS, cold.wall_ms);
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    int passes = argc > 2 ? atoi(argv[2]) : 20;
    if (n < 0 || n > MAX_CHILDREN || passes < 1 || passes > MAX_PASSES) {
        fprintf(stderr, "usage: bench_discovery [N (0..%d) [PASSES (1..%d)]]\n", MAX_CHILDREN,
                MAX_PASSES);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct children c = {0};
    double t0 = now_ms(CLOCK_MONOTONIC);
    int r = start_children(&c, n);
    if (r == 0) {
        printf("bench_discovery: %d paused children started in %.0f ms\n", c.count,
               now_ms(CLOCK_MONOTONIC) - t0);
        r = measure(passes, discovery_default_options().settle_seconds);
    }
    stop_children(&c);
    return r == 0 ? 0 : 1;
}
