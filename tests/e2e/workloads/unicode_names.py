"""Non-ASCII names: the tests copy this file to non-ASCII file names (módulo_ñ.py, 计算_📈.py)
and run the copy. größe (latin-1 range) calls 计算 (CJK), which spins."""
import json
import os
import sys


def 计算():
    sys.stdout.write("READY " + json.dumps({"pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    x = 0
    while True: x += 1  # LINE:compute_spin


def größe():
    计算()  # LINE:groesse_call


größe()  # LINE:module_call
