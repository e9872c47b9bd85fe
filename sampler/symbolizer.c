/* symbolizer: code objects to (qualified name, file, line), cached.
 *
 * Two open-addressing caches:
 *   codes: code address -> interned name and file ids, first line, a copy of the line table, the
 *          bytecode length and a signature (type, name/file/table pointers, first line) used to
 *          re-validate the entry against the target every SYMBOLIZER_RECHECK_TICKS ticks.
 *   lines: (code address, offset, entry generation) -> aggregate frame id, so a steady stack costs
 *          two hash probes per frame and no reads. A refilled code entry gets a new generation,
 *          which makes its old lines unreachable without having to find them.
 * Both are cleared wholesale when full; they are caches, a miss only costs reads.
 */
#include "symbolizer.h"

#include "linetable.h"
#include "pyunicode.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define CODES_MIN_SLOTS 1024
#define CODES_MAX_SLOTS 16384
#define LINES_MIN_SLOTS 4096
#define LINES_MAX_SLOTS 65536
#define CODE_HEADER_MAX 512
#define STR_FIRST_READ 256
#define BYTES_HEADER 64

struct code_signature {
    uint64_t type, name, file, table;
    int32_t firstlineno;
};

struct symbolizer_code {
    uint64_t addr; /* 0 = empty slot */
    uint64_t checked_tick;
    uint32_t recheck_every; /* ticks; doubles after each successful check, see lookup_code */
    uint32_t gen;
    uint32_t name_sid, file_sid;
    int32_t firstlineno;
    uint32_t code_bytes; /* bytecode length, 0 if unknown */
    struct code_signature sig;
    uint8_t *table;
    uint32_t table_len;
};

struct symbolizer_line {
    uint64_t code; /* 0 = empty slot */
    int32_t offset;
    uint32_t gen;
    uint32_t frame_id;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static uint64_t u64_at(const uint8_t *b, int32_t off)
{
    uint64_t v = 0;
    if (off >= 0) memcpy(&v, b + off, sizeof v);
    return v;
}

static int32_t i32_at(const uint8_t *b, int32_t off)
{
    int32_t v = 0;
    if (off >= 0) memcpy(&v, b + off, sizeof v);
    return v;
}

static void read_failed(struct cp_err *err, const char *what, uint64_t addr)
{
    cp_err_set(err, errno == ESRCH ? CP_ERR_NOPROC : CP_ERR_INVALID, "cannot read %s at 0x%llx: %s",
               what, (unsigned long long)addr, strerror(errno));
}

int symbolizer_read_str(const struct memreader *mem, const struct py_offsets *off, uint64_t addr,
                        char *out, size_t outsize, struct cp_err *err)
{
    uint8_t head[STR_FIRST_READ];
    size_t got = sizeof head; /* header and, for most names, the characters: one read */
    if (mem_read(mem, addr, head, got) < 0) { /* near the end of a mapping: the header only */
        got = (size_t)off->unicode_ascii_size;
        if (got > sizeof head || mem_read(mem, addr, head, got) < 0) {
            read_failed(err, "a str object", addr);
            return -1;
        }
    }
    int64_t length;
    memcpy(&length, head + off->unicode_length, sizeof length);
    uint32_t state;
    memcpy(&state, head + off->unicode_state, sizeof state);
    int kind = (state >> 2) & 7, compact = (state >> 5) & 1, ascii = (state >> 6) & 1;
    if (length < 0 || (kind != 1 && kind != 2 && kind != 4)) {
        cp_err_set(err, CP_ERR_INVALID, "not a str object at 0x%llx", (unsigned long long)addr);
        return -1;
    }
    size_t chars = (size_t)length > SYMBOLIZER_MAX_STRING ? SYMBOLIZER_MAX_STRING : (size_t)length;
    size_t nbytes = chars * (size_t)kind;
    uint64_t data_addr;
    if (compact)
        data_addr = addr + (uint64_t)(ascii ? off->unicode_ascii_size : off->unicode_compact_size);
    else if ((size_t)off->unicode_data_any + 8 <= got)
        data_addr = u64_at(head, off->unicode_data_any);
    else if (mem_read_u64(mem, addr + (uint64_t)off->unicode_data_any, &data_addr) < 0)
        data_addr = 0;
    uint8_t data[SYMBOLIZER_MAX_STRING * 4];
    const uint8_t *src;
    if (compact && data_addr - addr + nbytes <= got) {
        src = head + (data_addr - addr);
    } else {
        if (!data_addr || mem_read(mem, data_addr, data, nbytes) < 0) {
            read_failed(err, "str data", data_addr);
            return -1;
        }
        src = data;
    }
    int n = pyunicode_to_utf8(src, chars, kind, out, outsize);
    if (n < 0) {
        cp_err_set(err, CP_ERR_INVALID, "bad str kind %d", kind);
        return -1;
    }
    bool cut_by_decoder = n >= 3 && memcmp(out + n - 3, "...", 3) == 0;
    if ((size_t)length > chars && !cut_by_decoder && (size_t)n + 3 < outsize) /* say it was cut */
        memcpy(out + n, "...", 4);
    return 0;
}

/* Reads a bytes object's contents (at most max bytes) into a malloc'd copy. */
static int read_bytes_object(const struct memreader *mem, const struct py_offsets *off,
                             uint64_t addr, size_t max, uint8_t **out, uint32_t *len,
                             struct cp_err *err)
{
    uint8_t head[BYTES_HEADER];
    if (mem_read(mem, addr, head, (size_t)off->bytes_sval) < 0) {
        read_failed(err, "a bytes object", addr);
        return -1;
    }
    int64_t size;
    memcpy(&size, head + off->bytes_size, sizeof size);
    if (size < 0 || (uint64_t)size > max) {
        cp_err_set(err, CP_ERR_INVALID, "bytes object of size %lld is out of bounds",
                   (long long)size);
        return -1;
    }
    uint8_t *copy = malloc(size ? (size_t)size : 1);
    if (!copy) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    if (size && mem_read(mem, addr + (uint64_t)off->bytes_sval, copy, (size_t)size) < 0) {
        free(copy);
        read_failed(err, "bytes data", addr);
        return -1;
    }
    *out = copy;
    *len = (uint32_t)size;
    return 0;
}

static bool same_signature(const struct code_signature *a, const struct code_signature *b)
{
    return a->type == b->type && a->name == b->name && a->file == b->file &&
           a->table == b->table && a->firstlineno == b->firstlineno;
}

static int read_code_header(struct symbolizer *s, uint64_t code, uint8_t *head,
                            struct code_signature *sig, struct cp_err *err)
{
    const struct py_offsets *off = s->off;
    if (off->code_size <= 0 || off->code_size > CODE_HEADER_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "code object size %d is out of bounds", off->code_size);
        return -1;
    }
    if (mem_read(s->mem, code, head, (size_t)off->code_size) < 0) {
        read_failed(err, "a code object", code);
        return -1;
    }
    sig->type = u64_at(head, off->object_type);
    sig->name = u64_at(head, off->code_qualname >= 0 ? off->code_qualname : off->code_name);
    sig->file = u64_at(head, off->code_filename);
    sig->table = u64_at(head, off->code_linetable);
    sig->firstlineno = i32_at(head, off->code_firstlineno);
    if (s->code_type_addr && sig->type != s->code_type_addr) {
        cp_err_set(err, CP_ERR_INVALID, "0x%llx is not a code object (torn read or freed)",
                   (unsigned long long)code);
        return -1;
    }
    if (!sig->name || !sig->file || !sig->table) {
        cp_err_set(err, CP_ERR_INVALID, "code object 0x%llx has null fields",
                   (unsigned long long)code);
        return -1;
    }
    return 0;
}

static int fill_code(struct symbolizer *s, struct symbolizer_code *e, uint64_t code,
                     struct cp_err *err)
{
    const struct py_offsets *off = s->off;
    uint8_t head[CODE_HEADER_MAX];
    struct code_signature sig;
    s->code_reads++;
    if (read_code_header(s, code, head, &sig, err) < 0) return -1;
    char text[SYMBOLIZER_MAX_STRING * 4 + 4];
    if (symbolizer_read_str(s->mem, off, sig.name, text, sizeof text, err) < 0) return -1;
    uint32_t name_sid = strtab_intern(&s->agg->strings, text, strlen(text));
    if (symbolizer_read_str(s->mem, off, sig.file, text, sizeof text, err) < 0) return -1;
    uint32_t file_sid = strtab_intern(&s->agg->strings, text, strlen(text));
    if (name_sid == STRTAB_NOMEM || file_sid == STRTAB_NOMEM) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return -1;
    }
    uint32_t code_bytes = 0;
    if (off->code_ob_size >= 0) {
        int64_t units = (int64_t)u64_at(head, off->code_ob_size);
        code_bytes = units > 0 && units < (1 << 28) ? (uint32_t)units * 2 : 0;
    } else if (off->code_code >= 0) {
        int64_t size;
        uint64_t bytes_obj = u64_at(head, off->code_code);
        if (bytes_obj &&
            mem_read(s->mem, bytes_obj + (uint64_t)off->bytes_size, &size, sizeof size) == 0 &&
            size > 0 && size < (1 << 28))
            code_bytes = (uint32_t)size;
    }
    uint8_t *table;
    uint32_t table_len;
    if (read_bytes_object(s->mem, off, sig.table, SYMBOLIZER_MAX_LINETABLE, &table, &table_len,
                          err) < 0)
        return -1;
    free(e->table);
    *e = (struct symbolizer_code){
        .addr = code,
        .checked_tick = s->tick,
        .recheck_every = 1,
        .gen = ++s->next_gen ? s->next_gen : ++s->next_gen,
        .name_sid = name_sid,
        .file_sid = file_sid,
        .firstlineno = sig.firstlineno,
        .code_bytes = code_bytes,
        .sig = sig,
        .table = table,
        .table_len = table_len,
    };
    return 0;
}

static void clear_codes(struct symbolizer *s)
{
    for (uint32_t i = 0; i < s->ncodes_slots; i++)
        free(s->codes[i].table);
    memset(s->codes, 0, s->ncodes_slots * sizeof *s->codes);
    s->ncodes = 0;
}

static void clear_lines(struct symbolizer *s)
{
    memset(s->lines, 0, s->nlines_slots * sizeof *s->lines);
    s->nlines = 0;
}

int symbolizer_init(struct symbolizer *s, const struct memreader *mem, const struct py_offsets *off,
                    uint64_t code_type_addr, struct agg *agg)
{
    memset(s, 0, sizeof *s);
    s->mem = mem;
    s->off = off;
    s->code_type_addr = code_type_addr;
    s->agg = agg;
    s->codes = calloc(CODES_MIN_SLOTS, sizeof *s->codes);
    s->lines = calloc(LINES_MIN_SLOTS, sizeof *s->lines);
    if (!s->codes || !s->lines) {
        symbolizer_free(s);
        return -1;
    }
    s->ncodes_slots = CODES_MIN_SLOTS;
    s->nlines_slots = LINES_MIN_SLOTS;
    return 0;
}

void symbolizer_free(struct symbolizer *s)
{
    if (s->codes) clear_codes(s);
    free(s->codes);
    free(s->lines);
    s->codes = NULL;
    s->lines = NULL;
}

static struct symbolizer_code *code_slot(struct symbolizer_code *codes, uint32_t nslots,
                                         uint64_t addr)
{
    uint32_t i = (uint32_t)mix(addr) & (nslots - 1);
    while (codes[i].addr && codes[i].addr != addr)
        i = (i + 1) & (nslots - 1);
    return &codes[i];
}

/* Grows the code table (rehashing) or, at its largest, empties it. */
static void make_room_for_code(struct symbolizer *s)
{
    if ((s->ncodes + 1) * 10 < s->ncodes_slots * 7) return;
    if (s->ncodes_slots < CODES_MAX_SLOTS) {
        uint32_t nslots = s->ncodes_slots * 2;
        struct symbolizer_code *codes = calloc(nslots, sizeof *codes);
        if (codes) {
            for (uint32_t i = 0; i < s->ncodes_slots; i++)
                if (s->codes[i].addr) *code_slot(codes, nslots, s->codes[i].addr) = s->codes[i];
            free(s->codes);
            s->codes = codes;
            s->ncodes_slots = nslots;
            return;
        }
    }
    clear_codes(s);
}

static struct symbolizer_line *line_slot(struct symbolizer *s, uint64_t code, int32_t offset,
                                         uint32_t gen)
{
    uint32_t mask = s->nlines_slots - 1;
    uint32_t i = (uint32_t)mix(code ^ ((uint64_t)(uint32_t)offset << 40) ^ gen) & mask;
    for (;;) {
        struct symbolizer_line *l = &s->lines[i];
        if (!l->code || (l->code == code && l->offset == offset && l->gen == gen)) return l;
        i = (i + 1) & mask;
    }
}

static void make_room_for_line(struct symbolizer *s)
{
    if ((s->nlines + 1) * 10 < s->nlines_slots * 7) return;
    if (s->nlines_slots < LINES_MAX_SLOTS) {
        struct symbolizer_line *lines = calloc(s->nlines_slots * 2, sizeof *lines);
        if (lines) { /* entries are cheap to recompute: start the bigger table empty */
            free(s->lines);
            s->lines = lines;
            s->nlines_slots *= 2;
            s->nlines = 0;
            return;
        }
    }
    clear_lines(s);
}

/* Re-reads the code object's header; refills the entry when it no longer matches (the object was
 * freed and another took its address). Returns the entry, or NULL when it cannot be read. */
static struct symbolizer_code *revalidate(struct symbolizer *s, struct symbolizer_code *e,
                                          uint64_t code, struct cp_err *err)
{
    uint8_t head[CODE_HEADER_MAX];
    struct code_signature sig;
    struct cp_err ignored;
    if (read_code_header(s, code, head, &sig, &ignored) == 0 &&
        same_signature(&sig, &e->sig)) {
        e->checked_tick = s->tick;
        if (e->recheck_every < SYMBOLIZER_RECHECK_TICKS) e->recheck_every *= 2;
        return e;
    }
    s->invalidations++;
    return fill_code(s, e, code, err) == 0 ? e : NULL;
}

/* The entry for code, read or re-validated as needed. A hit costs no read while the offset lies
 * inside the bytecode and the entry was checked recently; young entries are checked after 1, 2,
 * 4, ... ticks (freed-and-reused addresses happen mostly around start-up and exec), old ones
 * every SYMBOLIZER_RECHECK_TICKS. */
static struct symbolizer_code *lookup_code(struct symbolizer *s, uint64_t code, int32_t offset,
                                           struct cp_err *err)
{
    struct symbolizer_code *e = code_slot(s->codes, s->ncodes_slots, code);
    if (e->addr) {
        bool in_code = offset < 0 || !e->code_bytes || (uint32_t)offset < e->code_bytes;
        if (in_code && s->tick - e->checked_tick < e->recheck_every) {
            s->code_hits++;
            return e;
        }
        if (!in_code) {
            s->invalidations++;
            return fill_code(s, e, code, err) == 0 ? e : NULL;
        }
        return revalidate(s, e, code, err);
    }
    make_room_for_code(s);
    e = code_slot(s->codes, s->ncodes_slots, code);
    memset(e, 0, sizeof *e);
    if (fill_code(s, e, code, err) < 0) {
        e->addr = 0;
        return NULL;
    }
    s->ncodes++;
    return e;
}

uint32_t symbolizer_frame(struct symbolizer *s, uint64_t code, int32_t offset, struct cp_err *err)
{
    struct symbolizer_code *e = lookup_code(s, code, offset, err);
    if (!e) return 0;
    struct symbolizer_line *l = line_slot(s, code, offset, e->gen);
    if (l->code) return l->frame_id;
    /* A new offset in a known code object: cheap moment to make sure it is still the same one. */
    if (e->checked_tick != s->tick && !(e = revalidate(s, e, code, err))) return 0;
    int line = offset < 0
                   ? -1
                   : linetable_line(s->off->lines, e->table, e->table_len, e->firstlineno, offset);
    if (line < 0) line = e->firstlineno;
    uint32_t id = agg_frame_id(s->agg, e->name_sid, e->file_sid, line);
    if (!id) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
        return 0;
    }
    make_room_for_line(s);
    l = line_slot(s, code, offset, e->gen);
    *l = (struct symbolizer_line){code, offset, e->gen, id};
    s->nlines++;
    return id;
}
