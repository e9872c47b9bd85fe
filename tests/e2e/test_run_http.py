"""`conprof-agent run --sink-url`: the daemon uploading to a real Pyroscope-like receiver on
127.0.0.1 (run_support.Receiver), against a host Python process of a project the selector names.

Checked: the ingest URL (series name with the labels, from/until agreeing with the profile's own
period, format, sampleRate from --rate, spyName), the bearer token from --bearer-token-file, the
body read by `go tool pprof -raw`; and that nothing is lost — the delivered periods of the
application form one unbroken chain from the worker's start to the agent's stop — when the
receiver answers 503 for a while, when it is absent at first (profiles spooled, then delivered),
when an upload hangs past --upload-timeout (aborted, retried), and across an agent restart with
a non-empty spool."""
import socket
import time

import e2e_support as sup
from e2e_support import Frame
from run_support import (CPU_MARK, CPU_PY, FAST, MAIN_INTERP, NS, PERIOD_S, assert_full_periods,
                         assert_unbroken, check_ingest_url, free_port, ingest_periods,
                         interpreter, spool_files, unique, wait_until)
from run_support import agents, host_apps, receivers  # noqa: F401 (fixtures)

TOKEN = "e2e-run-token"


def start_app(host_apps):
    project, app = unique("http-proj"), unique("http-app")
    host_apps(app, project)  # cpu.py busy: <module> -> busy (spins)
    return project, app


def daemon_args(url, project, tmp_path, *extra):
    return FAST + ["--sink-url", url, "--spool-dir", tmp_path / "spool",
                   "--selector", "project=" + project] + list(extra)


def check_whole_run(requests, app, agent):
    """The delivered periods: unbroken, the first starting when the agent started, the last
    ending when it was stopped (the partial period flushed at SIGTERM)."""
    periods = assert_unbroken(ingest_periods(requests), app, agent.started_ns)
    assert_full_periods(periods, app, agent.started_ns)
    first, last = periods[0][0], periods[-1][1]
    assert 0 <= first - agent.started_ns < 3 * NS, (
        "the first delivered period starts %.3f s after the agent started: earlier ones lost?"
        % ((first - agent.started_ns) / NS))
    assert 0 <= last - agent.stopped_ns < 2 * NS, (
        "the last delivered period ends %.3f s from SIGTERM: the partial period was lost?"
        % ((last - agent.stopped_ns) / NS))
    return periods


def test_upload_url_labels_token_and_pprof(agents, receivers, host_apps, tmp_path):
    project, app = start_app(host_apps)
    rx = receivers()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    agent = agents(daemon_args(rx.url, project, tmp_path, "--rate", 50, "--bearer-token-file",
                               token, "--label", "team=e2e-run"))
    wait_until(lambda: len(rx.delivered(app)) >= 3, 20, "3 uploads of %s" % app, agent=agent)
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()

    requests = rx.snapshot()
    assert {r.app for r in requests} == {app}, "only the selected project's application: %s" % (
        sorted({r.app for r in requests}))
    assert all(r.delivered for r in requests)
    expected = {"application_name": app, "project_id": project, "environment": "production",
                "runtime": "cpython", "runtime_version": interpreter(MAIN_INTERP).info["version"],
                "runtime_os": "linux", "runtime_arch": "x86_64",
                "probe_version": sup.run_agent(["version"]).stdout.split()[1],
                "host": socket.gethostname(), "team": "e2e-run"}
    for r in requests:
        check_ingest_url(r, 50)
        wrong = {k: (r.labels.get(k), v) for k, v in expected.items() if r.labels.get(k) != v}
        assert not wrong, "series labels (got, want): %s\nname: %s" % (wrong, r.query["name"])
        assert "container_id" not in r.labels and "pod_uid" not in r.labels, r.labels
        assert r.headers.get("Authorization") == "Bearer " + TOKEN, r.headers
        assert r.headers.get("Content-Type") == "application/octet-stream", r.headers
    check_whole_run(requests, app, agent)

    body = tmp_path / "body.pb.gz"
    body.write_bytes(sorted(requests, key=lambda r: r.period)[1].body)  # a whole period
    types, samples, locations = sup.check_pprof(body, ["busy", "<module>"], tmp_path)
    stacks = sup.pprof_stacks(types, samples, locations)
    f = str(CPU_PY)
    sup.assert_dominant(stacks, [Frame("<module>", f, CPU_MARK["dispatch"]),
                                 Frame("busy", f, CPU_MARK["busy_spin"])], min_share=0.8)


def test_503_for_a_while_then_everything_arrives(agents, receivers, host_apps, tmp_path):
    project, app = start_app(host_apps)
    rx = receivers(mode="503")
    spool = tmp_path / "spool"
    agent = agents(daemon_args(rx.url, project, tmp_path))
    wait_until(lambda: len(rx.snapshot()) >= 3, 20, "3 upload attempts answered 503",
               agent=agent)
    rx.set_mode("ok")
    back_ns = time.time_ns()
    wait_until(lambda: not spool_files(spool) and any(
        r.period[0] > back_ns for r in rx.delivered(app)), 60,
        "the profiles refused with 503 delivered and fresh ones flowing", agent=agent)
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()

    requests = rx.snapshot()
    refused = {r.period for r in requests if r.answer == "503"}
    delivered = rx.delivered(app)
    assert refused <= {r.period for r in delivered}, "a profile refused with 503 never arrived"
    check_whole_run(delivered, app, agent)


def test_absent_receiver_spools_then_delivers_everything(agents, receivers, host_apps, tmp_path):
    project, app = start_app(host_apps)
    port = free_port()
    spool = tmp_path / "spool"
    agent = agents(daemon_args("http://127.0.0.1:%d" % port, project, tmp_path))
    two_periods_ns = agent.started_ns + int(2.5 * PERIOD_S * NS)
    wait_until(lambda: spool_files(spool) and time.time_ns() > two_periods_ns,
               30, "a profile spooled and 2 periods ended, nothing listening on the sink's port",
               agent=agent)
    rx = receivers(port=port)
    back_ns = time.time_ns()
    wait_until(lambda: not spool_files(spool) and any(
        r.period[0] > back_ns for r in rx.delivered(app)), 60,
        "the spool drained and fresh profiles flowing once the receiver is up", agent=agent)
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()
    periods = check_whole_run(rx.delivered(app), app, agent)
    assert sum(1 for f, u in periods if u <= back_ns) >= 2, (
        "at least two periods were made while the receiver was absent")


def test_hanging_upload_times_out_and_is_retried(agents, receivers, host_apps, tmp_path):
    project, app = start_app(host_apps)
    rx = receivers(hang_s=5.0)
    rx.plan = ["hang"]  # the first upload hangs 5 s, past --upload-timeout 1
    agent = agents(daemon_args(rx.url, project, tmp_path, "--upload-timeout", 1))
    hung = wait_until(lambda: rx.snapshot(), 20, "the first upload", agent=agent)[0]
    retry = wait_until(lambda: [r for r in rx.delivered(app) if r.period == hung.period], 10,
                       "the hung upload retried", agent=agent)[0]
    gap = retry.t - hung.t
    assert 0.9 <= gap <= 3.5, "retried %.2f s after the hung attempt started (timeout 1 s, " \
        "then a backoff of at most 1 s)" % gap
    wait_until(lambda: len(rx.delivered(app)) >= 3, 15, "2 more uploads", agent=agent)
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()
    # sampling went on meanwhile: every period is there, each one --period long
    check_whole_run(rx.delivered(app), app, agent)


def test_restart_with_a_non_empty_spool_delivers_it(agents, receivers, host_apps, tmp_path):
    project, app = start_app(host_apps)
    port = free_port()
    spool = tmp_path / "spool"
    args = daemon_args("http://127.0.0.1:%d" % port, project, tmp_path, "--upload-timeout", 2)
    first = agents(args, name="first")
    first.wait_workers(1)
    time.sleep(2 * PERIOD_S)
    rc, took = first.terminate_mid_period(timeout=2 + 2 + 3)
    assert rc == 0, first.describe()
    spooled = spool_files(spool)
    assert len(spooled) >= 3, "the first agent's profiles should all be in the spool: %s\n%s" % (
        spooled, first.describe())

    rx = receivers(port=port)
    second = agents(args, name="second")
    wait_until(lambda: not spool_files(spool), 30, "the spool delivered", agent=second)
    rc, _ = second.terminate_mid_period(timeout=15)
    assert rc == 0, second.describe()
    old = [r for r in rx.delivered(app) if r.period[0] < first.stopped_ns]
    assert len(old) == len(spooled), "%d spooled profiles, %d delivered" % (len(spooled), len(old))
    check_whole_run(old, app, first)
    for r in old:
        check_ingest_url(r, 100)
        assert r.labels.get("project_id") == project and "busy" in r.pprof.strings, r.labels
