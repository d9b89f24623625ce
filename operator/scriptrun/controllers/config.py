"""The operator's settings (from its environment, i.e. the Helm values)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from scriptrun import DEFAULT_IMAGE, DEFAULT_MONITOR_IMAGE


@dataclass(frozen=True)
class OperatorConfig:
    default_image: str = DEFAULT_IMAGE
    monitor_image: str = DEFAULT_MONITOR_IMAGE
    monitor_pull_policy: str | None = None
    deadline_grace_seconds: float = 5.0
    resync_seconds: float = 60.0
    workflow_status_interval_seconds: float = 1.0  # a running Workflow's status: at most one write this often
    metrics_port: int = 0  # where the operator serves Prometheus metrics (0: not served)
    metrics_task_labels: int = 0  # (workflow, task) pairs with their own metric labels (0: none)
    prices_file: str | None = None  # the static price table (YAML); none: OpenCost's default rates
    price_providers: tuple[str, ...] = ()  # cloud price APIs asked first for their own nodes: aws, azure, gcp
    price_currency: str = "USD"  # the currency asked of Azure and GCP (AWS prices are in USD)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            default_image=os.environ.get("SCRIPTRUN_DEFAULT_IMAGE") or DEFAULT_IMAGE,
            monitor_image=os.environ.get("SCRIPTRUN_MONITOR_IMAGE") or DEFAULT_MONITOR_IMAGE,
            monitor_pull_policy=os.environ.get("SCRIPTRUN_MONITOR_IMAGE_PULL_POLICY") or None,
            deadline_grace_seconds=float(os.environ.get("SCRIPTRUN_DEADLINE_GRACE_SECONDS", "5")),
            resync_seconds=float(os.environ.get("SCRIPTRUN_RESYNC_SECONDS", "60")),
            workflow_status_interval_seconds=float(os.environ.get("SCRIPTRUN_WORKFLOW_STATUS_INTERVAL_SECONDS", "1")),
            metrics_port=int(os.environ.get("SCRIPTRUN_METRICS_PORT", "0") or 0),
            metrics_task_labels=int(os.environ.get("SCRIPTRUN_METRICS_TASK_LABELS", "0") or 0),
            prices_file=os.environ.get("SCRIPTRUN_PRICES") or None,
            price_providers=tuple(
                p.strip().lower() for p in os.environ.get("SCRIPTRUN_PRICE_PROVIDERS", "").split(",") if p.strip()
            ),
            price_currency=(os.environ.get("SCRIPTRUN_PRICE_CURRENCY") or "USD").upper(),
        )
