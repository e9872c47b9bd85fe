"""Helpers for the conprof-agent end-to-end tests: interpreters, targets, the agent, parsers.

The tests start real Python processes (workloads/*.py) that announce themselves with one line
"READY {json}" on stdout once they sit in a known stack, run the agent against them and compare
what it wrote with stacks computed from the workload sources: every line a test expects is marked
in the source with a comment "# LINE:<name>", so no line number is written in a test.
"""

import gzip
import json
import os
import socket
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections import namedtuple
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKLOADS = HERE / "workloads"
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv"))
DEBIAN_PYTHON = Path("/usr/bin/python3.11")

# Every interpreter the suite must cover, in order; CONPROF_E2E_PYTHONS may restrict it.
ALL_INTERPRETER_IDS = ["3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.11-debian"]

DURATION = float(os.environ.get("CONPROF_E2E_DURATION", "2"))  # seconds of a stack recording


def agent_path():
    return Path(os.environ.get("CONPROF_AGENT") or REPO / "build" / "conprof-agent")


# ---------------------------------------------------------------------------------------------
# Interpreters


def _version_key(path):
    nums = re.findall(r"\d+", path.parent.parent.name)
    return tuple(int(n) for n in nums)


class Interp:
    """One interpreter under test; `missing` says why it cannot be used (then path is None)."""

    def __init__(self, ident):
        self.id = ident
        major, minor = ident.split("-")[0].split(".")
        self.minor = (int(major), int(minor))
        self.debian = ident.endswith("-debian")
        self.path = None
        self.missing = ""
        self._info = None
        if self.debian:
            if DEBIAN_PYTHON.is_file():
                self.path = str(DEBIAN_PYTHON)
            else:
                self.missing = "Debian's %s does not exist (apt-get install python3.11)" % DEBIAN_PYTHON
        else:
            exe = "python%d.%d" % self.minor
            found = sorted(PYENV_ROOT.glob("versions/%d.%d.*/bin/%s" % (self.minor + (exe,))),
                           key=_version_key)
            found = [p for p in found if re.fullmatch(r"\d+\.\d+\.\d+", p.parent.parent.name)]
            if found:
                self.path = str(found[-1])
            else:
                self.missing = "no %s/versions/%d.%d.*/bin/%s (install it with pyenv)" % (
                    (PYENV_ROOT,) + self.minor + (exe,))

    def __repr__(self):
        return "Interp(%s, %s)" % (self.id, self.path or "missing: " + self.missing)

    @property
    def prefix(self):
        """The installation prefix (pyenv: /root/.pyenv/versions/3.X.Y)."""
        return str(Path(self.path).parent.parent)

    @property
    def has_qualname(self):
        """3.11+ code objects carry co_qualname; before, only co_name exists."""
        return self.minor >= (3, 11)

    def fn(self, qualname):
        """The name the agent must show for a function whose __qualname__ is `qualname`."""
        return qualname if self.has_qualname else qualname.rsplit(".", 1)[-1]

    @property
    def info(self):
        """Facts asked of the interpreter itself (version, threading.py lines), cached."""
        if self._info is None:
            out = subprocess.run([self.path, str(WORKLOADS / "interp_info.py")], env=target_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            assert out.returncode == 0, "%s interp_info.py failed: %s" % (self.path, out.stderr)
            self._info = json.loads(out.stdout.decode())
        return self._info

    def thread_bootstrap_frames(self):
        """The threading frames above a Thread's target, root first, as Frames."""
        t = self.info["threading"]
        return [
            Frame(self.fn("Thread._bootstrap"), t["file"], t["_bootstrap"]),
            Frame(self.fn("Thread._bootstrap_inner"), t["file"], t["_bootstrap_inner"]),
            Frame(self.fn("Thread.run"), t["file"], t["run"]),
        ]


_INTERPS = {}


def interp(ident):
    if ident not in _INTERPS:
        _INTERPS[ident] = Interp(ident)
    return _INTERPS[ident]


def selected_interpreter_ids():
    """ALL_INTERPRETER_IDS, or the subset CONPROF_E2E_PYTHONS names (comma or space separated)."""
    wanted = os.environ.get("CONPROF_E2E_PYTHONS", "").replace(",", " ").split()
    if not wanted:
        return list(ALL_INTERPRETER_IDS)
    unknown = [w for w in wanted if w not in ALL_INTERPRETER_IDS]
    if unknown:
        raise ValueError("CONPROF_E2E_PYTHONS names unknown interpreters %s; known: %s"
                         % (unknown, ", ".join(ALL_INTERPRETER_IDS)))
    return [i for i in ALL_INTERPRETER_IDS if i in wanted]


def target_env(extra=None):
    """A small, predictable environment for targets (UTF-8 file names, no .pyc files)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUTF8": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": os.environ.get("HOME", "/root"),
    }
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# Workload sources and their markers


def line_markers(path):
    """{name: line} for every "# LINE:name" comment of a source file (names must be unique)."""
    marks = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        for name in re.findall(r"#\s*LINE:(\w+)", line):
            assert name not in marks, "marker %s appears twice in %s" % (name, path)
            marks[name] = number
    return marks


def source_line_markers(source):
    """line_markers() of a source held in a string (python -c code)."""
    marks = {}
    for number, line in enumerate(source.splitlines(), 1):
        for name in re.findall(r"#\s*LINE:(\w+)", line):
            assert name not in marks, "marker %s appears twice" % name
            marks[name] = number
    return marks


# ---------------------------------------------------------------------------------------------
# Target processes


class Target:
    """A process the tests started (in its own session); always killed by the owning fixture."""

    def __init__(self, argv, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env or target_env(), cwd=cwd,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.ready_info = None
        self._out = b""

    def stderr_text(self):
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=20.0):
        """Waits for the "READY {json}" line; returns the json. Fails with the target's stderr."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("target %s not ready after %.0f s; stderr:\n%s"
                                     % (self.argv, timeout, self.stderr_text()))
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise AssertionError("target %s exited (status %s) before it was ready; stderr:\n%s"
                                         % (self.argv, self.proc.returncode, self.stderr_text()))
                self._out += chunk
        line = self._out.split(b"\n", 1)[0].decode()
        assert line.startswith("READY"), "unexpected first line from %s: %r" % (self.argv, line)
        self.ready_info = json.loads(line[len("READY"):].strip() or "{}")
        return self.ready_info

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # its own session: kills what it started too
            except ProcessLookupError:
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc.stdout.close()
        self._stderr.close()


def proc_tids(pid):
    return sorted(int(t) for t in os.listdir("/proc/%d/task" % pid))


def proc_comm(pid, tid=None):
    path = "/proc/%d/task/%d/comm" % (pid, tid) if tid else "/proc/%d/comm" % pid
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace").rstrip("\n")


def proc_cpu_ticks(pid):
    """utime + stime of a process (/proc/PID/stat fields 14 and 15), in clock ticks."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        stat = f.read().decode("utf-8", "replace")
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return int(fields[14 - 3]) + int(fields[15 - 3])


def thread_frame(pid, tid):
    """The synthetic frame --threads puts at the root: "thread <tid> (<comm>)"."""
    return Frame("thread %d (%s)" % (tid, proc_comm(pid, tid)), None, None)


# ---------------------------------------------------------------------------------------------
# The agent


class AgentResult:
    def __init__(self, argv, returncode, stdout, stderr, seconds):
        self.argv, self.returncode, self.seconds = argv, returncode, seconds
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")

    def describe(self):
        return "$ %s\nexit %s after %.1f s\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(self.argv), self.returncode, self.seconds, self.stdout[-4000:],
            self.stderr[-4000:])


def run_agent(args, timeout=60, prefix=(), agent=None, env=None):
    """Runs the agent (optionally under `prefix`, e.g. setpriv ...) and returns an AgentResult."""
    argv = [str(a) for a in list(prefix) + [agent or agent_path()] + list(args)]
    start = time.monotonic()
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("agent did not finish within %s s: %s\nstderr:\n%s"
                             % (timeout, " ".join(argv), (e.stderr or b"").decode("utf-8", "replace")))
    return AgentResult(argv, out.returncode, out.stdout, out.stderr, time.monotonic() - start)


def record(pid, output, duration=None, extra=(), timeout=None):
    """`record --pid PID -d DURATION -o OUTPUT -q extra...`; asserts it succeeded."""
    duration = DURATION if duration is None else duration
    args = ["record", "--pid", pid, "-d", duration, "-o", output, "-q"] + list(extra)
    res = run_agent(args, timeout=timeout or duration + 60)
    assert res.returncode == 0, "record failed:\n" + res.describe()
    assert Path(output).is_file(), "record exited 0 but wrote no %s:\n%s" % (output, res.describe())
    return res


# ---------------------------------------------------------------------------------------------
# Collapsed stacks

Frame = namedtuple("Frame", "name file line")  # file and line are None for synthetic frames

_FRAME_RE = re.compile(r"^(.*) \((.*):(-?\d+)\)$")


def parse_frame(text):
    m = _FRAME_RE.match(text)
    if m:
        return Frame(m.group(1), m.group(2), int(m.group(3)))
    return Frame(text, None, None)


def parse_collapsed(data):
    """{(Frame, ... root first): value} of a collapsed-stacks file's bytes (strict UTF-8)."""
    text = data.decode("utf-8")  # the agent must write valid UTF-8
    stacks = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stack_text, sep, value = line.rpartition(" ")
        assert sep and re.fullmatch(r"\d+", value), "collapsed line %d malformed: %r" % (number, line)
        stack = tuple(parse_frame(f) for f in stack_text.split(";"))
        assert stack not in stacks, "collapsed line %d repeats a stack: %r" % (number, line)
        stacks[stack] = int(value)
    return stacks


def read_collapsed(path):
    return parse_collapsed(Path(path).read_bytes())


def format_frame(f):
    return f.name if f.file is None else "%s (%s:%d)" % (f.name, f.file, f.line)


def format_stack(stack, limit=12):
    frames = [format_frame(f) for f in stack]
    if len(frames) > limit:  # deep stacks: the root and the leaf ends are what matter
        frames = frames[:3] + ["... %d frames ..." % (len(frames) - limit + 3)] + frames[-(limit - 3):]
    return "\n      ".join(frames)


def describe_stacks(stacks, n=6):
    total = sum(stacks.values()) or 1
    top = sorted(stacks.items(), key=lambda kv: -kv[1])[:n]
    lines = ["%d stacks, total %d us; the heaviest:" % (len(stacks), sum(stacks.values()))]
    for stack, value in top:
        lines.append("  %d us (%.1f%%), %d frames:\n      %s"
                     % (value, 100.0 * value / total, len(stack), format_stack(stack)))
    return "\n".join(lines)


def dominant_stack(stacks):
    assert stacks, "the profile has no stacks"
    return max(stacks.items(), key=lambda kv: kv[1])


def assert_dominant(stacks, expected, min_share=0.9, context=""):
    """The heaviest stack equals `expected` (root first) and weighs >= min_share of the total."""
    expected = tuple(expected)
    stack, value = dominant_stack(stacks)
    total = sum(stacks.values())
    if stack != expected:
        diff = []
        for i in range(max(len(stack), len(expected))):
            got = stack[i] if i < len(stack) else None
            want = expected[i] if i < len(expected) else None
            if got != want:
                diff.append("  frame %d (from the root): expected %s, got %s"
                            % (i, want and format_frame(want), got and format_frame(got)))
            if len(diff) >= 5:
                break
        raise AssertionError("%sthe dominant stack is not the expected one\nexpected (%d frames):\n"
                             "      %s\nfirst differences:\n%s\n%s"
                             % (context, len(expected), format_stack(expected), "\n".join(diff),
                                describe_stacks(stacks)))
    assert value >= min_share * total, (
        "%sthe expected stack weighs only %.1f%% of the profile (want >= %.0f%%)\n%s"
        % (context, 100.0 * value / total, 100 * min_share, describe_stacks(stacks)))
    return value


def by_root(stacks):
    """{root frame: {stack: value}} (root = the --threads frame)."""
    groups = {}
    for stack, value in stacks.items():
        groups.setdefault(stack[0], {})[stack] = value
    return groups


# ---------------------------------------------------------------------------------------------
# pprof through `go tool pprof`


def go_pprof(args, workdir):
    """Runs `go tool pprof -symbolize=none ARGS` with HOME/GOCACHE/PPROF_TMPDIR in workdir."""
    go = shutil.which("go")
    assert go, "`go` is not installed (apt-get install golang-go): cannot read the pprof output"
    env = dict(os.environ)
    for name in ("HOME", "GOCACHE", "GOPATH", "PPROF_TMPDIR"):
        d = Path(workdir) / ("go-" + name.lower())
        d.mkdir(parents=True, exist_ok=True)
        env[name] = str(d)
    env["GOFLAGS"] = ""
    env["GOTOOLCHAIN"] = "local"
    env["GOPROXY"] = "off"
    argv = [go, "tool", "pprof", "-symbolize=none"] + [str(a) for a in args]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120, env=env)
    text = out.stdout.decode("utf-8", "replace")
    assert out.returncode == 0, "%s failed (exit %d):\n%s\n%s" % (
        " ".join(argv), out.returncode, text, out.stderr.decode("utf-8", "replace"))
    return text


RawSample = namedtuple("RawSample", "values locations")

_RAW_LOCATION_RE = re.compile(
    r"^\s*(\d+): 0x[0-9a-f]+ (?:M=\d+ )?(?:\[F\] )?(.*) (\S*):(-?\d+) s=-?\d+(?:\(.*\))?$")


def parse_pprof_raw(text):
    """Parses `go tool pprof -raw` output: (sample type names, [RawSample],
    {location id: [Frame, ...] (inlined frames first)})."""
    lines = text.splitlines()
    try:
        start = lines.index("Samples:")
    except ValueError:
        raise AssertionError("no 'Samples:' in pprof -raw output:\n" + text[:3000])
    types = [t.replace("[dflt]", "") for t in lines[start + 1].split()]
    samples, locations = [], {}
    i = start + 2
    while i < len(lines) and lines[i].startswith(" "):
        m = re.match(r"^\s+([\d\s]+):\s*([\d\s]*)$", lines[i])
        if m:
            values = [int(v) for v in m.group(1).split()]
            assert len(values) == len(types), "pprof -raw sample with %d values for %d types: %r" % (
                len(values), len(types), lines[i])
            samples.append(RawSample(values, [int(x) for x in m.group(2).split()]))
        i += 1  # other indented lines are the previous sample's labels
    assert "Locations" in lines, "no 'Locations' in pprof -raw output:\n" + text[:3000]
    current = None
    for line in lines[lines.index("Locations") + 1:]:
        if not line.startswith(" "):
            break
        m = _RAW_LOCATION_RE.match(line)
        if m and not line.startswith(" " * 13):
            current = int(m.group(1))
            locations[current] = [Frame(m.group(2), m.group(3), int(m.group(4)))]
        elif current is not None:  # an inlined frame of the same location
            m = re.match(r"^\s+(.*) (\S*):(-?\d+) s=-?\d+", line)
            assert m, "unparsed pprof -raw location line %r" % line
            locations[current].append(Frame(m.group(1), m.group(2), int(m.group(3))))
    for s in samples:
        for loc in s.locations:
            assert loc in locations, "sample refers to location %d that -raw does not list" % loc
    return types, samples, locations


def pprof_stacks(types, samples, locations, sample_type="cpu/nanoseconds"):
    """{(Frame, ... root first): value} of a parsed pprof, like parse_collapsed()."""
    index = types.index(sample_type)
    stacks = {}
    for s in samples:
        frames = []
        for loc in s.locations:  # leaf first
            frames.extend(locations[loc])
        key = tuple(reversed(frames))
        stacks[key] = stacks.get(key, 0) + s.values[index]
    return stacks


def top_functions(top_text):
    """The function names of `go tool pprof -top` rows (flat flat% sum% cum cum% NAME)."""
    names = []
    for line in top_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[1].endswith("%") and parts[4].endswith("%"):
            names.append(parts[5])
    return names


def check_pprof(path, functions, workdir):
    """Checks a pprof file the way a user reads it: it is gzipped, `go tool pprof -top` and
    `-raw` read it, the sample types are samples/count wall/nanoseconds cpu/nanoseconds (pprof's
    default view cpu), and every name in `functions` is a function of the profile.
    Returns the parsed -raw output (types, samples, locations)."""
    data = Path(path).read_bytes()
    assert data[:2] == b"\x1f\x8b", "%s is not gzipped (starts with %r)" % (path, data[:8])
    gzip.decompress(data)  # a complete gzip stream
    top = go_pprof(["-top", "-nodecount=1000", path], workdir)
    assert "Type: cpu" in top, "pprof's default sample type is not cpu:\n" + top[:3000]
    raw = go_pprof(["-raw", path], workdir)
    types, samples, locations = parse_pprof_raw(raw)
    assert types == ["samples/count", "wall/nanoseconds", "cpu/nanoseconds"], (
        "pprof sample types are %s, want samples/count wall/nanoseconds cpu/nanoseconds" % types)
    assert samples, "pprof has no samples:\n" + raw[:3000]
    in_top = set(top_functions(top))
    in_raw = {f.name for frames in locations.values() for f in frames}
    for fn in functions:
        assert fn in in_top, "go tool pprof -top does not show %r:\n%s" % (fn, top[:4000])
        assert fn in in_raw, "go tool pprof -raw has no function %r:\n%s" % (fn, raw[:4000])
    return types, samples, locations


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
