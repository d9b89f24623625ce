"""JUnit XML for `scriptrun run --junit`, so a CI pipeline shows the run and its gates as tests.

One <testsuite> per manifest: a test case per task (a ScriptRun is one case, `run`), and one per
gate verdict (`gate NAME`, classname `SUITE.TASK`): a Failed gate is a <failure type="GateFailed">,
one that could not be judged an <error type="GateError">, a Warned one passes with the warning in
its <system-out>. Written with the standard library's ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scriptrun.engine.dag import Plan
from scriptrun.model.gates import GateResult
from scriptrun.model.scriptrun import ScriptRun
from scriptrun.model.workflow import TaskSummary, Workflow


@dataclass
class _Tally:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _seconds(duration: str | None) -> float:
    """`1h2m3s` (clock.human_duration) in seconds."""
    total, num = 0.0, ""
    for ch in duration or "":
        if ch.isdigit():
            num += ch
        else:
            total += int(num or 0) * {"h": 3600, "m": 60, "s": 1}.get(ch, 0)
            num = ""
    return total


def _usage_properties(case: ET.Element, usage: Mapping[str, object] | None) -> None:
    if usage:
        props = ET.SubElement(case, "properties")
        for key, value in usage.items():
            ET.SubElement(props, "property", name=key, value=str(value))


def _gate_cases(suite: ET.Element, classname: str, results: list[GateResult] | None, tally: _Tally) -> None:
    for gate in results or []:
        tally.tests += 1
        case = ET.SubElement(suite, "testcase", classname=classname, name=f"gate {gate.name}", time="0")
        message = gate.message or gate.result
        if gate.result == "Failed":
            tally.failures += 1
            ET.SubElement(case, "failure", message=message, type="GateFailed").text = f"{gate.stage} gate: {message}"
        elif gate.result == "Error":
            tally.errors += 1
            ET.SubElement(case, "error", message=message, type="GateError").text = f"{gate.stage} gate: {message}"
        elif gate.result == "Warned":
            ET.SubElement(case, "system-out").text = f"warning: {message}"


def _finish(suite: ET.Element, tally: _Tally, path: Path) -> None:
    for key in ("tests", "failures", "errors", "skipped"):
        suite.set(key, str(getattr(tally, key)))
    suite.set("time", f"{tally.seconds:.1f}")
    ET.indent(suite)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def scriptrun_report(run: ScriptRun, path: Path) -> None:
    """One case for the run itself (failed for any reason but its gates), then its gates."""
    name = run.metadata.name or "scriptrun"
    status = run.status
    suite = ET.Element("testsuite", name=name)
    tally = _Tally(tests=1, seconds=_seconds(status.duration))
    case = ET.SubElement(suite, "testcase", classname=name, name="run", time=f"{tally.seconds:.1f}")
    last = status.attempts[-1] if status.attempts else None
    if status.phase.value == "Failed" and (last is None or last.phase.value != "Succeeded"):
        tally.failures += 1
        reason = last.reason if last is not None and last.reason else "Failed"
        failure = ET.SubElement(case, "failure", message=status.message or "failed", type=reason)
        failure.text = f"exit code {last.exit_code if last else None}, attempts {status.attempt_count}"
    _usage_properties(case, status.usage)
    _gate_cases(suite, name, status.gates, tally)
    _finish(suite, tally, path)


def workflow_report(wf: Workflow, plan: Plan, path: Path, gates: Mapping[str, list[GateResult]] | None = None) -> None:
    """One case per task node; then, per node, its `gates` (node id -> the child run's verdicts)."""
    name = wf.metadata.name or "workflow"
    suite = ET.Element("testsuite", name=name)
    tally = _Tally()
    for node_id, node in plan.nodes.items():
        summary = wf.status.tasks.get(node_id) or TaskSummary(phase="Pending")
        seconds = _seconds(summary.duration)
        tally.tests += 1
        tally.seconds += seconds
        case = ET.SubElement(suite, "testcase", classname=name, name=node.display, time=f"{seconds:.1f}")
        results = (gates or {}).get(node_id)
        failed_by_gate = any(g.result in ("Failed", "Error") for g in results or [])
        if summary.phase == "Failed" and not failed_by_gate:
            tally.failures += 1
            failure = ET.SubElement(case, "failure", message=summary.message or "failed", type="TaskFailed")
            failure.text = f"exit code {summary.exit_code}, attempts {summary.attempts}"
        elif summary.phase in ("Skipped", "Omitted", "Pending"):
            tally.skipped += 1
            ET.SubElement(case, "skipped", message=summary.message or summary.phase)
        _usage_properties(case, summary.usage)
        _gate_cases(suite, f"{name}.{node.display}", results, tally)
    _finish(suite, tally, path)
