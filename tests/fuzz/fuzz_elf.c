/* Fuzzes the ELF reader, and libelf under it, with arbitrary images through
 * elf_symbols_read_memory(): an error (with a message, outputs cleared) or a result within the
 * bounds, never a crash; every kept PT_LOAD with file bytes explains a mapping of its first page.
 */
#include "elf_symbols.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void check_result(const struct elf_info *info)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (info->nloads == 0 || info->nloads > ELF_SYMBOLS_MAX_LOADS) abort();
    if (info->needed_libpython[0] && strncmp(info->needed_libpython, "libpython", 9) != 0) abort();
    for (unsigned i = 0; i < info->nloads; i++) {
        const struct elf_load *l = &info->loads[i];
        struct proc_map map = {.start = 0x7f0000000000,
                               .end = 0x7f0000000000 + page,
                               .offset = l->offset & ~(page - 1),
                               .r = true};
        uint64_t bias;
        if (l->filesz && elf_symbols_load_bias(info, &map, &bias) != 0) abort();
    }
}

static void check_error(const struct cp_err *err, const struct elf_info *info,
                        const struct elf_wanted_symbol *wanted, size_t nwanted)
{
    if (!err->msg[0] || (err->code != CP_ERR_INVALID && err->code != CP_ERR_UNSUPPORTED)) abort();
    if (info->nloads || info->type) abort();
    for (size_t i = 0; i < nwanted; i++)
        if (wanted[i].found) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct elf_wanted_symbol wanted[] = {{.name = "_PyRuntime"}, {.name = "Py_Version"}};
    struct elf_info info;
    struct cp_err err = {0};
    /* an exact-size heap copy: ASan then catches any read past the image */
    void *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    if (elf_symbols_read_memory(copy, size, &info, wanted, 2, &err) == 0)
        check_result(&info);
    else
        check_error(&err, &info, wanted, 2);
    free(copy);
    return 0;
}
