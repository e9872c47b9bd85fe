/* sink: where finished profiles go — the dispatcher the daemon talks to, and the contract of its
 * backends (directory: sink_dir.c, Pyroscope HTTP ingest: sink_http.c).
 *
 * Contract (daemon side):
 *   - sink_open() builds one sink from a config; sink_submit() hands it a profile_record and always
 *     takes ownership (the caller's struct is left empty, also on error). Nothing blocks: the
 *     daemon calls sink_poll() from its loop (or waits on sink_fdset()/sink_timeout_ms() itself and
 *     then calls sink_poll(s, 0)); uploads make progress only inside sink_poll() and sink_flush().
 *     No call waits for the network; the directory sink and the spool write (and fsync) their
 *     files synchronously, a few hundred kB per period.
 *   - Delivery is at least once: a record is delivered, or spooled, or dropped with a counted and
 *     logged reason (a spooled record delivered just before a crash may be sent again). Counters in
 * struct sink_stats; every drop, retry, spool and eviction also produces one log line through
 * config.log.
 *   - Retry policy: an attempt ends DELIVERED, RETRY (HTTP 5xx/408/429, transport errors, disk
 *     errors) or PERMANENT (other 4xx, 3xx: the record is dropped and counted in `failed`). After a
 *     RETRY the whole sink backs off — one endpoint, so one health state: the next attempt waits
 *     Retry-After when the server gave one (capped at SINK_MAX_RETRY_AFTER_MS), otherwise a delay
 *     drawn uniformly from [0, min(cap, base * 2^(failures-1))] ("full jitter"); while failing,
 *     only one attempt is in flight (a probe). The failed record goes back to its place in the
 * queue (submission order), so the oldest is always tried first.
 *   - Spool policy: a record goes to the on-disk spool (spool.h) once it has failed
 *     `spool_after_attempts` attempts, or has waited `spool_after_ms` since it was submitted, or
 *     when the in-memory queue holds more than `max_queued_bytes`. Spooled records are delivered
 *     oldest first whenever the sink is not backing off and the memory queue is empty (fresh
 *     profiles go first); a spooled record that fails again stays on disk where it was. Without a
 *     spool directory such records are dropped and counted in `failed`.
 *   - sink_flush(timeout) (SIGTERM): delivers what is queued until the deadline, never starting an
 *     attempt that the backoff places after it, then spools the rest (in-flight uploads are
 *     aborted and spooled). The spool is not drained during a flush.
 *   - sink_close() does not flush: call sink_flush() first. Not thread-safe; one owner.
 *
 * Contract (backend side): a backend starts an attempt for a job and reports its end exactly once,
 * either at once from start() (synchronous backends) or later through perform()'s callback. The
 * job's record stays valid and unchanged while the attempt runs; cancel() ends an attempt without
 * reporting it. The backend keeps its per-attempt state in job->transfer.
 */
#ifndef CONPROF_AGENT_SINK_H
#define CONPROF_AGENT_SINK_H

#include "error.h"
#include "profile_record.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/select.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SINK_DEFAULT_UPLOAD_TIMEOUT_MS 10000
#define SINK_DEFAULT_SPOOL_MAX_BYTES (64u << 20)
#define SINK_DEFAULT_SPOOL_AFTER_ATTEMPTS 3
#define SINK_DEFAULT_SPOOL_AFTER_MS 60000
#define SINK_DEFAULT_BACKOFF_BASE_MS 1000
#define SINK_DEFAULT_BACKOFF_CAP_MS 60000
#define SINK_DEFAULT_MAX_INFLIGHT 4
#define SINK_DEFAULT_MAX_QUEUED_BYTES (16u << 20)
#define SINK_MAX_RETRY_AFTER_MS (3600 * 1000)

enum sink_kind {
    SINK_DIR = 1,
    SINK_HTTP = 2,
};

struct sink_config {
    enum sink_kind kind;
    const char *dir;          /* SINK_DIR: the output directory (created if missing) */
    const char *url;          /* SINK_HTTP: base URL, http:// or https://; "/ingest" is appended */
    const char *bearer_token; /* SINK_HTTP: NULL or "" for no Authorization header */
    const char *ca_file;   /* SINK_HTTP: NULL for the system CA store; verification is always on */
    int upload_timeout_ms; /* per attempt, whole transfer (CURLOPT_TIMEOUT_MS) */
    const char *spool_dir; /* NULL: no spool */
    uint64_t spool_max_bytes;
    int spool_after_attempts;
    int spool_after_ms;
    int backoff_base_ms;
    int backoff_cap_ms;
    int max_inflight;
    size_t max_queued_bytes;
    /* One line per event worth a human's attention (drops, retries, spooling, evictions).
     * NULL: "conprof-agent: <line>" on stderr. */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
};

struct sink_stats {
    uint64_t sent;    /* records delivered */
    uint64_t failed;  /* records dropped for good (permanent error, or could not be spooled) */
    uint64_t retried; /* attempts that failed and will be tried again */
    uint64_t spooled; /* records written to the spool */
    uint64_t evicted; /* spool files deleted to stay under the cap */
    uint64_t spool_corrupt; /* spool files that could not be read back (deleted) */
    uint64_t queued;        /* records in memory waiting for an attempt (gauge) */
    uint64_t inflight;      /* attempts running (gauge) */
    uint64_t spool_files;   /* (gauge) */
    uint64_t spool_bytes;   /* (gauge) */
    char last_error[512];   /* "" when none yet */
};

struct sink;

void sink_config_defaults(struct sink_config *c);
/* Checks the config, creates the directories, scans the spool. NULL with err set on failure. */
struct sink *sink_open(const struct sink_config *c, struct cp_err *err);
void sink_close(struct sink *s);

/* Queues *r (moved: *r is left empty). -1 with err when the record is unusable (no application
 * name, empty profile); it is then dropped and counted in `failed`. */
int sink_submit(struct sink *s, struct profile_record *r, struct cp_err *err);
/* Makes progress: finishes attempts, starts due ones, drains the spool. Waits at most timeout_ms
 * for network activity or the next timer; returns at once when nothing is pending. 0, or -1
 * with err when the event machinery itself fails (not for failed uploads: those are counted). */
int sink_poll(struct sink *s, int timeout_ms, struct cp_err *err);
/* For callers with their own select/poll loop: the sink's sockets, and how long until
 * sink_poll(s, 0) has work (-1: nothing pending, 0: now). */
int sink_fdset(struct sink *s, fd_set *read_fds, fd_set *write_fds, fd_set *exc_fds, int *max_fd);
long sink_timeout_ms(struct sink *s);
/* Delivers what is queued until now + timeout_ms, then spools what is left. 0 when everything
 * queued was delivered, 1 when some records were spooled or dropped (counted), -1 on err. */
int sink_flush(struct sink *s, int timeout_ms, struct cp_err *err);
void sink_get_stats(const struct sink *s, struct sink_stats *out);
/* Changes upload_timeout_ms for the attempts that start from now on (a console's session asked for
 * another one). Out of range (1 ms .. 1 h) is ignored. */
void sink_set_upload_timeout(struct sink *s, int timeout_ms);

/* ---- backends -------------------------------------------------------------------------- */

enum sink_outcome {
    SINK_DELIVERED = 0,
    SINK_RETRY = 1,
    SINK_PERMANENT = 2,
};

struct sink_result {
    enum sink_outcome outcome;
    long retry_after_ms; /* -1 unless the server said when to come back */
    char reason[400];    /* why it was not delivered */
};

struct sink_job {
    struct profile_record rec;
    bool from_spool; /* rec is a copy of spool entry spool_seq */
    uint64_t spool_seq;
    uint64_t order;       /* submission order: a retried job goes back to its place */
    int attempts;         /* failed attempts so far */
    int64_t submitted_ms; /* monotonic clock */
    void *transfer;       /* the backend's state of the running attempt */
    struct sink_job *next, *prev;
};

typedef void sink_done_fn(void *ctx, struct sink_job *job, const struct sink_result *res);

struct sink_backend_ops {
    /* 1: finished at once, *res filled; 0: running, reported later through perform(). */
    int (*start)(void *backend, struct sink_job *job, struct sink_result *res);
    /* Waits at most timeout_ms for the backend's sockets. */
    int (*wait)(void *backend, int timeout_ms, struct cp_err *err);
    /* Moves running attempts on; calls done() for each one that ended. */
    int (*perform)(void *backend, sink_done_fn *done, void *ctx, struct cp_err *err);
    void (*cancel)(void *backend, struct sink_job *job);
    long (*timeout_ms)(void *backend); /* -1 when it has no timer */
    int (*fdset)(void *backend, fd_set *r, fd_set *w, fd_set *e, int *max_fd);
    void (*destroy)(void *backend);
    void (*set_upload_timeout)(void *backend, long timeout_ms); /* NULL: nothing to time out */
};

void *sink_dir_create(const struct sink_config *c, struct cp_err *err);
extern const struct sink_backend_ops sink_dir_ops;
void *sink_http_create(const struct sink_config *c, struct cp_err *err);
extern const struct sink_backend_ops sink_http_ops;

/* The Pyroscope series name "app{key=value,...}" of a record: the application name and label
 * keys reduced to the characters Pyroscope accepts, label values without the separators its
 * parser splits on (, } { =) and without surrounding blanks; labels left empty are left out. */
int sink_http_series_name(const struct profile_record *r, struct buf *out);

/* The directory sink's file names for a record: "<app>/<from, ISO 8601 basic UTC>-<seq>" without
 * the .pb.gz / .json suffix; app reduced to [A-Za-z0-9._-] (never "." or ".."). */
int sink_dir_relative_stem(const struct profile_record *r, uint64_t seq, struct buf *out);

/* Writes parts to dirfd/name atomically: "<name>.tmp", fsync, rename — with noreplace, an
 * existing name is left alone and 1 returned — then fsync of the directory. A crash leaves at
 * most the .tmp file. 0 written, 1 exists (noreplace), -1 with err (the .tmp is removed).
 * The backends' name for fileio_write_atomic() (fileio.h), which the console shares. */
int sink_write_atomic(int dirfd, const char *name, const struct iovec *parts, int nparts,
                      mode_t mode, bool noreplace, struct cp_err *err);

/* mkdir -p: creates dir and its missing parents with mode. */
int sink_mkdir_p(const char *dir, mode_t mode, struct cp_err *err);

#endif
