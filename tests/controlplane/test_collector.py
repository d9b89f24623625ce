"""The real OpenTelemetry Collector support (tests/support/otelcol.py) receives what the Python OTLP exporters send,
over gRPC and over HTTP/protobuf, and reads back spans with their parent links, attributes and resource.

No cluster: this uses none of the control-plane fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.support.otelcol import Collector, Span, require_otelcol


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    require_otelcol()
    with Collector(tmp_path) as col:
        yield col


def exporter(collector: Collector, protocol: str) -> SpanExporter:
    if protocol == "grpc":
        return GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=10)
    return HttpExporter(endpoint=f"{collector.http_endpoint}/v1/traces", timeout=10)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_round_trip(collector: Collector, protocol: str) -> None:
    service = f"collector-test-{protocol}"
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter(collector, protocol)))
    tracer = provider.get_tracer("scriptrun.tests")
    with (
        tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes={"run": "hello", "attempt": 2}) as p,
        tracer.start_as_current_span("child", attributes={"ok": True, "ratio": 0.5, "codes": [0, 1]}) as c,
    ):
        c.set_status(Status(StatusCode.ERROR, "exit code 1"))
    provider.shutdown()

    spans = collector.wait_for_spans(lambda ss: {"parent", "child"} <= {s.name for s in ss})
    by_name: dict[str, Span] = {s.name: s for s in spans}
    parent, child = by_name["parent"], by_name["child"]
    assert len(spans) == 2
    assert parent.trace_id == child.trace_id == f"{p.get_span_context().trace_id:032x}"
    assert parent.span_id == f"{p.get_span_context().span_id:016x}"
    assert child.span_id == f"{c.get_span_context().span_id:016x}"
    assert parent.parent_id == ""
    assert child.parent_id == parent.span_id
    assert (parent.kind, child.kind) == ("server", "internal")
    assert parent.attributes == {"run": "hello", "attempt": 2}
    assert child.attributes == {"ok": True, "ratio": 0.5, "codes": [0, 1]}
    assert (parent.status_code, child.status_code) == ("unset", "error")
    assert parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns
    for span in spans:
        assert span.resource["service.name"] == service
        assert span.resource["deployment.environment"] == "test"
