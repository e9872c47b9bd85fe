/* pyproc: finding a CPython interpreter inside another process.
 *
 * The interpreter is wherever _PyRuntime is: in libpython*.so for shared builds (pyenv), in the
 * executable for static ones (Debian's /usr/bin/python3.11). We prefer libpython, as a shared
 * build's executable is a thin launcher. Files are opened as the target sees them: the executable
 * through /proc/PID/exe, other files through /proc/PID/root/<path> (a container's own root), and
 * /proc/PID/map_files/<range> as a last resort (deleted or replaced files).
 *
 * The version decides the offsets, so it is taken from the most trustworthy source available:
 * the _Py_DebugOffsets header at the start of _PyRuntime (3.13+), the Py_Version constant in the
 * target's memory (3.11+), then PY_VERSION as a NUL-delimited string in the binary's bytes, whose
 * minor must agree with the file name when the name has one. Whatever the source, the offsets are
 * then checked against the live structures (the first thread state must point back at the
 * interpreter), so a wrong guess is an error, not garbage stacks.
 */
#include "pyproc.h"

#include "elf_symbols.h"
#include "proc_maps.h"
#include "procfs.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { SYM_RUNTIME, SYM_VERSION, SYM_NONE, SYM_CODE_TYPE, SYM_COUNT };

struct candidate {
    const struct proc_map *map;   /* the file's lowest mapping */
    char rel_path[PATH_MAX + 64]; /* how it was opened: relative to procfd, or a plain path */
    bool fd_path_in_proc;
    struct elf_info elf;
    struct elf_wanted_symbol syms[SYM_COUNT];
};

/* Reads a small /proc file of pid into buf (NUL-terminated); returns its length or -1. */
static ssize_t read_proc_file(int procfd, pid_t pid, const char *name, char *buf, size_t size)
{
    char rel[64];
    int fd = procfs_open(procfd, procfs_path(rel, sizeof rel, "%d/%s", (int)pid, name), O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = '\0';
    return n;
}

static void comm_of(int procfd, pid_t pid, char *buf, size_t size)
{
    if (read_proc_file(procfd, pid, "comm", buf, size) < 0) buf[0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
}

void pyproc_read_error(const struct py_proc *p, int errnum, const char *what, struct cp_err *err)
{
    if (errnum == EPERM || errnum == EACCES)
        cp_err_set(err, CP_ERR_PERM,
                   "cannot read the memory of process %d (%s): permission denied; run conprof as "
                   "the target's user or with CAP_SYS_PTRACE (e.g. as root), and check "
                   "kernel.yama.ptrace_scope",
                   (int)p->pid, what);
    else if (errnum == ESRCH)
        cp_err_set(err, CP_ERR_NOPROC, "process %d exited", (int)p->pid);
    else
        cp_err_set(err, CP_ERR_INVALID, "cannot read %s in process %d: %s", what, (int)p->pid,
                   strerror(errnum));
}

/* Field 22 of /proc/PID/stat (the start time), after the parenthesised command (which may hold
 * spaces); *state gets field 3 ('R', 'S', 'Z', ...). */
static int read_stat(int procfd, pid_t pid, uint64_t *out, char *state)
{
    char text[1024];
    if (read_proc_file(procfd, pid, "stat", text, sizeof text) <= 0) return -1;
    char *p = strrchr(text, ')');
    if (!p) return -1;
    /* p is at the space before field 3 */
    p++;
    if (state) *state = p[0] == ' ' ? p[1] : '?';
    for (int field = 2; field < 21 && p; field++) /* p: the space before field 22 */
        p = strchr(p + 1, ' ');
    if (!p) return -1;
    *out = strtoull(p + 1, NULL, 10);
    return 0;
}

/* The last NSpid entry of /proc/PID/status: the pid inside the target's own namespace. */
static pid_t read_nspid(int procfd, pid_t pid)
{
    char text[4096];
    pid_t ns = pid;
    if (read_proc_file(procfd, pid, "status", text, sizeof text) < 0) return ns;
    char *line = strstr(text, "\nNSpid:");
    if (!line) return ns;
    line[strcspn(line + 1, "\n") + 1] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(line + 7, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save))
        ns = (pid_t)atoi(tok);
    return ns;
}

/* Are we in the target's mount namespace (then its paths are ours)? */
static bool same_mount_ns(int procfd, pid_t pid)
{
    char mine[64], theirs[64], rel[64];
    ssize_t a = procfs_readlink(procfd, "self/ns/mnt", mine, sizeof mine - 1);
    ssize_t b = procfs_readlink(procfd, procfs_path(rel, sizeof rel, "%d/ns/mnt", (int)pid), theirs,
                                sizeof theirs - 1);
    if (a <= 0 || b <= 0) return false;
    mine[a] = theirs[b] = '\0';
    return strcmp(mine, theirs) == 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* 3 and X from ".../libpython3.X..." or ".../python3.X"; -1 when the name has no version. */
static int minor_from_name(const char *path)
{
    const char *b = base_name(path);
    if (strncmp(b, "lib", 3) == 0) b += 3;
    if (strncmp(b, "python3.", 8) != 0 || !isdigit((unsigned char)b[8])) return -1;
    return atoi(b + 8);
}

static bool is_libpython(const char *path)
{
    const char *b = base_name(path);
    return strncmp(b, "libpython3", 10) == 0 && strstr(b, ".so") != NULL;
}

static const struct proc_map *first_mapping_of(const struct proc_maps *maps, const char *path)
{
    const struct proc_map *best = NULL;
    for (size_t i = 0; i < maps->count; i++) {
        const struct proc_map *m = &maps->maps[i];
        if (strcmp(m->path, path) == 0 && (!best || m->offset < best->offset)) best = m;
    }
    return best;
}

/* Opens the file of a mapping as the target sees it, trying in turn: the executable link
 * (/proc/PID/exe), the path itself when we share the target's mount namespace (an agent worker
 * that entered the container), the path under the target's root (/proc/PID/root/...), and the
 * mapping's own link (/proc/PID/map_files/..., for deleted or replaced files). */
static int load_candidate(const struct py_proc *p, const struct proc_map *map, bool is_exe,
                          struct candidate *c, struct cp_err *err)
{
    static const char *const names[SYM_COUNT] = {"_PyRuntime", "Py_Version", "_Py_NoneStruct",
                                                 "PyCode_Type"};
    memset(c, 0, sizeof *c);
    c->map = map;
    for (int i = 0; i < SYM_COUNT; i++)
        c->syms[i].name = names[i];
    char tries[4][PATH_MAX + 64];
    bool in_proc[4];
    int n = 0;
    if (is_exe) {
        snprintf(tries[n], sizeof tries[n], "%d/exe", (int)p->pid);
        in_proc[n++] = true;
    }
    if (p->same_mntns) {
        snprintf(tries[n], sizeof tries[n], "%s", map->path);
        in_proc[n++] = false;
    }
    snprintf(tries[n], sizeof tries[n], "%d/root%s", (int)p->pid, map->path);
    in_proc[n++] = true;
    snprintf(tries[n], sizeof tries[n], "%d/map_files/%llx-%llx", (int)p->pid,
             (unsigned long long)map->start, (unsigned long long)map->end);
    in_proc[n++] = true;
    for (int i = 0; i < n; i++) {
        int fd = in_proc[i] ? procfs_open(p->procfd, tries[i], O_RDONLY)
                            : open(tries[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            cp_err_set(err, errno == EACCES || errno == EPERM ? CP_ERR_PERM : CP_ERR_IO,
                       "cannot open %s: %s", map->path, strerror(errno));
            continue;
        }
        if (elf_symbols_read_fd(fd, map->path, &c->elf, c->syms, SYM_COUNT, err) == 0) {
            c->fd_path_in_proc = in_proc[i];
            memcpy(c->rel_path, tries[i], sizeof c->rel_path);
            return 0;
        }
        if (err->code == CP_ERR_INVALID)
            return -1; /* the file is there but is not a usable ELF: say so */
    }
    return -1;
}

/* Finds "3.X.Y (" in the target's copy of the binary's .bss, where Py_GetVersion() keeps the
 * sys.version text it formatted at start-up. minor_hint < 0 accepts any 3.7-3.13 minor, else only
 * that minor (which may be one we do not support, to name it). */
static uint32_t version_from_bss(struct py_proc *p, const struct elf_info *elf, uint64_t bias,
                                 int minor_hint)
{
    enum { CHUNK = 64 * 1024, MAX_BSS = 4 * 1024 * 1024 };
    if (!elf->bss_addr || !elf->bss_size || elf->bss_size > MAX_BSS) return 0;
    char *buf = malloc(CHUNK + 16);
    uint32_t found = 0;
    for (uint64_t at = 0; buf && !found && at < elf->bss_size; at += CHUNK) {
        size_t len = elf->bss_size - at < CHUNK + 16 ? (size_t)(elf->bss_size - at) : CHUNK + 16;
        if (mem_read(&p->mem, bias + elf->bss_addr + at, buf, len) < 0) break;
        for (size_t i = 0; i + 8 < len && !found; i++) {
            if (buf[i] != '3' || buf[i + 1] != '.' ||
                (i > 0 && (isdigit((unsigned char)buf[i - 1]) || buf[i - 1] == '.')))
                continue;
            int minor = 0, micro = 0;
            size_t j = i + 2;
            while (j < len && isdigit((unsigned char)buf[j]) && minor < 100)
                minor = minor * 10 + (buf[j++] - '0');
            if (j >= len || buf[j++] != '.' || !isdigit((unsigned char)buf[j])) continue;
            while (j < len && isdigit((unsigned char)buf[j]) && micro < 1000)
                micro = micro * 10 + (buf[j++] - '0');
            bool minor_ok = minor_hint >= 0 ? minor == minor_hint : minor >= 7 && minor <= 13;
            if (j + 1 < len && buf[j] == ' ' && buf[j + 1] == '(' && minor_ok)
                found = PY_HEX(3, minor, micro);
        }
    }
    free(buf);
    return found;
}

/* Finds PY_VERSION ("3.X.Y", NUL on both sides) among the bytes of the binary. */
static uint32_t version_from_file_bytes(const struct py_proc *p, const struct candidate *c,
                                        int minor_hint)
{
    int fd = c->fd_path_in_proc ? procfs_open(p->procfd, c->rel_path, O_RDONLY)
                                : open(c->rel_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    uint32_t found = 0;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size < (1LL << 31)) {
        const char *data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data != MAP_FAILED) {
            for (int minor = 7; minor <= 13 && !found; minor++) {
                if (minor_hint >= 0 && minor != minor_hint) continue;
                char needle[16];
                int nlen = snprintf(needle, sizeof needle, "%c3.%d.", '\0', minor);
                const char *p = data, *end = data + st.st_size;
                while (!found && (p = memmem(p, (size_t)(end - p), needle, (size_t)nlen))) {
                    const char *q = p + nlen;
                    int micro = 0, digits = 0;
                    while (q < end && isdigit((unsigned char)*q) && digits < 3)
                        micro = micro * 10 + (*q++ - '0'), digits++;
                    if (digits > 0 && q < end && *q == '\0') found = PY_HEX(3, minor, micro);
                    p += 1;
                }
            }
            munmap((void *)data, (size_t)st.st_size);
        }
    }
    close(fd);
    return found;
}

/* guess_allowed: when no exact version is found, assume the file name's minor (X.Y.0). */
static int detect_version(struct py_proc *p, const struct candidate *c, uint64_t bias,
                          bool guess_allowed, struct cp_err *err)
{
    char cookie[8];
    if (mem_read(&p->mem, p->runtime_addr, cookie, sizeof cookie) < 0) {
        pyproc_read_error(p, errno, "_PyRuntime", err);
        return -1;
    }
    if (memcmp(cookie, "xdebugpy", 8) == 0)
        return py_offsets_from_debug(&p->mem, p->runtime_addr, &p->off, &p->version_hex, err);

    const struct elf_wanted_symbol *ver = &c->syms[SYM_VERSION];
    uint64_t hex = 0;
    if (ver->found && mem_read(&p->mem, bias + ver->value, &hex, sizeof hex) == 0 &&
        (hex >> 24) == 3) {
        p->version_hex = (uint32_t)hex;
    } else {
        int minor = minor_from_name(c->map->path);
        p->version_hex = version_from_bss(p, &c->elf, bias, minor);
        if (!p->version_hex) p->version_hex = version_from_file_bytes(p, c, minor);
        if (!p->version_hex && minor >= 0 && !guess_allowed) {
            /* sys.version is written a little after the interpreter appears: starting */
            cp_err_set(err, CP_ERR_NOTPYTHON,
                       "the Python interpreter of process %d is starting (no version text yet)",
                       (int)p->pid);
            return -1;
        }
        if (!p->version_hex && minor >= 0)
            p->version_hex = PY_HEX(3, minor, 0); /* the micro is unknown: the minor's table */
        if (!p->version_hex) {
            cp_err_set(err, CP_ERR_NOTPYTHON,
                       "cannot tell the Python version of process %d: no Py_Version symbol, no "
                       "version string and no version in the file name %s",
                       (int)p->pid, c->map->path);
            return -1;
        }
    }
    const struct py_offsets *off = py_offsets_for_version(p->version_hex);
    if (!off) {
        char v[24];
        cp_err_set(err, CP_ERR_UNSUPPORTED,
                   "Python %s (process %d) is not supported: conprof reads CPython 3.7.4 to 3.13",
                   py_version_str(p->version_hex, v, sizeof v), (int)p->pid);
        return -1;
    }
    p->off = *off;
    return 0;
}

int pyproc_read_interp(struct py_proc *p, struct cp_err *err)
{
    uint64_t interp = 0;
    if (mem_read_u64(&p->mem, p->runtime_addr + (uint64_t)p->off.runtime_interpreters_head,
                     &interp) < 0) {
        pyproc_read_error(p, errno, "_PyRuntime.interpreters.head", err);
        return -1;
    }
    if (!interp) {
        cp_err_set(err, CP_ERR_NOTPYTHON,
                   "the Python interpreter of process %d is not initialized (starting or exiting)",
                   (int)p->pid);
        return -1;
    }
    uint64_t tstate = 0, back = 0;
    if (mem_read_u64(&p->mem, interp + (uint64_t)p->off.interp_tstate_head, &tstate) < 0) {
        pyproc_read_error(p, errno, "the interpreter state", err);
        return -1;
    }
    if (tstate && (mem_read_u64(&p->mem, tstate + (uint64_t)p->off.tstate_interp, &back) < 0 ||
                   back != interp)) {
        cp_err_set(err, CP_ERR_UNSUPPORTED,
                   "Python %s in process %d does not have the memory layout conprof expects for "
                   "this version (a custom or debug build?)",
                   p->version, (int)p->pid);
        return -1;
    }
    p->interp_addr = interp;
    return 0;
}

static int find_interpreter_file(struct py_proc *p, const struct proc_maps *maps,
                                 struct candidate *c, struct cp_err *err)
{
    char exe[PATH_MAX], link[64];
    ssize_t n = procfs_readlink(p->procfd, procfs_path(link, sizeof link, "%d/exe", (int)p->pid),
                                exe, sizeof exe - 1);
    if (n < 0) {
        if (errno == EACCES || errno == EPERM) {
            pyproc_read_error(p, errno, "/proc/PID/exe", err);
            return -1;
        }
        exe[0] = '\0';
    } else {
        exe[n] = '\0';
        char *del = strstr(exe, " (deleted)");
        if (del && del[10] == '\0') *del = '\0';
    }
    /* libpython first, then the executable */
    const struct proc_map *lib = NULL, *exe_map = NULL;
    for (size_t i = 0; i < maps->count && !lib; i++)
        if (is_libpython(maps->maps[i].path)) lib = first_mapping_of(maps, maps->maps[i].path);
    if (exe[0]) exe_map = first_mapping_of(maps, exe);
    struct cp_err lib_err = {0};
    if (lib && load_candidate(p, lib, false, c, &lib_err) == 0 && c->syms[SYM_RUNTIME].found) {
        p->shared_libpython = true;
        return 0;
    }
    if (exe_map && load_candidate(p, exe_map, true, c, err) == 0 && c->syms[SYM_RUNTIME].found)
        return 0;
    if (lib || exe_map) { /* a Python we cannot read: an old or future version? */
        const struct proc_map *named = lib ? lib : exe_map;
        int minor = minor_from_name(named->path);
        if (minor >= 0 && (minor < 7 || minor > 13)) {
            uint32_t hex = 0;
            uint64_t bias;
            if (load_candidate(p, named, named == exe_map, c, &lib_err) == 0 &&
                elf_symbols_load_bias(&c->elf, named, &bias) == 0)
                hex = version_from_bss(p, &c->elf, bias, minor);
            char v[24];
            if (hex)
                py_version_str(hex, v, sizeof v);
            else
                snprintf(v, sizeof v, "3.%d", minor);
            cp_err_set(err, CP_ERR_UNSUPPORTED,
                       "Python %s (process %d, %s) is not supported: conprof reads CPython 3.7.4 "
                       "to 3.13",
                       v, (int)p->pid, named->path);
            return -1;
        }
    }
    char comm[64];
    comm_of(p->procfd, p->pid, comm, sizeof comm);
    cp_err_set(err, CP_ERR_NOTPYTHON,
               "process %d (%s) is not a Python process conprof can read: looked for a "
               "libpython3*.so mapping and for the _PyRuntime symbol in %s%s%s",
               (int)p->pid, comm, lib ? lib->path : "its executable", lib ? " and in " : "",
               lib ? (exe[0] ? exe : "the executable") : (exe[0] ? exe : ""));
    return -1;
}

int pyproc_attach(pid_t pid, struct py_proc *p, struct cp_err *err)
{
    return pyproc_attach_at(PROCFS_DEFAULT, pid, p, err);
}

static int attach(int procfd, pid_t pid, bool guess_allowed, struct py_proc *p,
                  struct cp_err *err);

int pyproc_attach_at(int procfd, pid_t pid, struct py_proc *p, struct cp_err *err)
{
    return attach(procfd, pid, true, p, err);
}

static int attach(int procfd, pid_t pid, bool guess_allowed, struct py_proc *p,
                  struct cp_err *err)
{
    memset(p, 0, sizeof *p);
    p->pid = pid;
    p->procfd = procfd;
    procmem_init(&p->procmem, pid, &p->mem);
    char state;
    if (pid <= 0 || read_stat(procfd, pid, &p->start_time, &state) < 0 || state == 'Z') {
        cp_err_set(err, CP_ERR_NOPROC, "no process with pid %d", (int)pid);
        return -1;
    }
    p->nspid = read_nspid(procfd, pid);
    p->same_mntns = same_mount_ns(procfd, pid);
    struct proc_maps maps = {0};
    if (proc_maps_read_at(procfd, pid, &maps, err) < 0) return -1;
    struct candidate *c = malloc(sizeof *c);
    int rc = -1;
    if (!c) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (find_interpreter_file(p, &maps, c, err) < 0) goto out;
    uint64_t bias;
    if (elf_symbols_load_bias(&c->elf, c->map, &bias) < 0) {
        cp_err_set(err, CP_ERR_NOTPYTHON, "cannot place %s in the memory of process %d",
                   c->map->path, (int)pid);
        goto out;
    }
    snprintf(p->binary, sizeof p->binary, "%s", c->map->path);
    p->runtime_addr = bias + c->syms[SYM_RUNTIME].value;
    p->none_addr = c->syms[SYM_NONE].found ? bias + c->syms[SYM_NONE].value : 0;
    p->code_type_addr = c->syms[SYM_CODE_TYPE].found ? bias + c->syms[SYM_CODE_TYPE].value : 0;
    if (detect_version(p, c, bias, guess_allowed, err) < 0) goto out;
    py_version_str(p->version_hex, p->version, sizeof p->version);
    rc = pyproc_read_interp(p, err);
out:
    free(c);
    proc_maps_free(&maps);
    return rc;
}

int pyproc_attach_wait(int procfd, pid_t pid, int timeout_ms, struct py_proc *p, struct cp_err *err)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        bool last = elapsed >= timeout_ms;
        if (attach(procfd, pid, last, p, err) == 0) return 0;
        if (err->code != CP_ERR_NOTPYTHON || last) return -1;
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        nanosleep(&ten_ms, NULL);
    }
}

bool pyproc_alive(const struct py_proc *p)
{
    uint64_t start;
    char state;
    return read_stat(p->procfd, p->pid, &start, &state) == 0 && start == p->start_time &&
           state != 'Z';
}
