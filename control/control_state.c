/* control_state: the agent's session table, its lease clock and its state file.
 *
 * The table is a fixed array (64 sessions), so no command can make it grow without bound and a
 * session's address is stable between commands. Sampling time is accounted lazily: each session
 * remembers up to when its profiling_s is counted (accounted_at), and every operation that
 * touches a session first counts the time up to min(now, lease_until) -- so time after a lease
 * ended, or while the agent was down (control_state_resume), is never counted.
 * A lease is "capped by the budget" when lease_until - granted_at >= budget_left, which is what
 * turns an expiry into quota_exhausted rather than lease_expired; granted_at only moves when a
 * command actually changes the lease, so a resent command does not shift it.
 * The state file is the table as JSON; loading applies the same value rules as the protocol
 * (protocol.h checks) plus the bookkeeping fields, and rejects the whole file on any error:
 * resuming a half-understood session could sample without a valid lease.
 */
#include "control_state.h"

#include "fileio.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_FILE_VERSION 1

/* ---- table ---- */

static void session_clear(struct control_session *s)
{
    json_decref(s->selector);
    json_decref(s->labels);
    memset(s, 0, sizeof *s);
}

void control_state_free(struct control_state *state)
{
    if (!state) return;
    for (size_t i = 0; i < state->count && i < CONTROL_STATE_SESSIONS_MAX; i++)
        session_clear(&state->sessions[i]);
    state->count = 0;
}

struct control_session *control_state_find(struct control_state *state, const char *session_id)
{
    for (size_t i = 0; i < state->count; i++)
        if (strcmp(state->sessions[i].session_id, session_id) == 0) return &state->sessions[i];
    return NULL;
}

bool control_session_active(const struct control_session *s, int64_t now)
{
    return s->state == PROTO_SESSION_RUNNING && now < s->lease_until;
}

size_t control_state_active(const struct control_state *state, int64_t now,
                            const struct control_session **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < state->count && n < max; i++)
        if (control_session_active(&state->sessions[i], now)) out[n++] = &state->sessions[i];
    return n;
}

size_t control_state_session_refs(const struct control_state *state, struct proto_session_ref *out,
                                  size_t max)
{
    size_t n = 0;
    for (; n < state->count && n < max; n++) {
        memcpy(out[n].session_id, state->sessions[n].session_id, sizeof out[n].session_id);
        out[n].lease_until = state->sessions[n].lease_until;
    }
    return n;
}

void control_session_status(const struct control_session *s, struct proto_session_status *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->session_id, s->session_id, sizeof out->session_id);
    out->state = s->state;
    out->lease_until = s->lease_until;
    out->profiling_s = s->profiling_s;
}

/* Counts sampling time of a running session up to min(now, lease_until). */
static void account(struct control_session *s, int64_t now)
{
    if (s->state == PROTO_SESSION_RUNNING) {
        int64_t end = now < s->lease_until ? now : s->lease_until;
        if (end > s->accounted_at) s->profiling_s += end - s->accounted_at;
        if (s->profiling_s > PROTO_TIME_MAX) s->profiling_s = PROTO_TIME_MAX; /* stays loadable */
    }
    s->accounted_at = now;
}

void control_state_resume(struct control_state *state, int64_t now)
{
    for (size_t i = 0; i < state->count; i++)
        state->sessions[i].accounted_at = now;
}

size_t control_state_expire(struct control_state *state, int64_t now, control_expired_fn on_expired,
                            void *ctx)
{
    size_t expired = 0;
    for (size_t i = 0; i < state->count; i++) {
        struct control_session *s = &state->sessions[i];
        account(s, now);
        if (s->state != PROTO_SESSION_RUNNING || now < s->lease_until) continue;
        s->state = PROTO_SESSION_EXPIRED;
        expired++;
        bool quota_exhausted = s->lease_until - s->granted_at >= s->budget_left;
        if (on_expired) on_expired(s, quota_exhausted, ctx);
    }
    return expired;
}

/* ---- applying commands ---- */

static int refuse(struct proto_nack *nack, const char *field, const char *error)
{
    snprintf(nack->field, sizeof nack->field, "%s", field);
    snprintf(nack->error, sizeof nack->error, "%s", error);
    return -1;
}

/* A free slot, or the slot of the non-running session whose lease ended first; NULL if all run. */
static struct control_session *take_slot(struct control_state *state)
{
    if (state->count < CONTROL_STATE_SESSIONS_MAX) {
        struct control_session *s = &state->sessions[state->count++];
        memset(s, 0, sizeof *s);
        return s;
    }
    struct control_session *victim = NULL;
    for (size_t i = 0; i < state->count; i++) {
        struct control_session *s = &state->sessions[i];
        if (s->state != PROTO_SESSION_RUNNING && (!victim || s->lease_until < victim->lease_until))
            victim = s;
    }
    if (victim) session_clear(victim);
    return victim;
}

/* Replaces *slot with a copy of value when they differ; returns 1 changed, 0 same, -1 no memory. */
static int replace_json(json_t **slot, const json_t *value)
{
    if (*slot && json_equal(*slot, (json_t *)value)) return 0;
    json_t *copy = json_deep_copy(value);
    if (!copy) return -1;
    json_decref(*slot);
    *slot = copy;
    return 1;
}

static bool set_int(int *field, int value)
{
    bool differs = *field != value;
    *field = value;
    return differs;
}

static bool set_text(char *field, size_t size, const char *value)
{
    if (strcmp(field, value) == 0) return false;
    snprintf(field, size, "%s", value);
    return true;
}

/* New lease values; granted_at moves only when the lease really changes. A non-running session
 * runs again if the new lease is still open (stopped ones only when `revive_stopped`). */
static bool set_lease(struct control_session *s, int64_t lease_until, int64_t budget_left,
                      int64_t now, bool revive_stopped)
{
    bool changed = false;
    if (s->lease_until != lease_until || s->budget_left != budget_left) {
        s->lease_until = lease_until;
        s->budget_left = budget_left;
        s->granted_at = now;
        changed = true;
    }
    bool may_revive =
        s->state == PROTO_SESSION_EXPIRED || (s->state == PROTO_SESSION_STOPPED && revive_stopped);
    if (may_revive && now < lease_until) {
        s->state = PROTO_SESSION_RUNNING;
        s->accounted_at = now;
        changed = true;
    }
    return changed;
}

static int apply_settings(struct control_session *s, const struct proto_command *cmd, bool *changed,
                          struct proto_nack *nack)
{
    if (cmd->has_period) *changed |= set_int(&s->period, cmd->period);
    if (cmd->has_upload_timeout) *changed |= set_int(&s->upload_timeout, cmd->upload_timeout);
    if (cmd->has_labels && cmd->labels) {
        int rc = replace_json(&s->labels, cmd->labels);
        if (rc < 0) return refuse(nack, "labels", "out of memory");
        *changed |= rc > 0;
    }
    return 0;
}

static int apply_start(struct control_state *state, const struct proto_command *cmd, int64_t now,
                       bool *changed, struct proto_nack *nack)
{
    struct control_session *s = control_state_find(state, cmd->session_id);
    if (!s) {
        json_t *selector = json_deep_copy(cmd->selector), *labels = json_object();
        if (!selector || !labels || !(s = take_slot(state))) {
            json_decref(selector);
            json_decref(labels);
            if (!selector || !labels) return refuse(nack, "selector", "out of memory");
            return refuse(nack, "session_id", "the agent already runs its maximum of 64 sessions");
        }
        s->selector = selector;
        s->labels = labels;
        snprintf(s->session_id, sizeof s->session_id, "%s", cmd->session_id);
        s->state = now < cmd->quota.lease_until ? PROTO_SESSION_RUNNING : PROTO_SESSION_EXPIRED;
        s->started_at = s->granted_at = s->accounted_at = now;
        s->lease_until = cmd->quota.lease_until;
        s->budget_left = cmd->quota.budget_left;
        *changed = true;
    }
    account(s, now);
    *changed |= set_text(s->project, sizeof s->project, cmd->project);
    *changed |= set_text(s->environment, sizeof s->environment, cmd->environment);
    *changed |= set_text(s->plan, sizeof s->plan, cmd->quota.plan);
    *changed |= set_lease(s, cmd->quota.lease_until, cmd->quota.budget_left, now, true);
    int rc = replace_json(&s->selector, cmd->selector);
    if (rc < 0) return refuse(nack, "selector", "out of memory");
    *changed |= rc > 0;
    return apply_settings(s, cmd, changed, nack);
}

static int apply_stop(struct control_state *state, const struct proto_command *cmd, int64_t now,
                      bool *changed)
{
    struct control_session *s = control_state_find(state, cmd->session_id);
    if (!s || s->state == PROTO_SESSION_STOPPED) return 0;
    account(s, now);
    s->state = PROTO_SESSION_STOPPED;
    *changed = true;
    return 0;
}

static int apply_config_or_lease(struct control_state *state, const struct proto_command *cmd,
                                 int64_t now, bool *changed, struct proto_nack *nack)
{
    struct control_session *s = control_state_find(state, cmd->session_id);
    if (!s) return refuse(nack, "session_id", "unknown session");
    account(s, now);
    if (cmd->type == PROTO_CONFIG) return apply_settings(s, cmd, changed, nack);
    if (s->state == PROTO_SESSION_STOPPED)
        return refuse(nack, "session_id", "the session was stopped");
    *changed |= set_lease(s, cmd->quota.lease_until, cmd->quota.budget_left, now, false);
    return 0;
}

int control_state_apply(struct control_state *state, const struct proto_command *cmd, int64_t now,
                        bool *changed, struct proto_nack *nack)
{
    memset(nack, 0, sizeof *nack);
    snprintf(nack->id, sizeof nack->id, "%s", cmd->id);
    *changed = false;
    switch (cmd->type) {
    case PROTO_START:
        if (!cmd->selector) return refuse(nack, "selector", "expected an object");
        return apply_start(state, cmd, now, changed, nack);
    case PROTO_STOP:
        return apply_stop(state, cmd, now, changed);
    case PROTO_CONFIG:
    case PROTO_LEASE:
        return apply_config_or_lease(state, cmd, now, changed, nack);
    default:
        return refuse(nack, "type", "expected one of start, stop, config, lease");
    }
}

/* ---- text form ---- */

static json_t *session_json(const struct control_session *s)
{
    return json_pack(
        "{s:s, s:s, s:s, s:O, s:i, s:i, s:O, s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:I}", "session_id",
        s->session_id, "project", s->project, "environment", s->environment, "selector",
        s->selector, "period", s->period, "upload_timeout", s->upload_timeout, "labels", s->labels,
        "plan", s->plan, "lease_until", (json_int_t)s->lease_until, "budget_left",
        (json_int_t)s->budget_left, "granted_at", (json_int_t)s->granted_at, "started_at",
        (json_int_t)s->started_at, "accounted_at", (json_int_t)s->accounted_at, "state",
        proto_session_state_name(s->state), "profiling_s", (json_int_t)s->profiling_s);
}

char *control_state_to_text(const struct control_state *state, struct cp_err *err)
{
    json_t *sessions = json_array();
    bool bad = !sessions;
    for (size_t i = 0; !bad && i < state->count; i++)
        bad = json_array_append_new(sessions, session_json(&state->sessions[i])) < 0;
    json_t *root =
        bad ? NULL : json_pack("{s:i, s:o}", "version", STATE_FILE_VERSION, "sessions", sessions);
    if (!root) json_decref(sessions);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) cp_err_set(err, CP_ERR_NOMEM, "control state: out of memory");
    return text;
}

static int bad_field(struct cp_err *err, const char *path, const char *key, const char *what)
{
    cp_err_set(err, CP_ERR_INVALID, "%s.%s: %s", path, key, what);
    return -1;
}

static int read_int(const json_t *obj, const char *path, const char *key, int64_t min, int64_t max,
                    int64_t *out, struct cp_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        cp_err_set(err, CP_ERR_INVALID, "%s.%s: expected an integer from %lld to %lld", path, key,
                   (long long)min, (long long)max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* Copies a string into out[size]; `valid` is proto_id_valid or proto_name_valid. */
static int read_text(const json_t *obj, const char *path, const char *key, size_t max_len,
                     bool (*valid)(const char *, size_t, size_t), char *out, struct cp_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || !valid(json_string_value(v), json_string_length(v), max_len) ||
        memchr(json_string_value(v), '\0', json_string_length(v)))
        return bad_field(err, path, key, "expected a valid string (see control/PROTOCOL.md)");
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int read_enum(const json_t *obj, const char *path, struct control_session *s,
                     struct cp_err *err)
{
    const char *plan = json_string_value(json_object_get(obj, "plan"));
    if (!plan || (strcmp(plan, "free") != 0 && strcmp(plan, "addon") != 0))
        return bad_field(err, path, "plan", "expected \"free\" or \"addon\"");
    snprintf(s->plan, sizeof s->plan, "%s", plan);
    const char *st = json_string_value(json_object_get(obj, "state"));
    for (int i = PROTO_SESSION_RUNNING; st && i <= PROTO_SESSION_STOPPED; i++) {
        if (strcmp(st, proto_session_state_name((enum proto_session_state)i)) == 0) {
            s->state = (enum proto_session_state)i;
            return 0;
        }
    }
    return bad_field(err, path, "state", "expected \"running\", \"expired\" or \"stopped\"");
}

static int read_json_values(const json_t *obj, const char *path, struct control_session *s,
                            struct cp_err *err)
{
    struct proto_nack nack = {0};
    json_t *selector = json_object_get(obj, "selector");
    json_t *labels = json_object_get(obj, "labels");
    if (proto_selector_check(selector, s->project, s->environment, &nack) < 0 ||
        proto_labels_check(labels, &nack) < 0) {
        cp_err_set(err, CP_ERR_INVALID, "%s.%s: %s", path, nack.field, nack.error);
        return -1;
    }
    s->selector = json_incref(selector);
    s->labels = json_incref(labels);
    return 0;
}

static int read_session(const json_t *obj, const char *path, struct control_session *s,
                        struct cp_err *err)
{
    int64_t period, timeout;
    if (!json_is_object(obj)) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected an object", path);
        return -1;
    }
    if (read_text(obj, path, "session_id", PROTO_ID_MAX, proto_id_valid, s->session_id, err) < 0 ||
        read_text(obj, path, "project", PROTO_NAME_MAX, proto_name_valid, s->project, err) < 0 ||
        read_text(obj, path, "environment", PROTO_NAME_MAX, proto_name_valid, s->environment, err) <
            0 ||
        read_int(obj, path, "period", 1, PROTO_PERIOD_MAX, &period, err) < 0 ||
        read_int(obj, path, "upload_timeout", 1, PROTO_UPLOAD_TIMEOUT_MAX, &timeout, err) < 0 ||
        read_int(obj, path, "lease_until", 0, PROTO_TIME_MAX, &s->lease_until, err) < 0 ||
        read_int(obj, path, "budget_left", 0, PROTO_TIME_MAX, &s->budget_left, err) < 0 ||
        read_int(obj, path, "granted_at", 0, PROTO_TIME_MAX, &s->granted_at, err) < 0 ||
        read_int(obj, path, "started_at", 0, PROTO_TIME_MAX, &s->started_at, err) < 0 ||
        read_int(obj, path, "accounted_at", 0, PROTO_TIME_MAX, &s->accounted_at, err) < 0 ||
        read_int(obj, path, "profiling_s", 0, PROTO_TIME_MAX, &s->profiling_s, err) < 0 ||
        read_enum(obj, path, s, err) < 0)
        return -1;
    s->period = (int)period;
    s->upload_timeout = (int)timeout;
    return read_json_values(obj, path, s, err);
}

static int read_sessions(const json_t *array, struct control_state *out, struct cp_err *err)
{
    if (!json_is_array(array) || json_array_size(array) > CONTROL_STATE_SESSIONS_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "sessions: expected an array of at most %d sessions",
                   CONTROL_STATE_SESSIONS_MAX);
        return -1;
    }
    for (size_t i = 0; i < json_array_size(array); i++) {
        char path[32];
        snprintf(path, sizeof path, "sessions[%zu]", i);
        struct control_session *s = &out->sessions[out->count++];
        if (read_session(json_array_get(array, i), path, s, err) < 0) return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(out->sessions[j].session_id, s->session_id) == 0)
                return bad_field(err, path, "session_id", "duplicate session id");
    }
    return 0;
}

int control_state_parse_text(struct control_state *out, const char *text, size_t len,
                             struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    if (len > CONTROL_STATE_FILE_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "larger than %d bytes", CONTROL_STATE_FILE_MAX);
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text ? text : "", text ? len : 0,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        cp_err_set(err, CP_ERR_INVALID, "invalid JSON at byte %d: %s", jerr.position, jerr.text);
        return -1;
    }
    int rc = -1;
    const json_t *version = json_object_get(root, "version");
    if (!json_is_object(root))
        cp_err_set(err, CP_ERR_INVALID, "expected a JSON object");
    else if (!json_is_integer(version) || json_integer_value(version) != STATE_FILE_VERSION)
        cp_err_set(err, CP_ERR_INVALID, "version: expected %d", STATE_FILE_VERSION);
    else
        rc = read_sessions(json_object_get(root, "sessions"), out, err);
    json_decref(root);
    if (rc < 0) control_state_free(out);
    return rc;
}

/* ---- files ---- */

int control_state_save(const struct control_state *state, const char *path, struct cp_err *err)
{
    char *text = control_state_to_text(state, err);
    if (!text) return -1;
    struct iovec part = {.iov_base = text, .iov_len = strlen(text)};
    int rc = fileio_write_atomic(AT_FDCWD, path, &part, 1, 0600,
                                 FILEIO_EXACT_MODE | FILEIO_DIR_SYNC_ERRORS, err);
    free(text);
    return rc;
}

int control_state_load(struct control_state *out, const char *path, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    size_t len = 0;
    bool missing = false;
    char *text = fileio_read_file(path, CONTROL_STATE_FILE_MAX, &len, &missing, err);
    if (!text) return missing ? 0 : -1;
    int rc = control_state_parse_text(out, text, len, err);
    free(text);
    if (rc < 0) cp_err_prefix(err, "%s: corrupt control state, starting with no sessions", path);
    return rc;
}
