/* Unit tests for the pprof writer: decode our own output with a small protobuf reader written
 * here and check every field; gunzip the .pb.gz; and, when `go` is installed, let
 * `go tool pprof` (the reference reader) read it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "profile_writers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

/* --- a small protobuf reader (bounded: never reads past the end, stops on garbage) --- */

struct pbr {
    const uint8_t *p, *end;
    int bad;
};

static uint64_t pbr_varint(struct pbr *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) {
            r->bad = 1;
            return 0;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    r->bad = 1;
    return 0;
}

struct pb_field {
    uint32_t num, wire;
    uint64_t v;     /* wire 0 */
    struct pbr sub; /* wire 2 */
};

/* Reads the next field; 0 at the end, -1 on garbage. */
static int pbr_next(struct pbr *r, struct pb_field *f)
{
    if (r->p >= r->end) return 0;
    uint64_t key = pbr_varint(r);
    f->num = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    if (f->wire == 0) {
        f->v = pbr_varint(r);
    } else if (f->wire == 2) {
        uint64_t len = pbr_varint(r);
        if (r->bad || len > (uint64_t)(r->end - r->p)) return -1;
        f->sub = (struct pbr){r->p, r->p + len, 0};
        r->p += len;
    } else {
        return -1; /* our writer only uses varint and length-delimited */
    }
    return r->bad ? -1 : 1;
}

/* A repeated integer field, packed (wire 2) or not (wire 0). */
static int pbr_repeated(const struct pb_field *f, uint64_t *out, int *n, int max)
{
    if (f->wire == 0) {
        if (*n >= max) return -1;
        out[(*n)++] = f->v;
        return 0;
    }
    struct pbr r = f->sub;
    while (r.p < r.end) {
        uint64_t v = pbr_varint(&r);
        if (r.bad || *n >= max) return -1;
        out[(*n)++] = v;
    }
    return 0;
}

#define MAXN 4096

struct dec_sample {
    uint64_t loc[64];
    int nloc;
    uint64_t val[8];
    int nval;
};

struct dec_location {
    uint64_t id, mapping, address, func;
    int64_t line;
    int nlines;
};

struct dec_function {
    uint64_t id, name, system_name, filename, start_line;
};

struct dec_mapping {
    uint64_t id, filename, has_functions, has_filenames, has_line_numbers;
};

struct dec_profile {
    uint64_t sample_type[8][2];
    struct dec_mapping mappings[4];
    int nmappings;
    int nsample_type;
    struct dec_sample *samples;
    int nsamples;
    struct dec_location *locs;
    int nlocs;
    struct dec_function *funcs;
    int nfuncs;
    char **strings;
    int nstrings;
    int64_t time_nanos, duration_nanos, period;
    uint64_t period_type[2];
    uint64_t comments[8];
    int ncomments;
    int unknown_fields;
};

static int dec_value_type(struct pbr r, uint64_t vt[2])
{
    struct pb_field f;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0)
        if ((f.num == 1 || f.num == 2) && f.wire == 0) vt[f.num - 1] = f.v;
    return rc;
}

static int dec_sample(struct pbr r, struct dec_sample *s)
{
    struct pb_field f;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0) {
        if (f.num == 1 && pbr_repeated(&f, s->loc, &s->nloc, 64) < 0) return -1;
        if (f.num == 2 && pbr_repeated(&f, s->val, &s->nval, 8) < 0) return -1;
    }
    return rc;
}

static int dec_location(struct pbr r, struct dec_location *l)
{
    struct pb_field f;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0) {
        if (f.num == 1)
            l->id = f.v;
        else if (f.num == 2)
            l->mapping = f.v;
        else if (f.num == 3)
            l->address = f.v;
        else if (f.num == 4 && f.wire == 2) {
            l->nlines++;
            struct pb_field lf;
            struct pbr lr = f.sub;
            while ((rc = pbr_next(&lr, &lf)) > 0) {
                if (lf.num == 1)
                    l->func = lf.v;
                else if (lf.num == 2)
                    l->line = (int64_t)lf.v;
            }
            if (rc < 0) return -1;
        }
    }
    return rc;
}

static int dec_function(struct pbr r, struct dec_function *fn)
{
    struct pb_field f;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0) {
        uint64_t *dst[] = {NULL,          &fn->id,        &fn->name, &fn->system_name,
                           &fn->filename, &fn->start_line};
        if (f.num >= 1 && f.num <= 5 && f.wire == 0) *dst[f.num] = f.v;
    }
    return rc;
}

static int dec_mapping(struct pbr r, struct dec_mapping *m)
{
    struct pb_field f;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0) {
        if (f.num == 1)
            m->id = f.v;
        else if (f.num == 5)
            m->filename = f.v;
        else if (f.num == 7)
            m->has_functions = f.v;
        else if (f.num == 8)
            m->has_filenames = f.v;
        else if (f.num == 9)
            m->has_line_numbers = f.v;
        else
            return -1; /* we write no other Mapping field */
    }
    return rc;
}

static int dec_field(struct dec_profile *d, const struct pb_field *f)
{
    switch (f->num) {
    case 1:
        return d->nsample_type < 8 ? dec_value_type(f->sub, d->sample_type[d->nsample_type++]) : -1;
    case 2:
        return d->nsamples < MAXN ? dec_sample(f->sub, &d->samples[d->nsamples++]) : -1;
    case 3:
        return d->nmappings < 4 ? dec_mapping(f->sub, &d->mappings[d->nmappings++]) : -1;
    case 4:
        return d->nlocs < MAXN ? dec_location(f->sub, &d->locs[d->nlocs++]) : -1;
    case 5:
        return d->nfuncs < MAXN ? dec_function(f->sub, &d->funcs[d->nfuncs++]) : -1;
    case 6:
        if (d->nstrings >= MAXN || f->wire != 2) return -1;
        d->strings[d->nstrings] = strndup((const char *)f->sub.p, (size_t)(f->sub.end - f->sub.p));
        d->nstrings++;
        return 0;
    case 9:
        d->time_nanos = (int64_t)f->v;
        return 0;
    case 10:
        d->duration_nanos = (int64_t)f->v;
        return 0;
    case 11:
        return dec_value_type(f->sub, d->period_type);
    case 12:
        d->period = (int64_t)f->v;
        return 0;
    case 13:
        return pbr_repeated(f, d->comments, &d->ncomments, 8);
    default:
        d->unknown_fields++;
        return 0;
    }
}

static void dec_free(struct dec_profile *d)
{
    for (int i = 0; i < d->nstrings; i++)
        free(d->strings[i]);
    free(d->strings);
    free(d->samples);
    free(d->locs);
    free(d->funcs);
}

static int decode_profile(const void *data, size_t len, struct dec_profile *d)
{
    memset(d, 0, sizeof *d);
    d->samples = calloc(MAXN, sizeof *d->samples);
    d->locs = calloc(MAXN, sizeof *d->locs);
    d->funcs = calloc(MAXN, sizeof *d->funcs);
    d->strings = calloc(MAXN, sizeof *d->strings);
    struct pbr r = {data, (const uint8_t *)data + len, 0};
    struct pb_field f;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0)
        if (dec_field(d, &f) < 0) return -1;
    return rc;
}

static const char *dstr(const struct dec_profile *d, uint64_t i)
{
    return i < (uint64_t)d->nstrings ? d->strings[i] : "<bad string index>";
}

static const struct dec_function *dfunc(const struct dec_profile *d, uint64_t id)
{
    for (int i = 0; i < d->nfuncs; i++)
        if (d->funcs[i].id == id) return &d->funcs[i];
    return NULL;
}

static const struct dec_location *dloc(const struct dec_profile *d, uint64_t id)
{
    for (int i = 0; i < d->nlocs; i++)
        if (d->locs[i].id == id) return &d->locs[i];
    return NULL;
}

static int gunzip(const struct buf *in, struct buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 16) != Z_OK) return -1;
    z.next_in = (Bytef *)in->data;
    z.avail_in = (uInt)in->len;
    int rc;
    do {
        if (buf_reserve(out, 65536) < 0) break;
        z.next_out = (Bytef *)out->data + out->len;
        z.avail_out = 65536;
        rc = inflate(&z, Z_NO_FLUSH);
        out->len += 65536 - z.avail_out;
    } while (rc == Z_OK);
    inflateEnd(&z);
    return rc == Z_STREAM_END && z.avail_in == 0 ? 0 : -1;
}

/* --- the known aggregate --- */

struct fixture {
    struct agg a;
    uint32_t main10, work20, work25, helper5, thread, unused;
};

static const char *const comments[] = {"conprof test profile", "pid 42; Python 3.12"};

static const struct pprof_meta meta = {.time_nanos = 1700000000123456789LL,
                                       .duration_nanos = 10000000000LL,
                                       .period_nanos = 10000000LL,
                                       .comments = comments,
                                       .ncomments = 2};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx || agg_init(&fx->a) < 0) return -1;
    struct agg *a = &fx->a;
    fx->unused = agg_frame_id_str(a, "never_sampled", "gone.py", 3);
    fx->main10 = agg_frame_id_str(a, "main", "app.py", 10);
    fx->work20 = agg_frame_id_str(a, "Worker.run", "app.py", 20);
    fx->work25 = agg_frame_id_str(a, "Worker.run", "app.py", 25);
    fx->helper5 = agg_frame_id_str(a, "helper", "lib/util.py", 5);
    fx->thread = agg_frame_id_str(a, "thread 1 (MainThread)", "", 0);
    uint32_t s1[] = {fx->work20, fx->main10, fx->thread};
    uint32_t s2[] = {fx->work25, fx->main10, fx->thread};
    uint32_t s3[] = {fx->helper5, fx->work20, fx->main10, fx->thread};
    for (int i = 0; i < 3; i++)
        agg_add(a, s1, 3, 10000000, 10000000);
    agg_add(a, s2, 3, 5000000, 10000000);
    agg_add(a, s3, 4, 0, 10000000);
    agg_add(a, s3, 4, 0, 10000000);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    agg_free(&fx->a);
    free(fx);
    return 0;
}

static void check_strings(const struct dec_profile *d)
{
    const char *const want[] = {"",
                                "samples",
                                "count",
                                "wall",
                                "nanoseconds",
                                "cpu",
                                "python",
                                "main",
                                "app.py",
                                "Worker.run",
                                "helper",
                                "lib/util.py",
                                "thread 1 (MainThread)",
                                comments[0],
                                comments[1]};
    size_t nwant = sizeof want / sizeof want[0];
    assert_int_equal(d->nstrings, nwant);
    assert_string_equal(d->strings[0], "");
    for (size_t i = 0; i < nwant; i++) {
        int found = 0;
        for (int j = 0; j < d->nstrings; j++)
            found += strcmp(d->strings[j], want[i]) == 0;
        assert_int_equal(found, 1); /* present, exactly once */
    }
}

static void check_functions(const struct dec_profile *d)
{
    assert_int_equal(d->nfuncs, 4); /* Worker.run at two lines is one Function */
    for (int i = 0; i < d->nfuncs; i++) {
        const struct dec_function *f = &d->funcs[i];
        assert_true(f->id != 0);
        for (int j = 0; j < i; j++)
            assert_true(d->funcs[j].id != f->id);
        assert_int_equal(f->name, f->system_name);
        assert_int_equal(f->start_line, 0);
        const char *name = dstr(d, f->name), *file = dstr(d, f->filename);
        if (strcmp(name, "main") == 0 || strcmp(name, "Worker.run") == 0)
            assert_string_equal(file, "app.py");
        else if (strcmp(name, "helper") == 0)
            assert_string_equal(file, "lib/util.py");
        else {
            assert_string_equal(name, "thread 1 (MainThread)");
            assert_int_equal(f->filename, 0);
        }
    }
}

static void check_location(const struct dec_profile *d, uint32_t frame_id, const char *name,
                           int64_t line)
{
    const struct dec_location *l = dloc(d, frame_id);
    assert_non_null(l);
    assert_int_equal(l->nlines, 1);
    assert_int_equal(l->mapping, 1);
    assert_int_equal(l->line, line);
    const struct dec_function *f = dfunc(d, l->func);
    assert_non_null(f);
    assert_string_equal(dstr(d, f->name), name);
}

static void check_samples(const struct dec_profile *d, const struct agg *a)
{
    assert_int_equal(d->nsamples, (int)a->nstacks);
    for (uint32_t s = 0; s < a->nstacks; s++) {
        const struct dec_sample *ds = &d->samples[s];
        const struct agg_stack *st = &a->stacks[s];
        assert_int_equal(ds->nloc, (int)st->depth);
        for (uint32_t i = 0; i < st->depth; i++) /* leaf first; location id = frame id */
            assert_int_equal(ds->loc[i], agg_stack_frames(a, st)[i]);
        assert_int_equal(ds->nval, 3);
        assert_int_equal(ds->val[0], st->samples);
        assert_int_equal(ds->val[1], st->wall_ns);
        assert_int_equal(ds->val[2], st->cpu_ns);
    }
}

static void test_encode_decodes_field_by_field(void **state)
{
    struct fixture *fx = *state;
    struct buf out = {0};
    struct cp_err err;
    assert_int_equal(pprof_encode(&fx->a, &meta, &out, &err), 0);
    struct dec_profile d;
    assert_int_equal(decode_profile(out.data, out.len, &d), 0);
    assert_int_equal(d.unknown_fields, 0);
    assert_int_equal(d.nsample_type, 3);
    const char *types[3][2] = {
        {"samples", "count"}, {"wall", "nanoseconds"}, {"cpu", "nanoseconds"}};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(dstr(&d, d.sample_type[i][0]), types[i][0]);
        assert_string_equal(dstr(&d, d.sample_type[i][1]), types[i][1]);
    }
    check_strings(&d);
    assert_int_equal(d.nmappings, 1);
    assert_int_equal(d.mappings[0].id, 1);
    assert_string_equal(dstr(&d, d.mappings[0].filename), "python");
    assert_true(d.mappings[0].has_functions && d.mappings[0].has_filenames &&
                d.mappings[0].has_line_numbers);
    check_functions(&d);
    assert_int_equal(d.nlocs, 5); /* the unused frame gets no Location */
    assert_null(dloc(&d, fx->unused));
    check_location(&d, fx->main10, "main", 10);
    check_location(&d, fx->work20, "Worker.run", 20);
    check_location(&d, fx->work25, "Worker.run", 25);
    check_location(&d, fx->helper5, "helper", 5);
    check_location(&d, fx->thread, "thread 1 (MainThread)", 0);
    assert_int_equal(dloc(&d, fx->work20)->func, dloc(&d, fx->work25)->func);
    check_samples(&d, &fx->a);
    assert_int_equal(d.time_nanos, meta.time_nanos);
    assert_int_equal(d.duration_nanos, meta.duration_nanos);
    assert_int_equal(d.period, meta.period_nanos);
    assert_string_equal(dstr(&d, d.period_type[0]), "cpu");
    assert_string_equal(dstr(&d, d.period_type[1]), "nanoseconds");
    assert_int_equal(d.ncomments, 2);
    assert_string_equal(dstr(&d, d.comments[0]), comments[0]);
    assert_string_equal(dstr(&d, d.comments[1]), comments[1]);
    dec_free(&d);
    buf_free(&out);
}

static void test_gzip_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct buf raw = {0}, gz = {0}, back = {0};
    struct cp_err err;
    assert_int_equal(pprof_encode(&fx->a, &meta, &raw, &err), 0);
    assert_int_equal(buf_append_str(&gz, "prefix"), 0); /* writers append */
    assert_int_equal(pprof_write(&fx->a, &meta, &gz, &err), 0);
    assert_memory_equal(gz.data, "prefix", 6);
    assert_int_equal((uint8_t)gz.data[6], 0x1f);
    assert_int_equal((uint8_t)gz.data[7], 0x8b);
    struct buf tail = {gz.data + 6, gz.len - 6, 0};
    assert_int_equal(gunzip(&tail, &back), 0);
    assert_int_equal(back.len, raw.len);
    assert_memory_equal(back.data, raw.data, raw.len);
    buf_free(&raw);
    buf_free(&gz);
    buf_free(&back);
}

static void test_empty_aggregate(void **state)
{
    (void)state;
    struct agg a;
    assert_int_equal(agg_init(&a), 0);
    struct buf out = {0};
    struct cp_err err;
    struct pprof_meta m = {.time_nanos = 1, .duration_nanos = 2, .period_nanos = 3};
    assert_int_equal(pprof_encode(&a, &m, &out, &err), 0);
    struct dec_profile d;
    assert_int_equal(decode_profile(out.data, out.len, &d), 0);
    assert_int_equal(d.nsamples, 0);
    assert_int_equal(d.nlocs, 0);
    assert_int_equal(d.nfuncs, 0);
    assert_int_equal(d.nsample_type, 3);
    assert_string_equal(d.strings[0], "");
    assert_int_equal(d.time_nanos, 1);
    assert_int_equal(d.ncomments, 0);
    dec_free(&d);
    buf_free(&out);
    agg_free(&a);
}

/* Many stacks, large ids and values: every sample survives the round trip. */
static void test_many_stacks_round_trip(void **state)
{
    (void)state;
    struct agg a;
    assert_int_equal(agg_init(&a), 0);
    uint32_t ids[300];
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "f%d", i);
        ids[i] = agg_frame_id_str(&a, name, i % 2 ? "a.py" : "b.py", i * 1000);
    }
    uint32_t stack[40];
    for (uint32_t s = 0; s < 3000; s++) {
        uint32_t depth = 1 + s % 40;
        for (uint32_t d = 0; d < depth; d++)
            stack[d] = ids[(s * 7 + d * 13) % 300];
        assert_int_equal(agg_add(&a, stack, depth, (int64_t)s * 123456789LL, 1LL << 40), 0);
    }
    struct buf out = {0};
    struct cp_err err;
    assert_int_equal(pprof_encode(&a, &meta, &out, &err), 0);
    struct dec_profile d;
    assert_int_equal(decode_profile(out.data, out.len, &d), 0);
    check_samples(&d, &a);
    assert_int_equal(d.nfuncs, 300);
    assert_int_equal(d.nlocs, 300);
    for (int i = 0; i < 300; i++) {
        const struct dec_location *l = dloc(&d, ids[i]);
        assert_non_null(l);
        assert_int_equal(l->line, i * 1000);
    }
    dec_free(&d);
    buf_free(&out);
    agg_free(&a);
}

/* --- go tool pprof, the reference reader --- */

static const char *next_line(const char *line)
{
    const char *nl = strchr(line, '\n');
    return nl ? nl + 1 : line + strlen(line);
}

/* The text `go tool pprof -raw` shows for location `id` ("name file:line", without " s=0"). */
static int raw_location(const char *raw, long id, char *text, size_t size)
{
    const char *line = strstr(raw, "\nLocations\n");
    for (line = line ? next_line(line + 1) : ""; *line && *line != 'M'; line = next_line(line)) {
        long lid;
        int used = 0;
        if (sscanf(line, " %ld: 0x%*x M=%*d %n", &lid, &used) == 1 && used > 0 && lid == id) {
            size_t n = (size_t)(next_line(line) - (line + used));
            const char *end = strstr(line + used, " s=");
            if (end && end < line + used + n) n = (size_t)(end - (line + used));
            snprintf(text, size, "%.*s", (int)n, line + used);
            return 0;
        }
    }
    return -1;
}

/* Finds the -raw sample "SAMPLES WALL CPU: ids" whose locations read `stack` ("a|b|c", leaf
 * first). pprof renumbers locations, so the ids are resolved through its Locations list. */
static int raw_has_sample(const char *raw, long long samples, long long wall, long long cpu,
                          const char *stack)
{
    for (const char *line = raw; *line; line = next_line(line)) {
        long long s, w, c;
        int used = 0;
        if (sscanf(line, "%lld %lld %lld:%n", &s, &w, &c, &used) != 3 || used == 0 ||
            s != samples || w != wall || c != cpu)
            continue;
        char got[1024] = "", text[256];
        const char *p = line + used;
        for (char *endp;; p = endp) {
            while (*p == ' ')
                p++;
            if (*p < '0' || *p > '9') /* the end of this line */
                break;
            long id = strtol(p, &endp, 10);
            if (endp == p || raw_location(raw, id, text, sizeof text) < 0) break;
            size_t len = strlen(got);
            snprintf(got + len, sizeof got - len, "%s%s", len ? "|" : "", text);
        }
        if (strcmp(got, stack) == 0) return 1;
        fprintf(stderr, "sample %lld %lld %lld: [%s], want [%s]\n", s, w, c, got, stack);
    }
    return 0;
}

/* Finds the `go tool pprof -top` row for `name` and checks its flat and cum columns. */
static int top_has_row(const char *top, const char *flat, const char *cum, const char *name)
{
    for (const char *line = top; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        char f[32], fp[32], sp[32], c[32], cp[32], n[256];
        if (sscanf(line, "%31s %31s %31s %31s %31s %255[^\n]", f, fp, sp, c, cp, n) == 6 &&
            strcmp(n, name) == 0)
            return strcmp(f, flat) == 0 && strcmp(c, cum) == 0;
    }
    return 0;
}

static int run_capture(const char *cmd, struct buf *out)
{
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
        buf_append(out, chunk, n);
    int status = pclose(p);
    if (!out->data) buf_append_str(out, "");
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void set_env_dir(const char *var, const char *base, const char *sub)
{
    if (getenv(var)) return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", base, sub);
    mkdir(path, 0700);
    setenv(var, path, 0);
}

/* Runs `go tool pprof ARGS FILE`, returns its output (stdout + stderr) or fails the test. */
static void go_pprof(const char *args, const char *file, struct buf *out)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "go tool pprof %s '%s' 2>&1", args, file);
    buf_reset(out);
    int rc = run_capture(cmd, out);
    if (rc != 0) fprintf(stderr, "%s: exit %d\n%s\n", cmd, rc, out->data);
    assert_int_equal(rc, 0);
}

static void test_go_tool_pprof_reads_it(void **state)
{
    struct fixture *fx = *state;
    if (system("command -v go >/dev/null 2>&1") != 0) {
        fprintf(stderr, "go is not installed: skipping the go tool pprof check\n");
        skip();
    }
    char dir[] = "/tmp/conprof-pprof-XXXXXX";
    assert_non_null(mkdtemp(dir));
    set_env_dir("HOME", dir, "home");
    set_env_dir("GOCACHE", dir, "gocache");
    set_env_dir("GOPATH", dir, "gopath");
    setenv("PPROF_TMPDIR", dir, 1);
    char path[600], cmd[700];
    snprintf(path, sizeof path, "%s/cpu.pb.gz", dir);
    struct buf gz = {0}, out = {0};
    struct cp_err err;
    assert_int_equal(pprof_write(&fx->a, &meta, &gz, &err), 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(gz.data, 1, gz.len, f), gz.len);
    assert_int_equal(fclose(f), 0);

    go_pprof("-raw", path, &out);
    assert_non_null(strstr(out.data, "PeriodType: cpu nanoseconds"));
    assert_non_null(strstr(out.data, "Period: 10000000\n"));
    assert_non_null(strstr(out.data, "Duration: 10s"));
    assert_non_null(strstr(out.data, "Comment: conprof test profile"));
    assert_non_null(strstr(out.data, "samples/count wall/nanoseconds cpu/nanoseconds"));
    assert_true(raw_has_sample(out.data, 3, 30000000, 30000000,
                               "Worker.run app.py:20|main app.py:10|thread 1 (MainThread) :0"));
    assert_true(raw_has_sample(out.data, 1, 10000000, 5000000,
                               "Worker.run app.py:25|main app.py:10|thread 1 (MainThread) :0"));
    assert_true(raw_has_sample(
        out.data, 2, 20000000, 0,
        "helper lib/util.py:5|Worker.run app.py:20|main app.py:10|thread 1 (MainThread) :0"));
    assert_non_null(strstr(out.data, "Worker.run app.py:20"));
    assert_non_null(strstr(out.data, "Worker.run app.py:25"));
    assert_non_null(strstr(out.data, "main app.py:10"));
    assert_non_null(strstr(out.data, "helper lib/util.py:5"));
    assert_non_null(strstr(out.data, "thread 1 (MainThread)"));
    assert_null(strstr(out.data, "never_sampled"));
    assert_null(strstr(out.data, "not available")); /* symbolized: no complaint about binaries */

    go_pprof("-top -sample_index=cpu", path, &out);
    assert_non_null(strstr(out.data, "Showing nodes accounting for 35ms, 100% of 35ms total"));
    assert_true(top_has_row(out.data, "35ms", "35ms", "Worker.run"));
    assert_true(top_has_row(out.data, "0", "35ms", "main"));
    assert_true(top_has_row(out.data, "0", "35ms", "thread 1 (MainThread)"));

    go_pprof("-top -sample_index=wall", path, &out);
    assert_non_null(strstr(out.data, "Showing nodes accounting for 60ms, 100% of 60ms total"));
    assert_true(top_has_row(out.data, "40ms", "60ms", "Worker.run"));
    assert_true(top_has_row(out.data, "20ms", "20ms", "helper"));

    go_pprof("-top -sample_index=samples", path, &out);
    assert_non_null(strstr(out.data, "of 6 total"));

    /* Odd names, a negative line, an empty name, a deep stack: still accepted. */
    struct agg odd;
    assert_int_equal(agg_init(&odd), 0);
    uint32_t o1 = agg_frame_id_str(&odd, "na\xc3\xafve_\xce\xbb;x\ny",
                                   "d\xc3\xadr/m\xc3\xb3"
                                   "d.py",
                                   -1);
    uint32_t o2 = agg_frame_id_str(&odd, "", "empty_name.py", 7);
    uint32_t deep[AGG_MAX_DEPTH];
    for (uint32_t i = 0; i < AGG_MAX_DEPTH; i++)
        deep[i] = i % 2 ? o1 : o2;
    assert_int_equal(agg_add(&odd, deep, AGG_MAX_DEPTH, 1234567, 2000000), 0);
    assert_int_equal(agg_add(&odd, deep, 1, 1000000, 2000000), 0);
    buf_reset(&gz);
    assert_int_equal(pprof_write(&odd, &meta, &gz, &err), 0);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(gz.data, 1, gz.len, f), gz.len);
    assert_int_equal(fclose(f), 0);
    go_pprof("-top -sample_index=cpu", path, &out);
    assert_non_null(strstr(out.data, "of 2.23ms total"));
    go_pprof("-raw", path, &out);
    assert_non_null(strstr(out.data, "na\xc3\xafve_\xce\xbb;x\ny d\xc3\xadr/m\xc3\xb3"
                                     "d.py:-1"));
    agg_free(&odd);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    buf_free(&gz);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_encode_decodes_field_by_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gzip_round_trip, setup, teardown),
        cmocka_unit_test(test_empty_aggregate),
        cmocka_unit_test(test_many_stacks_round_trip),
        cmocka_unit_test_setup_teardown(test_go_tool_pprof_reads_it, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
