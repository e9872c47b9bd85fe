/* Unit tests of agent/spool.c: the file format (round trip, every truncation and bit flip
 * rejected, crafted files with a valid checksum rejected), the directory (oldest first, cap and
 * eviction order, taken entries evicted last, restart, .tmp cleanup, corrupt files skipped,
 * deleted and counted). Real files in a temporary directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static void make_record(struct profile_record *r, int i, size_t pprof_len)
{
    memset(r, 0, sizeof *r);
    r->app_name = strdup("shop");
    r->from_ns = 1714564845000000000 + (int64_t)i * 45000000000;
    r->until_ns = r->from_ns + 45000000000;
    r->rate_hz = 100;
    char value[32];
    snprintf(value, sizeof value, "n%d", i);
    assert_int_equal(profile_record_set_label(r, "index", value), 0);
    assert_int_equal(profile_record_set_label(r, "host", "node-1"), 0);
    assert_int_equal(profile_record_set_label(r, "empty", ""), 0);
    for (size_t k = 0; k < pprof_len; k++)
        assert_int_equal(buf_append_byte(&r->pprof_gz, (uint8_t)(i * 31 + k)), 0);
}

static size_t encoded_size(size_t pprof_len)
{
    struct profile_record r;
    make_record(&r, 0, pprof_len);
    struct buf b = {0};
    struct cp_err err;
    assert_int_equal(spool_record_encode(&r, &b, &err), 0);
    size_t n = b.len;
    buf_free(&b);
    profile_record_free(&r);
    return n;
}

static int index_of(const struct profile_record *r)
{
    const char *v = profile_record_label(r, "index");
    assert_non_null(v);
    return atoi(v + 1);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

struct fixture {
    char dir[64];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/conprof-spool-XXXXXX");
    if (!mkdtemp(fx->dir)) return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name), slen = strlen(suffix);
        n += len > slen && strcmp(de->d_name + len - slen, suffix) == 0;
    }
    closedir(d);
    return n;
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static bool file_exists(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void put_records(struct spool *sp, int first, int count, size_t pprof_len)
{
    for (int i = first; i < first + count; i++) {
        struct profile_record r;
        struct cp_err err;
        make_record(&r, i, pprof_len);
        assert_int_equal(spool_put(sp, &r, NULL, &err), 0);
        profile_record_free(&r);
    }
}

/* Takes every entry, oldest first, and returns their indices; releases them again. */
static int take_all(struct spool *sp, int *indices, int max)
{
    int n = 0;
    uint64_t seqs[64];
    struct profile_record r;
    struct cp_err err;
    while (n < max && spool_take_oldest(sp, &r, &seqs[n], &err) == 1) {
        indices[n++] = index_of(&r);
        profile_record_free(&r);
    }
    for (int i = 0; i < n; i++)
        spool_release(sp, seqs[i]);
    return n;
}

/* ---- the format --------------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    struct profile_record r, back;
    make_record(&r, 7, 300);
    struct buf a = {0}, b = {0};
    struct cp_err err;
    assert_int_equal(spool_record_encode(&r, &a, &err), 0);
    assert_memory_equal(a.data, SPOOL_MAGIC, 8);
    assert_int_equal(spool_record_decode((const uint8_t *)a.data, a.len, &back, &err), 0);
    assert_string_equal(back.app_name, "shop");
    assert_int_equal(back.from_ns, r.from_ns);
    assert_int_equal(back.until_ns, r.until_ns);
    assert_int_equal(back.rate_hz, 100);
    assert_int_equal(back.nlabels, 3);
    assert_string_equal(profile_record_label(&back, "index"), "n7");
    assert_string_equal(profile_record_label(&back, "empty"), "");
    assert_int_equal(back.pprof_gz.len, 300);
    assert_memory_equal(back.pprof_gz.data, r.pprof_gz.data, 300);
    assert_int_equal(spool_record_encode(&back, &b, &err), 0);
    assert_int_equal(b.len, a.len);
    assert_memory_equal(b.data, a.data, a.len);
    buf_free(&a);
    buf_free(&b);
    profile_record_free(&r);
    profile_record_free(&back);
}

static void test_every_truncation_and_flip_rejected(void **state)
{
    (void)state;
    struct profile_record r, back;
    make_record(&r, 1, 64);
    struct buf a = {0};
    struct cp_err err;
    assert_int_equal(spool_record_encode(&r, &a, &err), 0);
    for (size_t len = 0; len < a.len; len++)
        assert_int_equal(spool_record_decode((const uint8_t *)a.data, len, &back, &err), -1);
    for (size_t i = 0; i < a.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            a.data[i] ^= (char)(1 << bit);
            assert_int_equal(spool_record_decode((const uint8_t *)a.data, a.len, &back, &err), -1);
            a.data[i] ^= (char)(1 << bit);
        }
    }
    assert_int_equal(spool_record_decode((const uint8_t *)a.data, a.len, &back, &err), 0);
    profile_record_free(&back);
    buf_free(&a);
    profile_record_free(&r);
}

/* Rewrites the length and CRC so only the structure is wrong. */
static void reseal(struct buf *b)
{
    uint64_t len = b->len;
    for (int i = 0; i < 8; i++)
        b->data[8 + i] = (char)(len >> (8 * i));
    uint32_t crc = (uint32_t)crc32(0L, (const Bytef *)b->data, (uInt)(b->len - 4));
    for (int i = 0; i < 4; i++)
        b->data[b->len - 4 + i] = (char)(crc >> (8 * i));
}

static void expect_structure_rejected(struct buf *b, const char *what)
{
    struct profile_record back;
    struct cp_err err;
    reseal(b);
    int rc = spool_record_decode((const uint8_t *)b->data, b->len, &back, &err);
    if (rc == 0) fail_msg("a spool file with %s was accepted", what);
    assert_non_null(strstr(err.msg, "corrupt spool file"));
}

static void test_crafted_files_rejected(void **state)
{
    (void)state;
    struct profile_record r;
    make_record(&r, 1, 16);
    struct buf good = {0}, b = {0};
    struct cp_err err;
    assert_int_equal(spool_record_encode(&r, &good, &err), 0);
    size_t app_at = SPOOL_HEADER_LEN, first_key_at = app_at + 4 + 4; /* "shop", then u32 len */

    b.len = 0, buf_append(&b, good.data, good.len);
    b.data[36] = 0x7f, b.data[37] = 0x7f; /* nlabels far too large */
    expect_structure_rejected(&b, "a huge label count");

    b.len = 0, buf_append(&b, good.data, good.len);
    memset(b.data + 40, 0, 4); /* no application name */
    expect_structure_rejected(&b, "an empty application name");

    b.len = 0, buf_append(&b, good.data, good.len);
    b.data[app_at + 1] = '\0'; /* NUL inside the application name */
    expect_structure_rejected(&b, "a NUL in a string");

    b.len = 0, buf_append(&b, good.data, good.len);
    b.data[first_key_at] = 'z'; /* "empty" -> "zmpty": keys out of order */
    expect_structure_rejected(&b, "labels out of order");

    b.len = 0, buf_append(&b, good.data, good.len);
    b.data[31] = (char)0x80; /* until_ns negative: before from_ns */
    expect_structure_rejected(&b, "a period ending before it starts");

    b.len = 0, buf_append(&b, good.data, good.len);
    b.data[44] += 1; /* pprof length one more than present */
    expect_structure_rejected(&b, "a profile length that does not match");

    b.len = 0, buf_append(&b, good.data, good.len);
    buf_append(&b, "xxxx", 4); /* trailing bytes */
    expect_structure_rejected(&b, "trailing bytes");

    buf_free(&b);
    buf_free(&good);
    profile_record_free(&r);
}

static void test_unencodable_records_refused(void **state)
{
    (void)state;
    struct profile_record r;
    struct buf b = {0};
    struct cp_err err;
    make_record(&r, 1, 16);
    free(r.app_name);
    r.app_name = strdup("");
    assert_int_equal(spool_record_encode(&r, &b, &err), -1);
    assert_int_equal(err.code, CP_ERR_INVALID);
    profile_record_free(&r);
    make_record(&r, 1, 0);
    assert_int_equal(spool_record_encode(&r, &b, &err), -1);
    assert_int_equal(b.len, 0);
    profile_record_free(&r);
}

/* ---- the directory ------------------------------------------------------------------------ */

static void test_oldest_first_take_release_remove(void **state)
{
    struct fixture *fx = *state;
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    put_records(&sp, 1, 3, 100);
    assert_int_equal(count_files(fx->dir, ".spool"), 3);
    assert_int_equal(count_files(fx->dir, ".tmp"), 0);
    assert_int_equal(sp.counters.stored, 3);

    struct profile_record r;
    uint64_t seq1, seq2;
    assert_int_equal(spool_take_oldest(&sp, &r, &seq1, &err), 1);
    assert_int_equal(index_of(&r), 1);
    profile_record_free(&r);
    assert_int_equal(spool_take_oldest(&sp, &r, &seq2, &err), 1);
    assert_int_equal(index_of(&r), 2); /* 1 is taken */
    profile_record_free(&r);
    assert_int_equal(spool_idle_count(&sp), 1);

    spool_release(&sp, seq1); /* delivery failed: 1 is the oldest again */
    spool_remove(&sp, seq2);  /* delivered */
    assert_int_equal(count_files(fx->dir, ".spool"), 2);
    int idx[8];
    assert_int_equal(take_all(&sp, idx, 8), 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);
    spool_close(&sp);
}

static void test_cap_evicts_oldest_and_counts(void **state)
{
    struct fixture *fx = *state;
    size_t one = encoded_size(1000);
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 3 * one + one / 2, &err), 0);
    put_records(&sp, 1, 5, 1000);
    assert_int_equal(sp.counters.evicted, 2);
    assert_int_equal(sp.nentries, 3);
    assert_true(sp.bytes <= 3 * one + one / 2);
    assert_int_equal(count_files(fx->dir, ".spool"), 3);
    int idx[8];
    assert_int_equal(take_all(&sp, idx, 8), 3);
    assert_int_equal(idx[0], 3);
    assert_int_equal(idx[1], 4);
    assert_int_equal(idx[2], 5);
    spool_close(&sp);
}

static void test_taken_entries_evicted_last(void **state)
{
    struct fixture *fx = *state;
    size_t one = encoded_size(1000);
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 3 * one, &err), 0);
    put_records(&sp, 1, 3, 1000);
    struct profile_record r;
    uint64_t seq;
    assert_int_equal(spool_take_oldest(&sp, &r, &seq, &err), 1); /* 1 is being delivered */
    profile_record_free(&r);
    put_records(&sp, 4, 1, 1000);
    assert_int_equal(sp.counters.evicted, 1);
    spool_release(&sp, seq);
    int idx[8];
    assert_int_equal(take_all(&sp, idx, 8), 3);
    assert_int_equal(idx[0], 1); /* 2 went, not the taken 1 */
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 4);
    spool_close(&sp);
}

static void test_record_larger_than_cap_refused(void **state)
{
    struct fixture *fx = *state;
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 4096, &err), 0);
    put_records(&sp, 1, 1, 100);
    struct profile_record r;
    make_record(&r, 2, 8000);
    assert_int_equal(spool_put(&sp, &r, NULL, &err), -1);
    assert_int_equal(err.code, CP_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "does not fit"));
    assert_int_equal(sp.counters.evicted, 0); /* nothing thrown away for it */
    assert_int_equal(count_files(fx->dir, ".spool"), 1);
    profile_record_free(&r);
    spool_close(&sp);
}

static void test_survives_restart(void **state)
{
    struct fixture *fx = *state;
    struct spool sp;
    struct cp_err err;
    uint64_t last_seq;
    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    put_records(&sp, 1, 3, 200);
    last_seq = sp.entries[2].seq;
    spool_close(&sp);

    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    assert_int_equal(sp.nentries, 3);
    assert_int_equal(sp.counters.corrupt, 0);
    put_records(&sp, 4, 1, 200);
    assert_true(sp.entries[3].seq > last_seq);
    int idx[8];
    assert_int_equal(take_all(&sp, idx, 8), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(idx[i], i + 1);
    spool_close(&sp);
}

static void test_smaller_cap_at_restart_evicts_oldest(void **state)
{
    struct fixture *fx = *state;
    size_t one = encoded_size(1000);
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    put_records(&sp, 1, 4, 1000);
    spool_close(&sp);
    assert_int_equal(spool_open(&sp, fx->dir, 2 * one, &err), 0);
    assert_int_equal(sp.counters.evicted, 2);
    int idx[8];
    assert_int_equal(take_all(&sp, idx, 8), 2);
    assert_int_equal(idx[0], 3);
    assert_int_equal(idx[1], 4);
    spool_close(&sp);
}

static void test_interrupted_write_cleaned_at_start(void **state)
{
    struct fixture *fx = *state;
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    put_records(&sp, 1, 2, 100);
    spool_close(&sp);
    /* a crash mid-write: half a file under the temporary name; a stranger's file too */
    write_file(fx->dir, "00000000000000000009.spool.tmp", SPOOL_MAGIC "half", 12);
    write_file(fx->dir, "notes.txt", "keep me", 7);

    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    assert_int_equal(sp.counters.tmp_removed, 1);
    assert_int_equal(sp.counters.corrupt, 0);
    assert_false(file_exists(fx->dir, "00000000000000000009.spool.tmp"));
    assert_true(file_exists(fx->dir, "notes.txt"));
    assert_int_equal(sp.nentries, 2);
    assert_true(sp.next_seq > 9); /* never reuses a name seen, even a temporary one */
    spool_close(&sp);
}

static void test_corrupt_files_skipped_and_counted(void **state)
{
    struct fixture *fx = *state;
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    put_records(&sp, 1, 3, 100);
    char bad_body[128];
    snprintf(bad_body, sizeof bad_body, "%s/%020" PRIu64 ".spool", fx->dir, sp.entries[0].seq);
    spool_close(&sp);

    /* 1: right header and length, a byte of the profile changed (found at load: CRC) */
    int fd = open(bad_body, O_RDWR);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char c = 0;
    assert_int_equal(pread(fd, &c, 1, st.st_size - 10), 1);
    c ^= 0x55;
    assert_int_equal(pwrite(fd, &c, 1, st.st_size - 10), 1);
    close(fd);
    /* garbage under a spool name, and a length that does not match (found at open) */
    write_file(fx->dir, "00000000000000000000.spool", "not a spool file at all, no", 27);
    struct buf trunc = {0};
    struct profile_record r;
    make_record(&r, 99, 100);
    assert_int_equal(spool_record_encode(&r, &trunc, &err), 0);
    write_file(fx->dir, "00000000000000000099.spool", trunc.data, trunc.len - 1);
    buf_free(&trunc);
    profile_record_free(&r);

    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    assert_int_equal(sp.counters.corrupt, 2);
    assert_non_null(strstr(sp.last_corrupt, "bad header"));
    assert_int_equal(sp.nentries, 3);
    uint64_t seq;
    assert_int_equal(spool_take_oldest(&sp, &r, &seq, &err), 1);
    assert_int_equal(index_of(&r), 2); /* 1 skipped */
    profile_record_free(&r);
    assert_int_equal(sp.counters.corrupt, 3);
    assert_non_null(strstr(sp.last_corrupt, "checksum"));
    assert_false(access(bad_body, F_OK) == 0);
    assert_int_equal(count_files(fx->dir, ".spool"), 2);
    assert_int_equal(sp.next_seq, 100);
    spool_close(&sp);
}

static void test_file_deleted_behind_our_back(void **state)
{
    struct fixture *fx = *state;
    struct spool sp;
    struct cp_err err;
    assert_int_equal(spool_open(&sp, fx->dir, 1 << 20, &err), 0);
    put_records(&sp, 1, 2, 100);
    char path[128];
    snprintf(path, sizeof path, "%s/%020" PRIu64 ".spool", fx->dir, sp.entries[0].seq);
    assert_int_equal(unlink(path), 0);
    struct profile_record r;
    uint64_t seq;
    assert_int_equal(spool_take_oldest(&sp, &r, &seq, &err), 1);
    assert_int_equal(index_of(&r), 2);
    assert_int_equal(sp.counters.corrupt, 0);
    assert_int_equal(sp.nentries, 1);
    assert_true(sp.bytes == sp.entries[0].size);
    profile_record_free(&r);
    spool_close(&sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_truncation_and_flip_rejected),
        cmocka_unit_test(test_crafted_files_rejected),
        cmocka_unit_test(test_unencodable_records_refused),
        cmocka_unit_test_setup_teardown(test_oldest_first_take_release_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cap_evicts_oldest_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_taken_entries_evicted_last, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_larger_than_cap_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_survives_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_smaller_cap_at_restart_evicts_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_write_cleaned_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_files_skipped_and_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_deleted_behind_our_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
