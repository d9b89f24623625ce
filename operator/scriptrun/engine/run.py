"""One ScriptRun's state machine: from recorded status + observed attempts to the next status.

Level-triggered: `decide` is a pure function of one frozen `RunInputs` (spec, last status, what the
backend observes now, the clock). Both backends (Kubernetes pods and local processes) call it and
carry out its actions; every action, Event and wake-up comes back as data, and the backends hold no
policy of their own (a refused pod, a predecessor's pod on the name, the TTL are decided here).
Recorded terminal attempts are final: a later observation never rewrites them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from pydantic import ValidationError

from scriptrun.engine import budget as budgets
from scriptrun.engine import clock
from scriptrun.engine import gates as gate_rules
from scriptrun.engine.backoff import backoff_seconds
from scriptrun.engine.conditions import set_condition
from scriptrun.engine.observe import ERROR_REASONS, GATE_FAILED, MESSAGE_LIMIT, PENDING_REASONS, AttemptObservation
from scriptrun.model.gates import GateResult
from scriptrun.model.scriptrun import Attempt, RetryStrategy, RunPhase, RunTemplate, ScriptRunStatus

EventType = Literal["Normal", "Warning"]
_CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")  # metav1.Condition's reason


@dataclass(frozen=True)
class StartAttempt:
    """Create attempt N (its pod or process)."""

    attempt: int


@dataclass(frozen=True)
class StopAttempt:
    """Stop attempt N (delete its pod with the usual grace, or kill its process group)."""

    attempt: int
    name: str
    reason: str


@dataclass(frozen=True)
class RemoveStale:
    """A deleted predecessor's pod still holds the name the next attempt needs: remove it now."""

    name: str


@dataclass(frozen=True)
class DeleteSelf:
    """The run finished longer than ttlSecondsAfterFinished ago: delete the ScriptRun."""


Action = StartAttempt | StopAttempt | RemoveStale | DeleteSelf


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


@dataclass(frozen=True)
class Refusal:
    """The backend could not carry out a StartAttempt: the API server refused the pod."""

    status: int
    message: str


# A namespace's `default` ServiceAccount appears a moment after the namespace; until then the
# ServiceAccount admission plugin refuses pods (403). Within this grace that is not a refusal.
SERVICE_ACCOUNT_GRACE = timedelta(seconds=60)
RETRY_SOON = timedelta(seconds=1)


@dataclass(frozen=True)
class RunInputs:
    """Everything one decision reads. `expected`: attempts started but not observed yet;
    `held`: pod names still held by a deleted predecessor's pods; `refused`: the API server refused
    the pod of the attempt this decision would start (the backend decides once more with it)."""

    spec: RunTemplate
    status: ScriptRunStatus
    observed: dict[int, AttemptObservation]
    now: datetime
    generation: int = 0
    created: datetime | None = None
    expected: frozenset[int] = frozenset()
    blocked: Blocked | None = None
    deadline_grace_seconds: float = 5.0
    attempt_name: Callable[[int], str] = lambda n: f"attempt-{n}"
    held: frozenset[str] = frozenset()
    refused: Refusal | None = None
    spot_nodes: frozenset[str] = frozenset()  # nodes (of this run's attempts) the backend knows are spot
    over_budget: str | None = None  # spec.budget (action Stop) is spent by the attempts so far: why


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
        node_name=obs.node or (previous.node_name if previous else None),
        disruption=obs.disruption or (previous.disruption if previous else None),
    )


def _cause(attempt: Attempt) -> str:
    """Why a pending attempt waits (or a failed one never ran): `Reason: message`."""
    return f"{attempt.reason}: {attempt.message}" if attempt.message else str(attempt.reason)


def fresh_status(status: ScriptRunStatus) -> ScriptRunStatus:
    """A copy the decision may change: the lists it edits are new, the rest is shared (the
    engine never edits an attempt or a condition in place). A deep copy cost a third of the
    operator's CPU on wide workflows."""
    return status.model_copy(update={"attempts": list(status.attempts), "conditions": list(status.conditions)})


def _failed(attempt: Attempt, now: datetime, reason: str, message: str) -> Attempt:
    """The attempt, ended by the engine itself (timeout, pending timeout, terminate)."""
    update = {"phase": RunPhase.FAILED, "finish_time": clock.fmt(now), "reason": reason, "message": message}
    return attempt.model_copy(update=update)


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
    message = (f"{why}: {last.message}" if last.message else why)[:MESSAGE_LIMIT]
    return _failed(last, now, last.reason or "PendingTimeout", message), None


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
    expected: frozenset[int],
    now: datetime,
) -> tuple[list[Attempt], dict[int, dict[str, object] | None]]:
    """Recorded attempts updated from observations; vanished live attempts become PodDeleted."""
    by_number = {a.attempt: a for a in recorded}
    usage: dict[int, dict[str, object] | None] = {}
    for number in sorted(set(by_number) | set(observed)):
        prev = by_number.get(number)
        obs = observed.get(number)
        if prev is not None and prev.phase.terminal:
            if obs is not None and obs.usage is not None and RunPhase(obs.state).terminal:
                usage[number] = obs.usage
            continue
        if obs is not None:
            by_number[number] = _attempt_from(obs, prev)
            if RunPhase(obs.state).terminal:
                usage[number] = obs.usage
        elif prev is not None and number not in expected:
            by_number[number] = _failed(prev, now, "PodDeleted", f"{prev.pod_name} disappeared before it finished")
    return [by_number[n] for n in sorted(by_number)], usage


def decide(
    spec: RunTemplate,
    status: ScriptRunStatus,
    observed: dict[int, AttemptObservation],
    now: datetime,
    *,
    generation: int = 0,
    created: datetime | None = None,
    expected: set[int] | frozenset[int] | None = None,
    blocked: Blocked | None = None,
    deadline_grace_seconds: float = 5.0,
    attempt_name: Callable[[int], str] = lambda n: f"attempt-{n}",
    held: frozenset[str] = frozenset(),
    refused: Refusal | None = None,
) -> Decision:
    """Compute the next status and the actions that move the run forward (see `decide_run`)."""
    return decide_run(
        RunInputs(
            spec=spec,
            status=status,
            observed=observed,
            now=now,
            generation=generation,
            created=created,
            expected=frozenset(expected or ()),
            blocked=blocked,
            deadline_grace_seconds=deadline_grace_seconds,
            attempt_name=attempt_name,
            held=held,
            refused=refused,
        )
    )


def decide_run(inp: RunInputs) -> Decision:
    """The named steps: a refused pod, late usage of a finished run, the attempts as observed, the
    limits the engine enforces itself, the next phase, conditions, a name still held, the TTL."""
    if inp.refused is not None:
        held_back = _hold_for_service_account(inp)
        if held_back is not None:
            return held_back
        why = Blocked("PodRejected", f"the API server refused the pod: {inp.refused.message}")
        inp = replace(inp, blocked=why, refused=None)
    decision = _late_usage(inp) if inp.status.phase.terminal else _advance(inp)
    decision = _wait_for_held_names(inp, decision)
    _expire(inp, decision)
    return decision


def _hold_for_service_account(inp: RunInputs) -> Decision | None:
    """A young namespace's pods are refused until its `default` ServiceAccount exists: try again
    soon, with nothing recorded, instead of failing the run."""
    refused, created = inp.refused, inp.created
    assert refused is not None
    young = created is None or inp.now - created < SERVICE_ACCOUNT_GRACE
    if refused.status == 403 and "error looking up service account" in refused.message and young:
        return Decision(status=fresh_status(inp.status), wake_at=inp.now + RETRY_SOON)
    return None


def _wait_for_held_names(inp: RunInputs, decision: Decision) -> Decision:
    """An attempt whose pod name is still held by a deleted predecessor's pod does not start yet:
    remove that pod and decide again once it is gone (nothing is recorded meanwhile)."""
    held = [inp.attempt_name(a.attempt) for a in decision.actions if isinstance(a, StartAttempt)]
    held = [name for name in held if name in inp.held]
    if not held:
        return decision
    return Decision(
        status=fresh_status(inp.status),
        actions=[RemoveStale(name) for name in held],
        wake_at=inp.now + RETRY_SOON,
    )


def _expire(inp: RunInputs, decision: Decision) -> None:
    """ttlSecondsAfterFinished: delete the finished run when due, else wake then."""
    final = decision.status
    ttl = getattr(inp.spec, "ttl_seconds_after_finished", None)
    done = clock.parse(final.completion_time)
    if not final.phase.terminal or ttl is None or done is None:
        return
    due = done + timedelta(seconds=ttl)
    if inp.now >= due:
        decision.actions.append(DeleteSelf())
    else:
        _wake(decision, due)


def _late_usage(inp: RunInputs) -> Decision:
    """Finished runs only pick up late usage (the monitor summary can trail the phase)."""
    decision = Decision(status=fresh_status(inp.status))
    decision.status.observed_generation = inp.generation
    attempts, usage = _merge_attempts(inp.status.attempts, inp.observed, inp.expected, inp.now)
    if attempts and usage.get(attempts[-1].attempt) is not None and decision.status.usage is None:
        _set_usage(decision.status, usage[attempts[-1].attempt])
    return decision


def _enforce_limits(decision: Decision, inp: RunInputs, attempts: list[Attempt]) -> None:
    """What the engine stops itself: spec.terminate, pendingTimeoutSeconds, timeoutSeconds (the
    kubelet enforces activeDeadlineSeconds, but a node that cannot, or a local process, must still
    be stopped)."""
    spec, now = inp.spec, inp.now
    last = attempts[-1] if attempts else None
    if getattr(spec, "terminate", None) and last is not None and not last.phase.terminal:
        last = attempts[-1] = _failed(last, now, "Terminated", "stopped: spec.terminate is true")
        decision.actions.append(StopAttempt(last.attempt, last.pod_name, "Terminated"))
    _enforce_pending_timeout(decision, spec, attempts, now)
    last = attempts[-1] if attempts else None
    if last is None or last.phase.terminal or not spec.timeout_seconds or not last.start_time:
        return
    started = clock.parse(last.start_time)
    assert started is not None
    deadline = started + timedelta(seconds=spec.timeout_seconds + inp.deadline_grace_seconds)
    if now < deadline:
        _wake(decision, deadline)
        return
    why = f"attempt ran longer than timeoutSeconds={spec.timeout_seconds}"
    last = attempts[-1] = _failed(last, now, "DeadlineExceeded", why)
    decision.actions.append(StopAttempt(last.attempt, last.pod_name, "DeadlineExceeded"))
    decision.events.append(RunEvent("Warning", "DeadlineExceeded", f"attempt {last.attempt} timed out"))


@dataclass(frozen=True)
class _Outcome:
    phase: RunPhase
    message: str | None
    fail_reason: str | None = None


def _after_failure(decision: Decision, inp: RunInputs, attempts: list[Attempt]) -> _Outcome:
    """The last attempt failed: fail the run, or retry it now or after the backoff."""
    strategy = inp.spec.retry_strategy or RetryStrategy()
    now, new = inp.now, decision.status
    last = attempts[-1]
    kind = _failure_kind(last)
    action = _exit_code_action(strategy, last.exit_code)
    counted_retries = sum(1 for a in attempts[:-1] if a.counted)
    retries_left = strategy.limit - counted_retries - (1 if last.counted else 0)
    run_started = clock.parse(new.start_time) or inp.created or now
    finished = clock.parse(last.finish_time) or now
    disrupted = last.disruption is not None and not last.counted
    # a disrupted pod is replaced at once (the script did nothing wrong), like a Job's Ignore rule
    wait = 0.0 if disrupted else backoff_seconds(strategy.backoff, max(1, counted_retries + (1 if last.counted else 0)))
    retry_at = finished + timedelta(seconds=wait)
    max_dur = strategy.backoff.max_duration_seconds
    failed = RunPhase.FAILED
    if action == "Fail":
        return _Outcome(
            failed, f"exit code {last.exit_code} matched an exit-code rule with action Fail", "ExitCodeRule"
        )
    if last.reason == GATE_FAILED:  # the same script and inputs would be blocked again
        return _Outcome(failed, last.message or "a gate blocked the run", gate_rules.FAILED_REASON)
    if inp.over_budget is not None:
        return _Outcome(failed, f"no retry: {inp.over_budget} (spec.budget.action: Stop)", "BudgetExceeded")
    if not disrupted and not _policy_allows(strategy, kind):
        message = f"attempt {last.attempt} failed ({_failure_text(last)}); retryPolicy {strategy.retry_policy} "
        message += "does not retry it" if strategy.limit else "and no retries are configured"
        return _Outcome(failed, message, last.reason or "Error")
    if action != "Ignore" and retries_left < 0:
        if strategy.limit:
            message = f"failed after {len(attempts)} attempts; last: {_failure_text(last, exit_code=True)}"
            return _Outcome(failed, message, "BackoffLimitExceeded")
        return _Outcome(failed, f"attempt 1 failed: {_failure_text(last, exit_code=True)}", last.reason or "Error")
    if max_dur is not None and (retry_at - run_started).total_seconds() > max_dur:
        return _Outcome(
            failed, f"no retry: backoff.maxDurationSeconds={max_dur:g} would be exceeded", "MaxDurationExceeded"
        )
    nxt = last.attempt + 1
    if now >= retry_at:
        decision.actions.append(StartAttempt(nxt))
        decision.events.append(RunEvent("Normal", "AttemptCreated", f"starting attempt {nxt} after {last.reason}"))
        return _Outcome(RunPhase.RUNNING, f"attempt {nxt} pending")
    new.next_attempt_time = clock.fmt(retry_at)
    _wake(decision, retry_at)
    if not (inp.status.next_attempt_time and inp.status.phase == RunPhase.RUNNING):
        decision.events.append(RunEvent("Normal", "Backoff", f"retrying in {wait:g}s"))
    return _Outcome(
        RunPhase.RUNNING, f"attempt {last.attempt} failed ({last.reason}); retrying at {clock.fmt(retry_at)}"
    )


def _record_before_gates(decision: Decision, inp: RunInputs, attempts: list[Attempt]) -> None:
    """The current attempt's before-gate verdicts (its gate container's, or the local scan's) go
    to status.gates; a Warned one is a Warning Event when it first appears."""
    observed = inp.observed.get(attempts[-1].attempt) if attempts else None
    if observed is None or observed.gates is None:
        return
    results = []
    for item in observed.gates:
        try:
            results.append(GateResult.model_validate(item))
        except ValidationError:
            continue  # a verdict this operator cannot read: the attempt's own phase still decides
    if results == [g for g in inp.status.gates or [] if g.stage == "before"]:
        return
    decision.status.gates = results
    for result in results:
        if result.result == "Warned":
            decision.events.append(RunEvent("Warning", "GateWarning", f"gate {result.name}: {result.message}"))


def _judge_gates(decision: Decision, inp: RunInputs, last: Attempt, usage: dict[str, object] | None) -> _Outcome:
    """The last attempt succeeded: spec.gates.after decide whether the run did."""
    ok = _Outcome(RunPhase.SUCCEEDED, f"succeeded on attempt {last.attempt}")
    verdict = gate_rules.judge_after(inp.spec, usage, last.exit_code, last.attempt)
    if not verdict.results:
        return ok
    decision.status.gates = [*(g for g in decision.status.gates or [] if g.stage == "before"), *verdict.results]
    for warning in verdict.warnings:
        decision.events.append(RunEvent("Warning", "GateWarning", warning))
    if verdict.failure is None:
        return ok
    return _Outcome(RunPhase.FAILED, verdict.failure, gate_rules.FAILED_REASON)


def _next_phase(
    decision: Decision, inp: RunInputs, attempts: list[Attempt], usage: dict[int, dict[str, object] | None]
) -> _Outcome:
    last = attempts[-1] if attempts else None
    ended = last is None or last.phase.terminal  # a live one was just stopped by _enforce_limits
    if getattr(inp.spec, "terminate", None) and ended and (last is None or last.phase != RunPhase.SUCCEEDED):
        return _Outcome(RunPhase.FAILED, "stopped: spec.terminate is true", "Terminated")
    if inp.blocked is not None and (last is None or last.phase.terminal):
        return _Outcome(RunPhase.FAILED, inp.blocked.message, inp.blocked.reason)
    if last is None and (invalid := gate_rules.problems(inp.spec)):
        reason = gate_rules.INVALID_REASON if invalid[0].startswith("gates.") else gate_rules.INVALID_ALERT
        return _Outcome(RunPhase.FAILED, "; ".join(invalid)[:MESSAGE_LIMIT], reason)
    if last is None:
        # the same message the next reconcile computes for a pending attempt: one status write, not two
        decision.actions.append(StartAttempt(1))
        decision.events.append(RunEvent("Normal", "AttemptCreated", "starting attempt 1"))
        return _Outcome(RunPhase.PENDING, "attempt 1 pending")
    if not last.phase.terminal:
        running = last.phase == RunPhase.RUNNING or len(attempts) > 1
        return _Outcome(RunPhase.RUNNING if running else RunPhase.PENDING, _live_message(last))
    if last.phase == RunPhase.SUCCEEDED:
        return _judge_gates(decision, inp, last, usage.get(last.attempt))
    return _after_failure(decision, inp, attempts)


def judge_budget(spec: RunTemplate, status: ScriptRunStatus, now: datetime, generation: int) -> list[RunEvent]:
    """spec.budget against the finished run's status.cost: the BudgetExceeded condition, and a
    Warning Event when it is exceeded (the backend calls this once the cost is known)."""
    budget = getattr(spec, "budget", None)
    if budget is None or status.cost is None:
        return []
    verdict = budgets.judge(budget, budgets.add_up([status.cost.dump()]))
    before = next((c for c in status.conditions if c.type == budgets.CONDITION), None)
    set_condition(
        status.conditions, budgets.CONDITION, verdict.exceeded, verdict.reason, verdict.message, now, generation
    )
    if verdict.exceeded and (before is None or before.status != "True"):
        return [RunEvent("Warning", verdict.reason, verdict.message)]
    return []


SPOT_RECLAIM = "SpotReclaim"


def _mark_disruptions(
    decision: Decision, inp: RunInputs, attempts: list[Attempt], previous: dict[int, Attempt]
) -> None:
    """An attempt that just failed because its pod was disrupted (its DisruptionTarget condition, or
    lost on a spot node: evicted, node gone, deleted) is not counted against the retry limit, up to
    spec.disruptionRetries such attempts (a Job's podFailurePolicy Ignore on DisruptionTarget)."""
    for i, att in enumerate(attempts):
        before = previous.get(att.attempt)
        if att.phase != RunPhase.FAILED or (before is not None and before.phase.terminal):
            continue
        cause = att.disruption
        if cause is None and att.node_name in inp.spot_nodes and _failure_kind(att) == "error":
            cause = SPOT_RECLAIM
        if cause is None or att.reason in PENDING_REASONS:
            continue
        earlier = sum(1 for a in attempts[:i] if a.disruption and not a.counted)
        within = earlier < inp.spec.disruption_retries
        attempts[i] = att.model_copy(update={"disruption": cause, "counted": not within})
        note = (
            "not counted against the retry limit" if within else f"disruptionRetries={inp.spec.disruption_retries} used"
        )
        decision.events.append(
            RunEvent("Warning", "Disrupted", f"attempt {att.attempt}: pod disrupted ({cause}); {note}")
        )


def _advance(inp: RunInputs) -> Decision:
    """A live run: merge what is observed, enforce limits, pick the next phase, set conditions."""
    strategy = inp.spec.retry_strategy or RetryStrategy()
    now, gen = inp.now, inp.generation
    new = fresh_status(inp.status)
    new.observed_generation = gen
    decision = Decision(status=new)
    attempts, usage = _merge_attempts(inp.status.attempts, inp.observed, inp.expected, now)
    previous = {a.attempt: a for a in inp.status.attempts}
    for att in attempts:
        before = previous.get(att.attempt)
        # One Event when an attempt starts (AttemptCreated) and one when the run ends; in between only
        # what needs attention (a failed attempt, a backoff). Every Event is an etcd write.
        if att.phase == RunPhase.FAILED and (before is None or not before.phase.terminal):
            failure = f"attempt {att.attempt} failed: {att.reason}, exit code {att.exit_code}"
            decision.events.append(RunEvent("Warning", "AttemptFailed", failure))
    _enforce_limits(decision, inp, attempts)
    # Ignore rules and disruptions are sticky per attempt, decided when the attempt failed.
    _mark_disruptions(decision, inp, attempts, previous)
    for i, att in enumerate(attempts):
        if att.phase == RunPhase.FAILED and _exit_code_action(strategy, att.exit_code) == "Ignore":
            attempts[i] = att.model_copy(update={"counted": False})
    new.attempts = attempts
    new.start_time = new.start_time or next((a.start_time for a in attempts if a.start_time), None)
    new.next_attempt_time = None
    _record_before_gates(decision, inp, attempts)
    outcome = _next_phase(decision, inp, attempts, usage)
    new.phase, new.message = outcome.phase, outcome.message
    _record_started(decision, inp.spec, inp.attempt_name, now)
    new.attempt_count = len(new.attempts)
    retrying = new.next_attempt_time is not None
    why = (outcome.message or "") if retrying else ""
    set_condition(new.conditions, "Retrying", retrying, "Backoff" if retrying else "NotRetrying", why, now, gen)
    if new.start_time:
        set_condition(new.conditions, "Started", True, "AttemptStarted", "the first attempt started", now, gen)
    _set_waiting(decision, previous, now, gen)
    if outcome.phase.terminal:
        _complete(decision, inp, outcome, usage.get(attempts[-1].attempt) if attempts else None)
    return decision


def _complete(decision: Decision, inp: RunInputs, outcome: _Outcome, usage: dict[str, object] | None) -> None:
    """The run ended: completion time, duration, Complete/Failed conditions, the usage, one Event."""
    new, now, gen = decision.status, inp.now, inp.generation
    new.completion_time = new.completion_time or clock.fmt(now)
    begin = clock.parse(new.start_time) or inp.created or now
    end = clock.parse(new.completion_time) or now
    new.duration = clock.human_duration((end - begin).total_seconds())
    ok = outcome.phase == RunPhase.SUCCEEDED
    reason = "Succeeded" if ok else (outcome.fail_reason or "Failed")
    message = outcome.message or ""
    set_condition(new.conditions, "Complete", ok, reason, message, now, gen)
    set_condition(new.conditions, "Failed", not ok, reason, message, now, gen)
    if usage is not None:
        _set_usage(new, usage)
    decision.events.append(RunEvent("Normal" if ok else "Warning", reason, message))
    last = new.attempts[-1] if new.attempts else None
    context = {"exitCode": (last.exit_code if last else None) or 0, "attempt": last.attempt if last else 0}
    fired, errors = gate_rules.judge_alerts(inp.spec, new.usage, {**context, "phase": new.phase.value}, clock.fmt(now))
    if fired:
        new.alerts = fired
    for alert in fired:
        decision.events.append(RunEvent("Warning", "AlertFiring", f"[{alert.severity}] {alert.name}: {alert.message}"))
    for error in errors:
        decision.events.append(RunEvent("Warning", "AlertError", error))
