/* pprof_read: decompression and a bounded, validating decoder of perftools.profiles.Profile.
 *
 * Decompression streams into the caller's buf in chunks and never lets the output grow past
 * max_out + 1 bytes, so a bomb is caught after max_out bytes of work, not after memory runs out.
 *
 * Decoding is three passes over the top-level fields, because protobuf fields may come in any
 * order (a sample may precede the locations and strings it names). Pass 1 only counts (and checks
 * wire types and bounds), so every array is allocated once at its final size. Pass 2 copies the
 * string table and reads sample types, functions and locations with their raw indices. Between
 * passes 2 and 3 every reference is resolved once: functions and locations are sorted by id
 * (lookups are then a direct index when ids are dense 1..N, as every writer makes them, else a
 * binary search), duplicate or zero ids are rejected, and each location becomes its run of frames
 * (one per line, innermost first). Pass 3 reads the samples and copies their locations' frames.
 * Unknown fields are skipped without descending into them, so nesting is bounded by the schema
 * (Profile > Location > Line). Every count has a limit named in pprof_read.h.
 */
#include "pprof_read.h"

#include "pbwire.h" /* wire types and Profile field numbers, shared with the writers */

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

/* ---- decompression ------------------------------------------------------------------------ */

#define CHUNK (256u << 10)

/* Reserves the next output window: at most CHUNK bytes, never more than max_out + 1 in total
 * (one byte over the limit is how a bomb is noticed). */
static int next_window(struct buf *out, size_t start, size_t max_out, size_t *room,
                       struct cp_err *err)
{
    size_t produced = out->len - start;
    if (produced > max_out) {
        cp_err_set(err, CP_ERR_INVALID, "profile decompresses to more than %zu bytes (the limit)",
                   max_out);
        return -1;
    }
    *room = max_out + 1 - produced;
    if (*room > CHUNK) *room = CHUNK;
    if (buf_reserve(out, *room) < 0) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory decompressing a profile");
        return -1;
    }
    return 0;
}

static int only_zeros(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static int gunzip_stream(z_stream *zs, const uint8_t *in, size_t len, size_t start, size_t max_out,
                         struct buf *out, struct cp_err *err)
{
    for (;;) {
        size_t room;
        if (next_window(out, start, max_out, &room, err) < 0) return -1;
        zs->next_out = (Bytef *)out->data + out->len;
        zs->avail_out = (uInt)room;
        int rc = inflate(zs, Z_NO_FLUSH);
        out->len += room - zs->avail_out;
        out->data[out->len] = '\0';
        size_t used = (size_t)(zs->next_in - (const Bytef *)in);
        if (rc == Z_STREAM_END) {
            if (used == len || only_zeros(in + used, len - used)) return 0;
            if (len - used < 2 || in[used] != 0x1f || in[used + 1] != 0x8b) {
                cp_err_set(err, CP_ERR_INVALID, "gzip: %zu bytes of garbage after the data",
                           len - used);
                return -1;
            }
            inflateReset(zs); /* another gzip member follows */
        } else if (rc == Z_BUF_ERROR && zs->avail_in == 0 && zs->avail_out > 0) {
            cp_err_set(err, CP_ERR_INVALID, "gzip: truncated data (%zu bytes)", len);
            return -1;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            cp_err_set(err, CP_ERR_INVALID, "gzip: %s", zs->msg ? zs->msg : "corrupt data");
            return -1;
        }
    }
}

static int gunzip(const uint8_t *in, size_t len, size_t max_out, struct buf *out,
                  struct cp_err *err)
{
    if (len > UINT_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "gzip: %zu bytes is too large", len);
        return -1;
    }
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 16) != Z_OK) {
        cp_err_set(err, CP_ERR_NOMEM, "gzip: cannot initialise zlib");
        return -1;
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    int rc = gunzip_stream(&zs, in, len, out->len, max_out, out, err);
    inflateEnd(&zs);
    return rc;
}

static int unzstd(const uint8_t *in, size_t len, size_t max_out, struct buf *out,
                  struct cp_err *err)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx) {
        cp_err_set(err, CP_ERR_NOMEM, "zstd: cannot create a decompression context");
        return -1;
    }
    ZSTD_inBuffer ib = {in, len, 0};
    size_t start = out->len;
    int rc = -1;
    for (;;) {
        size_t room;
        if (next_window(out, start, max_out, &room, err) < 0) break;
        ZSTD_outBuffer ob = {out->data + out->len, room, 0};
        size_t in_before = ib.pos;
        size_t r = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(r)) {
            cp_err_set(err, CP_ERR_INVALID, "zstd: %s", ZSTD_getErrorName(r));
            break;
        }
        out->len += ob.pos;
        out->data[out->len] = '\0';
        if (r == 0 && ib.pos == ib.size) {
            rc = 0;
            break;
        }
        if (ob.pos < room && (ib.pos == ib.size || (ob.pos == 0 && ib.pos == in_before))) {
            cp_err_set(err, CP_ERR_INVALID, "zstd: truncated data (%zu bytes)", len);
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return rc;
}

int pprof_decompress(const uint8_t *in, size_t len, size_t max_out, struct buf *out,
                     struct cp_err *err)
{
    size_t start = out->len;
    int rc;
    if (len >= 2 && in[0] == 0x1f && in[1] == 0x8b) {
        rc = gunzip(in, len, max_out, out, err);
    } else if (len >= 4 && in[0] == 0x28 && in[1] == 0xb5 && in[2] == 0x2f && in[3] == 0xfd) {
        rc = unzstd(in, len, max_out, out, err);
    } else if (len >= 4 && in[0] == 0x04 && in[1] == 0x22 && in[2] == 0x4d && in[3] == 0x18) {
        cp_err_set(err, CP_ERR_INVALID,
                   "lz4-compressed profiles are not supported: send gzip, zstd or raw protobuf");
        rc = -1;
    } else if (len > max_out) {
        cp_err_set(err, CP_ERR_INVALID, "profile of %zu bytes is over the %zu-byte limit", len,
                   max_out);
        rc = -1;
    } else {
        rc = buf_append(out, in, len);
        if (rc < 0) cp_err_set(err, CP_ERR_NOMEM, "out of memory copying a profile");
    }
    if (rc < 0 && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc;
}

/* ---- protobuf wire reading ---------------------------------------------------------------- */

struct pb {
    const uint8_t *p, *end;
};

struct pb_field {
    uint32_t num;
    int wire;
    uint64_t v;     /* PB_VARINT / fixed values */
    struct pb body; /* PB_LEN */
};

static int pb_varint(struct pb *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        if (shift == 63 && (b & 0x7e)) return -1; /* more than 64 bits */
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

static int pb_fixed(struct pb *r, size_t n, uint64_t *v)
{
    if ((size_t)(r->end - r->p) < n) return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    *v = x;
    return 0;
}

/* 1: a field was read; 0: end of the message; -1: malformed. */
static int pb_next(struct pb *r, struct pb_field *f)
{
    if (r->p >= r->end) return 0;
    uint64_t key, n;
    if (pb_varint(r, &key) < 0) return -1;
    if ((key >> 3) == 0 || (key >> 3) > 536870911u) return -1;
    f->num = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    f->v = 0;
    switch (f->wire) {
    case PB_VARINT:
        return pb_varint(r, &f->v) < 0 ? -1 : 1;
    case PB_FIXED64:
        return pb_fixed(r, 8, &f->v) < 0 ? -1 : 1;
    case PB_FIXED32:
        return pb_fixed(r, 4, &f->v) < 0 ? -1 : 1;
    case PB_LEN:
        if (pb_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p)) return -1;
        f->body.p = r->p;
        f->body.end = r->p + n;
        r->p += n;
        return 1;
    default:
        return -1; /* groups (3, 4) and reserved wire types */
    }
}

/* ---- the decoder -------------------------------------------------------------------------- */

struct raw_function {
    uint64_t id;
    int64_t name, system_name, filename;
};

struct raw_line {
    uint64_t function_id;
    int64_t line;
};

struct raw_location {
    uint64_t id, address;
    size_t first_line, first_frame;
    uint32_t nlines, nframes;
};

struct decoder {
    const uint8_t *base;
    struct cp_err *err;
    struct pprof_decoded *out;
    size_t nstring_bytes;
    int64_t *type_idx; /* 2 per sample type: type, unit */
    int64_t period_type_idx[2];
    struct raw_function *funcs;
    size_t nfuncs;
    struct raw_location *locs;
    size_t nlocs;
    struct raw_line *lines;
    size_t nlines, lines_cap;
    struct pprof_frame *loc_frames; /* per location, nframes each */
    size_t frames_cap;
};

static int malformed(struct decoder *d, const struct pb *r, const char *what)
{
    cp_err_set(d->err, CP_ERR_INVALID, "malformed protobuf in %s near byte %zu", what,
               (size_t)(r->p - d->base));
    return -1;
}

static int too_many(struct decoder *d, const char *what, size_t limit)
{
    cp_err_set(d->err, CP_ERR_INVALID, "more than %zu %s (the limit)", limit, what);
    return -1;
}

static int no_memory(struct decoder *d)
{
    cp_err_set(d->err, CP_ERR_NOMEM, "out of memory decoding the profile");
    return -1;
}

static int expect_wire(struct decoder *d, const struct pb_field *f, int wire, const char *what)
{
    if (f->wire == wire) return 0;
    cp_err_set(d->err, CP_ERR_INVALID,
               "malformed protobuf: %s (field %u) has wire type %d, expected %d", what, f->num,
               f->wire, wire);
    return -1;
}

/* Pass 1: counts and scalar fields. */
static int count_fields(struct decoder *d, struct pb r)
{
    struct pprof_decoded *o = d->out;
    struct pb_field f;
    int got;
    size_t nsamples = 0;
    while ((got = pb_next(&r, &f)) == 1) {
        int len_field = f.num == PB_PROFILE_SAMPLE_TYPE || f.num == PB_PROFILE_SAMPLE ||
                        f.num == PB_PROFILE_LOCATION || f.num == PB_PROFILE_FUNCTION ||
                        f.num == PB_PROFILE_STRING_TABLE || f.num == PB_PROFILE_PERIOD_TYPE;
        int int_field = f.num == PB_PROFILE_TIME_NANOS || f.num == PB_PROFILE_DURATION_NANOS ||
                        f.num == PB_PROFILE_PERIOD;
        if (len_field && expect_wire(d, &f, PB_LEN, "a Profile field") < 0) return -1;
        if (int_field && expect_wire(d, &f, PB_VARINT, "a Profile number") < 0) return -1;
        switch (f.num) {
        case PB_PROFILE_SAMPLE_TYPE:
            if (++o->ntypes > PPROF_READ_MAX_SAMPLE_TYPES)
                return too_many(d, "sample types", PPROF_READ_MAX_SAMPLE_TYPES);
            break;
        case PB_PROFILE_SAMPLE:
            if (++nsamples > PPROF_READ_MAX_SAMPLES)
                return too_many(d, "samples", PPROF_READ_MAX_SAMPLES);
            break;
        case PB_PROFILE_LOCATION:
            if (++d->nlocs > PPROF_READ_MAX_LOCATIONS)
                return too_many(d, "locations", PPROF_READ_MAX_LOCATIONS);
            break;
        case PB_PROFILE_FUNCTION:
            if (++d->nfuncs > PPROF_READ_MAX_FUNCTIONS)
                return too_many(d, "functions", PPROF_READ_MAX_FUNCTIONS);
            break;
        case PB_PROFILE_STRING_TABLE:
            if (++o->nstrings > PPROF_READ_MAX_STRINGS)
                return too_many(d, "strings", PPROF_READ_MAX_STRINGS);
            d->nstring_bytes += (size_t)(f.body.end - f.body.p) + 1;
            break;
        case PB_PROFILE_TIME_NANOS:
            o->time_nanos = (int64_t)f.v;
            break;
        case PB_PROFILE_DURATION_NANOS:
            o->duration_nanos = (int64_t)f.v;
            break;
        case PB_PROFILE_PERIOD:
            o->period = (int64_t)f.v;
            break;
        default:
            break;
        }
    }
    if (got < 0) return malformed(d, &r, "the Profile");
    if (o->ntypes && nsamples > PPROF_READ_MAX_VALUES / o->ntypes)
        return too_many(d, "sample values", PPROF_READ_MAX_VALUES);
    o->nsamples = nsamples;
    return 0;
}

static int allocate_tables(struct decoder *d)
{
    struct pprof_decoded *o = d->out;
    size_t nstrings = o->nstrings ? o->nstrings : 1;
    o->strings_mem = malloc(d->nstring_bytes + 1);
    o->strings = calloc(nstrings, sizeof *o->strings);
    o->type_names = calloc(o->ntypes + 1, sizeof *o->type_names);
    o->type_units = calloc(o->ntypes + 1, sizeof *o->type_units);
    d->type_idx = calloc(2 * o->ntypes + 1, sizeof *d->type_idx);
    d->funcs = calloc(d->nfuncs + 1, sizeof *d->funcs);
    d->locs = calloc(d->nlocs + 1, sizeof *d->locs);
    o->samples = calloc(o->nsamples + 1, sizeof *o->samples);
    o->values_mem = calloc(o->nsamples * o->ntypes + 1, sizeof *o->values_mem);
    if (!o->strings_mem || !o->strings || !o->type_names || !o->type_units || !d->type_idx ||
        !d->funcs || !d->locs || !o->samples || !o->values_mem)
        return no_memory(d);
    if (!o->nstrings) {
        o->strings_mem[0] = '\0';
        o->strings[0] = o->strings_mem;
        o->nstrings = 1;
    }
    return 0;
}

/* Reads a message made only of varint fields numbered 1..nfields into vals[] (others skipped). */
static int read_varints(struct decoder *d, struct pb r, int64_t *vals, uint32_t nfields,
                        const char *what)
{
    struct pb_field f;
    int got;
    while ((got = pb_next(&r, &f)) == 1) {
        if (f.num > nfields) continue;
        if (expect_wire(d, &f, PB_VARINT, what) < 0) return -1;
        vals[f.num - 1] = (int64_t)f.v;
    }
    return got < 0 ? malformed(d, &r, what) : 0;
}

static int append_line(struct decoder *d, const struct raw_line *line)
{
    if (d->nlines >= PPROF_READ_MAX_LINES_TOTAL)
        return too_many(d, "lines over all locations", PPROF_READ_MAX_LINES_TOTAL);
    if (d->nlines == d->lines_cap) {
        size_t cap = d->lines_cap ? 2 * d->lines_cap : 1024;
        struct raw_line *p = realloc(d->lines, cap * sizeof *p);
        if (!p) return no_memory(d);
        d->lines = p;
        d->lines_cap = cap;
    }
    d->lines[d->nlines++] = *line;
    return 0;
}

static int read_location(struct decoder *d, struct pb r, struct raw_location *loc)
{
    struct pb_field f;
    int got;
    loc->first_line = d->nlines;
    while ((got = pb_next(&r, &f)) == 1) {
        if (f.num == 1 || f.num == 3) {
            if (expect_wire(d, &f, PB_VARINT, "a Location number") < 0) return -1;
            if (f.num == 1)
                loc->id = f.v;
            else
                loc->address = f.v;
        } else if (f.num == 4) {
            if (expect_wire(d, &f, PB_LEN, "a Location line") < 0) return -1;
            if (++loc->nlines > PPROF_READ_MAX_LINES)
                return too_many(d, "lines in one location", PPROF_READ_MAX_LINES);
            int64_t vals[3] = {0, 0, 0};
            if (read_varints(d, f.body, vals, 3, "a Line") < 0) return -1;
            struct raw_line line = {(uint64_t)vals[0], vals[1]};
            if (append_line(d, &line) < 0) return -1;
        }
    }
    return got < 0 ? malformed(d, &r, "a Location") : 0;
}

/* Pass 2: strings, sample types, period type, functions, locations. */
static int read_tables(struct decoder *d, struct pb r)
{
    struct pprof_decoded *o = d->out;
    struct pb_field f;
    size_t nstr = 0, ntypes = 0, nfuncs = 0, nlocs = 0, used = 0;
    while (pb_next(&r, &f) == 1) {
        if (f.num == PB_PROFILE_STRING_TABLE) {
            size_t n = (size_t)(f.body.end - f.body.p);
            memcpy(o->strings_mem + used, f.body.p, n);
            o->strings_mem[used + n] = '\0';
            o->strings[nstr++] = o->strings_mem + used;
            used += n + 1;
        } else if (f.num == PB_PROFILE_SAMPLE_TYPE) {
            if (read_varints(d, f.body, d->type_idx + 2 * ntypes++, 2, "a sample_type") < 0)
                return -1;
        } else if (f.num == PB_PROFILE_PERIOD_TYPE) {
            if (read_varints(d, f.body, d->period_type_idx, 2, "the period_type") < 0) return -1;
        } else if (f.num == PB_PROFILE_FUNCTION) {
            int64_t vals[4] = {0, 0, 0, 0};
            if (read_varints(d, f.body, vals, 4, "a Function") < 0) return -1;
            d->funcs[nfuncs++] =
                (struct raw_function){(uint64_t)vals[0], vals[1], vals[2], vals[3]};
        } else if (f.num == PB_PROFILE_LOCATION) {
            if (read_location(d, f.body, &d->locs[nlocs++]) < 0) return -1;
        }
    }
    if (o->nstrings && nstr && o->strings[0][0] != '\0') {
        cp_err_set(d->err, CP_ERR_INVALID, "string_table[0] must be \"\"");
        return -1;
    }
    return 0;
}

static int string_at(struct decoder *d, int64_t idx, const char **s, const char *what, size_t n)
{
    if (idx < 0 || (uint64_t)idx >= d->out->nstrings) {
        cp_err_set(d->err, CP_ERR_INVALID,
                   "%s %zu names string %" PRId64 " but the string table has %zu entries", what, n,
                   idx, d->out->nstrings);
        return -1;
    }
    *s = d->out->strings[idx];
    return 0;
}

static int resolve_types(struct decoder *d)
{
    struct pprof_decoded *o = d->out;
    for (size_t i = 0; i < o->ntypes; i++) {
        if (string_at(d, d->type_idx[2 * i], &o->type_names[i], "sample_type", i) < 0 ||
            string_at(d, d->type_idx[2 * i + 1], &o->type_units[i], "sample_type", i) < 0)
            return -1;
    }
    if (string_at(d, d->period_type_idx[0], &o->period_type, "period_type", 0) < 0 ||
        string_at(d, d->period_type_idx[1], &o->period_unit, "period_type", 0) < 0)
        return -1;
    return 0;
}

static int by_function_id(const void *a, const void *b)
{
    uint64_t x = ((const struct raw_function *)a)->id, y = ((const struct raw_function *)b)->id;
    return x < y ? -1 : x > y;
}

static int by_location_id(const void *a, const void *b)
{
    uint64_t x = ((const struct raw_location *)a)->id, y = ((const struct raw_location *)b)->id;
    return x < y ? -1 : x > y;
}

/* Checks ids (sorted array of n records of `size` bytes, id first): non-zero and unique. */
static int check_ids(struct decoder *d, const void *arr, size_t n, size_t size, const char *what)
{
    const uint8_t *p = arr;
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t id;
        memcpy(&id, p + i * size, sizeof id);
        if (id == 0 || (i > 0 && id == prev)) {
            cp_err_set(d->err, CP_ERR_INVALID, "%s id %" PRIu64 " is %s", what, id,
                       id == 0 ? "zero" : "used twice");
            return -1;
        }
        prev = id;
    }
    return 0;
}

static const struct raw_function *find_function(const struct decoder *d, uint64_t id)
{
    if (id >= 1 && id <= d->nfuncs && d->funcs[id - 1].id == id) return &d->funcs[id - 1];
    struct raw_function key = {.id = id};
    return bsearch(&key, d->funcs, d->nfuncs, sizeof key, by_function_id);
}

static long find_location(const struct decoder *d, uint64_t id)
{
    if (id >= 1 && id <= d->nlocs && d->locs[id - 1].id == id) return (long)(id - 1);
    struct raw_location key = {.id = id};
    const struct raw_location *l = bsearch(&key, d->locs, d->nlocs, sizeof key, by_location_id);
    return l ? (long)(l - d->locs) : -1;
}

static int line_frame(struct decoder *d, const struct raw_location *loc, const struct raw_line *ln,
                      struct pprof_frame *fr)
{
    fr->function = fr->file = d->out->strings[0];
    fr->line = ln->line;
    if (ln->function_id == 0) return 0;
    const struct raw_function *fn = find_function(d, ln->function_id);
    if (!fn) {
        cp_err_set(d->err, CP_ERR_INVALID,
                   "location %" PRIu64 " names function %" PRIu64 " which does not exist", loc->id,
                   ln->function_id);
        return -1;
    }
    int64_t name = fn->name ? fn->name : fn->system_name;
    if (string_at(d, name, &fr->function, "function", (size_t)fn->id) < 0 ||
        string_at(d, fn->filename, &fr->file, "function", (size_t)fn->id) < 0)
        return -1;
    return 0;
}

/* Turns each location into its frames (lineless ones into one frame named by the address). */
static int resolve_locations(struct decoder *d)
{
    struct pprof_decoded *o = d->out;
    size_t nframes = 0, nlineless = 0;
    for (size_t i = 0; i < d->nlocs; i++) {
        nframes += d->locs[i].nlines ? d->locs[i].nlines : 1;
        nlineless += d->locs[i].nlines == 0;
    }
    d->loc_frames = calloc(nframes + 1, sizeof *d->loc_frames);
    o->addr_mem = calloc(nlineless * 19 + 1, 1);
    if (!d->loc_frames || !o->addr_mem) return no_memory(d);
    size_t next = 0, next_addr = 0;
    for (size_t i = 0; i < d->nlocs; i++) {
        struct raw_location *loc = &d->locs[i];
        loc->first_frame = next;
        loc->nframes = loc->nlines ? loc->nlines : 1;
        if (!loc->nlines) {
            char *name = o->addr_mem + 19 * next_addr++;
            snprintf(name, 19, "0x%" PRIx64, loc->address);
            d->loc_frames[next++] = (struct pprof_frame){name, o->strings[0], 0};
            continue;
        }
        for (uint32_t k = 0; k < loc->nlines; k++)
            if (line_frame(d, loc, &d->lines[loc->first_line + k], &d->loc_frames[next++]) < 0)
                return -1;
    }
    return 0;
}

static int resolve_tables(struct decoder *d)
{
    if (resolve_types(d) < 0) return -1;
    qsort(d->funcs, d->nfuncs, sizeof *d->funcs, by_function_id);
    qsort(d->locs, d->nlocs, sizeof *d->locs, by_location_id);
    if (check_ids(d, d->funcs, d->nfuncs, sizeof *d->funcs, "function") < 0 ||
        check_ids(d, d->locs, d->nlocs, sizeof *d->locs, "location") < 0)
        return -1;
    return resolve_locations(d);
}

static int append_frames(struct decoder *d, const struct raw_location *loc)
{
    struct pprof_decoded *o = d->out;
    if (o->nframes + loc->nframes > PPROF_READ_MAX_FRAMES)
        return too_many(d, "frames over all samples", PPROF_READ_MAX_FRAMES);
    if (o->nframes + loc->nframes > d->frames_cap) {
        size_t cap = d->frames_cap ? 2 * d->frames_cap : 4096;
        while (cap < o->nframes + loc->nframes)
            cap *= 2;
        struct pprof_frame *p = realloc(o->frames, cap * sizeof *p);
        if (!p) return no_memory(d);
        o->frames = p;
        d->frames_cap = cap;
    }
    memcpy(o->frames + o->nframes, d->loc_frames + loc->first_frame,
           loc->nframes * sizeof *o->frames);
    o->nframes += loc->nframes;
    return 0;
}

static int sample_location(struct decoder *d, size_t index, uint64_t id, uint32_t *nlocs)
{
    if (++*nlocs > PPROF_READ_MAX_DEPTH) {
        cp_err_set(d->err, CP_ERR_INVALID, "sample %zu is deeper than %u locations", index,
                   PPROF_READ_MAX_DEPTH);
        return -1;
    }
    long at = find_location(d, id);
    if (at < 0) {
        cp_err_set(d->err, CP_ERR_INVALID,
                   "sample %zu names location %" PRIu64 " which does not exist", index, id);
        return -1;
    }
    return append_frames(d, &d->locs[at]);
}

static int sample_value(struct decoder *d, size_t index, uint64_t v, size_t *nvalues)
{
    struct pprof_decoded *o = d->out;
    if (*nvalues >= o->ntypes) {
        cp_err_set(d->err, CP_ERR_INVALID, "sample %zu has more values than the %zu sample types",
                   index, o->ntypes);
        return -1;
    }
    o->values_mem[index * o->ntypes + (*nvalues)++] = (int64_t)v;
    return 0;
}

/* Field 1 (location ids) or 2 (values), packed or not. */
static int sample_numbers(struct decoder *d, size_t index, const struct pb_field *f,
                          uint32_t *nlocs, size_t *nvalues)
{
    struct pb packed = f->body;
    uint64_t v = f->v;
    if (f->wire != PB_VARINT && f->wire != PB_LEN)
        return expect_wire(d, f, PB_LEN, "a Sample number list");
    for (;;) {
        if (f->wire == PB_LEN) {
            if (packed.p >= packed.end) return 0;
            if (pb_varint(&packed, &v) < 0) return malformed(d, &packed, "a packed Sample list");
        }
        int rc =
            f->num == 1 ? sample_location(d, index, v, nlocs) : sample_value(d, index, v, nvalues);
        if (rc < 0 || f->wire == PB_VARINT) return rc;
    }
}

static int read_sample(struct decoder *d, size_t index, struct pb r)
{
    struct pprof_decoded *o = d->out;
    struct pprof_sample *s = &o->samples[index];
    struct pb_field f;
    int got;
    uint32_t nlocs = 0;
    size_t nvalues = 0;
    s->first_frame = o->nframes;
    s->values = o->values_mem + index * o->ntypes;
    while ((got = pb_next(&r, &f)) == 1) {
        if ((f.num == 1 || f.num == 2) && sample_numbers(d, index, &f, &nlocs, &nvalues) < 0)
            return -1;
    }
    if (got < 0) return malformed(d, &r, "a Sample");
    if (nvalues != o->ntypes) {
        cp_err_set(d->err, CP_ERR_INVALID, "sample %zu has %zu values for %zu sample types", index,
                   nvalues, o->ntypes);
        return -1;
    }
    s->depth = (uint32_t)(o->nframes - s->first_frame);
    return 0;
}

/* Pass 3. */
static int read_samples(struct decoder *d, struct pb r)
{
    struct pb_field f;
    size_t n = 0;
    while (pb_next(&r, &f) == 1)
        if (f.num == PB_PROFILE_SAMPLE && read_sample(d, n++, f.body) < 0) return -1;
    return 0;
}

static void decoder_free(struct decoder *d)
{
    free(d->type_idx);
    free(d->funcs);
    free(d->locs);
    free(d->lines);
    free(d->loc_frames);
}

int pprof_decode(const uint8_t *pb, size_t len, struct pprof_decoded *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    struct decoder d = {.base = pb, .err = err, .out = out};
    struct pb r = {pb, pb + len};
    int rc = -1;
    if (count_fields(&d, r) == 0 && allocate_tables(&d) == 0 && read_tables(&d, r) == 0 &&
        resolve_tables(&d) == 0 && read_samples(&d, r) == 0)
        rc = 0;
    decoder_free(&d);
    if (rc < 0) pprof_decoded_free(out);
    return rc;
}

void pprof_decoded_free(struct pprof_decoded *p)
{
    free(p->type_names);
    free(p->type_units);
    free(p->frames);
    free(p->samples);
    free(p->strings_mem);
    free(p->strings);
    free(p->values_mem);
    free(p->addr_mem);
    memset(p, 0, sizeof *p);
}

static int64_t add_saturating(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
    return a + b;
}

void pprof_decoded_totals(const struct pprof_decoded *p, int64_t *totals)
{
    for (size_t t = 0; t < p->ntypes; t++)
        totals[t] = 0;
    for (size_t i = 0; i < p->nsamples; i++)
        for (size_t t = 0; t < p->ntypes; t++)
            totals[t] = add_saturating(totals[t], p->samples[i].values[t]);
}
