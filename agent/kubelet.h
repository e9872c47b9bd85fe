/* kubelet: optional Kubernetes metadata (pod name, namespace, container name, pod labels) from
 * the node's kubelet, `GET <kubelet.url>/pods`. The agent works without it: nothing here is
 * ever fatal, and a target the lookup does not know simply has no Kubernetes labels.
 *
 * Contract:
 *   - kubelet_pods_parse() reads a v1 PodList (items[].metadata.{uid,name,namespace,labels},
 *     items[].status.{containerStatuses,initContainerStatuses,ephemeralContainerStatuses}[]
 *     .{name,containerID}). It is bounded: at most KUBELET_BODY_MAX bytes, KUBELET_PODS_MAX
 *     items (more is an error: the list is refused whole), KUBELET_CONTAINERS_MAX containers
 *     and KUBELET_LABELS_MAX labels per pod (the rest are dropped and counted), and every kept
 *     string is at most KUBELET_STRING_MAX bytes. A body that is not JSON, is cut short, or
 *     whose top level is not an object with an "items" array is refused (CP_ERR_INVALID; too
 *     big or too many pods: CP_ERR_NOMEM). Inside the list it is lenient: an item without a
 *     usable metadata.uid/name/namespace is skipped (counted in `skipped_pods`); a container
 *     without a name or with no containerID yet (not started) is left out; a label whose value
 *     is not a string, or an over-long key or value, is dropped (counted). Garbage never
 *     crashes (fuzzed: tests/fuzz/fuzz_kubelet.c).
 *   - Container ids are kept bare and lower-case: "containerd://<hex>", "cri-o://<hex>",
 *     "docker://<hex>" (any "<scheme>://") become "<hex>", as cgroup.h's container_id is; an id
 *     that is not 1..KUBELET_ID_MAX characters of [A-Za-z0-9_.-] is dropped (counted).
 *   - kubelet_pods_find() takes the pod UID and the container id of a process as
 *     cgroup.h gives them (pod_uid with '-'; a systemd-driver form with '_' matches too, case
 *     does not matter) and the container id (bare or with a "<scheme>://" prefix; a query of at
 *     least 12 characters that is a prefix of a pod's container id matches, for short docker
 *     ids). Either may be NULL or "". The pod is found by UID; when the UID is unknown or
 *     absent, by the container id among all pods. The result borrows from the list: valid
 *     until the list changes (kubelet_pods_free(), or the kubelet_client_poll() that installs
 *     a new list); copy the strings and json_incref() the labels to keep them longer.
 *   - The client: one libcurl easy handle in one multi handle, driven only by
 *     kubelet_client_poll(), which never blocks on the network (it calls curl_multi_perform
 *     once). A refresh starts at the first poll and then every refresh interval (default
 *     KUBELET_DEFAULT_REFRESH_MS) after the previous one started; one at a time. Each refresh
 *     reads the bearer token afresh from token_file (service-account tokens rotate; the token
 *     is wiped from memory after the request), verifies TLS peers and host names (ca_file, when
 *     set, replaces the system store), limits the whole transfer to timeout_ms and the body to
 *     KUBELET_BODY_MAX, and follows no redirect and no proxy (the kubelet is on this node).
 *     Success (HTTP 200 and a list that parses) replaces the pod list; any failure (token
 *     unreadable, transport error, non-200 status, bad body) keeps the last good list, counts
 *     a failure and keeps the reason in last_error. Parsing runs inside kubelet_client_poll()
 *     (about 50 ms per MB of answer); an answer byte-for-byte equal to the one the current
 *     list came from (length + 128-bit digest) counts as a success and is not parsed again.
 *   - No global state besides libcurl's (curl_global_init is called by open, released by close,
 *     reference-counted by libcurl). Not thread-safe: one owner (the daemon loop).
 *
 * How the daemon uses it (agent/daemon.c):
 *   1. At start (and after a reload that changes cfg.kubelet), when cfg.kubelet.enabled:
 *        kc = kubelet_client_open(cfg.kubelet.url, cfg.kubelet.token_file, cfg.kubelet.ca_file,
 *                                 cfg.upload_timeout_s * 1000, &err);
 *      NULL only for a bad URL or no memory: log err.msg as a warning and go on without it.
 *   2. In the main loop (it wakes at least every 250 ms), every iteration:
 *        kubelet_client_poll(kc);           (returns 1 when a new pod list was installed)
 *      When discovery reports a new target whose pod_uid the list does not know yet (a pod
 *      started since the last refresh), call kubelet_client_refresh_now(kc) once for it, so its
 *      labels arrive within a second instead of within the refresh interval.
 *   3. When deciding whether a target matches the selectors and when making a profile's labels,
 *      with the target's cgroup info (cg = discovery_target.cgroup, of its first process):
 *        struct kubelet_match m;
 *        if (kc && kubelet_pods_find(kubelet_client_pods(kc), cg->pod_uid, cg->container_id, &m))
 *      then pass m.k8s_namespace and m.labels to discovery_target_matches() /
 *      selector_subject.k8s_namespace / .k8s_labels (the pod's labels are what `k8s_labels`
 *      selectors match), and set the profile labels "pod_name" = m.pod_name, "namespace" =
 *      m.k8s_namespace, "container_name" = m.container_name (set_label skips "" values).
 *      Copy them into the app's own storage if they must outlive the next poll.
 *      The kubelet authorizes GET /pods as "get nodes/proxy": the agent's service account
 *      needs a ClusterRole with {apiGroups: [""], resources: ["nodes/proxy"], verbs: ["get"]}
 *      (the kubelet must run with webhook authorization, the default of kubeadm clusters).
 *   4. Status / metrics: kubelet_client_stats(kc) (refreshes, failures, pods, last_error).
 *   5. At exit or when disabled by a reload: kubelet_client_close(kc).
 */
#ifndef CONPROF_AGENT_KUBELET_H
#define CONPROF_AGENT_KUBELET_H

#include "error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KUBELET_BODY_MAX (16u << 20)
#define KUBELET_PODS_MAX 4096
#define KUBELET_LABELS_MAX 64
#define KUBELET_CONTAINERS_MAX 128
#define KUBELET_STRING_MAX 512 /* bytes of a kept string, NUL excluded */
#define KUBELET_ID_MAX 128     /* a container id, without its scheme (as CGROUP_ID_MAX) */
#define KUBELET_DEFAULT_REFRESH_MS 30000

struct kubelet_container {
    char *name; /* as in the pod spec */
    char *id;   /* bare, lower-case (no "<scheme>://"), of [a-z0-9_.-] */
};

struct kubelet_pod {
    char *uid; /* as the API gives it, with '-' */
    char *name;
    char *k8s_namespace;
    json_t *labels; /* object of string values; {} when none */
    struct kubelet_container *containers;
    size_t container_count;
};

struct kubelet_pods {
    struct kubelet_pod *items;
    size_t count;
    size_t skipped_pods;       /* items without usable metadata */
    size_t dropped_labels;     /* over KUBELET_LABELS_MAX, non-string or over-long */
    size_t dropped_containers; /* over KUBELET_CONTAINERS_MAX, over-long name, bad id */
};

/* Parses the body of GET /pods into *out (which need not be initialised; on error it is left
 * empty, nothing to free). */
int kubelet_pods_parse(const char *json, size_t len, struct kubelet_pods *out, struct cp_err *err);
/* Releases everything in *pods and leaves it empty; an empty (zeroed) list is fine. */
void kubelet_pods_free(struct kubelet_pods *pods);

struct kubelet_match {
    const struct kubelet_pod *pod;
    const char *pod_name;
    const char *k8s_namespace;
    const char *container_name; /* "" when the pod is known but not the container */
    const json_t *labels;       /* the pod's labels, an object of strings */
};

/* Finds the pod (and container) of a process; false when neither is known. */
bool kubelet_pods_find(const struct kubelet_pods *pods, const char *pod_uid,
                       const char *container_id, struct kubelet_match *out);

/* ---- the client ------------------------------------------------------------------------ */

struct kubelet_client_stats {
    uint64_t refreshes;    /* refreshes finished, successful or not */
    uint64_t failures;     /* of which failed */
    size_t pods;           /* pods in the current list */
    double last_success_s; /* CLOCK_MONOTONIC seconds of the last good list; 0: never */
    char last_error[512];  /* "" until the first failure; then the latest failure's reason */
};

struct kubelet_client;

/* url: http:// or https:// base of the kubelet API ("/pods" is appended; a trailing '/' is
 * fine). token_file and ca_file may be NULL or "" (no Authorization header / system CA
 * store). timeout_ms > 0 bounds each refresh. Fails (NULL) only on a bad URL or no memory. */
struct kubelet_client *kubelet_client_open(const char *url, const char *token_file,
                                           const char *ca_file, long timeout_ms,
                                           struct cp_err *err);
void kubelet_client_close(struct kubelet_client *c);

/* The time between the starts of two refreshes (>= 1 ms; default KUBELET_DEFAULT_REFRESH_MS). */
void kubelet_client_set_interval_ms(struct kubelet_client *c, long interval_ms);
/* Makes the next poll start a refresh (unless one is running). */
void kubelet_client_refresh_now(struct kubelet_client *c);

/* Drives the client without blocking: starts a refresh when due, moves a running one on,
 * finishes it. Returns 1 when this call installed a new pod list, else 0 (also when the
 * kubelet's answer was the same as last time). */
int kubelet_client_poll(struct kubelet_client *c);
/* Whether a refresh is in flight. */
bool kubelet_client_busy(const struct kubelet_client *c);

/* The last good pod list (empty before the first success). */
const struct kubelet_pods *kubelet_client_pods(const struct kubelet_client *c);
const struct kubelet_client_stats *kubelet_client_stats(const struct kubelet_client *c);

#endif
