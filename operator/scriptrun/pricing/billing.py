"""What the provider actually billed: the opt-in reconciliation asks a provider's billing API for the
spend of resources tagged with a run's tag value, at least a day or two after the run (the providers'
billing lag), and records it beside the estimate. Each provider module implements `BillingLookup`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class Spend:
    amount: Decimal
    currency: str


class BillingLookup(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def requests(self) -> int:
        """API requests made so far (Cost Explorer charges for each page)."""

    def spend(self, tag_key: str, values: list[str], start: date, end: date) -> dict[str, Spend]:
        """The spend per tag value over [start, end) (end exclusive, whole days, UTC) of resources
        tagged `tag_key` with one of `values`; values with no spend are absent. Raises on failure."""
