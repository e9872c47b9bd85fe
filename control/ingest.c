/* ingest: turns a Pyroscope or Datadog-style upload into validated profiles.
 *
 * Both entry points first gather what the upload says about all its profiles — labels, the series
 * name, from/until — into one `struct upload`, then build one ingest_profile per pprof: decompress
 * (sniffed), decode (which checks every reference), map the sample types to query profile types
 * and sum them, and fill in times the upload left out from the pprof's own time_nanos and
 * duration_nanos. The batch is built in place and freed whole on the first error, which is what
 * makes the entry points all-or-nothing. The decompressed bytes of all profiles of one upload share
 * one PPROF_READ_MAX_DECOMPRESSED budget, so many small bombs cannot add up.
 *
 * Multipart dialects are told apart by content, not by a version field: a part named "event" is
 * the v4 event.json; otherwise every part with a filename (or named data[...]) is a profile,
 * tags[] fields are "k:v" labels, the v2/v3 time and bookkeeping fields are read or skipped, and
 * every other field is a plain Blackfire-native label.
 */
#include "ingest.h"

#include "multipart.h"
#include "pprof_read.h"
#include "profile_types.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_S 1000000000LL
#define MAX_QUERY_PARAMS 64
#define MAX_EVENT_JSON (1u << 20)

struct upload {
    json_t *labels;
    char series[INGEST_MAX_VALUE + 1]; /* Pyroscope series name, "" otherwise */
    int64_t from_ns, until_ns;
    int has_from, has_until;
    size_t budget; /* decompressed bytes still allowed */
};

/* ---- labels ------------------------------------------------------------------------------- */

static int label_set(json_t *labels, const char *key, size_t klen, const char *val, size_t vlen,
                     struct cp_err *err)
{
    if (klen == 0 || klen > INGEST_MAX_KEY || memchr(key, '\0', klen)) {
        cp_err_set(err, CP_ERR_INVALID, "label \"%.*s\": key must be 1 to %u bytes",
                   (int)(klen > 40 ? 40 : klen), key, INGEST_MAX_KEY);
        return -1;
    }
    char k[INGEST_MAX_KEY + 1];
    memcpy(k, key, klen);
    k[klen] = '\0';
    if (vlen > INGEST_MAX_VALUE || memchr(val, '\0', vlen)) {
        cp_err_set(err, CP_ERR_INVALID, "label %s: value longer than %u bytes or with a NUL byte",
                   k, INGEST_MAX_VALUE);
        return -1;
    }
    if (!json_object_get(labels, k) && json_object_size(labels) >= INGEST_MAX_LABELS) {
        cp_err_set(err, CP_ERR_INVALID, "label %s: more than %u labels", k, INGEST_MAX_LABELS);
        return -1;
    }
    json_t *v = json_stringn(val, vlen);
    if (!v || json_object_set_new(labels, k, v) < 0) {
        cp_err_set(err, CP_ERR_INVALID, "label %s: key or value is not UTF-8", k);
        return -1;
    }
    return 0;
}

static const char *label_get(json_t *labels, const char *key)
{
    const char *s = json_string_value(json_object_get(labels, key));
    return s && *s ? s : NULL;
}

static int label_alias(json_t *labels, const char *from, const char *to, struct cp_err *err)
{
    const char *v = label_get(labels, from);
    if (!v || label_get(labels, to)) return 0;
    return label_set(labels, to, strlen(to), v, strlen(v), err);
}

static const char *trim(const char *s, size_t *len)
{
    while (*len && isspace((unsigned char)*s))
        s++, (*len)--;
    while (*len && isspace((unsigned char)s[*len - 1]))
        (*len)--;
    return s;
}

/* Datadog tags "k:v,k:v" (split on the first ':'); entries without a key are skipped. */
static int parse_tags(json_t *labels, const char *tags, size_t len, struct cp_err *err)
{
    const char *p = tags, *end = tags + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = (size_t)((comma ? comma : end) - p);
        const char *colon = memchr(p, ':', n);
        if (colon) {
            size_t klen = (size_t)(colon - p), vlen = n - klen - 1;
            const char *k = trim(p, &klen), *v = trim(colon + 1, &vlen);
            if (klen && label_set(labels, k, klen, v, vlen, err) < 0) return -1;
        }
        p += n + 1;
    }
    return 0;
}

/* ---- times -------------------------------------------------------------------------------- */

/* Pyroscope from/until: digits; the magnitude tells the unit (s, ms, µs, ns). */
static int parse_unix_time(const char *field, const char *s, int64_t *ns, struct cp_err *err)
{
    size_t n = strlen(s);
    uint64_t v = 0;
    int ok = n >= 1 && n <= 19;
    for (size_t i = 0; ok && i < n; i++) {
        ok = isdigit((unsigned char)s[i]);
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    static const int64_t SCALE[] = {NS_PER_S, 1000000, 1000, 1};
    int64_t scale = SCALE[n <= 11 ? 0 : n <= 14 ? 1 : n <= 17 ? 2 : 3];
    if (!ok || v > (uint64_t)(INT64_MAX / scale)) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected Unix seconds, got \"%.40s\"", field, s);
        return -1;
    }
    *ns = (int64_t)v * scale;
    return 0;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int read_digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        *v = *v * 10 + (**p - '0');
    }
    return 0;
}

static int expect_char(const char **p, const char *accepted)
{
    if (!**p || !strchr(accepted, **p)) return -1;
    (*p)++;
    return 0;
}

/* Fractional seconds (any number of digits, ns kept) and the zone offset in seconds. */
static int parse_fraction_and_zone(const char **p, int64_t *frac_ns, int64_t *offset_s)
{
    *frac_ns = 0;
    if (**p == '.') {
        (*p)++;
        int digits = 0;
        for (; isdigit((unsigned char)**p); (*p)++, digits++)
            if (digits < 9) *frac_ns = *frac_ns * 10 + (**p - '0');
        if (digits == 0 || digits > 18) return -1;
        for (; digits < 9; digits++)
            *frac_ns *= 10;
    }
    *offset_s = 0;
    if (**p == 'Z' || **p == 'z') {
        (*p)++;
        return **p ? -1 : 0;
    }
    int sign = **p == '-' ? -1 : 1, hh, mm;
    if (expect_char(p, "+-") < 0 || read_digits(p, 2, &hh) < 0 || expect_char(p, ":") < 0 ||
        read_digits(p, 2, &mm) < 0 || **p || hh > 23 || mm > 59)
        return -1;
    *offset_s = sign * (hh * 3600 + mm * 60);
    return 0;
}

static int parse_rfc3339(const char *field, const char *s, int64_t *ns, struct cp_err *err)
{
    static const int MDAYS[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int y, mo, d, h, mi, sec;
    int64_t frac, offset;
    int ok = read_digits(&p, 4, &y) == 0 && expect_char(&p, "-") == 0 &&
             read_digits(&p, 2, &mo) == 0 && expect_char(&p, "-") == 0 &&
             read_digits(&p, 2, &d) == 0 && expect_char(&p, "Tt ") == 0 &&
             read_digits(&p, 2, &h) == 0 && expect_char(&p, ":") == 0 &&
             read_digits(&p, 2, &mi) == 0 && expect_char(&p, ":") == 0 &&
             read_digits(&p, 2, &sec) == 0 && parse_fraction_and_zone(&p, &frac, &offset) == 0;
    ok = ok && y >= 1970 && y <= 2261 && mo >= 1 && mo <= 12 && d >= 1 && d <= MDAYS[mo - 1] &&
         h <= 23 && mi <= 59 && sec <= 60;
    if (!ok) {
        cp_err_set(err, CP_ERR_INVALID,
                   "%s: expected an RFC 3339 time like 2026-05-01T10:00:00.000Z, got \"%.40s\"",
                   field, s);
        return -1;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    if (secs < 0) {
        cp_err_set(err, CP_ERR_INVALID, "%s: before 1970", field);
        return -1;
    }
    *ns = secs * NS_PER_S + frac;
    return 0;
}

/* ---- one profile -------------------------------------------------------------------------- */

static int add_types(struct ingest_profile *p, const struct pprof_decoded *dec)
{
    int64_t *all = calloc(dec->ntypes, sizeof *all);
    p->types = calloc(dec->ntypes, sizeof *p->types);
    p->totals = calloc(dec->ntypes, sizeof *p->totals);
    if (!all || !p->types || !p->totals) {
        free(all);
        return -1;
    }
    pprof_decoded_totals(dec, all);
    for (size_t i = 0; i < dec->ntypes; i++) {
        const char *t = profile_type_from_sample_type(dec->type_names[i], dec->type_units[i]);
        if (!t || profile_type_pick(dec->type_names, dec->type_units, dec->ntypes, t) != (int)i)
            continue; /* not shown, or a second sample type of a type already counted */
        if (!(p->types[p->ntypes] = strdup(t))) {
            free(all);
            return -1;
        }
        p->totals[p->ntypes++] = all[i];
    }
    free(all);
    return 0;
}

static int set_times(struct ingest_profile *p, const struct upload *up,
                     const struct pprof_decoded *dec, struct cp_err *err)
{
    if (!up->has_from && dec->time_nanos <= 0) {
        cp_err_set(err, CP_ERR_INVALID,
                   "no start time: the upload names none and the pprof has no time_nanos");
        return -1;
    }
    int64_t duration = dec->duration_nanos > 0 ? dec->duration_nanos : 0;
    p->from_ns = up->has_from ? up->from_ns : dec->time_nanos;
    p->until_ns = up->has_until                       ? up->until_ns
                  : p->from_ns > INT64_MAX - duration ? INT64_MAX
                                                      : p->from_ns + duration;
    if (p->until_ns < p->from_ns) {
        cp_err_set(err, CP_ERR_INVALID, "the end time is before the start time");
        return -1;
    }
    return 0;
}

static int build_profile(const char *source, const uint8_t *data, size_t len, struct upload *up,
                         const char *app, struct ingest_profile *p, struct cp_err *err)
{
    struct pprof_decoded dec;
    int rc = -1;
    if (len == 0) {
        cp_err_set(err, CP_ERR_INVALID, "empty profile");
        return -1;
    }
    if (pprof_decompress(data, len, up->budget, &p->pprof, err) < 0) return -1;
    if (pprof_decode((const uint8_t *)p->pprof.data, p->pprof.len, &dec, err) < 0) return -1;
    if (dec.ntypes == 0) {
        cp_err_set(err, CP_ERR_INVALID, "no sample_type: not a pprof profile");
    } else if (set_times(p, up, &dec, err) == 0) {
        p->app = strdup(app);
        p->labels = json_deep_copy(up->labels);
        p->source_name = strdup(source);
        if (!p->app || !p->labels || !p->source_name || add_types(p, &dec) < 0)
            cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        else
            rc = 0;
    }
    pprof_decoded_free(&dec);
    up->budget -= rc == 0 ? p->pprof.len : 0;
    return rc;
}

static void profile_free(struct ingest_profile *p)
{
    free(p->app);
    json_decref(p->labels);
    buf_free(&p->pprof);
    for (size_t i = 0; i < p->ntypes; i++)
        free(p->types[i]);
    free(p->types);
    free(p->totals);
    free(p->source_name);
    memset(p, 0, sizeof *p);
}

void ingest_batch_free(struct ingest_batch *b)
{
    for (size_t i = 0; i < b->count; i++)
        profile_free(&b->items[i]);
    free(b->items);
    b->items = NULL;
    b->count = 0;
}

/* Appends a profile to the batch (items has room for INGEST_MAX_PROFILES). */
static int batch_add(struct ingest_batch *b, const char *source, const uint8_t *data, size_t len,
                     struct upload *up, struct cp_err *err)
{
    if (b->count >= INGEST_MAX_PROFILES) {
        cp_err_set(err, CP_ERR_INVALID, "more than %u profiles in one upload", INGEST_MAX_PROFILES);
        return -1;
    }
    if (label_alias(up->labels, "env", "environment", err) < 0) return -1;
    const char *app = label_get(up->labels, "application_name");
    if (!app) app = label_get(up->labels, "service");
    if (!app && up->series[0]) app = up->series;
    if (!app) {
        cp_err_set(err, CP_ERR_INVALID, "no application name: set application_name or service");
        return -1;
    }
    struct ingest_profile *p = &b->items[b->count];
    memset(p, 0, sizeof *p);
    if (build_profile(source, data, len, up, app, p, err) < 0) {
        profile_free(p);
        return -1;
    }
    b->count++;
    return 0;
}

static int upload_init(struct upload *up, struct ingest_batch *out, struct cp_err *err)
{
    memset(up, 0, sizeof *up);
    up->budget = PPROF_READ_MAX_DECOMPRESSED;
    up->labels = json_object();
    out->count = 0;
    out->items = calloc(INGEST_MAX_PROFILES, sizeof *out->items);
    if (!up->labels || !out->items) {
        json_decref(up->labels);
        free(out->items);
        out->items = NULL;
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    return 0;
}

static int upload_finish(struct upload *up, struct ingest_batch *out, int rc)
{
    json_decref(up->labels);
    if (rc < 0) ingest_batch_free(out);
    return rc;
}

/* ---- Pyroscope /ingest -------------------------------------------------------------------- */

static int hex_value(char c)
{
    return isdigit((unsigned char)c)    ? c - '0'
           : isxdigit((unsigned char)c) ? (tolower((unsigned char)c) - 'a' + 10)
                                        : -1;
}

/* URL-decodes s[0..n) ('+' is a space) into out; NUL bytes are refused. */
static int url_decode(const char *s, size_t n, struct buf *out)
{
    buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
            int lo = hi >= 0 ? hex_value(s[i + 2]) : -1;
            if (lo < 0) return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0 || buf_append_byte(out, (uint8_t)c) < 0) return -1;
    }
    if (!out->data) return buf_append(out, "", 0);
    return 0;
}

struct pyroscope_query {
    struct buf name, from, until, format, spy;
    int has_name, has_from, has_until, has_format, has_spy;
};

static int query_param(struct pyroscope_query *q, const char *key, const char *value, size_t n,
                       struct cp_err *err)
{
    struct {
        const char *key;
        struct buf *dst;
        int *has;
    } known[] = {{"name", &q->name, &q->has_name},
                 {"from", &q->from, &q->has_from},
                 {"until", &q->until, &q->has_until},
                 {"format", &q->format, &q->has_format},
                 {"spyName", &q->spy, &q->has_spy}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(key, known[i].key) != 0) continue;
        if (url_decode(value, n, known[i].dst) < 0) {
            cp_err_set(err, CP_ERR_INVALID, "%s: bad percent-encoding", key);
            return -1;
        }
        *known[i].has = 1;
    }
    return 0;
}

static int parse_query(const char *query, struct pyroscope_query *q, struct cp_err *err)
{
    const char *p = query ? query : "";
    struct buf key = {0};
    int rc = 0;
    for (int count = 0; *p && rc == 0; count++) {
        if (count >= MAX_QUERY_PARAMS) {
            cp_err_set(err, CP_ERR_INVALID, "query: more than %d parameters", MAX_QUERY_PARAMS);
            rc = -1;
            break;
        }
        size_t n = strcspn(p, "&");
        size_t klen = strcspn(p, "=");
        if (klen > n) klen = n;
        const char *value = klen < n ? p + klen + 1 : p + n;
        if (url_decode(p, klen, &key) < 0) {
            cp_err_set(err, CP_ERR_INVALID, "query: bad percent-encoding in a parameter name");
            rc = -1;
        } else {
            rc = query_param(q, key.data, value, (size_t)(p + n - value), err);
        }
        p += n + (p[n] == '&');
    }
    buf_free(&key);
    return rc;
}

static int name_error(struct cp_err *err)
{
    cp_err_set(err, CP_ERR_INVALID, "name: expected app{key=value,...}");
    return -1;
}

static int is_label_key_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

/* "k=v,k2=v2" (between the braces). */
static int parse_series_labels(char *s, size_t len, json_t *labels, struct cp_err *err)
{
    char *end = s + len;
    while (s < end) {
        char *comma = memchr(s, ',', (size_t)(end - s));
        size_t n = (size_t)((comma ? comma : end) - s);
        char *eq = memchr(s, '=', n);
        size_t klen = eq ? (size_t)(eq - s) : n, vlen = eq ? n - klen - 1 : 0;
        const char *k = trim(s, &klen), *v = eq ? trim(eq + 1, &vlen) : NULL;
        if (!eq && klen == 0 && !comma) break; /* "{a=b,}" */
        if (!eq || klen == 0) return name_error(err);
        for (size_t i = 0; i < klen; i++)
            if (!is_label_key_char(k[i])) return name_error(err);
        if (label_set(labels, k, klen, v, vlen, err) < 0) return -1;
        s += n + 1;
    }
    return 0;
}

static int parse_series_name(char *name, struct upload *up, struct cp_err *err)
{
    size_t len = strlen(name);
    char *brace = strchr(name, '{');
    size_t app_len = brace ? (size_t)(brace - name) : len;
    const char *app = trim(name, &app_len);
    if (app_len == 0 || app_len > INGEST_MAX_VALUE) return name_error(err);
    for (size_t i = 0; i < app_len; i++)
        if (iscntrl((unsigned char)app[i]) || strchr("{},=", app[i])) return name_error(err);
    memcpy(up->series, app, app_len);
    up->series[app_len] = '\0';
    if (!brace) return 0;
    if (name[len - 1] != '}' || strchr(brace + 1, '{') || strchr(brace + 1, '}') != name + len - 1)
        return name_error(err);
    return parse_series_labels(brace + 1, (size_t)(name + len - 1 - (brace + 1)), up->labels, err);
}

static int pyroscope_upload(struct pyroscope_query *q, struct upload *up, struct cp_err *err)
{
    if (!q->has_name) {
        cp_err_set(err, CP_ERR_INVALID, "name: missing (expected app{key=value,...})");
        return -1;
    }
    if (q->has_format && strcmp(q->format.data, "pprof") != 0) {
        cp_err_set(err, CP_ERR_INVALID, "format: only pprof is supported, got \"%.40s\"",
                   q->format.data);
        return -1;
    }
    if (parse_series_name(q->name.data, up, err) < 0) return -1;
    if (q->has_from && parse_unix_time("from", q->from.data, &up->from_ns, err) < 0) return -1;
    if (q->has_until && parse_unix_time("until", q->until.data, &up->until_ns, err) < 0) return -1;
    up->has_from = q->has_from;
    up->has_until = q->has_until;
    if (q->has_until && !q->has_from) {
        cp_err_set(err, CP_ERR_INVALID, "from: missing while until is given");
        return -1;
    }
    if (q->has_spy && q->spy.len &&
        label_set(up->labels, "spy_name", 8, q->spy.data, q->spy.len, err) < 0)
        return -1;
    return 0;
}

int ingest_parse_pyroscope(const char *query, const uint8_t *body, size_t len,
                           struct ingest_batch *out, struct cp_err *err)
{
    struct upload up;
    if (upload_init(&up, out, err) < 0) return -1;
    struct pyroscope_query q;
    memset(&q, 0, sizeof q);
    int rc = parse_query(query, &q, err);
    if (rc == 0) rc = pyroscope_upload(&q, &up, err);
    if (rc == 0 && (rc = batch_add(out, "ingest", body, len, &up, err)) < 0)
        cp_err_prefix(err, "pprof body");
    buf_free(&q.name);
    buf_free(&q.from);
    buf_free(&q.until);
    buf_free(&q.format);
    buf_free(&q.spy);
    return upload_finish(&up, out, rc);
}

/* ---- Datadog-style multipart -------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int part_time(const struct multipart_part *part, int64_t *ns, int *has, struct cp_err *err)
{
    char text[64];
    size_t n = part->len;
    const char *t = trim((const char *)part->data, &n);
    if (n >= sizeof text || memchr(t, '\0', n)) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected an RFC 3339 time", part->name);
        return -1;
    }
    memcpy(text, t, n);
    text[n] = '\0';
    if (parse_rfc3339(part->name, text, ns, err) < 0) return -1;
    *has = 1;
    return 0;
}

static int event_time(json_t *event, const char *key, int64_t *ns, int *has, struct cp_err *err)
{
    json_t *v = json_object_get(event, key);
    if (!v) return 0;
    if (!json_is_string(v)) {
        cp_err_set(err, CP_ERR_INVALID, "event.json %s: expected an RFC 3339 string", key);
        return -1;
    }
    char field[32];
    snprintf(field, sizeof field, "event.json %s", key);
    if (parse_rfc3339(field, json_string_value(v), ns, err) < 0) return -1;
    *has = 1;
    return 0;
}

static const struct multipart_part *find_attachment(const struct multipart_part *parts,
                                                    size_t nparts, const char *name)
{
    for (size_t i = 0; i < nparts; i++)
        if (strcmp(parts[i].name, "event") != 0 &&
            (strcmp(parts[i].name, name) == 0 || strcmp(parts[i].filename, name) == 0))
            return &parts[i];
    return NULL;
}

static int add_attachment(struct ingest_batch *out, const struct multipart_part *part,
                          const char *name, struct upload *up, struct cp_err *err)
{
    if (batch_add(out, name, part->data, part->len, up, err) == 0) return 0;
    cp_err_prefix(err, "pprof attachment %.200s", name);
    return -1;
}

static int event_metadata(json_t *ev, struct upload *up, struct cp_err *err)
{
    json_t *tags = json_object_get(ev, "tags_profiler");
    if (tags && !json_is_string(tags)) {
        cp_err_set(err, CP_ERR_INVALID, "event.json tags_profiler: expected a string");
        return -1;
    }
    if (tags && parse_tags(up->labels, json_string_value(tags), json_string_length(tags), err) < 0)
        return -1;
    if (event_time(ev, "start", &up->from_ns, &up->has_from, err) < 0 ||
        event_time(ev, "end", &up->until_ns, &up->has_until, err) < 0)
        return -1;
    if (up->has_from && up->has_until && up->until_ns < up->from_ns) {
        cp_err_set(err, CP_ERR_INVALID, "event.json: end is before start");
        return -1;
    }
    return 0;
}

static int event_attachments(json_t *ev, const struct multipart_part *parts, size_t nparts,
                             struct upload *up, struct ingest_batch *out, struct cp_err *err)
{
    json_t *list = json_object_get(ev, "attachments");
    if (!json_is_array(list)) {
        cp_err_set(err, CP_ERR_INVALID, "event.json attachments: expected an array of names");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(list) && i < MULTIPART_MAX_PARTS; i++) {
        const char *name = json_string_value(json_array_get(list, i));
        if (!name) {
            cp_err_set(err, CP_ERR_INVALID, "event.json attachments[%zu]: expected a string", i);
            return -1;
        }
        if (ends_with(name, ".json")) continue; /* code-provenance.json and the like */
        const struct multipart_part *part = find_attachment(parts, nparts, name);
        if (!part) {
            cp_err_set(err, CP_ERR_INVALID,
                       "event.json lists attachment \"%.200s\" but no part carries it", name);
            return -1;
        }
        if (add_attachment(out, part, name, up, err) < 0) return -1;
    }
    return 0;
}

static int parse_v4(const struct multipart_part *event, const struct multipart_part *parts,
                    size_t nparts, struct upload *up, struct ingest_batch *out, struct cp_err *err)
{
    if (event->len > MAX_EVENT_JSON) {
        cp_err_set(err, CP_ERR_INVALID, "event.json: larger than %u bytes", MAX_EVENT_JSON);
        return -1;
    }
    json_error_t jerr;
    json_t *ev = json_loadb((const char *)event->data, event->len, 0, &jerr);
    if (!json_is_object(ev)) {
        cp_err_set(err, CP_ERR_INVALID, "event.json: %s", ev ? "expected an object" : jerr.text);
        json_decref(ev);
        return -1;
    }
    int rc = event_metadata(ev, up, err);
    if (rc == 0) rc = event_attachments(ev, parts, nparts, up, out, err);
    json_decref(ev);
    return rc;
}

/* v3 / v2 / Blackfire-native fields: labels, times and bookkeeping. */
static int legacy_field(const struct multipart_part *part, struct upload *up, struct cp_err *err)
{
    const char *name = part->name;
    if (strcmp(name, "tags[]") == 0 || strcmp(name, "tags") == 0)
        return parse_tags(up->labels, (const char *)part->data, part->len, err);
    if (strcmp(name, "start") == 0 || strcmp(name, "recording-start") == 0)
        return part_time(part, &up->from_ns, &up->has_from, err);
    if (strcmp(name, "end") == 0 || strcmp(name, "recording-end") == 0)
        return part_time(part, &up->until_ns, &up->has_until, err);
    if (strcmp(name, "version") == 0 || strcmp(name, "format") == 0 ||
        strcmp(name, "family") == 0 || strncmp(name, "types[", 6) == 0)
        return 0;
    return label_set(up->labels, name, strlen(name), (const char *)part->data, part->len, err);
}

static int is_profile_part(const struct multipart_part *part)
{
    if (!part->filename[0] && strncmp(part->name, "data[", 5) != 0) return 0;
    return !ends_with(part->filename, ".json") && !ends_with(part->name, ".json") &&
           !ends_with(part->name, ".json]");
}

static int parse_legacy(const struct multipart_part *parts, size_t nparts, struct upload *up,
                        struct ingest_batch *out, struct cp_err *err)
{
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].filename[0] || strncmp(parts[i].name, "data[", 5) == 0) continue;
        if (legacy_field(&parts[i], up, err) < 0) return -1;
    }
    if (up->has_from && up->has_until && up->until_ns < up->from_ns) {
        cp_err_set(err, CP_ERR_INVALID, "end is before start");
        return -1;
    }
    for (size_t i = 0; i < nparts; i++) {
        if (!is_profile_part(&parts[i])) continue;
        const char *name = parts[i].filename[0] ? parts[i].filename : parts[i].name;
        if (add_attachment(out, &parts[i], name, up, err) < 0) return -1;
    }
    return 0;
}

static int parse_parts(const struct multipart_part *parts, size_t nparts, struct upload *up,
                       struct ingest_batch *out, struct cp_err *err)
{
    const struct multipart_part *event = NULL;
    for (size_t i = 0; i < nparts && !event; i++)
        if (strcmp(parts[i].name, "event") == 0) event = &parts[i];
    int rc = event ? parse_v4(event, parts, nparts, up, out, err)
                   : parse_legacy(parts, nparts, up, out, err);
    if (rc == 0 && out->count == 0) {
        cp_err_set(err, CP_ERR_INVALID, "multipart: no profile attachment");
        rc = -1;
    }
    return rc;
}

int ingest_parse_multipart(const char *content_type, const uint8_t *body, size_t len,
                           struct ingest_batch *out, struct cp_err *err)
{
    struct upload up;
    if (upload_init(&up, out, err) < 0) return -1;
    char boundary[MULTIPART_MAX_BOUNDARY + 1];
    struct multipart_part *parts = calloc(MULTIPART_MAX_PARTS, sizeof *parts);
    size_t nparts = 0;
    int rc = -1;
    if (!parts)
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
    else if (multipart_boundary(content_type, boundary, sizeof boundary, err) == 0 &&
             multipart_parse(body, len, boundary, parts, MULTIPART_MAX_PARTS, &nparts, err) == 0)
        rc = parse_parts(parts, nparts, &up, out, err);
    free(parts);
    return upload_finish(&up, out, rc);
}
