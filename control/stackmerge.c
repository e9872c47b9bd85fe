/* stackmerge: stacks summed across profiles, written as pprof, collapsed text or flamebearer.
 *
 * Design: three interning levels, each an open-addressing table of dense indices (struct itab:
 * slots hold index + 1 and the full 64-bit hash, so probes rarely compare keys and growing needs
 * no rehash of keys). Strings go to a strtab; a frame is (function id, file id, line); a stack is
 * a run of frame ids in one shared pool, leaf first as given. stackmerge_add_decoded() avoids
 * hashing strings for every frame of every sample: pprof_read hands out strings as pointers into
 * the profile's string table, so within one profile a (function pointer, file pointer, line)
 * triple identifies a frame; a per-call cache maps those triples to merged frame ids and is
 * dropped before the profile can be freed (pointers are never compared across profiles), and
 * the outer frames a sample shares with the previous one are matched by comparing frames.
 *
 * Writers: pprof emits only the frames of stacks whose sum is not 0 (one Location each, id =
 * frame id + 1, one Function per (function, file)); its string table is the merge's strtab
 * followed by the few fixed strings it adds. Collapsed renders each frame's text once and sorts
 * lines with qsort. The flamebearer builds a call tree (children found by a (parent, frame) hash),
 * sorts each node's children by name and walks it depth-first with an explicit stack, so each
 * level's quadruples come out left to right and can be delta-encoded as they are appended. The
 * JSON text is written directly (a json_t per integer made big merges several times slower);
 * stackmerge_flamebearer() parses that text back for callers that want a json_t.
 */
#include "stackmerge.h"

#include "hash.h"
#include "pbwire.h"
#include "pprof_read.h"
#include "strtab.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- index table ------------------------------------------------------------------------- */

struct itab {
    uint32_t *slot; /* index + 1, 0 = empty */
    uint64_t *hash;
    size_t mask; /* nslots - 1 (nslots a power of two) */
    size_t count;
};

typedef bool (*itab_eq_fn)(const void *ctx, uint32_t index);

static void itab_free(struct itab *t)
{
    free(t->slot);
    free(t->hash);
    memset(t, 0, sizeof *t);
}

static int itab_resize(struct itab *t, size_t nslots)
{
    uint32_t *slot = calloc(nslots, sizeof *slot);
    uint64_t *hash = malloc(nslots * sizeof *hash);
    if (!slot || !hash) {
        free(slot);
        free(hash);
        return -1;
    }
    size_t mask = nslots - 1;
    for (size_t i = 0; t->slot && i <= t->mask; i++) {
        if (!t->slot[i]) continue;
        size_t j = t->hash[i] & mask;
        while (slot[j])
            j = (j + 1) & mask;
        slot[j] = t->slot[i];
        hash[j] = t->hash[i];
    }
    free(t->slot);
    free(t->hash);
    t->slot = slot;
    t->hash = hash;
    t->mask = mask;
    return 0;
}

/* Makes room for one more entry (load factor <= 1/2). */
static int itab_reserve(struct itab *t)
{
    if (t->slot && (t->count + 1) * 2 <= t->mask + 1) return 0;
    return itab_resize(t, t->slot ? (t->mask + 1) * 2 : 64);
}

/* The index stored under hash h for which eq holds, or UINT32_MAX with *pos the free slot. */
static uint32_t itab_find(const struct itab *t, uint64_t h, itab_eq_fn eq, const void *ctx,
                          size_t *pos)
{
    size_t i = h & t->mask;
    while (t->slot[i]) {
        if (t->hash[i] == h && eq(ctx, t->slot[i] - 1)) return t->slot[i] - 1;
        i = (i + 1) & t->mask;
    }
    *pos = i;
    return UINT32_MAX;
}

static void itab_put(struct itab *t, size_t pos, uint64_t h, uint32_t index)
{
    t->slot[pos] = index + 1;
    t->hash[pos] = h;
    t->count++;
}

static int grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(*arr, n * elem);
    if (!p) return -1;
    *arr = p;
    *cap = n;
    return 0;
}

/* ---- the merge --------------------------------------------------------------------------- */

struct sm_frame {
    uint32_t function, file; /* strtab ids */
    int64_t line;
};

struct sm_stack {
    size_t first; /* into pool */
    uint32_t depth;
    int64_t value;
};

struct stackmerge {
    struct strtab strings;
    struct sm_frame *frames;
    size_t nframes, frames_cap;
    struct itab frame_index;
    uint32_t *pool; /* frame ids of all stacks, leaf first */
    size_t pool_len, pool_cap;
    struct sm_stack *stacks;
    size_t nstacks, stacks_cap;
    struct itab stack_index;
    int64_t total;
};

struct stackmerge *stackmerge_new(void)
{
    struct stackmerge *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (strtab_init(&m->strings) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

void stackmerge_free(struct stackmerge *m)
{
    if (!m) return;
    strtab_free(&m->strings);
    free(m->frames);
    itab_free(&m->frame_index);
    free(m->pool);
    free(m->stacks);
    itab_free(&m->stack_index);
    free(m);
}

size_t stackmerge_stack_count(const struct stackmerge *m)
{
    return m->nstacks;
}

int64_t stackmerge_total(const struct stackmerge *m)
{
    return m->total;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static uint64_t frame_hash(const struct sm_frame *f)
{
    uint64_t h = hash_fold_mul(HASH_K0 ^ f->function, HASH_K1);
    h = hash_fold_mul(h ^ f->file, HASH_K2);
    return hash_fold_mul(h ^ (uint64_t)f->line, HASH_K1);
}

struct frame_probe {
    const struct stackmerge *m;
    const struct sm_frame *key;
};

static bool frame_eq(const void *ctx, uint32_t index)
{
    const struct frame_probe *p = ctx;
    const struct sm_frame *f = &p->m->frames[index];
    return f->function == p->key->function && f->file == p->key->file && f->line == p->key->line;
}

static int nomem(struct cp_err *err, const char *what)
{
    cp_err_set(err, CP_ERR_NOMEM, "out of memory while %s", what);
    return -1;
}

/* Merged frame id of (function, file, line), interning it when new. */
static int intern_frame(struct stackmerge *m, const char *function, const char *file, int64_t line,
                        uint32_t *id, struct cp_err *err)
{
    function = function ? function : "";
    file = file ? file : "";
    struct sm_frame key = {strtab_intern(&m->strings, function, strlen(function)),
                           strtab_intern(&m->strings, file, strlen(file)), line};
    if (key.function == STRTAB_NOMEM || key.file == STRTAB_NOMEM ||
        itab_reserve(&m->frame_index) < 0)
        return nomem(err, "interning frames");
    uint64_t h = frame_hash(&key);
    struct frame_probe probe = {m, &key};
    size_t pos = 0;
    uint32_t found = itab_find(&m->frame_index, h, frame_eq, &probe, &pos);
    if (found != UINT32_MAX) {
        *id = found;
        return 0;
    }
    if (m->nframes >= UINT32_MAX - 1 ||
        grow_array((void **)&m->frames, &m->frames_cap, m->nframes + 1, sizeof *m->frames) < 0)
        return nomem(err, "interning frames");
    m->frames[m->nframes] = key;
    itab_put(&m->frame_index, pos, h, (uint32_t)m->nframes);
    *id = (uint32_t)m->nframes++;
    return 0;
}

static uint64_t stack_hash(const uint32_t *ids, size_t depth)
{
    uint64_t h = HASH_K0 ^ depth;
    for (size_t i = 0; i < depth; i++)
        h = hash_fold_mul(h ^ ids[i], HASH_K1);
    return hash_fold_mul(h, HASH_K2);
}

struct stack_probe {
    const struct stackmerge *m;
    const uint32_t *ids;
    size_t depth;
};

static bool stack_eq(const void *ctx, uint32_t index)
{
    const struct stack_probe *p = ctx;
    const struct sm_stack *s = &p->m->stacks[index];
    return s->depth == p->depth &&
           (p->depth == 0 || !memcmp(p->m->pool + s->first, p->ids, p->depth * sizeof *p->ids));
}

/* Adds value to the stack of frame ids (leaf first, already truncated). */
static int add_ids(struct stackmerge *m, const uint32_t *ids, size_t depth, int64_t value,
                   struct cp_err *err)
{
    if (itab_reserve(&m->stack_index) < 0) return nomem(err, "merging stacks");
    uint64_t h = stack_hash(ids, depth);
    struct stack_probe probe = {m, ids, depth};
    size_t pos = 0;
    uint32_t found = itab_find(&m->stack_index, h, stack_eq, &probe, &pos);
    if (found == UINT32_MAX) {
        if (m->nstacks >= STACKMERGE_MAX_STACKS) {
            cp_err_set(err, CP_ERR_NOMEM, "merged profile has more than %u distinct stacks",
                       STACKMERGE_MAX_STACKS);
            return -1;
        }
        if (grow_array((void **)&m->stacks, &m->stacks_cap, m->nstacks + 1, sizeof *m->stacks) <
                0 ||
            grow_array((void **)&m->pool, &m->pool_cap, m->pool_len + depth + 1, sizeof *m->pool) <
                0)
            return nomem(err, "merging stacks");
        if (depth) memcpy(m->pool + m->pool_len, ids, depth * sizeof *ids);
        m->stacks[m->nstacks] = (struct sm_stack){m->pool_len, (uint32_t)depth, 0};
        m->pool_len += depth;
        itab_put(&m->stack_index, pos, h, (uint32_t)m->nstacks);
        found = (uint32_t)m->nstacks++;
    }
    m->stacks[found].value = sat_add(m->stacks[found].value, value);
    m->total = sat_add(m->total, value);
    return 0;
}

int stackmerge_add(struct stackmerge *m, const struct stackmerge_frame *frames, size_t depth,
                   int64_t value, struct cp_err *err)
{
    size_t skip = depth > STACKMERGE_MAX_DEPTH ? depth - STACKMERGE_MAX_DEPTH : 0;
    uint32_t ids[STACKMERGE_MAX_DEPTH];
    for (size_t i = skip; i < depth; i++)
        if (intern_frame(m, frames[i].function, frames[i].file, frames[i].line, &ids[i - skip],
                         err) < 0)
            return -1;
    return add_ids(m, ids, depth - skip, value, err);
}

int stackmerge_merge(struct stackmerge *dst, const struct stackmerge *src, struct cp_err *err)
{
    uint32_t *map = malloc((src->nframes + 1) * sizeof *map);
    int rc = map ? 0 : nomem(err, "merging two merges");
    for (size_t f = 0; rc == 0 && f < src->nframes; f++) {
        const struct sm_frame *fr = &src->frames[f];
        rc = intern_frame(dst, strtab_get(&src->strings, fr->function),
                          strtab_get(&src->strings, fr->file), fr->line, &map[f], err);
    }
    uint32_t ids[STACKMERGE_MAX_DEPTH];
    for (size_t s = 0; rc == 0 && s < src->nstacks; s++) {
        const struct sm_stack *st = &src->stacks[s];
        for (uint32_t d = 0; d < st->depth; d++)
            ids[d] = map[src->pool[st->first + d]];
        rc = add_ids(dst, ids, st->depth, st->value, err);
    }
    free(map);
    return rc;
}

/* ---- adding a decoded pprof ------------------------------------------------------------- */

struct ptr_key {
    const char *function, *file;
    int64_t line;
    uint32_t frame_id;
};

struct ptr_cache {
    struct itab index;
    struct ptr_key *keys;
    size_t nkeys, cap;
};

struct ptr_probe {
    const struct ptr_cache *c;
    const struct pprof_frame *f;
};

static bool ptr_eq(const void *ctx, uint32_t index)
{
    const struct ptr_probe *p = ctx;
    const struct ptr_key *k = &p->c->keys[index];
    return k->function == p->f->function && k->file == p->f->file && k->line == p->f->line;
}

static int cached_frame_id(struct stackmerge *m, struct ptr_cache *c, const struct pprof_frame *f,
                           uint32_t *id, struct cp_err *err)
{
    uint64_t h = hash_fold_mul(HASH_K0 ^ (uint64_t)(uintptr_t)f->function, HASH_K1);
    h = hash_fold_mul(h ^ (uint64_t)(uintptr_t)f->file ^ ((uint64_t)f->line << 20), HASH_K2);
    if (itab_reserve(&c->index) < 0) return nomem(err, "merging a profile");
    struct ptr_probe probe = {c, f};
    size_t pos = 0;
    uint32_t found = itab_find(&c->index, h, ptr_eq, &probe, &pos);
    if (found != UINT32_MAX) {
        *id = c->keys[found].frame_id;
        return 0;
    }
    if (intern_frame(m, f->function, f->file, f->line, id, err) < 0) return -1;
    if (grow_array((void **)&c->keys, &c->cap, c->nkeys + 1, sizeof *c->keys) < 0)
        return nomem(err, "merging a profile");
    c->keys[c->nkeys] = (struct ptr_key){f->function, f->file, f->line, *id};
    itab_put(&c->index, pos, h, (uint32_t)c->nkeys++);
    return 0;
}

/* The previous sample of the profile: consecutive samples usually share their outer frames,
 * which are then matched by comparing frames instead of looking each one up. */
struct prev_sample {
    const struct pprof_frame *frames; /* kept frames, leaf first */
    size_t depth;
    uint32_t ids_a[STACKMERGE_MAX_DEPTH], ids_b[STACKMERGE_MAX_DEPTH];
    uint32_t *ids, *spare; /* ids of the previous sample / buffer for the current one */
};

static bool same_frame(const struct pprof_frame *a, const struct pprof_frame *b)
{
    return a->function == b->function && a->file == b->file && a->line == b->line;
}

static int add_sample(struct stackmerge *m, struct ptr_cache *c, struct prev_sample *prev,
                      const struct pprof_decoded *p, const struct pprof_sample *s, int64_t value,
                      struct cp_err *err)
{
    size_t depth = s->depth;
    if (s->first_frame > p->nframes || depth > p->nframes - s->first_frame) {
        cp_err_set(err, CP_ERR_INVALID, "sample frames out of range");
        return -1;
    }
    size_t skip = depth > STACKMERGE_MAX_DEPTH ? depth - STACKMERGE_MAX_DEPTH : 0;
    const struct pprof_frame *frames = p->frames + s->first_frame + skip;
    depth -= skip;
    uint32_t *ids = prev->spare;
    size_t shared = 0; /* outer frames equal to the previous sample's */
    while (shared < depth && shared < prev->depth &&
           same_frame(&frames[depth - 1 - shared], &prev->frames[prev->depth - 1 - shared])) {
        ids[depth - 1 - shared] = prev->ids[prev->depth - 1 - shared];
        shared++;
    }
    for (size_t i = 0; i + shared < depth; i++)
        if (cached_frame_id(m, c, &frames[i], &ids[i], err) < 0) return -1;
    prev->spare = prev->ids;
    prev->ids = ids;
    prev->frames = frames;
    prev->depth = depth;
    return add_ids(m, ids, depth, value, err);
}

int stackmerge_add_decoded(struct stackmerge *m, const struct pprof_decoded *p, size_t type_index,
                           struct cp_err *err)
{
    if (type_index >= p->ntypes) {
        cp_err_set(err, CP_ERR_INVALID, "sample type %zu of %zu", type_index, p->ntypes);
        return -1;
    }
    struct ptr_cache c = {0};
    struct prev_sample *prev = malloc(sizeof *prev);
    int rc = prev ? 0 : nomem(err, "merging a profile");
    if (prev) {
        prev->depth = 0;
        prev->ids = prev->ids_a;
        prev->spare = prev->ids_b;
    }
    for (size_t i = 0; i < p->nsamples && rc == 0; i++) {
        int64_t v = p->samples[i].values[type_index];
        if (v != 0) rc = add_sample(m, &c, prev, p, &p->samples[i], v, err);
    }
    free(prev);
    itab_free(&c.index);
    free(c.keys);
    return rc;
}

/* ---- pprof writer ------------------------------------------------------------------------ */

struct pprof_out {
    const struct stackmerge *m;
    uint32_t *func_of_frame; /* frame id -> Function id, 0 = frame unused */
    struct sm_frame *funcs;  /* Function id - 1 -> (function, file) */
    size_t nfuncs, funcs_cap;
    struct itab func_index;
    uint32_t extra_type, extra_unit, extra_mapping; /* string ids past the strtab */
};

struct func_probe {
    const struct pprof_out *o;
    const struct sm_frame *key;
};

static bool func_eq(const void *ctx, uint32_t index)
{
    const struct func_probe *p = ctx;
    return p->o->funcs[index].function == p->key->function &&
           p->o->funcs[index].file == p->key->file;
}

static int function_of(struct pprof_out *o, uint32_t frame_id)
{
    if (o->func_of_frame[frame_id]) return 0;
    const struct sm_frame *f = &o->m->frames[frame_id];
    struct sm_frame key = {f->function, f->file, 0};
    uint64_t h = hash_fold_mul(HASH_K0 ^ f->function ^ ((uint64_t)f->file << 32), HASH_K1);
    if (itab_reserve(&o->func_index) < 0) return -1;
    struct func_probe probe = {o, &key};
    size_t pos = 0;
    uint32_t found = itab_find(&o->func_index, h, func_eq, &probe, &pos);
    if (found == UINT32_MAX) {
        if (grow_array((void **)&o->funcs, &o->funcs_cap, o->nfuncs + 1, sizeof *o->funcs) < 0)
            return -1;
        o->funcs[o->nfuncs] = key;
        itab_put(&o->func_index, pos, h, (uint32_t)o->nfuncs);
        found = (uint32_t)o->nfuncs++;
    }
    o->func_of_frame[frame_id] = found + 1;
    return 0;
}

static int pprof_tables(struct pprof_out *o)
{
    const struct stackmerge *m = o->m;
    o->func_of_frame = calloc(m->nframes + 1, sizeof *o->func_of_frame);
    if (!o->func_of_frame) return -1;
    for (size_t s = 0; s < m->nstacks; s++) {
        if (!m->stacks[s].value) continue;
        for (uint32_t d = 0; d < m->stacks[s].depth; d++)
            if (function_of(o, m->pool[m->stacks[s].first + d]) < 0) return -1;
    }
    return 0;
}

static int emit_sample(struct buf *out, const struct stackmerge *m, const struct sm_stack *s)
{
    uint64_t value = (uint64_t)s->value;
    return pb_emit_sample(out, m->pool + s->first, s->depth, 1, &value, 1);
}

static int emit_tables(const struct pprof_out *o, struct buf *out)
{
    const struct stackmerge *m = o->m;
    if (pb_emit_python_mapping(out, o->extra_mapping) < 0) return -1;
    for (size_t id = 0; id < m->nframes; id++)
        if (o->func_of_frame[id] &&
            pb_emit_location(out, id + 1, o->func_of_frame[id], m->frames[id].line) < 0)
            return -1;
    for (size_t f = 0; f < o->nfuncs; f++)
        if (pb_emit_function(out, f + 1, o->funcs[f].function, o->funcs[f].file) < 0) return -1;
    return 0;
}

static int emit_strings(const struct stackmerge *m, const char *const *extra, size_t nextra,
                        struct buf *out)
{
    for (uint32_t i = 0; i < m->strings.count; i++)
        if (pb_emit_len_field(out, PB_PROFILE_STRING_TABLE, m->strings.strings[i],
                              m->strings.lens[i]) < 0)
            return -1;
    for (size_t i = 0; i < nextra; i++)
        if (pb_emit_len_field(out, PB_PROFILE_STRING_TABLE, extra[i], strlen(extra[i])) < 0)
            return -1;
    return 0;
}

static int emit_pprof(struct pprof_out *o, const struct stackmerge_pprof_meta *meta,
                      struct buf *out)
{
    const struct stackmerge *m = o->m;
    const char *extra[] = {meta->type ? meta->type : "samples", meta->unit ? meta->unit : "count",
                           "conprof-merge"};
    o->extra_type = m->strings.count;
    o->extra_unit = m->strings.count + 1;
    o->extra_mapping = m->strings.count + 2;
    if (pb_emit_value_type(out, PB_PROFILE_SAMPLE_TYPE, o->extra_type, o->extra_unit) < 0)
        return -1;
    for (size_t s = 0; s < m->nstacks; s++)
        if (m->stacks[s].value && emit_sample(out, m, &m->stacks[s]) < 0) return -1;
    if (emit_tables(o, out) < 0 || emit_strings(m, extra, 3, out) < 0) return -1;
    if (pb_emit_varint_field(out, PB_PROFILE_TIME_NANOS, (uint64_t)meta->time_nanos) < 0 ||
        pb_emit_varint_field(out, PB_PROFILE_DURATION_NANOS, (uint64_t)meta->duration_nanos) < 0 ||
        pb_emit_value_type(out, PB_PROFILE_PERIOD_TYPE, o->extra_type, o->extra_unit) < 0 ||
        pb_emit_varint_field(out, PB_PROFILE_PERIOD, (uint64_t)meta->period) < 0)
        return -1;
    return 0;
}

int stackmerge_encode_pprof(const struct stackmerge *m, const struct stackmerge_pprof_meta *meta,
                            struct buf *out, struct cp_err *err)
{
    struct pprof_out o = {.m = m};
    size_t len_before = out->len;
    int rc = pprof_tables(&o);
    if (rc == 0) rc = emit_pprof(&o, meta, out);
    free(o.func_of_frame);
    free(o.funcs);
    itab_free(&o.func_index);
    if (rc < 0) {
        out->len = len_before;
        if (out->data) out->data[out->len] = '\0';
        return nomem(err, "encoding the merged pprof");
    }
    return 0;
}

int stackmerge_write_pprof(const struct stackmerge *m, const struct stackmerge_pprof_meta *meta,
                           struct buf *out_gzip, struct cp_err *err)
{
    struct buf raw = {0};
    int rc = stackmerge_encode_pprof(m, meta, &raw, err);
    if (rc == 0) rc = pb_gzip_append(raw.data ? raw.data : "", raw.len, out_gzip, err);
    buf_free(&raw);
    return rc;
}

/* ---- collapsed ---------------------------------------------------------------------------- */

/* Appends s with ';' -> ':' and newlines -> ' ' (the collapsed format's separators). */
static int append_sanitized(struct buf *b, const char *s)
{
    size_t start = b->len;
    if (buf_append_str(b, s) < 0) return -1;
    for (size_t i = start; i < b->len; i++) {
        if (b->data[i] == ';') b->data[i] = ':';
        if (b->data[i] == '\n' || b->data[i] == '\r') b->data[i] = ' ';
    }
    return 0;
}

static int frame_text(const struct stackmerge *m, uint32_t id, struct buf *b)
{
    const struct sm_frame *f = &m->frames[id];
    if (append_sanitized(b, strtab_get(&m->strings, f->function)) < 0 ||
        buf_append_str(b, " (") < 0 || append_sanitized(b, strtab_get(&m->strings, f->file)) < 0)
        return -1;
    return buf_printf(b, ":%" PRId64 ")", f->line);
}

struct line_ref {
    const char *text;
    size_t off, len;
};

static int cmp_lines(const void *a, const void *b)
{
    const struct line_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->text + x->off, y->text + y->off, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Renders every used stack's line (without its newline) into text; refs index them. */
static int render_lines(const struct stackmerge *m, struct buf *text, struct line_ref *refs,
                        size_t *nrefs)
{
    size_t *frame_off = malloc((m->nframes + 1) * sizeof *frame_off);
    struct buf names = {0};
    int rc = frame_off ? 0 : -1;
    for (size_t id = 0; rc == 0 && id < m->nframes; id++) {
        frame_off[id] = names.len;
        rc = frame_text(m, (uint32_t)id, &names);
    }
    if (frame_off) frame_off[m->nframes] = names.len;
    *nrefs = 0;
    for (size_t s = 0; rc == 0 && s < m->nstacks; s++) {
        const struct sm_stack *st = &m->stacks[s];
        if (!st->value) continue;
        size_t off = text->len;
        for (uint32_t d = st->depth; rc == 0 && d-- > 0;) {
            uint32_t id = m->pool[st->first + d];
            if (d + 1 != st->depth && buf_append_byte(text, ';') < 0) rc = -1;
            if (rc == 0)
                rc =
                    buf_append(text, names.data + frame_off[id], frame_off[id + 1] - frame_off[id]);
        }
        if (rc == 0 && st->depth == 0) rc = buf_append_str(text, "total");
        if (rc == 0) rc = buf_printf(text, " %" PRId64, st->value) < 0 ? -1 : 0;
        refs[(*nrefs)++] = (struct line_ref){NULL, off, text->len - off};
    }
    free(frame_off);
    buf_free(&names);
    return rc;
}

int stackmerge_write_collapsed(const struct stackmerge *m, struct buf *out, struct cp_err *err)
{
    struct line_ref *refs = malloc((m->nstacks + 1) * sizeof *refs);
    struct buf text = {0};
    size_t n = 0, len_before = out->len;
    int rc = refs ? render_lines(m, &text, refs, &n) : -1;
    for (size_t i = 0; rc == 0 && i < n; i++)
        refs[i].text = text.data;
    if (rc == 0 && n) qsort(refs, n, sizeof *refs, cmp_lines);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (buf_append(out, text.data + refs[i].off, refs[i].len) < 0 ||
            buf_append_byte(out, '\n') < 0)
            rc = -1;
    free(refs);
    buf_free(&text);
    if (rc < 0) {
        out->len = len_before;
        if (out->data) out->data[out->len] = '\0';
        return nomem(err, "writing the collapsed profile");
    }
    return 0;
}

/* ---- flamebearer -------------------------------------------------------------------------- */

struct fb_node {
    uint32_t frame; /* UINT32_MAX for the root */
    uint32_t name;  /* index into names[] */
    int64_t total, self;
    uint32_t first_child, next_sibling; /* node index + 1, 0 = none */
    uint32_t nchildren;
};

struct fb_tree {
    const struct stackmerge *m;
    struct fb_node *nodes;
    size_t nnodes, cap;
    struct itab child_index; /* (parent, frame) -> node */
    struct strtab names;     /* names[i] is string id i + 1 (strtab's id 0 is "") */
    uint32_t *name_of_frame; /* frame id -> names index + 1 */
};

static uint64_t child_hash(uint32_t parent, uint32_t frame)
{
    return hash_fold_mul(HASH_K0 ^ ((uint64_t)parent << 32 | frame), HASH_K1);
}

/* Child lookups compare (parent, frame); nodes remember their frame, and the parent is kept in
 * a side array built during insertion. */
struct child_ctx {
    const struct fb_tree *t;
    const uint32_t *parents;
    uint32_t parent, frame;
};

static bool child_eq(const void *ctx, uint32_t index)
{
    const struct child_ctx *c = ctx;
    return c->parents[index] == c->parent && c->t->nodes[index].frame == c->frame;
}

static int name_for_frame(struct fb_tree *t, uint32_t frame, enum stackmerge_name_style style,
                          uint32_t *name)
{
    if (t->name_of_frame[frame]) {
        *name = t->name_of_frame[frame] - 1;
        return 0;
    }
    const struct sm_frame *f = &t->m->frames[frame];
    const char *fn = strtab_get(&t->m->strings, f->function);
    const char *file = strtab_get(&t->m->strings, f->file);
    char *text = NULL;
    if (style == STACKMERGE_NAMES_PLAIN) {
        struct buf b = {0};
        if (buf_printf(&b, "%s (%s:%" PRId64 ")", fn, file, f->line) < 0) return -1;
        text = b.data;
    } else {
        json_t *loc =
            json_pack("{s:s, s:s, s:I}", "filename", file, "name", fn, "line", (json_int_t)f->line);
        if (!loc) { /* not UTF-8: fall back to an escaped plain name */
            loc = json_pack("{s:s, s:s, s:I}", "filename", "?", "name", "?", "line",
                            (json_int_t)f->line);
        }
        text = loc ? json_dumps(loc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(loc);
    }
    if (!text) return -1;
    uint32_t id = strtab_intern(&t->names, text, strlen(text));
    free(text);
    if (id == STRTAB_NOMEM || id == 0) return -1;
    t->name_of_frame[frame] = id;
    *name = id - 1;
    return 0;
}

static int tree_child(struct fb_tree *t, uint32_t **parents, uint32_t parent, uint32_t frame,
                      enum stackmerge_name_style style, uint32_t *child)
{
    if (itab_reserve(&t->child_index) < 0) return -1;
    uint64_t h = child_hash(parent, frame);
    struct child_ctx c = {t, *parents, parent, frame};
    size_t pos = 0;
    uint32_t found = itab_find(&t->child_index, h, child_eq, &c, &pos);
    if (found != UINT32_MAX) {
        *child = found;
        return 0;
    }
    size_t cap = t->cap;
    if (grow_array((void **)&t->nodes, &t->cap, t->nnodes + 1, sizeof *t->nodes) < 0) return -1;
    if (t->cap != cap) {
        uint32_t *p = realloc(*parents, t->cap * sizeof *p);
        if (!p) return -1;
        *parents = p;
    }
    uint32_t name = 0;
    if (name_for_frame(t, frame, style, &name) < 0) return -1;
    uint32_t id = (uint32_t)t->nnodes++;
    t->nodes[id] = (struct fb_node){frame, name, 0, 0, 0, t->nodes[parent].first_child, 0};
    t->nodes[parent].first_child = id + 1;
    t->nodes[parent].nchildren++;
    (*parents)[id] = parent;
    itab_put(&t->child_index, pos, h, id);
    *child = id;
    return 0;
}

static int build_tree(struct fb_tree *t, enum stackmerge_name_style style)
{
    const struct stackmerge *m = t->m;
    uint32_t *parents = NULL;
    t->name_of_frame = calloc(m->nframes + 1, sizeof *t->name_of_frame);
    if (!t->name_of_frame || grow_array((void **)&t->nodes, &t->cap, 1, sizeof *t->nodes) < 0 ||
        !(parents = malloc(t->cap * sizeof *parents)) ||
        strtab_intern(&t->names, "total", 5) == STRTAB_NOMEM) {
        free(parents);
        return -1;
    }
    t->nodes[0] = (struct fb_node){UINT32_MAX, 0, 0, 0, 0, 0, 0};
    parents[0] = UINT32_MAX;
    t->nnodes = 1;
    int rc = 0;
    for (size_t s = 0; rc == 0 && s < m->nstacks; s++) {
        const struct sm_stack *st = &m->stacks[s];
        if (st->value <= 0) continue;
        uint32_t node = 0;
        t->nodes[0].total = sat_add(t->nodes[0].total, st->value);
        for (uint32_t d = st->depth; rc == 0 && d-- > 0;) {
            rc = tree_child(t, &parents, node, m->pool[st->first + d], style, &node);
            if (rc == 0) t->nodes[node].total = sat_add(t->nodes[node].total, st->value);
        }
        if (rc == 0) t->nodes[node].self = sat_add(t->nodes[node].self, st->value);
    }
    free(parents);
    return rc;
}

struct sort_ctx_entry {
    const char *name;
    uint32_t node;
};

static int cmp_children(const void *a, const void *b)
{
    const struct sort_ctx_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->node > y->node) - (x->node < y->node);
}

/* Relinks every node's children in name order. */
static int sort_children(struct fb_tree *t)
{
    size_t maxc = 0;
    for (size_t i = 0; i < t->nnodes; i++)
        if (t->nodes[i].nchildren > maxc) maxc = t->nodes[i].nchildren;
    struct sort_ctx_entry *tmp = malloc((maxc + 1) * sizeof *tmp);
    if (!tmp) return -1;
    for (size_t i = 0; i < t->nnodes; i++) {
        struct fb_node *n = &t->nodes[i];
        if (n->nchildren < 2) continue;
        size_t k = 0;
        for (uint32_t c = n->first_child; c; c = t->nodes[c - 1].next_sibling)
            tmp[k++] =
                (struct sort_ctx_entry){strtab_get(&t->names, t->nodes[c - 1].name + 1), c - 1};
        qsort(tmp, k, sizeof *tmp, cmp_children);
        n->first_child = tmp[0].node + 1;
        for (size_t j = 0; j < k; j++)
            t->nodes[tmp[j].node].next_sibling = j + 1 < k ? tmp[j + 1].node + 1 : 0;
    }
    free(tmp);
    return 0;
}

struct fb_walk {
    uint32_t node;
    uint32_t level;
    int64_t x; /* left edge */
};

struct fb_levels {
    struct buf *text;  /* per level: "q,q,q,..." without brackets */
    int64_t *prev_end; /* per level: end x of the last node written */
    size_t nlevels;
    int64_t max_self;
};

/* Appends v in decimal (snprintf is the slow part of big flamebearers). */
static int append_int(struct buf *b, int64_t v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

static int emit_node(struct fb_levels *L, const struct fb_node *n, uint32_t level, int64_t x,
                     int64_t self)
{
    if (level >= L->nlevels) {
        L->prev_end[level] = 0;
        L->nlevels = level + 1;
    }
    struct buf *b = &L->text[level];
    int64_t quad[4] = {x - L->prev_end[level], n->total, self, n->name};
    for (int i = 0; i < 4; i++)
        if ((b->len && buf_append_byte(b, ',') < 0) || append_int(b, quad[i]) < 0) return -1;
    L->prev_end[level] = x + n->total;
    if (self > L->max_self) L->max_self = self;
    return 0;
}

/* Self of a node plus the totals of its children below min_ticks (folded into it). */
static int64_t folded_self(const struct fb_tree *t, const struct fb_node *n, int64_t min_ticks)
{
    int64_t self = n->self;
    for (uint32_t c = n->first_child; c; c = t->nodes[c - 1].next_sibling)
        if (t->nodes[c - 1].total < min_ticks) self = sat_add(self, t->nodes[c - 1].total);
    return self;
}

#define FB_MAX_LEVELS (STACKMERGE_MAX_DEPTH + 2)

static int walk_tree(const struct fb_tree *t, struct fb_levels *L, int64_t min_ticks)
{
    struct fb_walk *stack = malloc(t->nnodes * sizeof *stack);
    L->prev_end = calloc(FB_MAX_LEVELS, sizeof *L->prev_end);
    L->text = calloc(FB_MAX_LEVELS, sizeof *L->text);
    int rc = stack && L->prev_end && L->text ? 0 : -1;
    size_t sp = 0;
    if (rc == 0) stack[sp++] = (struct fb_walk){0, 0, 0};
    while (rc == 0 && sp) {
        struct fb_walk w = stack[--sp];
        const struct fb_node *n = &t->nodes[w.node];
        rc = emit_node(L, n, w.level, w.x, folded_self(t, n, min_ticks));
        /* push children right to left so the leftmost is written first */
        size_t first = sp;
        int64_t x = w.x;
        for (uint32_t c = n->first_child; rc == 0 && c; c = t->nodes[c - 1].next_sibling) {
            if (t->nodes[c - 1].total < min_ticks) continue;
            stack[sp++] = (struct fb_walk){c - 1, w.level + 1, x};
            x = sat_add(x, t->nodes[c - 1].total);
        }
        for (size_t i = first, j = sp; i + 1 < j; i++, j--) {
            struct fb_walk tmp = stack[i];
            stack[i] = stack[j - 1];
            stack[j - 1] = tmp;
        }
    }
    free(stack);
    return rc;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the byte starts none. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    size_t n = s[0] < 0x80         ? 1
               : (s[0] >> 5) == 6  ? 2
               : (s[0] >> 4) == 14 ? 3
               : (s[0] >> 3) == 30 ? 4
                                   : 0;
    if (n == 0 || n > left || (n == 2 && s[0] < 0xc2)) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    return n;
}

/* Appends s as a JSON string; bytes that are not UTF-8 become '?'. */
static int append_json_string(struct buf *b, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    if (buf_append_byte(b, '"') < 0) return -1;
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        size_t n = utf8_len(u + i, len - i);
        int rc;
        if (c == '"' || c == '\\')
            rc = buf_append_byte(b, '\\') < 0 ? -1 : buf_append_byte(b, c);
        else if (c < 0x20)
            rc = buf_printf(b, "\\u%04x", c) < 0 ? -1 : 0;
        else if (n == 0)
            rc = buf_append_byte(b, '?');
        else
            rc = buf_append(b, s + i, n);
        if (rc < 0) return -1;
        i += n ? n : 1;
    }
    return buf_append_byte(b, '"');
}

static int write_names(const struct fb_tree *t, struct buf *out)
{
    if (buf_append_str(out, "\"names\":[") < 0) return -1;
    for (uint32_t i = 1; i < t->names.count; i++)
        if ((i > 1 && buf_append_byte(out, ',') < 0) ||
            append_json_string(out, t->names.strings[i], t->names.lens[i]) < 0)
            return -1;
    return buf_append_byte(out, ']');
}

static int write_levels(const struct fb_levels *L, struct buf *out)
{
    if (buf_append_str(out, "\"levels\":[") < 0) return -1;
    for (size_t l = 0; l < L->nlevels; l++)
        if ((l && buf_append_byte(out, ',') < 0) || buf_append_byte(out, '[') < 0 ||
            buf_append(out, L->text[l].data ? L->text[l].data : "", L->text[l].len) < 0 ||
            buf_append_byte(out, ']') < 0)
            return -1;
    return buf_append_byte(out, ']');
}

static int write_str_member(struct buf *out, const char *key, const char *value)
{
    return buf_printf(out, ",\"%s\":", key) < 0 ? -1
                                                : append_json_string(out, value, strlen(value));
}

static int write_metadata(const struct stackmerge_flamebearer_meta *meta, struct buf *out)
{
    if (buf_append_str(out, "\"metadata\":{\"format\":\"single\"") < 0 ||
        write_str_member(out, "spyName", meta->spy_name ? meta->spy_name : "conprof") < 0 ||
        buf_printf(out, ",\"sampleRate\":%d", meta->sample_rate ? meta->sample_rate : 100) < 0 ||
        write_str_member(out, "units", meta->units ? meta->units : "") < 0 ||
        write_str_member(out, "name", meta->name ? meta->name : "") < 0)
        return -1;
    return buf_append_byte(out, '}');
}

/* Top-level members of extra, each ",\"key\":value". */
static int write_extra(const json_t *extra, struct buf *out)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)extra, key, value)
    {
        char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        int rc = text && buf_append_byte(out, ',') == 0 &&
                         append_json_string(out, key, strlen(key)) == 0 &&
                         buf_append_byte(out, ':') == 0 && buf_append_str(out, text) == 0
                     ? 0
                     : -1;
        free(text);
        if (rc < 0) return -1;
    }
    return 0;
}

static int write_flamebearer_text(const struct fb_tree *t, const struct fb_levels *L,
                                  const struct stackmerge_flamebearer_meta *meta,
                                  const json_t *extra, struct buf *out)
{
    if (buf_append_str(out, "{\"version\":1,\"flamebearer\":{") < 0 || write_names(t, out) < 0 ||
        buf_append_byte(out, ',') < 0 || write_levels(L, out) < 0 ||
        buf_append_str(out, ",\"numTicks\":") < 0 || append_int(out, t->nodes[0].total) < 0 ||
        buf_append_str(out, ",\"maxSelf\":") < 0 || append_int(out, L->max_self) < 0 ||
        buf_append_str(out, "},") < 0 || write_metadata(meta, out) < 0 ||
        (extra && write_extra(extra, out) < 0))
        return -1;
    return buf_append_byte(out, '}');
}

int stackmerge_write_flamebearer(const struct stackmerge *m,
                                 const struct stackmerge_flamebearer_meta *meta,
                                 const json_t *extra, struct buf *out, struct cp_err *err)
{
    struct fb_tree t = {.m = m};
    struct fb_levels L = {0};
    size_t len_before = out->len;
    int rc = -1;
    if (strtab_init(&t.names) == 0) {
        if (build_tree(&t, meta->name_style) == 0 && sort_children(&t) == 0 &&
            walk_tree(&t, &L, meta->min_ticks) == 0)
            rc = write_flamebearer_text(&t, &L, meta, extra, out);
        strtab_free(&t.names);
    }
    free(t.nodes);
    free(t.name_of_frame);
    itab_free(&t.child_index);
    free(L.prev_end);
    for (size_t l = 0; L.text && l < FB_MAX_LEVELS; l++)
        buf_free(&L.text[l]);
    free(L.text);
    if (rc < 0) {
        out->len = len_before;
        if (out->data) out->data[out->len] = '\0';
        return nomem(err, "building the flamebearer");
    }
    return 0;
}

json_t *stackmerge_flamebearer(const struct stackmerge *m,
                               const struct stackmerge_flamebearer_meta *meta, struct cp_err *err)
{
    struct buf text = {0};
    if (stackmerge_write_flamebearer(m, meta, NULL, &text, err) < 0) return NULL;
    json_error_t jerr;
    json_t *out = json_loadb(text.data, text.len, 0, &jerr);
    buf_free(&text);
    if (!out) cp_err_set(err, CP_ERR_NOMEM, "flamebearer: %s", jerr.text);
    return out;
}
