"""What a backend saw of one attempt, and how a Pod (as a plain dict) maps onto it."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from scriptrun.engine import clock
from scriptrun.model.contract import GATE_CONTAINER

AttemptState = Literal["Pending", "Running", "Succeeded", "Failed"]

MAIN_CONTAINER = "main"
MONITOR_CONTAINER = "monitor"
GATE_FAILED = "GateFailed"
MESSAGE_LIMIT = 1024

# Reasons that mean the platform lost the attempt (an "error" in Argo's retryPolicy terms);
# anything else that fails is the script's own failure.
ERROR_REASONS = frozenset(
    {"Evicted", "PodDeleted", "Preempted", "NodeLost", "Shutdown", "StartError", "UnexpectedAdmissionError"}
)
# Waiting states that are the normal way into Running: not a cause worth reporting.
BENIGN_WAITING = frozenset({"ContainerCreating", "PodInitializing"})
# Why a pod may never start (kubelet waiting reasons, scheduler reasons). An attempt that fails with
# one of these (pendingTimeoutSeconds) never ran the script: it is an "error", like Evicted.
PENDING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "RegistryUnavailable",
        "SignatureValidationFailed",
        "CreateContainerConfigError",
        "CreateContainerError",
        "PreCreateHookError",
        "RunContainerError",
        "Unschedulable",
        "SchedulingGated",
        "SchedulerError",
        "PendingTimeout",
    }
)


@dataclass(frozen=True)
class AttemptObservation:
    attempt: int
    name: str
    state: AttemptState
    start_time: datetime | None = None
    finish_time: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    usage: dict[str, Any] | None = None
    node: str | None = None  # spec.nodeName, once scheduled
    disruption: str | None = None  # the DisruptionTarget condition's reason, when the pod was disrupted
    gates: list[dict[str, Any]] | None = None  # the before-gates' verdicts (GateResult dicts), once judged


def _terminated(statuses: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    for status in statuses or []:
        if status.get("name") == name:
            state = status.get("state") or {}
            term = state.get("terminated")
            if term is None:
                term = (status.get("lastState") or {}).get("terminated")
            return term if isinstance(term, dict) else None
    return None


def _waiting(statuses: list[dict[str, Any]] | None, label: str) -> tuple[str, str] | None:
    """The first container in `statuses` that waits for a reason other than the normal start-up."""
    ordered = sorted(statuses or [], key=lambda s: s.get("name") != MAIN_CONTAINER)  # main first
    for status in ordered:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in BENIGN_WAITING:
            detail = str(waiting.get("message") or "").strip()
            where = f"{label} {status.get('name', '?')}"
            return str(reason), f"{where}: {detail}" if detail else where
    return None


def pending_cause(status: dict[str, Any]) -> tuple[str | None, str | None]:
    """Why a pod that is not running yet waits: (reason, message), or (None, None) when nothing is known.

    A container that cannot start (main before the others, then the init containers: the monitor is a
    native sidecar) beats scheduling information; the message names the container."""
    found = _waiting(status.get("containerStatuses"), "container") or _waiting(
        status.get("initContainerStatuses"), "init container"
    )
    if found is None:
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                found = str(cond.get("reason") or "Unschedulable"), str(cond.get("message") or "").strip()
                break
    if found is None:
        return None, None
    reason, message = found
    return reason, message[:MESSAGE_LIMIT] or None


def parse_usage(message: str | None, *, monitor_enabled: bool) -> dict[str, Any] | None:
    """The monitor's JSON summary, or a record of why usage is unavailable."""
    if not monitor_enabled:
        return None
    if not message:
        return {"available": False, "reason": "MonitorNoSummary", "message": "the monitor left no summary"}
    try:
        data = json.loads(message)
    except ValueError as err:
        return {"available": False, "reason": "MonitorSummaryInvalid", "message": f"invalid JSON: {err}"}
    if not isinstance(data, dict):
        return {"available": False, "reason": "MonitorSummaryInvalid", "message": "summary is not an object"}
    data.setdefault("available", True)
    return data


def parse_gates(terminated: dict[str, Any] | None) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The gate container's verdicts and, when it blocked the run (or itself failed), why."""
    if terminated is None:
        return None, None
    try:
        summary = json.loads(terminated.get("message") or "")
    except ValueError:
        summary = None
    gates = summary.get("gates") if isinstance(summary, dict) else None
    gates = [g for g in gates if isinstance(g, dict)] if isinstance(gates, list) else None
    code = terminated.get("exitCode")
    if code in (0, None):
        return gates, None
    failure = summary.get("failure") if isinstance(summary, dict) else None
    if not failure:
        failure = f"the gate container failed: exit code {code} ({terminated.get('reason') or 'Error'})"
    return gates, str(failure)[:MESSAGE_LIMIT]


def disruption_of(status: dict[str, Any]) -> str | None:
    """Why the pod is being disrupted (a spot reclaim seen as a node shutdown, a drain, preemption):
    the reason of its DisruptionTarget condition (Kubernetes 1.26+), while True."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return str(cond.get("reason") or "DisruptionTarget")
    return None


def observe_pod(pod: dict[str, Any], attempt: int, *, monitor_enabled: bool) -> AttemptObservation:
    """Map a Pod (as returned by the API) onto an attempt observation."""
    found = _observe_pod(pod, attempt, monitor_enabled=monitor_enabled)
    disruption = disruption_of(pod.get("status") or {})
    return replace(found, disruption=disruption) if disruption else found


def _observe_pod(pod: dict[str, Any], attempt: int, *, monitor_enabled: bool) -> AttemptObservation:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    name = meta.get("name", "")
    start = clock.parse(status.get("startTime"))
    node = (pod.get("spec") or {}).get("nodeName")
    main = _terminated(status.get("containerStatuses"), MAIN_CONTAINER)
    if phase == "Running":
        return AttemptObservation(attempt, name, "Running", start_time=start, node=node)
    if phase not in ("Succeeded", "Failed"):
        reason, message = pending_cause(status)
        return AttemptObservation(attempt, name, "Pending", start_time=start, reason=reason, message=message, node=node)

    monitor = _terminated(status.get("initContainerStatuses"), MONITOR_CONTAINER)
    usage = parse_usage((monitor or {}).get("message"), monitor_enabled=monitor_enabled)
    gate = _terminated(status.get("initContainerStatuses"), GATE_CONTAINER)
    gates, blocked = parse_gates(gate)
    if blocked is not None:  # the script never started: neither usage nor the pod's own reason matter
        ended = clock.parse((gate or {}).get("finishedAt"))
        return AttemptObservation(
            attempt, name, "Failed", start, ended, None, GATE_FAILED, blocked, None, node, gates=gates
        )
    exit_code = main.get("exitCode") if main else None
    finish = clock.parse(main.get("finishedAt")) if main else None
    pod_reason = status.get("reason")
    if phase == "Succeeded":
        return AttemptObservation(
            attempt,
            name,
            "Succeeded",
            start,
            finish,
            exit_code if exit_code is not None else 0,
            "Completed",
            None,
            usage,
            node,
            gates=gates,
        )
    reason = pod_reason or (main or {}).get("reason") or "Error"
    message = status.get("message") or (main or {}).get("message")
    if message:
        message = message.strip()[-MESSAGE_LIMIT:]
    return AttemptObservation(
        attempt, name, "Failed", start, finish, exit_code, reason, message, usage, node, gates=gates
    )


HEADLINE = ("cpuAvgPercent", "memoryMaxMb")  # the usage a workflow summary shows; the rest stays in the run
COST_FIELDS = ("amount", "currency", "byCurrency")  # what a workflow adds up of a child's status.cost
ChildPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class ChildObservation:
    """What a Workflow sees of one node's child run (both backends build it with `observe_child`).

    `reason`/`message`: for a failed child, why it failed; for a live one, why its pod waits (the
    child's `Waiting` condition: ErrImagePull, Unschedulable...), None while nothing holds it up.
    `stopping`: the child was already told to stop."""

    phase: ChildPhase
    attempts: int = 0
    exit_code: int | None = None
    started: str | None = None
    finished: str | None = None
    reason: str | None = None
    message: str | None = None
    outputs: dict[str, str] | None = None
    outputs_error: str | None = None
    usage: dict[str, Any] | None = None
    stopping: bool = False
    cost: dict[str, Any] | None = None  # the child's status.cost: amount and currency (or byCurrency)


def waiting_reason(status: dict[str, Any]) -> str | None:
    """Why a live run's pod waits (its `Waiting` condition while True): ErrImagePull, Unschedulable..."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Waiting" and cond.get("status") == "True":
            return str(cond.get("reason") or "Waiting")
    return None


def observe_child(status: dict[str, Any], *, stopping: bool = False) -> ChildObservation:
    """A child ScriptRun's status (as stored: camelCase JSON) as its Workflow sees it."""
    attempts = status.get("attempts") or []
    conditions = status.get("conditions") or []
    failed = next((c for c in conditions if c.get("type") == "Failed" and c.get("status") == "True"), None)
    usage = status.get("usage") or {}
    cost = status.get("cost") or {}
    waiting = None if failed else waiting_reason(status)
    phase = status.get("phase")
    return ChildObservation(
        phase=phase if phase in ("Running", "Succeeded", "Failed") else "Pending",
        attempts=len(attempts),
        exit_code=attempts[-1].get("exitCode") if attempts else None,
        started=status.get("startTime"),
        finished=status.get("completionTime"),
        reason=failed.get("reason") if failed else waiting,
        message=status.get("message") if failed or waiting else None,
        outputs=status.get("outputs"),
        outputs_error=status.get("outputsError"),
        usage={k: usage[k] for k in HEADLINE if k in usage} or None,
        stopping=stopping,
        cost={k: cost[k] for k in COST_FIELDS if k in cost} or None,
    )
