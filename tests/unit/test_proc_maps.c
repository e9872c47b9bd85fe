/* proc_maps: crafted text, and the live /proc/self/maps of this test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proc_maps.h"

#include <string.h>
#include <unistd.h>

static const char CRAFTED[] =
    "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/python3.11\n"
    "7f2c4c000000-7f2c4c021000 rw-p 00000000 00:00 0 \n"
    "7f2c50000000-7f2c50100000 r--p 00001000 fd:01 99   /opt/my app/lib/libpython3.12.so.1.0 (deleted)\n"
    "this is not a mapping\n"
    "7ffd00000000-7ffd00010000 rw-p 00000000 00:00 0                  [stack]\n"
    "ffffffffffffffff0-1 r--p 0 0:0 0 /too/many/digits\n"
    "2000-1000 r--p 00000000 00:00 0 /end/before/start\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]";

static void test_crafted_text(void **state)
{
    (void)state;
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_parse(CRAFTED, strlen(CRAFTED), &m, &err), 0);
    assert_int_equal(m.count, 5);
    assert_int_equal(m.skipped, 3);
    assert_int_equal(m.maps[0].start, 0x400000);
    assert_int_equal(m.maps[0].end, 0x452000);
    assert_true(m.maps[0].r && !m.maps[0].w && m.maps[0].x && m.maps[0].p);
    assert_int_equal(m.maps[0].dev_major, 8);
    assert_int_equal(m.maps[0].inode, 173521);
    assert_string_equal(m.maps[0].path, "/usr/bin/python3.11");
    assert_string_equal(m.maps[1].path, "");
    assert_string_equal(m.maps[2].path, "/opt/my app/lib/libpython3.12.so.1.0");
    assert_true(m.maps[2].deleted);
    assert_int_equal(m.maps[2].offset, 0x1000);
    assert_string_equal(m.maps[3].path, "[stack]");
    assert_string_equal(m.maps[4].path, "[vsyscall]");
    assert_ptr_equal(proc_maps_find(&m, 0x451fff), &m.maps[0]);
    assert_null(proc_maps_find(&m, 0x452000));
    assert_ptr_equal(proc_maps_find(&m, 0x7ffd00001234), &m.maps[3]);
    proc_maps_free(&m);
}

static void test_long_line_is_skipped(void **state)
{
    (void)state;
    static char text[10000];
    memset(text, 'a', sizeof text - 1);
    memcpy(text, "1000-2000 r--p 00000000 00:00 0 /", 33);
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_parse(text, strlen(text), &m, &err), 0);
    assert_int_equal(m.count, 0);
    assert_int_equal(m.skipped, 1);
    proc_maps_free(&m);
}

static int local_function(void) { return 42; }

static void test_live_self(void **state)
{
    (void)state;
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_read(getpid(), &m, &err), 0);
    assert_true(m.count > 5);
    assert_int_equal(m.skipped, 0);
    const struct proc_map *code = proc_maps_find(&m, (uint64_t)(uintptr_t)&local_function);
    assert_non_null(code);
    assert_true(code->x);
    assert_non_null(strstr(code->path, "test_proc_maps"));
    int on_stack = local_function();
    const struct proc_map *stack = proc_maps_find(&m, (uint64_t)(uintptr_t)&on_stack);
    assert_non_null(stack);
    assert_true(stack->w);
    proc_maps_free(&m);
}

static void test_no_such_process(void **state)
{
    (void)state;
    struct proc_maps m;
    struct cp_err err;
    assert_int_equal(proc_maps_read(0x7ffffff0, &m, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOPROC);
    assert_non_null(strstr(err.msg, "no process with pid"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crafted_text),
        cmocka_unit_test(test_long_line_is_skipped),
        cmocka_unit_test(test_live_self),
        cmocka_unit_test(test_no_such_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
