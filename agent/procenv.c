/* procenv: environment variables and the script name of a process.
 *
 * The environment block is walked once, entry by entry, with memchr on the NUL separators; only
 * the six names we want are compared, so a 256 KiB block costs one pass. The command line is
 * read the way CPython's own option parser reads it (short options may be clustered, -W and -X
 * take an argument attached or in the next word, -c and -m end the options), which is all it
 * takes to find the script without running anything.
 */
#include "procenv.h"

#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct span {
    const char *s;
    size_t n;
};

static const struct {
    const char *name;
    size_t offset;
} VARS[] = {
    {"PLATFORM_PROJECT", offsetof(struct procenv, project)},
    {"PLATFORM_ENVIRONMENT", offsetof(struct procenv, environment)},
    {"PLATFORM_APPLICATION_NAME", offsetof(struct procenv, platform_app)},
    {"CONPROF_APP_NAME", offsetof(struct procenv, conprof_app)},
    {"BLACKFIRE_CONPROF_APP_NAME", offsetof(struct procenv, blackfire_app)},
    {"OTEL_SERVICE_NAME", offsetof(struct procenv, otel_service)},
};
#define NVARS (sizeof VARS / sizeof VARS[0])

static void copy_span(char *dst, size_t size, struct span s)
{
    size_t n = s.n < size - 1 ? s.n : size - 1;
    memcpy(dst, s.s, n);
    dst[n] = '\0';
}

static void keep_entry(struct span entry, struct procenv *out, bool *seen)
{
    const char *eq = memchr(entry.s, '=', entry.n);
    if (!eq) return;
    size_t name_len = (size_t)(eq - entry.s);
    struct span value = {eq + 1, entry.n - name_len - 1};
    for (size_t i = 0; i < NVARS; i++) {
        if (seen[i] || strlen(VARS[i].name) != name_len ||
            memcmp(VARS[i].name, entry.s, name_len) != 0)
            continue;
        seen[i] = true; /* the first occurrence wins, even an empty one */
        if (value.n > 0 && value.n < PROCENV_VALUE_MAX)
            copy_span((char *)out + VARS[i].offset, PROCENV_VALUE_MAX, value);
        return;
    }
}

void procenv_parse(const char *text, size_t len, struct procenv *out)
{
    memset(out, 0, sizeof *out);
    bool cut = len > PROCENV_TEXT_MAX;
    if (cut) len = PROCENV_TEXT_MAX;
    bool seen[NVARS] = {false};
    for (size_t pos = 0; pos < len;) {
        const char *nul = memchr(text + pos, '\0', len - pos);
        if (!nul && cut) break; /* the entry the bound cut */
        size_t n = nul ? (size_t)(nul - text) - pos : len - pos;
        keep_entry((struct span){text + pos, n}, out, seen);
        pos += n + 1;
    }
}

int procenv_read(int procfd, pid_t pid, struct procenv *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    char rel[64];
    int fd = procfs_open(procfd, procfs_path(rel, sizeof rel, "%d/environ", (int)pid), O_RDONLY);
    if (fd < 0) {
        int e = errno;
        cp_err_set(err,
                   e == ENOENT || e == ESRCH   ? CP_ERR_NOPROC
                   : e == EACCES || e == EPERM ? CP_ERR_PERM
                                               : CP_ERR_IO,
                   "cannot open /proc/%d/environ: %s%s", (int)pid, strerror(e),
                   e == EACCES || e == EPERM ? " (another user's process: run as that user or "
                                               "with CAP_SYS_PTRACE)"
                                             : "");
        return -1;
    }
    char *buf = malloc(PROCENV_TEXT_MAX + 1);
    if (!buf) {
        close(fd);
        cp_err_set(err, CP_ERR_NOMEM, "out of memory reading /proc/%d/environ", (int)pid);
        return -1;
    }
    size_t len = 0;
    ssize_t n = 0;
    while (len < PROCENV_TEXT_MAX + 1 && (n = read(fd, buf + len, PROCENV_TEXT_MAX + 1 - len)) > 0)
        len += (size_t)n;
    int e = errno;
    close(fd);
    if (n < 0) {
        free(buf);
        cp_err_set(err,
                   e == ESRCH    ? CP_ERR_NOPROC
                   : e == EACCES ? CP_ERR_PERM
                                 : CP_ERR_IO,
                   "cannot read /proc/%d/environ: %s", (int)pid, strerror(e));
        return -1;
    }
    procenv_parse(buf, len, out);
    free(buf);
    return 0;
}

bool procenv_is_python_name(const char *name, size_t len)
{
    if (len < 6 || memcmp(name, "python", 6) != 0) return false;
    size_t i = 6;
    if (i == len) return true;
    if (name[i++] != '3') return false;
    if (i < len && name[i] == '.') {
        size_t digits = 0;
        for (i++; i < len && name[i] >= '0' && name[i] <= '9' && digits < 3; i++)
            digits++;
        if (digits == 0) return false;
    }
    for (size_t suffix = 0; i < len; i++, suffix++)
        if (suffix == 3 || name[i] < 'a' || name[i] > 'z') return false;
    return true;
}

static struct span base_name(struct span path)
{
    for (size_t i = path.n; i-- > 0;)
        if (path.s[i] == '/') return (struct span){path.s + i + 1, path.n - i - 1};
    return path;
}

/* The next NUL-separated word at *pos, or false at the end. */
static bool next_word(const char *text, size_t len, size_t *pos, struct span *word)
{
    if (*pos >= len) return false;
    const char *nul = memchr(text + *pos, '\0', len - *pos);
    size_t n = nul ? (size_t)(nul - text) - *pos : len - *pos;
    *word = (struct span){text + *pos, n};
    *pos += n + 1;
    return true;
}

static bool emit(struct span s, bool strip_py, char *out, size_t size)
{
    if (strip_py && s.n > 3 && memcmp(s.s + s.n - 3, ".py", 3) == 0) s.n -= 3;
    if (s.n == 0 || memchr(s.s, '\0', s.n)) return false;
    copy_span(out, size, s);
    return true;
}

enum cluster { NEXT_WORD, SKIP_ARG, NO_SCRIPT, MODULE_ATTACHED, MODULE_NEXT };

/* One word of short options ("-u", "-OO", "-Wignore", "-um", "-c"). */
static enum cluster short_options(struct span w, size_t *attached)
{
    for (size_t j = 1; j < w.n; j++) {
        char ch = w.s[j];
        if (ch == 'c') return NO_SCRIPT;
        if (ch == 'm' || ch == 'W' || ch == 'X') {
            *attached = j + 1;
            if (ch != 'm') return j + 1 < w.n ? NEXT_WORD : SKIP_ARG;
            return j + 1 < w.n ? MODULE_ATTACHED : MODULE_NEXT;
        }
    }
    return NEXT_WORD;
}

bool procenv_script_name(const char *cmdline, size_t len, char *out, size_t size)
{
    out[0] = '\0';
    size_t pos = 0;
    struct span w;
    if (!next_word(cmdline, len, &pos, &w)) return false;
    struct span argv0 = base_name(w);
    if (!procenv_is_python_name(argv0.s, argv0.n)) return false;
    while (next_word(cmdline, len, &pos, &w)) {
        if (w.n == 0 || (w.n == 1 && w.s[0] == '-')) return false;
        if (w.s[0] != '-') return emit(base_name(w), true, out, size);
        if (w.n == 2 && w.s[1] == '-')
            return next_word(cmdline, len, &pos, &w) && emit(base_name(w), true, out, size);
        if (w.s[1] == '-') { /* the one long option with an argument in the next word */
            if (w.n == 23 && memcmp(w.s, "--check-hash-based-pycs", 23) == 0)
                next_word(cmdline, len, &pos, &w);
            continue;
        }
        size_t attached = 0;
        switch (short_options(w, &attached)) {
        case NO_SCRIPT:
            return false;
        case MODULE_ATTACHED:
            return emit((struct span){w.s + attached, w.n - attached}, false, out, size);
        case MODULE_NEXT:
            return next_word(cmdline, len, &pos, &w) && emit(w, false, out, size);
        case SKIP_ARG:
            next_word(cmdline, len, &pos, &w);
            break;
        case NEXT_WORD:
            break;
        }
    }
    return false;
}

static bool usable_otel_name(const char *name)
{
    return name[0] && strncmp(name, "containerd-shim", 15) != 0;
}

void procenv_app_name(const struct procenv *env, const char *cmdline, size_t cmdline_len,
                      const char *comm, char *out, size_t size)
{
    const char *from_env = env->conprof_app[0]                   ? env->conprof_app
                           : env->blackfire_app[0]               ? env->blackfire_app
                           : env->platform_app[0]                ? env->platform_app
                           : usable_otel_name(env->otel_service) ? env->otel_service
                                                                 : NULL;
    if (from_env) {
        copy_span(out, size, (struct span){from_env, strlen(from_env)});
        return;
    }
    if (procenv_script_name(cmdline, cmdline_len, out, size)) return;
    copy_span(out, size, (struct span){comm, strlen(comm)});
}
