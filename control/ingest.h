/* ingest: an upload (Pyroscope /ingest or Datadog-style /profiling/v1/input) turned into profiles
 * ready to store. Pure parsing: no storage, no auth; the HTTP layer adds the token's project.
 *
 * Contract (both entry points): all-or-nothing: on error `out` is empty ({NULL, 0}) and err
 * holds a CP_ERR_INVALID message for a 400 answer that names the problem ("pprof attachment
 * cpu.pprof: sample 12 names location 99 which does not exist", "name: expected
 * app{key=value,...}", "from: expected Unix seconds"). CP_ERR_NOMEM when memory runs out.
 * Each profile's pprof is decompressed (gzip/zstd/raw sniffed; lz4 refused), decoded and validated
 * (pprof_read.h); a body that is empty, not a protobuf, or a Profile without any sample_type is
 * refused. `types` lists the query profile types (profile_types.h) it carries, in sample_type
 * order without duplicates (the first sample type of a type counts: profile_type_pick), with the
 * sum of that sample type over all samples in `totals`. A pprof carrying no type we show (Go's
 * goroutine profile) is still returned, with ntypes 0. A profile with zero samples is kept too.
 * The decompressed bytes of one upload together are bounded by PPROF_READ_MAX_DECOMPRESSED.
 *
 * Labels: a JSON object of strings, at most INGEST_MAX_LABELS, keys 1..INGEST_MAX_KEY bytes,
 * values <= INGEST_MAX_VALUE bytes, UTF-8, no NUL (else an error naming the label). A label "env"
 * is copied to "environment" when that is absent (ddtrace sends env). `app` is the label
 * application_name, else service, else the Pyroscope series name, else the error "no application
 * name: set application_name or service".
 *
 * Time: from_ns/until_ns in ns since the epoch. Pyroscope from/until: digits only; the magnitude
 * tells the unit like Pyroscope's own parser: <= 11 digits seconds, 12-14 ms, 15-17 us, 18-19 ns
 * (pyroscope-go sends ns). Multipart: RFC 3339 (T, t or space; fractional seconds of any length,
 * ns kept; Z or +hh:mm / -hh:mm), years 1970..2261. A start the upload leaves out is the pprof's
 * time_nanos (none there: error "no start time"); an end left out is start + duration_nanos.
 * until < from is an error; until given without from is an error (Pyroscope).
 *
 * Pyroscope: query "name=app{k=v,...}&from=S&until=S&format=pprof&sampleRate=N&spyName=X", each
 * key and value percent-decoded ('+' is a space); unknown keys ignored, at most 64 parameters.
 * name: app = the text before '{' (trimmed, not empty, no control characters or "{},="); labels
 * k=v separated by ',' inside one trailing {...} (keys [A-Za-z0-9_.-]+, whitespace trimmed, a
 * trailing ',' tolerated). format must be pprof or absent. spyName becomes label "spy_name".
 *
 * Multipart dialects (blackfire.md §3.3-3.4), told apart by content:
 *   v4: a part named "event" (event.json, <= 1 MiB) with attachments[], tags_profiler "k:v,k:v"
 *       (split on the first ':', entries without ':' or key skipped, whitespace trimmed), start,
 *       end; each attachment is the part whose name or filename equals it. Attachments whose
 *       name ends in ".json" (code-provenance.json) are skipped; any other must be a valid pprof.
 *   otherwise (v3, v2, Blackfire-native): every part with a filename, or named data[...], is a
 *       profile (unless named *.json); tags[] / tags fields are "k:v" labels; start/end (v3) and
 *       recording-start/recording-end (v2) are RFC 3339 times; version, format, family, types[..]
 *       are skipped; every other field is a plain label name=value (runtime, application_name..).
 * One ingest_profile per pprof (at most INGEST_MAX_PROFILES), all sharing the upload's labels and
 * times; source_name is the attachment name (legacy: the filename, else the part name). A
 * multipart without any profile is an error ("multipart: no profile attachment").
 * Stateless, thread-safe.
 */
#ifndef CONPROF_INGEST_H
#define CONPROF_INGEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

#define INGEST_MAX_LABELS 64u
#define INGEST_MAX_KEY 128u
#define INGEST_MAX_VALUE 512u
#define INGEST_MAX_PROFILES 16u /* pprof attachments per upload */

struct ingest_profile {
    char *app;      /* application_name (or service, or the series name) */
    json_t *labels; /* object of strings; project_id / environment included when known */
    int64_t from_ns, until_ns;
    struct buf pprof; /* decompressed, validated protobuf */
    size_t ntypes;
    char **types;      /* query profile types present (profile_types.h) */
    int64_t *totals;   /* their totals */
    char *source_name; /* attachment / part name ("cpu.pprof"), or "ingest" for Pyroscope */
};

struct ingest_batch {
    struct ingest_profile *items;
    size_t count;
};

/* Pyroscope POST /ingest; query is the query string without '?' (NULL: ""). */
int ingest_parse_pyroscope(const char *query, const uint8_t *body, size_t len,
                           struct ingest_batch *out, struct cp_err *err);
/* Datadog-style POST /profiling/v1/input: v4 event.json + attachments; v3/v2 and plain label
 * fields too. content_type is the request's Content-Type header value. */
int ingest_parse_multipart(const char *content_type, const uint8_t *body, size_t len,
                           struct ingest_batch *out, struct cp_err *err);
void ingest_batch_free(struct ingest_batch *b);

#endif
