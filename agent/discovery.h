/* discovery: the Python processes of this node, grouped into targets.
 *
 * Contract: discovery_scan() lists /proc (through a /proc handle, procfs.h) and reads each
 * process's stat once (start time, comm, kernel-thread flag). What it decided about a process is
 * cached under (pid, start time, comm): a reused pid has another start time, and an exec keeps
 * the pid and start time but changes the comm, so either makes the process be looked at again.
 * On a steady system a scan therefore costs one stat read per process. A process is Python when
 * its executable's base name is a CPython 3 interpreter name (procenv_is_python_name), or else
 * when its maps show a libpython3 (embedding servers such as uwsgi); a non-Python executable is
 * checked again at each scan while it is younger than settle_seconds (an embedder may load
 * libpython after start), then never again. Processes whose executable we may not read (other
 * users', without CAP_SYS_PTRACE) are skipped and counted. A statically linked embedder that is
 * not named python is not found.
 * For each Python process the scan reads, once: cmdline (bounded), cgroup (cgroup.h), environ
 * (procenv.h; a failure leaves the metadata empty, env_readable false), the NSpid of its status.
 * Targets: the Python processes of one container form one target (key "container:<id>"); host
 * processes form one target per application name (key "host:<name>"). After each scan the
 * target list is sorted by key and its processes by pid, and the events say what changed since
 * the previous scan, in the order: processes gone, targets gone, targets appeared, processes
 * appeared (a pid whose process was looked at again and is Python still goes then appears).
 * Lifetimes: targets, events and stats are valid until the next scan or discovery_free(); a
 * struct discovery_process stays at one address while its process lives (until the scan that
 * reports it gone). discovery_scan() fails only when /proc cannot be listed or memory runs out;
 * a process that exits during the scan is just not reported. Not thread-safe; no global state.
 */
#ifndef CONPROF_AGENT_DISCOVERY_H
#define CONPROF_AGENT_DISCOVERY_H

#include "cgroup.h"
#include "error.h"
#include "procenv.h"
#include "selector.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DISCOVERY_KEY_MAX (PROCENV_VALUE_MAX + 16)
#define DISCOVERY_CMDLINE_MAX 4096

struct discovery_options {
    int procfd;              /* the /proc to scan (procfs.h); PROCFS_DEFAULT: ours */
    unsigned settle_seconds; /* re-check young non-Python executables for libpython */
    size_t cmdline_max;      /* bytes of /proc/PID/cmdline kept (<= DISCOVERY_CMDLINE_MAX) */
};

/* procfd PROCFS_DEFAULT, settle_seconds 10, cmdline_max DISCOVERY_CMDLINE_MAX. */
struct discovery_options discovery_default_options(void);

struct discovery_process {
    pid_t pid;
    pid_t nspid;         /* the pid in the process's own pid namespace */
    uint64_t start_time; /* clock ticks after boot (stat field 22) */
    char comm[64];
    char exe[PATH_MAX]; /* as the process sees it; " (deleted)" removed */
    char *cmdline;      /* NUL-separated argv, cmdline_len bytes (NUL-terminated as well) */
    size_t cmdline_len;
    struct cgroup_info cgroup;
    struct procenv env;
    bool env_readable;
    char app_name[PROCENV_VALUE_MAX]; /* procenv_app_name() */
    char target_key[DISCOVERY_KEY_MAX];
};

struct discovery_target {
    char key[DISCOVERY_KEY_MAX]; /* "container:<id>" or "host:<application name>" */
    bool in_container;
    const struct cgroup_info *cgroup;             /* of its first process */
    const struct discovery_process *const *procs; /* sorted by pid */
    size_t proc_count;
};

enum discovery_event_kind {
    DISCOVERY_PROCESS_GONE,
    DISCOVERY_TARGET_GONE,
    DISCOVERY_TARGET_APPEARED,
    DISCOVERY_PROCESS_APPEARED,
};

struct discovery_event {
    enum discovery_event_kind kind;
    char target_key[DISCOVERY_KEY_MAX];
    pid_t pid;                               /* process events; 0 for target events */
    uint64_t start_time;                     /* process events */
    const struct discovery_process *process; /* PROCESS_APPEARED only, else NULL */
};

/* Counters of the last scan. */
struct discovery_stats {
    size_t processes; /* numeric entries of /proc */
    size_t kernel_threads;
    size_t python;         /* Python processes */
    size_t unreadable;     /* executable not readable (permission) */
    size_t vanished;       /* exited while we looked */
    size_t stat_reads;     /* /proc/PID/stat */
    size_t exe_reads;      /* /proc/PID/exe */
    size_t maps_reads;     /* /proc/PID/maps (libpython check) */
    size_t detail_reads;   /* new Python processes: cmdline, cgroup, environ, status */
    size_t environ_errors; /* environ not readable */
};

struct discovery;

struct discovery *discovery_new(const struct discovery_options *opt, struct cp_err *err);
void discovery_free(struct discovery *d);

int discovery_scan(struct discovery *d, struct cp_err *err);

const struct discovery_target *discovery_targets(const struct discovery *d, size_t *count);
const struct discovery_event *discovery_events(const struct discovery *d, size_t *count);
const struct discovery_stats *discovery_stats(const struct discovery *d);
/* The target of that key in the last scan, or NULL. */
const struct discovery_target *discovery_find_target(const struct discovery *d, const char *key);

/* A process's metadata as a selector subject; the Kubernetes fields are left NULL for the
 * caller (the kubelet lookup) to fill. */
void discovery_subject(const struct discovery_process *p, struct selector_subject *out);
/* Does any process of the target match the list (with the pod's namespace and labels, or
 * NULL when unknown)? */
bool discovery_target_matches(const struct discovery_target *t, const struct selector_list *list,
                              const char *k8s_namespace, const json_t *k8s_labels);

#endif
