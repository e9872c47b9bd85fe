/* profile_types: two static tables — the types we show (with their titles for the query API) and
 * the pprof sample types that map to them. A sample type maps only when its unit agrees with the
 * type's unit, so a "cpu" counted in samples is not mistaken for CPU nanoseconds. Lookups are
 * linear scans: the tables have a dozen rows.
 */
#include "profile_types.h"

#include <limits.h>
#include <string.h>

static const struct profile_type_info TYPES[] = {
    {"cpu", "CPU Time", "Time spent running on a CPU", "nanoseconds", "sum"},
    {"wall", "Wall Time", "Time elapsed, running or waiting", "nanoseconds", "sum"},
    {"samples", "Samples", "Number of stack samples taken", "count", "sum"},
    {"alloc_objects", "Allocations", "Number of objects allocated", "count", "sum"},
    {"alloc_space", "Allocated Memory", "Bytes allocated", "bytes", "sum"},
    {"inuse_objects", "Heap Live Objects", "Number of objects live on the heap", "count", "sum"},
    {"inuse_space", "Heap Live Size", "Bytes live on the heap", "bytes", "sum"},
};

struct sample_type_map {
    const char *name, *unit, *type;
};

static const struct sample_type_map SAMPLE_TYPES[] = {
    {"samples", "count", "samples"},
    {"cpu", "nanoseconds", "cpu"},
    {"wall", "nanoseconds", "wall"},
    {"cpu-time", "nanoseconds", "cpu"},
    {"wall-time", "nanoseconds", "wall"},
    {"cpu-samples", "count", "samples"},
    {"wall-samples", "count", "samples"},
    {"alloc-samples", "count", "alloc_objects"},
    {"alloc-space", "bytes", "alloc_space"},
    {"heap-space", "bytes", "inuse_space"},
    {"alloc_objects", "count", "alloc_objects"},
    {"alloc_space", "bytes", "alloc_space"},
    {"inuse_objects", "count", "inuse_objects"},
    {"inuse_space", "bytes", "inuse_space"},
};

/* Names a query may use for a type besides its own. */
static const struct sample_type_map QUERY_ALIASES[] = {
    {"wall-time", NULL, "wall"},
    {"cpu-time", NULL, "cpu"},
    {"alloc-samples", NULL, "alloc_objects"},
    {"alloc-space", NULL, "alloc_space"},
    {"heap-space", NULL, "inuse_space"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *profile_type_from_sample_type(const char *name, const char *unit)
{
    if (!name || !unit) return NULL;
    for (size_t i = 0; i < COUNT(SAMPLE_TYPES); i++)
        if (strcmp(SAMPLE_TYPES[i].name, name) == 0 && strcmp(SAMPLE_TYPES[i].unit, unit) == 0)
            return SAMPLE_TYPES[i].type;
    return NULL;
}

const struct profile_type_info *profile_type_info(const char *type)
{
    if (!type) return NULL;
    for (size_t i = 0; i < COUNT(TYPES); i++)
        if (strcmp(TYPES[i].name, type) == 0) return &TYPES[i];
    return NULL;
}

const char *profile_type_normalize_query(const char *query_value)
{
    const struct profile_type_info *info = profile_type_info(query_value);
    if (info) return info->name;
    if (!query_value) return NULL;
    for (size_t i = 0; i < COUNT(QUERY_ALIASES); i++)
        if (strcmp(QUERY_ALIASES[i].name, query_value) == 0) return QUERY_ALIASES[i].type;
    return NULL;
}

const struct profile_type_info *profile_type_all(size_t *count)
{
    *count = COUNT(TYPES);
    return TYPES;
}

int profile_type_pick(const char *const *names, const char *const *units, size_t n,
                      const char *type)
{
    for (size_t i = 0; i < n && i < (size_t)INT_MAX; i++) {
        const char *t = profile_type_from_sample_type(names[i], units[i]);
        if (t && type && strcmp(t, type) == 0) return (int)i;
    }
    return -1;
}
