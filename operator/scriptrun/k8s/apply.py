"""The one apply step: API operations as data, carried out through `Kube`, each with its outcome.

The controllers turn the engine's decisions into these operations (with the manifests `build`
makes) and hand them here; nothing else in the operator writes to the API server. This is also the
one place where per-operation metrics and trace spans belong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from scriptrun.k8s.api import PLURALS, ApiError, Kube

log = logging.getLogger(__name__)
CREATE_CONCURRENCY = 20  # creates in flight at once per apply (a wide DAG starts hundreds of children)


@dataclass(frozen=True)
class Create:
    """Create `obj` (a Pod, a ConfigMap, or one of our objects); already there is fine."""

    obj: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: str  # "Pod", "ScriptRun", "Workflow"
    namespace: str
    name: str
    grace_seconds: int | None = None  # pods only


@dataclass(frozen=True)
class DeletePods:
    namespace: str
    selector: str


@dataclass(frozen=True)
class Patch:
    """A merge patch of one of our objects' spec/metadata (`status=False`) or status subresource."""

    kind: str
    namespace: str
    name: str
    patch: dict[str, Any]
    status: bool = False


@dataclass(frozen=True)
class Emit:
    """A core/v1 Event on `obj`, posted in the background (never fails the step)."""

    obj: dict[str, Any]
    type: str
    reason: str
    message: str


Operation = Create | Delete | DeletePods | Patch | Emit


@dataclass(frozen=True)
class Outcome:
    """What one operation did. `body`: the object the API server returned (a created custom object,
    a patched status), when it returns one; `exists`: a create found the name taken (409
    AlreadyExists); `refused`: the API server refused it for good (`scriptrun.k8s.errors`: a 4xx
    other than 429, e.g. 403, 422, a Conflict, a create in a namespace that is gone)."""

    op: Operation
    body: dict[str, Any] | None = None
    exists: bool = False
    refused: ApiError | None = None
    started: float = 0.0  # wall-clock time the call began (for its trace span)
    seconds: float = 0.0  # how long it took


Record = Callable[[str, str, str, float], None]  # (operation, object kind, result, seconds)


def _object_kind(op: Operation) -> str:
    match op:
        case Create(obj=obj):
            return str(obj.get("kind"))
        case Delete(kind=kind) | Patch(kind=kind):
            return kind
        case DeletePods():
            return "Pod"
    return "Event"


def _result(outcome: Outcome) -> str:
    return "refused" if outcome.refused is not None else "exists" if outcome.exists else "ok"


async def _one(kube: Kube, op: Operation, record: Record | None = None) -> Outcome:
    started, start = time.time(), time.perf_counter()
    try:
        outcome = await _do(kube, op)
    except Exception:
        if record is not None:
            record(type(op).__name__, _object_kind(op), "error", time.perf_counter() - start)
        raise
    seconds = time.perf_counter() - start
    if record is not None:
        record(type(op).__name__, _object_kind(op), _result(outcome), seconds)
    return replace(outcome, started=started, seconds=seconds)


async def _do(kube: Kube, op: Operation) -> Outcome:
    try:
        match op:
            case Create(obj=obj):
                kind = obj.get("kind")
                if kind == "Pod":
                    return Outcome(op, exists=not await kube.create_pod(obj))
                if kind == "ConfigMap":
                    return Outcome(op, exists=not await kube.create_configmap(obj))
                created = await kube.create_custom(PLURALS[str(kind)], obj)
                return Outcome(op, body=created, exists=created is None)
            case Delete(kind="Pod", namespace=ns, name=name, grace_seconds=grace):
                if grace is None:
                    await kube.delete_pod(ns, name)
                else:
                    await kube.delete_pod(ns, name, grace_seconds=grace)
            case Delete(kind=kind, namespace=ns, name=name):
                await kube.delete_custom(PLURALS[kind], ns, name)
            case DeletePods(namespace=ns, selector=selector):
                await kube.delete_pods(ns, selector)
            case Patch(kind=kind, namespace=ns, name=name, patch=patch, status=True):
                return Outcome(op, body=await kube.patch_status(PLURALS[kind], ns, name, patch))
            case Patch(kind=kind, namespace=ns, name=name, patch=patch):
                await kube.patch_custom(PLURALS[kind], ns, name, patch)
            case Emit(obj=obj, type=etype, reason=reason, message=message):
                kube.event(obj, etype, reason, message)
    except ApiError as err:
        log.warning("%s refused: %s", type(op).__name__, err)
        return Outcome(op, refused=err)
    return Outcome(op)


async def apply(kube: Kube, ops: list[Operation], record: Record | None = None) -> list[Outcome]:
    """Carry out `ops` in order; a run of consecutive creates goes concurrently (bounded). Refusals
    come back as outcomes; other errors (the API server unreachable) propagate, and the caller's
    loop backs off and decides again from what it then observes. `record` is told of each
    operation (the metrics)."""
    outcomes: list[Outcome] = []
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def bounded(op: Operation) -> Outcome:
        async with gate:
            return await _one(kube, op, record)

    i = 0
    while i < len(ops):
        j = i
        while j < len(ops) and isinstance(ops[j], Create):
            j += 1
        if j - i > 1:
            outcomes.extend(await asyncio.gather(*(bounded(op) for op in ops[i:j])))
        else:
            j = i + 1
            outcomes.append(await _one(kube, ops[i], record))
        i = j
    return outcomes
