"""What a manifest asks for that a local run does not do: one warning line per field (for a
Workflow, per field across its tasks, naming the first and counting the others).

Honoured locally, so not here: env `valueFrom.configMapKeyRef` and `envFrom[].configMapRef` when
the ConfigMap is in the same file (see `environment`), resource requests (the cost estimate).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scriptrun.local.validate import ENV_NAME
from scriptrun.model.scriptrun import RunTemplate

PYTHON = "the script runs with this machine's python"
WHY = {
    "image": PYTHON,
    "imagePullPolicy": "no image is pulled",
    "resources.limits": "nothing limits the script's cpu or memory (requests only price the run)",
    "nodeSelector": "there is one machine",
    "tolerations": "there is one machine",
    "affinity": "there is one machine",
    "priorityClassName": "there is one machine",
    "serviceAccountName": "the script gets no Kubernetes credentials",
    "automountServiceAccountToken": "the script gets no Kubernetes credentials",
    "securityContext": "the script runs as the user running scriptrun",
    "containerSecurityContext": "the script runs as the user running scriptrun",
    "podMetadata": "there is no pod",
    "regression": "no history is kept locally: no verdict",
}


def _secret_or_missing(source: dict[str, Any], configmaps: dict[str, dict[str, Any]]) -> str | None:
    """Why an env source cannot be honoured locally (None: it can)."""
    ref = source.get("configMapKeyRef") or source.get("configMapRef")
    if isinstance(ref, dict) and ref.get("name") in configmaps:
        if "key" in ref and ref["key"] not in (configmaps[ref["name"]].get("data") or {}):
            return f"ConfigMap {ref['name']!r} has no key {ref['key']!r}"
        return None
    if isinstance(ref, dict):
        return f"ConfigMap {ref.get('name')!r} is not in this file"
    if "secretKeyRef" in source or "secretRef" in source:
        return "Secrets are not read locally"
    return "only a ConfigMap in the same file can be read locally"


def _template_warnings(template: RunTemplate, configmaps: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(field, why) for one template, the field relative to it."""
    wire = template.model_dump(by_alias=True, exclude_none=True, mode="json")
    for field, why in WHY.items():
        head, _, sub = field.partition(".")
        value = wire.get(head)
        if sub and isinstance(value, dict):
            value = value.get(sub)
        if value in (None, {}, []) or (field == "automountServiceAccountToken" and value is False):
            continue
        yield field, why
    for i, alert in enumerate(wire.get("alerts") or []):
        if alert.get("channels"):
            yield f"alerts[{i}].channels", "webhooks are the operator's: locally an alert is an AlertFiring line only"
    for i, source in enumerate(wire.get("envFrom") or []):
        if (reason := _secret_or_missing(source, configmaps)) is not None:
            yield f"envFrom[{i}]", f"{reason}; its variables are not set"
    for i, var in enumerate(wire.get("env") or []):
        value_from = var.get("valueFrom")
        if value_from is not None and (reason := _secret_or_missing(value_from, configmaps)) is not None:
            yield f"env[{i}].valueFrom", f"{reason}; {var['name']} is not set"


def warnings(spec: Any, configmaps: dict[str, dict[str, Any]]) -> list[str]:
    """`spec.image is ignored locally: ...` lines, one per field."""
    tasks = getattr(spec, "tasks", None)
    groups = [("spec", [spec])] if tasks is None else [("spec.tasks", tasks), ("spec.onExit", spec.on_exit or [])]
    found: dict[str, tuple[str, str, int]] = {}  # field -> (first path, why, how many templates)
    for prefix, templates in groups:
        for i, template in enumerate(templates):
            where = prefix if tasks is None else f"{prefix}[{i}]"
            for field, why in _template_warnings(template, configmaps):
                key = field.split("[")[0] if tasks is not None else f"{field}"
                first, first_why, count = found.get(key, (f"{where}.{field}", why, 0))
                found[key] = (first, first_why, count + 1)
    out = []
    for first, why, count in found.values():
        more = f" (and {count - 1} more)" if count > 1 else ""
        out.append(f"{first}{more} is ignored locally: {why}")
    return out


def environment(template: RunTemplate, configmaps: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The variables a pod would get from envFrom configMapRef and env valueFrom configMapKeyRef,
    from ConfigMaps in the same file (what cannot be read is left out and warned about)."""
    out: dict[str, str] = {}
    for source in template.env_from or []:
        ref = source.get("configMapRef")
        if isinstance(ref, dict) and ref.get("name") in configmaps:
            data = configmaps[ref["name"]].get("data") or {}
            prefix = str(source.get("prefix") or "")
            out.update({f"{prefix}{k}": str(v) for k, v in data.items() if ENV_NAME.match(f"{prefix}{k}")})
    for var in template.env or []:
        if var.value is not None:
            out[var.name] = var.value
            continue
        ref = (var.value_from or {}).get("configMapKeyRef")
        if isinstance(ref, dict) and ref.get("name") in configmaps:
            data = configmaps[ref["name"]].get("data") or {}
            if ref.get("key") in data:
                out[var.name] = str(data[ref["key"]])
    return out
