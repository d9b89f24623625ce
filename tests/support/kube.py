"""Small test-side helpers over kubectl (the same tool users type)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from tests.support.controlplane import ControlPlane

T = TypeVar("T")


class Kube:
    def __init__(self, cluster: ControlPlane, namespace: str, diagnostics: Callable[[], str] = lambda: "") -> None:
        self.cluster = cluster
        self.ns = namespace
        self.diagnostics = diagnostics

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], check: bool = True) -> str:
        docs = obj if isinstance(obj, list) else [obj]
        proc = self.cluster.kubectl("-n", self.ns, "apply", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl apply failed: {proc.stderr}")
        return proc.stdout + proc.stderr

    def refuse(self, obj: dict[str, Any]) -> str:
        """Apply and expect the API server to refuse; returns its message."""
        proc = self.cluster.kubectl("-n", self.ns, "apply", "-f", "-", input=yaml.safe_dump(obj), check=False)
        assert proc.returncode != 0, f"expected a refusal, got: {proc.stdout}"
        return proc.stderr

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.cluster.kubectl("-n", self.ns, "get", f"{kind}/{name}", "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        data = json.loads(proc.stdout)
        assert isinstance(data, dict)
        return data

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["-n", self.ns, "get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        data = json.loads(self.cluster.kubectl(*args).stdout)
        return list(data["items"])

    def events(self, name: str) -> list[dict[str, Any]]:
        data = json.loads(
            self.cluster.kubectl(
                "-n", self.ns, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
            ).stdout
        )
        return list(data["items"])

    def delete(self, kind: str, name: str, *extra: str) -> None:
        self.cluster.kubectl("-n", self.ns, "delete", f"{kind}/{name}", "--wait=false", *extra)

    def patch(self, kind: str, name: str, patch: dict[str, Any], subresource: str | None = None) -> None:
        args = ["-n", self.ns, "patch", f"{kind}/{name}", "--type=merge", "-p", json.dumps(patch)]
        if subresource:
            args.append(f"--subresource={subresource}")
        self.cluster.kubectl(*args)

    def wait(self, what: str, fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.25) -> T:
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}\n{self.diagnostics()}")

    def run_status(self, name: str) -> dict[str, Any]:
        obj = self.get("scriptrun", name)
        return (obj or {}).get("status") or {}

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait(
            f"{name} phase {phase}", lambda: (s := self.run_status(name)).get("phase") == phase and s, timeout
        )


def scriptrun(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": name},
        "spec": {"script": {"source": "print('hi')"}, **spec},
    }
    if annotations:
        body["spec"].setdefault("podMetadata", {})["annotations"] = annotations
    return body
