/* Fuzzes both ingest entry points. The first byte picks one (even: Pyroscope, odd: multipart);
 * the first line after it is the query string or the Content-Type, the rest is the body. A
 * success must hand back well-formed profiles (an application name, labels as an object of
 * strings within the bounds, until >= from); a failure must leave the batch empty. */
#include "ingest.h"

#include <stdlib.h>
#include <string.h>

static void check_batch(const struct ingest_batch *b, int rc)
{
    if (rc < 0) {
        if (b->items || b->count) abort();
        return;
    }
    if (b->count == 0 || b->count > INGEST_MAX_PROFILES) abort();
    for (size_t i = 0; i < b->count; i++) {
        const struct ingest_profile *p = &b->items[i];
        if (!p->app || !*p->app || !json_is_object(p->labels) || p->until_ns < p->from_ns) abort();
        if (json_object_size(p->labels) > INGEST_MAX_LABELS) abort();
        const char *key;
        json_t *value;
        json_object_foreach(p->labels, key, value)
        {
            if (!json_is_string(value) || strlen(key) > INGEST_MAX_KEY ||
                json_string_length(value) > INGEST_MAX_VALUE)
                abort();
        }
        for (size_t t = 0; t < p->ntypes; t++)
            if (!p->types[t]) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int multipart = data[0] & 1;
    data++, size--;
    const uint8_t *nl = memchr(data, '\n', size < 1024 ? size : 1024);
    char head[1025] = "";
    const uint8_t *body = data;
    if (nl) {
        memcpy(head, data, (size_t)(nl - data));
        head[nl - data] = '\0';
        body = nl + 1;
    }
    size_t len = size - (size_t)(body - data);
    struct ingest_batch b = {0};
    struct cp_err err;
    int rc = multipart ? ingest_parse_multipart(head, body, len, &b, &err)
                       : ingest_parse_pyroscope(head, body, len, &b, &err);
    check_batch(&b, rc);
    ingest_batch_free(&b);
    return 0;
}
