/* memreader: how the sampler reads the target's memory.
 *
 * Contract: every read of target memory goes through a `struct memreader`, so the frame walker can
 * be driven by the real process (procmem.h) or by a fake one (unit tests, fuzzing). A read either
 * copies exactly `len` bytes and returns 0, or returns -1 and sets errno (EFAULT for an unmapped
 * address, ESRCH when the process is gone, EPERM when not allowed). Reads never stop the target;
 * the data may be torn, so callers validate what they read. `readv` reads several ranges in one
 * call; it may be NULL, then callers fall back to `read` per range.
 */
#ifndef CONPROF_MEMREADER_H
#define CONPROF_MEMREADER_H

#include <stddef.h>
#include <stdint.h>

struct mem_range {
    uint64_t addr;
    void *dst;
    size_t len;
};

struct memreader {
    int (*read)(void *ctx, uint64_t addr, void *dst, size_t len);
    /* Returns how many leading ranges were read whole (0..n), or -1 with errno. */
    int (*readv)(void *ctx, const struct mem_range *ranges, int n);
    void *ctx;
};

static inline int mem_read(const struct memreader *m, uint64_t addr, void *dst, size_t len)
{
    return m->read(m->ctx, addr, dst, len);
}

static inline int mem_read_u64(const struct memreader *m, uint64_t addr, uint64_t *out)
{
    return m->read(m->ctx, addr, out, sizeof *out);
}

/* Reads every range; falls back to one read per range when readv is NULL.
 * Returns the number of leading ranges read whole, or -1 when the first failed. */
int mem_readv(const struct memreader *m, const struct mem_range *ranges, int n);

#endif
