"""Where a node's rates come from: one small interface for every price provider, and the static
table from configuration (on-prem or unknown nodes, and the fallback when a provider fails).

A quote always says its source and, when it is a fallback, why: never a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from scriptrun.cost.nodes import NodeFacts
from scriptrun.cost.rates import DEFAULT_ON_DEMAND, DEFAULT_SPOT, Rates, split_node_price


@dataclass(frozen=True)
class Quote:
    rates: Rates
    source: str  # "aws", "azure", "gcp", "static", "default"
    at: datetime  # when the price was read (or configured)
    note: str | None = None  # why this source (a fallback's reason)
    detail: str | None = None  # what the price was read from (a SKU, a meter, a table entry)


class PriceSource(Protocol):
    @property
    def name(self) -> str: ...

    def serves(self, node: NodeFacts) -> bool:
        """Whether to ask this source for this node at all (a cloud provider's only its own nodes)."""

    def quote(self, node: NodeFacts, now: datetime) -> Quote | None:
        """This node's rates, or None when this source does not know it; raises when it fails."""


class PriceTableError(ValueError):
    """The static price table in the configuration is invalid (the message names the entry)."""


def _decimal(value: Any, where: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation as err:
        raise PriceTableError(f"{where}: {value!r} is not a number") from err
    if not number.is_finite() or number < 0:
        raise PriceTableError(f"{where}: {value!r} must be a number >= 0")
    return number


@dataclass(frozen=True)
class StaticPrices:
    """Prices from configuration: per instance type a whole-node hourly price (split like OpenCost)
    or per-resource rates; a `default` entry for any other node; spot entries apart.

    ```yaml
    currency: EUR
    nodes:
      m5.large: {hourly: "0.096"}              # split into CPU/RAM rates by the node's capacity
      default: {cpu: "0.03", memory: "0.004", gpu: "0.9"}
    spot:
      default: {cpu: "0.007", memory: "0.001"}
    ```
    """

    currency: str
    nodes: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    spot: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    configured: datetime | None = None
    name: str = "static"

    @classmethod
    def parse(cls, doc: dict[str, Any], configured: datetime | None = None) -> StaticPrices:
        currency = doc.get("currency")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            raise PriceTableError(f"currency: {currency!r} is not an ISO 4217 code such as USD")
        tables: dict[str, dict[str, dict[str, Decimal]]] = {}
        for section in ("nodes", "spot"):
            entries = doc.get(section) or {}
            if not isinstance(entries, dict):
                raise PriceTableError(f"{section}: expected a mapping of instance type to prices")
            table: dict[str, dict[str, Decimal]] = {}
            for kind, prices in entries.items():
                where = f"{section}.{kind}"
                if not isinstance(prices, dict) or not prices:
                    raise PriceTableError(f"{where}: expected hourly, or cpu and memory (and gpu)")
                unknown = set(prices) - {"hourly", "cpu", "memory", "gpu"}
                if unknown:
                    raise PriceTableError(f"{where}: unknown field {sorted(unknown)[0]!r}")
                if "hourly" not in prices and not {"cpu", "memory"} <= set(prices):
                    raise PriceTableError(f"{where}: needs hourly, or both cpu and memory")
                table[str(kind)] = {k: _decimal(v, f"{where}.{k}") for k, v in prices.items()}
            tables[section] = table
        return cls(currency.upper(), tables["nodes"], tables["spot"], configured)

    def serves(self, node: NodeFacts) -> bool:
        return True

    def quote(self, node: NodeFacts, now: datetime) -> Quote | None:
        spot = node.capacity_type == "spot"
        for table, label in ((self.spot, "spot"), (self.nodes, "nodes")) if spot else ((self.nodes, "nodes"),):
            for key in (node.instance_type, "default"):
                entry = table.get(key or "")
                if entry is None:
                    continue
                note = None if key != "default" else f"{label}.default (no entry for {node.instance_type})"
                rates = self._rates(entry, node)
                return Quote(rates, self.name, self.configured or now, note, f"{label}.{key}")
        return None

    def _rates(self, entry: dict[str, Decimal], node: NodeFacts) -> Rates:
        if "hourly" in entry:
            return split_node_price(
                entry["hourly"], self.currency, vcpus=node.vcpus, ram_gib=node.memory_gib, gpus=node.gpus
            )
        return Rates(self.currency, entry["cpu"], entry["memory"], entry.get("gpu", Decimal(0)))


@dataclass(frozen=True)
class Unavailable:
    """A configured source that cannot be used (e.g. an invalid price table): every quote says why."""

    name: str
    reason: str

    def serves(self, node: NodeFacts) -> bool:
        return True

    def quote(self, node: NodeFacts, now: datetime) -> Quote | None:
        raise PriceTableError(self.reason)


def default_quote(node: NodeFacts, now: datetime, why: str) -> Quote:
    """The last resort: OpenCost's default rates (USD), labelled as such with the reason."""
    rates = DEFAULT_SPOT if node.capacity_type == "spot" else DEFAULT_ON_DEMAND
    return Quote(rates, "default", now, why)


def quote(sources: list[PriceSource], node: NodeFacts, now: datetime) -> Quote:
    """The first source that knows the node; a source that fails is skipped, and the quote says
    which failed and why (a provider failure never fails a run)."""
    failures: list[str] = []
    for source in sources:
        if not source.serves(node):
            continue
        try:
            found = source.quote(node, now)
        except Exception as err:  # a provider's API down, throttled or answering nonsense
            failures.append(f"{source.name}: {type(err).__name__}: {err}")
            continue
        if found is not None:
            if failures:
                note = "; ".join(failures + ([found.note] if found.note else []))
                return Quote(found.rates, found.source, found.at, note, found.detail)
            return found
        failures.append(f"{source.name}: no price for {node.instance_type or 'this node'}")
    return default_quote(node, now, "; ".join(failures) or "no price source configured")
