/* cgroup: container identity from /proc/PID/cgroup.
 *
 * A path is split into components and read from the innermost one outwards: the first
 * component that names a container decides (a runtime's ".scope" or "<runtime>-<hexid>" name,
 * a hex id under "docker", or any id under a cgroupfs "pod<uid>" cgroup of kubepods), and a
 * conmon monitor cgroup stops the walk (conmon is the runtime's helper, not the workload). The
 * pod UID is then looked for among the container's ancestors, and only below a "kubepods"
 * component, so a random "pod..." directory elsewhere is not mistaken for a pod. Nothing is
 * matched with regular expressions: every test is a bounded prefix/suffix/charset check on one
 * component.
 */
#include "cgroup.h"

#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_DEPTH 128 /* deeper paths are not container paths */

struct span {
    const char *s;
    size_t n;
};

enum match { NO_MATCH, CONTAINER, MONITOR };

static bool span_eq(struct span c, const char *lit)
{
    size_t n = strlen(lit);
    return c.n == n && memcmp(c.s, lit, n) == 0;
}

static bool span_starts(struct span c, const char *prefix)
{
    size_t n = strlen(prefix);
    return c.n >= n && memcmp(c.s, prefix, n) == 0;
}

static bool span_ends(struct span c, const char *suffix)
{
    size_t n = strlen(suffix);
    return c.n >= n && memcmp(c.s + c.n - n, suffix, n) == 0;
}

static struct span span_cut(struct span c, size_t head, size_t tail)
{
    return (struct span){c.s + head, c.n - head - tail};
}

static bool is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool is_id_char(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           ch == '_' || ch == '-' || ch == '.';
}

static bool valid_hex_id(struct span c)
{
    if (c.n < 12 || c.n > 64) return false;
    for (size_t i = 0; i < c.n; i++)
        if (!is_hex(c.s[i])) return false;
    return true;
}

static bool valid_given_id(struct span c)
{
    if (c.n < 1 || c.n > CGROUP_ID_MAX || span_eq(c, ".") || span_eq(c, "..")) return false;
    for (size_t i = 0; i < c.n; i++)
        if (!is_id_char(c.s[i])) return false;
    return true;
}

static bool valid_pod_uid(struct span c)
{
    if (c.n < 8 || c.n > CGROUP_POD_UID_MAX) return false;
    for (size_t i = 0; i < c.n; i++)
        if (!is_hex(c.s[i]) && c.s[i] != '-' && c.s[i] != '_') return false;
    return true;
}

static const struct {
    const char *prefix;
    const char *monitor; /* the runtime's conmon cgroup, NULL if none */
    const char *runtime;
} SCOPED[] = {
    {"cri-containerd-", NULL, "containerd"},
    {"crio-", "crio-conmon-", "cri-o"},
    {"docker-", NULL, "docker"},
    {"libpod-", "libpod-conmon-", "podman"},
};

/* "<prefix><id>.scope" (id as given) or "<prefix><hexid>". */
static enum match match_scoped(struct span c, const char **runtime, struct span *id)
{
    for (size_t i = 0; i < sizeof SCOPED / sizeof SCOPED[0]; i++) {
        if (SCOPED[i].monitor && span_starts(c, SCOPED[i].monitor)) return MONITOR;
        if (!span_starts(c, SCOPED[i].prefix)) continue;
        size_t head = strlen(SCOPED[i].prefix);
        bool scope = span_ends(c, ".scope") && c.n > head + 6;
        struct span rest = span_cut(c, head, scope ? 6 : 0);
        if (scope ? valid_given_id(rest) : valid_hex_id(rest)) {
            *runtime = SCOPED[i].runtime;
            *id = rest;
            return CONTAINER;
        }
    }
    return NO_MATCH;
}

/* A pod cgroup: "pod<uid>" (cgroupfs) or "...-pod<uid_with_underscores>.slice" (systemd). */
static bool pod_component(struct span c, struct span *uid, bool *cgroupfs)
{
    if (span_ends(c, ".slice")) {
        struct span body = span_cut(c, 0, 6);
        for (size_t i = body.n; i-- > 0;) {
            if (i + 4 <= body.n && memcmp(body.s + i, "-pod", 4) == 0) {
                *uid = span_cut(body, i + 4, 0);
                *cgroupfs = false;
                return valid_pod_uid(*uid);
            }
        }
        return false;
    }
    if (!span_starts(c, "pod")) return false;
    *uid = span_cut(c, 3, 0);
    *cgroupfs = true;
    return valid_pod_uid(*uid);
}

static bool kubepods_at_or_above(const struct span *parts, size_t i)
{
    for (size_t k = 0; k <= i; k++)
        if (parts[k].n >= 8 && memmem(parts[k].s, parts[k].n, "kubepods", 8)) return true;
    return false;
}

/* The nearest pod cgroup among parts[0..i] (and below kubepods), or false. */
static bool find_pod(const struct span *parts, size_t i, struct span *uid, bool *cgroupfs)
{
    for (size_t k = i + 1; k-- > 0;)
        if (pod_component(parts[k], uid, cgroupfs) && kubepods_at_or_above(parts, k)) return true;
    return false;
}

static void copy_span(char *dst, size_t size, struct span s)
{
    size_t n = s.n < size - 1 ? s.n : size - 1;
    memcpy(dst, s.s, n);
    dst[n] = '\0';
}

static void set_pod_uid(struct cgroup_info *out, struct span uid)
{
    copy_span(out->pod_uid, sizeof out->pod_uid, uid);
    for (char *p = out->pod_uid; *p; p++)
        if (*p == '_') *p = '-';
}

/* Splits on '/', skipping empty components; returns the count, or MAX_DEPTH + 1 if deeper. */
static size_t split_path(const char *path, size_t len, struct span *parts)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && path[i] != '/') continue;
        if (i > start) {
            if (n == MAX_DEPTH) return MAX_DEPTH + 1;
            parts[n++] = (struct span){path + start, i - start};
        }
        start = i + 1;
    }
    return n;
}

/* The container named by parts[i], if any. */
static enum match container_at(const struct span *parts, size_t i, const char **runtime,
                               struct span *id)
{
    enum match m = match_scoped(parts[i], runtime, id);
    if (m != NO_MATCH || i == 0) return m;
    if (span_eq(parts[i - 1], "docker") && valid_hex_id(parts[i])) {
        *runtime = "docker";
        *id = parts[i];
        return CONTAINER;
    }
    struct span uid;
    bool cgroupfs = false;
    if (pod_component(parts[i - 1], &uid, &cgroupfs) && cgroupfs &&
        kubepods_at_or_above(parts, i - 1) && valid_given_id(parts[i])) {
        *runtime = "";
        *id = parts[i];
        return CONTAINER;
    }
    return NO_MATCH;
}

bool cgroup_classify_path(const char *path, size_t len, struct cgroup_info *out)
{
    memset(out, 0, sizeof *out);
    copy_span(out->path, sizeof out->path, (struct span){path, len});
    struct span parts[MAX_DEPTH];
    size_t n = split_path(path, len, parts);
    if (n > MAX_DEPTH) return false;
    for (size_t i = n; i-- > 0;) {
        const char *runtime = "";
        struct span id = {0};
        enum match m = container_at(parts, i, &runtime, &id);
        if (m == MONITOR) return false;
        if (m == NO_MATCH) continue;
        copy_span(out->runtime, sizeof out->runtime, (struct span){runtime, strlen(runtime)});
        copy_span(out->container_id, sizeof out->container_id, id);
        struct span uid;
        bool cgroupfs;
        if (i > 0 && find_pod(parts, i - 1, &uid, &cgroupfs)) set_pod_uid(out, uid);
        return true;
    }
    return false;
}

enum line_kind { LINE_V2, LINE_SYSTEMD, LINE_CPU, LINE_KINDS, LINE_OTHER = LINE_KINDS };

static bool list_has(struct span list, const char *name)
{
    size_t start = 0;
    for (size_t i = 0; i <= list.n; i++) {
        if (i < list.n && list.s[i] != ',') continue;
        if (span_eq((struct span){list.s + start, i - start}, name)) return true;
        start = i + 1;
    }
    return false;
}

/* "hierarchy-id:controllers:path"; false for a malformed line. */
static bool parse_line(struct span line, enum line_kind *kind, struct span *path)
{
    if (memchr(line.s, '\0', line.n)) return false;
    const char *c1 = memchr(line.s, ':', line.n);
    if (!c1 || c1 == line.s || c1 - line.s > 10) return false;
    for (const char *p = line.s; p < c1; p++)
        if (*p < '0' || *p > '9') return false;
    const char *end = line.s + line.n;
    const char *c2 = memchr(c1 + 1, ':', (size_t)(end - c1 - 1));
    if (!c2) return false;
    struct span id = {line.s, (size_t)(c1 - line.s)};
    struct span controllers = {c1 + 1, (size_t)(c2 - c1 - 1)};
    *path = (struct span){c2 + 1, (size_t)(end - c2 - 1)};
    if (span_eq(id, "0") && controllers.n == 0)
        *kind = LINE_V2;
    else if (list_has(controllers, "name=systemd"))
        *kind = LINE_SYSTEMD;
    else if (list_has(controllers, "cpu"))
        *kind = LINE_CPU;
    else
        *kind = LINE_OTHER;
    return true;
}

void cgroup_parse(const char *text, size_t len, struct cgroup_info *out)
{
    memset(out, 0, sizeof *out);
    bool cut = len > CGROUP_TEXT_MAX;
    if (cut) len = CGROUP_TEXT_MAX;
    struct span found[LINE_KINDS] = {{0}};
    bool have[LINE_KINDS] = {false};
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        if (!nl && cut) break; /* the line the bound cut */
        size_t n = nl ? (size_t)(nl - text) - pos : len - pos;
        struct span line = {text + pos, n}, path;
        pos += n + 1;
        enum line_kind kind;
        if (n >= CGROUP_LINE_MAX || !parse_line(line, &kind, &path)) continue;
        if (kind != LINE_OTHER && !have[kind]) {
            found[kind] = path;
            have[kind] = true;
        }
    }
    for (int k = 0; k < LINE_KINDS; k++)
        if (have[k] && cgroup_classify_path(found[k].s, found[k].n, out)) return;
    for (int k = 0; k < LINE_KINDS; k++) {
        if (!have[k]) continue;
        cgroup_classify_path(found[k].s, found[k].n, out); /* host: only the path is kept */
        memset(out->runtime, 0, sizeof out->runtime);
        memset(out->container_id, 0, sizeof out->container_id);
        memset(out->pod_uid, 0, sizeof out->pod_uid);
        return;
    }
}

int cgroup_read(int procfd, pid_t pid, struct cgroup_info *out, struct cp_err *err)
{
    char rel[64];
    int fd = procfs_open(procfd, procfs_path(rel, sizeof rel, "%d/cgroup", (int)pid), O_RDONLY);
    if (fd < 0) {
        int e = errno;
        cp_err_set(err,
                   e == ENOENT || e == ESRCH ? CP_ERR_NOPROC
                   : e == EACCES             ? CP_ERR_PERM
                                             : CP_ERR_IO,
                   "cannot open /proc/%d/cgroup: %s", (int)pid, strerror(e));
        return -1;
    }
    char *buf = malloc(CGROUP_TEXT_MAX + 1);
    if (!buf) {
        close(fd);
        cp_err_set(err, CP_ERR_NOMEM, "out of memory reading /proc/%d/cgroup", (int)pid);
        return -1;
    }
    size_t len = 0;
    ssize_t n = 0;
    while (len < CGROUP_TEXT_MAX + 1 && (n = read(fd, buf + len, CGROUP_TEXT_MAX + 1 - len)) > 0)
        len += (size_t)n;
    int e = errno;
    close(fd);
    if (n < 0) {
        free(buf);
        cp_err_set(err, e == ESRCH ? CP_ERR_NOPROC : CP_ERR_IO, "cannot read /proc/%d/cgroup: %s",
                   (int)pid, strerror(e));
        return -1;
    }
    cgroup_parse(buf, len, out);
    free(buf);
    return 0;
}
