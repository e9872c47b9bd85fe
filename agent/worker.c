/* worker: the child side of the agent's sampling.
 *
 * One loop: wait for the channel or the next tick (absolute CLOCK_MONOTONIC deadlines), sample
 * every assigned process once per tick, and answer the agent's messages. Each application key
 * has one aggregate shared by its processes; a process that exits is closed and reported at the
 * next flush. Nothing here trusts the target: the sampler library bounds every read.
 */
#include "worker.h"

#include "caps.h"
#include "procfs.h"
#include "profile_writers.h"
#include "sampler.h"
#include "worker_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 1024
#define MAX_APPS 256

struct w_target {
    pid_t pid;
    uint64_t start_time;
    int app;
    bool attached;
    struct sampler *s;
    uint64_t samples, errors; /* since the last flush */
    char python[24];
    char error[sizeof(((struct cp_err *)0)->msg)];
};

struct w_app {
    int key;
    struct agg agg;
};

struct worker {
    int fd;
    int procfd;
    int rate_hz;
    char mntns_note[160];
    struct w_target targets[MAX_TARGETS];
    int ntargets;
    struct w_app apps[MAX_APPS];
    int napps;
    struct timespec period_start; /* CLOCK_REALTIME */
};

static struct agg *app_agg(struct worker *w, int key)
{
    for (int i = 0; i < w->napps; i++)
        if (w->apps[i].key == key) return &w->apps[i].agg;
    if (w->napps == MAX_APPS || agg_init(&w->apps[w->napps].agg) < 0) return NULL;
    w->apps[w->napps].key = key;
    return &w->apps[w->napps++].agg;
}

static void close_target(struct w_target *t)
{
    if (t->s) {
        sampler_close(t->s);
        free(t->s);
        t->s = NULL;
    }
    t->attached = false;
}

static void attach_target(struct worker *w, struct w_target *t)
{
    struct agg *agg = app_agg(w, t->app);
    struct cp_err err;
    struct sampler_opts opts = {.rate_hz = w->rate_hz};
    t->s = calloc(1, sizeof *t->s);
    if (!agg || !t->s) {
        snprintf(t->error, sizeof t->error, "out of memory");
        free(t->s);
        t->s = NULL;
        return;
    }
    if (sampler_open_at(t->s, w->procfd, t->pid, agg, &opts, 0, &err) < 0) {
        snprintf(t->error, sizeof t->error, "%s", err.msg);
        free(t->s);
        t->s = NULL;
        return;
    }
    if (t->s->proc.start_time != t->start_time && t->start_time) {
        snprintf(t->error, sizeof t->error, "pid %d was reused by another process", (int)t->pid);
        close_target(t);
        return;
    }
    t->attached = true;
    t->error[0] = '\0';
    snprintf(t->python, sizeof t->python, "%s", t->s->proc.version);
}

static void report_attach(struct worker *w, const struct w_target *t)
{
    json_t *j = json_pack("{s:i, s:s, s:b, s:s}", "pid", (int)t->pid, "python", t->python,
                          "attached", t->attached, "error", t->error);
    struct cp_err err;
    if (j) worker_proto_send(w->fd, WP_ATTACHED, j, NULL, 0, &err); /* a lost report is harmless */
    json_decref(j);
}

/* WP_TARGETS: the complete new set; keep what stays, attach what is new, close what left. */
static void set_targets(struct worker *w, json_t *msg)
{
    json_t *rate = json_object_get(msg, "rate_hz");
    if (json_is_integer(rate) && json_integer_value(rate) >= 1 && json_integer_value(rate) <= 1000)
        w->rate_hz = (int)json_integer_value(rate);
    json_t *list = json_object_get(msg, "targets");
    if (!json_is_array(list)) return;
    bool keep[MAX_TARGETS] = {false};
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        json_int_t pid = json_integer_value(json_object_get(item, "pid"));
        json_int_t start = json_integer_value(json_object_get(item, "start_time"));
        json_int_t app = json_integer_value(json_object_get(item, "app"));
        if (pid <= 0 || pid > 0x7fffffff) continue;
        int found = -1;
        for (int k = 0; k < w->ntargets; k++)
            if (w->targets[k].pid == pid && w->targets[k].start_time == (uint64_t)start) found = k;
        if (found >= 0) {
            keep[found] = true;
            continue;
        }
        if (w->ntargets == MAX_TARGETS) continue;
        struct w_target *t = &w->targets[w->ntargets];
        memset(t, 0, sizeof *t);
        t->pid = (pid_t)pid;
        t->start_time = (uint64_t)start;
        t->app = (int)app;
        keep[w->ntargets++] = true;
        attach_target(w, t);
        report_attach(w, t);
    }
    for (int k = 0; k < w->ntargets;) {
        if (!keep[k]) {
            close_target(&w->targets[k]);
            w->targets[k] = w->targets[--w->ntargets];
            keep[k] = keep[w->ntargets];
        } else {
            k++;
        }
    }
}

static int64_t realtime_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

/* The Python version of an application's processes ("" until one is attached). */
static const char *app_python(const struct worker *w, int key)
{
    for (int k = 0; k < w->ntargets; k++)
        if (w->targets[k].app == key && w->targets[k].python[0]) return w->targets[k].python;
    return "";
}

static int flush(struct worker *w, json_int_t period)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct cp_err err;
    for (int i = 0; i < w->napps; i++) {
        struct agg *agg = &w->apps[i].agg;
        if (agg->nstacks == 0) continue;
        struct pprof_meta meta = {.time_nanos = realtime_ns(&w->period_start),
                                  .duration_nanos =
                                      realtime_ns(&now) - realtime_ns(&w->period_start),
                                  .period_nanos = 1000000000LL / w->rate_hz};
        struct buf out = {0};
        if (pprof_write(agg, &meta, &out, &err) == 0) {
            json_t *j = json_pack(
                "{s:I, s:i, s:I, s:I, s:I, s:I, s:I, s:s}", "period", period, "app", w->apps[i].key,
                "samples", (json_int_t)agg->total_samples, "cpu_ns", (json_int_t)agg->total_cpu_ns,
                "wall_ns", (json_int_t)agg->total_wall_ns, "from_ns", (json_int_t)meta.time_nanos,
                "until_ns", (json_int_t)(meta.time_nanos + meta.duration_nanos), "python",
                app_python(w, w->apps[i].key));
            int rc = worker_proto_send(w->fd, WP_PROFILE, j, out.data, out.len, &err);
            json_decref(j);
            if (rc < 0) {
                buf_free(&out);
                return -1;
            }
        }
        buf_free(&out);
        agg_reset(agg);
    }
    json_t *targets = json_array();
    for (int k = 0; k < w->ntargets; k++) {
        struct w_target *t = &w->targets[k];
        json_array_append_new(
            targets, json_pack("{s:i, s:s, s:I, s:I, s:b, s:s}", "pid", (int)t->pid, "python",
                               t->python, "samples", (json_int_t)t->samples, "errors",
                               (json_int_t)t->errors, "attached", t->attached, "error", t->error));
        t->samples = t->errors = 0;
    }
    json_t *j =
        json_pack("{s:I, s:o, s:s}", "period", period, "targets", targets, "note", w->mntns_note);
    int rc = worker_proto_send(w->fd, WP_FLUSHED, j, NULL, 0, &err);
    json_decref(j);
    w->period_start = now;
    return rc;
}

static void sample_all(struct worker *w)
{
    for (int k = 0; k < w->ntargets; k++) {
        struct w_target *t = &w->targets[k];
        if (!t->attached) continue;
        uint64_t before = t->s->stats.thread_samples, errors = t->s->stats.errors;
        struct cp_err err;
        if (sampler_tick(t->s, &err) < 0) {
            snprintf(t->error, sizeof t->error, "%s", err.msg);
            close_target(t);
            continue;
        }
        t->samples += t->s->stats.thread_samples - before;
        t->errors += t->s->stats.errors - errors;
    }
}

/* Handles every whole message received; returns -1 when the worker should exit. */
static int handle_messages(struct worker *w, struct worker_reader *r)
{
    struct worker_msg m;
    struct cp_err err;
    int rc;
    while ((rc = worker_reader_next(r, &m, &err)) == 1) {
        int result = 0;
        if (m.type == WP_TARGETS)
            set_targets(w, m.json);
        else if (m.type == WP_FLUSH)
            result = flush(w, json_integer_value(json_object_get(m.json, "period")));
        else if (m.type == WP_STOP)
            result = -1;
        worker_msg_free(&m);
        if (result < 0) return -1;
    }
    return rc < 0 ? -1 : 0;
}

static void add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

/* The time left until the next tick, to the nanosecond (capped at 1 s). A whole-millisecond
 * timeout rounded down made poll() return at once, again and again, during the last millisecond
 * before every tick: a busy loop that cost a core-third across a fleet of workers. */
static struct timespec time_until(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns =
        (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 + (deadline->tv_nsec - now.tv_nsec);
    if (ns < 0) ns = 0;
    if (ns > 1000000000) ns = 1000000000;
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000),
                             .tv_nsec = (long)(ns % 1000000000)};
}

static void serve(struct worker *w)
{
    struct worker_reader reader = {0};
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    clock_gettime(CLOCK_REALTIME, &w->period_start);
    char chunk[65536];
    for (;;) {
        struct pollfd p = {.fd = w->fd, .events = POLLIN};
        struct timespec wait = time_until(&next);
        int n = ppoll(&p, 1, &wait, NULL);
        if (n > 0) {
            ssize_t got = read(w->fd, chunk, sizeof chunk);
            struct cp_err err;
            if (got <= 0 || worker_reader_feed(&reader, chunk, (size_t)got, &err) < 0 ||
                handle_messages(w, &reader) < 0)
                break;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec ||
            (now.tv_sec == next.tv_sec && now.tv_nsec >= next.tv_nsec)) {
            sample_all(w);
            add_ns(&next, 1000000000L / w->rate_hz);
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > next.tv_sec + 1) /* far behind (suspended?): do not burst */
                next = now;
        }
    }
    worker_reader_free(&reader);
}

static void enter_namespace(struct worker *w, const struct worker_spec *spec)
{
    char rel[64];
    if (!spec->enter_mntns) {
        snprintf(w->mntns_note, sizeof w->mntns_note, "in the agent's mount namespace");
        return;
    }
    int fd = procfs_open(w->procfd, procfs_path(rel, sizeof rel, "%d/ns/mnt", (int)spec->ns_pid),
                         O_RDONLY);
    if (fd < 0 || setns(fd, CLONE_NEWNS) < 0)
        snprintf(w->mntns_note, sizeof w->mntns_note,
                 "could not enter the mount namespace of pid %d (%s): reading files through "
                 "/proc/PID/root",
                 (int)spec->ns_pid, strerror(errno));
    else
        snprintf(w->mntns_note, sizeof w->mntns_note, "in the mount namespace of pid %d",
                 (int)spec->ns_pid);
    if (fd >= 0) close(fd);
}

static void worker_main(int fd, const struct worker_spec *spec)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the agent */
    signal(SIGINT, SIG_IGN);          /* the agent decides when we stop */
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    static struct worker w; /* large; this is the child's only instance */
    w.fd = fd;
    w.rate_hz = 100;
    w.procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w.procfd < 0) _exit(3);
    enter_namespace(&w, spec);
    struct cp_err err;
    if (caps_restrict_worker(&err) < 0) {
        fprintf(stderr, "conprof-agent worker %s: %s\n", spec->label, err.msg);
        _exit(4);
    }
    char name[16];
    snprintf(name, sizeof name, "conprof-w %s", spec->label);
    prctl(PR_SET_NAME, name);
    serve(&w);
    for (int k = 0; k < w.ntargets; k++)
        close_target(&w.targets[k]);
    _exit(0);
}

pid_t worker_spawn(const struct worker_spec *spec, int *channel_fd, struct cp_err *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        cp_err_set(err, CP_ERR_IO, "socketpair: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        cp_err_set(err, CP_ERR_IO, "fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        worker_main(sv[1], spec);
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    *channel_fd = sv[0];
    return pid;
}
