"""OTLP traces: the OpenTelemetry SDK's exporters, processor and samplers behind a small object.

Configured with the standard variables only:
- on when `OTEL_TRACES_EXPORTER=otlp` (the chart's `tracing.enabled`) or an OTLP endpoint variable
  is set; off with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`; off by default;
- `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: `grpc` or `http/protobuf` (the default, as the spec says);
  endpoint, headers, timeout, certificates: the exporters read their own `OTEL_EXPORTER_OTLP_*`;
- `OTEL_TRACES_SAMPLER` (+ `_ARG`): `parentbased_traceidratio` and the other standard names;
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_BSP_*` for the batch processor.

Off, `NO_TRACING` stands in: every method returns at once, and nothing is added to any object.
Spans are recorded after the fact from `spans.SpanRecord`s (ids fixed by `trace_context`), so the
SDK's `Tracer` (random ids, live spans) is not used; the batch processor and exporters are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from scriptrun import __version__
from scriptrun.telemetry.spans import SpanRecord
from scriptrun.telemetry.trace_context import ObjectTrace, TraceContext, object_trace

log = logging.getLogger(__name__)
SCOPE = "scriptrun.operator"
SERVICE = "scriptrun-operator"


class NoTracing:
    """Tracing off: nothing is computed, recorded or stored."""

    enabled = False

    def object_trace(self, uid: str, annotations: dict[str, str] | None, round_: int = 0) -> ObjectTrace | None:
        return None

    def emit(self, records: Iterable[SpanRecord | None]) -> None:
        return None

    def shutdown(self) -> None:
        return None


NO_TRACING = NoTracing()


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def wanted() -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return False
    exporter = _env("OTEL_TRACES_EXPORTER").lower()
    if exporter:
        return "otlp" in exporter.split(",")
    return bool(_env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporter() -> Any:
    protocol = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol != "http/protobuf":
        log.warning("OTLP protocol %r is not supported; using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def _sampler() -> Any:
    from opentelemetry.sdk.trace import sampling

    name = _env("OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on"
    try:
        ratio = float(_env("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    except ValueError:
        ratio = 1.0
    ratio = min(1.0, max(0.0, ratio))
    roots = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
    }
    base = name.removeprefix("parentbased_")
    if base not in roots:
        log.warning("OTEL_TRACES_SAMPLER=%s is not supported; using parentbased_always_on", name)
        return sampling.ParentBased(sampling.ALWAYS_ON)
    return sampling.ParentBased(roots[base]) if name.startswith("parentbased_") else roots[base]


class Tracing:
    """Tracing on: decides sampling, and hands finished spans to the batch processor."""

    enabled = True

    def __init__(
        self, exporter: Any, sampler: Any | None = None, *, schedule_delay_millis: float | None = None
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.sampler = sampler if sampler is not None else _sampler()
        # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; ours only where they are silent
        named = _env("OTEL_SERVICE_NAME") or "service.name=" in _env("OTEL_RESOURCE_ATTRIBUTES")
        ours = {"service.version": __version__} if named else {"service.name": SERVICE, "service.version": __version__}
        self.resource = Resource.create(ours)
        self.scope = InstrumentationScope(SCOPE, __version__)
        if schedule_delay_millis is None and not _env("OTEL_BSP_SCHEDULE_DELAY"):
            schedule_delay_millis = 1000  # the spec's 5 s loses more at a crash, for no gain here
        self.processor = BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_millis)

    @classmethod
    def from_env(cls) -> Tracing | NoTracing:
        if not wanted():
            return NO_TRACING
        return cls(_exporter())

    def sample(self, trace_id: int, parent: TraceContext | None) -> bool:
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        context = None
        if parent is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT)
            span = NonRecordingSpan(SpanContext(parent.trace_id, parent.span_id, is_remote=True, trace_flags=flags))
            context = trace.set_span_in_context(span)
        return bool(self.sampler.should_sample(context, trace_id, "scriptrun").decision.is_sampled())

    def object_trace(self, uid: str, annotations: dict[str, str] | None, round_: int = 0) -> ObjectTrace | None:
        return object_trace(uid, annotations, self.sample, round_=round_)

    def emit(self, records: Iterable[SpanRecord | None]) -> None:
        for record in records:
            if record is not None and record.context.sampled:
                self.processor.on_end(self._readable(record))

    def _readable(self, record: SpanRecord) -> Any:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        ctx = record.context
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = None
        if record.parent_span_id is not None:
            parent = SpanContext(ctx.trace_id, record.parent_span_id, is_remote=False, trace_flags=flags)
        status = Status(StatusCode.ERROR, record.error) if record.error else Status(StatusCode.OK)
        kind = SpanKind.CLIENT if record.name.startswith("create ") else SpanKind.INTERNAL
        return ReadableSpan(
            name=record.name,
            context=SpanContext(ctx.trace_id, ctx.span_id, is_remote=False, trace_flags=flags),
            parent=parent,
            resource=self.resource,
            attributes=dict(record.attributes),
            kind=kind,
            status=status,
            start_time=int(record.start.timestamp() * 1e9),
            end_time=int(record.end.timestamp() * 1e9),
            instrumentation_scope=self.scope,
        )

    def shutdown(self) -> None:
        """Send what is queued (at a graceful stop)."""
        self.processor.shutdown()  # type: ignore[no-untyped-call]
