"""The agent's sinks end to end: agent/sink*.c and agent/spool.c driven by tests/sinks/sink_driver.c
(built here with gcc and ASan/UBSan against build/libconprof_sampler.a) against a real HTTP
receiver on 127.0.0.1 (http.server in a thread of the test) that records every request.

Checked: the Pyroscope ingest URL (the series name parsed the way Pyroscope parses it, labels
included; from/until; format; sampleRate; spyName), the bearer header, the body read by
`go tool pprof -raw`; 503 then 200 (retried, delivered); 429 with Retry-After in seconds and as
an HTTP date (the next attempt waits for it); a receiver hanging past upload_timeout (timed out,
retried, and sink_poll() never blocked meanwhile); 400 (dropped, counted, logged, not retried);
a receiver absent (profiles spooled) that comes up (all delivered, oldest first, nothing lost);
an agent restart with a non-empty spool; the spool cap (oldest evicted, counted); TLS
verification (refused without the CA, delivered with --ca).
"""
import email.utils
import gzip
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import e2e_support as sup

free_port = sup.free_port

REPO = sup.REPO
FROM_S = 1714564845  # the driver's default --from-unix-s
PERIOD_S = 45
TOKEN = "s3cret-token"

# ---------------------------------------------------------------------------------------------
# The driver


@pytest.fixture(scope="module")
def driver():
    lib = REPO / "build" / "libconprof_sampler.a"
    if not lib.is_file():
        pytest.fail("%s is missing: run `make build/libconprof_sampler.a`" % lib, pytrace=False)
    out = Path(tempfile.mkdtemp(prefix="conprof-sinks-")) / "sink_driver"
    srcs = ["tests/sinks/sink_driver.c", "agent/sink.c", "agent/sink_dir.c", "agent/sink_http.c",
            "agent/spool.c", "agent/profile_record.c"]
    argv = ["gcc", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-Isampler",
            "-Iagent", "-g", "-O1", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined", "-o", str(out)] + srcs + [
            str(lib), "-lelf", "-lz", "-ljansson", "-lcurl"]
    built = subprocess.run(argv, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert built.returncode == 0, "building the sink driver failed:\n" + built.stdout.decode()
    yield out
    shutil.rmtree(str(out.parent), ignore_errors=True)


def run_driver(driver, *args, timeout=60):
    """Runs the driver to its end: (its stats as a dict, its stderr)."""
    p = subprocess.run([str(driver)] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return driver_result(p.returncode, p.stdout, p.stderr, args)


def driver_result(rc, stdout, stderr, args):
    err = stderr.decode("utf-8", "replace")
    assert rc == 0, "sink_driver %s exited %d:\n%s" % (" ".join(map(str, args)), rc, err[-4000:])
    assert "runtime error" not in err and "Sanitizer" not in err, err[-4000:]
    lines = stdout.decode().strip().splitlines()
    assert lines, "sink_driver printed no stats; stderr:\n" + err[-4000:]
    return json.loads(lines[-1]), err


# ---------------------------------------------------------------------------------------------
# The receiver


class Receiver:
    """An HTTP(S) server on 127.0.0.1 that records requests and answers from a script: a list of
    steps {status, headers, body, delay} used in order (then 200 for everything)."""

    def __init__(self, script=(), port=0, tls=None):
        self.requests = []
        self.script = list(script)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                url = urllib.parse.urlsplit(self.path)
                with receiver.lock:
                    receiver.requests.append({
                        "t": time.monotonic(), "path": url.path,
                        "query": urllib.parse.parse_qs(url.query, keep_blank_values=True),
                        "headers": dict(self.headers.items()), "body": body})
                    step = receiver.script.pop(0) if receiver.script else {}
                if step.get("delay"):
                    time.sleep(step["delay"])
                answer = step.get("body", b"ok")
                try:
                    self.send_response(step.get("status", 200))
                    for k, v in step.get("headers", {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up (timeout test)

        return Handler

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if isinstance(self.server.socket, ssl.SSLSocket)
                                      else "http", self.port)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    """receivers(script=..., port=..., tls=...) -> a started Receiver, closed after the test."""
    started = []

    def start(*args, **kwargs):
        r = Receiver(*args, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="conprof-sinks-"))
    yield d
    shutil.rmtree(str(d), ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Checks


def parse_series_name(name):
    """Pyroscope's own parser (labelset.Parse): app{k=v,...}; values end at ',' or '}', trimmed."""
    state, app, key, value, labels = "name", "", "", "", {}
    for ch in name + "{":
        if state == "name":
            if ch == "{":
                state, app = "key", app.strip()
            else:
                app += ch
        elif state == "key":
            if ch == "}":
                state = "done"
            elif ch == "=":
                state, value = "value", ""
            else:
                key += ch
        elif state == "value":
            if ch in ",}":
                labels[key.strip()] = value.strip()
                key, state = "", "key"
            else:
                value += ch
    return app, labels


def check_series_name(name):
    app, labels = parse_series_name(name)
    assert app and all(c.isascii() and (c.isalnum() or c in "_.-/") for c in app), app
    for key in labels:  # what Pyroscope accepts, and Prometheus-style stores
        assert key and all(c.isascii() and (c.isalnum() or c == "_") for c in key), key
        assert not key[0].isdigit() and not key.startswith("__"), key
    return app, labels


def leaf_functions(body, workdir, name):
    """Writes a request body to a file, has `go tool pprof` read it; the functions it holds."""
    path = Path(workdir) / name
    path.write_bytes(body)
    types, samples, locations = sup.check_pprof(path, ["main"], workdir)
    return {f.name for frames in locations.values() for f in frames}


def request_from(req):
    return int(req["query"]["from"][0])


def work_index(body):
    """N of the work_N function in a profile (its string table, read without pprof)."""
    raw = gzip.decompress(body)
    found = [i for i in range(10) if b"work_%d" % i in raw]
    assert len(found) == 1, "work_N functions in the profile: %s" % found
    return found[0]


# ---------------------------------------------------------------------------------------------
# Tests


def test_upload_url_labels_bearer_and_pprof(driver, receivers, workdir):
    rx = receivers()
    stats, _ = run_driver(driver, "--url", rx.url + "/", "--token", TOKEN, "--count", 1,
                          "--label", "host=node-1", "--label", "environment= prod ",
                          "--label", "pod=web-1, zone={a}", "--label", "k8s.namespace=shop",
                          "--label", "note=caf\u00e9", "--label", "__name__=evil")
    assert stats["sent"] == 1 and stats["failed"] == 0 and stats["retried"] == 0, stats
    assert len(rx.requests) == 1
    req = rx.requests[0]
    assert req["path"] == "/ingest"
    q = req["query"]
    assert q["from"] == [str(FROM_S)] and q["until"] == [str(FROM_S + PERIOD_S)], q
    assert q["format"] == ["pprof"] and q["sampleRate"] == ["100"], q
    assert q["spyName"] == ["conprof"], q
    app, labels = check_series_name(q["name"][0])
    assert app == "shop"
    assert labels == {"application_name": "shop", "host": "node-1", "environment": "prod",
                      "pod": "web-1_ zone__a_", "k8s_namespace": "shop",
                      "note": "caf\u00e9"}, labels
    h = req["headers"]
    assert h.get("Authorization") == "Bearer " + TOKEN, h
    assert h.get("Content-Type") == "application/octet-stream", h
    assert h.get("User-Agent", "").startswith("conprof-agent/"), h
    assert "Expect" not in h, h
    assert int(h["Content-Length"]) == len(req["body"])
    assert "work_0" in leaf_functions(req["body"], workdir, "body.pb.gz")


def test_no_token_no_authorization_header(driver, receivers):
    rx = receivers()
    stats, _ = run_driver(driver, "--url", rx.url, "--count", 1)
    assert stats["sent"] == 1, stats
    assert "Authorization" not in rx.requests[0]["headers"]


def test_503_then_200_is_retried_and_delivered(driver, receivers):
    rx = receivers(script=[{"status": 503, "body": b"overloaded"}, {"status": 200}])
    stats, log = run_driver(driver, "--url", rx.url, "--count", 1, "--backoff-base-ms", 100,
                            "--backoff-cap-ms", 200)
    assert stats["sent"] == 1 and stats["retried"] == 1, stats
    assert stats["failed"] == 0 and stats["spooled"] == 0, stats
    assert "HTTP 503: overloaded" in stats["last_error"], stats
    assert "HTTP 503" in log
    assert len(rx.requests) == 2
    assert rx.requests[0]["body"] == rx.requests[1]["body"]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured(driver, receivers, form):
    if form == "seconds":
        after, least = "2", 1.9
    else:  # an HTTP date 3 s ahead, at one-second resolution: at least 2 s from now
        after, least = email.utils.formatdate(time.time() + 3, usegmt=True), 1.5
    rx = receivers(script=[{"status": 429, "headers": {"Retry-After": after}}, {"status": 200}])
    # a 10 ms backoff: without Retry-After the second attempt would come at once
    stats, log = run_driver(driver, "--url", rx.url, "--count", 1, "--backoff-base-ms", 10,
                            "--backoff-cap-ms", 10)
    assert stats["sent"] == 1 and stats["retried"] == 1, stats
    assert len(rx.requests) == 2
    gap = rx.requests[1]["t"] - rx.requests[0]["t"]
    assert least <= gap < least + 3, "second attempt %.2f s after the 429 (Retry-After %s)" % (
        gap, after)
    assert "(Retry-After)" in log and "HTTP 429" in log


def test_hanging_receiver_times_out_and_is_retried(driver, receivers):
    rx = receivers(script=[{"delay": 4.0}, {"status": 200}])
    t0 = time.monotonic()
    stats, log = run_driver(driver, "--url", rx.url, "--count", 1, "--timeout-ms", 1000,
                            "--backoff-base-ms", 50, "--backoff-cap-ms", 100, "--poll-ms", 20)
    took = time.monotonic() - t0
    assert stats["sent"] == 1 and stats["retried"] == 1, stats
    assert "timed out after 1000 ms" in stats["last_error"], stats
    assert len(rx.requests) == 2
    gap = rx.requests[1]["t"] - rx.requests[0]["t"]
    assert 0.95 <= gap < 2.5, "retry %.2f s after the hung attempt (timeout 1 s)" % gap
    assert took < 3.5, "the driver took %.1f s: it waited for the hung request" % took
    # sink_poll(20 ms) kept returning while the upload hung: uploads never block the caller
    assert stats["max_poll_overrun_ms"] < 100, stats


def test_400_is_permanent_counted_and_logged(driver, receivers):
    rx = receivers(script=[{"status": 400, "body": b"invalid series name"}])
    stats, log = run_driver(driver, "--url", rx.url, "--count", 1, "--backoff-base-ms", 10)
    assert stats["failed"] == 1 and stats["sent"] == 0, stats
    assert stats["retried"] == 0 and stats["spooled"] == 0, stats
    assert "HTTP 400: invalid series name" in stats["last_error"], stats
    assert "dropped profile of app 'shop'" in log, log
    assert len(rx.requests) == 1


def wait_for_files(directory, suffix, count, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len([p for p in Path(directory).glob("*" + suffix)]) if Path(directory).is_dir() else 0
        if n >= count:
            return
        assert proc is None or proc.poll() is None, "the driver exited early"
        time.sleep(0.05)
    raise AssertionError("%d %s files did not appear in %s within %d s" % (
        count, suffix, directory, timeout))


def test_absent_receiver_spools_then_delivers_everything(driver, receivers, workdir):
    port = free_port()
    spool = workdir / "spool"
    args = ["--url", "http://127.0.0.1:%d" % port, "--spool", spool, "--count", 4,
            "--backoff-base-ms", 50, "--backoff-cap-ms", 200, "--spool-after-attempts", 2,
            "--run-ms", 30000]
    proc = subprocess.Popen([str(driver)] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for_files(spool, ".spool", 4, 20, proc)  # connection refused: all four spooled
        time.sleep(0.3)  # a few more refused attempts on the spool itself
        rx = receivers(port=port)
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stats, log = driver_result(proc.returncode, out, err, args)
    assert stats["spooled"] == 4 and stats["sent"] == 4, stats
    assert stats["failed"] == 0 and stats["evicted"] == 0 and stats["spool_files"] == 0, stats
    assert "refused" in log.lower() or "couldn't connect" in log.lower(), log[-2000:]
    assert "the sink is back" in log
    froms = [request_from(r) for r in rx.requests]
    assert sorted(froms) == [FROM_S + PERIOD_S * i for i in range(4)], froms
    assert froms[0] == FROM_S, "the oldest spooled profile was not delivered first: %s" % froms
    for r in rx.requests:
        i = (request_from(r) - FROM_S) // PERIOD_S
        fns = leaf_functions(r["body"], workdir, "p%d.pb.gz" % i)
        assert "work_%d" % i in fns, (i, sorted(fns))
    assert list(spool.glob("*")) == []


def test_restart_with_a_non_empty_spool(driver, receivers, workdir):
    spool = workdir / "spool"
    down = "http://127.0.0.1:%d" % free_port()
    stats, _ = run_driver(driver, "--url", down, "--spool", spool, "--count", 3, "--run-ms", 0,
                          "--flush-ms", 0)
    assert stats["spooled"] == 3 and stats["flush"] == 1 and stats["spool_files"] == 3, stats
    assert len(list(spool.glob("*.spool"))) == 3
    assert list(spool.glob("*.tmp")) == []
    # a crash during a spool write leaves a .tmp: the next start deletes it
    (spool / "00000000000000000999.spool.tmp").write_bytes(b"CPSPOOL1 half a file")
    rx = receivers()
    stats, _ = run_driver(driver, "--url", rx.url, "--spool", spool, "--count", 0)
    assert stats["sent"] == 3 and stats["spool_files"] == 0 and stats["failed"] == 0, stats
    assert sorted(request_from(r) for r in rx.requests) == [FROM_S + PERIOD_S * i
                                                            for i in range(3)]
    assert list(spool.glob("*")) == []


def test_spool_cap_evicts_oldest_and_counts(driver, receivers, workdir):
    spool = workdir / "spool"
    down = "http://127.0.0.1:%d" % free_port()
    pad = ["--pad-frames", 300]  # records of a few kB
    stats, _ = run_driver(driver, "--url", down, "--spool", spool, "--count", 1, "--run-ms", 0,
                          *pad)
    assert stats["spooled"] == 1, stats
    size = max(p.stat().st_size for p in spool.glob("*.spool"))
    cap = 3 * size + size // 2
    stats, log = run_driver(driver, "--url", down, "--spool", spool, "--spool-max", cap,
                            "--first", 1, "--count", 5, "--run-ms", 0, *pad)
    assert stats["spooled"] == 5 and stats["evicted"] == 3, stats
    assert stats["spool_files"] == 3 and stats["spool_bytes"] <= cap, stats
    assert "evicted" in log, log[-2000:]
    assert sum(p.stat().st_size for p in spool.glob("*.spool")) <= cap
    rx = receivers()
    stats, _ = run_driver(driver, "--url", rx.url, "--spool", spool, "--spool-max", cap,
                          "--count", 0)
    assert stats["sent"] == 3, stats
    got = sorted(request_from(r) for r in rx.requests)
    assert got == [FROM_S + PERIOD_S * i for i in (3, 4, 5)], "the newest three: %s" % got
    assert sorted(work_index(r["body"]) for r in rx.requests) == [3, 4, 5]


@pytest.fixture
def certificate(workdir):
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("openssl is not installed (apt-get install openssl)", pytrace=False)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def test_tls_is_verified(driver, receivers, workdir, certificate):
    rx = receivers(tls=certificate)
    spool = workdir / "spool"
    stats, _ = run_driver(driver, "--url", rx.url, "--spool", spool, "--count", 1,
                          "--backoff-base-ms", 10, "--backoff-cap-ms", 20,
                          "--spool-after-attempts", 2, "--run-ms", 500)
    assert stats["sent"] == 0 and stats["spooled"] == 1, stats
    assert "certificate" in stats["last_error"].lower() or "SSL" in stats["last_error"], stats
    assert rx.requests == []
    stats, _ = run_driver(driver, "--url", rx.url, "--spool", spool, "--ca", certificate[0],
                          "--count", 1)
    assert stats["sent"] == 2 and stats["spool_files"] == 0, stats
    assert len(rx.requests) == 2
