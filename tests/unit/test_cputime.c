/* cputime: per-thread CPU deltas read from this very process's schedstat files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cputime.h"
#include "procfs.h"

#include <time.h>
#include <unistd.h>

static void spin_ms(long ms)
{
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    do
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
}

static void test_delta_follows_thread_cpu(void **state)
{
    (void)state;
    struct cputime c;
    assert_int_equal(cputime_init(&c, PROCFS_DEFAULT, getpid()), 0);
    int32_t tid = (int32_t)gettid();
    assert_int_equal(cputime_delta(&c, tid), 0); /* primes */
    spin_ms(50);
    int64_t d = cputime_delta(&c, tid);
    assert_true(d >= 45 * 1000000LL);
    assert_true(d < 500 * 1000000LL);
    usleep(50 * 1000);
    d = cputime_delta(&c, tid);
    assert_true(d < 10 * 1000000LL); /* sleeping costs (almost) nothing */
    assert_true(cputime_read_total(getpid(), tid) > 0);
    cputime_free(&c);
}

static void test_unknown_threads_and_sweep(void **state)
{
    (void)state;
    struct cputime c;
    assert_int_equal(cputime_init(&c, PROCFS_DEFAULT, getpid()), 0);
    assert_int_equal(cputime_delta(&c, 0), -1);
    assert_int_equal(cputime_delta(&c, 0x7ffffff0), -1); /* no such thread */
    assert_int_equal(cputime_delta(&c, (int32_t)gettid()), 0);
    assert_int_equal(c.count, 1);
    cputime_sweep(&c); /* seen since the last sweep: kept */
    assert_int_equal(c.count, 1);
    cputime_sweep(&c); /* not asked about since: closed */
    assert_int_equal(c.count, 0);
    assert_int_equal(cputime_delta(&c, (int32_t)gettid()), 0); /* primes again */
    cputime_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta_follows_thread_cpu),
        cmocka_unit_test(test_unknown_threads_and_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
