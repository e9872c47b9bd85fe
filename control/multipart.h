/* multipart: an RFC 7578 multipart/form-data parser for ingest bodies.
 *
 * Contract: multipart_boundary() extracts the boundary parameter of a Content-Type header value
 * ("multipart/form-data; boundary=xyz" or boundary="x y z"); any other media type is an error.
 * multipart_parse() splits the body into parts, zero-copy: data points into body and is valid as
 * long as body is. Bounded: at most min(max_parts, MULTIPART_MAX_PARTS) parts, each part's header
 * block at most MULTIPART_MAX_HEADER_BYTES; a longer name/filename/content_type is an error, not a
 * truncation. Line ends CRLF (bare LF tolerated). The preamble before the first boundary and the
 * epilogue after the closing "--boundary--" are ignored; a body without the closing delimiter is an
 * error. Header names are case-insensitive; name/filename come from Content-Disposition (quoted or
 * token values, backslash escapes in quoted strings honoured); absent ones are "". Errors are
 * CP_ERR_INVALID naming the problem ("multipart part 3: no Content-Disposition header"); on error
 * *nparts is 0. Stateless, thread-safe.
 */
#ifndef CONPROF_MULTIPART_H
#define CONPROF_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define MULTIPART_MAX_PARTS 64u
#define MULTIPART_MAX_HEADER_BYTES 8192u
#define MULTIPART_MAX_BOUNDARY 70u /* RFC 2046 */

struct multipart_part {
    char name[256];
    char filename[256];
    char content_type[128];
    const uint8_t *data;
    size_t len;
};

int multipart_boundary(const char *content_type, char *out, size_t outsize, struct cp_err *err);
int multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                    struct multipart_part *parts, size_t max_parts, size_t *nparts,
                    struct cp_err *err);

#endif
