/* discovery: two kinds of tests.
 * - A /proc-shaped directory written by the test (stat, exe links, maps, cmdline, environ,
 *   cgroup, status files) scanned through a handle: exact counters and events for the cache
 *   rules (one stat read per process when nothing changes, PID reuse, exec, exits, zombies,
 *   kernel threads, an embedder that loads libpython late).
 * - Real processes on this machine: python3 with PLATFORM_* variables, a non-Python `sleep`, a
 *   Python that exits between scans, a process that execs Python after a first scan, an
 *   embedder (a copy of a shared-library CPython under another name) found by its libpython
 *   mapping, and a Python placed in a real cgroup v2 named like a containerd pod container.
 * Only our own pids and keys are asserted on: other engineers' processes come and go meanwhile.
 * Every child is killed (and any cgroup removed) by the teardown, also when an assertion fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "discovery.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CID "5e0a1c2b3d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
#define POD_ "2f1e8c3a_4b5d_4c6e_8f7a_9b0c1d2e3f4a"
#define POD "2f1e8c3a-4b5d-4c6e-8f7a-9b0c1d2e3f4a"
#define SYS_PYTHON "/usr/bin/python3"
#define SHARED_PYTHON "/root/.pyenv/versions/3.12.1/bin/python3.12"
#define MAX_CHILDREN 16

struct fake {
    int pid;
    const char *comm;
    char state;
    unsigned flags;
    unsigned long long start;
    const char *exe; /* NULL: no link (kernel thread) */
    const char *maps;
    const char *cmdline; /* words separated by '|' */
    const char *environ; /* entries separated by '|' */
    const char *cgroup;
    const char *nspid;
};

#define NFAKES 8

struct fixture {
    char dir[64];              /* a private temporary directory */
    struct fake fakes[NFAKES]; /* this test's copy of FAKES */
    pid_t children[MAX_CHILDREN];
    int nchildren;
    char cgroup_dirs[4][512]; /* created by the test, innermost last */
    int ncgroup_dirs;
    char cgroup_home[1100]; /* our own cgroup.procs, to move children back to */
};

/* ---- fixture ----------------------------------------------------------------------------- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    strcpy(f->dir, "/tmp/test_discovery.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    *state = f;
    return 0;
}

static void run(const char *fmt, const char *arg)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, fmt, arg);
    if (system(cmd) != 0) fprintf(stderr, "note: '%s' failed\n", cmd);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < f->nchildren; i++) {
        if (f->cgroup_home[0]) { /* back to where it came from, so the cgroup can go */
            FILE *procs = fopen(f->cgroup_home, "w");
            if (procs) fprintf(procs, "%d\n", (int)f->children[i]), fclose(procs);
        }
        kill(f->children[i], SIGKILL);
        waitpid(f->children[i], NULL, 0);
    }
    for (int i = f->ncgroup_dirs; i-- > 0;) {
        for (int tries = 0; rmdir(f->cgroup_dirs[i]) < 0 && errno == EBUSY && tries < 100; tries++)
            nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    run("rm -rf '%s'", f->dir);
    free(f);
    return 0;
}

static void adopt(struct fixture *f, pid_t pid)
{
    assert_true(f->nchildren < MAX_CHILDREN);
    f->children[f->nchildren++] = pid;
}

static void reap(struct fixture *f, pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < f->nchildren; i++)
        if (f->children[i] == pid) f->children[i] = f->children[--f->nchildren];
}

static void write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* ---- a /proc written by the test --------------------------------------------------------- */

static void fake_path(const struct fixture *f, char *out, size_t size, int pid, const char *file)
{
    snprintf(out, size, "%s/proc/%d%s%s", f->dir, pid, file[0] ? "/" : "", file);
}

/* '|' in the text becomes NUL. */
static void write_words(const char *path, const char *text)
{
    char buf[1024];
    size_t n = strlen(text);
    assert_true(n < sizeof buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = text[i] == '|' ? '\0' : text[i];
    write_file(path, buf, n);
}

static void fake_write(const struct fixture *f, const struct fake *p)
{
    char path[256], text[1024];
    fake_path(f, path, sizeof path, p->pid, "");
    mkdir(path, 0755);
    int n = snprintf(text, sizeof text,
                     "%d (%s) %c 1 %d %d 0 -1 %u 0 0 0 0 5 3 0 0 20 0 1 0 %llu 1000 10\n", p->pid,
                     p->comm, p->state ? p->state : 'S', p->pid, p->pid, p->flags, p->start);
    fake_path(f, path, sizeof path, p->pid, "stat");
    write_file(path, text, (size_t)n);
    fake_path(f, path, sizeof path, p->pid, "exe");
    unlink(path);
    if (p->exe) assert_int_equal(symlink(p->exe, path), 0);
    fake_path(f, path, sizeof path, p->pid, "maps");
    write_words(path, p->maps ? p->maps : "");
    fake_path(f, path, sizeof path, p->pid, "cmdline");
    write_words(path, p->cmdline ? p->cmdline : "");
    fake_path(f, path, sizeof path, p->pid, "environ");
    write_words(path, p->environ ? p->environ : "");
    fake_path(f, path, sizeof path, p->pid, "cgroup");
    write_words(path, p->cgroup ? p->cgroup : "0::/\n");
    n = snprintf(text, sizeof text, "Name:\t%s\nPid:\t%d\nNSpid:\t%s\nVmRSS:\t1 kB\n", p->comm,
                 p->pid, p->nspid ? p->nspid : "");
    fake_path(f, path, sizeof path, p->pid, "status");
    write_file(path, text, (size_t)n);
}

static unsigned long long ticks_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    long hz = sysconf(_SC_CLK_TCK);
    return (unsigned long long)ts.tv_sec * (unsigned long long)hz +
           (unsigned long long)ts.tv_nsec / (1000000000ull / (unsigned long long)hz);
}

#define LIBPY_MAPS                                                                                 \
    "7f0000000000-7f0000100000 r-xp 00000000 08:01 42 /usr/lib/libpython3.11.so.1.0\n"
#define PLAIN_MAPS "00400000-00452000 r-xp 00000000 08:01 7 /bin/bash\n"
#define POD_CGROUP                                                                                 \
    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" POD_                      \
    ".slice/cri-containerd-" CID ".scope\n"

static const struct fake FAKES[NFAKES] = {
    {1, "systemd", 0, 0, 1, "/usr/lib/systemd/systemd", PLAIN_MAPS, "/sbin/init", "", NULL, "1"},
    {2, "kthreadd", 0, 0x00208040, 2, NULL, NULL, NULL, NULL, NULL, NULL},
    {100, "python3", 0, 0x400000, 500, "/usr/bin/python3.11", NULL, "python3|/srv/web.py",
     "PATH=/bin|PLATFORM_PROJECT=p1|PLATFORM_ENVIRONMENT=prod|PLATFORM_APPLICATION_NAME=web",
     POD_CGROUP, "100\t7"},
    {101, "python3", 0, 0x400000, 510, "/usr/bin/python3.11", NULL, "python3|-m|celery",
     "PLATFORM_PROJECT=p1|CONPROF_APP_NAME=worker", POD_CGROUP, "101\t8"},
    {200, "python3.12", 0, 0x400000, 600, "/opt/py/bin/python3.12 (deleted)", NULL,
     "/opt/py/bin/python3.12|/etc/cron.py", "", NULL, "200"},
    {300, "uwsgi", 0, 0x400000, 700, "/usr/bin/uwsgi", PLAIN_MAPS LIBPY_MAPS, "uwsgi|--ini|a.ini",
     "OTEL_SERVICE_NAME=shop-api", NULL, "300"},
    {400, "bash", 0, 0x400000, 800, "/bin/bash", PLAIN_MAPS, "bash", "", NULL, "400"},
    {500, "embedder", 0, 0x400000, 0 /* now */, "/opt/embedder", PLAIN_MAPS, "embedder", "", NULL,
     "500"},
};
static struct fake *fake(struct fixture *f, int pid)
{
    for (size_t i = 0; i < NFAKES; i++)
        if (f->fakes[i].pid == pid) return &f->fakes[i];
    fail_msg("no fake %d", pid);
    return NULL;
}

struct want_event {
    enum discovery_event_kind kind;
    const char *key;
    int pid;
};

static void expect_events(const struct discovery *d, const struct want_event *want, size_t n)
{
    size_t count;
    const struct discovery_event *ev = discovery_events(d, &count);
    for (size_t i = 0; i < count && i < n; i++) {
        if (ev[i].kind != want[i].kind || strcmp(ev[i].target_key, want[i].key) != 0 ||
            ev[i].pid != want[i].pid)
            fail_msg("event %zu: got %d %s %d, want %d %s %d", i, ev[i].kind, ev[i].target_key,
                     (int)ev[i].pid, want[i].kind, want[i].key, want[i].pid);
        assert_int_equal(ev[i].process != NULL, ev[i].kind == DISCOVERY_PROCESS_APPEARED);
    }
    assert_int_equal(count, n);
}

static void expect_reads(const struct discovery *d, size_t stat, size_t exe, size_t maps,
                         size_t details)
{
    const struct discovery_stats *s = discovery_stats(d);
    if (s->stat_reads != stat || s->exe_reads != exe || s->maps_reads != maps ||
        s->detail_reads != details)
        fail_msg("reads stat %zu exe %zu maps %zu details %zu, want %zu %zu %zu %zu", s->stat_reads,
                 s->exe_reads, s->maps_reads, s->detail_reads, stat, exe, maps, details);
}

static void scan(struct discovery *d)
{
    struct cp_err err;
    if (discovery_scan(d, &err) < 0) fail_msg("scan: %s", err.msg);
}

static const struct discovery_process *proc_of(const struct discovery *d, const char *key, int pid)
{
    const struct discovery_target *t = discovery_find_target(d, key);
    if (!t) fail_msg("no target %s", key);
    for (size_t i = 0; i < t->proc_count; i++)
        if (t->procs[i]->pid == pid) return t->procs[i];
    fail_msg("no pid %d in %s", pid, key);
    return NULL;
}

static struct discovery *fake_discovery(struct fixture *f)
{
    char path[256];
    snprintf(path, sizeof path, "%s/proc", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    memcpy(f->fakes, FAKES, sizeof FAKES);
    fake(f, 500)->start = ticks_now(); /* young: looked at again for libpython */
    for (size_t i = 0; i < NFAKES; i++)
        fake_write(f, &f->fakes[i]);
    struct discovery_options opt = discovery_default_options();
    opt.procfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(opt.procfd >= 0);
    struct cp_err err;
    struct discovery *d = discovery_new(&opt, &err);
    assert_non_null(d);
    return d;
}

static void check_first_scan(struct discovery *d)
{
    scan(d);
    /* 8 stat reads; 7 exe links (not the kernel thread); maps of the 4 non-python names */
    expect_reads(d, 8, 7, 4, 4);
    const struct discovery_stats *s = discovery_stats(d);
    assert_int_equal(s->processes, 8);
    assert_int_equal(s->kernel_threads, 1);
    assert_int_equal(s->python, 4);
    const struct want_event want[] = {
        {DISCOVERY_TARGET_APPEARED, "container:" CID, 0},
        {DISCOVERY_TARGET_APPEARED, "host:cron", 0},
        {DISCOVERY_TARGET_APPEARED, "host:shop-api", 0},
        {DISCOVERY_PROCESS_APPEARED, "container:" CID, 100},
        {DISCOVERY_PROCESS_APPEARED, "container:" CID, 101},
        {DISCOVERY_PROCESS_APPEARED, "host:cron", 200},
        {DISCOVERY_PROCESS_APPEARED, "host:shop-api", 300},
    };
    expect_events(d, want, sizeof want / sizeof *want);
    size_t n;
    const struct discovery_target *t = discovery_targets(d, &n);
    assert_int_equal(n, 3);
    assert_string_equal(t[0].key, "container:" CID);
    assert_true(t[0].in_container);
    assert_string_equal(t[0].cgroup->runtime, "containerd");
    assert_string_equal(t[0].cgroup->pod_uid, POD);
    assert_int_equal(t[0].proc_count, 2);
    const struct discovery_process *web = t[0].procs[0];
    assert_int_equal(web->pid, 100);
    assert_int_equal(web->nspid, 7);
    assert_int_equal(web->start_time, 500);
    assert_string_equal(web->app_name, "web");
    assert_string_equal(web->env.project, "p1");
    assert_string_equal(web->env.environment, "prod");
    assert_true(web->env_readable);
    assert_string_equal(t[0].procs[1]->app_name, "worker");
    const struct discovery_process *cron = proc_of(d, "host:cron", 200);
    assert_string_equal(cron->exe, "/opt/py/bin/python3.12");
    assert_int_equal(cron->cmdline_len, strlen("/opt/py/bin/python3.12|/etc/cron.py"));
    assert_false(t[1].in_container);
}

static void test_fake_proc_cache(void **state)
{
    struct fixture *f = *state;
    struct discovery *d = fake_discovery(f);
    check_first_scan(d);
    const struct discovery_process *web = proc_of(d, "container:" CID, 100);

    /* the young embedder maps libpython now: found at the next scan (maps + exe once) */
    fake(f, 500)->maps = PLAIN_MAPS LIBPY_MAPS;
    fake_write(f, fake(f, 500));
    scan(d);
    expect_reads(d, 8, 1, 1, 1);
    const struct want_event w2[] = {{DISCOVERY_TARGET_APPEARED, "host:embedder", 0},
                                    {DISCOVERY_PROCESS_APPEARED, "host:embedder", 500}};
    expect_events(d, w2, 2);

    /* steady: one stat read per process, nothing else; the same process records */
    scan(d);
    expect_reads(d, 8, 0, 0, 0);
    expect_events(d, NULL, 0);
    assert_ptr_equal(proc_of(d, "container:" CID, 100), web);

    /* pid 200 reused (another start time), pid 400 execs python (same start, new comm) */
    fake(f, 200)->start = 650;
    fake_write(f, fake(f, 200));
    struct fake *bash = fake(f, 400);
    bash->comm = "python3";
    bash->exe = "/usr/bin/python3";
    bash->cmdline = "python3|/srv/jobs/nightly.py|--fast";
    fake_write(f, bash);
    scan(d);
    expect_reads(d, 8, 2, 0, 2);
    const struct want_event w4[] = {{DISCOVERY_PROCESS_GONE, "host:cron", 200},
                                    {DISCOVERY_TARGET_APPEARED, "host:nightly", 0},
                                    {DISCOVERY_PROCESS_APPEARED, "host:cron", 200},
                                    {DISCOVERY_PROCESS_APPEARED, "host:nightly", 400}};
    expect_events(d, w4, 4);
    assert_int_equal(proc_of(d, "host:cron", 200)->start_time, 650);

    /* 101 and 300 exit, 100 is a zombie: their targets go */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/proc/101' '%s/proc/300'", f->dir, f->dir);
    assert_int_equal(system(cmd), 0);
    fake(f, 100)->state = 'Z';
    fake_write(f, fake(f, 100));
    scan(d);
    expect_reads(d, 6, 0, 0, 0);
    const struct want_event w5[] = {{DISCOVERY_PROCESS_GONE, "container:" CID, 100},
                                    {DISCOVERY_PROCESS_GONE, "container:" CID, 101},
                                    {DISCOVERY_PROCESS_GONE, "host:shop-api", 300},
                                    {DISCOVERY_TARGET_GONE, "container:" CID, 0},
                                    {DISCOVERY_TARGET_GONE, "host:shop-api", 0}};
    expect_events(d, w5, 5);
    assert_int_equal(discovery_stats(d)->python, 3);
    assert_null(discovery_find_target(d, "container:" CID));
    discovery_free(d);
}

static void test_fake_selectors(void **state)
{
    struct fixture *f = *state;
    struct discovery *d = fake_discovery(f);
    check_first_scan(d);
    json_error_t jerr;
    json_t *j = json_loads("[{\"container_id\": \"5E0A1C2B3D4F\"}, {\"project\": \"p1\", "
                           "\"application\": \"worker\", \"k8s_namespace\": \"shop\"}]",
                           0, &jerr);
    assert_non_null(j);
    struct selector_list list;
    struct cp_err err;
    assert_int_equal(selector_list_parse(j, "selectors", &list, &err), 0);
    json_decref(j);
    const struct discovery_target *container = discovery_find_target(d, "container:" CID);
    const struct discovery_target *cron = discovery_find_target(d, "host:cron");
    assert_true(discovery_target_matches(container, &list, NULL, NULL));
    assert_false(discovery_target_matches(cron, &list, "shop", NULL));
    selector_list_free(&list);
    /* "any process of the target": 101 is the worker of project p1 */
    j = json_loads("[{\"project\": \"p1\", \"application\": \"worker\", \"k8s_namespace\": "
                   "\"shop\"}]",
                   0, &jerr);
    assert_int_equal(selector_list_parse(j, "selectors", &list, &err), 0);
    json_decref(j);
    assert_true(discovery_target_matches(container, &list, "shop", NULL));
    assert_false(discovery_target_matches(container, &list, "other", NULL));
    assert_false(discovery_target_matches(container, &list, NULL, NULL));
    selector_list_free(&list);
    discovery_free(d);
}

static void test_fake_garbage(void **state)
{
    struct fixture *f = *state;
    char path[256];
    snprintf(path, sizeof path, "%s/proc", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    /* stat files that are not stat lines, names that are not pids, an empty dir */
    const char *bad[] = {"", "12", "12 (x", "12 (x) ", "12 (x) S", "12 (x) S 1 2 3", "garbage )("};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(path, sizeof path, "%s/proc/%zu", f->dir, 10 + i);
        mkdir(path, 0755);
        strcat(path, "/stat");
        write_file(path, bad[i], strlen(bad[i]));
    }
    const char *dirs[] = {"self", "0", "-1", "12345678901", "77"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(path, sizeof path, "%s/proc/%s", f->dir, dirs[i]);
        mkdir(path, 0755);
    }
    /* a comm with ") " inside, and a Python whose files are missing but stat and exe */
    struct fake odd = {90, "a) (b", 0, 0, 5, "/usr/bin/python3", NULL, NULL, NULL, NULL, NULL};
    fake_write(f, &odd);
    snprintf(path, sizeof path, "%s/proc/90/environ", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/proc", f->dir);
    struct discovery_options opt = discovery_default_options();
    opt.procfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct cp_err err;
    struct discovery *d = discovery_new(&opt, &err);
    assert_non_null(d);
    scan(d);
    const struct discovery_stats *s = discovery_stats(d);
    assert_int_equal(s->processes, 9); /* 10..16, 77 and 90 */
    assert_int_equal(s->python, 0);    /* 90 vanished: its environ is gone */
    assert_int_equal(s->vanished, 9);
    discovery_free(d);
    close(opt.procfd);
}

/* ---- real processes ---------------------------------------------------------------------- */

/* Writes a script that says "ready" on stdout and sleeps. */
static void write_script(const struct fixture *f, const char *name, char *path, size_t size)
{
    static const char body[] = "import sys, time\n"
                               "sys.stdout.write('ready\\n')\n"
                               "sys.stdout.flush()\n"
                               "time.sleep(600)\n";
    snprintf(path, size, "%s/%s", f->dir, name);
    write_file(path, body, sizeof body - 1);
}

static void wait_ready(int fd)
{
    char buf[16] = {0};
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 20000), 1);
    assert_true(read(fd, buf, sizeof buf - 1) > 0);
    assert_non_null(strstr(buf, "ready"));
}

/* Forks a child that dies with us; it waits for a byte on *go (when go != NULL) and then execs
 * argv with envp, stdout to a pipe; returns the child's pid and the pipe's read end. */
static pid_t spawn(struct fixture *f, char *const argv[], char *const envp[], int *out, int *go)
{
    int pipe_out[2], pipe_go[2] = {-1, -1};
    assert_int_equal(pipe(pipe_out), 0);
    if (go) assert_int_equal(pipe(pipe_go), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        dup2(pipe_out[1], 1);
        char byte;
        if (go && read(pipe_go[0], &byte, 1) != 1) _exit(1);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    adopt(f, pid);
    close(pipe_out[1]);
    *out = pipe_out[0];
    if (go) {
        close(pipe_go[0]);
        *go = pipe_go[1];
    }
    return pid;
}

static pid_t start_python(struct fixture *f, const char *python, const char *script,
                          char *const envp[])
{
    char path[256];
    write_script(f, script, path, sizeof path);
    char *argv[] = {(char *)python, "-u", path, NULL};
    int out;
    pid_t pid = spawn(f, argv, envp, &out, NULL);
    wait_ready(out);
    close(out);
    return pid;
}

static const struct discovery_target *target_with(const struct discovery *d, pid_t pid,
                                                  const struct discovery_process **proc)
{
    size_t n;
    const struct discovery_target *t = discovery_targets(d, &n);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < t[i].proc_count; k++)
            if (t[i].procs[k]->pid == pid) {
                if (proc) *proc = t[i].procs[k];
                return &t[i];
            }
    return NULL;
}

static size_t count_events(const struct discovery *d, enum discovery_event_kind kind,
                           const char *key, pid_t pid)
{
    size_t n, hits = 0;
    const struct discovery_event *ev = discovery_events(d, &n);
    for (size_t i = 0; i < n; i++)
        hits += ev[i].kind == kind && strcmp(ev[i].target_key, key) == 0 && ev[i].pid == pid;
    return hits;
}

static unsigned long long stat_start_time(pid_t pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    char *p = strrchr(text, ')') + 2;
    for (int field = 3; field < 22; field++)
        p = strchr(p, ' ') + 1;
    return strtoull(p, NULL, 10);
}

static struct discovery *real_discovery(void)
{
    struct discovery_options opt = discovery_default_options();
    struct cp_err err;
    struct discovery *d = discovery_new(&opt, &err);
    assert_non_null(d);
    return d;
}

static void test_real_python_and_sleep(void **state)
{
    struct fixture *f = *state;
    char app[64], env_app[96], key[128], billing_key[128];
    snprintf(app, sizeof app, "orders-%d", (int)getpid());
    snprintf(env_app, sizeof env_app, "PLATFORM_APPLICATION_NAME=%s", app);
    char *env_a[] = {"PLATFORM_PROJECT=proj-a", "PLATFORM_ENVIRONMENT=prod", env_app, NULL};
    char *env_b[] = {"PATH=/usr/bin", NULL};
    char script_b[64];
    snprintf(script_b, sizeof script_b, "billing_%d.py", (int)getpid());
    pid_t a = start_python(f, SYS_PYTHON, "orders.py", env_a);
    pid_t b = start_python(f, SYS_PYTHON, script_b, env_b);
    char *sleep_argv[] = {"/bin/sleep", "600", NULL};
    int out;
    pid_t c = spawn(f, sleep_argv, env_b, &out, NULL);
    close(out);

    struct discovery *d = real_discovery();
    scan(d);
    const struct discovery_stats *s = discovery_stats(d);
    assert_int_equal(s->stat_reads, s->processes); /* one stat read per process */
    assert_true(s->python >= 2);
    snprintf(key, sizeof key, "host:%s", app);
    snprintf(billing_key, sizeof billing_key, "host:billing_%d", (int)getpid());
    const struct discovery_process *pa, *pb;
    const struct discovery_target *ta = target_with(d, a, &pa);
    const struct discovery_target *tb = target_with(d, b, &pb);
    assert_non_null(ta);
    assert_non_null(tb);
    assert_null(target_with(d, c, NULL)); /* sleep is not Python */
    assert_string_equal(ta->key, key);
    assert_string_equal(tb->key, billing_key);
    assert_false(ta->in_container);
    assert_string_equal(pa->env.project, "proj-a");
    assert_string_equal(pa->env.environment, "prod");
    assert_string_equal(pa->app_name, app);
    assert_true(pa->env_readable);
    assert_int_equal(pa->start_time, stat_start_time(a));
    assert_int_equal(pa->nspid, a);
    char real_python[PATH_MAX];
    assert_non_null(realpath(SYS_PYTHON, real_python));
    assert_string_equal(pa->exe, real_python);
    assert_string_equal(pa->cmdline, SYS_PYTHON); /* argv[0], then "-u", the script */
    assert_non_null(memmem(pa->cmdline, pa->cmdline_len, "orders.py", 9));
    assert_string_equal(pb->env.project, "");
    assert_int_equal(count_events(d, DISCOVERY_TARGET_APPEARED, key, 0), 1);
    assert_int_equal(count_events(d, DISCOVERY_PROCESS_APPEARED, key, a), 1);

    /* steady: no event about ours, the same records */
    scan(d);
    assert_int_equal(count_events(d, DISCOVERY_PROCESS_APPEARED, key, a), 0);
    assert_int_equal(count_events(d, DISCOVERY_PROCESS_GONE, key, a), 0);
    const struct discovery_process *again;
    assert_non_null(target_with(d, a, &again));
    assert_ptr_equal(again, pa);
    discovery_free(d);
}

static void test_real_exit_between_scans(void **state)
{
    struct fixture *f = *state;
    char env_app[96], key[128];
    snprintf(env_app, sizeof env_app, "CONPROF_APP_NAME=short-lived-%d", (int)getpid());
    snprintf(key, sizeof key, "host:short-lived-%d", (int)getpid());
    char *envp[] = {env_app, NULL};
    pid_t a = start_python(f, SYS_PYTHON, "short.py", envp);
    struct discovery *d = real_discovery();
    scan(d);
    assert_non_null(target_with(d, a, NULL));
    reap(f, a);
    scan(d);
    assert_null(target_with(d, a, NULL));
    assert_null(discovery_find_target(d, key));
    assert_int_equal(count_events(d, DISCOVERY_PROCESS_GONE, key, a), 1);
    assert_int_equal(count_events(d, DISCOVERY_TARGET_GONE, key, 0), 1);
    discovery_free(d);
}

static void test_real_exec_into_python(void **state)
{
    struct fixture *f = *state;
    char path[256], env_app[96], key[128];
    write_script(f, "late.py", path, sizeof path);
    snprintf(env_app, sizeof env_app, "CONPROF_APP_NAME=late-%d", (int)getpid());
    snprintf(key, sizeof key, "host:late-%d", (int)getpid());
    char *argv[] = {SYS_PYTHON, path, NULL};
    char *envp[] = {env_app, NULL};
    int out, go;
    pid_t pid = spawn(f, argv, envp, &out, &go);
    struct discovery *d = real_discovery();
    scan(d); /* still a fork of this test, not Python */
    assert_null(target_with(d, pid, NULL));
    unsigned long long start = stat_start_time(pid);
    assert_int_equal(write(go, "x", 1), 1);
    wait_ready(out);
    close(out);
    close(go);
    scan(d); /* same pid, same start time, new comm: looked at again */
    const struct discovery_process *p;
    assert_non_null(target_with(d, pid, &p));
    assert_int_equal(p->start_time, start);
    assert_int_equal(count_events(d, DISCOVERY_PROCESS_APPEARED, key, pid), 1);
    discovery_free(d);
}

static void test_real_embedder(void **state)
{
    struct fixture *f = *state;
    if (access(SHARED_PYTHON, X_OK) != 0) {
        print_message("no shared-library CPython at " SHARED_PYTHON "\n");
        skip();
    }
    char copy[128], cmd[400];
    snprintf(copy, sizeof copy, "%s/appserver", f->dir); /* not a Python name */
    snprintf(cmd, sizeof cmd, "cp " SHARED_PYTHON " '%s'", copy);
    assert_int_equal(system(cmd), 0);
    char env_app[96], key[128];
    snprintf(env_app, sizeof env_app, "CONPROF_APP_NAME=embedded-%d", (int)getpid());
    snprintf(key, sizeof key, "host:embedded-%d", (int)getpid());
    char *envp[] = {env_app, "PYTHONHOME=/root/.pyenv/versions/3.12.1", NULL};
    pid_t pid = start_python(f, copy, "embedded.py", envp);
    struct discovery *d = real_discovery();
    scan(d);
    const struct discovery_process *p;
    const struct discovery_target *t = target_with(d, pid, &p);
    assert_non_null(t);
    assert_string_equal(t->key, key);
    assert_string_equal(p->exe, copy);
    assert_true(discovery_stats(d)->maps_reads >= 1);
    discovery_free(d);
}

/* The cgroup v2 mount point, from /proc/self/mountinfo; false when there is none. */
static bool cgroup2_mount(char *out, size_t size)
{
    FILE *fp = fopen("/proc/self/mountinfo", "r");
    if (!fp) return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, fp)) {
        char *sep = strstr(line, " - cgroup2 ");
        char mnt[512];
        if (sep && sscanf(line, "%*s %*s %*s %*s %511s", mnt) == 1) {
            snprintf(out, size, "%s", mnt);
            found = true;
        }
    }
    fclose(fp);
    return found;
}

/* Our own cgroup v2 path (the "0::" line). */
static void own_cgroup(char *out, size_t size)
{
    FILE *fp = fopen("/proc/self/cgroup", "r");
    assert_non_null(fp);
    char line[1024];
    out[0] = '\0';
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "0::", 3) == 0) snprintf(out, size, "%s", strtok(line + 3, "\n"));
    fclose(fp);
}

/* Creates the containerd-style cgroup, outermost first; skips the test when we cannot. */
static void make_pod_cgroup(struct fixture *f, const char *mnt, const char *cid, const char *uid_,
                            char *leaf, size_t size)
{
    const char *parts[] = {"kubepods.slice", "kubepods-burstable.slice", NULL, NULL};
    char pod[128], ctr[128];
    snprintf(pod, sizeof pod, "kubepods-burstable-pod%s.slice", uid_);
    snprintf(ctr, sizeof ctr, "cri-containerd-%s.scope", cid);
    parts[2] = pod;
    parts[3] = ctr;
    snprintf(leaf, size, "%s", mnt);
    for (int i = 0; i < 4; i++) {
        size_t len = strlen(leaf);
        snprintf(leaf + len, size - len, "/%s", parts[i]);
        if (mkdir(leaf, 0755) == 0) {
            snprintf(f->cgroup_dirs[f->ncgroup_dirs++], sizeof f->cgroup_dirs[0], "%s", leaf);
        } else if (errno != EEXIST) {
            print_message("cannot create cgroup %s: %s\n", leaf, strerror(errno));
            skip();
        }
    }
}

static void write_pid(const char *procs, pid_t pid)
{
    FILE *fp = fopen(procs, "w");
    assert_non_null(fp);
    fprintf(fp, "%d\n", (int)pid);
    assert_int_equal(fclose(fp), 0);
}

static void move_to_cgroup(const char *dir, pid_t pid)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    write_pid(path, pid);
}

static void test_real_cgroup_v2_container(void **state)
{
    struct fixture *f = *state;
    char mnt[512], home[512], leaf[1024];
    if (!cgroup2_mount(mnt, sizeof mnt)) {
        print_message("cgroup v2 is not mounted on this machine: test skipped\n");
        skip();
    }
    own_cgroup(home, sizeof home);
    snprintf(f->cgroup_home, sizeof f->cgroup_home, "%s%s/cgroup.procs", mnt,
             strcmp(home, "/") == 0 ? "" : home);
    char cid[65], uid_[40], uid[40];
    snprintf(cid, sizeof cid, "%08x%056x", (unsigned)getpid(), 0xc0ffeeu);
    snprintf(uid_, sizeof uid_, "%08x_1111_4222_8333_%012x", (unsigned)getpid(), 0x444u);
    snprintf(uid, sizeof uid, "%08x-1111-4222-8333-%012x", (unsigned)getpid(), 0x444u);
    make_pod_cgroup(f, mnt, cid, uid_, leaf, sizeof leaf);
    char *envp[] = {"PLATFORM_PROJECT=proj-k8s", "PLATFORM_ENVIRONMENT=staging",
                    "PLATFORM_APPLICATION_NAME=api", NULL};
    pid_t pid = start_python(f, SYS_PYTHON, "api.py", envp);
    move_to_cgroup(leaf, pid);

    struct discovery *d = real_discovery();
    scan(d);
    const struct discovery_process *p;
    const struct discovery_target *t = target_with(d, pid, &p);
    assert_non_null(t);
    char key[128];
    snprintf(key, sizeof key, "container:%s", cid);
    assert_string_equal(t->key, key);
    assert_true(t->in_container);
    assert_string_equal(p->cgroup.runtime, "containerd");
    assert_string_equal(p->cgroup.container_id, cid);
    assert_string_equal(p->cgroup.pod_uid, uid);
    assert_non_null(strstr(p->cgroup.path, "/kubepods.slice/kubepods-burstable.slice/"));
    assert_string_equal(p->app_name, "api");
    assert_string_equal(p->env.project, "proj-k8s");

    /* a selector by container id prefix picks it, one for another project does not */
    json_t *j = json_pack("[{s:s#}]", "container_id", cid, 12);
    struct selector_list list;
    struct cp_err err;
    assert_int_equal(selector_list_parse(j, "selectors", &list, &err), 0);
    json_decref(j);
    assert_true(discovery_target_matches(t, &list, NULL, NULL));
    selector_list_free(&list);
    j = json_pack("[{s:s}]", "project", "other");
    assert_int_equal(selector_list_parse(j, "selectors", &list, &err), 0);
    json_decref(j);
    assert_false(discovery_target_matches(t, &list, NULL, NULL));
    selector_list_free(&list);
    discovery_free(d);

    /* back home, then the cgroups we made can go (the shared kubepods parents only when no
     * one else uses them) */
    write_pid(f->cgroup_home, pid);
    reap(f, pid);
    for (; f->ncgroup_dirs > 0; f->ncgroup_dirs--) {
        const char *dir = f->cgroup_dirs[f->ncgroup_dirs - 1];
        bool ours = strstr(dir, cid) || strstr(dir, uid_);
        if (rmdir(dir) < 0 && (ours || (errno != EBUSY && errno != ENOTEMPTY)))
            fail_msg("rmdir %s: %s", dir, strerror(errno));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fake_proc_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fake_selectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fake_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_python_and_sleep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_exit_between_scans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_exec_into_python, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_embedder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_cgroup_v2_container, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
