"""The before-gates' full report -> the run's owned ConfigMap (`<run>-gates`); a regression key's
history ConfigMap. Pure.

The gate container prints it as one marked log line (model.contract.GATE_REPORT_MARK); the operator
reads that line once the run has finished and keeps it here: `results.sarif` (SARIF 2.1.0) and, with a
dependency scan, `sbom.cdx.json` (CycloneDX 1.6). A ConfigMap holds at most 1 MiB: past REPORT_LIMIT
the SARIF keeps each run's first results and says how many it dropped."""

from __future__ import annotations

import json
from typing import Any

from scriptrun.build import names
from scriptrun.build.pod import RunRef, base_labels
from scriptrun.engine.regression import HISTORY_DATA_KEY
from scriptrun.model.contract import GATE_REPORT_MARK

REPORT_LIMIT = 900 * 1024
SARIF_KEY = "results.sarif"
SBOM_KEY = "sbom.cdx.json"


def parse_report(log: str) -> dict[str, Any] | None:
    """The marked line's JSON ({"sarif": ..., "sbom": ...}), or None if the log has none."""
    for line in reversed(log.splitlines()):
        if line.startswith(GATE_REPORT_MARK):
            try:
                report = json.loads(line[len(GATE_REPORT_MARK) :])
            except ValueError:
                return None
            return report if isinstance(report, dict) else None
    return None


def _fitted(sarif: dict[str, Any]) -> str:
    """The SARIF log as JSON of at most REPORT_LIMIT bytes: results dropped from the end of each run."""
    text = json.dumps(sarif, indent=1)
    keep = max((len(run.get("results") or []) for run in sarif.get("runs") or []), default=0)
    while len(text.encode()) > REPORT_LIMIT and keep > 0:
        keep //= 2
        runs = []
        for run in sarif.get("runs") or []:
            results = run.get("results") or []
            dropped = max(0, len(results) - keep)
            props = (
                {**run.get("properties", {}), "scriptrun/droppedResults": dropped} if dropped else run.get("properties")
            )
            runs.append({**run, "results": results[:keep], **({"properties": props} if props else {})})
        text = json.dumps({**sarif, "runs": runs}, separators=(",", ":"))
    return text


def history_configmap(namespace: str, name: str, key: str, history: str) -> dict[str, Any]:
    """A regression key's history (spec.regression): owned by no run, since it outlives them; labelled
    so `kubectl get cm -l scriptrun.dev/history` lists them, and removed by hand."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_HISTORY: names.label_value(key)},
        },
        "data": {HISTORY_DATA_KEY: history},
    }


def gate_report_configmap(run: RunRef, report: dict[str, Any]) -> dict[str, Any]:
    data = {SARIF_KEY: _fitted(report.get("sarif") or {"version": "2.1.0", "runs": []})}
    if report.get("sbom"):
        sbom = json.dumps(report["sbom"], indent=1)
        if len(sbom.encode()) + len(data[SARIF_KEY].encode()) <= REPORT_LIMIT:
            data[SBOM_KEY] = sbom
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.gate_report_name(run.name),
            "namespace": run.namespace,
            "labels": base_labels(run),
            "ownerReferences": [run.owner_reference()],
        },
        "data": data,
    }
