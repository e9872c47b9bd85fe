/* pyproc: attaches to a running CPython process from outside and finds its interpreter.
 *
 * Contract: pyproc_attach() never stops, signals or writes to the target. It reads
 * /proc/PID/maps, opens the interpreter's ELF file through the target's own root
 * (/proc/PID/root/<path>, or /proc/PID/exe) so a target in another mount namespace works, finds
 * _PyRuntime (libpython first, then the executable), computes the load bias from the mapping, tells
 * the version (3.13+: _Py_DebugOffsets; 3.11+: Py_Version; else a version string in the binary and
 * the file name), picks the offsets (pyoffsets.h) and checks the main interpreter's structures.
 * Errors name the cause and the fix: CP_ERR_NOPROC, CP_ERR_NOTPYTHON (says what was looked for),
 * CP_ERR_UNSUPPORTED (names the version), CP_ERR_PERM (says CAP_SYS_PTRACE or the same user is
 * needed). A struct py_proc holds no heap memory; it must not be copied after attach (its memreader
 * points into it).
 */
#ifndef CONPROF_PYPROC_H
#define CONPROF_PYPROC_H

#include "error.h"
#include "memreader.h"
#include "procmem.h"
#include "pyoffsets.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct py_proc {
    pid_t pid;
    int procfd;      /* the /proc to use (procfs.h), PROCFS_DEFAULT for ours */
    bool same_mntns; /* we are in the target's mount namespace: its paths are ours */
    pid_t nspid;     /* the pid inside the target's own pid namespace */
    struct procmem procmem;
    struct memreader mem; /* reads the target (points at procmem) */
    struct py_offsets off;
    uint32_t version_hex;
    char version[24];        /* "3.11.7" */
    char binary[PATH_MAX];   /* the file holding _PyRuntime, as the target names it */
    bool shared_libpython;   /* _PyRuntime lives in libpython*.so */
    uint64_t runtime_addr;   /* &_PyRuntime */
    uint64_t none_addr;      /* &_Py_NoneStruct, 0 if unknown */
    uint64_t code_type_addr; /* &PyCode_Type, 0 if unknown */
    uint64_t interp_addr;    /* the main interpreter (_PyRuntime.interpreters.head) */
    uint64_t start_time; /* the process start time (/proc/PID/stat field 22), against pid reuse */
};

int pyproc_attach(pid_t pid, struct py_proc *p, struct cp_err *err);
/* The same through a /proc handle (procfs.h): for a worker that entered a container's mount
 * namespace and kept a descriptor of the host's /proc. */
int pyproc_attach_at(int procfd, pid_t pid, struct py_proc *p, struct cp_err *err);

/* Retries every 10 ms for up to timeout_ms while the target is still starting (no libpython
 * mapped yet, interpreter not initialized, sys.version not written yet, so the exact version is
 * not known). Other errors return at once. */
int pyproc_attach_wait(int procfd, pid_t pid, int timeout_ms, struct py_proc *p,
                       struct cp_err *err);

/* Re-reads the interpreter head (it is 0 before initialization and after finalization). */
int pyproc_read_interp(struct py_proc *p, struct cp_err *err);

/* Is the target still alive and still the same process (start time unchanged)? */
bool pyproc_alive(const struct py_proc *p);

/* Maps a failed read's errno to an error with the right code and advice. */
void pyproc_read_error(const struct py_proc *p, int errnum, const char *what, struct cp_err *err);

#endif
