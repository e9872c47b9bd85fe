/* discovery: the /proc scan, its per-process cache, and the target list.
 *
 * The cache is an array of entries sorted by pid, one per live process, holding what we decided
 * about it (kernel thread, Python, other, unreadable) and, for Python, the heap-allocated
 * discovery_process. A scan lists /proc into a sorted pid array and merges it with the previous
 * entries in one pass: a pid on both sides whose stat still shows the same start time and comm
 * keeps its entry without any other read; a new or changed pid is looked at (exe link, then maps
 * only for non-Python names); an entry without a pid is a process gone. Emitting "gone" events
 * while merging and "appeared" events when a process is created makes the events fall out of the
 * merge; target events come from merging the previous and the new sorted target key lists.
 * Allocation failures never leave the cache inconsistent: a process we could not record is simply
 * not cached (looked at again next scan) and the scan then reports CP_ERR_NOMEM.
 */
#include "discovery.h"

#include "procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PF_KTHREAD 0x00200000u
#define MAX_PIDS (1u << 22) /* the kernel's largest pid_max */
#define MAPS_CHUNK (64 * 1024)
#define MAPS_MAX (16u * 1024 * 1024) /* bytes of maps read before giving up */
#define LIBPYTHON "/libpython3"
#define SETTLE_DEFAULT 10

enum kind { KIND_OTHER, KIND_PYTHON, KIND_KTHREAD, KIND_UNREADABLE };

struct entry {
    pid_t pid;
    enum kind kind;
    uint64_t start_time;
    char comm[64];
    struct discovery_process *proc; /* KIND_PYTHON only */
};

struct stat_line {
    char state;
    unsigned long flags;
    uint64_t start_time;
    char comm[64];
};

struct discovery {
    struct discovery_options opt;
    int procfd;
    bool own_procfd;
    long hz;
    struct entry *entries, *next; /* the cache, and the one being built */
    size_t count, cap;
    pid_t *pids;
    size_t pid_count, pid_cap;
    char *scratch; /* MAPS_CHUNK + the needle's overlap */
    struct discovery_target *targets, *prev_targets;
    size_t target_count, prev_target_count, target_cap;
    const struct discovery_process **target_procs;
    struct discovery_event *events;
    size_t event_count, event_cap;
    size_t python_live; /* KIND_PYTHON entries; the target arrays hold at least as many */
    struct discovery_stats stats;
    bool oom; /* an allocation failed during this scan */
};

struct discovery_options discovery_default_options(void)
{
    return (struct discovery_options){.procfd = PROCFS_DEFAULT,
                                      .settle_seconds = SETTLE_DEFAULT,
                                      .cmdline_max = DISCOVERY_CMDLINE_MAX};
}

struct discovery *discovery_new(const struct discovery_options *opt, struct cp_err *err)
{
    struct discovery *d = calloc(1, sizeof *d);
    if (!d || !(d->scratch = malloc(MAPS_CHUNK + sizeof LIBPYTHON))) {
        free(d);
        cp_err_set(err, CP_ERR_NOMEM, "out of memory starting discovery");
        return NULL;
    }
    d->opt = *opt;
    if (d->opt.cmdline_max == 0 || d->opt.cmdline_max > DISCOVERY_CMDLINE_MAX)
        d->opt.cmdline_max = DISCOVERY_CMDLINE_MAX;
    d->hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
    d->procfd = opt->procfd;
    if (d->procfd == PROCFS_DEFAULT) { /* openat on a handle is cheaper than full paths */
        d->procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        d->own_procfd = d->procfd >= 0;
        if (d->procfd < 0) d->procfd = PROCFS_DEFAULT;
    }
    return d;
}

static void free_process(struct discovery_process *p)
{
    if (!p) return;
    free(p->cmdline);
    free(p);
}

void discovery_free(struct discovery *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->count; i++)
        free_process(d->entries[i].proc);
    if (d->own_procfd) close(d->procfd);
    free(d->entries);
    free(d->next);
    free(d->pids);
    free(d->scratch);
    free(d->targets);
    free(d->prev_targets);
    free(d->target_procs);
    free(d->events);
    free(d);
}

/* ---- reading /proc ---------------------------------------------------------------------- */

static int open_rel(const struct discovery *d, pid_t pid, const char *file)
{
    char rel[64];
    return procfs_open(d->procfd, procfs_path(rel, sizeof rel, "%d/%s", (int)pid, file), O_RDONLY);
}

/* Reads up to size bytes; -1 with errno on failure. */
static ssize_t read_file(const struct discovery *d, pid_t pid, const char *file, char *buf,
                         size_t size)
{
    int fd = open_rel(d, pid, file);
    if (fd < 0) return -1;
    size_t len = 0;
    ssize_t n = 0;
    while (len < size && (n = read(fd, buf + len, size - len)) > 0)
        len += (size_t)n;
    int e = errno;
    close(fd);
    errno = e;
    return n < 0 ? -1 : (ssize_t)len;
}

/* The fields we need of /proc/PID/stat, in one read. */
static int read_stat(struct discovery *d, pid_t pid, struct stat_line *st)
{
    char text[1024];
    d->stats.stat_reads++;
    int fd = open_rel(d, pid, "stat");
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = '\0';
    char *open_paren = strchr(text, '('), *close_paren = strrchr(text, ')');
    if (!open_paren || !close_paren || close_paren < open_paren || close_paren[1] != ' ' ||
        close_paren[2] == '\0')
        return -1;
    size_t comm_len = (size_t)(close_paren - open_paren - 1);
    if (comm_len >= sizeof st->comm) comm_len = sizeof st->comm - 1;
    memcpy(st->comm, open_paren + 1, comm_len);
    st->comm[comm_len] = '\0';
    st->state = close_paren[2];
    char *p = close_paren + 3;
    for (int field = 4; field <= 22; field++) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p) return -1;
        if (field == 9) st->flags = (unsigned long)v;
        if (field == 22) st->start_time = v;
        p = end;
    }
    return 0;
}

enum probe { PROBE_NO, PROBE_YES, PROBE_GONE, PROBE_DENIED };

static enum probe probe_errno(int e)
{
    return e == EACCES || e == EPERM   ? PROBE_DENIED
           : e == ENOENT || e == ESRCH ? PROBE_GONE
                                       : PROBE_NO;
}

/* Does /proc/PID/maps name a libpython3? Read in chunks, keeping an overlap for the needle. */
static enum probe maps_have_libpython(struct discovery *d, pid_t pid)
{
    d->stats.maps_reads++;
    int fd = open_rel(d, pid, "maps");
    if (fd < 0) return probe_errno(errno);
    const size_t keep = sizeof LIBPYTHON - 2; /* needle length - 1 */
    size_t have = 0, total = 0;
    enum probe found = PROBE_NO;
    ssize_t n;
    while (total < MAPS_MAX && (n = read(fd, d->scratch + have, MAPS_CHUNK)) > 0) {
        have += (size_t)n;
        total += (size_t)n;
        if (memmem(d->scratch, have, LIBPYTHON, sizeof LIBPYTHON - 1)) {
            found = PROBE_YES;
            break;
        }
        size_t tail = have < keep ? have : keep;
        memmove(d->scratch, d->scratch + have - tail, tail);
        have = tail;
    }
    if (found == PROBE_NO && total == 0 && n < 0) found = probe_errno(errno);
    close(fd);
    return found;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* readlink of /proc/PID/exe, " (deleted)" removed. */
static enum probe read_exe(struct discovery *d, pid_t pid, char *exe, size_t size)
{
    char rel[64];
    d->stats.exe_reads++;
    ssize_t n =
        procfs_readlink(d->procfd, procfs_path(rel, sizeof rel, "%d/exe", (int)pid), exe, size - 1);
    if (n < 0) return probe_errno(errno);
    exe[n] = '\0';
    static const char deleted[] = " (deleted)";
    size_t len = (size_t)n, dl = sizeof deleted - 1;
    if (len > dl && strcmp(exe + len - dl, deleted) == 0) exe[len - dl] = '\0';
    return PROBE_YES;
}

static pid_t read_nspid(struct discovery *d, pid_t pid)
{
    char text[8192];
    ssize_t n = read_file(d, pid, "status", text, sizeof text - 1);
    if (n <= 0) return pid;
    text[n] = '\0';
    char *line = strstr(text, "\nNSpid:");
    if (!line) return pid;
    line += 7;
    line[strcspn(line, "\n")] = '\0';
    pid_t ns = pid;
    for (char *end; *line; line = end) {
        long v = strtol(line, &end, 10);
        if (end == line) break;
        if (v > 0 && v <= (long)MAX_PIDS) ns = (pid_t)v;
    }
    return ns;
}

/* ---- one Python process ----------------------------------------------------------------- */

static int read_cmdline(struct discovery *d, struct discovery_process *p)
{
    if (!(p->cmdline = malloc(d->opt.cmdline_max + 1))) return -1;
    ssize_t n = read_file(d, p->pid, "cmdline", p->cmdline, d->opt.cmdline_max);
    p->cmdline_len = n > 0 ? (size_t)n : 0;
    p->cmdline[p->cmdline_len] = '\0';
    char *fit = realloc(p->cmdline, p->cmdline_len + 1);
    if (fit) p->cmdline = fit;
    return n < 0 && probe_errno(errno) == PROBE_GONE ? 1 : 0;
}

static void set_target_key(struct discovery_process *p)
{
    if (cgroup_in_container(&p->cgroup))
        snprintf(p->target_key, sizeof p->target_key, "container:%s", p->cgroup.container_id);
    else
        snprintf(p->target_key, sizeof p->target_key, "host:%s", p->app_name);
}

/* Reads what we keep of a new Python process: 0, 1 when it vanished, -1 when out of memory. */
static int read_details(struct discovery *d, struct discovery_process *p)
{
    struct cp_err err;
    int r = read_cmdline(d, p);
    if (r != 0) return r;
    if (cgroup_read(d->procfd, p->pid, &p->cgroup, &err) < 0 && err.code == CP_ERR_NOPROC) return 1;
    p->env_readable = procenv_read(d->procfd, p->pid, &p->env, &err) == 0;
    if (!p->env_readable) {
        if (err.code == CP_ERR_NOPROC) return 1;
        d->stats.environ_errors++;
    }
    p->nspid = read_nspid(d, p->pid);
    procenv_app_name(&p->env, p->cmdline, p->cmdline_len, p->comm, p->app_name, sizeof p->app_name);
    set_target_key(p);
    return 0;
}

/* A new Python process, or NULL when it vanished (*gone) or on OOM. */
static struct discovery_process *
new_process(struct discovery *d, pid_t pid, const struct stat_line *st, const char *exe, bool *gone)
{
    *gone = false;
    struct discovery_process *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    d->stats.detail_reads++;
    p->pid = pid;
    p->start_time = st->start_time;
    memcpy(p->comm, st->comm, sizeof p->comm);
    snprintf(p->exe, sizeof p->exe, "%s", exe);
    int r = read_details(d, p);
    if (r == 0) return p;
    *gone = r > 0;
    free_process(p);
    return NULL;
}

/* ---- events ----------------------------------------------------------------------------- */

static void push_event(struct discovery *d, enum discovery_event_kind kind, const char *key,
                       const struct discovery_process *p)
{
    if (d->event_count == d->event_cap) {
        size_t cap = d->event_cap ? 2 * d->event_cap : 64;
        struct discovery_event *ev = realloc(d->events, cap * sizeof *ev);
        if (!ev) {
            d->oom = true;
            return;
        }
        d->events = ev;
        d->event_cap = cap;
    }
    struct discovery_event *e = &d->events[d->event_count++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    snprintf(e->target_key, sizeof e->target_key, "%s", key);
    if (p) {
        e->pid = p->pid;
        e->start_time = p->start_time;
        e->process = kind == DISCOVERY_PROCESS_APPEARED ? p : NULL;
    }
}

static void drop_entry(struct discovery *d, struct entry *e)
{
    if (e->kind != KIND_PYTHON) return;
    push_event(d, DISCOVERY_PROCESS_GONE, e->proc->target_key, e->proc);
    free_process(e->proc);
    e->proc = NULL;
    d->python_live--;
}

/* ---- deciding about one process ---------------------------------------------------------- */

static int reserve_targets(struct discovery *d, size_t n);

static bool young(const struct discovery *d, uint64_t start_time, uint64_t now)
{
    return now < start_time + (uint64_t)d->opt.settle_seconds * (uint64_t)d->hz;
}

static uint64_t now_ticks(const struct discovery *d)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (uint64_t)ts.tv_sec * (uint64_t)d->hz +
           (uint64_t)ts.tv_nsec / (1000000000u / (uint64_t)d->hz);
}

/* Becomes Python: records the process and says so. false if it vanished or on OOM. */
static bool make_python(struct discovery *d, struct entry *e, const struct stat_line *st,
                        const char *exe)
{
    bool gone;
    if (reserve_targets(d, d->python_live + 1) < 0) {
        d->oom = true;
        return false;
    }
    e->proc = new_process(d, e->pid, st, exe, &gone);
    if (!e->proc) {
        if (gone)
            d->stats.vanished++;
        else
            d->oom = true;
        return false;
    }
    e->kind = KIND_PYTHON;
    d->python_live++;
    push_event(d, DISCOVERY_PROCESS_APPEARED, e->proc->target_key, e->proc);
    return true;
}

/* Classifies a process seen for the first time (or changed); false: do not cache it. */
static bool look_at(struct discovery *d, struct entry *e, const struct stat_line *st)
{
    if (st->flags & PF_KTHREAD) {
        e->kind = KIND_KTHREAD;
        return true;
    }
    char exe[PATH_MAX];
    enum probe r = read_exe(d, e->pid, exe, sizeof exe);
    if (r == PROBE_YES) {
        const char *name = base_name(exe);
        r = procenv_is_python_name(name, strlen(name)) ? PROBE_YES : maps_have_libpython(d, e->pid);
    }
    if (r == PROBE_GONE) {
        d->stats.vanished++;
        return false;
    }
    e->kind = r == PROBE_DENIED ? KIND_UNREADABLE : KIND_OTHER;
    return r != PROBE_YES || make_python(d, e, st, exe);
}

/* A cached non-Python executable may still load libpython while it is young. */
static bool recheck_young(struct discovery *d, struct entry *e, const struct stat_line *st,
                          uint64_t now)
{
    if (e->kind != KIND_OTHER || !young(d, e->start_time, now)) return true;
    enum probe r = maps_have_libpython(d, e->pid);
    if (r == PROBE_GONE) {
        d->stats.vanished++;
        return false;
    }
    if (r != PROBE_YES) return true;
    char exe[PATH_MAX];
    if (read_exe(d, e->pid, exe, sizeof exe) != PROBE_YES) return false;
    return make_python(d, e, st, exe);
}

/* Builds the new entry of pid from its previous one (or NULL); false: not cached. */
static bool visit(struct discovery *d, pid_t pid, struct entry *prev, uint64_t now,
                  struct entry *out)
{
    struct stat_line st;
    bool exited = read_stat(d, pid, &st) < 0;
    if (exited || st.state == 'Z' || st.state == 'X') {
        d->stats.vanished += exited;
        if (prev) drop_entry(d, prev);
        return false;
    }
    if (prev && prev->start_time == st.start_time && strcmp(prev->comm, st.comm) == 0) {
        *out = *prev;
        return recheck_young(d, out, &st, now);
    }
    if (prev) drop_entry(d, prev);
    memset(out, 0, sizeof *out);
    out->pid = pid;
    out->start_time = st.start_time;
    memcpy(out->comm, st.comm, sizeof out->comm);
    return look_at(d, out, &st);
}

/* ---- the scan ---------------------------------------------------------------------------- */

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static bool parse_pid(const char *name, pid_t *pid)
{
    long v = 0;
    size_t i = 0;
    for (; name[i]; i++) {
        if (name[i] < '0' || name[i] > '9' || i >= 9) return false;
        v = v * 10 + (name[i] - '0');
    }
    *pid = (pid_t)v;
    return i > 0 && v > 0;
}

static int list_pids(struct discovery *d, struct cp_err *err)
{
    DIR *dir = procfs_opendir(d->procfd, ".");
    if (!dir) {
        cp_err_set(err, CP_ERR_IO, "cannot list /proc: %s", strerror(errno));
        return -1;
    }
    d->pid_count = 0;
    struct dirent *de;
    pid_t pid;
    while ((de = readdir(dir)) && d->pid_count < MAX_PIDS) {
        if (!parse_pid(de->d_name, &pid)) continue;
        if (d->pid_count == d->pid_cap) {
            size_t cap = d->pid_cap ? 2 * d->pid_cap : 1024;
            pid_t *p = realloc(d->pids, cap * sizeof *p);
            if (!p) {
                closedir(dir);
                cp_err_set(err, CP_ERR_NOMEM, "out of memory listing /proc");
                return -1;
            }
            d->pids = p;
            d->pid_cap = cap;
        }
        d->pids[d->pid_count++] = pid;
    }
    closedir(dir);
    if (d->pid_count > 1) qsort(d->pids, d->pid_count, sizeof *d->pids, cmp_pid);
    return 0;
}

static int reserve_entries(struct discovery *d, size_t n, struct cp_err *err)
{
    if (n <= d->cap) return 0;
    struct entry *a = realloc(d->entries, n * sizeof *a);
    if (a) d->entries = a;
    struct entry *b = a ? realloc(d->next, n * sizeof *b) : NULL;
    if (b) d->next = b;
    if (!a || !b) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory for %zu processes", n);
        return -1;
    }
    d->cap = n;
    return 0;
}

/* Merges the sorted pid list with the cached entries into d->next, then swaps. */
static void merge(struct discovery *d)
{
    uint64_t now = now_ticks(d);
    size_t old = 0, kept = 0;
    for (size_t i = 0; i < d->pid_count; i++) {
        pid_t pid = d->pids[i];
        if (i > 0 && pid == d->pids[i - 1]) continue;
        while (old < d->count && d->entries[old].pid < pid)
            drop_entry(d, &d->entries[old++]);
        struct entry *prev =
            old < d->count && d->entries[old].pid == pid ? &d->entries[old++] : NULL;
        if (visit(d, pid, prev, now, &d->next[kept])) kept++;
    }
    while (old < d->count)
        drop_entry(d, &d->entries[old++]);
    struct entry *swap = d->entries;
    d->entries = d->next;
    d->next = swap;
    d->count = kept;
}

static void count_kinds(struct discovery *d)
{
    d->stats.processes = d->pid_count;
    for (size_t i = 0; i < d->count; i++) {
        enum kind k = d->entries[i].kind;
        d->stats.kernel_threads += k == KIND_KTHREAD;
        d->stats.python += k == KIND_PYTHON;
        d->stats.unreadable += k == KIND_UNREADABLE;
    }
}

/* ---- targets ----------------------------------------------------------------------------- */

static int cmp_proc_key(const void *a, const void *b)
{
    const struct discovery_process *x = *(const struct discovery_process *const *)a;
    const struct discovery_process *y = *(const struct discovery_process *const *)b;
    int c = strcmp(x->target_key, y->target_key);
    return c ? c : (x->pid > y->pid) - (x->pid < y->pid);
}

static int reserve_targets(struct discovery *d, size_t n)
{
    if (n <= d->target_cap) return 0;
    struct discovery_target *a = realloc(d->targets, n * sizeof *a);
    if (a) d->targets = a;
    struct discovery_target *b = a ? realloc(d->prev_targets, n * sizeof *b) : NULL;
    if (b) d->prev_targets = b;
    const struct discovery_process **c = b ? realloc(d->target_procs, n * sizeof *c) : NULL;
    if (c) d->target_procs = c;
    if (!c) return -1;
    d->target_cap = n;
    return 0;
}

/* Groups the Python processes by target key; the previous list moves to prev_targets. The
 * arrays already hold python_live entries (make_python reserved them). */
static void build_targets(struct discovery *d)
{
    struct discovery_target *swap = d->prev_targets;
    d->prev_targets = d->targets;
    d->prev_target_count = d->target_count;
    d->targets = swap;
    d->target_count = 0;
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        if (d->entries[i].kind == KIND_PYTHON) d->target_procs[n++] = d->entries[i].proc;
    if (n == 0) return;
    qsort(d->target_procs, n, sizeof *d->target_procs, cmp_proc_key);
    for (size_t i = 0; i < n; i++) {
        const struct discovery_process *p = d->target_procs[i];
        if (d->target_count > 0 &&
            strcmp(d->targets[d->target_count - 1].key, p->target_key) == 0) {
            d->targets[d->target_count - 1].proc_count++;
            continue;
        }
        struct discovery_target *t = &d->targets[d->target_count++];
        snprintf(t->key, sizeof t->key, "%s", p->target_key);
        t->in_container = cgroup_in_container(&p->cgroup);
        t->cgroup = &p->cgroup;
        t->procs = &d->target_procs[i];
        t->proc_count = 1;
    }
}

static void diff_targets(struct discovery *d)
{
    size_t i = 0, j = 0;
    while (i < d->prev_target_count || j < d->target_count) {
        int c = i == d->prev_target_count ? 1
                : j == d->target_count    ? -1
                                          : strcmp(d->prev_targets[i].key, d->targets[j].key);
        if (c < 0) push_event(d, DISCOVERY_TARGET_GONE, d->prev_targets[i++].key, NULL);
        if (c > 0) push_event(d, DISCOVERY_TARGET_APPEARED, d->targets[j++].key, NULL);
        if (c == 0) i++, j++;
    }
}

static int cmp_event(const void *a, const void *b)
{
    const struct discovery_event *x = a, *y = b;
    if (x->kind != y->kind) return (int)x->kind - (int)y->kind;
    int c = strcmp(x->target_key, y->target_key);
    return c ? c : (x->pid > y->pid) - (x->pid < y->pid);
}

int discovery_scan(struct discovery *d, struct cp_err *err)
{
    memset(&d->stats, 0, sizeof d->stats);
    d->event_count = 0;
    d->oom = false;
    if (list_pids(d, err) < 0 || reserve_entries(d, d->pid_count, err) < 0) return -1;
    merge(d);
    count_kinds(d);
    build_targets(d);
    diff_targets(d);
    if (d->event_count > 1) qsort(d->events, d->event_count, sizeof *d->events, cmp_event);
    if (d->oom) {
        cp_err_set(err, CP_ERR_NOMEM,
                   "discovery: out of memory (some processes or events were "
                   "not recorded; the next scan retries them)");
        return -1;
    }
    return 0;
}

/* ---- results ----------------------------------------------------------------------------- */

const struct discovery_target *discovery_targets(const struct discovery *d, size_t *count)
{
    *count = d->target_count;
    return d->targets;
}

const struct discovery_event *discovery_events(const struct discovery *d, size_t *count)
{
    *count = d->event_count;
    return d->events;
}

const struct discovery_stats *discovery_stats(const struct discovery *d)
{
    return &d->stats;
}

static int cmp_key_target(const void *key, const void *t)
{
    return strcmp(key, ((const struct discovery_target *)t)->key);
}

const struct discovery_target *discovery_find_target(const struct discovery *d, const char *key)
{
    if (d->target_count == 0) return NULL;
    return bsearch(key, d->targets, d->target_count, sizeof *d->targets, cmp_key_target);
}

void discovery_subject(const struct discovery_process *p, struct selector_subject *out)
{
    memset(out, 0, sizeof *out);
    out->project = p->env.project;
    out->environment = p->env.environment;
    out->application = p->app_name;
    out->container_id = p->cgroup.container_id;
}

bool discovery_target_matches(const struct discovery_target *t, const struct selector_list *list,
                              const char *k8s_namespace, const json_t *k8s_labels)
{
    for (size_t i = 0; i < t->proc_count; i++) {
        struct selector_subject s;
        discovery_subject(t->procs[i], &s);
        s.k8s_namespace = k8s_namespace;
        s.k8s_labels = k8s_labels;
        if (selector_list_matches(list, &s)) return true;
    }
    return false;
}
