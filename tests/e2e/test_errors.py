"""Errors a user meets: what the agent says and the exit status (1 run-time failure, 2 usage)."""
import os
import re
import shutil
import subprocess

import pytest

import e2e_support as sup

PY36 = sup.PYENV_ROOT / "versions" / "3.6.15" / "bin" / "python3.6"
SPIN = "import sys; sys.stdout.write('READY {}\\n'); sys.stdout.flush()\nwhile True: pass\n"


def dead_pid():
    """A pid that belonged to a process we started and reaped (so nothing has it now)."""
    p = subprocess.Popen(["true"])
    p.wait()
    assert not os.path.exists("/proc/%d" % p.pid)
    return p.pid


@pytest.fixture
def spinning_python(spawn):
    """A root-owned python (the first available interpreter) spinning in a loop."""
    for ident in sup.selected_interpreter_ids():
        it = sup.interp(ident)
        if it.path:
            t = spawn([it.path, "-c", SPIN])
            t.wait_ready()
            return t
    pytest.fail("no interpreter available to start a target", pytrace=False)


@pytest.mark.parametrize("cmd", ["record", "dump"])
def test_no_such_process(agent, tmp_path, cmd):
    pid = dead_pid()
    args = [cmd, "--pid", pid] + (["-d", "1", "-o", tmp_path / "x.txt"] if cmd == "record" else [])
    res = sup.run_agent(args)
    assert res.returncode == 1, res.describe()
    assert "no process with pid %d" % pid in res.stderr, res.describe()
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("cmd", ["record", "dump"])
def test_not_a_python_process(agent, spawn, tmp_path, cmd):
    target = spawn(["sleep", "30"])
    args = [cmd, "--pid", target.pid] + (["-d", "1", "-o", tmp_path / "x.txt"] if cmd == "record" else [])
    res = sup.run_agent(args)
    assert res.returncode == 1, res.describe()
    assert "not a Python process" in res.stderr, res.describe()
    assert "libpython" in res.stderr and "_PyRuntime" in res.stderr, (
        "the message should say what was looked for (libpython, _PyRuntime):\n" + res.describe())
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("cmd", ["record", "dump"])
def test_unsupported_python_36(agent, spawn, tmp_path, cmd):
    if not PY36.is_file():
        pytest.fail("interpreter 3.6 is missing: no %s (install it with pyenv)" % PY36, pytrace=False)
    target = spawn([str(PY36), "-c", SPIN])
    target.wait_ready()
    args = [cmd, "--pid", target.pid] + (["-d", "1", "-o", tmp_path / "x.txt"] if cmd == "record" else [])
    res = sup.run_agent(args)
    assert res.returncode == 1, res.describe()
    assert re.search(r"Python 3\.6\.15\b.*is not supported", res.stderr, re.S), res.describe()
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("cmd", ["record", "dump"])
def test_permission_denied(agent, spinning_python, public_tmp, require_root, cmd):
    """The agent as `nobody` against root's python: the message names CAP_SYS_PTRACE."""
    agent_copy = public_tmp / "conprof-agent"  # /work may not be reachable for nobody
    shutil.copy2(str(agent), str(agent_copy))
    os.chmod(str(agent_copy), 0o755)
    out = public_tmp / "x.txt"
    args = [cmd, "--pid", spinning_python.pid] + (["-d", "1", "-o", out] if cmd == "record" else [])
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    who = subprocess.run(prefix + ["id", "-u"], stdout=subprocess.PIPE, timeout=30)
    assert who.returncode == 0 and who.stdout.strip() != b"0", "setpriv did not drop root"
    res = sup.run_agent(args, prefix=prefix, agent=agent_copy, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 1, res.describe()
    assert "CAP_SYS_PTRACE" in res.stderr, res.describe()
    assert not out.exists()


USAGE_CASES = {
    "rate-0": ["record", "--pid", "{pid}", "--rate", "0", "-d", "0.5", "-o", "{tmp}/x.txt"],
    "rate-1001": ["record", "--pid", "{pid}", "--rate", "1001", "-d", "0.5", "-o", "{tmp}/x.txt"],
    "format-foo": ["record", "--pid", "{pid}", "--format", "foo", "-d", "0.5", "-o", "{tmp}/x.txt"],
    "unknown-extension": ["record", "--pid", "{pid}", "-d", "0.5", "-o", "{tmp}/x.xyz"],
    "pid-and-command": ["record", "--pid", "{pid}", "-d", "0.5", "-o", "{tmp}/x.txt", "--",
                        "touch", "{tmp}/command-ran"],
    "nothing-to-record": ["record", "-d", "0.5", "-o", "{tmp}/x.txt"],
    "pid-not-a-number": ["record", "--pid", "12ab", "-d", "0.5", "-o", "{tmp}/x.txt"],
    "dimension-foo": ["record", "--pid", "{pid}", "--dimension", "foo", "-d", "0.5", "-o", "{tmp}/x.txt"],
    "duration-negative": ["record", "--pid", "{pid}", "-d", "-1", "-o", "{tmp}/x.txt"],
    "unknown-option": ["record", "--pid", "{pid}", "--frobnicate", "-d", "0.5", "-o", "{tmp}/x.txt"],
    "dump-without-pid": ["dump", "--json"],
    "dump-extra-argument": ["dump", "--pid", "{pid}", "extra"],
    "unknown-command": ["frobnicate"],
    "no-command": [],
}


@pytest.mark.parametrize("case", list(USAGE_CASES), ids=list(USAGE_CASES))
def test_bad_usage_exits_2(agent, spinning_python, tmp_path, case):
    args = [a.format(pid=spinning_python.pid, tmp=tmp_path) for a in USAGE_CASES[case]]
    res = sup.run_agent(args, timeout=30)
    assert res.returncode == 2, res.describe()
    assert res.stderr.strip(), "no message for bad usage:\n" + res.describe()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], (
        "bad usage must not write or run anything: %s" % sorted(p.name for p in tmp_path.iterdir()))


@pytest.mark.parametrize("args", [["record", "--help"], ["record", "-h"], ["dump", "--help"],
                                  ["version", "--help"], ["--help"]], ids=lambda a: " ".join(a))
def test_help_exits_0(agent, args):
    res = sup.run_agent(args, timeout=30)
    assert res.returncode == 0, res.describe()
    assert "usage: conprof-agent" in res.stdout, res.describe()


def test_help_lists_the_options(agent):
    res = sup.run_agent(["record", "--help"], timeout=30)
    for opt in ("--pid", "--rate", "--duration", "--output", "--format", "--threads",
                "--dimension", "--top", "--quiet"):
        assert opt in res.stdout, "record --help does not mention %s:\n%s" % (opt, res.stdout)
    res = sup.run_agent(["dump", "--help"], timeout=30)
    for opt in ("--pid", "--json"):
        assert opt in res.stdout, "dump --help does not mention %s:\n%s" % (opt, res.stdout)


def test_version(agent):
    res = sup.run_agent(["version"], timeout=30)
    assert res.returncode == 0, res.describe()
    assert re.match(r"conprof-agent \d+\.\d+\.\d+", res.stdout), res.describe()
