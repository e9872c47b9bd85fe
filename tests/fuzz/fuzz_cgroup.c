/* Fuzzes the /proc/PID/cgroup parser: any bytes parse; what comes out is well-formed (a runtime
 * from the known set, an id of id characters, a pod UID without '_', a path without newline), and
 * a container found by cgroup_parse is what cgroup_classify_path says about that same path. */
#include "cgroup.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_charset(const char *s, const char *allowed)
{
    if (strspn(s, allowed) != strlen(s)) abort();
}

static void check_info(const struct cgroup_info *info, bool from_lines)
{
    static const char *const runtimes[] = {"", "containerd", "cri-o", "docker", "podman"};
    bool known = false;
    for (size_t i = 0; i < sizeof runtimes / sizeof *runtimes; i++)
        known |= strcmp(info->runtime, runtimes[i]) == 0;
    if (!known) abort();
    if (strlen(info->container_id) > CGROUP_ID_MAX || strlen(info->path) >= CGROUP_LINE_MAX)
        abort();
    check_charset(info->container_id, "0123456789abcdefghijklmnopqrstuvwxyz"
                                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-");
    check_charset(info->pod_uid, "0123456789abcdefABCDEF-");
    if (from_lines && strchr(info->path, '\n')) abort(); /* a raw path keeps its bytes */
    if (!cgroup_in_container(info) && (info->runtime[0] || info->pod_uid[0])) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cgroup_info info, again;
    cgroup_parse((const char *)data, size, &info);
    check_info(&info, true);
    if (cgroup_in_container(&info)) {
        if (!cgroup_classify_path(info.path, strlen(info.path), &again)) abort();
        if (strcmp(again.container_id, info.container_id) != 0 ||
            strcmp(again.pod_uid, info.pod_uid) != 0 || strcmp(again.runtime, info.runtime) != 0)
            abort();
    }
    if (size < CGROUP_LINE_MAX) {
        cgroup_classify_path((const char *)data, size, &again);
        check_info(&again, false);
    }
    return 0;
}
