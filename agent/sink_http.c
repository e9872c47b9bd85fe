/* sink_http: uploads to Pyroscope's legacy ingest API with libcurl's multi interface.
 *
 * One attempt = one easy handle in one shared multi handle (which keeps the connections alive
 * between attempts): POST {url}/ingest?name=<series>&from=<s>&until=<s>&format=pprof&
 * sampleRate=<hz>&spyName=conprof, the gzipped pprof as the body (application/octet-stream,
 * sent straight from the record: no copy), "Expect:" emptied so curl does not wait for a
 * 100-continue, an optional "Authorization: Bearer" header, redirects not followed. TLS peers
 * and host names are always verified (ca_file replaces the system store). Each attempt has
 * CURLOPT_TIMEOUT_MS = upload_timeout for the whole transfer, connection included.
 *
 * The series name: Pyroscope's parser (labelset.Parse / segment.ParseKey) reads
 * "app{k=v,k2=v2}" with no escape at all — a value ends at ',' or '}' and is trimmed — and
 * rejects service names outside [A-Za-z0-9_.-/] and label names outside [A-Za-z0-9_.]. So
 * sink_http_series_name() maps other characters of the name to '_', label keys to
 * [A-Za-z_][A-Za-z0-9_]* (no '.', which Prometheus-style stores refuse), drops keys starting
 * with "__" (reserved; Pyroscope drops them), replaces , { } = and control characters in
 * values by '_', trims blanks, cuts the name and values at 1024 bytes (values on a UTF-8
 * boundary), and leaves out labels whose value is empty. The whole name is then percent-encoded into the query.
 *
 * Outcomes: 2xx delivered; 408, 429 and 5xx retried, with Retry-After (seconds or HTTP date,
 * parsed by curl: CURLINFO_RETRY_AFTER); any other status is permanent; every transport error
 * (refused, reset, timed out, TLS) is retried. Messages quote at most 200 bytes of the answer.
 */
#include "sink.h"

#include "cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY_EXCERPT 200
#define MAX_VALUE_BYTES 1024

struct http_backend {
    CURLM *multi;
    char *ingest_url;  /* base + "/ingest" */
    char *display_url; /* the same without credentials, for messages */
    char *ca_file;
    struct curl_slist *headers; /* shared by every attempt */
    long timeout_ms;
};

struct http_transfer {
    CURL *easy;
    char *url;
    char errbuf[CURL_ERROR_SIZE];
    char body[BODY_EXCERPT + 1];
    size_t body_len;
};

/* ---- the series name ---------------------------------------------------------------------- */

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int append_service_name(struct buf *out, const char *app)
{
    size_t start = out->len;
    for (const char *p = app; *p && out->len - start < MAX_VALUE_BYTES; p++) {
        char c = *p;
        bool ok = is_alnum(c) || c == '_' || c == '.' || c == '-' || c == '/';
        if (buf_append_byte(out, ok ? (uint8_t)c : '_') < 0) return -1;
    }
    return out->len == start ? buf_append_str(out, "unknown") : 0;
}

/* The key as Pyroscope and Prometheus-style stores accept it, into out; "" to leave it out. */
static int clean_key(const char *key, struct buf *out)
{
    if (key[0] >= '0' && key[0] <= '9' && buf_append_byte(out, '_') < 0) return -1;
    for (const char *p = key; *p; p++)
        if (buf_append_byte(out, is_alnum(*p) ? (uint8_t)*p : '_') < 0) return -1;
    if (out->len >= 2 && out->data[0] == '_' && out->data[1] == '_') buf_reset(out);
    return 0;
}

static int clean_value(const char *value, struct buf *out)
{
    const char *start = value, *end = value + strlen(value);
    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if ((size_t)(end - start) > MAX_VALUE_BYTES) {
        end = start + MAX_VALUE_BYTES;
        while (end > start && ((unsigned char)*end & 0xc0) == 0x80)
            end--; /* do not cut a UTF-8 sequence */
    }
    for (const char *p = start; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        bool bad = c < 0x20 || c == 0x7f || c == ',' || c == '{' || c == '}' || c == '=';
        if (buf_append_byte(out, bad ? '_' : c) < 0) return -1;
    }
    return 0;
}

int sink_http_series_name(const struct profile_record *r, struct buf *out)
{
    if (append_service_name(out, r->app_name ? r->app_name : "") < 0 ||
        buf_append_byte(out, '{') < 0)
        return -1;
    bool first = true;
    struct buf key = {0}, value = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->nlabels; i++) {
        buf_reset(&key);
        buf_reset(&value);
        rc = clean_key(r->labels[i].key, &key) || clean_value(r->labels[i].value, &value);
        if (rc || key.len == 0 || value.len == 0) continue;
        rc = buf_printf(out, "%s%s=%s", first ? "" : ",", key.data, value.data);
        first = false;
    }
    buf_free(&key);
    buf_free(&value);
    return rc || buf_append_byte(out, '}') ? -1 : 0;
}

/* ---- attempts ----------------------------------------------------------------------------- */

static size_t keep_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct http_transfer *t = userdata;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n && t->body_len < BODY_EXCERPT; i++) {
        unsigned char c = (unsigned char)data[i];
        t->body[t->body_len++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
    }
    t->body[t->body_len] = '\0';
    return n;
}

static void transfer_free(struct http_backend *h, struct http_transfer *t)
{
    if (!t) return;
    if (t->easy) {
        curl_multi_remove_handle(h->multi, t->easy);
        curl_easy_cleanup(t->easy);
    }
    curl_free(t->url);
    free(t);
}

static char *attempt_url(struct http_backend *h, CURL *easy, const struct profile_record *r)
{
    struct buf name = {0}, url = {0};
    char *escaped = NULL, *result = NULL;
    if (sink_http_series_name(r, &name) == 0 &&
        (escaped = curl_easy_escape(easy, name.data, (int)name.len)) != NULL) {
        int64_t from = r->from_ns / 1000000000;
        int64_t until = (r->until_ns + 999999999) / 1000000000;
        if (buf_printf(&url,
                       "%s?name=%s&from=%" PRId64 "&until=%" PRId64
                       "&format=pprof&sampleRate=%d&spyName=conprof",
                       h->ingest_url, escaped, from, until, r->rate_hz) == 0)
            result = strdup(url.data);
    }
    curl_free(escaped);
    buf_free(&name);
    buf_free(&url);
    return result;
}

static int setup_easy(struct http_backend *h, struct http_transfer *t, struct sink_job *job)
{
    CURL *e = t->easy;
    const struct buf *body = &job->rec.pprof_gz;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, t->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, job) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, body->data) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "conprof-agent/" CONPROF_VERSION) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (h->ca_file) bad |= curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, keep_body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, t) != CURLE_OK;
    return bad ? -1 : 0;
}

static int http_start(void *backend, struct sink_job *job, struct sink_result *res)
{
    struct http_backend *h = backend;
    struct http_transfer *t = calloc(1, sizeof *t);
    if (t && (t->easy = curl_easy_init()) != NULL &&
        (t->url = attempt_url(h, t->easy, &job->rec)) != NULL && setup_easy(h, t, job) == 0 &&
        curl_multi_add_handle(h->multi, t->easy) == CURLM_OK) {
        job->transfer = t;
        return 0;
    }
    transfer_free(h, t);
    res->outcome = SINK_RETRY;
    res->retry_after_ms = -1;
    snprintf(res->reason, sizeof res->reason, "POST %s: cannot set up the upload (memory)",
             h->display_url);
    return 1;
}

static void classify(struct http_backend *h, struct http_transfer *t, CURLcode rc,
                     struct sink_result *res)
{
    res->retry_after_ms = -1;
    if (rc != CURLE_OK) {
        res->outcome = SINK_RETRY;
        if (rc == CURLE_OPERATION_TIMEDOUT)
            snprintf(res->reason, sizeof res->reason, "POST %s: timed out after %ld ms (%s)",
                     h->display_url, h->timeout_ms, t->errbuf);
        else
            snprintf(res->reason, sizeof res->reason, "POST %s: %s", h->display_url,
                     t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
        return;
    }
    long code = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
        res->outcome = SINK_DELIVERED;
        return;
    }
    bool retry = code == 408 || code == 429 || (code >= 500 && code < 600);
    res->outcome = retry ? SINK_RETRY : SINK_PERMANENT;
    curl_off_t after = 0;
    if (retry && curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0)
        res->retry_after_ms =
            after > SINK_MAX_RETRY_AFTER_MS / 1000 ? SINK_MAX_RETRY_AFTER_MS : (long)after * 1000;
    snprintf(res->reason, sizeof res->reason, "POST %s: HTTP %ld%s%s", h->display_url, code,
             t->body_len ? ": " : "", t->body);
}

static int http_perform(void *backend, sink_done_fn *done, void *ctx, struct cp_err *err)
{
    struct http_backend *h = backend;
    int running = 0;
    CURLMcode mc = curl_multi_perform(h->multi, &running);
    if (mc != CURLM_OK) {
        cp_err_set(err, CP_ERR_IO, "curl_multi_perform: %s", curl_multi_strerror(mc));
        return -1;
    }
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct sink_job *job = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job);
        if (!job) continue;
        struct sink_result res = {0};
        classify(h, job->transfer, rc, &res);
        transfer_free(h, job->transfer);
        job->transfer = NULL;
        done(ctx, job, &res);
    }
    return 0;
}

static int http_wait(void *backend, int timeout_ms, struct cp_err *err)
{
    struct http_backend *h = backend;
    CURLMcode mc = curl_multi_poll(h->multi, NULL, 0, timeout_ms, NULL);
    if (mc != CURLM_OK) {
        cp_err_set(err, CP_ERR_IO, "curl_multi_poll: %s", curl_multi_strerror(mc));
        return -1;
    }
    return 0;
}

static void http_cancel(void *backend, struct sink_job *job)
{
    transfer_free(backend, job->transfer);
    job->transfer = NULL;
}

static long http_timeout_ms(void *backend)
{
    struct http_backend *h = backend;
    long t = -1;
    return curl_multi_timeout(h->multi, &t) == CURLM_OK ? t : -1;
}

static int http_fdset(void *backend, fd_set *r, fd_set *w, fd_set *e, int *max_fd)
{
    struct http_backend *h = backend;
    return curl_multi_fdset(h->multi, r, w, e, max_fd) == CURLM_OK ? 0 : -1;
}

/* Applies to attempts started from now on. */
static void http_set_upload_timeout(void *backend, long timeout_ms)
{
    ((struct http_backend *)backend)->timeout_ms = timeout_ms;
}

static void http_destroy(void *backend)
{
    struct http_backend *h = backend;
    if (h->multi) curl_multi_cleanup(h->multi);
    curl_slist_free_all(h->headers);
    free(h->ingest_url);
    free(h->display_url);
    free(h->ca_file);
    free(h);
    curl_global_cleanup();
}

const struct sink_backend_ops sink_http_ops = {
    .start = http_start,
    .wait = http_wait,
    .perform = http_perform,
    .cancel = http_cancel,
    .timeout_ms = http_timeout_ms,
    .fdset = http_fdset,
    .destroy = http_destroy,
    .set_upload_timeout = http_set_upload_timeout,
};

/* ---- creation ----------------------------------------------------------------------------- */

/* Checks the base URL (http or https, a host, no query) and derives both URLs from it. */
static int parse_base_url(struct http_backend *h, const char *url, struct cp_err *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL;
    int rc = -1;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        cp_err_set(err, CP_ERR_INVALID, "sink url '%.200s': not a URL", url);
    } else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        cp_err_set(err, CP_ERR_INVALID, "sink url '%.200s': expected http:// or https://", url);
    } else if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
               curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        cp_err_set(err, CP_ERR_INVALID, "sink url '%.200s': expected no query", url);
    } else {
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        size_t plen = strlen(path);
        while (plen > 0 && path[plen - 1] == '/')
            path[--plen] = '\0';
        struct buf base = {0}, shown = {0};
        size_t ulen = strlen(url);
        while (ulen > 0 && url[ulen - 1] == '/')
            ulen--;
        if (buf_printf(&base, "%.*s/ingest", (int)ulen, url) == 0 &&
            buf_printf(&shown, "%s://%s%s%s%s/ingest", scheme, host, port ? ":" : "",
                       port ? port : "", path) == 0) {
            h->ingest_url = strdup(base.data);
            h->display_url = strdup(shown.data);
            rc = h->ingest_url && h->display_url ? 0 : -1;
        }
        if (rc < 0) cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        buf_free(&base);
        buf_free(&shown);
    }
    curl_free(scheme), curl_free(host), curl_free(port), curl_free(path), curl_free(query);
    curl_url_cleanup(u);
    return rc;
}

static int build_headers(struct http_backend *h, const char *token, struct cp_err *err)
{
    struct buf auth = {0};
    if (token && *token) {
        for (const char *p = token; *p; p++)
            if ((unsigned char)*p < 0x21 || (unsigned char)*p == 0x7f) {
                cp_err_set(err, CP_ERR_INVALID,
                           "bearer token: expected no blank or control "
                           "character");
                return -1;
            }
        if (buf_printf(&auth, "Authorization: Bearer %s", token) < 0) goto nomem;
    }
    const char *fixed[] = {"Content-Type: application/octet-stream", "Expect:"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        struct curl_slist *l = curl_slist_append(h->headers, fixed[i]);
        if (!l) goto nomem;
        h->headers = l;
    }
    if (auth.len) {
        struct curl_slist *l = curl_slist_append(h->headers, auth.data);
        if (!l) goto nomem;
        h->headers = l;
    }
    buf_free(&auth);
    return 0;
nomem:
    buf_free(&auth);
    cp_err_set(err, CP_ERR_NOMEM, "out of memory");
    return -1;
}

void *sink_http_create(const struct sink_config *c, struct cp_err *err)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cp_err_set(err, CP_ERR_IO, "libcurl does not initialise");
        return NULL;
    }
    struct http_backend *h = calloc(1, sizeof *h);
    if (!h) {
        curl_global_cleanup();
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    h->timeout_ms = c->upload_timeout_ms;
    if (parse_base_url(h, c->url, err) < 0 || build_headers(h, c->bearer_token, err) < 0) goto fail;
    if (c->ca_file && access(c->ca_file, R_OK) < 0) {
        cp_err_set(err, CP_ERR_INVALID, "ca_file %s: %s", c->ca_file, strerror(errno));
        goto fail;
    }
    if (c->ca_file && !(h->ca_file = strdup(c->ca_file))) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!(h->multi = curl_multi_init())) {
        cp_err_set(err, CP_ERR_NOMEM, "cannot create a curl multi handle");
        goto fail;
    }
    return h;
fail:
    http_destroy(h);
    return NULL;
}
