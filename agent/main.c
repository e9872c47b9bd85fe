/* conprof-agent: the command-line entry point; dispatches to one file per subcommand. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: conprof-agent <command> [options]\n"
          "\n"
          "commands:\n"
          "  run      the per-node daemon: profile matching Python processes continuously\n"
          "  status   show what the running agent does (--json for machines)\n"
          "  record   sample a Python process and write a flame graph, pprof or collapsed stacks\n"
          "  dump     print the current stack of every thread of a Python process, once\n"
          "  version  print the version\n"
          "\n"
          "Run 'conprof-agent <command> --help' for a command's options.\n",
          out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "status"))
        return cmd_status(argc - 1, argv + 1);
    if (!strcmp(cmd, "record")) return cmd_record(argc - 1, argv + 1);
    if (!strcmp(cmd, "dump")) return cmd_dump(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version"))
        return cmd_version(argc - 1, argv + 1);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return EXIT_OK;
    }
    cli_error("unknown command '%s'", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
