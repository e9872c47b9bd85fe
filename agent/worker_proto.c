/* worker_proto: length-prefixed frames of JSON + blob, with an incremental bounded reader. */
#include "worker_proto.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void worker_msg_free(struct worker_msg *m)
{
    if (m->json) json_decref(m->json);
    buf_free(&m->blob);
    memset(m, 0, sizeof *m);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool known_type(uint32_t t)
{
    return t == WP_TARGETS || t == WP_FLUSH || t == WP_STOP || t == WP_PROFILE || t == WP_FLUSHED ||
           t == WP_ATTACHED;
}

int worker_proto_encode(enum worker_msg_type type, const json_t *json, const void *blob,
                        size_t blob_len, struct buf *out, struct cp_err *err)
{
    char *text = json_dumps(json, JSON_COMPACT);
    if (!text) {
        cp_err_set(err, CP_ERR_NOMEM, "cannot encode a worker message");
        return -1;
    }
    size_t json_len = strlen(text);
    if (json_len > WORKER_PROTO_MAX_JSON || blob_len > WORKER_PROTO_MAX_BLOB) {
        free(text);
        cp_err_set(err, CP_ERR_NOMEM, "worker message too large (%zu + %zu bytes)", json_len,
                   blob_len);
        return -1;
    }
    uint8_t header[WORKER_PROTO_HEADER];
    put_u32(header, (uint32_t)type);
    put_u32(header + 4, (uint32_t)json_len);
    put_u32(header + 8, (uint32_t)blob_len);
    int rc = buf_append(out, header, sizeof header) || buf_append(out, text, json_len) ||
                     buf_append(out, blob, blob_len)
                 ? -1
                 : 0;
    free(text);
    if (rc < 0) cp_err_set(err, CP_ERR_NOMEM, "out of memory");
    return rc;
}

int worker_proto_send(int fd, enum worker_msg_type type, const json_t *json, const void *blob,
                      size_t blob_len, struct cp_err *err)
{
    struct buf frame = {0};
    if (worker_proto_encode(type, json, blob, blob_len, &frame, err) < 0) return -1;
    size_t off = 0;
    while (off < frame.len) {
        ssize_t n = write(fd, frame.data + off, frame.len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            cp_err_set(err, CP_ERR_IO, "cannot send to the worker channel: %s", strerror(errno));
            buf_free(&frame);
            return -1;
        }
        off += (size_t)n;
    }
    buf_free(&frame);
    return 0;
}

int worker_reader_feed(struct worker_reader *r, const void *data, size_t len, struct cp_err *err)
{
    if (r->pending.len + len >
        WORKER_PROTO_HEADER + WORKER_PROTO_MAX_JSON + WORKER_PROTO_MAX_BLOB) {
        cp_err_set(err, CP_ERR_INVALID, "worker channel: too much unread data");
        return -1;
    }
    if (buf_append(&r->pending, data, len) < 0) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    return 0;
}

int worker_reader_next(struct worker_reader *r, struct worker_msg *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    if (r->pending.len < WORKER_PROTO_HEADER) return 0;
    const uint8_t *p = (const uint8_t *)r->pending.data;
    uint32_t type = get_u32(p), json_len = get_u32(p + 4), blob_len = get_u32(p + 8);
    if (!known_type(type) || json_len > WORKER_PROTO_MAX_JSON || blob_len > WORKER_PROTO_MAX_BLOB) {
        cp_err_set(err, CP_ERR_INVALID,
                   "worker channel: bad frame header (type %u, json %u bytes, blob %u bytes)", type,
                   json_len, blob_len);
        return -1;
    }
    size_t total = WORKER_PROTO_HEADER + (size_t)json_len + blob_len;
    if (r->pending.len < total) return 0;
    json_error_t jerr;
    json_t *json = json_loadb((const char *)p + WORKER_PROTO_HEADER, json_len, 0, &jerr);
    if (!json || !json_is_object(json)) {
        if (json) json_decref(json);
        cp_err_set(err, CP_ERR_INVALID, "worker channel: message %u is not a JSON object: %s", type,
                   json ? "wrong type" : jerr.text);
        return -1;
    }
    out->type = (enum worker_msg_type)type;
    out->json = json;
    if (buf_append(&out->blob, p + WORKER_PROTO_HEADER + json_len, blob_len) < 0) {
        worker_msg_free(out);
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    memmove(r->pending.data, r->pending.data + total, r->pending.len - total);
    r->pending.len -= total;
    return 1;
}

void worker_reader_free(struct worker_reader *r)
{
    buf_free(&r->pending);
}
