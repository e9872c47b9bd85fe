"""A target whose interpreter lives at a path that exists only in its own mount namespace: the
agent must read it through /proc/PID/root. A tmpfs is mounted (inside the namespace only) on a
fresh directory, the interpreter is bind-mounted (pyenv prefix) or copied (Debian's static
python3.11) under it, and executed from there."""
import json
import os
import tempfile

import pytest

import e2e_support as sup
from e2e_support import Frame

STACKS = sup.WORKLOADS / "stacks.py"
MARK = sup.line_markers(STACKS)

SHARED_SCRIPT = """set -e
mount -t tmpfs conprof-e2e "$1"
mkdir "$1/py"
mount --bind "$2" "$1/py"
export LD_LIBRARY_PATH="$1/py/lib"
exec "$1/py/bin/$3" "$4" nested
"""
STATIC_SCRIPT = """set -e
mount -t tmpfs conprof-e2e "$1"
mkdir "$1/bin"
cp "$2" "$1/bin/$3"
exec "$1/bin/$3" "$4" nested
"""


@pytest.fixture
def ns_dir():
    d = tempfile.mkdtemp(prefix="conprof-ns-only-", dir="/tmp")
    yield d
    try:
        os.rmdir(d)
    except OSError:
        pass


@pytest.mark.interps("3.12", "3.11-debian")
def test_interpreter_only_in_target_mount_namespace(agent, interp, spawn, ns_dir, tmp_path,
                                                    require_root):
    exe = os.path.basename(interp.path)
    if interp.debian:
        script, source, inner_exe = STATIC_SCRIPT, interp.path, os.path.join(ns_dir, "bin", exe)
    else:
        script, source, inner_exe = SHARED_SCRIPT, interp.prefix, os.path.join(ns_dir, "py", "bin", exe)
    target = spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                    ns_dir, source, exe, str(STACKS)], env=sup.target_env())
    target.wait_ready()

    # the test is only meaningful if the host cannot see the interpreter's path
    assert not os.path.exists(inner_exe), "%s is visible from the host" % inner_exe
    assert os.readlink("/proc/%d/exe" % target.pid) == inner_exe
    if not interp.debian:
        with open("/proc/%d/maps" % target.pid) as f:
            libs = {line.split()[-1] for line in f if "libpython" in line}
        assert libs and all(p.startswith(ns_dir + "/py/") for p in libs), libs
        assert not any(os.path.exists(p) for p in libs)

    out = tmp_path / "ns.txt"
    sup.record(target.pid, out, extra=["-f", "collapsed"])
    stacks = sup.read_collapsed(out)
    f = str(STACKS)
    expected = [
        Frame("<module>", f, MARK["dispatch"]),
        Frame("nested_scenario", f, MARK["nested_call"]),
        Frame("nested_a", f, MARK["nested_a_call"]),
        Frame("nested_b", f, MARK["nested_b_call"]),
        Frame("nested_c", f, MARK["nested_spin"]),
    ]
    sup.assert_dominant(stacks, expected)

    res = sup.run_agent(["dump", "--pid", target.pid, "--json"])
    assert res.returncode == 0, res.describe()
    doc = json.loads(res.stdout)
    assert doc["binary"].startswith(ns_dir + "/"), (
        "binary should be the path the target sees, under %s: %s" % (ns_dir, doc["binary"]))
    assert doc["python_version"] == interp.info["version"]
