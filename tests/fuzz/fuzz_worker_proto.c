/* Fuzzes the agent's reader of worker frames (a worker parses untrusted memory, so what it sends
 * is outside input): arbitrary bytes, fed in arbitrary pieces, give frames or errors. */
#include "worker_proto.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct worker_reader r = {0};
    struct cp_err err;
    size_t off = 0, step = size ? (size_t)data[0] % 17 + 1 : 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        if (worker_reader_feed(&r, data + off, n, &err) < 0) break;
        off += n;
        struct worker_msg m;
        int rc;
        while ((rc = worker_reader_next(&r, &m, &err)) == 1) {
            if (!json_is_object(m.json)) abort();
            worker_msg_free(&m);
        }
        if (rc < 0) break;
    }
    worker_reader_free(&r);
    return 0;
}
