"""The spans of a run and a workflow, computed from what their status records.

Spans are written when what they describe has ended, from the timestamps in the status (not from
the operator's memory), with ids from `trace_context`: a restarted operator writes the rest of the
same tree. Pure: `tracing` hands the records to the OpenTelemetry SDK.

The tree: workflow → task (a child ScriptRun) → attempt (its pod) → pod pending / pod running, and
the operator's API calls (create ScriptRun, create Pod) under the span they serve. A standalone
ScriptRun is the root of its own trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scriptrun.build import names
from scriptrun.engine import clock
from scriptrun.model.scriptrun import Attempt, RunPhase, ScriptRunStatus
from scriptrun.model.workflow import WorkflowPhase, WorkflowStatus
from scriptrun.telemetry.trace_context import ObjectTrace, TraceContext, attempt_context, child_span_id

Attributes = dict[str, str | int | float | bool]

# semantic-convention keys (OpenTelemetry k8s.*), and ours under scriptrun.*
K8S_NAMESPACE = "k8s.namespace.name"
K8S_POD = "k8s.pod.name"


@dataclass(frozen=True)
class SpanRecord:
    name: str
    context: TraceContext
    parent_span_id: int | None
    start: datetime
    end: datetime
    attributes: Attributes = field(default_factory=dict)
    error: str | None = None  # the span's status: None is OK, else ERROR with this description


def _span(
    name: str,
    ctx: TraceContext,
    parent: int | None,
    start: datetime,
    end: datetime,
    attrs: Attributes,
    error: str | None,
) -> SpanRecord:
    return SpanRecord(name, ctx, parent, start, max(start, end), attrs, error)


def _run_attributes(meta: dict[str, Any]) -> Attributes:
    labels = meta.get("labels") or {}
    attrs: Attributes = {
        K8S_NAMESPACE: str(meta.get("namespace")),
        "scriptrun.scriptrun.name": str(meta.get("name")),
        "scriptrun.scriptrun.uid": str(meta.get("uid")),
    }
    for label, key in (
        (names.LABEL_WORKFLOW, "scriptrun.workflow.name"),
        (names.LABEL_TASK, "scriptrun.task.name"),
        (names.LABEL_NODE, "scriptrun.node.name"),
    ):
        if label in labels:
            attrs[key] = str(labels[label])
    return attrs


def _failure(conditions: list[Any], message: str | None) -> str:
    reason = next((c.reason for c in conditions if c.type == "Failed" and c.status == "True"), None)
    return ": ".join(x for x in (reason, message) if x) or "Failed"


def _attempt_spans(run: ObjectTrace, base: Attributes, attempt: Attempt) -> list[SpanRecord]:
    created = clock.parse(attempt.created_time)
    finished = clock.parse(attempt.finish_time)
    if created is None or finished is None:
        return []
    ctx = attempt_context(run, attempt.attempt)
    attrs: Attributes = {**base, K8S_POD: attempt.pod_name, "scriptrun.attempt": attempt.attempt}
    if attempt.exit_code is not None:
        attrs["scriptrun.exit_code"] = attempt.exit_code
    if attempt.reason:
        attrs["scriptrun.reason"] = attempt.reason
    error = None
    if attempt.phase == RunPhase.FAILED:
        error = ": ".join(x for x in (attempt.reason, attempt.message) if x) or "Failed"
    spans = [_span("attempt", ctx, run.context.span_id, created, finished, attrs, error)]
    pod_attrs: Attributes = {K8S_NAMESPACE: str(base[K8S_NAMESPACE]), K8S_POD: attempt.pod_name}
    # the pod's startTime has whole seconds: it may read a little before our creation time
    started = clock.parse(attempt.start_time)
    running_from = min(max(started, created), finished) if started else finished
    pending = TraceContext(ctx.trace_id, child_span_id(ctx, "pending"), ctx.sampled)
    spans.append(_span("pod pending", pending, ctx.span_id, created, running_from, pod_attrs, None))
    if started is not None:
        running = TraceContext(ctx.trace_id, child_span_id(ctx, "running"), ctx.sampled)
        spans.append(_span("pod running", running, ctx.span_id, running_from, finished, pod_attrs, error))
    return spans


def run_spans(
    run: ObjectTrace, meta: dict[str, Any], before: ScriptRunStatus, after: ScriptRunStatus
) -> list[SpanRecord]:
    """The spans a status write completed: each attempt that ended in it (with its pod phases),
    and the run's own span when the run ended."""
    if not run.context.sampled:
        return []
    base = _run_attributes(meta)
    done_before = {a.attempt for a in before.attempts if a.finish_time}
    spans: list[SpanRecord] = []
    for attempt in after.attempts:
        if attempt.finish_time and attempt.attempt not in done_before:
            spans += _attempt_spans(run, base, attempt)
    if after.phase.terminal and not before.phase.terminal:
        first = after.attempts[0].created_time if after.attempts else None
        known = [t for t in map(clock.parse, (meta.get("creationTimestamp"), first, after.start_time)) if t]
        start = min(known) if known else None
        end = clock.parse(after.completion_time)
        if start is not None and end is not None:
            attrs: Attributes = {
                **base,
                "scriptrun.phase": after.phase.value,
                "scriptrun.attempts": len(after.attempts),
            }
            usage = after.usage or {}
            if usage.get("available", True) and usage:
                cpu = float(usage.get("userTimeSeconds") or 0) + float(usage.get("systemTimeSeconds") or 0)
                attrs["scriptrun.usage.cpu_seconds"] = round(cpu, 3)
                if isinstance(usage.get("memoryMaxMb"), int | float):
                    attrs["scriptrun.usage.memory_max_mb"] = float(usage["memoryMaxMb"])
            error = _failure(after.conditions, after.message) if after.phase == RunPhase.FAILED else None
            name = "task" if "scriptrun.task.name" in attrs else "scriptrun"
            spans.append(_span(name, run.context, run.parent_span_id, start, end, attrs, error))
    return spans


def workflow_span(wf: ObjectTrace, meta: dict[str, Any], status: WorkflowStatus) -> SpanRecord | None:
    """The Workflow's span, once it has ended (or a retry round's, under the first's)."""
    if not wf.context.sampled or not WorkflowPhase(status.phase).terminal:
        return None
    created = clock.parse(meta.get("creationTimestamp"))
    start = clock.parse(status.started_at) or created
    if created is not None and start is not None and not status.retry_round:
        start = min(start, created)
    end = clock.parse(status.finished_at)
    if start is None or end is None:
        return None
    counts: dict[str, int] = {}
    for summary in status.tasks.values():
        counts[str(summary.phase)] = counts.get(str(summary.phase), 0) + 1
    attrs: Attributes = {
        K8S_NAMESPACE: str(meta.get("namespace")),
        "scriptrun.workflow.name": str(meta.get("name")),
        "scriptrun.workflow.uid": str(meta.get("uid")),
        "scriptrun.phase": str(status.phase),
        "scriptrun.tasks": len(status.tasks),
    }
    attrs.update({f"scriptrun.tasks.{phase.lower()}": n for phase, n in sorted(counts.items())})
    if status.retry_round:
        attrs["scriptrun.retry_round"] = status.retry_round
    error = None
    if status.phase != WorkflowPhase.SUCCEEDED:
        reason = next((c.reason for c in status.conditions if c.type == "Completed"), None)
        error = ": ".join(str(x) for x in (reason, status.message) if x) or str(status.phase)
    name = "workflow retry" if status.retry_round else "workflow"
    return _span(name, wf.context, wf.parent_span_id, start, end, attrs, error)


def api_span(
    parent: TraceContext, name: str, start: float, seconds: float, attrs: Attributes, *key: str | int
) -> SpanRecord | None:
    """One of the operator's API calls (`start`: wall-clock seconds), under the span it serves."""
    if not parent.sampled:
        return None
    ctx = TraceContext(parent.trace_id, child_span_id(parent, name, *key), parent.sampled)
    begin = datetime.fromtimestamp(start, UTC)
    end = datetime.fromtimestamp(start + seconds, UTC)
    return _span(name, ctx, parent.span_id, begin, end, attrs, None)
