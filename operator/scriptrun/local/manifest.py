"""Load the manifest `scriptrun run FILE` runs, refusing before anything runs what the API server
would refuse (with the same field names) and what could not run here.

    file: at most 4 MiB, UTF-8          -> `not UTF-8 (byte 0xff at offset 12)`
    YAML: bounded, JSON data only       -> scriptrun.local.yamlsafe
    documents: one ScriptRun or Workflow (apiVersion scriptrun.dev/v1alpha1), plus the ConfigMaps
               it reads (apiVersion v1)
    the object: the models' schema, the CRD's CEL rules, names, numbers, the Workflow's plan
                                        -> scriptrun.local.validate

Every problem is one line, the field first; `ManifestError.lines` shows the first on the
`error:` line and the others (a few) indented below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scriptrun import API_GROUP, API_VERSION
from scriptrun.engine.gates import problems as gate_problems
from scriptrun.local import ignored, validate
from scriptrun.local.yamlsafe import YamlError, load_all
from scriptrun.model.scriptrun import ScriptRun, ScriptRunSpec
from scriptrun.model.workflow import Workflow, WorkflowSpec

MAX_BYTES = 4 * 1024 * 1024
MAX_CONFIGMAP_BYTES = 1024 * 1024  # the API server's limit on a ConfigMap's data
SHOWN = 10  # problems listed under the error line
WANTED = f"{API_GROUP}/{API_VERSION}"
TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
CONFIGMAP_FIELDS = ("apiVersion", "kind", "metadata", "data", "binaryData", "immutable")
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


class ManifestError(ValueError):
    def __init__(self, problems: list[str], unlisted: int = 0) -> None:
        super().__init__(problems[0])
        self.problems = problems
        self.unlisted = unlisted  # more problems, only counted

    def lines(self, source: str) -> list[str]:
        """`error: SOURCE: first problem (and N more)`, then the next few, indented."""
        rest = self.problems[1:]
        count = len(rest) + self.unlisted
        more = f" (and {count} more)" if count else ""
        return [f"error: {source}: {self.problems[0]}{more}", *(f"  {p}" for p in rest[: SHOWN - 1])]


@dataclass
class Manifest:
    obj: ScriptRun | Workflow
    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise ManifestError([f"cannot read: {err.strerror or err}"]) from err
    if len(data) > MAX_BYTES:
        raise ManifestError([f"the file is larger than {MAX_BYTES // 1024 // 1024} MiB"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError([f"not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})"]) from err


def _a(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _configmap(doc: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    if doc.get("apiVersion") != "v1":
        raise ManifestError([f"apiVersion: {validate.shown(doc.get('apiVersion'))} is not v1 (kind ConfigMap){where}"])
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError([f"ConfigMap metadata.name: required{where}"])
    label = f"ConfigMap {name!r}: "
    problems = [f"{label}{k}: unknown field" for k in doc if k not in CONFIGMAP_FIELDS]
    problems += validate.name_problems(meta, label)
    data = doc.get("data")
    if data is not None and not isinstance(data, dict):
        problems.append(f"{label}data: must be a mapping (got {_a(data)})")
    size = 0
    for key, value in (data or {}).items():
        if not CONFIGMAP_KEY.match(key):
            problems.append(f"{label}data: {validate.shown(key)} is not a valid key (a-z, A-Z, 0-9, '-', '_', '.')")
        elif not isinstance(value, str):
            problems.append(f"{label}data.{key}: must be a string (got {_a(value)})")
        else:
            size += len(key) + len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIGMAP_BYTES:
        problems.append(f"{label}data: {size} bytes; a ConfigMap holds at most {MAX_CONFIGMAP_BYTES} (1 MiB)")
    problems += list(validate.value_problems(data, f"{label}data"))
    if problems:
        raise ManifestError(problems)
    return name, doc


def _object(doc: dict[str, Any], overrides: dict[str, str] | None) -> ScriptRun | Workflow:
    kind = doc["kind"]
    if doc.get("apiVersion") != WANTED:
        got = doc.get("apiVersion")
        raise ManifestError(
            [
                f"apiVersion: required ({WANTED})"
                if got is None
                else f"apiVersion: {validate.shown(got)} is not {WANTED}"
            ]
        )
    unknown = [f"{k}: unknown field" for k in doc if k not in TOP_FIELDS]
    if unknown:
        raise ManifestError(unknown)
    problems = list(validate.value_problems(doc)) + validate.name_problems(doc.get("metadata"))
    # as on create, status is the server's: what a manifest says there is dropped
    body = {k: v for k, v in doc.items() if k != "status"}
    model: type[ScriptRun] | type[Workflow] = ScriptRun if kind == "ScriptRun" else Workflow
    try:
        obj = model.model_validate(body)
    except ValidationError as err:
        named = {p.split(": ", 1)[0] for p in problems}
        found, unlisted = validate.pydantic_problems(err)
        raise ManifestError(problems + [p for p in found if p.split(": ", 1)[0] not in named], unlisted) from err
    if problems:
        raise ManifestError(problems)
    spec_model = ScriptRunSpec if isinstance(obj, ScriptRun) else WorkflowSpec
    problems = validate.rule_problems(spec_model, obj.spec) + validate.env_problems(obj.spec)
    if isinstance(obj, ScriptRun):
        problems += [f"spec.{problem}" for problem in gate_problems(obj.spec)]
    if problems:
        raise ManifestError(problems)
    if isinstance(obj, Workflow):
        problems = validate.plan_problems(obj.spec, overrides)
        if obj.spec.suspend:
            problems.append("spec.suspend: true; locally nothing could resume it (the run would wait forever)")
        if problems:
            raise ManifestError(problems)
    return obj


def parse(text: str, overrides: dict[str, str] | None = None) -> Manifest:
    """The manifest in `text` (-p overrides for a Workflow's parameters), or ManifestError."""
    try:
        docs = [d for d in load_all(text) if d is not None]
    except YamlError as err:
        raise ManifestError([str(err)]) from err
    objects: list[dict[str, Any]] = []
    configmaps: dict[str, dict[str, Any]] = {}
    for number, doc in enumerate(docs, 1):
        where = f" (document {number})" if len(docs) > 1 else ""
        if not isinstance(doc, dict):
            raise ManifestError([f"a manifest is a mapping, not {_a(doc)}{where}"])
        kind = doc.get("kind")
        if kind == "ConfigMap":
            name, cm = _configmap(doc, where)
            if name in configmaps:
                raise ManifestError([f"ConfigMap {name!r} is in the file twice"])
            configmaps[name] = cm
        elif kind in ("ScriptRun", "Workflow"):
            objects.append(doc)
        elif kind is None:
            raise ManifestError([f"kind: required (ScriptRun or Workflow){where}"])
        else:
            also = ", or a ConfigMap it reads" if len(docs) > 1 else ""
            raise ManifestError([f"kind: {validate.shown(kind)} is not ScriptRun or Workflow{also}{where}"])
    if len(objects) != 1:
        found = "none" if not objects else str(len(objects))
        raise ManifestError([f"expected exactly one ScriptRun or Workflow, found {found}"])
    obj = _object(objects[0], overrides)
    return Manifest(obj, configmaps, ignored.warnings(obj.spec, configmaps))


def load(path: Path, overrides: dict[str, str] | None = None) -> Manifest:
    """Read, check and parse the manifest at `path`."""
    return parse(read_text(path), overrides)
