/* proc_maps: a bounded parser for the kernel's /proc/PID/maps text.
 *
 * A line is "start-end perms offset major:minor inode [path]" with hex numbers (decimal inode);
 * the path starts after the run of spaces that follows the inode and runs to the end of the line,
 * so it may hold spaces. Every number is limited to 16 hex digits (20 decimal digits, checked for
 * overflow, for the inode); a line that does not parse or is longer than 4 KiB is skipped and
 * counted, never guessed at.
 *
 * The kernel prints mappings sorted by address and disjoint; a line that starts before the end of
 * the previous kept one (possible when the process remaps between our reads, or in crafted text)
 * is skipped too, so the result is always sorted and disjoint and proc_maps_find() can bisect.
 */
#include "proc_maps.h"

#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAPS_MAX_LINE 4096
#define MAPS_MAX_FILE (4u << 20)
#define MAPS_READ_CHUNK (64u << 10)
#define DELETED_SUFFIX " (deleted)"

enum line_result { LINE_OK, LINE_BAD, LINE_NOMEM };

/* A cursor over one line: [p, end). */
struct cursor {
    const char *p, *end;
};

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* 1..max hex digits; more than max is an error (the value would not fit or is not the kernel's). */
static bool take_hex(struct cursor *c, unsigned max, uint64_t *out)
{
    uint64_t v = 0;
    unsigned n = 0;
    int d;
    while (c->p < c->end && (d = hex_digit(*c->p)) >= 0) {
        if (++n > max) return false;
        v = v << 4 | (uint64_t)d;
        c->p++;
    }
    *out = v;
    return n > 0;
}

/* 1..20 decimal digits that fit in 64 bits. */
static bool take_dec(struct cursor *c, uint64_t *out)
{
    uint64_t v = 0;
    unsigned n = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        uint64_t d = (uint64_t)(*c->p - '0');
        if (++n > 20 || v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
        c->p++;
    }
    *out = v;
    return n > 0;
}

static bool take_char(struct cursor *c, char want)
{
    if (c->p >= c->end || *c->p != want) return false;
    c->p++;
    return true;
}

/* One permission letter: `yes` or '-' ("p" or "s" in the last column). */
static bool take_perm(struct cursor *c, char yes, char no, bool *out)
{
    if (c->p >= c->end || (*c->p != yes && *c->p != no)) return false;
    *out = *c->p == yes;
    c->p++;
    return true;
}

static bool take_header(struct cursor *c, struct proc_map *m)
{
    uint64_t major, minor;
    bool ok = take_hex(c, 16, &m->start) && take_char(c, '-') && take_hex(c, 16, &m->end) &&
              take_char(c, ' ') && take_perm(c, 'r', '-', &m->r) && take_perm(c, 'w', '-', &m->w) &&
              take_perm(c, 'x', '-', &m->x) && take_perm(c, 'p', 's', &m->p) && take_char(c, ' ') &&
              take_hex(c, 16, &m->offset) && take_char(c, ' ') && take_hex(c, 8, &major) &&
              take_char(c, ':') && take_hex(c, 8, &minor) && take_char(c, ' ') &&
              take_dec(c, &m->inode);
    if (!ok || m->end <= m->start || (c->p < c->end && *c->p != ' ')) return false;
    m->dev_major = (uint32_t)major;
    m->dev_minor = (uint32_t)minor;
    return true;
}

static enum line_result parse_line(const char *line, const char *end, struct proc_map *m)
{
    struct cursor c = {line, end};
    memset(m, 0, sizeof *m);
    if (!take_header(&c, m)) return LINE_BAD;
    while (c.p < c.end && *c.p == ' ')
        c.p++;
    size_t len = (size_t)(c.end - c.p);
    size_t suffix = sizeof DELETED_SUFFIX - 1;
    if (len >= suffix && memcmp(c.end - suffix, DELETED_SUFFIX, suffix) == 0) {
        m->deleted = true;
        len -= suffix;
    }
    m->path = malloc(len + 1);
    if (!m->path) return LINE_NOMEM;
    memcpy(m->path, c.p, len);
    m->path[len] = '\0';
    return LINE_OK;
}

static bool append_map(struct proc_maps *out, size_t *cap, const struct proc_map *m)
{
    if (out->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct proc_map *maps = realloc(out->maps, ncap * sizeof *maps);
        if (!maps) return false;
        out->maps = maps;
        *cap = ncap;
    }
    out->maps[out->count++] = *m;
    return true;
}

static bool keeps_order(const struct proc_maps *out, const struct proc_map *m)
{
    return out->count == 0 || m->start >= out->maps[out->count - 1].end;
}

int proc_maps_parse(const char *text, size_t len, struct proc_maps *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        struct proc_map m;
        enum line_result r = line_end - p > MAPS_MAX_LINE ? LINE_BAD : parse_line(p, line_end, &m);
        if (r == LINE_OK && !keeps_order(out, &m)) {
            free(m.path);
            r = LINE_BAD;
        }
        if (r == LINE_OK && !append_map(out, &cap, &m)) {
            free(m.path);
            r = LINE_NOMEM;
        }
        if (r == LINE_NOMEM) {
            proc_maps_free(out);
            cp_err_set(err, CP_ERR_NOMEM, "out of memory parsing /proc maps");
            return -1;
        }
        if (r == LINE_BAD && line_end > p) out->skipped++;
        p = nl ? nl + 1 : end;
    }
    return 0;
}

static void set_errno_error(struct cp_err *err, int e, pid_t pid, const char *path, const char *op)
{
    if (e == ENOENT || e == ESRCH)
        cp_err_set(err, CP_ERR_NOPROC, "no process with pid %d", (int)pid);
    else if (e == EACCES || e == EPERM)
        cp_err_set(err, CP_ERR_PERM,
                   "cannot %s %s: permission denied; run as the process's user or with "
                   "CAP_SYS_PTRACE",
                   op, path);
    else
        cp_err_set(err, CP_ERR_IO, "cannot %s %s: %s", op, path, strerror(e));
}

/* Reads the whole file into a malloc'd buffer (pread loop, at most MAPS_MAX_FILE bytes). */
static char *read_whole(int fd, pid_t pid, const char *path, size_t *len, struct cp_err *err)
{
    size_t cap = MAPS_READ_CHUNK;
    char *text = malloc(cap);
    *len = 0;
    for (;;) {
        if (!text) {
            cp_err_set(err, CP_ERR_NOMEM, "out of memory reading %s", path);
            return NULL;
        }
        if (*len == cap) {
            if (cap >= MAPS_MAX_FILE) {
                cp_err_set(err, CP_ERR_NOMEM, "%s is larger than %u MiB", path,
                           MAPS_MAX_FILE >> 20);
                free(text);
                return NULL;
            }
            char *bigger = realloc(text, cap * 2);
            if (!bigger) free(text);
            text = bigger;
            cap *= 2;
            continue;
        }
        ssize_t n = pread(fd, text + *len, cap - *len, (off_t)*len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            set_errno_error(err, errno, pid, path, "read");
            free(text);
            return NULL;
        }
        if (n == 0) return text;
        *len += (size_t)n;
    }
}

int proc_maps_read(pid_t pid, struct proc_maps *out, struct cp_err *err)
{
    return proc_maps_read_at(PROCFS_DEFAULT, pid, out, err);
}

int proc_maps_read_at(int procfd, pid_t pid, struct proc_maps *out, struct cp_err *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    memset(out, 0, sizeof *out);
    if (pid <= 0) {
        cp_err_set(err, CP_ERR_NOPROC, "no process with pid %d", (int)pid);
        return -1;
    }
    char rel[32];
    int fd = procfs_open(procfd, procfs_path(rel, sizeof rel, "%d/maps", (int)pid), O_RDONLY);
    if (fd < 0) {
        set_errno_error(err, errno, pid, path, "open");
        return -1;
    }
    size_t len;
    char *text = read_whole(fd, pid, path, &len, err);
    close(fd);
    if (!text) return -1;
    int rc = proc_maps_parse(text, len, out, err);
    free(text);
    return rc;
}

void proc_maps_free(struct proc_maps *m)
{
    for (size_t i = 0; i < m->count; i++)
        free(m->maps[i].path);
    free(m->maps);
    memset(m, 0, sizeof *m);
}

const struct proc_map *proc_maps_find(const struct proc_maps *m, uint64_t addr)
{
    size_t lo = 0, hi = m->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct proc_map *p = &m->maps[mid];
        if (addr < p->start)
            hi = mid;
        else if (addr >= p->end)
            lo = mid + 1;
        else
            return p;
    }
    return NULL;
}
