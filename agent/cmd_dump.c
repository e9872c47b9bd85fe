/* `conprof-agent dump`: every Python thread's current stack, once (like `py-spy dump`).
 *
 * Reads the stacks the way `record` does (sampler_thread_frames), without stopping the process,
 * and prints them leaf first, as text or as JSON (jansson).
 */
#include "cli.h"
#include "sampler.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void dump_usage(FILE *out)
{
    fputs(
        "usage: conprof-agent dump --pid PID [--json]\n"
        "\n"
        "Prints the current Python stack of every thread of the process, most recent call first,\n"
        "with the thread id, native thread id, name and whether it holds the GIL.\n"
        "\n"
        "options:\n"
        "  -p, --pid PID   the process\n"
        "  -j, --json      print JSON instead of text\n"
        "  -h, --help      this help\n",
        out);
}

struct dumped_thread {
    const struct py_thread *t;
    int depth;
    bool holds_gil;
    char name[32];
    struct cp_err err;
};

static json_t *thread_json(const struct agg *agg, const struct dumped_thread *d,
                           const uint32_t *ids, bool gil_known)
{
    json_t *frames = json_array();
    for (int i = 0; i < d->depth; i++) {
        const struct agg_frame *f = &agg->frames[ids[i]];
        json_array_append_new(
            frames, json_pack("{s:s, s:s, s:i}", "name", strtab_get(&agg->strings, f->name), "file",
                              strtab_get(&agg->strings, f->file), "line", (int)f->line));
    }
    json_t *o = json_pack("{s:I, s:i, s:s, s:o}", "thread_id", (json_int_t)d->t->thread_id,
                          "native_tid", (int)d->t->native_tid, "name", d->name, "frames", frames);
    json_object_set_new(o, "holds_gil", gil_known ? json_boolean(d->holds_gil) : json_null());
    if (d->depth < 0) json_object_set_new(o, "error", json_string(d->err.msg));
    return o;
}

static void print_thread_text(const struct agg *agg, const struct dumped_thread *d,
                              const uint32_t *ids)
{
    printf("Thread %d (%s), ident 0x%llx%s:\n", (int)d->t->native_tid, d->name[0] ? d->name : "?",
           (unsigned long long)d->t->thread_id, d->holds_gil ? ", holds the GIL" : "");
    if (d->depth < 0)
        printf("    <cannot read the stack: %s>\n", d->err.msg);
    else if (d->depth == 0)
        printf("    <no Python frame>\n");
    for (int i = 0; i < d->depth; i++) {
        const struct agg_frame *f = &agg->frames[ids[i]];
        printf("    %s (%s:%d)\n", strtab_get(&agg->strings, f->name),
               strtab_get(&agg->strings, f->file), (int)f->line);
    }
}

int cmd_dump(int argc, char **argv)
{
    static const struct option opts[] = {{"pid", required_argument, NULL, 'p'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    long pid = 0;
    bool as_json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (!cli_parse_long(optarg, 1, 0x7fffffff, &pid)) {
                cli_error("--pid expects a process id, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'j':
            as_json = true;
            break;
        case 'h':
            dump_usage(stdout);
            return EXIT_OK;
        default:
            dump_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !pid) {
        cli_error(optind < argc ? "unexpected argument '%s'" : "dump needs --pid PID%s",
                  optind < argc ? argv[optind] : "");
        return EXIT_USAGE;
    }
    struct agg agg;
    struct sampler *s = malloc(sizeof *s);
    struct cp_err err;
    if (!s || agg_init(&agg) < 0) {
        free(s);
        cli_error("out of memory");
        return EXIT_FAILURE_RUN;
    }
    struct sampler_opts so = {.rate_hz = 1};
    if (sampler_open(s, (pid_t)pid, &agg, &so, 0, &err) < 0) {
        agg_free(&agg);
        free(s);
        return cli_fail(&err);
    }
    int rc = EXIT_OK;
    int n = pythreads_list(&s->proc, &s->threads_state, s->threads, PYTHREADS_MAX, &err);
    if (n < 0) {
        rc = cli_fail(&err);
        goto out;
    }
    uint64_t gil = pythreads_gil_holder(&s->proc);
    bool gil_known = s->proc.off.runtime_tstate_current >= 0 || s->proc.off.interp_gil_ptr >= 0 ||
                     s->proc.off.interp_gil_locked >= 0;
    char cmdline[512];
    cli_process_cmdline((int)pid, cmdline, sizeof cmdline);
    json_t *threads = as_json ? json_array() : NULL;
    if (!as_json)
        printf("Process %ld: %s\nPython %s (%s)\n\n", pid, cmdline, s->proc.version,
               s->proc.binary);
    uint32_t *ids = malloc((PYSTACK_MAX_DEPTH + 1) * sizeof *ids);
    for (int i = 0; ids && i < n; i++) {
        struct dumped_thread d = {.t = &s->threads[i]};
        d.depth = sampler_thread_frames(s, d.t, ids, &d.err);
        d.holds_gil = gil && gil == d.t->tstate;
        pythreads_name(&s->proc, d.t->native_tid, d.name, sizeof d.name);
        if (as_json)
            json_array_append_new(threads, thread_json(&agg, &d, ids, gil_known));
        else
            print_thread_text(&agg, &d, ids);
    }
    free(ids);
    if (as_json) {
        json_t *root = json_pack("{s:i, s:s, s:s, s:s, s:o}", "pid", (int)pid, "command", cmdline,
                                 "python_version", s->proc.version, "binary", s->proc.binary,
                                 "threads", threads);
        json_dumpf(root, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII * 0);
        putchar('\n');
        json_decref(root);
    }
out:
    sampler_close(s);
    free(s);
    agg_free(&agg);
    return rc;
}
