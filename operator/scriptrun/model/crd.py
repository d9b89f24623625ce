"""Generate the CustomResourceDefinitions from the pydantic models (the single source of truth).

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 schema. The
conversion inlines `$ref`s, folds `Optional[X]` into X, turns int|str into
`x-kubernetes-int-or-string`, `dict[str, Any]` into `x-kubernetes-preserve-unknown-fields`, and
numeric `exclusiveMinimum` into the OpenAPI v3.0 boolean form.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from scriptrun import API_GROUP, API_VERSION
from scriptrun.model.scriptrun import ScriptRunSpec, ScriptRunStatus
from scriptrun.model.workflow import WorkflowSpec, WorkflowStatus

JsonSchema = dict[str, Any]
_DROP = {"title", "additionalProperties"}


def _resolve(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        alternatives = [a for a in node["anyOf"] if a != {"type": "null"}]
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        if len(alternatives) == 1:
            inner = _resolve(alternatives[0], defs)
            node = {**inner, **outer}
        elif {a.get("type") for a in alternatives} == {"integer", "string"}:
            node = {**outer, "x-kubernetes-int-or-string": True}
            pattern = next((a.get("pattern") for a in alternatives if a.get("type") == "string"), None)
            if pattern:
                node["pattern"] = pattern
        else:
            raise ValueError(f"cannot express anyOf {alternatives} in a structural schema")
    return node


def structural(node: JsonSchema, defs: dict[str, JsonSchema], *, keep_defaults: bool = True) -> JsonSchema:
    """Convert one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "default" and (value is None or not keep_defaults):
            continue
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
            continue
        if key == "properties":
            out[key] = {k: structural(v, defs, keep_defaults=keep_defaults) for k, v in value.items()}
        elif key == "items":
            out[key] = structural(value, defs, keep_defaults=keep_defaults)
        else:
            out[key] = value
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = structural(additional, defs, keep_defaults=keep_defaults)
    elif additional is True or out.get("x-kubernetes-preserve-unknown-fields"):
        out["x-kubernetes-preserve-unknown-fields"] = True
        out.setdefault("type", "object")
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    minimum = out.get("minimum")
    if out.get("type") == "number" and isinstance(minimum, int | float) and minimum > 0:
        # kube-apiserver 1.34 lets a literal 0 through `minimum` on number fields (seen in our tests):
        # say it again in CEL, which does compare 0.
        out.setdefault("x-kubernetes-validations", []).append(
            {"rule": f"self >= {float(minimum)!r}", "message": f"must be at least {minimum:g}"}
        )
    return out


def model_schema(model: type[BaseModel], *, keep_defaults: bool = True) -> JsonSchema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}), keep_defaults=keep_defaults)


def _column(name: str, path: str, kind: str = "string", priority: int = 0, desc: str = "") -> JsonSchema:
    col: JsonSchema = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if desc:
        col["description"] = desc
    return col


# `kubectl get scriptrun-all` lists both kinds. A category must differ from every singular, plural
# and short name: kubectl expands a category first, so a category `scriptrun` made
# `kubectl get scriptrun NAME` mean both kinds ("you must specify only one resource").
CATEGORY = "scriptrun-all"


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[JsonSchema],
    description: str,
) -> JsonSchema:
    schema: JsonSchema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(spec),
            "status": model_schema(status, keep_defaults=False),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "scriptrun"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def scriptrun_crd() -> JsonSchema:
    return _crd(
        kind="ScriptRun",
        plural="scriptruns",
        short_names=["sr", "srun"],
        spec=ScriptRunSpec,
        status=ScriptRunStatus,
        description="A Python script run as a pod (one per attempt), measured by a monitor sidecar.",
        columns=[
            _column("Phase", ".status.phase"),
            _column("Attempts", ".status.attemptCount", "integer"),
            _column("Duration", ".status.duration"),
            _column("Cost", ".status.cost.display"),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Message", ".status.message", priority=1),
        ],
    )


def workflow_crd() -> JsonSchema:
    return _crd(
        kind="Workflow",
        plural="workflows",
        short_names=["swf"],
        spec=WorkflowSpec,
        status=WorkflowStatus,
        description="A DAG of Python scripts; each task runs as a child ScriptRun.",
        columns=[
            _column("Phase", ".status.phase"),
            _column("Progress", ".status.progress"),
            _column("Duration", ".status.duration"),
            _column("Cost", ".status.cost.display"),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Message", ".status.message", priority=1),
        ],
    )


def all_crds() -> dict[str, JsonSchema]:
    """File name -> CRD, as committed under crds/."""
    return {
        f"{API_GROUP}_scriptruns.yaml": scriptrun_crd(),
        f"{API_GROUP}_workflows.yaml": workflow_crd(),
    }


HEADER = "# Generated by `make crds` (scriptrun crds) from scriptrun.model. Do not edit.\n"


def render(crd: JsonSchema) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
