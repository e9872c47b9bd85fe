/* bench_austin: our time per sample next to austin's, on the same targets at the same rate.
 *
 * Austin times each of its samples (read + unwind + write the collapsed line) with a wall clock
 * and prints min/avg/max when it stops; it cannot be linked, so we run it as it is meant to be
 * run: attached with -p to a depth-N target (bench_target.py), an interval of 10 ms (100 Hz),
 * BENCH_AUSTIN_SECONDS long, stopped with SIGINT. On the same target we then tick our sampler at
 * 100 Hz for as long and time each tick on the same kind of clock (wall, CLOCK_MONOTONIC), so both
 * figures include the cold caches of a 10 ms period. The austins are Debian's /usr/bin/austin
 * (BENCH_AUSTIN_DEBIAN overrides, empty skips it) and $AUSTIN when set (a build kept outside the
 * repository). An austin that cannot attach to a version, or whose samples are all invalid, is
 * "n/a" there and is not tried again at other depths. Each austin stack is checked against ours
 * (function names and line numbers, root to leaf; the leaf's line moves while spinning), because a
 * fast sample of the wrong stack is not a result.
 */
#include "bench_session.h"
#include "bench_util.h"

#include <ctype.h>

#define MAX_DEPTHS 8
#define MAX_AUSTINS 2
#define AUSTIN_INTERVAL_US "10000"
#define TAIL_BYTES (512 * 1024)
#define MAX_AFRAMES 1024

struct austin {
    const char *path;
    char label[64];
    bool unusable[BENCH_MAX_PYTHONS];
    char why[BENCH_MAX_PYTHONS][96];
};

struct austin_run {
    bool ok;
    unsigned long min_us, avg_us, max_us, errors, samples;
    char check[32]; /* its stack against ours */
    char why[96];   /* when not ok */
};

struct ours_run {
    bool ok;
    double min_us, avg_us, max_us;
};

struct cell {
    bool tried;
    struct ours_run ours;
    struct austin_run austin[MAX_AUSTINS];
};

struct aframe {
    char name[128];
    long line;
};

/* ---- austin's side -------------------------------------------------------------------------- */

static void austin_version(struct austin *a)
{
    char *argv[] = {(char *)a->path, "-V", NULL};
    struct bench_child c;
    struct cp_err err;
    snprintf(a->label, sizeof a->label, "%s", a->path);
    if (bench_spawn(argv, BENCH_PIPE_OUT, &c, &err) < 0) return;
    char line[128];
    if (bench_read_line(c.out, line, sizeof line, bench_now_ns() + 3000000000LL) > 0)
        snprintf(a->label, sizeof a->label, "%.60s", line);
    bench_stop(&c);
}

static pid_t spawn_austin(const char *path, pid_t target, const char *out, const char *errfile)
{
    char pid_text[16];
    snprintf(pid_text, sizeof pid_text, "%d", (int)target);
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid != 0) return pid;
    bench_die_with_parent(parent);
    int null = open("/dev/null", O_RDWR);
    int err = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(null, 0); /* austin 1.x says why it cannot attach on stdout, 3.x on stderr */
    dup2(err >= 0 ? err : null, 1);
    dup2(err >= 0 ? err : null, 2);
    execl(path, path, "-i", AUSTIN_INTERVAL_US, "-p", pid_text, "-o", out, (char *)NULL);
    _exit(127);
}

static void strip_ansi(char *s)
{
    char *w = s;
    for (char *r = s; *r;) {
        if (*r == '\033' && r[1] == '[') {
            r += 2;
            while (*r && !isalpha((unsigned char)*r))
                r++;
            if (*r) r++;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* "... (min/avg/max) : 25/49/119 us" and "Error rate : 0/198" in either austin's words. */
static bool parse_stats(char *text, struct austin_run *r)
{
    strip_ansi(text);
    const char *p = strstr(text, "min/avg/max)");
    if (!p || !(p = strchr(p, ':')) ||
        sscanf(p + 1, " %lu/%lu/%lu", &r->min_us, &r->avg_us, &r->max_us) != 3)
        return false;
    const char *e = strstr(text, "Error rate");
    if (e && (e = strchr(e, ':'))) sscanf(e + 1, " %lu/%lu", &r->errors, &r->samples);
    return true;
}

static size_t read_file_text(const char *path, char *buf, size_t size, bool tail)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        buf[0] = '\0';
        return 0;
    }
    struct stat st;
    if (tail && fstat(fd, &st) == 0 && st.st_size > (off_t)(size - 1))
        lseek(fd, st.st_size - (off_t)(size - 1), SEEK_SET);
    size_t len = bench_read_all(fd, buf, size);
    close(fd);
    return len;
}

/* The last sample line of austin's output (not a "# metadata" line). */
static char *last_sample(char *text)
{
    char *last = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (line[0] != '#' && strchr(line, ';')) last = line;
    return last;
}

/* Frames, root first. austin 1.x: "name (file);L12"; austin 3.x: "file:name:12". */
static int parse_frames(char *line, struct aframe *out, int max)
{
    char *space = strrchr(line, ' ');
    if (space) *space = '\0'; /* the metric */
    int n = 0;
    for (char *f = strtok(line, ";"); f && n < max; f = strtok(NULL, ";")) {
        size_t len = strlen(f);
        char *paren = strstr(f, " (");
        char *c2 = strrchr(f, ':');
        if (f[0] == 'L' && isdigit((unsigned char)f[1]) && n > 0) {
            out[n - 1].line = strtol(f + 1, NULL, 10);
        } else if (paren && len > 0 && f[len - 1] == ')') {
            snprintf(out[n].name, sizeof out[n].name, "%.*s", (int)(paren - f), f);
            out[n++].line = -1;
        } else if (c2 && isdigit((unsigned char)c2[1])) {
            *c2 = '\0';
            char *c1 = strrchr(f, ':');
            if (!c1) continue;
            snprintf(out[n].name, sizeof out[n].name, "%s", c1 + 1);
            out[n++].line = strtol(c2 + 1, NULL, 10);
        }
    }
    return n;
}

static void compare_stacks(const struct bench_session *b, const struct aframe *af, int n,
                           char *check, size_t size)
{
    if (n == 0) {
        snprintf(check, size, "invalid");
        return;
    }
    if ((uint32_t)n != b->depth) {
        snprintf(check, size, "depth %d, not %u", n, b->depth);
        return;
    }
    bool names = true, lines = true;
    for (int i = 0; i < n; i++) {
        const char *name;
        int32_t line;
        if (!bench_session_frame(b, (uint32_t)i, &name, &line)) return;
        const struct aframe *a = &af[n - 1 - i];
        names = names && strcmp(name, a->name) == 0;
        lines = lines && (i == 0 || a->line == line);
    }
    snprintf(check, size, "%s", !names ? "other names" : lines ? "same stack" : "wrong lines");
}

static void check_austin_stack(const char *outpath, const struct bench_session *b,
                               struct austin_run *r)
{
    char *text = malloc(TAIL_BYTES);
    struct aframe *frames = malloc(MAX_AFRAMES * sizeof *frames);
    snprintf(r->check, sizeof r->check, "no samples");
    if (text && frames) {
        read_file_text(outpath, text, TAIL_BYTES, true);
        char *line = last_sample(text);
        if (line)
            compare_stacks(b, frames, parse_frames(line, frames, MAX_AFRAMES), r->check,
                           sizeof r->check);
    }
    free(text);
    free(frames);
}

/* Waits while austin samples; true if it was still running when the time was up. */
static bool let_it_sample(pid_t pid, double seconds, int *status)
{
    int64_t end = bench_now_ns() + (int64_t)(seconds * 1e9);
    while (bench_now_ns() < end) {
        if (waitpid(pid, status, WNOHANG) == pid) return false;
        bench_sleep_ms(20);
    }
    return true;
}

static void describe_exit(int status, char *out, size_t size)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)
        snprintf(out, size, "still attaching when stopped with SIGINT, said nothing");
    else if (WIFSIGNALED(status))
        snprintf(out, size, "it was killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, size, "it exited with status %d and said nothing", WEXITSTATUS(status));
}

/* The last non-empty line of text (cut in place). */
static const char *last_line(char *text)
{
    const char *last = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (strspn(line, " \t\r") < strlen(line)) last = line;
    return last;
}

static void run_austin(const struct austin *a, pid_t target, double seconds, const char *dir,
                       const struct bench_session *b, struct austin_run *r)
{
    char out[PATH_MAX + 16], errpath[PATH_MAX + 16], text[16384];
    memset(r, 0, sizeof *r);
    snprintf(out, sizeof out, "%s/austin.out", dir);
    snprintf(errpath, sizeof errpath, "%s/austin.err", dir);
    pid_t pid = spawn_austin(a->path, target, out, errpath);
    if (pid < 0) {
        snprintf(r->why, sizeof r->why, "fork failed");
        return;
    }
    int status = 0;
    bool running = let_it_sample(pid, seconds, &status);
    struct rusage ru;
    if (running) {
        kill(pid, SIGINT);
        if (!bench_wait_child(pid, 5.0, &status, &ru)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
    }
    read_file_text(errpath, text, sizeof text, false);
    r->ok = parse_stats(text, r);
    if (r->ok) check_austin_stack(out, b, r);
    if (r->ok && (!strcmp(r->check, "invalid") || r->errors >= r->samples)) r->ok = false;
    if (!r->ok) {
        const char *last = last_line(text); /* its last words, e.g. "Python binary not found" */
        if (!strcmp(r->check, "invalid"))
            snprintf(r->why, sizeof r->why, "its samples are invalid");
        else if (last)
            snprintf(r->why, sizeof r->why, "%.90s", last);
        else
            describe_exit(status, r->why, sizeof r->why);
    }
}

/* ---- our side ------------------------------------------------------------------------------ */

/* Ticks at 100 Hz on absolute deadlines for `seconds`, timing each tick on the wall clock. */
static void ours_paced(struct bench_session *b, double seconds, struct ours_run *r)
{
    memset(r, 0, sizeof *r);
    struct cp_err err;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    int64_t end = bench_now_ns() + (int64_t)(seconds * 1e9), sum = 0;
    uint64_t samples0 = b->s->stats.thread_samples;
    long ticks = 0;
    r->min_us = 1e12;
    while (bench_now_ns() < end) {
        int64_t t0 = bench_now_ns();
        if (sampler_tick(b->s, &err) < 0) return;
        int64_t took = bench_now_ns() - t0;
        double us = (double)took / 1e3;
        sum += took;
        r->min_us = us < r->min_us ? us : r->min_us;
        r->max_us = us > r->max_us ? us : r->max_us;
        ticks++;
        next.tv_nsec += 10000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
    uint64_t samples = b->s->stats.thread_samples - samples0;
    if (!ticks || !samples) return;
    r->avg_us = (double)sum / 1e3 / (double)ticks;
    r->ok = true;
}

/* ---- one cell: a version, a depth, a mode ------------------------------------------------- */

static bool any_usable(const struct austin *au, int nau, int p)
{
    for (int i = 0; i < nau; i++)
        if (!au[i].unusable[p]) return true;
    return false;
}

static void measure_cell(const struct bench_python *py, int p, long depth, const char *mode,
                         struct austin *au, int nau, double seconds, const char *dir,
                         struct cell *cell)
{
    struct cp_err err;
    char depth_text[16];
    snprintf(depth_text, sizeof depth_text, "%ld", depth);
    const char *args[] = {"depth", depth_text, mode, NULL};
    struct bench_child target;
    struct bench_session b;
    memset(cell, 0, sizeof *cell);
    if (!any_usable(au, nau, p)) return;
    cell->tried = true;
    if (bench_start_target(py->path, args, 0, &target, &err) < 0) {
        fprintf(stderr, "bench_austin: %s\n", err.msg);
        return;
    }
    if (bench_session_open(&b, target.pid, 100, 100, &err) < 0) {
        fprintf(stderr, "bench_austin: %s: %s\n", py->label, err.msg);
        bench_stop(&target);
        return;
    }
    for (int i = 0; i < nau; i++) {
        if (au[i].unusable[p]) continue;
        run_austin(&au[i], target.pid, seconds, dir, &b, &cell->austin[i]);
        if (!cell->austin[i].ok) {
            au[i].unusable[p] = true;
            snprintf(au[i].why[p], sizeof au[i].why[p], "%s", cell->austin[i].why);
        }
    }
    if (any_usable(au, nau, p)) ours_paced(&b, seconds, &cell->ours);
    bench_session_close(&b);
    bench_stop(&target);
}

/* ---- report --------------------------------------------------------------------------------- */

static void print_cell(const struct cell *c, int nau)
{
    if (!c->ours.ok) {
        printf("  %-26s", "-");
    } else {
        char t[48];
        snprintf(t, sizeof t, "%.1f (%.1f..%.0f)", c->ours.avg_us, c->ours.min_us, c->ours.max_us);
        printf("  %-26s", t);
    }
    for (int i = 0; i < nau; i++) {
        const struct austin_run *a = &c->austin[i];
        char t[96];
        if (a->ok && c->ours.ok)
            snprintf(t, sizeof t, "%lu (%lu..%lu) %.2f %s", a->avg_us, a->min_us, a->max_us,
                     c->ours.avg_us / (double)a->avg_us, a->check);
        else
            snprintf(t, sizeof t, "n/a");
        printf("  %-36s", t);
    }
    printf("\n");
}

/* Did any cell of this version get a figure (ours needs at least one austin that can read it)? */
static bool version_measured(const struct cell *cells, int n)
{
    for (int i = 0; i < n; i++)
        if (cells[i].ours.ok) return true;
    return false;
}

static void print_table(const struct bench_python *py, int npy, const long *depths, int nd,
                        const char *const *modes, int nm, const struct austin *au, int nau,
                        const struct cell *cells)
{
    printf("\nwall µs per sample at 100 Hz: avg (min..max); after austin's figures: conprof avg / "
           "austin avg,\nthen how austin's stack compares to ours\n");
    printf("%-12s %-5s %5s  %-26s", "python", "mode", "depth", "conprof");
    for (int i = 0; i < nau; i++)
        printf("  %-36s", au[i].label);
    printf("\n");
    for (int p = 0; p < npy; p++) {
        if (!version_measured(cells + p * nm * nd, nm * nd)) {
            printf("%-12s %-5s %5s  %-26s  n/a (see below)\n", py[p].label, "-", "-", "-");
            continue;
        }
        for (int m = 0; m < nm; m++)
            for (int d = 0; d < nd; d++) {
                const struct cell *c = &cells[(p * nm + m) * nd + d];
                printf("%-12s %-5s %5ld", py[p].label, modes[m], depths[d]);
                print_cell(c, nau);
            }
    }
    for (int i = 0; i < nau; i++)
        for (int p = 0; p < npy; p++)
            if (au[i].unusable[p])
                printf("%s n/a on %s: %s\n", au[i].label, py[p].label, au[i].why[p]);
}

/* Per austin and mode: the median over versions of conprof/austin at depth 50. */
static void summarize(int npy, const long *depths, int nd, const char *const *modes, int nm,
                      const struct austin *au, int nau, const struct cell *cells)
{
    int d50 = -1;
    for (int d = 0; d < nd; d++)
        if (depths[d] == 50) d50 = d;
    for (int i = 0; i < nau && d50 >= 0; i++)
        for (int m = 0; m < nm; m++) {
            double ratios[BENCH_MAX_PYTHONS];
            int n = 0;
            for (int p = 0; p < npy; p++) {
                const struct cell *c = &cells[(p * nm + m) * nd + d50];
                if (c->ours.ok && c->austin[i].ok && c->austin[i].avg_us)
                    ratios[n++] = c->ours.avg_us / (double)c->austin[i].avg_us;
            }
            char figure[128], value[96] = "n/a", note[64] = "no version this austin can read";
            snprintf(figure, sizeof figure, "time per sample, depth 50, %s leaf, conprof / %s",
                     modes[m], au[i].label);
            double median = n ? bench_quantile(ratios, (size_t)n, 0.5) : 0;
            if (n) {
                snprintf(value, sizeof value, "%.2f (median of %d versions, %.2f..%.2f)", median, n,
                         ratios[0], ratios[n - 1]);
                snprintf(note, sizeof note, "wall time at 100 Hz, lower is better");
            }
            bench_summary(figure, value, "< 1", median, note);
        }
}

static int find_austins(struct austin *au)
{
    int n = 0;
    const char *paths[] = {bench_env_str("BENCH_AUSTIN_DEBIAN", "/usr/bin/austin"),
                           getenv("AUSTIN")};
    for (int i = 0; i < 2; i++) {
        if (!paths[i] || !*paths[i] || access(paths[i], X_OK) != 0) continue;
        memset(&au[n], 0, sizeof au[n]);
        au[n].path = paths[i];
        austin_version(&au[n]);
        n++;
    }
    return n;
}

int main(void)
{
    double seconds = bench_env_double("BENCH_AUSTIN_SECONDS", 1.0, 0.2, 600);
    long depths[MAX_DEPTHS];
    int nd = bench_parse_list(bench_env_str("BENCH_DEPTHS", "10,50,200"), depths, MAX_DEPTHS, 900);
    const char *modes[2];
    int nm = 0;
    const char *mode_list = bench_env_str("BENCH_MODES", "sleep,spin");
    if (strstr(mode_list, "sleep")) modes[nm++] = "sleep";
    if (strstr(mode_list, "spin")) modes[nm++] = "spin";
    struct austin au[MAX_AUSTINS];
    int nau = find_austins(au);
    struct bench_python py[BENCH_MAX_PYTHONS];
    int npy = bench_find_pythons(py);
    printf("bench_austin: %.1f s per run at 100 Hz;", seconds);
    for (int i = 0; i < nau; i++)
        printf(" %s (%s)", au[i].label, au[i].path);
    printf("%s\n", nau ? "" : " no austin found (/usr/bin/austin, $AUSTIN)");
    bench_print_load();
    if (!nau || !npy || !nd || !nm) {
        bench_summary("time per sample against austin", "n/a", "< 1", 0, "no austin found");
        return 0;
    }
    char dir[PATH_MAX];
    struct cell *cells = calloc((size_t)(npy * nm * nd), sizeof *cells);
    if (!cells || !bench_tmpdir(dir, sizeof dir)) return 1;
    for (int p = 0; p < npy; p++)
        for (int m = 0; m < nm; m++)
            for (int d = 0; d < nd; d++)
                measure_cell(&py[p], p, depths[d], modes[m], au, nau, seconds, dir,
                             &cells[(p * nm + m) * nd + d]);
    print_table(py, npy, depths, nd, modes, nm, au, nau, cells);
    summarize(npy, depths, nd, modes, nm, au, nau, cells);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/austin.out", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/austin.err", dir);
    unlink(path);
    rmdir(dir);
    free(cells);
    return 0;
}
