/* bench_slowdown: how much longer a fixed amount of Python work takes while the agent records it.
 *
 * The work is bench_target.py's `work` loop (a pure-Python loop calling a small function), sized
 * once by a calibration run to take about BENCH_WORK_SECONDS, and timed by the target itself
 * around the loop only, on its wall clock (perf_counter) and its CPU time (process_time): the
 * target prints READY, we attach the agent (`record --pid PID --rate BENCH_RATE`, until the target
 * exits) or not, wait SETTLE_MS either way (the agent is then a few ticks in), then tell the
 * target to go. Runs with and without the agent alternate in ABBA order (round r runs
 * without-with when r is even, with-without when odd) so drift in the machine's load falls on
 * both sides. The figure is the median with the agent over the median without, minus one, on
 * either clock, printed with the spread of the runs without the agent: on a shared 2-core machine
 * that noise is usually larger than the effect. For the same reason the default is many short
 * runs (8 rounds of 2 s each way) rather than a few long ones, whose medians one slow spell can
 * move. The CPU-time figure leaves out the time other processes held the target's core, most of
 * the wall-clock noise, and keeps what the agent costs the target itself (cache and memory
 * traffic; the kernel's work for each process_vm_readv is charged to the agent).
 */
#include "bench_util.h"

#define MAX_ROUNDS 50
#define SETTLE_MS 300

struct run {
    double seconds, cpu_seconds; /* the target's own wall and CPU time of the work */
    struct bench_record_result rec;
};

static long calibrate(const char *python, double work_seconds, struct cp_err *err)
{
    char script[PATH_MAX], line[256];
    bench_target_script(script, sizeof script);
    char *argv[] = {(char *)python, script, "calibrate", "0.5", NULL};
    struct bench_child c;
    if (bench_spawn(argv, BENCH_PIPE_OUT, &c, err) < 0) return -1;
    long rate = -1;
    if (bench_wait_line(c.out, "RATE ", line, sizeof line, 120.0) == 0) rate = atol(line + 5);
    bench_stop(&c);
    if (rate <= 0) cp_err_set(err, CP_ERR_IO, "the calibration run printed no rate");
    return rate <= 0 ? -1 : (long)((double)rate * work_seconds);
}

/* Ends the agent after the target exited (it notices within a tick) and reads its report. */
static void finish_agent(struct bench_child *agent, struct bench_record_result *rec)
{
    char text[BENCH_LINE_MAX * 4];
    int status;
    struct rusage ru;
    bench_read_all(agent->err, text, sizeof text);
    if (bench_wait_child(agent->pid, 30.0, &status, &ru)) agent->pid = 0;
    bench_stop(agent);
    bench_parse_record(text, rec);
}

static int run_once(const char *python, long iterations, bool with_agent, long rate,
                    const char *out, struct run *r, struct cp_err *err)
{
    char iter_text[32], line[256];
    snprintf(iter_text, sizeof iter_text, "%ld", iterations);
    const char *args[] = {"work", iter_text, NULL};
    struct bench_child target, agent = {0, -1, -1, -1};
    memset(r, 0, sizeof *r);
    if (bench_start_target(python, args, BENCH_PIPE_IN, &target, err) < 0) return -1;
    if (with_agent && bench_start_record(target.pid, rate, 0, out, &agent, err) < 0) {
        bench_stop(&target);
        return -1;
    }
    bench_sleep_ms(SETTLE_MS); /* both ways: the agent a few ticks in, the machine settled */
    int rc = -1;
    if (write(target.in, "go\n", 3) == 3 &&
        bench_wait_line(target.out, "ELAPSED ", line, sizeof line, 600.0) == 0) {
        rc = sscanf(line + 8, "%lf %lf", &r->seconds, &r->cpu_seconds) == 2 ? 0 : -1;
    }
    if (rc) cp_err_set(err, CP_ERR_IO, "the work target did not report its time");
    int status;
    struct rusage ru;
    if (bench_wait_child(target.pid, 10.0, &status, &ru)) target.pid = 0;
    bench_stop(&target);
    if (with_agent) finish_agent(&agent, &r->rec);
    return rc;
}

static void print_spread(const char *what, double *v, int n)
{
    double med = bench_quantile(v, (size_t)n, 0.5);
    printf("  %-14s median %.3f s, min %.3f s, max %.3f s, spread (max-min)/median %.2f %%\n", what,
           med, v[0], v[n - 1], 100.0 * (v[n - 1] - v[0]) / med);
}

struct slowdown {
    double median; /* %: median with / median without - 1 */
    double lo, hi; /* %: the smallest and largest per-round slowdown */
    double noise;  /* %: spread of the runs without the agent */
};

/* One clock's figures; cpu picks the target's CPU time instead of its wall time. */
static struct slowdown compare(const struct run *without, const struct run *with, int rounds,
                               bool cpu)
{
    double a[MAX_ROUNDS], b[MAX_ROUNDS], paired[MAX_ROUNDS];
    for (int i = 0; i < rounds; i++) {
        a[i] = cpu ? without[i].cpu_seconds : without[i].seconds;
        b[i] = cpu ? with[i].cpu_seconds : with[i].seconds;
        paired[i] = 100.0 * (b[i] / a[i] - 1.0);
    }
    printf("%s time of the work, as the target measured it:\n", cpu ? "CPU" : "wall");
    print_spread("without agent:", a, rounds);
    print_spread("with agent:", b, rounds);
    struct slowdown d;
    double med_a = bench_quantile(a, (size_t)rounds, 0.5);
    d.median = 100.0 * (bench_quantile(b, (size_t)rounds, 0.5) / med_a - 1.0);
    d.noise = 100.0 * (a[rounds - 1] - a[0]) / med_a;
    d.lo = bench_quantile(paired, (size_t)rounds, 0.0);
    d.hi = paired[rounds - 1];
    printf("  slowdown: %+.2f %% (median with / median without); per round %+.2f .. %+.2f %%\n",
           d.median, d.lo, d.hi);
    return d;
}

static void report(const struct run *without, const struct run *with, int rounds, long rate)
{
    char figure[96], value[64], note[160];
    for (int cpu = 0; cpu < 2; cpu++) {
        struct slowdown d = compare(without, with, rounds, cpu);
        snprintf(value, sizeof value, "%+.2f %%", d.median);
        snprintf(note, sizeof note,
                 "%d+%d runs; per round %+.2f..%+.2f %%; spread without agent %.2f %%", rounds,
                 rounds, d.lo, d.hi, d.noise);
        snprintf(figure, sizeof figure, "target slowdown, record at %ld Hz (%s)", rate,
                 cpu ? "target's CPU time" : "wall time");
        bench_summary(figure, value, "< 1 %", d.median / 1.0, note);
    }
}

int main(void)
{
    int rounds = (int)bench_env_long("BENCH_SLOWDOWN_ROUNDS", 8, 1, MAX_ROUNDS);
    double work_seconds = bench_env_double("BENCH_WORK_SECONDS", 2, 0.1, 600);
    long rate = bench_env_long("BENCH_RATE", 100, 1, 1000);
    const char *python = bench_default_python();
    struct cp_err err;
    char dir[PATH_MAX], out[PATH_MAX + 32];
    if (!bench_tmpdir(dir, sizeof dir)) return 1;
    snprintf(out, sizeof out, "%s/slowdown.svg", dir);
    printf("bench_slowdown: %s, ~%.1f s of work per run, %d rounds (ABBA), record at %ld Hz\n",
           python, work_seconds, rounds, rate);
    bench_print_load();
    long iterations = calibrate(python, work_seconds, &err);
    struct run without[MAX_ROUNDS], with[MAX_ROUNDS];
    int rc = iterations > 0 ? 0 : 1;
    if (!rc) printf("work: %ld iterations\n", iterations);
    for (int r = 0; r < rounds && !rc; r++)
        for (int k = 0; k < 2 && !rc; k++) {
            bool agent = (r % 2 == 0) == (k == 1);
            struct run *run = agent ? &with[r] : &without[r];
            rc = run_once(python, iterations, agent, rate, out, run, &err);
            if (!rc)
                printf("round %d %-13s %.3f s wall, %.3f s CPU%s", r + 1,
                       agent ? "with agent" : "without agent", run->seconds, run->cpu_seconds,
                       agent ? "" : "\n");
            if (!rc && agent)
                printf(" (agent: %llu samples, %llu errors)\n", run->rec.samples, run->rec.errors);
            fflush(stdout);
        }
    if (!rc) report(without, with, rounds, rate);
    if (rc) {
        fprintf(stderr, "bench_slowdown: %s\n", err.msg);
        bench_summary("target slowdown", "failed", "< 1 %", 0, err.msg);
    }
    unlink(out);
    rmdir(dir);
    return rc;
}
