"""The run state machine, driven with observations as a backend would report them."""

from datetime import UTC, datetime, timedelta
from typing import Any

from scriptrun.engine.observe import AttemptObservation
from scriptrun.engine.run import Blocked, StartAttempt, StopAttempt, decide
from scriptrun.model.scriptrun import RunPhase, ScriptRunSpec, ScriptRunStatus

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def spec(**kw: Any) -> ScriptRunSpec:
    return ScriptRunSpec.model_validate({"script": {"source": "print(1)"}, **kw})


def failed(n: int, at: datetime, code: int = 3, reason: str = "Error") -> AttemptObservation:
    return AttemptObservation(n, f"r-a{n}", "Failed", at - timedelta(seconds=1), at, code, reason)


def test_first_reconcile_starts_attempt_one_and_records_it() -> None:
    d = decide(spec(), ScriptRunStatus(), {}, T0, attempt_name=lambda n: f"r-a{n}")
    assert d.actions == [StartAttempt(1)]
    assert d.status.phase == RunPhase.PENDING
    assert [(a.attempt, a.pod_name, a.phase) for a in d.status.attempts] == [(1, "r-a1", RunPhase.PENDING)]


def test_success() -> None:
    s1 = decide(spec(), ScriptRunStatus(), {}, T0).status
    obs = {1: AttemptObservation(1, "r-a1", "Succeeded", T0, T0 + timedelta(seconds=3), 0, "Completed")}
    d = decide(spec(), s1, obs, T0 + timedelta(seconds=4), expected={1})
    assert d.status.phase == RunPhase.SUCCEEDED
    assert d.status.completion_time and d.status.duration
    assert d.actions == []
    conds = {c.type: (c.status, c.reason) for c in d.status.conditions}
    assert conds["Complete"] == ("True", "Succeeded")
    assert conds["Failed"][0] == "False"


def test_retry_waits_for_backoff_and_shows_it() -> None:
    sp = spec(retryStrategy={"limit": 2, "backoff": {"durationSeconds": 10, "factor": 2}})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    obs = {1: failed(1, T0 + timedelta(seconds=2))}
    d = decide(sp, s, obs, T0 + timedelta(seconds=3))
    assert d.actions == []
    assert d.status.phase == RunPhase.RUNNING
    assert d.status.next_attempt_time == "2026-01-01T12:00:12Z"
    assert d.wake_at == T0 + timedelta(seconds=12)
    assert {c.type: c.status for c in d.status.conditions}["Retrying"] == "True"
    d2 = decide(sp, d.status, obs, T0 + timedelta(seconds=12))
    assert d2.actions == [StartAttempt(2)]
    # the second wait doubles
    obs[2] = failed(2, T0 + timedelta(seconds=20))
    d3 = decide(sp, d2.status, obs, T0 + timedelta(seconds=21))
    assert d3.wake_at == T0 + timedelta(seconds=40)


def test_limit_exceeded_fails_with_all_attempts_recorded() -> None:
    sp = spec(retryStrategy={"limit": 1, "backoff": {"durationSeconds": 0}})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    obs = {1: failed(1, T0)}
    s = decide(sp, s, obs, T0).status
    obs[2] = failed(2, T0 + timedelta(seconds=1))
    d = decide(sp, s, obs, T0 + timedelta(seconds=2))
    assert d.status.phase == RunPhase.FAILED
    assert [a.exit_code for a in d.status.attempts] == [3, 3]
    assert {c.type: c.reason for c in d.status.conditions}["Failed"] == "BackoffLimitExceeded"
    assert d.status.attempt_count == 2


def test_exit_code_rule_fail_stops_retries() -> None:
    sp = spec(retryStrategy={"limit": 5, "onExitCodes": [{"action": "Fail", "values": [42]}]})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    d = decide(sp, s, {1: failed(1, T0, code=42)}, T0)
    assert d.status.phase == RunPhase.FAILED
    assert {c.type: c.reason for c in d.status.conditions}["Failed"] == "ExitCodeRule"


def test_exit_code_rule_ignore_does_not_count() -> None:
    sp = spec(
        retryStrategy={
            "limit": 0,
            "backoff": {"durationSeconds": 0},
            "onExitCodes": [{"action": "Ignore", "values": [75]}],
        }
    )
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    d = decide(sp, s, {1: failed(1, T0, code=75)}, T0)
    assert d.actions == [StartAttempt(2)]
    assert d.status.attempts[0].counted is False


def test_policy_on_error_does_not_retry_a_script_failure_but_retries_eviction() -> None:
    sp = spec(retryStrategy={"limit": 3, "retryPolicy": "OnError", "backoff": {"durationSeconds": 0}})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    assert decide(sp, s, {1: failed(1, T0)}, T0).status.phase == RunPhase.FAILED
    d = decide(sp, s, {1: failed(1, T0, code=None, reason="Evicted")}, T0)  # type: ignore[arg-type]
    assert d.actions == [StartAttempt(2)]


def test_oomkilled_reason_is_kept() -> None:
    s = decide(spec(), ScriptRunStatus(), {}, T0).status
    d = decide(spec(), s, {1: failed(1, T0, code=137, reason="OOMKilled")}, T0)
    assert d.status.phase == RunPhase.FAILED
    assert d.status.attempts[0].reason == "OOMKilled"
    assert {c.type: c.reason for c in d.status.conditions}["Failed"] == "OOMKilled"


def test_vanished_pod_is_pod_deleted_unless_expected() -> None:
    sp = spec(retryStrategy={"limit": 1, "retryPolicy": "Always", "backoff": {"durationSeconds": 0}})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    # just created, not yet seen by the watch: still pending
    assert decide(sp, s, {}, T0, expected={1}).status.attempts[0].phase == RunPhase.PENDING
    d = decide(sp, s, {}, T0)
    assert d.status.attempts[0].reason == "PodDeleted"
    assert d.actions == [StartAttempt(2)]


def test_deadline_stops_a_running_attempt() -> None:
    sp = spec(timeoutSeconds=10)
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    running = {1: AttemptObservation(1, "r-a1", "Running", T0)}
    d = decide(sp, s, running, T0 + timedelta(seconds=5), deadline_grace_seconds=1)
    assert d.wake_at == T0 + timedelta(seconds=11) and d.actions == []
    d = decide(sp, s, running, T0 + timedelta(seconds=11), deadline_grace_seconds=1)
    assert d.actions == [StopAttempt(1, "r-a1", "DeadlineExceeded")]
    assert d.status.phase == RunPhase.FAILED
    assert d.status.attempts[0].reason == "DeadlineExceeded"


def test_terminal_attempt_is_never_rewritten() -> None:
    s = decide(spec(), ScriptRunStatus(), {}, T0).status
    s = decide(spec(), s, {1: failed(1, T0)}, T0).status
    d = decide(spec(), s, {1: AttemptObservation(1, "r-a1", "Running", T0)}, T0)
    assert d.status.phase == RunPhase.FAILED and d.status.attempts[0].phase == RunPhase.FAILED


def test_blocked_fails_with_reason() -> None:
    d = decide(spec(), ScriptRunStatus(), {}, T0, blocked=Blocked("ConfigMapNotFound", "no cm"))
    assert d.status.phase == RunPhase.FAILED
    assert d.actions == []
    assert {c.type: c.reason for c in d.status.conditions}["Failed"] == "ConfigMapNotFound"


def test_unchanged_inputs_give_identical_status() -> None:
    """Level-triggered: reconciling twice with the same world writes nothing new."""
    sp = spec(retryStrategy={"limit": 2, "backoff": {"durationSeconds": 30}})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    obs = {1: failed(1, T0)}
    a = decide(sp, s, obs, T0 + timedelta(seconds=1)).status
    b = decide(sp, a, obs, T0 + timedelta(seconds=2)).status
    assert a.dump() == b.dump()


def test_max_duration_stops_retries() -> None:
    sp = spec(retryStrategy={"limit": 10, "backoff": {"durationSeconds": 60, "maxDurationSeconds": 30}})
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    obs = {1: AttemptObservation(1, "r-a1", "Failed", T0, T0 + timedelta(seconds=1), 1, "Error")}
    d = decide(sp, s, obs, T0 + timedelta(seconds=2))
    assert d.status.phase == RunPhase.FAILED
    assert {c.type: c.reason for c in d.status.conditions}["Failed"] == "MaxDurationExceeded"
