/* config: defaults, then the JSON file, then the environment, then the flags (see config.h).
 *
 * Design: every setting is described once, in a table of key specs (its name, value kind, range
 * and place in struct agent_config). The three sources all go through the same apply_value():
 * the file hands it jansson values; an environment variable or a flag becomes a JSON string (or
 * an integer when the text is one), so a bad --rate and a bad "rate_hz" get the same checks and
 * the same "expected ..., got ..." wording, prefixed by where the value came from. The flag table
 * also drives --help, so the help, the parser and the docs cannot drift apart silently.
 * Flags are parsed by a small reentrant loop rather than getopt (no hidden global state), and are
 * validated against a scratch config at parse time so usage errors surface before anything runs.
 * Selectors are checked here against the rules of selector.h but kept as JSON: turning them into
 * matchers is selector.c's job.
 */
#include "config.h"

#include "fileio.h"
#include "metrics.h"
#include "selector.h"
#include "status.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define GOT_MAX 96    /* bytes of the "got ..." part of a message */
#define PATH_TEXT 640 /* bytes of a key path such as selectors[3].k8s_labels.app */

enum value_kind {
    V_INT,       /* int within [min, max] */
    V_BYTES,     /* uint64_t >= min */
    V_BOOL,      /* bool */
    V_PATH,      /* char *, a non-empty path */
    V_SOCKET,    /* char *, a socket path or "" */
    V_URL,       /* char *, http(s) URL */
    V_WS_URL,    /* char *, ws(s) URL */
    V_LISTEN,    /* char *, HOST:PORT, "" -> NULL */
    V_LOG_LEVEL, /* enum config_log_level */
    V_SINK_TYPE, /* enum sink_kind */
    V_NODE,      /* char *, a node name */
    V_LABELS,    /* json_t *, merged per key */
    V_SELECTORS, /* json_t *, replaced */
    V_OBJECT,    /* nested keys */
};

struct key_spec;
typedef int object_check_fn(struct agent_config *c, const json_t *obj, const char *origin,
                            const char *path, struct cp_err *err);

struct key_spec {
    const char *name;
    enum value_kind kind;
    size_t offset; /* into struct agent_config */
    long long min, max;
    const struct key_spec *children; /* V_OBJECT: NULL-terminated */
    object_check_fn *check;          /* V_OBJECT: called after its keys were applied */
};

#define AT(field) offsetof(struct agent_config, field)

static object_check_fn check_sink_object;

static const struct key_spec SINK_KEYS[] = {
    {"type", V_SINK_TYPE, AT(sink.type), 0, 0, NULL, NULL},
    {"dir", V_PATH, AT(sink.dir), 0, 0, NULL, NULL},
    {"url", V_URL, AT(sink.url), 0, 0, NULL, NULL},
    {"bearer_token_file", V_PATH, AT(sink.bearer_token_file), 0, 0, NULL, NULL},
    {"ca_file", V_PATH, AT(sink.ca_file), 0, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL},
};

static const struct key_spec SPOOL_KEYS[] = {
    {"dir", V_PATH, AT(spool.dir), 0, 0, NULL, NULL},
    {"max_bytes", V_BYTES, AT(spool.max_bytes), CONFIG_MIN_SPOOL_MAX_BYTES, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL},
};

static const struct key_spec KUBELET_KEYS[] = {
    {"enabled", V_BOOL, AT(kubelet.enabled), 0, 0, NULL, NULL},
    {"url", V_URL, AT(kubelet.url), 0, 0, NULL, NULL},
    {"token_file", V_PATH, AT(kubelet.token_file), 0, 0, NULL, NULL},
    {"ca_file", V_PATH, AT(kubelet.ca_file), 0, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL},
};

static const struct key_spec CONSOLE_KEYS[] = {
    {"url", V_WS_URL, AT(console.url), 0, 0, NULL, NULL},
    {"token_file", V_PATH, AT(console.token_file), 0, 0, NULL, NULL},
    {"ca_file", V_PATH, AT(console.ca_file), 0, 0, NULL, NULL},
    {"state_file", V_PATH, AT(console.state_file), 0, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL},
};

static const struct key_spec ROOT_KEYS[] = {
    {"rate_hz", V_INT, AT(rate_hz), 1, 1000, NULL, NULL},
    {"period_s", V_INT, AT(period_s), 1, 3600, NULL, NULL},
    {"upload_timeout_s", V_INT, AT(upload_timeout_s), 1, 300, NULL, NULL},
    {"discovery_interval_s", V_INT, AT(discovery_interval_s), 1, 60, NULL, NULL},
    {"sink", V_OBJECT, 0, 0, 0, SINK_KEYS, check_sink_object},
    {"spool", V_OBJECT, 0, 0, 0, SPOOL_KEYS, NULL},
    {"selectors", V_SELECTORS, AT(selectors), 0, 0, NULL, NULL},
    {"labels", V_LABELS, AT(labels), 0, 0, NULL, NULL},
    {"status_socket", V_SOCKET, AT(status_socket), 0, 0, NULL, NULL},
    {"metrics_listen", V_LISTEN, AT(metrics_listen), 0, 0, NULL, NULL},
    {"metrics_allow_remote", V_BOOL, AT(metrics_allow_remote), 0, 0, NULL, NULL},
    {"kubelet", V_OBJECT, 0, 0, 0, KUBELET_KEYS, NULL},
    {"console", V_OBJECT, 0, 0, 0, CONSOLE_KEYS, NULL},
    {"log_level", V_LOG_LEVEL, AT(log_level), 0, 0, NULL, NULL},
    {"node_name", V_NODE, AT(node_name), 0, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL},
};

static const char *const LOG_LEVELS[] = {"error", "warn", "info", "debug"};

/* ---- messages ------------------------------------------------------------------------- */

static int fail(struct cp_err *err, const char *origin, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct cp_err *err, const char *origin, const char *path, const char *fmt, ...)
{
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path && path[0])
        cp_err_set(err, CP_ERR_INVALID, "%s: %s: %s", origin, path, msg);
    else
        cp_err_set(err, CP_ERR_INVALID, "%s: %s", origin, msg);
    return -1;
}

static int fail_nomem(struct cp_err *err, const char *origin)
{
    cp_err_set(err, CP_ERR_NOMEM, "%s: out of memory", origin);
    return -1;
}

/* A string as a short, quoted, printable excerpt. */
static void quote_text(const char *s, size_t len, char *out, size_t size)
{
    size_t o = 0, shown = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < size; i++, shown++) {
        unsigned char ch = (unsigned char)s[i];
        if (shown == 48) {
            o += (size_t)snprintf(out + o, size - o, "...");
            break;
        }
        if (ch == '"' || ch == '\\')
            o += (size_t)snprintf(out + o, size - o, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
        else
            out[o++] = (char)ch;
    }
    snprintf(out + o, size - o, "\"");
}

static void describe(const json_t *v, char *out, size_t size)
{
    if (json_is_string(v)) {
        quote_text(json_string_value(v), json_string_length(v), out, size);
    } else if (json_is_object(v)) {
        snprintf(out, size, "an object");
    } else if (json_is_array(v)) {
        snprintf(out, size, "an array");
    } else {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
        snprintf(out, size, "%.60s", s ? s : "?");
        free(s);
    }
}

static int fail_expected(struct cp_err *err, const char *origin, const char *path,
                         const char *expected, const json_t *got)
{
    char text[GOT_MAX];
    describe(got, text, sizeof text);
    return fail(err, origin, path, "expected %s, got %s", expected, text);
}

/* parent.key; a path too long for `out` is cut (it only ever names a key in a message). */
static void join_path(char *out, size_t size, const char *parent, const char *key)
{
    bool nested = parent && parent[0];
    int n = snprintf(out, size, "%s%s%s", nested ? parent : "", nested ? "." : "", key);
    if (n < 0) out[0] = '\0';
}

/* ---- checks of text values -------------------------------------------------------------- */

static bool has_control_chars(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return true;
    return false;
}

static bool is_path(const char *s, size_t len, size_t max)
{
    return len > 0 && len <= max && strlen(s) == len && !has_control_chars(s, len);
}

/* An http(s):// URL, or with `websocket` a ws(s):// one, with a host and no blanks. */
static bool is_url(const char *s, size_t len, bool websocket)
{
    const char *secure = websocket ? "wss://" : "https://",
               *plain = websocket ? "ws://" : "http://";
    size_t scheme = !strncasecmp(s, secure, strlen(secure)) ? strlen(secure)
                    : !strncasecmp(s, plain, strlen(plain)) ? strlen(plain)
                                                            : 0;
    if (!scheme || len <= scheme || len > CONFIG_URL_MAX || strlen(s) != len) return false;
    if (s[scheme] == '/' || s[scheme] == '?' || s[scheme] == '#') return false; /* no host */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f) return false;
    return true;
}

static bool is_listen_address(const char *s)
{
    struct metrics_address addr;
    struct cp_err ignored;
    return metrics_parse_address(s, &addr, &ignored) == 0 && addr.port > 0;
}

static bool is_node_name(const char *s, size_t len)
{
    if (len == 0 || len > CONFIG_NODE_NAME_MAX || strlen(s) != len) return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i])) return false;
    return true;
}

static bool is_label_name(const char *s, size_t len)
{
    if (len == 0 || len > CONFIG_LABEL_NAME_MAX || strlen(s) != len) return false;
    if (!isalpha((unsigned char)s[0]) && s[0] != '_') return false;
    if (len >= 2 && s[0] == '_' && s[1] == '_') return false; /* reserved, as in Prometheus */
    for (size_t i = 1; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.') return false;
    return true;
}

static int lookup_name(const char *s, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

/* ---- storing values ------------------------------------------------------------------- */

static int store_string(struct agent_config *c, size_t offset, const char *value)
{
    char **slot = (char **)((char *)c + offset);
    char *copy = value ? strdup(value) : NULL;
    if (value && !copy) return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

static const char *expected_text(const struct key_spec *k, char *buf, size_t size)
{
    switch (k->kind) {
    case V_INT:
        snprintf(buf, size, "an integer from %lld to %lld", k->min, k->max);
        break;
    case V_BYTES:
        snprintf(buf, size, "an integer >= %lld", k->min);
        break;
    case V_BOOL:
        snprintf(buf, size, "true or false");
        break;
    case V_PATH:
        snprintf(buf, size, "a non-empty path of at most %d bytes without control characters",
                 CONFIG_PATH_MAX);
        break;
    case V_SOCKET:
        snprintf(buf, size,
                 "a socket path of at most %d bytes without control characters, or \"\" for none",
                 STATUS_SOCKET_PATH_MAX);
        break;
    case V_URL:
        snprintf(buf, size, "an http:// or https:// URL of at most %d bytes without blanks",
                 CONFIG_URL_MAX);
        break;
    case V_WS_URL:
        snprintf(buf, size, "a wss:// (or ws://) URL of at most %d bytes without blanks",
                 CONFIG_URL_MAX);
        break;
    case V_LISTEN:
        snprintf(buf, size,
                 "HOST:PORT with a numeric IP address or localhost and a port from 1 to 65535 "
                 "(e.g. \"127.0.0.1:9464\"), or \"\" for none");
        break;
    case V_LOG_LEVEL:
        snprintf(buf, size, "one of \"error\", \"warn\", \"info\", \"debug\"");
        break;
    case V_SINK_TYPE:
        snprintf(buf, size, "one of \"dir\", \"http\"");
        break;
    case V_NODE:
        snprintf(buf, size, "a node name of 1 to %d letters, digits, '.', '-' or '_'",
                 CONFIG_NODE_NAME_MAX);
        break;
    default:
        snprintf(buf, size, "an object");
        break;
    }
    return buf;
}

/* Checks a string value of a text kind; on success stores it. 1: stored, 0: invalid, -1: memory */
static int store_text(struct agent_config *c, const struct key_spec *k, const char *s, size_t len)
{
    int idx;
    switch (k->kind) {
    case V_PATH:
        if (!is_path(s, len, CONFIG_PATH_MAX)) return 0;
        break;
    case V_SOCKET:
        if (len > 0 && !is_path(s, len, STATUS_SOCKET_PATH_MAX)) return 0;
        break;
    case V_URL:
    case V_WS_URL:
        if (!is_url(s, len, k->kind == V_WS_URL)) return 0;
        break;
    case V_LISTEN:
        if (len == 0) return store_string(c, k->offset, NULL) < 0 ? -1 : 1;
        if (len > METRICS_ADDRESS_MAX || strlen(s) != len || !is_listen_address(s)) return 0;
        break;
    case V_NODE:
        if (!is_node_name(s, len)) return 0;
        break;
    case V_LOG_LEVEL:
        if ((idx = lookup_name(s, LOG_LEVELS, 4)) < 0) return 0;
        *(enum config_log_level *)((char *)c + k->offset) = (enum config_log_level)idx;
        return 1;
    case V_SINK_TYPE:
        if (strcmp(s, "dir") && strcmp(s, "http")) return 0;
        *(enum sink_kind *)((char *)c + k->offset) = !strcmp(s, "dir") ? SINK_DIR : SINK_HTTP;
        return 1;
    default:
        return 0;
    }
    return store_string(c, k->offset, s) < 0 ? -1 : 1;
}

static int apply_object(struct agent_config *c, const struct key_spec *keys, const json_t *obj,
                        const char *origin, const char *path, struct cp_err *err);
static int apply_labels(struct agent_config *c, const json_t *v, const char *origin,
                        const char *path, struct cp_err *err);
static int apply_selectors(struct agent_config *c, const json_t *v, const char *origin,
                           const char *path, struct cp_err *err);

static int apply_value(struct agent_config *c, const struct key_spec *k, const json_t *v,
                       const char *origin, const char *path, struct cp_err *err)
{
    char expected[200];
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
    switch (k->kind) {
    case V_INT:
        if (!json_is_integer(v) || n < k->min || n > k->max) break;
        *(int *)((char *)c + k->offset) = (int)n;
        return 0;
    case V_BYTES:
        if (!json_is_integer(v) || n < k->min) break;
        *(uint64_t *)((char *)c + k->offset) = (uint64_t)n;
        return 0;
    case V_BOOL:
        if (!json_is_boolean(v)) break;
        *(bool *)((char *)c + k->offset) = json_is_true(v);
        return 0;
    case V_LABELS:
        return apply_labels(c, v, origin, path, err);
    case V_SELECTORS:
        return apply_selectors(c, v, origin, path, err);
    case V_OBJECT:
        if (!json_is_object(v)) break;
        if (apply_object(c, k->children, v, origin, path, err) < 0) return -1;
        return k->check ? k->check(c, v, origin, path, err) : 0;
    default: {
        if (!json_is_string(v)) break;
        int r = store_text(c, k, json_string_value(v), json_string_length(v));
        if (r < 0) return fail_nomem(err, origin);
        if (r == 0) break;
        return 0;
    }
    }
    return fail_expected(err, origin, path, expected_text(k, expected, sizeof expected), v);
}

static const struct key_spec *find_key(const struct key_spec *keys, const char *name)
{
    for (const struct key_spec *k = keys; k->name; k++)
        if (!strcmp(k->name, name)) return k;
    return NULL;
}

static int fail_unknown_key(struct cp_err *err, const struct key_spec *keys, const char *origin,
                            const char *path)
{
    char names[400] = "";
    size_t o = 0;
    for (const struct key_spec *k = keys; k->name && o < sizeof names; k++)
        o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", o ? ", " : "", k->name);
    return fail(err, origin, path, "unknown key (expected one of %s)", names);
}

static int apply_object(struct agent_config *c, const struct key_spec *keys, const json_t *obj,
                        const char *origin, const char *path, struct cp_err *err)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)obj, name, v)
    {
        char child[PATH_TEXT];
        join_path(child, sizeof child, path, name);
        const struct key_spec *k = find_key(keys, name);
        if (!k) return fail_unknown_key(err, keys, origin, child);
        if (apply_value(c, k, v, origin, child, err) < 0) return -1;
    }
    return 0;
}

/* Inside one sink object: the type follows the url when not given, and keys of the other type
 * are mistakes worth pointing at. */
static int check_sink_object(struct agent_config *c, const json_t *obj, const char *origin,
                             const char *path, struct cp_err *err)
{
    static const char *const HTTP_ONLY[] = {"url", "bearer_token_file", "ca_file"};
    c->sink.named = json_object_size(obj) > 0;
    if (!json_object_get(obj, "type"))
        c->sink.type = json_object_get(obj, "url") ? SINK_HTTP : SINK_DIR;
    char child[PATH_TEXT];
    if (c->sink.type == SINK_HTTP && json_object_get(obj, "dir")) {
        join_path(child, sizeof child, path, "dir");
        return fail(err, origin, child, "only used when sink.type is \"dir\"");
    }
    for (size_t i = 0; c->sink.type == SINK_DIR && i < 3; i++) {
        if (!json_object_get(obj, HTTP_ONLY[i])) continue;
        join_path(child, sizeof child, path, HTTP_ONLY[i]);
        return fail(err, origin, child, "only used when sink.type is \"http\"");
    }
    return 0;
}

/* ---- labels and selectors ------------------------------------------------------------- */

static int check_label(const char *name, const json_t *value, const char *origin, const char *path,
                       struct cp_err *err)
{
    char child[PATH_TEXT];
    if (!is_label_name(name, strlen(name))) {
        char got[GOT_MAX];
        quote_text(name, strlen(name), got, sizeof got);
        return fail(err, origin, path,
                    "expected label names of 1 to %d letters, digits, '_' or '.', starting with a "
                    "letter or '_' (not \"__\"), got %s",
                    CONFIG_LABEL_NAME_MAX, got);
    }
    join_path(child, sizeof child, path, name);
    size_t len = json_is_string(value) ? json_string_length(value) : 0;
    if (!json_is_string(value) || len > CONFIG_LABEL_VALUE_MAX ||
        strlen(json_string_value(value)) != len ||
        has_control_chars(json_string_value(value), len)) {
        char expected[100];
        snprintf(expected, sizeof expected,
                 "a string of at most %d bytes without control characters", CONFIG_LABEL_VALUE_MAX);
        return fail_expected(err, origin, child, expected, value);
    }
    return 0;
}

static int check_labels(const json_t *v, const char *origin, const char *path, struct cp_err *err)
{
    if (!json_is_object(v))
        return fail_expected(err, origin, path, "an object of label names to string values", v);
    if (json_object_size(v) > CONFIG_LABELS_MAX)
        return fail(err, origin, path, "expected at most %d labels, got %zu", CONFIG_LABELS_MAX,
                    json_object_size(v));
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)v, name, value)
    {
        if (check_label(name, value, origin, path, err) < 0) return -1;
    }
    return 0;
}

static int apply_labels(struct agent_config *c, const json_t *v, const char *origin,
                        const char *path, struct cp_err *err)
{
    if (check_labels(v, origin, path, err) < 0) return -1;
    if (json_object_update(c->labels, (json_t *)v) < 0) return fail_nomem(err, origin);
    if (json_object_size(c->labels) > CONFIG_LABELS_MAX)
        return fail(err, origin, path, "expected at most %d labels in all, got %zu",
                    CONFIG_LABELS_MAX, json_object_size(c->labels));
    return 0;
}

#define SELECTOR_KEYS "project, environment, application, container_id, k8s_namespace, k8s_labels"

static int check_selector_string(const json_t *v, const char *origin, const char *path,
                                 struct cp_err *err)
{
    size_t len = json_is_string(v) ? json_string_length(v) : 0;
    if (json_is_string(v) && len <= SELECTOR_VALUE_MAX && strlen(json_string_value(v)) == len)
        return 0;
    char expected[80];
    snprintf(expected, sizeof expected, "a string of at most %d bytes", SELECTOR_VALUE_MAX);
    return fail_expected(err, origin, path, expected, v);
}

static int check_container_id(const json_t *v, const char *origin, const char *path,
                              struct cp_err *err)
{
    if (check_selector_string(v, origin, path, err) < 0) return -1;
    const char *id = json_string_value(v);
    size_t len = strlen(id);
    bool ok = len == 0 || (len >= 12 && len <= 64);
    for (size_t i = 0; ok && i < len; i++)
        ok = isxdigit((unsigned char)id[i]) != 0;
    if (ok) return 0;
    return fail_expected(err, origin, path, "12 to 64 hex digits (a container id or its prefix)",
                         v);
}

static int check_selector_labels(const json_t *v, const char *origin, const char *path,
                                 struct cp_err *err)
{
    if (!json_is_object(v))
        return fail_expected(err, origin, path, "an object of label names to string values", v);
    if (json_object_size(v) > SELECTOR_LABELS_MAX)
        return fail(err, origin, path, "expected at most %d labels, got %zu", SELECTOR_LABELS_MAX,
                    json_object_size(v));
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)v, name, value)
    {
        size_t len = strlen(name);
        if (len == 0 || len > SELECTOR_VALUE_MAX)
            return fail(err, origin, path, "expected label names of 1 to %d bytes",
                        SELECTOR_VALUE_MAX);
        char child[PATH_TEXT];
        join_path(child, sizeof child, path, name);
        if (check_selector_string(value, origin, child, err) < 0) return -1;
    }
    return 0;
}

static int check_selector(const json_t *sel, const char *origin, const char *path,
                          struct cp_err *err)
{
    if (!json_is_object(sel))
        return fail_expected(err, origin, path, "an object with any of " SELECTOR_KEYS, sel);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)sel, key, v)
    {
        char child[PATH_TEXT];
        join_path(child, sizeof child, path, key);
        int r;
        if (!strcmp(key, "container_id"))
            r = check_container_id(v, origin, child, err);
        else if (!strcmp(key, "k8s_labels"))
            r = check_selector_labels(v, origin, child, err);
        else if (!strcmp(key, "project") || !strcmp(key, "environment") ||
                 !strcmp(key, "application") || !strcmp(key, "k8s_namespace"))
            r = check_selector_string(v, origin, child, err);
        else
            r = fail(err, origin, child, "unknown key (expected one of " SELECTOR_KEYS ")");
        if (r < 0) return -1;
    }
    return 0;
}

static int apply_selectors(struct agent_config *c, const json_t *v, const char *origin,
                           const char *path, struct cp_err *err)
{
    if (!json_is_array(v)) return fail_expected(err, origin, path, "an array of selectors", v);
    if (json_array_size(v) > SELECTOR_LIST_MAX)
        return fail(err, origin, path, "expected at most %d selectors, got %zu", SELECTOR_LIST_MAX,
                    json_array_size(v));
    size_t i;
    json_t *sel;
    json_array_foreach(v, i, sel)
    {
        char child[PATH_TEXT];
        snprintf(child, sizeof child, "%s[%zu]", path, i);
        if (check_selector(sel, origin, child, err) < 0) return -1;
    }
    json_t *copy = json_deep_copy(v);
    if (!copy) return fail_nomem(err, origin);
    json_decref(c->selectors);
    c->selectors = copy;
    return 0;
}

/* ---- defaults and cross-checks -------------------------------------------------------- */

static int config_defaults(struct agent_config *c)
{
    memset(c, 0, sizeof *c);
    c->rate_hz = CONFIG_DEFAULT_RATE_HZ;
    c->period_s = CONFIG_DEFAULT_PERIOD_S;
    c->upload_timeout_s = CONFIG_DEFAULT_UPLOAD_TIMEOUT_S;
    c->discovery_interval_s = CONFIG_DEFAULT_DISCOVERY_INTERVAL_S;
    c->sink.type = SINK_DIR;
    c->spool.max_bytes = CONFIG_DEFAULT_SPOOL_MAX_BYTES;
    c->log_level = CONFIG_LOG_INFO;
    c->sink.dir = strdup(CONFIG_DEFAULT_SINK_DIR);
    c->spool.dir = strdup(CONFIG_DEFAULT_SPOOL_DIR);
    c->status_socket = strdup(CONFIG_DEFAULT_STATUS_SOCKET);
    c->kubelet.url = strdup(CONFIG_DEFAULT_KUBELET_URL);
    c->kubelet.token_file = strdup(CONFIG_DEFAULT_KUBELET_TOKEN_FILE);
    c->kubelet.ca_file = strdup(CONFIG_DEFAULT_KUBELET_CA_FILE);
    c->console.state_file = strdup(CONFIG_DEFAULT_CONTROL_STATE);
    c->selectors = json_array();
    c->labels = json_object();
    if (c->sink.dir && c->spool.dir && c->status_socket && c->kubelet.url &&
        c->kubelet.token_file && c->kubelet.ca_file && c->console.state_file && c->selectors &&
        c->labels)
        return 0;
    config_free(c);
    return -1;
}

static int cross_check(struct agent_config *c, struct cp_err *err)
{
    if (c->sink.type == SINK_HTTP && !c->sink.url)
        return fail(err, "config", "sink.url",
                    "required when sink.type is \"http\" (set it in the config file, with "
                    "--sink-url or with CONPROF_SINK_URL)");
    if (c->console.url && !c->console.token_file)
        return fail(err, "config", "console.token_file",
                    "required with console.url: the console only talks to agents with a token "
                    "(create one with `conprof-console token create --name NODE`, then set "
                    "--console-token-file or CONPROF_CONSOLE_TOKEN_FILE)");
    if (c->metrics_listen && !c->metrics_allow_remote) {
        struct metrics_address addr;
        if (metrics_parse_address(c->metrics_listen, &addr, err) < 0) return -1;
        if (!addr.loopback)
            return fail(err, "config", "metrics_listen",
                        "%s is not a loopback address; set metrics_allow_remote to true (or "
                        "--metrics-allow-remote) to serve metrics beyond this host",
                        c->metrics_listen);
    }
    return 0;
}

static int apply_root(struct agent_config *c, const json_t *root, const char *origin,
                      struct cp_err *err)
{
    if (!json_is_object(root))
        return fail_expected(err, origin, "", "a JSON object at the top level", root);
    return apply_object(c, ROOT_KEYS, root, origin, "", err);
}

static int parse_into(struct agent_config *c, const char *text, size_t len, const char *source,
                      struct cp_err *err)
{
    char origin[CONFIG_PATH_MAX + 16];
    snprintf(origin, sizeof origin, "config %s", source);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(err, origin, "", "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    int r = apply_root(c, root, origin, err);
    json_decref(root);
    return r;
}

int config_parse_text(const char *text, size_t len, const char *source, struct agent_config *out,
                      struct cp_err *err)
{
    if (config_defaults(out) < 0) return fail_nomem(err, "config");
    if (len > CONFIG_FILE_MAX) {
        config_free(out);
        return fail(err, "config", source, "larger than %u bytes", CONFIG_FILE_MAX);
    }
    if (parse_into(out, text, len, source, err) < 0 || cross_check(out, err) < 0) {
        config_free(out);
        return -1;
    }
    return 0;
}

/* ---- files ---------------------------------------------------------------------------- */

char *config_read_token_file(const char *path, struct cp_err *err)
{
    size_t len = 0;
    char *tok = fileio_read_file(path, CONFIG_TOKEN_MAX, &len, NULL, err);
    if (!tok) return NULL;
    while (len > 0 && isspace((unsigned char)tok[len - 1]))
        tok[--len] = '\0';
    bool visible = len > 0;
    for (size_t i = 0; visible && i < len; i++)
        visible = tok[i] > 0x20 && tok[i] < 0x7f;
    if (!visible) {
        cp_err_set(err, CP_ERR_INVALID, "%s: %s", path,
                   len ? "the token holds characters other than visible ASCII"
                       : "the token file is empty");
        free(tok);
        return NULL;
    }
    return tok;
}

static int load_file(struct agent_config *c, const char *path, struct cp_err *err)
{
    size_t len = 0;
    char *text = fileio_read_file(path, CONFIG_FILE_MAX, &len, NULL, err);
    if (!text) {
        cp_err_prefix(err, "config");
        return -1;
    }
    int r = parse_into(c, text, len, path, err);
    free(text);
    if (r == 0 && !(c->file = strdup(path))) return fail_nomem(err, "config");
    return r;
}

static bool set(const char *s)
{
    return s && s[0];
}

/* The console's HTTP base for uploads: ws://H/agent/v1 -> http://H, wss://H/... -> https://H. */
static int derive_console_ingest(struct agent_config *c, struct cp_err *err)
{
    if (!c->console.url) return 0;
    bool secure = !strncasecmp(c->console.url, "wss://", 6);
    const char *host = c->console.url + (secure ? 6 : 5);
    size_t host_len = strcspn(host, "/?#");
    if (asprintf(&c->console.ingest_url, "%s://%.*s", secure ? "https" : "http", (int)host_len,
                 host) < 0) {
        c->console.ingest_url = NULL;
        return fail_nomem(err, "console.url");
    }
    return 0;
}

/* Reads the files the config names and the upload path needs now: the bearer token (rotated
 * tokens are picked up on reload) and the CA bundle (checked only). */
static int load_secrets(struct agent_config *c, const struct config_args *args,
                        const struct config_env *env, struct cp_err *err)
{
    if (c->console.url && c->console.token_file &&
        !(c->console.token = config_read_token_file(c->console.token_file, err))) {
        cp_err_prefix(err, "%s",
                      args && args->console_token_file      ? "--console-token-file"
                      : env && set(env->console_token_file) ? "CONPROF_CONSOLE_TOKEN_FILE"
                                                            : "config: console.token_file");
        return -1;
    }
    if (c->sink.type != SINK_HTTP) return 0;
    if (c->sink.bearer_token_file) {
        if (!(c->sink.bearer_token = config_read_token_file(c->sink.bearer_token_file, err))) {
            /* name where the path came from: the flag, the variable, or the file's key */
            cp_err_prefix(err, "%s",
                          args && args->bearer_token_file ? "--bearer-token-file"
                          : env && env->bearer_token_file && env->bearer_token_file[0]
                              ? "CONPROF_BEARER_TOKEN_FILE"
                              : "config: sink.bearer_token_file");
            return -1;
        }
    }
    if (c->sink.ca_file) {
        int fd = fileio_open_regular(c->sink.ca_file, NULL, err);
        if (fd < 0) {
            cp_err_prefix(err, "config: sink.ca_file");
            return -1;
        }
        close(fd);
    }
    return 0;
}

/* ---- environment and flags -------------------------------------------------------------- */

void config_env_from_process(struct config_env *env)
{
    env->config = getenv("CONPROF_CONFIG");
    env->sink_url = getenv("CONPROF_SINK_URL");
    env->bearer_token_file = getenv("CONPROF_BEARER_TOKEN_FILE");
    env->node_name = getenv("CONPROF_NODE_NAME");
    env->log_level = getenv("CONPROF_LOG_LEVEL");
    env->console_url = getenv("CONPROF_CONSOLE_URL");
    env->console_token_file = getenv("CONPROF_CONSOLE_TOKEN_FILE");
}

static const struct key_spec *key_at(const char *path)
{
    const struct key_spec *keys = ROOT_KEYS, *k = NULL;
    char part[64];
    while (*path) {
        size_t n = strcspn(path, ".");
        snprintf(part, sizeof part, "%.*s", (int)n, path);
        if (!keys || !(k = find_key(keys, part))) return NULL;
        keys = k->children;
        path += n + (path[n] == '.');
    }
    return k;
}

/* Applies a setting given as text (flag or environment): integers are tried as integers. */
static int apply_text(struct agent_config *c, const char *path, const char *text,
                      const char *origin, struct cp_err *err)
{
    const struct key_spec *k = key_at(path);
    json_t *v = NULL;
    if (!k) return fail(err, origin, "", "no such setting %s", path);
    if (k->kind == V_INT || k->kind == V_BYTES) {
        char *end;
        errno = 0;
        long long n = strtoll(text, &end, 10);
        if ((isdigit((unsigned char)text[0]) || text[0] == '-') && !errno && !*end)
            v = json_integer(n);
    }
    if (!v) v = k->kind == V_BOOL ? json_true() : json_string(text);
    if (!v) return fail(err, origin, "", "expected UTF-8 text");
    int r = apply_value(c, k, v, origin, "", err);
    json_decref(v);
    return r;
}

enum flag_kind { F_VALUE, F_SWITCH, F_CONFIG, F_LABEL, F_SELECTOR, F_HELP };

struct flag_spec {
    const char *name;
    enum flag_kind kind;
    size_t arg_offset; /* into struct config_args (F_VALUE, F_SWITCH) */
    const char *path;  /* the config key it sets */
    const char *metavar;
    const char *help;
};

#define ARG(field) offsetof(struct config_args, field)

static const struct flag_spec FLAGS[] = {
    {"config", F_CONFIG, 0, NULL, "FILE", "read settings from FILE (JSON; env CONPROF_CONFIG)"},
    {"rate", F_VALUE, ARG(rate), "rate_hz", "HZ", "samples per second, 1-1000 (default 100)"},
    {"period", F_VALUE, ARG(period), "period_s", "SECS", "profile period, 1-3600 (default 45)"},
    {"upload-timeout", F_VALUE, ARG(upload_timeout), "upload_timeout_s", "SECS",
     "per upload attempt, 1-300 (default 10)"},
    {"discovery-interval", F_VALUE, ARG(discovery_interval), "discovery_interval_s", "SECS",
     "rescan /proc every SECS, 1-60 (default 5)"},
    {"sink-dir", F_VALUE, ARG(sink_dir), "sink.dir", "DIR",
     "write profiles to DIR (default " CONFIG_DEFAULT_SINK_DIR ")"},
    {"sink-url", F_VALUE, ARG(sink_url), "sink.url", "URL",
     "upload to a Pyroscope-compatible server instead (env CONPROF_SINK_URL)"},
    {"bearer-token-file", F_VALUE, ARG(bearer_token_file), "sink.bearer_token_file", "FILE",
     "send 'Authorization: Bearer <FILE's contents>' (env CONPROF_BEARER_TOKEN_FILE)"},
    {"spool-dir", F_VALUE, ARG(spool_dir), "spool.dir", "DIR",
     "keep undelivered profiles in DIR (default " CONFIG_DEFAULT_SPOOL_DIR ")"},
    {"spool-max-bytes", F_VALUE, ARG(spool_max_bytes), "spool.max_bytes", "N",
     "spool size cap, >= 1048576 (default 67108864)"},
    {"status-socket", F_VALUE, ARG(status_socket), "status_socket", "PATH",
     "answer `conprof-agent status` here, '' for none (default " CONFIG_DEFAULT_STATUS_SOCKET ")"},
    {"metrics-listen", F_VALUE, ARG(metrics_listen), "metrics_listen", "ADDR",
     "serve Prometheus metrics on ADDR, e.g. 127.0.0.1:9464 (default: off)"},
    {"metrics-allow-remote", F_SWITCH, ARG(metrics_allow_remote), "metrics_allow_remote", NULL,
     "allow a non-loopback --metrics-listen address"},
    {"label", F_LABEL, 0, "labels", "K=V", "add a label to every profile (repeatable)"},
    {"selector", F_SELECTOR, 0, "selectors", "K=V,...",
     "profile only matching processes (repeatable; replaces the file's selectors); keys: "
     "project, environment, application, container_id, k8s_namespace, k8s_labels.NAME"},
    {"console", F_VALUE, ARG(console_url), "console.url", "URL",
     "take start/stop commands from a conprof-console, e.g. wss://console:8080/agent/v1 (env "
     "CONPROF_CONSOLE_URL)"},
    {"console-token-file", F_VALUE, ARG(console_token_file), "console.token_file", "FILE",
     "the agent token for --console (env CONPROF_CONSOLE_TOKEN_FILE)"},
    {"console-ca-file", F_VALUE, ARG(console_ca_file), "console.ca_file", "FILE",
     "CA bundle that signs the console's certificate (default: the system store)"},
    {"control-state", F_VALUE, ARG(control_state), "console.state_file", "FILE",
     "where sessions and leases survive restarts (default " CONFIG_DEFAULT_CONTROL_STATE ")"},
    {"node-name", F_VALUE, ARG(node_name), "node_name", "NAME",
     "the host label (default: the host name; env CONPROF_NODE_NAME)"},
    {"log-level", F_VALUE, ARG(log_level), "log_level", "LEVEL",
     "error, warn, info or debug (default info; env CONPROF_LOG_LEVEL)"},
    {"help", F_HELP, 0, NULL, NULL, "this help"},
};
#define FLAG_COUNT (sizeof FLAGS / sizeof FLAGS[0])

/* Prints text wrapped at `width` columns, continuation lines indented by `indent`. */
static void print_wrapped(FILE *out, const char *text, int indent, int width)
{
    int col = indent;
    while (*text) {
        int word = (int)strcspn(text, " ");
        if (col > indent && col + 1 + word > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", word, text);
        col += word;
        text += word;
        text += strspn(text, " ");
    }
    fputc('\n', out);
}

void config_usage(FILE *out)
{
    fputs("options:\n", out);
    for (size_t i = 0; i < FLAG_COUNT; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", FLAGS[i].name, FLAGS[i].metavar ? " " : "",
                 FLAGS[i].metavar ? FLAGS[i].metavar : "");
        fprintf(out, "  %s%-26s ", FLAGS[i].kind == F_HELP ? "-h, " : "    ", left);
        print_wrapped(out, FLAGS[i].help, 33, 100);
    }
}

static const struct flag_spec *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < FLAG_COUNT; i++)
        if (strlen(FLAGS[i].name) == len && !strncmp(FLAGS[i].name, name, len)) return &FLAGS[i];
    return NULL;
}

static int parse_label_flag(struct config_args *a, const char *text, struct cp_err *err)
{
    const char *eq = strchr(text, '=');
    char name[CONFIG_LABEL_NAME_MAX + 2];
    if (!eq || (size_t)(eq - text) >= sizeof name)
        return fail(err, "--label", "", "expected NAME=VALUE, got '%.100s'", text);
    snprintf(name, sizeof name, "%.*s", (int)(eq - text), text);
    json_t *value = json_string(eq + 1);
    if (!value || check_label(name, value, "--label", "", err) < 0) {
        if (!value) fail(err, "--label", "", "expected UTF-8 text, got '%.100s'", text);
        json_decref(value);
        return -1;
    }
    if (!a->labels && !(a->labels = json_object())) {
        json_decref(value);
        return fail_nomem(err, "--label");
    }
    if (json_object_set_new(a->labels, name, value) < 0) return fail_nomem(err, "--label");
    if (json_object_size(a->labels) > CONFIG_LABELS_MAX)
        return fail(err, "--label", "", "at most %d labels", CONFIG_LABELS_MAX);
    return 0;
}

/* One "key=value" item of a --selector into sel; "k8s_labels.NAME=value" nests. */
static int selector_item(json_t *sel, const char *item, size_t len, const char *origin,
                         struct cp_err *err)
{
    const char *eq = memchr(item, '=', len);
    if (!eq || eq == item)
        return fail(err, origin, "", "expected KEY=VALUE[,KEY=VALUE...], got '%.*s'",
                    (int)(len > 100 ? 100 : len), item);
    char key[SELECTOR_VALUE_MAX + 16];
    if ((size_t)(eq - item) >= sizeof key) return fail(err, origin, "", "key too long");
    snprintf(key, sizeof key, "%.*s", (int)(eq - item), item);
    if (eq + 1 == item + len)
        return fail(err, origin, "", "%s= has no value; leave %s out to match any value", key, key);
    json_t *value = json_stringn(eq + 1, len - (size_t)(eq - item) - 1);
    if (!value) return fail(err, origin, "", "expected UTF-8 text");
    json_t *target = sel;
    const char *name = key;
    if (!strncmp(key, "k8s_labels.", 11)) {
        name = key + 11;
        if (!(target = json_object_get(sel, "k8s_labels"))) {
            target = json_object();
            json_object_set_new(sel, "k8s_labels", target);
        }
    } else if (!strcmp(key, "k8s_labels")) {
        json_decref(value);
        return fail(err, origin, "", "write Kubernetes labels as k8s_labels.NAME=VALUE");
    }
    if (!target || json_object_get(target, name)) {
        json_decref(value);
        return target ? fail(err, origin, "", "%s given twice", key) : fail_nomem(err, origin);
    }
    return json_object_set_new(target, name, value) < 0 ? fail_nomem(err, origin) : 0;
}

static int parse_selector_flag(struct config_args *a, const char *text, struct cp_err *err)
{
    char origin[160];
    snprintf(origin, sizeof origin, "--selector '%.100s%s'", text, strlen(text) > 100 ? "..." : "");
    json_t *sel = json_object();
    if (!sel) return fail_nomem(err, origin);
    size_t len = strlen(text);
    for (size_t pos = 0, items = 0; pos < len && items < 4 * SELECTOR_LABELS_MAX; items++) {
        size_t n = strcspn(text + pos, ",");
        if (selector_item(sel, text + pos, n, origin, err) < 0) {
            json_decref(sel);
            return -1;
        }
        pos += n + 1;
    }
    if (check_selector(sel, origin, "", err) < 0) {
        json_decref(sel);
        return -1;
    }
    if (!a->selectors && !(a->selectors = json_array())) {
        json_decref(sel);
        return fail_nomem(err, origin);
    }
    if (json_array_append_new(a->selectors, sel) < 0) return fail_nomem(err, origin);
    if (json_array_size(a->selectors) > SELECTOR_LIST_MAX)
        return fail(err, "--selector", "", "at most %d selectors", SELECTOR_LIST_MAX);
    return 0;
}

/* Checks one flag's value against a scratch config and records it in args. */
static int take_flag(struct config_args *a, const struct flag_spec *f, const char *value,
                     struct agent_config *scratch, struct cp_err *err)
{
    char origin[64];
    snprintf(origin, sizeof origin, "--%s", f->name);
    switch (f->kind) {
    case F_HELP:
        a->help = true;
        return 0;
    case F_CONFIG:
        if (!is_path(value, strlen(value), CONFIG_PATH_MAX))
            return fail(err, origin, "", "expected a path, got '%.100s'", value);
        a->config_file = value;
        return 0;
    case F_SWITCH:
        *(bool *)((char *)a + f->arg_offset) = true;
        return 0;
    case F_LABEL:
        return parse_label_flag(a, value, err);
    case F_SELECTOR:
        return parse_selector_flag(a, value, err);
    case F_VALUE:
        if (apply_text(scratch, f->path, value, origin, err) < 0) return -1;
        *(const char **)((char *)a + f->arg_offset) = value;
        return 0;
    }
    return 0;
}

static int parse_args_loop(int argc, char **argv, struct config_args *a,
                           struct agent_config *scratch, struct cp_err *err)
{
    for (int i = 1; i < argc && !a->help; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h")) arg = "--help";
        if (strncmp(arg, "--", 2) || !arg[2])
            return fail(err, "run", "", "unexpected argument '%.100s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct flag_spec *f = find_flag(name, len);
        if (!f) return fail(err, "run", "", "unknown option '%.100s' (see --help)", arg);
        bool wants_value = f->kind != F_HELP && f->kind != F_SWITCH;
        if (!wants_value && eq) return fail(err, "run", "", "--%s takes no value", f->name);
        const char *value = eq ? eq + 1 : NULL;
        if (wants_value && !value) {
            if (i + 1 >= argc) return fail(err, "run", "", "--%s needs a value", f->name);
            value = argv[++i];
        }
        if (take_flag(a, f, value, scratch, err) < 0) return -1;
    }
    if (a->sink_dir && a->sink_url)
        return fail(err, "run", "", "--sink-dir and --sink-url exclude each other");
    return 0;
}

int config_args_parse(int argc, char **argv, struct config_args *args, struct cp_err *err)
{
    memset(args, 0, sizeof *args);
    struct agent_config scratch;
    if (config_defaults(&scratch) < 0) return fail_nomem(err, "run");
    int r = parse_args_loop(argc, argv, args, &scratch, err);
    config_free(&scratch);
    if (r < 0) config_args_free(args);
    return r;
}

void config_args_free(struct config_args *args)
{
    json_decref(args->labels);
    json_decref(args->selectors);
    memset(args, 0, sizeof *args);
}

/* ---- loading -------------------------------------------------------------------------- */

static int apply_env(struct agent_config *c, const struct config_env *env, struct cp_err *err)
{
    const struct {
        const char *value, *path, *name;
    } vars[] = {
        {env->sink_url, "sink.url", "CONPROF_SINK_URL"},
        {env->bearer_token_file, "sink.bearer_token_file", "CONPROF_BEARER_TOKEN_FILE"},
        {env->node_name, "node_name", "CONPROF_NODE_NAME"},
        {env->console_url, "console.url", "CONPROF_CONSOLE_URL"},
        {env->console_token_file, "console.token_file", "CONPROF_CONSOLE_TOKEN_FILE"},
        {env->log_level, "log_level", "CONPROF_LOG_LEVEL"},
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (set(vars[i].value) && apply_text(c, vars[i].path, vars[i].value, vars[i].name, err) < 0)
            return -1;
    if (set(env->sink_url)) c->sink.type = SINK_HTTP;
    if (set(env->sink_url)) c->sink.named = true;
    return 0;
}

static int apply_flags(struct agent_config *c, const struct config_args *a, struct cp_err *err)
{
    for (size_t i = 0; i < FLAG_COUNT; i++) {
        const struct flag_spec *f = &FLAGS[i];
        char origin[64];
        snprintf(origin, sizeof origin, "--%s", f->name);
        if (f->kind == F_SWITCH && *(const bool *)((const char *)a + f->arg_offset)) {
            if (apply_text(c, f->path, "true", origin, err) < 0) return -1;
        } else if (f->kind == F_VALUE) {
            const char *v = *(const char *const *)((const char *)a + f->arg_offset);
            if (v && apply_text(c, f->path, v, origin, err) < 0) return -1;
        }
    }
    if (a->sink_dir) c->sink.type = SINK_DIR;
    if (a->sink_url) c->sink.type = SINK_HTTP;
    if (a->sink_dir || a->sink_url) c->sink.named = true;
    if (a->labels && apply_labels(c, a->labels, "--label", "", err) < 0) return -1;
    if (a->selectors && apply_selectors(c, a->selectors, "--selector", "", err) < 0) return -1;
    /* CONPROF_BEARER_TOKEN_FILE may be set for every agent of a fleet; a flag is meant. */
    if (a->bearer_token_file && c->sink.type != SINK_HTTP)
        return fail(err, "--bearer-token-file", "",
                    "only the HTTP sink sends a token, but the sink is the directory %s; add "
                    "--sink-url to upload, or leave the flag out",
                    c->sink.dir);
    return 0;
}

int config_load(const struct config_args *args, const struct config_env *env,
                struct agent_config *out, struct cp_err *err)
{
    if (config_defaults(out) < 0) return fail_nomem(err, "config");
    const char *file = args->config_file  ? args->config_file
                       : set(env->config) ? env->config
                                          : NULL;
    if ((file && load_file(out, file, err) < 0) || apply_env(out, env, err) < 0 ||
        apply_flags(out, args, err) < 0 || cross_check(out, err) < 0 ||
        derive_console_ingest(out, err) < 0 || load_secrets(out, args, env, err) < 0) {
        config_free(out);
        return -1;
    }
    return 0;
}

int config_load_file(const char *path, struct agent_config *out, struct cp_err *err)
{
    if (config_defaults(out) < 0) return fail_nomem(err, "config");
    if (load_file(out, path, err) < 0) {
        config_free(out);
        return -1;
    }
    return 0;
}

void config_free(struct agent_config *c)
{
    char **strings[] = {&c->file,
                        &c->sink.dir,
                        &c->sink.url,
                        &c->sink.bearer_token_file,
                        &c->sink.ca_file,
                        &c->sink.bearer_token,
                        &c->spool.dir,
                        &c->status_socket,
                        &c->metrics_listen,
                        &c->kubelet.url,
                        &c->kubelet.token_file,
                        &c->kubelet.ca_file,
                        &c->console.url,
                        &c->console.token_file,
                        &c->console.ca_file,
                        &c->console.state_file,
                        &c->console.token,
                        &c->console.ingest_url,
                        &c->node_name};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        free(*strings[i]);
    json_decref(c->selectors);
    json_decref(c->labels);
    memset(c, 0, sizeof *c);
}

const char *config_log_level_name(enum config_log_level level)
{
    return (unsigned)level < 4 ? LOG_LEVELS[level] : "info";
}
