"""The `scriptrun` CLI against the cluster (the current kubeconfig): submit --watch, get, suspend,
resume, stop, retry, logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import Kube

EXIT = "test.scriptrun.dev/exit-code"


def cli(kube: Kube, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scriptrun", *args, "-n", kube.ns],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kube.cluster.env(),
    )


def task(name: str, exit_code: str | None = "0", **kw: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "script": {"source": "print(1)"}, **kw}
    if exit_code is not None:
        t["podMetadata"] = {"annotations": {EXIT: exit_code}}
    return t


def write(tmp: Path, name: str, tasks: list[dict[str, Any]], **spec: Any) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "scriptrun.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": name},
                "spec": {"tasks": tasks, **spec},
            }
        )
    )
    return path


def test_submit_watch_and_get(kube: Kube, tmp_path: Path) -> None:
    path = write(tmp_path, "cli-ok", [task("a"), task("b", dependencies=["a"])])
    proc = cli(kube, "submit", "-f", str(path), "--watch")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "workflow/cli-ok created" in proc.stdout and "phase: Succeeded" in proc.stdout
    text = cli(kube, "get", "cli-ok")
    assert text.returncode == 0 and "Workflow" in text.stdout and "progress: 2/2" in text.stdout
    data = json.loads(cli(kube, "get", "cli-ok", "-o", "json").stdout)
    assert data["status"]["phase"] == "Succeeded"
    assert yaml.safe_load(cli(kube, "get", "cli-ok-a", "-o", "yaml").stdout)["kind"] == "ScriptRun"
    missing = cli(kube, "get", "nope")
    assert missing.returncode == 1 and "no Workflow or ScriptRun named 'nope'" in missing.stderr


def test_submit_refuses_an_invalid_manifest_locally(kube: Kube, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "scriptrun.dev/v1alpha1",
                "kind": "ScriptRun",
                "metadata": {"name": "bad"},
                "spec": {"script": {"source": "x"}, "retryStrategy": {"limit": -2}},
            }
        )
    )
    proc = cli(kube, "submit", "-f", str(path))
    assert proc.returncode == 2 and "spec.retryStrategy.limit" in proc.stderr


def test_suspend_resume_stop_and_retry(kube: Kube, tmp_path: Path) -> None:
    path = write(tmp_path, "cli-ops", [task("a", exit_code=None), task("b", dependencies=["a"])])
    assert cli(kube, "submit", "-f", str(path)).returncode == 0
    kube.wait("a running", lambda: kube.get("pod", "cli-ops-a-a1"))
    assert "suspended" in cli(kube, "suspend", "cli-ops").stdout
    assert (kube.get("workflow", "cli-ops") or {})["spec"]["suspend"] is True
    assert "resumed" in cli(kube, "resume", "cli-ops").stdout
    kube.patch("pod", "cli-ops-a-a1", {"metadata": {"annotations": {EXIT: "2"}}})
    kube.wait("failed", lambda: (kube.get("workflow", "cli-ops") or {}).get("status", {}).get("phase") == "Failed")
    retry = cli(kube, "retry", "cli-ops")
    assert retry.returncode == 0 and "retry 1 requested" in retry.stdout
    kube.wait(
        "a again",
        lambda: (p := kube.get("pod", "cli-ops-a-a1")) and EXIT not in p["metadata"].get("annotations", {}) and p,
    )
    assert "shutdown Terminate" in cli(kube, "stop", "cli-ops", "--terminate").stdout
    status = kube.wait(
        "terminated",
        lambda: (s := (kube.get("workflow", "cli-ops") or {}).get("status", {})).get("phase") == "Failed" and s,
    )
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "Terminated"
    again = cli(kube, "retry", "cli-ok-never")
    assert again.returncode == 1


def test_logs_explain_when_the_node_serves_none(kube: Kube, tmp_path: Path) -> None:
    path = write(tmp_path, "cli-logs", [task("a")])
    assert cli(kube, "submit", "-f", str(path), "--watch").returncode == 0
    proc = cli(kube, "logs", "cli-logs", "--task", "a")
    # kwok nodes run no containers, so there is no log to fetch: the CLI says so plainly
    assert "==> cli-logs-a (cli-logs-a-a1)" in proc.stdout
    assert proc.returncode == 1 and "cannot read the logs of pod cli-logs-a-a1" in proc.stderr
    assert "no task 'zz' has run" in cli(kube, "logs", "cli-logs", "--task", "zz").stderr
