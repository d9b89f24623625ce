"""SARIF 2.1.0 (OASIS) of the before-gates' findings: one run per tool, each rule once in its driver,
each result with its level, location and our severity. GitHub code scanning, VS Code's SARIF viewer
and `sarif` tools read it. A tool that could not run is a run with a failed toolExecutionNotification."""

from __future__ import annotations

from typing import Any

from scriptrun.scan.findings import Finding, ScanOutcome, at_least

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _level(finding: Finding, threshold: str) -> str:
    """error: blocks at the gate's threshold; warning: medium or worse below it; note: the rest."""
    if at_least(finding.severity, threshold):
        return "error"
    return "warning" if at_least(finding.severity, "medium") else "note"


def _location(finding: Finding) -> dict[str, Any]:
    if finding.location.startswith("spec."):  # an input of the run, not a file
        return {"logicalLocations": [{"fullyQualifiedName": finding.location, "kind": "variable"}]}
    physical: dict[str, Any] = {"artifactLocation": {"uri": finding.location}}
    if finding.line:
        physical["region"] = {"startLine": finding.line}
    return {"physicalLocation": physical}


def _run(outcome: ScanOutcome, threshold: str) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for finding in outcome.findings:
        if finding.rule_id not in rules:
            rule: dict[str, Any] = {"id": finding.rule_id, "name": finding.rule_name}
            rule["shortDescription"] = {"text": finding.rule_name}
            if finding.help_uri:
                rule["helpUri"] = finding.help_uri
            rules[finding.rule_id] = rule
        results.append(
            {
                "ruleId": finding.rule_id,
                "ruleIndex": list(rules).index(finding.rule_id),
                "level": _level(finding, threshold),
                "message": {"text": finding.message},
                "locations": [_location(finding)],
                "properties": {"severity": finding.severity, "gate": outcome.gate},
            }
        )
    driver = {
        "name": outcome.tool.name,
        "version": outcome.tool.version,
        "informationUri": outcome.tool.uri,
        "rules": list(rules.values()),
    }
    invocation: dict[str, Any] = {"executionSuccessful": outcome.error is None}
    if outcome.error is not None:
        invocation["toolExecutionNotifications"] = [{"level": "error", "message": {"text": outcome.error}}]
    return {
        "tool": {"driver": driver},
        "invocations": [invocation],
        "results": results,
        "properties": {"gate": outcome.gate, "threshold": threshold},
    }


def sarif(outcomes: list[tuple[ScanOutcome, str]]) -> dict[str, Any]:
    """The log of every (outcome, its gate's severity threshold)."""
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [_run(o, threshold) for o, threshold in outcomes]}
