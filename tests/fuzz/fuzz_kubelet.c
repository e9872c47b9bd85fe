/* Fuzzes the kubelet pod-list parser and the lookup: any bytes parse or are refused with an
 * error and an empty list; what is kept respects every bound (pods, containers, labels, string
 * lengths), container ids are lower-case id characters (no "<scheme>://"), labels are
 * strings; every kept pod is found again by its uid (in '-' and '_' forms) and every kept
 * container by its id; and lookups with strings cut from the input itself never misbehave. */
#include "kubelet.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_string(const char *s)
{
    if (!s || !s[0] || strlen(s) > KUBELET_STRING_MAX) abort();
}

static void check_pod(const struct kubelet_pod *pod)
{
    check_string(pod->uid);
    check_string(pod->name);
    check_string(pod->k8s_namespace);
    if (!json_is_object(pod->labels) || json_object_size(pod->labels) > KUBELET_LABELS_MAX) abort();
    const char *key;
    json_t *v;
    json_object_foreach(pod->labels, key, v)
    {
        check_string(key);
        if (!json_is_string(v) || json_string_length(v) > KUBELET_STRING_MAX) abort();
    }
    if (pod->container_count > KUBELET_CONTAINERS_MAX) abort();
    for (size_t i = 0; i < pod->container_count; i++) {
        check_string(pod->containers[i].name);
        check_string(pod->containers[i].id);
        for (const char *p = pod->containers[i].id; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789_.-", *p)) abort();
    }
}

static void check_found_again(const struct kubelet_pods *pods, const struct kubelet_pod *pod)
{
    struct kubelet_match m;
    if (!kubelet_pods_find(pods, pod->uid, NULL, &m) || !m.pod || !m.pod_name || !m.k8s_namespace ||
        !m.container_name || !m.labels)
        abort();
    char underscored[KUBELET_STRING_MAX + 1];
    strcpy(underscored, pod->uid);
    for (char *p = underscored; *p; p++)
        if (*p == '-') *p = '_';
    if (!kubelet_pods_find(pods, underscored, NULL, &m)) abort();
    for (size_t i = 0; i < pod->container_count; i++) {
        if (!kubelet_pods_find(pods, NULL, pod->containers[i].id, &m)) abort();
        if (strcmp(m.container_name, "") == 0) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kubelet_pods pods;
    struct cp_err err;
    if (kubelet_pods_parse((const char *)data, size, &pods, &err) < 0) {
        if (pods.items || pods.count || !err.msg[0]) abort();
        return 0;
    }
    if (pods.count > KUBELET_PODS_MAX) abort();
    for (size_t i = 0; i < pods.count; i++) {
        check_pod(&pods.items[i]);
        check_found_again(&pods, &pods.items[i]);
    }
    /* lookups with pieces of the input as uid and container id */
    char probe[80];
    size_t n = size < sizeof probe - 1 ? size : sizeof probe - 1;
    memcpy(probe, data, n);
    probe[n] = '\0';
    struct kubelet_match m;
    kubelet_pods_find(&pods, probe, probe, &m);
    kubelet_pods_find(&pods, NULL, probe + n / 2, &m);
    kubelet_pods_free(&pods);
    return 0;
}
