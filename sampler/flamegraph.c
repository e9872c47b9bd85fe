/* flamegraph: writes an aggregate as a self-contained interactive flame graph SVG.
 *
 * Design: the stacks (root first) are merged into a tree whose nodes carry the summed value of the
 * chosen dimension and the sample count; a (parent, frame) hash table finds a child in O(1) while
 * merging (and the root part shared with the previous stack is not looked up at all), and
 * afterwards each node's children are sorted by label (then frame id) so the output is stable.
 * Layout is classic flamegraph.pl style: root ("all") at the bottom, width proportional to value at
 * a 1200 px canvas; a node narrower than 0.1 px is left out with its subtree (its weight stays in
 * the parent). The tree is walked twice without recursion (depth can reach AGG_MAX_DEPTH): once to
 * find the height, once to write one <g> per node holding a <title> tooltip "label — ms, samples,
 * %", a <rect> and a pre-truncated <text>. A small inline script (no network) reads those elements
 * back for hover details, click-to-zoom and regex search. Labels are cleaned for XML 1.0 (control
 * characters and invalid UTF-8 become '?') before escaping, so any name read from a process still
 * gives a well-formed document.
 */
#include "profile_writers.h"

#include <stdlib.h>
#include <string.h>

#define FG_WIDTH 1200.0
#define FG_PAD 10.0
#define FG_FRAME_H 16.0
#define FG_TOP 64.0
#define FG_BOTTOM 34.0
#define FG_FONT 12.0
#define FG_CHAR_W (FG_FONT * 0.59)
#define FG_MIN_PX 0.1
#define FG_LABEL_MAX 8192

struct fg_node {
    uint32_t frame; /* 0 for the root */
    uint32_t parent, first_child, next_sibling;
    int64_t value, x; /* x: offset from the left edge, in value units */
    uint64_t samples;
};

struct flame {
    const struct agg *a;
    enum agg_dimension dim;
    struct fg_node *nodes;
    uint32_t nnodes, cap;
    uint32_t *slots; /* (parent, frame) hash -> node index; 0 = empty (the root is no child) */
    uint32_t nslots;
    size_t *label_off; /* frame id -> offset in labels + 1; 0 = not formatted yet */
    struct buf labels;
    double scale; /* px per value unit */
    double height;
};

/* --- labels safe for XML --- */

/* Length of the valid UTF-8 sequence at s that XML 1.0 allows, or 0. */
static size_t xml_char_len(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80) return c >= 0x20 ? 1 : 0;
    size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    unsigned lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0xc2 || c > 0xf4) return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f; /* no UTF-16 surrogates */
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    if (c == 0xef && s[1] == 0xbf && (s[2] == 0xbe || s[2] == 0xbf)) return 0; /* U+FFFE, U+FFFF */
    return n;
}

static void xml_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = xml_char_len(p);
        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
}

static const char *frame_label(struct flame *fg, uint32_t frame)
{
    if (frame == 0) return "all";
    if (!fg->label_off[frame]) {
        char label[FG_LABEL_MAX];
        agg_frame_label(fg->a, frame, label, sizeof label);
        xml_clean(label);
        size_t off = fg->labels.len;
        if (buf_append(&fg->labels, label, strlen(label) + 1) < 0) return NULL;
        fg->label_off[frame] = off + 1;
    }
    return fg->labels.data + fg->label_off[frame] - 1;
}

/* --- merging stacks into a tree --- */

static inline uint32_t child_hash(uint32_t parent, uint32_t frame)
{
    uint64_t h = ((uint64_t)parent << 32 | frame) * 0x9e3779b97f4a7c15ull; /* splitmix64 end */
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(h ^ (h >> 31));
}

static int grow_nodes(struct flame *fg)
{
    if (fg->nnodes < fg->cap && (uint64_t)fg->nnodes * 10 < (uint64_t)fg->nslots * 7) return 0;
    if (fg->cap > UINT32_MAX / 4) return -1;
    uint32_t cap = fg->cap * 2, nslots = cap * 2;
    struct fg_node *nodes = realloc(fg->nodes, (size_t)cap * sizeof *nodes);
    if (!nodes) return -1;
    fg->nodes = nodes;
    fg->cap = cap;
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return -1;
    for (uint32_t n = 1; n < fg->nnodes; n++) {
        uint32_t i = child_hash(nodes[n].parent, nodes[n].frame) & (nslots - 1);
        while (slots[i])
            i = (i + 1) & (nslots - 1);
        slots[i] = n;
    }
    free(fg->slots);
    fg->slots = slots;
    fg->nslots = nslots;
    return 0;
}

/* The child of `parent` for `frame`, created if needed; 0 when memory runs out. */
static uint32_t child_of(struct flame *fg, uint32_t parent, uint32_t frame)
{
    uint32_t h = child_hash(parent, frame), mask = fg->nslots - 1, i = h & mask;
    for (uint32_t n; (n = fg->slots[i]) != 0; i = (i + 1) & mask)
        if (fg->nodes[n].parent == parent && fg->nodes[n].frame == frame) return n;
    uint32_t nslots_before = fg->nslots;
    if (grow_nodes(fg) < 0) return 0;
    if (fg->nslots != nslots_before) {
        mask = fg->nslots - 1;
        for (i = h & mask; fg->slots[i]; i = (i + 1) & mask)
            ;
    }
    uint32_t n = fg->nnodes++;
    fg->nodes[n] = (struct fg_node){.frame = frame, .parent = parent};
    fg->nodes[n].next_sibling = fg->nodes[parent].first_child;
    fg->nodes[parent].first_child = n;
    fg->slots[i] = n;
    return n;
}

/* Adds each stack root first. Consecutive stacks mostly share their root frames (same thread,
 * same entry point), so the node path of the previous stack is kept and its common part is
 * reused without hash lookups. */
static int merge_stacks(struct flame *fg)
{
    const struct agg *a = fg->a;
    uint32_t *path = malloc(((size_t)AGG_MAX_DEPTH + 1) * sizeof *path); /* level -> node */
    if (!path) return -1;
    const uint32_t *prev = NULL;
    uint32_t prev_depth = 0;
    path[0] = 0;
    for (uint32_t s = 0; s < a->nstacks; s++) {
        const struct agg_stack *st = &a->stacks[s];
        int64_t v = agg_stack_value(st, fg->dim);
        if (v <= 0 || st->depth > AGG_MAX_DEPTH) continue;
        const uint32_t *ids = agg_stack_frames(a, st);
        uint32_t depth = st->depth, common = 0;
        while (common < depth && common < prev_depth &&
               ids[depth - 1 - common] == prev[prev_depth - 1 - common])
            common++;
        for (uint32_t level = common; level < depth; level++) {
            path[level + 1] = child_of(fg, path[level], ids[depth - 1 - level]);
            if (path[level + 1] == 0) {
                free(path);
                return -1;
            }
        }
        for (uint32_t level = 0; level <= depth; level++) {
            fg->nodes[path[level]].value += v;
            fg->nodes[path[level]].samples += st->samples;
        }
        prev = ids;
        prev_depth = depth;
    }
    free(path);
    return 0;
}

struct child_ref {
    const char *label;
    uint32_t frame, node;
};

static int by_label(const void *pa, const void *pb)
{
    const struct child_ref *x = pa, *y = pb;
    int c = strcmp(x->label, y->label);
    return c ? c : (x->frame > y->frame) - (x->frame < y->frame);
}

/* Relinks every child list in label order. */
static int sort_children(struct flame *fg)
{
    struct child_ref *refs = malloc((size_t)fg->nnodes * sizeof *refs);
    if (!refs) return -1;
    for (uint32_t p = 0; p < fg->nnodes; p++) {
        size_t n = 0;
        for (uint32_t c = fg->nodes[p].first_child; c; c = fg->nodes[c].next_sibling) {
            const char *label = frame_label(fg, fg->nodes[c].frame);
            if (!label) {
                free(refs);
                return -1;
            }
            refs[n++] = (struct child_ref){.frame = fg->nodes[c].frame, .node = c};
        }
        /* every label of these children exists now, so the buffer holds still until qsort ends */
        for (size_t i = 0; i < n; i++)
            refs[i].label = frame_label(fg, refs[i].frame);
        qsort(refs, n, sizeof *refs, by_label);
        uint32_t next = 0;
        for (size_t i = n; i-- > 0;) {
            fg->nodes[refs[i].node].next_sibling = next;
            next = refs[i].node;
        }
        fg->nodes[p].first_child = next;
    }
    free(refs);
    return 0;
}

/* --- SVG output --- */

static double node_px(const struct flame *fg, uint32_t n)
{
    return n == 0 ? FG_WIDTH - 2 * FG_PAD : (double)fg->nodes[n].value * fg->scale;
}

static void node_color(const struct flame *fg, uint32_t n, int rgb[3])
{
    if (n == 0) {
        rgb[0] = rgb[1] = rgb[2] = 200;
        return;
    }
    const struct agg_frame *f = &fg->a->frames[fg->nodes[n].frame];
    uint32_t h = 2166136261u; /* FNV-1a over the function name: same function, same color */
    for (const char *s = strtab_get(&fg->a->strings, f->name); *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    h ^= h >> 15;
    rgb[0] = 205 + (int)(h % 51);
    rgb[1] = (int)((h >> 8) % 231);
    rgb[2] = (int)((h >> 20) % 56);
}

/* Appends the label cut to fit w px ("..." style cut as "..") as escaped XML. */
static int append_fitted_label(struct buf *out, const char *label, double w)
{
    double fit = (w - 6) / FG_CHAR_W;
    if (fit < 3) return 0;
    size_t max_chars = (size_t)fit, chars = 0, i = 0, cut = 0;
    for (; label[i]; i++) {
        if (((unsigned char)label[i] & 0xc0) == 0x80) continue;
        if (chars == max_chars - 2) cut = i;
        if (++chars > max_chars) break;
    }
    if (!label[i]) return buf_append_xml_escaped(out, label);
    char tmp[FG_LABEL_MAX];
    memcpy(tmp, label, cut);
    memcpy(tmp + cut, "..", 3);
    return buf_append_xml_escaped(out, tmp);
}

static int emit_node(struct flame *fg, struct buf *out, uint32_t n, uint32_t depth)
{
    const struct fg_node *nd = &fg->nodes[n];
    const char *label = frame_label(fg, nd->frame);
    if (!label) return -1;
    double total = (double)fg->nodes[0].value;
    double x = FG_PAD + (double)nd->x * fg->scale, w = node_px(fg, n);
    double y = fg->height - FG_BOTTOM - (depth + 1) * FG_FRAME_H;
    int rgb[3];
    node_color(fg, n, rgb);
    if (buf_append_str(out, "<g class=\"f\"><title>") < 0 ||
        buf_append_xml_escaped(out, label) < 0 ||
        buf_printf(out, " \xe2\x80\x94 %.2f ms, %llu samples, %.2f%%</title>",
                   (double)nd->value / 1e6, (unsigned long long)nd->samples,
                   total > 0 ? 100.0 * (double)nd->value / total : 0.0) < 0 ||
        buf_printf(out,
                   "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" "
                   "fill=\"rgb(%d,%d,%d)\" rx=\"2\"/><text x=\"%.2f\" y=\"%.1f\">",
                   x, y, w, FG_FRAME_H - 1, rgb[0], rgb[1], rgb[2], x + 3,
                   y + FG_FRAME_H - 4.5) < 0 ||
        append_fitted_label(out, label, w) < 0 || buf_append_str(out, "</text></g>\n") < 0)
        return -1;
    return 0;
}

/* Pre-order walk over the nodes wide enough to draw; sets x, finds the depth, emits if out. */
static int walk(struct flame *fg, struct buf *out, uint32_t *max_depth)
{
    struct fg_node *nodes = fg->nodes;
    uint32_t n = 0, depth = 0;
    nodes[0].x = 0;
    for (;;) {
        int wide = node_px(fg, n) >= FG_MIN_PX;
        if (wide && depth > *max_depth) *max_depth = depth;
        if (wide && out && emit_node(fg, out, n, depth) < 0) return -1;
        if (wide && nodes[n].first_child) {
            uint32_t c = nodes[n].first_child;
            nodes[c].x = nodes[n].x;
            n = c;
            depth++;
            continue;
        }
        while (n != 0 && !nodes[n].next_sibling) {
            n = nodes[n].parent;
            depth--;
        }
        if (n == 0) return 0;
        uint32_t s = nodes[n].next_sibling;
        nodes[s].x = nodes[n].x + nodes[n].value;
        n = s;
    }
}

static const char svg_style[] =
    "<style type=\"text/css\"><![CDATA[\n"
    "text { font-family: Verdana, Arial, sans-serif; font-size: 12px; fill: #000; }\n"
    ".title { font-size: 17px; } .sub { fill: #555; }\n"
    ".btn { cursor: pointer; fill: #1a5fb4; } .btn:hover { text-decoration: underline; }\n"
    "g.f { cursor: pointer; } g.f text { pointer-events: none; }\n"
    "g.f:hover rect { stroke: #000; stroke-width: 0.5; } g.parent { opacity: 0.5; }\n"
    "]]></style>\n";

/* Hover, zoom and search; it reads the geometry back from the drawn elements. */
static const char svg_script[] =
    "<script type=\"text/ecmascript\"><![CDATA[\n"
    "(function () {\n"
    "  'use strict';\n"
    "  var W = 1200, PAD = 10, CW = 12 * 0.59, EPS = 0.02, DASH = ' \\u2014 ';\n"
    "  var $ = function (id) { return document.getElementById(id); };\n"
    "  var details = $('details'), matched = $('matched'), unzoomBtn = $('unzoom');\n"
    "  var searchBtn = $('search'), nodes = [], lastTerm = '';\n"
    "  var gs = document.getElementsByTagName('g');\n"
    "  for (var i = 0; i < gs.length; i++) {\n"
    "    var g = gs[i];\n"
    "    if (g.getAttribute('class') !== 'f') continue;\n"
    "    var r = g.getElementsByTagName('rect')[0], info = "
    "g.getElementsByTagName('title')[0].textContent;\n"
    "    var k = info.lastIndexOf(DASH);\n"
    "    g.cpIndex = nodes.length;\n"
    "    nodes.push({ g: g, r: r, t: g.getElementsByTagName('text')[0], info: info,\n"
    "      name: k >= 0 ? info.substring(0, k) : info, fill: r.getAttribute('fill'),\n"
    "      x: parseFloat(r.getAttribute('x')), y: parseFloat(r.getAttribute('y')),\n"
    "      w: parseFloat(r.getAttribute('width')) });\n"
    "  }\n"
    "  function nodeOf(el) {\n"
    "    for (; el && el !== document; el = el.parentNode)\n"
    "      if (el.cpIndex !== undefined) return nodes[el.cpIndex];\n"
    "    return null;\n"
    "  }\n"
    "  function fitted(name, w) {\n"
    "    var max = Math.floor((w - 6) / CW);\n"
    "    if (max < 3) return '';\n"
    "    return name.length <= max ? name : name.substring(0, max - 2) + '..';\n"
    "  }\n"
    "  function place(n, x, w, cls, shown) {\n"
    "    n.r.setAttribute('x', x.toFixed(2)); n.r.setAttribute('width', w.toFixed(2));\n"
    "    n.t.setAttribute('x', (x + 3).toFixed(2)); n.t.textContent = fitted(n.name, w);\n"
    "    n.g.setAttribute('class', cls); n.g.style.display = shown ? '' : 'none';\n"
    "  }\n"
    "  function zoom(z) {\n"
    "    var scale = (W - 2 * PAD) / z.w;\n"
    "    nodes.forEach(function (n) {\n"
    "      if (n.y > z.y && n.x <= z.x + EPS && n.x + n.w >= z.x + z.w - EPS)\n"
    "        place(n, PAD, W - 2 * PAD, 'f parent', true);\n"
    "      else if (n.y <= z.y && n.x >= z.x - EPS && n.x + n.w <= z.x + z.w + EPS)\n"
    "        place(n, PAD + (n.x - z.x) * scale, n.w * scale, 'f', true);\n"
    "      else\n"
    "        n.g.style.display = 'none';\n"
    "    });\n"
    "    unzoomBtn.style.display = z === nodes[0] ? 'none' : '';\n"
    "  }\n"
    "  function unzoom() { if (nodes.length) zoom(nodes[0]); }\n"
    "  function clearSearch() {\n"
    "    nodes.forEach(function (n) { n.r.setAttribute('fill', n.fill); });\n"
    "    matched.textContent = ''; searchBtn.textContent = 'Search';\n"
    "  }\n"
    "  function search() {\n"
    "    var term = window.prompt('Search for (regular expression):', lastTerm);\n"
    "    if (term === null) return;\n"
    "    if (term === '') { clearSearch(); return; }\n"
    "    var re;\n"
    "    try { re = new RegExp(term); } catch (e) { window.alert('Bad regular expression: ' + "
    "e.message); return; }\n"
    "    lastTerm = term;\n"
    "    var spans = [];\n"
    "    nodes.forEach(function (n, i) {\n"
    "      var hit = i > 0 && re.test(n.name);\n"
    "      n.r.setAttribute('fill', hit ? 'rgb(230,0,230)' : n.fill);\n"
    "      if (hit) spans.push([n.x, n.x + n.w]);\n"
    "    });\n"
    "    spans.sort(function (a, b) { return a[0] - b[0]; });\n"
    "    var covered = 0, end = -Infinity;\n"
    "    spans.forEach(function (s) {\n"
    "      if (s[1] <= end) return;\n"
    "      covered += s[1] - Math.max(s[0], end); end = s[1];\n"
    "    });\n"
    "    matched.textContent = 'Matched: ' + (100 * covered / (W - 2 * PAD)).toFixed(1) + '%';\n"
    "    searchBtn.textContent = 'Reset Search';\n"
    "  }\n"
    "  document.documentElement.addEventListener('click', function (e) {\n"
    "    var n = nodeOf(e.target);\n"
    "    if (n) zoom(n);\n"
    "  });\n"
    "  document.documentElement.addEventListener('mouseover', function (e) {\n"
    "    var n = nodeOf(e.target);\n"
    "    details.textContent = n ? n.info : ' ';\n"
    "  });\n"
    "  unzoomBtn.addEventListener('click', function (e) { e.stopPropagation(); unzoom(); });\n"
    "  searchBtn.addEventListener('click', function (e) {\n"
    "    e.stopPropagation();\n"
    "    if (searchBtn.textContent === 'Search') search(); else clearSearch();\n"
    "  });\n"
    "  document.addEventListener('keydown', function (e) {\n"
    "    if ((e.ctrlKey || e.metaKey) && (e.key === 'f' || e.key === 'F')) { e.preventDefault(); "
    "search(); }\n"
    "    else if (e.key === 'Escape') { clearSearch(); unzoom(); }\n"
    "  });\n"
    "})();\n"
    "]]></script>\n";

static int emit_header(const struct flame *fg, const struct flamegraph_opts *opts, struct buf *out)
{
    double h = fg->height;
    if (buf_printf(out,
                   "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
                   "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n",
                   FG_WIDTH, h, FG_WIDTH, h) < 0 ||
        buf_append_str(out, svg_style) < 0 ||
        buf_printf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"#f6f6f2\"/>\n") < 0 ||
        buf_printf(out, "<text class=\"title\" x=\"%.0f\" y=\"24\" text-anchor=\"middle\">",
                   FG_WIDTH / 2) < 0 ||
        buf_append_xml_escaped(out, opts->title ? opts->title : "Flame Graph") < 0 ||
        buf_append_str(out, "</text>\n") < 0)
        return -1;
    if (opts->subtitle &&
        (buf_printf(out, "<text class=\"sub\" x=\"%.0f\" y=\"44\" text-anchor=\"middle\">",
                    FG_WIDTH / 2) < 0 ||
         buf_append_xml_escaped(out, opts->subtitle) < 0 || buf_append_str(out, "</text>\n") < 0))
        return -1;
    return buf_printf(out,
                      "<text id=\"unzoom\" class=\"btn\" x=\"%.0f\" y=\"24\" "
                      "style=\"display:none\">Reset Zoom</text>\n"
                      "<text id=\"search\" class=\"btn\" x=\"%.0f\" y=\"24\" "
                      "text-anchor=\"end\">Search</text>\n"
                      "<text id=\"details\" x=\"%.0f\" y=\"%.0f\"> </text>\n"
                      "<text id=\"matched\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\"></text>\n",
                      FG_PAD, FG_WIDTH - FG_PAD, FG_PAD, h - 12, FG_WIDTH - FG_PAD, h - 12);
}

static int write_svg(struct flame *fg, const struct flamegraph_opts *opts, struct buf *out)
{
    if (merge_stacks(fg) < 0 || sort_children(fg) < 0) return -1;
    int64_t total = fg->nodes[0].value;
    fg->scale = total > 0 ? (FG_WIDTH - 2 * FG_PAD) / (double)total : 0;
    uint32_t max_depth = 0;
    walk(fg, NULL, &max_depth);
    fg->height = FG_TOP + (max_depth + 1) * FG_FRAME_H + FG_BOTTOM;
    if (emit_header(fg, opts, out) < 0 || walk(fg, out, &max_depth) < 0 ||
        buf_append_str(out, svg_script) < 0 || buf_append_str(out, "</svg>\n") < 0)
        return -1;
    return 0;
}

int flamegraph_svg_write(const struct agg *a, const struct flamegraph_opts *opts, struct buf *out,
                         struct cp_err *err)
{
    struct flame fg = {.a = a, .dim = opts->dim, .cap = 1024, .nslots = 2048, .nnodes = 1};
    fg.nodes = calloc(fg.cap, sizeof *fg.nodes);
    fg.slots = calloc(fg.nslots, sizeof *fg.slots);
    fg.label_off = calloc((size_t)a->nframes + 1, sizeof *fg.label_off);
    size_t len_before = out->len;
    int rc = -1;
    if (fg.nodes && fg.slots && fg.label_off) rc = write_svg(&fg, opts, out);
    free(fg.nodes);
    free(fg.slots);
    free(fg.label_off);
    buf_free(&fg.labels);
    if (rc < 0) {
        out->len = len_before;
        if (out->data) out->data[out->len] = '\0';
        cp_err_set(err, CP_ERR_NOMEM, "out of memory while writing the flame graph");
    }
    return rc;
}
