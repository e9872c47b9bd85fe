/* sink_dir: the embedded default sink — one gzipped pprof and one JSON sidecar per record.
 *
 * Layout: <dir>/<app>/<from>-<seq>.pb.gz and <from>-<seq>.json, where <from> is the period start
 * in ISO 8601 basic UTC (20240501T120045Z: sortable, no colons for tools that dislike them) and
 * <seq> counts this sink's writes. Both files are written with sink_write_atomic() and never
 * replace an existing file (a name taken, by an earlier run for example, moves on to the next
 * seq). The sidecar goes first, so whoever sees a .pb.gz also finds its labels.
 *
 * The sidecar (jansson), for example:
 *   {"application_name": "shop", "profile": "20240501T120045Z-000001.pb.gz", "format": "pprof",
 *    "from": "2024-05-01T12:00:45.000Z", "until": "2024-05-01T12:01:30.000Z",
 *    "from_unix_ns": 1714564845000000000, "until_unix_ns": 1714564890000000000,
 *    "sample_rate_hz": 100, "labels": {"application_name": "shop", "host": "node-1", ...}}
 * Label bytes that are not valid UTF-8 (they come from process environments) are written as
 * U+FFFD. The backend is synchronous: start() writes and reports at once; a failed write is a
 * RETRY (full disks and I/O errors pass), so the dispatcher's backoff and spool apply.
 */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAME_TRIES 1000

struct dir_backend {
    int dirfd;
    char *dir;
    uint64_t seq;
};

/* ---- names -------------------------------------------------------------------------------- */

static int append_app_component(struct buf *out, const char *app)
{
    size_t start = out->len;
    for (const char *p = app; *p && out->len - start < 200; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (buf_append_byte(out, ok ? (uint8_t)c : '_') < 0) return -1;
    }
    const char *comp = out->data ? out->data + start : "";
    size_t n = out->len - start;
    if (n == 0 || (n == 1 && comp[0] == '.') || (n == 2 && comp[0] == '.' && comp[1] == '.')) {
        out->len = start;
        return buf_append_str(out, "_");
    }
    return 0;
}

static void split_ns(int64_t ns, time_t *sec, long *ms)
{
    int64_t s = ns / 1000000000, rem = ns % 1000000000;
    if (rem < 0) {
        s--;
        rem += 1000000000;
    }
    *sec = (time_t)s;
    *ms = (long)(rem / 1000000);
}

static int append_time(struct buf *out, int64_t ns, bool extended)
{
    time_t sec;
    long ms;
    split_ns(ns, &sec, &ms);
    struct tm tm;
    char text[40];
    if (!gmtime_r(&sec, &tm) ||
        !strftime(text, sizeof text, extended ? "%Y-%m-%dT%H:%M:%S" : "%Y%m%dT%H%M%SZ", &tm))
        return -1;
    return extended ? buf_printf(out, "%s.%03ldZ", text, ms) : buf_append_str(out, text);
}

static int append_file_stem(struct buf *out, const struct profile_record *r, uint64_t seq)
{
    return append_time(out, r->from_ns, false) || buf_printf(out, "-%06" PRIu64, seq) ? -1 : 0;
}

int sink_dir_relative_stem(const struct profile_record *r, uint64_t seq, struct buf *out)
{
    return append_app_component(out, r->app_name ? r->app_name : "") || buf_append_byte(out, '/') ||
                   append_file_stem(out, r, seq)
               ? -1
               : 0;
}

/* ---- sidecar ------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (1..4), or 0. */
static size_t utf8_sequence(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t n = c >= 0xc2 && c <= 0xdf   ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] > 0x8f))
        return 0; /* overlong, surrogate, above U+10FFFF */
    return n;
}

static json_t *json_text(const char *s)
{
    struct buf b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_sequence(p);
        if (buf_append(&b, n ? (const void *)p : "\xef\xbf\xbd", n ? n : 3) < 0) {
            buf_free(&b);
            return NULL;
        }
        p += n ? n : 1;
    }
    json_t *j = json_stringn(b.data ? b.data : "", b.len);
    buf_free(&b);
    return j;
}

static int set_new(json_t *obj, const char *key, json_t *value)
{
    return value ? json_object_set_new(obj, key, value) : -1;
}

static int append_sidecar(struct buf *out, const struct profile_record *r, const char *profile)
{
    json_t *root = json_object(), *labels = json_object();
    struct buf from = {0}, until = {0};
    int rc = !root || !labels || append_time(&from, r->from_ns, true) ||
             append_time(&until, r->until_ns, true);
    rc = rc || set_new(root, "application_name", json_text(r->app_name)) ||
         set_new(root, "profile", json_text(profile)) ||
         set_new(root, "format", json_string("pprof")) ||
         set_new(root, "from", json_string(from.data)) ||
         set_new(root, "until", json_string(until.data)) ||
         set_new(root, "from_unix_ns", json_integer(r->from_ns)) ||
         set_new(root, "until_unix_ns", json_integer(r->until_ns)) ||
         set_new(root, "sample_rate_hz", json_integer(r->rate_hz));
    for (size_t i = 0; !rc && i < r->nlabels; i++) {
        json_t *k = json_text(r->labels[i].key);
        rc = !k || set_new(labels, json_string_value(k), json_text(r->labels[i].value));
        json_decref(k);
    }
    if (!rc) {
        rc = json_object_set(root, "labels", labels);
        char *text = rc ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
        rc = !text || buf_append_str(out, text) || buf_append_byte(out, '\n');
        free(text);
    }
    json_decref(labels);
    json_decref(root);
    buf_free(&from);
    buf_free(&until);
    return rc ? -1 : 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int open_app_dir(struct dir_backend *d, const struct profile_record *r, struct cp_err *err)
{
    struct buf app = {0};
    if (append_app_component(&app, r->app_name) < 0) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    if (mkdirat(d->dirfd, app.data, 0755) < 0 && errno != EEXIST) {
        cp_err_set(err, CP_ERR_IO, "cannot create %s/%s: %s", d->dir, app.data, strerror(errno));
        buf_free(&app);
        return -1;
    }
    int fd = openat(d->dirfd, app.data, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        cp_err_set(err, CP_ERR_IO, "cannot open %s/%s: %s", d->dir, app.data, strerror(errno));
    buf_free(&app);
    return fd;
}

/* 0 written, 1 the name is taken, -1 err. */
static int write_pair(int appfd, const struct profile_record *r, uint64_t seq, struct cp_err *err)
{
    struct buf stem = {0}, name = {0}, sidecar = {0};
    int rc = -1;
    if (append_file_stem(&stem, r, seq) || buf_printf(&name, "%s.pb.gz", stem.data) ||
        append_sidecar(&sidecar, r, name.data)) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory writing a profile");
        goto out;
    }
    struct iovec json_part = {sidecar.data, sidecar.len};
    struct iovec pprof_part = {r->pprof_gz.data, r->pprof_gz.len};
    buf_reset(&name);
    buf_printf(&name, "%s.json", stem.data);
    rc = sink_write_atomic(appfd, name.data, &json_part, 1, 0644, true, err);
    if (rc != 0) goto out;
    char json_name[256];
    snprintf(json_name, sizeof json_name, "%s", name.data);
    buf_reset(&name);
    buf_printf(&name, "%s.pb.gz", stem.data);
    rc = sink_write_atomic(appfd, name.data, &pprof_part, 1, 0644, true, err);
    if (rc != 0) unlinkat(appfd, json_name, 0);
out:
    buf_free(&stem);
    buf_free(&name);
    buf_free(&sidecar);
    return rc;
}

static int write_record(struct dir_backend *d, const struct profile_record *r, struct cp_err *err)
{
    int appfd = open_app_dir(d, r, err);
    if (appfd < 0) return -1;
    int rc = 1;
    for (int tries = 0; rc == 1 && tries < MAX_NAME_TRIES; tries++)
        rc = write_pair(appfd, r, ++d->seq, err);
    close(appfd);
    if (rc == 1)
        cp_err_set(err, CP_ERR_IO, "no free file name after %d tries in %s", MAX_NAME_TRIES,
                   d->dir);
    return rc == 0 ? 0 : -1;
}

/* ---- backend ops -------------------------------------------------------------------------- */

static int dir_start(void *backend, struct sink_job *job, struct sink_result *res)
{
    struct cp_err err = {0};
    if (write_record(backend, &job->rec, &err) == 0) {
        res->outcome = SINK_DELIVERED;
        return 1;
    }
    res->outcome = SINK_RETRY;
    res->retry_after_ms = -1;
    snprintf(res->reason, sizeof res->reason, "%.399s", err.msg);
    return 1;
}

static int dir_wait(void *backend, int timeout_ms, struct cp_err *err)
{
    (void)backend;
    (void)err;
    if (timeout_ms > 0) poll(NULL, 0, timeout_ms);
    return 0;
}

static int dir_perform(void *backend, sink_done_fn *done, void *ctx, struct cp_err *err)
{
    (void)backend, (void)done, (void)ctx, (void)err;
    return 0;
}

static void dir_cancel(void *backend, struct sink_job *job)
{
    (void)backend, (void)job;
}
static long dir_timeout_ms(void *backend)
{
    return (void)backend, -1;
}

static int dir_fdset(void *backend, fd_set *r, fd_set *w, fd_set *e, int *max_fd)
{
    (void)backend, (void)r, (void)w, (void)e;
    *max_fd = -1;
    return 0;
}

static void dir_destroy(void *backend)
{
    struct dir_backend *d = backend;
    if (d->dirfd >= 0) close(d->dirfd);
    free(d->dir);
    free(d);
}

const struct sink_backend_ops sink_dir_ops = {
    .start = dir_start,
    .wait = dir_wait,
    .perform = dir_perform,
    .cancel = dir_cancel,
    .timeout_ms = dir_timeout_ms,
    .fdset = dir_fdset,
    .destroy = dir_destroy,
};

void *sink_dir_create(const struct sink_config *c, struct cp_err *err)
{
    if (sink_mkdir_p(c->dir, 0755, err) < 0) return NULL;
    struct dir_backend *d = calloc(1, sizeof *d);
    if (!d) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    d->dirfd = -1;
    d->dir = strdup(c->dir);
    d->dirfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!d->dir || d->dirfd < 0) {
        cp_err_set(err, CP_ERR_IO, "cannot open the output directory %s: %s", c->dir,
                   strerror(errno));
        dir_destroy(d);
        return NULL;
    }
    return d;
}
