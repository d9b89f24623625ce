"""What a scan found, in one shape for every scanner; and a gate's verdict over its findings.

A Finding never carries a secret's value: scanners report where (file and line, or the input's
name) and what kind; a scanner whose messages may quote the code (Bandit) passes them through
`redact`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scriptrun.model.gates import SEVERITIES, GateResult, ScanGate, Severity

MESSAGE_LIMIT = 300
# a quoted literal inside a scanner's message (Bandit's B105 quotes the password it found)
_QUOTED = re.compile(r"""(['"])(?:(?!\1).){1,}\1""")


def redact(text: str) -> str:
    """Scanner text with every quoted literal replaced: a message may name a finding, never show it."""
    return _QUOTED.sub(r"\1***\1", text)


def at_least(severity: str, threshold: str) -> bool:
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


@dataclass(frozen=True)
class Finding:
    tool: str  # bandit, detect-secrets, osv
    rule_id: str  # B602, AWSKeyDetector, GHSA-...
    rule_name: str
    severity: Severity
    message: str
    location: str  # a file the scan read (main.py, requirements.txt) or an input (spec.env[TOKEN])
    line: int | None = None
    help_uri: str | None = None

    @property
    def where(self) -> str:
        return f"{self.location}:{self.line}" if self.line else self.location


@dataclass
class Tool:
    name: str
    version: str
    uri: str


@dataclass
class ScanOutcome:
    """One before-gate: the tool it ran, what it found, or why it could not run."""

    gate: str  # staticAnalysis, secretScan, dependencyScan
    tool: Tool
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None

    def judge(self, config: ScanGate) -> tuple[GateResult, str | None]:
        """(the verdict, why the run is blocked or None)."""
        blocking = [f for f in self.findings if at_least(f.severity, config.severity)]
        if self.error is not None:
            result, message = "Error", f"{self.tool.name} could not run: {self.error}"
        elif blocking:
            first = blocking[0]
            more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
            result = "Failed"
            message = (
                f"{len(blocking)} finding(s) at {config.severity} or above; first: {first.rule_id} "
                f"{first.message} ({first.where}){more}"
            )
        else:
            below = f"; {len(self.findings)} below {config.severity}" if self.findings else ""
            return GateResult(name=self.gate, stage="before", result="Passed", message=f"no findings{below}"), None
        message = message[:MESSAGE_LIMIT]
        if config.action == "Warn":
            return GateResult(name=self.gate, stage="before", result="Warned", message=message), None
        verdict = GateResult(name=self.gate, stage="before", result=result, message=message)
        return verdict, f"gate {self.gate}: {message}"[:MESSAGE_LIMIT]
