/* caps: least privilege for the agent and its workers (libcap).
 *
 * Contract: caps_restrict_agent() keeps only the capabilities the agent needs — CAP_SYS_PTRACE
 * (read other processes' memory), CAP_SYS_ADMIN and CAP_SYS_CHROOT (setns into containers'
 * mount namespaces needs both), CAP_DAC_READ_SEARCH (open their files) — in the permitted, effective and bounding sets, and
 * reports in `missing` (comma-separated, "" when none) those it does not have: without them the
 * agent still runs, limited to what its user can read. caps_restrict_worker() keeps CAP_SYS_PTRACE
 * alone and sets no_new_privs; a worker calls it after entering the container and before reading
 * any target memory. Both are no-ops on capabilities for an ordinary user with none.
 */
#ifndef CONPROF_AGENT_CAPS_H
#define CONPROF_AGENT_CAPS_H

#include "error.h"

#include <stddef.h>

int caps_restrict_agent(char *missing, size_t size, struct cp_err *err);
int caps_restrict_worker(struct cp_err *err);

#endif
