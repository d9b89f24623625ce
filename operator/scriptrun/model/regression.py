"""Regression checks (`spec.regression`): a finished run's duration and peak memory against the
history of the same job (its last N successful runs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scriptrun.model.common import ApiModel

HISTORY_KEY_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
RegressionField = Literal["executionTimeSeconds", "memoryMaxMb", "cpuAvgPercent", "userTimeSeconds"]


def _default_fields() -> list[RegressionField]:
    return ["executionTimeSeconds", "memoryMaxMb"]


class RegressionCheck(ApiModel):
    """Compare each successful run with the median of the last `history` successful runs of the same
    key: it regressed on a field when the value is above median + tolerance x MAD (scaled to a
    standard deviation) and at least minIncreasePercent above the median."""

    key: str | None = Field(
        default=None,
        max_length=200,
        pattern=HISTORY_KEY_PATTERN,
        description="Whose history: runs with the same key in the namespace. Default: the ScriptRun's generateName "
        "(or name); a Workflow task's: <workflow generateName or name>.<task>.",
    )
    fields: list[RegressionField] = Field(
        default_factory=_default_fields,
        min_length=1,
        max_length=4,
        description="What is compared (status.usage fields).",
    )
    history: int = Field(default=20, ge=3, le=100, description="Runs kept in the history.")
    min_runs: int = Field(default=5, ge=3, le=100, description="No verdict with fewer runs in the history.")
    tolerance: float = Field(default=3.0, ge=0.5, le=100, description="How many MADs above the median regress.")
    min_increase_percent: float = Field(
        default=20, ge=0, le=10000, description="And at least this much above the median (noise on stable jobs)."
    )


class Regression(ApiModel):
    """One field of the run compared with its history."""

    field: str
    value: float
    median: float
    mad: float = Field(description="Median absolute deviation of the history.")
    runs: int = Field(description="Runs in the history it was compared with.")
    regressed: bool
