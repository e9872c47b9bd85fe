/* bench_fleet: the daemon's cost on a node: 20 Python processes in 5 containers at 100 Hz.
 *
 * The containers are made as the end-to-end tests make them (tests/e2e/run_support.py): each is
 * `unshare --mount --pid --fork --kill-child` running tests/bench/fleet_containers.sh, which joins
 * a cgroup v2 named like a containerd pod container (made here), hides its interpreter (a pyenv
 * build, a different CPython per container) under a tmpfs only its mount namespace sees, and
 * starts a pre-fork service of BENCH_FLEET_PROCS processes with PLATFORM_* variables. Then
 * `conprof-agent run` starts with a directory sink, a status socket and a selector on this run's
 * project (so it leaves other engineers' processes alone), in a cgroup of its own.
 *
 * Every BENCH_FLEET_INTERVAL seconds (absolute deadlines) one pass over /proc finds the agent and
 * its descendants by ppid and sums utime + stime + cutime + cstime of each (a worker that died and
 * was reaped moves its time into its parent's cutime, so the sum never drops), VmRSS, Pss and
 * VmHWM; the agent's cgroup gives a cross-check in µs (cpu.stat usage_usec). The status socket
 * (read in-process with status_fetch()) gives the thread-samples, which the daemon counts when a
 * period ends: between two period ends they give the real sampling rate. After the run the agent
 * gets SIGTERM, and its final profiles are counted per application.
 *
 * Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT are blocked and waited for with sigtimedwait() in
 * place of sleeping, so no handler and no global flag is needed; children get the old mask back
 * and their own process group (a ^C in the terminal reaches only us), and everything is removed on
 * every exit path: the agent, the containers (cgroup.kill), the cgroups, the temporary directory.
 */
#include "bench_util.h"
#include "status.h"

#include <dirent.h>
#include <ftw.h>
#include <sys/random.h>

#define FLEET_MAX_CONTAINERS 16
#define FLEET_MAX_FAMILY 64         /* agent + workers we follow */
#define FLEET_MAX_PROCS (1u << 20)  /* /proc entries read per pass */
#define FLEET_READY_TIMEOUT_S 60.0  /* a container's processes print READY within this */
#define FLEET_STOP_TIMEOUT_S 30.0   /* the agent flushes within its upload timeout (10 s) */
#define FLEET_RSS_GROWTH_TARGET 1.0 /* MB per 10 minutes */

struct fleet_opts {
    double seconds;
    long interval_s, rate, period_s, containers, procs, threads;
    double busy_percent;
    char pythons[BENCH_MAX_PYTHONS][PATH_MAX];
    int npythons;
    bool keep;
};

struct container {
    char id[65];
    char pod_uid[37];
    char app[32];
    const char *python;
    char cgroup[PATH_MAX];
    char created[4][PATH_MAX]; /* cgroup directories we made, outermost first */
    int ncreated;
    char ns_dir[PATH_MAX];
    pid_t unshare_pid;
    pid_t pids[64]; /* host pids of its Python processes */
    int npids;
};

/* One measurement of the agent and its workers. */
struct point {
    double t_s;          /* since the agent was started */
    double cpu_s;        /* utime + stime + cutime + cstime of the family */
    double system_s;     /* the stime + cstime part */
    double agent_cpu_s;  /* utime + stime of the agent process alone */
    double cgroup_cpu_s; /* cpu.stat usage_usec of the agent's cgroup, -1 if unknown */
    long rss_kb, pss_kb, hwm_kb;
    int nprocs;
    long long samples; /* status: thread-samples counted so far, -1 if no answer */
    long long uptime_s, profiles;
    int targets;
    double load1;
};

struct fleet {
    struct fleet_opts o;
    struct container c[FLEET_MAX_CONTAINERS];
    int ncontainers;
    char dir[PATH_MAX / 2]; /* half: room for the names made below it */
    int containers_log;     /* the containers' stderr (tracebacks, unshare) */
    char project[40];
    char cgroup_root[PATH_MAX / 2];
    char agent_cgroup[PATH_MAX];
    bool agent_cgroup_made;
    pid_t agent;
    int64_t t0_ns;
    double stopped_s, exit_s; /* SIGTERM sent / agent reaped, since t0 */
    int agent_status;
    struct rusage agent_ru;
    struct point *points;
    size_t npoints, cap;
    json_t *last_status;
    sigset_t stop_signals, old_mask;
    bool interrupted;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static double mb(long kb)
{
    return (double)kb * 1024.0 / 1e6;
}

static double distance(double a, double b)
{
    return a > b ? a - b : b - a;
}

static double since_t0(const struct fleet *f)
{
    return (double)(bench_now_ns() - f->t0_ns) / 1e9;
}

static void random_hex(char *out, size_t digits)
{
    unsigned char bytes[32] = {0};
    size_t n = (digits + 1) / 2 < sizeof bytes ? (digits + 1) / 2 : sizeof bytes;
    if (getrandom(bytes, n, 0) != (ssize_t)n) {
        for (size_t i = 0; i < n; i++) /* still unique enough for names */
            bytes[i] = (unsigned char)(bench_now_ns() >> (i % 8 * 8)) ^ (unsigned char)getpid();
    }
    for (size_t i = 0; i < digits && i / 2 < n; i++)
        out[i] = "0123456789abcdef"[i % 2 ? bytes[i / 2] & 15 : bytes[i / 2] >> 4];
    out[digits] = '\0';
}

static bool write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok;
}

/* The number after "key" (a line "key value" or "key: value kB") in a small /proc file, -1. */
static long long file_number(const char *path, const char *key)
{
    FILE *file = fopen(path, "re");
    if (!file) return -1;
    char line[256];
    long long value = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, file))
        if (strncmp(line, key, klen) == 0 && (line[klen] == ' ' || line[klen] == ':')) {
            value = strtoll(line + klen + 1, NULL, 10);
            break;
        }
    fclose(file);
    return value;
}

static double load_average_1min(void)
{
    FILE *file = fopen("/proc/loadavg", "re");
    double load = -1;
    if (file) {
        if (fscanf(file, "%lf", &load) != 1) load = -1;
        fclose(file);
    }
    return load;
}

/* Sleeps until at_ns unless a stop signal comes first (then false). */
static bool wait_until(struct fleet *f, int64_t at_ns)
{
    for (;;) {
        int64_t left = at_ns - bench_now_ns();
        if (left <= 0) return true;
        struct timespec t = {left / 1000000000LL, left % 1000000000LL};
        int sig = sigtimedwait(&f->stop_signals, NULL, &t);
        if (sig > 0) {
            f->interrupted = true;
            return false;
        }
    }
}

static bool stop_requested(struct fleet *f)
{
    sigset_t pending;
    if (sigpending(&pending) == 0)
        for (int sig = 1; sig < NSIG; sig++)
            if (sigismember(&f->stop_signals, sig) == 1 && sigismember(&pending, sig) == 1)
                f->interrupted = true;
    return f->interrupted;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

/* ---- child processes ---------------------------------------------------------------------- */

struct spawn_spec {
    char *const *argv;
    char *const *envp;  /* NULL: ours, without the agent's CONPROF_* settings */
    int out_fd, err_fd; /* -1: /dev/null, our stderr */
    const char *cgroup; /* join this cgroup v2 before exec, or NULL */
};

static void unset_agent_settings(void)
{
    static const char *const names[] = {
        "CONPROF_CONFIG",    "CONPROF_SINK_URL",  "CONPROF_BEARER_TOKEN_FILE",
        "CONPROF_NODE_NAME", "CONPROF_LOG_LEVEL", "CONPROF_DEBUG"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unsetenv(names[i]);
}

/* In the child: its own process group, dies with us, our old signal mask, stdio, cgroup. */
static void child_setup(const struct fleet *f, const struct spawn_spec *s, pid_t parent)
{
    setpgid(0, 0);
    bench_die_with_parent(parent);
    sigprocmask(SIG_SETMASK, &f->old_mask, NULL);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    dup2(null, 0);
    dup2(s->out_fd >= 0 ? s->out_fd : null, 1);
    if (s->err_fd >= 0) dup2(s->err_fd, 2);
    if (s->cgroup) {
        char procs[PATH_MAX + 16];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", s->cgroup);
        if (!write_text(procs, "0")) _exit(126);
    }
}

static pid_t spawn(const struct fleet *f, const struct spawn_spec *s, struct cp_err *err)
{
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        cp_err_set(err, CP_ERR_IO, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        child_setup(f, s, parent);
        if (s->envp) {
            execve(s->argv[0], s->argv, s->envp);
        } else {
            unset_agent_settings();
            execv(s->argv[0], s->argv);
        }
        _exit(127);
    }
    return pid;
}

/* SIGTERM (or SIGKILL when `hard`), then SIGKILL after timeout_s; reaps. */
static bool stop_child(pid_t pid, bool hard, double timeout_s, int *status, struct rusage *ru)
{
    kill(pid, hard ? SIGKILL : SIGTERM);
    if (bench_wait_child(pid, timeout_s, status, ru)) return true;
    kill(pid, SIGKILL);
    wait4(pid, status, 0, ru);
    return false;
}

/* ---- cgroups ------------------------------------------------------------------------------ */

/* Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup or /sys/fs/cgroup/unified). */
static bool find_cgroup2_root(char *out, size_t size)
{
    FILE *file = fopen("/proc/self/mountinfo", "re");
    if (!file) return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, file)) {
        char mount_point[1024], fstype[64];
        const char *sep = strstr(line, " - ");
        if (sep && sscanf(sep + 3, "%63s", fstype) == 1 && !strcmp(fstype, "cgroup2") &&
            sscanf(line, "%*s %*s %*s %*s %1023s", mount_point) == 1) {
            found = (size_t)snprintf(out, size, "%s", mount_point) < size;
        }
    }
    fclose(file);
    return found;
}

/* Removes an emptied cgroup; a cgroup is busy until its last zombie is reaped. */
static void remove_cgroup(const char *path, double timeout_s)
{
    int64_t deadline = bench_now_ns() + (int64_t)(timeout_s * 1e9);
    while (rmdir(path) < 0 && errno == EBUSY && bench_now_ns() < deadline)
        bench_sleep_ms(20);
}

/* kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
 * cri-containerd-<id>.scope, the kubelet's systemd layout; parents other runs share are kept. */
static int make_container_cgroup(const char *root, struct container *c, struct cp_err *err)
{
    char pod[80], uid_[37];
    snprintf(uid_, sizeof uid_, "%s", c->pod_uid);
    for (char *p = uid_; *p; p++)
        if (*p == '-') *p = '_';
    snprintf(pod, sizeof pod, "kubepods-burstable-pod%s.slice", uid_);
    char scope[96];
    snprintf(scope, sizeof scope, "cri-containerd-%s.scope", c->id);
    const char *parts[4] = {"kubepods.slice", "kubepods-burstable.slice", pod, scope};
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", root);
    for (int i = 0; i < 4; i++) {
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "/%s", parts[i]);
        if (mkdir(path, 0755) == 0)
            snprintf(c->created[c->ncreated++], PATH_MAX, "%s", path);
        else if (errno != EEXIST) {
            cp_err_set(err, CP_ERR_IO, "mkdir %s: %s", path, strerror(errno));
            return -1;
        }
    }
    snprintf(c->cgroup, sizeof c->cgroup, "%s", path);
    return 0;
}

/* ---- containers --------------------------------------------------------------------------- */

static void container_env(const struct fleet *f, const struct container *c, char store[8][600],
                          char *envp[9])
{
    snprintf(store[0], 600, "PATH=/usr/local/bin:/usr/bin:/bin");
    snprintf(store[1], 600, "LANG=C.UTF-8");
    snprintf(store[2], 600, "PYTHONDONTWRITEBYTECODE=1");
    snprintf(store[3], 600, "PYTHONUNBUFFERED=1");
    snprintf(store[4], 600, "HOME=/root");
    snprintf(store[5], 600, "PLATFORM_PROJECT=%s", f->project);
    snprintf(store[6], 600, "PLATFORM_ENVIRONMENT=bench");
    snprintf(store[7], 600, "PLATFORM_APPLICATION_NAME=%s", c->app);
    for (int i = 0; i < 8; i++)
        envp[i] = store[i];
    envp[8] = NULL;
}

/* Starts unshare + fleet_containers.sh; its stdout is `out`. */
static pid_t container_spawn(const struct fleet *f, const struct container *c, int out,
                             struct cp_err *err)
{
    char script[PATH_MAX], prefix[PATH_MAX], num[3][32];
    bench_locate("BENCH_FLEET_SCRIPT", 2, "tests/bench/fleet_containers.sh", script, sizeof script);
    snprintf(prefix, sizeof prefix, "%s", c->python);
    for (int up = 0; up < 2; up++) /* PREFIX/bin/pythonX.Y */
        *(strrchr(prefix, '/') ? strrchr(prefix, '/') : prefix) = '\0';
    snprintf(num[0], sizeof num[0], "%ld", f->o.procs);
    snprintf(num[1], sizeof num[1], "%ld", f->o.threads);
    snprintf(num[2], sizeof num[2], "%g", f->o.busy_percent);
    char *argv[] = {"/usr/bin/unshare",
                    "--mount",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                    "--propagation",
                    "private",
                    "/bin/sh",
                    script,
                    (char *)c->cgroup,
                    (char *)c->ns_dir,
                    prefix,
                    strrchr(c->python, '/') + 1,
                    num[0],
                    num[1],
                    num[2],
                    NULL};
    char store[8][600], *envp[9];
    container_env(f, c, store, envp);
    struct spawn_spec s = {.argv = argv, .envp = envp, .out_fd = out, .err_fd = f->containers_log};
    return spawn(f, &s, err);
}

/* The host pids in the container's cgroup. */
static int read_cgroup_pids(const char *cgroup, pid_t *out, int max)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
    FILE *file = fopen(path, "re");
    if (!file) return -1;
    int n = 0, pid;
    while (n < max && fscanf(file, "%d", &pid) == 1)
        out[n++] = pid;
    fclose(file);
    return n;
}

/* Makes container i and waits until each of its processes printed READY. */
static int container_start(struct fleet *f, int i, struct cp_err *err)
{
    struct container *c = &f->c[i];
    memset(c, 0, sizeof *c);
    random_hex(c->id, 64);
    char uid[33];
    random_hex(uid, 32);
    snprintf(c->pod_uid, sizeof c->pod_uid, "%.8s-%.4s-%.4s-%.4s-%.12s", uid, uid + 8, uid + 12,
             uid + 16, uid + 20);
    snprintf(c->app, sizeof c->app, "fleet-app-%d", i + 1);
    c->python = f->o.pythons[i % f->o.npythons];
    f->ncontainers = i + 1; /* from here on, container_close() undoes what was done */
    snprintf(c->ns_dir, sizeof c->ns_dir, "%s/ctr%d.XXXXXX", f->dir, i + 1);
    if (!mkdtemp(c->ns_dir)) {
        c->ns_dir[0] = '\0';
        cp_err_set(err, CP_ERR_IO, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    if (make_container_cgroup(f->cgroup_root, c, err) < 0) return -1;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        cp_err_set(err, CP_ERR_IO, "pipe: %s", strerror(errno));
        return -1;
    }
    c->unshare_pid = container_spawn(f, c, fds[1], err);
    close(fds[1]);
    int ready = 0;
    char line[256];
    int64_t deadline = bench_now_ns() + (int64_t)(FLEET_READY_TIMEOUT_S * 1e9);
    while (c->unshare_pid > 0 && ready < f->o.procs &&
           bench_read_line(fds[0], line, sizeof line, deadline) >= 0)
        ready += strncmp(line, "READY", 5) == 0;
    close(fds[0]);
    if (c->unshare_pid < 0) return -1;
    c->npids = read_cgroup_pids(c->cgroup, c->pids, 64);
    if (ready < f->o.procs || c->npids != f->o.procs) {
        cp_err_set(err, CP_ERR_IO, "container %s (%s): %d of %ld processes ready, %d in %s", c->app,
                   c->python, ready, f->o.procs, c->npids, c->cgroup);
        return -1;
    }
    return 0;
}

/* Kills the container's processes through its cgroup (unshare, alive still, reaps pid 1, whose
 * exit takes the namespace with it), then unshare, the cgroups and the directory. */
static void container_close(struct container *c)
{
    char path[PATH_MAX + 16];
    if (c->ncreated > 0 && !strcmp(c->created[c->ncreated - 1], c->cgroup)) {
        snprintf(path, sizeof path, "%s/cgroup.kill", c->cgroup);
        write_text(path, "1");
    }
    if (c->unshare_pid > 0) {
        int status;
        struct rusage ru;
        if (!bench_wait_child(c->unshare_pid, 5.0, &status, &ru))
            stop_child(c->unshare_pid, true, 1.0, &status, &ru);
        c->unshare_pid = 0;
    }
    for (int i = c->ncreated - 1; i >= 0; i--)
        remove_cgroup(c->created[i], i == c->ncreated - 1 ? 5.0 : 0);
    c->ncreated = 0;
    if (c->ns_dir[0]) rmdir(c->ns_dir);
}

/* ---- the agent ---------------------------------------------------------------------------- */

static int agent_start(struct fleet *f, struct cp_err *err)
{
    char agent[PATH_MAX], sink[PATH_MAX], spool[PATH_MAX], sock[PATH_MAX], log[PATH_MAX];
    char rate[16], period[16], selector[64];
    bench_agent_path(agent, sizeof agent);
    snprintf(sink, sizeof sink, "%s/profiles", f->dir);
    snprintf(spool, sizeof spool, "%s/spool", f->dir);
    snprintf(sock, sizeof sock, "%s/agent.sock", f->dir);
    snprintf(log, sizeof log, "%s/agent.log", f->dir);
    snprintf(rate, sizeof rate, "%ld", f->o.rate);
    snprintf(period, sizeof period, "%ld", f->o.period_s);
    snprintf(selector, sizeof selector, "project=%s", f->project);
    snprintf(f->agent_cgroup, sizeof f->agent_cgroup, "%s/conprof-bench-fleet-%s", f->cgroup_root,
             f->project + strlen("bench-fleet-"));
    f->agent_cgroup_made = mkdir(f->agent_cgroup, 0755) == 0;
    char *argv[] = {agent,         "run",    "--rate",          rate,
                    "--period",    period,   "--sink-dir",      sink,
                    "--spool-dir", spool,    "--status-socket", sock,
                    "--selector",  selector, "--node-name",     "bench-fleet",
                    NULL};
    int log_fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        cp_err_set(err, CP_ERR_IO, "%s: %s", log, strerror(errno));
        return -1;
    }
    struct spawn_spec s = {.argv = argv,
                           .out_fd = log_fd,
                           .err_fd = log_fd,
                           .cgroup = f->agent_cgroup_made ? f->agent_cgroup : NULL};
    f->t0_ns = bench_now_ns();
    f->agent = spawn(f, &s, err);
    close(log_fd);
    return f->agent > 0 ? 0 : -1;
}

static void print_log_tail(const struct fleet *f, const char *name)
{
    char path[PATH_MAX + 16], text[4096];
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    off_t size = lseek(fd, 0, SEEK_END);
    lseek(fd, size > (off_t)sizeof text - 1 ? size - (off_t)sizeof text + 1 : 0, SEEK_SET);
    size_t n = bench_read_all(fd, text, sizeof text);
    close(fd);
    if (n) fprintf(stderr, "--- %s (last %zu bytes) ---\n%s--- end ---\n", name, n, text);
}

/* SIGTERM: the agent flushes its partial period and exits 0. Its rusage covers reaped workers. */
static void agent_stop(struct fleet *f, bool hard)
{
    if (f->agent <= 0) return;
    f->stopped_s = since_t0(f);
    if (!stop_child(f->agent, hard, FLEET_STOP_TIMEOUT_S, &f->agent_status, &f->agent_ru))
        fprintf(stderr, "bench_fleet: the agent did not exit within %.0f s of SIGTERM\n",
                FLEET_STOP_TIMEOUT_S);
    f->exit_s = since_t0(f);
    f->agent = 0;
    if (f->agent_cgroup_made) { /* a worker the agent left behind */
        char path[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/cgroup.kill", f->agent_cgroup);
        write_text(path, "1");
        remove_cgroup(f->agent_cgroup, 5.0);
        f->agent_cgroup_made = false;
    }
}

static bool agent_alive(struct fleet *f)
{
    pid_t r = wait4(f->agent, &f->agent_status, WNOHANG, &f->agent_ru);
    if (r != f->agent) return true;
    f->agent = 0;
    return false;
}

/* ---- one measurement ---------------------------------------------------------------------- */

struct proc_row {
    pid_t pid, ppid;
    long long user_ticks, system_ticks; /* utime + cutime, stime + cstime */
    long long own_ticks;                /* utime + stime */
};

static bool parse_stat(const char *text, struct proc_row *row)
{
    const char *p = strrchr(text, ')');
    unsigned long long ut, st;
    long long cut, cst;
    int ppid;
    /* fields 3..17: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime */
    if (!p || sscanf(p + 1, " %*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
                     &ppid, &ut, &st, &cut, &cst) != 5)
        return false;
    row->ppid = ppid;
    row->user_ticks = (long long)ut + cut;
    row->system_ticks = (long long)st + cst;
    row->own_ticks = (long long)(ut + st);
    return true;
}

static bool read_stat(pid_t pid, struct proc_row *row)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return false;
    text[n] = '\0';
    row->pid = pid;
    return parse_stat(text, row);
}

/* The agent and its descendants (found by ppid), their stat rows. */
static int find_family(pid_t agent, struct proc_row *family, int max)
{
    DIR *proc = opendir("/proc");
    if (!proc) return 0;
    struct proc_row *rows = malloc(4096 * sizeof *rows);
    size_t nrows = 0, cap = rows ? 4096 : 0;
    struct dirent *e;
    while ((e = readdir(proc)) && nrows < FLEET_MAX_PROCS) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        if (nrows == cap) {
            struct proc_row *more = realloc(rows, 2 * cap * sizeof *rows);
            if (!more) break;
            rows = more;
            cap *= 2;
        }
        if (read_stat((pid_t)atoi(e->d_name), &rows[nrows])) nrows++;
    }
    closedir(proc);
    int n = 0;
    for (size_t i = 0; i < nrows && n < max; i++)
        if (rows[i].pid == agent) family[n++] = rows[i];
    for (int k = 0; k < n; k++) /* breadth first: children of family[k] */
        for (size_t i = 0; i < nrows && n < max; i++)
            if (rows[i].ppid == family[k].pid) family[n++] = rows[i];
    free(rows);
    return n;
}

static double cgroup_cpu_s(const struct fleet *f)
{
    char path[PATH_MAX + 16];
    if (!f->agent_cgroup_made) return -1;
    snprintf(path, sizeof path, "%s/cpu.stat", f->agent_cgroup);
    long long usec = file_number(path, "usage_usec");
    return usec < 0 ? -1 : (double)usec / 1e6;
}

static void read_status(struct fleet *f, struct point *p)
{
    char sock[PATH_MAX + 16];
    snprintf(sock, sizeof sock, "%s/agent.sock", f->dir);
    json_t *doc = NULL;
    struct cp_err err;
    p->samples = p->uptime_s = p->profiles = -1;
    if (status_fetch(sock, 2000, &doc, &err) != STATUS_FETCH_OK) return;
    json_t *samples = json_object_get(doc, "samples");
    if (json_is_integer(samples)) {
        p->samples = json_integer_value(samples);
        p->uptime_s = json_integer_value(json_object_get(doc, "uptime_s"));
        p->profiles = json_integer_value(json_object_get(doc, "profiles"));
        p->targets = (int)json_array_size(json_object_get(doc, "targets"));
    }
    json_decref(f->last_status);
    f->last_status = doc;
}

static void measure(struct fleet *f, struct point *p)
{
    struct proc_row family[FLEET_MAX_FAMILY];
    memset(p, 0, sizeof *p);
    p->t_s = since_t0(f);
    int n = find_family(f->agent, family, FLEET_MAX_FAMILY);
    long long user = 0, system = 0;
    for (int i = 0; i < n; i++) {
        char path[64];
        user += family[i].user_ticks;
        system += family[i].system_ticks;
        long rss = bench_status_kb(family[i].pid, "VmRSS"),
             hwm = bench_status_kb(family[i].pid, "VmHWM");
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)family[i].pid);
        long long pss = file_number(path, "Pss");
        p->rss_kb += rss > 0 ? rss : 0;
        p->hwm_kb += hwm > 0 ? hwm : 0;
        p->pss_kb += pss > 0 ? (long)pss : 0;
    }
    p->nprocs = n;
    double hz = (double)sysconf(_SC_CLK_TCK);
    p->cpu_s = (double)(user + system) / hz;
    p->system_s = (double)system / hz;
    p->agent_cpu_s = n ? (double)family[0].own_ticks / hz : 0;
    p->cgroup_cpu_s = cgroup_cpu_s(f);
    p->load1 = load_average_1min();
    read_status(f, p);
}

/* ---- the run ------------------------------------------------------------------------------ */

/* The point nearest to t (points are taken a little after their deadlines). */
static const struct point *point_at(const struct fleet *f, double t)
{
    size_t best = 0;
    for (size_t i = 1; i < f->npoints; i++)
        if (distance(f->points[i].t_s, t) < distance(f->points[best].t_s, t)) best = i;
    return &f->points[best];
}

static double cpu_percent(const struct point *a, const struct point *b, bool cgroup)
{
    double dt = b->t_s - a->t_s;
    if (dt <= 0) return 0;
    if (cgroup) return a->cgroup_cpu_s < 0 ? -1 : 100.0 * (b->cgroup_cpu_s - a->cgroup_cpu_s) / dt;
    return 100.0 * (b->cpu_s - a->cpu_s) / dt;
}

static void print_minute(const struct fleet *f, int minute)
{
    const struct point *a = point_at(f, minute * 60.0), *b = &f->points[f->npoints - 1];
    printf("  minute %2d (%5.0f-%4.0f s): %6.3f %% of a core (cgroup %6.3f %%), RSS %6.2f MB, "
           "Pss %6.2f MB, %d processes, load %.2f\n",
           minute + 1, a->t_s, b->t_s, cpu_percent(a, b, false), cpu_percent(a, b, true),
           mb(b->rss_kb), mb(b->pss_kb), b->nprocs, b->load1);
    fflush(stdout);
}

static int run(struct fleet *f)
{
    f->cap = (size_t)(f->o.seconds / (double)f->o.interval_s) + 3;
    f->points = calloc(f->cap, sizeof *f->points);
    if (!f->points) return -1;
    printf("per minute (agent + workers; RSS and Pss summed at the minute's end):\n");
    int minute = 0;
    for (size_t k = 0; f->npoints < f->cap; k++) {
        double t = (double)k * (double)f->o.interval_s;
        bool last = t >= f->o.seconds;
        if (last) t = f->o.seconds;
        if (!wait_until(f, f->t0_ns + (int64_t)(t * 1e9))) return -1;
        if (!agent_alive(f)) {
            fprintf(stderr, "bench_fleet: the agent exited (status %d) after %.1f s\n",
                    f->agent_status, since_t0(f));
            print_log_tail(f, "agent.log");
            return -1;
        }
        measure(f, &f->points[f->npoints++]);
        if (last || t >= (minute + 1) * 60.0 - 1e-6) print_minute(f, minute++);
        if (last) break;
    }
    return 0;
}

/* ---- the report --------------------------------------------------------------------------- */

struct figures {
    double cpu_percent, cgroup_percent, steady_percent, worst_minute;
    double peak_mb, slope_mb_10min;
};

/* Least-squares slope of y over x; 0 with fewer than 2 points. */
static double fit_slope(const double *x, const double *y, int n)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        sx += x[i];
        sy += y[i];
        sxx += x[i] * x[i];
        sxy += x[i] * y[i];
    }
    double den = n * sxx - sx * sx;
    return n < 2 || den <= 0 ? 0 : (n * sxy - sx * sy) / den;
}

/* The peak RSS (MB) of each whole period [kP, (k+1)P) since the agent started; returns how many. */
static int period_peaks(const struct fleet *f, double *peak, int max)
{
    double period = (double)f->o.period_s, end = f->points[f->npoints - 1].t_s;
    int n = 0;
    for (; n < max && (n + 1) * period <= end + 1e-6; n++) {
        peak[n] = 0;
        for (size_t i = 0; i < f->npoints; i++)
            if (f->points[i].t_s >= n * period && f->points[i].t_s < (n + 1) * period &&
                mb(f->points[i].rss_kb) > peak[n])
                peak[n] = mb(f->points[i].rss_kb);
    }
    return n;
}

/* RSS growth in MB per 10 minutes. RSS rises within a period (the aggregate of stacks) and
 * drops or stays when the period is flushed, so a line through raw points depends on where the
 * window cuts that sawtooth: the line goes through one value per whole period, its peak, over
 * the periods that start in the second half of the run (every whole period but the first when
 * that leaves fewer than 3; the raw points of the second half when even that is too few). */
static double rss_growth(const struct fleet *f, const char **how)
{
    double peak[256], x[256], end = f->points[f->npoints - 1].t_s;
    int n = period_peaks(f, peak, 256), first = 0;
    while (first < n && first * (double)f->o.period_s < end / 2)
        first++;
    if (n - first < 3) first = 1;
    if (n - first >= 2) {
        *how = "per-period peaks";
        for (int k = first; k < n; k++)
            x[k] = (double)k * (double)f->o.period_s;
        return 600.0 * fit_slope(x + first, peak + first, n - first);
    }
    *how = "raw points of the second half (under 3 whole periods)";
    int m = 0;
    for (size_t i = 0; i < f->npoints && m < 256; i++)
        if (f->points[i].t_s >= end / 2) {
            x[m] = f->points[i].t_s;
            peak[m++] = mb(f->points[i].rss_kb);
        }
    return 600.0 * fit_slope(x, peak, m);
}

static void report_cpu(const struct fleet *f, struct figures *fig)
{
    const struct point *first = &f->points[0], *end = &f->points[f->npoints - 1];
    fig->cpu_percent = cpu_percent(first, end, false);
    fig->cgroup_percent = cpu_percent(first, end, true);
    fig->steady_percent = end->t_s > 120 ? cpu_percent(point_at(f, 60), end, false) : -1;
    fig->worst_minute = 0;
    for (int m = 0; (m + 1) * 60.0 <= end->t_s + 1e-6; m++) {
        double pc = cpu_percent(point_at(f, m * 60.0), point_at(f, (m + 1) * 60.0), false);
        if (pc > fig->worst_minute) fig->worst_minute = pc;
    }
    printf("CPU, agent + workers: %.2f s in %.1f s = %.3f %% of one core (cgroup usage_usec: "
           "%.3f %%)\n",
           end->cpu_s - first->cpu_s, end->t_s, fig->cpu_percent, fig->cgroup_percent);
    double dt = end->t_s - first->t_s;
    if (dt > 0)
        printf("  the agent process %.3f %%, its workers %.3f %%; in the kernel (stime) %.3f %%\n",
               100.0 * (end->agent_cpu_s - first->agent_cpu_s) / dt,
               100.0 * ((end->cpu_s - end->agent_cpu_s) - (first->cpu_s - first->agent_cpu_s)) / dt,
               100.0 * (end->system_s - first->system_s) / dt);
    if (fig->steady_percent >= 0)
        printf("CPU after the first minute: %.3f %%; worst whole minute: %.3f %%\n",
               fig->steady_percent, fig->worst_minute);
    if (f->exit_s > 0)
        printf("CPU including the SIGTERM flush (wait4 rusage, workers included): %.2f s in %.1f s "
               "= %.3f %%; the agent exited %.2f s after SIGTERM with status %d\n",
               bench_rusage_cpu_s(&f->agent_ru), f->exit_s,
               100.0 * bench_rusage_cpu_s(&f->agent_ru) / f->exit_s, f->exit_s - f->stopped_s,
               f->agent_status);
}

/* The first point where the agent and one worker per container run. */
static const struct point *workers_up(const struct fleet *f)
{
    for (size_t i = 0; i < f->npoints; i++)
        if (f->points[i].nprocs >= 1 + f->ncontainers) return &f->points[i];
    return &f->points[0];
}

static void print_period_peaks(const struct fleet *f)
{
    double peak[256];
    int n = period_peaks(f, peak, 256);
    printf("  peak of each whole %ld s period:", f->o.period_s);
    for (int k = 0; k < n; k++)
        printf(" %.2f", peak[k]);
    printf("%s\n", n ? " MB" : " (none)");
}

static void report_rss(const struct fleet *f, struct figures *fig)
{
    const struct point *up = workers_up(f), *end = &f->points[f->npoints - 1];
    long peak = 0, peak_pss = 0;
    for (size_t i = 0; i < f->npoints; i++) {
        if (f->points[i].rss_kb > peak) peak = f->points[i].rss_kb;
        if (f->points[i].pss_kb > peak_pss) peak_pss = f->points[i].pss_kb;
    }
    fig->peak_mb = mb(peak);
    const char *how = "";
    fig->slope_mb_10min = rss_growth(f, &how);
    printf("RSS, agent + workers (sum of VmRSS, MB = 10^6 B; shared pages counted in each):\n");
    printf("  workers up (%.0f s, %d processes) %.2f", up->t_s, up->nprocs, mb(up->rss_kb));
    const double marks[3] = {0.1, 0.5, 0.9};
    for (int i = 0; i < 3; i++) {
        const struct point *p = point_at(f, marks[i] * end->t_s);
        printf(", %.0f %% %.2f", marks[i] * 100, mb(p->rss_kb));
    }
    printf(", end %.2f; peak %.2f MB\n", mb(end->rss_kb), fig->peak_mb);
    printf("  Pss (shared pages split): end %.2f, peak %.2f MB; sum of each process's VmHWM at "
           "the end: %.2f MB\n",
           mb(end->pss_kb), mb(peak_pss), mb(end->hwm_kb));
    print_period_peaks(f);
    printf("  growth: %+.3f MB per 10 min (least squares through the %s)\n", fig->slope_mb_10min,
           how);
}

/* Thread-samples per second between two period ends (the daemon counts samples when a period
 * is flushed; a status read at least 2 s away from a boundary sees k = uptime / period
 * periods flushed). */
static void report_sampling_rate(const struct fleet *f)
{
    long long first_samples = -1, last_samples = -1, first_k = 0, last_k = 0;
    long period = f->o.period_s;
    for (size_t i = 0; i < f->npoints; i++) {
        const struct point *p = &f->points[i];
        long long into = p->uptime_s % period, k = p->uptime_s / period;
        if (p->samples < 0 || k < 1 || into < 2 || into > period - 2) continue;
        if (first_samples < 0) first_samples = p->samples, first_k = k;
        last_samples = p->samples, last_k = k;
    }
    double expected = (double)(f->ncontainers * f->o.procs * f->o.threads * f->o.rate);
    if (last_k > first_k) {
        double rate =
            (double)(last_samples - first_samples) / (double)((last_k - first_k) * period);
        printf("sampling: %.0f thread-samples/s over periods %lld-%lld (%ld s each), expected "
               "%.0f (%d containers x %ld processes x %ld threads x %ld Hz) = %.1f %%\n",
               rate, first_k + 1, last_k, period, expected, f->ncontainers, f->o.procs,
               f->o.threads, f->o.rate, 100.0 * rate / expected);
    } else {
        printf("sampling: fewer than two period ends seen, no rate (run longer than 2 periods)\n");
    }
}

static void report_targets(const struct fleet *f)
{
    json_t *doc = f->last_status, *targets = json_object_get(doc, "targets"), *t;
    size_t i;
    int ours = 0, sampling = 0;
    long long min = -1, max = 0;
    json_array_foreach(targets, i, t)
    {
        pid_t pid = (pid_t)json_integer_value(json_object_get(t, "pid"));
        for (int c = 0; c < f->ncontainers; c++)
            for (int k = 0; k < f->c[c].npids; k++)
                ours += f->c[c].pids[k] == pid;
        const char *state = json_string_value(json_object_get(t, "state"));
        sampling += state && !strcmp(state, "sampling");
        long long s = json_integer_value(json_object_get(t, "samples"));
        if (min < 0 || s < min) min = s;
        if (s > max) max = s;
    }
    const struct point *end = &f->points[f->npoints - 1];
    json_t *w = json_object_get(doc, "workers");
    printf("status at %.0f s: %lld thread-samples, %lld sample errors, %lld profiles; %zu "
           "targets (%d of our %d processes), %d sampling, samples per process %lld-%lld; "
           "workers running %lld, crashes %lld, hangs %lld\n",
           end->t_s, end->samples,
           (long long)json_integer_value(json_object_get(doc, "sample_errors")), end->profiles,
           json_array_size(targets), ours, (int)(f->ncontainers * f->o.procs), sampling,
           min < 0 ? 0 : min, max, (long long)json_integer_value(json_object_get(w, "running")),
           (long long)json_integer_value(json_object_get(w, "crashes")),
           (long long)json_integer_value(json_object_get(w, "hangs")));
}

/* Profiles per application in the directory sink (after the agent's final flush). */
static int report_profiles(const struct fleet *f, int *apps_with_profiles)
{
    int total = 0;
    *apps_with_profiles = 0;
    printf("profiles written:");
    for (int i = 0; i < f->ncontainers; i++) {
        char pattern[PATH_MAX + 64];
        snprintf(pattern, sizeof pattern, "%s/profiles/%s/*.pb.gz", f->dir, f->c[i].app);
        glob_t g;
        int n = glob(pattern, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
        if (n) globfree(&g);
        printf(" %s (%s) %d%s", f->c[i].app, strrchr(f->c[i].python, '/') + 1, n,
               i + 1 < f->ncontainers ? "," : "\n");
        total += n;
        *apps_with_profiles += n > 0;
    }
    return total;
}

static const char *fleet_figure(const struct fleet *f, char *out, size_t size)
{
    snprintf(out, size, "fleet CPU, agent + workers, %ld procs in %ld containers, %ld Hz",
             f->o.containers * f->o.procs, f->o.containers, f->o.rate);
    return out;
}

static void report(struct fleet *f)
{
    struct figures fig;
    char figure[128], value[64], note[160];
    printf("\n");
    report_cpu(f, &fig);
    report_rss(f, &fig);
    report_sampling_rate(f);
    report_targets(f);
    int apps = 0, profiles = report_profiles(f, &apps);
    printf("all %d applications have profiles: %s\n", f->ncontainers,
           apps == f->ncontainers ? "yes" : "NO");
    bench_print_load();
    snprintf(value, sizeof value, "%.3f %% of a core", fig.cpu_percent);
    snprintf(note, sizeof note, "%.0f s whole run, worst minute %.3f %%, %d/%d apps, %d profiles",
             f->points[f->npoints - 1].t_s, fig.worst_minute, apps, f->ncontainers, profiles);
    bench_summary(fleet_figure(f, figure, sizeof figure), value, "<= 1 %", fig.cpu_percent / 1.0,
                  note);
    snprintf(value, sizeof value, "%.2f MB", fig.peak_mb);
    snprintf(note, sizeof note, "sum of VmRSS of %d processes, every %ld s", workers_up(f)->nprocs,
             f->o.interval_s);
    bench_summary("fleet RSS peak, agent + workers", value, "<= 50 MB", fig.peak_mb / 50.0, note);
    snprintf(value, sizeof value, "%+.3f MB / 10 min", fig.slope_mb_10min);
    double growth = fig.slope_mb_10min < 0 ? -fig.slope_mb_10min : fig.slope_mb_10min;
    bench_summary("fleet RSS growth, agent + workers", value, "<= 1 MB",
                  growth / FLEET_RSS_GROWTH_TARGET,
                  "|slope| of per-period RSS peaks, 2nd half; target set here");
}

/* ---- options, start and clean-up ---------------------------------------------------------- */

static void add_python(struct fleet_opts *o, const char *path)
{
    if (o->npythons < BENCH_MAX_PYTHONS && strchr(path, '/') && access(path, X_OK) == 0)
        snprintf(o->pythons[o->npythons++], PATH_MAX, "%s", path);
}

/* BENCH_FLEET_PYTHONS, else the newest pyenv CPythons (one per container, oldest first). */
static void find_fleet_pythons(struct fleet_opts *o)
{
    const char *list = getenv("BENCH_FLEET_PYTHONS");
    if (list && *list) {
        char copy[4096], *save = NULL;
        snprintf(copy, sizeof copy, "%s", list);
        for (char *tok = strtok_r(copy, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save))
            add_python(o, tok);
        return;
    }
    struct bench_python all[BENCH_MAX_PYTHONS];
    int n = 0;
    char pattern[PATH_MAX];
    snprintf(pattern, sizeof pattern, "%s/versions/3.*/bin/python3.*",
             bench_env_str("PYENV_ROOT", "/root/.pyenv"));
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++)
            bench_add_python(all, &n, g.gl_pathv[i]);
        globfree(&g);
    }
    qsort(all, (size_t)n, sizeof *all, bench_cmp_python);
    for (int i = n > o->containers ? n - (int)o->containers : 0; i < n; i++)
        add_python(o, all[i].path);
}

static void read_options(struct fleet_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seconds = bench_env_double("BENCH_FLEET_SECONDS", 600, 10, 86400);
    o->interval_s = bench_env_long("BENCH_FLEET_INTERVAL", 5, 1, 60);
    o->rate = bench_env_long("BENCH_RATE", 100, 1, 1000);
    o->period_s = bench_env_long("BENCH_FLEET_PERIOD", 45, 1, 3600);
    o->containers = bench_env_long("BENCH_FLEET_CONTAINERS", 5, 1, FLEET_MAX_CONTAINERS);
    o->procs = bench_env_long("BENCH_FLEET_PROCS", 4, 1, 64);
    o->threads = bench_env_long("BENCH_FLEET_THREADS", 2, 1, 64);
    o->busy_percent = bench_env_double("BENCH_FLEET_BUSY", 2, 0, 100);
    o->keep = bench_env_long("BENCH_FLEET_KEEP", 0, 0, 1) == 1;
    find_fleet_pythons(o);
}

static void cleanup(struct fleet *f)
{
    agent_stop(f, true);
    for (int i = f->ncontainers - 1; i >= 0; i--) /* the first one made the shared parents */
        container_close(&f->c[i]);
    f->ncontainers = 0;
    bench_close(&f->containers_log);
    json_decref(f->last_status);
    f->last_status = NULL;
    if (f->dir[0] && f->o.keep)
        printf("kept %s (agent.log, profiles/)\n", f->dir);
    else if (f->dir[0])
        nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->points);
}

static int setup(struct fleet *f, struct cp_err *err)
{
    if (geteuid() != 0) {
        cp_err_set(err, CP_ERR_PERM, "needs root (namespaces, mounts, cgroups)");
        return -1;
    }
    if (f->o.npythons == 0) {
        cp_err_set(err, CP_ERR_IO, "no interpreter (pyenv CPython 3.7-3.13, BENCH_FLEET_PYTHONS)");
        return -1;
    }
    if (!find_cgroup2_root(f->cgroup_root, sizeof f->cgroup_root)) {
        cp_err_set(err, CP_ERR_IO, "no cgroup2 file system is mounted");
        return -1;
    }
    if (!bench_tmpdir(f->dir, sizeof f->dir)) {
        f->dir[0] = '\0';
        cp_err_set(err, CP_ERR_IO, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    char hex[9];
    random_hex(hex, 8);
    snprintf(f->project, sizeof f->project, "bench-fleet-%s", hex);
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s/containers.log", f->dir);
    f->containers_log = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    for (int i = 0; i < f->o.containers; i++) {
        if (stop_requested(f)) return -1;
        if (container_start(f, i, err) < 0) {
            print_log_tail(f, "containers.log");
            return -1;
        }
        printf("container %s: %s, %d processes, cgroup .../%s\n", f->c[i].app, f->c[i].python,
               f->c[i].npids, strrchr(f->c[i].cgroup, '/') + 1);
    }
    return stop_requested(f) ? -1 : agent_start(f, err);
}

int main(void)
{
    struct fleet *f = calloc(1, sizeof *f); /* large: paths of every container */
    struct cp_err err = {0};
    if (!f) return 1;
    f->containers_log = -1;
    read_options(&f->o);
    sigemptyset(&f->stop_signals);
    sigaddset(&f->stop_signals, SIGINT);
    sigaddset(&f->stop_signals, SIGTERM);
    sigaddset(&f->stop_signals, SIGHUP);
    sigaddset(&f->stop_signals, SIGQUIT);
    sigprocmask(SIG_BLOCK, &f->stop_signals, &f->old_mask);
    printf("bench_fleet: %ld containers x %ld Python processes x %ld threads (1 sleeping, the "
           "others %g %% busy), conprof-agent run at %ld Hz, period %ld s, for %.0f s\n",
           f->o.containers, f->o.procs, f->o.threads, f->o.busy_percent, f->o.rate, f->o.period_s,
           f->o.seconds);
    bench_print_load();
    int rc = setup(f, &err) == 0 && run(f) == 0 ? 0 : 1;
    if (rc == 0) {
        agent_stop(f, false);
        report(f);
    } else if (f->interrupted) {
        fflush(stdout);
        fprintf(stderr, "bench_fleet: interrupted; cleaning up\n");
    } else {
        fflush(stdout);
        fprintf(stderr, "bench_fleet: %s\n", err.msg[0] ? err.msg : "failed");
        char figure[128];
        bench_summary(fleet_figure(f, figure, sizeof figure), "failed", "<= 1 %", 0, err.msg);
    }
    if (f->interrupted) rc = 130;
    cleanup(f);
    free(f);
    return rc;
}
