/* bench_console: conprof-console under the load of issue 4's "Speed" section, end to end over
 * loopback: the real binary in a temporary data directory, driven the way agents and clients
 * drive it (websocket, REST, ingest, query), measured from /proc.
 *
 * Three phases on one console (BENCH_CONSOLE_PHASES picks a subset):
 *  1. agents: BENCH_CONSOLE_AGENTS (1,000) agents simulated by this process with ONE
 *     libwebsockets context: one client wsi per agent, each with its own lws_sul heartbeat,
 *     staggered over the 10 s period. Each says hello (proto_build_hello, three targets), sends a
 *     status every period (with its running session once it has one) and acks every command, as
 *     conprof-agent does. Profiling is switched on through the REST API while they are
 *     connected: the fan-out latency is the time from the PUT until the last agent read its
 *     `start`. Then, with profiling on, the console's CPU (utime + stime of the whole process)
 *     is read over BENCH_CONSOLE_SECONDS, and its VmRSS / VmHWM.
 *  2. ingest: real profiles uploaded as 45 s periods. BENCH_CONSOLE_VARIANTS recordings of a
 *     `stacks 2000 4` target by `conprof-agent record` (10 s each, ~2,200 distinct stacks, as
 *     many as a busy service shows in 45 s; made at the same time, before the console starts,
 *     so nothing else runs while the console is measured) are POSTed to /ingest exactly as the
 *     agent's HTTP sink does, N of them with P transfers in flight (libcurl multi): profiles/s
 *     on the wall clock, and the console's CPU per profile, which a busy machine does not
 *     inflate.
 *  3. merge: profiles of 45 s cover one hour of one application; the merge API is timed (median
 *     of BENCH_CONSOLE_MERGE_RUNS) for out=pprof, flamebearer and collapsed, and the collapsed
 *     total is checked against the sum of the CPU values of the profiles uploaded.
 *
 * The REST calls made while the agents are connected run on a helper thread (libcurl easy) so the
 * lws loop keeps serving the agents; the thread only reads the run's settings and sets an
 * atomic flag when its answer is in.
 * Stop signals are blocked and polled (sigpending); children run in their own process group with
 * PR_SET_PDEATHSIG and our old signal mask; every exit path stops the console and removes the
 * temporary directory (BENCH_CONSOLE_KEEP=1 keeps it, with console.log). Nothing is asserted
 * about timings; a console that misbehaves (refused token, lost agents, wrong merge total) makes
 * the benchmark fail with the reason.
 */
#include "bench_util.h"

#include "buf.h"
#include "pprof_read.h"
#include "protocol.h"

#include <curl/curl.h>
#include <ftw.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define MAX_VARIANTS 16
#define PROFILE_PERIOD_S 45 /* the agent's default upload period */
#define PROJECT "bench"
#define ENVIRONMENT "production"
#define MERGE_APP "app"
#define TOGGLE_PATH "/api/v1/projects/" PROJECT "/environments/" ENVIRONMENT "/profiling"
#define QUERY_BASE "/api/v1/projects/" PROJECT "/environments/" ENVIRONMENT "/continuous-profiling"
#define FANOUT_TARGET_MS 2000.0 /* the "toggle on -> sampling within 2 s" */
#define INGEST_TARGET 200.0     /* profiles/s */
#define MERGE_TARGET_MS 200.0

#define SIM_TARGETS 3   /* Python processes each simulated agent reports */
#define SIM_OUTBOX 8    /* frames waiting to be written per agent */
#define SIM_PACE 32     /* connections being opened at once */
#define SIM_RATE_HZ 100 /* the samples a running session adds to status */

/* ---- settings and the run --------------------------------------------------------------- */

struct settings {
    long agents, seconds, heartbeat_s;
    long ingest, ingest_apps, parallel;
    long merge_profiles, merge_runs;
    long record_s, variants;
    const char *phases;
    bool keep;
};

static void read_settings(struct settings *s)
{
    s->agents = bench_env_long("BENCH_CONSOLE_AGENTS", 1000, 1, 10000);
    s->seconds = bench_env_long("BENCH_CONSOLE_SECONDS", 60, 1, 3600);
    s->heartbeat_s = bench_env_long("BENCH_CONSOLE_HEARTBEAT", 10, 1, 600);
    s->ingest = bench_env_long("BENCH_CONSOLE_INGEST", 2000, 1, 1000000);
    s->ingest_apps = bench_env_long("BENCH_CONSOLE_INGEST_APPS", 20, 1, 10000);
    s->parallel = bench_env_long("BENCH_CONSOLE_PARALLEL", 8, 1, 256);
    s->merge_profiles = bench_env_long("BENCH_CONSOLE_MERGE_PROFILES", 80, 1, 100000);
    s->merge_runs = bench_env_long("BENCH_CONSOLE_MERGE_RUNS", 7, 1, 1000);
    s->record_s = bench_env_long("BENCH_CONSOLE_RECORD_SECONDS", 10, 1, 600);
    s->variants = bench_env_long("BENCH_CONSOLE_VARIANTS", 4, 1, MAX_VARIANTS);
    s->phases = bench_env_str("BENCH_CONSOLE_PHASES", "agents,ingest,merge");
    const char *keep = getenv("BENCH_CONSOLE_KEEP");
    s->keep = keep && *keep && strcmp(keep, "0") != 0;
}

struct run {
    struct settings set;
    char dir[PATH_MAX];
    char data_dir[PATH_MAX + 8];
    char log_path[PATH_MAX + 16];
    char console_bin[PATH_MAX], agent_bin[PATH_MAX];
    pid_t console; /* 0: not running */
    int port;
    char base_url[96];
    char agent_token[256], api_token[256];
    sigset_t stop_signals, old_mask;
    struct buf profiles[MAX_VARIANTS]; /* gzipped pprof as recorded */
    int64_t profile_cpu_ns[MAX_VARIANTS];
    size_t profile_stacks[MAX_VARIANTS];
    int nprofiles;
};

static bool wants_phase(const struct run *r, const char *name)
{
    return strstr(r->set.phases, name) != NULL;
}

static bool stop_pending(const struct run *r)
{
    sigset_t pending;
    if (sigpending(&pending) != 0) return false;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&r->stop_signals, sig) == 1 && sigismember(&pending, sig) == 1) return true;
    return false;
}

static int interrupted(struct cp_err *err)
{
    cp_err_set(err, CP_ERR_IO, "interrupted by a signal");
    return -1;
}

/* ---- numbers ------------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of n values, sorted in place (nearest rank). */
static double quantile(double *v, size_t n, double q)
{
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static double ms_since(int64_t t0_ns)
{
    return (double)(bench_now_ns() - t0_ns) / 1e6;
}

static double mb_of_kb(long kb)
{
    return (double)kb * 1024.0 / 1e6;
}

/* utime + stime of a whole process in ns, -1 if gone. /proc/PID/stat, not the threads'
 * schedstat: the console merges on worker threads that exit after each merge, and only the
 * process's counters keep their time. They count in clock ticks (10 ms), so short figures are
 * averaged over many requests (7 merges of ~150 ms, 2,000 uploads). */
static int64_t proc_cpu_ns(pid_t pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = '\0';
    const char *p = strrchr(text, ')'); /* the command name may hold spaces */
    unsigned long long utime, stime;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (int64_t)(utime + stime) * (NS_PER_S / sysconf(_SC_CLK_TCK));
}

static int64_t self_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(bench_rusage_cpu_s(&ru) * 1e9);
}

/* ---- files and children ------------------------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int read_file(const char *path, struct buf *out, struct cp_err *err)
{
    FILE *f = fopen(path, "rbe");
    if (!f) {
        cp_err_set(err, CP_ERR_IO, "%s: %s", path, strerror(errno));
        return -1;
    }
    char chunk[65536];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = buf_append(out, chunk, n);
    fclose(f);
    if (rc) cp_err_set(err, CP_ERR_NOMEM, "%s: out of memory", path);
    return rc;
}

static int open_log(const struct run *r)
{
    return open(r->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* A child in its own process group (a ^C reaches only us, and we stop it), dying with us, with
 * the signal mask we found, stdin from /dev/null, stdout / stderr on the descriptors given (-1:
 * /dev/null). Returns its pid or -1. */
static pid_t spawn(const struct run *r, char *const argv[], int out_fd, int err_fd)
{
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid != 0) return pid;
    setpgid(0, 0);
    bench_die_with_parent(parent);
    sigprocmask(SIG_SETMASK, &r->old_mask, NULL);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(out_fd >= 0 ? out_fd : null, 1);
    dup2(err_fd >= 0 ? err_fd : null, 2);
    execv(argv[0], argv);
    _exit(127);
}

/* SIGTERM, SIGKILL after timeout_s; reaps. Returns the exit status (-1 if killed). */
static int stop_child(pid_t pid, double timeout_s)
{
    int status = 0;
    struct rusage ru;
    kill(pid, SIGTERM);
    if (!bench_wait_child(pid, timeout_s, &status, &ru)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Waits for a child, giving up at the deadline or on a stop signal (1 exited, 0, -1). */
static int wait_child_or_stop(const struct run *r, pid_t pid, double timeout_s, int *status)
{
    int64_t deadline = bench_now_ns() + (int64_t)(timeout_s * 1e9);
    struct rusage ru;
    while (bench_now_ns() < deadline) {
        if (bench_wait_child(pid, 0.2, status, &ru)) return 1;
        if (stop_pending(r)) return -1;
    }
    return 0;
}

static void print_log_tail(const struct run *r)
{
    struct buf log = {0};
    struct cp_err ignored;
    if (read_file(r->log_path, &log, &ignored) == 0 && log.len) {
        size_t from = log.len > 3000 ? log.len - 3000 : 0;
        fprintf(stderr, "--- end of %s ---\n%s\n---\n", r->log_path, log.data + from);
    }
    buf_free(&log);
}

/* ---- HTTP (libcurl) ----------------------------------------------------------------------- */

struct http_res {
    long status;
    struct buf body;
    double ms;
    char error[CURL_ERROR_SIZE];
};

static size_t keep_body(char *data, size_t size, size_t n, void *ctx)
{
    return buf_append(ctx, data, size * n) ? 0 : size * n;
}

/* One request on `easy` (reused between calls, so its connection stays open). body NULL: none.
 * Returns 0 when an HTTP answer came (any status), -1 with res->error otherwise. */
static int http_call(const struct run *r, CURL *easy, const char *method, const char *path,
                     const char *token, const char *body, struct http_res *res)
{
    char url[2048], auth[300];
    snprintf(url, sizeof url, "%s%s", r->base_url, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    struct curl_slist *headers = curl_slist_append(NULL, auth);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &res->body);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, res->error);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    buf_reset(&res->body);
    res->error[0] = '\0';
    res->status = 0;
    int64_t t0 = bench_now_ns();
    CURLcode rc = curl_easy_perform(easy);
    res->ms = ms_since(t0);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &res->status);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK && !res->error[0])
        snprintf(res->error, sizeof res->error, "%s", curl_easy_strerror(rc));
    return rc == CURLE_OK ? 0 : -1;
}

/* A call expected to answer 200; anything else is an error naming the request and the answer. */
static int http_expect_ok(const struct run *r, CURL *easy, const char *method, const char *path,
                          const char *body, struct http_res *res, struct cp_err *err)
{
    if (http_call(r, easy, method, path, r->api_token, body, res) < 0) {
        cp_err_set(err, CP_ERR_IO, "%s %s: %s", method, path, res->error);
        return -1;
    }
    if (res->status != 200) {
        cp_err_set(err, CP_ERR_IO, "%s %s: HTTP %ld: %.300s", method, path, res->status,
                   res->body.data ? res->body.data : "");
        return -1;
    }
    return 0;
}

/* A REST call on a helper thread, so the websocket loop keeps running meanwhile. */
struct rest_async {
    const struct run *run;
    const char *method, *body;
    char path[512];
    struct http_res res;
    int rc;
    atomic_bool done;
    pthread_t thread;
    bool started;
};

static void *rest_async_main(void *arg)
{
    struct rest_async *a = arg;
    CURL *easy = curl_easy_init();
    a->rc = easy ? http_call(a->run, easy, a->method, a->path, a->run->api_token, a->body, &a->res)
                 : -1;
    if (!easy) snprintf(a->res.error, sizeof a->res.error, "curl_easy_init failed");
    curl_easy_cleanup(easy);
    atomic_store(&a->done, true);
    return NULL;
}

static int rest_async_start(struct rest_async *a, const struct run *r, const char *method,
                            const char *path, const char *body, struct cp_err *err)
{
    memset(a, 0, sizeof *a);
    a->run = r;
    a->method = method;
    a->body = body;
    snprintf(a->path, sizeof a->path, "%s", path);
    atomic_init(&a->done, false);
    int rc = pthread_create(&a->thread, NULL, rest_async_main, a);
    if (rc) {
        cp_err_set(err, CP_ERR_IO, "pthread_create: %s", strerror(rc));
        return -1;
    }
    a->started = true;
    return 0;
}

/* Waits for the thread (its request times out after 60 s at worst) and frees its answer. */
static void rest_async_finish(struct rest_async *a)
{
    if (a->started) pthread_join(a->thread, NULL);
    a->started = false;
    buf_free(&a->res.body);
}

/* ---- the console -------------------------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* `conprof-console token create`: the token it prints. */
static int create_token(const struct run *r, const char *name, bool api, char *out, size_t size,
                        struct cp_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        cp_err_set(err, CP_ERR_IO, "pipe: %s", strerror(errno));
        return -1;
    }
    char *argv[] = {(char *)r->console_bin,
                    "token",
                    "create",
                    "--data",
                    (char *)r->data_dir,
                    "--name",
                    (char *)name,
                    api ? "--api" : NULL,
                    NULL};
    int log = open_log(r);
    pid_t pid = spawn(r, argv, fds[1], log);
    close(fds[1]);
    if (log >= 0) close(log);
    int len = pid > 0 ? bench_read_line(fds[0], out, size, bench_now_ns() + 20 * NS_PER_S) : -1;
    close(fds[0]);
    int status = 0, waited = pid > 0 ? wait_child_or_stop(r, pid, 20.0, &status) : 0;
    if (pid > 0 && waited <= 0) stop_child(pid, 1.0);
    if (len <= 0 || waited <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        cp_err_set(err, CP_ERR_IO, "%s token create --name %s failed (status 0x%x); see %s",
                   r->console_bin, name, (unsigned)status, r->log_path);
        return -1;
    }
    return 0;
}

/* Serves until GET /api/v1/projects answers 200 (at most 20 s). */
static int console_wait_ready(struct run *r, struct cp_err *err)
{
    CURL *easy = curl_easy_init();
    struct http_res res = {0};
    int64_t deadline = bench_now_ns() + 20 * NS_PER_S;
    int rc = -1, status;
    struct rusage ru;
    while (easy && rc < 0 && bench_now_ns() < deadline && !stop_pending(r)) {
        if (bench_wait_child(r->console, 0, &status, &ru)) {
            r->console = 0;
            break;
        }
        if (http_call(r, easy, "GET", "/api/v1/projects", r->api_token, NULL, &res) == 0 &&
            res.status == 200)
            rc = 0;
        else
            bench_sleep_ms(50);
    }
    buf_free(&res.body);
    curl_easy_cleanup(easy);
    if (rc < 0)
        cp_err_set(err, CP_ERR_IO, "conprof-console did not come up on %s%s", r->base_url,
                   r->console ? "" : " (it exited)");
    return rc;
}

static int console_start(struct run *r, struct cp_err *err)
{
    if (create_token(r, "bench-agents", false, r->agent_token, sizeof r->agent_token, err) ||
        create_token(r, "bench-api", true, r->api_token, sizeof r->api_token, err))
        return -1;
    r->port = free_port();
    if (r->port <= 0) {
        cp_err_set(err, CP_ERR_IO, "no free loopback port: %s", strerror(errno));
        return -1;
    }
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", r->port);
    snprintf(r->base_url, sizeof r->base_url, "http://%s", listen);
    char *argv[] = {r->console_bin, "serve", "--listen", listen, "--data", r->data_dir, NULL};
    int log = open_log(r);
    r->console = spawn(r, argv, log, log);
    if (log >= 0) close(log);
    if (r->console < 0) {
        r->console = 0;
        cp_err_set(err, CP_ERR_IO, "fork: %s", strerror(errno));
        return -1;
    }
    if (console_wait_ready(r, err)) return -1;
    printf("console: %s, pid %d, data %s, log %s\n", r->base_url, (int)r->console, r->data_dir,
           r->log_path);
    return 0;
}

static void console_stop(struct run *r)
{
    if (r->console > 0) {
        int status = stop_child(r->console, 10.0);
        if (status != 0) printf("console: exit status %d after SIGTERM\n", status);
    }
    r->console = 0;
}

static bool console_alive(struct run *r, struct cp_err *err)
{
    int status = 0;
    struct rusage ru;
    if (r->console > 0 && !bench_wait_child(r->console, 0, &status, &ru)) return true;
    r->console = 0;
    cp_err_set(err, CP_ERR_IO, "conprof-console exited (status 0x%x); see its log", status);
    return false;
}

/* ---- simulated agents --------------------------------------------------------------------- */

enum sim_state { SIM_IDLE, SIM_CONNECTING, SIM_OPEN };

struct fleet;

struct sim_agent {
    struct fleet *fleet;
    int index;
    enum sim_state state;
    struct lws *wsi;
    int64_t next_attempt_ns;
    lws_sorted_usec_list_t heartbeat;
    char *outbox[SIM_OUTBOX];
    int out_first, out_count;
    struct buf rx;
    bool rx_overflow;
    json_t *targets;
    char session_id[PROTO_ID_MAX + 1];
    int64_t lease_until, session_since, samples;
    int64_t got_ns; /* when the awaited command arrived; 0: not yet */
};

struct fleet_counts {
    uint64_t connects, connect_errors, drops, hellos, statuses, acks, nacks, commands;
    uint64_t outbox_full, build_errors, oversized;
};

struct fleet {
    const struct run *run;
    struct lws_context *ctx;
    struct lws_protocols protocols[2];
    struct sim_agent *agents;
    int n, open, connecting, idle;
    int64_t heartbeat_us;
    lws_sorted_usec_list_t wake;
    json_t *capabilities;
    char auth[300];
    unsigned char *frame; /* LWS_PRE + PROTO_FRAME_MAX */
    struct fleet_counts c;
    bool closing;
    enum proto_type awaited; /* the command being timed, PROTO_UNKNOWN: none */
    int arrived;
};

static json_t *sim_targets(int index, struct cp_err *err)
{
    json_t *list = json_array();
    for (int t = 0; list && t < SIM_TARGETS; t++) {
        char container[80], pod[48], app[32];
        int id = index * SIM_TARGETS + t;
        snprintf(container, sizeof container, "%08x%056x", (unsigned)id, (unsigned)t + 1);
        snprintf(pod, sizeof pod, "%08x-0000-4000-8000-%012x", (unsigned)index, (unsigned)t);
        snprintf(app, sizeof app, "app-%d", t);
        struct proto_target target = {
            .pid = 1000 + id,
            .container_id = container,
            .pod_uid = pod,
            .project = PROJECT,
            .environment = ENVIRONMENT,
            .application = app,
            .python = "3.12.1",
        };
        json_t *one = proto_target_json(&target, err);
        if (!one || json_array_append_new(list, one)) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static void sim_push(struct sim_agent *a, char *text)
{
    struct fleet *f = a->fleet;
    if (!text) {
        f->c.build_errors++;
        return;
    }
    if (a->out_count == SIM_OUTBOX) {
        f->c.outbox_full++;
        free(text);
        return;
    }
    a->outbox[(a->out_first + a->out_count++) % SIM_OUTBOX] = text;
    if (a->state == SIM_OPEN && a->wsi) lws_callback_on_writable(a->wsi);
}

static void sim_clear(struct sim_agent *a)
{
    while (a->out_count) {
        free(a->outbox[a->out_first]);
        a->out_first = (a->out_first + 1) % SIM_OUTBOX;
        a->out_count--;
    }
    buf_reset(&a->rx);
    a->rx_overflow = false;
}

static char *sim_hello(const struct sim_agent *a, struct cp_err *err)
{
    struct proto_hello h = {.capabilities = a->fleet->capabilities, .targets = a->targets};
    snprintf(h.agent_id, sizeof h.agent_id, "bench-agent-%05d", a->index);
    snprintf(h.node, sizeof h.node, "bench-node-%05d", a->index);
    snprintf(h.agent_version, sizeof h.agent_version, "0.1.0");
    return proto_build_hello(&h, err);
}

static char *sim_status(struct sim_agent *a, struct cp_err *err)
{
    int64_t now = (int64_t)time(NULL);
    struct proto_session_status s = {.state = PROTO_SESSION_RUNNING};
    struct proto_status st = {.targets = a->targets, .uploads = {.sent = a->samples / 4500}};
    if (a->session_id[0]) {
        a->samples += (int64_t)SIM_TARGETS * SIM_RATE_HZ * (a->fleet->heartbeat_us / 1000000);
        snprintf(s.session_id, sizeof s.session_id, "%s", a->session_id);
        s.lease_until = a->lease_until;
        s.profiling_s = now - a->session_since;
        s.targets = SIM_TARGETS;
        st.sessions = &s;
        st.session_count = 1;
    }
    st.samples = a->samples;
    return proto_build_status(&st, err);
}

static void sim_heartbeat(lws_sorted_usec_list_t *sul)
{
    struct sim_agent *a = lws_container_of(sul, struct sim_agent, heartbeat);
    struct fleet *f = a->fleet;
    struct cp_err err = {0};
    if (a->state == SIM_OPEN) {
        f->c.statuses++;
        sim_push(a, sim_status(a, &err));
    }
    lws_sul_schedule(f->ctx, 0, &a->heartbeat, sim_heartbeat, f->heartbeat_us);
}

/* Keeps lws_service() from sleeping longer than 10 ms, so the loop sees deadlines and signals. */
static void fleet_wake(lws_sorted_usec_list_t *sul)
{
    struct fleet *f = lws_container_of(sul, struct fleet, wake);
    lws_sul_schedule(f->ctx, 0, &f->wake, fleet_wake, 10 * LWS_US_PER_MS);
}

/* Applies a command as an agent would (session, lease) and notes when the awaited one came. */
static void sim_apply(struct sim_agent *a, const struct proto_command *cmd)
{
    struct fleet *f = a->fleet;
    if (cmd->type == PROTO_START) {
        if (strcmp(a->session_id, cmd->session_id)) a->session_since = (int64_t)time(NULL);
        snprintf(a->session_id, sizeof a->session_id, "%s", cmd->session_id);
        a->lease_until = cmd->quota.lease_until;
    } else if (cmd->type == PROTO_STOP && !strcmp(a->session_id, cmd->session_id)) {
        a->session_id[0] = '\0';
    } else if (cmd->type == PROTO_LEASE && !strcmp(a->session_id, cmd->session_id)) {
        a->lease_until = cmd->quota.lease_until;
    }
    if (cmd->type == f->awaited && !a->got_ns) {
        a->got_ns = bench_now_ns();
        f->arrived++;
    }
}

static void sim_command(struct sim_agent *a, const char *text, size_t len)
{
    struct fleet *f = a->fleet;
    struct proto_command cmd;
    struct proto_nack nack;
    struct cp_err err = {0};
    f->c.commands++;
    if (proto_parse_command(text, len, &cmd, &nack) < 0) {
        f->c.nacks++;
        fprintf(stderr, "agent %d: nack of a console frame: %s: %s (%.200s)\n", a->index,
                nack.field, nack.error, text);
        sim_push(a, proto_build_nack(nack.id, nack.field, nack.error, &err));
        return;
    }
    sim_apply(a, &cmd);
    f->c.acks++;
    sim_push(a, proto_build_ack(cmd.id, &err));
    proto_command_free(&cmd);
}

static void sim_receive(struct sim_agent *a, struct lws *wsi, const void *in, size_t len)
{
    if (a->rx.len + len > PROTO_FRAME_MAX || buf_append(&a->rx, in, len)) a->rx_overflow = true;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi)) return;
    if (a->rx_overflow)
        a->fleet->c.oversized++;
    else
        sim_command(a, a->rx.data, a->rx.len);
    buf_reset(&a->rx);
    a->rx_overflow = false;
}

static int sim_write(struct sim_agent *a, struct lws *wsi)
{
    if (a->state != SIM_OPEN || !a->out_count) return 0;
    char *text = a->outbox[a->out_first];
    a->out_first = (a->out_first + 1) % SIM_OUTBOX;
    a->out_count--;
    size_t len = strlen(text);
    unsigned char *frame = a->fleet->frame + LWS_PRE;
    memcpy(frame, text, len);
    free(text);
    if (lws_write(wsi, frame, len, LWS_WRITE_TEXT) < (int)len) return -1;
    if (a->out_count) lws_callback_on_writable(wsi);
    return 0;
}

static void sim_established(struct sim_agent *a, struct lws *wsi)
{
    struct fleet *f = a->fleet;
    struct cp_err err = {0};
    if (a->state != SIM_CONNECTING) return;
    a->state = SIM_OPEN;
    a->wsi = wsi;
    f->connecting--;
    f->open++;
    f->c.connects++;
    f->c.hellos++;
    sim_push(a, sim_hello(a, &err));
}

/* Every way a connection ends (lws may report one failure twice: the state makes it count once). */
static void sim_ended(struct sim_agent *a, struct lws *wsi)
{
    struct fleet *f = a->fleet;
    if (a->state == SIM_IDLE || (a->wsi && wsi && a->wsi != wsi)) return;
    if (a->state == SIM_OPEN) {
        f->open--;
        if (!f->closing) f->c.drops++;
    } else {
        f->connecting--;
        f->c.connect_errors++;
    }
    a->state = SIM_IDLE;
    a->wsi = NULL;
    a->next_attempt_ns = bench_now_ns() + NS_PER_S;
    f->idle++;
    sim_clear(a);
}

static int sim_append_auth(struct sim_agent *a, struct lws *wsi, void *in, size_t len)
{
    unsigned char **p = in, *end = *p + len;
    const char *auth = a->fleet->auth;
    /* lws 4.1.6 writes the name verbatim: it must carry its colon */
    return lws_add_http_header_by_name(wsi, (const unsigned char *)"authorization:",
                                       (const unsigned char *)auth, (int)strlen(auth), p, end)
               ? -1
               : 0;
}

static int sim_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    struct sim_agent *a = user;
    if (!a) return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        return sim_append_auth(a, wsi, in, len);
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        sim_established(a, wsi);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (a->state == SIM_OPEN) sim_receive(a, wsi, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return sim_write(a, wsi);
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        sim_ended(a, wsi);
        break;
    default:
        break;
    }
    return 0;
}

static void sim_connect(struct sim_agent *a)
{
    struct fleet *f = a->fleet;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = f->ctx;
    ci.address = "127.0.0.1";
    ci.port = f->run->port;
    ci.path = PROTO_PATH;
    ci.host = ci.address;
    ci.origin = ci.address;
    ci.protocol = PROTO_SUBPROTOCOL;
    ci.local_protocol_name = PROTO_SUBPROTOCOL;
    ci.userdata = a;
    ci.ietf_version_or_minus_one = -1;
    a->state = SIM_CONNECTING;
    a->wsi = NULL;
    f->idle--;
    f->connecting++;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    if (a->state != SIM_CONNECTING) return; /* failed inside the call: already counted */
    if (!wsi)
        sim_ended(a, NULL);
    else if (!a->wsi)
        a->wsi = wsi;
}

/* Opens connections for idle agents, at most SIM_PACE at a time, each at most once a second. */
static void fleet_pace(struct fleet *f)
{
    if (!f->idle || f->closing || f->connecting >= SIM_PACE) return;
    int64_t now = bench_now_ns();
    for (int i = 0; i < f->n && f->connecting < SIM_PACE && f->idle; i++) {
        struct sim_agent *a = &f->agents[i];
        if (a->state == SIM_IDLE && a->next_attempt_ns <= now) sim_connect(a);
    }
}

static int fleet_agents_init(struct fleet *f, struct cp_err *err)
{
    f->agents = calloc((size_t)f->n, sizeof *f->agents);
    f->capabilities = json_pack("[ss]", "cpu", "wall");
    f->frame = malloc(LWS_PRE + PROTO_FRAME_MAX);
    if (!f->agents || !f->capabilities || !f->frame) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory for %d agents", f->n);
        return -1;
    }
    for (int i = 0; i < f->n; i++) {
        struct sim_agent *a = &f->agents[i];
        a->fleet = f;
        a->index = i;
        if (!(a->targets = sim_targets(i, err))) return -1;
    }
    f->idle = f->n;
    return 0;
}

static int fleet_open(struct fleet *f, const struct run *r, struct cp_err *err)
{
    memset(f, 0, sizeof *f);
    f->run = r;
    f->n = (int)r->set.agents;
    f->heartbeat_us = (int64_t)r->set.heartbeat_s * LWS_US_PER_SEC;
    f->awaited = PROTO_UNKNOWN;
    snprintf(f->auth, sizeof f->auth, "Bearer %s", r->agent_token);
    if (fleet_agents_init(f, err)) return -1;
    f->protocols[0].name = PROTO_SUBPROTOCOL;
    f->protocols[0].callback = sim_callback;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = f->protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = f;
    lws_set_log_level(LLL_ERR, NULL);
    if (!(f->ctx = lws_create_context(&info))) {
        cp_err_set(err, CP_ERR_IO, "lws_create_context failed");
        return -1;
    }
    for (int i = 0; i < f->n; i++) /* staggered: agent i's status comes at i/n of the period */
        lws_sul_schedule(f->ctx, 0, &f->agents[i].heartbeat, sim_heartbeat,
                         f->heartbeat_us + f->heartbeat_us * i / f->n);
    lws_sul_schedule(f->ctx, 0, &f->wake, fleet_wake, 10 * LWS_US_PER_MS);
    return 0;
}

static void fleet_close(struct fleet *f)
{
    f->closing = true;
    if (f->ctx) {
        for (int i = 0; f->agents && i < f->n; i++)
            lws_sul_cancel(&f->agents[i].heartbeat);
        lws_sul_cancel(&f->wake);
        lws_context_destroy(f->ctx);
    }
    for (int i = 0; f->agents && i < f->n; i++) {
        sim_clear(&f->agents[i]);
        buf_free(&f->agents[i].rx);
        json_decref(f->agents[i].targets);
    }
    free(f->agents);
    free(f->frame);
    json_decref(f->capabilities);
    memset(f, 0, sizeof *f);
}

typedef bool (*fleet_done_fn)(const struct fleet *f, const void *arg);

/* Serves the agents until done(f, arg), the deadline or a stop signal. Returns 1 when done, 0 at
 * the deadline, -1 on a stop signal. */
static int fleet_serve(struct fleet *f, int64_t deadline_ns, fleet_done_fn done, const void *arg)
{
    for (;;) {
        if (done && done(f, arg)) return 1;
        if (stop_pending(f->run)) return -1;
        if (bench_now_ns() >= deadline_ns) return 0;
        fleet_pace(f);
        lws_service(f->ctx, 0); /* sleeps until the next socket event or sul (<= 10 ms) */
    }
}

static bool all_open(const struct fleet *f, const void *arg)
{
    (void)arg;
    return f->open == f->n;
}

static bool rest_done(const struct fleet *f, const void *arg)
{
    (void)f;
    return atomic_load(&((const struct rest_async *)arg)->done);
}

static bool all_arrived_and_rest_done(const struct fleet *f, const void *arg)
{
    return f->arrived == f->n && rest_done(f, arg);
}

/* ---- REST while the agents are served ------------------------------------------------- */

/* Counts the agents a GET /api/v1/agents answer lists as connected; -1 if not JSON. */
static int count_connected(const struct buf *body)
{
    json_t *doc = json_loadb(body->data ? body->data : "", body->len, 0, NULL);
    json_t *list = json_object_get(doc, "agents"), *agent;
    size_t i;
    int connected = json_is_array(list) ? 0 : -1;
    json_array_foreach(list, i, agent) connected +=
        json_is_true(json_object_get(agent, "connected"));
    json_decref(doc);
    return connected;
}

/* A REST call made while the agents are served; the answer stays in call->res (the caller
 * frees it with rest_async_finish()). Returns 0 on HTTP 200. */
static int fleet_rest(struct fleet *f, struct rest_async *call, const char *method,
                      const char *path, const char *body, struct cp_err *err)
{
    if (rest_async_start(call, f->run, method, path, body, err)) return -1;
    int served = fleet_serve(f, bench_now_ns() + 90 * NS_PER_S, rest_done, call);
    if (served < 0) return interrupted(err);
    if (served == 0 || call->rc < 0 || call->res.status != 200) {
        cp_err_set(err, CP_ERR_IO, "%s %s: %s HTTP %ld %.200s", method, path,
                   served ? call->res.error : "no answer in 90 s", call->res.status,
                   call->res.body.data ? call->res.body.data : "");
        return -1;
    }
    return 0;
}

/* ---- phase 1: agents ---------------------------------------------------------------------- */

struct agents_result {
    double connect_s, registered_s, connect_cpu_ms, list_ms;
    double fanout_ms, fanout_put_ms;
    double cpu_pct, cpu_us_per_status, self_pct, window_s;
    long rss_before_kb, rss_kb, hwm_kb;
    uint64_t statuses, drops;
};

/* Polls GET /api/v1/agents until the console lists every agent as connected (at most 60 s). */
static int fleet_wait_registered(struct fleet *f, struct agents_result *res, struct cp_err *err)
{
    int64_t deadline = bench_now_ns() + 60 * NS_PER_S;
    int connected = 0;
    while (connected < f->n) {
        struct rest_async call;
        int rc = fleet_rest(f, &call, "GET", "/api/v1/agents", NULL, err);
        if (rc == 0) {
            connected = count_connected(&call.res.body);
            res->list_ms = call.res.ms;
        }
        rest_async_finish(&call);
        if (rc) return -1;
        if (connected < f->n && bench_now_ns() > deadline) {
            cp_err_set(err, CP_ERR_IO,
                       "GET /api/v1/agents lists %d of the %d open agents as connected after 60 s",
                       connected, f->n);
            return -1;
        }
        if (connected < f->n && fleet_serve(f, bench_now_ns() + 200 * NS_PER_MS, NULL, NULL) < 0)
            return interrupted(err);
    }
    return 0;
}

static int fleet_connect_all(struct fleet *f, struct agents_result *res, struct cp_err *err)
{
    pid_t console = f->run->console;
    int64_t t0 = bench_now_ns(), cpu0 = proc_cpu_ns(console);
    int served = fleet_serve(f, t0 + 120 * NS_PER_S, all_open, NULL);
    if (served < 0) return interrupted(err);
    if (!served) {
        cp_err_set(err, CP_ERR_IO,
                   "%d of %d agents connected in 120 s (%llu connection errors, %llu dropped)",
                   f->open, f->n, (unsigned long long)f->c.connect_errors,
                   (unsigned long long)f->c.drops);
        return -1;
    }
    res->connect_s = (double)(bench_now_ns() - t0) / 1e9;
    if (fleet_wait_registered(f, res, err)) return -1;
    res->registered_s = (double)(bench_now_ns() - t0) / 1e9;
    res->connect_cpu_ms = (double)(proc_cpu_ns(console) - cpu0) / 1e6;
    printf("%d agents connected in %.2f s (%llu connection errors), all listed as connected by "
           "GET /api/v1/agents after %.2f s (that call took %.0f ms); console CPU for it %.0f ms "
           "(%.0f us per agent)\n",
           f->n, res->connect_s, (unsigned long long)f->c.connect_errors, res->registered_s,
           res->list_ms, res->connect_cpu_ms, res->connect_cpu_ms * 1e3 / f->n);
    return 0;
}

static void print_arrivals(const struct fleet *f, const char *what, int64_t t0, double put_ms)
{
    double *lat = malloc((size_t)f->n * sizeof *lat);
    size_t n = 0;
    for (int i = 0; lat && i < f->n; i++)
        if (f->agents[i].got_ns) lat[n++] = (double)(f->agents[i].got_ns - t0) / 1e6;
    if (n) {
        double first = quantile(lat, n, 0), half = quantile(lat, n, 0.5);
        double p99 = quantile(lat, n, 0.99), last = quantile(lat, n, 1);
        printf("%s: PUT answered after %.0f ms; agents read it after: first %.0f ms, half %.0f ms, "
               "99 %% %.0f ms, all %zu %.0f ms\n",
               what, put_ms, first, half, p99, n, last);
    }
    free(lat);
}

/* Switches profiling on or off through the REST API and serves the agents until every one read
 * its start (stop). *all_ms: from the PUT until the last one read it. */
static int fleet_fanout(struct fleet *f, bool on, double *all_ms, double *put_ms,
                        struct cp_err *err)
{
    for (int i = 0; i < f->n; i++)
        f->agents[i].got_ns = 0;
    f->arrived = 0;
    f->awaited = on ? PROTO_START : PROTO_STOP;
    struct rest_async call;
    int64_t t0 = bench_now_ns();
    if (rest_async_start(&call, f->run, "PUT", TOGGLE_PATH,
                         on ? "{\"enabled\":true}" : "{\"enabled\":false}", err))
        return -1;
    int served = fleet_serve(f, t0 + 60 * NS_PER_S, all_arrived_and_rest_done, &call);
    f->awaited = PROTO_UNKNOWN;
    int rc = 0;
    if (served < 0) {
        rc = interrupted(err);
    } else if (!atomic_load(&call.done) || call.rc < 0 || call.res.status != 200) {
        cp_err_set(err, CP_ERR_IO, "PUT %s: %s HTTP %ld %.200s", TOGGLE_PATH, call.res.error,
                   call.res.status, call.res.body.data ? call.res.body.data : "");
        rc = -1;
    } else if (!served) {
        cp_err_set(err, CP_ERR_IO, "%d of %d agents got their %s within 60 s of the PUT",
                   f->arrived, f->n, on ? "start" : "stop");
        rc = -1;
    } else {
        int64_t last = 0;
        for (int i = 0; i < f->n; i++)
            last = f->agents[i].got_ns > last ? f->agents[i].got_ns : last;
        *all_ms = (double)(last - t0) / 1e6;
        *put_ms = call.res.ms;
        print_arrivals(f, on ? "profiling on (start)" : "profiling off (stop)", t0, *put_ms);
    }
    rest_async_finish(&call);
    return rc;
}

/* The steady state: every agent connected, profiling on, statuses every period. */
static int fleet_steady(struct fleet *f, struct agents_result *res, struct cp_err *err)
{
    pid_t console = f->run->console;
    uint64_t statuses0 = f->c.statuses, drops0 = f->c.drops;
    int64_t t0 = bench_now_ns(), cpu0 = proc_cpu_ns(console), self0 = self_cpu_ns();
    if (fleet_serve(f, t0 + f->run->set.seconds * NS_PER_S, NULL, NULL) < 0)
        return interrupted(err);
    int64_t wall = bench_now_ns() - t0, cpu1 = proc_cpu_ns(console);
    if (cpu0 < 0 || cpu1 < 0) {
        cp_err_set(err, CP_ERR_IO, "conprof-console exited during the steady window");
        return -1;
    }
    res->window_s = (double)wall / 1e9;
    res->statuses = f->c.statuses - statuses0;
    res->drops = f->c.drops - drops0;
    res->cpu_pct = 100.0 * (double)(cpu1 - cpu0) / (double)wall;
    res->cpu_us_per_status = res->statuses ? (double)(cpu1 - cpu0) / 1e3 / res->statuses : 0;
    res->self_pct = 100.0 * (double)(self_cpu_ns() - self0) / (double)wall;
    res->rss_kb = bench_status_kb(console, "VmRSS");
    res->hwm_kb = bench_status_kb(console, "VmHWM");
    return 0;
}

static void print_fleet_counts(const struct fleet *f)
{
    const struct fleet_counts *c = &f->c;
    printf("agents' traffic: %llu connects, %llu connection errors, %llu dropped, %llu hellos, "
           "%llu statuses, %llu commands read (%llu acked, %llu refused), %llu oversized, "
           "%llu frames not queued, %llu build errors\n",
           (unsigned long long)c->connects, (unsigned long long)c->connect_errors,
           (unsigned long long)c->drops, (unsigned long long)c->hellos,
           (unsigned long long)c->statuses, (unsigned long long)c->commands,
           (unsigned long long)c->acks, (unsigned long long)c->nacks,
           (unsigned long long)c->oversized, (unsigned long long)c->outbox_full,
           (unsigned long long)c->build_errors);
}

static void report_agents(const struct run *r, const struct agents_result *res)
{
    long n = r->set.agents;
    printf("steady window %.1f s, %ld agents, status every %ld s, profiling on: console CPU "
           "%.2f %% of one core (%.1f us per status sent, all its work included; %llu statuses); "
           "this simulator "
           "%.1f %%; connections dropped in the window: %llu\n",
           res->window_s, n, r->set.heartbeat_s, res->cpu_pct, res->cpu_us_per_status,
           (unsigned long long)res->statuses, res->self_pct, (unsigned long long)res->drops);
    double per_agent_kb = (double)(res->rss_kb - res->rss_before_kb) / (double)n;
    printf("console RSS: %.1f MB before the agents, %.1f MB at the end of the window (%.1f kB "
           "per agent), peak (VmHWM) %.1f MB\n",
           mb_of_kb(res->rss_before_kb), mb_of_kb(res->rss_kb), per_agent_kb * 1.024,
           mb_of_kb(res->hwm_kb));
    char figure[96], value[64], note[200];
    snprintf(figure, sizeof figure, "console CPU, %ld agents", n);
    snprintf(value, sizeof value, "%.2f %%", res->cpu_pct);
    snprintf(note, sizeof note, "of one core over %.0f s, status every %ld s, profiling on",
             res->window_s, r->set.heartbeat_s);
    bench_summary(figure, value, "-", 0, note);
    snprintf(figure, sizeof figure, "console RSS, %ld agents", n);
    snprintf(value, sizeof value, "%.1f MB", mb_of_kb(res->rss_kb));
    snprintf(note, sizeof note, "peak %.1f MB; %.1f MB before the agents", mb_of_kb(res->hwm_kb),
             mb_of_kb(res->rss_before_kb));
    bench_summary(figure, value, "-", 0, note);
    snprintf(figure, sizeof figure, "console start fan-out, %ld agents", n);
    snprintf(value, sizeof value, "%.0f ms", res->fanout_ms);
    snprintf(note, sizeof note, "PUT profiling on -> last agent read start (PUT took %.0f ms)",
             res->fanout_put_ms);
    bench_summary(figure, value, "<= 2000 ms", res->fanout_ms / FANOUT_TARGET_MS, note);
}

static int phase_agents(struct run *r, struct cp_err *err)
{
    printf("\n-- agents: %ld websocket agents, one lws context --\n", r->set.agents);
    bench_print_load();
    struct fleet f;
    struct agents_result res = {0};
    double stop_ms = 0, stop_put_ms = 0;
    res.rss_before_kb = bench_status_kb(r->console, "VmRSS");
    int rc = fleet_open(&f, r, err);
    if (!rc) rc = fleet_connect_all(&f, &res, err);
    if (!rc) rc = fleet_fanout(&f, true, &res.fanout_ms, &res.fanout_put_ms, err);
    if (!rc && fleet_serve(&f, bench_now_ns() + 2 * NS_PER_S, NULL, NULL) < 0)
        rc = interrupted(err);
    if (!rc) rc = fleet_steady(&f, &res, err);
    if (!rc) rc = fleet_fanout(&f, false, &stop_ms, &stop_put_ms, err);
    print_fleet_counts(&f);
    fleet_close(&f);
    if (!rc) report_agents(r, &res);
    return rc;
}

/* ---- profiles ----------------------------------------------------------------------------- */

static int run_records(const struct run *r, pid_t target, struct cp_err *err)
{
    pid_t rec[MAX_VARIANTS] = {0};
    char pid_text[16], duration[16];
    snprintf(pid_text, sizeof pid_text, "%d", (int)target);
    snprintf(duration, sizeof duration, "%ld", r->set.record_s);
    for (int k = 0; k < r->nprofiles; k++) {
        char out[PATH_MAX + 32], log[PATH_MAX + 32];
        snprintf(out, sizeof out, "%s/profile-%d.pb.gz", r->dir, k);
        snprintf(log, sizeof log, "%s/record-%d.log", r->dir, k);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        char *argv[] = {(char *)r->agent_bin, "record", "--pid", pid_text, "--rate", "100",
                        "--duration",         duration, "-o",    out,      NULL};
        rec[k] = spawn(r, argv, -1, fd);
        if (fd >= 0) close(fd);
    }
    int rc = 0;
    for (int k = 0; k < r->nprofiles; k++) {
        int status = 0,
            w = rec[k] > 0 ? wait_child_or_stop(r, rec[k], r->set.record_s + 60.0, &status) : 0;
        if (w <= 0 && rec[k] > 0) stop_child(rec[k], 1.0);
        if (rc == 0 && w < 0) rc = interrupted(err);
        if (rc == 0 && (w == 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
            cp_err_set(err, CP_ERR_IO, "%s record --pid %s failed; see %s/record-%d.log",
                       r->agent_bin, pid_text, r->dir, k);
            rc = -1;
        }
    }
    return rc;
}

static int profile_cpu_total(const struct buf *gz, int64_t *total, struct cp_err *err)
{
    struct buf raw = {0};
    struct pprof_decoded d;
    memset(&d, 0, sizeof d);
    *total = -1;
    int rc = pprof_decompress((const uint8_t *)gz->data, gz->len, PPROF_READ_MAX_DECOMPRESSED, &raw,
                              err);
    if (rc == 0) rc = pprof_decode((const uint8_t *)raw.data, raw.len, &d, err);
    if (rc == 0) {
        int64_t totals[PPROF_READ_MAX_SAMPLE_TYPES];
        pprof_decoded_totals(&d, totals);
        for (size_t i = 0; i < d.ntypes; i++)
            if (!strcmp(d.type_names[i], "cpu")) *total = totals[i];
        if (*total < 0) {
            cp_err_set(err, CP_ERR_INVALID, "the recorded profile has no cpu sample type");
            rc = -1;
        }
    }
    pprof_decoded_free(&d);
    buf_free(&raw);
    return rc;
}

static int load_profiles(struct run *r, struct cp_err *err)
{
    for (int k = 0; k < r->nprofiles; k++) {
        char path[PATH_MAX + 32];
        struct buf log = {0};
        struct bench_record_result rec;
        struct cp_err no_log; /* the log only adds figures to print */
        snprintf(path, sizeof path, "%s/record-%d.log", r->dir, k);
        read_file(path, &log, &no_log);
        bench_parse_record(log.data ? log.data : "", &rec);
        buf_free(&log);
        r->profile_stacks[k] = rec.stacks;
        snprintf(path, sizeof path, "%s/profile-%d.pb.gz", r->dir, k);
        if (read_file(path, &r->profiles[k], err) ||
            profile_cpu_total(&r->profiles[k], &r->profile_cpu_ns[k], err)) {
            cp_err_prefix(err, "%s", path);
            return -1;
        }
        printf("profile %d: %zu bytes (gzipped pprof), %llu samples, %u stacks, CPU %.2f s\n", k,
               r->profiles[k].len, rec.samples, rec.stacks, (double)r->profile_cpu_ns[k] / 1e9);
    }
    return 0;
}

/* Real profiles: `conprof-agent record` of a target whose samples are nearly all new stacks,
 * BENCH_CONSOLE_VARIANTS recordings at the same time (distinct stacks, shared functions). */
static int record_profiles(struct run *r, struct cp_err *err)
{
    r->nprofiles = (int)r->set.variants;
    printf("recording %d profiles of %ld s (conprof-agent record, 100 Hz) of a `stacks 2000 4` "
           "target\n",
           r->nprofiles, r->set.record_s);
    char script[PATH_MAX];
    bench_target_script(script, sizeof script);
    char *argv[] = {(char *)bench_default_python(), script, "stacks", "2000", "4", NULL};
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        cp_err_set(err, CP_ERR_IO, "pipe: %s", strerror(errno));
        return -1;
    }
    int log = open_log(r);
    pid_t target = spawn(r, argv, fds[1], log);
    close(fds[1]);
    if (log >= 0) close(log);
    char line[256];
    int rc = target > 0 && bench_wait_line(fds[0], "READY", line, sizeof line, 60.0) == 0 ? 0 : -1;
    close(fds[0]);
    if (rc) cp_err_set(err, CP_ERR_IO, "%s %s stacks 2000 4 did not print READY", argv[0], script);
    if (rc == 0) {
        bench_sleep_ms(50);
        rc = run_records(r, target, err);
    }
    if (target > 0) {
        kill(target, SIGKILL);
        waitpid(target, NULL, 0);
    }
    return rc ? rc : load_profiles(r, err);
}

/* ---- uploads (curl multi) ----------------------------------------------------------------- */

struct upload_plan {
    const char *app; /* apps > 1: "<app>-NN" */
    long count, apps, parallel;
    int64_t first_from; /* upload i: app i % apps, from first_from + (i / apps) * 45 s */
};

struct upload_slot {
    CURL *easy;
    struct buf answer;
    int64_t t0;
    char url[1024];
    char error[CURL_ERROR_SIZE];
};

struct upload_result {
    long ok, failed;
    double wall_s, cpu_ms, median_ms, p99_ms;
    int64_t cpu_total_ns; /* sum of the CPU values uploaded */
    char first_error[800];
};

/* The URL the agent's HTTP sink uses (agent/sink_http.c). */
static int upload_url(const struct run *r, const struct upload_plan *p, long i, CURL *easy,
                      char *url, size_t size)
{
    char app[128], series[256];
    if (p->apps > 1)
        snprintf(app, sizeof app, "%s-%02ld", p->app, i % p->apps);
    else
        snprintf(app, sizeof app, "%s", p->app);
    snprintf(series, sizeof series, "%s{project_id=%s,environment=%s}", app, PROJECT, ENVIRONMENT);
    char *escaped = curl_easy_escape(easy, series, 0);
    if (!escaped) return -1;
    int64_t from = p->first_from + (i / p->apps) * PROFILE_PERIOD_S;
    snprintf(url, size,
             "%s/ingest?name=%s&from=%lld&until=%lld&format=pprof&sampleRate=100&"
             "spyName=conprof",
             r->base_url, escaped, (long long)from, (long long)(from + PROFILE_PERIOD_S));
    curl_free(escaped);
    return 0;
}

static int upload_begin(const struct run *r, const struct upload_plan *p, CURLM *multi,
                        struct upload_slot *s, struct curl_slist *headers, long i)
{
    const struct buf *body = &r->profiles[i % r->nprofiles];
    if (upload_url(r, p, i, s->easy, s->url, sizeof s->url)) return -1;
    curl_easy_setopt(s->easy, CURLOPT_URL, s->url);
    curl_easy_setopt(s->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, &s->answer);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->error);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    buf_reset(&s->answer);
    s->error[0] = '\0';
    s->t0 = bench_now_ns();
    return curl_multi_add_handle(multi, s->easy) == CURLM_OK ? 0 : -1;
}

/* 200 with {"stored": N} is a stored profile; anything else is kept as the first error. */
static void upload_check(struct upload_slot *s, CURLcode code, struct upload_result *res)
{
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (code == CURLE_OK && status == 200 && s->answer.data &&
        strstr(s->answer.data, "\"stored\"")) {
        res->ok++;
        return;
    }
    if (!res->failed++)
        snprintf(res->first_error, sizeof res->first_error, "%.300s: %.200s HTTP %ld %.200s",
                 s->url,
                 code == CURLE_OK ? "" : (s->error[0] ? s->error : curl_easy_strerror(code)),
                 status, s->answer.data ? s->answer.data : "");
}

/* Runs the transfers, p->parallel in flight; lat gets each one's wall time. */
static int upload_loop(const struct run *r, const struct upload_plan *p, CURLM *multi,
                       struct upload_slot *slots, struct curl_slist *headers, double *lat,
                       struct upload_result *res, struct cp_err *err)
{
    long next = 0, done = 0;
    for (long s = 0; s < p->parallel && next < p->count; s++)
        if (upload_begin(r, p, multi, &slots[s], headers, next++)) goto fail;
    while (done < p->count) {
        if (stop_pending(r)) return interrupted(err);
        int running, left;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            char *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            struct upload_slot *s = (struct upload_slot *)priv;
            CURLcode code = msg->data.result;
            curl_multi_remove_handle(multi, s->easy);
            lat[done++] = ms_since(s->t0);
            upload_check(s, code, res);
            if (next < p->count && upload_begin(r, p, multi, s, headers, next++)) goto fail;
        }
        if (done < p->count) curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    return 0;
fail:
    cp_err_set(err, CP_ERR_IO, "cannot start an upload (libcurl)");
    return -1;
}

static int upload_profiles(const struct run *r, const struct upload_plan *p,
                           struct upload_result *res, struct cp_err *err)
{
    memset(res, 0, sizeof *res);
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", r->agent_token);
    struct curl_slist *headers = curl_slist_append(NULL, auth);
    headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
    headers = curl_slist_append(headers, "Expect:");
    CURLM *multi = curl_multi_init();
    struct upload_slot *slots = calloc((size_t)p->parallel, sizeof *slots);
    double *lat = calloc((size_t)p->count, sizeof *lat);
    int rc = multi && slots && lat && headers ? 0 : -1;
    for (long s = 0; rc == 0 && s < p->parallel; s++)
        if (!(slots[s].easy = curl_easy_init())) rc = -1;
    if (rc) cp_err_set(err, CP_ERR_NOMEM, "cannot set up %ld uploads", p->parallel);
    int64_t t0 = bench_now_ns(), cpu0 = proc_cpu_ns(r->console);
    if (rc == 0) rc = upload_loop(r, p, multi, slots, headers, lat, res, err);
    res->wall_s = (double)(bench_now_ns() - t0) / 1e9;
    res->cpu_ms = (double)(proc_cpu_ns(r->console) - cpu0) / 1e6;
    size_t n = (size_t)(res->ok + res->failed);
    res->median_ms = quantile(lat, n, 0.5);
    res->p99_ms = quantile(lat, n, 0.99);
    for (long i = 0; i < p->count; i++)
        res->cpu_total_ns += r->profile_cpu_ns[i % r->nprofiles];
    for (long s = 0; slots && s < p->parallel; s++) {
        if (multi && slots[s].easy) curl_multi_remove_handle(multi, slots[s].easy);
        curl_easy_cleanup(slots[s].easy);
        buf_free(&slots[s].answer);
    }
    free(slots);
    free(lat);
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    if (rc == 0 && res->failed) {
        cp_err_set(err, CP_ERR_IO, "%ld of %ld uploads failed; the first: %s", res->failed,
                   p->count, res->first_error);
        rc = -1;
    }
    return rc;
}

/* ---- phase 2: ingest ---------------------------------------------------------------------- */

static int phase_ingest(struct run *r, struct cp_err *err)
{
    const struct settings *s = &r->set;
    printf("\n-- ingest: %ld profiles of %d s, %ld applications, %ld in flight --\n", s->ingest,
           PROFILE_PERIOD_S, s->ingest_apps, s->parallel);
    bench_print_load();
    long periods = (s->ingest + s->ingest_apps - 1) / s->ingest_apps;
    struct upload_plan plan = {"svc", s->ingest, s->ingest_apps, s->parallel,
                               (int64_t)time(NULL) - (periods + 2) * PROFILE_PERIOD_S};
    struct upload_result res;
    if (upload_profiles(r, &plan, &res, err)) return -1;
    double rate = (double)res.ok / res.wall_s, cpu_per = res.cpu_ms / (double)res.ok;
    printf("%ld profiles stored in %.2f s: %.0f profiles/s; per upload %.1f ms median, %.1f ms "
           "99 %%; console CPU %.2f ms per profile (%.0f profiles/s per core)\n",
           res.ok, res.wall_s, rate, res.median_ms, res.p99_ms, cpu_per, 1000.0 / cpu_per);
    char value[64], note[200];
    snprintf(value, sizeof value, "%.0f /s", rate);
    snprintf(note, sizeof note,
             "%ld in flight; console CPU %.2f ms per profile; ratio = target / value", s->parallel,
             cpu_per);
    bench_summary("console ingest, 45 s profiles", value, ">= 200/s", INGEST_TARGET / rate, note);
    return 0;
}

/* ---- phase 3: merge ----------------------------------------------------------------------- */

struct merge_figures {
    double median_ms, min_ms, max_ms, cpu_ms;
    size_t bytes;
};

/* Times `runs` merges of [from, to) to `out`; the last answer stays in *res. */
static int time_merge(const struct run *r, CURL *easy, const char *out, int64_t from, int64_t to,
                      struct http_res *res, struct merge_figures *fig, struct cp_err *err)
{
    char path[512];
    snprintf(path, sizeof path,
             QUERY_BASE "/app/%s/merge?out=%s&profile_type=cpu&from=%lld&to=%lld", MERGE_APP, out,
             (long long)from, (long long)to);
    long runs = r->set.merge_runs;
    double *ms = calloc((size_t)runs, sizeof *ms);
    if (!ms) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    int64_t cpu0 = proc_cpu_ns(r->console);
    int rc = 0;
    for (long i = 0; rc == 0 && i < runs; i++) {
        if (stop_pending(r)) rc = interrupted(err);
        if (rc == 0) rc = http_expect_ok(r, easy, "GET", path, NULL, res, err);
        ms[i] = res->ms;
    }
    fig->cpu_ms = (double)(proc_cpu_ns(r->console) - cpu0) / 1e6 / (double)runs;
    fig->bytes = res->body.len;
    fig->min_ms = quantile(ms, (size_t)runs, 0);
    fig->median_ms = quantile(ms, (size_t)runs, 0.5);
    fig->max_ms = quantile(ms, (size_t)runs, 1);
    free(ms);
    if (rc == 0)
        printf("merge out=%-11s median %7.1f ms (min %.1f, max %.1f; %ld runs), console CPU "
               "%.1f ms per merge, %zu bytes\n",
               out, fig->median_ms, fig->min_ms, fig->max_ms, runs, fig->cpu_ms, fig->bytes);
    return rc;
}

/* Sum of the values of "root;...;leaf VALUE" lines, and the number of lines. */
static int64_t collapsed_total(const struct buf *text, size_t *lines)
{
    int64_t total = 0;
    *lines = 0;
    const char *p = text->data ? text->data : "", *end = p + text->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *space = line_end;
        while (space > p && space[-1] != ' ')
            space--;
        if (space > p) {
            total += strtoll(space, NULL, 10);
            (*lines)++;
        }
        p = line_end + 1;
    }
    return total;
}

static int check_merges(const struct http_res *collapsed, const struct http_res *flame,
                        int64_t expected, struct cp_err *err)
{
    size_t stacks;
    int64_t total = collapsed_total(&collapsed->body, &stacks);
    json_t *doc = json_loadb(flame->body.data ? flame->body.data : "", flame->body.len, 0, NULL);
    json_t *fb = json_object_get(doc, "flamebearer");
    long long ticks = (long long)json_integer_value(json_object_get(fb, "numTicks"));
    size_t names = json_array_size(json_object_get(fb, "names"));
    json_decref(doc);
    printf("merged hour: %zu stacks, %zu names, collapsed total %.3f s CPU, flamebearer numTicks "
           "%lld; uploaded %.3f s CPU\n",
           stacks, names, (double)total / 1e9, ticks, (double)expected / 1e9);
    if (total != expected) {
        cp_err_set(err, CP_ERR_INVALID,
                   "the merged hour sums to %lld ns of CPU, the profiles uploaded to %lld ns",
                   (long long)total, (long long)expected);
        return -1;
    }
    return 0;
}

static void merge_summary(const char *out, const struct merge_figures *fig, long profiles)
{
    char figure[96], value[64], note[200];
    snprintf(figure, sizeof figure, "console merge 1 h, %s", out);
    snprintf(value, sizeof value, "%.0f ms", fig->median_ms);
    snprintf(note, sizeof note, "median; %ld profiles of 45 s; console CPU %.0f ms", profiles,
             fig->cpu_ms);
    bench_summary(figure, value, "<= 200 ms", fig->median_ms / MERGE_TARGET_MS, note);
}

static int phase_merge(struct run *r, struct cp_err *err)
{
    const struct settings *s = &r->set;
    printf("\n-- merge: %ld profiles of %d s of one application --\n", s->merge_profiles,
           PROFILE_PERIOD_S);
    bench_print_load();
    int64_t from = ((int64_t)time(NULL) / 3600 - 2) * 3600;
    int64_t to = from + s->merge_profiles * PROFILE_PERIOD_S;
    struct upload_plan plan = {MERGE_APP, s->merge_profiles, 1, s->parallel, from};
    struct upload_result up;
    if (upload_profiles(r, &plan, &up, err)) return -1;
    printf("stored %ld profiles covering [%lld, %lld) in %.2f s\n", up.ok, (long long)from,
           (long long)to, up.wall_s);
    CURL *easy = curl_easy_init();
    struct http_res pprof = {0}, flame = {0}, collapsed = {0};
    struct merge_figures fp, ff, fc;
    int rc = easy ? 0 : -1;
    if (rc) cp_err_set(err, CP_ERR_NOMEM, "curl_easy_init failed");
    if (rc == 0) rc = time_merge(r, easy, "pprof", from, to, &pprof, &fp, err);
    if (rc == 0) rc = time_merge(r, easy, "flamebearer", from, to, &flame, &ff, err);
    if (rc == 0) rc = time_merge(r, easy, "collapsed", from, to, &collapsed, &fc, err);
    if (rc == 0) rc = check_merges(&collapsed, &flame, up.cpu_total_ns, err);
    if (rc == 0) {
        merge_summary("pprof", &fp, s->merge_profiles);
        merge_summary("flamebearer", &ff, s->merge_profiles);
    }
    buf_free(&pprof.body);
    buf_free(&flame.body);
    buf_free(&collapsed.body);
    curl_easy_cleanup(easy);
    return rc;
}

/* ---- main --------------------------------------------------------------------------------- */

static int run_phases(struct run *r, struct cp_err *err)
{
    if ((wants_phase(r, "ingest") || wants_phase(r, "merge")) && record_profiles(r, err)) return -1;
    if (console_start(r, err)) return -1;
    if (wants_phase(r, "agents") && (phase_agents(r, err) || !console_alive(r, err))) return -1;
    if (wants_phase(r, "ingest") && (phase_ingest(r, err) || !console_alive(r, err))) return -1;
    if (wants_phase(r, "merge") && (phase_merge(r, err) || !console_alive(r, err))) return -1;
    return 0;
}

/* One descriptor per agent, plus the uploads: lift the soft limit to the hard one. */
static void raise_fd_limit(long agents)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)agents + 64)
        fprintf(stderr, "bench_console: only %llu descriptors for %ld agents\n",
                (unsigned long long)rl.rlim_cur, agents);
}

static int run_setup(struct run *r, struct cp_err *err)
{
    if (!bench_tmpdir(r->dir, sizeof r->dir)) {
        r->dir[0] = '\0';
        cp_err_set(err, CP_ERR_IO, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    snprintf(r->data_dir, sizeof r->data_dir, "%s/data", r->dir);
    snprintf(r->log_path, sizeof r->log_path, "%s/console.log", r->dir);
    bench_locate("CONPROF_CONSOLE", 1, "conprof-console", r->console_bin, sizeof r->console_bin);
    bench_agent_path(r->agent_bin, sizeof r->agent_bin);
    if (access(r->console_bin, X_OK) != 0) {
        cp_err_set(err, CP_ERR_IO,
                   "%s: not found (make build/conprof-console, or set CONPROF_CONSOLE)",
                   r->console_bin);
        return -1;
    }
    return 0;
}

static void run_cleanup(struct run *r)
{
    console_stop(r);
    for (int k = 0; k < MAX_VARIANTS; k++)
        buf_free(&r->profiles[k]);
    if (!r->dir[0]) return;
    if (r->set.keep)
        printf("kept %s (console.log, data/, profiles)\n", r->dir);
    else
        remove_tree(r->dir);
}

int main(void)
{
    struct run r;
    memset(&r, 0, sizeof r);
    read_settings(&r.set);
    sigemptyset(&r.stop_signals);
    sigaddset(&r.stop_signals, SIGINT);
    sigaddset(&r.stop_signals, SIGTERM);
    sigaddset(&r.stop_signals, SIGHUP);
    sigaddset(&r.stop_signals, SIGQUIT);
    sigprocmask(SIG_BLOCK, &r.stop_signals, &r.old_mask);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_print_load();
    raise_fd_limit(r.set.agents);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct cp_err err = {0};
    int rc = run_setup(&r, &err);
    if (rc == 0) rc = run_phases(&r, &err);
    if (rc) {
        fprintf(stderr, "bench_console: %s\n", err.msg);
        if (r.dir[0] && !stop_pending(&r)) print_log_tail(&r);
    }
    run_cleanup(&r);
    curl_global_cleanup();
    return rc ? 1 : 0;
}
