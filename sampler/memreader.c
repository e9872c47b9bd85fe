#include "memreader.h"

int mem_readv(const struct memreader *m, const struct mem_range *ranges, int n)
{
    if (m->readv) return m->readv(m->ctx, ranges, n);
    for (int i = 0; i < n; i++)
        if (m->read(m->ctx, ranges[i].addr, ranges[i].dst, ranges[i].len) < 0) return i ? i : -1;
    return n;
}
