"""A pod that cannot start: the real scheduler finds no node, the run says why (status, the
`Waiting` condition, one Event) and `pendingTimeoutSeconds` ends it with that reason."""

from __future__ import annotations

from typing import Any

from tests.support.kube import Kube, scriptrun

NOWHERE = {"nodeSelector": {"scriptrun.dev/none": "x"}}  # the one kwok node has no such label


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return {c["type"]: c for c in status.get("conditions", [])}.get(ctype) or {}


def test_unschedulable_is_explained_while_it_waits(kube: Kube) -> None:
    kube.apply(scriptrun("nowhere", NOWHERE))

    def explained() -> dict[str, Any] | None:
        status = kube.run_status("nowhere")
        waiting = condition(status, "Waiting")
        return status if (waiting.get("status"), waiting.get("reason")) == ("True", "Unschedulable") else None

    # the scheduler's verdict wakes the run (it is part of the pod signature): well before the resync
    status = kube.wait("Waiting=Unschedulable", explained, timeout=10)
    assert status["phase"] == "Pending", status  # written, not only a model default
    attempt = status["attempts"][0]
    assert attempt["reason"] == "Unschedulable" and attempt["createdTime"], attempt
    assert "startTime" not in attempt  # an unscheduled pod never gets one
    assert status["message"].startswith("attempt 1 pending: Unschedulable: 0/1 nodes are available"), status
    assert "node affinity/selector" in condition(status, "Waiting")["message"]
    events = kube.wait(
        "AttemptWaiting event",
        lambda: [e for e in kube.events("nowhere") if e["reason"] == "AttemptWaiting"],
    )
    assert len(events) == 1 and events[0]["type"] == "Warning" and events[0].get("count", 1) == 1, events


def test_pending_timeout_fails_with_the_reason_and_removes_the_pod(kube: Kube) -> None:
    kube.apply(scriptrun("nowhere-timeout", {**NOWHERE, "pendingTimeoutSeconds": 3}))
    status = kube.wait_phase("nowhere-timeout", "Failed", timeout=60)
    attempt = status["attempts"][0]
    assert attempt["reason"] == "Unschedulable", attempt
    assert "pendingTimeoutSeconds=3" in attempt["message"] and "0/1 nodes are available" in attempt["message"]
    failed = condition(status, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "Unschedulable"), failed
    assert condition(status, "Waiting")["status"] == "False"
    assert "pendingTimeoutSeconds=3" in status["message"], status["message"]
    assert len(status["attempts"]) == 1  # an error, and the default retryPolicy is OnFailure
    kube.wait("pod removed", lambda: kube.get("pod", "nowhere-timeout-a1") is None)
    reasons = kube.wait(
        "events",
        lambda: (
            (r := {e["reason"] for e in kube.events("nowhere-timeout")}) >= {"PendingTimeout", "Unschedulable"} and r
        ),
    )
    assert "AttemptCreated" in reasons


def test_a_workflow_task_summary_says_why_its_child_waits(kube: Kube) -> None:
    task = {"name": "stuck", "script": {"source": "print('stuck')"}, **NOWHERE}
    kube.apply(
        {
            "apiVersion": "scriptrun.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "wf"},
            "spec": {"tasks": [task]},
        }
    )

    def summary() -> dict[str, Any] | None:
        found = (((kube.get("workflow", "wf") or {}).get("status") or {}).get("tasks") or {}).get("stuck") or {}
        return found if found.get("reason") == "Unschedulable" else None

    found = kube.wait("task summary with the reason", summary, timeout=60)
    assert found["phase"] == "Pending", found
    assert found["message"].startswith("attempt 1 pending: Unschedulable: 0/1 nodes are available"), found
