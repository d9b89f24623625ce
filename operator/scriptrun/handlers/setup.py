"""Operator start-up and shutdown: settings, credentials, the shared API client."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from scriptrun.build import names
from scriptrun.handlers.loop import KeyedLoop
from scriptrun.handlers.state import STATE, OperatorConfig, RunState, WorkflowState
from scriptrun.k8s.api import Kube, load_config

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


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # we post our own Events; log lines stay logs
    settings.watching.label_selectors["pods"] = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]
    settings.watching.inactivity_timeout = 70
    settings.persistence.diffbase_storage = NoEssence()
    settings.persistence.progress_storage = NoProgress()
    await load_config()
    from scriptrun.handlers import scriptruns, workflows

    config = OperatorConfig.from_env()
    STATE.runs = RunState(
        kube=Kube(), config=config, loop=KeyedLoop(scriptruns.reconcile, resync_seconds=config.resync_seconds)
    )
    STATE.workflows = WorkflowState(
        loop=KeyedLoop(workflows.reconcile, resync_seconds=config.resync_seconds),
        writer=KeyedLoop(workflows.write_status),
    )
    log.info("scriptrun operator started (default image %s)", config.default_image)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a cluster: the pod's service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    if STATE.workflows is not None:
        await STATE.workflows.loop.close()
        await STATE.workflows.writer.close()
    if STATE.runs is not None:
        await STATE.runs.loop.close()
        await STATE.runs.kube.close()
