/* bench_overhead: the agent's own CPU while it records a CPU-bound Python process.
 *
 * The target runs BENCH_OVERHEAD_THREADS pure-Python busy loops (bench_target.py threads K); the
 * agent runs as a user would run it, `conprof-agent record --pid PID --rate 100 --duration S -o
 * FILE.svg`, and is our child, so wait4() gives its exact user + system time for the whole run
 * (attach, ELF reading, sampling, writing the flame graph). That divided by the wall time from
 * start to exit is the headline, as a percentage of one core. A second figure leaves start-up and
 * the final write out: the agent's run time from /proc/PID/schedstat (nanoseconds, not clock
 * ticks) over a window that starts one second after it attached and ends one second before its
 * duration is up.
 */
#include "bench_util.h"

struct overhead {
    double wall_s, cpu_s;          /* whole run */
    double window_s, window_cpu_s; /* steady state */
    struct bench_record_result rec;
};

/* Sleeps until `at` (CLOCK_MONOTONIC ns) unless the child exits first. */
static bool sleep_until(pid_t pid, int64_t at)
{
    while (bench_now_ns() < at) {
        if (kill(pid, 0) < 0) return false;
        int64_t left_ms = (at - bench_now_ns()) / 1000000;
        bench_sleep_ms(left_ms > 100 ? 100 : left_ms > 0 ? left_ms : 1);
    }
    return true;
}

static int record(pid_t target, long rate, double seconds, const char *out, struct overhead *o,
                  struct cp_err *err)
{
    struct bench_child agent;
    memset(o, 0, sizeof *o);
    int64_t start = bench_now_ns();
    if (bench_start_record(target, rate, seconds, out, &agent, err) < 0) return -1;
    int64_t attached = bench_now_ns();
    int64_t w0 = attached + 1000000000LL, w1 = start + (int64_t)((seconds - 1.0) * 1e9);
    int64_t s0 = -1, s1 = -1;
    if (w1 > w0 && sleep_until(agent.pid, w0)) {
        s0 = bench_schedstat_ns(agent.pid);
        w0 = bench_now_ns();
        if (sleep_until(agent.pid, w1)) {
            s1 = bench_schedstat_ns(agent.pid);
            w1 = bench_now_ns();
        }
    }
    char text[BENCH_LINE_MAX * 4];
    bench_read_all(agent.err, text, sizeof text); /* until the agent exits and closes it */
    int status;
    struct rusage ru;
    bool done = bench_wait_child(agent.pid, seconds + 30, &status, &ru);
    o->wall_s = (double)(bench_now_ns() - start) / 1e9;
    if (!done) {
        bench_stop(&agent);
        cp_err_set(err, CP_ERR_IO, "the agent did not exit");
        return -1;
    }
    agent.pid = 0;
    bench_stop(&agent);
    o->cpu_s = bench_rusage_cpu_s(&ru);
    if (s0 >= 0 && s1 >= s0) {
        o->window_s = (double)(w1 - w0) / 1e9;
        o->window_cpu_s = (double)(s1 - s0) / 1e9;
    }
    bench_parse_record(text, &o->rec);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "bench_overhead: the agent exited with status %d:\n%s", status, text);
    return 0;
}

static void report(const struct overhead *o, long threads, long rate, double seconds)
{
    double whole = 100.0 * o->cpu_s / o->wall_s;
    double expected = (double)threads * (double)rate * seconds;
    printf("agent: %.3f s CPU in %.2f s wall = %.3f %% of one core (whole run)\n", o->cpu_s,
           o->wall_s, whole);
    if (o->window_s > 0)
        printf("agent: %.3f s CPU in a %.2f s steady window = %.3f %% of one core\n",
               o->window_cpu_s, o->window_s, 100.0 * o->window_cpu_s / o->window_s);
    printf("agent: %llu thread-samples (%.0f expected), %u stacks, %llu errors, %llu late ticks",
           o->rec.samples, expected, o->rec.stacks, o->rec.errors, o->rec.late_ticks);
    if (o->rec.samples)
        printf(", %.1f µs CPU per thread-sample", o->cpu_s * 1e6 / (double)o->rec.samples);
    printf("\n");
    char figure[128], value[64], note[96];
    snprintf(figure, sizeof figure, "agent CPU, record %ld Hz, %ld busy threads, whole run", rate,
             threads);
    snprintf(value, sizeof value, "%.3f %% of a core", whole);
    snprintf(note, sizeof note, "%.0f s, %llu samples, %llu errors", seconds, o->rec.samples,
             o->rec.errors);
    bench_summary(figure, value, "<= 0.5 %", whole / 0.5, note);
    if (o->window_s > 0) {
        double steady = 100.0 * o->window_cpu_s / o->window_s;
        snprintf(figure, sizeof figure, "agent CPU, record %ld Hz, %ld busy threads, steady state",
                 rate, threads);
        snprintf(value, sizeof value, "%.3f %% of a core", steady);
        snprintf(note, sizeof note, "schedstat over %.1f s, no start-up or final write",
                 o->window_s);
        bench_summary(figure, value, "<= 0.5 %", steady / 0.5, note);
    }
}

int main(void)
{
    double seconds = bench_env_double("BENCH_OVERHEAD_SECONDS", 20, 1, 3600);
    long threads = bench_env_long("BENCH_OVERHEAD_THREADS", 4, 1, 256);
    long rate = bench_env_long("BENCH_RATE", 100, 1, 1000);
    const char *python = bench_default_python();
    printf("bench_overhead: conprof-agent record at %ld Hz for %.0f s, %s with %ld busy threads\n",
           rate, seconds, python, threads);
    bench_print_load();
    char dir[PATH_MAX], out[PATH_MAX + 32], threads_text[16];
    snprintf(threads_text, sizeof threads_text, "%ld", threads);
    const char *args[] = {"threads", threads_text, NULL};
    struct bench_child target;
    struct cp_err err;
    struct overhead o;
    if (!bench_tmpdir(dir, sizeof dir)) return 1;
    snprintf(out, sizeof out, "%s/overhead.svg", dir);
    int rc = 1;
    if (bench_start_target(python, args, 0, &target, &err) == 0) {
        if (record(target.pid, rate, seconds, out, &o, &err) == 0) {
            report(&o, threads, rate, seconds);
            rc = 0;
        }
        bench_stop(&target);
    }
    if (rc) {
        fprintf(stderr, "bench_overhead: %s\n", err.msg);
        bench_summary("agent CPU, record 100 Hz", "failed", "<= 0.5 %", 0, err.msg);
    }
    unlink(out);
    rmdir(dir);
    return rc;
}
