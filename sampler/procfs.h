/* procfs: opening the files of /proc through a directory handle.
 *
 * Contract: every /proc access of the sampler goes through here with a `procfd`: PROCFS_DEFAULT
 * means the /proc of our own mount namespace; a descriptor of a /proc directory opened earlier
 * keeps working after the process entered another mount namespace (setns), which is how the
 * agent's per-container workers still reach the host's /proc. `rel` is relative to /proc, e.g.
 * "123/maps" (built with procfs_path). Functions return what open/readlink/openat return and set
 * errno; no state of their own.
 */
#ifndef CONPROF_PROCFS_H
#define CONPROF_PROCFS_H

#include <dirent.h>
#include <stddef.h>
#include <sys/types.h>

#define PROCFS_DEFAULT (-1)

int procfs_open(int procfd, const char *rel, int flags);
ssize_t procfs_readlink(int procfd, const char *rel, char *buf, size_t size);
DIR *procfs_opendir(int procfd, const char *rel);

/* snprintf into buf ("%d/maps" style); returns buf. */
const char *procfs_path(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
