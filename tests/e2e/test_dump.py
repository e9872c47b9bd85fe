"""`dump --json` on a process sitting in a known stack: a "sleeper" thread blocked in time.sleep
inside f -> g, the main thread spinning in h. Frames are leaf first."""
import json
import os
import time

import e2e_support as sup

DUMP = sup.WORKLOADS / "dump_target.py"
MARK = sup.line_markers(DUMP)
F = str(DUMP)


def settled_target(workload):
    """The target, READY and given time to get from its print into h()'s loop: a dump is one
    snapshot, so it must not catch the main thread between the READY line and the call of h."""
    target = workload("dump_target.py")
    time.sleep(0.3)
    return target


def frames_of(thread):
    return [(fr["name"], fr["file"], fr["line"]) for fr in thread["frames"]]


def test_dump_json(agent, interp, workload):
    target = settled_target(workload)
    info = target.ready_info
    res = sup.run_agent(["dump", "--pid", target.pid, "--json"], timeout=60)
    assert res.returncode == 0, res.describe()
    try:
        doc = json.loads(res.stdout)
    except ValueError as e:
        raise AssertionError("dump --json printed invalid JSON (%s):\n%s" % (e, res.describe()))

    assert doc["pid"] == target.pid
    with open("/proc/%d/cmdline" % target.pid, "rb") as f:
        cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode()
    assert doc["command"] == cmdline
    assert doc["python_version"] == interp.info["version"]
    if interp.debian:  # static: _PyRuntime lives in the executable
        assert os.path.realpath(doc["binary"]) == os.path.realpath("/proc/%d/exe" % target.pid)
    else:  # shared: in the libpython the target mapped
        with open("/proc/%d/maps" % target.pid) as f:
            libs = {line.split()[-1] for line in f if "libpython" in line}
        assert len(libs) == 1, "expected one libpython mapping, /proc/PID/maps has %s" % libs
        assert os.path.realpath(doc["binary"]) == os.path.realpath(libs.pop())

    threads = doc["threads"]
    tids = sup.proc_tids(target.pid)
    assert sorted(t["native_tid"] for t in threads) == tids, (
        "native_tid values %s do not match /proc/%d/task %s"
        % ([t["native_tid"] for t in threads], target.pid, tids))
    by_ident = {t["thread_id"]: t for t in threads}
    assert set(by_ident) == {info["main_ident"], info["sleeper_ident"]}, (
        "thread_id values %s, want threading idents %s"
        % (sorted(by_ident), sorted([info["main_ident"], info["sleeper_ident"]])))
    main, sleeper = by_ident[info["main_ident"]], by_ident[info["sleeper_ident"]]

    assert main["native_tid"] == target.pid, "the main thread's native_tid must be the pid"
    for t in threads:
        assert t["name"] == sup.proc_comm(target.pid, t["native_tid"]), t
        assert isinstance(t["holds_gil"], bool), (
            "holds_gil must be true/false on Python %s, got %r" % (interp.id, t["holds_gil"]))
        assert "error" not in t, "thread %s could not be read: %s" % (t["native_tid"], t["error"])

    assert frames_of(main) == [
        ("h", F, MARK["h_spin"]),
        ("main", F, MARK["main_call"]),
        ("<module>", F, MARK["module_call"]),
    ], res.stdout
    tfile = interp.info["threading"]["file"]
    assert frames_of(sleeper) == [
        ("g", F, MARK["g_sleep"]),
        ("f", F, MARK["f_call"]),
        (interp.fn("Thread.run"), tfile, interp.info["threading"]["run"]),
        (interp.fn("Thread._bootstrap_inner"), tfile, interp.info["threading"]["_bootstrap_inner"]),
        (interp.fn("Thread._bootstrap"), tfile, interp.info["threading"]["_bootstrap"]),
    ], res.stdout
    # the spinning main thread has no one to hand the GIL to; the sleeper released it in sleep()
    assert main["holds_gil"] is True, res.stdout
    assert sleeper["holds_gil"] is False, res.stdout


def test_dump_text(agent, interp, workload):
    """The text form names every thread and shows the same frames, leaf first."""
    target = settled_target(workload)
    res = sup.run_agent(["dump", "--pid", target.pid], timeout=60)
    assert res.returncode == 0, res.describe()
    out = res.stdout
    for fn, mark in (("h", "h_spin"), ("main", "main_call"), ("g", "g_sleep"), ("f", "f_call")):
        assert "%s (%s:%d)" % (fn, F, MARK[mark]) in out, res.describe()
    h_at = out.index("h (%s:%d)" % (F, MARK["h_spin"]))
    assert h_at < out.index("main (%s:%d)" % (F, MARK["main_call"])), "not leaf first:\n" + out
    assert out.index("g (%s" % F) < out.index("f (%s" % F), "not leaf first:\n" + out
    for tid in sup.proc_tids(target.pid):
        assert str(tid) in out, "thread %d missing from dump:\n%s" % (tid, out)
