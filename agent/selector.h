/* selector: which targets to profile.
 *
 * Contract: a selector is a set of optional fields; a field that is absent (or "") matches
 * anything, so {} matches every target. A subject (a process's metadata) matches a selector
 * when every set field matches: project, environment, application and k8s_namespace by exact
 * string, container_id as a case-insensitive prefix of the subject's container id (at least 12
 * hex digits, so it names one container), k8s_labels when every listed label is present on the
 * subject with the same value. A subject field that is unknown (NULL or "") does not match a set
 * field: a host process never matches a container_id selector. A list matches when any of its
 * selectors matches; the empty list matches nothing.
 * Parsing from JSON (jansson) is strict: unknown keys, wrong types, over-long strings, bad
 * container ids and too many labels or selectors are rejected (CP_ERR_INVALID) with the key's
 * path and what was expected, e.g. "selectors[1].project: expected a string". Parsed selectors
 * own their strings: free them with selector_free() / selector_list_free() (also after a failed
 * parse, which leaves nothing to free).
 */
#ifndef CONPROF_AGENT_SELECTOR_H
#define CONPROF_AGENT_SELECTOR_H

#include "error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define SELECTOR_VALUE_MAX 512 /* bytes of one string, NUL excluded */
#define SELECTOR_LABELS_MAX 64
#define SELECTOR_LIST_MAX 1024

struct selector_label {
    char *key;
    char *value;
};

struct selector {
    char *project; /* NULL: any */
    char *environment;
    char *application;
    char *container_id; /* lower-case hex prefix */
    char *k8s_namespace;
    struct selector_label *labels; /* all must match */
    size_t label_count;
};

struct selector_list {
    struct selector *items;
    size_t count;
};

/* What a selector is matched against; every field may be NULL (unknown). */
struct selector_subject {
    const char *project;
    const char *environment;
    const char *application;
    const char *container_id;
    const char *k8s_namespace;
    const json_t *k8s_labels; /* a JSON object of string values (a pod's metadata.labels) */
};

/* Parses one selector object; `path` names it in errors ("selectors[1]"). */
int selector_parse(const json_t *obj, const char *path, struct selector *out, struct cp_err *err);
/* Parses an array of selector objects; `path` names the array ("selectors"). */
int selector_list_parse(const json_t *array, const char *path, struct selector_list *out,
                        struct cp_err *err);

bool selector_matches(const struct selector *sel, const struct selector_subject *subject);
bool selector_list_matches(const struct selector_list *list,
                           const struct selector_subject *subject);

void selector_free(struct selector *sel);
void selector_list_free(struct selector_list *list);

#endif
