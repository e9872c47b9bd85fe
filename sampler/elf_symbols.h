/* elf_symbols: what the sampler needs from an ELF file (the python executable or libpython).
 *
 * Contract: opens a file (or parses a memory image, for fuzzing) with elfutils libelf, and answers
 * symbol values from .dynsym and .symtab, section addresses, and the PT_LOAD segments needed to
 * turn a link-time address into a run-time one. Every size and index read from the file is
 * bounded; a malformed file is an error, never a crash. The result owns its memory.
 */
#ifndef CONPROF_ELF_SYMBOLS_H
#define CONPROF_ELF_SYMBOLS_H

#include "error.h"
#include "proc_maps.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ELF_SYMBOLS_MAX_LOADS 16

struct elf_load {
    uint64_t vaddr, memsz, offset, filesz;
    uint32_t flags; /* PF_R | PF_W | PF_X */
};

struct elf_wanted_symbol {
    const char *name;
    uint64_t value; /* st_value (link-time address), 0 when absent */
    uint64_t size;
    bool found;
};

struct elf_info {
    uint16_t type; /* ET_EXEC or ET_DYN */
    struct elf_load loads[ELF_SYMBOLS_MAX_LOADS];
    unsigned nloads;
    uint64_t pyruntime_section_addr, pyruntime_section_size; /* ".PyRuntime", 0 if absent */
    uint64_t bss_addr, bss_size;
    bool has_symtab;
    char needed_libpython[256]; /* DT_NEEDED entry matching libpython*, "" if none */
};

/* Looks up the `nwanted` symbols (found/value/size filled) in .dynsym then .symtab. On error
 * (CP_ERR_IO / CP_ERR_PERM opening, CP_ERR_INVALID for a malformed file, CP_ERR_UNSUPPORTED for
 * a 32-bit one) info and wanted are left cleared. */
int elf_symbols_read_file(const char *path, struct elf_info *info, struct elf_wanted_symbol *wanted,
                          size_t nwanted, struct cp_err *err);
/* The same over an open descriptor, which it closes; path only names the file in messages. */
int elf_symbols_read_fd(int fd, const char *path, struct elf_info *info,
                        struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err);
int elf_symbols_read_memory(const void *image, size_t size, struct elf_info *info,
                            struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err);

/* Load bias of the file in a process: runtime address = bias + link-time address. Computed from the
 * mapping `map` of that file (its start and file offset) and the PT_LOAD segment that covers
 * map->offset. Returns 0 and sets *bias, or -1 when no segment matches. */
int elf_symbols_load_bias(const struct elf_info *info, const struct proc_map *map, uint64_t *bias);

#endif
