/* Fuzzes the spool file parser (spool files outlive crashes and anyone with access to the
 * directory can write them). Each input is parsed as is, then once more with its length field
 * and CRC-32 rewritten to match, so the fuzzer gets past the checksum into the structure.
 * Whatever decodes must encode back to exactly the same bytes (the format has one spelling). */
#include "spool.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void decode_and_compare(const uint8_t *data, size_t size)
{
    struct profile_record r;
    struct cp_err err;
    if (spool_record_decode(data, size, &r, &err) < 0) return;
    struct buf again = {0};
    if (spool_record_encode(&r, &again, &err) < 0 || again.len != size ||
        memcmp(again.data, data, size) != 0)
        abort();
    buf_free(&again);
    profile_record_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_and_compare(data, size);
    if (size < SPOOL_HEADER_LEN + 4 || size > (1u << 20)) return 0;
    uint8_t *sealed = malloc(size);
    if (!sealed) return 0;
    memcpy(sealed, data, size);
    for (int i = 0; i < 8; i++)
        sealed[8 + i] = (uint8_t)((uint64_t)size >> (8 * i));
    uint32_t crc = (uint32_t)crc32(0L, sealed, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        sealed[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    decode_and_compare(sealed, size);
    free(sealed);
    return 0;
}
