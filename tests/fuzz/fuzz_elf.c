/* Fuzzes the ELF reader (and libelf under it) with arbitrary images: an error or a result, never
 * a crash; every PT_LOAD kept is within the bound. */
#include "elf_symbols.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct elf_wanted_symbol wanted[] = {{.name = "_PyRuntime"}, {.name = "Py_Version"}};
    struct elf_info info;
    struct cp_err err;
    /* libelf may write to the image it is given (it must not, but be safe): use a copy */
    void *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (elf_symbols_read_memory(copy, size, &info, wanted, 2, &err) == 0) {
        if (info.nloads > ELF_SYMBOLS_MAX_LOADS)
            abort();
        struct proc_map map = {.start = 0x400000, .end = 0x800000, .offset = 0};
        uint64_t bias;
        (void)elf_symbols_load_bias(&info, &map, &bias);
    }
    free(copy);
    return 0;
}
