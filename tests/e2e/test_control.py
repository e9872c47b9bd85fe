"""The control channel end to end: a real `conprof-console serve`, real `conprof-agent run
--console ws://127.0.0.1:PORT/agent/v1` agents and test containers (control_support), over
loopback only. The REST API switches profiling on and off; the agents' status (`conprof-agent
status --json`) says what they sample; the query API (and `go tool pprof`) says what reached the
console.

Timing facts the tests rely on (control/PROTOCOL.md, docs/agent-config.md): the agent re-matches
its targets as soon as a session starts or stops (2 s allowed), a lease ends at `lease_until`
(Unix seconds) and the agent checks leases at least every 250 ms (1 s allowed), reconnects start
at 1 s and double with full jitter. Agents run with 2 s periods and 1 s discovery."""

import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import console_support as cs  # noqa: E402
import run_support as rs  # noqa: E402
from control_support import (WORKLOAD_FN, Watch, go_pprof_top, sessions, status,  # noqa: E402
                             targets, wait_connected)
from control_support import (agents, console_binary, consoles, control,  # noqa: E402,F401
                             control_agents, workload_containers)

NS = 1000000000


def wait_app(ctl, project, environment, app, fn, timeout=10):
    """Waits until the console's merged profile of app holds fn; returns the collapsed stacks."""
    def ready():
        if app not in ctl.applications(project, environment):
            return None
        stacks = ctl.collapsed(project, environment, app)
        return stacks if any(fn in s for s in stacks) else None
    try:
        return rs.wait_until(ready, timeout, "a profile of %s/%s/%s with %s" % (
            project, environment, app, fn))
    except AssertionError as e:
        raise AssertionError("%s\napplications: %s\ncollapsed: %s\n%s" % (
            e, ctl.applications(project, environment),
            list(ctl.collapsed(project, environment, app).items())[:5], ctl.describe()))


# ---------------------------------------------------------------------------------------------


def test_toggle_on_starts_sampling_and_off_stops_within_2s(control, control_agents,
                                                           workload_containers):
    project, app = rs.unique("ctl-proj"), rs.unique("ctl-app")
    ctl = control()
    ctr = workload_containers(app, project, "prod")
    other = workload_containers(rs.unique("ctl-other"), rs.unique("ctl-other-proj"), "prod")
    agent = control_agents(ctl.ws_url, ctl.tokens["node"])
    wait_connected(agent)
    w = Watch(agent)
    w.hold(1.5, lambda: not w.pids(agent), "no target before the toggle")

    t0 = time.time()
    env = ctl.toggle(project, "prod", True)
    assert env["profiling"] is True and env["session_id"], env
    seen = w.until(lambda: w.has(agent, ctr.pid), 2, "the container as a target within 2 s")
    assert seen - t0 <= 2.0, "the target appeared %.2f s after the toggle" % (seen - t0)
    target = targets(agent, w.last[agent.node])[ctr.pid]
    assert target["state"] in ("attaching", "sampling"), target
    assert target.get("application") == app, target
    assert w.pids(agent) == {ctr.pid}, "only the matching container: %s" % w.pids(agent)
    # samples grow (the status counts them at each 2 s period's end)
    w.until(lambda: targets(agent, w.last[agent.node]).get(ctr.pid, {}).get("samples", 0) > 0,
            rs.PERIOD_S + 1.5, "samples of the container")
    first = targets(agent, w.last[agent.node])[ctr.pid]
    assert first["state"] == "sampling", first
    w.until(lambda: targets(agent, w.last[agent.node])[ctr.pid]["samples"] > first["samples"],
            rs.PERIOD_S + 1.5, "the container's samples to grow")
    sess = sessions(agent, w.last[agent.node])
    assert list(sess) == [env["session_id"]], sess
    assert sess[env["session_id"]]["state"] == "running", sess
    assert other.pid not in w.pids(agent)
    sent_before = w.last[agent.node]["uploads"]["sent"]

    t0 = time.time()
    ctl.toggle(project, "prod", False)
    gone = w.until(lambda: not w.has(agent, ctr.pid), 2, "the target to go within 2 s")
    assert gone - t0 <= 2.0, "the target left %.2f s after the toggle" % (gone - t0)
    assert w.pids(agent) == set(), w.pids(agent)
    # the partial period is uploaded after the stop
    w.until(lambda: w.last[agent.node]["uploads"]["sent"] > sent_before, 5,
            "the partial period's upload")
    stacks = wait_app(ctl, project, "prod", app, WORKLOAD_FN)
    heaviest = max(stacks, key=stacks.get)
    assert heaviest.rsplit(";", 1)[-1].startswith(WORKLOAD_FN + " ("), stacks
    w.hold(2.5, lambda: not w.pids(agent), "no target after the toggle off")
    assert ctl.environment(project, "prod")["profiling"] is False
    listed = ctl.listed_agents()
    assert [(a["name"], a["node"], a["connected"]) for a in listed] == [("node", "agent", True)], \
        listed


def test_partial_period_lands_with_labels_readable_by_go_pprof(control, control_agents,
                                                                workload_containers, tmp_path):
    """Sessions with 60 s periods: the only profile is the partial period uploaded at the stop."""
    project, app = rs.unique("ctl-proj"), rs.unique("ctl-app")
    ctl = control(period=60)
    ctr = workload_containers(app, project, "staging")
    agent = control_agents(ctl.ws_url, ctl.tokens["node"], name="node-labels")
    wait_connected(agent)
    w = Watch(agent)
    t_on = time.time()
    ctl.toggle(project, "staging", True)
    on = w.until(lambda: w.has(agent, ctr.pid), 2, "the container as a target")
    time.sleep(2.5)
    assert ctl.applications(project, "staging") == {}, "a profile before the period ended"
    off_at = time.time()
    ctl.toggle(project, "staging", False)
    w.until(lambda: not w.has(agent, ctr.pid), 2, "the target to go")
    wait_app(ctl, project, "staging", app, WORKLOAD_FN)
    w.until(lambda: w.last[agent.node]["uploads"]["inflight"] == 0
            and w.last[agent.node]["uploads"]["sent"] >= 1, 5, "the upload's answer")
    uploads = w.last[agent.node]["uploads"]
    assert uploads["sent"] == 1 and uploads["failed"] == 0 and uploads["spooled"] == 0, uploads

    apps = ctl.applications(project, "staging")
    assert list(apps) == [app], apps
    assert "cpu" in apps[app]["profile_types"] and apps[app]["languages"] == ["python"], apps

    stored = ctl.stored_profiles(project)
    assert len(stored) == 1, stored
    _, environment, stored_app, from_ns, until_ns, labels = stored[0]
    assert (environment, stored_app) == ("staging", app), stored
    assert labels.get("project_id") == project and labels.get("environment") == "staging", labels
    assert labels.get("host") == "node-labels", labels
    # the partial period: from around the start to around the stop, far less than 60 s (the
    # store keeps the ingest's from / until: whole seconds, rounded outwards)
    assert t_on - 1.5 <= from_ns / NS <= on + 1.0, (t_on, on, from_ns / NS)
    assert off_at - 0.5 <= until_ns / NS <= off_at + 2.5, (off_at, until_ns / NS)

    r = ctl.merge(project, "staging", app, "pprof")
    assert r.status == 200, r
    functions, text = go_pprof_top(r.body, tmp_path)
    assert WORKLOAD_FN in functions, "go tool pprof -top does not show %s:\n%s" % (
        WORKLOAD_FN, text[:3000])
    assert "Type: cpu" in text, text[:2000]
    assert ctl.applications(project, "prod") == {}


def test_free_budget_runs_out_then_plan_addon(control, control_agents, workload_containers):
    project, app = rs.unique("ctl-proj"), rs.unique("ctl-app")
    budget = 4
    ctl = control(extra=["--free-budget", budget, "--tick-ms", 200])
    ctr = workload_containers(app, project, "prod")
    agent = control_agents(ctl.ws_url, ctl.tokens["node"])
    wait_connected(agent)
    w = Watch(agent)

    t0 = time.time()
    env = ctl.toggle(project, "prod", True)
    assert env["lease_until"] <= t0 + budget + 1, env
    w.until(lambda: w.has(agent, ctr.pid), 2, "the container as a target")
    gone = w.until(lambda: not w.has(agent, ctr.pid), budget + 3, "the budget to run out")
    assert budget - 1 <= gone - t0 <= budget + 2, "profiling stopped %.2f s after the toggle " \
        "with a %d s budget" % (gone - t0, budget)
    # the lease (whole seconds, capped by the budget) may end up to 1 s before the console's
    # clock spends the budget
    p = rs.wait_until(lambda: (lambda p: p["exhausted"] and p)(ctl.project(project)), 2.5,
                      "the project to be exhausted")
    assert p["left_s"] == 0 and p["plan"] == "free", p
    assert [e["profiling"] for e in p["environments"]] == [False], p
    w.until(lambda: sessions(agent, w.last[agent.node]).get(env["session_id"], {})
            .get("state") in ("expired", "stopped"), 2, "the session to end on the agent")
    assert sessions(agent, w.last[agent.node])[env["session_id"]]["profiling_s"] <= budget + 1

    refused = ctl.toggle(project, "prod", True, expect=409)
    assert refused["code"] == 409 and "quota" in refused["message"], refused
    w.hold(2.5, lambda: not w.pids(agent), "nothing sampled after the refused toggle")
    assert ctl.environment(project, "prod")["profiling"] is False
    assert w.seen[(agent.node, ctr.pid)]["last"] < gone, "sampling resumed after the budget ran out"

    ctl.set_plan(project, "addon")
    t0 = time.time()
    env2 = ctl.toggle(project, "prod", True)
    assert env2["profiling"] is True
    seen = w.until(lambda: w.has(agent, ctr.pid), 2, "the container again after the plan change")
    assert seen - t0 <= 2.0
    assert ctl.project(project)["exhausted"] is False


def test_console_killed_agent_stops_at_lease_end(control, control_agents, workload_containers):
    project, app = rs.unique("ctl-proj"), rs.unique("ctl-app")
    max_lease = 6
    ctl = control(extra=["--max-lease", max_lease, "--tick-ms", 200])
    ctr = workload_containers(app, project, "prod")
    agent = control_agents(ctl.ws_url, ctl.tokens["node"])
    wait_connected(agent)
    w = Watch(agent)
    env = ctl.toggle(project, "prod", True)
    sid = env["session_id"]
    w.until(lambda: targets(agent, w.last[agent.node]).get(ctr.pid, {}).get("samples", 0) > 0,
            rs.PERIOD_S + 2, "samples of the container")

    ctl.kill()
    killed = time.time()
    time.sleep(0.3)
    w.poll()
    lease_until = sessions(agent, w.last[agent.node])[sid]["lease_until"]
    assert killed < lease_until <= killed + max_lease + 1, (killed, lease_until)
    samples_at_kill = targets(agent, w.last[agent.node])[ctr.pid]["samples"]

    gone = w.until(lambda: not w.has(agent, ctr.pid), lease_until - time.time() + 3,
                   "the agent to stop at the lease end (%d)" % lease_until)
    last = w.seen[(agent.node, ctr.pid)]
    assert last["last"] >= lease_until - 0.6, "sampling stopped %.2f s before the lease end" % (
        lease_until - last["last"])
    assert gone <= lease_until + 1.3, "sampling stopped %.2f s after the lease end" % (
        gone - lease_until)
    assert last["samples"][-1][1] > samples_at_kill, \
        "no samples counted while the console was down: %s" % last["samples"]
    assert sessions(agent, w.last[agent.node])[sid]["state"] == "expired", w.describe()
    w.hold(3, lambda: not w.pids(agent), "no resumption without a console")
    assert agent.alive()

    # the console comes back with its state: the toggle is still on, the agent resumes and
    # reports the lease that ran out while it was alone
    ctl.start_again()
    assert ctl.environment(project, "prod")["profiling"] is True
    w.until(lambda: w.has(agent, ctr.pid), 25, "the agent to reconnect and resume")
    kinds = [(e["kind"], e["session_id"]) for e in ctl.events()]
    assert ("lease_expired", sid) in kinds or ("quota_exhausted", sid) in kinds, kinds


def test_agent_restarted_resumes_until_lease_end_only(control, control_agents,
                                                      workload_containers):
    project, app = rs.unique("ctl-proj"), rs.unique("ctl-app")
    max_lease = 10
    ctl = control(extra=["--max-lease", max_lease, "--tick-ms", 200])
    ctr = workload_containers(app, project, "prod")
    token = ctl.tokens["node"]
    first = control_agents(ctl.ws_url, token, name="node-r")
    wait_connected(first)
    w = Watch(first)
    sid = ctl.toggle(project, "prod", True)["session_id"]
    w.until(lambda: w.has(first, ctr.pid), 2, "the container as a target")
    # kill the console right after a renewal, so that most of a lease is left
    granted = sessions(first, w.last[first.node])[sid]["lease_until"]
    w.until(lambda: sessions(first, w.last[first.node])[sid]["lease_until"] > granted,
            max_lease / 3 + 2, "a lease renewal")
    ctl.kill()
    time.sleep(0.3)
    lease_until = sessions(first, status(first))[sid]["lease_until"]
    assert lease_until - time.time() >= max_lease - 2, lease_until - time.time()

    rc, _ = first.terminate(15)
    assert rc == 0, first.describe()
    second = control_agents(ctl.ws_url, token, name="node-r", state=first.state_file)
    w = Watch(second)
    w.until(lambda: w.has(second, ctr.pid), 3, "the restarted agent to resume the session")
    assert time.time() < lease_until - 1
    sess = sessions(second, w.last[second.node])
    assert sess[sid]["lease_until"] == lease_until and sess[sid]["state"] == "running", sess
    mode = os.stat(second.state_file).st_mode & 0o777
    assert mode == 0o600, "the state file %s has mode %o" % (second.state_file, mode)
    gone = w.until(lambda: not w.has(second, ctr.pid), lease_until - time.time() + 3,
                   "the restarted agent to stop at the lease end (%d)" % lease_until)
    resumed = w.seen[(second.node, ctr.pid)]
    assert resumed["last"] >= lease_until - 0.6
    assert max(n for _, n, _ in resumed["samples"]) > 0, "the resumed session took no samples"
    assert gone <= lease_until + 1.3, "stopped %.2f s after the lease end" % (gone - lease_until)
    assert not (status(second).get("console") or {}).get("connected")

    rc, _ = second.terminate(15)
    assert rc == 0, second.describe()
    third = control_agents(ctl.ws_url, token, name="node-r", state=first.state_file)
    w = Watch(third)
    w.hold(3.5, lambda: not w.pids(third), "no sampling after a restart past the lease end")
    assert sessions(third, w.last[third.node]).get(sid, {}).get("state") != "running", \
        w.describe()


def test_console_restart_keeps_state_and_sampling(control, control_agents, workload_containers):
    project, app = rs.unique("ctl-proj"), rs.unique("ctl-app")
    max_lease = 6
    ctl = control(extra=["--max-lease", max_lease, "--tick-ms", 200])
    ctr = workload_containers(app, project, "prod")
    agent = control_agents(ctl.ws_url, ctl.tokens["node"])
    wait_connected(agent)
    w = Watch(agent)
    env = ctl.toggle(project, "prod", True)
    w.until(lambda: w.has(agent, ctr.pid), 2, "the container as a target")
    used_before = ctl.project(project)["used_s"]

    ctl.stop()
    lease_at_stop = sessions(agent, status(agent))[env["session_id"]]["lease_until"]
    ctl.start_again()
    wait_connected(agent, timeout=15, connects=2)
    p = ctl.project(project)
    assert p["environments"][0]["profiling"] is True, p
    assert p["environments"][0]["session_id"] == env["session_id"], p
    assert p["used_s"] >= used_before, (used_before, p)
    listed = ctl.listed_agents()
    assert [(a["node"], a["connected"]) for a in listed] == [("agent", True)], listed
    # sampling never stopped, and goes on past the lease held when the console went down
    w.until(lambda: time.time() > lease_at_stop + 1.5, max_lease + 4, "the old lease end")
    w.hold(0.5, lambda: w.has(agent, ctr.pid), "sampling after the restart")
    assert not w.seen[(agent.node, ctr.pid)]["absent"], "the target was gone at %s" % (
        w.seen[(agent.node, ctr.pid)]["absent"])
    assert sessions(agent, w.last[agent.node])[env["session_id"]]["lease_until"] > lease_at_stop
    wait_app(ctl, project, "prod", app, WORKLOAD_FN)


def test_two_agents_two_projects_kept_apart(control, control_agents, workload_containers):
    pa, pb = rs.unique("ctl-a"), rs.unique("ctl-b")
    app_a, app_b = rs.unique("app-a"), rs.unique("app-b")
    ctl = control(node_a=pa, node_b=pb)
    ctr_a = workload_containers(app_a, pa, "prod", fn="spin_for_project_a")
    ctr_b = workload_containers(app_b, pb, "prod", fn="spin_for_project_b")
    agent_a = control_agents(ctl.ws_url, ctl.tokens["node_a"], name="node_a")
    agent_b = control_agents(ctl.ws_url, ctl.tokens["node_b"], name="node_b")
    wait_connected(agent_a)
    wait_connected(agent_b)
    w = Watch(agent_a, agent_b)

    t0 = time.time()
    ctl.toggle(pa, "prod", True)
    seen = w.until(lambda: w.has(agent_a, ctr_a.pid), 2, "A's container on agent A")
    assert seen - t0 <= 2.0
    w.hold(2.5, lambda: w.pids(agent_a) == {ctr_a.pid} and not w.pids(agent_b),
           "only A's container, only on agent A")

    ctl.toggle(pb, "prod", True)
    w.until(lambda: w.has(agent_b, ctr_b.pid), 2, "B's container on agent B")
    w.hold(2.5, lambda: w.pids(agent_a) == {ctr_a.pid} and w.pids(agent_b) == {ctr_b.pid},
           "each agent samples its own project's container only")
    ctl.toggle(pa, "prod", False)
    ctl.toggle(pb, "prod", False)
    w.until(lambda: not w.pids(agent_a) and not w.pids(agent_b), 2, "both to stop")

    assert all(node == "node_a" or pid != ctr_a.pid for node, pid in w.seen), w.seen
    assert all(node == "node_b" or pid != ctr_b.pid for node, pid in w.seen), w.seen
    wait_app(ctl, pa, "prod", app_a, "spin_for_project_a")
    wait_app(ctl, pb, "prod", app_b, "spin_for_project_b")
    assert list(ctl.applications(pa, "prod")) == [app_a]
    assert list(ctl.applications(pb, "prod")) == [app_b]
    stacks_a = ctl.collapsed(pa, "prod", app_a)
    assert not any("spin_for_project_b" in s for s in stacks_a), stacks_a
    assert ctl.collapsed(pa, "prod", app_b) == {}
    stacks_b = ctl.collapsed(pb, "prod", app_b)
    assert not any("spin_for_project_a" in s for s in stacks_b), stacks_b
    for project, other in ((pa, pb), (pb, pa)):
        stored = ctl.stored_profiles(project)
        assert stored and all(r[5].get("project_id") == project for r in stored), stored
        assert all(other not in str(r) for r in stored), stored
    listed = sorted((a["name"], a["connected"]) for a in ctl.listed_agents())
    assert listed == [("node_a", True), ("node_b", True)], listed


def test_bad_token_logs_retries_with_backoff_and_samples_nothing(control, control_agents,
                                                                 workload_containers):
    project, app = rs.unique("ctl-proj"), rs.unique("ctl-app")
    ctl = control(revoked=None)
    workload_containers(app, project, "prod")  # would be sampled by a connected agent
    ctl.toggle(project, "prod", True)
    res = cs.run_console(["token", "revoke", "--data", ctl.data_dir, "--name", "revoked"])
    assert res.returncode == 0, res.stderr
    bad = control_agents(ctl.ws_url, "cpa_" + "A" * 43, name="node-bad")
    revoked = control_agents(ctl.ws_url, ctl.tokens["revoked"], name="node-revoked")
    w = Watch(bad, revoked)
    attempts = {bad.node: [], revoked.node: []}
    counted = {bad.node: 0, revoked.node: 0}
    # the log is read every 20 ms (an attempt's time is known within that), the status twice
    # a second
    end = time.monotonic() + 8
    next_poll = 0
    while time.monotonic() < end:
        if time.monotonic() >= next_poll:
            w.poll()
            assert not w.pids(bad) and not w.pids(revoked), "a target sampled:\n" + w.describe()
            next_poll = time.monotonic() + 0.5
        for a in (bad, revoked):
            lines = [ln for ln in a.log().splitlines() if "401" in ln]
            now = time.monotonic()
            attempts[a.node] += [now] * (len(lines) - counted[a.node])
            counted[a.node] = len(lines)
        time.sleep(0.02)
    w.poll()
    for a in (bad, revoked):
        assert a.alive(), a.describe()
        log = a.log()
        assert re.search(r"401.*token|token.*401", log), "no clear error about the token:\n" + log
        times = attempts[a.node]
        assert 3 <= len(times) <= 9, "%d attempts in 8 s (want a backoff from 1 s): %s\n%s" % (
            len(times), times, log)
        gaps = [b - c for b, c in zip(times[1:], times)]
        assert all(g >= 0.85 for g in gaps), "retries %s s apart:\n%s" % (gaps, log)
        doc = w.last[a.node]
        assert doc["samples"] == 0 and doc["uploads"]["sent"] == 0, doc
        console = doc["console"]
        assert not console["connected"] and console.get("connects", 0) == 0, console
        assert "401" in console.get("last_error", ""), console
        assert not os.path.exists(a.state_file) or not sessions(a, doc), doc
    assert ctl.listed_agents() == []
    assert ctl.applications(project, "prod") == {}
