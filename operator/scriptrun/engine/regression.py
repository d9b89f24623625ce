"""Regressions across runs (pure): a finished run's usage against the history of its key.

Robust statistics, so one odd run in the history moves nothing: the median, and the median absolute
deviation (MAD) scaled by 1.4826 (a normal distribution's standard deviation). A field regressed
when its value is above median + tolerance x scaled MAD and at least minIncreasePercent above the
median; the second test keeps a job whose history is nearly constant (MAD about 0) from being flagged
for a few milliseconds. Only successful runs with measured usage are judged and recorded."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scriptrun.model.regression import Regression, RegressionCheck

MAD_TO_SIGMA = 1.4826
HISTORY_DATA_KEY = "history.json"
CONDITION = "Regressed"


def history_key(
    check: RegressionCheck, *, name: str, generate_name: str | None, workflow: str | None, task: str | None
) -> str:
    """Whose history a run belongs to (see RegressionCheck.key)."""
    if check.key:
        return check.key
    if workflow and task:
        return f"{workflow}.{task}"
    return (generate_name or "").rstrip("-.") or name


@dataclass
class History:
    """The last runs of one key: [{"uid", "name", "at", "values": {field: value}}], oldest first."""

    key: str
    runs: list[dict[str, Any]]

    @classmethod
    def parse(cls, key: str, text: str | None) -> History:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            data = {}
        runs = data.get("runs") if isinstance(data, dict) else None
        good = [r for r in runs or [] if isinstance(r, dict) and isinstance(r.get("values"), dict)]
        return cls(key, good)

    def dump(self) -> str:
        return json.dumps({"key": self.key, "runs": self.runs}, separators=(",", ":"))

    def without(self, uid: str) -> History:
        return History(self.key, [r for r in self.runs if r.get("uid") != uid])

    def recorded(self, uid: str, name: str, at: str, values: Mapping[str, float], limit: int) -> History:
        """With this run appended (once: a uid already there is replaced), the oldest dropped past `limit`."""
        runs = [*self.without(uid).runs, {"uid": uid, "name": name, "at": at, "values": dict(values)}]
        return History(self.key, runs[-limit:])


def measured(check: RegressionCheck, usage: Mapping[str, Any] | None) -> dict[str, float]:
    """The checked fields the usage has, as numbers (none when the monitor measured nothing)."""
    if not usage or usage.get("available") is False:
        return {}
    out: dict[str, float] = {}
    for field in check.fields:
        value = usage.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[field] = float(value)
    return out


def judge(check: RegressionCheck, values: Mapping[str, float], history: History) -> list[Regression] | None:
    """Each measured field against the history's same field; None while the history is shorter than minRuns."""
    out = []
    for field, value in values.items():
        past = [float(r["values"][field]) for r in history.runs if isinstance(r["values"].get(field), int | float)]
        past = past[-check.history :]
        if len(past) < check.min_runs:
            return None
        median = statistics.median(past)
        mad = round(statistics.median(abs(v - median) for v in past), 9)  # 0.1, not 0.09999999999999987
        ceiling = median + check.tolerance * MAD_TO_SIGMA * mad
        regressed = value > ceiling and value >= median * (1 + check.min_increase_percent / 100)
        out.append(Regression(field=field, value=value, median=median, mad=mad, runs=len(past), regressed=regressed))
    return out


def describe(found: list[Regression]) -> str:
    """`executionTimeSeconds 8.1 against a median of 4.0 (MAD 0.1, 6 runs)` for each regressed field."""
    parts = [
        f"{r.field} {r.value:g} against a median of {r.median:g} (MAD {r.mad:g}, {r.runs} runs)"
        for r in found
        if r.regressed
    ]
    return "; ".join(parts)
