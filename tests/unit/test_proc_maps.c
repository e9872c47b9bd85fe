/* proc_maps: crafted text (odd paths, malformed lines, bounds), the live /proc/self/maps of this
 * test, a maps file past the 4 MiB bound, and the errors for missing and forbidden processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proc_maps.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char CRAFTED[] =
    "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/python3.11\n"
    "7f2c4c000000-7f2c4c021000 rw-p 00000000 00:00 0 \n"
    "7f2c50000000-7f2c50100000 r--s 00001000 fd:01 99   /opt/my app/lib/libpython3.12.so.1.0 "
    "(deleted)\n"
    "this is not a mapping\n"
    "\n"
    "7f2c60000000-7f2c60001000 r--p 00000000 fd:01 100  /tmp/a (deleted) b\n"
    "7ffd00000000-7ffd00010000 rw-p 00000000 00:00 0                  [stack]\n"
    "7ffd00020000-7ffd00021000 r-xp 00000000 00:00 0                  [vdso]\n"
    "ffffffffffffffff0-1 r--p 0 0:0 0 /too/many/digits\n"
    "7ffe00002000-7ffe00001000 r--p 00000000 00:00 0 /end/before/start\n"
    "7ffe00001000-7ffe00001000 r--p 00000000 00:00 0 /empty\n"
    "7ffe00001000-7ffe00002000 r--p 00000000 00:00 99999999999999999999 /inode/overflows\n"
    "7ffe00001000-7ffe00002000 r--p 00000000 00:00 12x /inode/junk\n"
    "7ffe00001000-7ffe00002000 rwzp 00000000 00:00 0 /bad/perm\n"
    "7ffe00001000-7ffe00002000 r--p 00000000 00:00\n"
    "7f2c4c000000-7f2c4c001000 r--p 00000000 00:00 0 /out/of/order\n"
    "7ffd0000f000-7ffd00011000 r--p 00000000 00:00 0 /overlaps/stack\n"
    "fffffffffffff000-ffffffffffffffff r--p ffffffffffffffff ffffffff:ffffffff "
    "18446744073709551615 /largest\n"
    "ffffffffffffffff0-fffffffffffffffff --xp 00000000 00:00 0  [vsyscall]";

static void test_crafted_text(void **state)
{
    (void)state;
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_parse(CRAFTED, strlen(CRAFTED), &m, &err), 0);
    assert_int_equal(m.count, 7);
    assert_int_equal(m.skipped, 11);
    const struct proc_map *exe = &m.maps[0];
    assert_int_equal(exe->start, 0x400000);
    assert_int_equal(exe->end, 0x452000);
    assert_true(exe->r && !exe->w && exe->x && exe->p);
    assert_int_equal(exe->dev_major, 8);
    assert_int_equal(exe->dev_minor, 2);
    assert_int_equal(exe->inode, 173521);
    assert_false(exe->deleted);
    assert_string_equal(exe->path, "/usr/bin/python3.11");
    assert_string_equal(m.maps[1].path, ""); /* anonymous, trailing space */
    assert_true(m.maps[1].w);
    const struct proc_map *lib = &m.maps[2];
    assert_string_equal(lib->path, "/opt/my app/lib/libpython3.12.so.1.0");
    assert_true(lib->deleted);
    assert_false(lib->p); /* shared */
    assert_int_equal(lib->offset, 0x1000);
    assert_int_equal(lib->dev_major, 0xfd);
    assert_string_equal(m.maps[3].path, "/tmp/a (deleted) b"); /* the suffix only at the end */
    assert_false(m.maps[3].deleted);
    assert_string_equal(m.maps[4].path, "[stack]");
    assert_string_equal(m.maps[5].path, "[vdso]");
    const struct proc_map *big = &m.maps[6];
    assert_string_equal(big->path, "/largest");
    assert_int_equal(big->end, UINT64_MAX);
    assert_int_equal(big->offset, UINT64_MAX);
    assert_int_equal(big->dev_major, 0xffffffffu);
    assert_int_equal(big->inode, UINT64_MAX);
    proc_maps_free(&m);
    assert_int_equal(m.count, 0);
    assert_null(m.maps);
}

static void test_find(void **state)
{
    (void)state;
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_parse(CRAFTED, strlen(CRAFTED), &m, &err), 0);
    assert_null(proc_maps_find(&m, 0));
    assert_null(proc_maps_find(&m, 0x3fffff));
    assert_ptr_equal(proc_maps_find(&m, 0x400000), &m.maps[0]);
    assert_ptr_equal(proc_maps_find(&m, 0x451fff), &m.maps[0]);
    assert_null(proc_maps_find(&m, 0x452000));
    assert_ptr_equal(proc_maps_find(&m, 0x7f2c500fffff), &m.maps[2]);
    assert_null(proc_maps_find(&m, 0x7f2c50100000));
    assert_ptr_equal(proc_maps_find(&m, 0x7ffd00001234), &m.maps[4]);
    assert_null(proc_maps_find(&m, 0x7ffd00010000));
    assert_ptr_equal(proc_maps_find(&m, UINT64_MAX - 1), &m.maps[6]);
    assert_null(proc_maps_find(&m, UINT64_MAX));
    proc_maps_free(&m);
    struct proc_maps empty = {0};
    assert_null(proc_maps_find(&empty, 0x1000));
}

static void test_line_length_bound(void **state)
{
    (void)state;
    const char *head = "1000-2000 r--p 00000000 00:00 0 /";
    size_t head_len = strlen(head);
    static char text[2 * 4200];
    /* a 4096-byte line is kept, a 4097-byte one is skipped */
    memset(text, 'a', sizeof text);
    memcpy(text, head, head_len);
    text[4096] = '\n';
    memcpy(text + 4097, "3000-4000 r--p 00000000 00:00 0 /", head_len);
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_parse(text, 4097 + 4097, &m, &err), 0);
    assert_int_equal(m.count, 1);
    assert_int_equal(m.skipped, 1);
    assert_int_equal(strlen(m.maps[0].path), 4096 - head_len + 1);
    proc_maps_free(&m);
    /* nothing at all, and text that is only newlines */
    assert_int_equal(proc_maps_parse("", 0, &m, &err), 0);
    assert_int_equal(m.count + m.skipped, 0);
    assert_int_equal(proc_maps_parse("\n\n\n", 3, &m, &err), 0);
    assert_int_equal(m.count + m.skipped, 0);
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    /* the parser must stay inside len: the bytes after it are never read */
    const char *line = "1000-2000 r--p 00000000 00:00 0 /a/b";
    size_t len = strlen(line);
    char *exact = malloc(len);
    memcpy(exact, line, len);
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_parse(exact, len, &m, &err), 0);
    assert_int_equal(m.count, 1);
    assert_string_equal(m.maps[0].path, "/a/b");
    proc_maps_free(&m);
    assert_int_equal(proc_maps_parse(exact, 12, &m, &err), 0); /* cut in the perms */
    assert_int_equal(m.count, 0);
    assert_int_equal(m.skipped, 1);
    free(exact);
}

static int local_function(void)
{
    return 42;
}

static void test_live_self(void **state)
{
    (void)state;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_read(getpid(), &m, &err), 0);
    assert_true(m.count > 5);
    assert_int_equal(m.skipped, 0);
    for (size_t i = 1; i < m.count; i++)
        assert_true(m.maps[i - 1].end <= m.maps[i].start);
    assert_int_equal(local_function(), 42);
    const struct proc_map *code = proc_maps_find(&m, (uint64_t)(uintptr_t)&local_function);
    assert_non_null(code);
    assert_true(code->r && code->x && !code->w);
    assert_string_equal(code->path, exe);
    assert_true(code->inode != 0);
    const struct proc_map *stack =
        proc_maps_find(&m, (uint64_t)(uintptr_t)__builtin_frame_address(0));
    assert_non_null(stack);
    assert_true(stack->r && stack->w);
    assert_string_equal(stack->path, "[stack]");
    proc_maps_free(&m);
}

/* Maps one page of a file with a long path `count` times (never merged: every mapping has file
 * offset 0) and returns the addresses. */
static void **map_many(const char *path, size_t count)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    void **at = calloc(count, sizeof *at);
    assert_non_null(at);
    for (size_t i = 0; i < count; i++) {
        at[i] = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
        assert_true(at[i] != MAP_FAILED);
    }
    close(fd);
    return at;
}

static void unmap_many(void **at, size_t count)
{
    for (size_t i = 0; i < count; i++)
        munmap(at[i], 4096);
    free(at);
}

static void make_long_path(char *path, size_t size)
{
    char dir[] = "/tmp/conprof-maps-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char name[201];
    memset(name, 'n', 200);
    name[200] = '\0';
    snprintf(path, size, "%s/%s", dir, name);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4096), 0);
    close(fd);
}

static void remove_long_path(const char *path)
{
    unlink(path);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    rmdir(dir);
}

static size_t count_path(const struct proc_maps *m, const char *path)
{
    size_t n = 0;
    for (size_t i = 0; i < m->count; i++)
        n += strcmp(m->maps[i].path, path) == 0;
    return n;
}

static void test_live_large_and_too_large(void **state)
{
    (void)state;
    char path[PATH_MAX];
    make_long_path(path, sizeof path);
    /* ~2 MiB of maps: well past the first read buffer, inside the bound */
    void **some = map_many(path, 7000);
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_read(getpid(), &m, &err), 0);
    assert_int_equal(count_path(&m, path), 7000);
    assert_int_equal(m.skipped, 0);
    proc_maps_free(&m);
    /* ~5 MiB: refused, not cut */
    void **more = map_many(path, 10000);
    assert_int_equal(proc_maps_read(getpid(), &m, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "larger than 4 MiB"));
    assert_int_equal(m.count, 0);
    unmap_many(more, 10000);
    unmap_many(some, 7000);
    remove_long_path(path);
}

static void test_no_such_process(void **state)
{
    (void)state;
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_read(0x3ffffff0, &m, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOPROC);
    assert_string_equal(err.msg, "no process with pid 1073741808");
    assert_int_equal(proc_maps_read(-5, &m, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOPROC);
    /* a process that has exited and been reaped */
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    assert_true(pid > 0);
    waitpid(pid, NULL, 0);
    assert_int_equal(proc_maps_read(pid, &m, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOPROC);
}

/* An unprivileged child may not read the maps of pid 1: it reports CP_ERR_PERM. */
static void test_permission_denied(void **state)
{
    (void)state;
    if (geteuid() != 0) skip(); /* needs root to drop to another user */
    pid_t pid = fork();
    if (pid == 0) {
        struct proc_maps m;
        struct cp_err err;
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
        int rc = proc_maps_read(1, &m, &err);
        _exit(rc == -1 && err.code == CP_ERR_PERM && strstr(err.msg, "/proc/1/maps") ? 0 : 1);
    }
    assert_true(pid > 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crafted_text),      cmocka_unit_test(test_find),
        cmocka_unit_test(test_line_length_bound), cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_live_self),         cmocka_unit_test(test_live_large_and_too_large),
        cmocka_unit_test(test_no_such_process),   cmocka_unit_test(test_permission_denied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
