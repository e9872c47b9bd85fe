"""Stack-shape workloads: `python stacks.py SCENARIO` prints "READY {json}" once it sits in the
scenario's known stack, then spins (or sleeps) there until killed.

Every line a test expects is marked "# LINE:<name>"; keep each busy loop on one line so every
instruction of the loop belongs to that line, and keep calls on one line.
"""
import json
import os
import sys
import threading
import time

RECURSION_DEPTH = 500  # the tests expect exactly this many recurse() frames


def ready(**info):
    info["pid"] = os.getpid()
    sys.stdout.write("READY " + json.dumps(info) + "\n")
    sys.stdout.flush()


# nested: nested_scenario -> nested_a -> nested_b -> nested_c (spins)
def nested_c():
    ready()
    x = 0
    while True: x += 1  # LINE:nested_spin


def nested_b():
    nested_c()  # LINE:nested_b_call


def nested_a():
    nested_b()  # LINE:nested_a_call


def nested_scenario():
    nested_a()  # LINE:nested_call


# method: a method of a class (co_qualname Outer.method on 3.11+, co_name "method" before)
class Outer:
    def method(self):
        ready()
        x = 0
        while True: x += 1  # LINE:method_spin


def method_scenario():
    Outer().method()  # LINE:method_call


# recursion: RECURSION_DEPTH frames of recurse(), the deepest spins
def recurse(depth):
    if depth > 1:
        return recurse(depth - 1)  # LINE:recurse_call
    ready()
    x = 0
    while True: x += 1  # LINE:recurse_spin


def recursion_scenario():
    sys.setrecursionlimit(10000)
    recurse(RECURSION_DEPTH)  # LINE:recursion_call


# generator: the generator's frame runs above its consumer's
def produce():
    while True:
        n = 0
        while n < 300000: n += 1  # LINE:gen_spin
        yield n


def generator_scenario():
    ready()
    for item in produce():  # LINE:gen_consume
        pass


# lambda: a module-level lambda (qualname "<lambda>" on every version) busy in a C call
spin_lambda = lambda: any(iter(int, 1))  # LINE:lambda_spin


def lambda_scenario():
    ready()
    spin_lambda()  # LINE:lambda_call


# threads: a worker thread spins, the main thread sleeps
def worker_spin(started):
    started.set()
    x = 0
    while True: x += 1  # LINE:worker_spin


def threads_scenario():
    started = threading.Event()
    worker = threading.Thread(target=worker_spin, args=(started,), name="spinner")
    worker.daemon = True
    worker.start()
    started.wait()
    ready(worker_ident=worker.ident)
    time.sleep(100000)  # LINE:threads_main_sleep


SCENARIOS = {
    "nested": nested_scenario,
    "method": method_scenario,
    "recursion": recursion_scenario,
    "generator": generator_scenario,
    "lambda": lambda_scenario,
    "threads": threads_scenario,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()  # LINE:dispatch
