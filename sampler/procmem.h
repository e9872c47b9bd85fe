/* procmem: a memreader over another process's memory with process_vm_readv(2).
 *
 * Contract: never attaches, stops or signals the target. Needs the same user or CAP_SYS_PTRACE
 * (Yama ptrace_scope permitting). Counts its calls and failures for statistics. One procmem per
 * target; not thread-safe (counters are plain integers).
 */
#ifndef CONPROF_PROCMEM_H
#define CONPROF_PROCMEM_H

#include "memreader.h"

#include <sys/types.h>

struct procmem {
    pid_t pid;
    uint64_t calls;
    uint64_t failures;
};

void procmem_init(struct procmem *pm, pid_t pid, struct memreader *out);

#endif
