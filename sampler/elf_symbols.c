/* elf_symbols: reading the few things the sampler needs from an ELF file, with elfutils libelf.
 *
 * One pass over the section headers notes .dynsym, .symtab, .dynamic, .PyRuntime and .bss; then
 * .dynsym and .symtab are searched (in that order, first hit wins) for the wanted names. Stripped
 * static builds still export _PyRuntime in .dynsym (they link with -export-dynamic). libelf checks
 * that a section's data lies inside the file; on top of that every count read from the file is
 * bounded (sections, program headers, symbols, dynamic entries), a table's entry size must be the
 * one of its type and its sh_size must fit its data, and every name goes through elf_strptr (which
 * checks the index and the string's terminator in a real SHT_STRTAB). Anything off is
 * CP_ERR_INVALID naming the file and the problem.
 *
 * Load bias: a PT_LOAD segment maps file bytes [p_offset, p_offset + p_filesz) at link address
 * p_vaddr. The kernel maps whole pages, so a mapping [start, end) of the file with file offset
 * `off` (page aligned, at or after page_down(p_offset)) puts file offset `off` at `start`, and the
 * link address of file offset `off` is p_vaddr - (p_offset - off). Hence
 *     bias = start - (p_vaddr - (p_offset - off))    and    runtime = bias + link address.
 * p_vaddr and p_offset are congruent modulo the page size, so the bias comes out page aligned; an
 * ET_EXEC file is linked at its run-time address and comes out with bias 0. Several segments can
 * share a page (old layouts put the end of text and the start of data in one file page), so the
 * segment is chosen by score: page_down(p_offset) == off first, then agreement of PF_X with the
 * mapping's x bit, then the lowest index. Segments are matched by file offset, never by "the first
 * executable segment", which is wrong for libraries with several r-x segments out of order.
 */
#include "elf_symbols.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_SECTIONS 65536
#define MAX_PHDRS 4096
#define MAX_SYMBOLS (4u << 20)
#define MAX_DYNAMIC 65536

/* What one pass over the section headers found. */
struct sections {
    Elf_Scn *dynsym, *symtab, *dynamic;
};

/* A table section (symbols or dynamic entries): its data, `count` entries of the right size
 * that fit in the data, and the index of the string table it links to. */
struct table {
    Elf_Data *data;
    size_t count, strndx;
};

static int table_open(Elf *elf, Elf_Scn *scn, Elf_Type type, const char *what, const char *file,
                      size_t max, struct table *t, struct cp_err *err)
{
    GElf_Shdr sh;
    size_t shnum, entsize = gelf_fsize(elf, type, 1, EV_CURRENT);
    if (!gelf_getshdr(scn, &sh) || elf_getshdrnum(elf, &shnum) != 0) {
        cp_err_set(err, CP_ERR_INVALID, "%s: cannot read the %s section header: %s", file, what,
                   elf_errmsg(-1));
        return -1;
    }
    if (entsize == 0 || sh.sh_entsize != entsize) {
        cp_err_set(err, CP_ERR_INVALID, "%s: %s has entry size %llu, expected %zu", file, what,
                   (unsigned long long)sh.sh_entsize, entsize);
        return -1;
    }
    if (sh.sh_link == 0 || sh.sh_link >= shnum) {
        cp_err_set(err, CP_ERR_INVALID, "%s: %s links to string table %u, out of range", file, what,
                   (unsigned)sh.sh_link);
        return -1;
    }
    if (sh.sh_size % entsize != 0) {
        cp_err_set(err, CP_ERR_INVALID, "%s: %s size %llu is not a multiple of its entry size",
                   file, what, (unsigned long long)sh.sh_size);
        return -1;
    }
    t->count = sh.sh_size / entsize;
    t->strndx = sh.sh_link;
    if (t->count > max) {
        cp_err_set(err, CP_ERR_INVALID, "%s: %s has %zu entries, more than %zu", file, what,
                   t->count, max);
        return -1;
    }
    t->data = elf_getdata(scn, NULL);
    if (!t->data || (sh.sh_size && (!t->data->d_buf || t->data->d_size < sh.sh_size))) {
        cp_err_set(err, CP_ERR_INVALID, "%s: %s data cannot be read: %s", file, what,
                   t->data ? "shorter than its section size" : elf_errmsg(-1));
        return -1;
    }
    return 0;
}

static void note_symbol(const GElf_Sym *sym, const char *name, struct elf_wanted_symbol *wanted,
                        size_t nwanted)
{
    for (size_t w = 0; w < nwanted; w++) {
        if (!wanted[w].found && strcmp(name, wanted[w].name) == 0) {
            wanted[w].found = true;
            wanted[w].value = sym->st_value;
            wanted[w].size = sym->st_size;
        }
    }
}

static int fill_wanted(Elf *elf, Elf_Scn *scn, const char *what, const char *file,
                       struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err)
{
    struct table t;
    if (table_open(elf, scn, ELF_T_SYM, what, file, MAX_SYMBOLS, &t, err) != 0) return -1;
    for (size_t i = 1; i < t.count; i++) { /* entry 0 is the reserved null symbol */
        GElf_Sym sym;
        if (!gelf_getsym(t.data, (int)i, &sym)) {
            cp_err_set(err, CP_ERR_INVALID, "%s: %s symbol %zu cannot be read", file, what, i);
            return -1;
        }
        if (sym.st_name == 0 || sym.st_shndx == SHN_UNDEF) continue;
        const char *name = elf_strptr(elf, t.strndx, sym.st_name);
        if (!name) {
            cp_err_set(err, CP_ERR_INVALID, "%s: %s symbol %zu has a name outside its string table",
                       file, what, i);
            return -1;
        }
        note_symbol(&sym, name, wanted, nwanted);
    }
    return 0;
}

static int read_needed(Elf *elf, Elf_Scn *scn, const char *file, struct elf_info *info,
                       struct cp_err *err)
{
    struct table t;
    if (table_open(elf, scn, ELF_T_DYN, ".dynamic", file, MAX_DYNAMIC, &t, err) != 0) return -1;
    for (size_t i = 0; i < t.count; i++) {
        GElf_Dyn dyn;
        if (!gelf_getdyn(t.data, (int)i, &dyn)) {
            cp_err_set(err, CP_ERR_INVALID, "%s: .dynamic entry %zu cannot be read", file, i);
            return -1;
        }
        if (dyn.d_tag == DT_NULL) break;
        if (dyn.d_tag != DT_NEEDED) continue;
        const char *name = elf_strptr(elf, t.strndx, dyn.d_un.d_val);
        if (!name) {
            cp_err_set(err, CP_ERR_INVALID, "%s: DT_NEEDED entry %zu is outside its string table",
                       file, i);
            return -1;
        }
        if (strncmp(name, "libpython", 9) != 0 || info->needed_libpython[0]) continue;
        if (strlen(name) >= sizeof info->needed_libpython) {
            cp_err_set(err, CP_ERR_INVALID, "%s: DT_NEEDED name %.40s... is too long", file, name);
            return -1;
        }
        strcpy(info->needed_libpython, name);
    }
    return 0;
}

/* Keeps the first ELF_SYMBOLS_MAX_LOADS PT_LOAD segments. As for sections, libelf reports 0
 * program headers when their table does not fit in the file; a file without a PT_LOAD cannot be
 * the image of a process. */
static int read_loads(Elf *elf, const char *file, struct elf_info *info, struct cp_err *err)
{
    size_t nphdr = 0;
    if (elf_getphdrnum(elf, &nphdr) != 0 || nphdr > MAX_PHDRS) {
        cp_err_set(err, CP_ERR_INVALID, "%s: bad program header count: %s", file,
                   nphdr > MAX_PHDRS ? "too many" : elf_errmsg(-1));
        return -1;
    }
    for (size_t i = 0; i < nphdr; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(elf, (int)i, &ph)) {
            cp_err_set(err, CP_ERR_INVALID, "%s: program header %zu cannot be read: %s", file, i,
                       elf_errmsg(-1));
            return -1;
        }
        if (ph.p_type == PT_LOAD && info->nloads < ELF_SYMBOLS_MAX_LOADS)
            info->loads[info->nloads++] =
                (struct elf_load){ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz, ph.p_flags};
    }
    if (info->nloads == 0) {
        cp_err_set(err, CP_ERR_INVALID,
                   "%s: no loadable segment (program headers missing or "
                   "outside the file)",
                   file);
        return -1;
    }
    return 0;
}

/* Notes the interesting sections of one header; an unknown name is no concern of ours. */
static int note_section(Elf *elf, Elf_Scn *scn, size_t shstrndx, const char *file,
                        struct sections *s, struct elf_info *info, struct cp_err *err)
{
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) {
        cp_err_set(err, CP_ERR_INVALID, "%s: section %zu header cannot be read: %s", file,
                   elf_ndxscn(scn), elf_errmsg(-1));
        return -1;
    }
    const char *name = elf_strptr(elf, shstrndx, sh.sh_name);
    if (!name) {
        cp_err_set(err, CP_ERR_INVALID, "%s: section %zu has a name outside the section names",
                   file, elf_ndxscn(scn));
        return -1;
    }
    if (sh.sh_type == SHT_DYNSYM && !s->dynsym)
        s->dynsym = scn;
    else if (sh.sh_type == SHT_SYMTAB && !s->symtab)
        s->symtab = scn;
    else if (sh.sh_type == SHT_DYNAMIC && !s->dynamic)
        s->dynamic = scn;
    if (strcmp(name, ".PyRuntime") == 0) {
        info->pyruntime_section_addr = sh.sh_addr;
        info->pyruntime_section_size = sh.sh_size;
    } else if (strcmp(name, ".bss") == 0) {
        info->bss_addr = sh.sh_addr;
        info->bss_size = sh.sh_size;
    }
    return 0;
}

/* libelf reports 0 sections when the section header table does not fit in the file; only a file
 * that has no table at all (e_shoff 0, as after sstrip) may legitimately have none. */
static int read_sections(Elf *elf, const char *file, struct sections *s, struct elf_info *info,
                         struct cp_err *err)
{
    size_t shnum = 0, shstrndx;
    GElf_Ehdr eh;
    if (!gelf_getehdr(elf, &eh) || elf_getshdrnum(elf, &shnum) != 0 || shnum > MAX_SECTIONS) {
        cp_err_set(err, CP_ERR_INVALID, "%s: bad section count: %s", file,
                   shnum > MAX_SECTIONS ? "too many" : elf_errmsg(-1));
        return -1;
    }
    if (shnum == 0 && eh.e_shoff != 0) {
        cp_err_set(err, CP_ERR_INVALID, "%s: the section headers lie outside the file", file);
        return -1;
    }
    if (shnum == 0) return 0; /* no section headers at all: nothing to look up */
    if (elf_getshdrstrndx(elf, &shstrndx) != 0 || shstrndx == SHN_UNDEF || shstrndx >= shnum) {
        cp_err_set(err, CP_ERR_INVALID, "%s: no valid section name table", file);
        return -1;
    }
    Elf_Scn *scn = NULL;
    for (size_t i = 1; i < shnum && (scn = elf_nextscn(elf, scn)) != NULL; i++)
        if (note_section(elf, scn, shstrndx, file, s, info, err) != 0) return -1;
    info->has_symtab = s->symtab != NULL;
    return 0;
}

static int check_header(Elf *elf, const char *file, struct elf_info *info, struct cp_err *err)
{
    GElf_Ehdr eh;
    if (elf_kind(elf) != ELF_K_ELF || !gelf_getehdr(elf, &eh)) {
        cp_err_set(err, CP_ERR_INVALID, "%s is not an ELF file", file);
        return -1;
    }
    if (gelf_getclass(elf) != ELFCLASS64) {
        cp_err_set(err, CP_ERR_UNSUPPORTED, "%s is not a 64-bit ELF file", file);
        return -1;
    }
    if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN) {
        cp_err_set(err, CP_ERR_INVALID, "%s is not an executable or a shared library (type %u)",
                   file, (unsigned)eh.e_type);
        return -1;
    }
    info->type = eh.e_type;
    return 0;
}

static int read_elf(Elf *elf, const char *file, struct elf_info *info,
                    struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err)
{
    struct sections s = {0};
    if (check_header(elf, file, info, err) != 0 || read_loads(elf, file, info, err) != 0 ||
        read_sections(elf, file, &s, info, err) != 0)
        return -1;
    if (s.dynamic && read_needed(elf, s.dynamic, file, info, err) != 0) return -1;
    if (s.dynsym && fill_wanted(elf, s.dynsym, ".dynsym", file, wanted, nwanted, err) != 0)
        return -1;
    if (s.symtab && fill_wanted(elf, s.symtab, ".symtab", file, wanted, nwanted, err) != 0)
        return -1;
    return 0;
}

static void reset_outputs(struct elf_info *info, struct elf_wanted_symbol *wanted, size_t nwanted)
{
    memset(info, 0, sizeof *info);
    for (size_t w = 0; w < nwanted; w++) {
        wanted[w].found = false;
        wanted[w].value = wanted[w].size = 0;
    }
}

/* libelf keeps its version in a library global; setting it again is harmless. */
static int init_libelf(struct cp_err *err)
{
    if (elf_version(EV_CURRENT) == EV_NONE) {
        cp_err_set(err, CP_ERR_UNSUPPORTED, "libelf is too old: %s", elf_errmsg(-1));
        return -1;
    }
    return 0;
}

int elf_symbols_read_file(const char *path, struct elf_info *info, struct elf_wanted_symbol *wanted,
                          size_t nwanted, struct cp_err *err)
{
    reset_outputs(info, wanted, nwanted);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cp_err_set(err, errno == EACCES || errno == EPERM ? CP_ERR_PERM : CP_ERR_IO,
                   "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    return elf_symbols_read_fd(fd, path, info, wanted, nwanted, err);
}

int elf_symbols_read_fd(int fd, const char *path, struct elf_info *info,
                        struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err)
{
    reset_outputs(info, wanted, nwanted);
    if (init_libelf(err) != 0) {
        close(fd);
        return -1;
    }
    Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    int rc = -1;
    if (!elf)
        cp_err_set(err, CP_ERR_INVALID, "%s is not a readable ELF file: %s", path, elf_errmsg(-1));
    else
        rc = read_elf(elf, path, info, wanted, nwanted, err);
    if (rc != 0) reset_outputs(info, wanted, nwanted);
    elf_end(elf);
    close(fd);
    return rc;
}

int elf_symbols_read_memory(const void *image, size_t size, struct elf_info *info,
                            struct elf_wanted_symbol *wanted, size_t nwanted, struct cp_err *err)
{
    reset_outputs(info, wanted, nwanted);
    if (init_libelf(err) != 0) return -1;
    /* elf_memory takes a non-const pointer, but only writes when asked to update the image,
     * which read-only use never does. */
    Elf *elf = elf_memory((char *)(uintptr_t)image, size);
    if (!elf) {
        cp_err_set(err, CP_ERR_INVALID, "the ELF image is not readable: %s", elf_errmsg(-1));
        return -1;
    }
    int rc = read_elf(elf, "the ELF image", info, wanted, nwanted, err);
    if (rc != 0) reset_outputs(info, wanted, nwanted);
    elf_end(elf);
    return rc;
}

static uint64_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (uint64_t)p : 4096;
}

/* How well segment `l` explains a mapping at file offset map->offset: -1 when it cannot, i.e.
 * when the offset is outside [page_down(p_offset), p_offset + p_filesz) (written without the
 * sum, which garbage could overflow). */
static int segment_score(const struct elf_load *l, const struct proc_map *map, uint64_t page)
{
    uint64_t first = l->offset & ~(page - 1);
    bool covers = l->filesz != 0 && map->offset >= first &&
                  (map->offset < l->offset || map->offset - l->offset < l->filesz);
    if (!covers) return -1;
    return (first == map->offset ? 2 : 0) + (((l->flags & PF_X) != 0) == map->x ? 1 : 0);
}

int elf_symbols_load_bias(const struct elf_info *info, const struct proc_map *map, uint64_t *bias)
{
    uint64_t page = page_size();
    int best = -1;
    unsigned chosen = 0;
    for (unsigned i = 0; i < info->nloads && i < ELF_SYMBOLS_MAX_LOADS; i++) {
        int score = segment_score(&info->loads[i], map, page);
        if (score > best) {
            best = score;
            chosen = i;
        }
    }
    if (best < 0) return -1;
    const struct elf_load *l = &info->loads[chosen];
    *bias = map->start - (l->vaddr - (l->offset - map->offset));
    return 0;
}
