/* Fuzzes the metrics responder's request-head parser and the listen-address parser. The head
 * parser must never read past METRICS_REQUEST_MAX (ASan), must give TOO_LARGE only for
 * oversized input or too many headers, and a COMPLETE result must be stable: the head alone
 * parses to the same request, and the head without its last byte is still incomplete. */
#include "metrics.h"

#include <netinet/in.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_request(const char *data, size_t size, const struct metrics_http_request *r)
{
    if (r->head_len == 0 || r->head_len > size || r->head_len > METRICS_REQUEST_MAX) abort();
    if (!memchr(r->method, '\0', sizeof r->method) || r->method[0] == '\0') abort();
    for (const char *m = r->method; *m; m++)
        if (*m < 'A' || *m > 'Z') abort();
    if (!memchr(r->path, '\0', sizeof r->path)) abort();
    if (r->path[0] && (r->path[0] != '/' || strchr(r->path, '?'))) abort();
    if (r->header_count > METRICS_HEADERS_MAX) abort();
    struct metrics_http_request again;
    if (metrics_http_parse(data, r->head_len, &again) != METRICS_HTTP_COMPLETE ||
        again.head_len != r->head_len || strcmp(again.path, r->path) ||
        strcmp(again.method, r->method) || again.header_count != r->header_count)
        abort();
    if (metrics_http_parse(data, r->head_len - 1, &again) != METRICS_HTTP_INCOMPLETE) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size heap copy, so any read past the end is caught */
    char *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    struct metrics_http_request r;
    enum metrics_http_parse_result res = metrics_http_parse(copy, size, &r);
    if (res == METRICS_HTTP_COMPLETE) check_request(copy, size, &r);
    if (res == METRICS_HTTP_INCOMPLETE && size >= METRICS_REQUEST_MAX) abort();
    if ((unsigned)res > METRICS_HTTP_TOO_LARGE) abort();
    free(copy);

    char text[METRICS_ADDRESS_MAX + 8];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    struct metrics_address a;
    struct cp_err err;
    if (metrics_parse_address(text, &a, &err) == 0 &&
        (a.port < 0 || a.port > 65535 ||
         (a.len != sizeof(struct sockaddr_in) && a.len != sizeof(struct sockaddr_in6))))
        abort();
    return 0;
}
