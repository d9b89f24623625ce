"""spec.gates.before for `scriptrun run`: the gate container's scans, on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scriptrun.engine.gates import before_gates, inputs_of
from scriptrun.model.gates import GateResult
from scriptrun.model.scriptrun import ScriptRun
from scriptrun.scan.run import BeforeReport, run_before

__all__ = ["BeforeReport", "check_before", "merged_sarif"]
EXTRA = "pip install 'scriptrun[gates]'"


def _osv_dir(name: str, configmaps: dict[str, dict[str, Any]], work: Path) -> Path | str:
    """The database ConfigMap's keys as files (what its volume looks like in a pod), or why not."""
    cm = configmaps.get(name)
    if cm is None:
        return f"ConfigMap {name!r} (dependencyScan.database) not found; locally it must be in the same file"
    directory = work / "scriptrun-osv"
    directory.mkdir(exist_ok=True)
    for key, value in (cm.get("data") or {}).items():
        if "/" not in key and key not in (".", ".."):
            (directory / key).write_text(str(value))
    return directory


def check_before(
    run: ScriptRun, script: Path | None, work: Path, configmaps: dict[str, dict[str, Any]]
) -> BeforeReport:
    before = before_gates(run.spec)
    assert before is not None
    osv_dir: Path | None = None
    if before.dependency_scan is not None:
        found = _osv_dir(before.dependency_scan.database.config_map_name, configmaps, work)
        if isinstance(found, str):
            result = GateResult(name="dependencyScan", stage="before", result="Error", message=found)
            return BeforeReport(results=[result], failure=f"gate dependencyScan: {found}")
        osv_dir = found
    name = run.metadata.name or "scriptrun"
    try:
        return run_before(before, name=name, script=script, inputs=inputs_of(run.spec), osv_dir=osv_dir, work=work)
    except ImportError as err:  # a scanner is not installed (the gates extra)
        return BeforeReport(results=[], failure=f"the before-gates need their scanners ({EXTRA}): {err}")


def merged_sarif(reports: dict[str, BeforeReport]) -> dict[str, Any] | None:
    """One SARIF log of several runs' reports (a workflow's tasks), each run tagged with its task."""
    if not reports:
        return None
    runs = [
        {**run, "properties": {**run.get("properties", {}), "task": task}}
        for task, report in reports.items()
        for run in report.sarif.get("runs") or []
    ]
    return {**next(iter(reports.values())).sarif, "runs": runs}
