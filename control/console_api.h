/* console_api: the console's HTTP API (control/API.md) as plain functions, without libwebsockets:
 * a request {method, path, query, content type, body, bearer token} in, a response {status,
 * content type, body, optional Content-Disposition} out. The server (console_server.c) only moves
 * bytes; everything an HTTP client can observe is decided here, so unit tests drive it directly.
 *
 * Contract: api_handle() never fails as a function: every outcome is a response (errors are JSON
 * {"code":N,"message":"..."}; 500 for store failures). Routes: /api/v1/... needs an API token
 * (cpk_...), POST /ingest and POST /profiling/v1/input an agent token (cpa_...); a missing or
 * unknown token is 401, a token of the other kind 403; unknown paths 404, wrong methods 405.
 * api_preflight() gives the same auth / 404 / 405 / size answer from the request line and headers
 * alone, so the server can refuse before reading a body. Ingest stores every profile of an upload
 * or none (one store transaction). Time is passed in (request.now); nothing here reads a clock.
 * Not thread-safe: one console_api per event loop.
 */
#ifndef CONPROF_CONSOLE_API_H
#define CONPROF_CONSOLE_API_H

#include "buf.h"
#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct hub;

#define API_BODY_MAX (64u * 1024u)                /* /api/v1/... request bodies */
#define API_INGEST_BODY_MAX (32u * 1024u * 1024u) /* /ingest, /profiling/v1/input */

struct console_api_config {
    int64_t retention_minutes; /* --retention, reported by the timeline */
};

struct api_request {
    const char *method; /* "GET", "PUT", "POST", "DELETE", ... */
    const char *path;   /* decoded path without the query: "/api/v1/projects/p1" */
    const char *query;  /* percent-encoded query without '?': "from=1&to=2"; NULL or "" = none */
    const char *content_type; /* NULL or "" when absent */
    const uint8_t *body;
    size_t body_len;
    const char *token; /* the bearer token of Authorization, NULL or "" when absent */
    int64_t now;       /* Unix seconds */
};

struct api_response {
    int status;
    const char *content_type; /* static string */
    char disposition[160];    /* Content-Disposition value, "" when none */
    struct buf body;
};

/* store and hub stay owned by the caller and must outlive the api. */
struct console_api *console_api_new(struct store *store, struct hub *hub,
                                    const struct console_api_config *config, struct cp_err *err);
void console_api_free(struct console_api *api);

/* The largest body the route accepts (0 for an unknown route). */
size_t api_body_limit(const char *path);
/* From the request line and token only: returns 0 when the request may proceed (the body can be
 * read), else fills `resp` with the error (401/403/404/405, or 413 when content_length, -1 when
 * unknown, exceeds the route's limit) and returns its status. */
int api_preflight(struct console_api *api, const char *method, const char *path, const char *token,
                  int64_t content_length, struct api_response *resp);
/* Handles a complete request; `resp` must be zeroed (or freed) before. */
void api_handle(struct console_api *api, const struct api_request *req, struct api_response *resp);
/* Fills resp with the JSON error {"code":status,"message":...}. */
void api_error(struct api_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void api_response_free(struct api_response *resp);

/* The websocket upgrade on /agent/v1: 0 and the token's name and project ("" = every project) when
 * `token` is a valid agent token, else 401 (missing, unknown, revoked) or 403 (an API token). */
int api_check_agent_token(struct console_api *api, const char *token, char *name, size_t name_size,
                          char *project, size_t project_size);

#endif
