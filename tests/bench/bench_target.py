"""Target processes for the conprof benchmarks (tests/bench/bench_*.c start them).

Every mode prints one line "READY" on stdout (flushed) once the process sits in the state the
benchmark measures, so a benchmark never samples interpreter start-up. Runs on CPython 3.7+.

  depth N sleep|spin   recurse until the stack is exactly N Python frames deep (the module frame
                       counts), then sleep (a steady stack) or run a busy loop in the leaf frame
  threads K            K threads (the main thread is one of them), each a pure-Python busy loop
  calibrate SECONDS    print "RATE <iterations per second>" of the `work` loop, then exit
  work ITERATIONS      print READY, wait for a line on stdin, run the work loop, print
                       "ELAPSED <wall seconds> <CPU seconds>" measured by the target itself
                       (perf_counter, process_time), then exit
  stacks FUNCS THREADS generate FUNCS distinct functions spread over several generated modules;
                       THREADS threads each wander through them along pseudo-random call paths
                       (depths 4..40), so nearly every sample is a new stack
"""

import sys
import threading
import time


def announce_ready():
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def spin_forever():
    count = 0
    while True:
        count += 1


def sleep_forever():
    while True:
        time.sleep(3600)


def descend(levels, leaf):
    """Adds `levels` frames of this function on top of the caller, then runs leaf in the last."""
    if levels > 1:
        return descend(levels - 1, leaf)
    announce_ready()
    leaf()


def mode_depth(depth, how):
    if depth < 5:
        raise SystemExit("depth must be at least 5")
    sys.setrecursionlimit(max(1000, depth + 100))
    # <module>, main and mode_depth are 3 frames, the leaf function 1: descend adds the rest.
    leaf = spin_forever if how == "spin" else sleep_forever
    descend(depth - 4, leaf)


def mode_threads(count):
    started = threading.Barrier(count)

    def worker():
        started.wait()
        spin_forever()

    for _ in range(count - 1):
        threading.Thread(target=worker, daemon=True).start()
    started.wait()
    announce_ready()
    spin_forever()


def work_step(i):
    return (i * 2654435761) % 1000003


def work(iterations):
    acc = 0
    for i in range(iterations):
        acc ^= work_step(i)
    return acc


def mode_calibrate(seconds):
    iterations = 10000
    while True:
        start = time.perf_counter()
        work(iterations)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        iterations *= 2
    sys.stdout.write("RATE %d\n" % int(iterations / elapsed))
    sys.stdout.flush()


def mode_work(iterations):
    announce_ready()
    sys.stdin.readline()
    start, start_cpu = time.perf_counter(), time.process_time()
    work(iterations)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    sys.stdout.write("ELAPSED %.6f %.6f\n" % (elapsed, cpu))
    sys.stdout.flush()


FUNCS_PER_MODULE = 50


def generated_source(first, count, total):
    """Functions f<first>..f<first+count-1>; each calls one other, chosen by a step of an LCG."""
    lines = []
    for i in range(first, first + count):
        lines.append("def f%d(depth, seed):" % i)
        lines.append("    if depth == 0:")
        lines.append("        return burn(seed)")
        lines.append("    seed = (seed * 1103515245 + 12345) & 0x7fffffff")
        lines.append("    return FUNCS[(seed >> 8) %% %d](depth - 1, seed)" % total)
    return "\n".join(lines) + "\n"


def burn(seed):
    count = 0
    for _ in range(200 + seed % 200):
        count += 1
    return count


def generate_functions(total):
    funcs = []
    shared = {"burn": burn, "FUNCS": funcs}
    for first in range(0, total, FUNCS_PER_MODULE):
        count = min(FUNCS_PER_MODULE, total - first)
        name = "generated_%03d.py" % (first // FUNCS_PER_MODULE)
        code = compile(generated_source(first, count, total), name, "exec")
        exec(code, shared)
        funcs.extend(shared["f%d" % i] for i in range(first, first + count))
    return funcs


def wander(funcs, seed):
    while True:
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        funcs[seed % len(funcs)](4 + (seed >> 12) % 37, seed)


def mode_stacks(total, thread_count):
    funcs = generate_functions(total)
    for n in range(1, thread_count):
        threading.Thread(target=wander, args=(funcs, n * 7919), daemon=True).start()
    announce_ready()
    wander(funcs, 1)


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    mode = argv[1]
    if mode == "depth":
        mode_depth(int(argv[2]), argv[3] if len(argv) > 3 else "sleep")
    elif mode == "threads":
        mode_threads(int(argv[2]))
    elif mode == "calibrate":
        mode_calibrate(float(argv[2]))
    elif mode == "work":
        mode_work(int(argv[2]))
    elif mode == "stacks":
        mode_stacks(int(argv[2]), int(argv[3]) if len(argv) > 3 else 4)
    else:
        raise SystemExit("unknown mode %r\n%s" % (mode, __doc__))


if __name__ == "__main__":
    main(sys.argv)
