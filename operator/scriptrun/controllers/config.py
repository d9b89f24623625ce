"""The operator's settings (from its environment, i.e. the Helm values)."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from scriptrun import DEFAULT_IMAGE, DEFAULT_MONITOR_IMAGE
from scriptrun.build.shard import selector_keys
from scriptrun.controllers.alerting import load_webhooks
from scriptrun.controllers.heartbeat import HeartbeatConfig
from scriptrun.controllers.peering import PeeringConfig

BILLING_PROVIDERS = ("aws", "azure")


class BillingConfigError(ValueError):
    """The billing reconciliation settings are unusable (the message names the variable)."""


def _number(env: Mapping[str, str], name: str, default: float, *, least: float, integer: bool = False) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise BillingConfigError(f"{name}={raw!r} is not {'an integer' if integer else 'a number'}") from None
    if not math.isfinite(value) or value < least:
        raise BillingConfigError(f"{name}={raw!r}: must be at least {least:g}")
    return value


@dataclass(frozen=True)
class BillingConfig:
    """Billing reconciliation (opt-in, docs/cost.md): SCRIPTRUN_BILLING=aws|azure and the tag key
    of the runs' dedicated capacity turn it on."""

    provider: str  # aws | azure
    tag_key: str  # the cloud resource tag (a cost allocation tag) whose value runs name in their annotation
    lag_seconds: float = 48 * 3600.0  # ask this long after a run finished (the providers' billing lag)
    interval_seconds: float = 21600.0  # one pass this often
    max_requests: int = 10  # billing API requests per pass (Cost Explorer: $0.01 each)
    azure_scope: str | None = None  # Cost Management scope, e.g. subscriptions/<id>

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BillingConfig | None:
        """None when off (SCRIPTRUN_BILLING unset); BillingConfigError when a setting is unusable."""
        provider = (env.get("SCRIPTRUN_BILLING") or "").strip().lower()
        if not provider:
            return None
        if provider not in BILLING_PROVIDERS:
            raise BillingConfigError(
                f"SCRIPTRUN_BILLING={provider!r}: expected aws or azure "
                "(GCP's billing export to BigQuery is not supported)"
            )
        tag_key = (env.get("SCRIPTRUN_BILLING_TAG_KEY") or "").strip()
        if not tag_key:
            raise BillingConfigError("SCRIPTRUN_BILLING_TAG_KEY is required: the cloud tag key of the runs' capacity")
        scope = (env.get("SCRIPTRUN_AZURE_BILLING_SCOPE") or "").strip().strip("/") or None
        if provider == "azure" and scope is None:
            raise BillingConfigError(
                "SCRIPTRUN_AZURE_BILLING_SCOPE is required with SCRIPTRUN_BILLING=azure, e.g. subscriptions/<id>"
            )
        lag = _number(env, "SCRIPTRUN_BILLING_LAG_HOURS", 48, least=0) * 3600
        if (env.get("SCRIPTRUN_BILLING_LAG_SECONDS") or "").strip():  # finer, for tests: wins over the hours
            lag = _number(env, "SCRIPTRUN_BILLING_LAG_SECONDS", lag, least=0)
        return cls(
            provider=provider,
            tag_key=tag_key,
            lag_seconds=lag,
            interval_seconds=_number(env, "SCRIPTRUN_BILLING_INTERVAL_SECONDS", 21600, least=1),
            max_requests=int(_number(env, "SCRIPTRUN_BILLING_MAX_REQUESTS", 10, least=1, integer=True)),
            azure_scope=scope,
        )


def _billing(env: Mapping[str, str]) -> tuple[BillingConfig | None, str | None]:
    try:
        return BillingConfig.from_env(env), None
    except BillingConfigError as err:
        return None, str(err)


@dataclass(frozen=True)
class OperatorConfig:
    default_image: str = DEFAULT_IMAGE
    monitor_image: str = DEFAULT_MONITOR_IMAGE
    gate_image: str = DEFAULT_IMAGE  # spec.gates.before: scriptrun's runner image, whatever the default run image
    monitor_pull_policy: str | None = None
    deadline_grace_seconds: float = 5.0
    resync_seconds: float = 60.0
    workflow_status_interval_seconds: float = 1.0  # a running Workflow's status: at most one write this often
    metrics_port: int = 0  # where the operator serves Prometheus metrics (0: not served)
    metrics_task_labels: int = 0  # (workflow, task) pairs with their own metric labels (0: none)
    prices_file: str | None = None  # the static price table (YAML); none: OpenCost's default rates
    price_providers: tuple[str, ...] = ()  # cloud price APIs asked first for their own nodes: aws, azure, gcp
    price_currency: str = "USD"  # the currency asked of Azure and GCP (AWS prices are in USD)
    billing: BillingConfig | None = None  # billing reconciliation; None: off
    billing_error: str | None = None  # why it is off although asked for (invalid settings)
    heartbeat: HeartbeatConfig | None = None  # hung-watch detection; None: off (no namespace for its Lease)
    shard_selector: str = ""  # label selector of the ScriptRuns and Workflows this operator serves ("": all)
    shard_keys: tuple[str, ...] = ()  # its keys: children inherit these labels (build/shard.py)
    peering: PeeringConfig | None = None  # several replicas, one active (controllers/peering.py)
    api_qps: float = 50.0  # our API requests a second on average (0: no limit), like client-go's QPS
    api_burst: int = 100  # ... and at once
    # requests in flight at once (the client's connection pool; the pods' watches have their own on top):
    # each open TLS connection holds a 128 KB buffer plus OpenSSL's state; under load the client's default
    # pool of 100 was full (a tracemalloc profile of 30 Workflows x 100 tasks)
    api_connections: int = 32
    run_workers: int = 64  # ScriptRun reconciles at once (0: no limit)
    workflow_workers: int = 16  # Workflow reconciles at once (0: no limit)
    watch_streaming: str = "auto"  # the initial state streamed over the watch: auto (API server >= 1.34), true, false
    malloc_trim_seconds: float = 5.0  # give freed memory back to the system this often (0: never; malloc.py)
    alert_webhooks: tuple[tuple[str, str], ...] = ()  # spec.alerts' channels: (name, url), from a Secret's file

    def connection_pool(self, watches: int) -> int:
        """The API client's connection pool: `api_connections` for requests, and one for each of
        the pods' long-lived `watches` (so a watch never waits for a request, nor a request for it)."""
        return self.api_connections + max(watches, 1)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        billing, billing_error = _billing(os.environ)
        shard = (os.environ.get("SCRIPTRUN_SHARD_SELECTOR") or "").strip()
        peers = PeeringConfig.from_env(os.environ, watched_namespaces(os.environ))
        return cls(
            default_image=os.environ.get("SCRIPTRUN_DEFAULT_IMAGE") or DEFAULT_IMAGE,
            monitor_image=os.environ.get("SCRIPTRUN_MONITOR_IMAGE") or DEFAULT_MONITOR_IMAGE,
            gate_image=os.environ.get("SCRIPTRUN_GATE_IMAGE") or DEFAULT_IMAGE,
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
            billing=billing,
            billing_error=billing_error,
            heartbeat=_heartbeat(os.environ, peers),
            shard_selector=shard,
            shard_keys=selector_keys(shard),  # SelectorError (a ValueError) names a malformed requirement
            peering=peers,
            api_qps=float(os.environ.get("SCRIPTRUN_API_QPS") or 50),
            api_burst=int(os.environ.get("SCRIPTRUN_API_BURST") or 100),
            api_connections=_at_least_one("SCRIPTRUN_API_CONNECTIONS", 32),
            run_workers=int(os.environ.get("SCRIPTRUN_RUN_WORKERS") or 64),
            workflow_workers=int(os.environ.get("SCRIPTRUN_WORKFLOW_WORKERS") or 16),
            watch_streaming=_choice("SCRIPTRUN_WATCH_STREAMING", ("auto", "true", "false")),
            malloc_trim_seconds=float(os.environ.get("SCRIPTRUN_MALLOC_TRIM_SECONDS") or 5),
            alert_webhooks=tuple(load_webhooks(os.environ.get("SCRIPTRUN_ALERT_WEBHOOKS_FILE")).items()),
        )


def _at_least_one(name: str, default: int) -> int:
    raw = (os.environ.get(name) or "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number of at least 1") from None
    if value < 1:
        raise ValueError(f"{name}={value}: expected a whole number of at least 1")
    return value


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or allowed[0]).strip().lower()
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def use_watch_streaming(setting: str, server: tuple[int, int] | None) -> bool:
    """Whether Kopf gets each resource's initial state streamed over its watch (sendInitialEvents,
    on by default from Kubernetes 1.34) rather than listed first. Measured at 10,000 ScriptRuns: a
    list in pages took minutes while the operator was busy, the watch that followed started from a
    version the API server no longer had (410 Gone), and Kopf listed everything again, four times."""
    if setting in ("true", "false"):
        return setting == "true"
    return server is not None and server >= (1, 34)


def watched_namespaces(env: Mapping[str, str]) -> list[str]:
    """The namespaces `scriptrun operator -n` watches (it exports them); none: the whole cluster."""
    return [n for n in (env.get("SCRIPTRUN_WATCH_NAMESPACES") or "").split(",") if n]


def _heartbeat(env: Mapping[str, str], peers: PeeringConfig | None) -> HeartbeatConfig | None:
    """The heartbeat Lease lives in SCRIPTRUN_HEARTBEAT_NAMESPACE (or the pod's namespace, POD_NAMESPACE,
    from the downward API): without either the operator is not in a pod and nothing probes it."""
    namespace = env.get("SCRIPTRUN_HEARTBEAT_NAMESPACE") or env.get("POD_NAMESPACE")
    if not namespace:
        return None
    holder = env.get("POD_NAME") or socket.gethostname()
    return HeartbeatConfig(
        namespace=namespace,
        name=f"scriptrun-heartbeat-{holder}"[:253].lower(),
        holder=holder,
        interval=max(float(env.get("SCRIPTRUN_HEARTBEAT_SECONDS") or 10), 0.5),
        window=max(float(env.get("SCRIPTRUN_WATCH_TIMEOUT_SECONDS") or 120), 0.0),
        peering=peers,
    )
