"""Prints what the tests need to know about this interpreter, as JSON: its version and the lines
of the threading frames that sit above every Thread's target (computed from its own stdlib)."""
import inspect
import json
import platform
import sys
import threading


def call_line(func, text):
    lines, start = inspect.getsourcelines(func)
    for i, line in enumerate(lines):
        if text in line:
            return start + i
    raise SystemExit("%r not found in %s" % (text, func))


print(json.dumps({
    "version": platform.python_version(),
    "prefix": sys.prefix,
    "executable": sys.executable,
    "threading": {
        "file": threading.__file__,
        "_bootstrap": call_line(threading.Thread._bootstrap, "self._bootstrap_inner()"),
        "_bootstrap_inner": call_line(threading.Thread._bootstrap_inner, "self.run()"),
        "run": call_line(threading.Thread.run, "self._target(*self._args, **self._kwargs)"),
    },
}))
