/* worker_proto: the messages between the agent and its sampler workers (one per container).
 *
 * Contract: a stream socketpair carries frames. A frame is a 12-byte header — type, JSON length,
 * blob length, each a little-endian uint32 — then the JSON text (a jansson object) and the blob
 * (raw bytes, e.g. a gzipped pprof). Bounds: JSON at most WORKER_PROTO_MAX_JSON, blob at most
 * WORKER_PROTO_MAX_BLOB; anything else is a protocol error and the peer is dropped. The reader
 * is incremental (feed it whatever read(2) returned) and never trusts the peer: the worker parses
 * untrusted container memory, so the agent treats everything it sends as outside input.
 *
 * Messages (JSON fields):
 *   agent -> worker
 *     WP_TARGETS  {"rate_hz": int, "targets": [{"pid": int, "start_time": int, "app": int}]}
 *                 the complete set of processes to sample; "app" is the agent's application key
 *     WP_FLUSH    {"period": int}  end of period: send one WP_PROFILE per application, then
 *                 WP_FLUSHED
 *     WP_STOP     {}  exit without flushing
 *   worker -> agent
 *     WP_PROFILE  {"period": int, "app": int, "samples": int, "cpu_ns": int, "wall_ns": int,
 *                  "from_ns": int, "until_ns": int, "python": str}  (times: ns since the epoch)
 *                 + blob: the gzipped pprof of that application for the period
 *     WP_FLUSHED  {"period": int, "note": str, "targets": [{"pid": int, "python": str,
 *                  "samples": int, "errors": int, "attached": bool, "error": str}]}
 *     WP_ATTACHED {"pid": int, "python": str, "attached": bool, "error": str}  right after each
 *                 attach attempt, so the agent's status is current before the period ends
 */
#ifndef CONPROF_AGENT_WORKER_PROTO_H
#define CONPROF_AGENT_WORKER_PROTO_H

#include "buf.h"
#include "error.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define WORKER_PROTO_MAX_JSON (1u << 20)
#define WORKER_PROTO_MAX_BLOB (64u << 20)
#define WORKER_PROTO_HEADER 12

enum worker_msg_type {
    WP_TARGETS = 1,
    WP_FLUSH = 2,
    WP_STOP = 3,
    WP_PROFILE = 101,
    WP_FLUSHED = 102,
    WP_ATTACHED = 103,
};

struct worker_msg {
    enum worker_msg_type type;
    json_t *json;    /* owned; an object */
    struct buf blob; /* owned */
};

void worker_msg_free(struct worker_msg *m);

/* Encodes a frame into out (appends). */
int worker_proto_encode(enum worker_msg_type type, const json_t *json, const void *blob,
                        size_t blob_len, struct buf *out, struct cp_err *err);

/* Writes a whole frame to a blocking fd. */
int worker_proto_send(int fd, enum worker_msg_type type, const json_t *json, const void *blob,
                      size_t blob_len, struct cp_err *err);

struct worker_reader {
    struct buf pending; /* bytes received, not yet a whole frame */
};

/* Appends received bytes. */
int worker_reader_feed(struct worker_reader *r, const void *data, size_t len, struct cp_err *err);

/* Takes the next whole frame: 1 and *out filled, 0 when more bytes are needed, -1 on a protocol
 * error (bad type, oversized, JSON that is not an object) with err set. */
int worker_reader_next(struct worker_reader *r, struct worker_msg *out, struct cp_err *err);

void worker_reader_free(struct worker_reader *r);

#endif
