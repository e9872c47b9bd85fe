"""Output formats: pprof read by `go tool pprof`, SVG flame graphs, format chosen by flag."""
import xml.etree.ElementTree as ET

import pytest

import e2e_support as sup
from e2e_support import Frame

STACKS = sup.WORKLOADS / "stacks.py"
MARK = sup.line_markers(STACKS)
F = str(STACKS)
NESTED_FUNCTIONS = ["<module>", "nested_scenario", "nested_a", "nested_b", "nested_c"]


def nested_expected():
    return [
        Frame("<module>", F, MARK["dispatch"]),
        Frame("nested_scenario", F, MARK["nested_call"]),
        Frame("nested_a", F, MARK["nested_a_call"]),
        Frame("nested_b", F, MARK["nested_b_call"]),
        Frame("nested_c", F, MARK["nested_spin"]),
    ]


def check_svg(path, functions):
    try:
        root = ET.parse(str(path)).getroot()
    except ET.ParseError as e:
        raise AssertionError("%s is not well-formed XML: %s" % (path, e))
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), "root element is %s" % root.tag
    text = "\n".join(t for el in root.iter() for t in el.itertext())
    for fn in functions:
        assert fn in text, "the SVG's text does not mention %r" % fn


def check_collapsed(path):
    sup.assert_dominant(sup.read_collapsed(path), nested_expected())


def test_pprof(agent, interp, workload, tmp_path):
    """pprof from every interpreter: go tool pprof reads it, shows the functions, and its CPU
    view's heaviest stack is the workload's stack with exact lines."""
    target = workload("stacks.py", "nested")
    out = tmp_path / "nested.pb.gz"
    sup.record(target.pid, out)
    types, samples, locations = sup.check_pprof(out, NESTED_FUNCTIONS, tmp_path)
    for dim in ("cpu/nanoseconds", "wall/nanoseconds"):
        stacks = sup.pprof_stacks(types, samples, locations, dim)
        sup.assert_dominant(stacks, nested_expected(), context="pprof %s: " % dim)
    counts = sup.pprof_stacks(types, samples, locations, "samples/count")
    n = sum(counts.values())
    assert 0.8 * sup.DURATION * 100 <= n <= 1.1 * sup.DURATION * 100 + 5, (
        "%d samples in %.1f s at 100 Hz" % (n, sup.DURATION))


def test_svg(agent, interp, workload, tmp_path):
    target = workload("stacks.py", "nested")
    out = tmp_path / "nested.svg"
    sup.record(target.pid, out)
    check_svg(out, NESTED_FUNCTIONS)


@pytest.mark.interps("3.12")
@pytest.mark.parametrize("filename,flag,kind", [
    ("p.pprof", None, "pprof"),
    ("p.pb.gz", None, "pprof"),
    ("p.folded", None, "collapsed"),
    ("p.txt", None, "collapsed"),
    ("p.svg", None, "svg"),
    ("p.data", "pprof", "pprof"),
    ("p.data", "collapsed", "collapsed"),
    ("p.data", "svg", "svg"),
    ("p.svg", "collapsed", "collapsed"),
])
def test_format_choice(agent, interp, workload, tmp_path, filename, flag, kind):
    """The extension chooses the format, --format overrides it."""
    target = workload("stacks.py", "nested")
    out = tmp_path / filename
    sup.record(target.pid, out, duration=1, extra=["-f", flag] if flag else [])
    if kind == "pprof":
        sup.check_pprof(out, NESTED_FUNCTIONS, tmp_path)
    elif kind == "svg":
        check_svg(out, NESTED_FUNCTIONS)
    else:
        check_collapsed(out)


@pytest.mark.interps("3.12")
def test_top(agent, interp, workload, tmp_path):
    """--top N prints the functions with the most self time: the spinning nested_c first."""
    target = workload("stacks.py", "nested")
    res = sup.record(target.pid, tmp_path / "p.txt", duration=1, extra=["--top", "3"])
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    first = next((l for l in lines if "nested_" in l), None)
    assert first is not None and "nested_c" in first, res.describe()
