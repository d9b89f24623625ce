"""Traces: contexts and ids (pure), the spans a status write completes (pure), and the SDK side
(sampling, the spans as exported) with the SDK's in-memory exporter. The real Collector receives
them in tests/controlplane/test_traces.py."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from scriptrun.build import names
from scriptrun.build.pod import PodInputs, RunRef, build_pod
from scriptrun.build.workflow import WorkflowRef, build_child
from scriptrun.model.scriptrun import Attempt, RunPhase, RunTemplate, ScriptRunStatus, ScriptSource
from scriptrun.model.workflow import WorkflowPhase, WorkflowStatus
from scriptrun.telemetry import tracing
from scriptrun.telemetry.spans import api_span, run_spans, workflow_span
from scriptrun.telemetry.trace_context import (
    ANNOTATION,
    TraceContext,
    attempt_context,
    object_trace,
    parse_traceparent,
)

ALWAYS = lambda trace_id, parent: parent.sampled if parent else True  # noqa: E731
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_round_trip_and_invalid_values() -> None:
    ctx = parse_traceparent(PARENT)
    assert ctx == TraceContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)
    assert ctx.traceparent() == PARENT
    assert parse_traceparent(PARENT[:-2] + "00") == TraceContext(ctx.trace_id, ctx.span_id, False)
    for bad in (
        None,
        "",
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is invalid
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        PARENT + "-extra",  # version 00 has exactly four fields
    ):
        assert parse_traceparent(bad) is None, bad
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future") is not None


def test_ids_are_derived_from_the_uid_so_a_restarted_operator_finds_the_same() -> None:
    a, b = object_trace("uid-1", None, ALWAYS), object_trace("uid-1", {}, ALWAYS)
    assert a == b and a.parent_span_id is None
    assert object_trace("uid-2", None, ALWAYS).trace_id != a.trace_id
    assert attempt_context(a, 1) == attempt_context(b, 1) != attempt_context(a, 2)
    assert attempt_context(a, 1).trace_id == a.trace_id


def test_an_annotation_joins_the_parent_trace_and_follows_its_sampling() -> None:
    run = object_trace("uid-1", {ANNOTATION: PARENT}, ALWAYS)
    parent = parse_traceparent(PARENT)
    assert parent is not None
    assert run.trace_id == parent.trace_id and run.parent_span_id == parent.span_id
    assert run.context.sampled
    unsampled = object_trace("uid-1", {ANNOTATION: PARENT[:-2] + "00"}, ALWAYS)
    assert not unsampled.context.sampled
    # a junk annotation is ignored: the object starts its own trace
    assert object_trace("uid-1", {ANNOTATION: "junk"}, ALWAYS) == object_trace("uid-1", None, ALWAYS)


def test_a_retry_round_is_a_child_of_the_first_round() -> None:
    first = object_trace("wf", None, ALWAYS)
    second = object_trace("wf", None, ALWAYS, round_=1)
    assert second.trace_id == first.trace_id
    assert second.parent_span_id == first.context.span_id and second.context.span_id != first.context.span_id


def _meta(**labels: str) -> dict[str, Any]:
    return {
        "name": "etl-load",
        "namespace": "team",
        "uid": "uid-run",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": labels,
    }


def _attempt(n: int, phase: RunPhase, finish: str | None, **kw: Any) -> Attempt:
    return Attempt(
        attempt=n,
        pod_name=f"etl-load-a{n}",
        phase=phase,
        created_time=f"2026-01-01T00:00:0{n}.500Z",
        start_time=f"2026-01-01T00:00:0{n}Z",  # whole seconds: before the creation time
        finish_time=finish,
        **kw,
    )


def test_an_ended_attempt_gives_its_span_and_its_pod_phases() -> None:
    run = object_trace("uid-run", None, ALWAYS)
    before = ScriptRunStatus(phase=RunPhase.RUNNING, attempts=[_attempt(1, RunPhase.RUNNING, None)])
    failed = _attempt(1, RunPhase.FAILED, "2026-01-01T00:00:03Z", exit_code=3, reason="Error")
    after = ScriptRunStatus(phase=RunPhase.RUNNING, attempts=[failed, _attempt(2, RunPhase.PENDING, None)])
    spans = {s.name: s for s in run_spans(run, _meta(), before, after)}
    assert set(spans) == {"attempt", "pod pending", "pod running"}
    attempt = spans["attempt"]
    assert attempt.context == attempt_context(run, 1) and attempt.parent_span_id == run.context.span_id
    assert attempt.attributes["k8s.pod.name"] == "etl-load-a1" and attempt.attributes["scriptrun.exit_code"] == 3
    assert attempt.error == "Error"
    pending, running = spans["pod pending"], spans["pod running"]
    assert pending.parent_span_id == running.parent_span_id == attempt.context.span_id
    # pending ends where running starts, clamped to the creation time (startTime has whole seconds)
    assert pending.start == attempt.start == pending.end == running.start
    assert running.end == attempt.end
    # the same write seen again (a restarted operator) yields nothing new
    assert run_spans(run, _meta(), after, after) == []


def test_the_end_of_a_run_gives_the_task_span_with_usage_and_error() -> None:
    parent = object_trace("wf-uid", None, ALWAYS)
    run = object_trace("uid-run", {ANNOTATION: parent.context.traceparent()}, ALWAYS)
    meta = _meta(**{names.LABEL_WORKFLOW: "etl", names.LABEL_TASK: "load", names.LABEL_NODE: "load"})
    done = _attempt(1, RunPhase.FAILED, "2026-01-01T00:00:04Z", reason="OOMKilled")
    before = ScriptRunStatus(phase=RunPhase.RUNNING, attempts=[_attempt(1, RunPhase.RUNNING, None)])
    after = ScriptRunStatus(
        phase=RunPhase.FAILED,
        attempts=[done],
        completion_time="2026-01-01T00:00:04.250Z",
        message="out of memory",
        usage={"available": True, "userTimeSeconds": 1.5, "systemTimeSeconds": 0.25, "memoryMaxMb": 99.5},
    )
    (task,) = [s for s in run_spans(run, meta, before, after) if s.name == "task"]
    assert task.context == run.context and task.parent_span_id == parent.context.span_id
    assert task.start.isoformat() == "2026-01-01T00:00:00+00:00"  # from the object's creation
    assert task.attributes["scriptrun.task.name"] == "load" and task.attributes["scriptrun.workflow.name"] == "etl"
    assert task.attributes["scriptrun.usage.cpu_seconds"] == 1.75
    assert task.attributes["scriptrun.usage.memory_max_mb"] == 99.5
    assert task.error == "out of memory"
    standalone = run_spans(object_trace("uid-run", None, ALWAYS), _meta(), before, after)
    assert [s.name for s in standalone if s.parent_span_id is None] == ["scriptrun"]


def test_unsampled_runs_give_no_spans() -> None:
    run = object_trace("uid-run", None, lambda trace_id, parent: False)
    after = ScriptRunStatus(phase=RunPhase.SUCCEEDED, completion_time="2026-01-01T00:00:05Z")
    assert run_spans(run, _meta(), ScriptRunStatus(), after) == []
    assert api_span(run.context, "create Pod", 0.0, 1.0, {}) is None


def test_the_workflow_span_once_it_has_ended() -> None:
    wf = object_trace("wf-uid", None, ALWAYS)
    meta = {"name": "etl", "namespace": "team", "uid": "wf-uid", "creationTimestamp": "2026-01-01T00:00:00Z"}
    running = WorkflowStatus(phase=WorkflowPhase.RUNNING, started_at="2026-01-01T00:00:00.100Z")
    assert workflow_span(wf, meta, running) is None
    done = running.model_copy(update={"phase": WorkflowPhase.SUCCEEDED, "finished_at": "2026-01-01T00:01:00Z"})
    span = workflow_span(wf, meta, done)
    assert span is not None and span.name == "workflow" and span.parent_span_id is None and span.error is None
    assert (span.end - span.start).total_seconds() == 60
    assert span.attributes["scriptrun.workflow.name"] == "etl"


def test_the_pod_and_the_child_carry_the_context() -> None:
    template = RunTemplate(script=ScriptSource(source="print(1)"))
    pod = build_pod(PodInputs(run=RunRef("r", "ns", "u"), spec=template, attempt=1, traceparent=PARENT))
    containers = pod["spec"]["containers"] + pod["spec"]["initContainers"]
    for container in containers:
        assert {"name": "TRACEPARENT", "value": PARENT} in container["env"], container["name"]
    plain = build_pod(PodInputs(run=RunRef("r", "ns", "u"), spec=template, attempt=1))
    assert not any(e["name"] == "TRACEPARENT" for c in plain["spec"]["containers"] for e in c["env"])
    child = build_child(WorkflowRef("wf", "ns", "u"), task="t", node="t", template=template, traceparent=PARENT)
    assert child["metadata"]["annotations"] == {ANNOTATION: PARENT}
    assert (
        "annotations"
        not in build_child(WorkflowRef("wf", "ns", "u"), task="t", node="t", template=template)["metadata"]
    )


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_off_unless_the_environment_asks(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], on: bool
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.wanted() is on
    assert (tracing.Tracing.from_env() is tracing.NO_TRACING) is not on


def test_sampling_is_parent_based_by_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    t = tracing.Tracing(InMemorySpanExporter())
    roots = [t.object_trace(f"uid-{i}", None) for i in range(2000)]
    share = sum(1 for r in roots if r and r.context.sampled) / len(roots)
    assert 0.2 < share < 0.3
    # a sampled parent is followed whatever the ratio; an unsampled one too
    assert all(t.sample(r.trace_id, TraceContext(r.trace_id, 1, True)) for r in roots if r)
    assert not any(t.sample(r.trace_id, TraceContext(r.trace_id, 1, False)) for r in roots if r)
    t.shutdown()


def test_records_are_exported_with_their_ids_parents_and_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ops-scriptrun")
    exporter = InMemorySpanExporter()
    t = tracing.Tracing(exporter, sampling.ParentBased(sampling.ALWAYS_ON))
    run = t.object_trace("uid-run", None)
    assert run is not None
    before = ScriptRunStatus(phase=RunPhase.RUNNING, attempts=[_attempt(1, RunPhase.RUNNING, None)])
    done = _attempt(1, RunPhase.SUCCEEDED, "2026-01-01T00:00:02Z", exit_code=0)
    after = ScriptRunStatus(phase=RunPhase.SUCCEEDED, attempts=[done], completion_time="2026-01-01T00:00:02Z")
    records = run_spans(run, _meta(), before, after)
    records.append(api_span(attempt_context(run, 1), "create Pod", 1767225601.5, 0.02, {"k8s.pod.name": "p"}))
    t.emit(records)
    t.processor.force_flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"scriptrun", "attempt", "pod pending", "pod running", "create Pod"}
    root = spans["scriptrun"]
    assert root.parent is None and root.context.trace_id == run.trace_id
    assert root.resource.attributes["service.name"] == "ops-scriptrun"
    assert root.status.status_code == StatusCode.OK
    assert spans["attempt"].parent.span_id == root.context.span_id
    assert spans["create Pod"].parent.span_id == spans["attempt"].context.span_id
    assert spans["create Pod"].kind == SpanKind.CLIENT
    assert spans["create Pod"].end_time - spans["create Pod"].start_time == pytest.approx(20_000_000, abs=1000)
    t.shutdown()
