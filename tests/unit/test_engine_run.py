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


# -- pending attempts: explained, and bounded by pendingTimeoutSeconds --------------------------------

NEVER_PULL = 'container main: Container image "x:0" is not present with pull policy of Never'
NO_NODE = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."


def pending(reason: str | None = None, message: str | None = None, start: datetime | None = None) -> AttemptObservation:
    return AttemptObservation(1, "r-a1", "Pending", start_time=start, reason=reason, message=message)


def cond(status: ScriptRunStatus, ctype: str) -> tuple[str, str, str]:
    found = {c.type: c for c in status.conditions}[ctype]
    return found.status, found.reason, found.message


def test_a_waiting_reason_is_recorded_explained_and_announced_once() -> None:
    s = decide(spec(), ScriptRunStatus(), {}, T0, attempt_name=lambda n: f"r-a{n}").status
    assert s.attempts[0].created_time == "2026-01-01T12:00:00Z"
    assert cond(s, "Waiting") == ("False", "NotWaiting", "")
    d = decide(spec(), s, {1: pending("ErrImageNeverPull", NEVER_PULL, T0)}, T0 + timedelta(seconds=2))
    st = d.status
    assert st.phase == RunPhase.PENDING
    assert st.message == f"attempt 1 pending: ErrImageNeverPull: {NEVER_PULL}"
    assert (st.attempts[0].reason, st.attempts[0].message) == ("ErrImageNeverPull", NEVER_PULL)
    assert st.attempts[0].created_time == "2026-01-01T12:00:00Z"
    assert cond(st, "Waiting") == ("True", "ErrImageNeverPull", f"attempt 1: {NEVER_PULL}")
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "AttemptWaiting")]
    assert "ErrImageNeverPull" in d.events[0].message
    assert d.wake_at is None  # no pendingTimeoutSeconds: the resync alone looks again
    # the same world again: no new Event, no status change
    again = decide(spec(), st, {1: pending("ErrImageNeverPull", NEVER_PULL, T0)}, T0 + timedelta(seconds=9))
    assert again.events == [] and again.status.dump() == st.dump()


def test_the_kubelets_pull_retries_are_one_cause() -> None:
    s = decide(spec(), ScriptRunStatus(), {}, T0).status
    s = decide(spec(), s, {1: pending("ErrImagePull", "container main: pull failed")}, T0).status
    d = decide(spec(), s, {1: pending("ImagePullBackOff", "container main: back-off")}, T0 + timedelta(seconds=5))
    assert d.events == []
    assert cond(d.status, "Waiting")[:2] == ("True", "ImagePullBackOff")
    d = decide(spec(), d.status, {1: pending("Unschedulable", NO_NODE)}, T0 + timedelta(seconds=6))
    assert [e.reason for e in d.events] == ["AttemptWaiting"]  # a different cause is news


def test_running_clears_the_pending_reason() -> None:
    s = decide(spec(), ScriptRunStatus(), {}, T0).status
    s = decide(spec(), s, {1: pending("Unschedulable", NO_NODE)}, T0).status
    d = decide(spec(), s, {1: AttemptObservation(1, "r-a1", "Running", T0)}, T0 + timedelta(seconds=3))
    assert d.status.phase == RunPhase.RUNNING and d.status.message == "attempt 1 running"
    assert (d.status.attempts[0].reason, d.status.attempts[0].message) == (None, None)
    waiting = {c.type: c for c in d.status.conditions}["Waiting"]
    assert (waiting.status, waiting.reason, waiting.last_transition_time) == (
        "False",
        "NotWaiting",
        "2026-01-01T12:00:03Z",
    )


def test_pending_timeout_fails_with_the_waiting_reason_and_stops_the_pod() -> None:
    sp = spec(pendingTimeoutSeconds=30)
    d = decide(sp, ScriptRunStatus(), {}, T0, attempt_name=lambda n: f"r-a{n}")
    assert d.wake_at == T0 + timedelta(seconds=30)
    obs = {1: pending("Unschedulable", NO_NODE)}
    d = decide(sp, d.status, obs, T0 + timedelta(seconds=10))
    assert d.wake_at == T0 + timedelta(seconds=30) and d.actions == []
    d = decide(sp, d.status, obs, T0 + timedelta(seconds=30))
    st = d.status
    assert d.actions == [StopAttempt(1, "r-a1", "PendingTimeout")]
    assert st.phase == RunPhase.FAILED
    att = st.attempts[0]
    assert (att.phase, att.reason, att.finish_time) == (RunPhase.FAILED, "Unschedulable", "2026-01-01T12:00:30Z")
    assert att.message == f"not running after pendingTimeoutSeconds=30: {NO_NODE}"
    assert cond(st, "Failed")[:2] == ("True", "Unschedulable")
    assert "pendingTimeoutSeconds=30" in (st.message or "") and NO_NODE in (st.message or "")
    assert cond(st, "Waiting")[:2] == ("False", "NotWaiting")
    assert {"PendingTimeout", "Unschedulable"} <= {e.reason for e in d.events}


def test_pending_timeout_without_a_known_reason() -> None:
    sp = spec(pendingTimeoutSeconds=5)
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    d = decide(sp, s, {1: pending()}, T0 + timedelta(seconds=6))
    assert d.status.attempts[0].reason == "PendingTimeout"
    assert d.status.attempts[0].message == "not running after pendingTimeoutSeconds=5"
    assert cond(d.status, "Failed")[:2] == ("True", "PendingTimeout")


def test_pending_timeout_is_an_error_for_the_retry_policy() -> None:
    """It never ran the script: retried by OnError and Always, not by the default OnFailure."""
    obs = {1: pending("ErrImageNeverPull", NEVER_PULL)}
    late = T0 + timedelta(seconds=11)
    on_failure = spec(pendingTimeoutSeconds=10, retryStrategy={"limit": 2, "backoff": {"durationSeconds": 0}})
    d = decide(on_failure, decide(on_failure, ScriptRunStatus(), {}, T0).status, obs, late)
    assert d.status.phase == RunPhase.FAILED and cond(d.status, "Failed")[1] == "ErrImageNeverPull"
    on_error = spec(
        pendingTimeoutSeconds=10,
        retryStrategy={"limit": 2, "retryPolicy": "OnError", "backoff": {"durationSeconds": 0}},
    )
    d = decide(on_error, decide(on_error, ScriptRunStatus(), {}, T0).status, obs, late)
    assert StartAttempt(2) in d.actions and d.status.phase == RunPhase.RUNNING
    assert d.status.attempts[1].created_time == "2026-01-01T12:00:11Z"
    assert d.wake_at == late + timedelta(seconds=10)  # the new attempt's pending deadline


def test_a_running_attempt_is_not_bound_by_the_pending_timeout() -> None:
    sp = spec(pendingTimeoutSeconds=5, timeoutSeconds=100)
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    d = decide(
        sp, s, {1: AttemptObservation(1, "r-a1", "Running", T0 + timedelta(seconds=1))}, T0 + timedelta(seconds=60)
    )
    assert d.actions == [] and d.status.phase == RunPhase.RUNNING
    assert d.wake_at == T0 + timedelta(seconds=106)  # startTime + timeoutSeconds + 5 s grace


def test_wake_at_is_the_earlier_of_the_pending_and_the_attempt_deadline() -> None:
    sp = spec(pendingTimeoutSeconds=30, timeoutSeconds=20)
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    # the node accepted the pod (startTime) but the image cannot be pulled
    d = decide(sp, s, {1: pending("ImagePullBackOff", "x", start=T0 + timedelta(seconds=1))}, T0 + timedelta(seconds=2))
    assert d.wake_at == T0 + timedelta(seconds=26)  # startTime + 20 + 5 s grace, before created + 30


def test_a_deadline_while_pending_says_the_pod_never_ran() -> None:
    s = decide(spec(timeoutSeconds=5), ScriptRunStatus(), {}, T0).status
    s = decide(spec(timeoutSeconds=5), s, {1: pending("ErrImageNeverPull", NEVER_PULL, T0)}, T0).status
    dead = AttemptObservation(1, "r-a1", "Failed", T0, None, None, "DeadlineExceeded", "Pod was active too long")
    d = decide(spec(timeoutSeconds=5), s, {1: dead}, T0 + timedelta(seconds=6))
    att = d.status.attempts[0]
    assert att.reason == "DeadlineExceeded"
    assert att.message == f"Pod was active too long (the pod never ran: ErrImageNeverPull: {NEVER_PULL})"


def test_an_attempt_recorded_without_creation_time_is_stamped_on_sight() -> None:
    """Status written before createdTime existed: the pending clock starts when this operator looks."""
    sp = spec(pendingTimeoutSeconds=10)
    s = decide(sp, ScriptRunStatus(), {}, T0).status
    s.attempts[0].created_time = None
    d = decide(sp, s, {1: pending()}, T0 + timedelta(seconds=100))
    assert d.status.phase == RunPhase.PENDING
    assert d.status.attempts[0].created_time == "2026-01-01T12:01:40Z"
    assert d.wake_at == T0 + timedelta(seconds=110)
