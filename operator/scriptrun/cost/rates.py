"""Per-resource prices of a node, and the split of a whole-node price into them (OpenCost's way).

All money is `Decimal` with an explicit currency: a float sum of small hourly rates drifts (GCP's
own catalogue gives 2.9339079999999997 as a float). Rates are per hour: CPU per core, memory per
GiB, GPU per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class Rates:
    currency: str  # ISO 4217, e.g. USD
    cpu_core_hour: Decimal
    ram_gib_hour: Decimal
    gpu_hour: Decimal = ZERO

    def __post_init__(self) -> None:
        if min(self.cpu_core_hour, self.ram_gib_hour, self.gpu_hour) < 0:
            raise ValueError("a rate cannot be negative")


@dataclass(frozen=True)
class SplitRatios:
    """Relative prices of a core, a GiB and a GPU, used only to split a whole-node price."""

    cpu: Decimal
    ram: Decimal
    gpu: Decimal


# OpenCost's default rates (its "GCP us-central1" defaults, USD an hour), used as split ratios and,
# where nothing else is known, as the last-resort price table (the status then says so)
DEFAULT_ON_DEMAND = Rates("USD", Decimal("0.031611"), Decimal("0.004237"), Decimal("0.95"))
DEFAULT_SPOT = Rates("USD", Decimal("0.006655"), Decimal("0.000892"), Decimal("0.95"))
DEFAULT_RATIOS = SplitRatios(
    DEFAULT_ON_DEMAND.cpu_core_hour, DEFAULT_ON_DEMAND.ram_gib_hour, DEFAULT_ON_DEMAND.gpu_hour
)


def split_node_price(
    node_hour: Decimal,
    currency: str,
    *,
    vcpus: Decimal,
    ram_gib: Decimal,
    gpus: Decimal = ZERO,
    ratios: SplitRatios = DEFAULT_RATIOS,
) -> Rates:
    """Per-resource rates whose sum over the node's capacity is `node_hour`: the price of a GiB is
    node_hour / (gpus * gpu/ram + vcpus * cpu/ram + ram_gib), a core costs cpu/ram of that."""
    if node_hour < 0 or vcpus <= 0 or ram_gib <= 0 or gpus < 0:
        raise ValueError("a node needs a price >= 0, CPUs > 0 and memory > 0 to split its price")
    cpu_to_ram, gpu_to_ram = ratios.cpu / ratios.ram, ratios.gpu / ratios.ram
    ram = node_hour / (gpus * gpu_to_ram + vcpus * cpu_to_ram + ram_gib)
    return Rates(currency, ram * cpu_to_ram, ram, ram * gpu_to_ram if gpus else ZERO)
