/* Fuzz target: the console's whole HTTP API (console_api.c) — routing, path and query parsing,
 * JSON bodies, ingest (Pyroscope and multipart uploads) and the query endpoints — over a real
 * SQLite store in a temporary directory, with valid API and agent tokens so requests get past
 * authentication. Input: byte 0 picks the method, byte 1 the token; the rest is
 * "path \0 query \0 content-type \0 body". Every request must end in a well-formed response. */
#include "console_api.h"
#include "console_hub.h"
#include "store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct store *st;
static struct hub *hub;
static struct console_api *api;
static char api_token[128], agent_token[128];
static char dir[] = "/tmp/conprof-fuzz-console-XXXXXX";

static void remove_store(void)
{
    static const char *const files[] = {"console.db", "console.db-wal", "console.db-shm"};
    char path[sizeof dir + 32];
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int drop_frame(void *conn, const char *text, size_t len, void *ctx)
{
    (void)conn, (void)text, (void)len, (void)ctx;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct cp_err err;
    if (!mkdtemp(dir)) abort();
    atexit(remove_store);
    if (!(st = store_open(dir, &err))) abort();
    struct hub_config hc = {
        .max_lease_s = 300, .free_budget_s = 900, .period = 45, .upload_timeout = 10};
    struct console_api_config ac = {.retention_minutes = 60};
    if (!(hub = hub_new(st, &hc, drop_frame, NULL, &err)) ||
        !(api = console_api_new(st, hub, &ac, &err)) ||
        store_token_create(st, "fuzz-ui", STORE_TOKEN_API, NULL, api_token, sizeof api_token,
                           &err) < 0 ||
        store_token_create(st, "fuzz-node", STORE_TOKEN_AGENT, NULL, agent_token,
                           sizeof agent_token, &err) < 0)
        abort();
    return 0;
}

/* The next NUL-terminated piece of the input (the rest when there is no NUL). */
static char *take(const uint8_t **data, size_t *size)
{
    const uint8_t *end = memchr(*data, 0, *size);
    size_t n = end ? (size_t)(end - *data) : *size;
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, *data, n);
    s[n] = '\0';
    *data += end ? n + 1 : n;
    *size -= end ? n + 1 : n;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "PUT", "POST", "DELETE", "PATCH"};
    if (size < 2) return 0;
    const char *method = methods[data[0] % 5];
    const char *token = data[1] % 3 == 0 ? api_token : data[1] % 3 == 1 ? agent_token : "";
    data += 2, size -= 2;
    char *path = take(&data, &size), *query = take(&data, &size), *ctype = take(&data, &size);
    struct api_request req = {.method = method,
                              .path = path,
                              .query = query,
                              .content_type = ctype,
                              .body = data,
                              .body_len = size,
                              .token = token,
                              .now = 1790000000};
    struct api_response resp;
    memset(&resp, 0, sizeof resp);
    if (api_preflight(api, method, path, token, (int64_t)size, &resp) == 0) {
        api_response_free(&resp);
        memset(&resp, 0, sizeof resp);
        api_handle(api, &req, &resp);
    }
    if (resp.status < 200 || resp.status > 599 || !resp.content_type) abort();
    api_response_free(&resp);
    free(path), free(query), free(ctype);
    return 0;
}
