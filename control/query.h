/* query: the data answers of the query API (control/API.md "Query", Upsun's continuous-profiling
 * API): list applications, timeline, merge, filter values. The HTTP layer parses the route, calls
 * query_params_parse() on the query string and one of the four answers, and frames the result.
 *
 * Contract: errors name the parameter ("from: expected Unix seconds", "profile_type: unknown 'foo';
 * one of cpu, wall, ...") and are CP_ERR_INVALID (-> 400); store failures CP_ERR_IO (-> 500);
 * a stored profile that no longer decodes is skipped (never fails the query). An unknown project,
 * environment or application is not an error: the answers are empty (no applications, a timeline
 * with no values, an empty merge, no filter values); the HTTP layer may check the project first.
 *
 * Time range: from/to Unix seconds (digits, optional leading '-'); default to = now, from =
 * to - 1800; from < to required; a range longer than QUERY_MAX_RANGE_S is refused.
 * Filters runtime[], runtime_version[], runtime_arch[], runtime_os[], probe_version[], host[]
 * (also without "[]"; repeated; at most QUERY_MAX_FILTER_VALUES values each) match the stored
 * labels of those names ("runtime" also matches label "language"); <name>_mode=1 (default): a
 * profile is kept when its label equals one of the values; -1: kept when it equals none of them
 * (a profile without the label is then kept). Fields combine with AND. Unknown parameters are
 * ignored (Upsun clients send more). Percent-encoding and '+' are decoded.
 *
 * Timeline grain (seconds): the smallest of 60, 120, 300, 600, 900, 1800, 3600 giving at most
 * QUERY_MAX_POINTS points over the range; 3600 past that (the range bound keeps points finite).
 * Buckets start at floor(from / grain) * grain and cover [from, to). A profile's total is
 * PRORATED over the buckets its [from_ns, until_ns) overlaps, by overlap length (a zero-length
 * profile counts wholly in the bucket of its start); each bucket's value is its sum divided by
 * the grain in seconds (unit "<type unit>_per_second", e.g. nanoseconds_per_second). A bucket no
 * profile overlaps has no "value" key. Filters apply.
 *
 * Merge: every profile of the application overlapping the range, filters applied, decoded; the
 * samples' values of the requested type's sample type (profile_type_from_sample_type) are summed
 * per stack (stackmerge). out=pprof (gzip, the type's pprof name/unit), collapsed, flamebearer
 * (Upsun/Pyroscope JSON with _profile_type, _sample_unit, _aggregation_type, _application, _from,
 * _to, _scale_factor, timeline null, groups {}, heatmap null). Default profile_type: cpu.
 * query_merge() runs QUERY_MERGE_THREADS - 1 short-lived helper threads that only decode and
 * merge (never touch the store). Not thread-safe per store (see store.h).
 */
#ifndef CONPROF_QUERY_H
#define CONPROF_QUERY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

struct store;

#define QUERY_MAX_POINTS 200
#define QUERY_DEFAULT_RANGE_S 1800
#define QUERY_MAX_RANGE_S (400LL * 86400) /* longer than the longest retention */
#define QUERY_MAX_FILTER_VALUES 32
#define QUERY_MAX_QUERY_LEN 8192 /* a longer query string is refused */
#define QUERY_MERGE_THREADS 2 /* threads decoding profiles in one merge (the caller's included) */

enum query_field {
    QUERY_F_RUNTIME = 0,
    QUERY_F_RUNTIME_VERSION,
    QUERY_F_RUNTIME_ARCH,
    QUERY_F_RUNTIME_OS,
    QUERY_F_PROBE_VERSION,
    QUERY_F_HOST,
    QUERY_NFIELDS
};
const char *query_field_name(enum query_field f); /* "runtime", ... */

enum query_out { QUERY_OUT_FLAMEBEARER = 0, QUERY_OUT_PPROF, QUERY_OUT_COLLAPSED };

struct query_filter {
    int mode; /* 1 include, -1 exclude */
    size_t nvalues;
    char *values[QUERY_MAX_FILTER_VALUES];
};

struct query_params {
    int64_t from, to;         /* Unix seconds */
    const char *profile_type; /* canonical (profile_types.h), static string */
    enum query_out out;       /* "out" (flamebearer when absent; also "flamebearerv2", "json") */
    struct query_filter filters[QUERY_NFIELDS];
};

/* query: the raw query string (percent-encoded, no '?'), NULL or "" = none. 0, or -1 (err set,
 * CP_ERR_INVALID naming the parameter). Free with query_params_free() in both cases. */
int query_params_parse(const char *query, int64_t now, struct query_params *out,
                       struct cp_err *err);
void query_params_free(struct query_params *p);

/* {"applications":{...}} */
json_t *query_applications(struct store *st, const char *project, const char *environment,
                           const struct query_params *p, struct cp_err *err);
/* {"from","to","grain","unit","aggregation_type","retention","points":[...]} */
json_t *query_timeline(struct store *st, const char *project, const char *environment,
                       const char *app, const struct query_params *p, int64_t retention_minutes,
                       struct cp_err *err);
/* Appends the answer to body and sets *content_type ("application/json", "text/plain;
 * charset=utf-8", "application/octet-stream") and, for pprof, a file name to disposition
 * ("attachment; filename=\"APP-cpu.pb.gz\""; "" otherwise; disposition_size >= 160). */
int query_merge(struct store *st, const char *project, const char *environment, const char *app,
                const struct query_params *p, struct buf *body, const char **content_type,
                char *disposition, size_t disposition_size, struct cp_err *err);
/* {"fields":{"runtime":{"distinct_values":N,"values":[{"value","count"}]},...},
 *  "max_applicable_filters":5}; counts are profiles in range (filters not applied). */
json_t *query_filter(struct store *st, const char *project, const char *environment,
                     const char *app, const struct query_params *p, struct cp_err *err);

#endif
