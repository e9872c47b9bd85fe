/* profile_types: the profile types the query API shows (API.md) and how pprof sample types map to
 * them.
 *
 * Types: "cpu" (nanoseconds), "wall" (nanoseconds), "samples" (count), "alloc_objects" (count),
 * "alloc_space" (bytes), "inuse_objects" (count), "inuse_space" (bytes); all aggregate by "sum".
 * Mapping from a pprof sample_type (name, unit):
 *   ours / Go CPU:  samples/count -> samples, cpu/nanoseconds -> cpu, wall/nanoseconds -> wall
 *   ddtrace:        cpu-time -> cpu, wall-time -> wall, cpu-samples / wall-samples -> samples,
 *                   alloc-samples -> alloc_objects, alloc-space -> alloc_space,
 *                   heap-space -> inuse_space
 *   Go heap:        alloc_objects, alloc_space, inuse_objects, inuse_space (same names)
 * The unit must agree with the type's unit (ns / count / bytes) or the sample type is not shown.
 * When a profile carries both cpu-samples and wall-samples, both map to "samples"; the first one
 * counts (profile_type_pick; ingest.h does the same). All returned strings are static.
 * Stateless, thread-safe.
 */
#ifndef CONPROF_PROFILE_TYPES_H
#define CONPROF_PROFILE_TYPES_H

#include <stddef.h>

/* NULL: not a type we show. */
const char *profile_type_from_sample_type(const char *name, const char *unit);
/* A query's profile_type value -> canonical name ("wall-time" -> "wall", "cpu-time" -> "cpu");
 * NULL: unknown. */
const char *profile_type_normalize_query(const char *query_value);

struct profile_type_info {
    const char *name, *title, *description, *unit, *aggregation;
};
const struct profile_type_info *profile_type_info(const char *type); /* NULL if unknown */
/* All known types, in display order: *count set to their number. */
const struct profile_type_info *profile_type_all(size_t *count);
/* The index of the first sample type (names[i], units[i]) that maps to `type`, or -1. Ingest's
 * totals use this same first match, so a merge reading values[index] agrees with them (a ddtrace
 * profile with cpu-samples and wall-samples counts its cpu-samples as "samples"). */
int profile_type_pick(const char *const *names, const char *const *units, size_t n,
                      const char *type);

#endif
