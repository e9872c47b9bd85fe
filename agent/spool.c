/* spool: one file per record, an in-memory index sorted by sequence number.
 *
 * The index (seq, size, taken) is all the spool keeps in memory, so a full 64 MiB spool costs a
 * few kilobytes of RAM; a record is read back only when it is about to be delivered. Opening
 * the spool reads just the 48-byte header of each file (magic and length against the file
 * size) so that a start with a large spool stays fast; the CRC and the full structure are checked
 * when the record is loaded. Writes go through sink_write_atomic() (tmp, fsync, rename, fsync of
 * the directory). Sequence numbers are the file names, so they survive restarts without any
 * extra state file.
 */
#include "spool.h"

#include "sink.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SEQ_DIGITS 20
#define SPOOL_SUFFIX ".spool"
#define TMP_SUFFIX ".spool.tmp"
#define SPOOL_MAX_FILE                                                                             \
    ((uint64_t)SPOOL_HEADER_LEN + SPOOL_MAX_STRING +                                               \
     (uint64_t)SPOOL_MAX_LABELS * (8 + 2 * SPOOL_MAX_STRING) + SPOOL_MAX_PPROF + 4)

/* ---- encoding ---------------------------------------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int append_u32(struct buf *b, uint32_t v)
{
    uint8_t p[4];
    put_le(p, v, 4);
    return buf_append(b, p, 4);
}

static int append_string(struct buf *b, const char *s, size_t len)
{
    return append_u32(b, (uint32_t)len) || buf_append(b, s, len) ? -1 : 0;
}

static int check_encodable(const struct profile_record *r, struct cp_err *err)
{
    size_t app_len = r->app_name ? strlen(r->app_name) : 0;
    if (app_len == 0 || app_len > SPOOL_MAX_STRING) {
        cp_err_set(err, CP_ERR_INVALID, "application name of %zu bytes (want 1..%u)", app_len,
                   SPOOL_MAX_STRING);
        return -1;
    }
    if (r->nlabels > SPOOL_MAX_LABELS) {
        cp_err_set(err, CP_ERR_INVALID, "%zu labels (at most %u)", r->nlabels, SPOOL_MAX_LABELS);
        return -1;
    }
    for (size_t i = 0; i < r->nlabels; i++) {
        size_t klen = strlen(r->labels[i].key), vlen = strlen(r->labels[i].value);
        if (klen == 0 || klen > SPOOL_MAX_STRING || vlen > SPOOL_MAX_STRING ||
            (i > 0 && strcmp(r->labels[i - 1].key, r->labels[i].key) >= 0)) {
            cp_err_set(err, CP_ERR_INVALID,
                       "label '%.64s' cannot be spooled (empty, too long "
                       "or out of order)",
                       r->labels[i].key);
            return -1;
        }
    }
    if (r->pprof_gz.len == 0 || r->pprof_gz.len > SPOOL_MAX_PPROF) {
        cp_err_set(err, CP_ERR_INVALID, "profile of %zu bytes (want 1..%u)", r->pprof_gz.len,
                   SPOOL_MAX_PPROF);
        return -1;
    }
    if (r->until_ns < r->from_ns || r->rate_hz < 0 || (unsigned)r->rate_hz > SPOOL_MAX_RATE_HZ) {
        cp_err_set(err, CP_ERR_INVALID,
                   "bad period or rate (from %" PRId64 ", until %" PRId64 ", %d Hz)", r->from_ns,
                   r->until_ns, r->rate_hz);
        return -1;
    }
    return 0;
}

int spool_record_encode(const struct profile_record *r, struct buf *out, struct cp_err *err)
{
    if (check_encodable(r, err) < 0) return -1;
    size_t start = out->len;
    size_t app_len = strlen(r->app_name);
    uint8_t h[SPOOL_HEADER_LEN];
    memcpy(h, SPOOL_MAGIC, 8);
    put_le(h + 8, 0, 8); /* patched below */
    put_le(h + 16, (uint64_t)r->from_ns, 8);
    put_le(h + 24, (uint64_t)r->until_ns, 8);
    put_le(h + 32, (uint32_t)r->rate_hz, 4);
    put_le(h + 36, (uint32_t)r->nlabels, 4);
    put_le(h + 40, (uint32_t)app_len, 4);
    put_le(h + 44, (uint32_t)r->pprof_gz.len, 4);
    int rc = buf_append(out, h, sizeof h) || buf_append(out, r->app_name, app_len);
    for (size_t i = 0; !rc && i < r->nlabels; i++)
        rc = append_string(out, r->labels[i].key, strlen(r->labels[i].key)) ||
             append_string(out, r->labels[i].value, strlen(r->labels[i].value));
    rc = rc || buf_append(out, r->pprof_gz.data, r->pprof_gz.len) || buf_reserve(out, 4);
    if (rc) {
        out->len = start;
        cp_err_set(err, CP_ERR_NOMEM, "out of memory encoding a spool record");
        return -1;
    }
    uint8_t *file = (uint8_t *)out->data + start;
    put_le(file + 8, out->len - start + 4, 8);
    uint32_t crc = (uint32_t)crc32(0L, file, (uInt)(out->len - start));
    append_u32(out, crc); /* reserved above: cannot fail */
    return 0;
}

/* ---- decoding ---------------------------------------------------------------------------- */

struct cursor {
    const uint8_t *p, *end;
};

static int take_string(struct cursor *c, uint32_t len, char **out)
{
    if ((size_t)(c->end - c->p) < len || memchr(c->p, 0, len)) return -1;
    *out = strndup((const char *)c->p, len);
    if (!*out) return -1;
    c->p += len;
    return 0;
}

static int take_u32(struct cursor *c, uint32_t *v)
{
    if (c->end - c->p < 4) return -1;
    *v = (uint32_t)get_le(c->p, 4);
    c->p += 4;
    return 0;
}

static int decode_label(struct cursor *c, struct profile_record *out, const char **prev_key)
{
    uint32_t klen, vlen;
    char *key = NULL, *value = NULL;
    int rc = -1;
    if (take_u32(c, &klen) == 0 && klen >= 1 && klen <= SPOOL_MAX_STRING &&
        take_string(c, klen, &key) == 0 && take_u32(c, &vlen) == 0 && vlen <= SPOOL_MAX_STRING &&
        take_string(c, vlen, &value) == 0 && (!*prev_key || strcmp(*prev_key, key) < 0) &&
        profile_record_set_label(out, key, value) == 0) {
        *prev_key = out->labels[out->nlabels - 1].key; /* sorted order: the new one is last */
        rc = 0;
    }
    free(key);
    free(value);
    return rc;
}

static int decode_fail(struct profile_record *out, struct cp_err *err, const char *what)
{
    profile_record_free(out);
    cp_err_set(err, CP_ERR_INVALID, "corrupt spool file: %s", what);
    return -1;
}

int spool_record_decode(const uint8_t *data, size_t len, struct profile_record *out,
                        struct cp_err *err)
{
    memset(out, 0, sizeof *out);
    if (len < SPOOL_HEADER_LEN + 4 || memcmp(data, SPOOL_MAGIC, 8) != 0)
        return decode_fail(out, err, "no spool header");
    if (get_le(data + 8, 8) != len)
        return decode_fail(out, err, "length does not match the file size");
    uint32_t crc = (uint32_t)crc32(0L, data, (uInt)(len - 4));
    if (crc != (uint32_t)get_le(data + len - 4, 4))
        return decode_fail(out, err, "checksum mismatch");
    out->from_ns = (int64_t)get_le(data + 16, 8);
    out->until_ns = (int64_t)get_le(data + 24, 8);
    uint32_t rate = (uint32_t)get_le(data + 32, 4), nlabels = (uint32_t)get_le(data + 36, 4);
    uint32_t app_len = (uint32_t)get_le(data + 40, 4), pprof_len = (uint32_t)get_le(data + 44, 4);
    if (out->until_ns < out->from_ns || rate > SPOOL_MAX_RATE_HZ || nlabels > SPOOL_MAX_LABELS ||
        app_len == 0 || app_len > SPOOL_MAX_STRING || pprof_len == 0 || pprof_len > SPOOL_MAX_PPROF)
        return decode_fail(out, err, "field out of range");
    out->rate_hz = (int)rate;
    struct cursor c = {data + SPOOL_HEADER_LEN, data + len - 4};
    if (take_string(&c, app_len, &out->app_name) < 0)
        return decode_fail(out, err, "bad application name");
    const char *prev_key = NULL;
    for (uint32_t i = 0; i < nlabels; i++)
        if (decode_label(&c, out, &prev_key) < 0) return decode_fail(out, err, "bad label");
    if ((size_t)(c.end - c.p) != pprof_len)
        return decode_fail(out, err, "profile length does not match");
    if (buf_append(&out->pprof_gz, c.p, pprof_len) < 0)
        return decode_fail(out, err, "out of memory");
    return 0;
}

/* ---- the directory ----------------------------------------------------------------------- */

static void entry_name(uint64_t seq, char *name, size_t size)
{
    snprintf(name, size, "%0*" PRIu64 SPOOL_SUFFIX, SEQ_DIGITS, seq);
}

/* seq of "<20 digits><suffix>", or -1. */
static int parse_name(const char *name, const char *suffix, uint64_t *seq)
{
    size_t n = strlen(name), slen = strlen(suffix);
    if (n != SEQ_DIGITS + slen || strcmp(name + SEQ_DIGITS, suffix) != 0) return -1;
    uint64_t v = 0;
    for (int i = 0; i < SEQ_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9' || v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return 0;
}

static int add_entry(struct spool *sp, uint64_t seq, uint64_t size)
{
    if (sp->nentries == sp->cap) {
        size_t cap = sp->cap ? sp->cap * 2 : 64;
        struct spool_entry *e = realloc(sp->entries, cap * sizeof *e);
        if (!e) return -1;
        sp->entries = e;
        sp->cap = cap;
    }
    sp->entries[sp->nentries++] = (struct spool_entry){seq, size, false};
    sp->bytes += size;
    return 0;
}

static void drop_entry(struct spool *sp, size_t i)
{
    char name[64];
    entry_name(sp->entries[i].seq, name, sizeof name);
    unlinkat(sp->dirfd, name, 0);
    sp->bytes -= sp->entries[i].size;
    memmove(&sp->entries[i], &sp->entries[i + 1], (sp->nentries - i - 1) * sizeof *sp->entries);
    sp->nentries--;
}

/* The header agrees with the file's size (a full check happens at load). */
static bool header_plausible(int dirfd, const char *name, uint64_t size)
{
    if (size < SPOOL_HEADER_LEN + 4 || size > SPOOL_MAX_FILE) return false;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return false;
    uint8_t h[SPOOL_HEADER_LEN];
    ssize_t n = pread(fd, h, sizeof h, 0);
    close(fd);
    return n == (ssize_t)sizeof h && memcmp(h, SPOOL_MAGIC, 8) == 0 && get_le(h + 8, 8) == size;
}

static void scan_one(struct spool *sp, const char *name, uint64_t *max_seq, int *rc)
{
    uint64_t seq;
    bool tmp = parse_name(name, TMP_SUFFIX, &seq) == 0;
    if (!tmp && parse_name(name, SPOOL_SUFFIX, &seq) < 0) return;
    if (seq >= *max_seq && seq < UINT64_MAX)
        *max_seq = seq + 1; /* never reuse a name, not even a temporary one */
    if (tmp) {
        if (unlinkat(sp->dirfd, name, 0) == 0) sp->counters.tmp_removed++;
        return;
    }
    struct stat st;
    if (fstatat(sp->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return;
    if (!S_ISREG(st.st_mode) || !header_plausible(sp->dirfd, name, (uint64_t)st.st_size)) {
        if (unlinkat(sp->dirfd, name, 0) == 0) {
            sp->counters.corrupt++;
            snprintf(sp->last_corrupt, sizeof sp->last_corrupt, "%s: bad header", name);
        }
        return;
    }
    if (add_entry(sp, seq, (uint64_t)st.st_size) < 0) *rc = -1;
}

static int by_seq(const void *a, const void *b)
{
    uint64_t x = ((const struct spool_entry *)a)->seq, y = ((const struct spool_entry *)b)->seq;
    return x < y ? -1 : x > y;
}

static int scan(struct spool *sp, struct cp_err *err)
{
    int fd = dup(sp->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        cp_err_set(err, CP_ERR_IO, "cannot list the spool %s: %s", sp->dir, strerror(errno));
        return -1;
    }
    uint64_t max_seq = 1;
    int rc = 0;
    struct dirent *de;
    for (unsigned seen = 0; rc == 0 && seen < SPOOL_MAX_SCAN && (de = readdir(d)); seen++)
        scan_one(sp, de->d_name, &max_seq, &rc);
    closedir(d);
    if (rc < 0) {
        cp_err_set(err, CP_ERR_NOMEM, "out of memory indexing the spool %s", sp->dir);
        return -1;
    }
    if (sp->nentries > 1) qsort(sp->entries, sp->nentries, sizeof *sp->entries, by_seq);
    sp->next_seq = max_seq;
    return 0;
}

/* Deletes the oldest entries (idle ones first) until `incoming` more bytes fit. */
static void evict_for(struct spool *sp, uint64_t incoming)
{
    for (int pass = 0; pass < 2; pass++) {
        size_t i = 0;
        while (sp->bytes + incoming > sp->max_bytes && i < sp->nentries) {
            if (pass == 0 && sp->entries[i].taken) {
                i++;
                continue;
            }
            drop_entry(sp, i);
            sp->counters.evicted++;
        }
    }
}

int spool_open(struct spool *sp, const char *dir, uint64_t max_bytes, struct cp_err *err)
{
    memset(sp, 0, sizeof *sp);
    sp->dirfd = -1;
    sp->max_bytes = max_bytes;
    if (sink_mkdir_p(dir, 0700, err) < 0) return -1;
    sp->dir = strdup(dir);
    sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!sp->dir || sp->dirfd < 0) {
        cp_err_set(err, CP_ERR_IO, "cannot open the spool %s: %s", dir, strerror(errno));
        spool_close(sp);
        return -1;
    }
    if (scan(sp, err) < 0) {
        spool_close(sp);
        return -1;
    }
    evict_for(sp, 0);
    return 0;
}

void spool_close(struct spool *sp)
{
    if (sp->dirfd >= 0) close(sp->dirfd);
    free(sp->dir);
    free(sp->entries);
    memset(sp, 0, sizeof *sp);
    sp->dirfd = -1;
}

int spool_put(struct spool *sp, const struct profile_record *r, uint64_t *seq_out,
              struct cp_err *err)
{
    struct buf file = {0};
    if (spool_record_encode(r, &file, err) < 0) return -1;
    if (file.len > sp->max_bytes) {
        cp_err_set(err, CP_ERR_NOMEM,
                   "a profile of %zu bytes does not fit in the spool (cap %" PRIu64 " bytes)",
                   file.len, sp->max_bytes);
        buf_free(&file);
        return -1;
    }
    evict_for(sp, file.len);
    uint64_t seq = sp->next_seq;
    char name[64];
    entry_name(seq, name, sizeof name);
    struct iovec part = {file.data, file.len};
    int rc = add_entry(sp, seq, 0);
    if (rc == 0)
        rc = sink_write_atomic(sp->dirfd, name, &part, 1, 0600, false, err);
    else
        cp_err_set(err, CP_ERR_NOMEM, "out of memory");
    if (rc == 0) {
        sp->entries[sp->nentries - 1].size = file.len;
        sp->bytes += file.len;
        sp->next_seq++;
        sp->counters.stored++;
        if (seq_out) *seq_out = seq;
    } else if (sp->nentries && sp->entries[sp->nentries - 1].seq == seq) {
        sp->nentries--; /* the placeholder, size 0 */
    }
    buf_free(&file);
    if (rc != 0) cp_err_prefix(err, "spool %s", sp->dir);
    return rc == 0 ? 0 : -1;
}

static ssize_t find(const struct spool *sp, uint64_t seq)
{
    size_t lo = 0, hi = sp->nentries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->entries[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sp->nentries && sp->entries[lo].seq == seq ? (ssize_t)lo : -1;
}

enum read_status { READ_OK, READ_TRANSIENT, READ_BAD, READ_GONE };

static enum read_status read_entry(const struct spool *sp, const struct spool_entry *e,
                                   struct buf *out, int *error)
{
    char name[64];
    entry_name(e->seq, name, sizeof name);
    int fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    *error = errno;
    if (fd < 0)
        return errno == ENOENT                                         ? READ_GONE
               : errno == EMFILE || errno == ENFILE || errno == ENOMEM ? READ_TRANSIENT
                                                                       : READ_BAD;
    struct stat st;
    enum read_status rc = READ_BAD;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size <= SPOOL_MAX_FILE &&
        st.st_size > 0) {
        size_t want = (size_t)st.st_size;
        rc = buf_reserve(out, want) < 0 ? READ_TRANSIENT : READ_OK;
        *error = ENOMEM;
        while (rc == READ_OK && out->len < want) {
            ssize_t n = read(fd, out->data + out->len, want - out->len);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                rc = READ_BAD;
            else
                out->len += (size_t)n;
        }
    }
    close(fd);
    return rc;
}

int spool_take_oldest(struct spool *sp, struct profile_record *out, uint64_t *seq_out,
                      struct cp_err *err)
{
    size_t i = 0;
    while (i < sp->nentries) {
        if (sp->entries[i].taken) {
            i++;
            continue;
        }
        struct buf file = {0};
        int error = 0;
        enum read_status rc = read_entry(sp, &sp->entries[i], &file, &error);
        struct cp_err derr = {0};
        if (rc == READ_BAD) cp_err_set(&derr, CP_ERR_IO, "unreadable: %s", strerror(error));
        if (rc == READ_OK &&
            spool_record_decode((const uint8_t *)file.data, file.len, out, &derr) < 0)
            rc = READ_BAD;
        buf_free(&file);
        if (rc == READ_TRANSIENT) {
            cp_err_set(err, CP_ERR_IO, "cannot read the spool %s: %s", sp->dir, strerror(error));
            return -1;
        }
        if (rc == READ_BAD || rc == READ_GONE) {
            if (rc == READ_BAD) {
                sp->counters.corrupt++;
                snprintf(sp->last_corrupt, sizeof sp->last_corrupt, "%020" PRIu64 "%s: %.280s",
                         sp->entries[i].seq, SPOOL_SUFFIX, derr.msg);
            }
            drop_entry(sp, i);
            continue;
        }
        sp->entries[i].taken = true;
        *seq_out = sp->entries[i].seq;
        return 1;
    }
    return 0;
}

void spool_release(struct spool *sp, uint64_t seq)
{
    ssize_t i = find(sp, seq);
    if (i >= 0) sp->entries[i].taken = false;
}

void spool_remove(struct spool *sp, uint64_t seq)
{
    ssize_t i = find(sp, seq);
    if (i >= 0) drop_entry(sp, (size_t)i);
}

size_t spool_idle_count(const struct spool *sp)
{
    size_t n = 0;
    for (size_t i = 0; i < sp->nentries; i++)
        n += !sp->entries[i].taken;
    return n;
}
