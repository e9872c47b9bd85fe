/* sink_driver: runs agent/sink.c the way the daemon does, for tests/e2e/test_sinks.py.
 *
 * It opens a sink from its flags, submits --count records (record i carries a real gzipped
 * pprof from the sampler's aggregator and writer, whose leaf function is "work_<first+i>", and
 * covers the 45 s from --from-unix-s + 45 s * (first + i)), then calls sink_poll() in a loop until
 * nothing is queued, in flight or spooled, or --run-ms pass; then sink_flush(--flush-ms). It prints
 * one JSON line of the sink's counters on stdout, plus "max_poll_overrun_ms": how much longer than
 * asked the longest sink_poll() call took (uploads must never block the caller), and "flush": the
 * return of sink_flush(). Log lines go to stderr. Exit 0, or 2 on a bad flag or when the sink
 * cannot be opened (the reason on stderr).
 */
#include "profile_writers.h"
#include "sink.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct options {
    struct sink_config cfg;
    const char *app;
    const char *labels[32];
    int nlabels;
    int count, first, run_ms, flush_ms, poll_ms, pad_frames;
    int64_t from_s;
    int rate;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int usage(const char *why)
{
    fprintf(stderr,
            "sink_driver: %s\nusage: sink_driver (--url URL | --dir DIR) [--token T] [--ca FILE]"
            " [--spool DIR] [--spool-max BYTES] [--timeout-ms N] [--backoff-base-ms N]"
            " [--backoff-cap-ms N] [--spool-after-attempts N] [--spool-after-ms N] [--app NAME]"
            " [--label K=V]... [--count N] [--first N] [--from-unix-s S] [--rate HZ]"
            " [--run-ms N] [--flush-ms N] [--poll-ms N] [--pad-frames N]\n",
            why);
    return 2;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    sink_config_defaults(&o->cfg);
    o->cfg.kind = 0;
    o->app = "shop";
    o->run_ms = 10000;
    o->poll_ms = 50;
    o->from_s = 1714564845;
    o->rate = 100;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage("a flag without its value");
        i++;
        long n = strtol(v, NULL, 10);
        if (!strcmp(f, "--url"))
            o->cfg.kind = SINK_HTTP, o->cfg.url = v;
        else if (!strcmp(f, "--dir"))
            o->cfg.kind = SINK_DIR, o->cfg.dir = v;
        else if (!strcmp(f, "--token"))
            o->cfg.bearer_token = v;
        else if (!strcmp(f, "--ca"))
            o->cfg.ca_file = v;
        else if (!strcmp(f, "--spool"))
            o->cfg.spool_dir = v;
        else if (!strcmp(f, "--spool-max"))
            o->cfg.spool_max_bytes = (uint64_t)strtoull(v, NULL, 10);
        else if (!strcmp(f, "--timeout-ms"))
            o->cfg.upload_timeout_ms = (int)n;
        else if (!strcmp(f, "--backoff-base-ms"))
            o->cfg.backoff_base_ms = (int)n;
        else if (!strcmp(f, "--backoff-cap-ms"))
            o->cfg.backoff_cap_ms = (int)n;
        else if (!strcmp(f, "--spool-after-attempts"))
            o->cfg.spool_after_attempts = (int)n;
        else if (!strcmp(f, "--spool-after-ms"))
            o->cfg.spool_after_ms = (int)n;
        else if (!strcmp(f, "--app"))
            o->app = v;
        else if (!strcmp(f, "--label") && o->nlabels < 32 && strchr(v, '='))
            o->labels[o->nlabels++] = v;
        else if (!strcmp(f, "--count"))
            o->count = (int)n;
        else if (!strcmp(f, "--first"))
            o->first = (int)n;
        else if (!strcmp(f, "--from-unix-s"))
            o->from_s = n;
        else if (!strcmp(f, "--rate"))
            o->rate = (int)n;
        else if (!strcmp(f, "--run-ms"))
            o->run_ms = (int)n;
        else if (!strcmp(f, "--flush-ms"))
            o->flush_ms = (int)n;
        else if (!strcmp(f, "--poll-ms"))
            o->poll_ms = (int)n;
        else if (!strcmp(f, "--pad-frames"))
            o->pad_frames = (int)n;
        else
            return usage(f);
    }
    return o->cfg.kind ? 0 : usage("--url or --dir is required");
}

/* The profile of record i: main -> work_<i> (CPU and wall), plus pad_frames frames with
 * pseudo-random names under "pad" to make the body larger and hard to compress. */
static int make_pprof(const struct options *o, int i, struct buf *out, struct cp_err *err)
{
    struct agg a;
    if (agg_init(&a) < 0) return -1;
    char fn[32];
    snprintf(fn, sizeof fn, "work_%d", i);
    uint32_t frames[2] = {agg_frame_id_str(&a, fn, "app.py", 10),
                          agg_frame_id_str(&a, "main", "app.py", 3)};
    int rc = agg_add(&a, frames, 2, 30000000, 40000000);
    uint32_t x = 2463534242u + (uint32_t)i;
    for (int k = 0; rc == 0 && k < o->pad_frames; k++) {
        char name[32];
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        snprintf(name, sizeof name, "pad_%08x", x);
        uint32_t pad[2] = {agg_frame_id_str(&a, name, "pad.py", k + 1),
                           agg_frame_id_str(&a, "main", "app.py", 3)};
        rc = agg_add(&a, pad, 2, 0, 10000000);
    }
    int64_t from_ns = (o->from_s + 45 * (int64_t)i) * 1000000000;
    struct pprof_meta meta = {
        .time_nanos = from_ns, .duration_nanos = 45000000000, .period_nanos = 1000000000 / o->rate};
    if (rc == 0) rc = pprof_write(&a, &meta, out, err);
    agg_free(&a);
    return rc;
}

static int make_record(const struct options *o, int i, struct profile_record *r)
{
    struct cp_err err;
    memset(r, 0, sizeof *r);
    r->app_name = strdup(o->app);
    r->from_ns = (o->from_s + 45 * (int64_t)i) * 1000000000;
    r->until_ns = r->from_ns + 45000000000;
    r->rate_hz = o->rate;
    if (!r->app_name || profile_record_set_label(r, "application_name", o->app) < 0) return -1;
    for (int k = 0; k < o->nlabels; k++) {
        char key[256];
        const char *eq = strchr(o->labels[k], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->labels[k]), o->labels[k]);
        if (profile_record_set_label(r, key, eq + 1) < 0) return -1;
    }
    if (make_pprof(o, i, &r->pprof_gz, &err) < 0) {
        fprintf(stderr, "sink_driver: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void print_stats(struct sink *s, int64_t overrun, int flush_rc)
{
    struct sink_stats st;
    sink_get_stats(s, &st);
    json_t *j = json_pack(
        "{sI sI sI sI sI sI sI sI sI sI ss sI si}", "sent", (json_int_t)st.sent, "failed",
        (json_int_t)st.failed, "retried", (json_int_t)st.retried, "spooled", (json_int_t)st.spooled,
        "evicted", (json_int_t)st.evicted, "spool_corrupt", (json_int_t)st.spool_corrupt, "queued",
        (json_int_t)st.queued, "inflight", (json_int_t)st.inflight, "spool_files",
        (json_int_t)st.spool_files, "spool_bytes", (json_int_t)st.spool_bytes, "last_error",
        st.last_error, "max_poll_overrun_ms", (json_int_t)overrun, "flush", flush_rc);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(j);
}

int main(int argc, char **argv)
{
    struct options o = {0};
    if (parse_options(argc, argv, &o) != 0) return 2;
    struct cp_err err;
    struct sink *s = sink_open(&o.cfg, &err);
    if (!s) {
        fprintf(stderr, "sink_driver: %s\n", err.msg);
        return 2;
    }
    for (int i = o.first; i < o.first + o.count; i++) {
        struct profile_record r;
        if (make_record(&o, i, &r) < 0 || sink_submit(s, &r, &err) < 0) {
            fprintf(stderr, "sink_driver: cannot submit record %d\n", i);
            profile_record_free(&r);
        }
    }
    int64_t start = now_ms(), overrun = 0;
    for (;;) {
        struct sink_stats st;
        sink_get_stats(s, &st);
        if ((st.queued == 0 && st.inflight == 0 && st.spool_files == 0) ||
            now_ms() - start >= o.run_ms)
            break;
        int64_t t0 = now_ms();
        if (sink_poll(s, o.poll_ms, &err) < 0)
            fprintf(stderr, "sink_driver: sink_poll: %s\n", err.msg);
        int64_t took = now_ms() - t0 - o.poll_ms;
        overrun = took > overrun ? took : overrun;
    }
    int flush_rc = sink_flush(s, o.flush_ms, &err);
    print_stats(s, overrun, flush_rc);
    sink_close(s);
    return 0;
}
