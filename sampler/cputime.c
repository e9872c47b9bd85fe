/* cputime: schedstat readers kept open per thread.
 *
 * schedstat's first field is the task's sum_exec_runtime in nanoseconds, updated by the
 * scheduler at every switch and tick, so deltas between samples add up to what the kernel
 * accounted, unlike the 10 ms granularity of utime/stime. The table is open addressing with
 * backward-shift deletion, keyed by tid.
 */
#include "cputime.h"

#include "procfs.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS (CPUTIME_MAX_THREADS * 2)

int cputime_init(struct cputime *c, int procfd, pid_t pid)
{
    c->procfd = procfd;
    c->pid = pid;
    c->count = 0;
    c->slots = calloc(SLOTS, sizeof *c->slots);
    return c->slots ? 0 : -1;
}

void cputime_free(struct cputime *c)
{
    if (c->slots)
        for (uint32_t i = 0; i < SLOTS; i++)
            if (c->slots[i].tid) close(c->slots[i].fd);
    free(c->slots);
    c->slots = NULL;
    c->count = 0;
}

static int open_schedstat(int procfd, pid_t pid, int32_t tid)
{
    char rel[96];
    return procfs_open(
        procfd, procfs_path(rel, sizeof rel, "%d/task/%d/schedstat", (int)pid, (int)tid), O_RDONLY);
}

static int64_t read_ns(int fd)
{
    char text[96];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n <= 0) return -1;
    text[n] = '\0';
    char *end;
    unsigned long long ns = strtoull(text, &end, 10);
    return end == text ? -1 : (int64_t)ns;
}

int64_t cputime_read_total(pid_t pid, int32_t tid)
{
    int fd = open_schedstat(PROCFS_DEFAULT, pid, tid);
    if (fd < 0) return -1;
    int64_t ns = read_ns(fd);
    close(fd);
    return ns;
}

static uint32_t slot_of(int32_t tid)
{
    return ((uint32_t)tid * 2654435761u) & (SLOTS - 1);
}

int64_t cputime_delta(struct cputime *c, int32_t tid)
{
    if (tid <= 0) return -1;
    uint32_t i = slot_of(tid);
    while (c->slots[i].tid && c->slots[i].tid != tid)
        i = (i + 1) & (SLOTS - 1);
    struct cputime_entry *e = &c->slots[i];
    if (e->tid) {
        int64_t ns = read_ns(e->fd);
        e->seen = true;
        if (ns < 0) return -1;
        int64_t delta = ns >= (int64_t)e->last_ns ? ns - (int64_t)e->last_ns : 0;
        e->last_ns = (uint64_t)ns;
        return delta;
    }
    if (c->count >= CPUTIME_MAX_THREADS) return -1;
    int fd = open_schedstat(c->procfd, c->pid, tid);
    if (fd < 0) return -1;
    int64_t ns = read_ns(fd);
    if (ns < 0) {
        close(fd);
        return -1;
    }
    *e = (struct cputime_entry){tid, fd, true, (uint64_t)ns};
    c->count++;
    return 0;
}

static void remove_at(struct cputime *c, uint32_t i)
{
    close(c->slots[i].fd);
    c->slots[i].tid = 0;
    c->count--;
    /* backward-shift: move later entries of the probe run into the hole */
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & (SLOTS - 1); c->slots[j].tid; j = (j + 1) & (SLOTS - 1)) {
        uint32_t home = slot_of(c->slots[j].tid);
        bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            c->slots[hole] = c->slots[j];
            c->slots[j].tid = 0;
            hole = j;
        }
    }
}

void cputime_sweep(struct cputime *c)
{
    for (uint32_t i = 0; i < SLOTS; i++) {
        if (!c->slots[i].tid) continue;
        if (c->slots[i].seen) {
            c->slots[i].seen = false;
        } else {
            remove_at(c, i);
            i--; /* re-examine: an entry may have shifted into i */
        }
    }
}
