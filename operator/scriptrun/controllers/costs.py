"""The cost of finished runs: node facts (read once per node, kept a while), price quotes from the
configured sources, and the pure allocation (`scriptrun.cost`). Never fails a run: a node that
cannot be read is left out, a price source that fails falls back, and the status says why."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from scriptrun.build.pod import MONITOR_RESOURCES
from scriptrun.cost.allocation import ContainerUse
from scriptrun.cost.nodes import GPU_RESOURCES, NodeFacts, node_facts
from scriptrun.cost.prices import PriceSource, PriceTableError, StaticPrices, Unavailable, quote
from scriptrun.cost.run import AttemptRuntime, run_cost
from scriptrun.engine import clock
from scriptrun.k8s.api import Kube
from scriptrun.model.common import parse_quantity
from scriptrun.model.scriptrun import MonitorSpec, RunCost, RunTemplate, ScriptRunStatus
from scriptrun.pricing.sources import cloud_sources

log = logging.getLogger(__name__)
NODE_TTL_SECONDS = 600.0


def _q(values: dict[str, Any] | None, key: str) -> Decimal:
    try:
        return parse_quantity((values or {}).get(key, 0))
    except ValueError:
        return Decimal(0)


def containers(spec: RunTemplate) -> tuple[ContainerUse, ...]:
    """The run pod's containers as priced: the script's (its requests, or its limits where only
    those are set, as the API server defaults them) and the monitor sidecar's."""
    resources = spec.resources.dump() if spec.resources else {}
    requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    main = ContainerUse(
        cpu_request_cores=_q(requests, "cpu"),
        memory_request_bytes=_q(requests, "memory"),
        gpu_request=sum((_q(requests, g) for g in GPU_RESOURCES), Decimal(0)),
    )
    if not (spec.monitor or MonitorSpec()).enabled:
        return (main,)
    sidecar = MONITOR_RESOURCES["requests"]
    return main, ContainerUse(_q(sidecar, "cpu"), _q(sidecar, "memory"))


def price_sources(prices_file: str | None, providers: tuple[str, ...] = (), currency: str = "USD") -> list[PriceSource]:
    """The configured price sources, asked in this order: the cloud providers' APIs (each for its own
    nodes), then the static table in `prices_file` (YAML, see StaticPrices); OpenCost's defaults last.
    An unreadable or invalid table is logged and every cost says why it fell back."""
    return cloud_sources(list(providers), currency, os.environ) + static_sources(prices_file)


def static_sources(prices_file: str | None) -> list[PriceSource]:
    if not prices_file:
        return []
    try:
        doc = yaml.safe_load(Path(prices_file).read_text()) or {}
        if not isinstance(doc, dict):
            raise PriceTableError("expected a mapping with currency and nodes")
        return [StaticPrices.parse(doc, configured=clock.utcnow())]
    except (OSError, yaml.YAMLError, PriceTableError) as err:
        log.error("price table %s unusable: %s", prices_file, err)
        return [Unavailable("static", f"{prices_file}: {err}")]


class RunCosts:
    def __init__(self, kube: Kube, sources: list[PriceSource]) -> None:
        self.kube = kube
        self.sources = sources
        self._nodes: dict[str, tuple[float, NodeFacts]] = {}

    async def node(self, name: str) -> NodeFacts | None:
        cached = self._nodes.get(name)
        if cached is not None and time.monotonic() - cached[0] < NODE_TTL_SECONDS:
            return cached[1]
        try:
            body = await self.kube.get_node(name)
        except Exception as err:  # e.g. 403 without RBAC on nodes: no cost, the run is unharmed
            log.warning("cannot read node %s for its price: %s", name, err)
            return None
        if body is None:
            return None
        capacity = {k: _q(body.get("status", {}).get("capacity"), k) for k in ("cpu", "memory", *GPU_RESOURCES)}
        meta = body.get("metadata", {})
        facts = node_facts(name, (body.get("spec") or {}).get("providerID"), meta.get("labels") or {}, capacity)
        self._nodes[name] = (time.monotonic(), facts)
        return facts

    async def cost(self, spec: RunTemplate, status: ScriptRunStatus) -> RunCost | None:
        now = clock.utcnow()
        parts = containers(spec)
        attempts = [
            AttemptRuntime(a.attempt, a.node_name, clock.parse(a.start_time), clock.parse(a.finish_time), parts)
            for a in status.attempts
        ]
        quotes, facts = {}, {}
        for name in sorted({a.node for a in attempts if a.node}):
            found = await self.node(name)
            if found is not None:
                facts[name] = found
                # a cloud price API may be asked (in a thread: the event loop never waits on it)
                quotes[name] = await asyncio.to_thread(quote, self.sources, found, now)
        computed = run_cost(attempts, quotes, facts, status.usage)
        return RunCost.model_validate(computed) if computed else None
