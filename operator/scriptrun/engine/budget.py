"""What finished runs cost together, and a budget's verdict on it. Pure: a Workflow sums its tasks'
`status.cost`, projects the sum over the tasks left, and sets the BudgetExceeded condition; a
ScriptRun's attempts are judged the same way (its cost is one sum already).

Costs in another currency than the budget's are never converted: the verdict says so instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from scriptrun.model.common import Condition
from scriptrun.model.scriptrun import Budget

PLACES = Decimal("0.000001")
CONDITION = "BudgetExceeded"


@dataclass(frozen=True)
class Sums:
    """Amounts per currency over the priced runs, and how many were priced."""

    by_currency: dict[str, Decimal] = field(default_factory=dict)
    priced: int = 0

    @property
    def currency(self) -> str | None:
        return next(iter(self.by_currency)) if len(self.by_currency) == 1 else None


def _amounts(cost: Mapping[str, Any]) -> dict[str, Decimal]:
    try:
        if cost.get("amount") is not None and cost.get("currency"):
            return {str(cost["currency"]): Decimal(str(cost["amount"]))}
        return {str(c): Decimal(str(a)) for c, a in (cost.get("byCurrency") or {}).items()}
    except InvalidOperation:
        return {}


def add_up(costs: Iterable[Mapping[str, Any] | None]) -> Sums:
    """The sum of runs' `status.cost` (JSON, camelCase); runs not priced yet are left out."""
    totals: dict[str, Decimal] = {}
    priced = 0
    for cost in costs:
        amounts = _amounts(cost) if cost else {}
        if not amounts:
            continue
        priced += 1
        for currency, amount in amounts.items():
            totals[currency] = totals.get(currency, Decimal(0)) + amount
    return Sums(dict(sorted(totals.items())), priced)


def budget_exceeded(conditions: Iterable[Condition]) -> bool:
    """Whether these conditions say the budget is exceeded."""
    return any(c.type == CONDITION and c.status == "True" for c in conditions)


def cost_text(cost: Mapping[str, Any] | None) -> str | None:
    """A run's cost in one short string, e.g. "0.001234 USD" (a task's line in its workflow)."""
    amounts = _amounts(cost) if cost else {}
    return ", ".join(f"{a.quantize(PLACES)} {c}" for c, a in sorted(amounts.items())) or None


def projected(sums: Sums, remaining: int) -> Decimal | None:
    """The sum so far plus the average priced run for each run left (one currency only)."""
    if remaining <= 0 or sums.currency is None or not sums.priced:
        return None
    spent = sums.by_currency[sums.currency]
    return spent + spent / sums.priced * remaining


def summary(sums: Sums, remaining: int) -> dict[str, Any] | None:
    """A Workflow's `status.cost` (WorkflowCost), or None before any task was priced."""
    if not sums.priced:
        return None
    out: dict[str, Any] = {"tasks": sums.priced}
    currency = sums.currency
    if currency is None:
        out["byCurrency"] = {c: str(a.quantize(PLACES)) for c, a in sums.by_currency.items()}
        return out
    amount = sums.by_currency[currency]
    out.update(
        amount=str(amount.quantize(PLACES)),
        currency=currency,
        display=f"{amount.quantize(Decimal('0.0001'))} {currency}",
    )
    ahead = projected(sums, remaining)
    if ahead is not None:
        out["projected"] = str(ahead.quantize(PLACES))
    return out


@dataclass(frozen=True)
class Verdict:
    """The BudgetExceeded condition: `exceeded` its status, `reason` and `message` its text."""

    exceeded: bool
    reason: str  # BudgetExceeded | ProjectedOverBudget | WithinBudget | CurrencyMismatch
    message: str

    @property
    def warns(self) -> bool:
        return self.exceeded or self.reason == "ProjectedOverBudget"


def judge(budget: Budget, sums: Sums, remaining: int = 0) -> Verdict:
    """Spent more than the budget (exceeded), or projected to (a warning), or within it."""
    limit = Decimal(budget.amount)
    shown = f"{limit} {budget.currency}"
    others = sorted(c for c in sums.by_currency if c != budget.currency)
    if others:
        return Verdict(
            False, "CurrencyMismatch", f"runs priced in {', '.join(others)}: not converted to the budget's {shown}"
        )
    spent = sums.by_currency.get(budget.currency, Decimal(0))
    so_far = f"spent {spent.quantize(PLACES)} {budget.currency}"
    if spent > limit:
        return Verdict(True, "BudgetExceeded", f"{so_far} of the {shown} budget")
    ahead = projected(sums, remaining)
    if ahead is not None and ahead > limit:
        return Verdict(
            False,
            "ProjectedOverBudget",
            f"{so_far}; projected {ahead.quantize(PLACES)} "
            f"{budget.currency} with {remaining} left, over the {shown} budget",
        )
    return Verdict(False, "WithinBudget", f"{so_far} of the {shown} budget")
