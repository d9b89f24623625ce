"""Billing reconciliation: the pure planner and record (scriptrun.cost.reconcile), its settings, and
the reconciler's passes against fake bodies and a fake apply, asking Cost Explorer through a real
boto3 client answered by moto's in-process mock (canned results queued through moto's API). Fake
credentials only; nothing leaves the process."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from scriptrun.build.patch import merge_patch
from scriptrun.controllers.billing import GIVE_UP_AFTER, BillingReconciler, PassReport, billable_run
from scriptrun.controllers.config import BillingConfig, BillingConfigError, OperatorConfig
from scriptrun.cost.reconcile import (
    BILLING_TAG_ANNOTATION,
    BillableRun,
    SpendQuery,
    actual_costs,
    billing_period,
    plan,
    source_name,
)
from scriptrun.k8s.apply import Operation, Outcome, Patch
from scriptrun.model.scriptrun import RunActualCost, ScriptRunStatus
from scriptrun.pricing.aws import AwsBilling
from scriptrun.pricing.billing import BillingLookup, Spend
from tests.support.aws import fake_credentials, queue

KEY = "scriptrun-run"
LAG = timedelta(hours=48)
NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def at(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run(
    name: str,
    tag: str,
    start: str = "2026-11-19T08:00:00",
    end: str | None = "2026-11-19T09:00:00",
    *,
    currency: str | None = "USD",
    reconciled: bool = False,
) -> BillableRun:
    return BillableRun(
        "ns",
        name,
        tag,
        at(start),
        at(end) if end else None,
        Decimal("0.05") if currency else None,
        currency,
        reconciled,
        uid=f"uid-{name}",
    )


# --- the planner -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "due"),
    [(timedelta(hours=48), True), (timedelta(hours=48, seconds=1), True), (timedelta(hours=47, seconds=3599), False)],
    ids=["exactly-the-lag", "a-second-after", "a-second-before"],
)
def test_the_lag_is_respected_to_the_second(before: timedelta, due: bool) -> None:
    finished = NOW - before
    r = run("a", "v", start=(finished - timedelta(hours=1)).isoformat(), end=finished.isoformat())
    queries = plan([r], now=NOW, lag=LAG)
    assert bool(queries) == due


def test_runs_sharing_a_value_form_one_group_over_their_days() -> None:
    runs = [
        run("b", "pool-1", "2026-11-18T23:30:00", "2026-11-19T00:10:00"),
        run("a", "pool-1", "2026-11-19T10:00:00", "2026-11-19T11:00:00"),
    ]
    (query,) = plan(runs, now=NOW, lag=LAG)
    (group,) = query.groups
    assert group.value == "pool-1"
    assert [r.name for r in group.runs] == ["a", "b"]  # in key order
    assert (group.start, group.end) == (date(2026, 11, 18), date(2026, 11, 20))
    assert (query.start, query.end, query.values, query.runs) == (date(2026, 11, 18), date(2026, 11, 20), ["pool-1"], 2)


@pytest.mark.parametrize(
    ("start", "end", "period"),
    [
        ("2026-11-19T00:00:00", "2026-11-19T00:00:01", (date(2026, 11, 19), date(2026, 11, 20))),
        ("2026-11-18T23:59:59", "2026-11-19T00:00:00", (date(2026, 11, 18), date(2026, 11, 20))),
        ("2026-11-19T01:00:00+02:00", "2026-11-19T23:30:00-01:00", (date(2026, 11, 18), date(2026, 11, 21))),
        ("2026-11-19T12:00:00", "2026-11-19T11:00:00", (date(2026, 11, 19), date(2026, 11, 20))),
    ],
    ids=["one-day", "across-midnight", "other-time-zones-in-utc", "start-after-completion-never-empty"],
)
def test_periods_are_whole_utc_days(start: str, end: str, period: tuple[date, date]) -> None:
    assert billing_period([run("a", "v", start, end)]) == period


def test_a_run_without_a_start_counts_from_its_completion() -> None:
    r = BillableRun("ns", "a", "v", None, at("2026-11-19T09:00:00"), None, "USD")
    assert billing_period([r]) == (date(2026, 11, 19), date(2026, 11, 20))
    with pytest.raises(ValueError, match="no finished run"):
        billing_period([run("b", "v", end=None)])


def test_values_with_the_same_period_share_one_query_oldest_first() -> None:
    runs = [
        run("c", "later", "2026-11-19T08:00:00", "2026-11-19T09:00:00"),
        run("a", "x", "2026-11-18T08:00:00", "2026-11-18T09:00:00"),
        run("b", "y", "2026-11-18T12:00:00", "2026-11-18T13:00:00"),
    ]
    queries = plan(runs, now=NOW, lag=LAG)
    assert [(q.start, q.values) for q in queries] == [(date(2026, 11, 18), ["x", "y"]), (date(2026, 11, 19), ["later"])]


def test_a_query_carries_at_most_max_values() -> None:
    runs = [run(f"r{i}", f"v{i}") for i in range(5)]
    queries = plan(runs, now=NOW, lag=LAG, max_values=2)
    assert [q.values for q in queries] == [["v0", "v1"], ["v2", "v3"], ["v4"]]
    with pytest.raises(ValueError, match="max_values"):
        plan(runs, now=NOW, max_values=0)


def test_reconciled_runs_are_left_out() -> None:
    runs = [run("a", "v", reconciled=True), run("b", "w", reconciled=True)]
    assert plan(runs, now=NOW, lag=LAG) == []
    # a new run with a value already reconciled for another run: only the new one, over its own days
    runs.append(run("c", "v", "2026-11-20T01:00:00", "2026-11-20T02:00:00"))
    (query,) = plan(runs, now=NOW, lag=LAG)
    assert [r.name for r in query.groups[0].runs] == ["c"] and query.start == date(2026, 11, 20)


def test_a_run_not_yet_due_holds_its_value_back() -> None:
    finished = run("a", "v")
    for holder in (run("b", "v", end=None), run("b", "v", end=(NOW - timedelta(hours=1)).isoformat())):
        assert plan([finished, holder], now=NOW, lag=LAG) == [], holder
    # a finished run without a cost estimate ran nowhere: it neither takes part nor holds the value
    (query,) = plan([finished, run("c", "v", currency=None)], now=NOW, lag=LAG)
    assert [r.name for r in query.groups[0].runs] == ["a"]


def test_values_given_up_on_are_skipped() -> None:
    assert [q.values for q in plan([run("a", "v"), run("b", "w")], now=NOW, lag=LAG, skip={"v"})] == [["w"]]


def scriptrun_body(
    name: str,
    tag: str | None = "pool-1",
    *,
    start: str = "2026-11-19T08:00:00Z",
    end: str | None = "2026-11-19T09:00:00Z",
    cost: dict[str, Any] | None = None,
    namespace: str = "ns",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "10"}
    if tag is not None:
        meta["annotations"] = {BILLING_TAG_ANNOTATION: tag}
    status: dict[str, Any] = {"phase": "Succeeded" if end else "Running", "startTime": start}
    if end:
        status["completionTime"] = end
        status["cost"] = cost or {"amount": "0.052000", "currency": "USD", "source": "static", "attempts": 1}
    return {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "ScriptRun", "metadata": meta, "status": status}


def test_runs_without_the_annotation_are_not_billable() -> None:
    assert billable_run(scriptrun_body("a", tag=None)) is None
    assert billable_run(scriptrun_body("a", tag="  ")) is None
    deleting = scriptrun_body("a")
    deleting["metadata"]["deletionTimestamp"] = "2026-11-20T00:00:00Z"
    assert billable_run(deleting) is None
    found = billable_run(scriptrun_body("a"))
    assert found == BillableRun(
        "ns",
        "a",
        "pool-1",
        at("2026-11-19T08:00:00"),
        at("2026-11-19T09:00:00"),
        Decimal("0.052000"),
        "USD",
        False,
        "uid-a",
    )
    running = billable_run(scriptrun_body("b", end=None))
    assert running is not None and running.completion is None and running.currency is None
    body = scriptrun_body("c")
    body["status"]["cost"]["actual"] = {"amount": "0"}
    assert (billable_run(body) or run("x", "x")).reconciled


# --- the record --------------------------------------------------------------------------------


def query_of(*runs: BillableRun) -> SpendQuery:
    (query,) = plan(list(runs), now=NOW, lag=LAG)
    return query


ASKED = datetime(2026, 11, 22, 10, 30, 5, tzinfo=UTC)


def test_shared_capacity_is_recorded_whole_with_the_runs_sharing_it() -> None:
    query = query_of(run("a", "pool-1"), run("b", "pool-1"))
    records = actual_costs(
        query, {"pool-1": Spend(Decimal("0.0981234"), "USD")}, tag_key=KEY, source="aws-cost-explorer", at=ASKED
    )
    assert set(records) == {("ns", "a"), ("ns", "b")}
    assert records[("ns", "a")].status() == {
        "amount": "0.0981234",
        "currency": "USD",
        "source": "aws-cost-explorer",
        "at": "2026-11-22T10:30:05Z",
        "tag": "scriptrun-run=pool-1",
        "periodStart": "2026-11-19",
        "periodEnd": "2026-11-20",
        "runsSharing": 2,
        "note": "the spend of the capacity tagged scriptrun-run=pool-1, shared by 2 runs (not split)",
    }
    assert records[("ns", "b")] == records[("ns", "a")]


def test_a_value_without_spend_records_zero_and_why() -> None:
    query = query_of(run("a", "pool-1"), run("b", "pool-2", currency="EUR"))
    records = actual_costs(query, {}, tag_key=KEY, source="azure-cost-management", at=ASKED)
    zero = records[("ns", "b")].status()
    assert zero["amount"] == "0" and zero["currency"] == "EUR" and zero["runsSharing"] == 1
    assert zero["note"] == "no spend tagged scriptrun-run=pool-2: is the tag activated as a cost allocation tag?"


def test_a_currency_other_than_the_estimates_is_noted_not_converted() -> None:
    records = actual_costs(
        query_of(run("a", "v")), {"v": Spend(Decimal("0.04"), "EUR")}, tag_key=KEY, source="x", at=ASKED
    )
    record = records[("ns", "a")].status()
    assert record["currency"] == "EUR" and record["note"] == "billed in EUR, estimated in USD: not converted"
    assert (
        "note"
        not in actual_costs(
            query_of(run("a", "v")), {"v": Spend(Decimal("0.04"), "USD")}, tag_key=KEY, source="x", at=ASKED
        )[("ns", "a")].status()
    )


def test_the_record_fits_the_status_schema_and_survives_a_status_round_trip() -> None:
    record = actual_costs(
        query_of(run("a", "v"), run("b", "v")), {}, tag_key=KEY, source="aws-cost-explorer", at=ASKED
    )[("ns", "a")].status()
    assert RunActualCost.model_validate(record).dump() == record
    body = scriptrun_body("a")
    body["status"]["cost"]["actual"] = record
    status = ScriptRunStatus.model_validate(body["status"])
    assert status.cost is not None and status.cost.actual is not None and status.cost.actual.runs_sharing == 2
    # the run's own reconcile rewrites its status from the model: the record is kept as it is
    assert status.dump()["cost"] == body["status"]["cost"]
    assert merge_patch(body["status"]["cost"], status.dump()["cost"]) == {}


def test_source_names() -> None:
    assert (source_name("aws"), source_name("azure"), source_name("x")) == (
        "aws-cost-explorer",
        "azure-cost-management",
        "x",
    )


# --- settings ----------------------------------------------------------------------------------


def test_billing_is_off_unless_asked_for() -> None:
    assert BillingConfig.from_env({}) is None
    assert BillingConfig.from_env({"SCRIPTRUN_BILLING": " "}) is None


def test_billing_settings_and_their_defaults() -> None:
    config = BillingConfig.from_env({"SCRIPTRUN_BILLING": "AWS", "SCRIPTRUN_BILLING_TAG_KEY": KEY})
    assert config == BillingConfig("aws", KEY, 48 * 3600.0, 21600.0, 10, None)
    config = BillingConfig.from_env(
        {
            "SCRIPTRUN_BILLING": "azure",
            "SCRIPTRUN_BILLING_TAG_KEY": KEY,
            "SCRIPTRUN_AZURE_BILLING_SCOPE": "/subscriptions/0000/",
            "SCRIPTRUN_BILLING_LAG_HOURS": "24",
            "SCRIPTRUN_BILLING_INTERVAL_SECONDS": "3600",
            "SCRIPTRUN_BILLING_MAX_REQUESTS": "3",
        }
    )
    assert config == BillingConfig("azure", KEY, 24 * 3600.0, 3600.0, 3, "subscriptions/0000")
    seconds = {"SCRIPTRUN_BILLING": "aws", "SCRIPTRUN_BILLING_TAG_KEY": KEY, "SCRIPTRUN_BILLING_LAG_SECONDS": "0"}
    assert (BillingConfig.from_env({**seconds, "SCRIPTRUN_BILLING_LAG_HOURS": "12"}) or config).lag_seconds == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCRIPTRUN_BILLING": "gcp"}, "SCRIPTRUN_BILLING='gcp': expected aws or azure (GCP's billing export"),
        ({"SCRIPTRUN_BILLING_TAG_KEY": " "}, "SCRIPTRUN_BILLING_TAG_KEY is required"),
        ({"SCRIPTRUN_BILLING": "azure", "SCRIPTRUN_BILLING_TAG_KEY": KEY}, "SCRIPTRUN_AZURE_BILLING_SCOPE is required"),
        ({"SCRIPTRUN_BILLING_LAG_HOURS": "two days"}, "SCRIPTRUN_BILLING_LAG_HOURS='two days' is not a number"),
        ({"SCRIPTRUN_BILLING_LAG_HOURS": "-1"}, "SCRIPTRUN_BILLING_LAG_HOURS='-1': must be at least 0"),
        ({"SCRIPTRUN_BILLING_INTERVAL_SECONDS": "0"}, "SCRIPTRUN_BILLING_INTERVAL_SECONDS='0': must be at least 1"),
        ({"SCRIPTRUN_BILLING_INTERVAL_SECONDS": "nan"}, "SCRIPTRUN_BILLING_INTERVAL_SECONDS='nan': must be at"),
        ({"SCRIPTRUN_BILLING_MAX_REQUESTS": "2.5"}, "SCRIPTRUN_BILLING_MAX_REQUESTS='2.5' is not an integer"),
        ({"SCRIPTRUN_BILLING_MAX_REQUESTS": "0"}, "SCRIPTRUN_BILLING_MAX_REQUESTS='0': must be at least 1"),
    ],
    ids=["gcp", "no-tag-key", "azure-no-scope", "lag-text", "lag-negative", "interval-zero", "nan", "float", "zero"],
)
def test_invalid_billing_settings_say_which_and_why(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"SCRIPTRUN_BILLING": "aws", "SCRIPTRUN_BILLING_TAG_KEY": KEY, **env}
    with pytest.raises(BillingConfigError) as err:
        BillingConfig.from_env(env)
    assert str(err.value).startswith(message), err.value
    # the operator's settings never fail for them: billing stays off and start-up logs why
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = OperatorConfig.from_env()
    assert config.billing is None and config.billing_error == str(err.value)


# --- the reconciler, against moto's Cost Explorer ------------------------------------------------


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake AWS credentials (tests/support/aws.py), and no billing settings from the environment."""
    fake_credentials(monkeypatch, tmp_path)
    for name in [n for n in os.environ if n.startswith(("SCRIPTRUN_BILLING", "SCRIPTRUN_AZURE_BILLING"))]:
        monkeypatch.delenv(name)


@pytest.fixture
def ce() -> Iterator[Any]:
    with mock_aws():
        yield boto3.session.Session().client("ce", region_name="us-east-1")


def result(day: str, *groups: tuple[str, str], next_token: str | None = None) -> dict[str, Any]:
    following = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    page: dict[str, Any] = {
        "GroupDefinitions": [{"Type": "TAG", "Key": KEY}],
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": day, "End": following},
                "Total": {},
                "Groups": [
                    {"Keys": [f"{KEY}${v}"], "Metrics": {"UnblendedCost": {"Amount": a, "Unit": "USD"}}}
                    for v, a in groups
                ],
                "Estimated": False,
            }
        ],
        "DimensionValueAttributes": [],
    }
    if next_token:
        page["NextPageToken"] = next_token
    return page


class FakeBodies:
    """The ScriptRun controller's bodies, as the reconciler reads them."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.bodies = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies}

    def snapshot(self) -> list[dict[str, Any]]:
        return list(self.bodies.values())

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        return self.bodies.get(key)

    def update(self, key: tuple[str, str], incoming: dict[str, Any]) -> None:
        if key in self.bodies:
            self.bodies[key] = incoming


class FakeApi:
    """The status patches, applied as the API server would (a merge patch of status)."""

    def __init__(self, bodies: FakeBodies) -> None:
        self.stored = {k: copy.deepcopy(b) for k, b in bodies.bodies.items()}
        self.patches: list[Patch] = []
        self.down = False

    async def apply(self, ops: list[Operation]) -> list[Outcome]:
        if self.down:
            raise ConnectionError("the API server is unreachable")
        outcomes = []
        for op in ops:
            assert isinstance(op, Patch) and op.status and op.kind == "ScriptRun"
            self.patches.append(op)
            body = self.stored.get((op.namespace, op.name))
            if body is None:
                outcomes.append(Outcome(op))  # 404: None
                continue
            body["status"]["cost"]["actual"] = op.patch["cost"]["actual"]
            body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
            outcomes.append(Outcome(op, body=copy.deepcopy(body)))
        return outcomes


def reconciler(
    bodies: FakeBodies, api: FakeApi, factory: Callable[[int], BillingLookup], max_requests: int = 10
) -> BillingReconciler:
    return BillingReconciler(
        api.apply,
        bodies,
        factory,
        tag_key=KEY,
        lag=LAG,
        interval=0.05,
        max_requests_per_pass=max_requests,
        now=lambda: NOW,
    )


def aws(client: Any, made: list[AwsBilling] | None = None) -> Callable[[int], BillingLookup]:
    def factory(allowed: int) -> BillingLookup:
        lookup = AwsBilling(client=client, max_requests=allowed)
        if made is not None:
            made.append(lookup)
        return lookup

    return factory


def test_a_pass_records_what_cost_explorer_billed(ce: Any) -> None:
    queue(result("2026-11-19", ("pool-1", "0.0981234"), ("pool-2", "0.0200")))
    bodies = FakeBodies(
        scriptrun_body("a"),
        scriptrun_body("b"),
        scriptrun_body("c", "pool-2"),
        scriptrun_body("d", "pool-3"),  # nothing billed
        scriptrun_body("plain", tag=None),
        scriptrun_body("running", "pool-4", end=None),
        scriptrun_body("recent", "pool-5", end="2026-11-22T10:00:00Z"),
    )
    api = FakeApi(bodies)
    made: list[AwsBilling] = []
    billing = reconciler(bodies, api, aws(ce, made))
    report = asyncio.run(billing.run_pass())
    assert report == PassReport(queries=1, asked=1, failed=0, requests=1, recorded=4)
    assert [lookup.max_requests for lookup in made] == [10]  # the pass's whole budget, for one query
    actual = {p.name: p.patch["cost"]["actual"] for p in api.patches}
    assert set(actual) == {"a", "b", "c", "d"}
    assert all(p.patch == {"cost": {"actual": actual[p.name]}} for p in api.patches)  # nothing else is written
    assert actual["a"]["amount"] == actual["b"]["amount"] == "0.0981234" and actual["a"]["runsSharing"] == 2
    assert actual["c"] == {
        "amount": "0.0200",
        "currency": "USD",
        "source": "aws-cost-explorer",
        "at": "2026-11-22T10:30:00Z",
        "tag": "scriptrun-run=pool-2",
        "periodStart": "2026-11-19",
        "periodEnd": "2026-11-20",
        "runsSharing": 1,
    }
    assert actual["d"]["amount"] == "0" and "is the tag activated" in actual["d"]["note"]
    assert bodies.bodies[("ns", "a")]["status"]["cost"]["actual"] == actual["a"]  # the patch response is kept
    # the next pass has nothing to ask
    assert asyncio.run(billing.run_pass()) == PassReport()
    assert len(api.patches) == 4


def days(n: int) -> list[dict[str, Any]]:
    return [
        scriptrun_body(f"r{i}", f"v{i}", start=f"2026-11-{10 + i}T08:00:00Z", end=f"2026-11-{10 + i}T09:00:00Z")
        for i in range(n)
    ]


def test_the_request_budget_of_a_pass_is_honoured(ce: Any, caplog: pytest.LogCaptureFixture) -> None:
    queue(*(result(f"2026-11-{10 + i}", (f"v{i}", "0.01")) for i in range(3)))
    bodies = FakeBodies(*days(3))
    api = FakeApi(bodies)
    made: list[AwsBilling] = []
    billing = reconciler(bodies, api, aws(ce, made), max_requests=2)
    with caplog.at_level(logging.WARNING, logger="scriptrun.controllers.billing"):
        report = asyncio.run(billing.run_pass())
    assert report == PassReport(queries=3, asked=2, failed=0, requests=2, recorded=2, left=1)
    assert [lookup.max_requests for lookup in made] == [2, 1]  # what was left of the budget, each time
    assert sorted(p.name for p in api.patches) == ["r0", "r1"]  # the oldest first
    assert "request budget of 2 a pass is used up; 1 tag values (1 runs) wait for the next pass" in caplog.text
    report = asyncio.run(billing.run_pass())  # the next pass goes on where this one stopped
    assert report == PassReport(queries=1, asked=1, failed=0, requests=1, recorded=1)
    assert [p.name for p in api.patches][-1] == "r2"


def test_a_multi_page_answer_cannot_overrun_the_budget(ce: Any, caplog: pytest.LogCaptureFixture) -> None:
    queue(result("2026-11-19", ("pool-1", "0.01"), next_token="page-2"), result("2026-11-19", ("pool-1", "0.02")))
    bodies = FakeBodies(scriptrun_body("a"))
    api = FakeApi(bodies)
    billing = reconciler(bodies, api, aws(ce), max_requests=1)
    report = asyncio.run(billing.run_pass())
    assert report == PassReport(queries=1, asked=1, failed=1, requests=1, recorded=0)
    assert api.patches == []
    assert "request budget ran out in the middle of it" in caplog.text and "RequestBudgetExceeded" in caplog.text
    # with two requests a pass both pages are read and summed
    billing = reconciler(bodies, api, aws(ce), max_requests=2)
    assert asyncio.run(billing.run_pass()).recorded == 1
    assert api.patches[0].patch["cost"]["actual"]["amount"] == "0.03"


def test_a_failing_billing_api_leaves_runs_unreconciled_and_the_loop_alive(
    ce: Any, caplog: pytest.LogCaptureFixture
) -> None:
    queue(result("2026-11-19", ("pool-1", "0.5")))
    failing = boto3.session.Session().client("ce", region_name="us-east-1")
    stub = Stubber(failing)
    stub.add_client_error("get_cost_and_usage", "AccessDeniedException", "not authorized to ce:GetCostAndUsage")
    stub.activate()
    asked: list[int] = []

    def factory(allowed: int) -> BillingLookup:
        asked.append(allowed)
        return AwsBilling(client=failing if len(asked) == 1 else ce, max_requests=allowed)

    bodies = FakeBodies(scriptrun_body("a"))
    api = FakeApi(bodies)
    billing = reconciler(bodies, api, factory)

    async def main() -> None:
        billing.start(first_after=0)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if api.patches:
                break
        assert billing.running  # the failure did not end the loop
        await billing.close()
        assert not billing.running

    asyncio.run(main())
    assert len(asked) == 2  # failed once, asked again at the next pass
    assert "AccessDeniedException" in caplog.text and "retried at the next pass" in caplog.text
    assert [p.patch["cost"]["actual"]["amount"] for p in api.patches] == ["0.5"]
    assert billing.failures == {}  # a success forgets the failures


def test_an_unreachable_api_server_fails_the_pass_not_the_loop(ce: Any, caplog: pytest.LogCaptureFixture) -> None:
    queue(result("2026-11-19", ("pool-1", "0.5")))
    bodies = FakeBodies(scriptrun_body("a"))
    api = FakeApi(bodies)
    api.down = True
    billing = reconciler(bodies, api, aws(ce))

    async def main() -> None:
        billing.start(first_after=0)
        await asyncio.sleep(0.03)
        assert billing.running
        api.down = False
        for _ in range(100):
            await asyncio.sleep(0.02)
            if any(b["status"]["cost"].get("actual") for b in bodies.bodies.values()):
                break
        await billing.close()

    asyncio.run(main())
    assert "recording the actual cost failed, asked again at the next pass: ConnectionError" in caplog.text
    assert "Traceback" not in caplog.text
    assert bodies.bodies[("ns", "a")]["status"]["cost"]["actual"]["amount"] == "0.5"


def test_a_value_that_keeps_failing_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def broken(allowed: int) -> BillingLookup:
        calls.append(allowed)
        raise RuntimeError("no credentials")

    bodies = FakeBodies(scriptrun_body("a"), scriptrun_body("b", "pool-2", start="2026-11-18T08:00:00Z"))
    billing = reconciler(bodies, FakeApi(bodies), broken)
    for _ in range(GIVE_UP_AFTER):
        assert asyncio.run(billing.run_pass()).failed == 2
    assert asyncio.run(billing.run_pass()) == PassReport()
    assert len(calls) == 2 * GIVE_UP_AFTER
    assert "scriptrun-run=pool-1 failed 4 passes in a row; not asked about again" in caplog.text


def test_runs_that_vanish_or_are_replaced_meanwhile_are_skipped(ce: Any) -> None:
    queue(result("2026-11-19", ("pool-1", "0.3")))
    bodies = FakeBodies(scriptrun_body("a"), scriptrun_body("b"), scriptrun_body("c"))
    api = FakeApi(bodies)

    def factory(allowed: int) -> BillingLookup:
        del bodies.bodies[("ns", "a")]  # deleted while the provider was asked
        replaced = scriptrun_body("b")
        replaced["metadata"]["uid"] = "uid-b-2"  # deleted and created again under its name
        bodies.bodies[("ns", "b")] = replaced
        return AwsBilling(client=ce, max_requests=allowed)

    report = asyncio.run(reconciler(bodies, api, factory).run_pass())
    assert [p.name for p in api.patches] == ["c"] and report.recorded == 1
    assert api.patches[0].patch["cost"]["actual"]["runsSharing"] == 3  # the capacity served all three


def test_a_patch_answered_404_is_not_counted(ce: Any) -> None:
    queue(result("2026-11-19", ("pool-1", "0.3")))
    bodies = FakeBodies(scriptrun_body("a"))
    api = FakeApi(bodies)
    api.stored.clear()  # gone from the API server, not yet from the watch
    assert asyncio.run(reconciler(bodies, api, aws(ce)).run_pass()).recorded == 0
    assert not bodies.bodies[("ns", "a")]["status"]["cost"].get("actual")


def test_at_is_when_the_provider_was_asked() -> None:
    other = timezone(timedelta(hours=2))
    record = actual_costs(
        query_of(run("a", "v")), {}, tag_key=KEY, source="s", at=datetime(2026, 11, 22, 12, 0, tzinfo=other)
    )[("ns", "a")].status()
    assert record["at"] == "2026-11-22T10:00:00Z"


def test_a_pass_that_breaks_is_logged_and_the_next_one_comes(ce: Any, caplog: pytest.LogCaptureFixture) -> None:
    queue(result("2026-11-19", ("pool-1", "0.5")))

    class Flaky(FakeBodies):
        calls = 0

        def snapshot(self) -> list[dict[str, Any]]:
            self.calls += 1
            if self.calls == 1:
                raise KeyError("a bug")
            return super().snapshot()

    bodies = Flaky(scriptrun_body("a"))
    api = FakeApi(bodies)
    billing = reconciler(bodies, api, aws(ce))

    async def main() -> None:
        billing.start(first_after=0)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if api.patches:
                break
        await billing.close()

    asyncio.run(main())
    assert "billing reconciliation pass failed; next pass in 0 s" in caplog.text
    assert [p.name for p in api.patches] == ["a"]


def test_the_configured_provider_lookups_share_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from scriptrun.controllers.billing import billing_factory
    from scriptrun.pricing.azure import AzureBilling

    monkeypatch.setenv("AWS_ENDPOINT_URL_COST_EXPLORER", "http://127.0.0.1:9")
    aws_lookups = billing_factory(BillingConfig("aws", KEY))
    first, second = aws_lookups(4), aws_lookups(1)
    assert isinstance(first, AwsBilling) and isinstance(second, AwsBilling)
    assert (first.max_requests, second.max_requests) == (4, 1)
    assert first.client() is second.client() and first.client().meta.endpoint_url == "http://127.0.0.1:9"
    azure_lookups = billing_factory(BillingConfig("azure", KEY, azure_scope="subscriptions/0000"))
    one, two = azure_lookups(3), azure_lookups(2)
    assert isinstance(one, AzureBilling) and isinstance(two, AzureBilling)
    assert (one.scope, one.max_requests, two.max_requests) == ("subscriptions/0000", 3, 2)
    assert one.client is two.client
    with pytest.raises(ValueError, match="unknown billing provider 'gcp'"):
        billing_factory(BillingConfig("gcp", KEY))
