/* pprof: writes an aggregate as a gzipped perftools.profiles.Profile, encoded by hand.
 *
 * Design: three passes over the aggregate. (1) Mark the frame ids the stacks use. (2) Give each
 * distinct (name, file) among them a Function id (a small open-addressing table keyed by the two
 * string ids) and intern every string the output needs into a fresh strtab, so the string table
 * holds only referenced strings even when the aggregate's strtab has collected years of names.
 * (3) Emit fields in field-number order. Location id = frame id (ids are >= 1 and unique), and a
 * Sample lists them leaf first, which is the aggregate's order already. One Mapping (id 1,
 * "python", flagged as having functions, file names and line numbers) owns every Location: it
 * tells pprof the profile is already symbolized (no "Main binary filename not available" and no
 * attempt to symbolize). Compression is one zlib gzip stream (windowBits 15 + 16). The wire
 * writers, the sub-message encoders (ValueType, Sample, Mapping, Location, Function) and the gzip
 * wrapper are shared with the console's merged profiles (pbwire.h).
 */
#include "profile_writers.h"

#include "pbwire.h"

#include <stdlib.h>
#include <string.h>

struct function_key {
    uint32_t name, file; /* aggregate string ids */
};

struct pprof_builder {
    const struct agg *a;
    struct strtab out_strings;
    uint32_t *sid_map;          /* aggregate string id -> output string id + 1; 0 = not yet */
    uint32_t *func_of_frame;    /* frame id -> Function id; 0 = frame not used by any stack */
    struct function_key *funcs; /* Function id - 1 -> key */
    uint32_t nfuncs;
    uint32_t *func_slots; /* (name, file) hash -> Function id, 0 = empty */
    uint32_t func_nslots;
};

/* --- pass 1 and 2: used frames, functions, strings --- */

static uint32_t out_string(struct pprof_builder *pb, const char *s)
{
    return strtab_intern(&pb->out_strings, s, strlen(s));
}

/* The output id of an aggregate string id, or STRTAB_NOMEM. */
static uint32_t map_string(struct pprof_builder *pb, uint32_t sid)
{
    if (pb->sid_map[sid]) return pb->sid_map[sid] - 1;
    const struct strtab *st = &pb->a->strings;
    uint32_t id = strtab_intern(&pb->out_strings, st->strings[sid], st->lens[sid]);
    if (id != STRTAB_NOMEM) pb->sid_map[sid] = id + 1;
    return id;
}

static uint32_t mark_used_frames(struct pprof_builder *pb)
{
    const struct agg *a = pb->a;
    for (uint32_t s = 0; s < a->nstacks; s++) {
        const uint32_t *ids = agg_stack_frames(a, &a->stacks[s]);
        for (uint32_t d = 0; d < a->stacks[s].depth; d++)
            pb->func_of_frame[ids[d]] = UINT32_MAX;
    }
    uint32_t used = 0;
    for (uint32_t id = 1; id <= a->nframes; id++)
        used += pb->func_of_frame[id] != 0;
    return used;
}

static uint32_t function_for(struct pprof_builder *pb, uint32_t name, uint32_t file)
{
    uint64_t h = ((uint64_t)name << 32 | file) * 0x9e3779b97f4a7c15ull; /* splitmix64 end */
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    uint32_t mask = pb->func_nslots - 1;
    uint32_t i = (uint32_t)(h ^ (h >> 31)) & mask;
    for (uint32_t f; (f = pb->func_slots[i]) != 0; i = (i + 1) & mask)
        if (pb->funcs[f - 1].name == name && pb->funcs[f - 1].file == file) return f;
    pb->funcs[pb->nfuncs] = (struct function_key){name, file};
    pb->func_slots[i] = ++pb->nfuncs;
    return pb->nfuncs;
}

static int build_tables(struct pprof_builder *pb, const struct pprof_meta *meta)
{
    const struct agg *a = pb->a;
    if (strtab_init(&pb->out_strings) < 0) return -1;
    pb->sid_map = calloc(a->strings.count ? a->strings.count : 1, sizeof *pb->sid_map);
    pb->func_of_frame = calloc((size_t)a->nframes + 1, sizeof *pb->func_of_frame);
    if (!pb->sid_map || !pb->func_of_frame) return -1;
    uint32_t used = mark_used_frames(pb);
    pb->func_nslots = 16;
    while (pb->func_nslots < 2 * (uint64_t)used)
        pb->func_nslots *= 2;
    pb->func_slots = calloc(pb->func_nslots, sizeof *pb->func_slots);
    pb->funcs = malloc(((size_t)used + 1) * sizeof *pb->funcs);
    if (!pb->func_slots || !pb->funcs) return -1;
    /* Fixed strings first, so the sample types always get the same small ids. */
    static const char *const fixed[] = {"samples", "count", "wall", "nanoseconds", "cpu", "python"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (out_string(pb, fixed[i]) == STRTAB_NOMEM) return -1;
    for (uint32_t id = 1; id <= a->nframes; id++) {
        if (!pb->func_of_frame[id]) continue;
        const struct agg_frame *fr = &a->frames[id];
        pb->func_of_frame[id] = function_for(pb, fr->name, fr->file);
        if (map_string(pb, fr->name) == STRTAB_NOMEM || map_string(pb, fr->file) == STRTAB_NOMEM)
            return -1;
    }
    for (size_t i = 0; meta->comments && i < meta->ncomments; i++)
        if (meta->comments[i] && out_string(pb, meta->comments[i]) == STRTAB_NOMEM) return -1;
    return 0;
}

static void free_builder(struct pprof_builder *pb)
{
    strtab_free(&pb->out_strings);
    free(pb->sid_map);
    free(pb->func_of_frame);
    free(pb->funcs);
    free(pb->func_slots);
}

/* --- pass 3: emit --- */

static int emit_value_type(struct pprof_builder *pb, struct buf *out, unsigned field,
                           const char *type, const char *unit)
{
    uint32_t type_id = out_string(pb, type);
    uint32_t unit_id = out_string(pb, unit);
    return pb_emit_value_type(out, field, type_id, unit_id);
}

static int emit_sample(struct buf *out, const struct agg *a, const struct agg_stack *s)
{
    uint64_t values[3] = {s->samples, (uint64_t)s->wall_ns, (uint64_t)s->cpu_ns};
    return pb_emit_sample(out, agg_stack_frames(a, s), s->depth, 0, values, 3);
}

static int emit_locations(struct pprof_builder *pb, struct buf *out)
{
    const struct agg *a = pb->a;
    for (uint32_t id = 1; id <= a->nframes; id++)
        if (pb->func_of_frame[id] &&
            pb_emit_location(out, id, pb->func_of_frame[id], a->frames[id].line) < 0)
            return -1;
    return 0;
}

static int emit_functions(struct pprof_builder *pb, struct buf *out)
{
    for (uint32_t f = 1; f <= pb->nfuncs; f++) {
        uint32_t name = pb->sid_map[pb->funcs[f - 1].name] - 1;
        uint32_t file = pb->sid_map[pb->funcs[f - 1].file] - 1;
        if (pb_emit_function(out, f, name, file) < 0) return -1;
    }
    return 0;
}

static int emit_profile(struct pprof_builder *pb, const struct pprof_meta *meta, struct buf *out)
{
    const struct agg *a = pb->a;
    if (emit_value_type(pb, out, PB_PROFILE_SAMPLE_TYPE, "samples", "count") < 0 ||
        emit_value_type(pb, out, PB_PROFILE_SAMPLE_TYPE, "wall", "nanoseconds") < 0 ||
        emit_value_type(pb, out, PB_PROFILE_SAMPLE_TYPE, "cpu", "nanoseconds") < 0)
        return -1;
    for (uint32_t s = 0; s < a->nstacks; s++)
        if (emit_sample(out, a, &a->stacks[s]) < 0) return -1;
    if (pb_emit_python_mapping(out, out_string(pb, "python")) < 0 || emit_locations(pb, out) < 0 ||
        emit_functions(pb, out) < 0)
        return -1;
    const struct strtab *st = &pb->out_strings;
    for (uint32_t i = 0; i < st->count; i++)
        if (pb_emit_len_field(out, PB_PROFILE_STRING_TABLE, st->strings[i], st->lens[i]) < 0)
            return -1;
    if (pb_emit_varint_field(out, PB_PROFILE_TIME_NANOS, (uint64_t)meta->time_nanos) < 0 ||
        pb_emit_varint_field(out, PB_PROFILE_DURATION_NANOS, (uint64_t)meta->duration_nanos) < 0 ||
        emit_value_type(pb, out, PB_PROFILE_PERIOD_TYPE, "cpu", "nanoseconds") < 0 ||
        pb_emit_varint_field(out, PB_PROFILE_PERIOD, (uint64_t)meta->period_nanos) < 0)
        return -1;
    for (size_t i = 0; meta->comments && i < meta->ncomments; i++)
        if (meta->comments[i] &&
            pb_emit_varint_field(out, PB_PROFILE_COMMENT, out_string(pb, meta->comments[i])) < 0)
            return -1;
    return 0;
}

int pprof_encode(const struct agg *a, const struct pprof_meta *meta, struct buf *out,
                 struct cp_err *err)
{
    struct pprof_builder pb = {.a = a};
    size_t len_before = out->len;
    int rc = build_tables(&pb, meta);
    if (rc == 0) rc = emit_profile(&pb, meta, out);
    free_builder(&pb);
    if (rc < 0) {
        out->len = len_before;
        if (out->data) out->data[out->len] = '\0';
        cp_err_set(err, CP_ERR_NOMEM, "out of memory while encoding the pprof profile");
    }
    return rc;
}

int pprof_write(const struct agg *a, const struct pprof_meta *meta, struct buf *out_gzip,
                struct cp_err *err)
{
    struct buf raw = {0};
    int rc = pprof_encode(a, meta, &raw, err);
    if (rc == 0) rc = pb_gzip_append(raw.data ? raw.data : "", raw.len, out_gzip, err);
    buf_free(&raw);
    return rc;
}
