"""Create-or-get, status patches, deletes and Events; the 404/409 policy lives here, once."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from scriptrun import API_GROUP, API_VERSION
from scriptrun.engine import clock

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


async def load_config() -> None:
    """In-cluster service account if present, else the current kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()


class Kube:
    """The operator's API access. Every method returns plain dicts."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    async def close(self) -> None:
        await self.api_client.close()

    def _dict(self, obj: Any) -> dict[str, Any]:
        data = self.api_client.sanitize_for_serialization(obj)
        assert isinstance(data, dict)
        return data

    async def create_pod(self, pod: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Create a pod; returns (object, created). A 409 means it is already there: (None, False)."""
        ns = pod["metadata"]["namespace"]
        try:
            created = await self.core.create_namespaced_pod(ns, pod)  # type: ignore[arg-type]
            return self._dict(created), True
        except ApiException as err:
            if err.status == 409:
                return None, False
            raise _refusal(err) or err from None

    async def create_configmap(self, cm: dict[str, Any]) -> bool:
        """Create a ConfigMap; True if created, False if it already existed."""
        try:
            await self.core.create_namespaced_config_map(cm["metadata"]["namespace"], cm)  # type: ignore[arg-type]
            return True
        except ApiException as err:
            if err.status == 409:
                return False
            raise _refusal(err) or err from None

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

    async def create_custom(self, plural: str, body: dict[str, Any]) -> bool:
        """Create one of our objects; True if created, False if it already existed (409)."""
        try:
            await self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, body["metadata"]["namespace"], plural, body
            )
            return True
        except ApiException as err:
            if err.status == 409:
                return False
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
            await self.core.create_namespaced_event(meta.get("namespace"), event)  # type: ignore[arg-type]
        except ApiException as err:
            log.warning("could not post event %s on %s: %s", reason, meta.get("name"), err.reason)
