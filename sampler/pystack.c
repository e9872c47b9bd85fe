/* pystack: the frame walk.
 *
 * Two layout families share one loop shape: take the frame's bytes (from a bulk copy when we have
 * one, else one read), emit (code, offset), follow the back pointer. What differs is where the
 * bytes come from:
 *   - 3.11+: frames are _PyInterpreterFrame records pushed on the thread's data stack, a chunk of
 *     contiguous memory. One read copies the chunk from its start to the end of the current frame
 *     (at most PYSTACK_CHUNK_WINDOW), which holds every frame of the chunk. Frames elsewhere
 *     (generators, older chunks) are read one by one.
 *   - 3.7-3.10: frames are heap PyFrameObjects, but CPython reuses each code object's "zombie"
 *     frame, so a steady stack keeps its addresses. The previous walk's addresses (the hint) are
 *     read in one vectored read; frames not among them are read one by one.
 * Cycles are caught with a visited set; the depth is bounded.
 */
#include "pystack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FRAME_OWNED_BY_CSTACK 3 /* 3.12-3.13: shim frames of the C stack, not Python code */
#define FRAME_BYTES_MAX 256
#define ADDR_SET_SLOTS 8192 /* power of two, > 2 * PYSTACK_MAX_DEPTH */

struct addr_slot {
    uint64_t addr;
    uint32_t value;
    uint32_t gen;
};

/* An open-addressing map from address to index, emptied in O(1) by bumping gen. */
struct addr_map {
    struct addr_slot *slots;
    uint32_t gen;
};

struct walk_ctx {
    struct pystack_walker *w;
    const uint8_t *window; /* 3.11+: bulk-copied chunk bytes, NULL if none */
    uint64_t window_addr;
    size_t window_len;
    struct {                 /* 3.11+: older chunks, copied when the walk gets there */
        const uint8_t *bytes;
        uint64_t addr;
        size_t len;
    } older[PYSTACK_MAX_CHUNKS - 1];
    int nolder;
    uint64_t next_chunk;     /* the chunk before the last one copied, 0 if none */
    struct addr_map *prefetched; /* 3.7-3.10: frame address -> slot in scratch.window */
    bool prefetch_valid;         /* prefetched holds this walk's reads */
    struct addr_map *visited;
    struct pystack_hint *record; /* 3.7-3.10: where this walk's frame addresses go */
};

static uint32_t addr_hash(uint64_t a)
{
    return (uint32_t)((a >> 3) * 0x9E3779B97F4A7C15ull >> 40);
}

/* Returns the slot for addr (existing or empty). */
static struct addr_slot *addr_map_slot(struct addr_map *m, uint64_t addr)
{
    uint32_t i = addr_hash(addr) & (ADDR_SET_SLOTS - 1);
    for (uint32_t probes = 0; probes < ADDR_SET_SLOTS; probes++) {
        struct addr_slot *s = &m->slots[i];
        if (s->gen != m->gen || s->addr == addr) return s;
        i = (i + 1) & (ADDR_SET_SLOTS - 1);
    }
    return NULL;
}

/* Inserts addr -> value; returns false if addr was already there. */
static bool addr_map_put(struct addr_map *m, uint64_t addr, uint32_t value)
{
    struct addr_slot *s = addr_map_slot(m, addr);
    if (!s || s->gen == m->gen) return false;
    *s = (struct addr_slot){addr, value, m->gen};
    return true;
}

static bool addr_map_get(struct addr_map *m, uint64_t addr, uint32_t *value)
{
    struct addr_slot *s = addr_map_slot(m, addr);
    if (!s || s->gen != m->gen) return false;
    *value = s->value;
    return true;
}

static int addr_map_begin(struct addr_map *m)
{
    if (!m->slots) {
        m->slots = calloc(ADDR_SET_SLOTS, sizeof *m->slots);
        if (!m->slots) return -1;
    }
    if (++m->gen == 0) { /* wrapped: really clear */
        memset(m->slots, 0, ADDR_SET_SLOTS * sizeof *m->slots);
        m->gen = 1;
    }
    return 0;
}

struct pystack_maps {
    struct addr_map prefetched, visited;
};

void pystack_walker_init(struct pystack_walker *w, const struct memreader *mem,
                         const struct py_offsets *off, uint64_t none_addr)
{
    memset(w, 0, sizeof *w);
    w->mem = mem;
    w->off = off;
    w->none_addr = none_addr;
}

void pystack_walker_free(struct pystack_walker *w)
{
    struct pystack_maps *maps = w->scratch.maps;
    if (maps) {
        free(maps->prefetched.slots);
        free(maps->visited.slots);
        free(maps);
    }
    free(w->scratch.window);
    for (int i = 0; i < PYSTACK_MAX_CHUNKS - 1; i++)
        free(w->scratch.older[i]);
    free(w->scratch.ranges);
    memset(&w->scratch, 0, sizeof w->scratch);
}

void pystack_hint_free(struct pystack_hint *h)
{
    free(h->frames);
    memset(h, 0, sizeof *h);
}

static int ensure_window(struct pystack_scratch *s, size_t len)
{
    if (len <= s->window_cap) return 0;
    uint8_t *p = realloc(s->window, len);
    if (!p) return -1;
    s->window = p;
    s->window_cap = len;
    return 0;
}

static uint64_t u64_at(const uint8_t *b, int32_t off)
{
    uint64_t v;
    memcpy(&v, b + off, sizeof v);
    return v;
}

#define CHUNK_HEADER 24 /* _PyStackChunk: previous, size, top (in PyObject* slots); data[] */

/* 3.11+: copies the next older data-stack chunk (its header and used slots). */
static bool copy_older_chunk(struct walk_ctx *c)
{
    if (!c->next_chunk || c->nolder >= PYSTACK_MAX_CHUNKS - 1)
        return false;
    uint64_t header[3];
    uint64_t chunk = c->next_chunk;
    c->next_chunk = 0;
    if (mem_read(c->w->mem, chunk, header, sizeof header) < 0)
        return false;
    uint64_t used = CHUNK_HEADER + header[2] * 8;
    if (header[2] > PYSTACK_CHUNK_WINDOW / 8 || used > header[1] || used > PYSTACK_CHUNK_WINDOW)
        return false; /* torn or not a chunk */
    struct pystack_scratch *s = &c->w->scratch;
    int k = c->nolder;
    if (used > s->older_cap[k]) {
        uint8_t *p = realloc(s->older[k], used);
        if (!p)
            return false;
        s->older[k] = p;
        s->older_cap[k] = used;
    }
    if (mem_read(c->w->mem, chunk, s->older[k], used) < 0)
        return false;
    c->older[k].bytes = s->older[k];
    c->older[k].addr = chunk;
    c->older[k].len = used;
    c->nolder++;
    c->next_chunk = header[0];
    return true;
}

static const uint8_t *in_older_chunks(struct walk_ctx *c, uint64_t addr, size_t fsize)
{
    do {
        for (int k = 0; k < c->nolder; k++)
            if (addr >= c->older[k].addr && addr - c->older[k].addr + fsize <= c->older[k].len)
                return c->older[k].bytes + (addr - c->older[k].addr);
    } while (copy_older_chunk(c));
    return NULL;
}

/* The bytes of the frame at addr: from the bulk copy if there, else read into buf. */
static const uint8_t *frame_bytes(struct walk_ctx *c, uint64_t addr, uint8_t *buf,
                                  struct cp_err *err)
{
    size_t fsize = (size_t)c->w->off->frame_size;
    uint32_t slot;
    if (c->window && addr >= c->window_addr && addr - c->window_addr + fsize <= c->window_len)
        return c->window + (addr - c->window_addr);
    const uint8_t *older = c->window ? in_older_chunks(c, addr, fsize) : NULL;
    if (older)
        return older;
    if (c->prefetch_valid && addr_map_get(c->prefetched, addr, &slot))
        return c->w->scratch.window + (size_t)slot * fsize;
    if (mem_read(c->w->mem, addr, buf, fsize) < 0) {
        cp_err_set(err, errno == ESRCH ? CP_ERR_NOPROC : CP_ERR_INVALID,
                   "cannot read a frame at 0x%llx: %s", (unsigned long long)addr, strerror(errno));
        return NULL;
    }
    return buf;
}

static int32_t instruction_offset(const struct py_offsets *off, const uint8_t *f, uint64_t code)
{
    if (off->lasti == PY_LASTI_INSTR_PTR) {
        uint64_t instr = u64_at(f, off->frame_lasti);
        uint64_t first = code + (uint64_t)off->code_code_adaptive;
        if (instr < first || instr - first > INT32_MAX) return -1;
        return (int32_t)(instr - first);
    }
    int32_t lasti;
    memcpy(&lasti, f + off->frame_lasti, sizeof lasti);
    if (lasti < 0) return -1;
    if (off->lasti == PY_LASTI_CODEUNITS) return lasti > INT32_MAX / 2 ? -1 : lasti * 2;
    return lasti;
}

static bool is_shim(const struct pystack_walker *w, const uint8_t *f, uint64_t code)
{
    const struct py_offsets *off = w->off;
    if (off->frame_owner >= 0 && f[off->frame_owner] == FRAME_OWNED_BY_CSTACK) return true;
    return off->layout == PY_LAYOUT_IFRAME && (code == 0 || code == w->none_addr);
}

static int hint_push(struct pystack_hint *h, uint64_t addr)
{
    if (h->count == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        uint64_t *p = realloc(h->frames, cap * sizeof *p);
        if (!p) return -1;
        h->frames = p;
        h->cap = cap;
    }
    h->frames[h->count++] = addr;
    return 0;
}

static int follow_chain(struct walk_ctx *c, uint64_t addr, struct py_stack *out, struct cp_err *err)
{
    const struct py_offsets *off = c->w->off;
    uint8_t buf[FRAME_BYTES_MAX];
    if (off->frame_size <= 0 || off->frame_size > FRAME_BYTES_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "frame size %d is out of bounds", off->frame_size);
        return -1;
    }
    if (addr_map_begin(c->visited) < 0) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    for (uint32_t steps = 0; addr; steps++) {
        if (steps >= 2 * PYSTACK_MAX_DEPTH || out->depth >= PYSTACK_MAX_DEPTH) {
            out->truncated = true;
            return 0;
        }
        if (!addr_map_put(c->visited, addr, 0)) {
            cp_err_set(err, CP_ERR_INVALID, "cycle in the frame chain (torn read)");
            return -1;
        }
        const uint8_t *f = frame_bytes(c, addr, buf, err);
        if (!f) return -1;
        if (c->record && hint_push(c->record, addr) < 0) {
            cp_err_set(err, CP_ERR_NOMEM, "out of memory");
            return -1;
        }
        uint64_t code = u64_at(f, off->frame_code);
        if (!is_shim(c->w, f, code)) {
            if (!code) {
                cp_err_set(err, CP_ERR_INVALID, "frame without code (torn read)");
                return -1;
            }
            struct py_raw_frame *rf = &out->frames[out->depth++];
            rf->code = code;
            rf->offset = instruction_offset(off, f, code);
        }
        addr = u64_at(f, off->frame_back);
    }
    return 0;
}

static struct pystack_maps *walker_maps(struct pystack_walker *w)
{
    if (!w->scratch.maps) w->scratch.maps = calloc(1, sizeof(struct pystack_maps));
    return w->scratch.maps;
}

/* 3.11+: copy the chunk from its start to the end of the current frame in one read. */
static void copy_chunk_window(struct walk_ctx *c, uint64_t current, uint64_t chunk)
{
    size_t fsize = (size_t)c->w->off->frame_size;
    if (!chunk || current < chunk) return;
    uint64_t end = current + fsize;
    uint64_t start = chunk;
    if (end - start > PYSTACK_CHUNK_WINDOW) start = end - PYSTACK_CHUNK_WINDOW;
    size_t len = (size_t)(end - start);
    if (ensure_window(&c->w->scratch, len) < 0 ||
        mem_read(c->w->mem, start, c->w->scratch.window, len) < 0)
        return; /* fall back to frame-by-frame reads */
    c->window = c->w->scratch.window;
    c->window_addr = start;
    c->window_len = len;
    if (start == chunk && len >= 8) /* the header is in the copy: remember the older chunk */
        memcpy(&c->next_chunk, c->window, sizeof c->next_chunk);
}

/* 3.7-3.10: read the previous walk's frames in one vectored read. */
static void prefetch_hint(struct walk_ctx *c, const struct pystack_hint *hint)
{
    struct pystack_scratch *s = &c->w->scratch;
    size_t fsize = (size_t)c->w->off->frame_size;
    uint32_t n = hint->count;
    if (n == 0 || ensure_window(s, n * fsize) < 0) return;
    if (n > s->ranges_cap) {
        struct mem_range *r = realloc(s->ranges, n * sizeof *r);
        if (!r) return;
        s->ranges = r;
        s->ranges_cap = n;
    }
    for (uint32_t i = 0; i < n; i++)
        s->ranges[i] = (struct mem_range){hint->frames[i], s->window + i * fsize, fsize};
    int got = 0;
    for (uint32_t done = 0; done < n;) {
        int batch = (int)(n - done < 1024 ? n - done : 1024);
        int k = mem_readv(c->w->mem, s->ranges + done, batch);
        if (k <= 0) break;
        got += k;
        done += (uint32_t)k;
        if (k < batch) break;
    }
    if (got <= 0 || addr_map_begin(c->prefetched) < 0) return;
    for (int i = 0; i < got; i++)
        addr_map_put(c->prefetched, hint->frames[i], (uint32_t)i);
    c->prefetch_valid = true;
}

int pystack_walk(struct pystack_walker *w, const struct py_thread *t, struct pystack_hint *hint,
                 struct py_stack *out, struct cp_err *err)
{
    const struct py_offsets *off = w->off;
    struct pystack_maps *maps = walker_maps(w);
    out->depth = 0;
    out->truncated = false;
    if (!maps) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    struct walk_ctx c = {.w = w, .prefetched = &maps->prefetched, .visited = &maps->visited};
    uint64_t top = t->frame;
    if (off->layout == PY_LAYOUT_FRAMEOBJECT) {
        if (hint) {
            prefetch_hint(&c, hint);
            hint->count = 0; /* refilled by this walk (the prefetch copies stay valid) */
            c.record = hint;
        }
        return follow_chain(&c, top, out, err);
    }
    if (off->layout == PY_LAYOUT_CFRAME && top &&
        mem_read_u64(w->mem, top + (uint64_t)off->cframe_current_frame, &top) < 0) {
        cp_err_set(err, errno == ESRCH ? CP_ERR_NOPROC : CP_ERR_INVALID,
                   "cannot read the current frame: %s", strerror(errno));
        return -1;
    }
    if (top) copy_chunk_window(&c, top, t->datastack_chunk);
    return follow_chain(&c, top, out, err);
}
