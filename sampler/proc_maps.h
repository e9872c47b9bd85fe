/* proc_maps: parses /proc/PID/maps.
 *
 * Contract: proc_maps_parse() parses text already read (bounded by len; lines longer than 4 KiB,
 * malformed lines and lines that would break the address order are skipped and counted, never
 * trusted), so the result is sorted and disjoint; proc_maps_read() reads the file of a live
 * process and parses it (CP_ERR_NOPROC / CP_ERR_PERM from the errno, CP_ERR_NOMEM past 4 MiB).
 * Paths keep the kernel's " (deleted)" suffix stripped, with `deleted` set. The result owns its
 * memory; free with proc_maps_free().
 */
#ifndef CONPROF_PROC_MAPS_H
#define CONPROF_PROC_MAPS_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct proc_map {
    uint64_t start, end; /* [start, end) */
    uint64_t offset;     /* file offset of start */
    bool r, w, x, p;     /* permissions; p = private */
    uint32_t dev_major, dev_minor;
    uint64_t inode;
    bool deleted;
    char *path; /* "" for anonymous mappings; "[heap]" etc. for special ones */
};

struct proc_maps {
    struct proc_map *maps;
    size_t count;
    size_t skipped; /* malformed lines */
};

int proc_maps_parse(const char *text, size_t len, struct proc_maps *out, struct cp_err *err);
int proc_maps_read(pid_t pid, struct proc_maps *out, struct cp_err *err);
/* The same through a /proc handle (procfs.h), for callers in another mount namespace. */
int proc_maps_read_at(int procfd, pid_t pid, struct proc_maps *out, struct cp_err *err);
void proc_maps_free(struct proc_maps *m);

/* The mapping that contains addr, or NULL. */
const struct proc_map *proc_maps_find(const struct proc_maps *m, uint64_t addr);

#endif
