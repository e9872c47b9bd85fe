/* bench_rss: the agent's peak memory over a long recording of a process with many distinct stacks.
 *
 * The target (bench_target.py stacks FUNCS THREADS) generates FUNCS functions in 50-function
 * modules and lets THREADS threads wander through them on pseudo-random call paths 4 to 40 deep,
 * so nearly every sample is a stack the aggregate has not seen: the worst case for its memory.
 * The agent records it (`record --pid PID --rate 100 --duration BENCH_RSS_SECONDS -o FILE`, an
 * SVG unless BENCH_RSS_FORMAT says pb.gz or txt, because the writer's buffers are part of the
 * peak). The peak is the kernel's: ru_maxrss from wait4() of the agent, our child, which also
 * covers the final write; /proc/PID/status VmRSS is polled meanwhile to show how it grows (at a
 * tenth, half and nine tenths of the run).
 */
#include "bench_util.h"

struct growth {
    long rss_kb[3]; /* VmRSS at 10 %, 50 %, 90 % of the duration */
    long last_hwm_kb;
};

/* Polls the agent's VmRSS and VmHWM every 250 ms until it exits. */
static void watch(pid_t agent, double seconds, struct growth *g)
{
    const double marks[3] = {0.1, 0.5, 0.9};
    int64_t start = bench_now_ns();
    memset(g, 0, sizeof *g);
    for (int next = 0;;) {
        double elapsed = (double)(bench_now_ns() - start) / 1e9;
        long hwm = bench_status_kb(agent, "VmHWM");
        if (hwm > 0) g->last_hwm_kb = hwm;
        if (next < 3 && elapsed >= marks[next] * seconds)
            g->rss_kb[next++] = bench_status_kb(agent, "VmRSS");
        siginfo_t info = {0}; /* exited (a zombie still answers kill 0): leave it to wait4 */
        if (waitid(P_PID, (id_t)agent, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid == agent)
            break;
        bench_sleep_ms(250);
    }
}

static double mb(long kb)
{
    return (double)kb * 1024.0 / 1e6;
}

static int record(pid_t target, long rate, double seconds, const char *out, const char *format,
                  struct cp_err *err)
{
    struct bench_child agent;
    if (bench_start_record(target, rate, seconds, out, &agent, err) < 0) return -1;
    struct growth g;
    watch(agent.pid, seconds, &g);
    char text[BENCH_LINE_MAX * 4];
    bench_read_all(agent.err, text, sizeof text);
    int status;
    struct rusage ru;
    if (!bench_wait_child(agent.pid, 60.0, &status, &ru)) {
        bench_stop(&agent);
        cp_err_set(err, CP_ERR_IO, "the agent did not exit");
        return -1;
    }
    agent.pid = 0;
    bench_stop(&agent);
    struct bench_record_result rec;
    bench_parse_record(text, &rec);
    struct stat st;
    long long out_bytes = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    printf("agent: %llu thread-samples, %u distinct stacks, %llu errors; output %lld bytes\n",
           rec.samples, rec.stacks, rec.errors, out_bytes);
    printf("agent VmRSS at 10 %% / 50 %% / 90 %% of the run: %.1f / %.1f / %.1f MB\n",
           mb(g.rss_kb[0]), mb(g.rss_kb[1]), mb(g.rss_kb[2]));
    printf("agent peak RSS: %.1f MB (ru_maxrss, whole run including the write); last VmHWM "
           "polled %.1f MB\n",
           mb(ru.ru_maxrss), mb(g.last_hwm_kb));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "bench_rss: the agent exited with status %d:\n%s", status, text);
    char figure[96], value[64], note[128];
    snprintf(figure, sizeof figure, "agent peak RSS, record %.0f s at %ld Hz", seconds, rate);
    snprintf(value, sizeof value, "%.1f MB", mb(ru.ru_maxrss));
    snprintf(note, sizeof note, "%u distinct stacks, %llu samples; RSS at 10/90 %%: %.1f/%.1f MB",
             rec.stacks, rec.samples, mb(g.rss_kb[0]), mb(g.rss_kb[2]));
    bench_summary(figure, value, "<= 15 MB", mb(ru.ru_maxrss) / 15.0, note);
    snprintf(figure, sizeof figure, "agent RSS while sampling (90 %% of the %.0f s run)", seconds);
    snprintf(value, sizeof value, "%.1f MB", mb(g.rss_kb[2]));
    snprintf(note, sizeof note, "VmRSS before the .%s is written", format);
    bench_summary(figure, value, "<= 15 MB", mb(g.rss_kb[2]) / 15.0, note);
    return 0;
}

int main(void)
{
    double seconds = bench_env_double("BENCH_RSS_SECONDS", 60, 1, 86400);
    long funcs = bench_env_long("BENCH_RSS_FUNCS", 2000, 10, 1000000);
    long threads = bench_env_long("BENCH_RSS_THREADS", 4, 1, 256);
    long rate = bench_env_long("BENCH_RATE", 100, 1, 1000);
    const char *format = bench_env_str("BENCH_RSS_FORMAT", "svg");
    const char *python = bench_default_python();
    printf("bench_rss: record %.0f s at %ld Hz of %s wandering through %ld functions in %ld "
           "threads, writing .%s\n",
           seconds, rate, python, funcs, threads, format);
    bench_print_load();
    char dir[PATH_MAX], out[PATH_MAX + 64], funcs_text[16], threads_text[16];
    snprintf(funcs_text, sizeof funcs_text, "%ld", funcs);
    snprintf(threads_text, sizeof threads_text, "%ld", threads);
    const char *args[] = {"stacks", funcs_text, threads_text, NULL};
    struct bench_child target;
    struct cp_err err;
    if (!bench_tmpdir(dir, sizeof dir)) return 1;
    snprintf(out, sizeof out, "%s/rss.%.8s", dir, format);
    int rc = 1;
    if (bench_start_target(python, args, 0, &target, &err) == 0) {
        rc = record(target.pid, rate, seconds, out, format, &err) == 0 ? 0 : 1;
        bench_stop(&target);
    }
    if (rc) {
        fprintf(stderr, "bench_rss: %s\n", err.msg);
        bench_summary("agent peak RSS", "failed", "<= 15 MB", 0, err.msg);
    }
    unlink(out);
    rmdir(dir);
    return rc;
}
