"""Traces from the real operator into a real OpenTelemetry Collector (tests/support/otelcol.py): the
test rebuilds each trace from the Collector's file export and checks names, parents and attributes,
over gRPC and over HTTP/protobuf, and across a SIGKILL of the operator mid-workflow.

The session operator is stopped for this module and a traced one runs instead (two operators would
both reconcile every object); the next test module's `live_operator` starts the session one again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, namespace, own_operator
from tests.support.otelcol import Collector, Span, require_otelcol

EXIT = "test.scriptrun.dev/exit-code"  # kwok ends the pod with this exit code
API = "scriptrun.dev/v1alpha1"


@pytest.fixture(scope="module")
def collector(cluster: ControlPlane) -> Iterator[Collector]:
    require_otelcol()
    workdir = cluster.workdir / "otelcol"
    workdir.mkdir(exist_ok=True)
    with Collector(workdir) as col:
        yield col


@pytest.fixture(scope="module")
def traced(cluster: ControlPlane, operator: OperatorProcess, collector: Collector) -> Iterator[OperatorProcess]:
    op = own_operator(cluster, operator, otel_env(collector, "grpc"), "operator-traced.log")
    yield op
    op.stop()
    assert not [e for e in op.errors() if "Traceback" in e], op.tail()


def otel_env(collector: Collector, protocol: str) -> dict[str, str]:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc" if protocol == "grpc" else "http/protobuf",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
    }


@pytest.fixture
def ns(cluster: ControlPlane, traced: OperatorProcess) -> Iterator[Kube]:
    yield from namespace(cluster, traced)


def task(name: str, exit_code: int | None, **kw: Any) -> dict[str, Any]:
    ann = {EXIT: str(exit_code)} if exit_code is not None else {}
    return {"name": name, "script": {"source": "print(1)"}, "podMetadata": {"annotations": ann}, **kw}


def workflow(name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name}, "spec": {"tasks": tasks}}


def wf_status(kube: Kube, name: str) -> dict[str, Any]:
    return dict((kube.get("workflow", name) or {}).get("status") or {})


def tree(spans: list[Span], trace_id: str) -> dict[str, Span]:
    """The trace's spans by id, checked to be one tree: one root, every parent present, no id twice."""
    mine = [s for s in spans if s.trace_id == trace_id]
    ids = Counter(s.span_id for s in mine)
    assert not [i for i, n in ids.items() if n > 1], f"spans sent twice: {ids.most_common(3)}"
    by_id = {s.span_id: s for s in mine}
    roots = [s for s in mine if not s.parent_id]
    assert len(roots) == 1, [(s.name, s.attributes) for s in roots]
    orphans = [(s.name, s.parent_id) for s in mine if s.parent_id and s.parent_id not in by_id]
    assert not orphans, orphans
    return by_id


def children(by_id: dict[str, Span], parent: Span, name: str | None = None) -> list[Span]:
    return [s for s in by_id.values() if s.parent_id == parent.span_id and (name is None or s.name == name)]


def test_a_workflow_is_one_trace_with_tasks_attempts_and_pod_phases(ns: Kube, collector: Collector) -> None:
    flaky = task("flaky", 3, dependencies=["first"], retryStrategy={"limit": 1, "backoff": {"durationSeconds": 1}})
    ns.apply(workflow("traced", [task("first", 0), flaky]))
    status = ns.wait("workflow failed", lambda: (s := wf_status(ns, "traced")).get("phase") == "Failed" and s)
    trace_id = status["traceID"]
    assert len(trace_id) == 32

    def complete(spans: list[Span]) -> bool:
        return any(s.name == "workflow" and s.trace_id == trace_id for s in spans)

    by_id = tree(collector.wait_for_spans(complete, timeout=30), trace_id)
    (root,) = [s for s in by_id.values() if not s.parent_id]
    assert root.name == "workflow" and root.status_code == "error"
    assert root.attributes["k8s.namespace.name"] == ns.ns
    assert root.attributes["scriptrun.workflow.name"] == "traced"
    assert root.resource["service.name"] == "scriptrun-operator"
    tasks = {s.attributes["scriptrun.task.name"]: s for s in children(by_id, root, "task")}
    assert set(tasks) == {"first", "flaky"}
    assert len(children(by_id, root, "create ScriptRun")) == 2
    assert tasks["first"].status_code != "error" and tasks["flaky"].status_code == "error"
    for name, attempts in (("first", 1), ("flaky", 2)):
        run = ns.get("scriptrun", f"traced-{name}")
        assert run is not None and run["status"]["traceID"] == trace_id
        spans = sorted(children(by_id, tasks[name], "attempt"), key=lambda s: s.attributes["scriptrun.attempt"])
        assert [s.attributes["scriptrun.attempt"] for s in spans] == list(range(1, attempts + 1))
        for attempt in spans:
            pod = attempt.attributes["k8s.pod.name"]
            assert {s.name for s in children(by_id, attempt)} == {"create Pod", "pod pending", "pod running"}
            assert all(s.attributes["k8s.pod.name"] == pod for s in children(by_id, attempt))
            # the pod carries its attempt's context: the script's and the monitor's spans join here
            body = ns.get("pod", pod)
            assert body is not None
            for container in body["spec"]["containers"] + body["spec"]["initContainers"]:
                env = {e["name"]: e.get("value") for e in container["env"]}
                assert env["TRACEPARENT"] == f"00-{trace_id}-{attempt.span_id}-01", container["name"]
            assert attempt.start_ns <= attempt.end_ns
    assert tasks["flaky"].attributes["scriptrun.attempts"] == 2
    assert root.start_ns <= min(s.start_ns for s in by_id.values())


def test_a_standalone_run_is_its_own_trace_and_joins_a_given_parent(ns: Kube, collector: Collector) -> None:
    ns.apply(scriptrun("alone", {}, {EXIT: "0"}))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    joined = scriptrun("joined", {}, {EXIT: "0"})
    joined["metadata"]["annotations"] = {"scriptrun.dev/traceparent": parent}
    ns.apply(joined)
    alone = ns.wait_phase("alone", "Succeeded")
    ns.wait_phase("joined", "Succeeded")
    spans = collector.wait_for_spans(
        lambda ss: (
            {"alone", "joined"} <= {s.attributes.get("scriptrun.scriptrun.name") for s in ss if s.name == "scriptrun"}
        ),
        timeout=30,
    )
    by_id = tree(spans, alone["traceID"])
    (root,) = [s for s in by_id.values() if not s.parent_id]
    assert root.name == "scriptrun" and root.attributes["scriptrun.scriptrun.name"] == "alone"
    (joined_span,) = [
        s for s in spans if s.name == "scriptrun" and s.attributes["scriptrun.scriptrun.name"] == "joined"
    ]
    assert joined_span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert joined_span.parent_id == "b7ad6b7169203331"


def test_the_trace_survives_a_killed_operator(ns: Kube, collector: Collector, traced: OperatorProcess) -> None:
    """SIGKILL after the first task's spans were sent and while the second task's pod runs; the
    operator comes back exporting over HTTP/protobuf: still one tree, nothing twice."""
    ns.apply(workflow("survivor", [task("early", 0), task("late", None, dependencies=["early"])]))
    trace_id = ns.wait("trace id", lambda: wf_status(ns, "survivor").get("traceID"))
    collector.wait_for_spans(
        lambda ss: any(s.name == "task" and s.attributes.get("scriptrun.task.name") == "early" for s in ss),
        timeout=30,
    )
    ns.wait("late runs", lambda: (ns.get("pod", "survivor-late-a1") or {}).get("status", {}).get("phase") == "Running")
    # what was sent before the kill (a SIGKILL loses the spans still queued: docs/tracing.md)
    collector.wait_for_spans(
        lambda ss: any(s.name == "create Pod" and s.attributes["k8s.pod.name"] == "survivor-late-a1" for s in ss)
    )
    traced.kill()
    ns.patch("pod", "survivor-late-a1", {"metadata": {"annotations": {EXIT: "0"}}})  # ends while no operator runs
    traced.extra_env.update(otel_env(collector, "http"))
    traced.start()
    ns.wait("workflow succeeded", lambda: wf_status(ns, "survivor").get("phase") == "Succeeded")

    spans = collector.wait_for_spans(
        lambda ss: any(s.name == "workflow" and s.trace_id == trace_id for s in ss), timeout=30
    )
    by_id = tree(spans, trace_id)
    (root,) = [s for s in by_id.values() if not s.parent_id]
    assert root.name == "workflow" and root.status_code != "error"
    tasks = {s.attributes["scriptrun.task.name"]: s for s in children(by_id, root, "task")}
    assert set(tasks) == {"early", "late"}
    for name in ("early", "late"):
        (attempt,) = children(by_id, tasks[name], "attempt")
        assert {s.name for s in children(by_id, attempt)} == {"create Pod", "pod pending", "pod running"}
