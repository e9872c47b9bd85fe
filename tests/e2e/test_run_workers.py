"""`conprof-agent run`: its sampler workers and its targets over time (directory sink, host
Python processes of a project the selector names).

Checked: a worker killed with SIGKILL is replaced within a few seconds and profiles keep coming;
an application started while the agent runs gets its own worker and profiles, and once it stops
its worker goes, no profile of it starts after its exit, the samples it had in the period it
exited in are still written, and the agent goes on; host processes that share an application
name but belong to another project are not profiled (nor labelled with the selected project)."""
import os
import signal
import time

from run_support import (DISCOVERY_S, FAST, NS, PERIOD_S, assert_full_periods, assert_unbroken,
                         dir_profiles, read_pprof, unique, wait_until)
from run_support import agents, host_apps  # noqa: F401 (fixtures)


def dir_args(project, tmp_path):
    return FAST + ["--sink-dir", tmp_path / "profiles", "--spool-dir", tmp_path / "spool",
                   "--selector", "project=" + project]


def profiles_after(sink, app, t_ns):
    return [p for p in dir_profiles(sink, app) if p.from_ns > t_ns]


def test_killed_worker_is_restarted_and_profiles_keep_coming(agents, host_apps, tmp_path):
    project, app = unique("kill-proj"), unique("kill-app")
    host_apps(app, project)
    sink = tmp_path / "profiles"
    agent = agents(dir_args(project, tmp_path))
    [worker] = agent.wait_workers(1)
    wait_until(lambda: dir_profiles(sink, app), 10, "a first profile", agent=agent)

    os.kill(worker, signal.SIGKILL)
    killed_ns, t0 = time.time_ns(), time.monotonic()
    new = wait_until(lambda: [w for w in agent.workers() if w != worker], 6,
                     "a new worker after SIGKILL of worker %d" % worker, agent=agent)
    restarted_s = time.monotonic() - t0
    assert 0.8 <= restarted_s <= 4, (
        "the worker came back %.2f s after SIGKILL (the first backoff is 1 s)" % restarted_s)
    assert len(new) == 1, "one worker for the one target, got %s" % new
    wait_until(lambda: len(profiles_after(sink, app, killed_ns)) >= 2, 12,
               "2 profiles from the new worker", agent=agent)
    assert agent.workers() == new, "the worker was replaced again: %s then %s" % (
        new, agent.workers())
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()
    after = profiles_after(sink, app, killed_ns)
    assert_unbroken([(p.from_ns, p.until_ns) for p in after], app + " after the restart",
                    agent.started_ns)
    assert all("busy" in read_pprof(p.path.read_bytes()).strings for p in after)


def test_targets_come_and_go(agents, host_apps, tmp_path):
    project, app_a, app_b = unique("come-proj"), unique("stays"), unique("comes-goes")
    host_apps(app_a, project)
    sink = tmp_path / "profiles"
    agent = agents(dir_args(project, tmp_path))
    agent.wait_workers(1)
    wait_until(lambda: dir_profiles(sink, app_a), 10, "a first profile of " + app_a, agent=agent)

    b = host_apps(app_b, project, scenario="split")
    wait_until(lambda: len(dir_profiles(sink, app_b)) >= 2, 15,
               "2 profiles of %s started after the agent" % app_b, agent=agent)
    assert len(agent.workers()) == 2, "one worker per application: %s" % agent.workers()
    assert "heavy" in read_pprof(dir_profiles(sink, app_b)[-1].path.read_bytes()).strings

    b.kill()
    gone_ns = time.time_ns()
    wait_until(lambda: len(agent.workers()) == 1, DISCOVERY_S + 4,
               "the worker of %s to stop after it exited" % app_b, agent=agent)
    time.sleep(PERIOD_S + DISCOVERY_S)  # its last (partial) period may still be written
    count_b = len(dir_profiles(sink, app_b))
    mark_ns = time.time_ns()
    wait_until(lambda: len(profiles_after(sink, app_a, mark_ns)) >= 2, 10,
               "2 more periods of %s" % app_a, agent=agent)
    assert len(dir_profiles(sink, app_b)) == count_b, "new profiles of %s after it exited" % app_b
    late = [p for p in dir_profiles(sink, app_b) if p.from_ns >= gone_ns]
    assert not late, "profiles of %s starting after it exited: %s" % (app_b, late)
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()
    periods_a = [(p.from_ns, p.until_ns) for p in dir_profiles(sink, app_a)]
    assert_unbroken(periods_a, app_a, agent.started_ns)  # untouched by the other target
    assert_full_periods(periods_a, app_a, agent.started_ns)


def test_exited_target_keeps_its_last_partial_period(agents, host_apps, tmp_path):
    """The samples of the period an application exits in are profiled like any others: its last
    profile ends when it exited, not at the previous period boundary."""
    project, app = unique("exit-proj"), unique("exits")
    host_apps(unique("keeps-running"), project)  # the agent has something else to do
    t = host_apps(app, project)
    sink = tmp_path / "profiles"
    agent = agents(dir_args(project, tmp_path))
    wait_until(lambda: len(dir_profiles(sink, app)) >= 2, 15, "2 profiles of " + app,
               agent=agent)
    # exit 0.5 s after a period boundary: the next boundary is 1.5 s away, and discovery
    # (every second) sees the exit before it; 0.5 s of samples are pending
    n = len(dir_profiles(sink, app))
    wait_until(lambda: len(dir_profiles(sink, app)) > n, PERIOD_S + 2, "a period boundary",
               agent=agent, interval=0.02)
    time.sleep(0.5)
    t.kill()
    gone_ns = time.time_ns()
    wait_until(lambda: len(agent.workers()) == 1, DISCOVERY_S + 4,
               "the worker of %s to stop" % app, agent=agent)
    time.sleep(PERIOD_S + 0.5)
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()
    periods = assert_unbroken([(p.from_ns, p.until_ns) for p in dir_profiles(sink, app)], app,
                              agent.started_ns)
    last = periods[-1][1]
    assert last >= gone_ns - 0.1 * NS, (
        "the last profile of %s ends %.2f s before it exited: the samples of its last %.2f s "
        "were dropped when its worker was stopped" % (app, (gone_ns - last) / NS,
                                                     (gone_ns - last) / NS))


def test_same_app_name_in_another_project_is_not_profiled(agents, host_apps, tmp_path):
    """Two host processes named alike (same application name), of two projects; the selector
    names one project. The other project's process must not be sampled into the selected
    project's profiles (nor labelled with its project)."""
    app, selected, other = unique("same-name"), unique("selected"), unique("other")
    host_apps(app, selected, scenario="busy")   # functions: busy
    host_apps(app, other, scenario="split")     # functions: split, heavy, light
    sink = tmp_path / "profiles"
    agent = agents(dir_args(selected, tmp_path))
    wait_until(lambda: len(dir_profiles(sink, app)) >= 2, 15, "2 profiles of " + app,
               agent=agent)
    rc, _ = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()
    for p in dir_profiles(sink, app):
        assert p.sidecar["labels"].get("project_id") == selected, p.sidecar["labels"]
        strings = read_pprof(p.path.read_bytes()).strings
        assert "busy" in strings, "the selected project's process is profiled"
        leaked = strings & {"split", "heavy", "light"}
        assert not leaked, ("%s: functions %s of the process of project %s (not selected) are in "
                            "a profile labelled project_id=%s" % (p.path.name, sorted(leaked),
                                                                  other, selected))
