/* elf_symbols: the real interpreters of this machine, and a live process to check the bias. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "elf_symbols.h"

#include <elf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define PYENV "/root/.pyenv/versions/"

struct lib_case {
    const char *lib;
    int minor;
};

static const struct lib_case LIBS[] = {
    {PYENV "3.7.16/lib/libpython3.7m.so.1.0", 7},  {PYENV "3.8.18/lib/libpython3.8.so.1.0", 8},
    {PYENV "3.9.18/lib/libpython3.9.so.1.0", 9},   {PYENV "3.10.13/lib/libpython3.10.so.1.0", 10},
    {PYENV "3.11.7/lib/libpython3.11.so.1.0", 11}, {PYENV "3.12.1/lib/libpython3.12.so.1.0", 12},
    {PYENV "3.13.0/lib/libpython3.13.so.1.0", 13},
};

/* st_value of a dynamic symbol according to nm, 0 if absent. */
static uint64_t nm_value(const char *path, const char *symbol)
{
    char cmd[512], line[512];
    snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s' 2>/dev/null", path);
    FILE *f = popen(cmd, "r");
    uint64_t value = 0;
    while (f && fgets(line, sizeof line, f)) {
        char name[256], type;
        unsigned long long v;
        if (sscanf(line, "%llx %c %255s", &v, &type, name) == 3 && !strcmp(name, symbol))
            value = v;
    }
    if (f)
        pclose(f);
    return value;
}

static void test_pyenv_libpython(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof LIBS / sizeof LIBS[0]; i++) {
        struct elf_wanted_symbol w[] = {{.name = "_PyRuntime"}, {.name = "Py_Version"}};
        struct elf_info info;
        struct cp_err err;
        if (access(LIBS[i].lib, R_OK) != 0)
            fail_msg("%s is missing: install CPython 3.%d with pyenv", LIBS[i].lib, LIBS[i].minor);
        assert_int_equal(elf_symbols_read_file(LIBS[i].lib, &info, w, 2, &err), 0);
        assert_int_equal(info.type, ET_DYN);
        assert_true(w[0].found);
        assert_int_equal(w[0].value, nm_value(LIBS[i].lib, "_PyRuntime"));
        assert_int_equal(w[1].found, LIBS[i].minor >= 11);
        assert_int_equal(info.pyruntime_section_addr != 0, LIBS[i].minor >= 10);
        assert_true(info.has_symtab);
        assert_true(info.nloads >= 2);
    }
}

static void test_debian_static_python(void **state)
{
    (void)state;
    struct elf_wanted_symbol w[] = {{.name = "_PyRuntime"}, {.name = "Py_Version"}};
    struct elf_info info;
    struct cp_err err;
    assert_int_equal(elf_symbols_read_file("/usr/bin/python3.11", &info, w, 2, &err), 0);
    assert_int_equal(info.type, ET_EXEC);
    assert_false(info.has_symtab);
    assert_true(w[0].found && w[1].found);
    assert_int_equal(w[0].value, nm_value("/usr/bin/python3.11", "_PyRuntime"));
    assert_true(info.pyruntime_section_addr != 0);
    assert_string_equal(info.needed_libpython, "");
}

static void test_pyenv_launcher_needs_libpython(void **state)
{
    (void)state;
    struct elf_wanted_symbol w[] = {{.name = "_PyRuntime"}};
    struct elf_info info;
    struct cp_err err;
    assert_int_equal(elf_symbols_read_file(PYENV "3.12.1/bin/python3.12", &info, w, 1, &err), 0);
    assert_int_equal(info.type, ET_DYN);
    assert_false(w[0].found);
    assert_string_equal(info.needed_libpython, "libpython3.12.so.1.0");
}

static void test_garbage_is_an_error(void **state)
{
    (void)state;
    struct elf_wanted_symbol w[] = {{.name = "_PyRuntime"}};
    struct elf_info info;
    struct cp_err err;
    static char junk[4096] = "\177ELF\002\001\001garbage";
    assert_int_equal(elf_symbols_read_memory(junk, sizeof junk, &info, w, 1, &err), -1);
    assert_int_equal(elf_symbols_read_file("/etc/hostname", &info, w, 1, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    assert_int_equal(elf_symbols_read_file("/no/such/file", &info, w, 1, &err), -1);
    assert_int_equal(err.code, CP_ERR_IO);
}

/* Reads 8 bytes at the runtime address of symbol in a live python, through the bias computed
 * from its maps. */
static void check_live(const char *python, const char *file_in_maps, const char *symbol,
                       void (*check)(const uint8_t bytes[8]))
{
    pid_t pid = fork();
    if (pid == 0) {
        execl(python, python, "-c", "import time; time.sleep(30)", (char *)NULL);
        _exit(127);
    }
    usleep(300 * 1000);
    struct proc_maps maps;
    struct cp_err err;
    assert_int_equal(proc_maps_read(pid, &maps, &err), 0);
    const struct proc_map *map = NULL;
    for (size_t i = 0; i < maps.count && !map; i++)
        if (!strcmp(maps.maps[i].path, file_in_maps) && maps.maps[i].offset == 0)
            map = &maps.maps[i];
    assert_non_null(map);
    struct elf_wanted_symbol w[] = {{.name = symbol}};
    struct elf_info info;
    assert_int_equal(elf_symbols_read_file(file_in_maps, &info, w, 1, &err), 0);
    uint64_t bias;
    assert_int_equal(elf_symbols_load_bias(&info, map, &bias), 0);
    if (info.type == ET_EXEC)
        assert_int_equal(bias, 0);
    uint8_t bytes[8];
    struct iovec local = {bytes, 8}, remote = {(void *)(uintptr_t)(bias + w[0].value), 8};
    assert_int_equal(process_vm_readv(pid, &local, 1, &remote, 1, 0), 8);
    check(bytes);
    proc_maps_free(&maps);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void is_debug_cookie(const uint8_t b[8]) { assert_memory_equal(b, "xdebugpy", 8); }
static void is_3_11(const uint8_t b[8])
{
    uint64_t v;
    memcpy(&v, b, 8);
    assert_int_equal(v >> 16, 0x030b);
}
static void is_3_12_1(const uint8_t b[8])
{
    uint64_t v;
    memcpy(&v, b, 8);
    assert_int_equal(v, 0x030c01f0);
}

static void test_live_bias(void **state)
{
    (void)state;
    check_live(PYENV "3.13.0/bin/python3.13", PYENV "3.13.0/lib/libpython3.13.so.1.0",
               "_PyRuntime", is_debug_cookie);
    check_live("/usr/bin/python3.11", "/usr/bin/python3.11", "Py_Version", is_3_11);
    check_live(PYENV "3.12.1/bin/python3.12", PYENV "3.12.1/lib/libpython3.12.so.1.0",
               "Py_Version", is_3_12_1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyenv_libpython),
        cmocka_unit_test(test_debian_static_python),
        cmocka_unit_test(test_pyenv_launcher_needs_libpython),
        cmocka_unit_test(test_garbage_is_an_error),
        cmocka_unit_test(test_live_bias),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
