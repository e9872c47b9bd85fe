/* fileio: whole-file input and output that agent and console share — reading a regular file of
 * bounded size, and replacing a file atomically.
 *
 * Contract: every function returns its result or -1/NULL after filling err (CP_ERR_IO for system
 * calls, CP_ERR_INVALID for a file that is not regular or too large, CP_ERR_NOMEM); messages name
 * the path. Reads never block on a FIFO or device (O_NONBLOCK, regular files only) and never
 * allocate more than max + 2 bytes. No state; thread-safe.
 */
#ifndef CONPROF_FILEIO_H
#define CONPROF_FILEIO_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Opens path read-only; fails unless it is a regular file. An fd, or -1 with err. When missing is
 * not NULL it is set to whether the failure was that path does not exist. */
int fileio_open_regular(const char *path, bool *missing, struct cp_err *err);

/* Reads the rest of fd (path names it in messages), at most max bytes, into a malloc'd buffer
 * with a NUL after the data; *len = the data's length. NULL with err, also when it holds more. */
char *fileio_read_fd(int fd, const char *path, size_t max, size_t *len, struct cp_err *err);

/* fileio_open_regular() + fileio_read_fd(): the whole regular file at path, at most max bytes. */
char *fileio_read_file(const char *path, size_t max, size_t *len, bool *missing,
                       struct cp_err *err);

enum {
    FILEIO_NOREPLACE = 1,  /* leave an existing name alone and return 1 */
    FILEIO_EXACT_MODE = 2, /* fchmod the file to mode: neither umask nor a stale .tmp alter it */
    FILEIO_DIR_SYNC_ERRORS =
        4, /* a failed fsync of the directory is an error (the file is in place) */
};

/* Writes parts to dirfd/name atomically: "<name>.tmp" (created with mode), fsync, rename, then
 * fsync of the directory; dirfd may be AT_FDCWD, name is then a path and its parent directory is
 * synced. A crash leaves at most the .tmp file. 0 written, 1 exists (FILEIO_NOREPLACE), -1 with
 * err (the .tmp is removed). */
int fileio_write_atomic(int dirfd, const char *name, const struct iovec *parts, int nparts,
                        mode_t mode, int flags, struct cp_err *err);

#endif
