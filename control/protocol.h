/* protocol: the messages of the agent <-> console control channel (control/PROTOCOL.md, v1).
 *
 * Contract: used by both ends. The agent parses console commands with proto_parse_command() and
 * builds hello/status/event/ack/nack; the console parses agent messages with
 * proto_parse_agent_message() and builds start/stop/config/lease. Parsers enforce every rule of
 * the spec's value table (types, ranges, charsets, counts, frame size), ignore unknown keys and
 * reject duplicate keys; on failure they return -1 and leave *out zeroed (nothing to free), except
 * `out->type`, which holds the message type when it could be read (else PROTO_UNKNOWN).
 * Errors name the field by its path, e.g. field "period", error "expected an integer from 1 to
 * 3600" (a cp_err message joins them as "period: expected an integer from 1 to 3600").
 * Builders return a malloc'd compact JSON text (release with free()) or NULL with err set; every
 * builder checks its output with the matching parser, so what one end builds the other accepts.
 * Parsed JSON values (selector, labels, targets, ...) are owned by the parsed struct: release
 * with proto_command_free() / proto_agent_msg_free() (safe on a zeroed struct, idempotent).
 * No global state; thread-safe per struct.
 */
#ifndef CONPROF_CONTROL_PROTOCOL_H
#define CONPROF_CONTROL_PROTOCOL_H

#include "error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_SUBPROTOCOL "conprof-agent-v1"
#define PROTO_PATH "/agent/v1"
#define PROTO_FRAME_MAX 65536        /* bytes of one text frame */
#define PROTO_ID_MAX 64              /* id, session_id: [A-Za-z0-9._:-] */
#define PROTO_NAME_MAX 128           /* project, environment: no control characters */
#define PROTO_PERIOD_MAX 3600        /* period: 1..3600 s */
#define PROTO_UPLOAD_TIMEOUT_MAX 300 /* upload_timeout: 1..300 s */
#define PROTO_LABELS_MAX 64
#define PROTO_LABEL_KEY_MAX 128 /* [A-Za-z0-9_.] */
#define PROTO_LABEL_VALUE_MAX 512
#define PROTO_SELECTOR_KEYS_MAX 64
#define PROTO_TIME_MAX INT64_C(253402300799) /* lease_until, budget_left: 0..9999-12-31 */
#define PROTO_REASON_MAX 127                 /* stop reason */
#define PROTO_TARGETS_MAX 4096               /* targets in hello / status */
#define PROTO_SESSIONS_MAX 1024              /* sessions in hello / status */
#define PROTO_AGENT_ID_MAX 128               /* agent_id: [A-Za-z0-9._:-] */
#define PROTO_NODE_MAX 255                   /* node, agent_version (64): no control characters */
#define PROTO_VERSION_STR_MAX 64
#define PROTO_CAPABILITIES_MAX 16   /* capabilities: strings of 1..32 bytes */
#define PROTO_TARGET_STRING_MAX 512 /* every string of a TARGET */
#define PROTO_MESSAGE_MAX 1024      /* event message, nack error */
#define PROTO_FIELD_MAX 160         /* nack field path */

enum proto_type {
    PROTO_HELLO,
    PROTO_STATUS,
    PROTO_EVENT,
    PROTO_ACK,
    PROTO_NACK,
    PROTO_START,
    PROTO_STOP,
    PROTO_CONFIG,
    PROTO_LEASE,
    PROTO_UNKNOWN, /* type missing or not one of the above */
};

/* "hello", "status", ... ("unknown" for PROTO_UNKNOWN). */
const char *proto_type_name(enum proto_type type);

/* Why a command was refused; also the payload of a nack message. */
struct proto_nack {
    char id[PROTO_ID_MAX + 1];       /* "" when no valid id could be read */
    char field[PROTO_FIELD_MAX + 1]; /* path: "period", "quota.plan", "labels.team", "" = frame */
    char error[PROTO_MESSAGE_MAX + 1];
};

struct proto_quota {
    char plan[8];        /* "free" or "addon" (start only) */
    int64_t lease_until; /* Unix seconds */
    int64_t budget_left; /* seconds >= 0 */
};

/* One console -> agent command. Which fields are set depends on `type`:
 * start:  id, session_id, project, environment, selector, period, upload_timeout, labels ({} when
 *         absent), quota (all required except labels; selector.project and
 *         selector.environment must equal project and environment)
 * stop:   id, session_id, reason ("" when absent)
 * config: id, session_id, and at least one of period / upload_timeout / labels (has_*)
 * lease:  id, session_id, quota.lease_until, quota.budget_left (quota.plan is "") */
struct proto_command {
    enum proto_type type;
    char id[PROTO_ID_MAX + 1];
    char session_id[PROTO_ID_MAX + 1];
    char project[PROTO_NAME_MAX + 1];
    char environment[PROTO_NAME_MAX + 1];
    json_t *selector; /* owned object, start only */
    int period;
    int upload_timeout;
    json_t *labels; /* owned object of strings, or NULL */
    struct proto_quota quota;
    char reason[PROTO_REASON_MAX + 1];
    bool has_period, has_upload_timeout, has_labels;
};

/* Parses one console -> agent frame. Returns 0, or -1 with *nack filled (nack->id is the
 * command's id when it was valid, so the agent can answer it). */
int proto_parse_command(const char *text, size_t len, struct proto_command *out,
                        struct proto_nack *nack);
void proto_command_free(struct proto_command *cmd);

/* Builds a start / stop / config / lease from `cmd` according to cmd->type. */
char *proto_build_command(const struct proto_command *cmd, struct cp_err *err);
char *proto_build_start(const struct proto_command *cmd, struct cp_err *err);
char *proto_build_stop(const struct proto_command *cmd, struct cp_err *err);
char *proto_build_config(const struct proto_command *cmd, struct cp_err *err);
char *proto_build_lease(const struct proto_command *cmd, struct cp_err *err);

/* ---- agent -> console ---- */

/* A TARGET object for building (NULL or "" strings are omitted). */
struct proto_target {
    int64_t pid;
    const char *container_id;
    const char *pod_uid;
    const char *project;
    const char *environment;
    const char *application; /* always sent ("" when NULL) */
    const char *python;
};
/* Returns a new TARGET object (caller owns the reference), or NULL with err set. */
json_t *proto_target_json(const struct proto_target *target, struct cp_err *err);

/* A session as listed in hello. */
struct proto_session_ref {
    char session_id[PROTO_ID_MAX + 1];
    int64_t lease_until;
};

enum proto_session_state { PROTO_SESSION_RUNNING, PROTO_SESSION_EXPIRED, PROTO_SESSION_STOPPED };
const char *proto_session_state_name(enum proto_session_state state);

/* A session as listed in status. */
struct proto_session_status {
    char session_id[PROTO_ID_MAX + 1];
    enum proto_session_state state;
    int64_t lease_until;
    int64_t profiling_s;
    int64_t targets;
};

/* hello: agent_id, node and agent_version are required; the arrays default to empty. */
struct proto_hello {
    char agent_id[PROTO_AGENT_ID_MAX + 1];
    char node[PROTO_NODE_MAX + 1];
    char agent_version[PROTO_VERSION_STR_MAX + 1];
    json_t *capabilities; /* array of strings; parsed: owned, never NULL; build: NULL = [] */
    json_t *targets;      /* array of TARGET objects; same ownership */
    struct proto_session_ref *sessions; /* parsed: owned (malloc'd) */
    size_t session_count;
};

struct proto_uploads {
    int64_t sent, failed, spooled, evicted;
};

/* status: every field defaults to zero / empty when absent. */
struct proto_status {
    json_t *targets; /* array of TARGET objects; parsed: owned, never NULL; build: NULL = [] */
    int64_t samples;
    int64_t sample_errors;
    struct proto_uploads uploads;
    struct proto_session_status *sessions; /* parsed: owned (malloc'd) */
    size_t session_count;
};

enum proto_event_kind {
    PROTO_EVENT_QUOTA_EXHAUSTED,
    PROTO_EVENT_LEASE_EXPIRED,
    PROTO_EVENT_TARGET_ATTACHED,
    PROTO_EVENT_TARGET_DETACHED,
    PROTO_EVENT_ERROR,
};
const char *proto_event_kind_name(enum proto_event_kind kind);

struct proto_event {
    enum proto_event_kind kind;
    char session_id[PROTO_ID_MAX + 1];   /* "" when absent */
    char message[PROTO_MESSAGE_MAX + 1]; /* "" when absent */
    json_t *target;                      /* TARGET object or NULL; parsed: owned */
};

/* A parsed agent message: the member named by `type` is set, the others are zero. */
struct proto_agent_msg {
    enum proto_type type;
    struct proto_hello hello;
    struct proto_status status;
    struct proto_event event;
    char ack_id[PROTO_ID_MAX + 1];
    struct proto_nack nack; /* nack.id may be "" */
};

/* Parses one agent -> console frame. Returns 0, or -1 with err set (CP_ERR_INVALID, message
 * "field: error"; CP_ERR_UNSUPPORTED when "v" is not 1 -- with out->type == PROTO_HELLO the
 * console closes with code 4000). */
int proto_parse_agent_message(const char *text, size_t len, struct proto_agent_msg *out,
                              struct cp_err *err);
void proto_agent_msg_free(struct proto_agent_msg *msg);

char *proto_build_hello(const struct proto_hello *hello, struct cp_err *err);
char *proto_build_status(const struct proto_status *status, struct cp_err *err);
/* session_id, message and target may be NULL. */
char *proto_build_event(enum proto_event_kind kind, const char *session_id, const char *message,
                        const json_t *target, struct cp_err *err);
char *proto_build_ack(const char *id, struct cp_err *err);
/* id may be NULL or "" (a frame without a readable id). */
char *proto_build_nack(const char *id, const char *field, const char *error, struct cp_err *err);

/* ---- field checks shared with control_state.c (and anyone storing these values) ---- */

/* 1..PROTO_ID_MAX bytes of [A-Za-z0-9._:-] (max_len: PROTO_ID_MAX or PROTO_AGENT_ID_MAX). */
bool proto_id_valid(const char *s, size_t len, size_t max_len);
/* 1..max_len bytes without control characters (C0, DEL, and C1 in UTF-8). */
bool proto_name_valid(const char *s, size_t len, size_t max_len);
/* labels object rule; on failure fills nack->field ("labels" or "labels.<key>") and error. */
int proto_labels_check(const json_t *labels, struct proto_nack *nack);
/* selector rule (object, <= 64 keys, accepted by selector_parse(), project and environment equal
 * to the given ones); on failure fills nack->field ("selector..." ) and error. */
int proto_selector_check(const json_t *selector, const char *project, const char *environment,
                         struct proto_nack *nack);

#endif
