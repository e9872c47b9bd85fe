/* pollset: epoll + timerfd, shared by the status socket and the metrics listener. */
#include "pollset.h"

#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

int pollset_open(struct pollset *ps)
{
    ps->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    ps->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ps->epoll_fd < 0 || ps->timer_fd < 0 ||
        pollset_watch(ps, EPOLL_CTL_ADD, ps->timer_fd, EPOLLIN, POLLSET_TAG_TIMER) < 0) {
        pollset_close(ps);
        return -1;
    }
    return 0;
}

int pollset_watch(struct pollset *ps, int op, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(ps->epoll_fd, op, fd, &ev);
}

void pollset_arm(struct pollset *ps, int64_t deadline_ms)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (deadline_ms > 0) {
        its.it_value.tv_sec = deadline_ms / 1000;
        its.it_value.tv_nsec = (long)(deadline_ms % 1000) * 1000000 + 1;
    }
    timerfd_settime(ps->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

int pollset_wait(struct pollset *ps, struct epoll_event *events, int max)
{
    uint64_t expirations;
    if (read(ps->timer_fd, &expirations, sizeof expirations) < 0) { /* not due: fine */
    }
    return epoll_wait(ps->epoll_fd, events, max, 0);
}

void pollset_close(struct pollset *ps)
{
    if (ps->epoll_fd >= 0) close(ps->epoll_fd);
    if (ps->timer_fd >= 0) close(ps->timer_fd);
    ps->epoll_fd = ps->timer_fd = -1;
}
