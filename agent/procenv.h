/* procenv: the metadata a process carries in its environment and command line.
 *
 * Contract: procenv_parse() reads a NUL-separated environment block (as /proc/PID/environ gives
 * it) of at most PROCENV_TEXT_MAX bytes (beyond that the text is ignored and the entry the bound
 * cuts is skipped) and keeps the variables below. The first occurrence of a name wins (as
 * getenv() does); empty values and values of PROCENV_VALUE_MAX bytes or more count as absent.
 * Values are kept as raw bytes (never NUL): whoever puts them in a label or URL escapes them.
 * procenv_app_name() applies the application-name precedence
 *   CONPROF_APP_NAME > BLACKFIRE_CONPROF_APP_NAME > PLATFORM_APPLICATION_NAME >
 *   OTEL_SERVICE_NAME (but not containerd-shim's own "containerd-shim-...") >
 *   the script from the command line > the comm,
 * where the script is found only when argv[0] is a Python interpreter (procenv_is_python_name):
 * Python's options are skipped, "-m mod" gives "mod", "-c" and "-" give none, and a script path
 * gives its base name without ".py". No state; parse functions never fail.
 * /proc/PID/environ shows the environment the process was started with (a process that
 * overwrites that memory, as setproctitle does, shows what it wrote).
 */
#ifndef CONPROF_AGENT_PROCENV_H
#define CONPROF_AGENT_PROCENV_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PROCENV_TEXT_MAX (256 * 1024)
#define PROCENV_VALUE_MAX 256

struct procenv {
    char project[PROCENV_VALUE_MAX];       /* PLATFORM_PROJECT */
    char environment[PROCENV_VALUE_MAX];   /* PLATFORM_ENVIRONMENT */
    char platform_app[PROCENV_VALUE_MAX];  /* PLATFORM_APPLICATION_NAME */
    char conprof_app[PROCENV_VALUE_MAX];   /* CONPROF_APP_NAME */
    char blackfire_app[PROCENV_VALUE_MAX]; /* BLACKFIRE_CONPROF_APP_NAME */
    char otel_service[PROCENV_VALUE_MAX];  /* OTEL_SERVICE_NAME */
};

void procenv_parse(const char *text, size_t len, struct procenv *out);

/* Reads /proc/PID/environ through a /proc handle (procfs.h) and parses it. CP_ERR_NOPROC when
 * the process is gone, CP_ERR_PERM when we may not read it (another user's process without
 * CAP_SYS_PTRACE), CP_ERR_IO otherwise. */
int procenv_read(int procfd, pid_t pid, struct procenv *out, struct cp_err *err);

/* The application name (see the precedence above) into out (always NUL-terminated; size > 0).
 * cmdline is /proc/PID/cmdline (NUL-separated, cmdline_len bytes), comm the process's comm. */
void procenv_app_name(const struct procenv *env, const char *cmdline, size_t cmdline_len,
                      const char *comm, char *out, size_t size);

/* The script (or -m module) of a Python command line; false when there is none. */
bool procenv_script_name(const char *cmdline, size_t len, char *out, size_t size);

/* Is this executable base name a CPython 3 interpreter: "python", "python3", "python3.N" with an
 * optional ABI suffix such as "t", "d" or "m" ("python3.13t")? */
bool procenv_is_python_name(const char *name, size_t len);

#endif
