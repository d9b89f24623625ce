"""Our pods, watched without Kopf: a list (or a watch-list) and a watch per scope, each event reduced
to a small snapshot as soon as its line is parsed.

Why not Kopf here: Kopf queues every raw event (the whole pod, some 30 KB as Python objects) per
object until that object's worker takes it, and keeps a record per object. With the operator's CPU
saturated at 10,000 runs the queued pods were most of its peak memory (issue 11). Here each event is
parsed, indexed and dropped in one step; while the event loop is busy, the unread events wait in the
socket (and the API server's watch cache), not in our memory.

The index (`PodIndex`): run key -> {pod name: packed snapshot}, read by both controllers through
`IndexView`. `synced` is set once every scope has been listed in full: the controllers wait for it
before their first reconcile, so that a restarted operator never takes a run's pod for lost (and
creates another) because it has not read it yet: what Kopf's index readiness did before.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from typing import Any

from scriptrun.build import names
from scriptrun.controllers.bodies import Key, owner_ref, pack
from scriptrun.k8s.api import Kube
from scriptrun.k8s.errors import Gone, KubeError

log = logging.getLogger(__name__)

KIND = "ScriptRun"
MAX_BACKOFF = 8.0  # seconds between tries of a broken watch, at most: short, so recovery is quick
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
POD_STATUS_KEPT = ("phase", "reason", "message", "conditions", "startTime")
CONTAINER_STATUS_KEPT = ("name", "state", "lastState", "restartCount")
PodEventFn = Callable[[str | None, dict[str, Any]], None]


def pod_selector(shard_selector: str = "") -> str:
    """The server-side selector of the pods this operator watches: ours, of its shard only."""
    ours = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
    return f"{ours},{shard_selector}" if shard_selector else ours


def _pod_status(status: dict[str, Any]) -> dict[str, Any]:
    """The part of a pod's status the engine reads (engine/observe.py): with 10,000 pods indexed the
    rest (IPs, images, resources, volume mounts of each container) was most of the operator's memory."""
    kept = {k: status[k] for k in POD_STATUS_KEPT if k in status}
    for key in ("containerStatuses", "initContainerStatuses"):
        if key in status:
            kept[key] = [{k: c[k] for k in CONTAINER_STATUS_KEPT if k in c} for c in status[key] or []]
    return kept


def pod_snapshot(body: dict[str, Any]) -> tuple[Key, dict[str, Any]] | None:
    """What the pods index keeps of one of our pods: its run's key and a small snapshot (name,
    labels, deletion, owner uid, status)."""
    ref = owner_ref(body, KIND)
    meta = body.get("metadata", {})
    namespace = meta.get("namespace")
    if ref is None or namespace is None:
        return None
    snapshot = {
        "metadata": {
            "name": meta.get("name"),
            "labels": dict(meta.get("labels") or {}),
            "deletionTimestamp": meta.get("deletionTimestamp"),
            # a run deleted and created again under the same name must not adopt its
            # predecessor's pods (garbage collection removes them a little later)
            "ownerUid": ref.get("uid"),
        },
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": _pod_status(body.get("status") or {}),
    }
    return (namespace, str(ref["name"])), snapshot


class PodIndex:
    """Run key -> its pods' packed snapshots (an `IndexView[bytes]`)."""

    def __init__(self) -> None:
        self._by_run: dict[Key, dict[str, bytes]] = {}
        self._owner: dict[Key, tuple[Key, str | None]] = {}  # pod key -> (run key, run uid)
        self.synced = asyncio.Event()

    def __contains__(self, key: object) -> bool:
        return key in self._by_run

    def __getitem__(self, key: Key) -> list[bytes]:
        return list(self._by_run[key].values())

    def __len__(self) -> int:
        return len(self._owner)

    def put(self, body: dict[str, Any]) -> bool:
        """Index one of our pods (False: not a run's pod, ignored)."""
        found = pod_snapshot(body)
        if found is None:
            return False
        run_key, snapshot = found
        pod_key = (run_key[0], str(snapshot["metadata"]["name"]))
        self.drop(pod_key)  # its owner never changes; dropped first all the same, to keep one entry
        self._by_run.setdefault(run_key, {})[pod_key[1]] = pack(snapshot)
        self._owner[pod_key] = (run_key, snapshot["metadata"]["ownerUid"])
        return True

    def drop(self, pod_key: Key) -> None:
        owner = self._owner.pop(pod_key, None)
        if owner is None:
            return
        pods = self._by_run.get(owner[0])
        if pods is not None:
            pods.pop(pod_key[1], None)
            if not pods:
                del self._by_run[owner[0]]

    def pods_in(self, namespace: str | None) -> Iterator[tuple[Key, Key, str | None]]:
        """(pod key, run key, run uid) of every pod indexed in `namespace` (None: all)."""
        for pod_key, (run_key, uid) in list(self._owner.items()):
            if namespace is None or pod_key[0] == namespace:
                yield pod_key, run_key, uid


def gone_body(pod_key: Key, run_key: Key, uid: str | None) -> dict[str, Any]:
    """What a DELETED event of a pod that went unseen (while the watch was down) says of it."""
    ref = {"kind": KIND, "name": run_key[1], "uid": uid, "controller": True}
    return {"metadata": {"namespace": pod_key[0], "name": pod_key[1], "ownerReferences": [ref]}}


class PodWatch:
    """Keeps `index` in step with the API server and tells `on_event` of each change, per scope (a
    namespace, or the whole cluster): list (or watch-list), then watch from there; a watch that ends
    is resumed from its last resourceVersion, one that expired (410) starts over with a list, and
    what the new list lacks is told as DELETED. Errors back off 1 s .. 8 s (one request a scope,
    cheap) and never stop it."""

    def __init__(
        self,
        kube: Kube,
        index: PodIndex,
        on_event: PodEventFn,
        *,
        namespaces: list[str],
        selector: str,
        initial_events: bool = False,
        read_timeout: float = 70,
    ) -> None:
        self.kube, self.index, self.on_event = kube, index, on_event
        self.scopes: list[str | None] = list(namespaces) or [None]
        self.selector = selector
        self.initial_events = initial_events
        self.read_timeout = read_timeout
        self._pending: set[str | None] = set(self.scopes)  # scopes not yet listed once
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(s), name=f"pods watch {s or '*'}") for s in self.scopes]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _event(self, event_type: str | None, body: dict[str, Any]) -> None:
        if event_type == "DELETED":
            meta = body.get("metadata") or {}
            self.index.drop((str(meta.get("namespace")), str(meta.get("name"))))
        elif not self.index.put(body):
            return
        self.on_event(event_type, body)

    def _listed(self, scope: str | None, seen: set[Key]) -> None:
        """A full list of `scope` is in: what the index holds there and the list lacks went away."""
        for pod_key, run_key, uid in list(self.index.pods_in(scope)):
            if pod_key not in seen:
                self._event("DELETED", gone_body(pod_key, run_key, uid))
        if scope in self._pending:
            self._pending.discard(scope)
            if not self._pending:
                log.info("pods listed: %d of ours", len(self.index))
                self.index.synced.set()

    async def _run(self, scope: str | None) -> None:
        delay = 1.0
        version: str | None = None  # None: list (again) first
        while True:
            try:
                if version is None:
                    version = await (self._stream_initial(scope) if self.initial_events else self._list(scope))
                began = time.monotonic()
                version = await self._watch(scope, version)
                if time.monotonic() - began > 1:
                    delay = 1.0
                    continue
                await asyncio.sleep(delay)  # ended at once: do not ask again in a tight loop
                delay = min(delay * 2, MAX_BACKOFF)
            except Gone:
                log.info("pods watch (%s): resourceVersion expired, listing again", scope or "all namespaces")
                version = None
            except KubeError as err:
                log.warning("pods watch (%s): %s; again in %.0f s", scope or "all namespaces", err, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, MAX_BACKOFF)

    async def _list(self, scope: str | None) -> str:
        seen: set[Key] = set()
        token: str | None = None
        while True:
            items, version, token = await self.kube.list_pods_page(scope, self.selector, token)
            for body in items:
                meta = body.get("metadata") or {}
                seen.add((str(meta.get("namespace")), str(meta.get("name"))))
                self._event(None, body)
            del items
            if token is None:
                self._listed(scope, seen)
                return version

    async def _stream_initial(self, scope: str | None) -> str:
        """A watch-list: the current pods streamed as ADDED events up to the initial-events-end
        bookmark, then the watch goes on from there (the caller resumes it at the version returned)."""
        seen: set[Key] = set()
        watch = self.kube.watch_pods(
            scope, self.selector, resource_version="", initial_events=True, read_timeout=self.read_timeout
        )
        async with aclosing(watch) as events:
            async for event in events:
                kind, body = event.get("type"), event.get("object") or {}
                meta = body.get("metadata") or {}
                if kind == "ERROR":
                    raise _error(body)
                if kind == "BOOKMARK":
                    if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                        self._listed(scope, seen)
                        return str(meta.get("resourceVersion") or "")
                    continue
                seen.add((str(meta.get("namespace")), str(meta.get("name"))))
                self._event(None, body)
        raise _ended_early()

    async def _watch(self, scope: str | None, version: str) -> str:
        """Watch from `version` until the server ends it; returns the last version seen."""
        watch = self.kube.watch_pods(scope, self.selector, resource_version=version, read_timeout=self.read_timeout)
        async with aclosing(watch) as events:
            async for event in events:
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise _error(body)
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    self._event(kind, body)
        return version


def _error(status: dict[str, Any]) -> KubeError:
    """An ERROR event's Status: 410 (the version expired) as Gone, anything else as a retry."""
    code = int(status.get("code") or 0)
    reason, message = str(status.get("reason") or "Error"), str(status.get("message") or "")
    return Gone(code, reason, message) if code == 410 else KubeError(code, reason, message)


def _ended_early() -> KubeError:
    return KubeError(0, "WatchEnded", "the watch ended before its initial events did")
