/* daemon: the loop of `conprof-agent run`.
 *
 * State lives in one struct daemon (no globals). Targets come from discovery (discovery.h):
 * each matched target (a container, or the host processes of one application) gets one worker
 * process; every process of the target is assigned an application key, an index into apps[],
 * which carries the labels of its profiles. At a period boundary the daemon sends WP_FLUSH to
 * every worker; each answers with one WP_PROFILE per application (a gzipped pprof) and a
 * WP_FLUSHED with per-process counters. Profiles become profile_records and go to the sink.
 *
 * Worker failures: a worker whose channel closes or that exits is reaped (SIGCHLD through the
 * signalfd), counted, and restarted after 1, 2, 4 ... 60 s; one that leaves a flush unanswered
 * for DAEMON_WORKER_TIMEOUT_S is killed and restarted the same way.
 */
#include "daemon.h"

#include "agent_link.h"
#include "cli.h"
#include "discovery.h"
#include "kubelet.h"
#include "metrics.h"
#include "procfs.h"
#include "status.h"
#include "worker.h"
#include "worker_proto.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 256
#define MAX_APPS 4096
#define MAX_PROCS_PER_WORKER 256
#define DAEMON_GONE_FLUSH_MS 2000
#define WORKER_HEALTHY_S 60 /* a worker that ran this long has its restart backoff reset */
#define BACKOFF_MAX_S 60

struct app {
    char target_key[DISCOVERY_KEY_MAX];
    char name[PROCENV_VALUE_MAX];
    char project[PROCENV_VALUE_MAX];
    char environment[PROCENV_VALUE_MAX];
    char container_id[CGROUP_ID_MAX + 1];
    char pod_uid[CGROUP_POD_UID_MAX + 1];
    char runtime[16];
    char python[24];
    char pod_name[KUBELET_STRING_MAX + 1]; /* from the kubelet, "" when unknown */
    char k8s_namespace[KUBELET_STRING_MAX + 1];
    char container_name[KUBELET_STRING_MAX + 1];
    bool used;
    double last_used;                  /* monotonic; a slot unused for two periods is freed */
    char session_id[PROTO_ID_MAX + 1]; /* the console session that selected it; "" without one */
    json_t *session_labels;            /* that session's labels when it was last seen (owned) */
};

/* A console session in force, as the daemon matches processes against it (copied from the
 * link's table, which commands change under our feet). */
struct session_match {
    char id[PROTO_ID_MAX + 1];
    char project[PROTO_NAME_MAX + 1];
    char environment[PROTO_NAME_MAX + 1];
    int period_s;
    int upload_timeout_s;
    json_t *labels; /* owned */
    struct selector selector;
};

struct wproc { /* a process assigned to a worker */
    pid_t pid;
    uint64_t start_time;
    int app;
    char python[24];
    uint64_t samples, errors;
    bool attached;
    char error[160];
};

struct wstate {
    bool used;
    char key[DISCOVERY_KEY_MAX];
    pid_t pid; /* 0 while waiting to restart */
    int fd;
    struct worker_reader reader;
    pid_t ns_pid;
    struct wproc procs[MAX_PROCS_PER_WORKER];
    int nprocs;
    int restarts;      /* since the last healthy stretch: the backoff exponent */
    double started_at; /* monotonic seconds */
    double restart_at;
    double flush_sent_at; /* 0: no flush outstanding */
    uint64_t samples, errors;
    char note[160];
};

struct daemon {
    struct daemon_settings cfg;
    daemon_reload_fn *reload;
    void *reload_ctx;
    struct discovery *disc;
    struct sink *sink;
    struct wstate workers[MAX_WORKERS];
    struct app apps[MAX_APPS];
    int sigfd;
    int64_t period;
    double period_started;   /* monotonic */
    int64_t period_start_ns; /* realtime */
    double started;
    char host[256];
    uint64_t worker_crashes, worker_hangs, profiles, profile_errors;
    uint64_t samples, sample_errors; /* totals reported by workers */
    uint64_t discovery_passes, reloads_ok, reloads_failed;
    double discovery_last_s;
    char last_error[512];
    struct {
        time_t time;
        char message[sizeof(((struct cp_err *)0)->msg)];
    } errors[8]; /* the last errors, a ring */
    unsigned nerrors;
    struct status_server *status;
    struct metrics_server *metrics;
    time_t started_wall;
    bool stopping;
    struct kubelet_client *kubelet; /* NULL unless enabled */
    struct agent_link *link;        /* NULL without a console */
    uint64_t link_generation;
    struct session_match sessions[CONTROL_STATE_SESSIONS_MAX];
    size_t nsessions;
};

static double mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int64_t real_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void note_error(struct daemon *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note_error(struct daemon *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->last_error, sizeof d->last_error, fmt, ap);
    va_end(ap);
    unsigned slot = d->nerrors++ % (sizeof d->errors / sizeof d->errors[0]);
    d->errors[slot].time = time(NULL);
    snprintf(d->errors[slot].message, sizeof d->errors[slot].message, "%s", d->last_error);
    cli_error("%s", d->last_error);
}

static int period_s(const struct daemon *d);

/* ---- applications ------------------------------------------------------------------------ */

static void app_release(struct app *a)
{
    json_decref(a->session_labels);
    memset(a, 0, sizeof *a);
}

/* The kubelet may learn of a pod after its processes were first seen. */
static void app_set_pod(struct app *a, const struct kubelet_match *pod)
{
    if (!pod) return;
    snprintf(a->pod_name, sizeof a->pod_name, "%s", pod->pod_name);
    snprintf(a->k8s_namespace, sizeof a->k8s_namespace, "%s", pod->k8s_namespace);
    snprintf(a->container_name, sizeof a->container_name, "%s", pod->container_name);
}

static int app_key(struct daemon *d, const struct discovery_process *p,
                   const struct session_match *session, const struct kubelet_match *pod)
{
    const char *session_id = session ? session->id : "";
    int free_slot = -1;
    for (int i = 0; i < MAX_APPS; i++) {
        struct app *a = &d->apps[i];
        if (!a->used) {
            if (free_slot < 0) free_slot = i;
            continue;
        }
        if (!strcmp(a->target_key, p->target_key) && !strcmp(a->name, p->app_name) &&
            !strcmp(a->project, p->env.project) && !strcmp(a->environment, p->env.environment) &&
            !strcmp(a->session_id, session_id)) {
            a->last_used = mono_now();
            app_set_pod(a, pod);
            if (session && a->session_labels != session->labels) {
                json_decref(a->session_labels);
                a->session_labels = json_incref(session->labels);
            }
            return i;
        }
    }
    if (free_slot < 0) return -1;
    struct app *a = &d->apps[free_slot];
    app_release(a);
    a->used = true;
    snprintf(a->session_id, sizeof a->session_id, "%s", session_id);
    if (session) a->session_labels = json_incref(session->labels);
    snprintf(a->target_key, sizeof a->target_key, "%s", p->target_key);
    snprintf(a->name, sizeof a->name, "%s", p->app_name);
    snprintf(a->project, sizeof a->project, "%s", p->env.project);
    snprintf(a->environment, sizeof a->environment, "%s", p->env.environment);
    snprintf(a->container_id, sizeof a->container_id, "%s", p->cgroup.container_id);
    snprintf(a->pod_uid, sizeof a->pod_uid, "%s", p->cgroup.pod_uid);
    snprintf(a->runtime, sizeof a->runtime, "%s", p->cgroup.runtime);
    app_set_pod(a, pod);
    a->last_used = mono_now();
    return free_slot;
}

/* Frees the application slots no process has used for two periods: by then the worker has sent
 * the last profile that could name them (a flush answers within DAEMON_WORKER_TIMEOUT_S). */
static void free_stale_apps(struct daemon *d)
{
    double horizon = mono_now() - 2.0 * period_s(d) - DAEMON_WORKER_TIMEOUT_S;
    for (int i = 0; i < MAX_APPS; i++)
        if (d->apps[i].used && d->apps[i].last_used < horizon) app_release(&d->apps[i]);
}

/* ---- workers ----------------------------------------------------------------------------- */

static struct wstate *find_worker(struct daemon *d, const char *key)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (d->workers[i].used && !strcmp(d->workers[i].key, key)) return &d->workers[i];
    return NULL;
}

static int send_targets(struct daemon *d, struct wstate *w)
{
    if (!w->pid) return 0;
    json_t *list = json_array();
    for (int i = 0; i < w->nprocs; i++)
        json_array_append_new(list, json_pack("{s:i, s:I, s:i}", "pid", (int)w->procs[i].pid,
                                              "start_time", (json_int_t)w->procs[i].start_time,
                                              "app", w->procs[i].app));
    json_t *msg = json_pack("{s:i, s:o}", "rate_hz", d->cfg.rate_hz, "targets", list);
    struct cp_err err;
    int rc = worker_proto_send(w->fd, WP_TARGETS, msg, NULL, 0, &err);
    json_decref(msg);
    if (rc < 0) note_error(d, "worker %s: %s", w->key, err.msg);
    return rc;
}

static void start_worker(struct daemon *d, struct wstate *w)
{
    struct worker_spec spec = {.ns_pid = w->ns_pid,
                               .enter_mntns = d->cfg.enter_mntns && strncmp(w->key, "host:", 5),
                               .label = w->key};
    struct cp_err err;
    int fd;
    pid_t pid = worker_spawn(&spec, &fd, &err);
    if (pid < 0) {
        note_error(d, "cannot start the worker of %s: %s", w->key, err.msg);
        w->restart_at = mono_now() + 5;
        return;
    }
    w->pid = pid;
    w->fd = fd;
    w->started_at = mono_now();
    w->flush_sent_at = 0;
    worker_reader_free(&w->reader);
    send_targets(d, w);
}

static void stop_worker(struct wstate *w, bool kill_it)
{
    if (w->pid) {
        struct cp_err err;
        json_t *empty = json_object();
        if (!kill_it) worker_proto_send(w->fd, WP_STOP, empty, NULL, 0, &err);
        json_decref(empty);
        kill(w->pid, SIGKILL);
        waitpid(w->pid, NULL, 0);
        close(w->fd);
        w->pid = 0;
    }
    worker_reader_free(&w->reader);
}

/* The delay before restarting a worker that failed: 1, 2, 4 ... 60 s, from 1 s again once a
 * worker has run WORKER_HEALTHY_S without failing. */
static int next_backoff_s(struct wstate *w)
{
    if (w->started_at && mono_now() - w->started_at >= WORKER_HEALTHY_S) w->restarts = 0;
    int delay = w->restarts < 6 ? 1 << w->restarts : BACKOFF_MAX_S;
    w->restarts++;
    return delay;
}

/* A worker died or hung: count it, schedule a restart with backoff. */
static void worker_failed(struct daemon *d, struct wstate *w, const char *why)
{
    int delay = next_backoff_s(w);
    note_error(d, "worker of %s %s; restarting in %d s", w->key, why, delay);
    stop_worker(w, true);
    w->restart_at = mono_now() + delay;
}

static void read_worker(struct daemon *d, struct wstate *w);
static void flush_workers(struct daemon *d);

/* Asks one worker for its partial period and waits up to DAEMON_GONE_FLUSH_MS for it, so the
 * last samples of a target that went away are not lost. */
static void flush_one(struct daemon *d, struct wstate *w)
{
    if (!w->pid) return;
    json_t *msg = json_pack("{s:I}", "period", (json_int_t)d->period);
    struct cp_err err;
    int rc = worker_proto_send(w->fd, WP_FLUSH, msg, NULL, 0, &err);
    json_decref(msg);
    if (rc < 0) return;
    w->flush_sent_at = mono_now();
    double deadline = mono_now() + DAEMON_GONE_FLUSH_MS / 1000.0;
    while (w->pid && w->flush_sent_at && mono_now() < deadline) {
        struct pollfd p = {.fd = w->fd, .events = POLLIN};
        if (poll(&p, 1, (int)((deadline - mono_now()) * 1000) + 1) > 0) read_worker(d, w);
    }
}

/* ---- discovery -> workers ---------------------------------------------------------------- */

/* ---- console sessions ---------------------------------------------------------------------- */

static void sessions_clear(struct daemon *d)
{
    for (size_t i = 0; i < d->nsessions; i++) {
        json_decref(d->sessions[i].labels);
        selector_free(&d->sessions[i].selector);
    }
    d->nsessions = 0;
}

/* Copies the link's sessions in force (running, lease not over) into d->sessions. */
static void sessions_refresh(struct daemon *d)
{
    sessions_clear(d);
    if (!d->link) return;
    const struct control_session *active[CONTROL_STATE_SESSIONS_MAX];
    size_t n =
        agent_link_sessions(d->link, (int64_t)time(NULL), active, CONTROL_STATE_SESSIONS_MAX);
    for (size_t i = 0; i < n; i++) {
        struct session_match *m = &d->sessions[d->nsessions];
        struct cp_err err;
        memset(m, 0, sizeof *m);
        if (selector_parse(active[i]->selector, "selector", &m->selector, &err) < 0) {
            note_error(d, "session %s: %s", active[i]->session_id, err.msg);
            continue;
        }
        snprintf(m->id, sizeof m->id, "%s", active[i]->session_id);
        snprintf(m->project, sizeof m->project, "%s", active[i]->project);
        snprintf(m->environment, sizeof m->environment, "%s", active[i]->environment);
        m->period_s = active[i]->period;
        m->upload_timeout_s = active[i]->upload_timeout;
        m->labels = json_incref(active[i]->labels);
        d->nsessions++;
    }
}

/* The upload timeout in force: the longest the console sessions ask for, else the config's. */
static int upload_timeout_s(const struct daemon *d)
{
    int t = 0;
    for (size_t i = 0; i < d->nsessions; i++)
        if (d->sessions[i].upload_timeout_s > t) t = d->sessions[i].upload_timeout_s;
    return t ? t : d->cfg.upload_timeout_s;
}

/* The period in force: the shortest of the console sessions', else the config's. */
static int period_s(const struct daemon *d)
{
    int p = 0;
    for (size_t i = 0; i < d->nsessions; i++)
        if (d->sessions[i].period_s > 0 && (!p || d->sessions[i].period_s < p))
            p = d->sessions[i].period_s;
    return p ? p : d->cfg.period_s;
}

/* Whether a process is profiled. Without a console: when the config's selectors (if any) match.
 * With one: when a session in force matches, and the config's selectors (if any) too: they are
 * this node's allowlist. *session is the first matching session (NULL without a console). */
static bool process_wanted(const struct daemon *d, const struct selector_subject *subject,
                           const struct session_match **session)
{
    *session = NULL;
    if (d->cfg.selectors.count && !selector_list_matches(&d->cfg.selectors, subject)) return false;
    if (!d->link) return true;
    for (size_t i = 0; i < d->nsessions; i++)
        if (selector_matches(&d->sessions[i].selector, subject)) {
            *session = &d->sessions[i];
            return true;
        }
    return false;
}

/* ---- discovery -> workers ---------------------------------------------------------------- */

#define LINK_TARGETS_MAX 512 /* processes reported to the console */

static const char *known_python(const struct daemon *d, pid_t pid)
{
    for (int k = 0; k < MAX_WORKERS; k++)
        for (int i = 0; d->workers[k].used && i < d->workers[k].nprocs; i++)
            if (d->workers[k].procs[i].pid == pid) return d->workers[k].procs[i].python;
    return "";
}

/* The Python processes of this node as the console's TARGET objects (PROTOCOL.md). */
static json_t *targets_json(const struct daemon *d, const struct discovery_target *targets,
                            size_t n)
{
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < targets[i].proc_count; k++) {
            if (json_array_size(list) >= LINK_TARGETS_MAX) return list;
            const struct discovery_process *p = targets[i].procs[k];
            json_t *t = json_pack("{s:i, s:s}", "pid", (int)p->pid, "application", p->app_name);
            const char *optional[][2] = {{"container_id", p->cgroup.container_id},
                                         {"pod_uid", p->cgroup.pod_uid},
                                         {"project", p->env.project},
                                         {"environment", p->env.environment},
                                         {"python", known_python(d, p->pid)}};
            for (size_t j = 0; j < sizeof optional / sizeof optional[0]; j++)
                if (optional[j][1][0])
                    json_object_set_new(t, optional[j][0], json_string(optional[j][1]));
            json_array_append_new(list, t);
        }
    return list;
}

/* The pod of a process from the kubelet's list; asks for a fresh list when a container's pod is
 * not in it yet (a pod started since the last refresh). */
static bool pod_of(struct daemon *d, const struct discovery_process *p, struct kubelet_match *out)
{
    if (!d->kubelet || (!p->cgroup.pod_uid[0] && !p->cgroup.container_id[0])) return false;
    if (kubelet_pods_find(kubelet_client_pods(d->kubelet), p->cgroup.pod_uid,
                          p->cgroup.container_id, out))
        return true;
    kubelet_client_refresh_now(d->kubelet);
    return false;
}

static struct wstate *worker_for(struct daemon *d, const char *key)
{
    struct wstate *w = find_worker(d, key);
    for (int k = 0; k < MAX_WORKERS && !w; k++)
        if (!d->workers[k].used) {
            w = &d->workers[k];
            memset(w, 0, sizeof *w);
            w->used = true;
            snprintf(w->key, sizeof w->key, "%s", key);
        }
    if (!w) note_error(d, "too many targets (%d): %s is not profiled", MAX_WORKERS, key);
    return w;
}

/* The processes of target t that are wanted, as the worker's list (counters of known ones kept).
 * Returns how many; *changed when the list differs from the worker's. */
static int wanted_procs(struct daemon *d, const struct discovery_target *t, const struct wstate *w,
                        struct wproc *procs, bool *changed)
{
    int np = 0;
    *changed = !w || w->nprocs == 0;
    for (size_t k = 0; k < t->proc_count && np < MAX_PROCS_PER_WORKER; k++) {
        const struct discovery_process *p = t->procs[k];
        struct selector_subject subject;
        const struct session_match *session;
        struct kubelet_match pod;
        bool pod_known = pod_of(d, p, &pod);
        discovery_subject(p, &subject);
        if (pod_known) {
            subject.k8s_namespace = pod.k8s_namespace;
            subject.k8s_labels = pod.labels;
        }
        if (!process_wanted(d, &subject, &session)) continue;
        int app = app_key(d, p, session, pod_known ? &pod : NULL);
        if (app < 0) continue;
        const struct wproc *old = NULL;
        for (int j = 0; w && j < w->nprocs; j++)
            if (w->procs[j].pid == p->pid && w->procs[j].start_time == p->start_time)
                old = &w->procs[j];
        if (!old || old->app != app) *changed = true;
        procs[np] =
            old ? *old : (struct wproc){.pid = p->pid, .start_time = p->start_time, .app = app};
        procs[np].app = app;
        np++;
    }
    if (w && np != w->nprocs) *changed = true;
    return np;
}

/* Tells the console that a process of one of its sessions started or stopped being sampled. */
static void report_target(struct daemon *d, const struct wproc *p, bool attached)
{
    const struct app *a = p->app >= 0 && p->app < MAX_APPS ? &d->apps[p->app] : NULL;
    if (!d->link || !a || !a->used || !a->session_id[0]) return;
    struct proto_target t = {.pid = p->pid,
                             .container_id = a->container_id,
                             .pod_uid = a->pod_uid,
                             .project = a->project,
                             .environment = a->environment,
                             .application = a->name,
                             .python = p->python};
    struct cp_err err;
    json_t *target = proto_target_json(&t, &err);
    agent_link_event(d->link, attached ? PROTO_EVENT_TARGET_ATTACHED : PROTO_EVENT_TARGET_DETACHED,
                     a->session_id, NULL, target);
    json_decref(target);
}

/* Whether `list` holds the same process (pid and start time) for the same application. */
static bool holds(const struct wproc *list, int n, const struct wproc *p)
{
    for (int i = 0; i < n; i++)
        if (list[i].pid == p->pid && list[i].start_time == p->start_time && list[i].app == p->app)
            return true;
    return false;
}

/* Reports the processes that left a worker's list (all of them when `after` is empty) and those
 * that joined it. */
static void report_changes(struct daemon *d, const struct wproc *before, int nbefore,
                           const struct wproc *after, int nafter)
{
    for (int i = 0; i < nbefore; i++)
        if (!holds(after, nafter, &before[i])) report_target(d, &before[i], false);
    for (int j = 0; j < nafter; j++)
        if (!holds(before, nbefore, &after[j])) report_target(d, &after[j], true);
}

static void reconcile(struct daemon *d)
{
    struct cp_err err;
    double t0 = mono_now();
    int scanned = discovery_scan(d->disc, &err);
    d->discovery_last_s = mono_now() - t0;
    d->discovery_passes++;
    if (scanned < 0) {
        note_error(d, "discovery: %s", err.msg);
        return;
    }
    size_t n;
    const struct discovery_target *targets = discovery_targets(d->disc, &n);
    bool seen[MAX_WORKERS] = {false};
    if (d->link) {
        sessions_refresh(d);
        sink_set_upload_timeout(d->sink, upload_timeout_s(d) * 1000);
    }
    for (size_t i = 0; i < n; i++) {
        const struct discovery_target *t = &targets[i];
        struct wproc procs[MAX_PROCS_PER_WORKER];
        bool changed;
        int np = wanted_procs(d, t, find_worker(d, t->key), procs, &changed);
        if (np == 0) continue; /* nothing of it is selected: no worker */
        struct wstate *w = worker_for(d, t->key);
        if (!w) continue;
        seen[w - d->workers] = true;
        if (changed) report_changes(d, w->procs, w->nprocs, procs, np);
        memcpy(w->procs, procs, (size_t)np * sizeof *procs);
        w->nprocs = np;
        w->ns_pid = w->procs[0].pid;
        if (!w->pid && w->restart_at <= mono_now())
            start_worker(d, w);
        else if (changed)
            send_targets(d, w);
    }
    free_stale_apps(d);
    for (int k = 0; k < MAX_WORKERS; k++) {
        struct wstate *w = &d->workers[k];
        if (w->used && !seen[k]) { /* the target is gone or no longer selected */
            report_changes(d, w->procs, w->nprocs, NULL, 0);
            flush_one(d, w);
            stop_worker(w, false);
            w->used = false;
        }
    }
    if (d->link) {
        agent_link_set_targets(d->link, targets_json(d, targets, n));
        for (size_t i = 0; i < d->nsessions; i++) {
            int64_t count = 0;
            for (int k = 0; k < MAX_WORKERS; k++)
                for (int j = 0; d->workers[k].used && j < d->workers[k].nprocs; j++) {
                    int app = d->workers[k].procs[j].app;
                    count += app >= 0 && app < MAX_APPS &&
                             !strcmp(d->apps[app].session_id, d->sessions[i].id);
                }
            agent_link_set_session_targets(d->link, d->sessions[i].id, count);
        }
    }
}

/* ---- periods and profiles ---------------------------------------------------------------- */

static void set_label(struct profile_record *r, const char *key, const char *value)
{
    if (value && value[0]) profile_record_set_label(r, key, value);
}

static void submit_profile(struct daemon *d, struct wstate *w, struct worker_msg *m)
{
    json_int_t key = json_integer_value(json_object_get(m->json, "app"));
    if (key < 0 || key >= MAX_APPS || !d->apps[key].used || m->blob.len == 0) {
        d->profile_errors++;
        note_error(d, "worker %s sent a profile for an unknown application %lld", w->key,
                   (long long)key);
        return;
    }
    struct app *a = &d->apps[key];
    const char *python = json_string_value(json_object_get(m->json, "python"));
    if (python && python[0]) snprintf(a->python, sizeof a->python, "%s", python);
    /* the worker's own clock tells the period; distrust what cannot be right */
    int64_t now = real_now_ns();
    int64_t from = json_integer_value(json_object_get(m->json, "from_ns"));
    int64_t until = json_integer_value(json_object_get(m->json, "until_ns"));
    if (from <= 0 || until < from || until > now + 60 * 1000000000LL) {
        from = d->period_start_ns;
        until = now;
    }
    struct profile_record r = {0};
    r.app_name = strdup(a->name);
    r.from_ns = from;
    r.until_ns = until;
    r.rate_hz = d->cfg.rate_hz;
    r.pprof_gz = m->blob;
    memset(&m->blob, 0, sizeof m->blob);
    const char *key_s;
    json_t *v;
    json_object_foreach(d->cfg.labels, key_s, v) if (json_is_string(v))
        set_label(&r, key_s, json_string_value(v));
    json_object_foreach(a->session_labels, key_s, v) if (json_is_string(v))
        set_label(&r, key_s, json_string_value(v));
    set_label(&r, "application_name", a->name);
    set_label(&r, "project_id", a->project);
    set_label(&r, "environment", a->environment);
    set_label(&r, "container_id", a->container_id);
    set_label(&r, "pod_uid", a->pod_uid);
    set_label(&r, "container_runtime", a->runtime);
    set_label(&r, "pod_name", a->pod_name);
    set_label(&r, "namespace", a->k8s_namespace);
    set_label(&r, "container_name", a->container_name);
    set_label(&r, "runtime", "cpython");
    set_label(&r, "runtime_version", a->python);
    set_label(&r, "runtime_os", "linux");
    set_label(&r, "runtime_arch", "x86_64");
    set_label(&r, "probe_version", CONPROF_VERSION);
    set_label(&r, "host", d->host);
    struct cp_err err;
    if (!r.app_name || sink_submit(d->sink, &r, &err) < 0) {
        d->profile_errors++;
        note_error(d, "profile of %s not queued: %s", a->name, r.app_name ? err.msg : "memory");
    } else {
        d->profiles++;
    }
    profile_record_free(&r);
}

static void record_flushed(struct daemon *d, struct wstate *w, json_t *msg)
{
    if (getenv("CONPROF_DEBUG")) {
        char *t = json_dumps(msg, JSON_COMPACT);
        fprintf(stderr, "debug: flushed from %s: %s\n", w->key, t);
        free(t);
    }
    w->flush_sent_at = 0;
    const char *note = json_string_value(json_object_get(msg, "note"));
    snprintf(w->note, sizeof w->note, "%s", note ? note : "");
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(msg, "targets"), i, t)
    {
        json_int_t pid = json_integer_value(json_object_get(t, "pid"));
        for (int k = 0; k < w->nprocs; k++) {
            struct wproc *p = &w->procs[k];
            if (p->pid != pid) continue;
            const char *py = json_string_value(json_object_get(t, "python"));
            const char *error = json_string_value(json_object_get(t, "error"));
            snprintf(p->python, sizeof p->python, "%s", py ? py : "");
            snprintf(p->error, sizeof p->error, "%s", error ? error : "");
            p->attached = json_is_true(json_object_get(t, "attached"));
            uint64_t samples = (uint64_t)json_integer_value(json_object_get(t, "samples"));
            uint64_t errors = (uint64_t)json_integer_value(json_object_get(t, "errors"));
            p->samples += samples;
            p->errors += errors;
            d->samples += samples;
            d->sample_errors += errors;
            if (p->app >= 0 && p->app < MAX_APPS && p->python[0])
                snprintf(d->apps[p->app].python, sizeof d->apps[p->app].python, "%s", p->python);
        }
    }
}

/* An attach attempt's outcome, ahead of the period's counters. */
static void record_attached(struct wstate *w, json_t *msg)
{
    json_int_t pid = json_integer_value(json_object_get(msg, "pid"));
    for (int k = 0; k < w->nprocs; k++) {
        struct wproc *p = &w->procs[k];
        if (p->pid != pid) continue;
        const char *py = json_string_value(json_object_get(msg, "python"));
        const char *error = json_string_value(json_object_get(msg, "error"));
        snprintf(p->python, sizeof p->python, "%s", py ? py : "");
        snprintf(p->error, sizeof p->error, "%s", error ? error : "");
        p->attached = json_is_true(json_object_get(msg, "attached"));
    }
}

static void read_worker(struct daemon *d, struct wstate *w)
{
    char chunk[65536];
    struct cp_err err;
    for (;;) {
        ssize_t n = read(w->fd, chunk, sizeof chunk);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        if (n <= 0) {
            worker_failed(d, w, "closed its channel");
            d->worker_crashes++;
            return;
        }
        if (worker_reader_feed(&w->reader, chunk, (size_t)n, &err) < 0) {
            worker_failed(d, w, err.msg);
            return;
        }
    }
    struct worker_msg m;
    int rc;
    while ((rc = worker_reader_next(&w->reader, &m, &err)) == 1) {
        if (m.type == WP_PROFILE)
            submit_profile(d, w, &m);
        else if (m.type == WP_FLUSHED)
            record_flushed(d, w, m.json);
        else if (m.type == WP_ATTACHED)
            record_attached(w, m.json);
        worker_msg_free(&m);
    }
    if (rc < 0) worker_failed(d, w, err.msg);
}

static void flush_workers(struct daemon *d)
{
    json_t *msg = json_pack("{s:I}", "period", (json_int_t)d->period);
    for (int k = 0; k < MAX_WORKERS; k++) {
        struct wstate *w = &d->workers[k];
        struct cp_err err;
        if (!w->used || !w->pid) continue;
        if (worker_proto_send(w->fd, WP_FLUSH, msg, NULL, 0, &err) < 0)
            worker_failed(d, w, err.msg);
        else
            w->flush_sent_at = mono_now();
    }
    json_decref(msg);
}

/* ---- signals, reaping -------------------------------------------------------------------- */

static int open_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void reap(struct daemon *d)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int k = 0; k < MAX_WORKERS; k++) {
            struct wstate *w = &d->workers[k];
            if (w->used && w->pid == pid) {
                w->pid = 0; /* already reaped */
                close(w->fd);
                d->worker_crashes++;
                int delay = next_backoff_s(w);
                note_error(d, "worker of %s exited (%s %d); restarting in %d s", w->key,
                           WIFSIGNALED(status) ? "signal" : "status",
                           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), delay);
                w->restart_at = mono_now() + delay;
            }
        }
    }
}

static void reload(struct daemon *d)
{
    struct daemon_settings next;
    struct cp_err err;
    if (!d->reload) return;
    if (d->reload(d->reload_ctx, &next, &err) < 0) {
        d->reloads_failed++;
        note_error(d, "config reload rejected, keeping the running one: %s", err.msg);
        return;
    }
    d->reloads_ok++;
    d->cfg = next;
    cli_error("config reloaded");
}

/* Returns true when the daemon should stop. */
static bool handle_signals(struct daemon *d)
{
    struct signalfd_siginfo si;
    bool stop = false;
    while (read(d->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            stop = true;
        else if (si.ssi_signo == SIGHUP)
            reload(d);
        else if (si.ssi_signo == SIGCHLD)
            reap(d);
    }
    return stop;
}

/* ---- shutdown ---------------------------------------------------------------------------- */

/* Flushes the partial period: ask every worker, collect for up to half the upload timeout,
 * then give the sink the rest of it. */
static void shutdown_flush(struct daemon *d)
{
    flush_workers(d);
    double deadline = mono_now() + upload_timeout_s(d) / 2.0;
    for (;;) {
        struct pollfd fds[MAX_WORKERS];
        struct wstate *owners[MAX_WORKERS];
        int n = 0;
        for (int k = 0; k < MAX_WORKERS; k++)
            if (d->workers[k].used && d->workers[k].pid && d->workers[k].flush_sent_at) {
                fds[n] = (struct pollfd){.fd = d->workers[k].fd, .events = POLLIN};
                owners[n++] = &d->workers[k];
            }
        double left = deadline - mono_now();
        if (n == 0 || left <= 0) break;
        if (poll(fds, (nfds_t)n, (int)(left * 1000) + 1) <= 0) continue;
        for (int i = 0; i < n; i++)
            if (fds[i].revents) read_worker(d, owners[i]);
    }
    struct cp_err err;
    int left_ms = (int)((deadline - mono_now()) * 1000) + upload_timeout_s(d) * 500;
    if (sink_flush(d->sink, left_ms > 0 ? left_ms : 1, &err) < 0)
        note_error(d, "flush: %s", err.msg);
    for (int k = 0; k < MAX_WORKERS; k++)
        if (d->workers[k].used) stop_worker(&d->workers[k], false);
}

/* ---- status and metrics ------------------------------------------------------------------ */

static const char *proc_state(const struct wstate *w, const struct wproc *p)
{
    if (!w->pid) return "restarting";
    if (p->attached) return "sampling";
    return p->error[0] ? "failed" : "attaching";
}

/* The status document (schema in status.h). */
static json_t *render_status(void *ctx)
{
    struct daemon *d = ctx;
    struct sink_stats ss;
    sink_get_stats(d->sink, &ss);
    json_t *targets = json_array();
    unsigned running = 0;
    for (int k = 0; k < MAX_WORKERS; k++) {
        const struct wstate *w = &d->workers[k];
        if (!w->used) continue;
        running += w->pid != 0;
        for (int i = 0; i < w->nprocs; i++) {
            const struct wproc *p = &w->procs[i];
            const struct app *a = &d->apps[p->app];
            json_t *t = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:I, s:I, s:s}", "target", w->key,
                                  "container_id", a->container_id, "pod_uid", a->pod_uid,
                                  "application", a->name, "pid", (int)p->pid, "python", p->python,
                                  "samples", (json_int_t)p->samples, "errors",
                                  (json_int_t)p->errors, "state", proc_state(w, p));
            if (p->error[0]) json_object_set_new(t, "error", json_string(p->error));
            json_array_append_new(targets, t);
        }
    }
    json_t *errors = json_array();
    unsigned n = d->nerrors < 8 ? d->nerrors : 8;
    for (unsigned i = d->nerrors - n; i < d->nerrors; i++)
        json_array_append_new(errors,
                              json_pack("{s:I, s:s}", "time", (json_int_t)d->errors[i % 8].time,
                                        "message", d->errors[i % 8].message));
    char sink[600];
    snprintf(sink, sizeof sink, "%s %s", d->cfg.sink.kind == SINK_HTTP ? "http" : "dir",
             d->cfg.sink.kind == SINK_HTTP ? d->cfg.sink.url : d->cfg.sink.dir);
    json_t *doc = json_pack(
        "{s:s, s:i, s:s, s:I, s:I, s:{s:s?, s:i, s:i, s:s}, s:o, s:{s:i, s:I, s:I}, s:I, s:I, "
        "s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:o}",
        "version", CONPROF_VERSION, "pid", (int)getpid(), "node", d->host, "started_at",
        (json_int_t)d->started_wall, "uptime_s", (json_int_t)(mono_now() - d->started), "config",
        "file", d->cfg.config_file, "rate_hz", d->cfg.rate_hz, "period_s", period_s(d), "sink",
        sink, "targets", targets, "workers", "running", (int)running, "crashes",
        (json_int_t)d->worker_crashes, "hangs", (json_int_t)d->worker_hangs, "samples",
        (json_int_t)d->samples, "sample_errors", (json_int_t)d->sample_errors, "profiles",
        (json_int_t)d->profiles, "profile_errors", (json_int_t)d->profile_errors, "uploads", "sent",
        (json_int_t)ss.sent, "failed", (json_int_t)ss.failed, "retried", (json_int_t)ss.retried,
        "spooled", (json_int_t)ss.spooled, "evicted", (json_int_t)ss.evicted, "queued",
        (json_int_t)ss.queued, "inflight", (json_int_t)ss.inflight, "spool_files",
        (json_int_t)ss.spool_files, "spool_bytes", (json_int_t)ss.spool_bytes, "last_errors",
        errors);
    if (doc && d->link)
        json_object_set_new(doc, "console", agent_link_status_json(d->link, time(NULL)));
    if (doc && d->kubelet) {
        const struct kubelet_client_stats *ks = kubelet_client_stats(d->kubelet);
        json_object_set_new(doc, "kubelet",
                            json_pack("{s:I, s:I, s:I, s:s}", "refreshes",
                                      (json_int_t)ks->refreshes, "failures",
                                      (json_int_t)ks->failures, "pods", (json_int_t)ks->pods,
                                      "last_error", ks->last_error));
    }
    return doc;
}

static void fill_metrics(void *ctx, struct metrics_values *v)
{
    struct daemon *d = ctx;
    struct sink_stats ss;
    sink_get_stats(d->sink, &ss);
    memset(v, 0, sizeof *v);
    v->version = CONPROF_VERSION;
    v->start_time_s = (double)d->started_wall;
    v->samples_total = d->samples;
    v->sample_errors_total = d->sample_errors;
    for (int k = 0; k < MAX_WORKERS; k++) {
        if (!d->workers[k].used) continue;
        v->targets++;
        v->processes += (uint64_t)d->workers[k].nprocs;
        v->workers += d->workers[k].pid != 0;
    }
    v->worker_crashes_total = d->worker_crashes;
    v->worker_hangs_total = d->worker_hangs;
    v->profiles_total = d->profiles;
    v->profile_errors_total = d->profile_errors;
    v->uploads_sent_total = ss.sent;
    v->uploads_failed_total = ss.failed;
    v->uploads_retried_total = ss.retried;
    v->spooled_total = ss.spooled;
    v->spool_evictions_total = ss.evicted;
    v->spool_corrupt_total = ss.spool_corrupt;
    v->spool_bytes = ss.spool_bytes;
    v->spool_files = ss.spool_files;
    v->upload_queue = ss.queued;
    v->uploads_inflight = ss.inflight;
    v->discovery_passes_total = d->discovery_passes;
    v->discovery_last_duration_s = d->discovery_last_s;
    v->config_reloads_ok_total = d->reloads_ok;
    v->config_reloads_failed_total = d->reloads_failed;
}

/* ---- the console link ---------------------------------------------------------------------- */

/* Moves the link on (non-blocking) and expires leases; true when the sessions changed. */
static bool link_changed(struct daemon *d)
{
    agent_link_service(d->link, (int64_t)time(NULL));
    agent_link_tick(d->link, (int64_t)time(NULL));
    uint64_t generation = agent_link_generation(d->link);
    if (generation == d->link_generation) return false;
    d->link_generation = generation;
    return true;
}

/* The counters the console's status heartbeat carries. */
static void link_report(struct daemon *d)
{
    struct sink_stats ss;
    sink_get_stats(d->sink, &ss);
    struct agent_link_counters c = {.samples = (int64_t)d->samples,
                                    .sample_errors = (int64_t)d->sample_errors,
                                    .uploads_sent = (int64_t)ss.sent,
                                    .uploads_failed = (int64_t)ss.failed,
                                    .uploads_spooled = (int64_t)ss.spooled,
                                    .uploads_evicted = (int64_t)ss.evicted};
    agent_link_set_counters(d->link, &c);
}

/* ---- the loop ---------------------------------------------------------------------------- */

static int loop(struct daemon *d)
{
    double next_scan = mono_now();
    d->period_started = mono_now();
    d->period_start_ns = real_now_ns();
    while (!d->stopping) {
        double now = mono_now();
        if (d->link && link_changed(d)) next_scan = now; /* a command: act on it at once */
        if (d->kubelet && kubelet_client_poll(d->kubelet) == 1) next_scan = now; /* new pods */
        if (now >= next_scan) {
            reconcile(d);
            next_scan = now + d->cfg.discovery_interval_s;
        }
        for (int k = 0; k < MAX_WORKERS; k++) {
            struct wstate *w = &d->workers[k];
            if (w->used && !w->pid && w->restart_at && w->restart_at <= now) start_worker(d, w);
            if (w->used && w->pid && w->flush_sent_at &&
                now - w->flush_sent_at > DAEMON_WORKER_TIMEOUT_S) {
                d->worker_hangs++;
                worker_failed(d, w, "did not answer a flush (hung)");
            }
        }
        int period = period_s(d);
        if (now - d->period_started >= period) {
            flush_workers(d);
            d->period++;
            d->period_started =
                now - d->period_started >= 2 * period ? now : d->period_started + period;
            d->period_start_ns = real_now_ns();
        }
        struct pollfd fds[MAX_WORKERS + 3];
        struct wstate *owners[MAX_WORKERS + 3];
        int n = 0;
        fds[n] = (struct pollfd){.fd = d->sigfd, .events = POLLIN};
        owners[n++] = NULL;
        int status_i = -1, metrics_i = -1;
        if (d->status) {
            status_i = n;
            fds[n] = (struct pollfd){.fd = status_server_fd(d->status), .events = POLLIN};
            owners[n++] = NULL;
        }
        if (d->metrics) {
            metrics_i = n;
            fds[n] = (struct pollfd){.fd = metrics_server_fd(d->metrics), .events = POLLIN};
            owners[n++] = NULL;
        }
        for (int k = 0; k < MAX_WORKERS; k++)
            if (d->workers[k].used && d->workers[k].pid) {
                fds[n] = (struct pollfd){.fd = d->workers[k].fd, .events = POLLIN};
                owners[n++] = &d->workers[k];
            }
        double wake =
            next_scan < d->period_started + period ? next_scan : d->period_started + period;
        int timeout = (int)((wake - mono_now()) * 1000) + 1;
        long sink_ms = sink_timeout_ms(d->sink);
        if (sink_ms >= 0 && sink_ms < timeout) timeout = (int)sink_ms;
        if (timeout > 250) timeout = 250; /* the sink's sockets are not in our set: poll it often */
        if (timeout < 0) timeout = 0;
        if (poll(fds, (nfds_t)n, timeout) > 0) {
            if (fds[0].revents && handle_signals(d)) d->stopping = true;
            struct cp_err serr;
            if (status_i >= 0 && fds[status_i].revents &&
                status_server_handle(d->status, &serr) < 0)
                note_error(d, "status socket: %s", serr.msg);
            if (metrics_i >= 0 && fds[metrics_i].revents &&
                metrics_server_handle(d->metrics, &serr) < 0)
                note_error(d, "metrics: %s", serr.msg);
            for (int i = 1; i < n; i++)
                if (fds[i].revents && owners[i] && owners[i]->pid) read_worker(d, owners[i]);
        }
        struct cp_err err;
        if (sink_poll(d->sink, 0, &err) < 0) note_error(d, "sink: %s", err.msg);
        if (d->link) link_report(d);
    }
    shutdown_flush(d);
    return EXIT_OK;
}

int daemon_run(const struct daemon_settings *settings, daemon_reload_fn *reload_fn,
               void *reload_ctx)
{
    struct daemon *d = calloc(1, sizeof *d);
    if (!d) {
        cli_error("out of memory");
        return EXIT_FAILURE_RUN;
    }
    d->cfg = *settings;
    d->reload = reload_fn;
    d->reload_ctx = reload_ctx;
    d->started = mono_now();
    if (settings->node_name && settings->node_name[0])
        snprintf(d->host, sizeof d->host, "%s", settings->node_name);
    else if (gethostname(d->host, sizeof d->host - 1) < 0)
        snprintf(d->host, sizeof d->host, "unknown");
    struct cp_err err;
    struct discovery_options opts = discovery_default_options();
    int rc = EXIT_FAILURE_RUN;
    d->sigfd = open_signals();
    if (d->sigfd < 0) {
        cli_error("signalfd: %s", strerror(errno));
        goto out;
    }
    if (!(d->disc = discovery_new(&opts, &err)) || !(d->sink = sink_open(&d->cfg.sink, &err))) {
        cli_error("%s", err.msg);
        goto out;
    }
    d->started_wall = time(NULL);
    if (d->cfg.status_socket && d->cfg.status_socket[0] &&
        !(d->status = status_server_open(d->cfg.status_socket, render_status, d, &err))) {
        cli_error("status socket: %s", err.msg);
        goto out;
    }
    if (d->cfg.metrics_listen && d->cfg.metrics_listen[0] &&
        !(d->metrics = metrics_server_open(d->cfg.metrics_listen, d->cfg.metrics_allow_remote,
                                           fill_metrics, d, &err))) {
        cli_error("metrics: %s", err.msg);
        goto out;
    }
    if (d->cfg.kubelet.enabled &&
        !(d->kubelet = kubelet_client_open(d->cfg.kubelet.url, d->cfg.kubelet.token_file,
                                           d->cfg.kubelet.ca_file,
                                           (long)d->cfg.upload_timeout_s * 1000, &err)))
        note_error(d, "kubelet lookup off: %s", err.msg);
    if (d->cfg.console.url) {
        static const char *const CAPABILITIES[] = {"cpu", "wall", NULL};
        char state_dir[4096];
        snprintf(state_dir, sizeof state_dir, "%s", d->cfg.console.state_file);
        char *slash = strrchr(state_dir, '/');
        if (slash && slash != state_dir) {
            *slash = '\0';
            if (sink_mkdir_p(state_dir, 0700, &err) < 0) {
                cli_error("console: the state file's directory: %s", err.msg);
                goto out;
            }
        }
        struct agent_link_options lo = {.url = d->cfg.console.url,
                                        .token = d->cfg.console.token,
                                        .ca_file = d->cfg.console.ca_file,
                                        .state_file = d->cfg.console.state_file,
                                        .node = d->host,
                                        .agent_version = CONPROF_VERSION,
                                        .capabilities = CAPABILITIES};
        if (!(d->link = agent_link_open(&lo, &err))) {
            cli_error("console: %s", err.msg);
            goto out;
        }
    }
    rc = loop(d);
out:
    if (d->link) agent_link_close(d->link);
    if (d->kubelet) kubelet_client_close(d->kubelet);
    sessions_clear(d);
    for (int i = 0; i < MAX_APPS; i++)
        app_release(&d->apps[i]);
    if (d->status) status_server_close(d->status);
    if (d->metrics) metrics_server_close(d->metrics);
    if (d->sink) sink_close(d->sink);
    if (d->disc) discovery_free(d->disc);
    if (d->sigfd >= 0) close(d->sigfd);
    free(d);
    return rc;
}
