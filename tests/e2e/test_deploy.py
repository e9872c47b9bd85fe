"""The deployment files agree with the agent: every flag and environment variable that the
Kubernetes manifests, the systemd unit and the Dockerfile pass exists in the agent, the YAML
parses, and the ConfigMap's agent.json is a config the agent accepts."""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
AGENT = os.environ.get("CONPROF_AGENT", str(REPO / "build" / "conprof-agent"))
CONSOLE = os.environ.get("CONPROF_CONSOLE", str(REPO / "build" / "conprof-console"))


def run_help():
    res = subprocess.run([AGENT, "run", "--help"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout


def manifests():
    docs = []
    for path in sorted((REPO / "deploy" / "kubernetes").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def containers():
    for name, doc in manifests():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            yield name, doc, c


def test_yaml_parses_and_daemonset_is_least_privilege():
    kinds = {d["kind"] for _, d in manifests()}
    assert {"DaemonSet", "ServiceAccount", "ConfigMap"} <= kinds
    ds = [d for _, d in manifests() if d["kind"] == "DaemonSet"][0]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    sc = pod["containers"][0]["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == [
        "DAC_READ_SEARCH", "SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"]
    assert "limits" in pod["containers"][0]["resources"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["CONPROF_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def flags_in(args):
    return [a.split("=")[0] for a in args if a.startswith("--")]


def test_every_flag_and_env_var_exists():
    help_text = run_help()
    docs = (REPO / "docs" / "agent-config.md").read_text()
    used_flags, used_env = set(), set()
    for _, _, c in containers():
        used_flags |= set(flags_in(c.get("args", [])))
        used_env |= {e["name"] for e in c.get("env", [])}
    unit = (REPO / "deploy" / "systemd" / "conprof-agent.service").read_text()
    for line in unit.splitlines():
        if line.startswith("ExecStart="):
            used_flags |= set(flags_in(line.split()[1:]))
        if line.startswith("Environment="):
            used_env.add(line.split("=", 2)[1])
    used_flags |= set(flags_in(json.loads("[" + dockerfile_cmds()["agent"] + "]")))
    assert used_flags, "no flags found in the deployment files"
    for flag in sorted(used_flags):
        assert re.search(re.escape(flag) + r"\b", help_text), (
            "%s is used by the deployment files but `conprof-agent run --help` does not know it"
            % flag)
    for var in sorted(used_env):
        assert var in docs, "%s is set by the deployment files but not documented" % var
        assert var.encode() in Path(AGENT).read_bytes(), "%s is not read by the agent" % var


def dockerfile_cmds():
    """The CMD of each named stage of the Dockerfile: {"agent": '"run", ...', ...}."""
    cmds = {}
    for stage in re.split(r"^FROM ", (REPO / "Dockerfile").read_text(), flags=re.M)[1:]:
        name = re.match(r"\S+(?: AS (\S+))?", stage).group(1)
        cmd = re.search(r"^CMD \[(.*)\]", stage, re.M)
        if name and cmd:
            cmds[name] = cmd.group(1)
    assert set(cmds) == {"agent", "console"}, cmds
    return cmds


def test_console_image_uses_known_flags():
    cmd = json.loads("[" + dockerfile_cmds()["console"] + "]")
    assert cmd[0] == "serve"
    res = subprocess.run([CONSOLE, "serve", "--help"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    for flag in flags_in(cmd):
        assert flag in res.stdout, "%s is not a flag of `conprof-console serve`" % flag


def test_configmap_config_is_accepted(tmp_path):
    cm = [d for _, d in manifests() if d["kind"] == "ConfigMap"][0]
    cfg = json.loads(cm["data"]["agent.json"])
    # keep its settings, but write where the test may
    assert "sink" not in cfg, "a named sink would keep profiles away from a console"
    cfg["sink"] = {"dir": str(tmp_path / "profiles")}
    cfg["spool"]["dir"] = str(tmp_path / "spool")
    cfg["status_socket"] = str(tmp_path / "agent.sock")
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([AGENT, "run", "--config", str(path)], stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, "the agent refused the ConfigMap's config: " + proc.stderr.read()
        status = subprocess.run([AGENT, "status", "--socket", str(tmp_path / "agent.sock")],
                                capture_output=True, text=True, timeout=10)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "period 45 s" in status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_bad_config_is_rejected_with_the_key(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text('{"rate_hz": 100, "spool": {"max_bytes": "big"}}')
    res = subprocess.run([AGENT, "run", "--config", str(path)], capture_output=True, text=True,
                         timeout=10)
    assert res.returncode == 2
    assert "spool.max_bytes" in res.stderr and "expected an integer" in res.stderr
