"""Workflows through the real operator: children are ScriptRuns, kwok plays the kubelet; what a
script would write (exit code, outputs) arrives through pod annotations and the monitor's message."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import Kube
from tests.support.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
EXIT = "test.scriptrun.dev/exit-code"
MONITOR = "test.scriptrun.dev/monitor-message"


def annotate(task: dict[str, Any], exit_code: int | None = 0, outputs: dict[str, str] | None = None) -> dict[str, Any]:
    ann: dict[str, str] = {}
    if exit_code is not None:
        ann[EXIT] = str(exit_code)
    if outputs is not None:
        ann[MONITOR] = json.dumps({"cpuAvgPercent": 50.0, "memoryMaxMb": 12.5, "outputs": outputs})
    task = dict(task)
    task["podMetadata"] = {"annotations": ann}
    return task


def wf(name: str, tasks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"tasks": tasks, **spec},
    }


def t(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "script": {"source": f"print('{name}')"}, **kw}


def status(kube: Kube, name: str) -> dict[str, Any]:
    return (kube.get("workflow", name) or {}).get("status") or {}


def wait_wf(kube: Kube, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    return kube.wait(f"workflow {name} {phase}", lambda: (s := status(kube, name)).get("phase") == phase and s, timeout)


def children(kube: Kube, name: str) -> dict[str, dict[str, Any]]:
    return {
        c["metadata"]["labels"]["scriptrun.dev/node"]: c
        for c in kube.list("scriptruns", f"scriptrun.dev/workflow={name}")
    }


def test_etl_example_with_matrix_and_outputs(kube: Kube) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "etl-workflow.yaml").read_text())
    outputs = {"extract": {"rows": "2000", "checksum": "abc"}, "transform": {"bytes": "100"}, "load": {"total": "300"}}
    doc["spec"]["tasks"] = [annotate(task, 0, outputs.get(task["name"])) for task in doc["spec"]["tasks"]]
    doc["spec"]["onExit"] = [annotate(task, 0) for task in doc["spec"]["onExit"]]
    kube.apply(doc)
    st = wait_wf(kube, "etl", "Succeeded")
    assert st["progress"] == "6/6"
    assert {n: s["phase"] for n, s in st["tasks"].items()} == {
        "extract": "Succeeded",
        "transform-0": "Succeeded",
        "transform-1": "Succeeded",
        "transform-2": "Succeeded",
        "load": "Succeeded",
        "report": "Succeeded",
    }
    assert st["tasks"]["extract"]["outputs"] == {"rows": "2000", "checksum": "abc"}
    assert st["tasks"]["load"]["usage"] == {"cpuAvgPercent": 50.0, "memoryMaxMb": 12.5}
    kids = children(kube, "etl")
    assert sorted(c["metadata"]["name"] for c in kids.values()) == [
        "etl-extract",
        "etl-load",
        "etl-report",
        "etl-transform-0",
        "etl-transform-1",
        "etl-transform-2",
    ]
    assert [kids[f"transform-{i}"]["spec"]["args"] for i in range(3)] == [
        ["csv", "2000"],
        ["json", "2000"],
        ["parquet", "2000"],
    ]
    env = {e["name"]: e["value"] for e in kids["load"]["spec"]["env"]}
    assert json.loads(env["SIZES"]) == ["100", "100", "100"] and env["CHECKSUM"] == "abc"
    report_env = {e["name"]: e["value"] for e in kids["report"]["spec"]["env"]}
    assert report_env == {"WORKFLOW_STATUS": "Succeeded", "WORKFLOW_FAILURES": "[]"}
    owner = kids["load"]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Workflow" and owner["name"] == "etl"
    pod = kube.get("pod", "etl-load-a1")
    assert pod is not None and pod["metadata"]["labels"]["scriptrun.dev/workflow"] == "etl"
    monitor_env = {e["name"]: e["value"] for e in pod["spec"]["initContainers"][0]["env"]}
    assert monitor_env["SCRIPTRUN_WORKFLOW"] == "etl" and monitor_env["SCRIPTRUN_TASK"] == "load"
    table = kube.cluster.kubectl("-n", kube.ns, "get", "swf", "etl").stdout
    assert "Succeeded" in table and "6/6" in table
    assert {e["reason"] for e in kube.events("etl")} >= {"WorkflowRunning", "WorkflowSucceeded"}


def test_failing_task_with_retries_when_skip_and_exit_handler(kube: Kube) -> None:
    kube.apply(
        wf(
            "fails",
            [
                annotate(t("a", retryStrategy={"limit": 1, "backoff": {"durationSeconds": 0}}), 3),
                annotate(t("b", dependencies=["a"]), 0),
                annotate(t("never", when="1 == 2"), 0),
            ],
            onExit=[annotate(t("handler", args=["{{workflow.status}}"]), 0)],
        )
    )
    st = wait_wf(kube, "fails", "Failed")
    tasks = st["tasks"]
    assert tasks["a"]["phase"] == "Failed" and tasks["a"]["attempts"] == 2 and tasks["a"]["exitCode"] == 3
    assert tasks["b"]["phase"] == "Omitted" and tasks["never"]["phase"] == "Skipped"
    assert tasks["handler"]["phase"] == "Succeeded"
    kids = children(kube, "fails")
    assert set(kids) == {"a", "handler"}  # no child for skipped or omitted tasks
    assert kids["handler"]["spec"]["args"] == ["Failed"]
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Failed"] == "TaskFailed"


def test_suspend_and_resume(kube: Kube) -> None:
    kube.apply(wf("paused", [annotate(t("a"), 0), annotate(t("b", dependencies=["a"]), 0)], suspend=True))
    kube.wait(
        "suspended",
        lambda: any(
            c["type"] == "Suspended" and c["status"] == "True" for c in status(kube, "paused").get("conditions", [])
        ),
    )
    time.sleep(1)
    assert children(kube, "paused") == {}
    kube.patch("workflow", "paused", {"spec": {"suspend": False}})
    wait_wf(kube, "paused", "Succeeded")


def test_stop_lets_running_finish_and_runs_exit_handlers(kube: Kube) -> None:
    kube.apply(wf("stopme", [t("slow"), annotate(t("next", dependencies=["slow"]), 0)], onExit=[annotate(t("bye"), 0)]))
    kube.wait("slow running", lambda: kube.get("pod", "stopme-slow-a1"))
    kube.patch("workflow", "stopme", {"spec": {"shutdown": "Stop"}})
    time.sleep(1)
    assert kube.get("pod", "stopme-slow-a1") is not None  # Stop does not kill it
    kube.patch("pod", "stopme-slow-a1", {"metadata": {"annotations": {EXIT: "0"}}})
    st = wait_wf(kube, "stopme", "Failed")
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Failed"] == "Stopped"
    assert st["tasks"]["slow"]["phase"] == "Succeeded" and st["tasks"]["next"]["phase"] == "Omitted"
    assert st["tasks"]["bye"]["phase"] == "Succeeded"


def test_terminate_stops_now(kube: Kube) -> None:
    kube.apply(wf("killme", [t("slow"), annotate(t("next", dependencies=["slow"]), 0)], onExit=[annotate(t("bye"), 0)]))
    kube.wait("slow running", lambda: kube.get("pod", "killme-slow-a1"))
    kube.patch("workflow", "killme", {"spec": {"shutdown": "Terminate"}})
    st = wait_wf(kube, "killme", "Failed")
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Failed"] == "Terminated"
    child = kube.get("scriptrun", "killme-slow")
    assert child is not None and child["status"]["attempts"][0]["reason"] == "Terminated"
    assert "bye" not in children(kube, "killme")
    kube.wait("pod gone", lambda: kube.get("pod", "killme-slow-a1") is None)


def test_retry_keeps_successful_tasks(kube: Kube) -> None:
    kube.apply(wf("again", [annotate(t("a"), 0), t("b", dependencies=["a"])]))
    kube.wait("b running", lambda: kube.get("pod", "again-b-a1"))
    kube.patch("pod", "again-b-a1", {"metadata": {"annotations": {EXIT: "1"}}})
    wait_wf(kube, "again", "Failed")
    a_uid = kube.get("scriptrun", "again-a")["metadata"]["uid"]  # type: ignore[index]
    proc = kube.cluster.kubectl("-n", kube.ns, "annotate", "workflow/again", "scriptrun.dev/retry=1")
    assert proc.returncode == 0
    kube.wait(
        "b running again",
        lambda: (
            (p := kube.get("pod", "again-b-a1"))
            and "test.scriptrun.dev/exit-code" not in p["metadata"].get("annotations", {})
            and p
        ),
        timeout=60,
    )
    kube.patch("pod", "again-b-a1", {"metadata": {"annotations": {EXIT: "0"}}})
    st = wait_wf(kube, "again", "Succeeded")
    assert st["retryRound"] == 1
    assert kube.get("scriptrun", "again-a")["metadata"]["uid"] == a_uid  # type: ignore[index]


def test_child_deleted_mid_run_fails_with_a_reason(kube: Kube) -> None:
    kube.apply(wf("orphan", [t("slow")]))
    kube.wait("child", lambda: kube.get("scriptrun", "orphan-slow"))
    kube.delete("scriptrun", "orphan-slow")
    st = wait_wf(kube, "orphan", "Failed")
    assert "ScriptRunDeleted" in st["tasks"]["slow"]["message"]


def test_invalid_workflow_fails_with_the_engine_message(kube: Kube) -> None:
    kube.apply(wf("cyclic", [t("a", dependencies=["b"]), t("b", dependencies=["a"])]))
    st = wait_wf(kube, "cyclic", "Failed")
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Failed"] == "InvalidWorkflow"
    assert "dependency cycle: a -> b -> a" in st["message"]


def test_operator_restart_mid_workflow(kube: Kube, live_operator: OperatorProcess) -> None:
    kube.apply(wf("chain", [t("s0")] + [annotate(t(f"s{i}", dependencies=[f"s{i - 1}"]), 0) for i in range(1, 6)]))
    kube.wait("s0 running", lambda: kube.get("pod", "chain-s0-a1"))
    uids = {n: c["metadata"]["uid"] for n, c in children(kube, "chain").items()}
    live_operator.kill()
    kube.patch("pod", "chain-s0-a1", {"metadata": {"annotations": {EXIT: "0"}}})
    time.sleep(1)
    live_operator.start()
    st = wait_wf(kube, "chain", "Succeeded")
    assert st["progress"] == "6/6"
    kids = children(kube, "chain")
    assert sorted(kids) == [f"s{i}" for i in range(6)]
    assert kids["s0"]["metadata"]["uid"] == uids["s0"]
    assert len(kube.list("pods", "scriptrun.dev/workflow=chain")) == 6


def test_pod_gc_and_ttl_after_completion(kube: Kube) -> None:
    kube.apply(
        wf(
            "tidy",
            [annotate(t("a"), 0), annotate(t("b", dependencies=["a"]), 0)],
            podGC={"strategy": "OnPodCompletion"},
            ttlStrategy={"secondsAfterSuccess": 3},
        )
    )
    wait_wf(kube, "tidy", "Succeeded")
    kube.wait("pods collected", lambda: kube.list("pods", "scriptrun.dev/workflow=tidy") == [], timeout=30)
    # the children keep their results after their pods are gone
    child = kube.get("scriptrun", "tidy-a")
    assert child is not None and child["status"]["phase"] == "Succeeded"
    kube.wait("workflow deleted by TTL", lambda: kube.get("workflow", "tidy") is None, timeout=30)
    kube.wait("children collected", lambda: kube.list("scriptruns", "scriptrun.dev/workflow=tidy") == [], timeout=30)
