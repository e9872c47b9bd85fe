/* Unit tests of control/pprof_read.c.
 *
 * Real profiles: tests/unit/fixtures/ingest/ holds pprofs written by Go's runtime/pprof (a CPU
 * profile with an inlined call, a heap profile with four sample types; gen_go_profiles.go) and by
 * `conprof-agent record --format pprof`, gzip as their writers made them and one recompressed by
 * the zstd CLI, each next to what `go tool pprof -raw` printed for it. Every decoded sample is
 * checked against that text: values, and frame by frame function, file and line (pprof's own
 * reading of the same bytes). Hand-built protobufs check each validation error and both the
 * packed and unpacked encodings; truncations and bit flips of a real profile must never crash.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pprof_read.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define FIXTURES "tests/unit/fixtures/ingest/"

/* ---- fixtures ----------------------------------------------------------------------------- */

static FILE *open_fixture(const char *name)
{
    char path[4096];
    const char *self = __FILE__, *tail = strstr(self, "tests/unit/test_pprof_read.c");
    snprintf(path, sizeof path, "%.*s" FIXTURES "%s", tail ? (int)(tail - self) : 0, self, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(path, sizeof path, FIXTURES "%s", name);
        f = fopen(path, "r");
    }
    if (!f) fail_msg("cannot open fixture %s (run from the repository root)", name);
    return f;
}

static void read_fixture(const char *name, struct buf *out)
{
    FILE *f = open_fixture(name);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(out, chunk, n), 0);
    fclose(f);
}

static void load_profile(const char *name, struct buf *pb)
{
    struct buf packed = {0};
    struct cp_err err;
    read_fixture(name, &packed);
    if (pprof_decompress((const uint8_t *)packed.data, packed.len, PPROF_READ_MAX_DECOMPRESSED, pb,
                         &err) < 0)
        fail_msg("%s: %s", name, err.msg);
    buf_free(&packed);
}

/* ---- `go tool pprof -raw` text -------------------------------------------------------------- */

#define RAW_MAX 256

struct raw_line {
    char function[256], file[512];
    long line;
};

struct raw_location {
    unsigned long id;
    int nlines;
    struct raw_line lines[8];
};

struct raw_sample {
    int64_t values[8];
    int nvalues;
    unsigned long locs[128];
    int nlocs;
};

struct raw_profile {
    char types[8][64];
    int ntypes;
    long period;
    struct raw_sample samples[RAW_MAX];
    int nsamples;
    struct raw_location locs[RAW_MAX];
    int nlocs;
};

/* "name file:line s=N[(system name)]": pprof shows the system name in parentheses when its
 * demangler rewrote the name ("<module>" becomes ""), and the decoder reports the original. */
static void parse_raw_line(char *text, struct raw_line *l)
{
    char *s = strstr(text, " s=");
    assert_non_null(s);
    char *paren = strchr(s, '(');
    *s = '\0';
    char *colon = strrchr(text, ':');
    assert_non_null(colon);
    *colon = '\0';
    l->line = atol(colon + 1);
    char *space = strchr(text, ' ');
    assert_non_null(space);
    *space = '\0';
    snprintf(l->function, sizeof l->function, "%s", text);
    snprintf(l->file, sizeof l->file, "%s", space + 1);
    if (paren) {
        char *close = strrchr(paren, ')');
        assert_non_null(close);
        *close = '\0';
        snprintf(l->function, sizeof l->function, "%s", paren + 1);
    }
}

static void parse_raw_sample(char *line, struct raw_sample *s)
{
    char *colon = strchr(line, ':'), *p = line;
    *colon = '\0';
    for (char *end; s->nvalues < 8; p = end) {
        long long v = strtoll(p, &end, 10);
        if (end == p) break;
        s->values[s->nvalues++] = v;
    }
    p = colon + 1;
    for (char *end; s->nlocs < 128; p = end) {
        unsigned long id = strtoul(p, &end, 10);
        if (end == p) break;
        s->locs[s->nlocs++] = id;
    }
}

static void parse_raw_location_line(char *line, struct raw_profile *r)
{
    char *p = line;
    while (*p == ' ')
        p++;
    char *after_id;
    unsigned long id = strtoul(p, &after_id, 10);
    if (after_id != p && *after_id == ':') { /* "   3: 0x4b0dcf M=1 name file:line s=0" */
        struct raw_location *loc = &r->locs[r->nlocs++];
        loc->id = id;
        char *m = strstr(after_id, " M=");
        assert_non_null(m);
        char *rest = strchr(m + 1, ' ');
        if (rest && strstr(rest, " s=")) parse_raw_line(rest + 1, &loc->lines[loc->nlines++]);
    } else { /* an inlined caller of the location above */
        struct raw_location *loc = &r->locs[r->nlocs - 1];
        parse_raw_line(p, &loc->lines[loc->nlines++]);
    }
}

static void load_raw(const char *name, struct raw_profile *r)
{
    memset(r, 0, sizeof *r);
    FILE *f = open_fixture(name);
    char line[8192];
    enum { HEAD, TYPES, SAMPLES, LOCATIONS, MAPPINGS } state = HEAD;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (state == HEAD && strncmp(line, "Period: ", 8) == 0) r->period = atol(line + 8);
        if (strcmp(line, "Samples:") == 0) {
            state = TYPES;
        } else if (strcmp(line, "Locations") == 0) {
            state = LOCATIONS;
        } else if (strcmp(line, "Mappings") == 0) {
            state = MAPPINGS;
        } else if (state == TYPES) {
            for (char *t = strtok(line, " "); t && r->ntypes < 8; t = strtok(NULL, " "))
                snprintf(r->types[r->ntypes++], sizeof r->types[0], "%s", t);
            state = SAMPLES;
        } else if (state == SAMPLES) {
            char *p = line + strspn(line, " ");
            if (isdigit((unsigned char)*p) || *p == '-') {
                assert_true(r->nsamples < RAW_MAX);
                parse_raw_sample(line, &r->samples[r->nsamples++]);
            }
        } else if (state == LOCATIONS && line[0]) {
            assert_true(r->nlocs < RAW_MAX);
            parse_raw_location_line(line, r);
        }
    }
    fclose(f);
    assert_true(r->nsamples > 0);
    assert_true(r->nlocs > 0);
}

static const struct raw_location *raw_loc(const struct raw_profile *r, unsigned long id)
{
    for (int i = 0; i < r->nlocs; i++)
        if (r->locs[i].id == id) return &r->locs[i];
    fail_msg("raw text has no location %lu", id);
    return NULL;
}

/* Every sample's values and frames equal what pprof printed. */
static void check_against_raw(const struct pprof_decoded *d, const struct raw_profile *r)
{
    assert_int_equal(d->ntypes, r->ntypes);
    for (size_t t = 0; t < d->ntypes; t++) {
        char both[160];
        snprintf(both, sizeof both, "%s/%s", d->type_names[t], d->type_units[t]);
        assert_string_equal(both, r->types[t]);
    }
    assert_int_equal(d->period, r->period);
    int i = 0; /* pprof drops samples whose values are all zero when it reads a profile */
    for (size_t j = 0; j < d->nsamples; j++) {
        const struct pprof_sample *s = &d->samples[j];
        int all_zero = 1;
        for (size_t t = 0; t < d->ntypes; t++)
            all_zero &= s->values[t] == 0;
        if (all_zero) continue;
        assert_true(i < r->nsamples);
        const struct raw_sample *want = &r->samples[i++];
        assert_int_equal(want->nvalues, d->ntypes);
        for (size_t t = 0; t < d->ntypes; t++)
            assert_int_equal(s->values[t], want->values[t]);
        size_t k = 0;
        for (int l = 0; l < want->nlocs; l++) {
            const struct raw_location *loc = raw_loc(r, want->locs[l]);
            for (int n = 0; n < loc->nlines; n++, k++) {
                assert_true(k < s->depth);
                const struct pprof_frame *f = &d->frames[s->first_frame + k];
                assert_string_equal(f->function, loc->lines[n].function);
                assert_string_equal(f->file, loc->lines[n].file);
                assert_int_equal(f->line, loc->lines[n].line);
            }
        }
        assert_int_equal(k, s->depth);
    }
    assert_int_equal(i, r->nsamples);
}

static void check_fixture(const char *profile, const char *raw_name, struct pprof_decoded *d)
{
    struct buf pb = {0};
    struct cp_err err;
    load_profile(profile, &pb);
    if (pprof_decode((const uint8_t *)pb.data, pb.len, d, &err) < 0)
        fail_msg("%s: %s", profile, err.msg);
    struct raw_profile *r = malloc(sizeof *r);
    assert_non_null(r);
    load_raw(raw_name, r);
    check_against_raw(d, r);
    free(r);
    buf_free(&pb);
}

static void test_go_cpu_profile_matches_pprof(void **state)
{
    (void)state;
    struct pprof_decoded d;
    check_fixture("go_cpu.pb.gz", "go_cpu.raw.txt", &d);
    assert_string_equal(d.period_type, "cpu");
    assert_string_equal(d.period_unit, "nanoseconds");
    assert_true(d.time_nanos > 1700000000000000000LL);
    assert_true(d.duration_nanos > 800000000LL);
    /* Location 2 holds inlinedHelper inlined into burnCPU: innermost first. */
    const struct pprof_sample *s = &d.samples[0];
    assert_int_equal(s->depth, 5);
    assert_string_equal(d.frames[s->first_frame + 0].function, "main.leafWork");
    assert_string_equal(d.frames[s->first_frame + 1].function, "main.inlinedHelper");
    assert_string_equal(d.frames[s->first_frame + 2].function, "main.burnCPU");
    assert_string_equal(d.frames[s->first_frame + 4].function, "runtime.main");
    int64_t totals[2];
    pprof_decoded_totals(&d, totals);
    assert_int_equal(totals[0], 71); /* the sum of the samples column of go_cpu.raw.txt */
    assert_int_equal(totals[1], 710000000);
    pprof_decoded_free(&d);
}

static void test_go_heap_profile_matches_pprof(void **state)
{
    (void)state;
    struct pprof_decoded d;
    check_fixture("go_heap.pb.gz", "go_heap.raw.txt", &d);
    assert_int_equal(d.ntypes, 4);
    assert_string_equal(d.type_names[3], "inuse_space");
    pprof_decoded_free(&d);
}

static void test_zstd_cli_profile_matches_pprof(void **state)
{
    (void)state;
    struct pprof_decoded d;
    check_fixture("go_heap.pb.zst", "go_heap.raw.txt", &d);
    pprof_decoded_free(&d);
}

static void test_conprof_agent_profile_matches_pprof(void **state)
{
    (void)state;
    struct pprof_decoded d;
    check_fixture("conprof_agent.pb.gz", "conprof_agent.raw.txt", &d);
    assert_int_equal(d.ntypes, 3);
    assert_string_equal(d.type_names[2], "cpu");
    /* cpu.py split: heavy() gets about 70% of the CPU time. */
    int found_heavy = 0;
    for (size_t i = 0; i < d.nframes; i++)
        found_heavy |= strcmp(d.frames[i].function, "heavy") == 0;
    assert_true(found_heavy);
    pprof_decoded_free(&d);
}

/* ---- decompression ------------------------------------------------------------------------ */

static void gzip_bytes(const void *data, size_t len, struct buf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t bound = deflateBound(&zs, (uLong)len);
    assert_int_equal(buf_reserve(out, bound), 0);
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)len;
    zs.next_out = (Bytef *)out->data + out->len;
    zs.avail_out = (uInt)bound;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    out->len += bound - zs.avail_out;
    deflateEnd(&zs);
}

static void zstd_bytes(const void *data, size_t len, struct buf *out)
{
    size_t bound = ZSTD_compressBound(len);
    assert_int_equal(buf_reserve(out, bound), 0);
    size_t n = ZSTD_compress(out->data + out->len, bound, data, len, 3);
    assert_false(ZSTD_isError(n));
    out->len += n;
}

static void test_gzip_and_zstd_give_the_same_bytes(void **state)
{
    (void)state;
    struct buf pb = {0}, gz = {0}, zs = {0}, a = {0}, b = {0}, raw = {0};
    struct cp_err err;
    load_profile("go_heap.pb.gz", &pb);
    gzip_bytes(pb.data, pb.len, &gz);
    zstd_bytes(pb.data, pb.len, &zs);
    assert_int_equal(pprof_decompress((uint8_t *)gz.data, gz.len, 1 << 20, &a, &err), 0);
    assert_int_equal(pprof_decompress((uint8_t *)zs.data, zs.len, 1 << 20, &b, &err), 0);
    assert_int_equal(pprof_decompress((uint8_t *)pb.data, pb.len, 1 << 20, &raw, &err), 0);
    assert_int_equal(a.len, pb.len);
    assert_memory_equal(a.data, pb.data, pb.len);
    assert_int_equal(b.len, pb.len);
    assert_memory_equal(b.data, pb.data, pb.len);
    assert_int_equal(raw.len, pb.len);
    assert_memory_equal(raw.data, pb.data, pb.len);
    buf_free(&pb), buf_free(&gz), buf_free(&zs), buf_free(&a), buf_free(&b), buf_free(&raw);
}

static void test_concatenated_members_and_frames(void **state)
{
    (void)state;
    struct buf gz = {0}, zs = {0}, out = {0};
    struct cp_err err;
    gzip_bytes("hello ", 6, &gz);
    gzip_bytes("world", 5, &gz);
    zstd_bytes("hello ", 6, &zs);
    zstd_bytes("world", 5, &zs);
    assert_int_equal(pprof_decompress((uint8_t *)gz.data, gz.len, 100, &out, &err), 0);
    assert_string_equal(out.data, "hello world");
    buf_reset(&out);
    assert_int_equal(pprof_decompress((uint8_t *)zs.data, zs.len, 100, &out, &err), 0);
    assert_string_equal(out.data, "hello world");
    buf_free(&gz), buf_free(&zs), buf_free(&out);
}

static void test_bomb_refused_naming_the_limit(void **state)
{
    (void)state;
    size_t n = 8u << 20;
    char *zeros = calloc(n, 1);
    assert_non_null(zeros);
    struct buf gz = {0}, zs = {0}, out = {0};
    struct cp_err err;
    gzip_bytes(zeros, n, &gz);
    zstd_bytes(zeros, n, &zs);
    assert_true(gz.len < 20000 && zs.len < 20000);
    assert_int_equal(pprof_decompress((uint8_t *)gz.data, gz.len, 1 << 20, &out, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "1048576"));
    assert_int_equal(out.len, 0);
    assert_int_equal(pprof_decompress((uint8_t *)zs.data, zs.len, 1 << 20, &out, &err), -1);
    assert_non_null(strstr(err.msg, "1048576"));
    assert_int_equal(pprof_decompress((uint8_t *)zeros, 2 << 20, 1 << 20, &out, &err), -1);
    /* Exactly at the limit is fine. */
    assert_int_equal(pprof_decompress((uint8_t *)gz.data, gz.len, n, &out, &err), 0);
    assert_int_equal(out.len, n);
    free(zeros);
    buf_free(&gz), buf_free(&zs), buf_free(&out);
}

static void test_truncated_garbage_and_lz4_refused(void **state)
{
    (void)state;
    struct buf pb = {0}, gz = {0}, zs = {0}, out = {0};
    struct cp_err err;
    load_profile("go_cpu.pb.gz", &pb);
    gzip_bytes(pb.data, pb.len, &gz);
    zstd_bytes(pb.data, pb.len, &zs);
    for (size_t cut = 2; cut < gz.len; cut += 7) {
        buf_reset(&out);
        assert_int_equal(pprof_decompress((uint8_t *)gz.data, cut, 1 << 20, &out, &err), -1);
        assert_non_null(strstr(err.msg, "gzip"));
    }
    for (size_t cut = 4; cut < zs.len; cut += 7) {
        buf_reset(&out);
        assert_int_equal(pprof_decompress((uint8_t *)zs.data, cut, 1 << 20, &out, &err), -1);
        assert_non_null(strstr(err.msg, "zstd"));
    }
    assert_int_equal(buf_append(&gz, "junk", 4), 0);
    assert_int_equal(pprof_decompress((uint8_t *)gz.data, gz.len, 1 << 20, &out, &err), -1);
    assert_non_null(strstr(err.msg, "garbage"));
    const uint8_t lz4[] = {0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7, 0, 0, 0, 0};
    assert_int_equal(pprof_decompress(lz4, sizeof lz4, 1 << 20, &out, &err), -1);
    assert_non_null(strstr(err.msg, "lz4"));
    buf_free(&pb), buf_free(&gz), buf_free(&zs), buf_free(&out);
}

/* ---- hand-built protobufs ----------------------------------------------------------------- */

static void put_varint(struct buf *b, uint64_t v)
{
    do {
        uint8_t byte = (uint8_t)(v & 0x7f);
        v >>= 7;
        assert_int_equal(buf_append_byte(b, byte | (v ? 0x80 : 0)), 0);
    } while (v);
}

static void put_int(struct buf *b, uint32_t field, uint64_t v)
{
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, v);
}

static void put_bytes(struct buf *b, uint32_t field, const void *data, size_t len)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, len);
    assert_int_equal(buf_append(b, data, len), 0);
}

static void put_msg(struct buf *b, uint32_t field, struct buf *m)
{
    put_bytes(b, field, m->data, m->len);
    buf_free(m);
}

static void put_string(struct buf *b, const char *s)
{
    put_bytes(b, 6, s, strlen(s));
}

/* Strings: 0 "", 1 samples, 2 count, 3 cpu, 4 nanoseconds, 5 f, 6 g, 7 app.py */
static void put_header(struct buf *p)
{
    const char *strings[] = {"", "samples", "count", "cpu", "nanoseconds", "f", "g", "app.py"};
    for (size_t i = 0; i < 8; i++)
        put_string(p, strings[i]);
    struct buf vt = {0};
    put_int(&vt, 1, 1), put_int(&vt, 2, 2);
    put_msg(p, 1, &vt);
    put_int(&vt, 1, 3), put_int(&vt, 2, 4);
    put_msg(p, 1, &vt);
}

static void put_function(struct buf *p, uint64_t id, uint64_t name, uint64_t file)
{
    struct buf m = {0};
    put_int(&m, 1, id), put_int(&m, 2, name), put_int(&m, 4, file);
    put_msg(p, 5, &m);
}

/* A location with n lines (function ids fn[], line numbers 10, 11, ...). */
static void put_location(struct buf *p, uint64_t id, const uint64_t *fn, size_t n)
{
    struct buf m = {0}, line = {0};
    put_int(&m, 1, id);
    put_int(&m, 3, 0x1000 + id);
    for (size_t i = 0; i < n; i++) {
        put_int(&line, 1, fn[i]), put_int(&line, 2, 10 + i);
        put_msg(&m, 4, &line);
    }
    put_msg(p, 4, &m);
}

static void put_sample_packed(struct buf *p, const uint64_t *locs, size_t n, int64_t v0, int64_t v1)
{
    struct buf m = {0}, packed = {0};
    for (size_t i = 0; i < n; i++)
        put_varint(&packed, locs[i]);
    put_msg(&m, 1, &packed);
    put_varint(&packed, (uint64_t)v0), put_varint(&packed, (uint64_t)v1);
    put_msg(&m, 2, &packed);
    put_msg(p, 2, &m);
}

static void good_profile(struct buf *p)
{
    put_header(p);
    put_function(p, 1, 5, 7);
    put_function(p, 2, 6, 7);
    uint64_t f1 = 1, both[] = {2, 1};
    put_location(p, 1, &f1, 1);
    put_location(p, 2, both, 2);
    uint64_t stack[] = {2, 1};
    put_sample_packed(p, stack, 2, 3, 30000000);
    put_int(p, 9, 1714564800000000000ULL);
    put_int(p, 10, 45000000000ULL);
    put_int(p, 12, 10000000);
}

static int decode_buf(const struct buf *p, struct pprof_decoded *d, struct cp_err *err)
{
    return pprof_decode((const uint8_t *)p->data, p->len, d, err);
}

static void test_hand_built_packed_and_unpacked(void **state)
{
    (void)state;
    struct buf p = {0};
    good_profile(&p);
    /* The same sample again, unpacked (one field per number), samples before nothing else. */
    struct buf m = {0};
    put_int(&m, 1, 1), put_int(&m, 2, 7), put_int(&m, 2, (uint64_t)-5);
    put_msg(&p, 2, &m);
    struct pprof_decoded d;
    struct cp_err err;
    if (decode_buf(&p, &d, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(d.nsamples, 2);
    assert_int_equal(d.samples[0].depth, 3);
    assert_string_equal(d.frames[0].function, "g"); /* location 2, line 0: innermost */
    assert_int_equal(d.frames[0].line, 10);
    assert_string_equal(d.frames[1].function, "f");
    assert_int_equal(d.frames[1].line, 11);
    assert_string_equal(d.frames[2].function, "f");
    assert_string_equal(d.frames[2].file, "app.py");
    assert_int_equal(d.samples[1].depth, 1);
    assert_int_equal(d.samples[1].values[1], -5);
    int64_t totals[2];
    pprof_decoded_totals(&d, totals);
    assert_int_equal(totals[0], 10);
    assert_int_equal(totals[1], 30000000 - 5);
    assert_int_equal(d.time_nanos, 1714564800000000000LL);
    assert_int_equal(d.duration_nanos, 45000000000LL);
    assert_string_equal(d.period_type, "");
    pprof_decoded_free(&d);
    buf_free(&p);
}

static void test_lineless_location_named_by_address(void **state)
{
    (void)state;
    struct buf p = {0};
    put_header(&p);
    put_location(&p, 7, NULL, 0);
    uint64_t stack[] = {7};
    put_sample_packed(&p, stack, 1, 1, 1);
    struct pprof_decoded d;
    struct cp_err err;
    assert_int_equal(decode_buf(&p, &d, &err), 0);
    assert_string_equal(d.frames[0].function, "0x1007");
    pprof_decoded_free(&d);
    buf_free(&p);
}

static void expect_error(struct buf *p, const char *needle)
{
    struct pprof_decoded d;
    struct cp_err err;
    assert_int_equal(decode_buf(p, &d, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    if (!strstr(err.msg, needle)) fail_msg("expected \"%s\" in \"%s\"", needle, err.msg);
    assert_null(d.frames);
    assert_int_equal(d.nsamples, 0);
    pprof_decoded_free(&d);
    buf_free(p);
}

static void test_every_reference_checked(void **state)
{
    (void)state;
    struct buf p = {0};
    uint64_t f1 = 1, missing = 99, l1[] = {1};

    good_profile(&p);
    uint64_t bad_stack[] = {1, 99};
    put_sample_packed(&p, bad_stack, 2, 1, 1);
    expect_error(&p, "sample 1 names location 99 which does not exist");

    put_header(&p);
    put_location(&p, 1, &missing, 1);
    expect_error(&p, "location 1 names function 99 which does not exist");

    put_header(&p);
    put_function(&p, 1, 5, 42);
    put_location(&p, 1, &f1, 1);
    expect_error(&p, "function 1 names string 42 but the string table has 8 entries");

    put_header(&p);
    put_function(&p, 1, 5, 7);
    put_location(&p, 1, &f1, 1);
    struct buf m = {0}, packed = {0};
    put_varint(&packed, 1);
    put_msg(&m, 1, &packed);
    put_int(&m, 2, 5);
    put_msg(&p, 2, &m);
    expect_error(&p, "sample 0 has 1 values for 2 sample types");

    put_header(&p);
    put_function(&p, 1, 5, 7);
    put_location(&p, 1, &f1, 1);
    put_location(&p, 1, &f1, 1);
    expect_error(&p, "location id 1 is used twice");

    put_header(&p);
    put_function(&p, 0, 5, 7);
    expect_error(&p, "function id 0 is zero");

    put_string(&p, "not empty");
    expect_error(&p, "string_table[0] must be \"\"");

    put_header(&p);
    put_function(&p, 1, 5, 7);
    put_location(&p, 1, &f1, 1);
    put_sample_packed(&p, l1, 1, 1, 2);
    struct buf three = {0};
    put_int(&three, 2, 9);
    put_msg(&p, 2, &three); /* a sample with a value but no types left... */
    put_int(&three, 1, 1), put_int(&three, 2, 1), put_int(&three, 2, 2), put_int(&three, 2, 3);
    put_msg(&p, 2, &three);
    expect_error(&p, "values");

    put_bytes(&p, 1, "\x08", 1); /* a ValueType cut inside its varint */
    expect_error(&p, "malformed protobuf");

    assert_int_equal(buf_append(&p, "\x0b\x00", 2), 0); /* a group: not in profile.proto */
    expect_error(&p, "malformed protobuf");
}

static void test_deep_sample_bounded(void **state)
{
    (void)state;
    struct buf p = {0};
    put_header(&p);
    put_function(&p, 1, 5, 7);
    uint64_t f1 = 1;
    put_location(&p, 1, &f1, 1);
    uint64_t *stack = malloc((PPROF_READ_MAX_DEPTH + 1) * sizeof *stack);
    for (size_t i = 0; i <= PPROF_READ_MAX_DEPTH; i++)
        stack[i] = 1;
    put_sample_packed(&p, stack, PPROF_READ_MAX_DEPTH + 1, 1, 1);
    free(stack);
    expect_error(&p, "deeper than 4096");
}

static void test_empty_input_is_an_empty_profile(void **state)
{
    (void)state;
    struct pprof_decoded d;
    struct cp_err err;
    assert_int_equal(pprof_decode((const uint8_t *)"", 0, &d, &err), 0);
    assert_int_equal(d.ntypes, 0);
    assert_int_equal(d.nsamples, 0);
    pprof_decoded_free(&d);
}

/* Every prefix and many bit flips of a real profile: an answer, never a crash or a leak. */
static void test_truncations_and_bit_flips_never_crash(void **state)
{
    (void)state;
    struct buf pb = {0};
    load_profile("conprof_agent.pb.gz", &pb);
    struct pprof_decoded d;
    struct cp_err err;
    size_t ok = 0;
    for (size_t cut = 0; cut < pb.len; cut++) {
        if (pprof_decode((const uint8_t *)pb.data, cut, &d, &err) == 0) ok++;
        pprof_decoded_free(&d);
    }
    assert_true(ok < pb.len);
    uint8_t *copy = malloc(pb.len);
    uint32_t seed = 12345;
    for (int round = 0; round < 3000; round++) {
        memcpy(copy, pb.data, pb.len);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            copy[(seed >> 8) % pb.len] ^= (uint8_t)(1u << ((seed >> 4) & 7));
        }
        if (pprof_decode(copy, pb.len, &d, &err) == 0) {
            int64_t totals[PPROF_READ_MAX_SAMPLE_TYPES];
            pprof_decoded_totals(&d, totals);
            for (size_t i = 0; i < d.nframes; i++)
                assert_non_null(d.frames[i].function);
        }
        pprof_decoded_free(&d);
    }
    free(copy);
    buf_free(&pb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_go_cpu_profile_matches_pprof),
        cmocka_unit_test(test_go_heap_profile_matches_pprof),
        cmocka_unit_test(test_zstd_cli_profile_matches_pprof),
        cmocka_unit_test(test_conprof_agent_profile_matches_pprof),
        cmocka_unit_test(test_gzip_and_zstd_give_the_same_bytes),
        cmocka_unit_test(test_concatenated_members_and_frames),
        cmocka_unit_test(test_bomb_refused_naming_the_limit),
        cmocka_unit_test(test_truncated_garbage_and_lz4_refused),
        cmocka_unit_test(test_hand_built_packed_and_unpacked),
        cmocka_unit_test(test_lineless_location_named_by_address),
        cmocka_unit_test(test_every_reference_checked),
        cmocka_unit_test(test_deep_sample_bounded),
        cmocka_unit_test(test_empty_input_is_an_empty_profile),
        cmocka_unit_test(test_truncations_and_bit_flips_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
