/* collapsed: writes an aggregate as collapsed ("folded") stacks, "root;...;leaf VALUE" per line.
 *
 * Design: each used frame's label is formatted once into a label cache (frames repeat across
 * stacks far more than they differ), with ';' -> ':' and newlines -> ' ' so a name can never
 * split a frame or a line. Every stack with a positive value becomes one line of text in a
 * single buffer; the lines are then sorted bytewise (stable output that diffs well), lines with
 * equal text (two frames whose labels only differ by the replaced characters) are merged, and
 * only then is the nanosecond sum rounded to microseconds, so the rounding happens once per line.
 */
#include "profile_writers.h"

#include <stdlib.h>
#include <string.h>

#define LABEL_MAX 8192

struct label_cache {
    size_t *off; /* frame id -> offset in text + 1; 0 = not formatted yet */
    uint32_t *len;
    struct buf text;
};

struct line {
    const char *text; /* points into the lines buffer once it stops growing */
    size_t off, len;
    int64_t ns;
};

static void sanitize_label(char *s)
{
    for (; *s; s++) {
        if (*s == ';')
            *s = ':';
        else if (*s == '\n' || *s == '\r')
            *s = ' ';
    }
}

static int cached_label(const struct agg *a, struct label_cache *lc, uint32_t id, const char **s,
                        size_t *len)
{
    if (!lc->off[id]) {
        char label[LABEL_MAX];
        agg_frame_label(a, id, label, sizeof label);
        sanitize_label(label);
        size_t n = strlen(label);
        if (buf_append(&lc->text, label, n + 1) < 0) /* keep the NUL: entries are C strings */
            return -1;
        lc->off[id] = lc->text.len - n;
        lc->len[id] = (uint32_t)n;
    }
    *s = lc->text.data + lc->off[id] - 1;
    *len = lc->len[id];
    return 0;
}

/* Appends "root;...;leaf" of one stack. */
static int append_stack_text(const struct agg *a, const struct agg_stack *st,
                             struct label_cache *lc, struct buf *lines)
{
    const uint32_t *ids = agg_stack_frames(a, st);
    for (uint32_t d = st->depth; d-- > 0;) {
        const char *label;
        size_t n;
        if (cached_label(a, lc, ids[d], &label, &n) < 0 || buf_append(lines, label, n) < 0 ||
            (d > 0 && buf_append_byte(lines, ';') < 0))
            return -1;
    }
    return 0;
}

static int by_text(const void *pa, const void *pb)
{
    const struct line *x = pa, *y = pb;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->text, y->text, n);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static int64_t saturating_add(int64_t x, int64_t y)
{
    int64_t r;
    return __builtin_add_overflow(x, y, &r) ? INT64_MAX : r;
}

static int emit_sorted(struct line *lines, size_t n, struct buf *out)
{
    qsort(lines, n, sizeof *lines, by_text);
    for (size_t i = 0; i < n;) {
        int64_t ns = lines[i].ns;
        size_t j = i + 1;
        for (; j < n && by_text(&lines[i], &lines[j]) == 0; j++)
            ns = saturating_add(ns, lines[j].ns);
        int64_t us = ns / 1000 + (ns % 1000 >= 500);
        if (us > 0 && (buf_append(out, lines[i].text, lines[i].len) < 0 ||
                       buf_printf(out, " %lld\n", (long long)us) < 0))
            return -1;
        i = j;
    }
    return 0;
}

static int build_lines(const struct agg *a, enum agg_dimension dim, struct label_cache *lc,
                       struct buf *text, struct line *lines, size_t *nlines)
{
    size_t n = 0;
    for (uint32_t s = 0; s < a->nstacks; s++) {
        const struct agg_stack *st = &a->stacks[s];
        int64_t ns = agg_stack_value(st, dim);
        if (ns <= 0) continue;
        size_t off = text->len;
        if (append_stack_text(a, st, lc, text) < 0) return -1;
        lines[n++] = (struct line){.off = off, .len = text->len - off, .ns = ns};
    }
    for (size_t i = 0; i < n; i++)
        lines[i].text = text->data + lines[i].off;
    *nlines = n;
    return 0;
}

int collapsed_write(const struct agg *a, enum agg_dimension dim, struct buf *out,
                    struct cp_err *err)
{
    struct label_cache lc = {.off = calloc((size_t)a->nframes + 1, sizeof *lc.off),
                             .len = calloc((size_t)a->nframes + 1, sizeof *lc.len)};
    struct line *lines = malloc(((size_t)a->nstacks + 1) * sizeof *lines);
    struct buf text = {0};
    size_t nlines = 0, len_before = out->len;
    int rc = -1;
    if (lc.off && lc.len && lines && build_lines(a, dim, &lc, &text, lines, &nlines) == 0)
        rc = emit_sorted(lines, nlines, out);
    free(lc.off);
    free(lc.len);
    buf_free(&lc.text);
    free(lines);
    buf_free(&text);
    if (rc < 0) {
        out->len = len_before;
        if (out->data) out->data[out->len] = '\0';
        cp_err_set(err, CP_ERR_NOMEM, "out of memory while writing collapsed stacks");
    }
    return rc;
}
