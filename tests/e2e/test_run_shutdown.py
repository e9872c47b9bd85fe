"""`conprof-agent run`: SIGTERM in the middle of a period, and bad command lines.

SIGTERM must write (directory sink) or upload-or-spool (HTTP sink, here a receiver that hangs)
the partial period and exit 0 within --upload-timeout + 2 s, leaving no worker behind. A bad
flag must exit 2 at once with a message that names the option, before anything is created."""
import time

import pytest

import e2e_support as sup
from run_support import NS, dir_profiles, read_pprof, spool_files, unique
from run_support import agents, host_apps, receivers  # noqa: F401 (fixtures)

UPLOAD_TIMEOUT_S = 2
LONG_PERIOD = ["--period", 60, "--discovery-interval", 1, "--upload-timeout", UPLOAD_TIMEOUT_S]


def check_partial_profile(gz, agent, from_ns, until_ns):
    """One profile covering the agent's run up to SIGTERM, with the busy loop's samples."""
    assert agent.started_ns <= from_ns < agent.started_ns + 3 * NS, (
        "the partial period starts %.2f s after the agent" % ((from_ns - agent.started_ns) / NS))
    assert agent.stopped_ns <= until_ns < agent.stopped_ns + 2 * NS, (
        "the partial period ends %.2f s after SIGTERM" % ((until_ns - agent.stopped_ns) / NS))
    p = read_pprof(gz)
    assert (p.time_ns, p.time_ns + p.duration_ns) == (from_ns, until_ns)
    assert "busy" in p.strings and p.samples > 0, p
    cpu_s = p.totals.get("cpu/nanoseconds", 0) / NS
    assert cpu_s >= 0.5 * (until_ns - from_ns) / NS, (
        "%.2f s of CPU in %.2f s of a spinning process" % (cpu_s, (until_ns - from_ns) / NS))


def stop_and_check_exit(agent):
    workers = agent.workers()
    rc, took = agent.terminate(timeout=UPLOAD_TIMEOUT_S + 10)
    assert rc == 0, "exit status %s after SIGTERM\n%s" % (rc, agent.describe())
    assert took <= UPLOAD_TIMEOUT_S + 2, "exited %.1f s after SIGTERM (upload timeout %d s)\n%s" % (
        took, UPLOAD_TIMEOUT_S, agent.describe())
    deadline = time.monotonic() + 2  # a SIGKILLed worker may take a moment to be reaped
    while time.monotonic() < deadline and [w for w in workers if running(w)]:
        time.sleep(0.05)
    left = [w for w in workers if running(w)]
    assert not left, "workers %s outlived the agent" % left


def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_sigterm_mid_period_writes_the_partial_period(agents, host_apps, tmp_path):
    project, app = unique("term-proj"), unique("term-app")
    host_apps(app, project)
    sink = tmp_path / "profiles"
    agent = agents(LONG_PERIOD + ["--sink-dir", sink, "--spool-dir", tmp_path / "spool",
                                  "--selector", "project=" + project])
    agent.wait_workers(1)
    time.sleep(2.5)
    assert dir_profiles(sink, app) == [], "no period of 60 s has ended yet"
    stop_and_check_exit(agent)
    profiles = dir_profiles(sink, app)
    assert len(profiles) == 1, "one partial profile, got %s\n%s" % (profiles, agent.describe())
    p = profiles[0]
    check_partial_profile(p.path.read_bytes(), agent, p.from_ns, p.until_ns)
    assert p.sidecar["labels"]["project_id"] == project


def test_sigterm_with_a_hanging_receiver_spools_within_the_upload_timeout(
        agents, receivers, host_apps, tmp_path):
    project, app = unique("term-proj"), unique("term-app")
    host_apps(app, project)
    rx = receivers(mode="hang", hang_s=UPLOAD_TIMEOUT_S + 8)
    spool = tmp_path / "spool"
    agent = agents(LONG_PERIOD + ["--sink-url", rx.url, "--spool-dir", spool,
                                  "--selector", "project=" + project])
    agent.wait_workers(1)
    time.sleep(2.5)
    stop_and_check_exit(agent)
    assert [r.answer for r in rx.snapshot()] == ["hang"], "one upload attempt, which hung"
    hung = rx.snapshot()[0]
    check_partial_profile(hung.body, agent, *hung.period)
    assert len(spool_files(spool)) == 1, "the partial period should be spooled: %s\n%s" % (
        list(spool.iterdir()) if spool.is_dir() else "no spool directory", agent.describe())


BAD_FLAGS = [
    (["--rate", "0"], "--rate"),
    (["--rate", "1001"], "--rate"),
    (["--period", "x"], "--period"),
    (["--period", "0"], "--period"),
    (["--upload-timeout", "0"], "--upload-timeout"),
    (["--discovery-interval", "-1"], "--discovery-interval"),
    (["--spool-max-bytes", "10"], "--spool-max-bytes"),
    (["--selector", "nonsense"], "--selector"),
    (["--selector", "colour=blue"], "--selector"),
    (["--selector", "container_id=xyz"], "--selector"),
    (["--label", "novalue"], "--label"),
    (["--sink-url", "http://127.0.0.1:9", "--bearer-token-file", "/nonexistent/token"],
     "--bearer-token-file"),
    (["--sink-url", "http://127.0.0.1:9", "--sink-dir", "/nonexistent/profiles"], "--sink-url"),
    (["--frobnicate"], "--frobnicate"),
]


@pytest.mark.parametrize("args, option", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2_naming_the_option(agent, args, option, tmp_path):
    sink, spool = tmp_path / "profiles", tmp_path / "spool"
    if "--sink-url" not in args:
        args = args + ["--sink-dir", sink]
    res = sup.run_agent(["run"] + args + ["--spool-dir", spool, "--status-socket",
                                          tmp_path / "agent.sock"], timeout=10)
    assert res.returncode == 2, res.describe()
    assert option in res.stderr, "the message should name %s:\n%s" % (option, res.describe())
    assert res.stdout == "", res.describe()
    assert not sink.exists() and not spool.exists(), "created directories before failing"
