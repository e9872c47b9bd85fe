/* query: the query API's four data answers, computed from store scans.
 *
 * Design: every answer is one store_profile_foreach() over the range with a callback that folds
 * rows into a small accumulator; only the merge asks the store for the protobuf (the other scans
 * never touch the blob column). Filters are checked per row by parsing its labels JSON only when
 * a filter is set. The timeline reads the per-type totals stored at ingest, so it never decodes
 * a profile; it prorates each profile over the buckets it overlaps (a 45 s profile straddling a
 * minute boundary adds to both minutes by overlap), which keeps the curve smooth whatever the
 * upload phase. The merge first copies the matching profiles' protobufs out of the store (SQLite
 * stays on the calling thread), then QUERY_MERGE_THREADS threads each decode (pprof_read) every
 * n-th profile, pick the sample type that maps to the requested profile type
 * (profile_type_pick) and add its samples to their own stackmerge; the thread merges are then
 * folded into the first in a fixed order, so the output does not depend on scheduling. Decoding
 * is most of the cost, which is why it is split. A profile that no longer decodes is skipped and
 * counted, never fatal.
 */
#include "query.h"

#include "pprof_read.h"
#include "profile_types.h"
#include "stackmerge.h"
#include "store.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NS_PER_S 1000000000LL

static const char *const FIELD_NAMES[QUERY_NFIELDS] = {
    "runtime", "runtime_version", "runtime_arch", "runtime_os", "probe_version", "host",
};

const char *query_field_name(enum query_field f)
{
    return (unsigned)f < QUERY_NFIELDS ? FIELD_NAMES[f] : "";
}

/* ---- query string ------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..n) (percent-encoding, '+' = space) into a new string; NULL on bad encoding. */
static char *url_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; out && i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%') {
            if (n - i < 3 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    if (out) out[o] = '\0';
    return out;
}

static int parse_seconds(const char *name, const char *v, int64_t *out, struct cp_err *err)
{
    const char *p = v + (*v == '-');
    size_t n = strlen(p);
    bool ok = n > 0 && n <= 12 && strspn(p, "0123456789") == n;
    if (!ok) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected Unix seconds, got '%.40s'", name, v);
        return -1;
    }
    *out = strtoll(v, NULL, 10);
    return 0;
}

static int type_error(const char *v, struct cp_err *err)
{
    size_t n;
    const struct profile_type_info *all = profile_type_all(&n);
    char list[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof list; i++)
        used +=
            (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", all[i].name);
    cp_err_set(err, CP_ERR_INVALID, "profile_type: unknown '%.40s'; one of %s", v, list);
    return -1;
}

static int parse_out(const char *v, enum query_out *out, struct cp_err *err)
{
    if (!strcmp(v, "flamebearer") || !strcmp(v, "flamebearerv2") || !strcmp(v, "json"))
        *out = QUERY_OUT_FLAMEBEARER;
    else if (!strcmp(v, "pprof"))
        *out = QUERY_OUT_PPROF;
    else if (!strcmp(v, "collapsed"))
        *out = QUERY_OUT_COLLAPSED;
    else {
        cp_err_set(err, CP_ERR_INVALID,
                   "out: unknown '%.40s'; one of pprof, collapsed, flamebearer", v);
        return -1;
    }
    return 0;
}

/* The filter field named by key ("runtime", "runtime[]", "runtime_mode"); -1 when none. */
static int filter_field(const char *key, bool *is_mode)
{
    for (int f = 0; f < QUERY_NFIELDS; f++) {
        size_t n = strlen(FIELD_NAMES[f]);
        if (strncmp(key, FIELD_NAMES[f], n)) continue;
        *is_mode = !strcmp(key + n, "_mode");
        if (*is_mode || !strcmp(key + n, "") || !strcmp(key + n, "[]")) return f;
    }
    return -1;
}

static int parse_filter(struct query_params *p, int f, bool is_mode, const char *key, const char *v,
                        struct cp_err *err)
{
    struct query_filter *flt = &p->filters[f];
    if (is_mode) {
        if (strcmp(v, "1") && strcmp(v, "-1")) {
            cp_err_set(err, CP_ERR_INVALID, "%s: expected 1 (include) or -1 (exclude)", key);
            return -1;
        }
        flt->mode = atoi(v);
        return 0;
    }
    if (flt->nvalues == QUERY_MAX_FILTER_VALUES) {
        cp_err_set(err, CP_ERR_INVALID, "%s: more than %d values", key, QUERY_MAX_FILTER_VALUES);
        return -1;
    }
    if (!(flt->values[flt->nvalues] = strdup(v))) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory parsing the query");
        return -1;
    }
    flt->nvalues++;
    return 0;
}

struct raw_range {
    bool has_from, has_to;
    int64_t from, to;
};

static int parse_param(struct query_params *p, struct raw_range *r, const char *key, const char *v,
                       struct cp_err *err)
{
    bool is_mode = false;
    int f = filter_field(key, &is_mode);
    if (f >= 0) return parse_filter(p, f, is_mode, key, v, err);
    if (!strcmp(key, "from")) {
        r->has_from = true;
        return parse_seconds("from", v, &r->from, err);
    }
    if (!strcmp(key, "to")) {
        r->has_to = true;
        return parse_seconds("to", v, &r->to, err);
    }
    if (!strcmp(key, "profile_type")) {
        p->profile_type = profile_type_normalize_query(v);
        return p->profile_type ? 0 : type_error(v, err);
    }
    if (!strcmp(key, "out")) return parse_out(v, &p->out, err);
    return 0; /* unknown parameters are ignored */
}

/* One "key=value" pair of length n. */
static int parse_pair(struct query_params *p, struct raw_range *r, const char *s, size_t n,
                      struct cp_err *err)
{
    const char *eq = memchr(s, '=', n);
    size_t klen = eq ? (size_t)(eq - s) : n;
    char *key = url_decode(s, klen);
    char *value = eq ? url_decode(eq + 1, n - klen - 1) : strdup("");
    int rc = 0;
    if (!key || !value) {
        cp_err_set(err, CP_ERR_INVALID, "query: bad percent-encoding in '%.*s'",
                   (int)(n < 60 ? n : 60), s);
        rc = -1;
    } else {
        rc = parse_param(p, r, key, value, err);
    }
    free(key);
    free(value);
    return rc;
}

static int resolve_range(struct query_params *p, const struct raw_range *r, int64_t now,
                         struct cp_err *err)
{
    p->to = r->has_to ? r->to : now;
    p->from = r->has_from ? r->from : p->to - QUERY_DEFAULT_RANGE_S;
    if (p->from >= p->to) {
        cp_err_set(err, CP_ERR_INVALID,
                   "from: must be before to (from %" PRId64 ", to %" PRId64 ")", p->from, p->to);
        return -1;
    }
    if (p->to - p->from > QUERY_MAX_RANGE_S) {
        cp_err_set(err, CP_ERR_INVALID, "from: the range is longer than %lld days",
                   QUERY_MAX_RANGE_S / 86400);
        return -1;
    }
    return 0;
}

int query_params_parse(const char *query, int64_t now, struct query_params *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    out->profile_type = "cpu";
    out->out = QUERY_OUT_FLAMEBEARER;
    for (int f = 0; f < QUERY_NFIELDS; f++)
        out->filters[f].mode = 1;
    query = query ? query : "";
    if (strlen(query) > QUERY_MAX_QUERY_LEN) {
        cp_err_set(err, CP_ERR_INVALID, "query: longer than %d bytes", QUERY_MAX_QUERY_LEN);
        return -1;
    }
    struct raw_range r = {0};
    for (const char *s = query; *s;) {
        size_t n = strcspn(s, "&");
        if (n && parse_pair(out, &r, s, n, err) < 0) return -1;
        s += n + (s[n] == '&');
    }
    return resolve_range(out, &r, now, err);
}

void query_params_free(struct query_params *p)
{
    for (int f = 0; f < QUERY_NFIELDS; f++) {
        for (size_t i = 0; i < p->filters[f].nvalues; i++)
            free(p->filters[f].values[i]);
        p->filters[f].nvalues = 0;
    }
}

/* ---- filters ------------------------------------------------------------------------------ */

static bool filters_active(const struct query_params *p)
{
    for (int f = 0; f < QUERY_NFIELDS; f++)
        if (p->filters[f].nvalues) return true;
    return false;
}

/* The label a field reads ("runtime" falls back to "language"); NULL when absent. */
static const char *field_label(const json_t *labels, int f)
{
    const char *v = json_string_value(json_object_get(labels, FIELD_NAMES[f]));
    if (!v && f == QUERY_F_RUNTIME) v = json_string_value(json_object_get(labels, "language"));
    return v;
}

static bool filter_keeps(const struct query_filter *flt, const char *value)
{
    bool listed = false;
    for (size_t i = 0; value && i < flt->nvalues && !listed; i++)
        listed = !strcmp(flt->values[i], value);
    return flt->mode < 0 ? !listed : listed;
}

/* true when the row passes every filter of p. */
static bool row_passes(const struct query_params *p, const struct store_profile_row *row)
{
    if (!filters_active(p)) return true;
    json_t *labels = json_loads(row->labels_json, 0, NULL);
    bool keep = true;
    for (int f = 0; f < QUERY_NFIELDS && keep; f++)
        if (p->filters[f].nvalues) keep = filter_keeps(&p->filters[f], field_label(labels, f));
    json_decref(labels);
    return keep;
}

static int64_t to_ns(int64_t s)
{
    if (s > INT64_MAX / NS_PER_S) return INT64_MAX;
    if (s < INT64_MIN / NS_PER_S) return INT64_MIN;
    return s * NS_PER_S;
}

/* ---- applications ------------------------------------------------------------------------- */

struct apps_ctx {
    const struct query_params *p;
    json_t *apps;
};

static json_t *new_app(const char *name)
{
    return json_pack("{s:s, s:{}, s:[]}", "name", name, "profile_types", "languages");
}

static int add_language(json_t *app, const json_t *labels)
{
    /* the language, not the runtime: "cpython" (ours), "CPython" (ddtrace) -> "python" */
    const char *lang = field_label(labels, QUERY_F_RUNTIME);
    if (!lang || !*lang || !strcasecmp(lang, "cpython") || !strcasecmp(lang, "pypy"))
        lang = "python";
    json_t *langs = json_object_get(app, "languages");
    size_t i;
    json_t *v;
    json_array_foreach(langs, i, v) if (!strcmp(json_string_value(v), lang)) return 0;
    return json_array_append_new(langs, json_string(lang));
}

static int add_types(json_t *app, const struct store_profile_row *row)
{
    json_t *types = json_object_get(app, "profile_types");
    for (size_t i = 0; i < row->ntypes; i++) {
        const struct profile_type_info *info = profile_type_info(row->types[i]);
        if (!info || json_object_get(types, info->name)) continue;
        json_t *t = json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", info->name, "title", info->title,
                              "description", info->description, "unit", info->unit, "aggregation",
                              info->aggregation);
        if (json_object_set_new(types, info->name, t) < 0) return -1;
    }
    return 0;
}

static int apps_row(const struct store_profile_row *row, void *vctx, struct cp_err *err)
{
    struct apps_ctx *c = vctx;
    if (!row_passes(c->p, row)) return 0;
    json_t *app = json_object_get(c->apps, row->app);
    if (!app && json_object_set_new(c->apps, row->app, app = new_app(row->app)) < 0) app = NULL;
    json_t *labels = app ? json_loads(row->labels_json, 0, NULL) : NULL;
    int rc = app && add_types(app, row) == 0 && add_language(app, labels) == 0 ? 0 : -1;
    json_decref(labels);
    if (rc < 0) cp_err_set(err, CP_ERR_NOMEM, "out of memory listing applications");
    return rc;
}

json_t *query_applications(struct store *st, const char *project, const char *environment,
                           const struct query_params *p, struct cp_err *err)
{
    struct apps_ctx c = {p, json_object()};
    if (!c.apps) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory listing applications");
        return NULL;
    }
    if (store_profile_foreach(st, project, environment, NULL, to_ns(p->from), to_ns(p->to), 0,
                              apps_row, &c, err) < 0) {
        json_decref(c.apps);
        return NULL;
    }
    return json_pack("{s:o}", "applications", c.apps);
}

/* ---- timeline ----------------------------------------------------------------------------- */

static const int64_t GRAINS[] = {60, 120, 300, 600, 900, 1800, 3600};

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static size_t bucket_count(int64_t from, int64_t to, int64_t grain)
{
    int64_t first = floor_div(from, grain), last = floor_div(to - 1, grain);
    return (size_t)(last - first + 1);
}

/* The grain rule of query.h. */
static int64_t choose_grain(int64_t from, int64_t to)
{
    size_t n = sizeof GRAINS / sizeof GRAINS[0];
    for (size_t i = 0; i < n; i++)
        if (bucket_count(from, to, GRAINS[i]) <= QUERY_MAX_POINTS) return GRAINS[i];
    return GRAINS[n - 1];
}

struct timeline_ctx {
    const struct query_params *p;
    int64_t start_ns, grain_ns; /* first bucket's start */
    size_t nbuckets;
    double *sum;
    bool *has;
};

static int64_t type_total(const struct store_profile_row *row, const char *type, bool *found)
{
    for (size_t i = 0; i < row->ntypes; i++)
        if (!strcmp(row->types[i], type)) {
            *found = true;
            return row->totals[i];
        }
    *found = false;
    return 0;
}

/* Adds the share of [from, until) overlapping bucket b. */
static void prorate(struct timeline_ctx *c, size_t b, int64_t from, int64_t until, double total)
{
    int64_t b0 = c->start_ns + (int64_t)b * c->grain_ns, b1 = b0 + c->grain_ns;
    int64_t lo = from > b0 ? from : b0, hi = until < b1 ? until : b1;
    if (hi <= lo) return;
    c->sum[b] += total * ((double)(hi - lo) / (double)(until - from));
    c->has[b] = true;
}

static int timeline_row(const struct store_profile_row *row, void *vctx, struct cp_err *err)
{
    (void)err;
    struct timeline_ctx *c = vctx;
    bool found;
    int64_t total = type_total(row, c->p->profile_type, &found);
    if (!found || !row_passes(c->p, row)) return 0;
    int64_t rel = row->from_ns - c->start_ns;
    int64_t first = rel < 0 ? 0 : rel / c->grain_ns;
    if (first >= (int64_t)c->nbuckets) return 0;
    if (row->until_ns == row->from_ns) {
        if (rel >= 0) {
            c->sum[first] += (double)total;
            c->has[first] = true;
        }
        return 0;
    }
    for (size_t b = (size_t)first; b < c->nbuckets; b++) {
        if (c->start_ns + (int64_t)b * c->grain_ns >= row->until_ns) break;
        prorate(c, b, row->from_ns, row->until_ns, (double)total);
    }
    return 0;
}

static json_t *timeline_points(const struct timeline_ctx *c)
{
    json_t *points = json_array();
    for (size_t b = 0; points && b < c->nbuckets; b++) {
        int64_t ts = (c->start_ns + (int64_t)b * c->grain_ns) / NS_PER_S;
        json_t *pt = c->has[b] ? json_pack("{s:I, s:f}", "timestamp", (json_int_t)ts, "value",
                                           c->sum[b] / (double)(c->grain_ns / NS_PER_S))
                               : json_pack("{s:I}", "timestamp", (json_int_t)ts);
        if (json_array_append_new(points, pt) < 0) {
            json_decref(points);
            points = NULL;
        }
    }
    return points;
}

json_t *query_timeline(struct store *st, const char *project, const char *environment,
                       const char *app, const struct query_params *p, int64_t retention_minutes,
                       struct cp_err *err)
{
    int64_t grain = choose_grain(p->from, p->to);
    struct timeline_ctx c = {.p = p,
                             .start_ns = floor_div(p->from, grain) * grain * NS_PER_S,
                             .grain_ns = grain * NS_PER_S,
                             .nbuckets = bucket_count(p->from, p->to, grain)};
    c.sum = calloc(c.nbuckets, sizeof *c.sum);
    c.has = calloc(c.nbuckets, sizeof *c.has);
    json_t *out = NULL;
    if (!c.sum || !c.has) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory building the timeline");
    } else if (store_profile_foreach(st, project, environment, app, to_ns(p->from), to_ns(p->to), 0,
                                     timeline_row, &c, err) == 0) {
        const struct profile_type_info *info = profile_type_info(p->profile_type);
        char unit[64];
        snprintf(unit, sizeof unit, "%s_per_second", info ? info->unit : "count");
        json_t *points = timeline_points(&c);
        out = points ? json_pack("{s:I, s:I, s:I, s:s, s:s, s:I, s:o}", "from", (json_int_t)p->from,
                                 "to", (json_int_t)p->to, "grain", (json_int_t)grain, "unit", unit,
                                 "aggregation_type", info ? info->aggregation : "sum", "retention",
                                 (json_int_t)retention_minutes, "points", points)
                     : NULL;
        if (!out) cp_err_set(err, CP_ERR_NOMEM, "out of memory building the timeline");
    }
    free(c.sum);
    free(c.has);
    return out;
}

/* ---- merge -------------------------------------------------------------------------------- */

/* One stored profile to merge: its protobuf copied out of the store's row. */
struct merge_job {
    uint8_t *pb;
    size_t len;
    int64_t from_ns, until_ns;
};

struct merge_ctx {
    const struct query_params *p;
    struct stackmerge *m; /* the result (worker 0's merge) */
    struct merge_job *jobs;
    size_t njobs, cap;
    int64_t first_ns, last_ns; /* span of the merged profiles */
    size_t merged, skipped;
};

/* A thread's share: jobs first, first + stride, ... into its own merge. */
struct merge_worker {
    const struct merge_ctx *c;
    size_t first, stride;
    struct stackmerge *m;
    int64_t first_ns, last_ns;
    size_t merged, skipped;
    int rc;
    struct cp_err err;
};

static int collect_job(const struct store_profile_row *row, void *vctx, struct cp_err *err)
{
    struct merge_ctx *c = vctx;
    bool found;
    type_total(row, c->p->profile_type, &found);
    if (!found || !row_passes(c->p, row)) return 0;
    if (c->njobs == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct merge_job *jobs = realloc(c->jobs, cap * sizeof *jobs);
        if (!jobs) goto nomem;
        c->jobs = jobs;
        c->cap = cap;
    }
    struct merge_job *j = &c->jobs[c->njobs];
    *j = (struct merge_job){malloc(row->pprof_len ? row->pprof_len : 1), row->pprof_len,
                            row->from_ns, row->until_ns};
    if (!j->pb) goto nomem;
    if (row->pprof_len) memcpy(j->pb, row->pprof, row->pprof_len);
    c->njobs++;
    return 0;
nomem:
    cp_err_set(err, CP_ERR_NOMEM, "out of memory merging profiles");
    return -1;
}

static int merge_job(struct merge_worker *w, const struct merge_job *j)
{
    struct pprof_decoded d;
    struct cp_err derr = {0};
    if (pprof_decode(j->pb, j->len, &d, &derr) < 0) {
        w->skipped++; /* stored before a decoder change, or corrupt: never fatal */
        return 0;
    }
    int ti = profile_type_pick(d.type_names, d.type_units, d.ntypes, w->c->p->profile_type);
    int rc = ti < 0 ? 0 : stackmerge_add_decoded(w->m, &d, (size_t)ti, &w->err);
    pprof_decoded_free(&d);
    if (ti < 0 || rc < 0) return rc;
    if (!w->merged || j->from_ns < w->first_ns) w->first_ns = j->from_ns;
    if (!w->merged || j->until_ns > w->last_ns) w->last_ns = j->until_ns;
    w->merged++;
    return 0;
}

static void *merge_worker_run(void *arg)
{
    struct merge_worker *w = arg;
    for (size_t i = w->first; w->rc == 0 && i < w->c->njobs; i += w->stride)
        w->rc = merge_job(w, &w->c->jobs[i]);
    return NULL;
}

/* Folds worker w into the context (worker 0's merge is the context's). */
static int merge_worker_fold(struct merge_ctx *c, struct merge_worker *w, struct cp_err *err)
{
    if (w->rc < 0) {
        *err = w->err;
        return -1;
    }
    if (w->m != c->m && stackmerge_merge(c->m, w->m, err) < 0) return -1;
    if (w->merged && (!c->merged || w->first_ns < c->first_ns)) c->first_ns = w->first_ns;
    if (w->merged && (!c->merged || w->last_ns > c->last_ns)) c->last_ns = w->last_ns;
    c->merged += w->merged;
    c->skipped += w->skipped;
    return 0;
}

/* Decodes and merges the collected jobs on QUERY_MERGE_THREADS threads (this one included). */
static int merge_jobs(struct merge_ctx *c, struct cp_err *err)
{
    struct merge_worker w[QUERY_MERGE_THREADS];
    pthread_t threads[QUERY_MERGE_THREADS];
    bool started[QUERY_MERGE_THREADS] = {false};
    size_t n = c->njobs < QUERY_MERGE_THREADS ? (c->njobs ? c->njobs : 1) : QUERY_MERGE_THREADS;
    for (size_t i = 0; i < n; i++) {
        w[i] = (struct merge_worker){.c = c, .first = i, .stride = n};
        w[i].m = i == 0 ? c->m : stackmerge_new();
        if (!w[i].m) {
            w[i].rc = -1;
            cp_err_set(&w[i].err, CP_ERR_NOMEM, "out of memory merging profiles");
            continue;
        }
        if (i > 0) started[i] = pthread_create(&threads[i], NULL, merge_worker_run, &w[i]) == 0;
        if (i > 0 && !started[i]) merge_worker_run(&w[i]); /* no thread: do its share here */
    }
    merge_worker_run(&w[0]);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (started[i]) pthread_join(threads[i], NULL);
        if (rc == 0) rc = merge_worker_fold(c, &w[i], err);
        if (i > 0) stackmerge_free(w[i].m);
    }
    return rc;
}

static void free_jobs(struct merge_ctx *c)
{
    for (size_t i = 0; i < c->njobs; i++)
        free(c->jobs[i].pb);
    free(c->jobs);
}

static const char *flamebearer_units(const char *type, const struct profile_type_info *info)
{
    if (!strcmp(type, "samples")) return "samples";
    if (info && !strcmp(info->unit, "count")) return "objects";
    return info ? info->unit : "";
}

static int write_flamebearer(const struct merge_ctx *c, const char *app, struct buf *body,
                             struct cp_err *err)
{
    const struct profile_type_info *info = profile_type_info(c->p->profile_type);
    struct stackmerge_flamebearer_meta meta = {
        .units = flamebearer_units(c->p->profile_type, info),
        .name = c->p->profile_type,
        .name_style = STACKMERGE_NAMES_LOCATION_JSON,
    };
    json_t *extra = json_pack(
        "{s:n, s:{}, s:n, s:s, s:s, s:s, s:s, s:I, s:I, s:i}", "timeline", "groups", "heatmap",
        "_profile_type", c->p->profile_type, "_sample_unit", info ? info->unit : "",
        "_aggregation_type", info ? info->aggregation : "sum", "_application", app, "_from",
        (json_int_t)c->p->from, "_to", (json_int_t)c->p->to, "_scale_factor", 1);
    if (!extra) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory writing the flamebearer");
        return -1;
    }
    int rc = stackmerge_write_flamebearer(c->m, &meta, extra, body, err);
    json_decref(extra);
    return rc;
}

static int write_merge(const struct merge_ctx *c, const char *app, struct buf *body,
                       const char **content_type, char *disposition, size_t dsize,
                       struct cp_err *err)
{
    if (c->p->out == QUERY_OUT_COLLAPSED) {
        *content_type = "text/plain; charset=utf-8";
        return stackmerge_write_collapsed(c->m, body, err);
    }
    if (c->p->out == QUERY_OUT_FLAMEBEARER) {
        *content_type = "application/json";
        return write_flamebearer(c, app, body, err);
    }
    const struct profile_type_info *info = profile_type_info(c->p->profile_type);
    struct stackmerge_pprof_meta meta = {
        .type = c->p->profile_type,
        .unit = info ? info->unit : "count",
        .time_nanos = c->merged ? c->first_ns : to_ns(c->p->from),
        .duration_nanos = c->merged ? c->last_ns - c->first_ns : to_ns(c->p->to - c->p->from),
    };
    *content_type = "application/octet-stream";
    if (disposition && dsize) {
        char safe[64];
        size_t n = 0;
        for (const char *s = app; *s && n + 1 < sizeof safe; s++)
            safe[n++] = (strchr("\"\\/;", *s) || (unsigned char)*s < 0x20) ? '_' : *s;
        safe[n] = '\0';
        snprintf(disposition, dsize, "attachment; filename=\"%s-%s.pb.gz\"", safe,
                 c->p->profile_type);
    }
    return stackmerge_write_pprof(c->m, &meta, body, err);
}

int query_merge(struct store *st, const char *project, const char *environment, const char *app,
                const struct query_params *p, struct buf *body, const char **content_type,
                char *disposition, size_t disposition_size, struct cp_err *err)
{
    if (disposition && disposition_size) disposition[0] = '\0';
    struct merge_ctx c = {.p = p, .m = stackmerge_new()};
    if (!c.m) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory merging profiles");
        return -1;
    }
    size_t len_before = body->len;
    int rc = store_profile_foreach(st, project, environment, app, to_ns(p->from), to_ns(p->to),
                                   STORE_ROW_PPROF, collect_job, &c, err);
    if (rc == 0) rc = merge_jobs(&c, err);
    if (rc == 0) rc = write_merge(&c, app, body, content_type, disposition, disposition_size, err);
    free_jobs(&c);
    stackmerge_free(c.m);
    if (rc < 0) {
        body->len = len_before;
        if (body->data) body->data[body->len] = '\0';
    }
    return rc;
}

/* ---- filter values ------------------------------------------------------------------------ */

struct value_count {
    const char *value; /* key in the counts object */
    json_int_t count;
};

struct filter_ctx {
    json_t *counts[QUERY_NFIELDS]; /* value -> integer */
};

static int filter_row(const struct store_profile_row *row, void *vctx, struct cp_err *err)
{
    struct filter_ctx *c = vctx;
    json_t *labels = json_loads(row->labels_json, 0, NULL);
    int rc = 0;
    for (int f = 0; f < QUERY_NFIELDS && rc == 0; f++) {
        const char *v = field_label(labels, f);
        if (!v) continue;
        json_t *n = json_object_get(c->counts[f], v);
        if (n)
            rc = json_integer_set(n, json_integer_value(n) + 1);
        else
            rc = json_object_set_new(c->counts[f], v, json_integer(1));
    }
    json_decref(labels);
    if (rc < 0) cp_err_set(err, CP_ERR_NOMEM, "out of memory counting filter values");
    return rc;
}

static int cmp_counts(const void *a, const void *b)
{
    const struct value_count *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->value, y->value);
}

/* {"distinct_values":N,"values":[{"value","count"}...]} most frequent first. */
static json_t *field_json(json_t *counts)
{
    size_t n = json_object_size(counts), k = 0;
    struct value_count *vc = malloc((n + 1) * sizeof *vc);
    json_t *values = json_array();
    if (!vc || !values) {
        free(vc);
        json_decref(values);
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(counts, key, v) vc[k++] = (struct value_count){key, json_integer_value(v)};
    qsort(vc, k, sizeof *vc, cmp_counts);
    for (size_t i = 0; i < k; i++)
        json_array_append_new(values,
                              json_pack("{s:s, s:I}", "value", vc[i].value, "count", vc[i].count));
    free(vc);
    return json_pack("{s:I, s:o}", "distinct_values", (json_int_t)k, "values", values);
}

json_t *query_filter(struct store *st, const char *project, const char *environment,
                     const char *app, const struct query_params *p, struct cp_err *err)
{
    struct filter_ctx c = {{0}};
    json_t *fields = json_object(), *out = NULL;
    bool ok = fields != NULL;
    for (int f = 0; f < QUERY_NFIELDS; f++)
        ok = (c.counts[f] = json_object()) && ok;
    if (!ok) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory counting filter values");
    } else if (store_profile_foreach(st, project, environment, app, to_ns(p->from), to_ns(p->to), 0,
                                     filter_row, &c, err) == 0) {
        for (int f = 0; f < QUERY_NFIELDS && ok; f++)
            ok = json_object_set_new(fields, FIELD_NAMES[f], field_json(c.counts[f])) == 0;
        out = ok ? json_pack("{s:O, s:i}", "fields", fields, "max_applicable_filters", 5) : NULL;
        if (!out) cp_err_set(err, CP_ERR_NOMEM, "out of memory counting filter values");
    }
    for (int f = 0; f < QUERY_NFIELDS; f++)
        json_decref(c.counts[f]);
    json_decref(fields);
    return out;
}
