/* hash: the mixing step every conprof hash table uses (strings, frames, stacks).
 *
 * Contract: fast, non-cryptographic, good avalanche for open addressing: fold the 128-bit product
 * of two 64-bit words into 64 bits. Callers seed with HASH_K0 and mix in words with HASH_K1 and
 * HASH_K2. Values are never stored or sent anywhere, so they may change between versions.
 */
#ifndef CONPROF_HASH_H
#define CONPROF_HASH_H

#include <stdint.h>

#define HASH_K0 0x9e3779b97f4a7c15ull
#define HASH_K1 0xd6e8feb86659fd93ull
#define HASH_K2 0xa0761d6478bd642full

static inline uint64_t hash_fold_mul(uint64_t a, uint64_t b)
{
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

#endif
