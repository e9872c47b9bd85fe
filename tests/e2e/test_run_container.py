"""`conprof-agent run` profiling a container made by the test (run_support.Container): a Python
process in its own mount + pid namespace whose interpreter lives at a path that exists only
inside it, in a cgroup v2 named like a containerd pod container, with PLATFORM_* variables.

The daemon runs with the directory sink and a selector for the container's project; a second
Python process on the host, of another project, must be left alone. Checked: one profile per
period for the application, the periods unbroken, the sidecar labels (container id, pod UID
with dashes, project, environment, runtime and its version, host, a user label), and the
profile read by `go tool pprof`: the workload's functions in the cpu view (the default) and in
the wall view (-sample_index=wall), the busy thread's exact line. The container's worker keeps
CAP_SYS_PTRACE alone, has no_new_privs set and runs in the container's mount namespace."""
import os

import e2e_support as sup
from e2e_support import Frame
from run_support import (CPU_MARK, CPU_PY, FAST, MAIN_INTERP, OTHER_INTERP, assert_full_periods,
                         assert_unbroken, dir_profiles, interpreter, unique, wait_until)
from run_support import agents, containers, host_apps  # noqa: F401 (fixtures)

CAP_SYS_PTRACE = 19


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def top_rows(text):
    """{function: flat%} of `go tool pprof -top` output."""
    rows = {}
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[1].endswith("%") and parts[4].endswith("%"):
            rows[parts[5]] = float(parts[1].rstrip("%"))
    return rows


def test_container_profiled_with_labels_selector_and_pprof(agents, containers, host_apps,
                                                            tmp_path):
    project, app, environment = unique("ctr-proj"), unique("ctr-shop"), "staging"
    ctr = containers(app, project, environment, scenario="busy_and_sleeping")
    ctr.python_pid()  # the interpreter is invisible from the host, pid 1 of its namespace
    other_app = unique("host-other")
    host_apps(other_app, unique("other-proj"), interp=OTHER_INTERP)

    sink, node = tmp_path / "profiles", unique("node")
    agent = agents(FAST + ["--sink-dir", sink, "--spool-dir", tmp_path / "spool",
                           "--selector", "project=" + project, "--label", "team=e2e-run",
                           "--node-name", node])
    wait_until(lambda: len(dir_profiles(sink, app)) >= 4, 25, "4 profiles of %s" % app,
               agent=agent)
    workers = agent.workers()
    assert len(workers) == 1, "one worker (the container), got %s" % workers
    worker, pid = workers[0], ctr.python_pid()
    worker_mntns = os.readlink("/proc/%d/ns/mnt" % worker)
    container_mntns = os.readlink("/proc/%d/ns/mnt" % pid)
    status = proc_status(worker)
    assert int(status["CapEff"], 16) == 1 << CAP_SYS_PTRACE, (
        "the worker should keep CAP_SYS_PTRACE only: CapEff %s" % status["CapEff"])
    assert int(status["CapPrm"], 16) == 1 << CAP_SYS_PTRACE, status["CapPrm"]
    assert status["NoNewPrivs"] == "1", "the worker should set no_new_privs"
    rc, took = agent.terminate_mid_period(timeout=15)
    assert rc == 0, agent.describe()

    assert sorted(os.listdir(str(sink))) == [app], (
        "only the selected container's application may be profiled (%s is another project): "
        "%s" % (other_app, os.listdir(str(sink))))
    profiles = dir_profiles(sink, app)
    periods = [(p.from_ns, p.until_ns) for p in profiles]
    assert_unbroken(periods, app, agent.started_ns)
    assert_full_periods(periods, app, agent.started_ns)

    version = interpreter(MAIN_INTERP).info["version"]
    probe = sup.run_agent(["version"]).stdout.split()[1]
    expected = {"application_name": app, "project_id": project, "environment": environment,
                "container_id": ctr.id, "pod_uid": ctr.pod_uid, "container_runtime": "containerd",
                "runtime": "cpython", "runtime_version": version, "runtime_os": "linux",
                "runtime_arch": "x86_64", "probe_version": probe, "host": node,
                "team": "e2e-run"}
    for p in profiles:
        labels = p.sidecar.get("labels", {})
        wrong = {k: (labels.get(k), v) for k, v in expected.items() if labels.get(k) != v}
        assert not wrong, "%s: labels (got, want) %s\nall labels: %s" % (p.path, wrong, labels)
        assert p.sidecar["application_name"] == app and p.sidecar["format"] == "pprof"
        assert p.sidecar["sample_rate_hz"] == 100 and p.path.name.endswith(".pb.gz")

    full = profiles[len(profiles) // 2]  # a whole period
    types, samples, locations = sup.check_pprof(full.path, ["busy_worker"], tmp_path)
    cpu = top_rows(sup.go_pprof(["-top", full.path], tmp_path))
    assert cpu.get("busy_worker", 0) >= 80, "cpu view: busy_worker should hold the CPU: %s" % cpu
    wall = top_rows(sup.go_pprof(["-top", "-sample_index=wall", full.path], tmp_path))
    assert wall.get("busy_worker", 0) >= 30 and wall.get("busy_and_sleeping", 0) >= 30, (
        "wall view: the spinning thread and the sleeping main thread both: %s" % wall)
    stacks = sup.pprof_stacks(types, samples, locations, "cpu/nanoseconds")
    leaf = sup.dominant_stack(stacks)[0][-1]
    assert leaf == Frame("busy_worker", str(CPU_PY), CPU_MARK["busy_worker_spin"]), (
        "the heaviest CPU stack should end in the spin line:\n" + sup.describe_stacks(stacks))
    # last, so that the checks above run either way: the design has the worker enter the
    # container's mount namespace (setns) rather than read files through /proc/PID/root
    assert worker_mntns == container_mntns, (
        "the worker did not enter the container's mount namespace (worker %s, container %s)"
        % (worker_mntns, container_mntns))
