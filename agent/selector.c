/* selector: parsing (jansson) and matching.
 *
 * Each known key has one parse function; a table maps key names to them, so an unknown key is
 * simply one the table lacks, and the error lists the keys that exist. "" is stored as NULL, the
 * same "match anything" as an absent key, so matching has only one case to handle. Container id
 * prefixes are lower-cased when parsed and compared case-insensitively, because runtimes print
 * ids in lower case but people paste them in either.
 */
#include "selector.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KEYS_HELP "project, environment, application, container_id, k8s_namespace, k8s_labels"

static int parse_string(const json_t *v, const char *path, const char *key, char **out,
                        struct cp_err *err)
{
    if (!json_is_string(v)) {
        cp_err_set(err, CP_ERR_INVALID, "%s.%s: expected a string", path, key);
        return -1;
    }
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len > SELECTOR_VALUE_MAX || memchr(s, '\0', len)) {
        cp_err_set(err, CP_ERR_INVALID,
                   "%s.%s: expected a string of at most %d bytes without NUL characters", path, key,
                   SELECTOR_VALUE_MAX);
        return -1;
    }
    free(*out); /* a duplicate key cannot happen in a json object; this keeps it leak-free */
    *out = NULL;
    if (len == 0) return 0;
    if (!(*out = strdup(s))) {
        cp_err_set(err, CP_ERR_NOMEM, "%s.%s: out of memory", path, key);
        return -1;
    }
    return 0;
}

static int parse_text_field(const json_t *v, const char *path, const char *key,
                            struct selector *sel, struct cp_err *err)
{
    char **field = strcmp(key, "project") == 0       ? &sel->project
                   : strcmp(key, "environment") == 0 ? &sel->environment
                   : strcmp(key, "application") == 0 ? &sel->application
                                                     : &sel->k8s_namespace;
    return parse_string(v, path, key, field, err);
}

static int parse_container_id(const json_t *v, const char *path, const char *key,
                              struct selector *sel, struct cp_err *err)
{
    if (parse_string(v, path, key, &sel->container_id, err) < 0) return -1;
    char *id = sel->container_id;
    if (!id) return 0;
    size_t n = strlen(id);
    bool hex = n >= 12 && n <= 64;
    for (size_t i = 0; hex && i < n; i++) {
        hex = isxdigit((unsigned char)id[i]) != 0;
        id[i] = (char)tolower((unsigned char)id[i]);
    }
    if (!hex) {
        cp_err_set(err, CP_ERR_INVALID,
                   "%s.%s: expected 12 to 64 hex digits (a container id or its prefix), got \"%s\"",
                   path, key, id);
        return -1;
    }
    return 0;
}

static int parse_labels(const json_t *v, const char *path, const char *key, struct selector *sel,
                        struct cp_err *err)
{
    if (!json_is_object(v)) {
        cp_err_set(err, CP_ERR_INVALID, "%s.%s: expected an object of label names to values", path,
                   key);
        return -1;
    }
    size_t n = json_object_size(v);
    if (n > SELECTOR_LABELS_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "%s.%s: expected at most %d labels, got %zu", path, key,
                   SELECTOR_LABELS_MAX, n);
        return -1;
    }
    if (n == 0) return 0;
    if (!(sel->labels = calloc(n, sizeof *sel->labels))) {
        cp_err_set(err, CP_ERR_NOMEM, "%s.%s: out of memory", path, key);
        return -1;
    }
    char label_path[SELECTOR_VALUE_MAX + 64];
    snprintf(label_path, sizeof label_path, "%.100s.%s", path, key);
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)v, name, value)
    {
        struct selector_label *l = &sel->labels[sel->label_count];
        if (strlen(name) == 0 || strlen(name) > SELECTOR_VALUE_MAX) {
            cp_err_set(err, CP_ERR_INVALID, "%s: expected label names of 1 to %d bytes", label_path,
                       SELECTOR_VALUE_MAX);
            return -1;
        }
        if (parse_string(value, label_path, name, &l->value, err) < 0) return -1;
        if (!l->value) l->value = strdup(""); /* a label set to "" must be present and empty */
        l->key = strdup(name);
        sel->label_count++;
        if (!l->key || !l->value) {
            cp_err_set(err, CP_ERR_NOMEM, "%s: out of memory", label_path);
            return -1;
        }
    }
    return 0;
}

typedef int (*key_parser)(const json_t *, const char *, const char *, struct selector *,
                          struct cp_err *);

static const struct {
    const char *key;
    key_parser parse;
} KEYS[] = {
    {"project", parse_text_field},        {"environment", parse_text_field},
    {"application", parse_text_field},    {"k8s_namespace", parse_text_field},
    {"container_id", parse_container_id}, {"k8s_labels", parse_labels},
};

static key_parser parser_for(const char *key)
{
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
        if (strcmp(KEYS[i].key, key) == 0) return KEYS[i].parse;
    return NULL;
}

int selector_parse(const json_t *obj, const char *path, struct selector *out, struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(obj)) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected an object (a selector)", path);
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        key_parser parse = parser_for(key);
        if (!parse) {
            cp_err_set(err, CP_ERR_INVALID,
                       "%s.%.200s: unknown key (expected one of " KEYS_HELP ")", path, key);
        }
        if (!parse || parse(value, path, key, out, err) < 0) {
            selector_free(out);
            return -1;
        }
    }
    return 0;
}

int selector_list_parse(const json_t *array, const char *path, struct selector_list *out,
                        struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    if (!json_is_array(array)) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected an array of selectors", path);
        return -1;
    }
    size_t n = json_array_size(array);
    if (n > SELECTOR_LIST_MAX) {
        cp_err_set(err, CP_ERR_INVALID, "%s: expected at most %d selectors, got %zu", path,
                   SELECTOR_LIST_MAX, n);
        return -1;
    }
    if (n > 0 && !(out->items = calloc(n, sizeof *out->items))) {
        cp_err_set(err, CP_ERR_NOMEM, "%s: out of memory", path);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char item_path[256];
        snprintf(item_path, sizeof item_path, "%.200s[%zu]", path, i);
        if (selector_parse(json_array_get(array, i), item_path, &out->items[i], err) < 0) {
            selector_list_free(out);
            return -1;
        }
        out->count++;
    }
    return 0;
}

static bool known(const char *s)
{
    return s && s[0];
}

static bool text_matches(const char *want, const char *have)
{
    return !want || (known(have) && strcmp(want, have) == 0);
}

static bool labels_match(const struct selector *sel, const json_t *labels)
{
    for (size_t i = 0; i < sel->label_count; i++) {
        const json_t *v =
            json_is_object(labels) ? json_object_get(labels, sel->labels[i].key) : NULL;
        if (!json_is_string(v) || strcmp(json_string_value(v), sel->labels[i].value) != 0)
            return false;
    }
    return true;
}

bool selector_matches(const struct selector *sel, const struct selector_subject *subject)
{
    if (sel->container_id &&
        (!known(subject->container_id) ||
         strncasecmp(subject->container_id, sel->container_id, strlen(sel->container_id)) != 0))
        return false;
    return text_matches(sel->project, subject->project) &&
           text_matches(sel->environment, subject->environment) &&
           text_matches(sel->application, subject->application) &&
           text_matches(sel->k8s_namespace, subject->k8s_namespace) &&
           labels_match(sel, subject->k8s_labels);
}

bool selector_list_matches(const struct selector_list *list, const struct selector_subject *subject)
{
    for (size_t i = 0; i < list->count; i++)
        if (selector_matches(&list->items[i], subject)) return true;
    return false;
}

void selector_free(struct selector *sel)
{
    free(sel->project);
    free(sel->environment);
    free(sel->application);
    free(sel->container_id);
    free(sel->k8s_namespace);
    for (size_t i = 0; i < sel->label_count; i++) {
        free(sel->labels[i].key);
        free(sel->labels[i].value);
    }
    free(sel->labels);
    memset(sel, 0, sizeof *sel);
}

void selector_list_free(struct selector_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        selector_free(&list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}
