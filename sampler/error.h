/* error: the error value every fallible conprof function fills.
 *
 * Contract: a function that can fail takes a `struct cp_err *` (never NULL) and returns -1 (or
 * NULL) after calling cp_err_set(); the caller owns the buffer. The message names the problem and,
 * where there is one, the fix. `code` lets a CLI choose its exit status and a caller react without
 * parsing text. No global state; thread-safe as long as each thread has its own cp_err.
 */
#ifndef CONPROF_ERROR_H
#define CONPROF_ERROR_H

enum cp_err_code {
    CP_OK = 0,
    CP_ERR_NOPROC,      /* no such process, or it exited */
    CP_ERR_NOTPYTHON,   /* the process is not a CPython interpreter we can find */
    CP_ERR_UNSUPPORTED, /* a CPython version or build we do not support */
    CP_ERR_PERM,        /* permission denied (ptrace rules, capabilities) */
    CP_ERR_IO,          /* a file or system call failed */
    CP_ERR_INVALID,     /* malformed input: torn read, corrupt structure, bad argument */
    CP_ERR_NOMEM,       /* allocation failed or a size bound was hit */
};

struct cp_err {
    enum cp_err_code code;
    char msg[512];
};

void cp_err_set(struct cp_err *err, enum cp_err_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to the message already in err (keeps the code). */
void cp_err_prefix(struct cp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
