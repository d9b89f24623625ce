"""The newest body known of each object, and the index views the controllers read."""

from __future__ import annotations

import json
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

Key = tuple[str, str]  # (namespace, name)
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class ChildChanged:
    """What the ScriptRun controller tells the Workflow controller (through the callback wired at
    start-up): a workflow's child run changed what its workflow reads (phase, why it waits), or went."""

    namespace: str
    workflow: str


class IndexView(Protocol[T_co]):
    """What a controller reads of a Kopf index: key -> the values stored under it."""

    def __contains__(self, key: object) -> bool: ...
    def __getitem__(self, key: Key) -> Iterable[T_co]: ...


def values_of(index: IndexView[T_co] | Mapping[Key, Iterable[T_co]] | None, key: Key) -> list[T_co]:
    if index is None or key not in index:
        return []
    return list(index[key])


def owner_ref(body: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The controller owner reference of `kind` on `body`, if any."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return dict(ref)
    return None


def has_values(index: IndexView[T_co] | None, key: Key) -> bool:
    """Whether the index holds anything under `key` (without copying what it holds)."""
    return index is not None and key in index and any(True for _ in index[key])


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(body: dict[str, Any]) -> dict[str, Any]:
    """The body without what no controller reads and what costs the most memory per object kept:
    managedFields, and kubectl's copy of the whole applied manifest (a second spec)."""
    meta = body.get("metadata")
    if not isinstance(meta, dict) or (
        "managedFields" not in meta and LAST_APPLIED not in (meta.get("annotations") or {})
    ):
        return body
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if LAST_APPLIED in (meta.get("annotations") or {}):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != LAST_APPLIED}
    return {**body, "metadata": meta}


SHORT = 32  # string values up to this long are shared between bodies too: phases, reasons, kinds, booleans


def compact(value: Any) -> Any:
    """A copy of a JSON value whose dict keys (and short strings) are shared with every other body
    kept: each watch event is a fresh parse, with its own copy of every "metadata", "status",
    "lastTransitionTime" ... Thousands of bodies kept hold the same few hundred strings once."""
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if type(value) is str and len(value) <= SHORT:
        return sys.intern(value)
    return value


def pack(value: dict[str, Any]) -> bytes:
    """A small JSON object as compact JSON bytes: a fifth of its size as Python dicts and strings."""
    return json.dumps(value, separators=(",", ":")).encode()


def unpack(value: bytes | dict[str, Any]) -> dict[str, Any]:
    """What pack() packed (a dict given is returned as it is)."""
    if isinstance(value, bytes):
        unpacked: dict[str, Any] = json.loads(value)
        return unpacked
    return value


class Packed(NamedTuple):
    """One body kept packed: compressed JSON, and what is read of every body without unpacking."""

    version: int | None  # metadata.resourceVersion (None: unreadable, so the next body replaces it)
    uid: str
    phase: str | None
    blob: bytes


def _version(body: dict[str, Any]) -> int | None:
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


class Bodies:
    """Keep the newest body known per key (a late watch event never replaces our own, newer patch
    response).

    `packed`: keep each body as zlib-compressed JSON (about 0.8 KB for a finished ScriptRun, against
    some 4 KB as Python objects even with compact()); get() unpacks a fresh copy (tens of
    microseconds). For ScriptRuns, of which there are thousands; Workflows, fewer and bigger and
    read on every child's change, stay plain (compacted) dicts until they finish: `packed` may be a
    test of the body (pack this one?)."""

    def __init__(self, *, packed: bool | Callable[[dict[str, Any]], bool] = False) -> None:
        self._packed = packed
        self._bodies: dict[Key, dict[str, Any] | Packed] = {}

    @staticmethod
    def _unpack(kept: dict[str, Any] | Packed) -> dict[str, Any]:
        return unpack(zlib.decompress(kept.blob)) if isinstance(kept, Packed) else kept

    def _pack(self, body: dict[str, Any]) -> dict[str, Any] | Packed:
        body = slim(body)
        if not (self._packed(body) if callable(self._packed) else self._packed):
            kept: dict[str, Any] = compact(body)
            return kept
        phase = (body.get("status") or {}).get("phase")
        return Packed(
            _version(body),
            sys.intern(str((body.get("metadata") or {}).get("uid"))),
            sys.intern(phase) if isinstance(phase, str) else None,
            zlib.compress(pack(body), 1),
        )

    def get(self, key: Key) -> dict[str, Any] | None:
        kept = self._bodies.get(key)
        return None if kept is None else self._unpack(kept)

    def values(self) -> list[dict[str, Any]]:
        """Every body kept, as a list (the caller may await while holding it)."""
        return [self._unpack(kept) for kept in list(self._bodies.values())]

    def __contains__(self, key: object) -> bool:
        return key in self._bodies

    def __len__(self) -> int:
        return len(self._bodies)

    def kept_bytes(self) -> int:
        """What the packed bodies take (their compressed JSON)."""
        return sum(len(k.blob) for k in self._bodies.values() if isinstance(k, Packed))

    def count_phases(self, kind: str, decided: Mapping[str, str] | None = None) -> Counter[tuple[str, str]]:
        """(kind, phase) -> how many objects (for the metrics); `decided`: a newer phase by uid."""
        counts: Counter[tuple[str, str]] = Counter()
        for kept in list(self._bodies.values()):  # called from the metrics server's thread: a snapshot
            if isinstance(kept, Packed):
                uid, phase = kept.uid, kept.phase
            else:
                uid = str(kept.get("metadata", {}).get("uid"))
                phase = (kept.get("status") or {}).get("phase")
            counts[(kind, str((decided or {}).get(uid) or phase or "Pending"))] += 1
        return counts

    def forget(self, key: Key) -> None:
        self._bodies.pop(key, None)

    def store(self, key: Key, incoming: dict[str, Any]) -> bool:
        """Returns True when `incoming` is nothing new: the echo of what we stored (our own patch or
        create), or older than it (a late watch event)."""
        known = self._bodies.get(key)
        if known is not None:
            old_rv = known.version if isinstance(known, Packed) else _version(known)
            new_rv = _version(incoming)
            if old_rv is not None and new_rv is not None and new_rv <= old_rv:
                return True
        self._bodies[key] = self._pack(incoming)
        return False

    def update(self, key: Key, incoming: dict[str, Any]) -> None:
        """Our own write's response: newer than anything the watch brought, if we still track it."""
        if key in self._bodies:
            self.store(key, incoming)
