/* elf_symbols: the real interpreters of this machine (compared with nm), the load bias checked
 * against live python processes, and corrupt or truncated images that must be errors. */
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
#include <time.h>
#include <unistd.h>

#define PYENV "/root/.pyenv/versions/"
#define DEBIAN_PYTHON "/usr/bin/python3.11"

struct pyenv_case {
    const char *version; /* directory under PYENV */
    int minor;
    const char *lib; /* file name under lib/ */
};

static const struct pyenv_case PYENV_CASES[] = {
    {"3.7.16", 7, "libpython3.7m.so.1.0"},  {"3.8.18", 8, "libpython3.8.so.1.0"},
    {"3.9.18", 9, "libpython3.9.so.1.0"},   {"3.10.13", 10, "libpython3.10.so.1.0"},
    {"3.11.7", 11, "libpython3.11.so.1.0"}, {"3.12.1", 12, "libpython3.12.so.1.0"},
    {"3.13.0", 13, "libpython3.13.so.1.0"},
};
#define NCASES (sizeof PYENV_CASES / sizeof PYENV_CASES[0])

static void lib_path(const struct pyenv_case *c, char *buf, size_t size)
{
    snprintf(buf, size, PYENV "%s/lib/%s", c->version, c->lib);
}

static void bin_path(const struct pyenv_case *c, char *buf, size_t size)
{
    snprintf(buf, size, PYENV "%s/bin/python3.%d", c->version, c->minor);
}

static void require_file(const char *path)
{
    if (access(path, R_OK) != 0)
        fail_msg("%s is missing: install the CPython versions listed in the README with pyenv",
                 path);
}

/* st_value of a defined symbol according to nm (-D: the dynamic table); false if absent. */
static bool nm_value(const char *path, const char *symbol, bool dynamic, uint64_t *value)
{
    char cmd[512], line[512];
    snprintf(cmd, sizeof cmd, "nm %s --defined-only '%s' 2>/dev/null", dynamic ? "-D" : "", path);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        char name[256], type;
        unsigned long long v;
        if (!found && sscanf(line, "%llx %c %255s", &v, &type, name) == 3 &&
            strcmp(name, symbol) == 0) {
            *value = v;
            found = true;
        }
    }
    pclose(f);
    return found;
}

static void assert_matches_nm(const char *path, const struct elf_wanted_symbol *w, bool dynamic)
{
    uint64_t expected = 0;
    bool in_nm = nm_value(path, w->name, dynamic, &expected);
    if (in_nm != w->found)
        fail_msg("%s: %s found=%d but nm says %d", path, w->name, w->found, in_nm);
    assert_int_equal(w->value, expected);
}

enum { SYM_RUNTIME, SYM_VERSION, SYM_SYMTAB_ONLY, NSYMS };

static void init_wanted(struct elf_wanted_symbol w[NSYMS])
{
    memset(w, 0, NSYMS * sizeof *w);
    w[SYM_RUNTIME].name = "_PyRuntime";
    w[SYM_VERSION].name = "Py_Version";
    w[SYM_SYMTAB_ONLY].name = "_PyExc_BaseException"; /* static: in .symtab, not .dynsym */
}

static void check_libpython(const struct pyenv_case *c)
{
    char path[256];
    lib_path(c, path, sizeof path);
    require_file(path);
    struct elf_wanted_symbol w[NSYMS];
    struct elf_info info;
    struct cp_err err;
    init_wanted(w);
    if (elf_symbols_read_file(path, &info, w, NSYMS, &err) != 0) fail_msg("%s: %s", path, err.msg);
    assert_int_equal(info.type, ET_DYN);
    assert_true(info.has_symtab);
    assert_true(info.nloads >= 2 && info.nloads <= ELF_SYMBOLS_MAX_LOADS);
    assert_string_equal(info.needed_libpython, "");
    assert_true(w[SYM_RUNTIME].found);
    assert_true(w[SYM_RUNTIME].size > 0);
    assert_matches_nm(path, &w[SYM_RUNTIME], true);
    assert_int_equal(w[SYM_VERSION].found, c->minor >= 11);
    assert_matches_nm(path, &w[SYM_VERSION], true);
    assert_true(w[SYM_SYMTAB_ONLY].found);
    assert_matches_nm(path, &w[SYM_SYMTAB_ONLY], false);
    assert_int_equal(info.pyruntime_section_addr != 0, c->minor >= 10);
    if (c->minor >= 10) {
        assert_int_equal(info.pyruntime_section_addr, w[SYM_RUNTIME].value);
        assert_true(info.pyruntime_section_size >= w[SYM_RUNTIME].size);
    }
    assert_true(info.bss_addr != 0 && info.bss_size != 0);
}

static void test_pyenv_libpython(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++)
        check_libpython(&PYENV_CASES[i]);
}

static void test_pyenv_launchers_need_libpython(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++) {
        char path[256];
        bin_path(&PYENV_CASES[i], path, sizeof path);
        require_file(path);
        struct elf_wanted_symbol w[NSYMS];
        struct elf_info info;
        struct cp_err err;
        init_wanted(w);
        if (elf_symbols_read_file(path, &info, w, NSYMS, &err) != 0)
            fail_msg("%s: %s", path, err.msg);
        assert_int_equal(info.type, ET_DYN); /* PIE */
        assert_string_equal(info.needed_libpython, PYENV_CASES[i].lib);
        assert_false(w[SYM_RUNTIME].found); /* only referenced, defined in libpython */
        assert_int_equal(info.pyruntime_section_addr, 0);
        assert_true(info.nloads >= 2);
    }
}

static void test_debian_static_python(void **state)
{
    (void)state;
    require_file(DEBIAN_PYTHON);
    struct elf_wanted_symbol w[NSYMS];
    struct elf_info info;
    struct cp_err err;
    init_wanted(w);
    if (elf_symbols_read_file(DEBIAN_PYTHON, &info, w, NSYMS, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(info.type, ET_EXEC);
    assert_false(info.has_symtab);
    assert_true(w[SYM_RUNTIME].found && w[SYM_VERSION].found);
    assert_false(w[SYM_SYMTAB_ONLY].found);
    assert_matches_nm(DEBIAN_PYTHON, &w[SYM_RUNTIME], true);
    assert_matches_nm(DEBIAN_PYTHON, &w[SYM_VERSION], true);
    assert_true(info.pyruntime_section_addr != 0);
    assert_string_equal(info.needed_libpython, "");
    assert_true(info.loads[0].vaddr >= 0x400000); /* linked at its run-time address */
}

/* ---- load bias on hand-made segment tables ---- */

static const struct proc_map *map_at(struct proc_map *m, uint64_t start, uint64_t offset, bool x)
{
    *m = (struct proc_map){.start = start,
                           .end = start + 0x1000,
                           .offset = offset,
                           .r = true,
                           .x = x,
                           .p = true,
                           .path = "/lib/x.so"};
    return m;
}

static void test_load_bias_shared_page(void **state)
{
    (void)state;
    /* old layout: text ends in the file page where data starts (both cover offset 0x2dd000) */
    struct elf_info info = {.type = ET_DYN, .nloads = 2};
    info.loads[0] = (struct elf_load){0, 0x2dd0a0, 0, 0x2dd0a0, PF_R | PF_X};
    info.loads[1] = (struct elf_load){0x2de0f0, 0x30000, 0x2dd0f0, 0x20000, PF_R | PF_W};
    struct proc_map m;
    uint64_t bias;
    assert_int_equal(elf_symbols_load_bias(&info, map_at(&m, 0x7f0000000000, 0, true), &bias), 0);
    assert_int_equal(bias, 0x7f0000000000);
    /* the data mapping: file page 0x2dd000 at link address 0x2de000 */
    assert_int_equal(
        elf_symbols_load_bias(&info, map_at(&m, 0x7f00002de000, 0x2dd000, false), &bias), 0);
    assert_int_equal(bias, 0x7f0000000000);
    /* a RELRO split inside data */
    assert_int_equal(
        elf_symbols_load_bias(&info, map_at(&m, 0x7f00002f0000, 0x2ef000, false), &bias), 0);
    assert_int_equal(bias, 0x7f0000000000);
    /* past every segment's file bytes */
    assert_int_equal(
        elf_symbols_load_bias(&info, map_at(&m, 0x7f0000400000, 0x400000, false), &bias), -1);
}

static void test_load_bias_out_of_order_segments(void **state)
{
    (void)state;
    /* two r-x segments, the one at the lower address later in the file (py-spy issue #733) */
    struct elf_info info = {.type = ET_DYN, .nloads = 3};
    info.loads[0] = (struct elf_load){0x0, 0x1000, 0x0, 0x1000, PF_R};
    info.loads[1] = (struct elf_load){0x10000, 0x5000, 0x20000, 0x5000, PF_R | PF_X};
    info.loads[2] = (struct elf_load){0x20000, 0x5000, 0x10000, 0x5000, PF_R | PF_X};
    struct proc_map m;
    uint64_t bias;
    assert_int_equal(elf_symbols_load_bias(&info, map_at(&m, 0x555555565000, 0x20000, true), &bias),
                     0);
    assert_int_equal(bias, 0x555555555000);
    assert_int_equal(elf_symbols_load_bias(&info, map_at(&m, 0x555555575000, 0x10000, true), &bias),
                     0);
    assert_int_equal(bias, 0x555555555000);
}

static void test_load_bias_exec_and_empty(void **state)
{
    (void)state;
    struct elf_info info = {.type = ET_EXEC, .nloads = 2};
    info.loads[0] = (struct elf_load){0x400000, 0x1000, 0, 0x1000, PF_R};
    info.loads[1] = (struct elf_load){0x401000, 0x5000, 0x1000, 0x5000, PF_R | PF_X};
    struct proc_map m;
    uint64_t bias = 1;
    assert_int_equal(elf_symbols_load_bias(&info, map_at(&m, 0x401000, 0x1000, true), &bias), 0);
    assert_int_equal(bias, 0);
    info.nloads = 0;
    assert_int_equal(elf_symbols_load_bias(&info, map_at(&m, 0x401000, 0x1000, true), &bias), -1);
    /* a segment with no file bytes (pure bss) explains no mapping */
    info.nloads = 1;
    info.loads[0] = (struct elf_load){0x400000, 0x1000, 0x1000, 0, PF_R | PF_W};
    assert_int_equal(elf_symbols_load_bias(&info, map_at(&m, 0x400000, 0x1000, false), &bias), -1);
}

/* ---- garbage, truncated and corrupted images ---- */

static uint8_t *read_image(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    assert_true(n > 0);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static int read_mem(const void *image, size_t size, struct cp_err *err)
{
    struct elf_wanted_symbol w[NSYMS];
    struct elf_info info;
    init_wanted(w);
    return elf_symbols_read_memory(image, size, &info, w, NSYMS, err);
}

static void expect_invalid(const void *image, size_t size, const char *words)
{
    struct cp_err err = {0};
    if (read_mem(image, size, &err) != -1)
        fail_msg("a corrupt image about \"%s\" was accepted", words ? words : "");
    if (err.code != CP_ERR_INVALID || !strstr(err.msg, "ELF image") ||
        (words && !strstr(err.msg, words)))
        fail_msg("expected an INVALID error about \"%s\", got %d \"%s\"", words ? words : "",
                 err.code, err.msg);
}

static void test_garbage_images(void **state)
{
    (void)state;
    static uint8_t junk[8192];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1103515245 + 12345;
        junk[i] = (uint8_t)(x >> 16);
    }
    expect_invalid(junk, sizeof junk, "not an ELF");
    expect_invalid(junk, 0, NULL);
    memcpy(junk, "\177ELF\002\001\001", 7);
    struct cp_err err;
    assert_int_equal(read_mem(junk, sizeof junk, &err), -1);
    assert_int_equal(read_mem(junk, 16, &err), -1);
    /* a 32-bit header is well-formed but not ours */
    static Elf32_Ehdr eh32 = {.e_ident = {0x7f, 'E', 'L', 'F', ELFCLASS32, ELFDATA2LSB, EV_CURRENT},
                              .e_type = ET_DYN,
                              .e_version = EV_CURRENT,
                              .e_ehsize = sizeof(Elf32_Ehdr)};
    assert_int_equal(read_mem(&eh32, sizeof eh32, &err), -1);
    assert_int_equal(err.code, CP_ERR_UNSUPPORTED);
}

static void test_truncated_images(void **state)
{
    (void)state;
    char path[256];
    bin_path(&PYENV_CASES[5], path, sizeof path);
    size_t size;
    uint8_t *image = read_image(path, &size);
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;
    size_t headers_end = eh->e_shoff + (size_t)eh->e_shnum * eh->e_shentsize;
    assert_int_equal(headers_end, size); /* the section headers end the file */
    for (size_t cut = 0; cut < size; cut += 61) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so ASan sees any overread */
        memcpy(copy, image, cut);
        struct cp_err err;
        assert_int_equal(read_mem(copy, cut, &err), -1);
        assert_true(err.code == CP_ERR_INVALID);
        free(copy);
    }
    struct cp_err err;
    assert_int_equal(read_mem(image, size, &err), 0);
    free(image);
}

/* A corruptible copy of the pyenv 3.12 launcher, small and with .dynsym and .dynamic. */
struct image {
    uint8_t *bytes;
    size_t size;
    Elf64_Ehdr *eh;
};

static void load_launcher(struct image *im)
{
    char path[256];
    bin_path(&PYENV_CASES[5], path, sizeof path);
    im->bytes = read_image(path, &im->size);
    im->eh = (Elf64_Ehdr *)im->bytes;
    assert_int_equal(im->eh->e_ident[EI_CLASS], ELFCLASS64);
    assert_true(im->eh->e_shoff + (uint64_t)im->eh->e_shnum * sizeof(Elf64_Shdr) <= im->size);
}

static Elf64_Shdr *section(struct image *im, uint32_t type)
{
    Elf64_Shdr *sh = (Elf64_Shdr *)(im->bytes + im->eh->e_shoff);
    for (unsigned i = 0; i < im->eh->e_shnum; i++)
        if (sh[i].sh_type == type) return &sh[i];
    fail_msg("no section of type %u", type);
    return NULL;
}

static unsigned section_index(struct image *im, const Elf64_Shdr *sh)
{
    return (unsigned)(sh - (Elf64_Shdr *)(im->bytes + im->eh->e_shoff));
}

/* Applies `corrupt` to a fresh copy and expects CP_ERR_INVALID mentioning `words`. */
static void expect_corruption_rejected(void (*corrupt)(struct image *), const char *words)
{
    struct image im;
    load_launcher(&im);
    struct cp_err err;
    assert_int_equal(read_mem(im.bytes, im.size, &err), 0);
    corrupt(&im);
    expect_invalid(im.bytes, im.size, words);
    free(im.bytes);
}

static void bad_entsize(struct image *im)
{
    section(im, SHT_DYNSYM)->sh_entsize = 7;
}
static void bad_link(struct image *im)
{
    section(im, SHT_DYNSYM)->sh_link = 999;
}
static void huge_symtab(struct image *im)
{
    section(im, SHT_DYNSYM)->sh_size = 24ull << 40;
}
static void symtab_past_end(struct image *im)
{
    section(im, SHT_DYNSYM)->sh_offset = im->size - 48;
}
static void link_to_non_strtab(struct image *im)
{
    Elf64_Shdr *dynsym = section(im, SHT_DYNSYM);
    dynsym->sh_link = section_index(im, dynsym);
}
static void bad_symbol_name(struct image *im)
{
    Elf64_Shdr *dynsym = section(im, SHT_DYNSYM);
    Elf64_Sym *syms = (Elf64_Sym *)(im->bytes + dynsym->sh_offset);
    size_t n = dynsym->sh_size / sizeof *syms;
    for (size_t i = 1; i < n; i++)
        if (syms[i].st_shndx != SHN_UNDEF && syms[i].st_name != 0) {
            syms[i].st_name = 0x7fffffff;
            return;
        }
    fail_msg("no defined dynamic symbol");
}
static void bad_section_name(struct image *im)
{
    section(im, SHT_DYNSYM)->sh_name = 0xffffff;
}
static void bad_shstrndx(struct image *im)
{
    im->eh->e_shstrndx = 200;
}
static void relocatable(struct image *im)
{
    im->eh->e_type = ET_REL;
}
static void bad_needed(struct image *im)
{
    Elf64_Shdr *dynamic = section(im, SHT_DYNAMIC);
    Elf64_Dyn *dyn = (Elf64_Dyn *)(im->bytes + dynamic->sh_offset);
    for (size_t i = 0; i < dynamic->sh_size / sizeof *dyn; i++)
        if (dyn[i].d_tag == DT_NEEDED) {
            dyn[i].d_un.d_val = 0x7fffffff;
            return;
        }
    fail_msg("no DT_NEEDED");
}
static void phdrs_past_end(struct image *im)
{
    im->eh->e_phoff = im->size - 8;
}

static void test_corrupted_headers(void **state)
{
    (void)state;
    expect_corruption_rejected(bad_entsize, "entry size");
    expect_corruption_rejected(bad_link, "out of range");
    expect_corruption_rejected(huge_symtab, ".dynsym");
    expect_corruption_rejected(symtab_past_end, ".dynsym data cannot be read");
    expect_corruption_rejected(link_to_non_strtab, "outside its string table");
    expect_corruption_rejected(bad_symbol_name, "outside its string table");
    expect_corruption_rejected(bad_section_name, "name outside the section names");
    expect_corruption_rejected(bad_shstrndx, "section name table");
    expect_corruption_rejected(relocatable, "not an executable");
    expect_corruption_rejected(bad_needed, "DT_NEEDED");
    expect_corruption_rejected(phdrs_past_end, "no loadable segment");
}

static void test_file_errors(void **state)
{
    (void)state;
    struct elf_wanted_symbol w[NSYMS];
    struct elf_info info;
    struct cp_err err;
    init_wanted(w);
    assert_int_equal(elf_symbols_read_file("/etc/hostname", &info, w, NSYMS, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "/etc/hostname"));
    assert_int_equal(elf_symbols_read_file("/no/such/file", &info, w, NSYMS, &err), -1);
    assert_int_equal(err.code, CP_ERR_IO);
    assert_non_null(strstr(err.msg, "/no/such/file"));
    assert_int_equal(elf_symbols_read_file("/tmp", &info, w, NSYMS, &err), -1);
    assert_int_equal(elf_symbols_read_file("/dev/null", &info, w, NSYMS, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
}

/* ---- live processes: the bias must place the symbols where the interpreter has them ---- */

struct child {
    pid_t pid;
};

static int child_setup(void **state)
{
    struct child *c = calloc(1, sizeof *c);
    *state = c;
    return c ? 0 : -1;
}

static int child_teardown(void **state)
{
    struct child *c = *state;
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    }
    free(c);
    return 0;
}

static void start_sleeper(struct child *c, const char *python)
{
    require_file(python);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        execl(python, python, "-c", "import time; time.sleep(30)", (char *)NULL);
        _exit(127);
    }
}

/* Waits (at most 5 s) until `file` is mapped in the child, then reads its maps. */
static void wait_for_mapping(const struct child *c, const char *file, struct proc_maps *maps)
{
    struct cp_err err;
    for (int tries = 0; tries < 100; tries++) {
        if (proc_maps_read(c->pid, maps, &err) != 0) fail_msg("%s", err.msg);
        for (size_t i = 0; i < maps->count; i++)
            if (strcmp(maps->maps[i].path, file) == 0) return;
        proc_maps_free(maps);
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    fail_msg("%s never appeared in the maps of pid %d", file, (int)c->pid);
}

/* The bias from the lowest-offset mapping of `file`; every other mapping must agree. */
static uint64_t bias_of(const struct proc_maps *maps, const char *file, const struct elf_info *info)
{
    const struct proc_map *first = NULL;
    for (size_t i = 0; i < maps->count; i++)
        if (!strcmp(maps->maps[i].path, file) && (!first || maps->maps[i].offset < first->offset))
            first = &maps->maps[i];
    assert_non_null(first);
    uint64_t bias, other;
    assert_int_equal(elf_symbols_load_bias(info, first, &bias), 0);
    for (size_t i = 0; i < maps->count; i++) {
        if (strcmp(maps->maps[i].path, file) != 0) continue;
        assert_int_equal(elf_symbols_load_bias(info, &maps->maps[i], &other), 0);
        assert_int_equal(other, bias);
    }
    return bias;
}

/* Reads the 8 bytes at run-time address of `symbol` (from `file`) in the child. */
static uint64_t read_symbol(struct child *c, const char *file, const char *symbol, uint8_t out[8])
{
    struct proc_maps maps;
    wait_for_mapping(c, file, &maps);
    struct elf_wanted_symbol w[] = {{.name = symbol}};
    struct elf_info info;
    struct cp_err err;
    if (elf_symbols_read_file(file, &info, w, 1, &err) != 0) fail_msg("%s", err.msg);
    assert_true(w[0].found);
    uint64_t bias = bias_of(&maps, file, &info);
    proc_maps_free(&maps);
    struct iovec local = {out, 8}, remote = {(void *)(uintptr_t)(bias + w[0].value), 8};
    assert_int_equal(process_vm_readv(c->pid, &local, 1, &remote, 1, 0), 8);
    return bias;
}

static uint64_t as_u64(const uint8_t b[8])
{
    uint64_t v;
    memcpy(&v, b, 8);
    return v;
}

static void test_live_pyenv_313_debug_cookie(void **state)
{
    struct child *c = *state;
    start_sleeper(c, PYENV "3.13.0/bin/python3.13");
    uint8_t bytes[8];
    uint64_t bias = read_symbol(c, PYENV "3.13.0/lib/libpython3.13.so.1.0", "_PyRuntime", bytes);
    assert_memory_equal(bytes, "xdebugpy", 8);
    assert_true(bias != 0 && bias % 4096 == 0);
}

static void test_live_debian_static_version(void **state)
{
    struct child *c = *state;
    start_sleeper(c, DEBIAN_PYTHON);
    uint8_t bytes[8];
    uint64_t bias = read_symbol(c, DEBIAN_PYTHON, "Py_Version", bytes);
    assert_int_equal(bias, 0);
    assert_int_equal(as_u64(bytes) >> 16, 0x030b);
}

static void test_live_pyenv_312_version(void **state)
{
    struct child *c = *state;
    start_sleeper(c, PYENV "3.12.1/bin/python3.12");
    uint8_t bytes[8];
    read_symbol(c, PYENV "3.12.1/lib/libpython3.12.so.1.0", "Py_Version", bytes);
    assert_int_equal(as_u64(bytes), 0x030c01f0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyenv_libpython),
        cmocka_unit_test(test_pyenv_launchers_need_libpython),
        cmocka_unit_test(test_debian_static_python),
        cmocka_unit_test(test_load_bias_shared_page),
        cmocka_unit_test(test_load_bias_out_of_order_segments),
        cmocka_unit_test(test_load_bias_exec_and_empty),
        cmocka_unit_test(test_garbage_images),
        cmocka_unit_test(test_truncated_images),
        cmocka_unit_test(test_corrupted_headers),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test_setup_teardown(test_live_pyenv_313_debug_cookie, child_setup,
                                        child_teardown),
        cmocka_unit_test_setup_teardown(test_live_debian_static_version, child_setup,
                                        child_teardown),
        cmocka_unit_test_setup_teardown(test_live_pyenv_312_version, child_setup, child_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
