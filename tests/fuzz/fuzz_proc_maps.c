/* Fuzzes the /proc/PID/maps parser: any text parses (bad lines skipped and counted), what is kept
 * is well-formed, sorted and disjoint, and proc_maps_find() agrees with a linear scan. */
#include "proc_maps.h"

#include <stdlib.h>
#include <string.h>

static const struct proc_map *find_linear(const struct proc_maps *m, uint64_t addr)
{
    for (size_t i = 0; i < m->count; i++)
        if (addr >= m->maps[i].start && addr < m->maps[i].end) return &m->maps[i];
    return NULL;
}

static void check_find(const struct proc_maps *m, uint64_t addr)
{
    if (proc_maps_find(m, addr) != find_linear(m, addr)) abort();
}

static size_t count_lines(const uint8_t *data, size_t size)
{
    size_t lines = size > 0 && data[size - 1] != '\n';
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    return lines;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proc_maps m;
    struct cp_err err;
    if (proc_maps_parse((const char *)data, size, &m, &err) < 0) return 0; /* only out of memory */
    if (m.count + m.skipped > count_lines(data, size)) abort();
    for (size_t i = 0; i < m.count; i++) {
        const struct proc_map *p = &m.maps[i];
        if (p->end <= p->start || !p->path || strlen(p->path) > 4096 || strchr(p->path, '\n'))
            abort();
        if (i > 0 && m.maps[i - 1].end > p->start) abort();
        check_find(&m, p->start);
        check_find(&m, p->end - 1);
        check_find(&m, p->end);
        check_find(&m, p->start - 1);
    }
    uint64_t probe = 0;
    memcpy(&probe, data, size < sizeof probe ? size : sizeof probe);
    check_find(&m, probe);
    proc_maps_free(&m);
    return 0;
}
