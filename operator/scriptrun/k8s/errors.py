"""The one policy for what the API server answers: operator and CLI alike, through `Kube`.

Every failure becomes one of our exceptions, its Status body (`reason`, `message`) parsed here,
once; nothing above k8s/ sees a kubernetes_asyncio or aiohttp exception.

    answer                              exception       what `Kube` does with it
    404 NotFound                        NotFound        get -> None; delete -> ignored; patch -> None
    409 AlreadyExists (on create)       AlreadyExists   create -> False / None ("already there")
    409 Conflict (stale version)        Conflict        raised, never retried: the caller re-reads
                                                        and decides (our own writes are merge patches
                                                        without resourceVersion, which never conflict)
    410 Gone (expired continue/watch)   Gone            raised: list again from the start
    other 4xx (400, 401, 403, 422 ...)  ApiError        raised: a refusal; the same request would be
                                                        refused again (401 also renews the token)
    429, 5xx, reason TooManyRequests    Unavailable     retried, then raised (below)
    no answer (connection, timeout)     Unavailable     status 0; retried, then raised (below)

Retries (`Retry`): at most `attempts` tries in all, waiting the answer's Retry-After header (or the
Status's details.retryAfterSeconds) when there is one, else 0.5 s, 1 s, 2 s ...; every wait is cut
to `max_delay` and slept with asyncio. 429 is always retried (the server did not process the
request); a 5xx or a lost connection only when the request is idempotent (reads, deletes, merge
patches, creates with a fixed name, whose repeat reads as AlreadyExists) or the answer carried
Retry-After (the server's word that it did not process it). A generateName create is not repeated.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

T = TypeVar("T")


class KubeError(Exception):
    """Any failure of a request to the API server; `status` 0 when no answer came."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.retry_after = retry_after


class ApiError(KubeError):
    """A refusal (4xx other than 429): sending the same request again would be refused again."""


class NotFound(ApiError):
    """404: the object (or its namespace) is not there."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: a create found the name taken."""


class Conflict(ApiError):
    """409 other than AlreadyExists: an update carried a stale resourceVersion."""


class Gone(ApiError):
    """410: a list's continue token or a watch's resourceVersion expired; list again from the start."""


class Unavailable(KubeError):
    """429, 5xx or no answer at all, still so after the retries."""


@dataclass(frozen=True)
class Retry:
    attempts: int = 4  # tries in all, the first one included
    first_delay: float = 0.5  # without Retry-After: 0.5, 1, 2 s ...
    max_delay: float = 10.0  # no wait is longer, whatever Retry-After says
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait after failed try number `attempt` (1-based)."""
        wanted = retry_after if retry_after is not None else self.first_delay * 2 ** (attempt - 1)
        return max(0.0, min(wanted, self.max_delay))


def from_response(
    status: int, reason: str | None, body: bytes | str | None, headers: Mapping[str, str] | None = None
) -> KubeError:
    """Our exception for a non-2xx answer: its status, the Status body's reason and message."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body or ""
    try:
        data: Any = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    why = str(data.get("reason") or reason or "")
    message = str(data.get("message") or text[:500] or why or f"HTTP {status}")
    if status == 404:
        cls: type[KubeError] = NotFound
    elif status == 409:
        cls = AlreadyExists if why == "AlreadyExists" else Conflict
    elif status == 410:
        cls = Gone
    elif status == 429 or status >= 500 or why == "TooManyRequests" or _starting(status, message):
        cls = Unavailable
    elif 400 <= status < 500:
        cls = ApiError
    else:
        cls = KubeError
    return cls(status, why, message, retry_after=_retry_after(headers, data))


NOT_READY = "not yet ready to handle request"


AUTHORIZER_DENIAL = re.compile(r'^\S+ is forbidden: User ".*" cannot \S+ resource ')


def _starting(status: int, message: str) -> bool:
    """An API server that has just (re)started refuses requests with a 403 until its caches have
    synced: its admission plugins' (NamespaceLifecycle: "not yet ready to handle request") and its
    RBAC authorizer's (`pods is forbidden: User "..." cannot create resource "pods" ...`, before it
    has read the bindings). A moment's wait, not a refusal of the object: both were seen in the chaos
    test, where they failed pods for good. The authorizer's denial is retried whatever its cause: a
    refusal of the operator's own permissions is no fault of the run, and the reconcile backs off
    (1 s .. 60 s) and logs it, as client-go controllers do. A refusal of the object itself
    (PodSecurity, quota, a webhook: `pods "x" is forbidden: ...`) names the object and stays final."""
    return status == 403 and (NOT_READY in message or AUTHORIZER_DENIAL.match(message) is not None)


def translate(err: ApiException) -> KubeError:
    return from_response(int(err.status or 0), err.reason, err.body, err.headers)


def _retry_after(headers: Mapping[str, str] | None, data: dict[str, Any]) -> float | None:
    value = (headers or {}).get("Retry-After")
    if value is None:
        details = data.get("details")
        value = details.get("retryAfterSeconds") if isinstance(details, dict) else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: the Kubernetes API server sends seconds
        return None


async def call(request: Callable[[], Awaitable[T]], retry: Retry, *, idempotent: bool = True) -> T:
    """`request()` under the policy: its result, or our exception once the retries are spent."""
    attempt = 1
    while True:
        try:
            try:
                return await request()
            except ApiException as err:
                raise translate(err) from None
            except (aiohttp.ClientError, TimeoutError) as err:
                raise Unavailable(
                    0, "Unreachable", f"cannot reach the API server: {err or type(err).__name__}"
                ) from err
        except Unavailable as err:
            repeatable = idempotent or err.status == 429 or err.retry_after is not None
            if attempt >= retry.attempts or not repeatable:
                raise
            await retry.sleep(retry.delay(attempt, err.retry_after))
            attempt += 1


async def lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """A watch's body, line by line (one JSON event each), however long a line is (aiohttp's own
    readline refuses lines over 128 KiB); a connection lost or stalled mid-stream is Unavailable."""
    pending = b""
    try:
        async for chunk in content.iter_any():
            pending += chunk
            if b"\n" not in chunk:
                continue
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line
    except (aiohttp.ClientError, TimeoutError) as err:
        raise Unavailable(0, "WatchCut", f"the watch stream broke: {err or type(err).__name__}") from err
    if pending.strip():
        yield pending
