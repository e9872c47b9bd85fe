/* profile_record: one finished profile of one application for one period, as the daemon hands
 * it to sinks (directory, HTTP) and to the spool.
 *
 * Contract: plain data, owned by whoever holds it; profile_record_free() releases it. Labels are
 * the profile-level labels of ../shared/DESIGN.md (application_name, project_id, environment,
 * runtime, runtime_version, host, probe_version, container and pod metadata, user labels), kept
 * sorted by key, keys unique. The pprof is gzipped (sampler/profile_writers.h) and carries both
 * the cpu and wall sample types.
 */
#ifndef CONPROF_AGENT_PROFILE_RECORD_H
#define CONPROF_AGENT_PROFILE_RECORD_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>

struct profile_label {
    char *key;
    char *value;
};

struct profile_record {
    char *app_name; /* the application_name label, also the Pyroscope series name */
    struct profile_label *labels;
    size_t nlabels;
    int64_t from_ns;     /* period start, ns since the epoch */
    int64_t until_ns;    /* period end */
    int rate_hz;         /* sampling rate (Pyroscope's sampleRate) */
    struct buf pprof_gz; /* the profile */
};

/* Adds or replaces a label (copies both strings); keeps labels sorted. 0, or -1 on memory. */
int profile_record_set_label(struct profile_record *r, const char *key, const char *value);
const char *profile_record_label(const struct profile_record *r, const char *key);
void profile_record_free(struct profile_record *r);

#endif
