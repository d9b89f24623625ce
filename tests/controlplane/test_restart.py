"""Killing the operator (SIGKILL) mid-run and starting it again: no duplicate pod, no lost attempt."""

from __future__ import annotations

from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, finish_pod_while_down

EXIT = "test.scriptrun.dev/exit-code"


def test_restart_while_pod_runs(kube: Kube, live_operator: OperatorProcess) -> None:
    kube.apply(scriptrun("held", {}))
    kube.wait("running", lambda: kube.run_status("held").get("phase") == "Running")
    finish_pod_while_down(kube, live_operator, "held-a1")
    status = kube.wait_phase("held", "Succeeded")
    assert [a["attempt"] for a in status["attempts"]] == [1]
    assert [p["metadata"]["name"] for p in kube.list("pods")] == ["held-a1"]


def test_restart_during_backoff_loses_no_attempt(kube: Kube, live_operator: OperatorProcess) -> None:
    spec = {"retryStrategy": {"limit": 2, "backoff": {"strategy": "fixed", "durationSeconds": 3}}}
    kube.apply(scriptrun("retry", spec, {EXIT: "5"}))
    kube.wait("in backoff", lambda: kube.run_status("retry").get("nextAttemptTime"))
    live_operator.kill()
    live_operator.start()
    status = kube.wait_phase("retry", "Failed", timeout=60)
    assert [a["attempt"] for a in status["attempts"]] == [1, 2, 3]
    assert sorted(p["metadata"]["name"] for p in kube.list("pods")) == ["retry-a1", "retry-a2", "retry-a3"]


def test_restart_storm_creates_no_duplicates(kube: Kube, live_operator: OperatorProcess) -> None:
    """Several runs created while the operator is down, then two quick restarts."""
    live_operator.kill()
    for i in range(5):
        kube.apply(scriptrun(f"storm-{i}", {}, {EXIT: "0"}))
    live_operator.start()
    live_operator.kill()
    live_operator.start()
    for i in range(5):
        kube.wait_phase(f"storm-{i}", "Succeeded")
    names = sorted(p["metadata"]["name"] for p in kube.list("pods"))
    assert names == [f"storm-{i}-a1" for i in range(5)]
    assert not [e for e in live_operator.errors() if "Traceback" in e]
