/* Fuzzes the ingest pprof reader: the input is sniffed and decompressed (gzip, zstd, raw) under a
 * small limit, then decoded; the raw input is also decoded as is, so the fuzzer reaches the
 * protobuf decoder without having to learn a compressor. Whatever decodes must be consistent:
 * every sample's frames inside the frame array, every frame with a function and file string. */
#include "pprof_read.h"

#include <stdlib.h>

static void decode_and_check(const uint8_t *data, size_t size)
{
    struct pprof_decoded d;
    struct cp_err err;
    if (pprof_decode(data, size, &d, &err) < 0) return;
    for (size_t i = 0; i < d.nsamples; i++) {
        if (d.samples[i].first_frame + d.samples[i].depth > d.nframes) abort();
        if (d.ntypes && !d.samples[i].values) abort();
    }
    for (size_t i = 0; i < d.nframes; i++)
        if (!d.frames[i].function || !d.frames[i].file) abort();
    for (size_t t = 0; t < d.ntypes; t++)
        if (!d.type_names[t] || !d.type_units[t]) abort();
    int64_t totals[PPROF_READ_MAX_SAMPLE_TYPES];
    pprof_decoded_totals(&d, totals);
    pprof_decoded_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_and_check(data, size);
    struct buf out = {0};
    struct cp_err err;
    if (pprof_decompress(data, size, 4u << 20, &out, &err) == 0) {
        if (out.len > (4u << 20)) abort();
        decode_and_check((const uint8_t *)out.data, out.len);
    }
    buf_free(&out);
    return 0;
}
