/* Unit tests for the flame graph SVG writer: well-formed XML (checked by xmllint or Python's XML
 * parser), one <g> per tree node with the right label, geometry and tooltip, children in name
 * order, narrow nodes left out, hostile names escaped, deep stacks, empty profiles. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "profile_writers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MS 1000000LL
#define DASH " \xe2\x80\x94 "
#define ESC_NAME "<esc&\"'>\x01\xff"

/* fabs without libm (the unit tests link without -lm) */
static double abs_double(double x)
{
    return x < 0 ? -x : x;
}

struct fixture {
    struct agg a;
    int64_t total;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx || agg_init(&fx->a) < 0) return -1;
    struct agg *a = &fx->a;
    uint32_t t = agg_frame_id_str(a, "thread 1 (MainThread)", "", 0);
    uint32_t m = agg_frame_id_str(a, "main", "app.py", 10);
    uint32_t w20 = agg_frame_id_str(a, "Worker.run", "app.py", 20);
    uint32_t w25 = agg_frame_id_str(a, "Worker.run", "app.py", 25);
    uint32_t r = agg_frame_id_str(a, "rec", "r.py", 1);
    uint32_t o = agg_frame_id_str(a, "other", "o.py", 2);
    uint32_t x = agg_frame_id_str(a, "tiny", "tiny.py", 9);
    uint32_t e = agg_frame_id_str(a, ESC_NAME, "e.py", 1);
    uint32_t s1[] = {w20, m, t}, s2[] = {w25, m, t}, s3[] = {r, r, m, t}, s4[] = {r, o, m, t};
    uint32_t s5[] = {e, t}, s6[] = {x, m, t}, s7[] = {m, t};
    agg_add(a, s1, 3, 200 * MS, 0);
    agg_add(a, s1, 3, 200 * MS, 0);
    agg_add(a, s2, 3, 100 * MS, 0);
    agg_add(a, s3, 4, 200 * MS, 0);
    agg_add(a, s4, 4, 100 * MS, 0);
    agg_add(a, s5, 2, 200 * MS, 0);
    agg_add(a, s6, 3, 1000, 0);     /* 0.0012 px wide: left out, weight kept in main */
    agg_add(a, s7, 2, 0, 500 * MS); /* wall only: not in the CPU graph */
    fx->total = 1000 * MS + 1000;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    agg_free(&fx->a);
    free(fx);
    return 0;
}

/* --- reading our SVG back --- */

struct svg_node {
    char label[128];
    char info[192]; /* what follows the dash in the title */
    double x, y, w;
};

static int parse_nodes(const char *svg, struct svg_node *nodes, int max)
{
    int n = 0;
    static const char open[] = "<g class=\"f\"><title>";
    for (const char *p = strstr(svg, open); p && n < max; p = strstr(p + 1, open)) {
        const char *label = p + strlen(open), *dash = strstr(label, DASH);
        const char *end = strstr(label, "</title>");
        assert_non_null(dash);
        assert_non_null(end);
        struct svg_node *nd = &nodes[n++];
        snprintf(nd->label, sizeof nd->label, "%.*s", (int)(dash - label), label);
        const char *info = dash + strlen(DASH);
        snprintf(nd->info, sizeof nd->info, "%.*s", (int)(end - info), info);
        assert_int_equal(
            sscanf(end, "</title><rect x=\"%lf\" y=\"%lf\" width=\"%lf\"", &nd->x, &nd->y, &nd->w),
            3);
    }
    return n;
}

static const struct svg_node *find(const struct svg_node *nodes, int n, const char *label, double y)
{
    for (int i = 0; i < n; i++)
        if (strcmp(nodes[i].label, label) == 0 && (y < 0 || abs_double(nodes[i].y - y) < 0.01))
            return &nodes[i];
    return NULL;
}

static int count(const char *hay, const char *needle)
{
    int c = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        c++;
    return c;
}

/* 1 when the document parses as XML, 0 when it does not, -1 when no checker is installed. */
static int xml_well_formed(const struct buf *svg)
{
    char path[] = "/tmp/conprof-flame-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, svg->data, svg->len), (ssize_t)svg->len);
    close(fd);
    char cmd[256];
    int rc = -1;
    if (system("command -v xmllint >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd, "xmllint --noout '%s'", path);
    } else if (system("command -v python3 >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd,
                 "python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' '%s'",
                 path);
    } else {
        unlink(path);
        return -1;
    }
    int status = system(cmd);
    rc = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    unlink(path);
    return rc;
}

static void assert_valid_xml(const struct buf *svg)
{
    int ok = xml_well_formed(svg);
    if (ok < 0)
        fprintf(stderr, "neither xmllint nor python3 found: XML not checked\n");
    else
        assert_int_equal(ok, 1);
}

static void write_cpu(struct fixture *fx, struct buf *out)
{
    struct flamegraph_opts opts = {.title = "CPU time: python3 app.py <pid 42>",
                                   .subtitle = "Python 3.12 & friends",
                                   .dim = AGG_CPU};
    struct cp_err err;
    assert_int_equal(flamegraph_svg_write(&fx->a, &opts, out, &err), 0);
}

/* --- tests --- */

static void test_valid_self_contained_xml(void **state)
{
    struct buf svg = {0};
    write_cpu(*state, &svg);
    assert_valid_xml(&svg);
    assert_true(strncmp(svg.data, "<?xml version=\"1.0\"", 19) == 0);
    assert_non_null(strstr(svg.data, "CPU time: python3 app.py &lt;pid 42&gt;"));
    assert_non_null(strstr(svg.data, "Python 3.12 &amp; friends"));
    assert_non_null(strstr(svg.data, "<script"));
    assert_non_null(strstr(svg.data, "<style"));
    assert_non_null(strstr(svg.data, "Reset Zoom"));
    assert_non_null(strstr(svg.data, ">Search<"));
    assert_non_null(strstr(svg.data, "prompt("));
    /* no network: the only URL is the SVG namespace */
    assert_int_equal(count(svg.data, "http"), 1);
    assert_non_null(strstr(svg.data, "xmlns=\"http://www.w3.org/2000/svg\""));
    assert_null(strstr(svg.data, "href"));
    assert_int_equal(count(svg.data, "</svg>"), 1);
    buf_free(&svg);
}

static void test_one_g_per_node_with_tooltip(void **state)
{
    struct buf svg = {0};
    write_cpu(*state, &svg);
    struct svg_node nodes[64];
    int n = parse_nodes(svg.data, nodes, 64);
    /* all, thread, main, E, O, R (x3), W20, W25; tiny left out; the wall-only stack absent */
    assert_int_equal(n, 10);
    assert_int_equal(count(svg.data, "<g class=\"f\">"), 10);
    assert_int_equal(count(svg.data, "<title>rec (r.py:1)" DASH), 3);
    assert_int_equal(count(svg.data, "<title>main (app.py:10)" DASH), 1);
    assert_int_equal(count(svg.data, "<title>Worker.run (app.py:20)" DASH), 1);
    assert_int_equal(count(svg.data, "<title>thread 1 (MainThread)" DASH), 1);
    assert_int_equal(count(svg.data, "<title>all" DASH), 1);
    assert_int_equal(count(svg.data, "tiny"), 0);
    const struct svg_node *w20 = find(nodes, n, "Worker.run (app.py:20)", -1);
    assert_non_null(w20);
    assert_string_equal(w20->info, "400.00 ms, 2 samples, 40.00%");
    const struct svg_node *main = find(nodes, n, "main (app.py:10)", -1);
    assert_string_equal(main->info, "800.00 ms, 6 samples, 80.00%"); /* tiny's weight kept */
    const struct svg_node *all = find(nodes, n, "all", -1);
    assert_string_equal(all->info, "1000.00 ms, 7 samples, 100.00%");
    buf_free(&svg);
}

static void test_geometry(void **state)
{
    struct fixture *fx = *state;
    struct buf svg = {0};
    write_cpu(fx, &svg);
    struct svg_node nodes[64];
    int n = parse_nodes(svg.data, nodes, 64);
    double scale = 1180.0 / (double)fx->total, tol = 0.02;
    const struct svg_node *all = find(nodes, n, "all", -1);
    const struct svg_node *thr = find(nodes, n, "thread 1 (MainThread)", -1);
    const struct svg_node *main = find(nodes, n, "main (app.py:10)", -1);
    const struct svg_node *esc = find(nodes, n, "&lt;esc&amp;&quot;&#39;&gt;?? (e.py:1)", -1);
    assert_non_null(esc);
    /* classic orientation: root at the bottom, each level one frame height up */
    assert_true(all->y > thr->y && thr->y > main->y);
    assert_true(abs_double(all->y - thr->y - 16) < 0.01 &&
                abs_double(thr->y - main->y - 16) < 0.01);
    assert_true(abs_double(all->x - 10) < tol && abs_double(all->w - 1180) < tol);
    assert_true(abs_double(thr->w - all->w) < tol);
    assert_true(abs_double(esc->w - 200 * MS * scale) < tol);
    assert_true(abs_double(main->w - (800 * MS + 1000) * scale) < tol);
    /* children in label order, left to right: E ('<') before main; W20 < W25 < other < rec */
    assert_true(abs_double(esc->x - 10) < tol && abs_double(main->x - (esc->x + esc->w)) < tol);
    const char *order[] = {"Worker.run (app.py:20)", "Worker.run (app.py:25)", "other (o.py:2)",
                           "rec (r.py:1)"};
    double widths_ms[] = {400, 100, 100, 200}, x = main->x, sum = 0;
    for (int i = 0; i < 4; i++) {
        const struct svg_node *c = find(nodes, n, order[i], main->y - 16);
        assert_non_null(c);
        assert_true(abs_double(c->x - x) < tol);
        assert_true(abs_double(c->w - widths_ms[i] * MS * scale) < tol);
        x += c->w;
        sum += c->w;
    }
    assert_true(abs_double(sum - main->w) < tol); /* main's only self time is the left-out 1 us */
    /* each level's widths add up to at most the root's */
    for (double y = all->y; y > 0; y -= 16) {
        double level = 0;
        for (int i = 0; i < n; i++)
            if (abs_double(nodes[i].y - y) < 0.01) level += nodes[i].w;
        assert_true(level <= all->w + tol);
    }
    buf_free(&svg);
}

static void test_deterministic_and_appends(void **state)
{
    struct buf a = {0}, b = {0};
    assert_int_equal(buf_append_str(&b, "x"), 0);
    write_cpu(*state, &a);
    write_cpu(*state, &b);
    assert_int_equal(b.len, a.len + 1);
    assert_memory_equal(b.data + 1, a.data, a.len);
    buf_free(&a);
    buf_free(&b);
}

static void test_wall_dimension(void **state)
{
    struct fixture *fx = *state;
    struct flamegraph_opts opts = {.title = "wall", .subtitle = NULL, .dim = AGG_WALL};
    struct buf svg = {0};
    struct cp_err err;
    assert_int_equal(flamegraph_svg_write(&fx->a, &opts, &svg, &err), 0);
    assert_valid_xml(&svg);
    struct svg_node nodes[16];
    int n = parse_nodes(svg.data, nodes, 16);
    assert_int_equal(n, 3); /* all, thread, main */
    assert_string_equal(find(nodes, n, "main (app.py:10)", -1)->info,
                        "500.00 ms, 1 samples, 100.00%");
    buf_free(&svg);
}

static void test_empty_and_deep(void **state)
{
    (void)state;
    struct agg a;
    assert_int_equal(agg_init(&a), 0);
    struct flamegraph_opts opts = {.title = NULL, .dim = AGG_CPU};
    struct buf svg = {0};
    struct cp_err err;
    assert_int_equal(flamegraph_svg_write(&a, &opts, &svg, &err), 0);
    assert_valid_xml(&svg);
    struct svg_node nodes[4];
    assert_int_equal(parse_nodes(svg.data, nodes, 4), 1);
    assert_string_equal(nodes[0].label, "all");

    static uint32_t deep[AGG_MAX_DEPTH];
    char name[32];
    for (uint32_t i = 0; i < AGG_MAX_DEPTH; i++) {
        snprintf(name, sizeof name, "level_%u", i % 100);
        deep[i] = agg_frame_id_str(&a, name, "deep.py", (int32_t)i);
    }
    assert_int_equal(agg_add(&a, deep, AGG_MAX_DEPTH, 5 * MS, 5 * MS), 0);
    buf_reset(&svg);
    assert_int_equal(flamegraph_svg_write(&a, &opts, &svg, &err), 0);
    assert_valid_xml(&svg);
    assert_int_equal(count(svg.data, "<g class=\"f\">"), AGG_MAX_DEPTH + 1);
    buf_free(&svg);
    agg_free(&a);
}

static void test_long_and_unicode_names(void **state)
{
    (void)state;
    struct agg a;
    assert_int_equal(agg_init(&a), 0);
    char longname[3000];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    /* multi-byte characters everywhere, so any cut lands next to one */
    const char *uni = "\xce\xbb\xce\xbb\xce\xbb_\xe6\xbc\xa2\xe5\xad\x97_"
                      "\xf0\x9f\x94\xa5\xf0\x9f\x94\xa5\xf0\x9f\x94\xa5_caf\xc3\xa9_"
                      "\xce\xbb\xce\xbb\xce\xbb\xce\xbb\xce\xbb\xce\xbb\xce\xbb\xce\xbb";
    uint32_t f1 = agg_frame_id_str(&a, longname, "l.py", 1);
    uint32_t f2 = agg_frame_id_str(&a, uni, "u.py", 2);
    uint32_t f3 = agg_frame_id_str(&a, "\xed\xa0\x80surrogate\xef\xbf\xbe", "s.py", 3);
    uint32_t s1[] = {f1}, s2[] = {f2}, s3[] = {f3};
    for (int w = 1; w < 60; w++) { /* many widths: every cut position of the short labels */
        agg_reset(&a);
        agg_add(&a, s1, 1, 100 * MS, 0);
        agg_add(&a, s2, 1, (int64_t)w * MS / 4, 0);
        agg_add(&a, s3, 1, 3 * MS, 0);
        struct flamegraph_opts opts = {.title = uni, .dim = AGG_CPU};
        struct buf svg = {0};
        struct cp_err err;
        assert_int_equal(flamegraph_svg_write(&a, &opts, &svg, &err), 0);
        if (w == 1 || w == 59 || w % 7 == 0) assert_valid_xml(&svg);
        assert_non_null(strstr(svg.data, "..</text>"));
        assert_non_null(strstr(svg.data, "?surrogate?"));
        buf_free(&svg);
    }
    agg_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_self_contained_xml, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_g_per_node_with_tooltip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_geometry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deterministic_and_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wall_dimension, setup, teardown),
        cmocka_unit_test(test_empty_and_deep),
        cmocka_unit_test(test_long_and_unicode_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
