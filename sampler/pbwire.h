/* pbwire: the protocol-buffers wire writers every hand-encoded profile of conprof shares (the
 * agent's pprof.c and the console's merged profiles), the profile.proto field numbers (also used
 * by the console's reader, pprof_read.c), the sub-messages both writers emit the same way, and the
 * gzip wrapper pprof files use.
 *
 * Contract: varints are unsigned LEB128; negative int64 values are passed cast to uint64 (ten
 * bytes, as protobuf's int64 does). Varint fields follow proto3: a zero value is left out.
 * A pb_small_msg is a fixed buffer for sub-messages known to be small (callers keep within
 * PB_SMALL_MSG_MAX: at most eight varint fields, or fewer plus one nested small message). The
 * buf emitters return 0, or -1 when memory runs out (out may then hold a partial field: callers
 * roll back to their saved length). String arguments of the pprof emitters are string-table
 * indexes. Every Location belongs to the one Mapping (id PB_PPROF_MAPPING_ID) that
 * pb_emit_python_mapping() writes, flagged as symbolized. pb_gzip_append() appends one gzip
 * stream and leaves out unchanged on error. All static inline: no state, thread-safe.
 */
#ifndef CONPROF_PBWIRE_H
#define CONPROF_PBWIRE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "buf.h"
#include "error.h"

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };

/* perftools.profiles.Profile field numbers (profile.proto). */
enum {
    PB_PROFILE_SAMPLE_TYPE = 1,
    PB_PROFILE_SAMPLE = 2,
    PB_PROFILE_MAPPING = 3,
    PB_PROFILE_LOCATION = 4,
    PB_PROFILE_FUNCTION = 5,
    PB_PROFILE_STRING_TABLE = 6,
    PB_PROFILE_TIME_NANOS = 9,
    PB_PROFILE_DURATION_NANOS = 10,
    PB_PROFILE_PERIOD_TYPE = 11,
    PB_PROFILE_PERIOD = 12,
    PB_PROFILE_COMMENT = 13,
};

#define PB_PPROF_MAPPING_ID 1

#define PB_SMALL_MSG_MAX 96

struct pb_small_msg {
    uint8_t b[PB_SMALL_MSG_MAX];
    size_t n;
};

static inline size_t pb_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *pb_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint8_t pb_tag(unsigned field, unsigned wire)
{
    return (uint8_t)(field << 3 | wire);
}

/* Appends a varint field to a small message; proto3 leaves zero values out. */
static inline void pb_small_varint_field(struct pb_small_msg *m, unsigned field, uint64_t v)
{
    if (v == 0) return;
    m->b[m->n++] = pb_tag(field, PB_VARINT);
    m->n = (size_t)(pb_put_varint(m->b + m->n, v) - m->b);
}

static inline void pb_small_nested_field(struct pb_small_msg *m, unsigned field,
                                         const struct pb_small_msg *sub)
{
    m->b[m->n++] = pb_tag(field, PB_LEN);
    m->n = (size_t)(pb_put_varint(m->b + m->n, sub->n) - m->b);
    memcpy(m->b + m->n, sub->b, sub->n);
    m->n += sub->n;
}

static inline int pb_emit_len_field(struct buf *out, unsigned field, const void *data, size_t len)
{
    uint8_t head[11];
    head[0] = pb_tag(field, PB_LEN);
    size_t n = (size_t)(pb_put_varint(head + 1, len) - head);
    return buf_append(out, head, n) || buf_append(out, data, len) ? -1 : 0;
}

static inline int pb_emit_varint_field(struct buf *out, unsigned field, uint64_t v)
{
    if (v == 0) return 0;
    uint8_t b[11];
    b[0] = pb_tag(field, PB_VARINT);
    return buf_append(out, b, (size_t)(pb_put_varint(b + 1, v) - b));
}

static inline int pb_emit_small(struct buf *out, unsigned field, const struct pb_small_msg *m)
{
    return pb_emit_len_field(out, field, m->b, m->n);
}

/* --- profile.proto sub-messages --- */

/* A ValueType (type, unit) as Profile field `field` (sample_type or period_type). */
static inline int pb_emit_value_type(struct buf *out, unsigned field, uint64_t type, uint64_t unit)
{
    struct pb_small_msg m = {.n = 0};
    pb_small_varint_field(&m, 1, type);
    pb_small_varint_field(&m, 2, unit);
    return pb_emit_small(out, field, &m);
}

/* A Sample: location ids ids[0..depth) + id_bias (leaf first) and values, both packed. Its size
 * is computed first so it is written straight into the reserved output, however deep. */
static inline int pb_emit_sample(struct buf *out, const uint32_t *ids, uint32_t depth,
                                 uint64_t id_bias, const uint64_t *values, size_t nvalues)
{
    size_t locs_len = 0, values_len = 0;
    for (uint32_t d = 0; d < depth; d++)
        locs_len += pb_varint_size(ids[d] + id_bias);
    for (size_t i = 0; i < nvalues; i++)
        values_len += pb_varint_size(values[i]);
    size_t msg_len =
        1 + pb_varint_size(locs_len) + locs_len + 1 + pb_varint_size(values_len) + values_len;
    if (buf_reserve(out, 1 + pb_varint_size(msg_len) + msg_len) < 0) return -1;
    uint8_t *p = (uint8_t *)out->data + out->len;
    *p++ = pb_tag(PB_PROFILE_SAMPLE, PB_LEN);
    p = pb_put_varint(p, msg_len);
    *p++ = pb_tag(1, PB_LEN); /* location_id, packed */
    p = pb_put_varint(p, locs_len);
    for (uint32_t d = 0; d < depth; d++)
        p = pb_put_varint(p, ids[d] + id_bias);
    *p++ = pb_tag(2, PB_LEN); /* value, packed */
    p = pb_put_varint(p, values_len);
    for (size_t i = 0; i < nvalues; i++)
        p = pb_put_varint(p, values[i]);
    out->len = (size_t)(p - (uint8_t *)out->data);
    out->data[out->len] = '\0';
    return 0;
}

/* The one Mapping: PB_PPROF_MAPPING_ID, named `filename`, flagged as having functions, file
 * names and line numbers, which tells pprof the profile is already symbolized. */
static inline int pb_emit_python_mapping(struct buf *out, uint64_t filename)
{
    struct pb_small_msg m = {.n = 0};
    pb_small_varint_field(&m, 1, PB_PPROF_MAPPING_ID);
    pb_small_varint_field(&m, 5, filename);
    for (unsigned field = 7; field <= 9; field++) /* has_functions, _filenames, _line_numbers */
        pb_small_varint_field(&m, field, 1);
    return pb_emit_small(out, PB_PROFILE_MAPPING, &m);
}

/* A Location of the one Mapping with its one Line (function_id, line). */
static inline int pb_emit_location(struct buf *out, uint64_t id, uint64_t function_id, int64_t line)
{
    struct pb_small_msg ln = {.n = 0}, loc = {.n = 0};
    pb_small_varint_field(&ln, 1, function_id);
    pb_small_varint_field(&ln, 2, (uint64_t)line);
    pb_small_varint_field(&loc, 1, id);
    pb_small_varint_field(&loc, 2, PB_PPROF_MAPPING_ID);
    pb_small_nested_field(&loc, 4, &ln);
    return pb_emit_small(out, PB_PROFILE_LOCATION, &loc);
}

/* A Function; system_name repeats name (Python has one name only). */
static inline int pb_emit_function(struct buf *out, uint64_t id, uint64_t name, uint64_t file)
{
    struct pb_small_msg m = {.n = 0};
    pb_small_varint_field(&m, 1, id);
    pb_small_varint_field(&m, 2, name);
    pb_small_varint_field(&m, 3, name);
    pb_small_varint_field(&m, 4, file);
    return pb_emit_small(out, PB_PROFILE_FUNCTION, &m);
}

/* Appends `len` bytes gzipped (one zlib gzip stream, windowBits 15 + 16) to out. */
static inline int pb_gzip_append(const void *data, size_t len, struct buf *out, struct cp_err *err)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    int zrc = deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    if (zrc != Z_OK) {
        cp_err_set(err, CP_ERR_NOMEM, "zlib deflateInit2 failed (%d)", zrc);
        return -1;
    }
    size_t len_before = out->len;
    const uint8_t *in = data;
    size_t left = len;
    do {
        size_t chunk = left < UINT_MAX ? left : UINT_MAX;
        z.next_in = (Bytef *)(uintptr_t)in;
        z.avail_in = (uInt)chunk;
        in += chunk;
        left -= chunk;
        int flush = left ? Z_NO_FLUSH : Z_FINISH;
        do {
            size_t room = deflateBound(&z, z.avail_in) + 64;
            if (buf_reserve(out, room) < 0) {
                zrc = Z_MEM_ERROR;
                break;
            }
            size_t avail = out->cap - out->len - 1;
            z.next_out = (Bytef *)out->data + out->len;
            z.avail_out = (uInt)(avail < UINT_MAX ? avail : UINT_MAX);
            uInt out_before = z.avail_out;
            zrc = deflate(&z, flush);
            out->len += out_before - z.avail_out;
        } while (zrc == Z_OK && (z.avail_in || (flush == Z_FINISH && zrc != Z_STREAM_END)));
    } while (left && zrc == Z_OK);
    deflateEnd(&z);
    if (zrc != Z_STREAM_END) {
        out->len = len_before;
        if (out->data) out->data[out->len] = '\0';
        cp_err_set(err, CP_ERR_NOMEM, "gzip compression of the pprof profile failed (zlib %d)",
                   zrc);
        return -1;
    }
    out->data[out->len] = '\0';
    return 0;
}

#endif
