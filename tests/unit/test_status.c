/* status: the server and the client over a real unix socket in a temporary directory — socket
 * mode 0600 and parent directory 0700, the document round trip, stale sockets replaced, a live
 * agent or a non-socket never replaced, a client that does not read never blocking the server,
 * `conprof-agent status` exit codes (0 answered, 3 nothing runs, 1 permission denied) and its
 * text page, including untrusted strings with terminal escapes. The serving agent is a forked
 * child that opens its own server, so the client side runs exactly as the CLI does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int cmd_status(int argc, char **argv);

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/conprof-status-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *in_tmp(const char *name)
{
    static char path[16][128];
    static int next;
    char *p = path[next++ % 16];
    snprintf(p, 128, "%s/%s", tmpdir, name);
    return p;
}

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static const char *DOC =
    "{\"version\": \"0.1.0\", \"pid\": 4321, \"node\": \"node-1\", \"started_at\": 1700000000,"
    " \"uptime_s\": 8130,"
    " \"config\": {\"file\": \"/etc/conprof/agent.json\", \"rate_hz\": 100, \"period_s\": 45,"
    "   \"sink\": \"http https://pyro:4040\"},"
    " \"targets\": ["
    "  {\"target\": \"containerd:3f9a\", \"container_id\": "
    "\"3f9a0e7c1b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9d0e1f2a3b\","
    "   \"k8s_pod\": \"shop/web-5d8f\", \"application\": \"shop-api\", \"pid\": 4242,"
    "   \"python\": \"3.12.1\", \"samples\": 120345, \"errors\": 3, \"state\": \"sampling\"},"
    "  {\"target\": \"host:cron\", \"application\": \"evil\\u001b[31mred\\u0007\", \"pid\": 77,"
    "   \"python\": \"3.8.18\", \"samples\": 0, \"errors\": 1, \"state\": \"failed\","
    "   \"error\": \"permission denied\"}],"
    " \"workers\": {\"running\": 2, \"crashes\": 1, \"hangs\": 0},"
    " \"samples\": 1203450, \"sample_errors\": 12, \"profiles\": 320, \"profile_errors\": 0,"
    " \"uploads\": {\"sent\": 318, \"failed\": 1, \"retried\": 4, \"spooled\": 2, \"evicted\": 0,"
    "   \"queued\": 0, \"inflight\": 1, \"spool_files\": 2, \"spool_bytes\": 183211},"
    " \"last_errors\": [{\"time\": 1700008000, \"message\": \"upload shop-api: HTTP 503\"}]}";

struct render_ctx {
    const char *text; /* NULL: render fails */
    int calls;
};

static json_t *render(void *ctx)
{
    struct render_ctx *c = ctx;
    c->calls++;
    return c->text ? json_loads(c->text, 0, NULL) : NULL;
}

/* ---- a serving agent in a child process ------------------------------------------------ */

struct agent {
    pid_t pid;
    int stop_fd; /* closing it stops the child */
};

static void serve_until_eof(struct status_server *s, int stop)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = status_server_fd(s), .events = POLLIN},
                              {.fd = stop, .events = POLLIN}};
        poll(p, 2, 1000);
        struct cp_err err;
        if (p[0].revents) status_server_handle(s, &err);
        if (p[1].revents) return;
    }
}

static struct agent start_agent(const char *path, const char *doc)
{
    int ready[2], stop[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(stop), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(stop[1]);
        struct render_ctx ctx = {.text = doc};
        struct cp_err err;
        struct status_server *s = status_server_open(path, render, &ctx, &err);
        char ok = s ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1 || !s) _exit(1);
        serve_until_eof(s, stop[0]);
        status_server_close(s);
        _exit(0);
    }
    close(ready[1]);
    close(stop[0]);
    char ok = 0;
    assert_int_equal(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    assert_int_equal(ok, 'y');
    return (struct agent){.pid = pid, .stop_fd = stop[1]};
}

static void stop_agent(struct agent *a)
{
    close(a->stop_fd);
    int st = 0;
    assert_int_equal(waitpid(a->pid, &st, 0), a->pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Runs cmd_status with stdout and stderr in files; returns its exit status. */
static int run_status(int argc, char **argv, char *out, size_t out_size, char *errs,
                      size_t err_size)
{
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    char out_path[128], err_path[128];
    snprintf(out_path, sizeof out_path, "%s/stdout", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    int fo = open(out_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    int fe = open(err_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    dup2(fo, 1);
    dup2(fe, 2);
    int rc = cmd_status(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    ssize_t n = pread(fo, out, out_size - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    n = pread(fe, errs, err_size - 1, 0);
    errs[n > 0 ? n : 0] = '\0';
    close(fo);
    close(fe);
    return rc;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_socket_file_and_modes(void **state)
{
    (void)state;
    const char *path = in_tmp("run/conprof/agent.sock");
    struct render_ctx ctx = {.text = DOC};
    struct cp_err err;
    struct status_server *s = status_server_open(path, render, &ctx, &err);
    if (!s) fail_msg("%s", err.msg);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(in_tmp("run/conprof"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(stat(in_tmp("run"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    status_server_close(s);
    assert_int_equal(lstat(path, &st), -1); /* removed on close */
    /* no temporary names left behind */
    char cmd[200], line[64] = "";
    snprintf(cmd, sizeof cmd, "ls -A '%s/run/conprof' | wc -l", tmpdir);
    FILE *p = popen(cmd, "r");
    assert_non_null(fgets(line, sizeof line, p));
    pclose(p);
    assert_int_equal(atoi(line), 0);
}

static void test_fetch_round_trip(void **state)
{
    (void)state;
    const char *path = in_tmp("agent.sock");
    struct agent a = start_agent(path, DOC);
    json_t *doc = NULL, *expected = json_loads(DOC, 0, NULL);
    struct cp_err err;
    for (int i = 0; i < 3; i++) { /* one document per connection, again and again */
        assert_int_equal(status_fetch(path, 5000, &doc, &err), STATUS_FETCH_OK);
        assert_true(json_equal(doc, expected));
        json_decref(doc);
    }
    json_decref(expected);
    stop_agent(&a);
    struct stat st;
    assert_int_equal(lstat(path, &st), -1);
    assert_int_equal(status_fetch(path, 5000, &doc, &err), STATUS_FETCH_NO_AGENT);
    assert_null(doc);
    char expected_msg[200];
    snprintf(expected_msg, sizeof expected_msg, "no agent is running: %s does not exist", path);
    assert_string_equal(err.msg, expected_msg);
}

static int make_stale_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) return -1;
    close(fd); /* the file stays; nobody listens */
    struct stat st;
    stat(path, &st);
    return (int)st.st_ino;
}

static void test_stale_socket(void **state)
{
    (void)state;
    const char *path = in_tmp("stale.sock");
    int old_ino = make_stale_socket(path);
    assert_true(old_ino > 0);
    json_t *doc = NULL;
    struct cp_err err;
    assert_int_equal(status_fetch(path, 5000, &doc, &err), STATUS_FETCH_NO_AGENT);
    char expected[600];
    snprintf(expected, sizeof expected,
             "no agent is running: %s is a stale socket nobody answers on", path);
    assert_string_equal(err.msg, expected);

    char out[4096], errs[4096];
    char *argv[] = {"status", "--socket", (char *)path};
    assert_int_equal(run_status(3, argv, out, sizeof out, errs, sizeof errs), STATUS_EXIT_NO_AGENT);
    snprintf(expected, sizeof expected, "conprof-agent: %s\n", err.msg);
    assert_string_equal(errs, expected);
    assert_string_equal(out, "");

    /* a new agent replaces the stale socket */
    struct agent a = start_agent(path, DOC);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_not_equal((int)st.st_ino, old_ino);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(status_fetch(path, 5000, &doc, &err), STATUS_FETCH_OK);
    json_decref(doc);
    stop_agent(&a);
}

static void test_never_replaces_live_agent_or_file(void **state)
{
    (void)state;
    const char *path = in_tmp("live.sock");
    struct agent a = start_agent(path, DOC);
    struct render_ctx ctx = {.text = "{}"};
    struct cp_err err;
    assert_null(status_server_open(path, render, &ctx, &err));
    char expected[200];
    snprintf(expected, sizeof expected,
             "status socket %s: another agent is already running and answers there", path);
    assert_string_equal(err.msg, expected);
    json_t *doc = NULL;
    assert_int_equal(status_fetch(path, 5000, &doc, &err), STATUS_FETCH_OK); /* still the first */
    assert_string_equal(json_string_value(json_object_get(doc, "node")), "node-1");
    json_decref(doc);
    stop_agent(&a);

    const char *file = in_tmp("regular.sock");
    FILE *f = fopen(file, "w");
    fputs("precious", f);
    fclose(f);
    assert_null(status_server_open(file, render, &ctx, &err));
    snprintf(expected, sizeof expected,
             "status socket: %s exists and is not a socket; refusing to replace it", file);
    assert_string_equal(err.msg, expected);
    char text[32] = "";
    f = fopen(file, "r");
    assert_non_null(fgets(text, sizeof text, f));
    fclose(f);
    assert_string_equal(text, "precious");

    /* closing does not remove a file that is no longer our socket */
    const char *moved = in_tmp("moved.sock");
    struct status_server *s = status_server_open(moved, render, &ctx, &err);
    assert_non_null(s);
    unlink(moved);
    f = fopen(moved, "w");
    fclose(f);
    status_server_close(s);
    struct stat st;
    assert_int_equal(stat(moved, &st), 0);

    char long_path[200];
    memset(long_path, 'a', sizeof long_path);
    long_path[0] = '/';
    long_path[STATUS_SOCKET_PATH_MAX + 1] = '\0';
    assert_null(status_server_open(long_path, render, &ctx, &err));
    assert_string_equal(err.msg, "status socket: expected a path of 1 to 90 bytes, got 91");
}

static int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* A client that never reads a large document does not stall the server or other clients. */
static void test_slow_client_never_blocks(void **state)
{
    (void)state;
    size_t big = 3u << 20;
    char *text = malloc(big + 64);
    int n = snprintf(text, big + 64, "{\"version\": \"0.1.0\", \"pad\": \"");
    memset(text + n, 'x', big);
    strcpy(text + n + big, "\"}");
    struct render_ctx ctx = {.text = text};
    const char *path = in_tmp("slow.sock");
    struct cp_err err;
    struct status_server *s = status_server_open(path, render, &ctx, &err);
    assert_non_null(s);
    int slow = raw_connect(path);
    double t0 = mono();
    assert_int_equal(status_server_handle(s, &err), 0);
    assert_true(mono() - t0 < 0.5); /* returned with the document only partly written */
    assert_int_equal(ctx.calls, 1);

    /* a second client reads everything while the first still stalls */
    int fast = raw_connect(path);
    size_t got = 0;
    char chunk[65536];
    double end = mono() + 10;
    while (mono() < end) {
        struct pollfd p[2] = {{.fd = status_server_fd(s), .events = POLLIN},
                              {.fd = fast, .events = POLLIN}};
        poll(p, 2, 100);
        if (p[0].revents) status_server_handle(s, &err);
        if (!p[1].revents) continue;
        ssize_t r = read(fast, chunk, sizeof chunk);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fast);
    assert_int_equal(got, strlen(text) - 3 /* compact: no blanks */ + 1 /* "\n" */);
    /* the stalled one is dropped after the timeout: it sees EOF before the end of its document */
    size_t slow_got = 0;
    end = mono() + STATUS_CLIENT_TIMEOUT_MS / 1000.0 + 3;
    bool eof = false;
    while (!eof && mono() < end) {
        struct pollfd p = {.fd = status_server_fd(s), .events = POLLIN};
        poll(&p, 1, 100);
        status_server_handle(s, &err);
        if (mono() - t0 < STATUS_CLIENT_TIMEOUT_MS / 1000.0 + 0.5) continue;
        ssize_t r;
        while ((r = recv(slow, chunk, sizeof chunk, MSG_DONTWAIT)) > 0)
            slow_got += (size_t)r;
        eof = r == 0;
    }
    assert_true(eof);
    assert_true(slow_got < got);
    close(slow);
    status_server_close(s);
    free(text);
}

/* The largest document (STATUS_REPLY_MAX bytes with its newline) goes through; one byte more
 * is replaced by an error document rather than cut. */
static void test_reply_size_bound(void **state)
{
    (void)state;
    size_t pad = STATUS_REPLY_MAX - 11; /* {"pad":"...."} is pad + 10 bytes */
    char *text = malloc(pad + 16);
    for (int extra = 0; extra <= 1; extra++) {
        int n = sprintf(text, "{\"pad\":\"");
        memset(text + n, 'x', pad + (size_t)extra);
        strcpy(text + n + pad + (size_t)extra, "\"}");
        const char *path = in_tmp("size.sock");
        struct agent a = start_agent(path, text);
        json_t *doc = NULL;
        struct cp_err err;
        assert_int_equal(status_fetch(path, 5000, &doc, &err), STATUS_FETCH_OK);
        if (extra == 0)
            assert_int_equal(json_string_length(json_object_get(doc, "pad")), pad);
        else
            assert_string_equal(json_string_value(json_object_get(doc, "error")),
                                "status: the status document is too large");
        json_decref(doc);
        stop_agent(&a);
    }
    free(text);
}

static void test_render_failure(void **state)
{
    (void)state;
    const char *path = in_tmp("fail.sock");
    struct render_ctx ctx = {.text = NULL};
    struct cp_err err;
    struct status_server *s = status_server_open(path, render, &ctx, &err);
    assert_non_null(s);
    int fd = raw_connect(path);
    assert_int_equal(status_server_handle(s, &err), -1);
    assert_string_equal(err.msg, "status: the agent could not build its status document");
    char buf[512] = "";
    ssize_t n = read(fd, buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf,
                        "{\"error\":\"status: the agent could not build its status document\"}\n");
    close(fd);
    status_server_close(s);
}

static void test_text_page(void **state)
{
    (void)state;
    json_t *doc = json_loads(DOC, 0, NULL);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    status_print_text(out, doc, 1700008180);
    fclose(out);
    json_decref(doc);
    const char *expected =
        "conprof-agent 0.1.0 on node-1: running for 2h 15m 30s (pid 4321)\n"
        "Config:   /etc/conprof/agent.json; 100 Hz, period 45 s; sink http https://pyro:4040\n"
        "\n"
        "Targets:  2 processes\n"
        "  CONTAINER    POD           APPLICATION   PID  PYTHON SAMPLES ERRORS STATE\n"
        "  3f9a0e7c1b2d shop/web-5d8f shop-api      4242 3.12.1  120345      3 sampling\n"
        "  host         -             evil?[31mred?   77 3.8.18       0      1 failed: "
        "permission denied\n"
        "\n"
        "Samples:  1203450 taken, 12 failed\n"
        "Profiles: 320 made, 0 failed\n"
        "Workers:  2 running, 1 crashed, 0 hung\n"
        "Uploads:  318 sent, 1 failed, 4 retried, 2 spooled, 0 evicted; 0 queued, 1 in flight\n"
        "Spool:    2 files, 178.9 KiB\n"
        "\n"
        "Last errors:\n"
        "  2023-11-15 00:26:40Z (3m 0s ago)  upload shop-api: HTTP 503\n";
    if (strcmp(text, expected)) fail_msg("got:\n%s\nexpected:\n%s", text, expected);
    free(text);

    /* a minimal document still prints, with dashes and zeros */
    doc = json_loads("{\"error\": \"boom\\u001b\"}", 0, NULL);
    out = open_memstream(&text, &len);
    status_print_text(out, doc, 0);
    fclose(out);
    assert_string_equal(text, "The agent answered with an error: boom?\n");
    free(text);
    json_decref(doc);
    doc = json_object();
    out = open_memstream(&text, &len);
    status_print_text(out, doc, 0);
    fclose(out);
    assert_non_null(strstr(text, "conprof-agent - on -: running for 0s (pid 0)\n"));
    assert_non_null(strstr(text, "Targets:  0 processes\n"));
    assert_non_null(strstr(text, "Last errors: none\n"));
    free(text);
    json_decref(doc);
}

static void test_cmd_status(void **state)
{
    (void)state;
    const char *path = in_tmp("cmd.sock");
    struct agent a = start_agent(path, DOC);
    char out[16384], errs[4096];

    char *json_argv[] = {"status", "--json", "--socket", (char *)path};
    assert_int_equal(run_status(4, json_argv, out, sizeof out, errs, sizeof errs), 0);
    json_t *printed = json_loads(out, 0, NULL), *expected = json_loads(DOC, 0, NULL);
    assert_non_null(printed);
    assert_true(json_equal(printed, expected));
    json_decref(printed);
    json_decref(expected);
    assert_string_equal(errs, "");

    char socket_arg[160];
    snprintf(socket_arg, sizeof socket_arg, "--socket=%s", path);
    char *text_argv[] = {"status", socket_arg};
    assert_int_equal(run_status(2, text_argv, out, sizeof out, errs, sizeof errs), 0);
    assert_non_null(strstr(out, "conprof-agent 0.1.0 on node-1: running for 2h 15m 30s"));
    assert_non_null(strstr(out, "shop-api"));

    /* the socket named by the config file */
    char json[256];
    snprintf(json, sizeof json, "{\"status_socket\": \"%s\"}", path);
    FILE *f = fopen(in_tmp("agent.json"), "w");
    fputs(json, f);
    fclose(f);
    char *config_argv[] = {"status", "--config", (char *)in_tmp("agent.json")};
    assert_int_equal(run_status(3, config_argv, out, sizeof out, errs, sizeof errs), 0);
    assert_non_null(strstr(out, "Targets:  2 processes"));
    f = fopen(in_tmp("agent.json"), "w");
    fputs("{\"status_socket\": \"\"}", f);
    fclose(f);
    config_argv[2] = (char *)in_tmp("agent.json");
    assert_int_equal(run_status(3, config_argv, out, sizeof out, errs, sizeof errs), 2);
    assert_non_null(strstr(errs, "disables the status socket"));
    stop_agent(&a);

    char *absent[] = {"status", "--socket", (char *)in_tmp("nothing/here.sock")};
    assert_int_equal(run_status(3, absent, out, sizeof out, errs, sizeof errs), 3);
    assert_non_null(strstr(errs, "no agent is running"));
    char *bad[] = {"status", "--bogus"};
    assert_int_equal(run_status(2, bad, out, sizeof out, errs, sizeof errs), 2);
    assert_non_null(strstr(errs, "conprof-agent: status: unexpected argument '--bogus'"));
    char *help[] = {"status", "--help"};
    assert_int_equal(run_status(2, help, out, sizeof out, errs, sizeof errs), 0);
    assert_non_null(strstr(out, "usage: conprof-agent status"));
}

/* An ordinary user cannot reach root's 0600 socket: exit 1 with the reason, not 3. */
static void test_permission_denied(void **state)
{
    (void)state;
    if (geteuid() != 0) skip();
    const char *path = in_tmp("perm.sock");
    struct agent a = start_agent(path, DOC);
    chmod(tmpdir, 0755); /* let the user reach the directory; the socket itself stays 0600 */
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        if (setgid(65534) < 0 || setuid(65534) < 0) _exit(10);
        json_t *doc = NULL;
        struct cp_err err;
        enum status_fetch_result r = status_fetch(path, 5000, &doc, &err);
        dprintf(pipefd[1], "%d %d %s", (int)r, (int)err.code, err.msg);
        _exit(0);
    }
    close(pipefd[1]);
    char buf[512] = "";
    ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
    close(pipefd[0]);
    waitpid(pid, NULL, 0);
    chmod(tmpdir, 0700);
    stop_agent(&a);
    assert_true(n > 0);
    buf[n] = '\0';
    char expected[300];
    snprintf(expected, sizeof expected,
             "-1 %d cannot connect to %s: Permission denied (run as root or as the agent's user)",
             CP_ERR_PERM, path);
    assert_string_equal(buf, expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_socket_file_and_modes),
        cmocka_unit_test(test_fetch_round_trip),
        cmocka_unit_test(test_stale_socket),
        cmocka_unit_test(test_never_replaces_live_agent_or_file),
        cmocka_unit_test(test_slow_client_never_blocks),
        cmocka_unit_test(test_reply_size_bound),
        cmocka_unit_test(test_render_failure),
        cmocka_unit_test(test_text_page),
        cmocka_unit_test(test_cmd_status),
        cmocka_unit_test(test_permission_denied),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
