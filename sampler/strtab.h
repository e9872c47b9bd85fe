/* strtab: interns strings; each distinct string gets a small stable id.
 *
 * Contract: id 0 is always the empty string; ids are dense (0..count-1) in insertion order, which
 * is what pprof's string table wants. Interned text is copied and stays valid and at the same
 * address until strtab_free(). Lookups and inserts are O(1) (open addressing). Returns
 * STRTAB_NOMEM when memory runs out. Not thread-safe.
 */
#ifndef CONPROF_STRTAB_H
#define CONPROF_STRTAB_H

#include <stddef.h>
#include <stdint.h>

#define STRTAB_NOMEM UINT32_MAX

struct strtab {
    char **strings; /* id -> text (NUL-terminated) */
    uint32_t *lens; /* id -> length */
    uint32_t count, cap;
    uint32_t *slots; /* hash slot -> id + 1, 0 = empty */
    uint32_t nslots;
};

int strtab_init(struct strtab *st);
uint32_t strtab_intern(struct strtab *st, const char *s, size_t len);
static inline const char *strtab_get(const struct strtab *st, uint32_t id)
{
    return id < st->count ? st->strings[id] : "";
}
void strtab_free(struct strtab *st);

#endif
