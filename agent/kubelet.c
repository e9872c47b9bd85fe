/* kubelet: the pods list of the node's kubelet, parsed into the few fields the agent labels
 * profiles with, and a libcurl client that refreshes it in the background of the daemon loop.
 *
 * The parser loads the body with jansson, copies out uid, name, namespace, labels and the
 * containers' (name, id) pairs, and drops the document at once: a kubelet answer is mostly
 * specs and managedFields, so keeping only the extract keeps the agent small between
 * refreshes. Bounds are checked before anything is allocated from a count (items, containers),
 * and each string is measured before it is copied; jansson itself limits nesting depth.
 * Leniency is per item: one odd pod (a static pod caught mid-update, a container not started)
 * must not cost the whole node its metadata, but a body that is not a PodList is refused so
 * that the last good list stays in place.
 *
 * The client owns one easy handle per refresh inside one multi handle (which keeps the
 * connection cache across refreshes). The bearer token is read when the refresh starts, lives
 * only in the request's header list, and that list is wiped before it is freed. The pod list is
 * swapped only after a complete, parsed 200 answer. Parsing is the one costly step (jansson reads
 * a 250-pod, 2.8 MB list in about 130 ms), and on a quiet node the kubelet answers the same
 * bytes refresh after refresh, so an answer whose length and digest equal the last good one's
 * is taken as a success without being parsed again.
 */
#include "kubelet.h"

#include "buf.h"
#include "config.h"
#include "hash.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SCHEME_MAX 32 /* "containerd://" and friends */
#define URL_MAX 2048
#define BODY_EXCERPT 200 /* bytes of an error answer quoted in last_error */

/* ---- the parser ------------------------------------------------------------------------- */

/* The string under key, if it is a string of 1..KUBELET_STRING_MAX bytes; else NULL. */
static const char *bounded_string(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) return NULL;
    size_t n = json_string_length(v);
    return n >= 1 && n <= KUBELET_STRING_MAX ? json_string_value(v) : NULL;
}

/* "<scheme>://<id>" -> "<id>"; an id without a scheme is returned as is. */
static const char *strip_scheme(const char *id)
{
    const char *sep = strstr(id, "://");
    return sep && sep - id <= SCHEME_MAX ? sep + 3 : id;
}

/* A runtime's container id: what cgroup.h accepts in a ".scope" name. */
static bool valid_container_id(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > KUBELET_ID_MAX) return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') return false;
    return true;
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

static const char *const STATUS_LISTS[] = {"containerStatuses", "initContainerStatuses",
                                           "ephemeralContainerStatuses"};
#define STATUS_LIST_COUNT (sizeof STATUS_LISTS / sizeof STATUS_LISTS[0])

/* One status entry into the pod; 0 kept or skipped, -1 out of memory. */
static int add_container(const json_t *st, struct kubelet_pod *pod, struct kubelet_pods *out)
{
    if (!json_is_object(st)) return 0;
    const json_t *idv = json_object_get(st, "containerID");
    if (!json_is_string(idv) || json_string_length(idv) == 0) return 0; /* not started yet */
    const char *name = bounded_string(st, "name");
    const char *id = bounded_string(st, "containerID");
    if (id) id = strip_scheme(id);
    if (!name || !id || !valid_container_id(id) || pod->container_count == KUBELET_CONTAINERS_MAX) {
        out->dropped_containers++;
        return 0;
    }
    struct kubelet_container *c = &pod->containers[pod->container_count];
    c->name = strdup(name);
    c->id = lower_dup(id);
    if (!c->name || !c->id) {
        free(c->name);
        free(c->id);
        return -1;
    }
    pod->container_count++;
    return 0;
}

static int parse_containers(const json_t *status, struct kubelet_pod *pod, struct kubelet_pods *out)
{
    size_t total = 0;
    for (size_t l = 0; l < STATUS_LIST_COUNT; l++)
        total += json_array_size(json_object_get(status, STATUS_LISTS[l]));
    if (total > KUBELET_CONTAINERS_MAX) total = KUBELET_CONTAINERS_MAX;
    if (total == 0) return 0;
    if (!(pod->containers = calloc(total, sizeof *pod->containers))) return -1;
    for (size_t l = 0; l < STATUS_LIST_COUNT; l++) {
        const json_t *list = json_object_get(status, STATUS_LISTS[l]);
        size_t i;
        const json_t *st;
        json_array_foreach(list, i, st) if (add_container(st, pod, out) < 0) return -1;
    }
    return 0;
}

static int parse_labels(const json_t *labels, struct kubelet_pod *pod, struct kubelet_pods *out)
{
    if (!(pod->labels = json_object())) return -1;
    if (!json_is_object(labels)) return 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)labels, key, v)
    {
        size_t klen = strlen(key);
        bool ok = json_is_string(v) && json_string_length(v) <= KUBELET_STRING_MAX && klen >= 1 &&
                  klen <= KUBELET_STRING_MAX && json_object_size(pod->labels) < KUBELET_LABELS_MAX;
        if (!ok) {
            out->dropped_labels++;
            continue;
        }
        if (json_object_set_new(pod->labels, key,
                                json_stringn(json_string_value(v), json_string_length(v))) < 0)
            return -1;
    }
    return 0;
}

static void pod_free(struct kubelet_pod *pod)
{
    free(pod->uid);
    free(pod->name);
    free(pod->k8s_namespace);
    json_decref(pod->labels);
    for (size_t i = 0; i < pod->container_count; i++) {
        free(pod->containers[i].name);
        free(pod->containers[i].id);
    }
    free(pod->containers);
    memset(pod, 0, sizeof *pod);
}

/* One item into *pod: 0 kept, 1 skipped (bad metadata), -1 out of memory. */
static int parse_pod(const json_t *item, struct kubelet_pod *pod, struct kubelet_pods *out)
{
    memset(pod, 0, sizeof *pod);
    const json_t *meta = json_object_get(item, "metadata");
    const char *uid = bounded_string(meta, "uid");
    const char *name = bounded_string(meta, "name");
    const char *ns = bounded_string(meta, "namespace");
    if (!uid || !name || !ns) return 1;
    pod->uid = strdup(uid);
    pod->name = strdup(name);
    pod->k8s_namespace = strdup(ns);
    if (!pod->uid || !pod->name || !pod->k8s_namespace ||
        parse_labels(json_object_get(meta, "labels"), pod, out) < 0 ||
        parse_containers(json_object_get(item, "status"), pod, out) < 0) {
        pod_free(pod);
        return -1;
    }
    return 0;
}

static int parse_items(const json_t *items, struct kubelet_pods *out, struct cp_err *err)
{
    size_t n = json_array_size(items);
    if (n > KUBELET_PODS_MAX) {
        cp_err_set(err, CP_ERR_NOMEM, "kubelet pods: %zu pods, more than the %d this agent takes",
                   n, KUBELET_PODS_MAX);
        return -1;
    }
    if (n == 0) return 0;
    if (!(out->items = calloc(n, sizeof *out->items))) goto nomem;
    for (size_t i = 0; i < n; i++) {
        int r = parse_pod(json_array_get(items, i), &out->items[out->count], out);
        if (r < 0) goto nomem;
        if (r > 0)
            out->skipped_pods++;
        else
            out->count++;
    }
    return 0;
nomem:
    cp_err_set(err, CP_ERR_NOMEM, "kubelet pods: out of memory");
    return -1;
}

int kubelet_pods_parse(const char *json, size_t len, struct kubelet_pods *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    if (len > KUBELET_BODY_MAX) {
        cp_err_set(err, CP_ERR_NOMEM, "kubelet pods: the answer has %zu bytes, more than %u", len,
                   KUBELET_BODY_MAX);
        return -1;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, 0, &jerr);
    if (!doc) {
        cp_err_set(err, CP_ERR_INVALID, "kubelet pods: not JSON: %s (line %d)", jerr.text,
                   jerr.line);
        return -1;
    }
    const json_t *items = json_object_get(doc, "items");
    int rc = 0;
    if (!json_is_object(doc) || !(json_is_array(items) || json_is_null(items))) {
        cp_err_set(err, CP_ERR_INVALID,
                   "kubelet pods: expected a PodList (an object with an "
                   "\"items\" array)");
        rc = -1;
    } else {
        rc = parse_items(items, out, err);
    }
    json_decref(doc);
    if (rc < 0) kubelet_pods_free(out);
    return rc;
}

void kubelet_pods_free(struct kubelet_pods *pods)
{
    for (size_t i = 0; i < pods->count; i++)
        pod_free(&pods->items[i]);
    free(pods->items);
    memset(pods, 0, sizeof *pods);
}

/* ---- lookup ------------------------------------------------------------------------------ */

static char uid_fold(char c)
{
    return c == '_' ? '-' : (char)tolower((unsigned char)c);
}

static bool uid_equal(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (uid_fold(*a) != uid_fold(*b)) return false;
    return *a == *b;
}

/* Equal ids, or the query a prefix (of >= 12 characters) of the pod's id; case does not
 * matter. */
static bool id_match(const char *pod_id, const char *query)
{
    size_t i = 0;
    while (pod_id[i] && query[i] &&
           tolower((unsigned char)pod_id[i]) == tolower((unsigned char)query[i]))
        i++;
    return !query[i] && (!pod_id[i] || i >= 12);
}

static const struct kubelet_container *find_container(const struct kubelet_pod *pod, const char *id)
{
    if (!id || !id[0]) return NULL;
    for (size_t i = 0; i < pod->container_count; i++)
        if (id_match(pod->containers[i].id, id)) return &pod->containers[i];
    return NULL;
}

static bool fill_match(const struct kubelet_pod *pod, const struct kubelet_container *c,
                       struct kubelet_match *out)
{
    out->pod = pod;
    out->pod_name = pod->name;
    out->k8s_namespace = pod->k8s_namespace;
    out->container_name = c ? c->name : "";
    out->labels = pod->labels;
    return true;
}

bool kubelet_pods_find(const struct kubelet_pods *pods, const char *pod_uid,
                       const char *container_id, struct kubelet_match *out)
{
    memset(out, 0, sizeof *out);
    const char *id = container_id && container_id[0] ? strip_scheme(container_id) : NULL;
    if (pod_uid && pod_uid[0]) {
        for (size_t i = 0; i < pods->count; i++)
            if (uid_equal(pods->items[i].uid, pod_uid))
                return fill_match(&pods->items[i], find_container(&pods->items[i], id), out);
    }
    if (!id || !id[0]) return false;
    for (size_t i = 0; i < pods->count; i++) {
        const struct kubelet_container *c = find_container(&pods->items[i], id);
        if (c) return fill_match(&pods->items[i], c, out);
    }
    return false;
}

/* ---- the client -------------------------------------------------------------------------- */

struct kubelet_client {
    CURLM *multi;
    CURL *easy; /* the refresh in flight, or NULL */
    struct curl_slist *headers;
    char *pods_url;
    char *display_url; /* pods_url without user:password@ */
    char *token_file;  /* NULL: no Authorization header */
    char *ca_file;     /* NULL: the system store */
    long timeout_ms;
    long interval_ms;
    double next_start_s;
    struct buf body;
    bool body_too_big;
    char errbuf[CURL_ERROR_SIZE];
    struct kubelet_pods pods;
    uint64_t pods_digest[2]; /* of the body the pod list came from */
    size_t pods_body_len;
    struct kubelet_client_stats stats;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dup_or_null(const char *s)
{
    return s && s[0] ? strdup(s) : NULL;
}

static bool has_prefix_nocase(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* http(s)://HOST..., visible ASCII only, not too long; 0 or -1. */
static int check_url(const char *url, struct cp_err *err)
{
    size_t n = url ? strlen(url) : 0;
    const char *host = !url                                 ? NULL
                       : has_prefix_nocase(url, "http://")  ? url + 7
                       : has_prefix_nocase(url, "https://") ? url + 8
                                                            : NULL;
    bool ok = host && *host && *host != '/' && n <= URL_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = url[i] > 0x20 && url[i] < 0x7f;
    if (!ok) {
        cp_err_set(err, CP_ERR_INVALID,
                   "kubelet url: expected an http:// or https:// URL, got "
                   "\"%.200s\"",
                   url ? url : "");
        return -1;
    }
    return 0;
}

/* The URL with any "user:password@" of its authority left out, for messages. */
static char *display_form(const char *url)
{
    const char *auth = strstr(url, "://") + 3;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', auth_len);
    struct buf b = {0};
    if (buf_append(&b, url, (size_t)(auth - url)) < 0 ||
        buf_append_str(&b, at ? at + 1 : auth) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int build_urls(struct kubelet_client *c, const char *url, struct cp_err *err)
{
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    struct buf b = {0};
    if (buf_append(&b, url, n) < 0 || buf_append_str(&b, "/pods") < 0) {
        buf_free(&b);
        goto nomem;
    }
    c->pods_url = b.data;
    if (!(c->display_url = display_form(c->pods_url))) goto nomem;
    return 0;
nomem:
    cp_err_set(err, CP_ERR_NOMEM, "kubelet: out of memory");
    return -1;
}

struct kubelet_client *kubelet_client_open(const char *url, const char *token_file,
                                           const char *ca_file, long timeout_ms, struct cp_err *err)
{
    if (check_url(url, err) < 0) return NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cp_err_set(err, CP_ERR_IO, "kubelet: libcurl does not initialise");
        return NULL;
    }
    struct kubelet_client *c = calloc(1, sizeof *c);
    if (!c) {
        curl_global_cleanup();
        cp_err_set(err, CP_ERR_NOMEM, "kubelet: out of memory");
        return NULL;
    }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    c->interval_ms = KUBELET_DEFAULT_REFRESH_MS;
    if (build_urls(c, url, err) < 0) goto fail;
    c->token_file = dup_or_null(token_file);
    c->ca_file = dup_or_null(ca_file);
    c->multi = curl_multi_init();
    if ((token_file && token_file[0] && !c->token_file) || (ca_file && ca_file[0] && !c->ca_file) ||
        !c->multi) {
        cp_err_set(err, CP_ERR_NOMEM, "kubelet: out of memory");
        goto fail;
    }
    return c;
fail:
    kubelet_client_close(c);
    return NULL;
}

/* Wipes the token out of the header list, then frees it. */
static void free_headers(struct kubelet_client *c)
{
    for (struct curl_slist *h = c->headers; h; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

static void end_transfer(struct kubelet_client *c)
{
    if (c->easy) {
        curl_multi_remove_handle(c->multi, c->easy);
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
    }
    free_headers(c);
    buf_free(&c->body); /* do not hold up to 16 MiB between refreshes */
    c->body_too_big = false;
}

void kubelet_client_close(struct kubelet_client *c)
{
    if (!c) return;
    end_transfer(c);
    if (c->multi) curl_multi_cleanup(c->multi);
    kubelet_pods_free(&c->pods);
    free(c->pods_url);
    free(c->display_url);
    free(c->token_file);
    free(c->ca_file);
    free(c);
    curl_global_cleanup();
}

void kubelet_client_set_interval_ms(struct kubelet_client *c, long interval_ms)
{
    c->interval_ms = interval_ms >= 1 ? interval_ms : 1;
}

void kubelet_client_refresh_now(struct kubelet_client *c)
{
    c->next_start_s = 0;
}

bool kubelet_client_busy(const struct kubelet_client *c)
{
    return c->easy != NULL;
}

const struct kubelet_pods *kubelet_client_pods(const struct kubelet_client *c)
{
    return &c->pods;
}

const struct kubelet_client_stats *kubelet_client_stats(const struct kubelet_client *c)
{
    return &c->stats;
}

static void record_failure(struct kubelet_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void record_failure(struct kubelet_client *c, const char *fmt, ...)
{
    char what[380];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(c->stats.last_error, sizeof c->stats.last_error, "kubelet GET %.100s: %s",
             c->display_url, what);
    c->stats.failures++;
    c->stats.refreshes++;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct kubelet_client *c = userdata;
    size_t n = size * nmemb;
    if (n > KUBELET_BODY_MAX - c->body.len) {
        c->body_too_big = true;
        return 0; /* aborts the transfer */
    }
    return buf_append(&c->body, data, n) < 0 ? 0 : n;
}

static int add_auth_header(struct kubelet_client *c)
{
    struct cp_err err;
    char *token = config_read_token_file(c->token_file, &err);
    if (!token) {
        record_failure(c, "bearer token: %s", err.msg);
        return -1;
    }
    struct buf h = {0};
    int rc = buf_printf(&h, "Authorization: Bearer %s", token);
    explicit_bzero(token, strlen(token));
    free(token);
    struct curl_slist *l = rc == 0 ? curl_slist_append(c->headers, h.data) : NULL;
    if (h.data) explicit_bzero(h.data, h.len);
    buf_free(&h);
    if (!l) {
        record_failure(c, "%s", "out of memory");
        return -1;
    }
    c->headers = l;
    return 0;
}

static void set_options(struct kubelet_client *c)
{
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, c->pods_url);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*"); /* the kubelet is on this node */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* gzip when the kubelet offers it */
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)KUBELET_BODY_MAX);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "conprof-agent");
}

static void start_refresh(struct kubelet_client *c)
{
    c->errbuf[0] = '\0';
    struct curl_slist *l = curl_slist_append(NULL, "Accept: application/json");
    if (!l) {
        record_failure(c, "%s", "out of memory");
        return;
    }
    c->headers = l;
    if (c->token_file && add_auth_header(c) < 0) {
        free_headers(c);
        return;
    }
    if (!(c->easy = curl_easy_init())) {
        record_failure(c, "%s", "cannot create a curl handle");
        free_headers(c);
        return;
    }
    set_options(c);
    if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK) {
        record_failure(c, "%s", "cannot start the transfer");
        end_transfer(c);
    }
}

/* A short, printable excerpt of an error answer. */
static void body_excerpt(const struct buf *b, char *out, size_t size)
{
    size_t n = b->len < size - 1 ? b->len : size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)b->data[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : ' ';
    }
    out[n] = '\0';
}

/* Two 64-bit lanes over the body, for "same answer as last time" only. */
static void body_digest(const struct buf *b, uint64_t out[2])
{
    uint64_t h1 = HASH_K0 ^ b->len, h2 = HASH_K1 ^ b->len;
    size_t i = 0;
    for (; i + 8 <= b->len; i += 8) {
        uint64_t w;
        memcpy(&w, b->data + i, 8);
        h1 = hash_fold_mul(h1 ^ w, HASH_K1);
        h2 = hash_fold_mul(h2 + w, HASH_K2);
    }
    uint64_t tail = 0;
    if (i < b->len) memcpy(&tail, b->data + i, b->len - i);
    h1 = hash_fold_mul(h1 ^ tail, HASH_K2);
    h2 = hash_fold_mul(h2 + tail, HASH_K1);
    out[0] = h1;
    out[1] = h2;
}

static void record_success(struct kubelet_client *c)
{
    c->stats.refreshes++;
    c->stats.pods = c->pods.count;
    c->stats.last_success_s = mono_s();
}

/* A 200 answer: the new list (1), the same answer as last time (0), or a failure (0). */
static int take_answer(struct kubelet_client *c)
{
    uint64_t digest[2];
    body_digest(&c->body, digest);
    if (c->stats.last_success_s > 0 && digest[0] == c->pods_digest[0] &&
        digest[1] == c->pods_digest[1] && c->body.len == c->pods_body_len) {
        record_success(c);
        return 0;
    }
    struct kubelet_pods fresh;
    struct cp_err err;
    if (kubelet_pods_parse(c->body.data ? c->body.data : "", c->body.len, &fresh, &err) < 0) {
        record_failure(c, "%s", err.msg);
        return 0;
    }
    kubelet_pods_free(&c->pods);
    c->pods = fresh;
    c->pods_digest[0] = digest[0];
    c->pods_digest[1] = digest[1];
    c->pods_body_len = c->body.len;
    record_success(c);
    return 1;
}

/* Returns 1 when a new list was installed. */
static int finish_refresh(struct kubelet_client *c, CURLcode result)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    int installed = 0;
    if (c->body_too_big || result == CURLE_FILESIZE_EXCEEDED) {
        record_failure(c, "the answer is larger than %u bytes", KUBELET_BODY_MAX);
    } else if (result != CURLE_OK) {
        record_failure(c, "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(result));
    } else if (status != 200) {
        char excerpt[BODY_EXCERPT + 1];
        body_excerpt(&c->body, excerpt, sizeof excerpt);
        record_failure(c, "HTTP %ld %s", status, excerpt);
    } else {
        installed = take_answer(c);
    }
    end_transfer(c);
    return installed;
}

int kubelet_client_poll(struct kubelet_client *c)
{
    double now = mono_s();
    if (!c->easy && now >= c->next_start_s) {
        c->next_start_s = now + (double)c->interval_ms / 1000.0;
        start_refresh(c);
    }
    if (!c->easy) return 0;
    int running = 0;
    curl_multi_perform(c->multi, &running);
    int left = 0;
    CURLMsg *m;
    while ((m = curl_multi_info_read(c->multi, &left)))
        if (m->msg == CURLMSG_DONE && m->easy_handle == c->easy)
            return finish_refresh(c, m->data.result);
    return 0;
}
