"""Policy gates on a run (`spec.gates`): checks after the script, over what it really used."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scriptrun.model.common import ApiModel

GATE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_GATES = 16
MAX_EXPRESSION = 4096
GateResultValue = Literal["Passed", "Failed", "Warned", "Error"]


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
