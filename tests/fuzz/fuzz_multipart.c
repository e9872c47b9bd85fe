/* Fuzzes the multipart/form-data parser. The input's first line is a Content-Type header value:
 * its boundary (when multipart_boundary accepts it) splits the rest, else the boundary "XyZ"
 * does, so the fuzzer explores both the header parameters and the body. Parts must lie inside the
 * body and carry NUL-terminated names. */
#include "multipart.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size < 512 ? size : 512);
    char content_type[513] = "";
    const uint8_t *body = data;
    if (nl) {
        memcpy(content_type, data, (size_t)(nl - data));
        content_type[nl - data] = '\0';
        body = nl + 1;
    }
    size_t len = size - (size_t)(body - data);
    char boundary[MULTIPART_MAX_BOUNDARY + 1];
    struct cp_err err;
    if (multipart_boundary(content_type, boundary, sizeof boundary, &err) < 0)
        strcpy(boundary, "XyZ");
    if (strlen(boundary) == 0 || strlen(boundary) > MULTIPART_MAX_BOUNDARY) abort();
    struct multipart_part *parts = malloc(MULTIPART_MAX_PARTS * sizeof *parts);
    size_t n = 0;
    if (multipart_parse(body, len, boundary, parts, MULTIPART_MAX_PARTS, &n, &err) == 0) {
        if (n > MULTIPART_MAX_PARTS) abort();
        for (size_t i = 0; i < n; i++) {
            if (parts[i].data < body || parts[i].data + parts[i].len > body + len) abort();
            if (!memchr(parts[i].name, 0, sizeof parts[i].name) ||
                !memchr(parts[i].filename, 0, sizeof parts[i].filename) ||
                !memchr(parts[i].content_type, 0, sizeof parts[i].content_type))
                abort();
        }
    } else if (n != 0) {
        abort();
    }
    free(parts);
    return 0;
}
