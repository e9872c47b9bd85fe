"""Helpers and fixtures for the end-to-end tests of `conprof-console` (tests/e2e/test_console.py).

The console is run for real (build/conprof-console, or $CONPROF_CONSOLE) on 127.0.0.1 with a free
port and a temporary data directory. The REST API is called with urllib; the agents' websocket is
driven by FakeAgent, a websocket client (python3-websockets 10.4, asyncio) running its own event
loop in a thread, so tests read as plain sequential code: connect, send hello, expect a `start`.
Every console and fake agent made here is stopped by the fixture that made it, also when the
test fails. Import the fixtures into a test module (`from console_support import ...`)."""

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import websockets

import e2e_support as sup

free_port = sup.free_port

REPO = Path(__file__).resolve().parents[2]
SUBPROTOCOL = "conprof-agent-v1"


def console_path():
    return Path(os.environ.get("CONPROF_CONSOLE", REPO / "build" / "conprof-console"))


def run_console(args, timeout=30):
    """Runs a one-shot console command; returns the CompletedProcess (text)."""
    argv = [str(console_path())] + [str(a) for a in args]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, text=True)


def token_create(data_dir, name, project=None, api=False):
    args = ["token", "create", "--data", data_dir, "--name", name]
    if project:
        args += ["--project", project]
    if api:
        args.append("--api")
    res = run_console(args)
    assert res.returncode == 0, "token create failed: %s" % res.stderr
    token = res.stdout.strip()
    assert token.startswith("cpk_" if api else "cpa_"), token
    return token


def wait_until(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "Response(%d, %r)" % (self.status, self.body[:300])


class Console:
    """A running `conprof-console serve`; stop() sends SIGTERM and checks the exit status."""

    def __init__(self, data_dir, extra=(), port=None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.extra = [str(a) for a in extra]
        self.log_path = self.data_dir.parent / ("console-%d.log" % self.port)
        self.proc = None

    def start(self):
        argv = [str(console_path()), "serve", "--listen", "127.0.0.1:%d" % self.port, "--data",
                str(self.data_dir)] + self.extra
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        wait_until(self._answers, 10, "the console to listen on port %d\n%s" % (self.port, self.output()))
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError("the console exited with %s:\n%s" % (self.proc.returncode, self.output()))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def output(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=10):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the console ignored SIGTERM for %s s:\n%s" % (timeout, self.output()))
        self.log.close()
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.log.close()

    def request(self, method, path, body=None, token=None, query=None, headers=None, timeout=30):
        url = self.base + path
        if query:
            url += "?" + (query if isinstance(query, str) else urllib.parse.urlencode(query, doseq=True))
        data = body
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        if token:
            hdrs["Authorization"] = "Bearer " + token
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.read(), r.headers)
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read(), e.headers)

    def api(self, method, path, token, body=None, query=None, expect=200):
        r = self.request(method, path, body=body, token=token, query=query)
        assert r.status == expect, "%s %s: expected %d, got %r" % (method, path, expect, r)
        return r.json() if r.headers.get("Content-Type", "").startswith("application/json") else r.body

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/agent/v1" % self.port


class FakeAgent:
    """A websocket peer speaking the agent side of PROTOCOL.md, driven from the test's thread.

    Received frames are decoded and queued; expect() waits for one matching a type/predicate and
    keeps the others. With auto_ack, every command is answered with an ack."""

    def __init__(self, url, token, auto_ack=True, subprotocol=SUBPROTOCOL):
        self.url = url
        self.token = token
        self.auto_ack = auto_ack
        self.subprotocol = subprotocol
        self.inbox = queue.Queue()
        self.seen = []
        self.closed = threading.Event()
        self.close_code = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ws = None

    def _run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self):
        headers = {"Authorization": "Bearer " + self.token} if self.token is not None else {}
        subprotocols = [self.subprotocol] if self.subprotocol else None
        self.ws = await websockets.connect(self.url, subprotocols=subprotocols, extra_headers=headers,
                                           max_size=None, open_timeout=5, ping_interval=None)
        self.loop.create_task(self._reader())

    async def _reader(self):
        try:
            async for frame in self.ws:
                msg = json.loads(frame)
                if self.auto_ack and msg.get("id") and msg.get("type") in ("start", "stop", "config", "lease"):
                    await self.ws.send(json.dumps({"type": "ack", "v": 1, "id": msg["id"]}))
                self.inbox.put(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    def connect(self):
        self._run(self._connect())
        return self

    def send_raw(self, data):
        self._run(self.ws.send(data))

    def send(self, msg):
        self.send_raw(json.dumps(msg))

    def hello(self, agent_id="agent-1", node="node-1", sessions=(), targets=()):
        self.send({"type": "hello", "v": 1, "agent_id": agent_id, "node": node, "agent_version": "0.1.0",
                   "capabilities": ["cpu", "wall"], "targets": list(targets), "sessions": list(sessions)})

    def expect(self, type_, timeout=2.0, pred=None, what=None):
        """The next received message of type_ (and matching pred), waiting at most timeout s."""
        for i, m in enumerate(self.seen):
            if m.get("type") == type_ and (pred is None or pred(m)):
                return self.seen.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s within %.1f s (got %s)" % (what or type_, timeout, self.seen))
            try:
                m = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if m.get("type") == type_ and (pred is None or pred(m)):
                return m
            self.seen.append(m)

    def expect_none(self, type_, wait=0.5, pred=None):
        try:
            m = self.expect(type_, timeout=wait, pred=pred)
        except AssertionError:
            return
        raise AssertionError("unexpected %s: %s" % (type_, m))

    def drain(self, wait=0.3):
        time.sleep(wait)
        while not self.inbox.empty():
            self.seen.append(self.inbox.get())
        out, self.seen = self.seen, []
        return out

    def is_open(self):
        return self.ws is not None and not self.closed.is_set()

    def ping(self):
        """Round trip through the server (a websocket ping): proves the connection is alive."""
        async def do():
            waiter = await self.ws.ping()
            await asyncio.wait_for(waiter, 5)
        self._run(do())

    def close(self):
        if self.ws is not None and not self.closed.is_set():
            try:
                self._run(self.ws.close(), timeout=5)
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def connect_status(url, token, subprotocol=SUBPROTOCOL):
    """Tries a websocket upgrade; returns the HTTP status of a refusal, or 101 when accepted."""
    async def attempt():
        headers = {"Authorization": "Bearer " + token} if token is not None else {}
        try:
            ws = await websockets.connect(url, subprotocols=[subprotocol] if subprotocol else None,
                                          extra_headers=headers, open_timeout=5)
        except websockets.InvalidStatusCode as e:
            return e.status_code
        await ws.close()
        return 101
    return asyncio.run(attempt())


@pytest.fixture
def consoles(tmp_path):
    """consoles(extra=(), data_dir=None, port=None) -> a started Console. At the end each one still
    running gets SIGTERM and must exit 0 (a clean shutdown; under ASan also: no leaks)."""
    started = []

    def start(extra=(), data_dir=None, port=None):
        d = Path(data_dir) if data_dir else tmp_path / ("data-%d" % len(started))
        c = Console(d, extra=extra, port=port).start()
        started.append(c)
        return c

    yield start
    unclean = []
    for c in started:
        running = c.proc is not None and c.proc.poll() is None
        try:
            rc = c.stop() if running else None
        except AssertionError as e:
            rc = str(e)
        if running and rc != 0:
            unclean.append("console on port %d: SIGTERM gave %r\n%s" % (c.port, rc, c.output()[-3000:]))
        c.kill()
    assert not unclean, "\n".join(unclean)


@pytest.fixture
def fake_agents():
    """fake_agents(url, token, **kw) -> a connected FakeAgent; all closed at the end."""
    made = []

    def make(url, token, **kw):
        a = FakeAgent(url, token, **kw)
        made.append(a)
        return a.connect()

    yield make
    for a in made:
        a.close()
