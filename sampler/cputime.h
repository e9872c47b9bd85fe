/* cputime: per-thread CPU time of the target, from /proc/PID/task/TID/schedstat.
 *
 * Contract: cputime_delta() returns the CPU nanoseconds a thread ran since the previous call for
 * that thread (the first call primes the thread and returns 0), read from the first field of
 * schedstat (the scheduler's exact run time, not tick-sampled). Files are kept open and read with
 * pread, so a call costs one system call. cputime_sweep() closes the files of threads not asked
 * about since the previous sweep. At most CPUTIME_MAX_THREADS threads are tracked; beyond, a
 * thread's CPU time is unknown (-1). Not thread-safe.
 */
#ifndef CONPROF_CPUTIME_H
#define CONPROF_CPUTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define CPUTIME_MAX_THREADS 4096

struct cputime_entry {
    int32_t tid; /* 0 = empty */
    int fd;
    bool seen;
    uint64_t last_ns;
};

struct cputime {
    int procfd; /* procfs.h */
    pid_t pid;
    struct cputime_entry *slots; /* open addressing, CPUTIME_MAX_THREADS * 2 slots */
    uint32_t count;
};

/* procfd: the /proc to read (procfs.h), PROCFS_DEFAULT for ours. */
int cputime_init(struct cputime *c, int procfd, pid_t pid);
void cputime_free(struct cputime *c);

/* CPU ns of thread tid since the previous call; 0 on the first call; -1 when unknown. */
int64_t cputime_delta(struct cputime *c, int32_t tid);

/* Total run time of thread tid in ns (no state change); -1 when unknown. */
int64_t cputime_read_total(pid_t pid, int32_t tid);

void cputime_sweep(struct cputime *c);

#endif
