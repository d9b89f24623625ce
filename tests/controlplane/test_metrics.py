"""The operator's own metrics (the catalogue in scriptrun.telemetry), scraped from the real operator
after a workflow with a retry and monitor summaries: every counter moves, labels stay bounded."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.kube import Kube
from tests.support.operator import OperatorProcess

EXIT = "test.scriptrun.dev/exit-code"
MONITOR = "test.scriptrun.dev/monitor-message"
SUMMARY = {"cpuAvgPercent": 50.0, "memoryMaxMb": 12.5, "userTimeSeconds": 1.5, "systemTimeSeconds": 0.5}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(found: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in found if n == name and all(lab.get(k) == x for k, x in labels.items()))


def task(name: str, exit_code: int, **kw: Any) -> dict[str, Any]:
    ann = {EXIT: str(exit_code), MONITOR: json.dumps(SUMMARY)}
    return {"name": name, "script": {"source": "print(1)"}, "podMetadata": {"annotations": ann}, **kw}


def test_operator_metrics_after_a_workflow(kube: Kube, live_operator: OperatorProcess) -> None:
    flaky = task("flaky", 3, retryStrategy={"limit": 1, "backoff": {"durationSeconds": 1}})
    body = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "measured"},
        "spec": {"tasks": [task("a", 0), task("b", 0, dependencies=["a"]), flaky]},
    }
    kube.apply(body)
    kube.wait(
        "workflow finished",
        lambda: ((kube.get("workflow", "measured") or {}).get("status") or {}).get("phase") == "Failed",
        timeout=60,
    )
    ns = kube.ns

    def scraped() -> list[tuple[str, dict[str, str], float]] | None:
        found = samples(live_operator.scrape())
        done = total(found, "scriptrun_finished_total", kind="Workflow", namespace=ns)
        return found if done == 1 else None

    found = kube.wait("workflow counted", scraped, timeout=30)
    assert total(found, "scriptrun_finished_total", kind="Workflow", namespace=ns, phase="Failed") == 1
    assert total(found, "scriptrun_finished_total", kind="ScriptRun", namespace=ns, phase="Succeeded") == 2
    assert total(found, "scriptrun_finished_total", kind="ScriptRun", namespace=ns, phase="Failed") == 1
    assert total(found, "scriptrun_retries_total", namespace=ns, reason="Error") == 1
    # four pods: a, b and flaky's two attempts; each started (kwok sets startTime) and ended
    assert total(found, "scriptrun_attempts_total", namespace=ns, reason="Completed") == 2
    assert total(found, "scriptrun_attempts_total", namespace=ns, reason="Error") == 2
    assert total(found, "scriptrun_pod_start_seconds_count", namespace=ns) == 4
    assert total(found, "scriptrun_duration_seconds_count", kind="ScriptRun", namespace=ns) == 3
    assert total(found, "scriptrun_duration_seconds_count", kind="Workflow", namespace=ns) == 1
    # usage from the monitor's summaries: 2 CPU seconds a run (the failed run's last attempt too)
    assert total(found, "scriptrun_used_cpu_seconds_total", namespace=ns) == 6.0
    assert total(found, "scriptrun_peak_memory_bytes_count", namespace=ns) == 3
    # each finished run's cost, priced at OpenCost's defaults (no price table here; kwok-node-0 has no type)
    costed = [lab for n, lab, _ in found if n == "scriptrun_cost_total" and lab.get("namespace") == ns]
    assert costed and all(lab["currency"] == "USD" and lab["source"] == "default" for lab in costed)
    assert total(found, "scriptrun_reconciles_total", kind="ScriptRun", outcome="ok") >= 3
    assert total(found, "scriptrun_reconciles_total", kind="Workflow", outcome="ok") >= 1
    assert total(found, "scriptrun_actions_total", operation="Create", object="Pod", result="ok") >= 4
    assert total(found, "scriptrun_actions_total", operation="Create", object="ScriptRun", result="ok") >= 3
    assert total(found, "scriptrun_objects", kind="Workflow", phase="Failed") >= 1
    # bounded labels: no run, pod or workflow name appears in any label value
    names = {"measured", "measured-a", "measured-b", "measured-flaky", "measured-flaky-a1", "measured-flaky-a2"}
    assert not [lab for _, lab, _ in found if names & set(lab.values())]
