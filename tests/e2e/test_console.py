"""End-to-end tests of `conprof-console`: the real binary on 127.0.0.1, REST with urllib, the
agents' websocket with a fake agent (console_support.FakeAgent), ingest of a real profile recorded
by `conprof-agent record`, read back through the query API and `go tool pprof`."""

import asyncio
import glob
import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

import console_support as cs  # noqa: E402
from console_support import consoles, fake_agents  # noqa: E402,F401

ENV_PATH = "/api/v1/projects/%s/environments/%s"


@pytest.fixture(scope="module", autouse=True)
def console_binary():
    path = cs.console_path()
    if not (path.is_file() and os.access(str(path), os.X_OK)):
        pytest.fail("the console %s does not exist: run `make build/conprof-console` or set CONPROF_CONSOLE"
                    % path, pytrace=False)


def tokens(data_dir, **agent_projects):
    """An API token and agent tokens: agent=None (every project), others by name -> project."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out = {"api": cs.token_create(data_dir, "ui", api=True),
           "agent": cs.token_create(data_dir, "node-all")}
    for name, project in agent_projects.items():
        out[name] = cs.token_create(data_dir, name, project=project)
    return out


def toggle(console, token, project, env, on, expect=200):
    return console.api("PUT", ENV_PATH % (project, env) + "/profiling", token, body={"enabled": on},
                       expect=expect)


# ---------------------------------------------------------------------------------------------
# Command line

def test_cli_usage_errors_name_the_flag(tmp_path):
    cases = [
        ([], None),
        (["serve", "--data", tmp_path], "--listen"),
        (["serve", "--listen", "127.0.0.1:8080"], "--data"),
        (["serve", "--listen", "localhost", "--data", tmp_path], "--listen"),
        (["serve", "--listen", "127.0.0.1:99999", "--data", tmp_path], "--listen"),
        (["serve", "--listen", "127.0.0.1:1", "--data", tmp_path, "--tick-ms", "abc"], "--tick-ms"),
        (["serve", "--listen", "127.0.0.1:1", "--data", tmp_path, "--free-budget", "-3"], "--free-budget"),
        (["serve", "--listen", "127.0.0.1:1", "--data", tmp_path, "--cert", "x.pem"], "--key"),
        (["serve", "--bogus"], "--bogus"),
        (["token", "create", "--data", tmp_path], "--name"),
        (["token", "create", "--name", "x"], "--data"),
        (["token", "frobnicate"], "frobnicate"),
        (["nonsense"], "nonsense"),
    ]
    for args, flag in cases:
        res = cs.run_console(args)
        assert res.returncode == 2, "%s: exit %d, stderr %s" % (args, res.returncode, res.stderr)
        if flag:
            assert flag in res.stderr, "%s: the message does not name %s: %s" % (args, flag, res.stderr)
    for args in (["--help"], ["serve", "--help"], ["token", "--help"], ["token", "create", "--help"], ["version"]):
        res = cs.run_console(args)
        assert res.returncode == 0, "%s: %s" % (args, res.stderr)
        assert res.stdout
    assert cs.run_console(["version"]).stdout.startswith("conprof-console ")


def test_port_in_use_and_bad_data_dir(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = cs.run_console(["serve", "--listen", "127.0.0.1:%d" % port, "--data", tmp_path / "d"], timeout=10)
        assert res.returncode == 1, res.stderr
        assert "127.0.0.1:%d" % port in res.stderr and "in use" in res.stderr, res.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = cs.run_console(["serve", "--listen", "127.0.0.1:%d" % cs.free_port(), "--data", blocker / "sub"],
                         timeout=10)
    assert res.returncode == 1, res.stderr
    assert str(blocker) in res.stderr, res.stderr


def test_tokens_cli(tmp_path, consoles):
    d = tmp_path / "data"
    t = tokens(d, node_a="a")
    listing = cs.run_console(["token", "list", "--data", d])
    assert listing.returncode == 0
    for name in ("ui", "node-all", "node_a"):
        assert name in listing.stdout, listing.stdout
    assert t["api"] not in listing.stdout and t["agent"] not in listing.stdout  # only hashes are kept
    dup = cs.run_console(["token", "create", "--data", d, "--name", "ui", "--api"])
    assert dup.returncode != 0 and "ui" in dup.stderr
    c = consoles(data_dir=d)
    c.api("GET", "/api/v1/projects", t["api"])
    res = cs.run_console(["token", "revoke", "--data", d, "--name", "ui"])
    assert res.returncode == 0, res.stderr
    assert "ui" not in cs.run_console(["token", "list", "--data", d]).stdout.split()
    c.api("GET", "/api/v1/projects", t["api"], expect=401)
    missing = cs.run_console(["token", "revoke", "--data", d, "--name", "nobody"])
    assert missing.returncode != 0 and "nobody" in missing.stderr


def test_sigterm_closes_cleanly(tmp_path, consoles):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    agent = cs.FakeAgent(c.ws_url, t["agent"]).connect()
    agent.hello()
    assert c.stop() == 0, c.output()
    assert agent.closed.wait(5)
    agent.close()
    assert "shutting down" in c.output()


def test_tls(tmp_path, consoles):
    d = tmp_path / "data"
    t = tokens(d)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    res = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                          "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                          "-out", str(cert)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    missing = cs.run_console(["serve", "--listen", "127.0.0.1:%d" % cs.free_port(), "--data", d,
                              "--cert", tmp_path / "nope.pem", "--key", key])
    assert missing.returncode == 1 and "nope.pem" in missing.stderr, missing.stderr
    c = consoles(extra=["--cert", cert, "--key", key], data_dir=d)
    ctx = ssl.create_default_context(cafile=str(cert))
    req = urllib.request.Request("https://127.0.0.1:%d/api/v1/projects" % c.port,
                                 headers={"Authorization": "Bearer " + t["api"]})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        assert r.status == 200 and json.loads(r.read()) == {"projects": []}

    async def wss_hello():
        async with websockets.connect("wss://127.0.0.1:%d/agent/v1" % c.port, ssl=ctx,
                                      subprotocols=[cs.SUBPROTOCOL],
                                      extra_headers={"Authorization": "Bearer " + t["agent"]}) as ws:
            await ws.send(json.dumps({"type": "hello", "v": 1, "agent_id": "tls-1", "node": "n",
                                      "agent_version": "0.1.0"}))
            await ws.ping()
    asyncio.run(wss_hello())
    req = urllib.request.Request("https://127.0.0.1:%d/api/v1/agents" % c.port,
                                 headers={"Authorization": "Bearer " + t["api"]})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        agents = json.loads(r.read())["agents"]
    assert [a["agent_id"] for a in agents] == ["tls-1"]


# ---------------------------------------------------------------------------------------------
# REST

def test_rest_errors(tmp_path, consoles):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    assert c.request("GET", "/api/v1/projects").status == 401
    assert c.request("GET", "/api/v1/projects", token="cpk_AAAA").status == 401
    assert c.request("GET", "/api/v1/projects", token=t["agent"]).status == 403
    r = c.request("GET", "/api/v1/nothing", token=t["api"])
    assert r.status == 404 and r.json()["code"] == 404 and r.json()["message"]
    assert c.request("GET", "/", token=t["api"]).status == 404
    assert c.request("POST", "/api/v1/projects", token=t["api"], body={}).status == 405
    assert c.request("DELETE", "/api/v1/projects/p", token=t["api"]).status == 405
    r = c.request("PUT", "/api/v1/projects/p", token=t["api"], body=b"{" + b" " * (64 * 1024) + b"}")
    assert r.status == 413, r
    assert c.request("GET", "/api/v1/projects/p", token=t["api"]).status == 404  # nothing created
    assert c.request("PUT", "/api/v1/projects/p", token=t["api"], body="{bad json").status == 400
    assert c.request("PUT", "/api/v1/projects/p", token=t["api"], body={"plan": "gold"}).status == 400
    assert c.request("POST", "/ingest", token=t["api"], body=b"x").status == 403
    # keep-alive connections survive many requests; the console still answers
    for _ in range(20):
        assert c.request("GET", "/api/v1/projects", token=t["api"]).status == 200


def test_ingest_body_over_limit_is_413(tmp_path, consoles):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        s.sendall(("POST /ingest?name=app HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (t["agent"], 33 * 1024 * 1024)).encode())
        s.sendall(b"\0" * 65536)
        answer = s.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer


def test_projects_and_plans(tmp_path, consoles):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    p = c.api("PUT", "/api/v1/projects/shop", t["api"], body={"plan": "addon"})
    assert p["plan"] == "addon" and p["budget_s"] == 2592000 and p["exhausted"] is False
    e = c.api("PUT", ENV_PATH % ("shop", "prod"), t["api"], body={})
    assert e == {"project": "shop", "id": "prod", "profiling": False, "session_id": None, "lease_until": None}
    projects = c.api("GET", "/api/v1/projects", t["api"])["projects"]
    assert [x["id"] for x in projects] == ["shop"]
    assert [x["id"] for x in projects[0]["environments"]] == ["prod"]


# ---------------------------------------------------------------------------------------------
# Websocket

def test_ws_rejects_bad_tokens_before_any_message(tmp_path, consoles):
    d = tmp_path / "data"
    t = tokens(d)
    cs.token_create(d, "gone")
    c = consoles(data_dir=d)
    assert cs.connect_status(c.ws_url, None) == 401
    assert cs.connect_status(c.ws_url, "") == 401
    assert cs.connect_status(c.ws_url, "cpa_unknownunknownunknownunknownunknownunkno") == 401
    assert cs.connect_status(c.ws_url, t["api"]) == 403
    assert cs.connect_status(c.ws_url, t["agent"], subprotocol=None) == 400
    assert cs.connect_status(c.ws_url.replace("/agent/v1", "/agent/v2"), t["agent"]) == 404
    assert cs.connect_status(c.ws_url, t["agent"]) == 101
    revoked = cs.token_create(d, "to-revoke")
    assert cs.connect_status(c.ws_url, revoked) == 101
    assert cs.run_console(["token", "revoke", "--data", d, "--name", "to-revoke"]).returncode == 0
    assert cs.connect_status(c.ws_url, revoked) == 401
    assert c.api("GET", "/api/v1/agents", t["api"])["agents"] == []  # none got as far as hello


def test_toggle_starts_and_stops_agents_within_2s(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    agent = fake_agents(c.ws_url, t["agent"])
    agent.hello(agent_id="a1", node="n1")
    agent.expect_none("start")
    t0 = time.monotonic()
    env = toggle(c, t["api"], "shop", "prod", True)
    start = agent.expect("start", timeout=2)
    assert time.monotonic() - t0 < 2
    assert env["profiling"] is True and env["session_id"] == start["session_id"]
    assert start["project"] == "shop" and start["environment"] == "prod"
    assert start["selector"] == {"project": "shop", "environment": "prod"}
    assert start["period"] == 45 and start["upload_timeout"] == 10 and start["labels"] == {}
    q = start["quota"]
    assert q["plan"] == "free" and q["budget_left"] <= 900
    assert 0 < q["lease_until"] - time.time() <= 301
    assert env["lease_until"] == q["lease_until"]

    # a second agent says hello while profiling is on: it gets the session at once
    other = fake_agents(c.ws_url, t["agent"])
    other.hello(agent_id="a2", node="n2")
    assert other.expect("start", timeout=2)["session_id"] == start["session_id"]

    t0 = time.monotonic()
    toggle(c, t["api"], "shop", "prod", False)
    for a in (agent, other):
        stop = a.expect("stop", timeout=2)
        assert stop["session_id"] == start["session_id"] and stop["reason"] == "toggle off"
    assert time.monotonic() - t0 < 2

    agents = c.api("GET", "/api/v1/agents", t["api"])["agents"]
    assert sorted(a["agent_id"] for a in agents) == ["a1", "a2"]
    assert all(a["connected"] and a["name"] == "node-all" for a in agents)


def test_hello_reconciles_sessions(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    env = toggle(c, t["api"], "shop", "prod", True)
    agent = fake_agents(c.ws_url, t["agent"])
    agent.hello(sessions=[{"session_id": env["session_id"], "lease_until": int(time.time()) + 30},
                          {"session_id": "stale-1", "lease_until": int(time.time()) + 30}])
    assert agent.expect("start")["session_id"] == env["session_id"]
    assert agent.expect("stop")["session_id"] == "stale-1"
    agent.expect_none("stop", pred=lambda m: m["session_id"] == env["session_id"])


def test_bad_messages_keep_the_connection_and_change_nothing(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    agent = fake_agents(c.ws_url, t["agent"])
    agent.hello(agent_id="a1", node="n1", targets=[{"pid": 7, "application": "web"}])
    before_projects = c.api("GET", "/api/v1/projects", t["api"])
    bad = ["not json", "[1,2]", "{}", '{"type":"bogus","v":1}', '{"type":"hello","v":1}',
           '{"type":"start","v":1,"id":"x","session_id":"s"}', '{"type":"status","v":1,"samples":-1}',
           '{"type":"ack","v":1,"id":"has spaces"}', "x" * 70000,
           json.dumps({"type": "status", "v": 1, "targets": [{"pid": 1, "application": "a" * 60000}] * 2})]
    for frame in bad:
        agent.send_raw(frame)
    agent.send_raw(b"\x00\x01binary")
    agent.ping()
    assert agent.is_open()
    agent.expect_none("start")
    assert c.api("GET", "/api/v1/projects", t["api"]) == before_projects
    listed = c.api("GET", "/api/v1/agents", t["api"])["agents"]
    assert len(listed) == 1 and listed[0]["targets"] == [{"pid": 7, "application": "web"}]
    events = c.api("GET", "/api/v1/events", t["api"])["events"]
    assert any(e["kind"] == "rejected_frame" for e in events)
    # the connection still works: a toggle reaches it
    toggle(c, t["api"], "shop", "prod", True)
    agent.expect("start", timeout=2)
    # an event and a nack are kept
    agent.send({"type": "event", "v": 1, "kind": "error", "message": "disk full"})
    agent.send({"type": "nack", "v": 1, "id": "c1", "field": "period", "error": "out of range"})
    agent.ping()
    kinds = [e["kind"] for e in c.api("GET", "/api/v1/events", t["api"])["events"]]
    assert kinds[:2] == ["nack", "error"], kinds


def test_other_protocol_version_is_closed_4000(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    agent = fake_agents(c.ws_url, t["agent"])
    agent.send({"type": "hello", "v": 2, "agent_id": "a", "node": "n", "agent_version": "9"})
    assert agent.closed.wait(5)
    assert agent.close_code == 4000


def test_quota_runs_out_then_plan_change(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(extra=["--free-budget", 3, "--tick-ms", 200], data_dir=d)
    agent = fake_agents(c.ws_url, t["agent"])
    agent.hello()
    env = toggle(c, t["api"], "shop", "prod", True)
    start = agent.expect("start")
    assert start["quota"]["budget_left"] <= 3
    assert start["quota"]["lease_until"] <= time.time() + 4
    stop = agent.expect("stop", timeout=8)
    assert stop["session_id"] == env["session_id"] and stop["reason"] == "quota exhausted"
    p = c.api("GET", "/api/v1/projects/shop", t["api"])
    assert p["exhausted"] is True and p["left_s"] == 0
    assert p["environments"][0]["profiling"] is False
    r = toggle(c, t["api"], "shop", "prod", True, expect=409)
    assert r["code"] == 409 and "quota" in r["message"]
    agent.expect_none("start")
    c.api("PUT", "/api/v1/projects/shop", t["api"], body={"plan": "addon"})
    env = toggle(c, t["api"], "shop", "prod", True)
    assert agent.expect("start")["session_id"] == env["session_id"]


def test_leases_are_renewed(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(extra=["--max-lease", 3, "--tick-ms", 200], data_dir=d)
    agent = fake_agents(c.ws_url, t["agent"])
    agent.hello()
    env = toggle(c, t["api"], "shop", "prod", True)
    first = agent.expect("start")["quota"]["lease_until"]
    lease = agent.expect("lease", timeout=3)
    assert lease["session_id"] == env["session_id"]
    assert lease["lease_until"] >= first and lease["lease_until"] <= time.time() + 4
    assert agent.expect("lease", timeout=3)["lease_until"] >= lease["lease_until"]


def test_restart_keeps_state(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    env = toggle(c, t["api"], "shop", "prod", True)
    c.api("PUT", "/api/v1/projects/other", t["api"], body={"plan": "addon"})
    agent = fake_agents(c.ws_url, t["agent"])
    agent.hello(agent_id="a1")
    agent.expect("start")
    assert c.stop() == 0
    assert agent.closed.wait(5)
    c2 = consoles(data_dir=d, port=c.port)
    p = c2.api("GET", "/api/v1/projects/shop", t["api"])
    assert p["environments"][0]["profiling"] is True
    assert p["environments"][0]["session_id"] == env["session_id"]
    assert c2.api("GET", "/api/v1/projects/other", t["api"])["plan"] == "addon"
    listed = c2.api("GET", "/api/v1/agents", t["api"])["agents"]
    assert [(a["agent_id"], a["connected"]) for a in listed] == [("a1", False)]
    again = fake_agents(c2.ws_url, t["agent"])
    again.hello(agent_id="a1", sessions=[{"session_id": env["session_id"], "lease_until": env["lease_until"]}])
    assert again.expect("start")["session_id"] == env["session_id"]
    again.expect_none("stop")


def test_project_tokens_keep_projects_apart(tmp_path, consoles, fake_agents):
    d = tmp_path / "data"
    t = tokens(d, node_a="a", node_b="b")
    c = consoles(data_dir=d)
    a = fake_agents(c.ws_url, t["node_a"])
    a.hello(agent_id="agent-a")
    b = fake_agents(c.ws_url, t["node_b"])
    b.hello(agent_id="agent-b")
    env_a = toggle(c, t["api"], "a", "prod", True)
    assert a.expect("start")["project"] == "a"
    b.expect_none("start")
    env_b = toggle(c, t["api"], "b", "prod", True)
    assert b.expect("start")["session_id"] == env_b["session_id"]
    a.expect_none("start")
    toggle(c, t["api"], "a", "prod", False)
    assert a.expect("stop")["session_id"] == env_a["session_id"]
    b.expect_none("stop")


# ---------------------------------------------------------------------------------------------
# Ingest and query

WORKLOAD = """
import sys, time
def hot_function():
    x = 0
    for i in range(200000):
        x += i
    return x
def main():
    sys.stdout.write("READY\\n"); sys.stdout.flush()
    while True:
        hot_function()
main()
"""


def python_interpreter():
    found = sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12"))
    if not found:
        pytest.fail("no pyenv Python 3.12 to record", pytrace=False)
    return found[-1]


@pytest.fixture
def recorded_pprof(tmp_path):
    """A gzipped pprof of a busy Python process, written by `conprof-agent record`."""
    agent = cs.REPO / "build" / "conprof-agent"
    if not agent.is_file():
        pytest.fail("build/conprof-agent is missing: run make", pytrace=False)
    script = tmp_path / "work.py"
    script.write_text(WORKLOAD)
    proc = subprocess.Popen([python_interpreter(), str(script)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"READY"
        out = tmp_path / "profile.pb.gz"
        res = subprocess.run([str(agent), "record", "--pid", str(proc.pid), "-d", "2", "-o", str(out), "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert res.returncode == 0, res.stderr.decode()
        return out.read_bytes()
    finally:
        proc.kill()
        proc.wait()


def go_pprof_top(path, workdir):
    env = dict(os.environ)
    for name in ("HOME", "GOCACHE", "GOPATH", "PPROF_TMPDIR"):
        p = Path(workdir) / ("go-" + name.lower())
        p.mkdir(parents=True, exist_ok=True)
        env[name] = str(p)
    env.update(GOFLAGS="", GOTOOLCHAIN="local", GOPROXY="off")
    res = subprocess.run(["go", "tool", "pprof", "-symbolize=none", "-top", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def test_ingest_then_query(tmp_path, consoles, recorded_pprof):
    d = tmp_path / "data"
    t = tokens(d)
    c = consoles(data_dir=d)
    now = int(time.time())
    name = "web{project_id=shop,environment=prod,host=box1}"
    query = {"name": name, "from": now - 10, "until": now, "format": "pprof", "spyName": "conprof",
             "sampleRate": 100}
    r = c.request("POST", "/ingest", body=recorded_pprof, token=t["agent"], query=query,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert r.json() == {"stored": 1}

    base = ENV_PATH % ("shop", "prod") + "/continuous-profiling"
    apps = c.api("GET", base, t["api"])["applications"]
    assert list(apps) == ["web"]
    assert "cpu" in apps["web"]["profile_types"] and apps["web"]["languages"] == ["python"]

    rng = {"from": now - 600, "to": now + 60}
    tl = c.api("GET", base + "/app/web", t["api"], query=dict(rng, profile_type="cpu"))
    assert tl["grain"] >= 60 and tl["unit"] == "nanoseconds_per_second"
    assert any("value" in p and p["value"] > 0 for p in tl["points"]), tl
    assert any("value" not in p for p in tl["points"])

    r = c.request("GET", base + "/app/web/merge", token=t["api"], query=dict(rng, out="pprof"))
    assert r.status == 200 and "attachment" in r.headers.get("Content-Disposition", "")
    merged = tmp_path / "merged.pb.gz"
    merged.write_bytes(r.body)
    assert "hot_function" in go_pprof_top(merged, tmp_path)

    r = c.request("GET", base + "/app/web/merge", token=t["api"], query=dict(rng, out="collapsed"))
    assert r.status == 200
    lines = r.body.decode().splitlines()
    assert lines and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert any("hot_function" in line for line in lines)

    fb = c.api("GET", base + "/app/web/merge", t["api"], query=dict(rng, out="flamebearer"))
    assert fb["metadata"]["format"] == "single"
    assert fb["flamebearer"]["numTicks"] > 0
    assert any("hot_function" in n for n in fb["flamebearer"]["names"])

    filt = c.api("GET", base + "/app/web/filter", t["api"], query=rng)
    assert "fields" in filt and filt["max_applicable_filters"] == 5

    # garbage bodies: 400 and nothing stored
    before = c.api("GET", base + "/app/web", t["api"], query=dict(rng, profile_type="cpu"))
    for body in (b"", b"garbage", b"\x1f\x8b\x08\x00broken gzip", gzip.compress(b"\xff" * 100)):
        r = c.request("POST", "/ingest", body=body, token=t["agent"], query=query)
        assert r.status == 400, (body, r)
        assert r.json()["message"]
    r = c.request("POST", "/profiling/v1/input", body=b"--x\r\n\r\n--x--", token=t["agent"],
                  headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status == 400, r
    after = c.api("GET", base + "/app/web", t["api"], query=dict(rng, profile_type="cpu"))
    assert after["points"] == before["points"]
    assert list(c.api("GET", base, t["api"])["applications"]) == ["web"]


def test_ingest_multipart_and_project_tokens(tmp_path, consoles, recorded_pprof):
    d = tmp_path / "data"
    t = tokens(d, node_a="a")
    c = consoles(data_dir=d)
    raw = gzip.decompress(recorded_pprof)
    event = {"attachments": ["cpu.pprof"], "tags_profiler": "service:api,environment:prod",
             "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 10)),
             "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "family": "python", "version": "4"}
    boundary = "b0undary"
    parts = [("event", "event.json", json.dumps(event).encode()), ("cpu.pprof", "cpu.pprof", raw)]
    body = b""
    for name, filename, data in parts:
        body += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n\r\n"
                 % (boundary, name, filename)).encode() + data + b"\r\n"
    body += ("--%s--\r\n" % boundary).encode()
    ct = {"Content-Type": "multipart/form-data; boundary=" + boundary}
    # no project label: the unrestricted token cannot place it; the project-a token puts it in a
    r = c.request("POST", "/profiling/v1/input", body=body, token=t["agent"], headers=ct)
    assert r.status == 400 and "project" in r.json()["message"], r
    r = c.request("POST", "/profiling/v1/input", body=body, token=t["node_a"], headers=ct)
    assert r.status == 200 and r.json() == {"stored": 1}, r
    apps = c.api("GET", ENV_PATH % ("a", "prod") + "/continuous-profiling", t["api"])["applications"]
    assert list(apps) == ["api"]
    # the project-a token may not write into another project
    r = c.request("POST", "/ingest", body=recorded_pprof, token=t["node_a"],
                  query={"name": "web{project_id=b,environment=prod}", "from": int(time.time()) - 10,
                         "until": int(time.time())})
    assert r.status == 403, r
