"""Helpers and fixtures for the end-to-end tests of `conprof-agent run` (tests/e2e/test_run_*.py).

The daemon is run for real (build/conprof-agent, or $CONPROF_AGENT) against processes the tests
start: host Python processes with PLATFORM_* variables, and "containers" made here — a Python
process in its own mount and pid namespaces (`unshare`), whose interpreter is bind-mounted on a
tmpfs that exists only inside that mount namespace, placed in a cgroup v2 named like a
containerd pod container of the kubelet's systemd driver. Uploads go to a real HTTP receiver on
127.0.0.1 whose answers the test scripts (200, 503, hang). Profiles are read from the directory
sink's files or from the request bodies; their period boundaries come from the pprof itself
(time_nanos, duration_nanos), decoded here by a small protobuf reader, so "nothing was lost"
means: the periods of an application form one unbroken chain, each period's end being exactly
the next one's start, from the worker's start to the agent's stop.

Every process, cgroup and directory made here is removed by the fixture that made it, also
when the test fails. Import the fixtures into a test module (`from run_support import ...`)."""

import gzip
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import e2e_support as sup

free_port = sup.free_port

PERIOD_S = 2
DISCOVERY_S = 1
# Every daemon of these tests: short periods, fast discovery.
FAST = ["--period", PERIOD_S, "--discovery-interval", DISCOVERY_S]

CPU_PY = sup.WORKLOADS / "cpu.py"
CPU_MARK = sup.line_markers(CPU_PY)
MAIN_INTERP = "3.12"   # the interpreter of the workloads (and of the container)
OTHER_INTERP = "3.11"  # a second one, for the processes that must be left alone

NS = 1000000000


def unique(prefix):
    """A name no other test (or other engineer's process on this machine) uses."""
    return "%s-%s" % (prefix, secrets.token_hex(4))


def interpreter(ident):
    it = sup.interp(ident)
    if it.path is None:
        pytest.fail("interpreter %s is missing: %s" % (ident, it.missing), pytrace=False)
    return it


def wait_until(predicate, timeout, what, agent=None, interval=0.1):
    """Polls predicate() until it returns something true (returned); fails after timeout
    seconds, or as soon as `agent` exits, with the agent's log."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if agent is not None and not agent.alive():
            raise AssertionError("the agent exited while waiting for %s\n%s"
                                 % (what, agent.describe()))
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s%s" % (
                timeout, what, "\n" + agent.describe() if agent is not None else ""))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# The daemon


def agent_env():
    env = dict(os.environ)
    for name in ("CONPROF_NODE_NAME", "CONPROF_DEBUG"):
        env.pop(name, None)
    return env


def process_children(pid):
    """Live (not zombie) children of pid, from /proc/*/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


class Agent:
    """`conprof-agent run ARGS` in its own session, its stdout and stderr in a log file. Each
    gets its own status socket in socket_dir (the default one may belong to another agent of
    this machine, which would make ours refuse to start)."""

    def __init__(self, args, workdir, name, socket_dir):
        args = [str(a) for a in args]
        if "--status-socket" not in args:
            args += ["--status-socket", os.path.join(socket_dir, name + ".sock")]
        self.argv = [str(sup.agent_path()), "run"] + args
        self.log_path = Path(workdir) / ("%s.log" % name)
        self._log = open(str(self.log_path), "wb")
        self.started_ns = time.time_ns()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=agent_env(),
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.stopped_ns = None  # when SIGTERM was sent

    def log(self):
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def describe(self):
        status = "running" if self.alive() else "exited %s" % self.proc.returncode
        return "$ %s\n(%s) log:\n%s" % (" ".join(self.argv), status, self.log()[-5000:])

    def alive(self):
        return self.proc.poll() is None

    def workers(self):
        return process_children(self.pid) if self.alive() else []

    def wait_workers(self, count, timeout=10):
        return wait_until(lambda: len(self.workers()) == count and self.workers(), timeout,
                          "%d worker process(es)" % count, agent=self)

    def terminate(self, timeout):
        """SIGTERM; returns (exit status, seconds it took). Fails if it takes over timeout."""
        assert self.alive(), "the agent exited before SIGTERM\n" + self.describe()
        self.stopped_ns = time.time_ns()
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the agent did not exit within %.1f s of SIGTERM\n%s"
                                 % (timeout, self.describe()))
        return rc, time.monotonic() - start

    def terminate_mid_period(self, timeout):
        """terminate() half-way through a period: the daemon's periods start when it starts, so
        the partial period it must flush is about half a period long (never a few ms that may
        hold no sample, which would make "the partial period was flushed" untestable)."""
        elapsed = (time.time_ns() - self.started_ns) / NS
        time.sleep(PERIOD_S * (int(elapsed / PERIOD_S - 0.5) + 1.5) - elapsed)
        return self.terminate(timeout)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # its session: the workers too
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


@pytest.fixture
def agents(agent, tmp_path):
    """agents(args, name="agent") -> a started Agent; all are killed when the test ends.
    (`agent`, of conftest.py, fails the test when the binary is missing.)"""
    started = []
    socket_dir = tempfile.mkdtemp(prefix="cpr-", dir="/tmp")  # short: sun_path has 108 bytes

    def start(args, name="agent"):
        a = Agent(args, tmp_path, "%s-%d" % (name, len(started)), socket_dir)
        started.append(a)
        return a

    yield start
    for a in started:
        a.kill()
    shutil.rmtree(socket_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Host processes


def app_env(app, project, environment="production", **extra):
    env = {"PLATFORM_PROJECT": project, "PLATFORM_ENVIRONMENT": environment,
           "PLATFORM_APPLICATION_NAME": app}
    env.update(extra)
    return sup.target_env(env)


@pytest.fixture
def host_apps(spawn):
    """host_apps(app, project, scenario="busy", interp=MAIN_INTERP, env=None) -> a ready Target
    running workloads/cpu.py SCENARIO with PLATFORM_* set (env replaces them when given)."""

    def start(app, project, scenario="busy", interp=MAIN_INTERP, env=None):
        t = spawn([interpreter(interp).path, str(CPU_PY), scenario],
                  env=env or app_env(app, project))
        t.wait_ready()
        return t

    return start


# ---------------------------------------------------------------------------------------------
# Containers

# $1 cgroup dir, $2 namespace-only dir, $3 interpreter prefix, $4 interpreter name, $5.. argv
CONTAINER_SCRIPT = """set -e
echo 0 > "$1/cgroup.procs"
mount -t tmpfs conprof-e2e "$2"
mkdir "$2/py"
mount --bind "$3" "$2/py"
export LD_LIBRARY_PATH="$2/py/lib"
ns_dir="$2" exe="$4"
shift 4
exec "$ns_dir/py/bin/$exe" "$@"
"""


def cgroup2_root():
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    pytest.fail("no cgroup2 file system is mounted", pytrace=False)


class Container:
    """A Python process in its own mount + pid namespace, in the cgroup v2
    kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
    cri-containerd-<id>.scope; its interpreter exists only inside its mount namespace."""

    def __init__(self, interp):
        self.id = secrets.token_hex(32)
        self.pod_uid = str(uuid.uuid4())
        self.interp = interp
        self.created = []  # cgroup directories we made, outermost first
        self.cgroup = None
        self.target = None
        self.ns_dir = None
        self.inner_exe = None

    def start(self, argv, env):
        """Makes the cgroups and the namespace-only directory, starts the process; close()
        undoes whatever part of this was done."""
        interp = self.interp
        self.ns_dir = tempfile.mkdtemp(prefix="conprof-ctr-", dir="/tmp")
        path = cgroup2_root()
        pod = "kubepods-burstable-pod%s.slice" % self.pod_uid.replace("-", "_")
        for part in ("kubepods.slice", "kubepods-burstable.slice", pod,
                     "cri-containerd-%s.scope" % self.id):
            path = path / part
            if not path.is_dir():
                path.mkdir()
                self.created.append(path)
        self.cgroup = path
        exe = os.path.basename(interp.path)
        self.inner_exe = os.path.join(self.ns_dir, "py", "bin", exe)
        self.target = sup.Target(["unshare", "--mount", "--pid", "--fork", "--mount-proc",
                                  "--propagation", "private", "sh", "-c", CONTAINER_SCRIPT, "sh",
                                  str(self.cgroup), self.ns_dir, interp.prefix, exe]
                                 + [str(a) for a in argv], env=env)

    def pids(self):
        with open(str(self.cgroup / "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]

    def python_pid(self):
        """The host pid of the container's (only) process, checked to be what we meant."""
        pids = self.pids()
        assert len(pids) == 1, "cgroup %s holds %s, want one process" % (self.cgroup, pids)
        pid = pids[0]
        assert os.readlink("/proc/%d/exe" % pid) == self.inner_exe
        assert not os.path.exists(self.inner_exe), "%s is visible from the host" % self.inner_exe
        with open("/proc/%d/status" % pid) as f:
            nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
        assert len(nspid) == 2 and nspid[1] == "1", "not in its own pid namespace: NSpid %s" % nspid
        return pid

    def close(self):
        """Kills the container's processes through its cgroup first, so that unshare (alive
        still) reaps them: a zombie left to the host's init keeps the cgroup busy. Then unshare,
        then the cgroups (once empty) and the directory."""
        own_cgroup = self.cgroup is not None and self.cgroup in self.created
        if own_cgroup:
            try:
                if self.pids():
                    (self.cgroup / "cgroup.kill").write_text("1")
            except OSError:
                pass
        if self.target is not None:
            self.target.kill()
        deadline = time.monotonic() + 10
        for path in reversed(self.created):
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy until the last zombie is reaped; a parent shared
                    if path != self.cgroup or time.monotonic() > deadline:
                        break   # with another test at the same time stays
                    time.sleep(0.05)
        if self.ns_dir:
            try:
                os.rmdir(self.ns_dir)
            except OSError:
                pass


@pytest.fixture
def containers(require_root):
    """containers(app, project, environment, scenario) -> a ready Container running
    workloads/cpu.py SCENARIO; every container (processes, cgroups) is removed at the end."""
    made = []

    def start(app, project, environment="production", scenario="busy_and_sleeping",
              interp=MAIN_INTERP):
        c = Container(interpreter(interp))
        made.append(c)
        c.start([CPU_PY, scenario], app_env(app, project, environment))
        c.target.wait_ready()
        return c

    yield start
    for c in made:
        c.close()


# ---------------------------------------------------------------------------------------------
# pprof, read without go: the fields the period checks need


def _varint(data, i):
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("bad varint at %d" % i)
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(data):
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wire)
        yield number, wire, value


def _ints(wire, value):
    if wire == 0:
        return [value]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(v)
    return out


Pprof = namedtuple("Pprof", "time_ns duration_ns sample_types totals strings samples")


def read_pprof(gz):
    """The period (time_nanos, duration_nanos), sample types, per-type totals, string table and
    sample count of a gzipped pprof."""
    data = gzip.decompress(gz)
    strings, types, values, time_ns, duration_ns = [], [], [], 0, 0
    for number, wire, value in _fields(data):
        if number == 6:
            strings.append(value.decode("utf-8", "replace"))
        elif number == 1:
            vt = {n: v for n, _, v in _fields(value)}
            types.append((vt.get(1, 0), vt.get(2, 0)))
        elif number == 2:
            for n, w, v in _fields(value):
                if n == 2:
                    values.append(_ints(w, v))
        elif number == 9:
            time_ns = value
        elif number == 10:
            duration_ns = value
    names = ["%s/%s" % (strings[t], strings[u]) for t, u in types]
    totals = {name: sum(v[k] for v in values if k < len(v)) for k, name in enumerate(names)}
    return Pprof(time_ns, duration_ns, names, totals, set(strings), len(values))


# ---------------------------------------------------------------------------------------------
# The directory sink

DirProfile = namedtuple("DirProfile", "app sidecar path from_ns until_ns")


def dir_profiles(sink_dir, app):
    """The complete profiles (sidecar and .pb.gz both in place) of one application, oldest first."""
    d = Path(sink_dir) / app
    out = []
    if not d.is_dir():
        return out
    for side in d.glob("*.json"):
        try:
            doc = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pb = d / doc.get("profile", "")
        if doc.get("profile") and pb.is_file():
            out.append(DirProfile(app, doc, pb, doc["from_unix_ns"], doc["until_unix_ns"]))
    return sorted(out, key=lambda p: p.from_ns)


# ---------------------------------------------------------------------------------------------
# Periods


def describe_periods(periods, origin_ns=0):
    return "\n".join("  %.3f .. %.3f s (%.3f s)" % ((f - origin_ns) / NS, (u - origin_ns) / NS,
                                                   (u - f) / NS) for f, u in periods)


def assert_unbroken(periods, what, origin_ns=0):
    """periods: [(from_ns, until_ns)]. Each one's end is exactly the next one's start: no period
    lost, none sent twice."""
    periods = sorted(periods)
    assert periods, "no profile of %s" % what
    starts = [f for f, _ in periods]
    assert len(set(starts)) == len(starts), "%s: a period was delivered twice:\n%s" % (
        what, describe_periods(periods, origin_ns))
    for (f0, u0), (f1, u1) in zip(periods, periods[1:]):
        assert u0 == f1, "%s: the periods are not contiguous (lost or overlapping) between " \
            "%.3f and %.3f s:\n%s" % (what, (u0 - origin_ns) / NS, (f1 - origin_ns) / NS,
                                      describe_periods(periods, origin_ns))
    return periods


def assert_full_periods(periods, what, origin_ns=0, slack_s=0.6):
    """Every period but the first (the worker started mid-period) and the last (SIGTERM) lasts
    one --period."""
    for f, u in sorted(periods)[1:-1]:
        assert abs((u - f) / NS - PERIOD_S) <= slack_s, "%s: a period of %.3f s (want %d):\n%s" % (
            what, (u - f) / NS, PERIOD_S, describe_periods(sorted(periods), origin_ns))


# ---------------------------------------------------------------------------------------------
# The HTTP receiver


def parse_series_name(name):
    """Pyroscope's labelset parser: app{k=v,...}; a value ends at ',' or '}', blanks trimmed."""
    app, _, rest = name.partition("{")
    labels = {}
    if rest:
        assert rest.endswith("}"), "series name %r does not end with }" % name
        for kv in rest[:-1].split(","):
            if kv:
                k, eq, v = kv.partition("=")
                assert eq, "label %r of %r has no =" % (kv, name)
                labels[k.strip()] = v.strip()
    return app.strip(), labels


class Request:
    def __init__(self, path, query, headers, body):
        self.t = time.monotonic()
        self.wall_ns = time.time_ns()
        self.path, self.query, self.headers, self.body = path, query, headers, body
        self.answer = None  # "200", "503", "hang"
        self.delivered = False
        self.app, self.labels = parse_series_name(query.get("name", [""])[0])
        self._pprof = None

    @property
    def pprof(self):
        if self._pprof is None:
            self._pprof = read_pprof(self.body)
        return self._pprof

    @property
    def period(self):
        return (self.pprof.time_ns, self.pprof.time_ns + self.pprof.duration_ns)


class Receiver:
    """A Pyroscope-like ingest endpoint on 127.0.0.1. `mode` ("ok", "503", "hang") answers every
    request unless `plan` (a list of modes) has steps left, used one per request. "hang" holds
    the request `hang_s` seconds and then answers 503: only an "ok" answer is a delivery."""

    def __init__(self, port=0, mode="ok", hang_s=4.0):
        self.requests = []
        self.mode, self.plan, self.hang_s = mode, [], hang_s
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode

    def _handler(self):
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urllib.parse.urlsplit(self.path)
                req = Request(url.path, urllib.parse.parse_qs(url.query, keep_blank_values=True),
                              dict(self.headers.items()), body)
                with rx.lock:
                    req.answer = rx.plan.pop(0) if rx.plan else rx.mode
                    req.delivered = req.answer == "ok"
                    rx.requests.append(req)
                if req.answer == "hang":
                    time.sleep(rx.hang_s)
                status = 200 if req.answer == "ok" else 503
                text = b"ok" if status == 200 else b"overloaded"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:
                    pass  # the agent gave up (upload timeout)

        return Handler

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def delivered(self, app=None):
        return [r for r in self.snapshot() if r.delivered and (app is None or r.app == app)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    """receivers(port=0, mode="ok", hang_s=4) -> a started Receiver, closed after the test."""
    started = []

    def start(*args, **kwargs):
        r = Receiver(*args, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def spool_files(spool_dir):
    d = Path(spool_dir)
    return sorted(d.glob("*.spool")) if d.is_dir() else []


def ingest_periods(requests):
    return [r.period for r in requests]


def check_ingest_url(req, rate_hz):
    """The Pyroscope ingest query of one request, and from/until agreeing with the body."""
    q = req.query
    assert req.path == "/ingest", req.path
    for key in ("name", "from", "until", "format", "sampleRate", "spyName"):
        assert len(q.get(key, [])) == 1, "query parameter %s: %s" % (key, q)
    assert q["format"] == ["pprof"] and q["spyName"] == ["conprof"], q
    assert q["sampleRate"] == [str(rate_hz)], q
    assert re.fullmatch(r"\d+", q["from"][0]) and re.fullmatch(r"\d+", q["until"][0]), q
    f, u = req.period
    assert int(q["from"][0]) == f // NS, "from=%s but the profile starts at %d ns" % (q["from"], f)
    assert int(q["until"][0]) == -(-u // NS), "until=%s but the profile ends at %d ns" % (
        q["until"], u)
