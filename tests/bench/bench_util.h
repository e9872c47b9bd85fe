/* bench_util: what every benchmark needs around the thing it measures.
 *
 * Header-only (static inline) because the Makefile builds each tests/bench/bench_*.c as one
 * translation unit. Child processes are started with pipes on the ends a benchmark reads or
 * writes, and their lines are read with a deadline (poll), so a target that never becomes ready
 * costs a timeout, not a hang. Paths default to the layout `make` produces (binaries in
 * build/bench/, the agent in build/, targets in tests/bench/), found from /proc/self/exe so a
 * benchmark runs from any directory; environment variables override them. Every benchmark prints
 * its headline figures as lines "SUMMARY<TAB>figure<TAB>value<TAB>target<TAB>ratio<TAB>note" that
 * run.sh gathers into the closing table. Nothing here asserts a timing.
 */
#ifndef CONPROF_BENCH_UTIL_H
#define CONPROF_BENCH_UTIL_H

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_PYTHONS 16
#define BENCH_LINE_MAX 4096

/* ---- time and numbers ------------------------------------------------------------------- */

static inline int64_t bench_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* CPU time of the calling thread (user + kernel): not the time another process held our core. */
static inline int64_t bench_thread_cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void bench_sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) < 0 && errno == EINTR)
        ;
}

static inline long bench_env_long(const char *name, long fallback, long min, long max)
{
    const char *text = getenv(name);
    if (!text || !*text) return fallback;
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < min || v > max) {
        fprintf(stderr, "bench: ignoring %s=%s (expected %ld..%ld)\n", name, text, min, max);
        return fallback;
    }
    return v;
}

static inline double bench_env_double(const char *name, double fallback, double min, double max)
{
    const char *text = getenv(name);
    if (!text || !*text) return fallback;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "bench: ignoring %s=%s (expected %g..%g)\n", name, text, min, max);
        return fallback;
    }
    return v;
}

static inline const char *bench_env_str(const char *name, const char *fallback)
{
    const char *text = getenv(name);
    return text && *text ? text : fallback;
}

/* Parses "10,50,200" into out (at most max values, each 1..limit). Returns the count. */
static inline int bench_parse_list(const char *text, long *out, int max, long limit)
{
    int n = 0;
    while (*text && n < max) {
        char *end;
        long v = strtol(text, &end, 10);
        if (end == text || v < 1 || v > limit) return n;
        out[n++] = v;
        text = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end) return n;
    }
    return n;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of n values, interpolated between neighbours (q = 0.5 of an even count is
 * the mean of the middle two); sorts them in place. */
static inline double bench_quantile(double *v, size_t n, double q)
{
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, bench_cmp_double);
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n) return v[n - 1];
    return v[i] + (pos - (double)i) * (v[i + 1] - v[i]);
}

/* ---- paths -------------------------------------------------------------------------------- */

/* The directory `up` levels above our executable (build/bench/x: 1 = build/bench's parent). */
static inline bool bench_exe_ancestor(int up, char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0) return false;
    out[n] = '\0';
    for (int i = 0; i <= up; i++) {
        char *slash = strrchr(out, '/');
        if (!slash || slash == out) return false;
        *slash = '\0';
    }
    return true;
}

/* An environment override, else `rel` below the ancestor directory, else rel as given. */
static inline void bench_locate(const char *env, int up, const char *rel, char *out, size_t size)
{
    const char *given = getenv(env);
    char base[PATH_MAX];
    if (given && *given)
        snprintf(out, size, "%s", given);
    else if (bench_exe_ancestor(up, base, sizeof base) &&
             (size_t)snprintf(out, size, "%s/%s", base, rel) < size && access(out, R_OK) == 0)
        return;
    else
        snprintf(out, size, "%s", rel);
}

/* tests/bench/bench_target.py (BENCH_TARGET overrides). */
static inline void bench_target_script(char *out, size_t size)
{
    bench_locate("BENCH_TARGET", 2, "tests/bench/bench_target.py", out, size);
}

/* build/conprof-agent (CONPROF_AGENT overrides, as in the end-to-end tests). */
static inline void bench_agent_path(char *out, size_t size)
{
    bench_locate("CONPROF_AGENT", 1, "conprof-agent", out, size);
}

/* The interpreter the single-interpreter benchmarks use (BENCH_PYTHON). */
static inline const char *bench_default_python(void)
{
    return bench_env_str("BENCH_PYTHON", "/usr/bin/python3.11");
}

/* ---- interpreters ------------------------------------------------------------------------- */

struct bench_python {
    char path[PATH_MAX];
    char label[40]; /* "3.12.1", "3.11 debian" */
};

static inline int bench_minor_of(const char *path)
{
    const char *base = strrchr(path, '/');
    int major, minor;
    char rest;
    if (sscanf(base ? base + 1 : path, "python%d.%d%c", &major, &minor, &rest) != 2) return -1;
    return major == 3 ? minor : -1;
}

static inline void bench_add_python(struct bench_python *out, int *n, const char *path)
{
    int minor = bench_minor_of(path);
    if (*n >= BENCH_MAX_PYTHONS || minor < 7 || minor > 13 || access(path, X_OK) != 0) return;
    struct bench_python *p = &out[(*n)++];
    snprintf(p->path, sizeof p->path, "%s", path);
    /* pyenv: <root>/versions/<version>/bin/pythonX.Y */
    const char *v = strstr(path, "/versions/");
    if (v) {
        v += strlen("/versions/");
        size_t len = strcspn(v, "/");
        snprintf(p->label, sizeof p->label, "%.*s", (int)(len < 30 ? len : 30), v);
    } else {
        snprintf(p->label, sizeof p->label, "3.%d %s", minor,
                 strncmp(path, "/usr/bin/", 9) == 0 ? "debian" : "other");
    }
}

static inline int bench_cmp_python(const void *a, const void *b)
{
    const struct bench_python *x = a, *y = b;
    int mx = bench_minor_of(x->path), my = bench_minor_of(y->path);
    if (mx != my) return mx - my;
    return strcmp(x->label, y->label);
}

/* BENCH_PYTHONS (paths separated by spaces), else every pyenv CPython 3.7-3.13 plus Debian's
 * /usr/bin/python3.11, ordered by version. */
static inline int bench_find_pythons(struct bench_python *out)
{
    int n = 0;
    const char *list = getenv("BENCH_PYTHONS");
    if (list && *list) {
        char copy[4096], *save = NULL;
        snprintf(copy, sizeof copy, "%s", list);
        for (char *tok = strtok_r(copy, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save))
            bench_add_python(out, &n, tok);
        return n;
    }
    char pattern[PATH_MAX];
    snprintf(pattern, sizeof pattern, "%s/versions/3.*/bin/python3.*",
             bench_env_str("PYENV_ROOT", "/root/.pyenv"));
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++)
            bench_add_python(out, &n, g.gl_pathv[i]);
        globfree(&g);
    }
    bench_add_python(out, &n, "/usr/bin/python3.11");
    qsort(out, (size_t)n, sizeof *out, bench_cmp_python);
    return n;
}

/* ---- child processes ---------------------------------------------------------------------- */

enum { BENCH_PIPE_IN = 1, BENCH_PIPE_OUT = 2, BENCH_PIPE_ERR = 4 };

struct bench_child {
    pid_t pid;
    int in;  /* our end of its stdin, -1 if none */
    int out; /* our end of its stdout, -1 if none */
    int err; /* our end of its stderr, -1 if none */
};

static inline void bench_close(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* In a child: die with the benchmark (a killed benchmark must not leave busy targets behind on a
 * shared machine). */
static inline void bench_die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* it died before the prctl */
}

/* In the child: stdio from the pipes asked for; stdin and stdout from /dev/null otherwise, and
 * our own stderr, so a target's traceback is seen. */
static inline void bench_child_stdio(int pipes, int fds[3][2])
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    dup2(pipes & BENCH_PIPE_IN ? fds[0][0] : null, 0);
    dup2(pipes & BENCH_PIPE_OUT ? fds[1][1] : null, 1);
    if (pipes & BENCH_PIPE_ERR) dup2(fds[2][1], 2);
}

static inline int bench_spawn(char *const argv[], int pipes, struct bench_child *c,
                              struct cp_err *err)
{
    int fds[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    const char *what = "pipe";
    for (int i = 0; i < 3; i++)
        if ((pipes & (1 << i)) && pipe2(fds[i], O_CLOEXEC) < 0) goto fail;
    fflush(NULL);
    what = "fork";
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) goto fail;
    if (pid == 0) {
        bench_die_with_parent(parent);
        bench_child_stdio(pipes, fds);
        execv(argv[0], argv);
        _exit(127);
    }
    c->pid = pid;
    c->in = fds[0][1];
    c->out = fds[1][0];
    c->err = fds[2][0];
    for (int i = 0; i < 3; i++)
        bench_close(&fds[i][i == 0 ? 0 : 1]); /* the child's ends */
    return 0;
fail:
    cp_err_set(err, CP_ERR_IO, "%s: %s", what, strerror(errno));
    for (int i = 0; i < 3; i++) {
        bench_close(&fds[i][0]);
        bench_close(&fds[i][1]);
    }
    return -1;
}

/* Reads one line (without the newline) before deadline_ns. Returns its length, or -1 on end of
 * file, error or timeout. Reads a byte at a time: the lines we wait for are few and short. */
static inline int bench_read_line(int fd, char *buf, size_t size, int64_t deadline_ns)
{
    size_t len = 0;
    while (len + 1 < size) {
        int64_t left_ms = (deadline_ns - bench_now_ns()) / 1000000;
        if (left_ms < 0) return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left_ms > 60000 ? 60000 : left_ms));
        if (r == 0 || (r < 0 && errno == EINTR)) continue; /* the deadline decides */
        if (r < 0) return -1;
        char ch;
        ssize_t n = read(fd, &ch, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        if (ch == '\n') break;
        buf[len++] = ch;
    }
    buf[len] = '\0';
    return (int)len;
}

/* Skips lines until one starts with prefix. Returns 0, or -1 on timeout or end of file; buf holds
 * the last whole line read either way ("" if none), which tells why a child did not start. */
static inline int bench_wait_line(int fd, const char *prefix, char *buf, size_t size,
                                  double timeout_s)
{
    char line[BENCH_LINE_MAX];
    int64_t deadline = bench_now_ns() + (int64_t)(timeout_s * 1e9);
    buf[0] = '\0';
    while (bench_read_line(fd, line, sizeof line, deadline) >= 0) {
        size_t len = strlen(line) < size ? strlen(line) : size - 1;
        memcpy(buf, line, len);
        buf[len] = '\0';
        if (strncmp(line, prefix, strlen(prefix)) == 0) return 0;
    }
    return -1;
}

/* Reads whatever the child writes until it closes the pipe (bounded by size). */
static inline size_t bench_read_all(int fd, char *buf, size_t size)
{
    size_t len = 0;
    while (len + 1 < size) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

/* Waits up to timeout_s for the child; fills its status and resource usage. */
static inline bool bench_wait_child(pid_t pid, double timeout_s, int *status, struct rusage *ru)
{
    int64_t deadline = bench_now_ns() + (int64_t)(timeout_s * 1e9);
    for (;;) {
        pid_t r = wait4(pid, status, WNOHANG, ru);
        if (r == pid) return true;
        if (r < 0 && errno != EINTR) return false;
        if (bench_now_ns() > deadline) return false;
        bench_sleep_ms(5);
    }
}

/* Ends a child we started: SIGTERM, then SIGKILL after a second; reaps it. */
static inline void bench_stop(struct bench_child *c)
{
    if (c->pid > 0) {
        int status;
        struct rusage ru;
        kill(c->pid, SIGTERM);
        if (!bench_wait_child(c->pid, 1.0, &status, &ru)) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
        }
        c->pid = 0;
    }
    bench_close(&c->in);
    bench_close(&c->out);
    bench_close(&c->err);
}

/* Starts `python bench_target.py args...` and waits for its READY line. */
static inline int bench_start_target(const char *python, const char *const *args, int pipes,
                                     struct bench_child *c, struct cp_err *err)
{
    char script[PATH_MAX];
    bench_target_script(script, sizeof script);
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)python;
    argv[n++] = script;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    if (bench_spawn(argv, pipes | BENCH_PIPE_OUT, c, err) < 0) return -1;
    char line[256];
    if (bench_wait_line(c->out, "READY", line, sizeof line, 30.0) < 0) {
        bench_stop(c);
        cp_err_set(err, CP_ERR_IO, "%s %s %s did not print READY", python, script, args[0]);
        return -1;
    }
    bench_sleep_ms(50); /* READY is printed just before the target enters its steady state */
    return 0;
}

/* ---- /proc readings of a child ------------------------------------------------------------ */

/* A "Key:   123 kB" field of /proc/PID/status in kB, -1 if absent. */
static inline long bench_status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    long kb = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            kb = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* The run time in ns of a process's threads so far (/proc/PID/schedstat is the main thread's,
 * the agent's `record` has one thread), -1 if gone. */
static inline int64_t bench_schedstat_ns(pid_t pid)
{
    char path[64], text[128];
    snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = '\0';
    return strtoll(text, NULL, 10);
}

static inline double bench_rusage_cpu_s(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}

/* ---- the agent ---------------------------------------------------------------------------- */

/* Figures the agent's `record` prints when it writes its profile. */
struct bench_record_result {
    unsigned long long samples, errors, late_ticks;
    unsigned stacks;
    bool wrote;
};

/* Parses "conprof: wrote PATH: N samples, M stacks, ... E errors, L late ticks". */
static inline void bench_parse_record(const char *text, struct bench_record_result *r)
{
    memset(r, 0, sizeof *r);
    const char *p = strstr(text, "conprof: wrote ");
    if (!p || !(p = strstr(p, ": ")) || !(p = strstr(p + 1, ": "))) return;
    r->wrote = sscanf(p + 2, "%llu samples, %u stacks", &r->samples, &r->stacks) == 2;
    const char *e = strstr(p, " errors");
    const char *l = strstr(p, " late ticks");
    while (e && e > p && e[-1] >= '0' && e[-1] <= '9')
        e--;
    while (l && l > p && l[-1] >= '0' && l[-1] <= '9')
        l--;
    if (e) r->errors = strtoull(e, NULL, 10);
    if (l) r->late_ticks = strtoull(l, NULL, 10);
}

/* Starts `conprof-agent record --pid PID --rate HZ [--duration S] -o OUT` with its stderr on a
 * pipe and waits for the line saying it attached. duration_s <= 0 records until the target exits.
 * The caller reads the rest of stderr (bench_read_all) and reaps it. */
static inline int bench_start_record(pid_t target, long rate, double duration_s, const char *out,
                                     struct bench_child *c, struct cp_err *err)
{
    char agent[PATH_MAX], pid_text[16], rate_text[16], duration_text[32];
    bench_agent_path(agent, sizeof agent);
    snprintf(pid_text, sizeof pid_text, "%d", (int)target);
    snprintf(rate_text, sizeof rate_text, "%ld", rate);
    snprintf(duration_text, sizeof duration_text, "%.3f", duration_s);
    char *argv[] = {agent, "record",    "--pid", pid_text, "--rate", rate_text,
                    "-o",  (char *)out, NULL,    NULL,     NULL};
    if (duration_s > 0) {
        argv[8] = "--duration";
        argv[9] = duration_text;
    }
    if (bench_spawn(argv, BENCH_PIPE_ERR, c, err) < 0) return -1;
    char line[BENCH_LINE_MAX];
    if (bench_wait_line(c->err, "conprof: recording", line, sizeof line, 15.0) < 0) {
        bench_stop(c);
        cp_err_set(err, CP_ERR_IO, "%s did not start recording: %.300s", agent,
                   line[0] ? line : "(no message)");
        return -1;
    }
    return 0;
}

/* ---- the summary -------------------------------------------------------------------------- */

/* One row of run.sh's closing table. ratio <= 0 prints "-". */
static inline void bench_summary(const char *figure, const char *value, const char *target,
                                 double ratio, const char *note)
{
    char r[32] = "-";
    if (ratio > 0) snprintf(r, sizeof r, "%.2f", ratio);
    printf("SUMMARY\t%s\t%s\t%s\t%s\t%s\n", figure, value, target, r, note ? note : "");
    fflush(stdout);
}

/* The machine is shared: say how busy it was when a benchmark started. */
static inline void bench_print_load(void)
{
    char text[128] = "?";
    FILE *f = fopen("/proc/loadavg", "re");
    if (f) {
        if (!fgets(text, sizeof text, f)) text[0] = '\0';
        fclose(f);
    }
    text[strcspn(text, "\n")] = '\0';
    printf("load average: %s, %ld cores online\n", text, sysconf(_SC_NPROCESSORS_ONLN));
}

static inline char *bench_tmpdir(char *out, size_t size)
{
    snprintf(out, size, "%s/conprof-bench.XXXXXX", bench_env_str("TMPDIR", "/tmp"));
    return mkdtemp(out);
}

#endif
