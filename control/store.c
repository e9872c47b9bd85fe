/* store: SQLite (WAL) holding tokens, projects, environments, agents seen and profiles.
 *
 * Design: every SQL statement is prepared once, lazily, and cached by its enum index (struct
 * store.stmts); each public call resets what it used. A write is wrapped in BEGIN IMMEDIATE ..
 * COMMIT (write lock taken up front, so a busy database waits in busy_timeout instead of failing
 * half-way) and rolled back on any error. Schema changes go through numbered migrations keyed on
 * PRAGMA user_version.
 *
 * Profiles: the protobuf is zstd-compressed (level 1: fast enough for the ingest rate, and
 * pprof_decompress would sniff it too) and is the LAST column of its row, so scans that skip it
 * (timelines, filters) never walk its overflow pages. The types a profile carries and their
 * totals sit in one short text column "cpu=123,wall=456" parsed per row, which a timeline reads
 * without decoding any protobuf. Index (project, environment, app, until_ns) answers the range
 * scans "until_ns >= from AND from_ns < to".
 *
 * Quota tick: one transaction reads the last tick (table meta), adds min(now, latest lease end)
 * - last tick to each project with an environment on, switches off the environments of projects
 * that reached their budget and writes the new last tick. See store.h for the restart rule.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zstd.h>

#define STORE_SCHEMA_VERSION 1
#define STORE_APP_MAX 512
#define STORE_MAX_TYPES 16
#define STORE_MAX_PPROF (256u << 20)

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_TOKEN_INSERT,
    S_TOKEN_BY_HASH,
    S_TOKEN_LIST,
    S_TOKEN_DELETE,
    S_PROJECT_GET,
    S_PROJECT_INSERT,
    S_PROJECT_SET_PLAN,
    S_PROJECT_LIST,
    S_PROJECT_ADD_USED,
    S_PROJECT_EXHAUST,
    S_ENV_GET,
    S_ENV_INSERT,
    S_ENV_SET,
    S_ENV_SET_LEASE,
    S_ENV_LIST_ALL,
    S_ENV_LIST_PROJECT,
    S_ENV_ACTIVE_BY_PROJECT,
    S_ENV_OFF_PROJECT,
    S_META_GET,
    S_META_SET,
    S_AGENT_UPSERT,
    S_AGENT_DISCONNECT,
    S_AGENT_DISCONNECT_ALL,
    S_AGENT_LIST,
    S_PROFILE_INSERT,
    S_PROFILE_RETENTION,
    S_PROFILE_SCAN_APP,
    S_PROFILE_SCAN_APP_PPROF,
    S_PROFILE_SCAN_ENV,
    S_PROFILE_SCAN_ENV_PPROF,
    S_PROFILE_COUNT,
    S_COUNT
};

static const char *const SQL[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_TOKEN_INSERT] =
        "INSERT INTO tokens(hash, kind, name, project, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_TOKEN_BY_HASH] = "SELECT kind, name, project, created FROM tokens WHERE hash = ?1",
    [S_TOKEN_LIST] = "SELECT kind, name, project, created FROM tokens ORDER BY kind, name",
    [S_TOKEN_DELETE] = "DELETE FROM tokens WHERE name = ?1",
    [S_PROJECT_GET] = "SELECT id, plan, used_s, exhausted FROM projects WHERE id = ?1",
    [S_PROJECT_INSERT] = "INSERT INTO projects(id, plan) VALUES (?1, ?2)",
    [S_PROJECT_SET_PLAN] = "UPDATE projects SET plan = ?2, exhausted = 0 WHERE id = ?1",
    [S_PROJECT_LIST] = "SELECT id, plan, used_s, exhausted FROM projects ORDER BY id",
    [S_PROJECT_ADD_USED] = "UPDATE projects SET used_s = used_s + ?2 WHERE id = ?1",
    [S_PROJECT_EXHAUST] = "UPDATE projects SET exhausted = 1 WHERE id = ?1",
    [S_ENV_GET] = "SELECT project, id, profiling, session_id, lease_until FROM environments "
                  "WHERE project = ?1 AND id = ?2",
    [S_ENV_INSERT] = "INSERT INTO environments(project, id) VALUES (?1, ?2)",
    [S_ENV_SET] = "UPDATE environments SET profiling = ?3, session_id = ?4, lease_until = ?5 "
                  "WHERE project = ?1 AND id = ?2",
    [S_ENV_SET_LEASE] = "UPDATE environments SET lease_until = ?3 "
                        "WHERE project = ?1 AND id = ?2 AND profiling = 1",
    [S_ENV_LIST_ALL] = "SELECT project, id, profiling, session_id, lease_until FROM environments "
                       "WHERE profiling >= ?1 ORDER BY project, id",
    [S_ENV_LIST_PROJECT] = "SELECT project, id, profiling, session_id, lease_until FROM "
                           "environments WHERE project = ?2 AND profiling >= ?1 ORDER BY id",
    [S_ENV_ACTIVE_BY_PROJECT] = "SELECT project, MAX(lease_until), SUM(lease_until IS NULL) "
                                "FROM environments WHERE profiling = 1 GROUP BY project",
    [S_ENV_OFF_PROJECT] = "UPDATE environments SET profiling = 0, session_id = NULL, "
                          "lease_until = NULL WHERE project = ?1 AND profiling = 1",
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [S_META_SET] = "INSERT INTO meta(key, value) VALUES (?1, ?2) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [S_AGENT_UPSERT] =
        "INSERT INTO agents(agent_id, name, node, version, targets, connected, connected_since, "
        "last_seen) VALUES (?1, ?2, ?3, ?4, coalesce(?5, '[]'), ?6, ?7, ?8) "
        "ON CONFLICT(agent_id) DO UPDATE SET name = excluded.name, node = excluded.node, "
        "version = excluded.version, targets = coalesce(?5, targets), connected = "
        "excluded.connected, connected_since = excluded.connected_since, last_seen = "
        "excluded.last_seen",
    [S_AGENT_DISCONNECT] = "UPDATE agents SET connected = 0, connected_since = NULL, "
                           "last_seen = ?2 WHERE agent_id = ?1",
    [S_AGENT_DISCONNECT_ALL] = "UPDATE agents SET connected = 0, connected_since = NULL",
    [S_AGENT_LIST] = "SELECT agent_id, name, node, version, connected, connected_since, "
                     "last_seen, targets FROM agents ORDER BY name, agent_id",
    [S_PROFILE_INSERT] = "INSERT INTO profiles(project, environment, app, from_ns, until_ns, "
                         "labels, types, raw_len, pprof) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    [S_PROFILE_RETENTION] = "DELETE FROM profiles WHERE until_ns < ?1",
    [S_PROFILE_SCAN_APP] = "SELECT id, app, from_ns, until_ns, labels, types, raw_len FROM "
                           "profiles WHERE project = ?1 AND environment = ?2 AND app = ?3 AND "
                           "until_ns >= ?4 AND from_ns < ?5 ORDER BY from_ns, id",
    [S_PROFILE_SCAN_APP_PPROF] =
        "SELECT id, app, from_ns, until_ns, labels, types, raw_len, pprof FROM "
        "profiles WHERE project = ?1 AND environment = ?2 AND app = ?3 AND "
        "until_ns >= ?4 AND from_ns < ?5 ORDER BY from_ns, id",
    [S_PROFILE_SCAN_ENV] = "SELECT id, app, from_ns, until_ns, labels, types, raw_len FROM "
                           "profiles WHERE project = ?1 AND environment = ?2 AND "
                           "until_ns >= ?4 AND from_ns < ?5 ORDER BY from_ns, id",
    [S_PROFILE_SCAN_ENV_PPROF] =
        "SELECT id, app, from_ns, until_ns, labels, types, raw_len, pprof FROM "
        "profiles WHERE project = ?1 AND environment = ?2 AND "
        "until_ns >= ?4 AND from_ns < ?5 ORDER BY from_ns, id",
    [S_PROFILE_COUNT] = "SELECT count(*) FROM profiles",
};

static const char SCHEMA_V1[] =
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER);"
    "CREATE TABLE tokens (hash TEXT PRIMARY KEY, kind INTEGER NOT NULL, name TEXT NOT NULL,"
    " project TEXT, created INTEGER NOT NULL, UNIQUE(kind, name));"
    "CREATE TABLE projects (id TEXT PRIMARY KEY, plan INTEGER NOT NULL,"
    " used_s REAL NOT NULL DEFAULT 0, exhausted INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE environments (project TEXT NOT NULL REFERENCES projects(id), id TEXT NOT NULL,"
    " profiling INTEGER NOT NULL DEFAULT 0, session_id TEXT, lease_until INTEGER,"
    " PRIMARY KEY (project, id));"
    "CREATE TABLE agents (agent_id TEXT PRIMARY KEY, name TEXT NOT NULL, node TEXT, version TEXT,"
    " targets TEXT NOT NULL DEFAULT '[]', connected INTEGER NOT NULL DEFAULT 0,"
    " connected_since INTEGER, last_seen INTEGER);"
    "CREATE TABLE profiles (id INTEGER PRIMARY KEY, project TEXT NOT NULL,"
    " environment TEXT NOT NULL, app TEXT NOT NULL, from_ns INTEGER NOT NULL,"
    " until_ns INTEGER NOT NULL, labels TEXT NOT NULL, types TEXT NOT NULL,"
    " raw_len INTEGER NOT NULL, pprof BLOB NOT NULL);"
    "CREATE INDEX profiles_by_app ON profiles(project, environment, app, until_ns);"
    "CREATE INDEX profiles_by_env ON profiles(project, environment, until_ns);"
    "CREATE INDEX profiles_by_until ON profiles(until_ns);";

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmts[S_COUNT];
    double free_budget_s;
    struct buf scratch; /* decompressed pprof of the current row */
};

/* ---- basics ------------------------------------------------------------------------------- */

static int db_fail(struct store *st, struct cp_err *err, const char *what)
{
    cp_err_set(err, CP_ERR_IO, "store: %s: %s", what, sqlite3_errmsg(st->db));
    return -1;
}

static sqlite3_stmt *stmt(struct store *st, enum stmt_id id, struct cp_err *err)
{
    if (!st->stmts[id] &&
        sqlite3_prepare_v3(st->db, SQL[id], -1, SQLITE_PREPARE_PERSISTENT, &st->stmts[id], NULL)) {
        db_fail(st, err, "prepare");
        return NULL;
    }
    sqlite3_reset(st->stmts[id]);
    sqlite3_clear_bindings(st->stmts[id]);
    return st->stmts[id];
}

/* Runs a statement to completion (no rows expected). */
static int run(struct store *st, sqlite3_stmt *s, struct cp_err *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return db_fail(st, err, "write");
    return 0;
}

/* How collect_rows() reads one row into one element of its array. */
struct row_reader {
    size_t size; /* of one element */
    void (*read)(const struct store *st, sqlite3_stmt *s, void *item, const void *ctx);
    const void *ctx;
    const char *what;  /* for a database error: "list tokens" */
    const char *nomem; /* the whole message when memory runs out */
};

/* The arrays collect_rows() grows hold 16, 32, 64, ... elements: full at 0 and at each power of
 * two from 16, so it can append to an array an earlier call filled without being told its size. */
static bool rows_full(size_t count)
{
    return count == 0 || (count >= 16 && (count & (count - 1)) == 0);
}

/* Steps s to its end, appending one element per row to the malloc'd array *items (*count
 * elements, possibly from earlier calls). 0, or -1 with err; the array then holds the rows read
 * so far, for the caller to free. Resets s. */
static int collect_rows(struct store *st, sqlite3_stmt *s, const struct row_reader *r, void **items,
                        size_t *count, struct cp_err *err)
{
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (rows_full(*count)) {
            void *p = realloc(*items, (*count ? *count * 2 : 16) * r->size);
            if (!p) break;
            *items = p;
        }
        r->read(st, s, (char *)*items + (*count)++ * r->size, r->ctx);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) return 0;
    if (rc == SQLITE_ROW) {
        cp_err_set(err, CP_ERR_NOMEM, "%s", r->nomem);
        return -1;
    }
    return db_fail(st, err, r->what);
}

/* All rows of statement id (no parameters) as a fresh array; on error none (*items NULL). */
static int list_rows(struct store *st, enum stmt_id id, const struct row_reader *r, void **items,
                     size_t *count, struct cp_err *err)
{
    *items = NULL;
    *count = 0;
    sqlite3_stmt *s = stmt(st, id, err);
    int rc = s ? collect_rows(st, s, r, items, count, err) : -1;
    if (rc < 0) {
        free(*items);
        *items = NULL;
        *count = 0;
    }
    return rc;
}

static int exec_simple(struct store *st, enum stmt_id id, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, id, err);
    return s ? run(st, s, err) : -1;
}

static int begin(struct store *st, struct cp_err *err)
{
    return exec_simple(st, S_BEGIN, err);
}

/* Commits when rc == 0, else rolls back; returns rc (or -1 when the commit failed). */
static int finish(struct store *st, int rc, struct cp_err *err)
{
    if (rc >= 0 && exec_simple(st, S_COMMIT, err) == 0) return rc;
    struct cp_err ignored = {0};
    exec_simple(st, S_ROLLBACK, &ignored);
    return -1;
}

static void bind_text(sqlite3_stmt *s, int i, const char *text)
{
    if (text)
        sqlite3_bind_text(s, i, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static void copy_col(sqlite3_stmt *s, int col, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

bool store_valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > STORE_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
        if (!ok) return false;
    }
    return true;
}

static int check_id(const char *what, const char *s, struct cp_err *err)
{
    if (store_valid_id(s)) return 0;
    cp_err_set(err, CP_ERR_INVALID,
               "%s: expected 1 to %d characters of A-Z a-z 0-9 . _ : @ -, got '%.64s'", what,
               STORE_ID_MAX, s ? s : "");
    return -1;
}

static int check_app(const char *app, struct cp_err *err)
{
    size_t n = app ? strlen(app) : 0;
    bool ok = n > 0 && n <= STORE_APP_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)app[i] >= 0x20 && app[i] != 0x7f;
    if (ok) return 0;
    cp_err_set(err, CP_ERR_INVALID, "application: expected 1 to %d printable bytes", STORE_APP_MAX);
    return -1;
}

/* ---- open / close ------------------------------------------------------------------------- */

static int db_user_version(struct store *st, int *version, struct cp_err *err)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL))
        return db_fail(st, err, "schema version");
    int rc = sqlite3_step(s);
    *version = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? 0 : db_fail(st, err, "schema version");
}

static int migrate(struct store *st, struct cp_err *err)
{
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL))
        return db_fail(st, err, "migrate");
    int version = 0;
    int rc = db_user_version(st, &version, err);
    if (rc == 0 && version > STORE_SCHEMA_VERSION) {
        cp_err_set(err, CP_ERR_UNSUPPORTED,
                   "store: database schema version %d is newer than this console's (%d)", version,
                   STORE_SCHEMA_VERSION);
        rc = -1;
    }
    if (rc == 0 && version < 1) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        if (sqlite3_exec(st->db, SCHEMA_V1, NULL, NULL, NULL) ||
            sqlite3_exec(st->db, pragma, NULL, NULL, NULL))
            rc = db_fail(st, err, "create schema");
    }
    if (rc == 0 && sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL))
        rc = db_fail(st, err, "migrate");
    if (rc < 0) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int configure(struct store *st, struct cp_err *err)
{
    sqlite3_busy_timeout(st->db, 5000);
    if (sqlite3_exec(st->db,
                     "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                     " PRAGMA foreign_keys = ON;",
                     NULL, NULL, NULL))
        return db_fail(st, err, "configure");
    return migrate(st, err);
}

struct store *store_open_with(const char *dir, const struct store_options *opt, struct cp_err *err)
{
    if (!dir || !*dir) {
        cp_err_set(err, CP_ERR_INVALID, "data directory: missing");
        return NULL;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        cp_err_set(err, CP_ERR_IO, "data directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    struct store *st = calloc(1, sizeof *st);
    struct buf path = {0};
    if (!st || buf_printf(&path, "%s/console.db", dir) < 0) {
        free(st);
        cp_err_set(err, CP_ERR_NOMEM, "out of memory opening the store");
        return NULL;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path.data, &st->db, flags, NULL);
    if (rc != SQLITE_OK || configure(st, err) < 0) {
        if (rc != SQLITE_OK)
            cp_err_set(err, CP_ERR_IO, "store %s: %s", path.data,
                       st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        else
            cp_err_prefix(err, "%s", path.data);
        buf_free(&path);
        store_close(st);
        return NULL;
    }
    buf_free(&path);
    store_set_free_budget(st, opt ? opt->free_budget_s : 0);
    return st;
}

struct store *store_open(const char *dir, struct cp_err *err)
{
    return store_open_with(dir, NULL, err);
}

void store_close(struct store *st)
{
    if (!st) return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->stmts[i]);
    sqlite3_close(st->db);
    buf_free(&st->scratch);
    free(st);
}

void store_set_free_budget(struct store *st, double free_budget_s)
{
    st->free_budget_s = free_budget_s > 0 ? free_budget_s : STORE_FREE_BUDGET_S;
}

static double plan_budget(const struct store *st, enum store_plan plan)
{
    return plan == STORE_PLAN_ADDON ? STORE_ADDON_BUDGET_S : st->free_budget_s;
}

/* ---- tokens ------------------------------------------------------------------------------- */

static void base64url(const uint8_t *in, size_t n, char *out)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        for (int k = 3; k >= 0; k--)
            out[o++] = A[(v >> (6 * k)) & 63];
    }
    if (n - i == 1) {
        out[o++] = A[in[i] >> 2];
        out[o++] = A[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];
        out[o++] = A[v >> 10];
        out[o++] = A[(v >> 4) & 63];
        out[o++] = A[(v & 15) << 2];
    }
    out[o] = '\0';
}

#define TOKEN_BYTES 32
#define TOKEN_B64_LEN 43 /* 32 bytes in unpadded base64url */

static int sha256_hex(const char *text, char hex[65], struct cp_err *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(text, strlen(text), md, &n, EVP_sha256(), NULL) || n != 32) {
        cp_err_set(err, CP_ERR_NOMEM, "SHA-256 failed");
        return -1;
    }
    for (unsigned i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static const char *token_prefix(enum store_token_kind kind)
{
    return kind == STORE_TOKEN_API ? "cpk_" : "cpa_";
}

int store_token_create(struct store *st, const char *name, enum store_token_kind kind,
                       const char *project, char *out, size_t out_size, struct cp_err *err)
{
    bool has_project = project && *project;
    if (check_id("name", name, err) < 0 || (has_project && check_id("project", project, err) < 0))
        return -1;
    if (kind == STORE_TOKEN_API && has_project) {
        cp_err_set(err, CP_ERR_INVALID, "project: an API token sees every project");
        return -1;
    }
    uint8_t raw[TOKEN_BYTES];
    char text[STORE_TOKEN_TEXT_MAX], hex[65];
    if (out_size < 4 + TOKEN_B64_LEN + 1) {
        cp_err_set(err, CP_ERR_INVALID, "token buffer too small");
        return -1;
    }
    if (RAND_bytes(raw, sizeof raw) != 1) {
        cp_err_set(err, CP_ERR_IO, "no random bytes (OpenSSL RAND_bytes failed)");
        return -1;
    }
    memcpy(text, token_prefix(kind), 4);
    base64url(raw, sizeof raw, text + 4);
    if (sha256_hex(text, hex, err) < 0) return -1;
    sqlite3_stmt *s = stmt(st, S_TOKEN_INSERT, err);
    if (!s) return -1;
    bind_text(s, 1, hex);
    sqlite3_bind_int(s, 2, kind);
    bind_text(s, 3, name);
    bind_text(s, 4, has_project ? project : NULL);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)time(NULL));
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_CONSTRAINT) {
        cp_err_set(err, CP_ERR_INVALID, "name: an %s token named '%s' exists already",
                   kind == STORE_TOKEN_API ? "API" : "agent", name);
        return -1;
    }
    if (rc != SQLITE_DONE) return db_fail(st, err, "create token");
    snprintf(out, out_size, "%s", text);
    return 0;
}

static bool token_well_formed(const char *token, enum store_token_kind *kind)
{
    if (!token || strlen(token) != 4 + TOKEN_B64_LEN) return false;
    if (!strncmp(token, "cpa_", 4))
        *kind = STORE_TOKEN_AGENT;
    else if (!strncmp(token, "cpk_", 4))
        *kind = STORE_TOKEN_API;
    else
        return false;
    for (const char *p = token + 4; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static void read_token_row(sqlite3_stmt *s, struct store_token_info *info)
{
    info->kind = sqlite3_column_int(s, 0) == STORE_TOKEN_API ? STORE_TOKEN_API : STORE_TOKEN_AGENT;
    copy_col(s, 1, info->name, sizeof info->name);
    copy_col(s, 2, info->project, sizeof info->project);
    info->created = sqlite3_column_int64(s, 3);
}

int store_token_check(struct store *st, const char *token, struct store_token_info *info,
                      struct cp_err *err)
{
    enum store_token_kind kind;
    char hex[65];
    if (!token_well_formed(token, &kind)) return 0;
    if (sha256_hex(token, hex, err) < 0) return -1;
    sqlite3_stmt *s = stmt(st, S_TOKEN_BY_HASH, err);
    if (!s) return -1;
    bind_text(s, 1, hex);
    int rc = sqlite3_step(s);
    int found = 0;
    if (rc == SQLITE_ROW) {
        read_token_row(s, info);
        found = info->kind == kind;
    } else if (rc != SQLITE_DONE) {
        found = db_fail(st, err, "check token");
    }
    sqlite3_reset(s);
    return found;
}

static void token_row(const struct store *st, sqlite3_stmt *s, void *item, const void *ctx)
{
    (void)st;
    (void)ctx;
    read_token_row(s, item);
}

int store_token_list(struct store *st, struct store_token_info **out, size_t *count,
                     struct cp_err *err)
{
    static const struct row_reader reader = {sizeof **out, token_row, NULL, "list tokens",
                                             "out of memory listing tokens"};
    void *items = NULL;
    int rc = list_rows(st, S_TOKEN_LIST, &reader, &items, count, err);
    *out = items;
    return rc;
}

int store_token_print(struct store *st, FILE *f, struct cp_err *err)
{
    struct store_token_info *list;
    size_t n;
    if (store_token_list(st, &list, &n, err) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        char when[32] = "-";
        time_t t = (time_t)list[i].created;
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(f, "%s %s %s %s\n", list[i].kind == STORE_TOKEN_API ? "api" : "agent", list[i].name,
                list[i].project[0] ? list[i].project : "-", when);
    }
    free(list);
    return 0;
}

int store_token_revoke(struct store *st, const char *name, struct cp_err *err)
{
    if (check_id("name", name, err) < 0) return -1;
    sqlite3_stmt *s = stmt(st, S_TOKEN_DELETE, err);
    if (!s) return -1;
    bind_text(s, 1, name);
    if (run(st, s, err) < 0) return -1;
    if (sqlite3_changes(st->db) == 0) {
        cp_err_set(err, CP_ERR_INVALID, "no token named '%s'", name);
        return -1;
    }
    return 0;
}

/* ---- projects ----------------------------------------------------------------------------- */

const char *store_plan_name(enum store_plan plan)
{
    return plan == STORE_PLAN_ADDON ? "addon" : "free";
}

int store_plan_parse(const char *s, enum store_plan *plan)
{
    if (s && !strcmp(s, "free"))
        *plan = STORE_PLAN_FREE;
    else if (s && !strcmp(s, "addon"))
        *plan = STORE_PLAN_ADDON;
    else
        return -1;
    return 0;
}

static void read_project_row(const struct store *st, sqlite3_stmt *s, struct store_project *p)
{
    copy_col(s, 0, p->id, sizeof p->id);
    p->plan = sqlite3_column_int(s, 1) == STORE_PLAN_ADDON ? STORE_PLAN_ADDON : STORE_PLAN_FREE;
    p->used_s = sqlite3_column_double(s, 2);
    p->exhausted = sqlite3_column_int(s, 3) != 0;
    p->budget_s = plan_budget(st, p->plan);
}

static int project_get(struct store *st, const char *id, struct store_project *out,
                       struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_PROJECT_GET, err);
    if (!s) return -1;
    bind_text(s, 1, id);
    int rc = sqlite3_step(s);
    int found = 0;
    if (rc == SQLITE_ROW) {
        struct store_project tmp;
        read_project_row(st, s, out ? out : &tmp);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = db_fail(st, err, "read project");
    }
    sqlite3_reset(s);
    return found;
}

int store_project_get(struct store *st, const char *id, struct store_project *out,
                      struct cp_err *err)
{
    if (check_id("project", id, err) < 0) return -1;
    return project_get(st, id, out, err);
}

/* Inside a transaction: creates the project on plan when missing. */
static int project_ensure(struct store *st, const char *id, enum store_plan plan,
                          struct store_project *out, struct cp_err *err)
{
    int found = project_get(st, id, out, err);
    if (found != 0) return found < 0 ? -1 : 0;
    sqlite3_stmt *s = stmt(st, S_PROJECT_INSERT, err);
    if (!s) return -1;
    bind_text(s, 1, id);
    sqlite3_bind_int(s, 2, plan);
    if (run(st, s, err) < 0) return -1;
    return project_get(st, id, out, err) == 1 ? 0 : -1;
}

static int project_put_locked(struct store *st, const char *id, enum store_plan plan,
                              struct store_project *out, struct cp_err *err)
{
    struct store_project p;
    if (project_ensure(st, id, plan, &p, err) < 0) return -1;
    if (p.plan != plan) {
        sqlite3_stmt *s = stmt(st, S_PROJECT_SET_PLAN, err);
        if (!s) return -1;
        bind_text(s, 1, id);
        sqlite3_bind_int(s, 2, plan);
        if (run(st, s, err) < 0 || project_get(st, id, &p, err) != 1) return -1;
    }
    if (out) *out = p;
    return 0;
}

int store_project_put(struct store *st, const char *id, enum store_plan plan,
                      struct store_project *out, struct cp_err *err)
{
    if (check_id("project", id, err) < 0 || begin(st, err) < 0) return -1;
    return finish(st, project_put_locked(st, id, plan, out, err), err);
}

static void project_row(const struct store *st, sqlite3_stmt *s, void *item, const void *ctx)
{
    (void)ctx;
    read_project_row(st, s, item);
}

int store_project_list(struct store *st, struct store_project **out, size_t *count,
                       struct cp_err *err)
{
    static const struct row_reader reader = {sizeof **out, project_row, NULL, "list projects",
                                             "out of memory listing projects"};
    void *items = NULL;
    int rc = list_rows(st, S_PROJECT_LIST, &reader, &items, count, err);
    *out = items;
    return rc;
}

json_t *store_env_json(const struct store_env *e)
{
    json_t *session = e->session_id[0] ? json_string(e->session_id) : json_null();
    json_t *lease = e->lease_until ? json_integer(e->lease_until) : json_null();
    return json_pack("{s:s, s:s, s:b, s:o, s:o}", "project", e->project, "id", e->id, "profiling",
                     e->profiling, "session_id", session, "lease_until", lease);
}

static json_t *project_json(struct store *st, const struct store_project *p, struct cp_err *err)
{
    struct store_env *envs;
    size_t n;
    if (store_env_list(st, p->id, false, &envs, &n, err) < 0) return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, store_env_json(&envs[i])) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    free(envs);
    double left = p->budget_s - p->used_s;
    json_t *o = arr ? json_pack("{s:s, s:s, s:f, s:f, s:f, s:b, s:o}", "id", p->id, "plan",
                                store_plan_name(p->plan), "budget_s", p->budget_s, "used_s",
                                p->used_s, "left_s", left > 0 ? left : 0.0, "exhausted",
                                p->exhausted, "environments", arr)
                    : NULL;
    if (!o) cp_err_set(err, CP_ERR_NOMEM, "out of memory building a project");
    return o;
}

int store_project_json(struct store *st, const char *id, json_t **out, struct cp_err *err)
{
    struct store_project p;
    *out = NULL;
    int found = store_project_get(st, id, &p, err);
    if (found != 1) return found;
    *out = project_json(st, &p, err);
    return *out ? 1 : -1;
}

json_t *store_projects_json(struct store *st, struct cp_err *err)
{
    struct store_project *list;
    size_t n;
    if (store_project_list(st, &list, &n, err) < 0) return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *p = project_json(st, &list[i], err);
        if (!p || json_array_append_new(arr, p) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(list);
    if (!arr) {
        if (err->code == CP_OK) cp_err_set(err, CP_ERR_NOMEM, "out of memory listing projects");
        return NULL;
    }
    return json_pack("{s:o}", "projects", arr);
}

/* ---- environments ------------------------------------------------------------------------- */

static void read_env_row(sqlite3_stmt *s, struct store_env *e)
{
    copy_col(s, 0, e->project, sizeof e->project);
    copy_col(s, 1, e->id, sizeof e->id);
    e->profiling = sqlite3_column_int(s, 2) != 0;
    copy_col(s, 3, e->session_id, sizeof e->session_id);
    e->lease_until = sqlite3_column_int64(s, 4);
}

static int env_get(struct store *st, const char *project, const char *id, struct store_env *out,
                   struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_ENV_GET, err);
    if (!s) return -1;
    bind_text(s, 1, project);
    bind_text(s, 2, id);
    int rc = sqlite3_step(s);
    int found = 0;
    if (rc == SQLITE_ROW) {
        struct store_env tmp;
        read_env_row(s, out ? out : &tmp);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = db_fail(st, err, "read environment");
    }
    sqlite3_reset(s);
    return found;
}

/* Inside a transaction: project (free) and environment created when missing. */
static int env_ensure(struct store *st, const char *project, const char *id, struct store_env *out,
                      struct cp_err *err)
{
    if (project_ensure(st, project, STORE_PLAN_FREE, NULL, err) < 0) return -1;
    int found = env_get(st, project, id, out, err);
    if (found != 0) return found < 0 ? -1 : 0;
    sqlite3_stmt *s = stmt(st, S_ENV_INSERT, err);
    if (!s) return -1;
    bind_text(s, 1, project);
    bind_text(s, 2, id);
    if (run(st, s, err) < 0) return -1;
    return env_get(st, project, id, out, err) == 1 ? 0 : -1;
}

static int check_env_names(const char *project, const char *id, struct cp_err *err)
{
    return check_id("project", project, err) < 0 || check_id("environment", id, err) < 0 ? -1 : 0;
}

int store_env_put(struct store *st, const char *project, const char *id, struct store_env *out,
                  struct cp_err *err)
{
    if (check_env_names(project, id, err) < 0 || begin(st, err) < 0) return -1;
    return finish(st, env_ensure(st, project, id, out, err), err);
}

int store_env_get(struct store *st, const char *project, const char *id, struct store_env *out,
                  struct cp_err *err)
{
    if (check_env_names(project, id, err) < 0) return -1;
    return env_get(st, project, id, out, err);
}

static int new_session_id(char out[STORE_SESSION_MAX + 1], struct cp_err *err)
{
    uint8_t raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        cp_err_set(err, CP_ERR_IO, "no random bytes (OpenSSL RAND_bytes failed)");
        return -1;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

static int env_write(struct store *st, const struct store_env *e, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_ENV_SET, err);
    if (!s) return -1;
    bind_text(s, 1, e->project);
    bind_text(s, 2, e->id);
    sqlite3_bind_int(s, 3, e->profiling);
    bind_text(s, 4, e->session_id[0] ? e->session_id : NULL);
    if (e->lease_until)
        sqlite3_bind_int64(s, 5, e->lease_until);
    else
        sqlite3_bind_null(s, 5);
    return run(st, s, err);
}

static int set_profiling_locked(struct store *st, const char *project, const char *id, bool on,
                                const char *session_id, int64_t lease_until, struct store_env *out,
                                struct cp_err *err)
{
    struct store_project p;
    struct store_env e;
    if (env_ensure(st, project, id, &e, err) < 0 || project_get(st, project, &p, err) != 1)
        return -1;
    if (on && (p.exhausted || p.used_s >= p.budget_s)) return STORE_EXHAUSTED;
    if (on) {
        if (session_id && *session_id)
            snprintf(e.session_id, sizeof e.session_id, "%s", session_id);
        else if (!e.profiling || !e.session_id[0])
            if (new_session_id(e.session_id, err) < 0) return -1;
        e.lease_until = lease_until;
    } else {
        e.session_id[0] = '\0';
        e.lease_until = 0;
    }
    e.profiling = on;
    if (env_write(st, &e, err) < 0) return -1;
    if (out) *out = e;
    return 0;
}

int store_env_set_profiling(struct store *st, const char *project, const char *id, bool on,
                            const char *session_id, int64_t lease_until, struct store_env *out,
                            struct cp_err *err)
{
    if (check_env_names(project, id, err) < 0) return -1;
    if (session_id && strlen(session_id) > STORE_SESSION_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "session_id: longer than %d bytes", STORE_SESSION_MAX);
        return -1;
    }
    if (begin(st, err) < 0) return -1;
    int rc = set_profiling_locked(st, project, id, on, session_id, lease_until, out, err);
    if (rc != STORE_EXHAUSTED) return finish(st, rc, err);
    finish(st, -1, err); /* nothing changed: roll back */
    return STORE_EXHAUSTED;
}

int store_env_set_lease(struct store *st, const char *project, const char *id, int64_t lease_until,
                        struct cp_err *err)
{
    if (check_env_names(project, id, err) < 0) return -1;
    sqlite3_stmt *s = stmt(st, S_ENV_SET_LEASE, err);
    if (!s) return -1;
    bind_text(s, 1, project);
    bind_text(s, 2, id);
    if (lease_until)
        sqlite3_bind_int64(s, 3, lease_until);
    else
        sqlite3_bind_null(s, 3);
    if (run(st, s, err) < 0) return -1;
    return sqlite3_changes(st->db) > 0;
}

static void env_row(const struct store *st, sqlite3_stmt *s, void *item, const void *ctx)
{
    (void)st;
    (void)ctx;
    read_env_row(s, item);
}

/* Appends the rows of an environment query to *out. */
static int collect_envs(struct store *st, sqlite3_stmt *s, struct store_env **out, size_t *count,
                        struct cp_err *err)
{
    static const struct row_reader reader = {sizeof **out, env_row, NULL, "list environments",
                                             "out of memory listing environments"};
    void *items = *out;
    int rc = collect_rows(st, s, &reader, &items, count, err);
    *out = items;
    return rc;
}

int store_env_list(struct store *st, const char *project, bool only_on, struct store_env **out,
                   size_t *count, struct cp_err *err)
{
    *out = NULL;
    *count = 0;
    sqlite3_stmt *s = stmt(st, project ? S_ENV_LIST_PROJECT : S_ENV_LIST_ALL, err);
    if (!s) return -1;
    sqlite3_bind_int(s, 1, only_on ? 1 : 0);
    if (project) bind_text(s, 2, project);
    if (collect_envs(st, s, out, count, err) == 0) return 0;
    free(*out);
    *out = NULL;
    *count = 0;
    return -1;
}

/* ---- quota -------------------------------------------------------------------------------- */

static int meta_get(struct store *st, const char *key, int64_t *value, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_META_GET, err);
    if (!s) return -1;
    bind_text(s, 1, key);
    int rc = sqlite3_step(s);
    int found = rc == SQLITE_ROW;
    if (found) *value = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(st, err, "read meta");
    return found;
}

static int meta_set(struct store *st, const char *key, int64_t value, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_META_SET, err);
    if (!s) return -1;
    bind_text(s, 1, key);
    sqlite3_bind_int64(s, 2, value);
    return run(st, s, err);
}

struct active_project {
    char id[STORE_ID_MAX + 1];
    int64_t counted_until; /* min(now, latest lease end) */
};

static void active_project_row(const struct store *st, sqlite3_stmt *s, void *item, const void *ctx)
{
    (void)st;
    int64_t now = *(const int64_t *)ctx;
    struct active_project *a = item;
    copy_col(s, 0, a->id, sizeof a->id);
    bool unleased = sqlite3_column_int64(s, 2) > 0;
    int64_t lease = sqlite3_column_int64(s, 1);
    a->counted_until = unleased || lease > now ? now : lease;
}

static int active_projects(struct store *st, int64_t now, struct active_project **out,
                           size_t *count, struct cp_err *err)
{
    const struct row_reader reader = {sizeof **out, active_project_row, &now, "quota tick",
                                      "out of memory in the quota tick"};
    sqlite3_stmt *s = stmt(st, S_ENV_ACTIVE_BY_PROJECT, err);
    if (!s) return -1;
    void *items = *out;
    int rc = collect_rows(st, s, &reader, &items, count, err);
    *out = items;
    return rc;
}

/* Marks project exhausted and switches its environments off, appending them to stopped. */
static int exhaust_project(struct store *st, const char *project, struct store_env **stopped,
                           size_t *nstopped, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_ENV_LIST_PROJECT, err);
    if (!s) return -1;
    sqlite3_bind_int(s, 1, 1);
    bind_text(s, 2, project);
    if (collect_envs(st, s, stopped, nstopped, err) < 0) return -1;
    if (!(s = stmt(st, S_ENV_OFF_PROJECT, err))) return -1;
    bind_text(s, 1, project);
    if (run(st, s, err) < 0) return -1;
    if (!(s = stmt(st, S_PROJECT_EXHAUST, err))) return -1;
    bind_text(s, 1, project);
    return run(st, s, err);
}

static int charge_project(struct store *st, const struct active_project *a, int64_t last,
                          struct store_env **stopped, size_t *nstopped, struct cp_err *err)
{
    double elapsed = a->counted_until > last ? (double)(a->counted_until - last) : 0.0;
    if (elapsed > 0) {
        sqlite3_stmt *s = stmt(st, S_PROJECT_ADD_USED, err);
        if (!s) return -1;
        bind_text(s, 1, a->id);
        sqlite3_bind_double(s, 2, elapsed);
        if (run(st, s, err) < 0) return -1;
    }
    struct store_project p;
    if (project_get(st, a->id, &p, err) != 1) return -1;
    if (p.used_s < p.budget_s && !p.exhausted) return 0;
    return exhaust_project(st, a->id, stopped, nstopped, err);
}

static int tick_locked(struct store *st, int64_t now, struct store_env **stopped, size_t *nstopped,
                       struct cp_err *err)
{
    int64_t last = now;
    int found = meta_get(st, "last_tick", &last, err);
    if (found < 0) return -1;
    struct active_project *act = NULL;
    size_t nact = 0;
    int rc = found && last < now ? active_projects(st, now, &act, &nact, err) : 0;
    for (size_t i = 0; rc == 0 && i < nact; i++)
        rc = charge_project(st, &act[i], last, stopped, nstopped, err);
    free(act);
    if (rc == 0) rc = meta_set(st, "last_tick", now, err);
    return rc;
}

int store_quota_tick(struct store *st, int64_t now, struct store_env **stopped, size_t *nstopped,
                     struct cp_err *err)
{
    *stopped = NULL;
    *nstopped = 0;
    if (begin(st, err) < 0) return -1;
    int rc = finish(st, tick_locked(st, now, stopped, nstopped, err), err);
    if (rc < 0) {
        free(*stopped);
        *stopped = NULL;
        *nstopped = 0;
    }
    return rc;
}

/* ---- agents ------------------------------------------------------------------------------- */

int store_agent_upsert(struct store *st, const struct store_agent *a, struct cp_err *err)
{
    if (!a->agent_id || !*a->agent_id || strlen(a->agent_id) > STORE_APP_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "agent_id: expected 1 to %d bytes", STORE_APP_MAX);
        return -1;
    }
    char *targets = a->targets ? json_dumps(a->targets, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    sqlite3_stmt *s = stmt(st, S_AGENT_UPSERT, err);
    int rc = -1;
    if (s) {
        bind_text(s, 1, a->agent_id);
        bind_text(s, 2, a->name ? a->name : "");
        bind_text(s, 3, a->node);
        bind_text(s, 4, a->version);
        bind_text(s, 5, targets);
        sqlite3_bind_int(s, 6, a->connected);
        if (a->connected)
            sqlite3_bind_int64(s, 7, a->connected_since);
        else
            sqlite3_bind_null(s, 7);
        sqlite3_bind_int64(s, 8, a->last_seen);
        rc = run(st, s, err);
    }
    free(targets);
    return rc;
}

int store_agent_disconnect(struct store *st, const char *agent_id, int64_t now, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_AGENT_DISCONNECT, err);
    if (!s) return -1;
    bind_text(s, 1, agent_id ? agent_id : "");
    sqlite3_bind_int64(s, 2, now);
    return run(st, s, err);
}

int store_agent_disconnect_all(struct store *st, struct cp_err *err)
{
    return exec_simple(st, S_AGENT_DISCONNECT_ALL, err);
}

static json_t *col_json_text(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? json_string((const char *)t) : json_null();
}

static json_t *agent_row_json(sqlite3_stmt *s)
{
    const unsigned char *targets_text = sqlite3_column_text(s, 7);
    json_t *targets = targets_text ? json_loads((const char *)targets_text, 0, NULL) : NULL;
    if (!targets) targets = json_array();
    json_t *since = sqlite3_column_type(s, 5) == SQLITE_NULL
                        ? json_null()
                        : json_integer(sqlite3_column_int64(s, 5));
    return json_pack("{s:o, s:o, s:o, s:o, s:b, s:o, s:I, s:o}", "agent_id", col_json_text(s, 0),
                     "name", col_json_text(s, 1), "node", col_json_text(s, 2), "version",
                     col_json_text(s, 3), "connected", sqlite3_column_int(s, 4) != 0,
                     "connected_since", since, "last_seen", (json_int_t)sqlite3_column_int64(s, 6),
                     "targets", targets);
}

json_t *store_agents_json(struct store *st, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_AGENT_LIST, err);
    if (!s) return NULL;
    json_t *arr = json_array();
    int rc;
    while (arr && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *o = agent_row_json(s);
        if (!o || json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    sqlite3_reset(s);
    if (!arr) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory listing agents");
        return NULL;
    }
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        db_fail(st, err, "list agents");
        return NULL;
    }
    return arr;
}

/* ---- profiles ----------------------------------------------------------------------------- */

/* "cpu=123,wall=456" */
static int types_text(const struct store_profile_in *p, struct buf *b, struct cp_err *err)
{
    if (p->ntypes > STORE_MAX_TYPES) {
        cp_err_set(err, CP_ERR_INVALID, "profile: more than %d profile types", STORE_MAX_TYPES);
        return -1;
    }
    buf_reset(b);
    if (buf_append_str(b, "") < 0) return -1;
    for (size_t i = 0; i < p->ntypes; i++) {
        const char *t = p->types[i];
        if (!t || !*t || strlen(t) > 32 || strpbrk(t, "=,")) {
            cp_err_set(err, CP_ERR_INVALID, "profile: bad profile type name");
            return -1;
        }
        if (buf_printf(b, "%s%s=%" PRId64, i ? "," : "", t, p->totals[i]) < 0) return -1;
    }
    return 0;
}

static int check_profile(const struct store_profile_in *p, struct cp_err *err)
{
    if (check_env_names(p->project, p->environment, err) < 0 || check_app(p->app, err) < 0)
        return -1;
    if (p->until_ns < p->from_ns) {
        cp_err_set(err, CP_ERR_INVALID, "profile: until before from");
        return -1;
    }
    if (p->pprof_len > STORE_MAX_PPROF || (p->labels && !json_is_object(p->labels))) {
        cp_err_set(err, CP_ERR_INVALID, "profile: too large, or labels not an object");
        return -1;
    }
    return 0;
}

static int insert_profile(struct store *st, const struct store_profile_in *p, struct buf *tmp,
                          struct cp_err *err)
{
    if (check_profile(p, err) < 0 || types_text(p, tmp, err) < 0) return -1;
    size_t bound = ZSTD_compressBound(p->pprof_len);
    uint8_t *z = malloc(bound ? bound : 1);
    char *labels = p->labels ? json_dumps(p->labels, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    size_t zlen =
        z ? ZSTD_compress(z, bound, p->pprof ? (const void *)p->pprof : "", p->pprof_len, 1) : 0;
    sqlite3_stmt *s = NULL;
    int rc = -1;
    if (!z || ZSTD_isError(zlen) || (p->labels && !labels))
        cp_err_set(err, CP_ERR_NOMEM, "out of memory compressing a profile");
    else if ((s = stmt(st, S_PROFILE_INSERT, err))) {
        bind_text(s, 1, p->project);
        bind_text(s, 2, p->environment);
        bind_text(s, 3, p->app);
        sqlite3_bind_int64(s, 4, p->from_ns);
        sqlite3_bind_int64(s, 5, p->until_ns);
        bind_text(s, 6, labels ? labels : "{}");
        bind_text(s, 7, tmp->data);
        sqlite3_bind_int64(s, 8, (sqlite3_int64)p->pprof_len);
        sqlite3_bind_blob64(s, 9, z, zlen, SQLITE_STATIC);
        rc = run(st, s, err);
    }
    free(z);
    free(labels);
    return rc;
}

int store_profiles_add(struct store *st, const struct store_profile_in *items, size_t n,
                       struct cp_err *err)
{
    struct buf tmp = {0};
    if (begin(st, err) < 0) return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = insert_profile(st, &items[i], &tmp, err);
        if (rc < 0 && n > 1) cp_err_prefix(err, "profile %zu", i + 1);
    }
    buf_free(&tmp);
    return finish(st, rc, err);
}

int64_t store_retention(struct store *st, int64_t before_s, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_PROFILE_RETENTION, err);
    if (!s) return -1;
    int64_t before_ns = before_s > INT64_MAX / 1000000000 ? INT64_MAX : before_s * 1000000000;
    sqlite3_bind_int64(s, 1, before_ns);
    if (run(st, s, err) < 0) return -1;
    return sqlite3_changes64(st->db);
}

int64_t store_profile_count(struct store *st, struct cp_err *err)
{
    sqlite3_stmt *s = stmt(st, S_PROFILE_COUNT, err);
    if (!s) return -1;
    int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_reset(s);
    if (n < 0) db_fail(st, err, "count profiles");
    return n;
}

/* Parses "cpu=123,wall=456" in place into row->types / totals (names point into text). */
static void parse_types(char *text, const char **types, int64_t *totals, size_t *n)
{
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok && *n < STORE_MAX_TYPES;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = '\0';
        types[*n] = tok;
        totals[(*n)++] = strtoll(eq + 1, NULL, 10);
    }
}

static int row_pprof(struct store *st, sqlite3_stmt *s, struct store_profile_row *row,
                     struct cp_err *err)
{
    int64_t raw_len = sqlite3_column_int64(s, 6);
    const void *z = sqlite3_column_blob(s, 7);
    size_t zlen = (size_t)sqlite3_column_bytes(s, 7);
    if (raw_len < 0 || raw_len > (int64_t)STORE_MAX_PPROF) {
        cp_err_set(err, CP_ERR_INVALID, "profile %" PRId64 ": bad stored size", row->id);
        return -1;
    }
    buf_reset(&st->scratch);
    if (buf_reserve(&st->scratch, (size_t)raw_len + 1) < 0) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory reading a profile");
        return -1;
    }
    size_t got = raw_len ? ZSTD_decompress(st->scratch.data, (size_t)raw_len, z, zlen) : 0;
    if (ZSTD_isError(got) || got != (size_t)raw_len) {
        cp_err_set(err, CP_ERR_INVALID, "profile %" PRId64 ": stored data is corrupt", row->id);
        return -1;
    }
    row->pprof = (const uint8_t *)st->scratch.data;
    row->pprof_len = got;
    return 0;
}

struct scan {
    int64_t from_ns, to_ns;
    unsigned flags;
    store_profile_fn fn;
    void *ctx;
};

/* One row: 0 continue, 1 stop, -1 error. */
static int scan_row(struct store *st, sqlite3_stmt *s, const struct scan *sc, struct cp_err *err)
{
    struct store_profile_row row = {0};
    const char *types[STORE_MAX_TYPES];
    int64_t totals[STORE_MAX_TYPES];
    row.id = sqlite3_column_int64(s, 0);
    row.app = (const char *)sqlite3_column_text(s, 1);
    row.from_ns = sqlite3_column_int64(s, 2);
    row.until_ns = sqlite3_column_int64(s, 3);
    /* a profile ending exactly at `from` does not overlap, unless it has no length */
    if (row.until_ns == sc->from_ns && row.from_ns < row.until_ns) return 0;
    row.labels_json = (const char *)sqlite3_column_text(s, 4);
    const char *types_text = (const char *)sqlite3_column_text(s, 5);
    char *types_copy = strdup(types_text ? types_text : "");
    if (!types_copy || !row.app || !row.labels_json) {
        free(types_copy);
        cp_err_set(err, CP_ERR_NOMEM, "out of memory reading a profile");
        return -1;
    }
    parse_types(types_copy, types, totals, &row.ntypes);
    row.types = types;
    row.totals = totals;
    int rc = 0;
    if (sc->flags & STORE_ROW_PPROF) rc = row_pprof(st, s, &row, err);
    if (rc == 0) rc = sc->fn(&row, sc->ctx, err);
    free(types_copy);
    return rc;
}

int store_profile_foreach(struct store *st, const char *project, const char *environment,
                          const char *app, int64_t from_ns, int64_t to_ns, unsigned flags,
                          store_profile_fn fn, void *ctx, struct cp_err *err)
{
    bool pprof = flags & STORE_ROW_PPROF;
    enum stmt_id id = app ? (pprof ? S_PROFILE_SCAN_APP_PPROF : S_PROFILE_SCAN_APP)
                          : (pprof ? S_PROFILE_SCAN_ENV_PPROF : S_PROFILE_SCAN_ENV);
    sqlite3_stmt *s = stmt(st, id, err);
    if (!s) return -1;
    bind_text(s, 1, project);
    bind_text(s, 2, environment);
    if (app) bind_text(s, 3, app);
    sqlite3_bind_int64(s, 4, from_ns);
    sqlite3_bind_int64(s, 5, to_ns);
    struct scan sc = {from_ns, to_ns, flags, fn, ctx};
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(s)) == SQLITE_ROW)
        rc = scan_row(st, s, &sc, err);
    sqlite3_reset(s);
    if (rc < 0) return -1;
    if (rc == 0 && step != SQLITE_DONE) return db_fail(st, err, "read profiles");
    return 0;
}
