"""Billing reconciliation, pure: which finished runs are due to have their provider's actual spend
asked for, in as few queries as possible, and the `status.cost.actual` record made of the answer.

A run takes part when it carries the annotation `scriptrun.dev/billing-tag: <value>`, the value of
the cloud resource tag on the dedicated capacity it ran on (a Karpenter NodePool or a node group
tagged `<tag key>=<value>`). The provider bills that capacity, not the run: every run with one value
shares its spend, and the record says how many did (`runsSharing`); the amount is not split.

- **Due**: a value is asked about once every run carrying it (and not reconciled yet) has finished
  with a cost estimate at least `lag` ago: the providers' costs arrive 24-48 h late. A run that is
  still going holds its value back, so the spend is never split across two queries.
- **Billing period**: whole UTC days, [the day of the value's first start, the day after its last
  completion), as Cost Explorer and Cost Management answer per day.
- **Batching**: one query carries every value with the same period (up to `max_values`), so a pass
  over runs that finished on the same days costs one request (or a few pages), oldest first.
- **No spend** (the value is absent from the answer): the record says 0 and why, so the value is
  not asked about again at every pass; most often the tag is not activated for cost allocation.

Money stays `Decimal` until it is written as a decimal string.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

BILLING_TAG_ANNOTATION = "scriptrun.dev/billing-tag"
DEFAULT_LAG = timedelta(hours=48)
MAX_VALUES_PER_QUERY = 100
SOURCES = {"aws": "aws-cost-explorer", "azure": "azure-cost-management"}


class Money(Protocol):
    """A provider's spend for one tag value (`scriptrun.pricing.billing.Spend` is one)."""

    @property
    def amount(self) -> Decimal: ...

    @property
    def currency(self) -> str: ...


@dataclass(frozen=True)
class BillableRun:
    """What the planner reads of one annotated ScriptRun."""

    namespace: str
    name: str
    tag: str  # the billing-tag annotation's value
    start: datetime | None  # status.startTime (None: the completion counts)
    completion: datetime | None  # status.completionTime (None: not finished)
    estimate: Decimal | None = None  # status.cost.amount
    currency: str | None = None  # status.cost.currency (None: no status.cost)
    reconciled: bool = False  # status.cost.actual is there already
    uid: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def due(self, now: datetime, lag: timedelta) -> bool:
        return self.completion is not None and self.currency is not None and now - self.completion >= lag


@dataclass(frozen=True)
class TagGroup:
    """The runs sharing one tag value, and the whole UTC days they ran over."""

    value: str
    runs: tuple[BillableRun, ...]
    start: date
    end: date  # exclusive


@dataclass(frozen=True)
class SpendQuery:
    """One question to the provider: the spend per value over [start, end)."""

    start: date
    end: date
    groups: tuple[TagGroup, ...]

    @property
    def values(self) -> list[str]:
        return [g.value for g in self.groups]

    @property
    def runs(self) -> int:
        return sum(len(g.runs) for g in self.groups)


@dataclass(frozen=True)
class ActualCost:
    """The `status.cost.actual` of one run."""

    amount: Decimal
    currency: str
    source: str
    at: datetime
    tag: str  # key=value
    start: date
    end: date
    runs_sharing: int
    note: str | None = None

    def status(self) -> dict[str, Any]:
        """The wire form (RunActualCost): decimal and date strings, camelCase."""
        record: dict[str, Any] = {
            "amount": format(self.amount, "f"),
            "currency": self.currency,
            "source": self.source,
            "at": self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tag": self.tag,
            "periodStart": self.start.isoformat(),
            "periodEnd": self.end.isoformat(),
            "runsSharing": self.runs_sharing,
        }
        if self.note:
            record["note"] = self.note
        return record


def source_name(provider: str) -> str:
    """What `status.cost.actual.source` calls a billing lookup (`BillingLookup.name`)."""
    return SOURCES.get(provider, provider)


def billing_period(runs: Iterable[BillableRun]) -> tuple[date, date]:
    """[the UTC day of the first start, the UTC day after the last completion)."""
    starts, ends = [], []
    for run in runs:
        if run.completion is not None:
            starts.append(min(run.start or run.completion, run.completion))  # a skewed clock: never empty
            ends.append(run.completion)
    if not ends:
        raise ValueError("no finished run: no billing period")
    return min(starts).astimezone(UTC).date(), max(ends).astimezone(UTC).date() + timedelta(days=1)


def plan(
    runs: Iterable[BillableRun],
    *,
    now: datetime,
    lag: timedelta = DEFAULT_LAG,
    skip: Collection[str] = (),
    max_values: int = MAX_VALUES_PER_QUERY,
) -> list[SpendQuery]:
    """The queries due now, oldest period first. Reconciled runs, finished runs without a cost
    estimate (they ran nowhere) and values in `skip` are left out; a value with a run not yet due
    waits for it."""
    if max_values < 1:
        raise ValueError("max_values must be at least 1")
    by_value: dict[str, list[BillableRun]] = defaultdict(list)
    for run in runs:
        if run.reconciled or (run.completion is not None and run.currency is None):
            continue
        by_value[run.tag].append(run)
    by_period: dict[tuple[date, date], list[TagGroup]] = defaultdict(list)
    for value, members in sorted(by_value.items()):
        if value in skip or not all(r.due(now, lag) for r in members):
            continue
        start, end = billing_period(members)
        by_period[(start, end)].append(TagGroup(value, tuple(sorted(members, key=lambda r: r.key)), start, end))
    queries = []
    for (start, end), groups in sorted(by_period.items()):
        for i in range(0, len(groups), max_values):
            queries.append(SpendQuery(start, end, tuple(groups[i : i + max_values])))
    return queries


def actual_costs(
    query: SpendQuery, spent: Mapping[str, Money], *, tag_key: str, source: str, at: datetime
) -> dict[tuple[str, str], ActualCost]:
    """Each run's record from the provider's answer to `query` (values with no spend are absent)."""
    records: dict[tuple[str, str], ActualCost] = {}
    for group in query.groups:
        tag = f"{tag_key}={group.value}"
        estimated = next((r.currency for r in group.runs if r.currency), None)
        notes = []
        money = spent.get(group.value)
        if money is None:
            amount, currency = Decimal(0), estimated or "USD"
            notes.append(f"no spend tagged {tag}: is the tag activated as a cost allocation tag?")
        else:
            amount, currency = money.amount, money.currency
            if estimated and estimated != currency:
                notes.append(f"billed in {currency}, estimated in {estimated}: not converted")
        if len(group.runs) > 1:
            notes.append(f"the spend of the capacity tagged {tag}, shared by {len(group.runs)} runs (not split)")
        for run in group.runs:
            records[run.key] = ActualCost(
                amount=amount,
                currency=currency,
                source=source,
                at=at,
                tag=tag,
                start=group.start,
                end=group.end,
                runs_sharing=len(group.runs),
                note="; ".join(notes) or None,
            )
    return records
