"""Create-or-get, status patches, deletes and Events; the 404/409 policy lives here, once."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from scriptrun import API_GROUP, API_VERSION
from scriptrun.engine import clock
from scriptrun.k8s.credentials import Credentials, load_credentials

log = logging.getLogger(__name__)
COMPONENT = "scriptrun-operator"


class ApiError(Exception):
    """A refusal the operator cannot fix by retrying (4xx other than 404/409/429)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def _refusal(err: ApiException) -> ApiError | None:
    status = int(err.status or 0)
    if 400 <= status < 500 and status not in (404, 409, 429):
        import json

        try:
            body = json.loads(err.body or "{}")
        except ValueError:
            body = {}
        return ApiError(status, body.get("reason") or str(err.reason), body.get("message") or str(err.body))
    return None


async def load_config() -> Credentials:
    """The operator's credentials: the pod's service account if in a pod, else the kubeconfig."""
    return await load_credentials("in-cluster")


class Background:
    """A bounded set of fire-and-forget coroutines (Events); dropped, with a log line, when full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tasks: set[asyncio.Task[None]] = set()

    def put(self, coro: Any) -> None:
        if len(self.tasks) >= self.limit:
            coro.close()
            log.warning("event queue full: an Event was dropped")
            return
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)
        for task in list(self.tasks):
            task.cancel()


class Kube:
    """The operator's API access. Every method returns plain dicts."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.events = Background(limit=10000)

    async def close(self) -> None:
        await self.events.close()
        await self.api_client.close()

    def event(self, obj: dict[str, Any], etype: str, reason: str, message: str, now: datetime | None = None) -> None:
        """Queue an Event: posted in the background, off the reconcile's critical path."""
        self.events.put(self.post_event(obj, etype, reason, message, now))

    def _dict(self, obj: Any) -> dict[str, Any]:
        data = self.api_client.sanitize_for_serialization(obj)
        assert isinstance(data, dict)
        return data

    async def _create_raw(self, call: Any, namespace: str, body: dict[str, Any]) -> bool:
        """POST without turning the answer into client models (the operator never reads it back, and
        that deserialisation was a large share of its CPU). True if created, False on 409."""
        resp = await call(namespace, body, _preload_content=False)
        try:
            raw = await resp.read()
        finally:
            resp.release()
        if 200 <= resp.status < 300:
            return True
        if resp.status == 409:
            return False
        err = ApiException(status=resp.status, reason=resp.reason)
        err.body = raw.decode(errors="replace")
        raise _refusal(err) or err

    async def create_pod(self, pod: dict[str, Any]) -> bool:
        """Create a pod; True if created, False if it is already there (409)."""
        return await self._create_raw(self.core.create_namespaced_pod, pod["metadata"]["namespace"], pod)

    async def create_configmap(self, cm: dict[str, Any]) -> bool:
        """Create a ConfigMap; True if created, False if it already existed."""
        return await self._create_raw(self.core.create_namespaced_config_map, cm["metadata"]["namespace"], cm)

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(await self.core.read_namespaced_pod(name, namespace))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(await self.core.read_namespaced_config_map(name, namespace))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int = 5) -> None:
        try:
            await self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds)
        except ApiException as err:
            if err.status != 404:
                raise

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource (the operator is its only writer)."""
        return await self.custom.patch_namespaced_custom_object_status(  # type: ignore[no-any-return,call-arg]
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    async def create_custom(self, plural: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create one of our objects; the created object, or None if it already existed (409)."""
        try:
            created = await self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, body["metadata"]["namespace"], plural, body
            )
            return dict(created)
        except ApiException as err:
            if err.status == 409:
                return None
            raise _refusal(err) or err from None

    async def patch_custom(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        try:
            await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                API_GROUP,
                API_VERSION,
                namespace,
                plural,
                name,
                patch,
                _content_type="application/merge-patch+json",
            )
        except ApiException as err:
            if err.status != 404:
                raise

    async def delete_pods(self, namespace: str, selector: str) -> None:
        try:
            await self.core.delete_collection_namespaced_pod(namespace, label_selector=selector)
        except ApiException as err:
            if err.status != 404:
                raise

    async def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        try:
            await self.custom.delete_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, plural, name, propagation_policy="Background"
            )
        except ApiException as err:
            if err.status != 404:
                raise

    async def post_event(
        self, obj: dict[str, Any], etype: str, reason: str, message: str, now: datetime | None = None
    ) -> None:
        """A core/v1 Event on `obj` (what `kubectl describe` shows). Failures are logged, not raised."""
        meta = obj.get("metadata", {})
        stamp = clock.fmt(now or clock.utcnow())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'scriptrun')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": etype,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._create_raw(self.core.create_namespaced_event, meta.get("namespace"), event)
        except (ApiException, ApiError) as err:
            log.warning("could not post event %s on %s: %s", reason, meta.get("name"), err)
