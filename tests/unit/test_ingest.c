/* Unit tests of control/ingest.c with real profiles (tests/unit/fixtures/ingest/: Go runtime/pprof
 * CPU and heap profiles, a conprof-agent profile; gzip, and zstd from the zstd CLI).
 *
 * Pyroscope /ingest: URL-decoding, series names, from/until magnitudes, fallbacks to the pprof's
 * own times, and every rejection leaving the batch empty. Datadog-style multipart: a v4 body built
 * by hand (event.json with tags_profiler, RFC 3339 times, a gzip and a zstd attachment and a
 * code-provenance.json), one built by the curl CLI against a socket in this test (a real client's
 * bytes), the v3, v2 and Blackfire-native dialects, and all-or-nothing on a bad attachment: a
 * corrupt pprof is refused with the attachment and the broken reference named. Also the
 * profile-type table (profile_types.c) that ingest and the query API share.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ingest.h"
#include "pprof_read.h"
#include "profile_types.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#define FIXTURES "tests/unit/fixtures/ingest/"
#define T0 1777629600LL /* 2026-05-01T10:00:00Z */
#define NS 1000000000LL

/* ---- fixtures ----------------------------------------------------------------------------- */

static void fixture_path(const char *name, char *path, size_t size)
{
    const char *self = __FILE__, *tail = strstr(self, "tests/unit/test_ingest.c");
    snprintf(path, size, "%.*s" FIXTURES "%s", tail ? (int)(tail - self) : 0, self, name);
    if (access(path, R_OK) != 0) snprintf(path, size, FIXTURES "%s", name);
}

static void read_fixture(const char *name, struct buf *out)
{
    char path[4096];
    fixture_path(name, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open fixture %s (run from the repository root)", name);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(out, chunk, n), 0);
    fclose(f);
}

/* The decoded fixture, for expected totals and times. */
static void decode_fixture(const char *name, struct pprof_decoded *d, struct buf *pb)
{
    struct buf packed = {0};
    struct cp_err err;
    read_fixture(name, &packed);
    assert_int_equal(pprof_decompress((uint8_t *)packed.data, packed.len, 1 << 28, pb, &err), 0);
    assert_int_equal(pprof_decode((uint8_t *)pb->data, pb->len, d, &err), 0);
    buf_free(&packed);
}

static const char *label(const struct ingest_profile *p, const char *key)
{
    return json_string_value(json_object_get(p->labels, key));
}

static void expect_empty(const struct ingest_batch *b)
{
    assert_null(b->items);
    assert_int_equal(b->count, 0);
}

/* ---- profile types ------------------------------------------------------------------------ */

static void test_profile_types(void **state)
{
    (void)state;
    struct {
        const char *name, *unit, *type;
    } cases[] = {
        {"samples", "count", "samples"},
        {"cpu", "nanoseconds", "cpu"},
        {"wall", "nanoseconds", "wall"},
        {"cpu-time", "nanoseconds", "cpu"},
        {"wall-time", "nanoseconds", "wall"},
        {"cpu-samples", "count", "samples"},
        {"wall-samples", "count", "samples"},
        {"alloc-samples", "count", "alloc_objects"},
        {"alloc-space", "bytes", "alloc_space"},
        {"heap-space", "bytes", "inuse_space"},
        {"alloc_objects", "count", "alloc_objects"},
        {"alloc_space", "bytes", "alloc_space"},
        {"inuse_objects", "count", "inuse_objects"},
        {"inuse_space", "bytes", "inuse_space"},
        {"cpu", "count", NULL},
        {"lock-acquire-wait", "nanoseconds", NULL},
        {"exception-samples", "count", NULL},
        {"goroutine", "count", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = profile_type_from_sample_type(cases[i].name, cases[i].unit);
        if (!cases[i].type) {
            assert_null(t);
            continue;
        }
        assert_non_null(t);
        assert_string_equal(t, cases[i].type);
        const struct profile_type_info *info = profile_type_info(t);
        assert_non_null(info);
        assert_string_equal(info->unit, cases[i].unit);
        assert_string_equal(info->aggregation, "sum");
    }
    assert_string_equal(profile_type_normalize_query("wall-time"), "wall");
    assert_string_equal(profile_type_normalize_query("cpu"), "cpu");
    assert_string_equal(profile_type_normalize_query("inuse_space"), "inuse_space");
    assert_null(profile_type_normalize_query("Wall"));
    assert_null(profile_type_normalize_query(""));
    assert_null(profile_type_normalize_query(NULL));
    assert_string_equal(profile_type_info("cpu")->title, "CPU Time");
    assert_null(profile_type_info("nope"));
    size_t n;
    const struct profile_type_info *all = profile_type_all(&n);
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++)
        assert_ptr_equal(profile_type_info(all[i].name), &all[i]);
    /* ddtrace: cpu-samples comes first, so it is the "samples" of the profile. */
    const char *names[] = {"cpu-samples", "cpu-time", "wall-samples", "wall-time"};
    const char *units[] = {"count", "nanoseconds", "count", "nanoseconds"};
    assert_int_equal(profile_type_pick(names, units, 4, "samples"), 0);
    assert_int_equal(profile_type_pick(names, units, 4, "wall"), 3);
    assert_int_equal(profile_type_pick(names, units, 4, "alloc_space"), -1);
}

/* ---- Pyroscope ---------------------------------------------------------------------------- */

static int pyroscope(const char *query, const char *fixture, struct ingest_batch *b,
                     struct cp_err *err)
{
    struct buf body = {0};
    if (fixture) read_fixture(fixture, &body);
    int rc = ingest_parse_pyroscope(query, (uint8_t *)body.data, body.len, b, err);
    buf_free(&body);
    return rc;
}

static void test_pyroscope_agent_profile(void **state)
{
    (void)state;
    struct ingest_batch b;
    struct cp_err err;
    const char *q = "name=shop.cpu%7Bproject_id%3Dp1%2C+environment%3Dmain%2Chost=node-1%7D"
                    "&from=1777629600&until=1777629645&format=pprof&sampleRate=100"
                    "&spyName=conprof&aggregationType=sum";
    if (pyroscope(q, "conprof_agent.pb.gz", &b, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(b.count, 1);
    const struct ingest_profile *p = &b.items[0];
    assert_string_equal(p->app, "shop.cpu");
    assert_string_equal(label(p, "project_id"), "p1");
    assert_string_equal(label(p, "environment"), "main");
    assert_string_equal(label(p, "host"), "node-1");
    assert_string_equal(label(p, "spy_name"), "conprof");
    assert_int_equal(json_object_size(p->labels), 4);
    assert_int_equal(p->from_ns, T0 * NS);
    assert_int_equal(p->until_ns, (T0 + 45) * NS);
    assert_string_equal(p->source_name, "ingest");

    struct pprof_decoded d;
    struct buf pb = {0};
    decode_fixture("conprof_agent.pb.gz", &d, &pb);
    assert_int_equal(p->pprof.len, pb.len);
    assert_memory_equal(p->pprof.data, pb.data, pb.len);
    int64_t totals[3];
    pprof_decoded_totals(&d, totals);
    assert_int_equal(p->ntypes, 3);
    assert_string_equal(p->types[0], "samples");
    assert_string_equal(p->types[1], "wall");
    assert_string_equal(p->types[2], "cpu");
    for (int i = 0; i < 3; i++)
        assert_int_equal(p->totals[i], totals[i]);
    assert_true(p->totals[2] > 1000000000); /* cpu.py split spins for 2 s */
    pprof_decoded_free(&d);
    buf_free(&pb);
    ingest_batch_free(&b);
    expect_empty(&b);
}

static void test_pyroscope_times(void **state)
{
    (void)state;
    struct ingest_batch b;
    struct cp_err err;
    /* ms, µs and ns magnitudes. */
    const char *queries[] = {"name=a&from=1777629600000&until=1777629645000",
                             "name=a&from=1777629600000000&until=1777629645000000",
                             "name=a&from=1777629600000000000&until=1777629645000000000"};
    for (int i = 0; i < 3; i++) {
        if (pyroscope(queries[i], "go_cpu.pb.gz", &b, &err) < 0) fail_msg("%s", err.msg);
        assert_int_equal(b.items[0].from_ns, T0 * NS);
        assert_int_equal(b.items[0].until_ns, (T0 + 45) * NS);
        ingest_batch_free(&b);
    }
    /* No from/until: the pprof's time_nanos and duration_nanos. */
    struct pprof_decoded d;
    struct buf pb = {0};
    decode_fixture("go_cpu.pb.gz", &d, &pb);
    assert_int_equal(pyroscope("name=a", "go_cpu.pb.gz", &b, &err), 0);
    assert_int_equal(b.items[0].from_ns, d.time_nanos);
    assert_int_equal(b.items[0].until_ns, d.time_nanos + d.duration_nanos);
    ingest_batch_free(&b);
    /* from alone: until = from + the pprof's duration. */
    assert_int_equal(pyroscope("name=a&from=1777629600", "go_cpu.pb.gz", &b, &err), 0);
    assert_int_equal(b.items[0].until_ns, T0 * NS + d.duration_nanos);
    ingest_batch_free(&b);
    pprof_decoded_free(&d);
    buf_free(&pb);
}

static void test_pyroscope_heap_and_zstd(void **state)
{
    (void)state;
    struct ingest_batch b;
    struct cp_err err;
    if (pyroscope("name=api{}&from=1777629600&until=1777629610", "go_heap.pb.zst", &b, &err) < 0)
        fail_msg("%s", err.msg);
    const struct ingest_profile *p = &b.items[0];
    assert_string_equal(p->app, "api");
    assert_int_equal(json_object_size(p->labels), 0);
    assert_int_equal(p->ntypes, 4);
    const char *want[] = {"alloc_objects", "alloc_space", "inuse_objects", "inuse_space"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(p->types[i], want[i]);
    assert_true(p->totals[1] >= 2000 * 4096); /* allocate(): 2000 slices of 4 KiB */
    ingest_batch_free(&b);
    /* application_name in the series labels names the application. */
    assert_int_equal(pyroscope("name=x{application_name=shop}&from=1", "go_cpu.pb.gz", &b, &err),
                     0);
    assert_string_equal(b.items[0].app, "shop");
    ingest_batch_free(&b);
}

static void expect_pyroscope_error(const char *query, const char *fixture, const char *needle)
{
    struct ingest_batch b = {(void *)1, 99};
    struct cp_err err;
    assert_int_equal(pyroscope(query, fixture, &b, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    if (!strstr(err.msg, needle)) fail_msg("%s: expected \"%s\" in \"%s\"", query, needle, err.msg);
    expect_empty(&b);
}

static void test_pyroscope_rejections(void **state)
{
    (void)state;
    const char *cpu = "go_cpu.pb.gz";
    const char *bad_names[] = {"name=app%7Bk%7D", "name={k=v}",         "name=app{k=v",
                               "name=app{k=v}x",  "name=app{k=v}{a=b}", "name=a,b",
                               "name=app{k!=v}",  "name=app{=v}",       "name=%20"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        expect_pyroscope_error(bad_names[i], cpu, "name: expected app{key=value,...}");
    expect_pyroscope_error("from=1", cpu, "name: missing");
    expect_pyroscope_error("name=a&from=abc", cpu, "from: expected Unix seconds");
    expect_pyroscope_error("name=a&from=-5", cpu, "from: expected Unix seconds");
    expect_pyroscope_error("name=a&from=12.5", cpu, "from: expected Unix seconds");
    expect_pyroscope_error("name=a&from=", cpu, "from: expected Unix seconds");
    expect_pyroscope_error("name=a&from=1&until=99999999999999999999", cpu,
                           "until: expected Unix seconds");
    expect_pyroscope_error("name=a&from=20&until=10", cpu, "end time is before the start");
    expect_pyroscope_error("name=a&until=10", cpu, "from: missing");
    expect_pyroscope_error("name=a&from=1&format=folded", cpu, "format: only pprof");
    expect_pyroscope_error("name=a%zz&from=1", cpu, "name: bad percent-encoding");
    expect_pyroscope_error("name=a%00b&from=1", cpu, "name: bad percent-encoding");
    expect_pyroscope_error("name=a&from=1", NULL, "pprof body: empty profile");
    expect_pyroscope_error("name=a&from=1", "go_cpu.raw.txt", "pprof body: malformed protobuf");

    /* 65 labels; a 513-byte value; a 129-byte key. */
    struct buf q = {0};
    buf_append_str(&q, "from=1&name=a{");
    for (int i = 0; i < 65; i++)
        buf_printf(&q, "%sk%d=v", i ? "," : "", i);
    buf_append_str(&q, "}");
    expect_pyroscope_error(q.data, cpu, "more than 64 labels");
    buf_reset(&q);
    buf_printf(&q, "from=1&name=a{k=%0513d}", 0);
    expect_pyroscope_error(q.data, cpu, "label k: value longer than 512 bytes");
    buf_reset(&q);
    buf_printf(&q, "from=1&name=a{k%0129d=v}", 0);
    expect_pyroscope_error(q.data, cpu, "key must be 1 to 128 bytes");
    buf_free(&q);
}

/* ---- hand-built pprof with a broken reference -------------------------------------------- */

static void put_varint(struct buf *b, uint64_t v)
{
    do {
        uint8_t byte = (uint8_t)(v & 0x7f);
        v >>= 7;
        assert_int_equal(buf_append_byte(b, byte | (v ? 0x80 : 0)), 0);
    } while (v);
}

static void put_len(struct buf *b, uint32_t field, const void *data, size_t len)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, len);
    assert_int_equal(buf_append(b, data, len), 0);
}

/* One sample type cpu/nanoseconds, 13 good samples on location 1, then sample 13 naming 99. */
static void broken_pprof(struct buf *p)
{
    const char *strings[] = {"", "cpu", "nanoseconds", "main", "app.py"};
    for (int i = 0; i < 5; i++)
        put_len(p, 6, strings[i], strlen(strings[i]));
    put_len(p, 1, "\x08\x01\x10\x02", 4);                 /* sample_type cpu/nanoseconds */
    put_len(p, 5, "\x08\x01\x10\x03\x20\x04", 6);         /* function 1 main app.py */
    put_len(p, 4, "\x08\x01\x22\x04\x08\x01\x10\x07", 8); /* location 1: main line 7 */
    for (int i = 0; i < 13; i++)
        put_len(p, 2, "\x0a\x01\x01\x12\x01\x05", 6);
    put_len(p, 2, "\x0a\x01\x63\x12\x01\x05", 6); /* location 99 */
}

/* The sample types dd-trace-py's libdatadog exporter writes (blackfire.md §2.5), two samples. */
static void ddtrace_pprof(struct buf *p)
{
    const char *strings[] = {"",          "cpu-samples", "count",
                             "cpu-time",  "nanoseconds", "wall-samples",
                             "wall-time", "handler",     "app.py"};
    for (int i = 0; i < 9; i++)
        put_len(p, 6, strings[i], strlen(strings[i]));
    put_len(p, 1, "\x08\x01\x10\x02", 4); /* cpu-samples/count */
    put_len(p, 1, "\x08\x03\x10\x04", 4); /* cpu-time/nanoseconds */
    put_len(p, 1, "\x08\x05\x10\x02", 4); /* wall-samples/count */
    put_len(p, 1, "\x08\x06\x10\x04", 4); /* wall-time/nanoseconds */
    put_len(p, 5, "\x08\x01\x10\x07\x20\x08", 6);
    put_len(p, 4, "\x08\x01\x22\x04\x08\x01\x10\x07", 8);
    put_len(p, 2, "\x0a\x01\x01\x12\x04\x01\x0a\x02\x14", 9); /* 1, 10, 2, 20 */
    put_len(p, 2, "\x0a\x01\x01\x12\x04\x03\x1e\x04\x28", 9); /* 3, 30, 4, 40 */
}

/* ---- multipart ---------------------------------------------------------------------------- */

static void part(struct buf *b, const char *name, const char *filename, const char *type,
                 const void *data, size_t len)
{
    buf_printf(b, "--BOUNDARY\r\nContent-Disposition: form-data; name=\"%s\"", name);
    if (filename) buf_printf(b, "; filename=\"%s\"", filename);
    buf_append_str(b, "\r\n");
    if (type) buf_printf(b, "Content-Type: %s\r\n", type);
    buf_append_str(b, "\r\n");
    buf_append(b, data, len);
    buf_append_str(b, "\r\n");
}

static void text_part(struct buf *b, const char *name, const char *value)
{
    part(b, name, NULL, NULL, value, strlen(value));
}

static void fixture_part(struct buf *b, const char *name, const char *filename, const char *fixture)
{
    struct buf data = {0};
    read_fixture(fixture, &data);
    part(b, name, filename, "application/octet-stream", data.data, data.len);
    buf_free(&data);
}

static const char *CT = "multipart/form-data; boundary=BOUNDARY";

static int multipart(struct buf *body, struct ingest_batch *b, struct cp_err *err)
{
    buf_append_str(body, "--BOUNDARY--\r\n");
    int rc = ingest_parse_multipart(CT, (uint8_t *)body->data, body->len, b, err);
    buf_free(body);
    return rc;
}

static const char *EVENT_V4 =
    "{\"attachments\":[\"cpu.pprof\",\"delta-heap.pprof\",\"code-provenance.json\"],"
    "\"tags_profiler\":\"service:shop,runtime-id:5f2c,language:python,runtime:CPython,"
    "runtime_version:3.12.3,profiler_version:4.6.4,runtime_os:Linux,runtime_arch:x86_64,"
    "probe_version:1.2.9,project_id:abc,env:main,my-extra-label:data:with:colons,"
    "runtime_platform:x86_64-unknown-linux-gnu\","
    "\"start\":\"2026-05-01T10:00:00.123456789Z\",\"end\":\"2026-05-01T12:00:45+02:00\","
    "\"family\":\"python\",\"version\":\"4\",\"endpoint_counts\":{},\"internal\":{}}";

static void v4_body(struct buf *body, const char *event)
{
    part(body, "event", "event.json", "application/json", event, strlen(event));
    fixture_part(body, "cpu.pprof", "cpu.pprof", "go_cpu.pb.gz");
    fixture_part(body, "delta-heap.pprof", "delta-heap.pprof", "go_heap.pb.zst");
    part(body, "code-provenance.json", "code-provenance.json", NULL, "{}", 2);
}

static void test_v4_upload(void **state)
{
    (void)state;
    struct buf body = {0};
    struct ingest_batch b;
    struct cp_err err;
    v4_body(&body, EVENT_V4);
    if (multipart(&body, &b, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(b.count, 2);
    const struct ingest_profile *cpu = &b.items[0], *heap = &b.items[1];
    assert_string_equal(cpu->source_name, "cpu.pprof");
    assert_string_equal(heap->source_name, "delta-heap.pprof");
    for (int i = 0; i < 2; i++) {
        const struct ingest_profile *p = &b.items[i];
        assert_string_equal(p->app, "shop");
        assert_string_equal(label(p, "project_id"), "abc");
        assert_string_equal(label(p, "environment"), "main");
        assert_string_equal(label(p, "env"), "main");
        assert_string_equal(label(p, "runtime_version"), "3.12.3");
        assert_string_equal(label(p, "my-extra-label"), "data:with:colons");
        assert_string_equal(label(p, "runtime_platform"), "x86_64-unknown-linux-gnu");
        assert_int_equal(p->from_ns, T0 * NS + 123456789);
        assert_int_equal(p->until_ns, (T0 + 45) * NS);
    }
    assert_int_equal(cpu->ntypes, 2);
    assert_string_equal(cpu->types[0], "samples");
    assert_string_equal(cpu->types[1], "cpu");
    assert_int_equal(cpu->totals[0], 71);
    assert_int_equal(cpu->totals[1], 710000000);
    assert_int_equal(heap->ntypes, 4);
    ingest_batch_free(&b);
}

static void test_v4_ddtrace_zstd_profile(void **state)
{
    (void)state;
    struct buf pb = {0}, zs = {0}, body = {0};
    ddtrace_pprof(&pb);
    size_t bound = ZSTD_compressBound(pb.len);
    assert_int_equal(buf_reserve(&zs, bound), 0);
    zs.len = ZSTD_compress(zs.data, bound, pb.data, pb.len, 3);
    assert_false(ZSTD_isError(zs.len));
    const char *event = "{\"attachments\":[\"profile.pprof\"],\"tags_profiler\":"
                        "\"service:py,language:python,runtime:CPython,runtime-id:x\","
                        "\"start\":\"2026-05-01T10:00:00Z\",\"end\":\"2026-05-01T10:00:45Z\"}";
    part(&body, "event", "event.json", "application/json", event, strlen(event));
    part(&body, "profile.pprof", "profile.pprof", NULL, zs.data, zs.len);
    struct ingest_batch b;
    struct cp_err err;
    if (multipart(&body, &b, &err) < 0) fail_msg("%s", err.msg);
    const struct ingest_profile *p = &b.items[0];
    assert_int_equal(p->ntypes, 3);
    assert_string_equal(p->types[0], "samples");
    assert_int_equal(p->totals[0], 4); /* cpu-samples, not wall-samples */
    assert_string_equal(p->types[1], "cpu");
    assert_int_equal(p->totals[1], 40);
    assert_string_equal(p->types[2], "wall");
    assert_int_equal(p->totals[2], 60);
    assert_int_equal(p->pprof.len, pb.len);
    assert_memory_equal(p->pprof.data, pb.data, pb.len);
    assert_string_equal(label(p, "runtime"), "CPython");
    ingest_batch_free(&b);
    buf_free(&pb);
    buf_free(&zs);
}

static void test_v4_without_times_uses_the_pprof(void **state)
{
    (void)state;
    struct buf body = {0};
    struct ingest_batch b;
    struct cp_err err;
    const char *event = "{\"attachments\":[\"auto.pprof\"],\"tags_profiler\":\"service:s,"
                        "application_name:shop\"}";
    part(&body, "event", "event.json", "application/json", event, strlen(event));
    fixture_part(&body, "auto.pprof", "auto.pprof", "conprof_agent.pb.gz");
    if (multipart(&body, &b, &err) < 0) fail_msg("%s", err.msg);
    struct pprof_decoded d;
    struct buf pb = {0};
    decode_fixture("conprof_agent.pb.gz", &d, &pb);
    assert_string_equal(b.items[0].app, "shop"); /* application_name before service */
    assert_int_equal(b.items[0].from_ns, d.time_nanos);
    assert_int_equal(b.items[0].until_ns, d.time_nanos + d.duration_nanos);
    ingest_batch_free(&b);
    pprof_decoded_free(&d);
    buf_free(&pb);
}

static void expect_multipart_error(struct buf *body, const char *needle)
{
    struct ingest_batch b = {(void *)1, 99};
    struct cp_err err;
    assert_int_equal(multipart(body, &b, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    if (!strstr(err.msg, needle)) fail_msg("expected \"%s\" in \"%s\"", needle, err.msg);
    expect_empty(&b);
}

static void test_v4_rejections(void **state)
{
    (void)state;
    struct buf body = {0}, broken = {0};
    /* A corrupt second attachment: nothing is returned, the reference is named. */
    const char *event = "{\"attachments\":[\"cpu.pprof\",\"wall.pprof\"],\"tags_profiler\":"
                        "\"service:shop\"}";
    part(&body, "event", "event.json", "application/json", event, strlen(event));
    fixture_part(&body, "cpu.pprof", "cpu.pprof", "go_cpu.pb.gz");
    broken_pprof(&broken);
    part(&body, "wall.pprof", "wall.pprof", NULL, broken.data, broken.len);
    buf_free(&broken);
    expect_multipart_error(
        &body, "pprof attachment wall.pprof: sample 13 names location 99 which does not exist");

    event = "{\"attachments\":[\"cpu.pprof\"],\"tags_profiler\":\"service:shop\"}";
    part(&body, "event", "event.json", "application/json", event, strlen(event));
    expect_multipart_error(&body, "event.json lists attachment \"cpu.pprof\" but no part");

    text_part(&body, "event", "{\"attachments\":[\"cpu.pprof\"");
    expect_multipart_error(&body, "event.json: ");

    text_part(&body, "event",
              "{\"attachments\":[\"code-provenance.json\"],"
              "\"tags_profiler\":\"service:shop\"}");
    part(&body, "code-provenance.json", "code-provenance.json", NULL, "{}", 2);
    expect_multipart_error(&body, "multipart: no profile attachment");

    text_part(&body, "event",
              "{\"attachments\":[\"cpu.pprof\"],\"start\":\"yesterday\","
              "\"tags_profiler\":\"service:shop\"}");
    fixture_part(&body, "cpu.pprof", "cpu.pprof", "go_cpu.pb.gz");
    expect_multipart_error(&body, "event.json start: expected an RFC 3339 time");

    text_part(&body, "event",
              "{\"attachments\":[\"cpu.pprof\"],\"start\":\"2026-05-01T10:00:00Z\","
              "\"end\":\"2026-05-01T09:00:00Z\",\"tags_profiler\":\"service:s\"}");
    fixture_part(&body, "cpu.pprof", "cpu.pprof", "go_cpu.pb.gz");
    expect_multipart_error(&body, "end is before start");

    text_part(&body, "event", "{\"attachments\":[\"cpu.pprof\"],\"tags_profiler\":\"lang:go\"}");
    fixture_part(&body, "cpu.pprof", "cpu.pprof", "go_cpu.pb.gz");
    expect_multipart_error(&body, "no application name");

    text_part(&body, "event", "{\"attachments\":[\"cpu.pprof\"],\"tags_profiler\":\"service:s\"}");
    part(&body, "cpu.pprof", "cpu.pprof", NULL, "\x04\x22\x4d\x18\x00\x00\x00", 7);
    expect_multipart_error(&body, "pprof attachment cpu.pprof: lz4");

    struct ingest_batch b = {(void *)1, 99};
    struct cp_err err;
    assert_int_equal(ingest_parse_multipart("application/json", (const uint8_t *)"{}", 2, &b, &err),
                     -1);
    expect_empty(&b);
    assert_int_equal(ingest_parse_multipart(CT, (const uint8_t *)"garbage", 7, &b, &err), -1);
    expect_empty(&b);
}

static void test_rfc3339_forms(void **state)
{
    (void)state;
    struct {
        const char *start;
        int64_t ns;
    } cases[] = {
        {"2026-05-01T10:00:00Z", T0 * NS},
        {"2026-05-01t10:00:00.5z", T0 * NS + 500000000},
        {"2026-05-01 10:00:00.000000001Z", T0 * NS + 1},
        {"2026-05-01T11:30:00+01:30", T0 * NS},
        {"2026-05-01T09:00:00.25-01:00", T0 * NS + 250000000},
        {"2024-02-29T23:59:59Z", 1709251199LL * NS},
        {"2026-05-01T10:00:00.1234567891234Z", T0 * NS + 123456789},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf body = {0}, event = {0};
        buf_printf(
            &event,
            "{\"attachments\":[\"p.pprof\"],\"start\":\"%s\",\"tags_profiler\":\"service:s\"}",
            cases[i].start);
        text_part(&body, "event", event.data);
        fixture_part(&body, "p.pprof", "p.pprof", "go_cpu.pb.gz");
        struct ingest_batch b;
        struct cp_err err;
        if (multipart(&body, &b, &err) < 0) fail_msg("%s: %s", cases[i].start, err.msg);
        assert_int_equal(b.items[0].from_ns, cases[i].ns);
        ingest_batch_free(&b);
        buf_free(&event);
    }
    const char *bad[] = {"2026-13-01T10:00:00Z",  "2026-02-30T10:00:00Z",    "2026-05-01T24:00:00Z",
                         "2026-05-01T10:00:00",   "2026-05-01T10:00:00.Z",   "1969-12-31T23:59:59Z",
                         "2026-05-01T10:00:00+1", "2026-05-01T10:00:00Zjunk"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf body = {0}, event = {0};
        buf_printf(
            &event,
            "{\"attachments\":[\"p.pprof\"],\"start\":\"%s\",\"tags_profiler\":\"service:s\"}",
            bad[i]);
        text_part(&body, "event", event.data);
        fixture_part(&body, "p.pprof", "p.pprof", "go_cpu.pb.gz");
        expect_multipart_error(&body, "event.json start: expected an RFC 3339 time");
        buf_free(&event);
    }
}

static void test_v3_v2_and_native_dialects(void **state)
{
    (void)state;
    struct buf body = {0};
    struct ingest_batch b;
    struct cp_err err;

    /* v3: version, start, end, repeated tags[], data[auto.pprof]. */
    text_part(&body, "version", "3");
    text_part(&body, "start", "2026-05-01T10:00:00Z");
    text_part(&body, "end", "2026-05-01T10:00:45Z");
    text_part(&body, "family", "python");
    text_part(&body, "tags[]", "service:shop");
    text_part(&body, "tags[]", "project_id:p9");
    fixture_part(&body, "data[auto.pprof]", "auto.pprof", "conprof_agent.pb.gz");
    if (multipart(&body, &b, &err) < 0) fail_msg("v3: %s", err.msg);
    assert_int_equal(b.count, 1);
    assert_string_equal(b.items[0].app, "shop");
    assert_string_equal(label(&b.items[0], "project_id"), "p9");
    assert_null(json_object_get(b.items[0].labels, "version"));
    assert_int_equal(b.items[0].from_ns, T0 * NS);
    assert_int_equal(b.items[0].until_ns, (T0 + 45) * NS);
    assert_string_equal(b.items[0].source_name, "auto.pprof");
    ingest_batch_free(&b);

    /* v2: format, runtime, recording-start/-end, tags[], types[0], data[0] "pprof-data". */
    text_part(&body, "format", "pprof");
    text_part(&body, "runtime", "go");
    text_part(&body, "recording-start", "2026-05-01T10:00:00Z");
    text_part(&body, "recording-end", "2026-05-01T10:01:00Z");
    text_part(&body, "tags[]", "service:api");
    text_part(&body, "types[0]", "cpu");
    fixture_part(&body, "data[0]", "pprof-data", "go_cpu.pb.gz");
    if (multipart(&body, &b, &err) < 0) fail_msg("v2: %s", err.msg);
    assert_string_equal(b.items[0].app, "api");
    assert_string_equal(label(&b.items[0], "runtime"), "go");
    assert_null(json_object_get(b.items[0].labels, "types[0]"));
    assert_int_equal(b.items[0].until_ns, (T0 + 60) * NS);
    ingest_batch_free(&b);

    /* Blackfire-native Go: labels are plain fields, one file part per profile type. */
    text_part(&body, "application_name", "billing");
    text_part(&body, "project_id", "p2");
    text_part(&body, "host", "web-1");
    text_part(&body, "probe_version", "v1.0.0");
    fixture_part(&body, "cpu", "cpu", "go_cpu.pb.gz");
    fixture_part(&body, "heap", "heap", "go_heap.pb.gz");
    if (multipart(&body, &b, &err) < 0) fail_msg("native: %s", err.msg);
    assert_int_equal(b.count, 2);
    assert_string_equal(b.items[1].app, "billing");
    assert_string_equal(label(&b.items[1], "host"), "web-1");
    assert_string_equal(label(&b.items[1], "application_name"), "billing");
    assert_string_equal(b.items[1].source_name, "heap");
    ingest_batch_free(&b);

    /* Node native: one part "profile" with filename profile.pprof and content type text/json. */
    text_part(&body, "application_name", "front");
    struct buf data = {0};
    read_fixture("go_cpu.pb.gz", &data);
    part(&body, "profile", "profile.pprof", "text/json", data.data, data.len);
    buf_free(&data);
    if (multipart(&body, &b, &err) < 0) fail_msg("node: %s", err.msg);
    assert_string_equal(b.items[0].source_name, "profile.pprof");
    ingest_batch_free(&b);

    /* A garbage profile part in the native dialect. */
    text_part(&body, "application_name", "front");
    part(&body, "cpu", "cpu", NULL, "not a profile", 13);
    expect_multipart_error(&body, "pprof attachment cpu: ");
}

/* ---- a body built by the curl CLI --------------------------------------------------------- */

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Reads one HTTP request: its Content-Type and body. */
static void read_request(int fd, char *content_type, size_t ct_size, struct buf *body)
{
    struct buf req = {0};
    char chunk[65536];
    char *head_end = NULL;
    size_t want = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        assert_int_equal(poll(&p, 1, 10000), 1);
        ssize_t n = read(fd, chunk, sizeof chunk);
        assert_true(n >= 0);
        assert_int_equal(buf_append(&req, chunk, (size_t)n), 0);
        if (!head_end && (head_end = strstr(req.data, "\r\n\r\n"))) {
            const char *cl = strcasestr(req.data, "\r\nContent-Length:");
            const char *ct = strcasestr(req.data, "\r\nContent-Type:");
            assert_non_null(cl);
            assert_non_null(ct);
            want = (size_t)(head_end + 4 - req.data) + strtoul(cl + 17, NULL, 10);
            ct += 15;
            while (*ct == ' ')
                ct++;
            snprintf(content_type, ct_size, "%.*s", (int)strcspn(ct, "\r"), ct);
        }
        if (n == 0 || (head_end && req.len >= want)) break;
    }
    assert_true(head_end && req.len == want);
    size_t head = (size_t)(strstr(req.data, "\r\n\r\n") + 4 - req.data);
    assert_int_equal(buf_append(body, req.data + head, req.len - head), 0);
    buf_free(&req);
}

static void test_curl_built_v4_body(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_ingest.XXXXXX", event_path[64], cpu_path[4096], heap_path[4096];
    assert_non_null(mkdtemp(dir));
    snprintf(event_path, sizeof event_path, "%s/event.json", dir);
    FILE *f = fopen(event_path, "w");
    fputs(EVENT_V4, f);
    fclose(f);
    fixture_path("go_cpu.pb.gz", cpu_path, sizeof cpu_path);
    fixture_path("go_heap.pb.zst", heap_path, sizeof heap_path);
    int port, lfd = listen_loopback(&port);
    char url[64], event_arg[128], cpu_arg[4200], heap_arg[4200];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/profiling/v1/input", port);
    snprintf(event_arg, sizeof event_arg, "event=@%s;type=application/json", event_path);
    snprintf(cpu_arg, sizeof cpu_arg, "cpu.pprof=@%s;filename=cpu.pprof", cpu_path);
    snprintf(heap_arg, sizeof heap_arg, "delta-heap.pprof=@%s;filename=delta-heap.pprof",
             heap_path);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("curl", "curl", "-s", "-o", "/dev/null", "-H", "Expect:", "-F", event_arg, "-F",
               cpu_arg, "-F", heap_arg, url, (char *)NULL);
        _exit(127);
    }
    struct pollfd p = {lfd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 10000), 1);
    int cfd = accept(lfd, NULL, NULL);
    char content_type[256];
    struct buf body = {0};
    read_request(cfd, content_type, sizeof content_type, &body);
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_true(write(cfd, ok, strlen(ok)) > 0);
    close(cfd);
    close(lfd);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unlink(event_path);
    rmdir(dir);

    assert_non_null(strstr(content_type, "multipart/form-data; boundary="));
    struct ingest_batch b;
    struct cp_err err;
    if (ingest_parse_multipart(content_type, (uint8_t *)body.data, body.len, &b, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(b.count, 2);
    assert_string_equal(b.items[0].app, "shop");
    assert_string_equal(b.items[0].source_name, "cpu.pprof");
    assert_int_equal(b.items[0].totals[1], 710000000);
    assert_string_equal(b.items[1].types[3], "inuse_space");
    assert_int_equal(b.items[1].from_ns, T0 * NS + 123456789);
    ingest_batch_free(&b);
    buf_free(&body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_types),
        cmocka_unit_test(test_pyroscope_agent_profile),
        cmocka_unit_test(test_pyroscope_times),
        cmocka_unit_test(test_pyroscope_heap_and_zstd),
        cmocka_unit_test(test_pyroscope_rejections),
        cmocka_unit_test(test_v4_upload),
        cmocka_unit_test(test_v4_ddtrace_zstd_profile),
        cmocka_unit_test(test_v4_without_times_uses_the_pprof),
        cmocka_unit_test(test_v4_rejections),
        cmocka_unit_test(test_rfc3339_forms),
        cmocka_unit_test(test_v3_v2_and_native_dialects),
        cmocka_unit_test(test_curl_built_v4_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
