"""What a run cost: per container, max(request, measured average) of CPU and memory (GPUs by
request), times the pod's runtime (from its start and termination timestamps, not from scrapes, so
a run of seconds is costed right), times the node's per-resource rates. Pure and exact (Decimal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from scriptrun.cost.rates import ZERO, Rates

GIB = Decimal(1024**3)
HOUR = Decimal(3600)
Basis = Literal["usage", "request"]


@dataclass(frozen=True)
class ContainerUse:
    """One container's requests and what it used on average over its runtime (None: not measured)."""

    cpu_request_cores: Decimal = ZERO
    memory_request_bytes: Decimal = ZERO
    gpu_request: Decimal = ZERO
    cpu_used_cores: Decimal | None = None
    memory_used_bytes: Decimal | None = None


@dataclass(frozen=True)
class Cost:
    amount: Decimal
    currency: str
    cpu: Decimal
    memory: Decimal
    gpu: Decimal
    basis: dict[str, Basis]  # per resource: what the larger side was, over all containers
    seconds: Decimal


def _billed(request: Decimal, used: Decimal | None) -> tuple[Decimal, Basis]:
    if used is not None and used > request:
        return used, "usage"
    return request, "request"


def allocate(containers: Iterable[ContainerUse], seconds: Decimal, rates: Rates) -> Cost:
    """The cost of containers that ran `seconds` on a node priced at `rates`."""
    if seconds < 0:
        raise ValueError("a runtime cannot be negative")
    hours = seconds / HOUR
    cores = gib = gpus = ZERO
    basis: dict[str, Basis] = {"cpu": "request", "memory": "request", "gpu": "request"}
    for c in containers:
        cpu, cpu_basis = _billed(c.cpu_request_cores, c.cpu_used_cores)
        mem, mem_basis = _billed(c.memory_request_bytes, c.memory_used_bytes)
        cores, gib, gpus = cores + cpu, gib + mem / GIB, gpus + c.gpu_request
        if cpu_basis == "usage":
            basis["cpu"] = "usage"
        if mem_basis == "usage":
            basis["memory"] = "usage"
    cpu_cost = cores * hours * rates.cpu_core_hour
    memory_cost = gib * hours * rates.ram_gib_hour
    gpu_cost = gpus * hours * rates.gpu_hour
    return Cost(
        amount=cpu_cost + memory_cost + gpu_cost,
        currency=rates.currency,
        cpu=cpu_cost,
        memory=memory_cost,
        gpu=gpu_cost,
        basis=basis,
        seconds=seconds,
    )
