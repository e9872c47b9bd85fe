"""CPU accounting: where the CPU profile puts the target's CPU time, and how much of it."""
import os

import e2e_support as sup
from e2e_support import Frame

CPU = sup.WORKLOADS / "cpu.py"
MARK = sup.line_markers(CPU)
F = str(CPU)


def test_busy_thread_gets_the_cpu(agent, interp, workload, tmp_path):
    """A spinning thread and a sleeping one: the spinner gets >= 95% of the CPU profile."""
    target = workload("cpu.py", "busy_and_sleeping")
    tids = sup.proc_tids(target.pid)
    assert len(tids) == 2, tids
    busy_tid = [t for t in tids if t != target.pid][0]
    out = tmp_path / "cpu.txt"
    sup.record(target.pid, out, duration=2, extra=["-f", "collapsed", "--threads"])
    stacks = sup.read_collapsed(out)
    groups = sup.by_root(stacks)
    busy_root = sup.thread_frame(target.pid, busy_tid)
    main_root = sup.thread_frame(target.pid, target.pid)
    assert set(groups) <= {busy_root, main_root}, (
        "unexpected roots %s\n%s" % ([r.name for r in groups], sup.describe_stacks(stacks)))
    busy = sum(groups.get(busy_root, {}).values())
    total = sum(stacks.values())
    assert total > 0, "empty CPU profile"
    assert busy >= 0.95 * total, (
        "the busy thread got %.1f%% of the CPU profile (want >= 95%%)\n%s"
        % (100.0 * busy / total, sup.describe_stacks(stacks)))
    # and it is on the busy thread's spinning line
    sup.assert_dominant(groups[busy_root], [busy_root] + interp.thread_bootstrap_frames()
                        + [Frame("busy_worker", F, MARK["busy_worker_spin"])], min_share=0.95)


def test_cpu_split_70_30(agent, interp, workload, tmp_path):
    """One thread alternates heavy() 70 ms / light() 30 ms of CPU: the profile says 70/30 +-3."""
    target = workload("cpu.py", "split")
    out = tmp_path / "split.txt"
    sup.record(target.pid, out, duration=3, extra=["-f", "collapsed"])
    stacks = sup.read_collapsed(out)
    base = [Frame("<module>", F, MARK["dispatch"])]
    heavy_stack = tuple(base + [Frame("split", F, MARK["split_heavy_call"]),
                                Frame("heavy", F, MARK["heavy_spin"])])
    light_stack = tuple(base + [Frame("split", F, MARK["split_light_call"]),
                                Frame("light", F, MARK["light_spin"])])
    heavy, light = stacks.get(heavy_stack, 0), stacks.get(light_stack, 0)
    total = sum(stacks.values())
    assert heavy + light >= 0.95 * total, (
        "heavy and light stacks hold only %d of %d us\n%s"
        % (heavy + light, total, sup.describe_stacks(stacks)))
    share = 100.0 * heavy / (heavy + light)
    assert abs(share - 70.0) <= 3.0, (
        "heavy got %.1f%% of heavy+light CPU, want 70 +- 3\n%s" % (share, sup.describe_stacks(stacks)))


def test_cpu_total_matches_proc(agent, interp, workload, tmp_path):
    """The pprof's CPU total is within 5% of the utime+stime the kernel accounted meanwhile."""
    target = workload("cpu.py", "busy")
    out = tmp_path / "busy.pb.gz"
    ticks_before = sup.proc_cpu_ticks(target.pid)
    res = sup.record(target.pid, out, duration=4)
    ticks_after = sup.proc_cpu_ticks(target.pid)
    proc_ns = (ticks_after - ticks_before) * 1e9 / os.sysconf("SC_CLK_TCK")
    assert proc_ns > 0.5 * 4e9, "the target got only %.2f s CPU in 4 s: machine overloaded?" % (
        proc_ns / 1e9)
    types, samples, _ = sup.check_pprof(out, ["busy"], tmp_path)
    cpu_ns = sum(s.values[types.index("cpu/nanoseconds")] for s in samples)
    assert abs(cpu_ns - proc_ns) <= 0.05 * proc_ns, (
        "profile CPU total %.3f s, /proc/%d/stat utime+stime grew %.3f s (%+.1f%%)\n%s"
        % (cpu_ns / 1e9, target.pid, proc_ns / 1e9, 100.0 * (cpu_ns - proc_ns) / proc_ns,
           res.describe()))
