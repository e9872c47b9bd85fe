/* strtab: string interning with an open-addressing hash table.
 *
 * Design: `strings`/`lens` are the id-indexed arrays (id = insertion order, so they double as
 * pprof's string table); `slots` is a power-of-two table of id + 1 (0 = empty) probed linearly.
 * The table doubles when it would pass 70% load; on growth every string is rehashed (growth is
 * rare and amortized; it saves storing a hash per string). Each string is its own allocation, so
 * its address never changes when the arrays grow. "" is id 0 and is never put in the table: a
 * zero-length lookup answers 0 directly. The hash reads 8 bytes at a time and mixes them with a
 * 64x64->128-bit multiply (folded to 64 bits), which is fast and spreads short names well.
 */
#include "strtab.h"

#include "hash.h"

#include <stdlib.h>
#include <string.h>

#define STRTAB_INITIAL_CAP 64u
#define STRTAB_INITIAL_SLOTS 128u
#define STRTAB_MAX_SLOTS (1u << 31)

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = HASH_K0 ^ (uint64_t)len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = hash_fold_mul(w ^ HASH_K1, h ^ HASH_K2);
    }
    uint64_t tail = 0;
    memcpy(&tail, s + i, len - i);
    return hash_fold_mul(tail ^ HASH_K2, h ^ HASH_K1);
}

static int alloc_slots(struct strtab *st, uint32_t nslots)
{
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return -1;
    uint32_t mask = nslots - 1;
    for (uint32_t id = 1; id < st->count; id++) {
        uint32_t i = (uint32_t)hash_bytes(st->strings[id], st->lens[id]) & mask;
        while (slots[i])
            i = (i + 1) & mask;
        slots[i] = id + 1;
    }
    free(st->slots);
    st->slots = slots;
    st->nslots = nslots;
    return 0;
}

int strtab_init(struct strtab *st)
{
    memset(st, 0, sizeof *st);
    st->strings = malloc(STRTAB_INITIAL_CAP * sizeof *st->strings);
    st->lens = malloc(STRTAB_INITIAL_CAP * sizeof *st->lens);
    st->slots = calloc(STRTAB_INITIAL_SLOTS, sizeof *st->slots);
    char *empty = calloc(1, 1);
    if (!st->strings || !st->lens || !st->slots || !empty) {
        free(empty);
        strtab_free(st);
        return -1;
    }
    st->strings[0] = empty;
    st->lens[0] = 0;
    st->count = 1;
    st->cap = STRTAB_INITIAL_CAP;
    st->nslots = STRTAB_INITIAL_SLOTS;
    return 0;
}

/* Makes room for one more string: id arrays and, past 70% load, the slot table. */
static int reserve_one(struct strtab *st)
{
    if (st->count >= st->cap) {
        if (st->cap > UINT32_MAX / 2) return -1;
        uint32_t cap = st->cap * 2;
        char **strings = realloc(st->strings, (size_t)cap * sizeof *strings);
        if (!strings) return -1;
        st->strings = strings;
        uint32_t *lens = realloc(st->lens, (size_t)cap * sizeof *lens);
        if (!lens) return -1;
        st->lens = lens;
        st->cap = cap;
    }
    if ((uint64_t)st->count * 10 >= (uint64_t)st->nslots * 7) {
        if (st->nslots >= STRTAB_MAX_SLOTS) return -1;
        return alloc_slots(st, st->nslots * 2);
    }
    return 0;
}

uint32_t strtab_intern(struct strtab *st, const char *s, size_t len)
{
    if (len == 0) return 0;
    if (len >= UINT32_MAX) return STRTAB_NOMEM;
    uint64_t h = hash_bytes(s, len);
    uint32_t mask = st->nslots - 1;
    uint32_t i = (uint32_t)h & mask;
    for (uint32_t slot; (slot = st->slots[i]) != 0; i = (i + 1) & mask) {
        uint32_t id = slot - 1;
        if (st->lens[id] == len && memcmp(st->strings[id], s, len) == 0) return id;
    }
    uint32_t nslots_before = st->nslots;
    if (reserve_one(st) < 0) return STRTAB_NOMEM;
    if (st->nslots != nslots_before) { /* the table was rebuilt: find the new empty slot */
        mask = st->nslots - 1;
        for (i = (uint32_t)h & mask; st->slots[i]; i = (i + 1) & mask)
            ;
    }
    char *copy = malloc(len + 1);
    if (!copy) return STRTAB_NOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    uint32_t id = st->count++;
    st->strings[id] = copy;
    st->lens[id] = (uint32_t)len;
    st->slots[i] = id + 1;
    return id;
}

void strtab_free(struct strtab *st)
{
    if (st->strings)
        for (uint32_t id = 0; id < st->count; id++)
            free(st->strings[id]);
    free(st->strings);
    free(st->lens);
    free(st->slots);
    memset(st, 0, sizeof *st);
}
