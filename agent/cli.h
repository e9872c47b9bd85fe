/* cli: what the conprof-agent subcommands share.
 *
 * Contract: each subcommand is one file (agent/cmd_<name>.c) with an entry point
 * `int cmd_<name>(int argc, char **argv)` that returns the process exit status: 0 success,
 * 1 failure at run time, 2 bad usage (the message says which option and what it expects).
 * Helpers here parse numbers strictly and write files atomically. Messages go to stderr with the
 * "conprof-agent: " prefix; results go to stdout or the named file.
 */
#ifndef CONPROF_AGENT_CLI_H
#define CONPROF_AGENT_CLI_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>

#define CONPROF_VERSION "0.1.0"

enum exit_status {
    EXIT_OK = 0,
    EXIT_FAILURE_RUN = 1,
    EXIT_USAGE = 2,
};

int cmd_run(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_record(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_version(int argc, char **argv);

void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints err's message and returns the exit status its code calls for. */
int cli_fail(const struct cp_err *err);

/* Strict parsers: the whole text must be a number within [min, max]. */
bool cli_parse_long(const char *text, long min, long max, long *out);
bool cli_parse_double(const char *text, double min, double max, double *out);

/* Writes data to path through a temporary file in the same directory and rename(2). */
int cli_write_file(const char *path, const void *data, size_t len, struct cp_err *err);

/* The target's command line (/proc/PID/cmdline, NULs as spaces), "" when unknown. */
void cli_process_cmdline(int pid, char *buf, size_t size);

#endif
