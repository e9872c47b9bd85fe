/* proc_maps: a bounded parser for the kernel's /proc/PID/maps text.
 *
 * A line is "start-end perms offset major:minor inode [path]" with hex numbers; the path starts
 * after the run of spaces that follows the inode and runs to the end of the line (it may hold
 * spaces). Every number is limited to 16 hex digits (20 decimal for the inode); a line that does
 * not parse, or is longer than 4 KiB, is skipped and counted, never guessed at.
 */
#include "proc_maps.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAPS_MAX_LINE 4096
#define MAPS_MAX_FILE (4u << 20)
#define DELETED_SUFFIX " (deleted)"

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses hex digits at *p (1..max of them) up to end; advances *p. */
static bool parse_hex(const char **p, const char *end, unsigned max, uint64_t *out)
{
    uint64_t v = 0;
    unsigned n = 0;
    int d;
    while (*p < end && (d = hex_digit(**p)) >= 0) {
        if (++n > max)
            return false;
        v = v << 4 | (uint64_t)d;
        (*p)++;
    }
    *out = v;
    return n > 0;
}

static bool parse_dec(const char **p, const char *end, unsigned max, uint64_t *out)
{
    uint64_t v = 0;
    unsigned n = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (++n > max)
            return false;
        v = v * 10 + (uint64_t)(**p - '0');
        (*p)++;
    }
    *out = v;
    return n > 0;
}

static bool expect(const char **p, const char *end, char c)
{
    if (*p >= end || **p != c)
        return false;
    (*p)++;
    return true;
}

static bool parse_perm(const char **p, const char *end, char yes, bool *out)
{
    if (*p >= end || (**p != yes && **p != '-' && !(yes == 'p' && **p == 's')))
        return false;
    *out = **p == yes;
    (*p)++;
    return true;
}

static bool parse_line(const char *p, const char *end, struct proc_map *m)
{
    uint64_t major, minor;
    memset(m, 0, sizeof *m);
    if (!parse_hex(&p, end, 16, &m->start) || !expect(&p, end, '-') ||
        !parse_hex(&p, end, 16, &m->end) || !expect(&p, end, ' ') ||
        !parse_perm(&p, end, 'r', &m->r) || !parse_perm(&p, end, 'w', &m->w) ||
        !parse_perm(&p, end, 'x', &m->x) || !parse_perm(&p, end, 'p', &m->p) ||
        !expect(&p, end, ' ') || !parse_hex(&p, end, 16, &m->offset) || !expect(&p, end, ' ') ||
        !parse_hex(&p, end, 8, &major) || !expect(&p, end, ':') ||
        !parse_hex(&p, end, 8, &minor) || !expect(&p, end, ' ') ||
        !parse_dec(&p, end, 20, &m->inode) || m->end < m->start)
        return false;
    m->dev_major = (uint32_t)major;
    m->dev_minor = (uint32_t)minor;
    while (p < end && *p == ' ')
        p++;
    size_t len = (size_t)(end - p);
    size_t slen = strlen(DELETED_SUFFIX);
    if (len >= slen && memcmp(end - slen, DELETED_SUFFIX, slen) == 0) {
        m->deleted = true;
        len -= slen;
    }
    m->path = malloc(len + 1);
    if (!m->path)
        return false;
    memcpy(m->path, p, len);
    m->path[len] = '\0';
    return true;
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
        if (line_end - p > MAPS_MAX_LINE || !parse_line(p, line_end, &m)) {
            if (line_end > p)
                out->skipped++;
        } else {
            if (out->count == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                struct proc_map *maps = realloc(out->maps, ncap * sizeof *maps);
                if (!maps) {
                    free(m.path);
                    proc_maps_free(out);
                    cp_err_set(err, CP_ERR_NOMEM, "out of memory parsing /proc maps");
                    return -1;
                }
                out->maps = maps;
                cap = ncap;
            }
            out->maps[out->count++] = m;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

int proc_maps_read(pid_t pid, struct proc_maps *out, struct cp_err *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ESRCH)
            cp_err_set(err, CP_ERR_NOPROC, "no process with pid %d", (int)pid);
        else if (errno == EACCES || errno == EPERM)
            cp_err_set(err, CP_ERR_PERM,
                       "cannot read %s: permission denied; run as the process's user or with "
                       "CAP_SYS_PTRACE",
                       path);
        else
            cp_err_set(err, CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 64 * 1024, len = 0;
    char *text = malloc(cap);
    int rc = -1;
    while (text) {
        if (len == cap) {
            if (cap >= MAPS_MAX_FILE)
                break; /* parse what we have: the bound */
            char *t = realloc(text, cap * 2);
            if (!t)
                break;
            text = t;
            cap *= 2;
        }
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cp_err_set(err, errno == ESRCH ? CP_ERR_NOPROC : CP_ERR_IO, "cannot read %s: %s",
                       path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (!text) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory reading %s", path);
        goto out;
    }
    rc = proc_maps_parse(text, len, out, err);
out:
    free(text);
    close(fd);
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
