"""`scriptrun gate`: the before-gates in a run pod's first init container.

Reads its configuration from $SCRIPTRUN_GATES, the script from the script volume and the OSV
records from theirs; writes the verdicts (JSON, at most 4 KiB) to its termination message, and the
full report (SARIF, SBOM) as one marked line on stdout for the operator. Exits GATE_EXIT_BLOCKED
when a gate blocks the run, 0 otherwise."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from scriptrun.model.contract import ENV_GATES, GATE_EXIT_BLOCKED, GATE_REPORT_MARK
from scriptrun.model.gates import BeforeGates
from scriptrun.scan.run import BeforeReport, run_before

TERMINATION_LIMIT = 4096


def termination_message(report: BeforeReport) -> str:
    """The summary, shortened until it fits the kubelet's 4 KiB: messages first, then gates dropped."""
    summary = report.summary()
    text = json.dumps(summary, separators=(",", ":"))
    for gate in summary["gates"]:
        if len(text.encode()) <= TERMINATION_LIMIT:
            break
        gate["message"] = (gate.get("message") or "")[:80]
        text = json.dumps(summary, separators=(",", ":"))
    return text[:TERMINATION_LIMIT]


def main(*, script: str | None, osv_dir: str, work: str, termination_path: str) -> int:
    config = json.loads(os.environ.get(ENV_GATES) or "{}")
    before = BeforeGates.model_validate(config.get("before") or {})
    inputs = [(str(where), str(text)) for where, text in config.get("inputs") or []]
    script_path = Path(script) if script else None
    report = run_before(
        before,
        name=str(config.get("name") or "scriptrun"),
        script=script_path if script_path is not None and script_path.is_file() else None,
        inputs=inputs,
        osv_dir=Path(osv_dir),
        work=Path(work),
    )
    full = json.dumps({"sarif": report.sarif, "sbom": report.sbom}, separators=(",", ":"))
    print(GATE_REPORT_MARK + full, flush=True)
    Path(termination_path).write_text(termination_message(report))
    for result in report.results:
        print(f"gate {result.name}: {result.result}: {result.message or ''}", file=sys.stderr)
    return GATE_EXIT_BLOCKED if report.failure else 0
