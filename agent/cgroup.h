/* cgroup: which container a process runs in, from the text of /proc/PID/cgroup.
 *
 * Contract: cgroup_parse() never fails and never trusts its input. It reads at most
 * CGROUP_TEXT_MAX bytes (the line cut by that bound, lines of CGROUP_LINE_MAX bytes or more and
 * malformed lines are skipped), looks at the cgroup v2 line ("0::<path>") and at the v1 lines of
 * the name=systemd and cpu controllers, in that order, and takes the first whose path names a
 * container. Within a path the innermost container component wins, so "docker-<id>.scope/init"
 * and nested runtimes give the container the process is really in. Layouts recognised (v1 and v2):
 *   .../cri-containerd-<id>.scope                       runtime "containerd"
 *   .../crio-<id>.scope, .../crio-<hexid>                runtime "cri-o" (crio-conmon-: not a
 *                                                        container, the process is a host one)
 *   .../docker-<id>.scope, /docker/<hexid>               runtime "docker"
 *   .../libpod-<id>.scope, .../libpod-<hexid>            runtime "podman" (libpod-conmon-: host)
 *   /kubepods[/burstable|/besteffort]/pod<uid>/<id>      kubepods cgroupfs: the runtime is not
 *                                                        named, runtime ""
 *   /kubepods.slice/kubepods-<qos>-pod<uid_>.slice/<one of the scopes above>   (systemd driver)
 * A "<id>" in a ".scope" name or under a pod is taken as given (1..CGROUP_ID_MAX characters of
 * [A-Za-z0-9_.-]); the forms without ".scope" and /docker/<hexid> need 12..64 hex digits. A
 * process is in a container exactly when container_id is non-empty (cgroup_in_container()); then
 * runtime names the runtime or is "" when the layout does not tell it. pod_uid is set when an
 * ancestor of the container is a Kubernetes pod cgroup, with the systemd driver's '_' turned back
 * into '-'. path is the cgroup path of the line used (the v2 line, else name=systemd, else cpu
 * when no line names a container), as the reader's cgroup namespace shows it (it may start with
 * "/.." when the reader is in a private cgroup namespace; such paths are still recognised).
 * No heap memory and no state, except cgroup_read() which reads a live process's file.
 */
#ifndef CONPROF_AGENT_CGROUP_H
#define CONPROF_AGENT_CGROUP_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define CGROUP_TEXT_MAX (64 * 1024)
#define CGROUP_LINE_MAX 4096
#define CGROUP_ID_MAX 128
#define CGROUP_POD_UID_MAX 64

struct cgroup_info {
    char runtime[16];                     /* "containerd", "cri-o", "docker", "podman", "" */
    char container_id[CGROUP_ID_MAX + 1]; /* "" for a host process */
    char pod_uid[CGROUP_POD_UID_MAX + 1]; /* "" when not in a Kubernetes pod */
    char path[CGROUP_LINE_MAX];           /* the cgroup path of the line used */
};

/* Parses the text of /proc/PID/cgroup (len bytes, no NUL needed). */
void cgroup_parse(const char *text, size_t len, struct cgroup_info *out);

/* Classifies one cgroup path (len bytes, below CGROUP_LINE_MAX); out->path gets the path.
 * Returns whether it names a container. */
bool cgroup_classify_path(const char *path, size_t len, struct cgroup_info *out);

/* Reads and parses /proc/PID/cgroup through a /proc handle (procfs.h). CP_ERR_NOPROC when the
 * process is gone, CP_ERR_PERM / CP_ERR_IO otherwise. */
int cgroup_read(int procfd, pid_t pid, struct cgroup_info *out, struct cp_err *err);

static inline bool cgroup_in_container(const struct cgroup_info *info)
{
    return info->container_id[0] != '\0';
}

#endif
