"""Exact stacks and line numbers from `record -f collapsed`, on every interpreter.

Each workload sits in one known stack; the heaviest stack of the CPU profile must be exactly that
stack, root to leaf, with the line of every frame (taken from "# LINE:" markers in the workload).
"""
import shutil

import pytest

import e2e_support as sup
from e2e_support import Frame

STACKS = sup.WORKLOADS / "stacks.py"
MARK = sup.line_markers(STACKS)
F = str(STACKS)


def record_scenario(interp, workload, tmp_path, scenario, extra=(), dimension=None):
    target = workload("stacks.py", scenario)
    out = tmp_path / ("%s.txt" % scenario)
    args = ["-f", "collapsed"] + list(extra)
    if dimension:
        args += ["--dimension", dimension]
    sup.record(target.pid, out, extra=args)
    return target, sup.read_collapsed(out)


def root_frames(interp, scenario_fn, call_mark):
    return [Frame("<module>", F, MARK["dispatch"]), Frame(interp.fn(scenario_fn), F, MARK[call_mark])]


def test_nested_calls(agent, interp, workload, tmp_path):
    _, stacks = record_scenario(interp, workload, tmp_path, "nested")
    expected = root_frames(interp, "nested_scenario", "nested_call") + [
        Frame("nested_a", F, MARK["nested_a_call"]),
        Frame("nested_b", F, MARK["nested_b_call"]),
        Frame("nested_c", F, MARK["nested_spin"]),
    ]
    sup.assert_dominant(stacks, expected)


def test_method_qualname(agent, interp, workload, tmp_path):
    _, stacks = record_scenario(interp, workload, tmp_path, "method")
    method = "Outer.method" if interp.minor >= (3, 11) else "method"
    expected = root_frames(interp, "method_scenario", "method_call") + [
        Frame(method, F, MARK["method_spin"]),
    ]
    sup.assert_dominant(stacks, expected)


def test_recursion_500_deep(agent, interp, workload, tmp_path):
    _, stacks = record_scenario(interp, workload, tmp_path, "recursion")
    depth = 500
    expected = root_frames(interp, "recursion_scenario", "recursion_call")
    expected += [Frame("recurse", F, MARK["recurse_call"])] * (depth - 1)
    expected += [Frame("recurse", F, MARK["recurse_spin"])]
    sup.assert_dominant(stacks, expected)


def test_generator_above_consumer(agent, interp, workload, tmp_path):
    _, stacks = record_scenario(interp, workload, tmp_path, "generator")
    expected = [
        Frame("<module>", F, MARK["dispatch"]),
        Frame("generator_scenario", F, MARK["gen_consume"]),
        Frame("produce", F, MARK["gen_spin"]),
    ]
    sup.assert_dominant(stacks, expected)


def test_lambda(agent, interp, workload, tmp_path):
    _, stacks = record_scenario(interp, workload, tmp_path, "lambda")
    expected = [
        Frame("<module>", F, MARK["dispatch"]),
        Frame("lambda_scenario", F, MARK["lambda_call"]),
        Frame("<lambda>", F, MARK["lambda_spin"]),
    ]
    sup.assert_dominant(stacks, expected)


def test_threads(agent, interp, workload, tmp_path):
    """--threads: the spinning worker owns the CPU profile; in the wall profile each thread has
    its own stack (the main thread's sleep included), each weighing about the duration."""
    target = workload("stacks.py", "threads")
    tids = sup.proc_tids(target.pid)
    assert len(tids) == 2 and target.pid in tids, "expected 2 threads, /proc says %s" % tids
    worker_tid = [t for t in tids if t != target.pid][0]
    main_root = sup.thread_frame(target.pid, target.pid)
    worker_root = sup.thread_frame(target.pid, worker_tid)
    worker_stack = [worker_root] + interp.thread_bootstrap_frames() + [
        Frame("worker_spin", F, MARK["worker_spin"])]
    main_stack = [main_root, Frame("<module>", F, MARK["dispatch"]),
                  Frame("threads_scenario", F, MARK["threads_main_sleep"])]

    cpu_out = tmp_path / "threads-cpu.txt"
    sup.record(target.pid, cpu_out, extra=["-f", "collapsed", "--threads"])
    cpu = sup.read_collapsed(cpu_out)
    sup.assert_dominant(cpu, worker_stack, min_share=0.9, context="CPU profile: ")

    wall_out = tmp_path / "threads-wall.txt"
    res = sup.record(target.pid, wall_out, extra=["-f", "collapsed", "--threads",
                                                  "--dimension", "wall"])
    wall = sup.read_collapsed(wall_out)
    groups = sup.by_root(wall)
    assert set(groups) == {main_root, worker_root}, (
        "wall profile roots are %s, want the two threads %s and %s\n%s"
        % ([sup.format_frame(r) for r in groups], main_root.name, worker_root.name,
           sup.describe_stacks(wall)))
    for root, expected in ((main_root, main_stack), (worker_root, worker_stack)):
        value = sup.assert_dominant(groups[root], expected, min_share=0.9,
                                    context="wall profile, %s: " % root.name)
        # each sample adds 1/rate s of wall time: a thread present all along weighs ~ the duration
        assert 0.8 * sup.DURATION * 1e6 <= value <= 1.2 * res.seconds * 1e6, (
            "wall time of %s is %d us for a %.1f s recording\n%s"
            % (root.name, value, sup.DURATION, sup.describe_stacks(wall)))


@pytest.mark.parametrize("filename", ["módulo_ñ.py", "计算_📈.py"], ids=["latin", "cjk-emoji"])
def test_non_ascii_names(agent, interp, spawn, tmp_path, filename):
    src = sup.WORKLOADS / "unicode_names.py"
    script = tmp_path / filename
    shutil.copyfile(str(src), str(script))
    marks = sup.line_markers(script)
    target = spawn([interp.path, str(script)])
    target.wait_ready()
    out = tmp_path / "unicode.txt"
    sup.record(target.pid, out, extra=["-f", "collapsed"])
    stacks = sup.read_collapsed(out)
    f = str(script)
    expected = [
        Frame("<module>", f, marks["module_call"]),
        Frame("größe", f, marks["groesse_call"]),
        Frame("计算", f, marks["compute_spin"]),
    ]
    sup.assert_dominant(stacks, expected)
