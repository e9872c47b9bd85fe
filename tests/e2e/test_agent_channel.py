"""The agent's websocket client of the control channel (control/agent_link.c, PROTOCOL.md agent
side), end to end: the real `conprof-agent run --console ...` against a FAKE console written here
with python3-websockets on 127.0.0.1, so the test controls every frame the agent receives and
sees every frame it sends. The agent's own view is read with `conprof-agent status --json`
(its "console" section is agent_link_status_json()).

Checked: the upgrade (path from the URL, Authorization: Bearer, subprotocol) and hello as the
first frame; start/stop/config/lease answered by ack/nack naming the field, a nack changing
nothing; frames without a readable id (invalid JSON or UTF-8, bad or duplicate id), binary and
oversized frames ignored with the connection kept, a frame of exactly 64 KiB and a fragmented
message read at once; the table of 64 sessions; leases ending while the console is gone (session
inactive at lease end, lease_expired / quota_exhausted sent once after reconnecting, a lease
reviving an expired session); the state file across agent restarts (and a stale PATH.tmp) and
corrupt ones (path and reason logged); reconnect backoff (full jitter from 1 s, doubling), HTTP
401 and close code 4000 reported, the new hello listing the held sessions; the 10 s status
heartbeat with the node's targets; wss:// with a self-signed certificate (openssl CLI), with
--console-ca-file, without it, with another CA and with a certificate for another host.

The fake console's "down" has two forms: gone (not listening: connection refused) and refusing
upgrades with HTTP 503 (listening, so that each reconnect attempt is seen and timed).
"""
import asyncio
import http
import json
import queue
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e_support as sup  # noqa: E402
import run_support as rs  # noqa: E402
from control_support import control_agents, sessions, status  # noqa: E402,F401 (fixtures)
from run_support import agents  # noqa: E402,F401 (fixture, re-exported)

SUBPROTOCOL = "conprof-agent-v1"
TOKEN = "agent-token-Zx9"
FRAME_MAX = 65536

# ---------------------------------------------------------------------------------------------
# The fake console


class Conn:
    """One accepted websocket connection and the frames the agent sent on it."""

    def __init__(self, ws, path, headers):
        self.ws = ws
        self.path = path
        self.headers = headers
        self.opened = time.monotonic()
        self.frames = []  # every decoded frame, in order
        self.closed = threading.Event()


class FakeConsole:
    """A websocket server on 127.0.0.1:port speaking the console side of PROTOCOL.md, driven from
    the test's thread. Every upgrade request is recorded in `attempts` (monotonic time, path,
    headers), also the refused ones; frames from the agent are queued for expect()."""

    def __init__(self, port=None, ssl_context=None):
        self.port = port or rs.free_port()
        self.ssl_context = ssl_context
        self.refuse_status = None  # an HTTP status: refuse every upgrade with it
        self.attempts = []
        self.conns = []
        self.inbox = queue.Queue()  # (Conn, frame)
        self.seen = []
        self.server = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def url(self, path="/agent/v1"):
        return "%s://127.0.0.1:%d%s" % ("wss" if self.ssl_context else "ws", self.port, path)

    def _run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _process_request(self, path, headers):
        self.attempts.append((time.monotonic(), path, headers))
        if self.refuse_status:
            return self.refuse_status, [], b"console unavailable\n"
        return None

    async def _handler(self, ws, path):
        conn = Conn(ws, path, ws.request_headers)
        self.conns.append(conn)
        try:
            async for frame in ws:
                msg = json.loads(frame) if isinstance(frame, str) else frame
                conn.frames.append(msg)
                self.inbox.put((conn, msg))
        except websockets.ConnectionClosed:
            pass
        finally:
            conn.closed.set()

    async def _listen(self):
        self.server = await websockets.serve(
            self._handler, "127.0.0.1", self.port, subprotocols=[SUBPROTOCOL],
            process_request=self._process_request, max_size=None, ping_interval=None,
            ssl=self.ssl_context)

    def listen(self, refuse_status=None):
        self.refuse_status = refuse_status
        self._run(self._listen())
        return self

    async def _kill(self, stop_listening):
        for c in self.conns:
            if not c.closed.is_set():
                c.ws.transport.abort()  # no close frame: as if the process died
        if stop_listening and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def kill(self, stop_listening=True):
        """Drops every connection abruptly; with stop_listening, the port is closed too."""
        self._run(self._kill(stop_listening))

    def refuse(self, status=http.HTTPStatus.SERVICE_UNAVAILABLE):
        self.refuse_status = status

    def accept(self):
        self.refuse_status = None

    def conn(self, index=-1):
        return self.conns[index]

    def send_raw(self, data, conn=None):
        conn = conn or self.conns[-1]
        self._run(conn.ws.send(data))

    def send(self, msg, conn=None):
        self.send_raw(json.dumps(msg), conn)

    def send_text_bytes(self, data, conn=None):
        """One text frame holding `data` as is (which may be invalid UTF-8)."""
        conn = conn or self.conns[-1]
        self._run(conn.ws.write_frame(True, 0x1, data))

    def close_conn(self, code, reason, conn=None):
        conn = conn or self.conns[-1]
        self._run(conn.ws.close(code, reason))

    def expect(self, type_=None, timeout=3.0, pred=None, what=None):
        """The next frame from the agent of type_ (any when None) matching pred, waiting at most
        timeout s; the frames skipped are kept for later calls."""
        def match(m):
            return (isinstance(m, dict) and (type_ is None or m.get("type") == type_)
                    and (pred is None or pred(m)))
        for i, m in enumerate(self.seen):
            if match(m):
                return self.seen.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the agent sent no %s within %.1f s (got %s)"
                                     % (what or type_ or "frame", timeout, self.seen))
            try:
                _, m = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if match(m):
                return m
            self.seen.append(m)

    def answers_through(self, cid, timeout=3.0):
        """Every ack / nack the agent sends up to and including the answer to command `cid`:
        frames are handled in order, so sending a valid command after others proves, without
        sleeping, which of those others were answered."""
        found = []
        while not found or found[-1].get("id") != cid:
            found.append(self.expect(timeout=timeout, what="answer to command %s" % cid,
                                     pred=lambda m: m.get("type") in ("ack", "nack")))
        return found

    def wait_connections(self, count, timeout, agent=None):
        return rs.wait_until(lambda: len(self.conns) >= count and self.conns[count - 1], timeout,
                             "connection #%d to the fake console" % count, agent=agent)

    def close(self):
        if not self.thread.is_alive():
            return
        try:
            self.kill()
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fake_consoles():
    """fake_consoles(port=None, ssl_context=None, listen=True) -> a FakeConsole; all closed at the
    end."""
    made = []

    def make(port=None, ssl_context=None, listen=True):
        c = FakeConsole(port, ssl_context)
        made.append(c)
        return c.listen() if listen else c

    yield make
    for c in made:
        c.close()


# ---------------------------------------------------------------------------------------------
# Commands and the agent's view


def start_cmd(cid, sid, project, lease_s=60, budget_left=3600, period=2, labels=None, **override):
    """A valid start (PROTOCOL.md) whose lease ends lease_s from now; override replaces keys
    (value None removes the key)."""
    cmd = {"type": "start", "v": 1, "id": cid, "session_id": sid, "project": project,
           "environment": "prod", "selector": {"project": project, "environment": "prod"},
           "period": period, "upload_timeout": 5, "labels": labels or {"team": "core"},
           "quota": {"plan": "free", "lease_until": int(time.time()) + lease_s,
                     "budget_left": budget_left}}
    for k, v in override.items():
        if v is None:
            cmd.pop(k, None)
        else:
            cmd[k] = v
    return cmd


def command(console, cmd, expect="ack", timeout=3.0):
    """Sends cmd and returns the agent's answer to its id, which must be of type `expect`."""
    console.send(cmd)
    answer = console.expect(pred=lambda m: m.get("type") in ("ack", "nack")
                            and m.get("id") == cmd["id"], timeout=timeout,
                            what="answer to command %s" % cmd["id"])
    assert answer["type"] == expect, "command %s: expected %s, got %s" % (cmd, expect, answer)
    assert answer["v"] == 1
    return answer


def console_view(agent):
    return (status(agent) or {}).get("console") or {}


def settings(agent):
    """The agent's sessions without profiling_s (which grows while they run)."""
    return {sid: {k: v for k, v in s.items() if k != "profiling_s"}
            for sid, s in sessions(agent).items()}


def wait_session(agent, sid, pred, timeout, what):
    def check():
        s = sessions(agent).get(sid)
        return s if s is not None and pred(s) else None
    return rs.wait_until(check, timeout, "session %s %s" % (sid, what), agent=agent)


def connected_agent(control_agents, console, name="agent", state=None, extra=(), path="/agent/v1"):
    """An agent of `console`, its first hello received."""
    agent = control_agents(console.url(path), TOKEN, name=name, state=state, extra=extra)
    hello = console.expect("hello", timeout=10, what="hello")
    return agent, hello


# ---------------------------------------------------------------------------------------------
# 1. Upgrade and hello


@pytest.mark.parametrize("path,expected_path", [
    ("/agent/v1", "/agent/v1"), ("/proxy/conprof/agent/v1", "/proxy/conprof/agent/v1"),
    ("", "/agent/v1")], ids=["default-path", "prefixed-path", "no-path"])
def test_upgrade_carries_token_subprotocol_path_and_hello_comes_first(
        control_agents, fake_consoles, path, expected_path):
    console = fake_consoles()
    name = rs.unique("node")
    agent, hello = connected_agent(control_agents, console, name=name, path=path)
    conn = console.conn(0)
    assert conn.path == expected_path
    assert conn.headers.get("Authorization") == "Bearer " + TOKEN
    offered = [p.strip() for p in conn.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    assert SUBPROTOCOL in offered, conn.headers
    assert conn.ws.subprotocol == SUBPROTOCOL
    assert conn.frames[0] is hello, "hello is not the first frame: %s" % conn.frames[:3]
    version = subprocess.run([str(sup.agent_path()), "version"], stdout=subprocess.PIPE,
                             universal_newlines=True).stdout
    assert hello["v"] == 1
    assert hello["agent_id"] == name and hello["node"] == name
    assert hello["agent_version"] and hello["agent_version"] in version, (hello, version)
    assert hello["capabilities"] == ["cpu", "wall"]
    assert isinstance(hello["targets"], list)
    for t in hello["targets"]:
        assert isinstance(t["pid"], int) and t["pid"] > 0 and isinstance(t["application"], str)
    assert hello["sessions"] == []
    view = rs.wait_until(lambda: console_view(agent).get("connected") and console_view(agent),
                         5, "connected in status", agent=agent)
    assert view["connects"] == 1 and view["last_error"] == ""
    assert view["url"] == console.url(path)


# ---------------------------------------------------------------------------------------------
# 2. start, bad commands, unreadable frames


def test_start_acks_and_bad_fields_nack_naming_the_field_changing_nothing(control_agents,
                                                                          fake_consoles):
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    project = rs.unique("proj")
    start = start_cmd("c-1", "s-1", project, lease_s=120, period=7)
    command(console, start)
    s = wait_session(agent, "s-1", lambda s: s["active"], 3, "active")
    assert (s["state"], s["project"], s["environment"]) == ("running", project, "prod")
    assert s["lease_until"] == start["quota"]["lease_until"] and s["period_s"] == 7
    before = settings(agent)

    bad = [
        (start_cmd("c-2", "s-1", project, period=0), "period"),
        (start_cmd("c-3", "s-1", project, lease_s=9, period=3600 + 1), "period"),
        (start_cmd("c-4", None, project), "session_id"),
        (start_cmd("c-5", "s-new", project,
                   selector={"project": project + "-other", "environment": "prod"}),
         "selector.project"),
        # A bad key cannot be a path element: the field is the labels object; a bad value is
        # named by its key.
        (start_cmd("c-6", "s-new", project, labels={"team": "a", "bad-key": "x"}), "labels"),
        (start_cmd("c-6v", "s-new", project, labels={"team": "x" * 513}), "labels.team"),
        (start_cmd("c-7", "s-1", project, quota={"plan": "gold", "lease_until": 1,
                                                  "budget_left": 1}), "quota.plan"),
        (start_cmd("c-8", "s-new", project, period=45.0), "period"),
    ]
    for cmd, field in bad:
        nack = command(console, cmd, expect="nack")
        assert nack["field"] == field, (cmd, nack)
        assert nack["error"], nack
    assert settings(agent) == before, "a nack changed the sessions"
    view = console_view(agent)
    assert view["commands_acked"] == 1 and view["commands_nacked"] == len(bad)

    # An unknown type with a readable id: nack naming the type.
    nack = command(console, {"type": "reboot", "v": 1, "id": "c-9"}, expect="nack")
    assert nack["field"] == "type", nack

    # Frames without a readable id: no answer at all, the connection stays.
    for frame in ["not json {", '["start"]', '"start"', "{}",
                  '{"type":"start","v":1,"id":"bad id!","session_id":"s-2"}',
                  '{"type":"start","v":1,"id":"","session_id":"s-2"}',
                  '{"type":"start","v":1,"id":"dup","id":"dup","session_id":"s-2"}']:
        console.send_raw(frame)
    console.send(start_cmd("c-10", "s-2", project))
    assert [(a["type"], a["id"]) for a in console.answers_through("c-10")] == [("ack", "c-10")]
    assert not console.conn().closed.is_set() and len(console.conns) == 1
    assert agent.log().count("ignored a frame from the console") == 7, agent.describe()
    wait_session(agent, "s-2", lambda s: s["active"], 3, "active")
    assert {k: v for k, v in settings(agent).items() if k != "s-2"} == before


def big_start(cid, sid, project, size):
    """A valid start padded (an unknown key) to exactly `size` bytes."""
    cmd = start_cmd(cid, sid, project)
    cmd["pad"] = ""
    base = len(json.dumps(cmd).encode())
    cmd["pad"] = "x" * (size - base)
    text = json.dumps(cmd)
    assert len(text.encode()) == size
    return text


def test_oversized_and_binary_frames_are_dropped_and_the_connection_stays(control_agents,
                                                                          fake_consoles):
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    project = rs.unique("proj")
    console.send_raw(big_start("c-big", "s-big", project, FRAME_MAX + 1))
    console.send_raw(big_start("c-big2", "s-big2", project, 3 * FRAME_MAX))
    console.send_raw(json.dumps(start_cmd("c-bin", "s-bin", project)).encode())
    console.send_raw(b"\x00\x01\xff binary")
    # A frame of exactly the limit is read, at once (the agent polls its socket every 250 ms; a
    # read of 4 KiB per poll once made this take 4 s); so is a command after the dropped ones.
    console.send_raw(big_start("c-max", "s-max", project, FRAME_MAX))
    console.send(start_cmd("c-ok", "s-ok", project))
    answers = console.answers_through("c-ok", timeout=1.5)
    assert [(a["type"], a["id"]) for a in answers] == [("ack", "c-max"), ("ack", "c-ok")]
    assert not console.conn().closed.is_set() and len(console.conns) == 1
    log = agent.log()
    assert log.count("larger than 65536 bytes") == 2 and log.count("binary frame") == 2, log
    got = rs.wait_until(lambda: set(sessions(agent)) == {"s-max", "s-ok"} and sessions(agent), 3,
                        "sessions s-max and s-ok", agent=agent)
    assert all(s["active"] for s in got.values())
    assert console_view(agent)["disconnects"] == 0


def test_fragmented_messages_are_reassembled_and_bounded(control_agents, fake_consoles):
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    project = rs.unique("proj")
    text = json.dumps(start_cmd("c-frag", "s-frag", project))
    console.send_raw([text[:10], text[10:11], text[11:]])  # one message in three frames
    assert console.expect("ack", timeout=1.5)["id"] == "c-frag"
    # Small fragments adding up to more than the limit: dropped as a whole.
    big = big_start("c-bigfrag", "s-bigfrag", project, FRAME_MAX + 10)
    console.send_raw([big[i:i + 4000] for i in range(0, len(big), 4000)])
    # Text frames that are not valid UTF-8 (or hold \u0000) are not JSON: no readable id.
    bad_utf8 = json.dumps(start_cmd("c-utf", "s-utf", project)).encode()
    console.send_text_bytes(bad_utf8.replace(b'"core"', b'"c\xffre"'))
    console.send_raw(json.dumps(start_cmd("c-nul", "s-nul", project)).replace('"core"',
                                                                              '"c\\u0000re"'))
    console.send(start_cmd("c-ok", "s-ok", project))
    assert [(a["type"], a["id"]) for a in console.answers_through("c-ok", timeout=1.5)] == [
        ("ack", "c-ok")]
    assert not console.conn().closed.is_set() and len(console.conns) == 1
    assert set(sessions(agent)) == {"s-frag", "s-ok"}
    assert agent.log().count("ignored a frame from the console") == 3, agent.describe()


def test_table_of_64_sessions(control_agents, fake_consoles):
    """At most 64 sessions: a 65th start is refused while all run, and takes the place of a
    stopped one."""
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    project = rs.unique("proj")
    for i in range(64):
        console.send(start_cmd("c-%d" % i, "s-%d" % i, project, lease_s=60))
    answers = console.answers_through("c-63")
    assert [(a["type"], a["id"]) for a in answers] == [("ack", "c-%d" % i) for i in range(64)]
    nack = command(console, start_cmd("c-64", "s-64", project), expect="nack")
    assert nack["field"] == "session_id", nack
    command(console, {"type": "stop", "v": 1, "id": "c-stop", "session_id": "s-7",
                      "reason": "toggle off"})
    command(console, start_cmd("c-64b", "s-64", project))
    got = rs.wait_until(lambda: "s-64" in sessions(agent) and sessions(agent), 3, "s-64",
                        agent=agent)
    assert len(got) == 64 and "s-7" not in got and all(s["active"] for s in got.values())
    console.kill(stop_listening=False)
    console.wait_connections(2, 5, agent=agent)
    hello = console.expect("hello", timeout=5)
    assert len(hello["sessions"]) == 64


# ---------------------------------------------------------------------------------------------
# 3. stop, config, lease


def test_stop_config_and_lease(control_agents, fake_consoles):
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    project = rs.unique("proj")
    command(console, start_cmd("c-1", "s-1", project, lease_s=60))
    command(console, start_cmd("c-2", "s-2", project, lease_s=60))
    wait_session(agent, "s-2", lambda s: s["active"], 3, "active")

    # config: the session's settings change; unknown session or nothing to change: nack.
    command(console, {"type": "config", "v": 1, "id": "c-3", "session_id": "s-1", "period": 11})
    wait_session(agent, "s-1", lambda s: s["period_s"] == 11, 3, "with period 11")
    nack = command(console, {"type": "config", "v": 1, "id": "c-4", "session_id": "nope",
                             "period": 5}, expect="nack")
    assert nack["field"] == "session_id", nack
    nack = command(console, {"type": "config", "v": 1, "id": "c-5", "session_id": "s-1"},
                   expect="nack")
    assert nack["field"] == "", nack

    # lease: lease_until moves (also backwards: the console's word is the lease).
    for lease_s in (200, 100):
        until = int(time.time()) + lease_s
        command(console, {"type": "lease", "v": 1, "id": "c-l%d" % lease_s, "session_id": "s-1",
                          "lease_until": until, "budget_left": 3000})
        s = wait_session(agent, "s-1", lambda s: s["lease_until"] == until, 3,
                         "with lease_until %d" % until)
        assert s["active"] and s["budget_left"] == 3000
    nack = command(console, {"type": "lease", "v": 1, "id": "c-6", "session_id": "nope",
                             "lease_until": int(time.time()) + 60, "budget_left": 60},
                   expect="nack")
    assert nack["field"] == "session_id", nack

    # stop: ack, the session is no longer active; stopping again or an unknown one: ack.
    command(console, {"type": "stop", "v": 1, "id": "c-7", "session_id": "s-1",
                      "reason": "toggle off"})
    s = wait_session(agent, "s-1", lambda s: not s["active"], 3, "inactive")
    assert s["state"] == "stopped"
    assert sessions(agent)["s-2"]["active"]
    command(console, {"type": "stop", "v": 1, "id": "c-8", "session_id": "s-1",
                      "reason": "toggle off"})
    command(console, {"type": "stop", "v": 1, "id": "c-9", "session_id": "never-seen",
                      "reason": "toggle off"})
    # A stopped session takes no lease; a start runs it again.
    nack = command(console, {"type": "lease", "v": 1, "id": "c-10", "session_id": "s-1",
                             "lease_until": int(time.time()) + 60, "budget_left": 60},
                   expect="nack")
    assert nack["field"] == "session_id", nack
    command(console, start_cmd("c-11", "s-1", project, lease_s=60))
    wait_session(agent, "s-1", lambda s: s["active"] and s["state"] == "running", 3, "running")
    assert console_view(agent)["active_sessions"] == 2
    # A start whose lease has already passed is recorded as expired.
    command(console, start_cmd("c-12", "s-late", project, lease_s=-5))
    s = wait_session(agent, "s-late", lambda s: True, 3, "recorded")
    assert s["state"] == "expired" and not s["active"], s


# ---------------------------------------------------------------------------------------------
# 4. Lease end while the console is gone


def test_lease_ends_while_the_console_is_gone_and_events_follow_the_reconnect(control_agents,
                                                                              fake_consoles):
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    project = rs.unique("proj")
    # s-exp: the budget outlasts the lease (lease_expired); s-quota: the lease was capped by the
    # budget (lease_until - granted_at >= budget_left: quota_exhausted).
    exp = start_cmd("c-1", "s-exp", project, lease_s=3, budget_left=3600)
    quota = start_cmd("c-2", "s-quota", project, lease_s=3, budget_left=2)
    quota["quota"]["lease_until"] = exp["quota"]["lease_until"]
    lease_until = exp["quota"]["lease_until"]
    command(console, exp)
    command(console, quota)
    wait_session(agent, "s-quota", lambda s: s["active"], 3, "active")
    console.kill(stop_listening=True)
    rs.wait_until(lambda: not console_view(agent).get("connected"), 5, "the agent to notice",
                  agent=agent)
    assert all(s["active"] for s in sessions(agent).values())

    def inactive():
        s = sessions(agent)
        return all(not x["active"] for x in s.values()) and time.time()
    ended_at = rs.wait_until(inactive, lease_until - time.time() + 3, "the leases to end",
                             agent=agent, interval=0.05)
    assert lease_until - 0.3 <= ended_at <= lease_until + 1.5, (lease_until, ended_at)
    assert {s["state"] for s in sessions(agent).values()} == {"expired"}
    assert console_view(agent)["active_sessions"] == 0
    assert "cannot connect" in console_view(agent)["last_error"]

    console.listen()
    conn = console.wait_connections(2, 20, agent=agent)
    hello = console.expect("hello", timeout=5)
    assert conn.frames[0] is hello
    assert sorted(s["session_id"] for s in hello["sessions"]) == ["s-exp", "s-quota"]
    events = {}
    for _ in range(2):
        e = console.expect("event", timeout=5)
        events[e["session_id"]] = e["kind"]
    assert events == {"s-exp": "lease_expired", "s-quota": "quota_exhausted"}
    assert [m["type"] for m in conn.frames[:3]] == ["hello", "event", "event"]
    # A lease renews an expired session: it runs again.
    until = int(time.time()) + 30
    command(console, {"type": "lease", "v": 1, "id": "c-3", "session_id": "s-exp",
                      "lease_until": until, "budget_left": 600})
    s = wait_session(agent, "s-exp", lambda s: s["active"], 3, "active again")
    assert s["state"] == "running" and s["lease_until"] == until
    # Sent once: the next connection carries no event again.
    console.kill(stop_listening=False)
    console.wait_connections(3, 10, agent=agent)
    console.expect("hello", timeout=5)
    assert [m for m in console.conn().frames if m.get("type") == "event"] == []
    time.sleep(0.5)
    assert [m for m in console.conn().frames if m.get("type") == "event"] == []


# ---------------------------------------------------------------------------------------------
# 5. The state file


def test_restart_resumes_from_the_state_file_until_lease_end_only(control_agents, fake_consoles,
                                                                 tmp_path):
    console = fake_consoles()
    state = tmp_path / "control-state.json"
    agent, _ = connected_agent(control_agents, console, name="n1", state=state)
    project = rs.unique("proj")
    start = start_cmd("c-1", "s-1", project, lease_s=8, labels={"team": "core", "tier": "web"})
    lease_until = start["quota"]["lease_until"]
    command(console, start)
    command(console, start_cmd("c-2", "s-stopped", project, lease_s=60))
    command(console, {"type": "stop", "v": 1, "id": "c-3", "session_id": "s-stopped",
                      "reason": "toggle off"})
    doc = json.loads(state.read_text())
    assert doc["version"] == 1
    saved = {s["session_id"]: s for s in doc["sessions"]}
    assert saved["s-1"]["lease_until"] == lease_until and saved["s-1"]["state"] == "running"
    assert saved["s-1"]["labels"] == {"team": "core", "tier": "web"}
    assert saved["s-stopped"]["state"] == "stopped"
    assert oct(state.stat().st_mode & 0o777) == "0o600"

    console.kill(stop_listening=True)
    agent.kill()
    (tmp_path / "control-state.json.tmp").write_text("{garbage left by a crash")
    again = control_agents(console.url(), TOKEN, name="n1", state=state)
    asked_at = time.time()
    got = sessions(again)
    if asked_at >= lease_until:
        pytest.fail("the restart took too long (%.1f s past the lease end) to test anything"
                    % (asked_at - lease_until))
    assert got["s-1"]["active"] and got["s-1"]["state"] == "running", (got, again.describe())
    assert not got["s-stopped"]["active"]
    assert "loaded 2 session(s) from %s" % state in again.log(), again.describe()

    def inactive():
        return not sessions(again)["s-1"]["active"] and time.time()
    ended_at = rs.wait_until(inactive, lease_until - time.time() + 3, "the lease to end",
                             agent=again, interval=0.05)
    assert lease_until <= ended_at <= lease_until + 1.5, (lease_until, ended_at, again.describe())

    def saved_state():
        return {s["session_id"]: s["state"] for s in json.loads(state.read_text())["sessions"]}
    rs.wait_until(lambda: saved_state()["s-1"] == "expired", 2, "s-1 expired in the state file",
                  agent=again)
    # Restarted after the lease end: nothing runs.
    again.kill()
    third = control_agents(console.url(), TOKEN, name="n1", state=state)
    assert not any(s["active"] for s in sessions(third).values())


@pytest.mark.parametrize("content,reason", [
    ("{\"version\":1,\"sessions\":[", "invalid JSON"),
    ("{\"version\":2,\"sessions\":[]}", "version"),
    (None, "sessions[0].period"),
], ids=["truncated", "wrong-version", "bad-field"])
def test_corrupt_state_file_starts_empty_and_says_why(control_agents, fake_consoles, tmp_path,
                                                      content, reason):
    state = tmp_path / "control-state.json"
    if content is None:  # a file written by the agent, then one value broken
        console = fake_consoles()
        agent, _ = connected_agent(control_agents, console, name="n0", state=state)
        command(console, start_cmd("c-1", "s-1", rs.unique("proj"), lease_s=120))
        agent.kill()
        console.close()
        doc = json.loads(state.read_text())
        doc["sessions"][0]["period"] = 0
        content = json.dumps(doc)
    state.write_text(content)
    console = fake_consoles()
    agent, hello = connected_agent(control_agents, console, name="n1", state=state)
    assert hello["sessions"] == []
    view = console_view(agent)
    assert view["sessions"] == [] and view["active_sessions"] == 0
    line = [l for l in agent.log().splitlines() if str(state) in l and reason in l]
    assert line, "no log line with the path and the reason %r:\n%s" % (reason, agent.describe())


# ---------------------------------------------------------------------------------------------
# 6. Reconnect


def test_reconnect_backoff_then_hello_lists_the_held_sessions(control_agents, fake_consoles):
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    project = rs.unique("proj")
    command(console, start_cmd("c-1", "s-1", project, lease_s=120))
    command(console, start_cmd("c-2", "s-2", project, lease_s=120))
    command(console, {"type": "stop", "v": 1, "id": "c-3", "session_id": "s-2",
                      "reason": "toggle off"})
    first = len(console.attempts)
    console.refuse()  # listening, so that each attempt is seen; every upgrade gets 503
    killed = time.monotonic()
    console.kill(stop_listening=False)
    # Full jitter from 1 s, doubling: attempt k waits uniform in [1, 2^(k-1)] s after the last
    # failure (PROTOCOL.md). Three refused attempts, then the console comes back.
    rs.wait_until(lambda: len(console.attempts) >= first + 3, 1 + 2 + 4 + 3, "3 reconnect attempts",
                  agent=agent, interval=0.02)
    console.accept()
    conn = console.wait_connections(2, 8 + 2, agent=agent)
    hello = console.expect("hello", timeout=5)
    times = [killed] + [t for t, _, _ in console.attempts[first:]]
    delays = [b - a for a, b in zip(times, times[1:])]
    assert len(delays) == 4, delays
    # The agent acts on its socket when its loop wakes (every 250 ms): a failure is noticed up to
    # 250 ms late and an attempt starts up to 250 ms after its time. Full jitter may pick 1 s
    # every time, so only the bounds are certain: never under 1 s, never over the doubling cap
    # (the formula itself is unit-tested: agent_link_backoff_ms).
    for k, d in enumerate(delays):
        assert 0.95 <= d <= 2 ** k + 0.75, "attempt %d after %.2f s (all: %s)" % (k + 1, d, delays)
    view = rs.wait_until(lambda: console_view(agent).get("connects") == 2 and console_view(agent),
                         3, "connects == 2 in status", agent=agent)
    assert view["connected"] and view["disconnects"] == 1
    assert conn.frames[0] is hello
    assert sorted(s["session_id"] for s in hello["sessions"]) == ["s-1", "s-2"]
    assert {s["session_id"]: s["lease_until"] for s in hello["sessions"]} == {
        s["session_id"]: s["lease_until"] for s in sessions(agent).values()}
    assert all(a[2].get("Authorization") == "Bearer " + TOKEN for a in console.attempts)
    assert "HTTP 503" in agent.log(), agent.describe()


@pytest.mark.parametrize("how", ["http-401", "close-4000"])
def test_refusals_and_closes_are_reported_and_retried(control_agents, fake_consoles, how):
    console = fake_consoles()
    if how == "http-401":
        console.refuse(http.HTTPStatus.UNAUTHORIZED)
        agent = control_agents(console.url(), TOKEN)
        expected = "cannot connect to %s: HTTP 401: the console refused the agent token" % (
            console.url())
    else:
        agent, _ = connected_agent(control_agents, console)
        console.close_conn(4000, "speaks protocol versions 2")
        expected = "connection to %s closed: closed by the console (code 4000: speaks protocol " \
                   "versions 2)" % console.url()
    err = rs.wait_until(lambda: console_view(agent).get("last_error"), 5,
                        "an error in the agent's status", agent=agent)
    assert err == expected
    assert expected in agent.log()
    attempts = len(console.attempts)
    rs.wait_until(lambda: len(console.attempts) > attempts, 3, "another attempt", agent=agent)
    if how == "http-401":
        assert console.conns == [] and console_view(agent)["connects"] == 0


# ---------------------------------------------------------------------------------------------
# 7. Heartbeat


SLEEPER = "import time; print('READY {}', flush=True); time.sleep(120)"


def test_status_heartbeat_every_10s(control_agents, fake_consoles, spawn):
    project = rs.unique("proj")
    app = rs.unique("app")
    # A Python process of the node (not selected by the session: nothing is sampled).
    target = spawn([rs.interpreter(rs.MAIN_INTERP).path, "-c", SLEEPER],
                   env=rs.app_env(app, project + "-x", "prod"))
    target.wait_ready()
    console = fake_consoles()
    agent, _ = connected_agent(control_agents, console)
    hello_at = time.monotonic()
    start = start_cmd("c-1", "s-1", project, lease_s=120)
    command(console, start)
    st = console.expect("status", timeout=13)
    at = time.monotonic()
    assert 9.0 <= at - hello_at <= 11.5, at - hello_at
    assert st["v"] == 1
    mine = [t for t in st["targets"] if t["pid"] == target.pid]
    assert mine and mine[0]["application"] == app and mine[0]["project"] == project + "-x", \
        st["targets"]
    assert [x["session_id"] for x in st["sessions"]] == ["s-1"], st
    s0 = st["sessions"][0]
    assert (s0["session_id"], s0["state"], s0["lease_until"]) == (
        "s-1", "running", start["quota"]["lease_until"])
    assert 7 <= s0.get("profiling_s", 0) <= 12, st
    for key in ("samples", "sample_errors"):
        assert isinstance(st.get(key, 0), int)
    assert set(st.get("uploads", {})) <= {"sent", "failed", "spooled", "evicted"}
    st2 = console.expect("status", timeout=13)
    assert 9.0 <= time.monotonic() - at <= 11.5
    assert st2["sessions"][0]["profiling_s"] >= s0["profiling_s"] + 8


# ---------------------------------------------------------------------------------------------
# 8. TLS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """Two self-signed certificates for 127.0.0.1 and localhost (openssl CLI): (cert, key) and
    another cert that did not sign the first."""
    d = tmp_path_factory.mktemp("tls")

    def make(name):
        cert, key = d / (name + ".pem"), d / (name + "-key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return cert, key

    return make("console"), make("other")


@pytest.fixture(scope="module")
def elsewhere_certificate(tmp_path_factory):
    """A self-signed certificate for another host name only: (cert, key)."""
    d = tmp_path_factory.mktemp("tls-elsewhere")
    cert, key = d / "elsewhere.pem", d / "elsewhere-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=elsewhere.example",
                    "-addext", "subjectAltName=DNS:elsewhere.example"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_wss_with_the_ca_file_works(control_agents, fake_consoles, certificates):
    (cert, key), _ = certificates
    console = fake_consoles(ssl_context=tls_context(cert, key))
    agent, hello = connected_agent(control_agents, console, extra=["--console-ca-file", cert])
    assert console.url().startswith("wss://")
    assert hello["v"] == 1 and console.conn(0).headers["Authorization"] == "Bearer " + TOKEN
    command(console, start_cmd("c-1", "s-1", rs.unique("proj")))
    wait_session(agent, "s-1", lambda s: s["active"], 3, "active")
    assert console_view(agent)["last_error"] == ""


@pytest.mark.parametrize("ca", ["none", "other", "wrong-host"])
def test_wss_without_a_trusted_ca_fails_clearly(control_agents, fake_consoles, certificates,
                                                elsewhere_certificate, ca):
    (cert, key), (other, _) = certificates
    if ca == "wrong-host":  # trusted (it is the CA file), but made for another host
        cert, key = elsewhere_certificate
    console = fake_consoles(ssl_context=tls_context(cert, key))
    extra = {"none": [], "other": ["--console-ca-file", other],
             "wrong-host": ["--console-ca-file", cert]}[ca]
    agent = control_agents(console.url(), TOKEN, extra=extra)
    err = rs.wait_until(lambda: console_view(agent).get("last_error"), 5,
                        "an error in the agent's status", agent=agent)
    assert err.startswith("cannot connect to %s: console certificate " % console.url()), err
    assert {"none": "not trusted: self-signed certificate (depth 0; set the console CA file)",
            "other": "not trusted: self-signed certificate (depth 0; not signed by the CA file)",
            "wrong-host": "not valid for 127.0.0.1: IP address mismatch"}[ca] in err, err
    assert err in agent.log()
    time.sleep(1.5)  # at least one more attempt
    view = console_view(agent)
    assert not view["connected"] and view["connects"] == 0
    assert console.conns == [] and console.attempts == []
    with pytest.raises(AssertionError):
        console.expect("hello", timeout=0.2)
