/* spool: profiles waiting on disk for a sink that is down, bounded in bytes, oldest first.
 *
 * Contract: one directory, one file per record, named "<seq>.spool" with seq a 20-digit decimal
 * that only grows (the next one is one past the largest found at open), so name order is age
 * order. A file is written as "<seq>.spool.tmp", fsynced, renamed, and the directory fsynced:
 * a crash leaves either the complete file or a .tmp, and spool_open() deletes every .tmp.
 * spool_open() also deletes files whose header is wrong; spool_take_oldest() deletes files that
 * do not decode; both count them in `corrupt`. Files with other names are left alone.
 * The total size of the files stays under max_bytes: spool_put() evicts the oldest entries
 * first (idle ones before ones taken for delivery), and counts each in `evicted`.
 * spool_take_oldest() hands out the oldest entry not already taken; the caller then either
 * removes it (delivered or dropped) or releases it (try later). Not thread-safe; one owner.
 *
 * File format (integers little-endian; the parser trusts nothing — the files outlive crashes and
 * anyone with access to the directory can write them):
 *
 *   offset size
 *        0    8  magic "CPSPOOL1"
 *        8    8  u64 file length, the trailer included
 *       16    8  i64 from_ns
 *       24    8  i64 until_ns (>= from_ns)
 *       32    4  u32 rate_hz (<= 1000000)
 *       36    4  u32 nlabels (<= SPOOL_MAX_LABELS)
 *       40    4  u32 app_len (1..SPOOL_MAX_STRING)
 *       44    4  u32 pprof_len (1..SPOOL_MAX_PPROF)
 *       48       app name bytes
 *                nlabels times: u32 key_len (1..SPOOL_MAX_STRING), key bytes,
 *                               u32 value_len (0..SPOOL_MAX_STRING), value bytes
 *                pprof bytes (the gzipped profile as the record held it)
 *      end-4    4  u32 CRC-32 (zlib) of every byte before it
 *
 * Strings hold no NUL byte; label keys are strictly increasing (strcmp), as in a profile_record.
 * A file is valid only if every length agrees with the file length exactly.
 */
#ifndef CONPROF_AGENT_SPOOL_H
#define CONPROF_AGENT_SPOOL_H

#include "buf.h"
#include "error.h"
#include "profile_record.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_MAGIC "CPSPOOL1"
#define SPOOL_HEADER_LEN 48u
#define SPOOL_MAX_LABELS 256u
#define SPOOL_MAX_STRING 4096u
#define SPOOL_MAX_PPROF (64u << 20)
#define SPOOL_MAX_RATE_HZ 1000000u
/* Directory entries looked at by spool_open(), so a directory full of junk cannot stall it. */
#define SPOOL_MAX_SCAN 1000000u

struct spool_entry {
    uint64_t seq;
    uint64_t size;
    bool taken;
};

struct spool_counters {
    uint64_t stored;      /* records written */
    uint64_t evicted;     /* deleted to stay under the cap */
    uint64_t corrupt;     /* deleted because they could not be read back */
    uint64_t tmp_removed; /* leftovers of interrupted writes deleted by spool_open() */
};

struct spool {
    int dirfd;
    char *dir;
    uint64_t max_bytes;
    uint64_t bytes;
    struct spool_entry *entries; /* sorted by seq: oldest first */
    size_t nentries, cap;
    uint64_t next_seq;
    struct spool_counters counters;
    char last_corrupt[320]; /* which file was deleted as corrupt last, and why */
};

/* Creates dir (0700) if needed, deletes .tmp leftovers and corrupt headers, indexes the rest and
 * evicts the oldest while over max_bytes. */
int spool_open(struct spool *sp, const char *dir, uint64_t max_bytes, struct cp_err *err);
void spool_close(struct spool *sp);

/* Stores a copy of r. Fails (CP_ERR_NOMEM) for a record larger than the cap. */
int spool_put(struct spool *sp, const struct profile_record *r, uint64_t *seq_out,
              struct cp_err *err);
/* Loads the oldest entry not taken and marks it taken: 1 loaded, 0 none left, -1 with err on a
 * transient error (out of files or memory). Corrupt files met on the way are deleted and counted.
 */
int spool_take_oldest(struct spool *sp, struct profile_record *out, uint64_t *seq_out,
                      struct cp_err *err);
void spool_release(struct spool *sp, uint64_t seq); /* taken -> idle again */
void spool_remove(struct spool *sp, uint64_t seq);  /* deletes the file (no-op if gone) */
size_t spool_idle_count(const struct spool *sp);

/* The file format above, for a record (CP_ERR_INVALID for a record it cannot hold). */
int spool_record_encode(const struct profile_record *r, struct buf *out, struct cp_err *err);
/* Parses a whole file; on success *out is a new record the caller frees. Bounded, never trusts
 * a length before checking it against what is left. */
int spool_record_decode(const uint8_t *data, size_t len, struct profile_record *out,
                        struct cp_err *err);

#endif
