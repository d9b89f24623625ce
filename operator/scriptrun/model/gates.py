"""Policy gates on a run (`spec.gates`): security scans before the script, checks after it over
what it really used."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from scriptrun.model.common import ApiModel, ProcessString

GATE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_GATES = 16
MAX_EXPRESSION = 4096
GateResultValue = Literal["Passed", "Failed", "Warned", "Error"]
Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
BEFORE_GATES = ("staticAnalysis", "secretScan", "dependencyScan")  # their names in status.gates


class ScanGate(ApiModel):
    """What every scan shares: the severity that blocks, and what blocking means."""

    severity: Severity = Field(
        default="high", description="Findings at this severity or above block the run; lower ones are reported."
    )
    action: Literal["Fail", "Warn"] = Field(
        default="Fail", description="Fail: a blocking finding fails the run (reason GateFailed). Warn: it warns."
    )


class StaticAnalysis(ScanGate):
    """Bandit over the script (its severities: low, medium, high)."""

    severity: Severity = Field(
        default="medium", description="Findings at this severity or above block the run (Bandit's -ll)."
    )
    skip: list[Annotated[str, Field(pattern=r"^B[0-9]{3}$")]] | None = Field(
        default=None, max_length=64, description="Bandit test IDs not to run, e.g. B101."
    )


class SecretScan(ScanGate):
    """detect-secrets' plugins (AWS keys, private keys, tokens, high-entropy strings...) over the
    script, its args and its env values. A finding is high severity; values are never reported."""


class OsvDatabase(ApiModel):
    """An OSV export the cluster provides: a ConfigMap whose keys are OSV JSON records (or lists of them)."""

    config_map_name: str = Field(min_length=1, max_length=253, description="ConfigMap in the run's namespace.")


class DependencyScan(ScanGate):
    """The script's declared requirements against an OSV vulnerability database; a CycloneDX SBOM of
    them is kept with the findings. A requirement that is not pinned (`==`) cannot be checked and is
    reported as such (low)."""

    requirements: list[Annotated[ProcessString, Field(max_length=256)]] = Field(
        min_length=1, max_length=256, description='Requirement lines, e.g. "requests==2.19.1".'
    )
    database: OsvDatabase


class BeforeGates(ApiModel):
    """Scans before the script starts, in the runner image (an init container in the cluster)."""

    static_analysis: StaticAnalysis | None = None
    secret_scan: SecretScan | None = None
    dependency_scan: DependencyScan | None = None


class AfterGate(ApiModel):
    """A performance gate: a CEL expression over the measured usage, judged once the script has
    succeeded. False fails the run with reason GateFailed (or, with action Warn, only warns)."""

    name: str = Field(min_length=1, max_length=63, pattern=GATE_NAME_PATTERN, description="DNS label.")
    expression: str = Field(
        min_length=1,
        max_length=MAX_EXPRESSION,
        description="CEL, true to pass, e.g. `usage.memoryMaxMb < 512 && usage.executionTimeSeconds < 60`. "
        "Variables: usage (status.usage: memoryMaxMb, cpuMaxPercent, executionTimeSeconds...), exitCode, attempt.",
    )
    message: str | None = Field(default=None, max_length=1024, description="Said when the gate does not pass.")
    action: Literal["Fail", "Warn"] = Field(
        default="Fail", description="Fail: the run fails with reason GateFailed. Warn: a Warning Event only."
    )


class Gates(ApiModel):
    """Checks around the script (a CI pipeline's quality gates, judged on the real run)."""

    before: BeforeGates | None = Field(default=None, description="Security scans before the script runs.")
    after: list[AfterGate] | None = Field(
        default=None,
        max_length=MAX_GATES,
        description="Performance gates over the measured usage, judged after the script succeeded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class GateResult(ApiModel):
    """One gate's verdict."""

    name: str
    stage: Literal["before", "after"]
    result: GateResultValue = Field(
        description="Passed; Failed (the run failed for it); Error (it could not be judged, e.g. no usage was "
        "measured: the run failed for it); Warned (action Warn: it failed or could not be judged, the run goes on)."
    )
    message: str | None = None
