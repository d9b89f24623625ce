"""What used to be handler policy, now decided by the engine as data: a retry's retired children,
podGC, the TTL, a refused pod, a name held by a predecessor's pod; and decisions never change their
input (the engine copies only what it edits)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scriptrun.engine.dag import build_plan
from scriptrun.engine.observe import AttemptObservation, ChildObservation, observe_child
from scriptrun.engine.run import DeleteSelf, Refusal, RemoveStale, StartAttempt, decide
from scriptrun.engine.workflow import (
    CollectPods,
    DeleteWorkflow,
    RetireNode,
    StartNode,
    StopNode,
    decide_workflow,
    invalid_workflow,
)
from scriptrun.model.scriptrun import RunPhase, ScriptRunSpec, ScriptRunStatus
from scriptrun.model.workflow import WorkflowSpec, WorkflowStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def wf_spec(tasks: list[str], **kw: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"tasks": [{"name": t, "script": {"source": "print(1)"}} for t in tasks], **kw})


def run_spec(**kw: Any) -> ScriptRunSpec:
    return ScriptRunSpec.model_validate({"script": {"source": "print(1)"}, **kw})


def done(phase: str = "Succeeded", **kw: Any) -> ChildObservation:
    return ChildObservation(phase=phase, attempts=1, started="2026-01-01T00:00:00Z", **kw)  # type: ignore[arg-type]


def drive(spec: WorkflowSpec, observed: dict[str, ChildObservation], status: WorkflowStatus | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    return decide_workflow(build_plan(spec), spec, status or WorkflowStatus(), observed, T0, name="w", **kw)


# -- workflow ------------------------------------------------------------------------------------


def test_retry_retires_the_failed_children_and_starts_them_again() -> None:
    spec = wf_spec(["a", "b"])
    failed = drive(spec, {"a": done(), "b": done("Failed", exit_code=1)}).status
    assert failed.phase == "Failed"
    d = drive(spec, {"a": done(), "b": done("Failed", exit_code=1)}, failed, retry_round=1)
    assert d.actions[0] == RetireNode("b")  # the old child goes before the new one is created
    assert [a.node for a in d.actions if isinstance(a, StartNode)] == ["b"]
    assert d.status.phase == "Running" and d.status.retry_round == 1
    assert "WorkflowRetry" in [e.reason for e in d.events]
    # the same round again is not a new retry
    again = drive(spec, {"a": done()}, d.status, retry_round=1)
    assert not any(isinstance(a, RetireNode) for a in again.actions)


def test_pod_gc_per_node_and_per_workflow() -> None:
    spec = wf_spec(["a", "b"], podGC={"strategy": "OnPodSuccess"})
    both = frozenset({"a", "b"})
    d = drive(spec, {"a": done(), "b": done("Failed")}, pods_left=both)
    assert [a for a in d.actions if isinstance(a, CollectPods)] == [CollectPods("a")]
    spec = wf_spec(["a", "b"], podGC={"strategy": "OnWorkflowCompletion"})
    live = drive(spec, {"a": done(), "b": ChildObservation(phase="Running")}, pods_left=both)
    assert not any(isinstance(a, CollectPods) for a in live.actions)
    finished = drive(spec, {"a": done(), "b": done("Failed")}, pods_left=both)
    assert [a for a in finished.actions if isinstance(a, CollectPods)] == [CollectPods(None)]  # one request
    gone = drive(spec, {"a": done(), "b": done("Failed")})
    assert not any(isinstance(a, CollectPods) for a in gone.actions)  # nothing left: no request


def test_ttl_wakes_then_deletes_the_workflow() -> None:
    spec = wf_spec(["a"], ttlStrategy={"secondsAfterCompletion": 30})
    d = drive(spec, {"a": done()})
    assert d.status.phase == "Succeeded" and d.wake_at == T0 + timedelta(seconds=30)
    later = decide_workflow(build_plan(spec), spec, d.status, {"a": done()}, T0 + timedelta(seconds=31), name="w")
    assert DeleteWorkflow() in later.actions


def test_stop_is_not_sent_twice() -> None:
    spec = wf_spec(["a"], shutdown="Terminate")
    assert StopNode("a") in drive(spec, {"a": ChildObservation(phase="Running")}).actions
    assert drive(spec, {"a": ChildObservation(phase="Running", stopping=True)}).actions == []


def test_invalid_workflow_fails_with_the_reason() -> None:
    d = invalid_workflow(WorkflowStatus(), "InvalidWorkflow", "task a: nope", T0, 3, event=True)
    assert d.status.phase == "Failed" and d.status.observed_generation == 3
    assert [(c.type, c.reason) for c in d.status.conditions] == [("Failed", "InvalidWorkflow")]
    assert [e.reason for e in d.events] == ["InvalidWorkflow"]
    assert invalid_workflow(d.status, "InvalidWorkflow", "again", T0, 3, event=True).events == []


def test_child_observation_from_a_stored_status() -> None:
    obs = observe_child(
        {
            "phase": "Pending",
            "attempts": [{"attempt": 1}],
            "conditions": [{"type": "Waiting", "status": "True", "reason": "ErrImagePull"}],
            "message": "attempt 1 pending: ErrImagePull",
            "usage": {"cpuAvgPercent": 3, "memoryMaxMb": 10, "threads": 4},
        }
    )
    assert (obs.phase, obs.attempts, obs.reason) == ("Pending", 1, "ErrImagePull")
    assert obs.usage == {"cpuAvgPercent": 3, "memoryMaxMb": 10}
    assert observe_child({"phase": "Bogus"}).phase == "Pending"


def test_a_decision_never_changes_its_input() -> None:
    spec = wf_spec(["a", "b", "c"], parallelism=2)
    status = drive(spec, {"a": done()}).status
    before = status.dump()
    drive(spec, {"a": done(), "b": done("Failed")}, status)
    assert status.dump() == before
    run_status = decide(run_spec(), ScriptRunStatus(), {}, T0, attempt_name=lambda n: f"r-a{n}").status
    before = run_status.dump()
    seen = {1: AttemptObservation(1, "r-a1", "Failed", T0, T0, 3, "Error")}
    decide(run_spec(retryStrategy={"limit": 1}), run_status, seen, T0, attempt_name=lambda n: f"r-a{n}")
    assert run_status.dump() == before


# -- runs ----------------------------------------------------------------------------------------


def test_a_name_held_by_a_predecessor_is_freed_first() -> None:
    d = decide(run_spec(), ScriptRunStatus(), {}, T0, attempt_name=lambda n: f"r-a{n}", held=frozenset({"r-a1"}))
    assert d.actions == [RemoveStale("r-a1")] and d.wake_at == T0 + timedelta(seconds=1)
    assert d.status.attempts == []  # nothing recorded until the pod really starts


def test_a_refused_pod_fails_the_run_unless_the_namespace_is_young() -> None:
    young = Refusal(403, 'pods "r-a1" is forbidden: error looking up service account ns/default: not found')
    d = decide(run_spec(), ScriptRunStatus(), {}, T0, created=T0, refused=young, attempt_name=lambda n: f"r-a{n}")
    assert d.actions == [] and d.status.phase == RunPhase.PENDING and d.wake_at == T0 + timedelta(seconds=1)
    old = decide(
        run_spec(), ScriptRunStatus(), {}, T0, created=T0 - timedelta(minutes=5), refused=young, attempt_name=str
    )
    assert old.status.phase == RunPhase.FAILED
    invalid = Refusal(422, "spec.containers[0].image: Required value")
    d = decide(run_spec(), ScriptRunStatus(), {}, T0, created=T0, refused=invalid, attempt_name=str)
    assert d.status.phase == RunPhase.FAILED and "spec.containers[0].image" in (d.status.message or "")
    assert [c.reason for c in d.status.conditions if c.type == "Failed"] == ["PodRejected"]
    assert not any(isinstance(a, StartAttempt) for a in d.actions)


def test_run_ttl() -> None:
    first = decide(run_spec(ttlSecondsAfterFinished=10), ScriptRunStatus(), {}, T0, attempt_name=lambda n: f"r-a{n}")
    seen = {1: AttemptObservation(1, "r-a1", "Succeeded", T0, T0, 0, "Completed")}
    d = decide(run_spec(ttlSecondsAfterFinished=10), first.status, seen, T0, attempt_name=lambda n: f"r-a{n}")
    assert d.status.phase == RunPhase.SUCCEEDED and d.wake_at == T0 + timedelta(seconds=10)
    later = T0 + timedelta(seconds=11)
    d = decide(run_spec(ttlSecondsAfterFinished=10), d.status, seen, later, attempt_name=lambda n: f"r-a{n}")
    assert d.actions == [DeleteSelf()]
