/* procenv: environment blocks (first occurrence wins, empty and over-long values, the 256 KiB
 * bound), the application-name precedence, Python command lines, interpreter names, and the
 * environ of real processes started by the test: one with PLATFORM_* variables, one whose
 * environment is larger than the bound, and one we may not read (read as user nobody). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "procenv.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOCK(s) s, sizeof(s) - 1 /* a literal with embedded NULs, without the final one */

static void test_parse_block(void **state)
{
    (void)state;
    struct procenv env;
    procenv_parse(BLOCK("PATH=/usr/bin\0PLATFORM_PROJECT=abc123\0PLATFORM_ENVIRONMENT=main\0"
                        "PLATFORM_APPLICATION_NAME=web\0CONPROF_APP_NAME=shop\0"
                        "BLACKFIRE_CONPROF_APP_NAME=bf\0OTEL_SERVICE_NAME=svc\0"),
                  &env);
    assert_string_equal(env.project, "abc123");
    assert_string_equal(env.environment, "main");
    assert_string_equal(env.platform_app, "web");
    assert_string_equal(env.conprof_app, "shop");
    assert_string_equal(env.blackfire_app, "bf");
    assert_string_equal(env.otel_service, "svc");
}

static void test_parse_edge_cases(void **state)
{
    (void)state;
    struct procenv env;
    /* first occurrence wins, even empty; '=' in values; names must match exactly; no '=' */
    procenv_parse(BLOCK("PLATFORM_PROJECT=first\0PLATFORM_PROJECT=second\0"
                        "PLATFORM_ENVIRONMENT=\0PLATFORM_ENVIRONMENT=late\0"
                        "XPLATFORM_APPLICATION_NAME=no\0PLATFORM_APPLICATION_NAMEX=no\0"
                        "PLATFORM_APPLICATION_NAME\0CONPROF_APP_NAME=a=b\0\0\0=\0"
                        "OTEL_SERVICE_NAME=last-without-nul"),
                  &env);
    assert_string_equal(env.project, "first");
    assert_string_equal(env.environment, "");
    assert_string_equal(env.platform_app, "");
    assert_string_equal(env.conprof_app, "a=b");
    assert_string_equal(env.otel_service, "last-without-nul");

    /* a value of PROCENV_VALUE_MAX bytes or more counts as absent; one byte less is kept */
    char block[2 * PROCENV_VALUE_MAX];
    for (size_t n = PROCENV_VALUE_MAX - 1; n <= PROCENV_VALUE_MAX; n++) {
        int len = snprintf(block, sizeof block, "PLATFORM_PROJECT=");
        memset(block + len, 'p', n);
        procenv_parse(block, (size_t)len + n, &env);
        assert_int_equal(strlen(env.project), n < PROCENV_VALUE_MAX ? n : 0);
    }
    procenv_parse("", 0, &env);
    assert_string_equal(env.project, "");
}

static void test_parse_bound(void **state)
{
    (void)state;
    size_t size = PROCENV_TEXT_MAX + 4096;
    char *block = malloc(size);
    assert_non_null(block);
    memset(block, 'x', size);
    const char var[] = "PLATFORM_PROJECT=late";
    /* filler entries, then the variable across the bound: cut, so not seen */
    size_t at = PROCENV_TEXT_MAX - 8;
    for (size_t i = 1000; i < at; i += 1000)
        block[i] = '\0';
    block[at - 1] = '\0';
    memcpy(block + at, var, sizeof var);
    struct procenv env;
    procenv_parse(block, at + sizeof var, &env);
    assert_string_equal(env.project, "");
    /* the same entry ending inside the bound is seen */
    at = PROCENV_TEXT_MAX - sizeof var - 1;
    block[at - 1] = '\0';
    memcpy(block + at, var, sizeof var);
    procenv_parse(block, size, &env);
    assert_string_equal(env.project, "late");
    free(block);
}

static void app_name(const struct procenv *env, const char *cmdline, size_t len, const char *comm,
                     const char *want)
{
    char out[PROCENV_VALUE_MAX];
    procenv_app_name(env, cmdline, len, comm, out, sizeof out);
    assert_string_equal(out, want);
}

static void test_app_name_precedence(void **state)
{
    (void)state;
    struct procenv env;
    memset(&env, 0, sizeof env);
    const char cmd[] = "python3\0/srv/app/server.py\0--port\0"
                       "8000";
    app_name(&env, cmd, sizeof cmd, "python3", "server");
    app_name(&env, "", 0, "python3", "python3");
    strcpy(env.otel_service, "containerd-shim-runc-v2");
    app_name(&env, cmd, sizeof cmd, "python3", "server");
    strcpy(env.otel_service, "otel");
    app_name(&env, cmd, sizeof cmd, "python3", "otel");
    strcpy(env.platform_app, "platform");
    app_name(&env, cmd, sizeof cmd, "python3", "platform");
    strcpy(env.blackfire_app, "blackfire");
    app_name(&env, cmd, sizeof cmd, "python3", "blackfire");
    strcpy(env.conprof_app, "conprof");
    app_name(&env, cmd, sizeof cmd, "python3", "conprof");
    /* a small output buffer truncates */
    char small[4];
    procenv_app_name(&env, cmd, sizeof cmd, "python3", small, sizeof small);
    assert_string_equal(small, "con");
}

static void script(const char *cmdline, size_t len, const char *want)
{
    char out[64];
    bool found = procenv_script_name(cmdline, len, out, sizeof out);
    assert_int_equal(found, want != NULL);
    assert_string_equal(out, want ? want : "");
}

static void test_script_names(void **state)
{
    (void)state;
    script(BLOCK("python3\0app.py\0"), "app");
    script(BLOCK("/usr/bin/python3\0/usr/local/bin/gunicorn\0-w\0"
                 "4\0app:app\0"),
           "gunicorn");
    script(BLOCK("python3.12\0-u\0-X\0dev\0-W\0ignore\0/srv/manage.py\0runserver\0"), "manage");
    script(BLOCK("python3\0-Wignore\0-Xfrozen_modules=off\0-OO\0-B\0s.py\0"), "s");
    script(BLOCK("python3\0-m\0http.server\0"
                 "8000\0"),
           "http.server");
    script(BLOCK("python\0-mflask\0run\0"), "flask");
    script(BLOCK("python3\0-um\0celery\0worker\0"), "celery");
    script(BLOCK("python3\0-c\0import time; time.sleep(9)\0"), NULL);
    script(BLOCK("python3\0-uc\0pass\0"), NULL);
    script(BLOCK("python3\0-\0"), NULL);
    script(BLOCK("python3\0"), NULL);
    script(BLOCK("python3\0-u\0"), NULL);
    script(BLOCK("python3\0-m\0"), NULL);
    script(BLOCK("python3\0-W\0"), NULL);
    script(BLOCK("python3\0--\0-odd.py\0"), "-odd");
    script(BLOCK("python3\0--check-hash-based-pycs\0always\0x.py\0"), "x");
    script(BLOCK("python3\0--version\0y.py\0"), "y");
    script(BLOCK("python3\0/srv/dir/\0"), NULL);
    script(BLOCK("python3\0.py\0"), ".py");
    script(BLOCK("/root/.pyenv/versions/3.13.0/bin/python3.13t\0worker.py"), "worker");
    script(BLOCK("uwsgi\0--ini\0app.ini\0"), NULL);
    script(BLOCK("python2.7\0old.py\0"), NULL);
    script(BLOCK("gunicorn: master [app:app]\0"), NULL);
    script("", 0, NULL);
}

static void test_python_names(void **state)
{
    (void)state;
    const char *yes[] = {"python",      "python3",    "python3.6",   "python3.12",
                         "python3.13t", "python3.7m", "python3.12d", "python3.10dm"};
    const char *no[] = {"python2",   "python2.7",    "pythonw",           "python3.",
                        "python3.x", "python3-dbg",  "python3.12-config", "pypy3",
                        "ipython",   "python3.1234", "python3.12abcd",    "pytho",
                        "",          "python4"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        assert_true(procenv_is_python_name(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        if (procenv_is_python_name(no[i], strlen(no[i]))) fail_msg("accepted %s", no[i]);
    }
}

/* Starts `sleep 60` with the given environment; returns its pid once it has exec'd. */
static pid_t start_sleep(char *const envp[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[] = {"sleep", "60", NULL};
        execve("/bin/sleep", argv, envp);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) { /* wait for the exec */
        char exe[256], rel[64];
        snprintf(rel, sizeof rel, "/proc/%d/exe", (int)pid);
        ssize_t n = readlink(rel, exe, sizeof exe - 1);
        if (n > 0 && (exe[n] = '\0', strstr(exe, "sleep"))) return pid;
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    fail_msg("sleep did not start");
    return -1;
}

static void stop(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_read_live_process(void **state)
{
    (void)state;
    char *envp[] = {"PLATFORM_PROJECT=proj-live", "PLATFORM_ENVIRONMENT=staging",
                    "PLATFORM_APPLICATION_NAME=worker", "OTEL_SERVICE_NAME=otel-name", NULL};
    pid_t pid = start_sleep(envp);
    struct procenv env;
    struct cp_err err;
    int r = procenv_read(-1, pid, &env, &err);
    stop(pid);
    assert_int_equal(r, 0);
    assert_string_equal(env.project, "proj-live");
    assert_string_equal(env.environment, "staging");
    assert_string_equal(env.platform_app, "worker");
    assert_string_equal(env.otel_service, "otel-name");
    assert_string_equal(env.conprof_app, "");
    assert_int_equal(procenv_read(-1, 999999999, &env, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOPROC);
}

static void test_read_past_the_bound(void **state)
{
    (void)state;
    /* three 100 KiB variables (the kernel allows 128 KiB per string) before and after */
    size_t fill = 100 * 1024;
    char *big[3];
    for (int i = 0; i < 3; i++) {
        big[i] = malloc(fill + 8);
        assert_non_null(big[i]);
        snprintf(big[i], 8, "F%d=", i);
        memset(big[i] + 3, 'f', fill);
        big[i][fill + 3] = '\0';
    }
    char *envp[] = {"PLATFORM_ENVIRONMENT=early", big[0], big[1], big[2],
                    "PLATFORM_PROJECT=too-late",  NULL};
    pid_t pid = start_sleep(envp);
    struct procenv env;
    struct cp_err err;
    int r = procenv_read(-1, pid, &env, &err);
    stop(pid);
    for (int i = 0; i < 3; i++)
        free(big[i]);
    assert_int_equal(r, 0);
    assert_string_equal(env.environment, "early");
    assert_string_equal(env.project, ""); /* beyond 256 KiB */
}

static void test_read_forbidden(void **state)
{
    (void)state;
    if (geteuid() != 0) skip(); /* needs to become another user */
    pid_t parent = getpid();
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0) _exit(2);
        struct procenv env;
        struct cp_err err;
        int r = procenv_read(-1, parent, &env, &err);
        _exit(r == -1 && err.code == CP_ERR_PERM && strstr(err.msg, "CAP_SYS_PTRACE") ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_block),       cmocka_unit_test(test_parse_edge_cases),
        cmocka_unit_test(test_parse_bound),       cmocka_unit_test(test_app_name_precedence),
        cmocka_unit_test(test_script_names),      cmocka_unit_test(test_python_names),
        cmocka_unit_test(test_read_live_process), cmocka_unit_test(test_read_past_the_bound),
        cmocka_unit_test(test_read_forbidden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
