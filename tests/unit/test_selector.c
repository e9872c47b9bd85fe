/* selector: parsing real JSON config text, every rejection with its key path, and matching
 * (empty fields, container id prefixes, Kubernetes labels, lists). Leaks after failed parses are
 * caught by LeakSanitizer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "selector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CID "3f9a0e7c1b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9d0e1f2a3b"

/* JSON_ALLOW_NUL: the selector parser must reject NULs itself, whatever the loader allows. */
static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);
    if (!j) fail_msg("bad test JSON: %s", jerr.text);
    return j;
}

/* Parses `{"selectors": ...}` and returns the error message ("" when it parsed). */
static const char *parse_list(const char *text, struct selector_list *out, struct cp_err *err)
{
    json_t *j = load(text);
    int r = selector_list_parse(json_object_get(j, "selectors"), "selectors", out, err);
    json_decref(j);
    if (r == 0) return "";
    assert_int_equal(err->code, CP_ERR_INVALID);
    assert_int_equal(out->count, 0);
    assert_null(out->items);
    return err->msg;
}

static void test_parse_full(void **state)
{
    (void)state;
    struct selector_list list;
    struct cp_err err;
    assert_string_equal(
        parse_list(
            "{\"selectors\": [{\"project\": \"p1\", \"environment\": \"main\","
            " \"application\": \"web\", \"container_id\": \"3F9A0E7C1B2D\","
            " \"k8s_namespace\": \"shop\", \"k8s_labels\": {\"app\": \"api\", \"tier\": \"\"}},"
            " {}, {\"project\": \"\"}]}",
            &list, &err),
        "");
    assert_int_equal(list.count, 3);
    const struct selector *s = &list.items[0];
    assert_string_equal(s->project, "p1");
    assert_string_equal(s->environment, "main");
    assert_string_equal(s->application, "web");
    assert_string_equal(s->container_id, "3f9a0e7c1b2d"); /* lower-cased */
    assert_string_equal(s->k8s_namespace, "shop");
    assert_int_equal(s->label_count, 2);
    assert_string_equal(s->labels[0].key, "app");
    assert_string_equal(s->labels[0].value, "api");
    assert_string_equal(s->labels[1].key, "tier");
    assert_string_equal(s->labels[1].value, "");
    assert_null(list.items[1].project);
    assert_null(list.items[2].project); /* "" is "any" */
    selector_list_free(&list);
    assert_int_equal(list.count, 0);
    assert_string_equal(parse_list("{\"selectors\": []}", &list, &err), "");
    assert_int_equal(list.count, 0);
    selector_list_free(&list);
}

static void expect_error(const char *text, const char *message)
{
    struct selector_list list;
    struct cp_err err;
    const char *msg = parse_list(text, &list, &err);
    if (strncmp(msg, message, strlen(message)) != 0)
        fail_msg("for %s\n  got      \"%s\"\n  expected \"%s...\"", text, msg, message);
}

static void test_rejections(void **state)
{
    (void)state;
    expect_error("{\"selectors\": [{}, {\"project\": 3}]}",
                 "selectors[1].project: expected a string");
    expect_error("{\"selectors\": [{\"environment\": null}]}",
                 "selectors[0].environment: expected a string");
    expect_error("{\"selectors\": [{\"application\": [\"a\"]}]}",
                 "selectors[0].application: expected a string");
    expect_error("{\"selectors\": [{\"project\": \"p\", \"projet\": \"p\"}]}",
                 "selectors[0].projet: unknown key (expected one of project, environment");
    expect_error("{\"selectors\": [{\"container_id\": \"3f9a0e7c1b2\"}]}",
                 "selectors[0].container_id: expected 12 to 64 hex digits");
    expect_error("{\"selectors\": [{\"container_id\": \"3f9a0e7c1b2z\"}]}",
                 "selectors[0].container_id: expected 12 to 64 hex digits");
    expect_error("{\"selectors\": [{\"container_id\": \"" CID "0\"}]}",
                 "selectors[0].container_id: expected 12 to 64 hex digits");
    expect_error("{\"selectors\": [{\"container_id\": 12}]}",
                 "selectors[0].container_id: expected a string");
    expect_error("{\"selectors\": [{\"k8s_labels\": [\"app\"]}]}",
                 "selectors[0].k8s_labels: expected an object");
    expect_error("{\"selectors\": [{\"k8s_labels\": {\"app\": \"a\", \"tier\": 1}}]}",
                 "selectors[0].k8s_labels.tier: expected a string");
    expect_error("{\"selectors\": [{\"k8s_labels\": {\"\": \"a\"}}]}",
                 "selectors[0].k8s_labels: expected label names");
    expect_error("{\"selectors\": [{\"k8s_namespace\": true}]}",
                 "selectors[0].k8s_namespace: expected a string");
    expect_error("{\"selectors\": [{}, {}, \"web\"]}", "selectors[2]: expected an object");
    expect_error("{\"selectors\": {\"project\": \"p\"}}", "selectors: expected an array");
    expect_error("{\"selectors\": [{\"project\": \"a\\u0000b\"}]}",
                 "selectors[0].project: expected a string of at most 512 bytes");
}

static void test_bounds(void **state)
{
    (void)state;
    /* a string of SELECTOR_VALUE_MAX bytes is fine, one more is not */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = SELECTOR_VALUE_MAX + (size_t)extra;
        char *v = malloc(n + 1);
        assert_non_null(v);
        memset(v, 'a', n);
        v[n] = '\0';
        json_t *obj = json_pack("{s:s}", "application", v);
        struct selector sel;
        struct cp_err err;
        int r = selector_parse(obj, "selectors[0]", &sel, &err);
        assert_int_equal(r, extra ? -1 : 0);
        if (r == 0) selector_free(&sel);
        json_decref(obj);
        free(v);
    }
    /* SELECTOR_LABELS_MAX labels, then one more */
    json_t *labels = json_object();
    for (int i = 0; i <= SELECTOR_LABELS_MAX; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        json_object_set_new(labels, key, json_string("v"));
        if (i < SELECTOR_LABELS_MAX - 1) continue;
        json_t *obj = json_pack("{s:O}", "k8s_labels", labels);
        struct selector sel;
        struct cp_err err;
        int r = selector_parse(obj, "s", &sel, &err);
        assert_int_equal(r, i < SELECTOR_LABELS_MAX ? 0 : -1);
        if (r == 0) {
            assert_int_equal(sel.label_count, SELECTOR_LABELS_MAX);
            selector_free(&sel);
        } else {
            assert_string_equal(err.msg, "s.k8s_labels: expected at most 64 labels, got 65");
        }
        json_decref(obj);
    }
    json_decref(labels);
    /* SELECTOR_LIST_MAX selectors, then one more */
    json_t *arr = json_array();
    for (int i = 0; i <= SELECTOR_LIST_MAX; i++)
        json_array_append_new(arr, json_object());
    struct selector_list list;
    struct cp_err err;
    assert_int_equal(selector_list_parse(arr, "selectors", &list, &err), -1);
    assert_string_equal(err.msg, "selectors: expected at most 1024 selectors, got 1025");
    json_array_remove(arr, 0);
    assert_int_equal(selector_list_parse(arr, "selectors", &list, &err), 0);
    assert_int_equal(list.count, SELECTOR_LIST_MAX);
    selector_list_free(&list);
    json_decref(arr);
}

static struct selector one(const char *text)
{
    json_t *j = load(text);
    struct selector sel;
    struct cp_err err;
    if (selector_parse(j, "s", &sel, &err) < 0) fail_msg("%s", err.msg);
    json_decref(j);
    return sel;
}

static void test_matching_fields(void **state)
{
    (void)state;
    json_t *labels = load("{\"app\": \"api\", \"tier\": \"backend\", \"n\": 1}");
    struct selector_subject web = {.project = "p1",
                                   .environment = "main",
                                   .application = "web",
                                   .container_id = CID,
                                   .k8s_namespace = "shop",
                                   .k8s_labels = labels};
    struct selector_subject host = {.project = "p1", .application = "web"};
    struct {
        const char *selector;
        bool web, host;
    } cases[] = {
        {"{}", true, true},
        {"{\"project\": \"p1\"}", true, true},
        {"{\"project\": \"p2\"}", false, false},
        {"{\"project\": \"P1\"}", false, false},
        {"{\"project\": \"p1\", \"application\": \"web\"}", true, true},
        {"{\"project\": \"p1\", \"application\": \"worker\"}", false, false},
        {"{\"environment\": \"main\"}", true, false}, /* unknown on the host one */
        {"{\"environment\": \"\"}", true, true},
        {"{\"container_id\": \"3f9a0e7c1b2d\"}", true, false},
        {"{\"container_id\": \"3F9A0E7C1B2D4E5F\"}", true, false},
        {"{\"container_id\": \"" CID "\"}", true, false},
        {"{\"container_id\": \"3f9a0e7c1b2e\"}", false, false},
        {"{\"k8s_namespace\": \"shop\"}", true, false},
        {"{\"k8s_namespace\": \"kube-system\"}", false, false},
        {"{\"k8s_labels\": {\"app\": \"api\"}}", true, false},
        {"{\"k8s_labels\": {\"app\": \"api\", \"tier\": \"backend\"}}", true, false},
        {"{\"k8s_labels\": {\"app\": \"api\", \"tier\": \"frontend\"}}", false, false},
        {"{\"k8s_labels\": {\"app\": \"api\", \"zone\": \"a\"}}", false, false},
        {"{\"k8s_labels\": {\"n\": \"1\"}}", false, false}, /* not a string on the pod */
        {"{\"k8s_labels\": {}}", true, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct selector sel = one(cases[i].selector);
        if (selector_matches(&sel, &web) != cases[i].web ||
            selector_matches(&sel, &host) != cases[i].host)
            fail_msg("selector %s: web %d host %d expected %d %d", cases[i].selector,
                     selector_matches(&sel, &web), selector_matches(&sel, &host), cases[i].web,
                     cases[i].host);
        selector_free(&sel);
    }
    json_decref(labels);
}

static void test_matching_lists(void **state)
{
    (void)state;
    struct selector_subject a = {.project = "p1", .application = "web"};
    struct selector_subject b = {.project = "p2", .application = "batch"};
    struct selector_subject none = {0};
    struct selector_list list;
    struct cp_err err;
    assert_string_equal(parse_list("{\"selectors\": []}", &list, &err), "");
    assert_false(selector_list_matches(&list, &a)); /* the empty list matches nothing */
    selector_list_free(&list);
    assert_string_equal(parse_list("{\"selectors\": [{\"project\": \"p9\"},"
                                   " {\"application\": \"web\"}]}",
                                   &list, &err),
                        "");
    assert_true(selector_list_matches(&list, &a));
    assert_false(selector_list_matches(&list, &b));
    assert_false(selector_list_matches(&list, &none));
    selector_list_free(&list);
    assert_string_equal(parse_list("{\"selectors\": [{}]}", &list, &err), "");
    assert_true(selector_list_matches(&list, &none));
    selector_list_free(&list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_full),     cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_bounds),         cmocka_unit_test(test_matching_fields),
        cmocka_unit_test(test_matching_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
