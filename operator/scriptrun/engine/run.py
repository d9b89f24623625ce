"""One ScriptRun's state machine: from recorded status + observed attempts to the next status.

Level-triggered: `decide` is a pure function of (spec, last status, what the backend observes now,
the clock). Both backends (Kubernetes pods and local processes) call it and carry out its actions.
Recorded terminal attempts are final: a later observation never rewrites them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from scriptrun.engine import clock
from scriptrun.engine.backoff import backoff_seconds
from scriptrun.engine.conditions import set_condition
from scriptrun.engine.observe import ERROR_REASONS, MESSAGE_LIMIT, PENDING_REASONS, AttemptObservation
from scriptrun.model.scriptrun import Attempt, RetryStrategy, RunPhase, RunTemplate, ScriptRunStatus

EventType = Literal["Normal", "Warning"]
_CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")  # metav1.Condition's reason


@dataclass(frozen=True)
class StartAttempt:
    attempt: int


@dataclass(frozen=True)
class StopAttempt:
    attempt: int
    name: str
    reason: str


Action = StartAttempt | StopAttempt


@dataclass(frozen=True)
class RunEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Blocked:
    """The operator found the spec unusable (e.g. a missing ConfigMap): fail with this reason."""

    reason: str
    message: str


@dataclass
class Decision:
    status: ScriptRunStatus
    actions: list[Action] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)
    wake_at: datetime | None = None


def _attempt_from(obs: AttemptObservation, previous: Attempt | None) -> Attempt:
    message = obs.message
    if obs.state == "Failed" and previous is not None and previous.phase == RunPhase.PENDING and previous.reason:
        # e.g. activeDeadlineSeconds ran out while the image could not be pulled: say so
        message = f"{message or obs.reason} (the pod never ran: {_cause(previous)})"[:MESSAGE_LIMIT]
    return Attempt(
        attempt=obs.attempt,
        pod_name=obs.name,
        phase=RunPhase(obs.state),
        created_time=previous.created_time if previous else None,
        start_time=clock.fmt(obs.start_time) if obs.start_time else (previous.start_time if previous else None),
        finish_time=clock.fmt(obs.finish_time) if obs.finish_time else None,
        exit_code=obs.exit_code,
        reason=obs.reason,
        message=message,
    )


def _cause(attempt: Attempt) -> str:
    """Why a pending attempt waits (or a failed one never ran): `Reason: message`."""
    return f"{attempt.reason}: {attempt.message}" if attempt.message else str(attempt.reason)


def _wake(decision: Decision, at: datetime) -> None:
    decision.wake_at = at if decision.wake_at is None else min(decision.wake_at, at)


def _pending_timeout(spec: RunTemplate, last: Attempt, now: datetime) -> tuple[Attempt, datetime | None]:
    """pendingTimeoutSeconds: an attempt whose pod is not running that long after the attempt was
    created fails with the reason it waited for (PendingTimeout when none is known).

    Returns the attempt (failed, or stamped with a creation time if it had none: status written by
    an older operator) and when to look again."""
    limit = spec.pending_timeout_seconds
    if not limit or last.phase != RunPhase.PENDING:
        return last, None
    created = clock.parse(last.created_time)
    if created is None:
        return last.model_copy(update={"created_time": clock.fmt(now)}), now + timedelta(seconds=limit)
    deadline = created + timedelta(seconds=limit)
    if now < deadline:
        return last, deadline
    why = f"not running after pendingTimeoutSeconds={limit}"
    update = {
        "phase": RunPhase.FAILED,
        "finish_time": clock.fmt(now),
        "reason": last.reason or "PendingTimeout",
        "message": (f"{why}: {last.message}" if last.message else why)[:MESSAGE_LIMIT],
    }
    return last.model_copy(update=update), None


def _enforce_pending_timeout(decision: Decision, spec: RunTemplate, attempts: list[Attempt], now: datetime) -> None:
    """Fail (and stop) the last attempt if it outlived pendingTimeoutSeconds; else wake at that time."""
    if not attempts or attempts[-1].phase != RunPhase.PENDING:
        return
    last, deadline = _pending_timeout(spec, attempts[-1], now)
    attempts[-1] = last
    if deadline is not None:
        _wake(decision, deadline)
    if last.phase == RunPhase.FAILED:
        decision.actions.append(StopAttempt(last.attempt, last.pod_name, "PendingTimeout"))
        decision.events.append(RunEvent("Warning", "PendingTimeout", f"attempt {last.attempt} failed: {_cause(last)}"))


def _record_started(decision: Decision, spec: RunTemplate, attempt_name: Callable[[int], str], now: datetime) -> None:
    """Record each attempt this decision starts, stamped with its creation time."""
    for act in decision.actions:
        if isinstance(act, StartAttempt):
            name = attempt_name(act.attempt)
            decision.status.attempts.append(Attempt(attempt=act.attempt, pod_name=name, created_time=clock.fmt(now)))
            if spec.pending_timeout_seconds:
                _wake(decision, now + timedelta(seconds=spec.pending_timeout_seconds))


def _failure_text(attempt: Attempt, *, exit_code: bool = False) -> str:
    """A failed attempt in a few words; one that never ran says why (and after which timeout)."""
    if attempt.reason in PENDING_REASONS:
        return _cause(attempt)
    return f"{attempt.reason}, exit code {attempt.exit_code}" if exit_code else str(attempt.reason)


def _live_message(attempt: Attempt) -> str:
    if attempt.phase == RunPhase.PENDING and attempt.reason:
        return f"attempt {attempt.attempt} pending: {_cause(attempt)}"
    return f"attempt {attempt.attempt} {attempt.phase.value.lower()}"


# The kubelet alternates these two while it retries a pull: one cause, one Event.
_SAME_CAUSE = {"ImagePullBackOff": "ErrImagePull"}


def _set_waiting(decision: Decision, previous: dict[int, Attempt], now: datetime, generation: int) -> None:
    """The `Waiting` condition: True while the current attempt's pod waits for a known reason (the
    kubelet's or the scheduler's), False otherwise; one Warning Event when such a cause appears."""
    status = decision.status
    last = status.attempts[-1] if status.attempts else None
    if last is None or last.phase != RunPhase.PENDING or not last.reason or status.phase.terminal:
        set_condition(status.conditions, "Waiting", False, "NotWaiting", "", now, generation)
        return
    reason = last.reason if _CONDITION_REASON.match(last.reason) else "Waiting"
    message = f"attempt {last.attempt}: {last.message or last.reason}"
    set_condition(status.conditions, "Waiting", True, reason, message, now, generation)
    before = previous.get(last.attempt)
    before_reason = before.reason if before is not None and before.phase == RunPhase.PENDING else None
    if _SAME_CAUSE.get(last.reason, last.reason) != _SAME_CAUSE.get(before_reason or "", before_reason):
        decision.events.append(RunEvent("Warning", "AttemptWaiting", _live_message(last)))


def _set_usage(status: ScriptRunStatus, summary: dict[str, object] | None) -> None:
    """The monitor's summary: outputs go to status.outputs, the rest is usage."""
    usage = dict(summary or {})
    outputs = usage.pop("outputs", None)
    error = usage.pop("outputsError", None)
    status.usage = usage
    if isinstance(outputs, dict):
        status.outputs = {str(k): str(v) for k, v in outputs.items()}
    if error:
        status.outputs_error = str(error)


def _failure_kind(attempt: Attempt) -> Literal["failure", "error"]:
    """An "error" is the platform's: the pod was lost or never started; anything else is the script's."""
    reason = attempt.reason or ""
    return "error" if reason in ERROR_REASONS or reason in PENDING_REASONS else "failure"


def _exit_code_action(strategy: RetryStrategy, exit_code: int | None) -> str:
    if exit_code is None:
        return "Count"
    for rule in strategy.on_exit_codes or []:
        listed = exit_code in rule.values
        if listed == (rule.operator == "In"):
            return rule.action
    return "Count"


def _policy_allows(strategy: RetryStrategy, kind: str) -> bool:
    if strategy.retry_policy == "Always":
        return True
    return (strategy.retry_policy == "OnFailure") == (kind == "failure")


def _merge_attempts(
    recorded: list[Attempt],
    observed: dict[int, AttemptObservation],
    expected: set[int],
    now: datetime,
) -> tuple[list[Attempt], dict[int, dict[str, object] | None]]:
    """Recorded attempts updated from observations; vanished live attempts become PodDeleted."""
    by_number = {a.attempt: a for a in recorded}
    usage: dict[int, dict[str, object] | None] = {}
    for number in sorted(set(by_number) | set(observed)):
        prev = by_number.get(number)
        obs = observed.get(number)
        if prev is not None and prev.phase.terminal:
            if obs is not None and obs.usage is not None and obs.state in ("Succeeded", "Failed"):
                usage[number] = obs.usage
            continue
        if obs is not None:
            by_number[number] = _attempt_from(obs, prev)
            if obs.state in ("Succeeded", "Failed"):
                usage[number] = obs.usage
        elif prev is not None and number not in expected:
            by_number[number] = prev.model_copy(
                update={
                    "phase": RunPhase.FAILED,
                    "finish_time": clock.fmt(now),
                    "reason": "PodDeleted",
                    "message": f"{prev.pod_name} disappeared before it finished",
                }
            )
    return [by_number[n] for n in sorted(by_number)], usage


def decide(
    spec: RunTemplate,
    status: ScriptRunStatus,
    observed: dict[int, AttemptObservation],
    now: datetime,
    *,
    generation: int = 0,
    created: datetime | None = None,
    expected: set[int] | None = None,
    blocked: Blocked | None = None,
    deadline_grace_seconds: float = 5.0,
    attempt_name: Callable[[int], str] = lambda n: f"attempt-{n}",
) -> Decision:
    """Compute the next status and the actions that move the run forward."""
    strategy = spec.retry_strategy or RetryStrategy()
    old_phase = status.phase
    new = status.model_copy(deep=True)
    new.observed_generation = generation
    decision = Decision(status=new)
    events = decision.events

    if old_phase.terminal:
        # Finished runs only pick up late usage (the monitor summary can trail the phase).
        attempts, usage = _merge_attempts(status.attempts, observed, expected or set(), now)
        if attempts and usage.get(attempts[-1].attempt) is not None and new.usage is None:
            _set_usage(new, usage[attempts[-1].attempt])
        return decision

    attempts, usage = _merge_attempts(status.attempts, observed, expected or set(), now)
    previous = {a.attempt: a for a in status.attempts}
    for att in attempts:
        before = previous.get(att.attempt)
        # One Event when an attempt starts (AttemptCreated) and one when the run ends; in between only
        # what needs attention (a failed attempt, a backoff). Every Event is an etcd write.
        if att.phase == RunPhase.FAILED and (before is None or not before.phase.terminal):
            failure = f"attempt {att.attempt} failed: {att.reason}, exit code {att.exit_code}"
            events.append(RunEvent("Warning", "AttemptFailed", failure))

    terminate = bool(getattr(spec, "terminate", None))
    last = attempts[-1] if attempts else None
    if terminate and last is not None and not last.phase.terminal:
        last = last.model_copy(
            update={
                "phase": RunPhase.FAILED,
                "finish_time": clock.fmt(now),
                "reason": "Terminated",
                "message": "stopped: spec.terminate is true",
            }
        )
        attempts[-1] = last
        decision.actions.append(StopAttempt(last.attempt, last.pod_name, "Terminated"))

    _enforce_pending_timeout(decision, spec, attempts, now)
    # Per-attempt deadline, enforced here too: the kubelet enforces activeDeadlineSeconds, but a
    # node that cannot (or a local process) must still be stopped.
    last = attempts[-1] if attempts else None
    if last is not None and not last.phase.terminal and spec.timeout_seconds and last.start_time:
        started = clock.parse(last.start_time)
        assert started is not None
        deadline = started + timedelta(seconds=spec.timeout_seconds + deadline_grace_seconds)
        if now >= deadline:
            last = last.model_copy(
                update={
                    "phase": RunPhase.FAILED,
                    "finish_time": clock.fmt(now),
                    "reason": "DeadlineExceeded",
                    "message": f"attempt ran longer than timeoutSeconds={spec.timeout_seconds}",
                }
            )
            attempts[-1] = last
            decision.actions.append(StopAttempt(last.attempt, last.pod_name, "DeadlineExceeded"))
            events.append(RunEvent("Warning", "DeadlineExceeded", f"attempt {last.attempt} timed out"))
        else:
            _wake(decision, deadline)

    # Ignore rules are sticky per attempt, decided when the attempt failed.
    for i, att in enumerate(attempts):
        if att.phase == RunPhase.FAILED and _exit_code_action(strategy, att.exit_code) == "Ignore":
            attempts[i] = att.model_copy(update={"counted": False})
    new.attempts = attempts
    new.attempt_count = len(attempts)
    first_start = next((a.start_time for a in attempts if a.start_time), None)
    new.start_time = new.start_time or first_start
    gen = generation
    phase: RunPhase
    message = new.message
    new.next_attempt_time = None
    fail_reason: str | None = None

    if terminate and (last is None or last.phase.terminal) and not (last and last.phase == RunPhase.SUCCEEDED):
        phase, fail_reason, message = RunPhase.FAILED, "Terminated", "stopped: spec.terminate is true"
    elif blocked is not None and (last is None or last.phase.terminal):
        phase, fail_reason, message = RunPhase.FAILED, blocked.reason, blocked.message
    elif last is None:
        # the same message the next reconcile computes for a pending attempt: one status write, not two
        phase, message = RunPhase.PENDING, "attempt 1 pending"
        decision.actions.append(StartAttempt(1))
        events.append(RunEvent("Normal", "AttemptCreated", "starting attempt 1"))
    elif not last.phase.terminal:
        phase = RunPhase.RUNNING if (last.phase == RunPhase.RUNNING or len(attempts) > 1) else RunPhase.PENDING
        message = _live_message(last)
    elif last.phase == RunPhase.SUCCEEDED:
        phase, message = RunPhase.SUCCEEDED, f"succeeded on attempt {last.attempt}"
    else:
        kind = _failure_kind(last)
        action = _exit_code_action(strategy, last.exit_code)
        counted_retries = sum(1 for a in attempts[:-1] if a.counted)
        retries_left = strategy.limit - counted_retries - (1 if last.counted else 0)
        run_started = clock.parse(new.start_time) or created or now
        finished = clock.parse(last.finish_time) or now
        wait = backoff_seconds(strategy.backoff, max(1, counted_retries + (1 if last.counted else 0)))
        retry_at = finished + timedelta(seconds=wait)
        max_dur = strategy.backoff.max_duration_seconds
        if action == "Fail":
            phase, fail_reason = RunPhase.FAILED, "ExitCodeRule"
            message = f"exit code {last.exit_code} matched an exit-code rule with action Fail"
        elif not _policy_allows(strategy, kind):
            phase, fail_reason = RunPhase.FAILED, last.reason or "Error"
            message = f"attempt {last.attempt} failed ({_failure_text(last)}); retryPolicy {strategy.retry_policy} "
            message += "does not retry it" if strategy.limit else "and no retries are configured"
        elif action != "Ignore" and retries_left < 0:
            phase = RunPhase.FAILED
            fail_reason = "BackoffLimitExceeded" if strategy.limit else (last.reason or "Error")
            message = (
                f"failed after {len(attempts)} attempts; last: {_failure_text(last, exit_code=True)}"
                if strategy.limit
                else f"attempt 1 failed: {_failure_text(last, exit_code=True)}"
            )
        elif max_dur is not None and (retry_at - run_started).total_seconds() > max_dur:
            phase, fail_reason = RunPhase.FAILED, "MaxDurationExceeded"
            message = f"no retry: backoff.maxDurationSeconds={max_dur:g} would be exceeded"
        else:
            phase = RunPhase.RUNNING
            nxt = last.attempt + 1
            if now >= retry_at:
                decision.actions.append(StartAttempt(nxt))
                message = f"attempt {nxt} pending"
                events.append(RunEvent("Normal", "AttemptCreated", f"starting attempt {nxt} after {last.reason}"))
            else:
                new.next_attempt_time = clock.fmt(retry_at)
                _wake(decision, retry_at)
                message = f"attempt {last.attempt} failed ({last.reason}); retrying at {clock.fmt(retry_at)}"
                if not (status.next_attempt_time and old_phase == phase):
                    events.append(RunEvent("Normal", "Backoff", f"retrying in {wait:g}s"))

    new.phase = phase
    new.message = message
    _record_started(decision, spec, attempt_name, now)
    new.attempt_count = len(new.attempts)
    retrying = new.next_attempt_time is not None
    set_condition(
        new.conditions,
        "Retrying",
        retrying,
        "Backoff" if retrying else "NotRetrying",
        (message or "") if retrying else "",
        now,
        gen,
    )
    if new.start_time:
        set_condition(new.conditions, "Started", True, "AttemptStarted", "the first attempt started", now, gen)
    _set_waiting(decision, previous, now, gen)
    if phase.terminal:
        new.completion_time = new.completion_time or clock.fmt(now)
        begin = clock.parse(new.start_time) or created or now
        end = clock.parse(new.completion_time) or now
        new.duration = clock.human_duration((end - begin).total_seconds())
        ok = phase == RunPhase.SUCCEEDED
        reason = "Succeeded" if ok else (fail_reason or "Failed")
        set_condition(new.conditions, "Complete", ok, reason, message or "", now, gen)
        set_condition(new.conditions, "Failed", not ok, reason, message or "", now, gen)
        if attempts and usage.get(attempts[-1].attempt) is not None:
            _set_usage(new, usage[attempts[-1].attempt])
        events.append(RunEvent("Normal" if ok else "Warning", reason, message or ""))
    return decision
