"""Trace contexts as data: W3C `traceparent` strings, and the ids of every span scriptrun emits.

The ids are derived from the objects' uids (a hash), so a restarted operator computes the same ones
and a workflow stays one trace whatever happens to the process. What is stored on the objects:
the `scriptrun.dev/traceparent` annotation names an object's parent span (a child ScriptRun gets its
Workflow's; a user may set it on a Workflow or ScriptRun to join a trace of theirs, e.g. a CI job's);
`status.traceID` says where to look. No OpenTelemetry import here: the SDK is in `tracing`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from scriptrun.build import names

ANNOTATION = names.ANNOTATION_TRACEPARENT
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass(frozen=True)
class TraceContext:
    """One span's identity within its trace, and whether the trace is sampled."""

    trace_id: int
    span_id: int
    sampled: bool

    @property
    def trace_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"


def parse_traceparent(text: str | None) -> TraceContext | None:
    """A W3C traceparent (version 00, or a later one read as 00); None if absent or invalid."""
    match = _TRACEPARENT.match((text or "").strip())
    if match is None:
        return None
    version, trace, span, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def derive_id(bits: int, *parts: str | int) -> int:
    """A stable, uniformly distributed, non-zero id of `bits` bits from `parts`."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    value = int.from_bytes(digest[: bits // 8], "big")
    return value or 1


Sampler = Callable[[int, TraceContext | None], bool]  # (trace id, parent or None) -> sampled?


@dataclass(frozen=True)
class ObjectTrace:
    """The span of one Workflow or ScriptRun: its own context, and its parent span (None: it is the
    root of its trace)."""

    context: TraceContext
    parent_span_id: int | None

    @property
    def trace_id(self) -> int:
        return self.context.trace_id


def object_trace(uid: str, annotations: dict[str, str] | None, sample: Sampler, *, round_: int = 0) -> ObjectTrace:
    """The span of the object with `uid`: a child of the span its annotation names, or the root of
    a trace of its own. `round_` > 0: a Workflow retried by `scriptrun retry`; that round's span is
    a child of the first round's (one tree)."""
    parent = parse_traceparent((annotations or {}).get(ANNOTATION))
    if parent is not None:
        trace_id, sampled = parent.trace_id, sample(parent.trace_id, parent)
    else:
        trace_id = derive_id(128, "trace", uid)
        sampled = sample(trace_id, None)
    first = TraceContext(trace_id, derive_id(64, "object", uid), sampled)
    if round_ <= 0:
        return ObjectTrace(first, parent.span_id if parent else None)
    return ObjectTrace(TraceContext(trace_id, derive_id(64, "round", uid, round_), sampled), first.span_id)


def attempt_context(run: ObjectTrace, attempt: int) -> TraceContext:
    """The span of a run's attempt `attempt` (its pod): what the pod's TRACEPARENT names."""
    ctx = run.context
    return TraceContext(ctx.trace_id, derive_id(64, "attempt", ctx.span_id, attempt), ctx.sampled)


def child_span_id(parent: TraceContext, *parts: str | int) -> int:
    """A leaf span's id under `parent` (pod phases, API calls)."""
    return derive_id(64, "leaf", parent.span_id, *parts)
