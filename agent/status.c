/* status: the status socket server, its client and the text status page (see status.h).
 *
 * Design: as with the metrics listener, the server keeps the listening socket, the clients it is
 * still writing to and a timerfd in a private epoll set and gives the daemon that one fd, so the
 * daemon's poll loop needs no knowledge of individual clients and never blocks on one. A client
 * gets its document rendered at accept time and written as far as the socket takes it; the rest
 * waits for EPOLLOUT until STATUS_CLIENT_TIMEOUT_MS. The socket file is created under a temporary
 * name, restricted to 0600 before listen(), then renamed over the final path: there is never a
 * moment where the final path is missing or connectable with looser permissions, and a stale
 * socket from a crashed agent is replaced in one step. The socket's inode is remembered so that
 * closing never removes a socket some newer agent put in its place.
 * The text page treats every string in the document as untrusted (application names come from
 * the environment of processes in containers): control characters are replaced before printing.
 */
#include "status.h"

#include "pollset.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ACCEPT_BATCH 16
#define ACCEPT_PAUSE_MS 1000
#define TAG_LISTEN 0
#define TAG_CLIENT 2

struct client {
    bool used;
    int fd;
    char *data;
    size_t len, sent;
    int64_t deadline_ms;
};

struct status_server {
    struct pollset events; /* the fd the daemon polls */
    int listen_fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;
    ino_t ino;
    status_render_fn *render;
    void *ctx;
    int64_t accept_paused_until;
    struct client clients[STATUS_MAX_CLIENTS];
};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int unix_address(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) return -1;
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

/* ---- socket file ------------------------------------------------------------------------ */

/* Creates the missing directories above path, each with mode 0700. */
static int make_parents(const char *path, struct cp_err *err)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *slash = strchr(dir + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            cp_err_set(err, errno == EACCES ? CP_ERR_PERM : CP_ERR_IO,
                       "status socket: cannot create directory %s: %s", dir, strerror(errno));
            return -1;
        }
        *slash = '/';
    }
    return 0;
}

/* 0 when path is free or holds a stale socket; -1 when an agent answers there or it is no
 * socket at all. */
static int check_existing(const char *path, struct cp_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0) return 0;
    if (!S_ISSOCK(st.st_mode)) {
        cp_err_set(err, CP_ERR_INVALID,
                   "status socket: %s exists and is not a socket; refusing to replace it", path);
        return -1;
    }
    struct sockaddr_un sa;
    unix_address(path, &sa);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        cp_err_set(err, CP_ERR_IO, "status socket: %s", strerror(errno));
        return -1;
    }
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(fd);
    if (r < 0 && e == ECONNREFUSED) return 0; /* stale: nobody listens */
    cp_err_set(err, CP_ERR_INVALID, "status socket %s: %s", path,
               r == 0 || e == EAGAIN ? "another agent is already running and answers there"
                                     : strerror(e));
    return -1;
}

/* Binds a listening socket at a temporary name, mode 0600, and renames it over s->path. */
static int bind_socket(struct status_server *s, struct cp_err *err)
{
    char tmp[sizeof s->path];
    struct sockaddr_un sa;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", s->path, (int)getpid()) >= (int)sizeof tmp ||
        unix_address(tmp, &sa) < 0) {
        cp_err_set(err, CP_ERR_INVALID, "status socket: path too long: %s", s->path);
        return -1;
    }
    struct stat st;
    if (lstat(tmp, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(tmp); /* from a crashed run */
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        cp_err_set(err, errno == EACCES ? CP_ERR_PERM : CP_ERR_IO, "status socket: bind %s: %s",
                   tmp, strerror(errno));
        return -1;
    }
    if (chmod(tmp, 0600) < 0 || listen(s->listen_fd, STATUS_MAX_CLIENTS) < 0 ||
        rename(tmp, s->path) < 0 || stat(s->path, &st) < 0) {
        cp_err_set(err, CP_ERR_IO, "status socket: %s: %s", s->path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    return 0;
}

/* ---- server ----------------------------------------------------------------------------- */

static int watch(struct status_server *s, int op, int fd, uint32_t events, uint64_t tag)
{
    return pollset_watch(&s->events, op, fd, events, tag);
}

static void client_close(struct status_server *s, struct client *c)
{
    epoll_ctl(s->events.epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->data);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static bool peer_allowed(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return false;
    return cred.uid == 0 || cred.uid == geteuid();
}

/* The document as one line; NULL only when memory runs out. */
static char *render_document(struct status_server *s, size_t *len, struct cp_err *err, bool *failed)
{
    json_t *doc = s->render ? s->render(s->ctx) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text || strlen(text) >= STATUS_REPLY_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "status: %s",
                   !doc   ? "the agent could not build its status document"
                   : text ? "the status document is too large"
                          : "cannot serialize the status document");
        *failed = true;
        free(text);
        json_t *e = json_pack("{s:s}", "error", err->msg);
        text = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        if (!text) return NULL;
    }
    *len = strlen(text);
    char *line = realloc(text, *len + 2);
    if (!line) {
        free(text);
        return NULL;
    }
    line[(*len)++] = '\n';
    line[*len] = '\0';
    return line;
}

/* Writes what the socket takes; closes the client when done or broken. */
static void client_write(struct status_server *s, struct client *c)
{
    while (c->sent < c->len) {
        ssize_t n = send(c->fd, c->data + c->sent, c->len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) break;
        c->sent += (size_t)n;
    }
    client_close(s, c);
}

static struct client *free_slot(struct status_server *s, size_t *index)
{
    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++)
        if (!s->clients[i].used) {
            *index = i;
            return &s->clients[i];
        }
    return NULL;
}

static int serve(struct status_server *s, int fd, struct cp_err *err)
{
    size_t index;
    struct client *c = free_slot(s, &index);
    if (!c || !peer_allowed(fd)) {
        close(fd);
        return 0;
    }
    bool failed = false;
    c->data = render_document(s, &c->len, err, &failed);
    if (!c->data) {
        close(fd);
        cp_err_set(err, CP_ERR_NOMEM, "status: out of memory");
        return -1;
    }
    c->used = true;
    c->fd = fd;
    c->sent = 0;
    c->deadline_ms = now_ms() + STATUS_CLIENT_TIMEOUT_MS;
    if (watch(s, EPOLL_CTL_ADD, fd, EPOLLOUT, TAG_CLIENT + index) < 0) {
        close(fd);
        free(c->data);
        memset(c, 0, sizeof *c);
        c->fd = -1;
        return 0;
    }
    client_write(s, c);
    return failed ? -1 : 0;
}

static int accept_clients(struct status_server *s, struct cp_err *err)
{
    int rc = 0;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            if (serve(s, fd, err) < 0) rc = -1;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            cp_err_set(err, CP_ERR_IO, "status: cannot accept a connection: %s", strerror(errno));
            s->accept_paused_until = now_ms() + ACCEPT_PAUSE_MS;
            watch(s, EPOLL_CTL_MOD, s->listen_fd, 0, TAG_LISTEN);
            return -1;
        }
    }
    return rc;
}

static void expire_and_arm(struct status_server *s)
{
    int64_t now = now_ms(), next = 0;
    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++) {
        struct client *c = &s->clients[i];
        if (c->used && c->deadline_ms <= now) client_close(s, c);
        if (c->used && (next == 0 || c->deadline_ms < next)) next = c->deadline_ms;
    }
    if (s->accept_paused_until && s->accept_paused_until <= now) {
        s->accept_paused_until = 0;
        watch(s, EPOLL_CTL_MOD, s->listen_fd, EPOLLIN, TAG_LISTEN);
    }
    if (s->accept_paused_until && (next == 0 || s->accept_paused_until < next))
        next = s->accept_paused_until;
    pollset_arm(&s->events, next);
}

int status_server_handle(struct status_server *s, struct cp_err *err)
{
    struct epoll_event evs[STATUS_MAX_CLIENTS + 2];
    int n = pollset_wait(&s->events, evs, STATUS_MAX_CLIENTS + 2), rc = 0;
    for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        if (tag == TAG_LISTEN && accept_clients(s, err) < 0) rc = -1;
        if (tag >= TAG_CLIENT && tag < TAG_CLIENT + STATUS_MAX_CLIENTS &&
            s->clients[tag - TAG_CLIENT].used)
            client_write(s, &s->clients[tag - TAG_CLIENT]);
    }
    expire_and_arm(s);
    return rc;
}

struct status_server *status_server_open(const char *path, status_render_fn *render, void *ctx,
                                         struct cp_err *err)
{
    size_t len = strlen(path);
    if (len == 0 || len > STATUS_SOCKET_PATH_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "status socket: expected a path of 1 to %d bytes, got %zu",
                   STATUS_SOCKET_PATH_MAX, len);
        return NULL;
    }
    struct status_server *s = calloc(1, sizeof *s);
    if (!s) {
        cp_err_set(err, CP_ERR_NOMEM, "status socket: out of memory");
        return NULL;
    }
    s->events.epoll_fd = s->events.timer_fd = s->listen_fd = -1;
    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++)
        s->clients[i].fd = -1;
    snprintf(s->path, sizeof s->path, "%s", path);
    s->render = render;
    s->ctx = ctx;
    if (make_parents(path, err) < 0 || check_existing(path, err) < 0 || bind_socket(s, err) < 0) {
        status_server_close(s);
        return NULL;
    }
    if (pollset_open(&s->events) < 0 ||
        watch(s, EPOLL_CTL_ADD, s->listen_fd, EPOLLIN, TAG_LISTEN) < 0) {
        cp_err_set(err, CP_ERR_IO, "status socket: epoll: %s", strerror(errno));
        status_server_close(s);
        return NULL;
    }
    return s;
}

int status_server_fd(const struct status_server *s)
{
    return s->events.epoll_fd;
}

void status_server_close(struct status_server *s)
{
    if (!s) return;
    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++)
        if (s->clients[i].used) client_close(s, &s->clients[i]);
    struct stat st;
    if (s->ino && stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
        unlink(s->path);
    pollset_close(&s->events);
    if (s->listen_fd >= 0) close(s->listen_fd);
    free(s);
}

/* ---- client ----------------------------------------------------------------------------- */

static enum status_fetch_result connect_agent(const char *path, int timeout_ms, int *out,
                                              struct cp_err *err)
{
    struct sockaddr_un sa;
    if (unix_address(path, &sa) < 0) {
        cp_err_set(err, CP_ERR_INVALID, "status socket path too long: %s", path);
        return STATUS_FETCH_ERROR;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cp_err_set(err, CP_ERR_IO, "socket: %s", strerror(errno));
        return STATUS_FETCH_ERROR;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds a connect() to a full
                                                                backlog */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        *out = fd;
        return STATUS_FETCH_OK;
    }
    int e = errno;
    close(fd);
    if (e == ENOENT || e == ENOTDIR || e == ECONNREFUSED) {
        cp_err_set(err, CP_ERR_NOPROC, "no agent is running: %s %s", path,
                   e == ECONNREFUSED ? "is a stale socket nobody answers on" : "does not exist");
        return STATUS_FETCH_NO_AGENT;
    }
    cp_err_set(err, e == EACCES || e == EPERM ? CP_ERR_PERM : CP_ERR_IO,
               "cannot connect to %s: %s%s", path,
               e == EAGAIN ? "the agent is not accepting connections" : strerror(e),
               e == EACCES || e == EPERM ? " (run as root or as the agent's user)" : "");
    return STATUS_FETCH_ERROR;
}

static char *read_reply(int fd, int timeout_ms, size_t *len, struct cp_err *err)
{
    size_t cap = 65536, used = 0;
    char *buf = malloc(cap);
    int64_t deadline = now_ms() + timeout_ms;
    while (buf) {
        int64_t left = deadline - now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            cp_err_set(err, CP_ERR_IO, "the agent did not answer within %d ms", timeout_ms);
            break;
        }
        if (used == STATUS_REPLY_MAX + 1) { /* one byte over the bound: too large */
            cp_err_set(err, CP_ERR_INVALID, "the agent's answer is larger than %u bytes",
                       STATUS_REPLY_MAX);
            break;
        }
        if (used == cap) {
            size_t grown = cap * 2 < STATUS_REPLY_MAX + 1 ? cap * 2 : STATUS_REPLY_MAX + 1;
            char *bigger = realloc(buf, grown);
            if (!bigger) {
                cp_err_set(err, CP_ERR_NOMEM, "out of memory reading the agent's answer");
                break;
            }
            buf = bigger;
            cap = grown;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {
            *len = used;
            return buf;
        }
        if (n < 0) {
            cp_err_set(err, CP_ERR_IO, "reading the agent's answer: %s", strerror(errno));
            break;
        }
        used += (size_t)n;
    }
    if (!buf) cp_err_set(err, CP_ERR_NOMEM, "out of memory");
    free(buf);
    return NULL;
}

enum status_fetch_result status_fetch(const char *path, int timeout_ms, json_t **doc,
                                      struct cp_err *err)
{
    *doc = NULL;
    int fd = -1;
    enum status_fetch_result r = connect_agent(path, timeout_ms, &fd, err);
    if (r != STATUS_FETCH_OK) return r;
    size_t len = 0;
    char *text = read_reply(fd, timeout_ms, &len, err);
    close(fd);
    if (!text) return STATUS_FETCH_ERROR;
    json_error_t jerr;
    *doc = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!*doc || !json_is_object(*doc)) {
        cp_err_set(err, CP_ERR_INVALID, "the agent's answer is not a JSON object: %s",
                   *doc ? "wrong type" : jerr.text);
        json_decref(*doc);
        *doc = NULL;
        return STATUS_FETCH_ERROR;
    }
    return STATUS_FETCH_OK;
}

/* ---- text page -------------------------------------------------------------------------- */

/* A printable copy of s (control characters, C1 controls included, become '?'). */
static void clean(const char *s, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; s[i] && o + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        bool c1 = c == 0xc2 && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f;
        out[o++] = c < 0x20 || c == 0x7f || c1 ? '?' : (char)c;
        if (c1) i++;
    }
    out[o] = '\0';
}

static const char *text_of(const json_t *obj, const char *key, char *buf, size_t size)
{
    const json_t *v = json_object_get(obj, key);
    if (json_is_string(v) && json_string_length(v) > 0)
        clean(json_string_value(v), buf, size);
    else if (json_is_integer(v))
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        snprintf(buf, size, "-");
    return buf;
}

static long long number_of(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

static void format_duration(long long secs, char *buf, size_t size)
{
    if (secs < 0) secs = 0;
    long long d = secs / 86400, h = secs / 3600 % 24, m = secs / 60 % 60, s = secs % 60;
    if (d)
        snprintf(buf, size, "%lldd %lldh %lldm", d, h, m);
    else if (h)
        snprintf(buf, size, "%lldh %lldm %llds", h, m, s);
    else if (m)
        snprintf(buf, size, "%lldm %llds", m, s);
    else
        snprintf(buf, size, "%llds", s);
}

static void format_bytes(long long n, char *buf, size_t size)
{
    if (n < 1024)
        snprintf(buf, size, "%lld B", n);
    else if (n < 1024 * 1024)
        snprintf(buf, size, "%.1f KiB", (double)n / 1024);
    else
        snprintf(buf, size, "%.1f MiB", (double)n / (1024 * 1024));
}

static void print_header(FILE *out, const json_t *doc)
{
    char version[64], node[128], dur[64], file[256], sink[256];
    format_duration(number_of(doc, "uptime_s"), dur, sizeof dur);
    fprintf(out, "conprof-agent %s on %s: running for %s (pid %lld)\n",
            text_of(doc, "version", version, sizeof version),
            text_of(doc, "node", node, sizeof node), dur, number_of(doc, "pid"));
    const json_t *cfg = json_object_get(doc, "config");
    if (json_is_object(cfg))
        fprintf(out, "Config:   %s; %lld Hz, period %lld s; sink %s\n",
                text_of(cfg, "file", file, sizeof file), number_of(cfg, "rate_hz"),
                number_of(cfg, "period_s"), text_of(cfg, "sink", sink, sizeof sink));
}

#define TARGET_COLUMNS 8
static const char *const TARGET_KEYS[TARGET_COLUMNS] = {
    "container_id", "k8s_pod", "application", "pid", "python", "samples", "errors", "state"};
static const char *const TARGET_TITLES[TARGET_COLUMNS] = {
    "CONTAINER", "POD", "APPLICATION", "PID", "PYTHON", "SAMPLES", "ERRORS", "STATE"};
#define COLUMN_MAX 40

static void target_cell(const json_t *t, int col, char *buf, size_t size)
{
    text_of(t, TARGET_KEYS[col], buf, size);
    if (col == 0 && !strcmp(buf, "-")) snprintf(buf, size, "host");
    if (col == 0 && strlen(buf) > 12) buf[12] = '\0'; /* short container id, as docker ps */
    if (col == 7 && json_is_string(json_object_get(t, "error"))) {
        char why[COLUMN_MAX * 4];
        text_of(t, "error", why, sizeof why);
        size_t n = strlen(buf);
        snprintf(buf + n, size - n, ": %s", why);
    }
}

static void print_targets(FILE *out, const json_t *targets)
{
    size_t n = json_array_size(targets), i;
    fprintf(out, "\nTargets:  %zu process%s\n", n, n == 1 ? "" : "es");
    if (n == 0) return;
    int width[TARGET_COLUMNS];
    bool shown[TARGET_COLUMNS];
    const json_t *t;
    for (int c = 0; c < TARGET_COLUMNS; c++) {
        width[c] = (int)strlen(TARGET_TITLES[c]);
        shown[c] = c != 1; /* the pod column only when some target is in a pod */
    }
    json_array_foreach(targets, i, t)
    {
        for (int c = 0; c < TARGET_COLUMNS - 1; c++) {
            char cell[COLUMN_MAX * 8];
            target_cell(t, c, cell, sizeof cell);
            int w = (int)strlen(cell);
            width[c] = w > width[c] ? (w < COLUMN_MAX ? w : COLUMN_MAX) : width[c];
            if (c == 1 && strcmp(cell, "-")) shown[1] = true;
        }
    }
    fputs(" ", out);
    for (int c = 0; c < TARGET_COLUMNS; c++)
        if (shown[c])
            fprintf(out, " %-*s", c == TARGET_COLUMNS - 1 ? 0 : width[c], TARGET_TITLES[c]);
    fputs("\n", out);
    json_array_foreach(targets, i, t)
    {
        fputs(" ", out);
        for (int c = 0; c < TARGET_COLUMNS; c++) {
            char cell[COLUMN_MAX * 8];
            target_cell(t, c, cell, sizeof cell);
            bool numeric = c == 3 || c == 5 || c == 6;
            if (!shown[c]) continue;
            if (c == TARGET_COLUMNS - 1)
                fprintf(out, " %s", cell);
            else
                fprintf(out, numeric ? " %*.*s" : " %-*.*s", width[c], width[c], cell);
        }
        fputs("\n", out);
    }
}

static void print_counters(FILE *out, const json_t *doc)
{
    fprintf(out, "\nSamples:  %lld taken, %lld failed\n", number_of(doc, "samples"),
            number_of(doc, "sample_errors"));
    fprintf(out, "Profiles: %lld made, %lld failed\n", number_of(doc, "profiles"),
            number_of(doc, "profile_errors"));
    const json_t *w = json_object_get(doc, "workers");
    fprintf(out, "Workers:  %lld running, %lld crashed, %lld hung\n", number_of(w, "running"),
            number_of(w, "crashes"), number_of(w, "hangs"));
    const json_t *u = json_object_get(doc, "uploads");
    fprintf(out, "Uploads:  %lld sent, %lld failed, %lld retried, %lld spooled, %lld evicted",
            number_of(u, "sent"), number_of(u, "failed"), number_of(u, "retried"),
            number_of(u, "spooled"), number_of(u, "evicted"));
    fprintf(out, "; %lld queued, %lld in flight\n", number_of(u, "queued"),
            number_of(u, "inflight"));
    char size[32];
    format_bytes(number_of(u, "spool_bytes"), size, sizeof size);
    fprintf(out, "Spool:    %lld file%s, %s\n", number_of(u, "spool_files"),
            number_of(u, "spool_files") == 1 ? "" : "s", size);
}

static void print_errors(FILE *out, const json_t *errors, time_t now)
{
    size_t n = json_array_size(errors), i;
    fputs("\nLast errors:", out);
    if (n == 0) fputs(" none", out);
    fputs("\n", out);
    const json_t *e;
    json_array_foreach(errors, i, e)
    {
        char msg[1024], when[64] = "", ago[64];
        time_t t = (time_t)number_of(e, "time");
        struct tm tm;
        if (t > 0 && gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%SZ", &tm);
        format_duration((long long)(now - t), ago, sizeof ago);
        fprintf(out, "  %s (%s ago)  %s\n", when[0] ? when : "-", t > 0 ? ago : "?",
                text_of(e, "message", msg, sizeof msg));
    }
}

void status_print_text(FILE *out, const json_t *doc, time_t now)
{
    const json_t *error = json_object_get(doc, "error");
    if (json_is_string(error)) {
        char msg[1024];
        clean(json_string_value(error), msg, sizeof msg);
        fprintf(out, "The agent answered with an error: %s\n", msg);
        return;
    }
    print_header(out, doc);
    print_targets(out, json_object_get(doc, "targets"));
    print_counters(out, doc);
    print_errors(out, json_object_get(doc, "last_errors"), now);
}
