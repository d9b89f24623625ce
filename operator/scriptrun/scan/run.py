"""Run a template's before-gates: each scan, its verdict, the SARIF log and the SBOM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scriptrun.model.gates import BeforeGates, GateResult
from scriptrun.scan import osv, secrets, static
from scriptrun.scan.findings import MESSAGE_LIMIT, ScanOutcome
from scriptrun.scan.sarif import sarif
from scriptrun.scan.sbom import run_sbom

SCRIPT_NAME = "main.py"  # how reports name the script, wherever it was read from


@dataclass
class BeforeReport:
    results: list[GateResult] = field(default_factory=list)
    failure: str | None = None  # why the run is blocked
    warnings: list[str] = field(default_factory=list)
    sarif: dict[str, Any] = field(default_factory=dict)
    sbom: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """What travels in the gate container's termination message (at most 4 KiB)."""
        out: dict[str, Any] = {"gates": [r.dump() for r in self.results]}
        if self.failure:
            out["failure"] = self.failure
        return out


def run_before(
    before: BeforeGates,
    *,
    name: str,
    script: Path | None,
    inputs: list[tuple[str, str]],
    osv_dir: Path | None,
    work: Path,
) -> BeforeReport:
    """Every configured before-gate, in order: staticAnalysis, secretScan, dependencyScan.
    `script`: the script file (None for script.command); `inputs`: inputs_of(spec); `osv_dir`: the
    OSV records' directory; `work`: a writable directory for scratch files."""
    report = BeforeReport()
    outcomes: list[tuple[ScanOutcome, Any]] = []
    if before.static_analysis is not None:
        outcomes.append((static.scan(script, before.static_analysis, SCRIPT_NAME), before.static_analysis))
    if before.secret_scan is not None:
        outcomes.append((secrets.scan(script, inputs, SCRIPT_NAME, work), before.secret_scan))
    if before.dependency_scan is not None:
        dep = before.dependency_scan
        database = osv_dir if osv_dir is not None else Path("/nonexistent")
        outcome = osv.scan(list(dep.requirements), database)
        outcomes.append((outcome, dep))
        report.sbom = run_sbom(name, list(dep.requirements), outcome.findings)
    failures = []
    for outcome, config in outcomes:
        verdict, failure = outcome.judge(config)
        report.results.append(verdict)
        if failure:
            failures.append(failure)
        elif verdict.result == "Warned":
            report.warnings.append(f"gate {verdict.name}: {verdict.message}"[:MESSAGE_LIMIT])
    if failures:
        more = f" (and {len(failures) - 1} more gate(s))" if len(failures) > 1 else ""
        report.failure = (failures[0] + more)[:MESSAGE_LIMIT]
    report.sarif = sarif([(o, c.severity) for o, c in outcomes])
    return report
