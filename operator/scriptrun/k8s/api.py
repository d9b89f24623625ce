"""The one client to the API server, for the operator and the CLI alike: create-or-get, reads, merge
patches, deletes, lists, logs and Events; every call under the one policy of k8s/errors.py."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from kubernetes_asyncio import client

from scriptrun import API_GROUP, API_VERSION
from scriptrun.k8s import errors
from scriptrun.k8s.credentials import Credentials, load_credentials
from scriptrun.k8s.errors import AlreadyExists, ApiError, KubeError, NotFound, Retry
from scriptrun.k8s.events import Background, event_body

__all__ = ["PLURALS", "ApiError", "Kube", "KubeError", "Retry", "load_config"]

log = logging.getLogger(__name__)
T = TypeVar("T")
PLURALS = {"Workflow": "workflows", "ScriptRun": "scriptruns"}
MERGE_PATCH = "application/merge-patch+json"


async def load_config() -> Credentials:
    """The operator's credentials: the pod's service account if in a pod, else the kubeconfig."""
    return await load_credentials("in-cluster")


async def _answer(call: Any, *args: Any, **kwargs: Any) -> bytes:
    """One request with its answer left raw (no client models): the body on 2xx, else the error
    policy's exception."""
    resp = await call(*args, _preload_content=False, **kwargs)
    try:
        raw: bytes = await resp.read()
    finally:
        resp.release()
    if 200 <= resp.status < 300:
        return raw
    raise errors.from_response(resp.status, resp.reason, raw, resp.headers)


async def _raw(call: Any, *args: Any) -> bool:
    """One write with the answer left raw: True on 2xx, else the error policy's exception."""
    await _answer(call, *args)
    return True


def _named(body: dict[str, Any]) -> bool:
    """A create with a fixed name is safe to repeat (the repeat reads as AlreadyExists)."""
    return bool((body.get("metadata") or {}).get("name"))


class Kube:
    """API access for the operator and the CLI. Every method takes and returns plain dicts."""

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        retry: Retry | None = None,
        *,
        qps: float = 0,
        burst: int = 1,
    ) -> None:
        """`qps` > 0: at most that many requests a second on average, `burst` at once (client-go's
        QPS/burst; every attempt of every request counts, retries and Events included)."""
        self.api_client = api_client or client.ApiClient()
        self.limiter = AsyncLimiter(max(burst, 1), max(burst, 1) / qps) if qps > 0 else None
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.retry = retry or Retry()
        self.events = Background(limit=10000)

    async def close(self) -> None:
        await self.events.close()
        await self.api_client.close()

    def _dict(self, obj: Any) -> dict[str, Any]:
        data = self.api_client.sanitize_for_serialization(obj)
        assert isinstance(data, dict)
        return data

    async def _call(self, request: Callable[[], Awaitable[T]], *, idempotent: bool = True) -> T:
        limiter = self.limiter
        if limiter is None:
            return await errors.call(request, self.retry, idempotent=idempotent)

        async def throttled() -> T:
            async with limiter:
                return await request()

        return await errors.call(throttled, self.retry, idempotent=idempotent)

    async def _unless_gone(self, request: Callable[[], Awaitable[T]]) -> T | None:
        """`request()`, or None on 404 (the object, or its namespace, is not there)."""
        try:
            return await self._call(request)
        except NotFound:
            return None

    async def server_version(self) -> tuple[int, int] | None:
        """The API server's (major, minor), e.g. (1, 34); None if it does not say in numbers."""
        info = await self._call(lambda: client.VersionApi(self.api_client).get_code())
        try:
            return int(info.major), int("".join(c for c in info.minor if c.isdigit()))
        except (TypeError, ValueError):
            return None

    # --- creates: True / the created object, False / None if it is already there (409)

    async def _create_raw(self, call: Any, namespace: str, body: dict[str, Any]) -> bool:
        """POST without turning the answer into client models (the operator never reads it back, and
        that deserialisation was a large share of its CPU). True if created, False on AlreadyExists."""

        try:
            return await self._call(lambda: _raw(call, namespace, body), idempotent=_named(body))
        except AlreadyExists:
            return False

    async def create_pod(self, pod: dict[str, Any]) -> bool:
        """Create a pod; True if created, False if it is already there (409)."""
        return await self._create_raw(self.core.create_namespaced_pod, pod["metadata"]["namespace"], pod)

    async def create_configmap(self, cm: dict[str, Any]) -> bool:
        """Create a ConfigMap; True if created, False if it already existed."""
        return await self._create_raw(self.core.create_namespaced_config_map, cm["metadata"]["namespace"], cm)

    async def replace_configmap(self, cm: dict[str, Any]) -> bool:
        """Replace a ConfigMap at the resourceVersion its metadata carries: True if replaced, False if
        someone changed it since (409 Conflict: read it again) or it is gone."""
        meta = cm["metadata"]
        call: Any = self.core.replace_namespaced_config_map  # the raw response, as in _create_raw
        try:
            return await self._call(lambda: _raw(call, meta["name"], meta["namespace"], cm))
        except (errors.Conflict, NotFound):
            return False

    async def create_custom(self, plural: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create one of our objects; the created object, or None if it already existed (409)."""
        return await self._create_custom(plural, body["metadata"]["namespace"], body)

    async def _create_custom(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            created = await self._call(
                lambda: self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, plural, body),
                idempotent=_named(body),
            )
        except AlreadyExists:
            return None
        return dict(created)

    async def create_object(self, namespace: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create a ConfigMap, Workflow or ScriptRun as given (the CLI's submit) in `namespace`; the
        created object, or None if one of that name already exists."""
        kind = obj.get("kind")
        if kind in PLURALS:
            return await self._create_custom(PLURALS[kind], namespace, obj)
        if kind != "ConfigMap":
            raise ValueError(f"cannot create kind {kind!r}")
        try:
            created = await self._call(
                lambda: self.core.create_namespaced_config_map(namespace, obj),  # type: ignore[arg-type]
                idempotent=_named(obj),
            )
        except AlreadyExists:
            return None
        return self._dict(created)

    # --- reads: the object, or None if it is not there (404)

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = await self._unless_gone(lambda: self.core.read_namespaced_pod(name, namespace))
        return None if pod is None else self._dict(pod)

    async def get_node(self, name: str) -> dict[str, Any] | None:
        node = await self._unless_gone(lambda: self.core.read_node(name))
        return None if node is None else self._dict(node)

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        cm = await self._unless_gone(lambda: self.core.read_namespaced_config_map(name, namespace))
        return None if cm is None else self._dict(cm)

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._unless_gone(
            lambda: self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, plural, name)
        )

    async def get_peering(self, group: str, version: str, plural: str, name: str, namespace: str | None) -> Any:
        """Kopf's peering object (a ClusterKopfPeering when `namespace` is None); None if absent."""
        if namespace is None:
            return await self._unless_gone(lambda: self.custom.get_cluster_custom_object(group, version, plural, name))
        return await self._unless_gone(
            lambda: self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        )

    async def list_custom(self, plural: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Every matching object, read in pages of 500; errors.Gone if a page's token expired."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self._call(
                functools.partial(
                    self.custom.list_namespaced_custom_object,
                    API_GROUP,
                    API_VERSION,
                    namespace,
                    plural,
                    label_selector=label_selector,
                    limit=500,
                    _continue=token,  # type: ignore[arg-type]  # None is not sent
                )
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    # --- the pods' list and watch, left raw (controllers/pods.py keeps a small snapshot of each)

    def _pods_call(self, namespace: str | None) -> Any:
        if namespace is None:
            return self.core.list_pod_for_all_namespaces
        return functools.partial(self.core.list_namespaced_pod, namespace)

    async def list_pods_page(
        self, namespace: str | None, selector: str, token: str | None, limit: int = 500
    ) -> tuple[list[dict[str, Any]], str, str | None]:
        """One page of the matching pods (all namespaces when `namespace` is None), parsed from the
        JSON as plain dicts: (items, the list's resourceVersion, the next page's token or None).
        errors.Gone when `token` has expired."""
        call = self._pods_call(namespace)

        async def once() -> dict[str, Any]:
            page: dict[str, Any] = json.loads(
                await _answer(call, label_selector=selector, limit=limit, _continue=token)
            )
            return page

        page = await self._call(once)
        meta = page.get("metadata") or {}
        return page.get("items") or [], str(meta.get("resourceVersion") or ""), meta.get("continue") or None

    async def watch_pods(
        self,
        namespace: str | None,
        selector: str,
        *,
        resource_version: str,
        initial_events: bool = False,
        timeout_seconds: int = 300,
        read_timeout: float = 70,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The watch events of the matching pods, each parsed as soon as its line is complete (one
        pod's body alive at a time, none queued). From `resource_version`; with `initial_events`
        the server first sends every pod as ADDED, then a BOOKMARK annotated
        "k8s.io/initial-events-end" (sendInitialEvents, a watch-list). The server ends the watch
        after `timeout_seconds`; no byte for `read_timeout` s ends it as Unavailable (a stalled
        connection). Opening it counts against the request rate like any other request."""
        options: dict[str, Any] = {
            "label_selector": selector,
            "watch": True,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,
            "resource_version": resource_version,
        }
        if initial_events:
            options |= {"send_initial_events": True, "resource_version_match": "NotOlderThan"}
        call = self._pods_call(namespace)

        async def open_watch() -> Any:
            resp = await call(**options, _preload_content=False, _request_timeout=(30, read_timeout))
            if not 200 <= resp.status < 300:
                try:
                    raw = await resp.read()
                finally:
                    resp.release()
                raise errors.from_response(resp.status, resp.reason, raw, resp.headers)
            return resp

        resp = await self._call(open_watch)
        try:
            async for line in errors.lines(resp.content):
                yield json.loads(line)
        finally:
            resp.release()

    async def pod_log(self, namespace: str, pod: str, container: str = "main") -> str | None:
        """The container's log, or None if the pod is not there."""
        return await self._unless_gone(lambda: self.core.read_namespaced_pod_log(pod, namespace, container=container))

    # --- merge patches: the patched object, or None if it is not there (404)

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource (the operator is its only writer); None if the object
        was deleted meanwhile."""
        return await self._unless_gone(
            lambda: self.custom.patch_namespaced_custom_object_status(
                API_GROUP,
                API_VERSION,
                namespace,
                plural,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        )

    async def patch_custom(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch one of our objects; None if it is not there."""
        return await self._unless_gone(
            lambda: self.custom.patch_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                plural,
                name,
                patch,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        )

    async def renew_lease(
        self, namespace: str, name: str, holder: str, renew_time: str, labels: dict[str, str]
    ) -> None:
        """Set a Lease's renewTime (merge patch), creating the Lease the first time."""
        spec = {"holderIdentity": holder, "renewTime": renew_time}
        patched = await self._unless_gone(
            lambda: self.coordination.patch_namespaced_lease(
                name,
                namespace,
                {"spec": spec},
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        )
        if patched is None:
            body = {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}
            await self._create_raw(self.coordination.create_namespaced_lease, namespace, body)

    # --- deletes: a 404 is what was wanted

    async def _discard(self, call: Any, *args: Any, **kwargs: Any) -> None:
        """A request whose answer we never read (a deleted pod, or the list of all the pods a
        collection delete removed: 1000 pods' worth of client models was a 50 MiB spike)."""

        async def once() -> None:
            await _answer(call, *args, **kwargs)

        await self._unless_gone(once)

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int = 5) -> None:
        await self._discard(self.core.delete_namespaced_pod, name, namespace, grace_period_seconds=grace_seconds)

    async def delete_pods(self, namespace: str, selector: str) -> None:
        await self._discard(self.core.delete_collection_namespaced_pod, namespace, label_selector=selector)

    async def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        await self._unless_gone(
            lambda: self.custom.delete_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, plural, name, propagation_policy="Background"
            )
        )

    # --- Events

    def event(self, obj: dict[str, Any], etype: str, reason: str, message: str, now: datetime | None = None) -> None:
        """Queue an Event: posted in the background, off the reconcile's critical path. Its body is
        built now (the time it happened; and a queued Event holds no reference to the whole object)."""
        self.events.put(self._post(event_body(obj, etype, reason, message, now)))

    async def post_event(
        self, obj: dict[str, Any], etype: str, reason: str, message: str, now: datetime | None = None
    ) -> None:
        """A core/v1 Event on `obj` (what `kubectl describe` shows). Failures are logged, not raised."""
        await self._post(event_body(obj, etype, reason, message, now))

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            await self._create_raw(self.core.create_namespaced_event, body["metadata"]["namespace"], body)
        except KubeError as err:
            reason = body["reason"]
            log.warning("could not post event %s on %s: %s", reason, body["involvedObject"]["name"], err)
