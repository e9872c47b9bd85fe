/* store: the console's state and profiles in one SQLite database, DIR/console.db.
 *
 * Contract: WAL journal, busy_timeout 5 s, schema versioned with PRAGMA user_version (a database
 * of a newer version is refused, CP_ERR_UNSUPPORTED). Every write is one transaction: a function
 * that fails leaves nothing half-stored. Names (project, environment, application, token names)
 * are 1..STORE_ID_MAX bytes of [A-Za-z0-9._:@-] except where noted; a bad name is CP_ERR_INVALID
 * naming the parameter. Storage failures are CP_ERR_IO with SQLite's message. Times are Unix
 * seconds (int64) unless the name says _ns. Lookup functions return 1 found, 0 not found, -1
 * error. Lists are malloc'd arrays the caller frees with free() (their elements own nothing).
 * Not thread-safe: one struct store per thread (several processes may open the same DIR).
 *
 * Tokens: 32 bytes from RAND_bytes, printed "cpa_<base64url>" (agent) / "cpk_<base64url>" (API),
 * 43 base64url characters, no padding; only the SHA-256 hex of the printed token is stored, so a
 * lookup is by hash. A name is unique per kind; revoke deletes every token of that name.
 *
 * Quota: a project's budget is STORE_FREE_BUDGET_S on plan "free" (or the free budget given to
 * store_open_with / store_set_free_budget, the console's --free-budget), STORE_ADDON_BUDGET_S on
 * "addon". store_quota_tick(now) adds, to every project with an environment on, the wall time
 * since the previous tick, capped at the end of its latest lease (agents stop sampling at lease
 * end, so time past it is not used; an environment on without a lease counts up to now). The
 * last tick time is persisted. After a restart the first tick counts from the persisted last tick
 * (so the console's own downtime is counted only while leases granted before it went down still
 * ran; never more), which is also what a console that was merely slow to tick would count.
 * A project whose used_s reaches its budget is marked exhausted and all its environments are
 * switched off (session and lease cleared) in the same transaction; those environments (with
 * their former session ids) are returned so the caller can send `stop`. Switching an environment
 * on in an exhausted project is refused (STORE_EXHAUSTED); a plan change clears the flag.
 *
 * Profiles: stored with their labels (JSON object text), the profile types they carry with each
 * type's total (for timelines without decoding), and the protobuf zstd-compressed (level 1);
 * store_profile_foreach() hands back the decompressed protobuf.
 */
#ifndef CONPROF_STORE_H
#define CONPROF_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "error.h"

#define STORE_ID_MAX 128               /* bytes in a name */
#define STORE_SESSION_MAX 64           /* bytes in a session id */
#define STORE_TOKEN_TEXT_MAX 64        /* printed token + NUL fits */
#define STORE_FREE_BUDGET_S 900.0      /* 15 minutes */
#define STORE_ADDON_BUDGET_S 2592000.0 /* 30 days */
#define STORE_EXHAUSTED 1              /* store_env_set_profiling(on) refused: budget spent */

struct store;

struct store_options {
    double free_budget_s; /* <= 0: STORE_FREE_BUDGET_S */
};

struct store *store_open(const char *dir, struct cp_err *err); /* default options */
struct store *store_open_with(const char *dir, const struct store_options *opt, struct cp_err *err);
void store_close(struct store *st);
void store_set_free_budget(struct store *st, double free_budget_s); /* <= 0: default */
/* true when s is a valid name (see above) */
bool store_valid_id(const char *s);

/* ---- tokens ---- */
enum store_token_kind { STORE_TOKEN_AGENT = 0, STORE_TOKEN_API = 1 };
struct store_token_info {
    enum store_token_kind kind;
    char name[STORE_ID_MAX + 1];
    char project[STORE_ID_MAX + 1]; /* "" = every project */
    int64_t created;
};
/* Creates a token and writes its printed form (NUL-terminated) to out. project NULL or "": none
 * (an API token never has one). A name already used by a token of that kind: CP_ERR_INVALID. */
int store_token_create(struct store *st, const char *name, enum store_token_kind kind,
                       const char *project, char *out, size_t out_size, struct cp_err *err);
/* 1 and *info when token (printed form) is known, 0 when not (also for malformed text), -1. */
int store_token_check(struct store *st, const char *token, struct store_token_info *info,
                      struct cp_err *err);
int store_token_list(struct store *st, struct store_token_info **out, size_t *count,
                     struct cp_err *err);
/* "KIND NAME PROJECT CREATED" lines (kind agent|api, project "-" when none, created ISO 8601). */
int store_token_print(struct store *st, FILE *f, struct cp_err *err);
/* Deletes the tokens named name; none of that name: CP_ERR_INVALID "no token named 'x'". */
int store_token_revoke(struct store *st, const char *name, struct cp_err *err);

/* ---- projects and environments ---- */
enum store_plan { STORE_PLAN_FREE = 0, STORE_PLAN_ADDON = 1 };
const char *store_plan_name(enum store_plan plan);          /* "free" / "addon" */
int store_plan_parse(const char *s, enum store_plan *plan); /* 0, or -1 when unknown */

struct store_project {
    char id[STORE_ID_MAX + 1];
    enum store_plan plan;
    double budget_s, used_s; /* left = max(0, budget_s - used_s) */
    bool exhausted;
};
struct store_env {
    char project[STORE_ID_MAX + 1];
    char id[STORE_ID_MAX + 1];
    bool profiling;
    char session_id[STORE_SESSION_MAX + 1]; /* "" = none */
    int64_t lease_until;                    /* 0 = none */
};

/* Creates the project or changes its plan (a change clears `exhausted`); out may be NULL. */
int store_project_put(struct store *st, const char *id, enum store_plan plan,
                      struct store_project *out, struct cp_err *err);
int store_project_get(struct store *st, const char *id, struct store_project *out,
                      struct cp_err *err);
int store_project_list(struct store *st, struct store_project **out, size_t *count,
                       struct cp_err *err);
/* PROJECT objects of API.md ({"id","plan","budget_s","used_s","left_s","exhausted",
 * "environments":[ENVIRONMENT...]}). project_json: 1 and *out (new reference), 0 unknown, -1. */
int store_project_json(struct store *st, const char *id, json_t **out, struct cp_err *err);
json_t *store_projects_json(struct store *st, struct cp_err *err); /* {"projects":[...]} */
json_t *store_env_json(const struct store_env *env);               /* ENVIRONMENT */

/* Creates the environment (and its project on the free plan) when missing; out may be NULL. */
int store_env_put(struct store *st, const char *project, const char *id, struct store_env *out,
                  struct cp_err *err);
int store_env_get(struct store *st, const char *project, const char *id, struct store_env *out,
                  struct cp_err *err);
/* Switches profiling on or off, creating project (free) and environment when missing.
 * On: session_id NULL or "" generates one (32 hex chars) unless the environment is already on
 * (then its session is kept); lease_until is stored as given. Off: session and lease cleared.
 * Returns 0, STORE_EXHAUSTED (on refused, nothing changed), or -1. out may be NULL. */
int store_env_set_profiling(struct store *st, const char *project, const char *id, bool on,
                            const char *session_id, int64_t lease_until, struct store_env *out,
                            struct cp_err *err);
/* Lease renewal of an environment that is on (0 = none). Returns 1, 0 when off/unknown, -1. */
int store_env_set_lease(struct store *st, const char *project, const char *id, int64_t lease_until,
                        struct cp_err *err);
/* project NULL: every project. only_on: environments with profiling on. Sorted by project, id. */
int store_env_list(struct store *st, const char *project, bool only_on, struct store_env **out,
                   size_t *count, struct cp_err *err);

/* See "Quota" above. *stopped (may be NULL when *nstopped is 0) is malloc'd. */
int store_quota_tick(struct store *st, int64_t now, struct store_env **stopped, size_t *nstopped,
                     struct cp_err *err);

/* ---- agents seen ---- */
struct store_agent {
    const char *agent_id; /* key (hello's agent id) */
    const char *name;     /* token name */
    const char *node, *version;
    const json_t *targets; /* JSON array (or NULL: keep the stored one) */
    bool connected;
    int64_t connected_since, last_seen;
};
/* Inserts or updates the agent by agent_id. */
int store_agent_upsert(struct store *st, const struct store_agent *a, struct cp_err *err);
/* Marks it disconnected (last_seen = now); unknown agent_id is not an error. */
int store_agent_disconnect(struct store *st, const char *agent_id, int64_t now, struct cp_err *err);
/* Marks every agent disconnected (console start). */
int store_agent_disconnect_all(struct store *st, struct cp_err *err);
/* [{"agent_id","name","node","version","connected","connected_since","last_seen","targets"}...]
 * ordered by name, agent_id; connected_since null when not connected. NULL on error. */
json_t *store_agents_json(struct store *st, struct cp_err *err);

/* ---- profiles ---- */
struct store_profile_in {
    const char *project, *environment, *app;
    int64_t from_ns, until_ns;
    const json_t *labels; /* object of strings, or NULL ({}) */
    size_t ntypes;
    const char *const *types; /* query profile types (profile_types.h) */
    const int64_t *totals;
    const uint8_t *pprof; /* uncompressed protobuf */
    size_t pprof_len;
};
/* Stores all n profiles or none (one transaction). app and project/environment are checked. */
int store_profiles_add(struct store *st, const struct store_profile_in *items, size_t n,
                       struct cp_err *err);
/* Deletes profiles whose until is before before_s. Returns how many, or -1. */
int64_t store_retention(struct store *st, int64_t before_s, struct cp_err *err);

/* Profiles of project/environment whose [from_ns, until_ns) overlaps [from_ns, to_ns), oldest
 * first. app NULL: every application. */
struct store_profile_row {
    int64_t id;
    const char *app;
    int64_t from_ns, until_ns;
    const char *labels_json; /* object text */
    size_t ntypes;
    const char *const *types;
    const int64_t *totals;
    const uint8_t *pprof; /* decompressed; NULL unless STORE_ROW_PPROF was asked */
    size_t pprof_len;
};
enum { STORE_ROW_PPROF = 1 }; /* flags */
/* fn returns 0 to continue, 1 to stop (not an error), -1 to fail (its err is passed through).
 * Row memory lives only during the call. */
typedef int (*store_profile_fn)(const struct store_profile_row *row, void *ctx, struct cp_err *err);
int store_profile_foreach(struct store *st, const char *project, const char *environment,
                          const char *app, int64_t from_ns, int64_t to_ns, unsigned flags,
                          store_profile_fn fn, void *ctx, struct cp_err *err);
int64_t store_profile_count(struct store *st, struct cp_err *err); /* all profiles, or -1 */

#endif
