"""Billing reconciliation (opt-in, docs/cost.md): every `interval`, the finished ScriptRuns annotated
`scriptrun.dev/billing-tag` are planned (`scriptrun.cost.reconcile`), the provider's billing API is
asked for the spend per tag value (in a worker thread: the event loop never waits on it), and each
run's `status.cost.actual` is merge-patched beside the estimate.

It never blocks a run: it reads the bodies the ScriptRun controller already keeps and writes only
`status.cost.actual` of runs that finished days ago. A failure is logged and the runs are asked about
again at the next pass; the operator never stops for it. Each pass makes at most `max_requests`
billing requests (Cost Explorer charges $0.01 each): the lookup itself is built per query with what
is left of the pass's budget, so a multi-page answer cannot overrun it either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from scriptrun.controllers.bodies import Bodies, Key
from scriptrun.controllers.config import BillingConfig
from scriptrun.cost.reconcile import (
    BILLING_TAG_ANNOTATION,
    ActualCost,
    BillableRun,
    SpendQuery,
    actual_costs,
    plan,
    source_name,
)
from scriptrun.engine import clock
from scriptrun.k8s.api import Kube
from scriptrun.k8s.apply import Operation, Outcome, Patch, Record, apply
from scriptrun.pricing.billing import BillingLookup, Spend

log = logging.getLogger(__name__)
KIND = "ScriptRun"
FIRST_PASS_AFTER_SECONDS = 300.0  # after a start, once the watch has listed the runs (or `interval`, if shorter)
GIVE_UP_AFTER = 4  # failed passes in a row before a tag value is left alone (until the operator restarts)

BillingFactory = Callable[[int], BillingLookup]  # a lookup that makes at most n requests
ApplyFn = Callable[[list[Operation]], Awaitable[list[Outcome]]]


class RunBodies(Protocol):
    """What the reconciler reads of the ScriptRun controller's bodies."""

    def snapshot(self) -> list[dict[str, Any]]: ...
    def get(self, key: Key) -> dict[str, Any] | None: ...
    def update(self, key: Key, incoming: dict[str, Any]) -> None: ...


class BodiesView:
    """`Bodies` as a `RunBodies`."""

    def __init__(self, bodies: Bodies) -> None:
        self._bodies = bodies

    def snapshot(self) -> list[dict[str, Any]]:
        return self._bodies.values()

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._bodies.get(key)

    def update(self, key: Key, incoming: dict[str, Any]) -> None:
        self._bodies.update(key, incoming)


def _time(value: Any) -> datetime | None:
    try:
        return clock.parse(value) if isinstance(value, str) else None
    except ValueError:
        return None


def billable_run(body: dict[str, Any]) -> BillableRun | None:
    """The planner's view of a ScriptRun body; None without the annotation or while it is deleted."""
    meta = body.get("metadata") or {}
    tag = str((meta.get("annotations") or {}).get(BILLING_TAG_ANNOTATION) or "").strip()
    if not tag or meta.get("deletionTimestamp"):
        return None
    status = body.get("status") or {}
    cost = status.get("cost")
    cost = cost if isinstance(cost, dict) else {}
    try:
        estimate = Decimal(str(cost["amount"])) if cost.get("amount") is not None else None
    except InvalidOperation:
        estimate = None
    return BillableRun(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        tag=tag,
        start=_time(status.get("startTime")),
        completion=_time(status.get("completionTime")),
        estimate=estimate,
        currency=str(cost["currency"]) if cost.get("currency") else None,
        reconciled=bool(cost.get("actual")),
        uid=meta.get("uid"),
    )


@dataclass(frozen=True)
class _Answer:
    spent: dict[str, Spend]
    requests: int
    source: str
    error: Exception | None = None


@dataclass(frozen=True)
class PassReport:
    """What one pass did (logged; returned for the tests)."""

    queries: int = 0  # due
    asked: int = 0  # sent (answered or failed)
    failed: int = 0
    requests: int = 0
    recorded: int = 0  # runs given status.cost.actual
    left: int = 0  # queries left for the next pass by the request budget


class BillingReconciler:
    def __init__(
        self,
        apply: ApplyFn,
        bodies: RunBodies,
        billing: BillingFactory,
        *,
        tag_key: str,
        lag: timedelta = timedelta(hours=48),
        interval: float = 21600.0,
        max_requests_per_pass: int = 10,
        now: Callable[[], datetime] = clock.utcnow,
    ) -> None:
        if max_requests_per_pass < 1:
            raise ValueError("max_requests_per_pass must be at least 1")
        self._apply = apply
        self.bodies = bodies
        self.billing = billing
        self.tag_key = tag_key
        self.lag = lag
        self.interval = interval
        self.max_requests = max_requests_per_pass
        self._now = now
        self.failures: Counter[str] = Counter()  # tag value -> failed passes in a row
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, first_after: float | None = None) -> None:
        delay = min(self.interval, FIRST_PASS_AFTER_SECONDS) if first_after is None else first_after
        self._task = asyncio.create_task(self._loop(delay), name="billing reconciliation")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            delay = self.interval
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: logged, and the next pass comes all the same
                log.exception("billing reconciliation pass failed; next pass in %.0f s", self.interval)

    # --- one pass -----------------------------------------------------------------------------

    async def run_pass(self) -> PassReport:
        now = self._now()
        runs = [run for body in self.bodies.snapshot() if (run := billable_run(body)) is not None]
        given_up = {value for value, n in self.failures.items() if n >= GIVE_UP_AFTER}
        queries = plan(runs, now=now, lag=self.lag, skip=given_up)
        requests = asked = failed = recorded = 0
        for i, query in enumerate(queries):
            if requests >= self.max_requests:
                left = queries[i:]
                log.warning(
                    "billing: the request budget of %d a pass is used up; %d tag values (%d runs) wait for the next "
                    "pass (SCRIPTRUN_BILLING_MAX_REQUESTS)",
                    self.max_requests,
                    sum(len(q.groups) for q in left),
                    sum(q.runs for q in left),
                )
                return PassReport(len(queries), asked, failed, requests, recorded, len(left))
            answer = await asyncio.to_thread(self._ask, query, self.max_requests - requests)
            requests += answer.requests
            asked += 1
            if answer.error is not None:
                failed += 1
                self._failed(query, answer.error, budget_spent=requests >= self.max_requests)
                continue
            for value in query.values:
                self.failures.pop(value, None)
            records = actual_costs(
                query, answer.spent, tag_key=self.tag_key, source=source_name(answer.source), at=self._now()
            )
            try:
                recorded += await self._record(query, records)
            except Exception as err:  # the API server: no use asking the provider more now
                log.warning(
                    "billing: recording the actual cost failed, asked again at the next pass: %s: %s",
                    type(err).__name__,
                    err,
                )
                return PassReport(len(queries), asked, failed + 1, requests, recorded, len(queries) - asked)
        if queries:
            log.info(
                "billing: %d queries, %d failed, %d requests; %d runs got their actual cost",
                asked,
                failed,
                requests,
                recorded,
            )
        return PassReport(len(queries), asked, failed, requests, recorded)

    def _ask(self, query: SpendQuery, allowed: int) -> _Answer:
        """In a worker thread: the spend per value of one query, with at most `allowed` requests."""
        lookup: BillingLookup | None = None
        try:
            lookup = self.billing(allowed)
            spent = lookup.spend(self.tag_key, query.values, query.start, query.end)
            return _Answer(spent, lookup.requests, lookup.name)
        except Exception as err:
            return _Answer({}, lookup.requests if lookup is not None else 0, "", err)

    def _failed(self, query: SpendQuery, error: Exception, *, budget_spent: bool) -> None:
        why = " (the pass's request budget ran out in the middle of it)" if budget_spent else ""
        log.warning(
            "billing: asking for %s in [%s, %s) failed%s, retried at the next pass: %s: %s",
            ", ".join(f"{self.tag_key}={v}" for v in query.values),
            query.start,
            query.end,
            why,
            type(error).__name__,
            error,
        )
        for value in query.values:
            self.failures[value] += 1
            if self.failures[value] == GIVE_UP_AFTER:
                log.error(
                    "billing: %s=%s failed %d passes in a row; not asked about again until the operator restarts",
                    self.tag_key,
                    value,
                    GIVE_UP_AFTER,
                )

    async def _record(self, query: SpendQuery, records: dict[Key, ActualCost]) -> int:
        """Merge-patch status.cost.actual of each run still there (the same object, not reconciled)."""
        done = 0
        for group in query.groups:
            for run in group.runs:
                body = self.bodies.get(run.key)
                now = billable_run(body) if body is not None else None
                if now is None or now.uid != run.uid or now.reconciled:
                    log.debug("billing: %s/%s is gone or done meanwhile", run.namespace, run.name)
                    continue
                patch = {"cost": {"actual": records[run.key].status()}}
                (outcome,) = await self._apply([Patch(KIND, run.namespace, run.name, patch, status=True)])
                if outcome.body is None:  # deleted meanwhile, or refused (logged by apply)
                    continue
                self.bodies.update(run.key, outcome.body)
                done += 1
        return done


# --- wiring -------------------------------------------------------------------------------------


def billing_factory(config: BillingConfig) -> BillingFactory:
    """The configured provider's lookups, sharing one SDK client (built on first use, in a worker
    thread). ImportError when its SDK is not installed."""
    if config.provider == "aws":
        if importlib.util.find_spec("boto3") is None:
            raise ImportError("boto3 is not installed (pip install 'scriptrun[aws]')", name="boto3")
        from scriptrun.pricing.aws import AwsBilling

        shared = AwsBilling(max_requests=0)  # only holds the client

        def aws(allowed: int) -> BillingLookup:
            return AwsBilling(client=shared.client(), max_requests=allowed)

        return aws
    if config.provider == "azure":
        if importlib.util.find_spec("azure.mgmt.costmanagement") is None:
            raise ImportError("azure-mgmt-costmanagement is not installed (pip install 'scriptrun[azure]')")
        from scriptrun.pricing.azure import AzureBilling

        scope, lock = config.azure_scope or "", threading.Lock()
        clients: list[Any] = []

        def azure(allowed: int) -> BillingLookup:
            with lock:
                if not clients:
                    clients.append(AzureBilling(scope).client)  # DefaultAzureCredential: workload identity
            return AzureBilling(scope, client=clients[0], max_requests=allowed)

        return azure
    raise ValueError(f"unknown billing provider {config.provider!r}")


def start_billing(config: BillingConfig, kube: Kube, bodies: Bodies, record: Record | None) -> BillingReconciler | None:
    """The reconciler, started (None, logged as an error, when its provider cannot be built)."""
    try:
        factory = billing_factory(config)
    except (ImportError, ValueError) as err:
        log.error("billing reconciliation off: %s", err)
        return None
    reconciler = BillingReconciler(
        functools.partial(apply, kube, record=record),
        BodiesView(bodies),
        factory,
        tag_key=config.tag_key,
        lag=timedelta(seconds=config.lag_seconds),
        interval=config.interval_seconds,
        max_requests_per_pass=config.max_requests,
    )
    reconciler.start()
    log.info(
        "billing reconciliation on: %s, tag %s, %s after a run, every %s, at most %d requests a pass",
        source_name(config.provider),
        config.tag_key,
        clock.human_duration(config.lag_seconds),
        clock.human_duration(config.interval_seconds),
        config.max_requests,
    )
    return reconciler
