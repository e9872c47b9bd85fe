/* control_state: the agent's persistent table of console sessions and their leases.
 *
 * Contract (control/PROTOCOL.md "Leases and quota"): the table holds at most
 * CONTROL_STATE_SESSIONS_MAX sessions keyed by session id. Commands are applied idempotently:
 * applying the same command twice changes nothing the second time (`*changed` says whether the
 * table changed, i.e. whether to save it and to reconfigure sampling). A session samples only
 * while it is running and now < lease_until; control_state_expire() turns running sessions whose
 * lease ended into expired ones and reports each, with quota_exhausted set when the lease had been
 * capped by the budget (lease_until - granted_at >= budget_left).
 * Time is always passed in (Unix seconds); nothing here reads a clock, so tests drive it.
 * Files: control_state_save() writes atomically (PATH.tmp, fsync, rename, fsync of the
 * directory; mode 0600). control_state_load() reads at most CONTROL_STATE_FILE_MAX bytes and
 * validates strictly: a missing file is an empty table; a corrupt one is an error naming the path
 * and the reason, and the table is left empty (fail closed). A PATH.tmp left by a crash is ignored
 * and overwritten by the next save.
 * The struct owns its JSON values: control_state_free() releases them (safe on a zeroed struct).
 * No global state; one owner at a time.
 */
#ifndef CONPROF_CONTROL_STATE_H
#define CONPROF_CONTROL_STATE_H

#include "error.h"
#include "protocol.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONTROL_STATE_SESSIONS_MAX 64
#define CONTROL_STATE_FILE_MAX (1024 * 1024)
#define CONTROL_STATE_DEFAULT_PATH "/var/lib/conprof/control-state.json"

struct control_session {
    char session_id[PROTO_ID_MAX + 1];
    char project[PROTO_NAME_MAX + 1];
    char environment[PROTO_NAME_MAX + 1];
    json_t *selector; /* owned object */
    int period;
    int upload_timeout;
    json_t *labels; /* owned object of strings (never NULL) */
    char plan[8];
    int64_t lease_until;
    int64_t budget_left;
    int64_t granted_at;   /* when the current lease was applied */
    int64_t started_at;   /* when the session was first started on this agent */
    int64_t accounted_at; /* profiling_s counts sampling time up to here */
    enum proto_session_state state;
    int64_t profiling_s;
};

struct control_state {
    struct control_session sessions[CONTROL_STATE_SESSIONS_MAX];
    size_t count;
};

void control_state_free(struct control_state *state); /* leaves an empty table */

/* Applies a parsed start / stop / config / lease. Returns 0 (answer ack) or -1 with *nack filled
 * (answer nack; nothing changed): config or lease for an unknown session, lease for a stopped
 * one (field "session_id"), a start when all slots hold running sessions. A new start takes the
 * slot of the oldest non-running session when the table is full.
 * start: creates or updates (settings, lease; a non-running session runs again).
 * stop:  marks the session stopped (unknown id: ack, nothing changed).
 * config: updates the given settings. lease: renews (an expired session runs again). */
int control_state_apply(struct control_state *state, const struct proto_command *cmd, int64_t now,
                        bool *changed, struct proto_nack *nack);

typedef void (*control_expired_fn)(const struct control_session *session, bool quota_exhausted,
                                   void *ctx);
/* Adds sampling time to profiling_s of running sessions (up to min(now, lease_until)), then marks
 * expired every running session with now >= lease_until, calling `on_expired` for each (may be
 * NULL). Returns how many expired (the table changed when > 0: save it). */
size_t control_state_expire(struct control_state *state, int64_t now, control_expired_fn on_expired,
                            void *ctx);

/* After a load: restart time accounting at `now` (the agent was not sampling while down). */
void control_state_resume(struct control_state *state, int64_t now);

/* Running and now < lease_until. */
bool control_session_active(const struct control_session *session, int64_t now);
/* Fills out[] with up to `max` active sessions; returns how many. */
size_t control_state_active(const struct control_state *state, int64_t now,
                            const struct control_session **out, size_t max);
struct control_session *control_state_find(struct control_state *state, const char *session_id);

/* For hello: every session held, as {session_id, lease_until}; returns how many (<= max). */
size_t control_state_session_refs(const struct control_state *state, struct proto_session_ref *out,
                                  size_t max);
/* For status: a session's entry; `targets` is left 0 for the caller (who knows the targets). */
void control_session_status(const struct control_session *session,
                            struct proto_session_status *out);

/* Text form (the state file's content). to_text returns malloc'd JSON (free()) or NULL. */
char *control_state_to_text(const struct control_state *state, struct cp_err *err);
/* Parses a state file's text into *out (which must be empty/zeroed). On error *out stays empty. */
int control_state_parse_text(struct control_state *out, const char *text, size_t len,
                             struct cp_err *err);

int control_state_save(const struct control_state *state, const char *path, struct cp_err *err);
/* Missing file: 0 with an empty table. Corrupt or unreadable: -1, err "PATH: reason", empty. */
int control_state_load(struct control_state *out, const char *path, struct cp_err *err);

#endif
