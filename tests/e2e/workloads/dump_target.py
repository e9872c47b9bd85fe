"""For `dump`: a thread named "sleeper" blocked in time.sleep inside f -> g, while the main thread
spins in h (main -> h). Prints "READY {json}" with both threads' idents once both are there."""
import json
import os
import sys
import threading
import time


def g(entered):
    entered.set()
    time.sleep(100000)  # LINE:g_sleep


def f(entered):
    g(entered)  # LINE:f_call


def h():
    x = 0
    while True: x += 1  # LINE:h_spin


def main():
    entered = threading.Event()
    sleeper = threading.Thread(target=f, args=(entered,), name="sleeper")
    sleeper.daemon = True
    sleeper.start()
    entered.wait()
    time.sleep(0.3)  # let the sleeper get from entered.set() into time.sleep
    info = {"pid": os.getpid(), "main_ident": threading.get_ident(), "sleeper_ident": sleeper.ident}
    sys.stdout.write("READY " + json.dumps(info) + "\n")
    sys.stdout.flush()
    h()  # LINE:main_call


main()  # LINE:module_call
