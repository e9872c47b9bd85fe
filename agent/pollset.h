/* pollset: the event set of a small non-blocking server driven from the daemon's poll loop.
 *
 * Contract: one epoll descriptor (the one fd the daemon polls) holding the server's sockets and a
 * timerfd for its deadlines. Callers tag each watched fd with a number; POLLSET_TAG_TIMER is the
 * timer's. pollset_arm() sets the absolute CLOCK_MONOTONIC deadline in milliseconds (0 disarms);
 * pollset_wait() consumes a timer expiry and returns the ready events without blocking.
 * Functions return -1 and set errno on failure. Not thread-safe.
 */
#ifndef CONPROF_AGENT_POLLSET_H
#define CONPROF_AGENT_POLLSET_H

#include <stdint.h>
#include <sys/epoll.h>

#define POLLSET_TAG_TIMER 1

struct pollset {
    int epoll_fd;
    int timer_fd;
};

/* Both descriptors, the timer already watched; on failure both are -1 (or closed). */
int pollset_open(struct pollset *ps);
int pollset_watch(struct pollset *ps, int op, int fd, uint32_t events, uint64_t tag);
void pollset_arm(struct pollset *ps, int64_t deadline_ms);
int pollset_wait(struct pollset *ps, struct epoll_event *events, int max);
void pollset_close(struct pollset *ps);

#endif
