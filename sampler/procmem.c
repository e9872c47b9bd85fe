#include "procmem.h"

#include <errno.h>
#include <limits.h>
#include <sys/uio.h>

#define PROCMEM_MAX_IOV 1024 /* IOV_MAX on Linux */

static int procmem_read(void *ctx, uint64_t addr, void *dst, size_t len)
{
    struct procmem *pm = ctx;
    struct iovec local = {dst, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    pm->calls++;
    ssize_t n = process_vm_readv(pm->pid, &local, 1, &remote, 1, 0);
    if (n == (ssize_t)len) return 0;
    pm->failures++;
    if (n >= 0) errno = EFAULT;
    return -1;
}

static int procmem_readv(void *ctx, const struct mem_range *ranges, int n)
{
    struct procmem *pm = ctx;
    struct iovec local[PROCMEM_MAX_IOV], remote[PROCMEM_MAX_IOV];
    if (n <= 0) return 0;
    if (n > PROCMEM_MAX_IOV) n = PROCMEM_MAX_IOV;
    for (int i = 0; i < n; i++) {
        local[i] = (struct iovec){ranges[i].dst, ranges[i].len};
        remote[i] = (struct iovec){(void *)(uintptr_t)ranges[i].addr, ranges[i].len};
    }
    pm->calls++;
    ssize_t got = process_vm_readv(pm->pid, local, (unsigned long)n, remote, (unsigned long)n, 0);
    if (got < 0) {
        pm->failures++;
        return -1;
    }
    int whole = 0;
    size_t left = (size_t)got;
    while (whole < n && left >= ranges[whole].len) {
        left -= ranges[whole].len;
        whole++;
    }
    if (whole < n) pm->failures++;
    return whole;
}

void procmem_init(struct procmem *pm, pid_t pid, struct memreader *out)
{
    pm->pid = pid;
    pm->calls = pm->failures = 0;
    out->read = procmem_read;
    out->readv = procmem_readv;
    out->ctx = pm;
}
