#!/bin/sh
# fleet_containers.sh: the inside of one container of bench_fleet (tests/bench/bench_fleet.c).
#
# bench_fleet runs it as the first process of new mount and pid namespaces:
#   unshare --mount --pid --fork --kill-child --mount-proc --propagation private \
#       sh fleet_containers.sh CGROUP NS_DIR PREFIX EXE PROCESSES THREADS BUSY_PERCENT
# It joins the cgroup v2 CGROUP (made by bench_fleet, named like a containerd pod container),
# mounts a tmpfs on NS_DIR (so what is below it exists only in this mount namespace), binds the
# interpreter installation PREFIX (a pyenv shared build) there, writes the application next to it
# and execs PREFIX/bin/EXE as it is seen inside: the way the end-to-end tests make containers
# (tests/e2e/run_support.py), with PROCESSES processes instead of one.
#
# The application is a small pre-fork service: the first process forks the others before any
# thread starts, then every process runs THREADS threads: the main one sleeps, the others serve
# "requests" (a few nested calls, then a loop) for BUSY_PERCENT % of a core each, in slices of a
# few ms every 100 ms, and sleep the rest. Each process prints "READY <pid>" once its threads run.
set -eu
cgroup=$1 ns_dir=$2 prefix=$3 exe=$4 processes=$5 threads=$6 busy=$7

echo 0 >"$cgroup/cgroup.procs"
mount -t tmpfs conprof-bench "$ns_dir"
mkdir "$ns_dir/py" "$ns_dir/app"
mount --bind "$prefix" "$ns_dir/py"
cat >"$ns_dir/app/fleet_app.py" <<'EOF'
import os
import random
import sys
import threading
import time

SLICE_S = 0.1


def checksum(n):
    total = 0
    for i in range(n):
        total = (total + i * i) % 1000003
    return total


def render(rows):
    return checksum(rows * 3)


def query(rows, depth):
    if depth:
        return query(rows, depth - 1)
    return checksum(rows)


def handle(rnd):
    if rnd.random() < 0.5:
        return render(rnd.randint(50, 150))
    return query(rnd.randint(50, 150), rnd.randint(2, 8))


def serve(busy_fraction, seed):
    rnd = random.Random(seed)
    budget = SLICE_S * busy_fraction
    while True:
        start = time.thread_time()
        while time.thread_time() - start < budget:
            handle(rnd)
        time.sleep(SLICE_S - budget)


def main():
    processes, threads, busy = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    for k in range(threads - 1):
        t = threading.Thread(target=serve, args=(busy / 100, os.getpid() * 31 + k), daemon=True)
        t.start()
    sys.stdout.write("READY %d\n" % os.getpid())
    sys.stdout.flush()
    while True:
        time.sleep(3600)


main()
EOF
export LD_LIBRARY_PATH="$ns_dir/py/lib"
cd "$ns_dir/app"
exec "$ns_dir/py/bin/$exe" fleet_app.py "$processes" "$threads" "$busy"
