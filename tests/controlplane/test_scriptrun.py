"""ScriptRun through the real operator against a real kube-apiserver; kwok plays the kubelet."""

from __future__ import annotations

import itertools
import json
from datetime import datetime

from tests.support.kube import Kube, scriptrun

EXIT = "test.scriptrun.dev/exit-code"
REASON = "test.scriptrun.dev/reason"
MONITOR_MESSAGE = "test.scriptrun.dev/monitor-message"


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in status.get("conditions", [])}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_create_to_pod_to_succeeded(kube: Kube) -> None:
    summary = {"execution_time_seconds": 1.5, "cpu_max": 80.0, "memory_max_mb": 42.0, "samples": 3}
    kube.apply(
        scriptrun(
            "ok", {"timeoutSeconds": 120, "args": ["--n", "1"]}, {EXIT: "0", MONITOR_MESSAGE: json.dumps(summary)}
        )
    )
    status = kube.wait_phase("ok", "Succeeded")

    pod = kube.get("pod", "ok-a1")
    assert pod is not None
    run = kube.get("scriptrun", "ok")
    assert run is not None
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ScriptRun",
        "ok",
        run["metadata"]["uid"],
        True,
    )
    labels = pod["metadata"]["labels"]
    assert labels["scriptrun.dev/scriptrun"] == "ok" and labels["scriptrun.dev/attempt"] == "1"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 120
    assert spec["shareProcessNamespace"] is True and spec["automountServiceAccountToken"] is False
    monitor = spec["initContainers"][0]
    assert monitor["name"] == "monitor" and monitor["restartPolicy"] == "Always"
    assert monitor["terminationMessagePath"] == "/dev/termination-log"
    assert monitor["ports"][0]["containerPort"] == 9090
    main = spec["containers"][0]
    assert main["command"] == [
        "python3",
        "/scriptrun/run/launch.py",
        "/scriptrun/run",
        "--",
        "python3",
        "/scriptrun/script/main.py",
    ]
    assert main["args"] == ["--n", "1"]
    assert monitor["command"] == ["scriptrun", "monitor"] and "--interval=1" in monitor["args"]
    assert monitor["startupProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics", "scheme": "HTTP"}
    shared = {m["mountPath"] for m in main["volumeMounts"]} & {m["mountPath"] for m in monitor["volumeMounts"]}
    assert shared == {"/scriptrun/run", "/scriptrun/run/outputs"}
    # a small inline script travels in the pod (downward API), no ConfigMap
    assert pod["metadata"]["annotations"]["scriptrun.dev/script"] == "print('hi')"
    assert kube.get("configmap", "ok-script") is None

    assert [a["exitCode"] for a in status["attempts"]] == [0]
    assert status["observedGeneration"] == run["metadata"]["generation"]
    assert conditions(status)["Complete"] == ("True", "Succeeded")
    assert status["startTime"] and status["completionTime"] and status["duration"]
    # the monitor's termination message is copied into status
    assert status["usage"] == {**summary, "available": True}
    reasons = kube.wait(
        "events", lambda: (r := {e["reason"] for e in kube.events("ok")}) >= {"AttemptCreated", "Succeeded"} and r
    )
    assert "AttemptRunning" not in reasons  # Events are etcd writes: only what matters
    table = kube.cluster.kubectl("-n", kube.ns, "get", "sr", "ok").stdout
    assert "Succeeded" in table.splitlines()[1] and "ATTEMPTS" in table.splitlines()[0]


def test_exit_code_retried_with_backoff_then_failed(kube: Kube) -> None:
    spec = {"retryStrategy": {"limit": 2, "backoff": {"strategy": "fixed", "durationSeconds": 2}}}
    kube.apply(scriptrun("flaky", spec, {EXIT: "3"}))
    waiting = kube.wait(
        "backoff visible in status", lambda: (s := kube.run_status("flaky")).get("nextAttemptTime") and s
    )
    assert conditions(waiting)["Retrying"] == ("True", "Backoff")
    assert waiting["phase"] == "Running"
    status = kube.wait_phase("flaky", "Failed")
    attempts = status["attempts"]
    assert [(a["attempt"], a["exitCode"], a["reason"]) for a in attempts] == [
        (1, 3, "Error"),
        (2, 3, "Error"),
        (3, 3, "Error"),
    ]
    for before, after in itertools.pairwise(attempts):
        # kwok stamps whole seconds; the operator waited at least the 2 s backoff between them
        assert (ts(after["startTime"]) - ts(before["finishTime"])).total_seconds() >= 1
    assert conditions(status)["Failed"] == ("True", "BackoffLimitExceeded")
    assert status["attemptCount"] == 3
    pods = sorted(p["metadata"]["name"] for p in kube.list("pods"))
    assert pods == ["flaky-a1", "flaky-a2", "flaky-a3"]
    events = {e["reason"] for e in kube.events("flaky")}
    assert {"Backoff", "AttemptFailed", "BackoffLimitExceeded"} <= events


def test_exit_code_rule_fails_fast(kube: Kube) -> None:
    spec = {"retryStrategy": {"limit": 5, "onExitCodes": [{"action": "Fail", "values": [42]}]}}
    kube.apply(scriptrun("fast", spec, {EXIT: "42"}))
    status = kube.wait_phase("fast", "Failed")
    assert len(status["attempts"]) == 1
    assert conditions(status)["Failed"] == ("True", "ExitCodeRule")


def test_oomkilled_is_reported(kube: Kube) -> None:
    kube.apply(scriptrun("oom", {"resources": {"limits": {"memory": "64Mi"}}}, {EXIT: "137", REASON: "OOMKilled"}))
    status = kube.wait_phase("oom", "Failed")
    assert status["attempts"][0]["reason"] == "OOMKilled" and status["attempts"][0]["exitCode"] == 137
    assert conditions(status)["Failed"] == ("True", "OOMKilled")


def test_timeout_stops_the_attempt(kube: Kube) -> None:
    # no exit-code annotation: the kwok "kubelet" keeps the pod running until the operator stops it
    kube.apply(scriptrun("slow", {"timeoutSeconds": 2}))
    status = kube.wait_phase("slow", "Failed", timeout=30)
    assert status["attempts"][0]["reason"] == "DeadlineExceeded"
    assert conditions(status)["Failed"] == ("True", "DeadlineExceeded")
    kube.wait("pod deleted", lambda: kube.get("pod", "slow-a1") is None)


def test_evicted_pod_is_retried_under_on_error(kube: Kube) -> None:
    spec = {"retryStrategy": {"limit": 1, "retryPolicy": "OnError", "backoff": {"durationSeconds": 0}}}
    kube.apply(scriptrun("evict", spec))
    kube.wait(
        "pod running", lambda: ((kube.get("pod", "evict-a1") or {}).get("status") or {}).get("phase") == "Running"
    )
    # what the kubelet writes when it evicts a pod
    kube.patch(
        "pod",
        "evict-a1",
        {"status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}},
        subresource="status",
    )
    kube.wait("second attempt", lambda: kube.get("pod", "evict-a2"))
    kube.patch("pod", "evict-a2", {"metadata": {"annotations": {EXIT: "0"}}})
    status = kube.wait_phase("evict", "Succeeded")
    assert [a["reason"] for a in status["attempts"]] == ["Evicted", "Completed"]


def test_pod_deleted_by_someone_else(kube: Kube) -> None:
    spec = {"retryStrategy": {"limit": 1, "retryPolicy": "Always", "backoff": {"durationSeconds": 0}}}
    kube.apply(scriptrun("gone", spec))
    kube.wait("pod", lambda: kube.get("pod", "gone-a1"))
    kube.delete("pod", "gone-a1")
    kube.wait("second attempt", lambda: kube.get("pod", "gone-a2"))
    status = kube.run_status("gone")
    assert status["attempts"][0]["reason"] == "PodDeleted"


def test_a_monitor_crash_never_fails_the_run(kube: Kube) -> None:
    kube.apply(scriptrun("moncrash", {}, {EXIT: "0", "test.scriptrun.dev/monitor-exit-code": "1"}))
    status = kube.wait_phase("moncrash", "Succeeded")
    assert status["usage"]["available"] is False
    assert status["usage"]["reason"] == "MonitorNoSummary"


def test_monitor_disabled_means_no_sidecar(kube: Kube) -> None:
    kube.apply(scriptrun("nomon", {"monitor": {"enabled": False}}, {EXIT: "0"}))
    status = kube.wait_phase("nomon", "Succeeded")
    assert "usage" not in status
    pod = kube.get("pod", "nomon-a1")
    assert pod is not None
    assert "initContainers" not in pod["spec"] and not pod["spec"].get("shareProcessNamespace")
    assert pod["spec"]["containers"][0]["command"] == ["python3", "/scriptrun/script/main.py"]
