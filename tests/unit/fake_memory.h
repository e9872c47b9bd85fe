/* fake_memory: a fake target address space for unit tests: a few regions of bytes at chosen
 * addresses, read through the memreader interface, with counters of calls. Header-only. */
#ifndef CONPROF_TEST_FAKE_MEMORY_H
#define CONPROF_TEST_FAKE_MEMORY_H

#include "memreader.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_MAX_REGIONS 64

struct fake_memory {
    struct {
        uint64_t addr;
        size_t len;
        uint8_t *bytes;
    } regions[FAKE_MAX_REGIONS];
    int nregions;
    unsigned reads, readvs;
};

static inline uint8_t *fake_region(struct fake_memory *m, uint64_t addr, size_t len)
{
    int i = m->nregions++;
    m->regions[i].addr = addr;
    m->regions[i].len = len;
    m->regions[i].bytes = calloc(1, len);
    return m->regions[i].bytes;
}

static inline void fake_memory_free(struct fake_memory *m)
{
    for (int i = 0; i < m->nregions; i++)
        free(m->regions[i].bytes);
    m->nregions = 0;
}

static inline void fake_put_u64(struct fake_memory *m, uint64_t addr, uint64_t v)
{
    for (int i = 0; i < m->nregions; i++)
        if (addr >= m->regions[i].addr && addr + 8 <= m->regions[i].addr + m->regions[i].len) {
            memcpy(m->regions[i].bytes + (addr - m->regions[i].addr), &v, 8);
            return;
        }
    abort();
}

static inline void fake_put_u8(struct fake_memory *m, uint64_t addr, uint8_t v)
{
    for (int i = 0; i < m->nregions; i++)
        if (addr >= m->regions[i].addr && addr < m->regions[i].addr + m->regions[i].len) {
            m->regions[i].bytes[addr - m->regions[i].addr] = v;
            return;
        }
    abort();
}

static inline int fake_copy(struct fake_memory *m, uint64_t addr, void *dst, size_t len)
{
    for (int i = 0; i < m->nregions; i++)
        if (addr >= m->regions[i].addr && addr + len <= m->regions[i].addr + m->regions[i].len) {
            memcpy(dst, m->regions[i].bytes + (addr - m->regions[i].addr), len);
            return 0;
        }
    errno = EFAULT;
    return -1;
}

static inline int fake_read(void *ctx, uint64_t addr, void *dst, size_t len)
{
    struct fake_memory *m = ctx;
    m->reads++;
    return fake_copy(m, addr, dst, len);
}

static inline int fake_readv(void *ctx, const struct mem_range *r, int n)
{
    struct fake_memory *m = ctx;
    m->readvs++;
    for (int i = 0; i < n; i++)
        if (fake_copy(m, r[i].addr, r[i].dst, r[i].len) < 0) return i ? i : -1;
    return n;
}

static inline struct memreader fake_reader(struct fake_memory *m)
{
    return (struct memreader){.read = fake_read, .readv = fake_readv, .ctx = m};
}

#endif
