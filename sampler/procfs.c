/* procfs: openat(2) on a /proc handle, or plain paths under "/proc/" for the default. */
#include "procfs.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static const char *full_path(int procfd, const char *rel, char *buf, size_t size)
{
    if (procfd != PROCFS_DEFAULT) return rel;
    snprintf(buf, size, "/proc/%s", rel);
    return buf;
}

int procfs_open(int procfd, const char *rel, int flags)
{
    char buf[4200];
    const char *path = full_path(procfd, rel, buf, sizeof buf);
    return procfd == PROCFS_DEFAULT ? open(path, flags | O_CLOEXEC)
                                    : openat(procfd, path, flags | O_CLOEXEC);
}

ssize_t procfs_readlink(int procfd, const char *rel, char *out, size_t size)
{
    char buf[4200];
    const char *path = full_path(procfd, rel, buf, sizeof buf);
    return procfd == PROCFS_DEFAULT ? readlink(path, out, size)
                                    : readlinkat(procfd, path, out, size);
}

DIR *procfs_opendir(int procfd, const char *rel)
{
    int fd = procfs_open(procfd, rel, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return NULL;
    DIR *d = fdopendir(fd);
    if (!d) close(fd);
    return d;
}

const char *procfs_path(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return buf;
}
