"""Wait before a retry (Argo's backoff, plus linear/fibonacci/fixed)."""

from __future__ import annotations

from scriptrun.model.scriptrun import Backoff

MAX_WAIT_SECONDS = 7 * 24 * 3600.0


def _fib(n: int) -> int:
    a, b = 1, 1
    for _ in range(min(n, 100) - 1):
        a, b = b, a + b
    return a


def backoff_seconds(backoff: Backoff, retry: int) -> float:
    """Seconds to wait before retry number `retry` (1 = the wait before the second attempt)."""
    if retry < 1:
        return 0.0
    base = backoff.duration_seconds
    if backoff.strategy == "fixed":
        wait = base
    elif backoff.strategy == "linear":
        wait = base * retry
    elif backoff.strategy == "fibonacci":
        wait = base * _fib(retry)
    else:
        exponent = min(retry - 1, 200)
        wait = base * backoff.factor**exponent if exponent < 200 else MAX_WAIT_SECONDS
    if backoff.cap_seconds is not None:
        wait = min(wait, backoff.cap_seconds)
    return float(min(wait, MAX_WAIT_SECONDS))
