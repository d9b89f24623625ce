"""The final summary as a termination message: compact JSON, never over the byte limit, always valid.

Truncation rule (stated once, here and in docs/monitor.md): if the JSON is too long, outputs are
replaced by an `outputsError` (a task's outputs are never cut silently); then keys are dropped in
DROP_ORDER, then every key that is not a usage field from the table; the dropped keys are listed in
"truncated". As a last resort the summary says usage is unavailable, with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from scriptrun.model.usage import BY_STATUS, SUMMARY_LIMIT_BYTES

DROP_ORDER = ("note", "memoryPssMaxMb", "memoryUssMaxMb", "error")
KEEP_ALWAYS = {"available", "truncated", "reason", "message", "outputsError"}


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def fit(summary: dict[str, Any], limit: int = SUMMARY_LIMIT_BYTES) -> bytes:
    data = dict(summary)
    data.setdefault("available", True)
    raw = _encode(data)
    if len(raw) <= limit:
        return raw
    if "outputs" in data:
        # outputs are the task's result, not decoration: past the budget they become a clear error
        outputs = data.pop("outputs")
        data["outputsError"] = (
            f"outputs ({len(_encode(outputs))} bytes) did not fit in the {limit}-byte termination message"
        )
        raw = _encode(data)
        if len(raw) <= limit:
            return raw
    dropped: list[str] = []
    for key in [*DROP_ORDER, *sorted(k for k in data if k not in BY_STATUS and k not in KEEP_ALWAYS)]:
        if key in data:
            data.pop(key)
            dropped.append(key)
            data["truncated"] = dropped
            raw = _encode(data)
            if len(raw) <= limit:
                return raw
    fallback = {
        "available": False,
        "reason": "SummaryTooLarge",
        "message": f"the usage summary did not fit in {limit} bytes",
    }
    return _encode(fallback)
