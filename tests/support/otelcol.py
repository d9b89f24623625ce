"""A real OpenTelemetry Collector for tests: OTLP in (gRPC and HTTP on loopback, random ports), spans out to a
JSON-lines file that `Collector.spans()` reads back.

The binary comes from hack/k8s-binaries.sh (the collector builder: otlp receiver, debug and file exporters), cached
outside the repo as otelcol-$OTELCOL_VERSION. The process is started here and stopped here, by PID.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import _die_with_parent, _versions, binaries_dir, free_port

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")


def otelcol_binary(bin_dir: Path | None = None) -> Path:
    bin_dir = bin_dir or binaries_dir()
    version = _versions(bin_dir).get("OTELCOL_VERSION")
    path = bin_dir / f"otelcol-{version}"
    if version is None or not path.exists():
        raise FileNotFoundError(f"{path} missing: run `make bins` (hack/k8s-binaries.sh)")
    return path


def require_otelcol() -> None:
    """Skip the test when the Collector is not built (fail instead under CI's SCRIPTRUN_REQUIRE_CONTROLPLANE)."""
    try:
        otelcol_binary()
    except FileNotFoundError as err:
        if os.environ.get("SCRIPTRUN_REQUIRE_CONTROLPLANE"):
            pytest.fail(str(err))
        pytest.skip(str(err))


@dataclass(frozen=True)
class Span:
    """One span as the collector received it. IDs are lowercase hex; parent_id is "" for a root span; kind is one
    of SPAN_KINDS ("internal", "server", ...), status_code one of STATUS_CODES."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(hash=False)
    resource: dict[str, Any] = field(hash=False)
    status_code: str


def _value(v: dict[str, Any]) -> Any:
    """An OTLP JSON AnyValue: int64 values are strings in OTLP JSON, bytes are base64."""
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return _attributes(v["kvlistValue"].get("values", []))
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"])
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    return None  # an empty AnyValue


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value", {})) for kv in items}


def parse_spans(lines: str) -> list[Span]:
    """Spans from the file exporter's output: one ExportTraceServiceRequest (OTLP JSON) per line."""
    spans = []
    for line in lines.splitlines():
        if not line.strip():
            continue
        for rs in json.loads(line).get("resourceSpans", []):
            resource = _attributes(rs.get("resource", {}).get("attributes", []))
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    spans.append(
                        Span(
                            trace_id=s["traceId"],
                            span_id=s["spanId"],
                            parent_id=s.get("parentSpanId", ""),
                            name=s["name"],
                            kind=SPAN_KINDS[s.get("kind", 0)],
                            start_ns=int(s["startTimeUnixNano"]),
                            end_ns=int(s["endTimeUnixNano"]),
                            attributes=_attributes(s.get("attributes", [])),
                            resource=resource,
                            status_code=STATUS_CODES[s.get("status", {}).get("code", 0)],
                        )
                    )
    return spans


class Collector:
    """`with Collector(tmp_path) as col:` send OTLP to col.grpc_endpoint or col.http_endpoint, read col.spans()."""

    def __init__(self, workdir: Path, bin_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.binary = otelcol_binary(bin_dir)
        self.grpc_port = 0
        self.http_port = 0
        self.traces = workdir / "otelcol-traces.jsonl"
        self.log = workdir / "otelcol.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT); traces go to {http_endpoint}/v1/traces."""
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict[str, Any]:
        return {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                        "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
                    }
                }
            },
            # flush_interval defaults to 1s; one line per export request
            "exporters": {"file": {"path": str(self.traces), "flush_interval": "100ms"}},
            "service": {
                # level none: no internal metrics reader, so nothing listens on the default :8888
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
            },
        }

    def start(self, timeout: float = 30) -> Collector:
        self.grpc_port, self.http_port = free_port(), free_port()
        config = self.workdir / "otelcol.yaml"
        config.write_text(yaml.safe_dump(self.config()))
        with self.log.open("wb") as log:
            self.popen = subprocess.Popen(
                [str(self.binary), f"--config={config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while not all(self._accepts(p) for p in (self.grpc_port, self.http_port)):
            if self.popen.poll() is not None:
                raise RuntimeError(f"otelcol exited {self.popen.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop(check=False)
                raise TimeoutError(f"otelcol not listening after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 10, check: bool = True) -> None:
        """SIGTERM and wait (SIGKILL after `timeout`); with `check`, raise if it had crashed or did not exit cleanly."""
        if self.popen is None:
            return
        crashed = self.popen.poll()
        if crashed is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        rc, self.popen = self.popen.returncode, None
        if check and (crashed is not None or rc != 0):
            raise RuntimeError(f"otelcol exited {rc}:\n{self.log_tail()}")

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop(check=exc_info[0] is None)  # a failing test's own error matters more than the collector's

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def spans(self) -> list[Span]:
        """Every span exported so far (up to flush_interval late). A last line still being written is skipped."""
        if not self.traces.exists():
            return []
        text = self.traces.read_text()
        return parse_spans(text[: text.rfind("\n") + 1])

    def wait_for_spans(self, predicate: Callable[[list[Span]], bool], timeout: float = 10) -> list[Span]:
        """Poll spans() until predicate(spans) holds; return them, or raise TimeoutError showing what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"otelcol exited {self.popen.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                seen = [(s.name, s.resource.get("service.name")) for s in spans]
                raise TimeoutError(f"spans not as expected after {timeout}s; got {seen}\n{self.log_tail()}")
            time.sleep(0.1)
