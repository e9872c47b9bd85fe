/* fileio: bounded whole-file reads and atomic file replacement.
 *
 * Reading: the file is opened O_NONBLOCK (a FIFO put in a file's place cannot block the caller)
 * and fstat'ed, so only regular files are read; the buffer is allocated once at max + 2 bytes and
 * read until end of file or until one byte more than max arrived, which proves the file too
 * large without trusting st_size (files under /proc and growing files lie about it).
 *
 * Atomic write: the classic tmp + fsync + rename + fsync(directory) sequence. "No replace" uses
 * renameat2(RENAME_NOREPLACE), with link + unlink where the file system lacks it. The policies
 * that differ between callers (an exact mode, whether a failed directory sync is an error) are
 * flags, so the sequence itself exists once.
 */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fileio_open_regular(const char *path, bool *missing, struct cp_err *err)
{
    if (missing) *missing = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (missing) *missing = errno == ENOENT;
        cp_err_set(err, CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        cp_err_set(err, CP_ERR_INVALID, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    return fd;
}

char *fileio_read_fd(int fd, const char *path, size_t max, size_t *len, struct cp_err *err)
{
    char *buf = malloc(max + 2);
    if (!buf) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory reading %s", path);
        return NULL;
    }
    size_t used = 0;
    while (used <= max) {
        ssize_t n = read(fd, buf + used, max + 1 - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            cp_err_set(err, CP_ERR_IO, "cannot read %s: %s", path, strerror(errno));
            free(buf);
            return NULL;
        }
        if (n == 0) break;
        used += (size_t)n;
    }
    if (used > max) {
        cp_err_set(err, CP_ERR_INVALID, "%s is larger than %zu bytes", path, max);
        free(buf);
        return NULL;
    }
    buf[used] = '\0';
    *len = used;
    return buf;
}

char *fileio_read_file(const char *path, size_t max, size_t *len, bool *missing, struct cp_err *err)
{
    int fd = fileio_open_regular(path, missing, err);
    if (fd < 0) return NULL;
    char *buf = fileio_read_fd(fd, path, max, len, err);
    close(fd);
    return buf;
}

/* ---- atomic write ---- */

static int write_parts(int fd, const struct iovec *parts, int nparts)
{
    for (int i = 0; i < nparts; i++) {
        const char *p = parts[i].iov_base;
        size_t left = parts[i].iov_len;
        while (left > 0) {
            ssize_t n = write(fd, p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return -1;
            p += n;
            left -= (size_t)n;
        }
    }
    return 0;
}

/* rename without replacing: renameat2(RENAME_NOREPLACE), or link+unlink where unsupported. */
static int rename_noreplace(int dirfd, const char *from, const char *to)
{
    if (renameat2(dirfd, from, dirfd, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    if (linkat(dirfd, from, dirfd, to, 0) < 0) return -1;
    unlinkat(dirfd, from, 0);
    return 0;
}

/* fsync of dirfd, or with AT_FDCWD of the directory that holds path. */
static int sync_dir(int dirfd, const char *path)
{
    if (dirfd != AT_FDCWD) return fsync(dirfd);
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Fills the new .tmp file and closes fd; the name of the failed step, or NULL (errno in *saved). */
static const char *fill_tmp(int fd, const struct iovec *parts, int nparts, mode_t mode, int flags,
                            int *saved)
{
    const char *step_failed = NULL;
    if ((flags & FILEIO_EXACT_MODE) && fchmod(fd, mode) < 0)
        step_failed = "chmod";
    else if (write_parts(fd, parts, nparts) < 0)
        step_failed = "write";
    else if (fsync(fd) < 0)
        step_failed = "fsync";
    *saved = errno;
    if (close(fd) < 0 && !step_failed) {
        step_failed = "close";
        *saved = errno;
    }
    return step_failed;
}

int fileio_write_atomic(int dirfd, const char *name, const struct iovec *parts, int nparts,
                        mode_t mode, int flags, struct cp_err *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", name) >= (int)sizeof tmp) {
        cp_err_set(err, CP_ERR_INVALID, "file name too long: %.100s", name);
        return -1;
    }
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        cp_err_set(err, CP_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    int saved = 0;
    const char *step_failed = fill_tmp(fd, parts, nparts, mode, flags, &saved);
    if (!step_failed) {
        bool noreplace = flags & FILEIO_NOREPLACE;
        int rc = noreplace ? rename_noreplace(dirfd, tmp, name) : renameat(dirfd, tmp, dirfd, name);
        saved = errno;
        if (rc < 0 && noreplace && saved == EEXIST) {
            unlinkat(dirfd, tmp, 0);
            return 1;
        }
        if (rc < 0) step_failed = "rename";
    }
    if (step_failed) {
        unlinkat(dirfd, tmp, 0);
        cp_err_set(err, CP_ERR_IO, "cannot %s %s: %s", step_failed, name, strerror(saved));
        return -1;
    }
    /* the rename itself; by default a failure is not reported: it cannot be undone, the file is
     * in place */
    if (sync_dir(dirfd, name) < 0 && (flags & FILEIO_DIR_SYNC_ERRORS)) {
        cp_err_set(err, CP_ERR_IO, "%s: cannot sync its directory: %s", name, strerror(errno));
        return -1;
    }
    return 0;
}
