/* pythreads: enumerating the target's Python threads and naming them as the kernel does.
 *
 * Each PyThreadState is copied with one read of off.tstate_size bytes, from which the next
 * pointer, the frame pointer, the pthread id and (3.11+) the native thread id are taken.
 *
 * Native ids on 3.7-3.10: CPython only stores the pthread_t, which on glibc and musl is the
 * address of the thread's struct pthread, and that struct holds the kernel tid. We find the offset
 * of that tid once per process by scanning the main thread's struct pthread for the main thread's
 * tid (its pid in its own namespace); the offset is then used for every thread.
 *
 * PID namespaces: a target in a container stores tids of its own namespace. When its NSpid has
 * more than one entry we build a map from inner tid to our tid from /proc/PID/task/<tid>/status,
 * and rebuild it when a tid is missing (threads come and go).
 */
#include "pythreads.h"

#include "procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PTHREAD_SCAN_WORDS 256

void pythreads_state_init(struct pythreads_state *st)
{
    memset(st, 0, sizeof *st);
    st->pthread_tid_offset = -1;
}

void pythreads_state_free(struct pythreads_state *st)
{
    free(st->tid_map);
    pythreads_state_init(st);
}

static uint64_t word_at(const uint8_t *base, int32_t offset)
{
    uint64_t v = 0;
    if (offset >= 0) memcpy(&v, base + offset, sizeof v);
    return v;
}

static int find_pthread_tid_offset(struct py_proc *p, uint64_t pthread_addr)
{
    int32_t words[PTHREAD_SCAN_WORDS * 2];
    if (!pthread_addr || mem_read(&p->mem, pthread_addr, words, sizeof words) < 0) return -1;
    /* the tid is an int (pid_t); skip slot 0-1 (self pointers) */
    for (int i = 2; i < PTHREAD_SCAN_WORDS * 2; i++)
        if (words[i] == p->nspid) return i * (int)sizeof(int32_t);
    return -1;
}

/* 3.7-3.10: the tid inside each thread's struct pthread. The offset is learnt from the main
 * thread, the oldest one, which CPython links last. */
static void read_pthread_tids(struct py_proc *p, struct pythreads_state *st, struct py_thread *t,
                              int n)
{
    if (st->pthread_tid_offset < 0 && n > 0)
        st->pthread_tid_offset = find_pthread_tid_offset(p, t[n - 1].thread_id);
    if (st->pthread_tid_offset < 0) return;
    for (int i = 0; i < n; i++) {
        int32_t tid = 0;
        if (t[i].thread_id &&
            mem_read(&p->mem, t[i].thread_id + (uint64_t)st->pthread_tid_offset, &tid,
                     sizeof tid) == 0 &&
            tid > 0)
            t[i].native_tid = tid;
    }
}

static int rebuild_tid_map(const struct py_proc *p, struct pythreads_state *st)
{
    char rel[96], line[256];
    DIR *d = procfs_opendir(p->procfd, procfs_path(rel, sizeof rel, "%d/task", (int)p->pid));
    if (!d) return -1;
    st->tid_map_len = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int outer = atoi(e->d_name);
        if (outer <= 0) continue;
        int fd = procfs_open(p->procfd,
                             procfs_path(rel, sizeof rel, "%d/task/%d/status", (int)p->pid, outer),
                             O_RDONLY);
        FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
        if (!f) {
            if (fd >= 0) close(fd);
            continue;
        }
        int inner = outer;
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "NSpid:", 6) != 0) continue;
            char *save = NULL;
            for (char *tok = strtok_r(line + 6, " \t\n", &save); tok;
                 tok = strtok_r(NULL, " \t\n", &save))
                inner = atoi(tok);
            break;
        }
        fclose(f);
        if (st->tid_map_len == st->tid_map_cap) {
            unsigned cap = st->tid_map_cap ? st->tid_map_cap * 2 : 64;
            void *m = realloc(st->tid_map, cap * sizeof *st->tid_map);
            if (!m) break;
            st->tid_map = m;
            st->tid_map_cap = cap;
        }
        st->tid_map[st->tid_map_len].inner = inner;
        st->tid_map[st->tid_map_len].outer = outer;
        st->tid_map_len++;
    }
    closedir(d);
    return 0;
}

static int32_t outer_tid(struct py_proc *p, struct pythreads_state *st, int32_t inner)
{
    if (!st->in_other_pidns || inner <= 0) return inner;
    for (int attempt = 0; attempt < 2; attempt++) {
        for (unsigned i = 0; i < st->tid_map_len; i++)
            if (st->tid_map[i].inner == inner) return st->tid_map[i].outer;
        if (attempt == 0 && rebuild_tid_map(p, st) < 0) break;
    }
    return 0;
}

int pythreads_list(struct py_proc *p, struct pythreads_state *st, struct py_thread *out, int max,
                   struct cp_err *err)
{
    const struct py_offsets *off = &p->off;
    uint8_t ts[PYTHREADS_TSTATE_MAX];
    size_t tsize = (size_t)off->tstate_size;
    if (tsize > sizeof ts) {
        cp_err_set(err, CP_ERR_INVALID, "thread state size %zu is out of bounds", tsize);
        return -1;
    }
    st->in_other_pidns = p->nspid != p->pid;
    uint64_t addr;
    if (mem_read_u64(&p->mem, p->interp_addr + (uint64_t)off->interp_tstate_head, &addr) < 0) {
        pyproc_read_error(p, errno, "the thread list", err);
        return -1;
    }
    int n = 0;
    while (addr && n < max && n < PYTHREADS_MAX) {
        for (int i = 0; i < n; i++)
            if (out[i].tstate == addr) {
                cp_err_set(err, CP_ERR_INVALID, "cycle in the thread list (torn read)");
                return -1;
            }
        if (mem_read(&p->mem, addr, ts, tsize) < 0) {
            pyproc_read_error(p, errno, "a thread state", err);
            return -1;
        }
        struct py_thread *t = &out[n++];
        t->tstate = addr;
        t->thread_id = word_at(ts, off->tstate_thread_id);
        t->frame = word_at(ts, off->tstate_frame);
        t->datastack_chunk = word_at(ts, off->tstate_datastack_chunk);
        t->native_tid = off->tstate_native_thread_id >= 0
                            ? (int32_t)word_at(ts, off->tstate_native_thread_id)
                            : 0;
        addr = word_at(ts, off->tstate_next);
    }
    if (off->tstate_native_thread_id < 0) read_pthread_tids(p, st, out, n);
    for (int i = 0; i < n; i++)
        out[i].native_tid = outer_tid(p, st, out[i].native_tid);
    return n;
}

uint64_t pythreads_gil_holder(struct py_proc *p)
{
    const struct py_offsets *off = &p->off;
    uint64_t holder = 0;
    if (off->runtime_tstate_current >= 0) {
        if (mem_read_u64(&p->mem, p->runtime_addr + (uint64_t)off->runtime_tstate_current,
                         &holder) < 0)
            return 0;
        return holder;
    }
    uint64_t gil = 0;
    int32_t locked_off, holder_off;
    if (off->interp_gil_ptr >= 0) {
        if (mem_read_u64(&p->mem, p->interp_addr + (uint64_t)off->interp_gil_ptr, &gil) < 0 || !gil)
            return 0;
        locked_off = off->gil_locked;
        holder_off = off->gil_last_holder;
    } else if (off->interp_gil_locked >= 0) {
        gil = p->interp_addr;
        locked_off = off->interp_gil_locked;
        holder_off = off->interp_gil_last_holder;
    } else {
        return 0;
    }
    int32_t locked = 0;
    if (mem_read(&p->mem, gil + (uint64_t)locked_off, &locked, sizeof locked) < 0 || !locked)
        return 0;
    if (mem_read_u64(&p->mem, gil + (uint64_t)holder_off, &holder) < 0) return 0;
    return holder;
}

void pythreads_name(const struct py_proc *p, int32_t tid, char *buf, size_t size)
{
    char rel[96];
    if (size == 0) return;
    buf[0] = '\0';
    if (tid <= 0) return;
    int fd = procfs_open(p->procfd,
                         procfs_path(rel, sizeof rel, "%d/task/%d/comm", (int)p->pid, (int)tid),
                         O_RDONLY);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) n = 0;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
}
