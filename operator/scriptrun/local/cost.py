"""What a local run cost on this machine: an estimate, priced like a run on a node.

This machine is a node (provider unknown, instance type `local`, on-demand, capacity from psutil);
its rates come from `--price` (a price table file in the operator's SCRIPTRUN_PRICES format, or
per-resource rates `cpu=..,memory=..`), else the table SCRIPTRUN_PRICES points to, else OpenCost's
default rates, and the cost says which. Each attempt is allocated as on a cluster (`scriptrun.cost`):
max(request, the monitor's measured average) x its runtime x the rates. Locally there is no monitor
sidecar: the sampler runs inside `scriptrun run` itself, so only the script's container is priced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import psutil
import yaml

from scriptrun.cost.allocation import GIB, ContainerUse
from scriptrun.cost.nodes import GPU_RESOURCES, NodeFacts
from scriptrun.cost.prices import PriceTableError, Quote, StaticPrices, default_quote, quote
from scriptrun.cost.rates import ZERO, Rates
from scriptrun.cost.run import PLACES, AttemptRuntime, run_cost
from scriptrun.engine import clock
from scriptrun.model.common import parse_quantity
from scriptrun.model.scriptrun import RunCost, RunTemplate, ScriptRunStatus

NODE = "local"  # the node name (and instance type) this machine is priced as
ENV = "SCRIPTRUN_PRICES"
RATE_KEYS = ("cpu", "memory", "gpu")
NO_TABLE = "no price table given (--price FILE or cpu=RATE,memory=RATE, or SCRIPTRUN_PRICES)"


class PriceError(ValueError):
    """A `--price` option or price table that cannot be used: the message names the problem."""


@dataclass(frozen=True)
class LocalPricing:
    """This machine as a node, its price quote, and a short label for the text output."""

    node: NodeFacts
    quote: Quote
    label: str  # e.g. "default rates: no price table", "price table prices.yaml nodes.default"


def machine() -> NodeFacts:
    """This machine as a node: its logical CPUs and total memory, no GPUs counted."""
    return NodeFacts(
        name=NODE,
        provider="unknown",
        region=None,
        zone=None,
        instance_type=NODE,
        capacity_type="on-demand",
        vcpus=Decimal(psutil.cpu_count(logical=True) or 1),
        memory_gib=Decimal(psutil.virtual_memory().total) / GIB,
        gpus=ZERO,
    )


def _rate(key: str, text: str) -> Decimal:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise PriceError(f"--price: {key}={text!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise PriceError(f"--price: {key}={text!r} must be a number >= 0")
    return number


def parse_rates(text: str) -> Rates:
    """`cpu=0.031611,memory=0.004237[,gpu=0.95][,currency=EUR]`: per core, GiB and GPU an hour."""
    values: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PriceError(f"--price: expected NAME=VALUE, got {item.strip()!r}")
        if key not in (*RATE_KEYS, "currency"):
            raise PriceError(f"--price: unknown rate {key!r} (cpu, memory, gpu and currency are)")
        if key in values:
            raise PriceError(f"--price: {key} given twice")
        values[key] = value
    missing = [k for k in ("cpu", "memory") if k not in values]
    if missing:
        raise PriceError(f"--price: {' and '.join(missing)} missing (cpu=RATE,memory=RATE per core/GiB an hour)")
    currency = values.get("currency", "USD").strip()
    if len(currency) != 3 or not currency.isalpha():
        raise PriceError(f"--price: currency={currency!r} is not an ISO 4217 code such as USD")
    gpu = _rate("gpu", values["gpu"]) if "gpu" in values else ZERO
    return Rates(currency.upper(), _rate("cpu", values["cpu"]), _rate("memory", values["memory"]), gpu)


def load_table(path: str, where: str, now: datetime) -> StaticPrices:
    """A price table file (StaticPrices' YAML format); `where` names it in the errors."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise PriceError(f"{where}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise PriceError(f"{where}: not YAML: {err}") from None
    if not isinstance(doc, dict):
        raise PriceError(f"{where}: expected a mapping with currency and nodes")
    try:
        return StaticPrices.parse(doc, configured=now)
    except PriceTableError as err:
        raise PriceError(f"{where}: {err}") from None


def _from_table(table: StaticPrices, path: str, node: NodeFacts, now: datetime) -> LocalPricing:
    found = quote([table], node, now)
    if found.source == "default":  # neither a `local` nor a `default` entry
        why = f"{path} has no entry for {NODE} (nor a default)"
        note = f"local estimate at the default rates: {why}"
        return LocalPricing(node, Quote(found.rates, "default", now, note), f"default rates: {why}")
    detail = f"{path}: {found.detail}" if found.detail else path
    note = f"local estimate from the price table {path}" + (f" ({found.note})" if found.note else "")
    label = f"price table {path} {found.detail or ''}".rstrip()
    return LocalPricing(node, Quote(found.rates, found.source, found.at, note, detail), label)


def pricing(option: str | None, env: Mapping[str, str] | None = None, node: NodeFacts | None = None) -> LocalPricing:
    """The price of this machine: `--price` (a file, or rates), else the table $SCRIPTRUN_PRICES
    names, else the default rates. Raises PriceError naming the problem."""
    env = os.environ if env is None else env
    node = node or machine()
    now = clock.utcnow()
    if option is not None:
        if not option.strip():
            raise PriceError("--price: empty (a price table file, or cpu=RATE,memory=RATE)")
        if "=" in option and not Path(option).is_file():
            rates = parse_rates(option)
            return LocalPricing(
                node, Quote(rates, "static", now, "local estimate from --price", f"--price {option}"), "--price rates"
            )
        return _from_table(load_table(option, f"--price {option}", now), option, node, now)
    path = env.get(ENV)
    if path:
        return _from_table(load_table(path, f"{ENV}={path}", now), path, node, now)
    note = f"local estimate at the default rates (OpenCost's, USD): {NO_TABLE}"
    default = default_quote(node, now, note)
    return LocalPricing(node, default, "default rates: no price table")


def _q(values: Mapping[str, Any], key: str) -> Decimal:
    try:
        return parse_quantity(values.get(key, 0))
    except ValueError:
        return ZERO


def containers(spec: RunTemplate) -> tuple[ContainerUse, ...]:
    """The script's container as priced: its requests (or its limits where only those are set, as
    the API server defaults them). No monitor sidecar: locally the sampler is part of the CLI."""
    resources = spec.resources.dump() if spec.resources else {}
    requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return (
        ContainerUse(
            cpu_request_cores=_q(requests, "cpu"),
            memory_request_bytes=_q(requests, "memory"),
            gpu_request=sum((_q(requests, g) for g in GPU_RESOURCES), ZERO),
        ),
    )


def estimate(spec: RunTemplate, status: ScriptRunStatus, prices: LocalPricing) -> RunCost | None:
    """A finished local run's `status.cost`: each attempt that started, on this machine (None when
    none did); the last one with the monitor's averages."""
    parts = containers(spec)
    attempts = [
        AttemptRuntime(a.attempt, NODE, clock.parse(a.start_time), clock.parse(a.finish_time), parts)
        for a in status.attempts
    ]
    computed = run_cost(attempts, {NODE: prices.quote}, {NODE: prices.node}, status.usage)
    return RunCost.model_validate(computed) if computed else None


def amounts(cost: RunCost) -> dict[str, Decimal]:
    """A cost's amount per currency (one, unless its attempts were priced in more than one)."""
    if cost.amount is not None:
        return {cost.currency: Decimal(cost.amount)}
    return {c: Decimal(a) for c, a in (cost.by_currency or {}).items()}


def add_up(costs: Iterable[RunCost]) -> dict[str, Decimal]:
    """The costs' amounts summed per currency (exact: Decimal)."""
    totals: dict[str, Decimal] = {}
    for cost in costs:
        for currency, amount in amounts(cost).items():
            totals[currency] = totals.get(currency, ZERO) + amount
    return dict(sorted(totals.items()))


def money(totals: Mapping[str, Decimal]) -> str:
    """e.g. "0.000123 USD" (several currencies joined with " + ": never converted)."""
    return " + ".join(f"{a.quantize(PLACES)} {c}" for c, a in totals.items())


def cost_line(cost: RunCost, label: str) -> str:
    """One line for the text output, e.g. `estimated cost: 0.000123 USD (local machine, default
    rates: no price table; cpu 0.000100 + memory 0.000023)`."""
    shares = cost.breakdown or {}
    parts = [f"{k} {shares[k]}" for k in RATE_KEYS if k in shares and (k != "gpu" or Decimal(shares[k]))]
    detail = f"; {' + '.join(parts)}" if parts else ""
    return f"estimated cost: {money(amounts(cost))} (local machine, {label}{detail})"


def total_line(costs: Mapping[str, RunCost], label: str) -> str:
    """A workflow's line: the sum of its tasks' estimates."""
    n = len(costs)
    if not n:
        return f"estimated cost: none (local machine, {label}; no task ran)"
    return f"estimated cost: {money(add_up(costs.values()))} (local machine, {label}; {n} task{'s' * (n != 1)})"
