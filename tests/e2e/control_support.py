"""Helpers and fixtures for tests/e2e/test_control.py: the real console, real agents steered by it,
and test containers, all on this machine, talking over 127.0.0.1 only.

Built from the other suites' pieces, imported, not copied:
- console_support: the console process (Console, the `consoles` fixture that SIGTERMs each one
  still running at the end and wants exit 0), token creation, the REST client;
- run_support: the agent process (Agent, the `agents` fixture that kills every agent at the end),
  the "container" (Container: a Python process in its own mount + pid namespace and a cgroup v2
  named like a containerd pod container) and wait_until.

What is new here:
- a light workload for the containers (a function that spins 30 ms out of every 100 ms, its name
  chosen per container), so that several containers and agents fit on a 2-core machine shared
  with others, and the profile of each container is told apart by its function name;
- `conprof-agent run --console ...` with the flags of docs/agent-config.md, its own token file,
  state file, spool and status socket (never the machine's defaults, which may be another
  agent's);
- the agent's view of what it samples, read with `conprof-agent status --json --socket S`, and
  watchers that record, poll after poll, when a target appeared and disappeared.

Time: every agent runs with 2 s periods and 1 s discovery, every console with 2 s session periods
unless a test asks otherwise."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import console_support as cs  # noqa: E402
import e2e_support as sup  # noqa: E402
import run_support as rs  # noqa: E402
from console_support import consoles  # noqa: E402,F401 (fixture, re-exported)
from run_support import agents  # noqa: E402,F401 (fixture, re-exported)

PERIOD_S = 2
DISCOVERY_S = 1
ENV_PATH = "/api/v1/projects/%s/environments/%s"
WORKLOAD_FN = "control_workload_spin"

# The container's program (python -c): READY once running, then one named function spinning
# 30 ms of every 100 ms; the main loop's function is named too.
WORKLOAD = """import json, os, sys, time
def {fn}(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end: pass
def {fn}_main():
    sys.stdout.write("READY " + json.dumps({{"pid": os.getpid()}}) + "\\n")
    sys.stdout.flush()
    while True:
        {fn}(0.03)
        time.sleep(0.07)
{fn}_main()
"""


@pytest.fixture(scope="session")
def console_binary():
    path = cs.console_path()
    if not (path.is_file() and os.access(str(path), os.X_OK)):
        pytest.fail("the console %s does not exist: run `make build/conprof-console` or set "
                    "CONPROF_CONSOLE" % path, pytrace=False)
    return path


# ---------------------------------------------------------------------------------------------
# The console, with its tokens


class Control:
    """A running console with an API token and agent tokens (by name), and the REST calls the
    tests make. `restart()` / `kill()` act on the console process; the data stay."""

    def __init__(self, consoles, data_dir, extra, agent_tokens):
        self._consoles = consoles
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra = [str(a) for a in extra]
        self.api_token = cs.token_create(self.data_dir, "ui", api=True)
        self.tokens = {}
        for name, project in agent_tokens.items():
            self.tokens[name] = cs.token_create(self.data_dir, name, project=project)
        self.console = consoles(extra=self.extra, data_dir=self.data_dir)
        self.port = self.console.port

    @property
    def ws_url(self):
        return self.console.ws_url

    def kill(self):
        """SIGKILL: no goodbye to the agents, nothing flushed."""
        self.console.kill()

    def stop(self):
        rc = self.console.stop()
        assert rc == 0, "the console exited %s on SIGTERM:\n%s" % (rc, self.output())

    def start_again(self):
        """A new console process on the same port and data directory."""
        self.console = self._consoles(extra=self.extra, data_dir=self.data_dir, port=self.port)

    def output(self):
        return self.console.output()[-4000:]

    def describe(self):
        return "console (port %d) log:\n%s" % (self.port, self.output())

    def api(self, method, path, body=None, query=None, expect=200):
        r = self.console.request(method, path, body=body, token=self.api_token, query=query)
        assert r.status == expect, "%s %s %s: expected %d, got %r\n%s" % (
            method, path, body if body is not None else "", expect, r, self.describe())
        return r.json()

    def toggle(self, project, environment, on, expect=200):
        return self.api("PUT", ENV_PATH % (project, environment) + "/profiling",
                        body={"enabled": on}, expect=expect)

    def project(self, project):
        return self.api("GET", "/api/v1/projects/%s" % project)

    def environment(self, project, environment):
        for e in self.project(project)["environments"]:
            if e["id"] == environment:
                return e
        raise AssertionError("project %s has no environment %s" % (project, environment))

    def set_plan(self, project, plan):
        return self.api("PUT", "/api/v1/projects/%s" % project, body={"plan": plan})

    def listed_agents(self):
        return self.api("GET", "/api/v1/agents")["agents"]

    def events(self):
        return self.api("GET", "/api/v1/events")["events"]

    # -- profiles, through the query API

    def _base(self, project, environment):
        return ENV_PATH % (project, environment) + "/continuous-profiling"

    @staticmethod
    def _range():
        now = int(time.time())
        return {"from": now - 900, "to": now + 60}

    def applications(self, project, environment):
        answer = self.api("GET", self._base(project, environment), query=self._range())
        return answer["applications"]

    def merge(self, project, environment, app, out):
        """The raw answer (a console_support.Response) of a merge over the last 15 minutes."""
        return self.console.request("GET", self._base(project, environment) + "/app/%s/merge" % app,
                                 token=self.api_token, query=dict(self._range(), out=out))

    def collapsed(self, project, environment, app):
        """{stack text: value} of the merged cpu profile; {} when there is none."""
        r = self.merge(project, environment, app, "collapsed")
        if r.status == 404:
            return {}
        assert r.status == 200, "merge out=collapsed: %r\n%s" % (r, self.describe())
        stacks = {}
        for line in r.body.decode("utf-8").splitlines():
            if line.strip():
                stack, _, value = line.rpartition(" ")
                stacks[stack] = stacks.get(stack, 0) + int(value)
        return stacks

    def stored_profiles(self, project=None):
        """The profiles table of the console's SQLite store (read-only): (project, environment,
        app, from_ns, until_ns, labels dict). The query API does not show a profile's labels
        nor its period; the store does."""
        uri = "file:%s?mode=ro" % (self.data_dir / "console.db")
        db = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            rows = db.execute("SELECT project, environment, app, from_ns, until_ns, labels "
                              "FROM profiles ORDER BY from_ns").fetchall()
        finally:
            db.close()
        out = [(p, e, a, f, u, json.loads(lab)) for p, e, a, f, u, lab in rows]
        return [r for r in out if project is None or r[0] == project]


@pytest.fixture
def control(console_binary, consoles, tmp_path):
    """control(extra=(), period=2, **agent_tokens) -> a Control: a console started with
    `--period PERIOD` and `extra`, an API token and one agent token per keyword (name=project,
    or name=None for a token of every project)."""
    made = []

    def start(extra=(), period=PERIOD_S, **agent_tokens):
        d = tmp_path / ("console-%d" % len(made))
        c = Control(consoles, d, ["--period", period] + list(extra), agent_tokens or {"node": None})
        made.append(c)
        return c

    return start


# ---------------------------------------------------------------------------------------------
# Agents steered by the console


def status(agent):
    """`conprof-agent status --json --socket S` of a running agent; None while its socket is not
    there yet (exit 3). Fails on any other answer."""
    argv = [str(sup.agent_path()), "status", "--json", "--socket", agent.status_socket]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=10)
    if out.returncode == 3 and agent.alive():
        return None
    assert out.returncode == 0, "%s: exit %d: %s\n%s" % (
        " ".join(argv), out.returncode, out.stderr.decode("utf-8", "replace"), agent.describe())
    return json.loads(out.stdout.decode("utf-8"))


def targets(agent, doc=None):
    """{pid: target} of what the agent profiles now."""
    doc = doc or status(agent) or {}
    return {t["pid"]: t for t in doc.get("targets", [])}


def sessions(agent, doc=None):
    """{session_id: session} of the agent's console sessions."""
    doc = doc or status(agent) or {}
    return {s["session_id"]: s for s in (doc.get("console") or {}).get("sessions", [])}


@pytest.fixture
def control_agents(agents, tmp_path):
    """control_agents(url, token, name="agent", state=None, extra=()) -> a started Agent running
    `conprof-agent run --console URL --console-token-file F --control-state F` with 2 s periods,
    1 s discovery, its own spool, node name NAME and status socket. Starting one again with the
    same name (and state) is an agent restart: same token file, state file and spool. The Agent
    gets `status_socket`, `state_file`, `node` attributes."""

    def start(url, token, name="agent", state=None, extra=()):
        d = tmp_path / ("agent-" + name)
        d.mkdir(exist_ok=True)
        token_file = d / "token"
        token_file.write_text(token + "\n")
        os.chmod(str(token_file), 0o600)
        state = state or d / "control-state.json"
        args = ["--console", url, "--console-token-file", token_file, "--control-state", state,
                "--period", PERIOD_S, "--discovery-interval", DISCOVERY_S,
                "--spool-dir", d / "spool", "--node-name", name] + list(extra)
        a = agents(args, name=name)
        a.status_socket = a.argv[a.argv.index("--status-socket") + 1]
        a.state_file = str(state)
        a.node = name
        rs.wait_until(lambda: status(a) is not None, 10, "the status socket of %s" % name, agent=a)
        return a

    return start


def wait_connected(agent, timeout=10, connects=1):
    """Waits until the agent is connected to its console for the connects-th time."""
    def connected():
        c = (status(agent) or {}).get("console") or {}
        return c.get("connected") and c.get("connects", 0) >= connects and c
    return rs.wait_until(connected, timeout, "the agent's console connection #%d" % connects,
                         agent=agent)


class Watch:
    """Polls the status of one or more agents (about every 0.1 s) and records, for each (agent,
    pid), when the pid was first and last seen as a target, and its samples. `until(pred)` polls
    until pred(self) is true."""

    def __init__(self, *agents):
        self.agents = agents
        # (agent name, pid) -> {"first": t, "last": t, "samples": [(t, n, state)],
        #                       "absent": [t of a poll that did not see it after the first]}
        self.seen = {}
        self.last = {}  # agent name -> last status document

    def poll(self):
        now = time.time()
        for a in self.agents:
            doc = status(a)
            if doc is None:
                continue
            self.last[a.node] = doc
            now_targets = targets(a, doc)
            for pid, t in now_targets.items():
                rec = self.seen.setdefault((a.node, pid), {"first": now, "last": now,
                                                           "samples": [], "absent": []})
                rec["last"] = now
                rec["samples"].append((now, t.get("samples", 0), t.get("state")))
            for (node, pid), rec in self.seen.items():
                if node == a.node and pid not in now_targets:
                    rec["absent"].append(now)
        return now

    def has(self, agent, pid):
        return pid in targets(agent, self.last.get(agent.node))

    def pids(self, agent):
        return set(targets(agent, self.last.get(agent.node)))

    def until(self, pred, timeout, what, interval=0.1):
        """Polls until pred() is true; returns the time (time.time()) of the poll that saw it."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.poll()
            if pred():
                return now
            for a in self.agents:
                if not a.alive():
                    raise AssertionError("%s exited while waiting for %s\n%s"
                                         % (a.node, what, a.describe()))
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1f s waiting for %s; last status:\n%s"
                                     % (timeout, what, self.describe()))
            time.sleep(interval)

    def hold(self, seconds, check, what, interval=0.1):
        """Polls for `seconds`; check() must stay true on every poll."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            assert check(), "%s broke; last status:\n%s" % (what, self.describe())
            time.sleep(interval)

    def describe(self):
        parts = []
        for a in self.agents:
            doc = self.last.get(a.node) or {}
            parts.append("%s: targets %s, sessions %s, console %s\n%s" % (
                a.node, [(t["pid"], t.get("state"), t.get("samples"))
                         for t in doc.get("targets", [])],
                list(sessions(a, doc).values()),
                {k: v for k, v in (doc.get("console") or {}).items() if k != "sessions"},
                a.describe()[-2500:]))
        return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Containers running the light workload


@pytest.fixture
def workload_containers(require_root):
    """workload_containers(app, project, environment="prod", fn=WORKLOAD_FN) -> a ready
    run_support.Container running WORKLOAD with function name `fn`, with `pid` (its host pid)
    and `fn` attributes; every container is removed at the end."""
    made = []

    def start(app, project, environment="prod", fn=WORKLOAD_FN):
        c = rs.Container(rs.interpreter(rs.MAIN_INTERP))
        made.append(c)
        c.start(["-c", WORKLOAD.format(fn=fn)], rs.app_env(app, project, environment))
        c.target.wait_ready()
        c.pid = c.python_pid()
        c.fn = fn
        return c

    yield start
    for c in made:
        c.close()


def go_pprof_top(gz_bytes, workdir):
    """`go tool pprof -top` of a gzipped pprof: ({function: flat}, the text)."""
    path = Path(workdir) / ("merged-%d.pb.gz" % time.monotonic_ns())
    path.write_bytes(gz_bytes)
    text = sup.go_pprof(["-top", "-nodecount=1000", path], workdir)
    return sup.top_functions(text), text
