"""Operator start-up and shutdown: settings, credentials, the shared API client, the controllers
(built here, wired to each other by typed callbacks, kept in Kopf's memo for the handlers)."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from scriptrun import API_GROUP
from scriptrun.controllers import heartbeat, malloc
from scriptrun.controllers.billing import start_billing
from scriptrun.controllers.config import OperatorConfig, use_watch_streaming, watched_namespaces
from scriptrun.controllers.pods import PodIndex, PodWatch, pod_selector
from scriptrun.controllers.scriptrun import ScriptRunController
from scriptrun.controllers.workflow import WorkflowController
from scriptrun.k8s.api import Kube, load_config
from scriptrun.k8s.credentials import Credentials, CredentialsError
from scriptrun.telemetry.operator_metrics import OperatorMetrics
from scriptrun.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


class NoEssence(kopf.AnnotationsDiffBaseStorage):
    """No change handlers are registered (only indexes and on.event), so Kopf needs no diff base:
    skip building one, which deep-copies every body on every event (kopf-patterns.md, measured)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}


class NoProgress(kopf.AnnotationsProgressStorage):
    """Likewise, nothing to clear of handler progress in an essence that is empty."""

    def clear(self, *, essence: Any) -> Any:
        return essence


def select_watches(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Kopf's server-side label selectors: the heartbeat Leases only, and with a shard selector only
    this shard's ScriptRuns and Workflows (build/shard.py; the pods' own watch selects likewise,
    controllers/pods.py). Keys are (group, plural) pairs: Kopf reads a "group.tld/plural" string as
    something else and matches nothing."""
    selectors = settings.watching.label_selectors
    selectors[heartbeat.RESOURCE] = f"{heartbeat.LABEL}=true"  # only the heartbeats
    if config.shard_selector:
        for plural in ("scriptruns", "workflows"):
            selectors[API_GROUP, plural] = config.shard_selector


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # we post our own Events; log lines stay logs
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]
    settings.watching.inactivity_timeout = 70
    # the initial list (and a re-list after a watch expires) in pages: 10,000 runs in one response
    # were a parse of some 30 MB at once, which the operator's RSS never gave back
    settings.watching.chunk_size = 500
    # a Kopf worker, idle, still holds the last event of its object (the whole body) until it exits:
    # with thousands of objects changing, 5 s (Kopf's default) kept a body per object alive
    settings.queueing.idle_timeout = 0.5
    settings.persistence.diffbase_storage = NoEssence()
    settings.persistence.progress_storage = NoProgress()
    try:
        credentials = await load_config()  # once: our client and Kopf's login (below) share it
    except CredentialsError as err:
        raise kopf.PermanentError(str(err)) from err
    memo.credentials = credentials
    log.info("cluster credentials from the %s", credentials.source)
    try:
        config = OperatorConfig.from_env()
    except ValueError as err:  # a malformed shard selector or peering setting: say which, and stop
        raise kopf.PermanentError(f"operator settings: {err}") from err
    select_watches(settings, config)
    if config.peering is not None:
        settings.peering.lifetime = config.peering.lifetime
        log.info(
            "peering %s as %s (priority %d): active only while no earlier replica is alive",
            config.peering.name,
            config.peering.identity,
            config.peering.priority,
        )
    scopes = watched_namespaces(os.environ)
    credentials.configuration.connection_pool_maxsize = config.connection_pool(len(scopes))
    kube = Kube(credentials.api_client(), qps=config.api_qps, burst=config.api_burst)
    server = await kube.server_version() if config.watch_streaming == "auto" else None
    settings.watching.initial_streaming = use_watch_streaming(config.watch_streaming, server)
    log.info(
        "initial state of each watch: %s",
        "streamed (sendInitialEvents)" if settings.watching.initial_streaming else "listed",
    )
    log.info(
        "API requests: %s, at most %d in flight; reconciles at once: %s ScriptRuns, %s Workflows",
        f"{config.api_qps:g}/s, burst {config.api_burst}" if config.api_qps > 0 else "not limited",
        config.api_connections,
        config.run_workers or "any",
        config.workflow_workers or "any",
    )
    runs: ScriptRunController | None = None

    def child_created(key: tuple[str, str], body: dict[str, Any]) -> None:
        assert runs is not None
        runs.adopt(key, body)

    metrics = OperatorMetrics(task_labels=config.metrics_task_labels)
    tracing = Tracing.from_env()
    if tracing.enabled:
        log.info("tracing on: spans over OTLP (the OTEL_* variables)")
    pods = PodIndex()
    workflows = WorkflowController(kube, config, metrics, child_created=child_created, pods=pods, tracing=tracing)
    runs = ScriptRunController(kube, config, metrics, child_changed=workflows.child_changed, pods=pods, tracing=tracing)
    memo.pod_watch = PodWatch(
        kube,
        pods,
        runs.pod_event,
        namespaces=scopes,
        selector=pod_selector(config.shard_selector),
        initial_events=settings.watching.initial_streaming,
        read_timeout=settings.watching.inactivity_timeout,
    )
    memo.pod_watch.start()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
        log.info("operator metrics on port %d", config.metrics_port)
    memo.runs, memo.workflows, memo.kube, memo.tracing = runs, workflows, kube, tracing
    if config.billing_error:
        log.error("billing reconciliation off: %s", config.billing_error)
    elif config.billing is not None:
        memo.billing = start_billing(config.billing, kube, runs.bodies, metrics.applied)
    memo.trimmer = malloc.Trimmer(config.malloc_trim_seconds)
    memo.trimmer.start()
    if config.heartbeat is not None:
        memo.heartbeat = heartbeat.Heartbeat(kube, config.heartbeat)
        memo.heartbeat.start()
    log.info("scriptrun operator started (default image %s)", config.default_image)


@kopf.on.login()
async def login(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Kopf uses the credentials our client uses (loaded at start-up: exec plugins, tokens, client
    certificates, the service account). Kopf logs in again after a 401 or at the token's expiry: then
    the token is renewed first, for Kopf and our client alike."""
    credentials: Credentials = memo.credentials
    if "kopf_header" in memo:  # a re-login: Kopf's token was refused or has expired
        credentials.refused(memo.kopf_header)  # a no-op if our client has renewed it meanwhile
    header = memo.kopf_header = await credentials.header()
    scheme, token = header.split(" ", 1) if header and " " in header else (None, header)
    c = credentials.configuration
    return kopf.ConnectionInfo(
        server=str(c.host),
        ca_path=c.ssl_ca_cert,
        insecure=not c.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=c.cert_file,
        private_key_path=c.key_file,
        proxy_url=c.proxy,
        default_namespace=credentials.namespace,
        trust_env=settings.networking.trust_env,
        expiration=credentials.expires,
    )


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    for name in ("trimmer", "heartbeat", "billing", "pod_watch", "workflows", "runs"):
        controller = memo.get(name)
        if controller is not None:
            await controller.close()
    if memo.get("kube") is not None:
        await memo.kube.close()
    if memo.get("tracing") is not None:
        memo.tracing.shutdown()  # sends what is queued
