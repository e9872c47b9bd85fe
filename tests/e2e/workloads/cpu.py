"""CPU-accounting workloads: `python cpu.py SCENARIO`.

busy_and_sleeping: a worker thread spins, the main thread sleeps.
split: one thread alternates heavy() for 70 ms and light() for 30 ms of its own CPU time
       (time.process_time budgets), so heavy must get 70% of the CPU profile.
busy: the main thread spins (for comparing the profile's CPU total with /proc/PID/stat).
"""
import json
import os
import sys
import threading
import time


def ready(**info):
    info["pid"] = os.getpid()
    sys.stdout.write("READY " + json.dumps(info) + "\n")
    sys.stdout.flush()


def busy_worker(started):
    started.set()
    x = 0
    while True: x += 1  # LINE:busy_worker_spin


def busy_and_sleeping():
    started = threading.Event()
    worker = threading.Thread(target=busy_worker, args=(started,), name="busy")
    worker.daemon = True
    worker.start()
    started.wait()
    ready()
    time.sleep(100000)  # LINE:main_sleep


def heavy(budget):
    end = time.process_time() + budget
    while time.process_time() < end: pass  # LINE:heavy_spin


def light(budget):
    end = time.process_time() + budget
    while time.process_time() < end: pass  # LINE:light_spin


def split():
    ready()
    while True:
        heavy(0.070)  # LINE:split_heavy_call
        light(0.030)  # LINE:split_light_call


def busy():
    ready()
    x = 0
    while True: x += 1  # LINE:busy_spin


SCENARIOS = {"busy_and_sleeping": busy_and_sleeping, "split": split, "busy": busy}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()  # LINE:dispatch
