/* `conprof-agent version`: the agent's version and what it can read. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: conprof-agent version\n\nPrints the agent version and the supported CPython "
             "versions.");
        return EXIT_OK;
    }
    if (argc > 1) {
        cli_error("version takes no arguments (got '%s')", argv[1]);
        return EXIT_USAGE;
    }
    printf("conprof-agent %s (CPython 3.7.4 to 3.13, linux/x86_64)\n", CONPROF_VERSION);
    return EXIT_OK;
}
