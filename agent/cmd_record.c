/* `conprof-agent record`: sample one process for a while, then write one profile file.
 *
 * The loop ticks on absolute CLOCK_MONOTONIC deadlines, so the rate does not drift with the time a
 * tick takes; a tick that falls more than one period behind skips the missed deadlines (counted as
 * "late ticks") instead of bursting. It ends at --duration, on SIGINT/SIGTERM, or when the target
 * exits; whatever was collected is written either way. With `-- command args...` the command is
 * started as our child (so ptrace rules let us read it as the same user) and reaped when it exits.
 */
#include "cli.h"
#include "profile_writers.h"
#include "sampler.h"
#include "summary.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum out_format { FORMAT_AUTO, FORMAT_SVG, FORMAT_PPROF, FORMAT_COLLAPSED };

struct record_args {
    pid_t pid;
    char **command; /* NULL unless "-- command ..." */
    long rate;
    double duration; /* 0 = until the target exits or Ctrl-C */
    const char *output;
    enum out_format format;
    bool threads;
    enum agg_dimension dim;
    bool quiet;
    long top;
};

static volatile sig_atomic_t
    g_stop; /* set by SIGINT/SIGTERM: main's state, written by the handler */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void record_usage(FILE *out)
{
    fputs(
        "usage: conprof-agent record [options] --pid PID\n"
        "       conprof-agent record [options] -- COMMAND [ARGS...]\n"
        "\n"
        "Samples the Python stacks of a process from outside (it is never stopped) and writes one\n"
        "profile when the duration is over, the process exits, or on Ctrl-C.\n"
        "\n"
        "options:\n"
        "  -p, --pid PID          the process to profile\n"
        "  -r, --rate HZ          samples per second, 1 to 1000 (default 100)\n"
        "  -d, --duration SECS    how long to record (default: until the process exits or Ctrl-C)\n"
        "  -o, --output FILE      where to write (default conprof-PID.svg); the format follows "
        "the\n"
        "                         extension: .svg flame graph, .pb.gz/.pprof pprof, .txt/.folded\n"
        "                         collapsed stacks\n"
        "  -f, --format FMT       svg | pprof | collapsed, whatever the extension\n"
        "  -t, --threads          add a frame per thread at the root of the stacks\n"
        "      --dimension DIM    cpu | wall: what the SVG and collapsed stacks weigh (default "
        "cpu);\n"
        "                         pprof always carries both\n"
        "      --top N            print the N functions with the most self time at the end\n"
        "  -q, --quiet            no progress line\n"
        "  -h, --help             this help\n",
        out);
}

static enum out_format format_from_name(const char *name)
{
    if (!strcmp(name, "svg")) return FORMAT_SVG;
    if (!strcmp(name, "pprof")) return FORMAT_PPROF;
    if (!strcmp(name, "collapsed")) return FORMAT_COLLAPSED;
    return FORMAT_AUTO;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static enum out_format format_from_path(const char *path)
{
    if (ends_with(path, ".svg")) return FORMAT_SVG;
    if (ends_with(path, ".pb.gz") || ends_with(path, ".pprof") || ends_with(path, ".pb"))
        return FORMAT_PPROF;
    if (ends_with(path, ".txt") || ends_with(path, ".folded") || ends_with(path, ".collapsed"))
        return FORMAT_COLLAPSED;
    return FORMAT_AUTO;
}

static int parse_args(int argc, char **argv, struct record_args *a)
{
    static const struct option opts[] = {
        {"pid", required_argument, NULL, 'p'},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"output", required_argument, NULL, 'o'},
        {"format", required_argument, NULL, 'f'},
        {"threads", no_argument, NULL, 't'},
        {"dimension", required_argument, NULL, 'D'},
        {"top", required_argument, NULL, 'T'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *a = (struct record_args){.rate = 100, .dim = AGG_CPU};
    long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+p:r:d:o:f:tqh", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (!cli_parse_long(optarg, 1, 0x7fffffff, &v)) {
                cli_error("--pid expects a process id, got '%s'", optarg);
                return EXIT_USAGE;
            }
            a->pid = (pid_t)v;
            break;
        case 'r':
            if (!cli_parse_long(optarg, 1, 1000, &a->rate)) {
                cli_error("--rate expects samples per second from 1 to 1000, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'd':
            if (!cli_parse_double(optarg, 0.01, 31 * 24 * 3600.0, &a->duration)) {
                cli_error("--duration expects seconds (e.g. 10 or 2.5), got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'o':
            a->output = optarg;
            break;
        case 'f':
            if ((a->format = format_from_name(optarg)) == FORMAT_AUTO) {
                cli_error("--format expects svg, pprof or collapsed, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 't':
            a->threads = true;
            break;
        case 'D':
            if (!strcmp(optarg, "cpu"))
                a->dim = AGG_CPU;
            else if (!strcmp(optarg, "wall"))
                a->dim = AGG_WALL;
            else {
                cli_error("--dimension expects cpu or wall, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'T':
            if (!cli_parse_long(optarg, 1, 1000, &a->top)) {
                cli_error("--top expects a count from 1 to 1000, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'q':
            a->quiet = true;
            break;
        case 'h':
            record_usage(stdout);
            return EXIT_OK + 100; /* "done, exit 0" */
        default:
            record_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) a->command = argv + optind;
    if (!a->pid == !a->command) {
        cli_error(a->pid ? "give either --pid or a command after '--', not both"
                         : "nothing to record: give --pid PID or '-- COMMAND [ARGS...]'");
        return EXIT_USAGE;
    }
    if (a->output && a->format == FORMAT_AUTO &&
        (a->format = format_from_path(a->output)) == FORMAT_AUTO) {
        cli_error("cannot tell the format of '%s' from its extension: use .svg, .pb.gz, .pprof, "
                  ".txt or .folded, or give --format",
                  a->output);
        return EXIT_USAGE;
    }
    if (a->format == FORMAT_AUTO) a->format = FORMAT_SVG;
    return EXIT_OK;
}

static pid_t spawn(char **command, struct cp_err *err)
{
    int pipefd[2]; /* carries errno of a failed exec; closed on success (CLOEXEC) */
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        cp_err_set(err, CP_ERR_IO, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        cp_err_set(err, CP_ERR_IO, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(pipefd[0]);
        execvp(command[0], command);
        int e = errno;
        (void)!write(pipefd[1], &e, sizeof e);
        _exit(127);
    }
    close(pipefd[1]);
    int child_errno;
    ssize_t n = read(pipefd[0], &child_errno, sizeof child_errno);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof child_errno) {
        waitpid(pid, NULL, 0);
        cp_err_set(err, CP_ERR_IO, "cannot run '%s': %s", command[0], strerror(child_errno));
        return -1;
    }
    return pid;
}

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

static bool child_exited(pid_t child)
{
    int status;
    return child > 0 && waitpid(child, &status, WNOHANG) == child;
}

static void show_progress(const struct sampler *s, double elapsed, bool final)
{
    fprintf(stderr, "\r\033[Kconprof: pid %d, %.1f s, %llu samples, %llu errors%s",
            (int)s->proc.pid, elapsed, (unsigned long long)s->stats.thread_samples,
            (unsigned long long)s->stats.errors, final ? "\n" : "");
    fflush(stderr);
}

struct loop_result {
    double seconds;
    uint64_t late_ticks;
    bool target_exited;
};

static void sample_loop(struct sampler *s, const struct record_args *a, pid_t child,
                        struct loop_result *r)
{
    bool progress = !a->quiet && isatty(STDERR_FILENO);
    long period_ns = 1000000000L / a->rate;
    struct timespec start, next, now, last_shown = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &start);
    next = start;
    memset(r, 0, sizeof *r);
    while (!g_stop) {
        struct cp_err err;
        if (sampler_tick(s, &err) < 0 || child_exited(child)) {
            r->target_exited = true;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        r->seconds = seconds_between(&start, &now);
        if (a->duration > 0 && r->seconds >= a->duration) break;
        if (progress && seconds_between(&last_shown, &now) >= 0.25) {
            show_progress(s, r->seconds, false);
            last_shown = now;
        }
        add_ns(&next, period_ns);
        if (seconds_between(&now, &next) < -(double)period_ns / 1e9) { /* fell behind: skip */
            while (seconds_between(&now, &next) < 0) {
                add_ns(&next, period_ns);
                r->late_ticks++;
            }
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR && !g_stop)
            ;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    r->seconds = seconds_between(&start, &now);
    if (progress) show_progress(s, r->seconds, true);
}

static int write_profile(const struct record_args *a, const struct agg *agg,
                         const struct sampler *s, int64_t start_ns, double seconds,
                         const char *path, struct cp_err *err)
{
    struct buf out = {0};
    int rc = -1;
    char cmdline[256], title[512], subtitle[512];
    cli_process_cmdline((int)s->proc.pid, cmdline, sizeof cmdline);
    if (a->format == FORMAT_PPROF) {
        char comment[600];
        snprintf(comment, sizeof comment, "conprof-agent %s: pid %d, Python %s, %ld Hz",
                 CONPROF_VERSION, (int)s->proc.pid, s->proc.version, a->rate);
        const char *comments[] = {comment};
        struct pprof_meta meta = {.time_nanos = start_ns,
                                  .duration_nanos = (int64_t)(seconds * 1e9),
                                  .period_nanos = 1000000000LL / a->rate,
                                  .comments = comments,
                                  .ncomments = 1};
        rc = pprof_write(agg, &meta, &out, err);
    } else if (a->format == FORMAT_COLLAPSED) {
        rc = collapsed_write(agg, a->dim, &out, err);
    } else {
        snprintf(title, sizeof title, "%s time: %s (pid %d)", a->dim == AGG_CPU ? "CPU" : "Wall",
                 cmdline[0] ? cmdline : "python", (int)s->proc.pid);
        snprintf(subtitle, sizeof subtitle, "Python %s, %.1f s at %ld Hz, %llu samples",
                 s->proc.version, seconds, a->rate, (unsigned long long)s->stats.thread_samples);
        struct flamegraph_opts fo = {.title = title, .subtitle = subtitle, .dim = a->dim};
        rc = flamegraph_svg_write(agg, &fo, &out, err);
    }
    if (rc == 0) rc = cli_write_file(path, out.data, out.len, err);
    buf_free(&out);
    return rc;
}

/* The command we started outlives the recording only by accident: ask it to stop (SIGTERM),
 * then insist after two seconds. */
static void stop_child(pid_t child)
{
    kill(child, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(child, NULL, WNOHANG) == child) return;
        usleep(10 * 1000);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

static void install_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cmd_record(int argc, char **argv)
{
    struct record_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc != EXIT_OK) return rc == EXIT_OK + 100 ? EXIT_OK : rc;
    struct cp_err err = {0};
    pid_t child = 0;
    if (a.command && (child = spawn(a.command, &err)) < 0) return cli_fail(&err);
    pid_t pid = child ? child : a.pid;
    install_signals();

    struct agg agg;
    struct sampler *s = malloc(sizeof *s);
    if (!s || agg_init(&agg) < 0) {
        cli_error("out of memory");
        free(s);
        return EXIT_FAILURE_RUN;
    }
    struct sampler_opts so = {.rate_hz = (int)a.rate, .thread_frames = a.threads};
    if (sampler_open(s, pid, &agg, &so, child ? 5000 : 0, &err) < 0) {
        rc = cli_fail(&err);
        if (child) stop_child(child);
        agg_free(&agg);
        free(s);
        return rc;
    }
    char default_path[64];
    snprintf(default_path, sizeof default_path, "conprof-%d.svg", (int)pid);
    const char *path = a.output ? a.output : default_path;
    if (!a.quiet)
        fprintf(stderr, "conprof: recording pid %d (Python %s) at %ld Hz%s; Ctrl-C to stop\n",
                (int)pid, s->proc.version, a.rate, a.duration > 0 ? "" : " until it exits");

    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t start_ns = (int64_t)wall.tv_sec * 1000000000LL + wall.tv_nsec;
    struct loop_result r;
    sample_loop(s, &a, child, &r);

    rc = EXIT_OK;
    if (write_profile(&a, &agg, s, start_ns, r.seconds, path, &err) < 0) {
        rc = cli_fail(&err);
    } else if (!a.quiet) {
        fprintf(stderr,
                "conprof: wrote %s: %llu samples, %u stacks, %.2f s CPU, %.2f s wall, %llu "
                "errors, %llu late ticks%s\n",
                path, (unsigned long long)s->stats.thread_samples, agg.nstacks,
                (double)agg.total_cpu_ns / 1e9, (double)agg.total_wall_ns / 1e9,
                (unsigned long long)s->stats.errors, (unsigned long long)r.late_ticks,
                r.target_exited ? " (the process exited)" : "");
        if (s->stats.errors && s->stats.last_error.msg[0])
            fprintf(stderr, "conprof: last sampling error: %s\n", s->stats.last_error.msg);
    }
    if (rc == EXIT_OK && a.top > 0) summary_print_top(stdout, &agg, a.dim, (int)a.top);
    if (child && !r.target_exited) stop_child(child);
    sampler_close(s);
    free(s);
    agg_free(&agg);
    return rc;
}
