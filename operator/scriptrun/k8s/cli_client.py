"""What the `scriptrun` CLI does against a cluster (the current kubeconfig). Plain dicts in and out."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from scriptrun import API_GROUP, API_VERSION
from scriptrun.k8s.credentials import CredentialsError, load_credentials

PLURALS = {"Workflow": "workflows", "ScriptRun": "scriptruns"}


class CliError(Exception):
    pass


class ClusterClient:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    @classmethod
    async def connect(cls) -> tuple[ClusterClient, str]:
        """The client and the current context's namespace (kubeconfig first, then in-cluster)."""
        try:
            credentials = await load_credentials("kubeconfig")
        except CredentialsError as err:
            raise CliError(str(err)) from None
        return cls(credentials.api_client()), credentials.namespace

    async def close(self) -> None:
        await self.api.close()

    async def create(self, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        kind = obj.get("kind")
        try:
            if kind == "ConfigMap":
                created = await self.core.create_namespaced_config_map(namespace, obj)  # type: ignore[arg-type]
                return self.api.sanitize_for_serialization(created)  # type: ignore[no-any-return]
            if kind not in PLURALS:
                raise CliError(f"cannot submit kind {kind!r}")
            return await self.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
                API_GROUP, API_VERSION, namespace, PLURALS[kind], obj
            )
        except ApiException as err:
            raise CliError(_message(err)) from None

    async def find(self, namespace: str, name: str, kind: str | None = None) -> dict[str, Any]:
        kinds = [kind] if kind else ["Workflow", "ScriptRun"]
        for k in kinds:
            try:
                return await self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                    API_GROUP, API_VERSION, namespace, PLURALS[k], name
                )
            except ApiException as err:
                if err.status != 404:
                    raise CliError(_message(err)) from None
        raise CliError(f"no Workflow or ScriptRun named {name!r} in namespace {namespace!r}")

    async def patch(self, namespace: str, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.custom.patch_namespaced_custom_object(  # type: ignore[no-any-return,call-arg]
                API_GROUP,
                API_VERSION,
                namespace,
                PLURALS[obj["kind"]],
                obj["metadata"]["name"],
                patch,
                _content_type="application/merge-patch+json",
            )
        except ApiException as err:
            raise CliError(_message(err)) from None

    async def list_children(self, namespace: str, workflow: str) -> list[dict[str, Any]]:
        result = await self.custom.list_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, "scriptruns", label_selector=f"{API_GROUP}/workflow={workflow}"
        )
        return list(result["items"])

    async def logs(self, namespace: str, pod: str, container: str = "main") -> str:
        try:
            return await self.core.read_namespaced_pod_log(pod, namespace, container=container)
        except ApiException as err:
            raise CliError(f"cannot read the logs of pod {pod}: {_message(err)}") from None
        except Exception as err:  # the API server proxies to the kubelet; that hop can fail too
            raise CliError(f"cannot read the logs of pod {pod}: {err}") from None


def _message(err: ApiException) -> str:
    import json

    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        return str(err.reason)
