/* protocol: parsing and building the control-channel messages (control/PROTOCOL.md).
 *
 * Every check reports into one `struct proto_nack` (field path + error text): a command's
 * failure is sent back as-is in a nack, and an agent message's failure is joined into a cp_err
 * as "field: error". Small typed getters (get_int, get_string, ...) each check one key of one
 * object against one rule of the spec's value table, so a message parser reads as the list of
 * its keys. Parsers fill a local struct and copy it out only on success, so a failure leaves
 * nothing behind. Builders assemble a jansson object and, before returning its text, run the
 * matching parser over it: a builder can never emit a message the other end would refuse.
 * Frames are bounded by PROTO_FRAME_MAX before jansson sees them; jansson itself bounds nesting
 * depth, rejects invalid UTF-8 and NUL characters, and we ask it to reject duplicate keys.
 */
#include "protocol.h"

#include "selector.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {
    [PROTO_HELLO] = "hello",     [PROTO_STATUS] = "status", [PROTO_EVENT] = "event",
    [PROTO_ACK] = "ack",         [PROTO_NACK] = "nack",     [PROTO_START] = "start",
    [PROTO_STOP] = "stop",       [PROTO_CONFIG] = "config", [PROTO_LEASE] = "lease",
    [PROTO_UNKNOWN] = "unknown",
};

static const char *const state_names[] = {
    [PROTO_SESSION_RUNNING] = "running",
    [PROTO_SESSION_EXPIRED] = "expired",
    [PROTO_SESSION_STOPPED] = "stopped",
};

static const char *const event_names[] = {
    [PROTO_EVENT_QUOTA_EXHAUSTED] = "quota_exhausted",
    [PROTO_EVENT_LEASE_EXPIRED] = "lease_expired",
    [PROTO_EVENT_TARGET_ATTACHED] = "target_attached",
    [PROTO_EVENT_TARGET_DETACHED] = "target_detached",
    [PROTO_EVENT_ERROR] = "error",
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *proto_type_name(enum proto_type type)
{
    return (unsigned)type < COUNT(type_names) ? type_names[type] : "unknown";
}

const char *proto_session_state_name(enum proto_session_state state)
{
    return (unsigned)state < COUNT(state_names) ? state_names[state] : "unknown";
}

const char *proto_event_kind_name(enum proto_event_kind kind)
{
    return (unsigned)kind < COUNT(event_names) ? event_names[kind] : "unknown";
}

static int lookup_name(const char *const *names, size_t count, const char *s)
{
    for (size_t i = 0; i < count; i++)
        if (names[i] && strcmp(names[i], s) == 0) return (int)i;
    return -1;
}

/* ---- errors ---- */

/* Cuts a UTF-8 sequence that snprintf truncation left incomplete at the end of s, so the text
 * stays valid for json_string(). */
static void trim_utf8(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xc0) == 0x80 && n - i < 3)
        i--;
    if (i == 0) return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if ((i - 1) + want > n) s[i - 1] = '\0';
}

static int fail(struct proto_nack *nack, const char *path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct proto_nack *nack, const char *path, const char *key, const char *fmt, ...)
{
    snprintf(nack->field, sizeof nack->field, "%s%s%s", path, *path && *key ? "." : "", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nack->error, sizeof nack->error, fmt, ap);
    va_end(ap);
    trim_utf8(nack->field);
    trim_utf8(nack->error);
    return -1;
}

/* "a.b: why" (a cp_err message of selector_parse) -> field "a.b", error "why". */
static int fail_from_err(struct proto_nack *nack, const struct cp_err *err)
{
    const char *sep = strstr(err->msg, ": ");
    if (!sep) return fail(nack, "", "", "%s", err->msg);
    snprintf(nack->field, sizeof nack->field, "%.*s", (int)(sep - err->msg), err->msg);
    snprintf(nack->error, sizeof nack->error, "%s", sep + 2);
    trim_utf8(nack->field);
    trim_utf8(nack->error);
    return -1;
}

static void nack_to_err(const struct proto_nack *nack, struct cp_err *err, enum cp_err_code code)
{
    if (nack->field[0])
        cp_err_set(err, code, "%s: %s", nack->field, nack->error);
    else
        cp_err_set(err, code, "%s", nack->error);
}

/* ---- value rules ---- */

static bool is_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

static bool is_label_key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.';
}

bool proto_id_valid(const char *s, size_t len, size_t max_len)
{
    if (!s || len == 0 || len > max_len) return false;
    for (size_t i = 0; i < len; i++)
        if (!is_id_char((unsigned char)s[i])) return false;
    return true;
}

static bool has_control_char(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return true;
        /* C1 controls U+0080..U+009F are encoded C2 80..C2 9F */
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

bool proto_name_valid(const char *s, size_t len, size_t max_len)
{
    return s && len >= 1 && len <= max_len && !has_control_char(s, len);
}

static bool label_key_valid(const char *s, size_t len)
{
    if (len == 0 || len > PROTO_LABEL_KEY_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if (!is_label_key_char((unsigned char)s[i])) return false;
    return true;
}

/* ---- typed getters: one key of one object ---- */

static int get_int(const json_t *obj, const char *path, const char *key, bool required, int64_t min,
                   int64_t max, int64_t *out, bool *present, struct proto_nack *nack)
{
    const json_t *v = json_object_get(obj, key);
    if (present) *present = v != NULL;
    if (!v && !required) return 0;
    if (!v || !json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        if (max == INT64_MAX)
            return fail(nack, path, key, "expected an integer >= %lld", (long long)min);
        return fail(nack, path, key, "expected an integer from %lld to %lld", (long long)min,
                    (long long)max);
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_small_int(const json_t *obj, const char *path, const char *key, bool required,
                         int max, int *out, bool *present, struct proto_nack *nack)
{
    int64_t value = 0;
    if (get_int(obj, path, key, required, 1, max, &value, present, nack) < 0) return -1;
    if (!present || *present) *out = (int)value;
    return 0;
}

enum string_rule { RULE_ID, RULE_NAME, RULE_TEXT };

/* Copies a string key into out[max_len + 1]. RULE_ID: [A-Za-z0-9._:-] 1..max; RULE_NAME: no
 * control characters, 1..max; RULE_TEXT: 0..max bytes of any text. */
static int get_string(const json_t *obj, const char *path, const char *key, bool required,
                      enum string_rule rule, size_t max_len, char *out, struct proto_nack *nack)
{
    const json_t *v = json_object_get(obj, key);
    if (!v && !required) return 0;
    const char *s = json_string_value(v);
    size_t len = s ? json_string_length(v) : 0;
    bool ok = s && !memchr(s, '\0', len);
    if (ok && rule == RULE_ID) ok = proto_id_valid(s, len, max_len);
    if (ok && rule == RULE_NAME) ok = proto_name_valid(s, len, max_len);
    if (ok && rule == RULE_TEXT) ok = len <= max_len;
    if (!ok) {
        if (rule == RULE_ID)
            return fail(nack, path, key, "expected a string of 1 to %zu bytes of [A-Za-z0-9._:-]",
                        max_len);
        if (rule == RULE_NAME)
            return fail(nack, path, key,
                        "expected a string of 1 to %zu bytes without control characters", max_len);
        return fail(nack, path, key, "expected a string of at most %zu bytes", max_len);
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

/* Optional array key of at most `max` items; absent -> *out NULL. */
static int get_array(const json_t *obj, const char *path, const char *key, size_t max,
                     const char *what, json_t **out, struct proto_nack *nack)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v) return 0;
    if (!json_is_array(v) || json_array_size(v) > max)
        return fail(nack, path, key, "expected an array of at most %zu %s", max, what);
    *out = v;
    return 0;
}

static int get_object(const json_t *obj, const char *path, const char *key, bool required,
                      json_t **out, struct proto_nack *nack)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v && !required) return 0;
    if (!json_is_object(v)) return fail(nack, path, key, "expected an object");
    *out = v;
    return 0;
}

/* ---- compound rules ---- */

int proto_labels_check(const json_t *labels, struct proto_nack *nack)
{
    if (!json_is_object(labels) || json_object_size(labels) > PROTO_LABELS_MAX)
        return fail(nack, "", "labels", "expected an object of at most %d string values",
                    PROTO_LABELS_MAX);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)labels, key, value)
    {
        if (!label_key_valid(key, strlen(key)))
            return fail(nack, "", "labels", "expected keys of 1 to %d bytes of [A-Za-z0-9_.]",
                        PROTO_LABEL_KEY_MAX);
        const char *s = json_string_value(value);
        if (!s || json_string_length(value) > PROTO_LABEL_VALUE_MAX ||
            memchr(s, '\0', json_string_length(value)))
            return fail(nack, "labels", key, "expected a string of at most %d bytes",
                        PROTO_LABEL_VALUE_MAX);
    }
    return 0;
}

static int selector_field_matches(const char *parsed, const char *expected, const char *key,
                                  struct proto_nack *nack)
{
    if (parsed && strcmp(parsed, expected) == 0) return 0;
    return fail(nack, "selector", key, "expected the command's %s", key);
}

int proto_selector_check(const json_t *selector, const char *project, const char *environment,
                         struct proto_nack *nack)
{
    if (!json_is_object(selector) || json_object_size(selector) > PROTO_SELECTOR_KEYS_MAX)
        return fail(nack, "", "selector", "expected an object of at most %d keys",
                    PROTO_SELECTOR_KEYS_MAX);
    struct selector sel = {0};
    struct cp_err err = {0};
    if (selector_parse(selector, "selector", &sel, &err) < 0) return fail_from_err(nack, &err);
    int rc = selector_field_matches(sel.project, project, "project", nack);
    if (rc == 0) rc = selector_field_matches(sel.environment, environment, "environment", nack);
    selector_free(&sel);
    return rc;
}

static int check_target(const json_t *t, const char *path, struct proto_nack *nack)
{
    static const char *const optional_keys[] = {"container_id", "pod_uid", "project", "environment",
                                                "python"};
    char scratch[PROTO_TARGET_STRING_MAX + 1];
    int64_t pid;
    if (!json_is_object(t)) return fail(nack, path, "", "expected a TARGET object");
    if (get_int(t, path, "pid", true, 1, INT32_MAX, &pid, NULL, nack) < 0) return -1;
    if (get_string(t, path, "application", true, RULE_TEXT, PROTO_TARGET_STRING_MAX, scratch,
                   nack) < 0)
        return -1;
    for (size_t i = 0; i < COUNT(optional_keys); i++)
        if (get_string(t, path, optional_keys[i], false, RULE_TEXT, PROTO_TARGET_STRING_MAX,
                       scratch, nack) < 0)
            return -1;
    return 0;
}

static int get_targets(const json_t *obj, json_t **out, struct proto_nack *nack)
{
    json_t *targets;
    if (get_array(obj, "", "targets", PROTO_TARGETS_MAX, "TARGET objects", &targets, nack) < 0)
        return -1;
    size_t i;
    json_t *t;
    json_array_foreach(targets, i, t)
    {
        char path[48];
        snprintf(path, sizeof path, "targets[%zu]", i);
        if (check_target(t, path, nack) < 0) return -1;
    }
    *out = targets ? json_incref(targets) : json_array();
    if (!*out) return fail(nack, "", "", "out of memory");
    return 0;
}

/* ---- frames ---- */

/* Bounds, decodes and checks the envelope ("type", "v"); returns the object or NULL. */
static json_t *parse_frame(const char *text, size_t len, enum proto_type *type,
                           struct proto_nack *nack)
{
    *type = PROTO_UNKNOWN;
    if (len > PROTO_FRAME_MAX) {
        fail(nack, "", "", "frame of %zu bytes is larger than %d bytes", len, PROTO_FRAME_MAX);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text ? text : "", text ? len : 0,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        fail(nack, "", "", "invalid JSON at byte %d: %s", jerr.position, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        fail(nack, "", "", "expected a JSON object");
        json_decref(root);
        return NULL;
    }
    const char *name = json_string_value(json_object_get(root, "type"));
    int found = name ? lookup_name(type_names, PROTO_UNKNOWN, name) : -1;
    if (found >= 0) *type = (enum proto_type)found;
    return root;
}

static int check_version(const json_t *root, struct proto_nack *nack)
{
    const json_t *v = json_object_get(root, "v");
    if (json_is_integer(v) && json_integer_value(v) == PROTO_VERSION) return 0;
    return fail(nack, "", "v", "expected %d (the protocol versions spoken: %d)", PROTO_VERSION,
                PROTO_VERSION);
}

/* ---- console -> agent ---- */

static int parse_quota(const json_t *root, struct proto_command *c, struct proto_nack *nack)
{
    json_t *q;
    if (get_object(root, "", "quota", true, &q, nack) < 0) return -1;
    const char *plan = json_string_value(json_object_get(q, "plan"));
    if (!plan || (strcmp(plan, "free") != 0 && strcmp(plan, "addon") != 0))
        return fail(nack, "quota", "plan", "expected \"free\" or \"addon\"");
    snprintf(c->quota.plan, sizeof c->quota.plan, "%s", plan);
    if (get_int(q, "quota", "lease_until", true, 0, PROTO_TIME_MAX, &c->quota.lease_until, NULL,
                nack) < 0)
        return -1;
    return get_int(q, "quota", "budget_left", true, 0, PROTO_TIME_MAX, &c->quota.budget_left, NULL,
                   nack);
}

static int take_labels(const json_t *root, struct proto_command *c, struct proto_nack *nack)
{
    json_t *labels = json_object_get(root, "labels");
    c->has_labels = labels != NULL;
    if (!labels) return 0;
    if (proto_labels_check(labels, nack) < 0) return -1;
    c->labels = json_incref(labels);
    return 0;
}

static int parse_start(const json_t *root, struct proto_command *c, struct proto_nack *nack)
{
    if (get_string(root, "", "project", true, RULE_NAME, PROTO_NAME_MAX, c->project, nack) < 0 ||
        get_string(root, "", "environment", true, RULE_NAME, PROTO_NAME_MAX, c->environment, nack) <
            0)
        return -1;
    json_t *selector = json_object_get(root, "selector");
    if (proto_selector_check(selector, c->project, c->environment, nack) < 0) return -1;
    if (get_small_int(root, "", "period", true, PROTO_PERIOD_MAX, &c->period, NULL, nack) < 0 ||
        get_small_int(root, "", "upload_timeout", true, PROTO_UPLOAD_TIMEOUT_MAX,
                      &c->upload_timeout, NULL, nack) < 0 ||
        take_labels(root, c, nack) < 0 || parse_quota(root, c, nack) < 0)
        return -1;
    c->has_period = c->has_upload_timeout = true;
    if (!c->labels && !(c->labels = json_object())) return fail(nack, "", "", "out of memory");
    c->has_labels = true;
    c->selector = json_incref(selector);
    return 0;
}

static int parse_stop(const json_t *root, struct proto_command *c, struct proto_nack *nack)
{
    const json_t *reason = json_object_get(root, "reason");
    if (reason && (!json_is_string(reason) ||
                   !proto_name_valid(json_string_value(reason), json_string_length(reason),
                                     PROTO_REASON_MAX)))
        return fail(nack, "", "reason",
                    "expected a string of 1 to %d bytes without control characters",
                    PROTO_REASON_MAX);
    if (reason) snprintf(c->reason, sizeof c->reason, "%s", json_string_value(reason));
    return 0;
}

static int parse_config(const json_t *root, struct proto_command *c, struct proto_nack *nack)
{
    if (get_small_int(root, "", "period", false, PROTO_PERIOD_MAX, &c->period, &c->has_period,
                      nack) < 0 ||
        get_small_int(root, "", "upload_timeout", false, PROTO_UPLOAD_TIMEOUT_MAX,
                      &c->upload_timeout, &c->has_upload_timeout, nack) < 0 ||
        take_labels(root, c, nack) < 0)
        return -1;
    if (!c->has_period && !c->has_upload_timeout && !c->has_labels)
        return fail(nack, "", "", "expected at least one of period, upload_timeout, labels");
    return 0;
}

static int parse_lease(const json_t *root, struct proto_command *c, struct proto_nack *nack)
{
    if (get_int(root, "", "lease_until", true, 0, PROTO_TIME_MAX, &c->quota.lease_until, NULL,
                nack) < 0)
        return -1;
    return get_int(root, "", "budget_left", true, 0, PROTO_TIME_MAX, &c->quota.budget_left, NULL,
                   nack);
}

static int parse_command_body(const json_t *root, struct proto_command *c, struct proto_nack *nack)
{
    if (c->type < PROTO_START || c->type > PROTO_LEASE)
        return fail(nack, "", "type", "expected one of start, stop, config, lease");
    if (check_version(root, nack) < 0 ||
        get_string(root, "", "id", true, RULE_ID, PROTO_ID_MAX, c->id, nack) < 0 ||
        get_string(root, "", "session_id", true, RULE_ID, PROTO_ID_MAX, c->session_id, nack) < 0)
        return -1;
    switch (c->type) {
    case PROTO_START:
        return parse_start(root, c, nack);
    case PROTO_STOP:
        return parse_stop(root, c, nack);
    case PROTO_CONFIG:
        return parse_config(root, c, nack);
    default:
        return parse_lease(root, c, nack);
    }
}

int proto_parse_command(const char *text, size_t len, struct proto_command *out,
                        struct proto_nack *nack)
{
    memset(nack, 0, sizeof *nack);
    memset(out, 0, sizeof *out);
    struct proto_command c = {0};
    json_t *root = parse_frame(text, len, &c.type, nack);
    out->type = c.type;
    if (!root) return -1;
    const json_t *id = json_object_get(root, "id");
    if (json_is_string(id) &&
        proto_id_valid(json_string_value(id), json_string_length(id), PROTO_ID_MAX))
        snprintf(nack->id, sizeof nack->id, "%s", json_string_value(id));
    int rc = parse_command_body(root, &c, nack);
    json_decref(root);
    if (rc < 0) {
        proto_command_free(&c);
        return -1;
    }
    *out = c;
    return 0;
}

void proto_command_free(struct proto_command *cmd)
{
    if (!cmd) return;
    json_decref(cmd->selector);
    json_decref(cmd->labels);
    cmd->selector = cmd->labels = NULL;
}

/* ---- agent -> console ---- */

static int parse_capabilities(const json_t *root, struct proto_hello *h, struct proto_nack *nack)
{
    json_t *caps;
    if (get_array(root, "", "capabilities", PROTO_CAPABILITIES_MAX, "strings", &caps, nack) < 0)
        return -1;
    size_t i;
    json_t *cap;
    json_array_foreach(caps, i, cap)
    {
        if (!json_is_string(cap) ||
            !proto_id_valid(json_string_value(cap), json_string_length(cap), 32)) {
            char path[48];
            snprintf(path, sizeof path, "capabilities[%zu]", i);
            return fail(nack, path, "", "expected a string of 1 to 32 bytes of [A-Za-z0-9._:-]");
        }
    }
    h->capabilities = caps ? json_incref(caps) : json_array();
    return h->capabilities ? 0 : fail(nack, "", "", "out of memory");
}

/* Validates the "sessions" array and allocates its items (item_size each); *out NULL if empty. */
static int get_session_items(const json_t *root, size_t item_size, void **out, size_t *count,
                             json_t **array, struct proto_nack *nack)
{
    if (get_array(root, "", "sessions", PROTO_SESSIONS_MAX, "session objects", array, nack) < 0)
        return -1;
    *out = NULL;
    *count = *array ? json_array_size(*array) : 0;
    if (*count == 0) return 0;
    if (!(*out = calloc(*count, item_size))) return fail(nack, "", "", "out of memory");
    return 0;
}

static int parse_hello_sessions(const json_t *root, struct proto_hello *h, struct proto_nack *nack)
{
    json_t *array;
    void *items;
    if (get_session_items(root, sizeof *h->sessions, &items, &h->session_count, &array, nack) < 0)
        return -1;
    h->sessions = items;
    for (size_t i = 0; i < h->session_count; i++) {
        const json_t *s = json_array_get(array, i);
        char path[48];
        snprintf(path, sizeof path, "sessions[%zu]", i);
        if (!json_is_object(s)) return fail(nack, path, "", "expected an object");
        struct proto_session_ref *r = &h->sessions[i];
        if (get_string(s, path, "session_id", true, RULE_ID, PROTO_ID_MAX, r->session_id, nack) <
                0 ||
            get_int(s, path, "lease_until", true, 0, PROTO_TIME_MAX, &r->lease_until, NULL, nack) <
                0)
            return -1;
    }
    return 0;
}

static int parse_hello(const json_t *root, struct proto_hello *h, struct proto_nack *nack)
{
    if (get_string(root, "", "agent_id", true, RULE_ID, PROTO_AGENT_ID_MAX, h->agent_id, nack) <
            0 ||
        get_string(root, "", "node", true, RULE_NAME, PROTO_NODE_MAX, h->node, nack) < 0 ||
        get_string(root, "", "agent_version", true, RULE_NAME, PROTO_VERSION_STR_MAX,
                   h->agent_version, nack) < 0)
        return -1;
    if (parse_capabilities(root, h, nack) < 0 || get_targets(root, &h->targets, nack) < 0)
        return -1;
    return parse_hello_sessions(root, h, nack);
}

static int parse_session_status(const json_t *s, const char *path, struct proto_session_status *r,
                                struct proto_nack *nack)
{
    if (!json_is_object(s)) return fail(nack, path, "", "expected an object");
    if (get_string(s, path, "session_id", true, RULE_ID, PROTO_ID_MAX, r->session_id, nack) < 0)
        return -1;
    const char *state = json_string_value(json_object_get(s, "state"));
    int found = state ? lookup_name(state_names, COUNT(state_names), state) : -1;
    if (found < 0)
        return fail(nack, path, "state", "expected \"running\", \"expired\" or \"stopped\"");
    r->state = (enum proto_session_state)found;
    if (get_int(s, path, "lease_until", true, 0, PROTO_TIME_MAX, &r->lease_until, NULL, nack) < 0 ||
        get_int(s, path, "profiling_s", false, 0, PROTO_TIME_MAX, &r->profiling_s, NULL, nack) <
            0 ||
        get_int(s, path, "targets", false, 0, PROTO_TARGETS_MAX, &r->targets, NULL, nack) < 0)
        return -1;
    return 0;
}

static int parse_uploads(const json_t *root, struct proto_uploads *u, struct proto_nack *nack)
{
    json_t *obj;
    if (get_object(root, "", "uploads", false, &obj, nack) < 0) return -1;
    if (!obj) return 0;
    if (get_int(obj, "uploads", "sent", false, 0, INT64_MAX, &u->sent, NULL, nack) < 0 ||
        get_int(obj, "uploads", "failed", false, 0, INT64_MAX, &u->failed, NULL, nack) < 0 ||
        get_int(obj, "uploads", "spooled", false, 0, INT64_MAX, &u->spooled, NULL, nack) < 0 ||
        get_int(obj, "uploads", "evicted", false, 0, INT64_MAX, &u->evicted, NULL, nack) < 0)
        return -1;
    return 0;
}

static int parse_status(const json_t *root, struct proto_status *st, struct proto_nack *nack)
{
    if (get_targets(root, &st->targets, nack) < 0 ||
        get_int(root, "", "samples", false, 0, INT64_MAX, &st->samples, NULL, nack) < 0 ||
        get_int(root, "", "sample_errors", false, 0, INT64_MAX, &st->sample_errors, NULL, nack) <
            0 ||
        parse_uploads(root, &st->uploads, nack) < 0)
        return -1;
    json_t *array;
    void *items;
    if (get_session_items(root, sizeof *st->sessions, &items, &st->session_count, &array, nack) < 0)
        return -1;
    st->sessions = items;
    for (size_t i = 0; i < st->session_count; i++) {
        char path[48];
        snprintf(path, sizeof path, "sessions[%zu]", i);
        if (parse_session_status(json_array_get(array, i), path, &st->sessions[i], nack) < 0)
            return -1;
    }
    return 0;
}

static int parse_event(const json_t *root, struct proto_event *ev, struct proto_nack *nack)
{
    const char *kind = json_string_value(json_object_get(root, "kind"));
    int found = kind ? lookup_name(event_names, COUNT(event_names), kind) : -1;
    if (found < 0)
        return fail(nack, "", "kind",
                    "expected one of quota_exhausted, lease_expired, target_attached, "
                    "target_detached, error");
    ev->kind = (enum proto_event_kind)found;
    if (get_string(root, "", "session_id", false, RULE_ID, PROTO_ID_MAX, ev->session_id, nack) <
            0 ||
        get_string(root, "", "message", false, RULE_TEXT, PROTO_MESSAGE_MAX, ev->message, nack) < 0)
        return -1;
    json_t *target = json_object_get(root, "target");
    if (target && check_target(target, "target", nack) < 0) return -1;
    ev->target = json_incref(target);
    return 0;
}

static int parse_nack(const json_t *root, struct proto_nack *out, struct proto_nack *nack)
{
    const json_t *id = json_object_get(root, "id");
    bool empty_id = json_is_string(id) && json_string_length(id) == 0;
    if (!empty_id && get_string(root, "", "id", true, RULE_ID, PROTO_ID_MAX, out->id, nack) < 0)
        return -1;
    if (get_string(root, "", "field", true, RULE_TEXT, PROTO_FIELD_MAX, out->field, nack) < 0 ||
        get_string(root, "", "error", true, RULE_TEXT, PROTO_MESSAGE_MAX, out->error, nack) < 0)
        return -1;
    return 0;
}

static int parse_agent_body(const json_t *root, struct proto_agent_msg *m, struct proto_nack *nack)
{
    switch (m->type) {
    case PROTO_HELLO:
        return parse_hello(root, &m->hello, nack);
    case PROTO_STATUS:
        return parse_status(root, &m->status, nack);
    case PROTO_EVENT:
        return parse_event(root, &m->event, nack);
    case PROTO_ACK:
        return get_string(root, "", "id", true, RULE_ID, PROTO_ID_MAX, m->ack_id, nack);
    case PROTO_NACK:
        return parse_nack(root, &m->nack, nack);
    default:
        return fail(nack, "", "type", "expected one of hello, status, event, ack, nack");
    }
}

int proto_parse_agent_message(const char *text, size_t len, struct proto_agent_msg *out,
                              struct cp_err *err)
{
    struct proto_nack nack = {0};
    memset(out, 0, sizeof *out);
    struct proto_agent_msg m = {0};
    json_t *root = parse_frame(text, len, &m.type, &nack);
    out->type = m.type;
    if (!root) {
        nack_to_err(&nack, err, CP_ERR_INVALID);
        return -1;
    }
    int rc = 0;
    enum cp_err_code code = CP_ERR_INVALID;
    if (m.type == PROTO_UNKNOWN || m.type >= PROTO_START) {
        rc = fail(&nack, "", "type", "expected one of hello, status, event, ack, nack");
    } else if (check_version(root, &nack) < 0) {
        rc = -1;
        code = CP_ERR_UNSUPPORTED;
    } else {
        rc = parse_agent_body(root, &m, &nack);
    }
    json_decref(root);
    if (rc < 0) {
        proto_agent_msg_free(&m);
        nack_to_err(&nack, err, code);
        return -1;
    }
    *out = m;
    return 0;
}

void proto_agent_msg_free(struct proto_agent_msg *msg)
{
    if (!msg) return;
    json_decref(msg->hello.capabilities);
    json_decref(msg->hello.targets);
    free(msg->hello.sessions);
    json_decref(msg->status.targets);
    free(msg->status.sessions);
    json_decref(msg->event.target);
    msg->hello.capabilities = msg->hello.targets = msg->status.targets = msg->event.target = NULL;
    msg->hello.sessions = NULL;
    msg->status.sessions = NULL;
    msg->hello.session_count = msg->status.session_count = 0;
}

/* ---- builders ---- */

/* Starts a message object {"type": ..., "v": 1}. */
static json_t *envelope(enum proto_type type)
{
    json_t *obj = json_object();
    if (!obj) return NULL;
    if (json_object_set_new(obj, "type", json_string(type_names[type])) < 0 ||
        json_object_set_new(obj, "v", json_integer(PROTO_VERSION)) < 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* Each setter records a failure in *bad instead of returning it, so a builder is a flat list of
 * sets followed by one check. */
static void set_new(json_t *obj, const char *key, json_t *value, bool *bad)
{
    if (!value || json_object_set_new(obj, key, value) < 0) *bad = true;
}

static void set_str(json_t *obj, const char *key, const char *s, bool *bad)
{
    set_new(obj, key, json_string(s ? s : ""), bad);
}

static void set_int(json_t *obj, const char *key, int64_t value, bool *bad)
{
    set_new(obj, key, json_integer(value), bad);
}

static void set_copy(json_t *obj, const char *key, const json_t *value, bool *bad)
{
    set_new(obj, key, value ? json_deep_copy(value) : json_array(), bad);
}

/* Dumps obj (consumed) after checking it with the parser of its direction. */
static char *finish(json_t *obj, bool bad, bool command, struct cp_err *err)
{
    char *text = (obj && !bad) ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) {
        cp_err_set(err, CP_ERR_NOMEM, "building a control message: out of memory or bad text");
        return NULL;
    }
    int rc;
    if (command) {
        struct proto_command cmd;
        struct proto_nack nack;
        rc = proto_parse_command(text, strlen(text), &cmd, &nack);
        if (rc < 0) nack_to_err(&nack, err, CP_ERR_INVALID);
        proto_command_free(&cmd);
    } else {
        struct proto_agent_msg msg;
        rc = proto_parse_agent_message(text, strlen(text), &msg, err);
        proto_agent_msg_free(&msg);
    }
    if (rc < 0) {
        cp_err_prefix(err, "building a control message");
        free(text);
        return NULL;
    }
    return text;
}

static json_t *command_envelope(const struct proto_command *cmd, enum proto_type type, bool *bad)
{
    json_t *obj = envelope(type);
    if (!obj) return NULL;
    set_str(obj, "id", cmd->id, bad);
    set_str(obj, "session_id", cmd->session_id, bad);
    return obj;
}

static void set_labels(json_t *obj, const struct proto_command *cmd, bool *bad)
{
    set_new(obj, "labels", cmd->labels ? json_deep_copy(cmd->labels) : json_object(), bad);
}

char *proto_build_start(const struct proto_command *cmd, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = command_envelope(cmd, PROTO_START, &bad);
    if (obj) {
        set_str(obj, "project", cmd->project, &bad);
        set_str(obj, "environment", cmd->environment, &bad);
        set_new(obj, "selector", cmd->selector ? json_deep_copy(cmd->selector) : json_object(),
                &bad);
        set_int(obj, "period", cmd->period, &bad);
        set_int(obj, "upload_timeout", cmd->upload_timeout, &bad);
        set_labels(obj, cmd, &bad);
        json_t *quota = json_object();
        if (quota) {
            set_str(quota, "plan", cmd->quota.plan, &bad);
            set_int(quota, "lease_until", cmd->quota.lease_until, &bad);
            set_int(quota, "budget_left", cmd->quota.budget_left, &bad);
        }
        set_new(obj, "quota", quota, &bad);
    }
    return finish(obj, bad, true, err);
}

char *proto_build_stop(const struct proto_command *cmd, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = command_envelope(cmd, PROTO_STOP, &bad);
    if (obj && cmd->reason[0]) set_str(obj, "reason", cmd->reason, &bad);
    return finish(obj, bad, true, err);
}

char *proto_build_config(const struct proto_command *cmd, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = command_envelope(cmd, PROTO_CONFIG, &bad);
    if (obj) {
        if (cmd->has_period) set_int(obj, "period", cmd->period, &bad);
        if (cmd->has_upload_timeout) set_int(obj, "upload_timeout", cmd->upload_timeout, &bad);
        if (cmd->has_labels) set_labels(obj, cmd, &bad);
    }
    return finish(obj, bad, true, err);
}

char *proto_build_lease(const struct proto_command *cmd, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = command_envelope(cmd, PROTO_LEASE, &bad);
    if (obj) {
        set_int(obj, "lease_until", cmd->quota.lease_until, &bad);
        set_int(obj, "budget_left", cmd->quota.budget_left, &bad);
    }
    return finish(obj, bad, true, err);
}

char *proto_build_command(const struct proto_command *cmd, struct cp_err *err)
{
    switch (cmd->type) {
    case PROTO_START:
        return proto_build_start(cmd, err);
    case PROTO_STOP:
        return proto_build_stop(cmd, err);
    case PROTO_CONFIG:
        return proto_build_config(cmd, err);
    case PROTO_LEASE:
        return proto_build_lease(cmd, err);
    default:
        cp_err_set(err, CP_ERR_INVALID, "building a command: %s is not a command",
                   proto_type_name(cmd->type));
        return NULL;
    }
}

json_t *proto_target_json(const struct proto_target *t, struct cp_err *err)
{
    const char *keys[] = {"container_id", "pod_uid", "project", "environment", "python"};
    const char *values[] = {t->container_id, t->pod_uid, t->project, t->environment, t->python};
    bool bad = false;
    json_t *obj = json_object();
    if (obj) {
        set_int(obj, "pid", t->pid, &bad);
        for (size_t i = 0; i < COUNT(keys); i++)
            if (values[i] && values[i][0]) set_str(obj, keys[i], values[i], &bad);
        set_str(obj, "application", t->application, &bad);
    }
    struct proto_nack nack = {0};
    if (!obj || bad) {
        json_decref(obj);
        cp_err_set(err, CP_ERR_NOMEM, "building a target: out of memory or bad text");
        return NULL;
    }
    if (check_target(obj, "target", &nack) < 0) {
        json_decref(obj);
        nack_to_err(&nack, err, CP_ERR_INVALID);
        return NULL;
    }
    return obj;
}

char *proto_build_hello(const struct proto_hello *h, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = envelope(PROTO_HELLO);
    json_t *sessions = json_array();
    if (obj) {
        set_str(obj, "agent_id", h->agent_id, &bad);
        set_str(obj, "node", h->node, &bad);
        set_str(obj, "agent_version", h->agent_version, &bad);
        set_copy(obj, "capabilities", h->capabilities, &bad);
        set_copy(obj, "targets", h->targets, &bad);
        for (size_t i = 0; sessions && i < h->session_count; i++) {
            json_t *s = json_object();
            set_str(s, "session_id", h->sessions[i].session_id, &bad);
            set_int(s, "lease_until", h->sessions[i].lease_until, &bad);
            if (!s || json_array_append_new(sessions, s) < 0) bad = true;
        }
    }
    if (obj)
        set_new(obj, "sessions", sessions, &bad);
    else
        json_decref(sessions);
    return finish(obj, bad, false, err);
}

static json_t *session_status_json(const struct proto_session_status *s, bool *bad)
{
    json_t *obj = json_object();
    if (!obj) return NULL;
    set_str(obj, "session_id", s->session_id, bad);
    set_str(obj, "state", proto_session_state_name(s->state), bad);
    set_int(obj, "lease_until", s->lease_until, bad);
    set_int(obj, "profiling_s", s->profiling_s, bad);
    set_int(obj, "targets", s->targets, bad);
    return obj;
}

char *proto_build_status(const struct proto_status *st, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = envelope(PROTO_STATUS);
    json_t *uploads = json_object();
    json_t *sessions = json_array();
    if (obj && uploads && sessions) {
        set_copy(obj, "targets", st->targets, &bad);
        set_int(obj, "samples", st->samples, &bad);
        set_int(obj, "sample_errors", st->sample_errors, &bad);
        set_int(uploads, "sent", st->uploads.sent, &bad);
        set_int(uploads, "failed", st->uploads.failed, &bad);
        set_int(uploads, "spooled", st->uploads.spooled, &bad);
        set_int(uploads, "evicted", st->uploads.evicted, &bad);
        for (size_t i = 0; i < st->session_count; i++) {
            json_t *s = session_status_json(&st->sessions[i], &bad);
            if (!s || json_array_append_new(sessions, s) < 0) bad = true;
        }
    }
    if (obj) {
        set_new(obj, "uploads", uploads, &bad);
        set_new(obj, "sessions", sessions, &bad);
    } else {
        json_decref(uploads);
        json_decref(sessions);
    }
    return finish(obj, bad, false, err);
}

char *proto_build_event(enum proto_event_kind kind, const char *session_id, const char *message,
                        const json_t *target, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = envelope(PROTO_EVENT);
    if (obj) {
        set_str(obj, "kind", proto_event_kind_name(kind), &bad);
        if (session_id && session_id[0]) set_str(obj, "session_id", session_id, &bad);
        if (message && message[0]) set_str(obj, "message", message, &bad);
        if (target) set_new(obj, "target", json_deep_copy(target), &bad);
    }
    return finish(obj, bad, false, err);
}

char *proto_build_ack(const char *id, struct cp_err *err)
{
    bool bad = false;
    json_t *obj = envelope(PROTO_ACK);
    if (obj) set_str(obj, "id", id, &bad);
    return finish(obj, bad, false, err);
}

char *proto_build_nack(const char *id, const char *field, const char *error, struct cp_err *err)
{
    struct proto_nack n = {0}; /* bounds field and error (cut at a character boundary) */
    snprintf(n.field, sizeof n.field, "%s", field ? field : "");
    snprintf(n.error, sizeof n.error, "%s", error ? error : "");
    trim_utf8(n.field);
    trim_utf8(n.error);
    bool bad = false;
    json_t *obj = envelope(PROTO_NACK);
    if (obj) {
        set_str(obj, "id", id, &bad);
        set_str(obj, "field", n.field, &bad);
        set_str(obj, "error", n.error, &bad);
    }
    return finish(obj, bad, false, err);
}
