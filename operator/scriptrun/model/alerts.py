"""Alert rules on a run (`spec.alerts`): CEL over the measured usage, with a severity, channels and
a de-duplication window (the seed product's `cpu_max > 85 AND memory_max_mb > 1024`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from scriptrun.model.common import ApiModel
from scriptrun.model.gates import GATE_NAME_PATTERN, MAX_EXPRESSION

MAX_ALERTS = 16
CHANNEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
AlertSeverity = Literal["info", "warning", "critical"]


class AlertRule(ApiModel):
    """Fires when its expression is true over the finished run's usage."""

    name: str = Field(min_length=1, max_length=63, pattern=GATE_NAME_PATTERN, description="DNS label.")
    expression: str = Field(
        min_length=1,
        max_length=MAX_EXPRESSION,
        description="CEL, true to fire, e.g. `usage.cpuMaxPercent > 85 && usage.memoryMaxMb > 1024`. Variables as "
        "in gates.after: usage, exitCode, attempt (and phase: Succeeded or Failed).",
    )
    severity: AlertSeverity = "warning"
    message: str | None = Field(default=None, max_length=1024, description="Said when it fires.")
    channels: list[Annotated[str, Field(pattern=CHANNEL_PATTERN, max_length=63)]] | None = Field(
        default=None,
        max_length=8,
        description="Webhook receivers by name, as the operator is configured (Helm alerts.webhooks). Every alert "
        "is also a Warning Event on the run.",
    )
    dedup_seconds: int = Field(
        default=3600,
        ge=0,
        le=7 * 24 * 3600,
        description="One webhook message per channel for this alert in the namespace within this many seconds; the "
        "Event and status record every firing.",
    )


class FiredAlert(ApiModel):
    """An alert that fired on this run."""

    name: str
    severity: AlertSeverity
    message: str
    fired_at: str
