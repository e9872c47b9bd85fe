/* elf_symbols: reading the few things the sampler needs from an ELF file, with elfutils libelf.
 *
 * Both the symbol tables (.dynsym, then .symtab) are searched for the wanted names; stripped
 * static builds still export _PyRuntime in .dynsym (linked with -export-dynamic). Everything read
 * from the file is checked against the sizes libelf reports (symbol counts come from the data
 * size, not sh_size; names through elf_strptr, which bounds them), so a corrupt file is an error.
 *
 * Load bias: a PT_LOAD segment maps file bytes [p_offset, p_offset + p_filesz) at link address
 * p_vaddr. The kernel maps it page-aligned, so a mapping [start, end) with file offset `off` that
 * lies inside that segment places file offset `off` at `start`; the link address of that offset is
 * p_vaddr + (off - p_offset), hence bias = start - (p_vaddr + off - p_offset) and every link
 * address a of the file is at run time bias + a. ET_EXEC files come out with bias 0.
 */
#include "elf_symbols.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_SYMBOLS (4u << 20) /* a bound on symbols scanned per table */

static void fill_wanted(Elf *elf, Elf_Scn *scn, const GElf_Shdr *sh,
                        struct elf_wanted_symbol *wanted, size_t nwanted)
{
    Elf_Data *data = elf_getdata(scn, NULL);
    if (!data || sh->sh_entsize == 0 || !data->d_buf)
        return;
    size_t count = data->d_size / sh->sh_entsize;
    if (count > MAX_SYMBOLS)
        count = MAX_SYMBOLS;
    for (size_t i = 0; i < count; i++) {
        GElf_Sym sym;
        if (!gelf_getsym(data, (int)i, &sym) || sym.st_name == 0 || sym.st_shndx == SHN_UNDEF)
            continue;
        const char *name = elf_strptr(elf, sh->sh_link, sym.st_name);
        if (!name)
            continue;
        for (size_t w = 0; w < nwanted; w++) {
            if (!wanted[w].found && strcmp(name, wanted[w].name) == 0) {
                wanted[w].found = true;
                wanted[w].value = sym.st_value;
                wanted[w].size = sym.st_size;
            }
        }
    }
}

static void read_needed(Elf *elf, Elf_Scn *scn, const GElf_Shdr *sh, struct elf_info *info)
{
    Elf_Data *data = elf_getdata(scn, NULL);
    if (!data || sh->sh_entsize == 0)
        return;
    size_t count = data->d_size / sh->sh_entsize;
    for (size_t i = 0; i < count && i < 4096; i++) {
        GElf_Dyn dyn;
        if (!gelf_getdyn(data, (int)i, &dyn) || dyn.d_tag == DT_NULL)
            break;
        if (dyn.d_tag != DT_NEEDED)
            continue;
        const char *name = elf_strptr(elf, sh->sh_link, dyn.d_un.d_val);
        if (name && strncmp(name, "libpython", 9) == 0)
            snprintf(info->needed_libpython, sizeof info->needed_libpython, "%s", name);
    }
}

static int read_elf(Elf *elf, const char *what, struct elf_info *info,
                    struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err)
{
    memset(info, 0, sizeof *info);
    for (size_t w = 0; w < nwanted; w++) {
        wanted[w].found = false;
        wanted[w].value = wanted[w].size = 0;
    }
    GElf_Ehdr eh;
    if (elf_kind(elf) != ELF_K_ELF || !gelf_getehdr(elf, &eh)) {
        cp_err_set(err, CP_ERR_INVALID, "%s is not an ELF file", what);
        return -1;
    }
    if (gelf_getclass(elf) != ELFCLASS64) {
        cp_err_set(err, CP_ERR_UNSUPPORTED, "%s is not a 64-bit ELF file", what);
        return -1;
    }
    if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN) {
        cp_err_set(err, CP_ERR_INVALID, "%s is not an executable or a shared library", what);
        return -1;
    }
    info->type = eh.e_type;
    size_t nphdr = 0;
    if (elf_getphdrnum(elf, &nphdr) != 0)
        nphdr = 0;
    for (size_t i = 0; i < nphdr && i < 1024; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(elf, (int)i, &ph) || ph.p_type != PT_LOAD)
            continue;
        if (info->nloads < ELF_SYMBOLS_MAX_LOADS)
            info->loads[info->nloads++] = (struct elf_load){ph.p_vaddr, ph.p_memsz, ph.p_offset,
                                                            ph.p_filesz, ph.p_flags};
    }
    size_t shstrndx;
    if (elf_getshdrstrndx(elf, &shstrndx) != 0) {
        cp_err_set(err, CP_ERR_INVALID, "%s has no section name table", what);
        return -1;
    }
    Elf_Scn *dynsym = NULL, *symtab = NULL;
    GElf_Shdr dynsym_sh, symtab_sh;
    for (Elf_Scn *scn = elf_nextscn(elf, NULL); scn; scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh))
            continue;
        const char *name = elf_strptr(elf, shstrndx, sh.sh_name);
        if (sh.sh_type == SHT_DYNSYM) {
            dynsym = scn;
            dynsym_sh = sh;
        } else if (sh.sh_type == SHT_SYMTAB) {
            symtab = scn;
            symtab_sh = sh;
            info->has_symtab = true;
        } else if (sh.sh_type == SHT_DYNAMIC) {
            read_needed(elf, scn, &sh, info);
        }
        if (name && strcmp(name, ".PyRuntime") == 0) {
            info->pyruntime_section_addr = sh.sh_addr;
            info->pyruntime_section_size = sh.sh_size;
        } else if (name && strcmp(name, ".bss") == 0) {
            info->bss_addr = sh.sh_addr;
            info->bss_size = sh.sh_size;
        }
    }
    if (dynsym)
        fill_wanted(elf, dynsym, &dynsym_sh, wanted, nwanted);
    if (symtab)
        fill_wanted(elf, symtab, &symtab_sh, wanted, nwanted);
    return 0;
}

static bool libelf_ready(void) { return elf_version(EV_CURRENT) != EV_NONE; }

int elf_symbols_read_file(const char *path, struct elf_info *info,
                          struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err)
{
    if (!libelf_ready()) {
        cp_err_set(err, CP_ERR_IO, "libelf is out of date");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cp_err_set(err, errno == EACCES || errno == EPERM ? CP_ERR_PERM : CP_ERR_IO,
                   "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    int rc;
    if (!elf) {
        cp_err_set(err, CP_ERR_INVALID, "%s is not a readable ELF file: %s", path,
                   elf_errmsg(-1));
        rc = -1;
    } else {
        rc = read_elf(elf, path, info, wanted, nwanted, err);
        elf_end(elf);
    }
    close(fd);
    return rc;
}

int elf_symbols_read_memory(const void *image, size_t size, struct elf_info *info,
                            struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err)
{
    if (!libelf_ready()) {
        cp_err_set(err, CP_ERR_IO, "libelf is out of date");
        return -1;
    }
    Elf *elf = elf_memory((char *)image, size);
    if (!elf) {
        cp_err_set(err, CP_ERR_INVALID, "not a readable ELF image: %s", elf_errmsg(-1));
        return -1;
    }
    int rc = read_elf(elf, "the ELF image", info, wanted, nwanted, err);
    elf_end(elf);
    return rc;
}

int elf_symbols_load_bias(const struct elf_info *info, const struct proc_map *map, uint64_t *bias)
{
    for (unsigned i = 0; i < info->nloads; i++) {
        const struct elf_load *l = &info->loads[i];
        /* the kernel maps from the page-aligned file offset */
        uint64_t page_off = l->offset & ~(uint64_t)0xfff;
        if (map->offset < page_off || map->offset >= l->offset + (l->filesz ? l->filesz : 1))
            continue;
        *bias = map->start - (l->vaddr + map->offset - l->offset);
        return 0;
    }
    return -1;
}
