/* sink: the dispatcher between the daemon and a backend (directory or HTTP), with the spool.
 *
 * Jobs live on exactly one of two lists: `queue` (waiting, FIFO; a job whose attempt failed goes
 * back to the head) or `inflight` (an attempt is running in the backend). A record read back
 * from the spool becomes a job that goes straight to `inflight` and never joins the queue: if its
 * attempt fails it is simply released and stays on disk, so a record is never held twice.
 *
 * Everything happens in pump(), called by sink_poll() and sink_flush(): spool the jobs that
 * waited too long or do not fit in memory, then, unless backing off, start attempts — queued
 * jobs first, then the spool, oldest first. Backoff is one state for the whole sink (a single
 * endpoint is either up or down), with "full jitter" delays from a per-sink PRNG, so many
 * agents that lost the same server do not come back in step.
 */
#include "sink.h"

#include "fileio.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct job_list {
    struct sink_job *head, *tail;
    size_t n;
};

struct sink {
    struct sink_config cfg;
    const struct sink_backend_ops *ops;
    void *backend;
    bool have_spool;
    struct spool spool;
    struct job_list queue, inflight;
    size_t queued_bytes;
    uint64_t submitted;  /* records submitted so far: the next job's order */
    int failures;        /* consecutive failed attempts; 0 when the sink is healthy */
    int64_t next_try_ms; /* no attempt starts before this (monotonic) */
    int64_t spool_retry_ms;
    uint64_t rng;
    struct sink_stats stats;
    uint64_t logged_evicted, logged_corrupt;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sink_log(struct sink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sink_log(struct sink *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->cfg.log)
        s->cfg.log(s->cfg.log_ctx, line);
    else
        fprintf(stderr, "conprof-agent: %s\n", line);
}

/* "profile of app 'x' from 2024-05-01T12:00:45Z" */
static void describe(const struct profile_record *r, char *out, size_t size)
{
    time_t t = (time_t)(r->from_ns / 1000000000);
    struct tm tm;
    char when[32] = "?";
    if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(out, size, "profile of app '%.100s' from %s", r->app_name ? r->app_name : "", when);
}

/* ---- lists and jobs ----------------------------------------------------------------------- */

static void list_remove(struct job_list *l, struct sink_job *j)
{
    *(j->prev ? &j->prev->next : &l->head) = j->next;
    *(j->next ? &j->next->prev : &l->tail) = j->prev;
    j->next = j->prev = NULL;
    l->n--;
}

static void list_push(struct job_list *l, struct sink_job *j, bool front)
{
    if (front) {
        j->prev = NULL;
        j->next = l->head;
        *(l->head ? &l->head->prev : &l->tail) = j;
        l->head = j;
    } else {
        j->next = NULL;
        j->prev = l->tail;
        *(l->tail ? &l->tail->next : &l->head) = j;
        l->tail = j;
    }
    l->n++;
}

static void queue_push(struct sink *s, struct sink_job *j)
{
    list_push(&s->queue, j, false);
    s->queued_bytes += j->rec.pprof_gz.len;
}

/* Back to its place by submission order (attempts that ran together may fail in any order). */
static void queue_requeue(struct sink *s, struct sink_job *j)
{
    struct sink_job *after = s->queue.tail;
    while (after && after->order > j->order)
        after = after->prev;
    if (!after) {
        list_push(&s->queue, j, true);
    } else {
        j->prev = after;
        j->next = after->next;
        *(after->next ? &after->next->prev : &s->queue.tail) = j;
        after->next = j;
        s->queue.n++;
    }
    s->queued_bytes += j->rec.pprof_gz.len;
}

static struct sink_job *queue_take(struct sink *s, struct sink_job *j)
{
    list_remove(&s->queue, j);
    s->queued_bytes -= j->rec.pprof_gz.len;
    return j;
}

static void job_free(struct sink_job *j)
{
    profile_record_free(&j->rec);
    free(j);
}

/* Formats a failure into last_error and logs it. */
static void report_error(struct sink *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void report_error(struct sink *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->stats.last_error, sizeof s->stats.last_error, fmt, ap);
    va_end(ap);
    sink_log(s, "%s", s->stats.last_error);
}

/* ---- spool side --------------------------------------------------------------------------- */

static void log_spool_counters(struct sink *s)
{
    const struct spool_counters *c = &s->spool.counters;
    if (c->evicted > s->logged_evicted) {
        sink_log(s,
                 "spool %s is over its cap of %" PRIu64 " bytes: evicted %" PRIu64
                 " oldest profile(s) (%" PRIu64 " in all)",
                 s->spool.dir, s->spool.max_bytes, c->evicted - s->logged_evicted, c->evicted);
        s->logged_evicted = c->evicted;
    }
    if (c->corrupt > s->logged_corrupt) {
        sink_log(s, "spool %s: deleted %" PRIu64 " corrupt file(s), last %s", s->spool.dir,
                 c->corrupt - s->logged_corrupt, s->spool.last_corrupt);
        s->logged_corrupt = c->corrupt;
    }
}

/* Moves a job (not on any list) to the spool, or drops it with a logged reason. */
static void spool_job(struct sink *s, struct sink_job *j, const char *why)
{
    char what[200];
    describe(&j->rec, what, sizeof what);
    if (j->from_spool) {
        spool_release(&s->spool, j->spool_seq);
        job_free(j);
        return;
    }
    struct cp_err err = {0};
    if (!s->have_spool) {
        cp_err_set(&err, CP_ERR_IO, "no spool directory is configured");
    } else if (spool_put(&s->spool, &j->rec, NULL, &err) == 0) {
        s->stats.spooled++;
        sink_log(s, "spooled %s (%s)", what, why);
        log_spool_counters(s);
        job_free(j);
        return;
    }
    log_spool_counters(s);
    s->stats.failed++;
    report_error(s, "dropped %s (%s): cannot spool it: %s", what, why, err.msg);
    job_free(j);
}

/* Jobs that waited longer than spool_after_ms, and the oldest beyond max_queued_bytes. */
static void spool_stale(struct sink *s, int64_t now)
{
    struct sink_job *j = s->queue.head;
    while (j) {
        struct sink_job *next = j->next;
        if (now - j->submitted_ms >= s->cfg.spool_after_ms) {
            char why[64];
            snprintf(why, sizeof why, "waited %" PRId64 " s", (now - j->submitted_ms) / 1000);
            spool_job(s, queue_take(s, j), why);
        }
        j = next;
    }
    while (s->queued_bytes > s->cfg.max_queued_bytes && s->queue.n > 1)
        spool_job(s, queue_take(s, s->queue.head), "memory queue full");
}

static struct sink_job *job_from_spool(struct sink *s, int64_t now)
{
    if (!s->have_spool || now < s->spool_retry_ms) return NULL;
    struct sink_job *j = calloc(1, sizeof *j);
    struct cp_err err = {0};
    int rc = j ? spool_take_oldest(&s->spool, &j->rec, &j->spool_seq, &err) : -1;
    log_spool_counters(s);
    if (rc == 1) {
        j->from_spool = true;
        j->submitted_ms = now;
        return j;
    }
    free(j);
    if (rc < 0) {
        sink_log(s, "cannot read the spool back (trying again in 1 s): %s",
                 j ? err.msg : "out of memory");
        s->spool_retry_ms = now + 1000;
    }
    return NULL;
}

/* ---- attempts ----------------------------------------------------------------------------- */

static uint64_t rng_next(struct sink *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t backoff_delay_ms(struct sink *s)
{
    int64_t ceiling = s->cfg.backoff_base_ms;
    for (int i = 1; i < s->failures && ceiling < s->cfg.backoff_cap_ms; i++)
        ceiling *= 2;
    if (ceiling > s->cfg.backoff_cap_ms) ceiling = s->cfg.backoff_cap_ms;
    return (int64_t)(rng_next(s) % (uint64_t)(ceiling + 1));
}

static void on_delivered(struct sink *s, struct sink_job *j)
{
    if (s->failures > 0) {
        char what[200];
        describe(&j->rec, what, sizeof what);
        sink_log(s, "delivered %s: the sink is back after %d failed attempt(s)", what, s->failures);
    }
    s->stats.sent++;
    s->failures = 0;
    s->next_try_ms = 0;
    if (j->from_spool) spool_remove(&s->spool, j->spool_seq);
    job_free(j);
}

static void on_permanent(struct sink *s, struct sink_job *j, const struct sink_result *res)
{
    char what[200];
    describe(&j->rec, what, sizeof what);
    report_error(s, "dropped %s: %s", what, res->reason);
    s->stats.failed++;
    s->failures = 0; /* the server answered: it is up */
    s->next_try_ms = 0;
    if (j->from_spool) spool_remove(&s->spool, j->spool_seq);
    job_free(j);
}

static void on_retry(struct sink *s, struct sink_job *j, const struct sink_result *res)
{
    int64_t now = now_ms();
    s->stats.retried++;
    s->failures++;
    j->attempts++;
    int64_t delay = backoff_delay_ms(s);
    if (res->retry_after_ms >= 0)
        delay = res->retry_after_ms < SINK_MAX_RETRY_AFTER_MS ? res->retry_after_ms
                                                              : SINK_MAX_RETRY_AFTER_MS;
    s->next_try_ms = now + delay;
    char what[200];
    describe(&j->rec, what, sizeof what);
    char attempt[40] = "new attempt for the spooled";
    if (!j->from_spool) snprintf(attempt, sizeof attempt, "attempt %d for", j->attempts);
    report_error(s, "%s %s failed: %s; next attempt in %" PRId64 " ms%s", attempt, what,
                 res->reason, delay, res->retry_after_ms >= 0 ? " (Retry-After)" : "");
    if (j->from_spool) {
        spool_release(&s->spool, j->spool_seq);
        job_free(j);
    } else if (j->attempts >= s->cfg.spool_after_attempts) {
        char why[64];
        snprintf(why, sizeof why, "%d failed attempts", j->attempts);
        spool_job(s, j, why);
    } else {
        queue_requeue(s, j);
    }
}

static void handle_result(struct sink *s, struct sink_job *j, const struct sink_result *res)
{
    if (res->outcome == SINK_DELIVERED)
        on_delivered(s, j);
    else if (res->outcome == SINK_PERMANENT)
        on_permanent(s, j, res);
    else
        on_retry(s, j, res);
}

static void on_done(void *ctx, struct sink_job *j, const struct sink_result *res)
{
    struct sink *s = ctx;
    list_remove(&s->inflight, j);
    j->transfer = NULL;
    handle_result(s, j, res);
}

static void start_job(struct sink *s, struct sink_job *j)
{
    struct sink_result res = {.outcome = SINK_RETRY, .retry_after_ms = -1};
    list_push(&s->inflight, j, false);
    if (s->ops->start(s->backend, j, &res) == 1) on_done(s, j, &res);
}

static size_t inflight_limit(const struct sink *s)
{
    return s->failures > 0 ? 1 : (size_t)s->cfg.max_inflight;
}

/* Attempts started by one pump(): bounds the time a synchronous backend (the directory sink,
 * with its fsyncs) spends in one call when a backlog drains; the rest waits for the next call. */
#define MAX_STARTS_PER_PUMP 16

static void pump(struct sink *s, bool flushing)
{
    spool_stale(s, now_ms());
    int starts = 0;
    for (int64_t now = now_ms();
         now >= s->next_try_ms && s->inflight.n < inflight_limit(s) && starts < MAX_STARTS_PER_PUMP;
         now = now_ms(), starts++) {
        struct sink_job *j = s->queue.head ? queue_take(s, s->queue.head) : NULL;
        if (!j && !flushing) j = job_from_spool(s, now);
        if (!j) break;
        start_job(s, j);
    }
}

/* ---- public API --------------------------------------------------------------------------- */

void sink_config_defaults(struct sink_config *c)
{
    memset(c, 0, sizeof *c);
    c->kind = SINK_DIR;
    c->upload_timeout_ms = SINK_DEFAULT_UPLOAD_TIMEOUT_MS;
    c->spool_max_bytes = SINK_DEFAULT_SPOOL_MAX_BYTES;
    c->spool_after_attempts = SINK_DEFAULT_SPOOL_AFTER_ATTEMPTS;
    c->spool_after_ms = SINK_DEFAULT_SPOOL_AFTER_MS;
    c->backoff_base_ms = SINK_DEFAULT_BACKOFF_BASE_MS;
    c->backoff_cap_ms = SINK_DEFAULT_BACKOFF_CAP_MS;
    c->max_inflight = SINK_DEFAULT_MAX_INFLIGHT;
    c->max_queued_bytes = SINK_DEFAULT_MAX_QUEUED_BYTES;
}

static int check_config(const struct sink_config *c, struct cp_err *err)
{
    const char *bad = NULL;
    if (c->kind != SINK_DIR && c->kind != SINK_HTTP)
        bad = "kind: expected the directory or the HTTP sink";
    else if (c->kind == SINK_DIR && (!c->dir || !*c->dir))
        bad = "dir: expected a directory";
    else if (c->kind == SINK_HTTP && (!c->url || !*c->url))
        bad = "url: expected an http:// or https:// URL";
    else if (c->upload_timeout_ms < 1 || c->upload_timeout_ms > 3600 * 1000)
        bad = "upload_timeout: expected 1 ms to 1 h";
    else if (c->spool_after_attempts < 1 || c->spool_after_attempts > 1000)
        bad = "spool_after_attempts: expected 1 to 1000";
    else if (c->spool_after_ms < 0)
        bad = "spool_after: expected a duration >= 0";
    else if (c->backoff_base_ms < 1 || c->backoff_cap_ms < c->backoff_base_ms ||
             c->backoff_cap_ms > 24 * 3600 * 1000)
        bad = "backoff: expected 1 ms <= base <= cap <= 24 h";
    else if (c->max_inflight < 1 || c->max_inflight > 64)
        bad = "max_inflight: expected 1 to 64";
    else if (c->spool_dir && c->spool_max_bytes < 4096)
        bad = "spool_max_bytes: expected at least 4096";
    if (bad) cp_err_set(err, CP_ERR_INVALID, "sink config: %s", bad);
    return bad ? -1 : 0;
}

struct sink *sink_open(const struct sink_config *c, struct cp_err *err)
{
    if (check_config(c, err) < 0) return NULL;
    struct sink *s = calloc(1, sizeof *s);
    if (!s) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->cfg = *c;
    s->cfg.dir = s->cfg.url = s->cfg.bearer_token = s->cfg.ca_file = s->cfg.spool_dir = NULL;
    s->ops = c->kind == SINK_DIR ? &sink_dir_ops : &sink_http_ops;
    s->backend = c->kind == SINK_DIR ? sink_dir_create(c, err) : sink_http_create(c, err);
    if (!s->backend) {
        free(s);
        return NULL;
    }
    if (c->spool_dir) {
        if (spool_open(&s->spool, c->spool_dir, c->spool_max_bytes, err) < 0) {
            s->ops->destroy(s->backend);
            free(s);
            return NULL;
        }
        s->have_spool = true;
        log_spool_counters(s);
    }
    if (getrandom(&s->rng, sizeof s->rng, GRND_NONBLOCK) != (ssize_t)sizeof s->rng)
        s->rng = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
    return s;
}

static void free_list(struct sink *s, struct job_list *l, bool cancel)
{
    while (l->head) {
        struct sink_job *j = l->head;
        list_remove(l, j);
        if (cancel) s->ops->cancel(s->backend, j);
        job_free(j);
    }
}

void sink_close(struct sink *s)
{
    if (!s) return;
    free_list(s, &s->inflight, true);
    free_list(s, &s->queue, false);
    s->ops->destroy(s->backend);
    if (s->have_spool) spool_close(&s->spool);
    free(s);
}

int sink_submit(struct sink *s, struct profile_record *r, struct cp_err *err)
{
    struct sink_job *j = calloc(1, sizeof *j);
    const char *bad = !j                              ? "out of memory"
                      : !r->app_name || !*r->app_name ? "it has no application name"
                      : r->pprof_gz.len == 0          ? "its profile is empty"
                      : r->until_ns < r->from_ns      ? "it ends before it starts"
                                                      : NULL;
    if (bad) {
        char what[200];
        describe(r, what, sizeof what);
        cp_err_set(err, j ? CP_ERR_INVALID : CP_ERR_NOMEM, "dropped %s: %s", what, bad);
        report_error(s, "%s", err->msg);
        s->stats.failed++;
        profile_record_free(r);
        free(j);
        return -1;
    }
    j->rec = *r;
    memset(r, 0, sizeof *r);
    j->submitted_ms = now_ms();
    j->order = ++s->submitted;
    queue_push(s, j);
    return 0;
}

static bool has_work(struct sink *s)
{
    return s->queue.n > 0 || (s->have_spool && spool_idle_count(&s->spool) > 0);
}

long sink_timeout_ms(struct sink *s)
{
    int64_t now = now_ms(), t = -1;
    if (has_work(s) && s->inflight.n < inflight_limit(s)) {
        int64_t at = s->next_try_ms;
        if (s->queue.n == 0 && s->spool_retry_ms > at)
            at = s->spool_retry_ms; /* only the spool is left, and it cannot be read just now */
        t = at > now ? at - now : 0;
    }
    if (s->queue.n > 0) {
        int64_t stale = s->queue.head->submitted_ms + s->cfg.spool_after_ms - now;
        t = t < 0 || stale < t ? (stale > 0 ? stale : 0) : t;
    }
    if (s->inflight.n > 0) {
        long b = s->ops->timeout_ms(s->backend);
        if (b < 0) b = 1000;
        t = t < 0 || b < t ? b : t;
    }
    return (long)t;
}

int sink_fdset(struct sink *s, fd_set *read_fds, fd_set *write_fds, fd_set *exc_fds, int *max_fd)
{
    return s->ops->fdset(s->backend, read_fds, write_fds, exc_fds, max_fd);
}

static int step(struct sink *s, long wait_ms, struct cp_err *err)
{
    if ((s->inflight.n > 0 || wait_ms > 0) && s->ops->wait(s->backend, (int)wait_ms, err) < 0)
        return -1;
    return s->ops->perform(s->backend, on_done, s, err);
}

int sink_poll(struct sink *s, int timeout_ms, struct cp_err *err)
{
    pump(s, false);
    long wait = sink_timeout_ms(s);
    if (wait < 0 && s->inflight.n == 0) return 0;
    if (wait < 0 || wait > timeout_ms) wait = timeout_ms < 0 ? 0 : timeout_ms;
    if (step(s, wait, err) < 0) return -1;
    pump(s, false);
    return 0;
}

int sink_flush(struct sink *s, int timeout_ms, struct cp_err *err)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    uint64_t undelivered = s->stats.spooled + s->stats.failed;
    int rc = 0;
    for (;;) {
        pump(s, true);
        int64_t now = now_ms();
        if ((s->queue.n == 0 && s->inflight.n == 0) || now >= deadline ||
            (s->inflight.n == 0 && s->next_try_ms >= deadline))
            break;
        int64_t wait = deadline - now;
        if (s->inflight.n == 0 && s->next_try_ms - now < wait) wait = s->next_try_ms - now;
        if (wait < 0) wait = 0;
        if (step(s, (long)wait, err) < 0) {
            rc = -1;
            break;
        }
    }
    while (s->inflight.head) {
        struct sink_job *j = s->inflight.head;
        list_remove(&s->inflight, j);
        s->ops->cancel(s->backend, j);
        j->transfer = NULL;
        spool_job(s, j, "shutting down during its upload");
    }
    while (s->queue.head)
        spool_job(s, queue_take(s, s->queue.head), "shutting down");
    if (rc < 0) return -1;
    return s->stats.spooled + s->stats.failed > undelivered ? 1 : 0;
}

void sink_set_upload_timeout(struct sink *s, int timeout_ms)
{
    if (timeout_ms < 1 || timeout_ms > 3600 * 1000 || timeout_ms == s->cfg.upload_timeout_ms)
        return;
    s->cfg.upload_timeout_ms = timeout_ms;
    if (s->ops->set_upload_timeout) s->ops->set_upload_timeout(s->backend, timeout_ms);
}

void sink_get_stats(const struct sink *s, struct sink_stats *out)
{
    *out = s->stats;
    out->queued = s->queue.n;
    out->inflight = s->inflight.n;
    if (s->have_spool) {
        out->evicted = s->spool.counters.evicted;
        out->spool_corrupt = s->spool.counters.corrupt;
        out->spool_files = s->spool.nentries;
        out->spool_bytes = s->spool.bytes;
    }
}

/* ---- files -------------------------------------------------------------------------------- */

int sink_mkdir_p(const char *dir, mode_t mode, struct cp_err *err)
{
    char path[4096];
    if (!*dir || snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        cp_err_set(err, CP_ERR_INVALID, "bad directory name '%.100s'", dir);
        return -1;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, mode) < 0 && errno != EEXIST) {
            cp_err_set(err, CP_ERR_IO, "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        *p = saved;
        if (!saved) return 0;
    }
}

int sink_write_atomic(int dirfd, const char *name, const struct iovec *parts, int nparts,
                      mode_t mode, bool noreplace, struct cp_err *err)
{
    return fileio_write_atomic(dirfd, name, parts, nparts, mode, noreplace ? FILEIO_NOREPLACE : 0,
                               err);
}
