"""A ScriptRun's cost, as its status records it: every attempt's pod (a failed attempt used the node
too), each priced on the node it ran on, the last attempt with the monitor's measured averages.
Pure: the controller gathers the attempts' nodes, times and requests, and the quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from scriptrun.cost.allocation import ContainerUse, Cost, allocate
from scriptrun.cost.nodes import NodeFacts
from scriptrun.cost.prices import Quote

MIB = Decimal(1024 * 1024)
PLACES = Decimal("0.000001")  # a millionth of the currency unit: runs of seconds cost fractions of a cent


@dataclass(frozen=True)
class AttemptRuntime:
    """One attempt's pod: where and how long it ran, and its containers' requests."""

    attempt: int
    node: str | None
    started: datetime | None
    finished: datetime | None
    containers: tuple[ContainerUse, ...]


def measured(containers: tuple[ContainerUse, ...], usage: Mapping[str, Any] | None) -> tuple[ContainerUse, ...]:
    """The containers with the monitor's averages for the script's container (the first): its
    whole process tree's CPU (cpuAvgPercent of one core) and memory (memoryAvgMb)."""
    if not containers or not usage or not usage.get("available", True):
        return containers
    cpu, memory = usage.get("cpuAvgPercent"), usage.get("memoryAvgMb")
    main = replace(
        containers[0],
        cpu_used_cores=Decimal(str(cpu)) / 100 if isinstance(cpu, int | float) else None,
        memory_used_bytes=Decimal(str(memory)) * MIB if isinstance(memory, int | float) else None,
    )
    return (main, *containers[1:])


def _text(value: Decimal) -> str:
    return str(value.quantize(PLACES))


def _sum(values: Any) -> str:
    return _text(sum(values, Decimal(0)))


def run_cost(
    attempts: list[AttemptRuntime],
    quotes: Mapping[str, Quote],
    nodes: Mapping[str, NodeFacts],
    usage: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """`status.cost` of a finished run (None when no attempt ran on a node), from each attempt's
    node `quotes` (by node name) and `nodes` facts; `usage` is the monitor's summary of the last."""
    costs: list[tuple[Cost, Quote]] = []
    last_node: str | None = None
    for i, attempt in enumerate(attempts):
        if attempt.node is None or attempt.node not in quotes or attempt.started is None:
            continue
        end = attempt.finished or attempt.started
        seconds = Decimal(str(max(0.0, (end - attempt.started).total_seconds())))
        containers = measured(attempt.containers, usage) if i == len(attempts) - 1 else attempt.containers
        costs.append((allocate(containers, seconds, quotes[attempt.node].rates), quotes[attempt.node]))
        last_node = attempt.node
    if not costs or last_node is None:
        return None
    currencies = {cost.currency for cost, _ in costs}
    quote = costs[-1][1]
    out: dict[str, Any] = {
        "currency": quote.rates.currency,
        "source": quote.source,
        "priceTime": quote.at.isoformat().replace("+00:00", "Z"),
        "attempts": len(costs),
        "seconds": _sum(c.seconds for c, _ in costs),
        "basis": dict(costs[-1][0].basis),
    }
    if len(currencies) > 1:  # a fallback in another currency: amounts that cannot be added
        out["note"] = f"attempts priced in {', '.join(sorted(currencies))}: no total"
        out["byCurrency"] = {
            cur: _text(sum((c.amount for c, _ in costs if c.currency == cur), Decimal(0))) for cur in currencies
        }
        return out
    # each share rounded to a millionth, and the amount their sum: the figures add up as shown
    shares = {
        "cpu": _sum(c.cpu for c, _ in costs),
        "memory": _sum(c.memory for c, _ in costs),
        "gpu": _sum(c.gpu for c, _ in costs),
    }
    total = sum((Decimal(v) for v in shares.values()), Decimal(0))
    out["amount"] = _text(total)
    out["display"] = f"{total.quantize(Decimal('0.0001'))} {out['currency']}"
    out["breakdown"] = shares
    if quote.detail:
        out["priceDetail"] = quote.detail
    notes = [q.note for _, q in costs if q.note]
    if notes:
        out["note"] = notes[-1]
    facts = nodes.get(last_node)
    if facts is not None:
        out["node"] = {
            k: v
            for k, v in {
                "name": facts.name,
                "provider": facts.provider,
                "region": facts.region,
                "instanceType": facts.instance_type,
                "capacityType": facts.capacity_type,
            }.items()
            if v
        }
    return out
