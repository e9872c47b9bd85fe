/* pprof_read: decompress and decode an uploaded perftools.profiles.Profile (console ingest).
 *
 * Contract: pprof_decompress() sniffs the first bytes: gzip (1f 8b), zstd (28 b5 2f fd), lz4
 * frame (04 22 4d 18: refused, CP_ERR_INVALID "lz4-compressed profiles are not supported"), else
 * raw protobuf (copied). It appends the decompressed bytes to `out`, refusing more than max_out
 * bytes (a decompression bomb is CP_ERR_INVALID naming the limit); on error out is as before.
 * Concatenated gzip members and zstd frames are all decoded; truncated data is an error.
 *
 * pprof_decode() parses an uncompressed Profile into flat arrays. It is bounded (the limits
 * below) and checks every reference: a sample naming a missing location, a line naming a missing
 * function, a string index past the string table, a sample whose value count differs from
 * sample_type, a zero or repeated id, string_table[0] != "" are all CP_ERR_INVALID with a message
 * naming the element ("sample 12 names location 99 which does not exist"; no "pprof:" prefix, the
 * caller adds its context). Garbage never crashes. On error `out` is left zeroed (freeing it is
 * harmless). Empty input is a valid empty profile (ntypes 0).
 *
 * Frames: each sample's stack is frames[first_frame .. first_frame+depth), leaf first (pprof's
 * location order); a location with several lines (inlined calls) contributes its lines innermost
 * first (pprof's order inside a location). Frames are stored per sample (not shared), so a
 * consumer can walk each sample's slice on its own. Function name: Function.name, else
 * system_name. A line whose function_id is 0 gets function "" and file ""; a location without
 * lines (unsymbolized) is one frame named by its address ("0x4a5f10"). Sample labels and mappings
 * are read past, not kept. All strings point into the decoded profile's own storage and live
 * until pprof_decoded_free(). Not thread-safe per object; distinct objects are independent.
 */
#ifndef CONPROF_PPROF_READ_H
#define CONPROF_PPROF_READ_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

#define PPROF_READ_MAX_DECOMPRESSED (256u << 20)
/* Decoder bounds (anything larger is CP_ERR_INVALID naming the bound). */
#define PPROF_READ_MAX_STRINGS (1u << 20)
#define PPROF_READ_MAX_SAMPLE_TYPES 64u
#define PPROF_READ_MAX_SAMPLES (2u << 20)
#define PPROF_READ_MAX_VALUES (16u << 20) /* nsamples * ntypes */
#define PPROF_READ_MAX_LOCATIONS (1u << 20)
#define PPROF_READ_MAX_FUNCTIONS (1u << 20)
#define PPROF_READ_MAX_DEPTH 4096u            /* locations per sample */
#define PPROF_READ_MAX_LINES 64u              /* lines (inlined frames) per location */
#define PPROF_READ_MAX_LINES_TOTAL (4u << 20) /* lines over all locations */
#define PPROF_READ_MAX_FRAMES (8u << 20)      /* flattened frames over all samples */

int pprof_decompress(const uint8_t *in, size_t len, size_t max_out, struct buf *out,
                     struct cp_err *err);

struct pprof_frame {
    const char *function;
    const char *file;
    int64_t line;
};

struct pprof_sample {
    size_t first_frame;
    uint32_t depth;
    const int64_t *values; /* ntypes values */
};

struct pprof_decoded {
    size_t ntypes;
    const char **type_names; /* sample_type[i].type */
    const char **type_units; /* sample_type[i].unit */
    int64_t time_nanos, duration_nanos, period;
    const char *period_type, *period_unit; /* "" when absent */
    struct pprof_frame *frames;
    size_t nframes;
    struct pprof_sample *samples;
    size_t nsamples;
    /* private storage */
    char *strings_mem;    /* copies of the string table, NUL-terminated */
    const char **strings; /* string_table[i] */
    size_t nstrings;
    int64_t *values_mem; /* nsamples * ntypes */
    char *addr_mem;      /* names of locations without lines */
};

int pprof_decode(const uint8_t *pb, size_t len, struct pprof_decoded *out, struct cp_err *err);
void pprof_decoded_free(struct pprof_decoded *p);
/* Sum of each sample type over all samples (totals[ntypes], caller-allocated; saturating). */
void pprof_decoded_totals(const struct pprof_decoded *p, int64_t *totals);

#endif
