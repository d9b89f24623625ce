"""What the API server would refuse, refused locally with the same field names: schema errors from the
models (pydantic) rendered as `spec.retryStrategy.limit: ...`, the CRDs' CEL rules and list-map keys,
object names; and what the local backend cannot run safely (NUL bytes, numbers past what JSON or
the clock can carry, environment variable names a pod would be refused for).

Each function returns problems, one line each, the field first; the caller shows the first.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import cel
from pydantic import BaseModel, ValidationError

from scriptrun.engine.dag import Plan, PlanError, build_plan
from scriptrun.model.common import MAX_SECONDS, QUANTITY_PATTERN
from scriptrun.model.crd import model_schema
from scriptrun.model.workflow import PARAM_NAME_PATTERN, TASK_NAME_PATTERN, WorkflowSpec

INT64 = (-(2**63), 2**63 - 1)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # what the API server takes in a pod
SUBDOMAIN_TEXT = "a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', starting and ending with a letter or digit)"
LABEL_TEXT = "a lowercase RFC 1123 label (a-z, 0-9 and '-', starting and ending with a letter or digit)"
PATTERNS = {
    TASK_NAME_PATTERN: f"must be {LABEL_TEXT}",
    PARAM_NAME_PATTERN: "must be a parameter name (a letter or '_', then letters, digits, '_', '.' or '-')",
    QUANTITY_PATTERN: "must be a Kubernetes quantity, e.g. 500m or 2Gi",
}
LISTED = 1000  # errors rendered; past that only counted
_UNION_TAG = re.compile(r"^(int|str|float|bool|none|constrained-\w+|[a-z][a-z0-9-]*\[.*\])$")
_TYPE_TEXT = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def path_of(parts: tuple[int | str, ...] | list[int | str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def shown(value: Any) -> str:
    """A value as a message quotes it: short, JSON-like."""
    if isinstance(value, str) and len(value) > 60:
        return f"{len(value)} characters"
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "a mapping"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _pydantic_line(err: Any, union: bool) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if union:
        text = "must be a Kubernetes quantity, e.g. 500m or 2Gi"
    elif kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        text = PATTERNS.get(pattern, f"must match {pattern}")
    else:
        text = _TYPE_TEXT.get(kind, err["msg"][:1].lower() + err["msg"][1:])
    if kind in ("missing", "extra_forbidden", "too_long", "too_short"):
        return text
    return f"{text} (got {shown(err['input'])})"


def pydantic_problems(err: ValidationError) -> tuple[list[str], int]:
    """One line per field, named as the API server names it (camelCase, [index]); of a union's
    alternatives (a quantity: integer or string) one line. Past LISTED errors, only their number."""
    by_path: dict[str, list[tuple[Any, bool]]] = {}
    errors = err.errors(include_url=False, include_context=True, include_input=True)
    for e in errors[:LISTED]:
        loc = [p for p in e["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p))]
        by_path.setdefault(path_of(loc), []).append((e, len(loc) != len(e["loc"])))
    out = []
    for path, found in by_path.items():
        union = any(tagged for _, tagged in found) and len(found) > 1
        e = found[0][0]
        out.append(f"{path}: {_pydantic_line(e, union)}" if path else _pydantic_line(e, union))
    return out, max(0, len(errors) - LISTED)


# -- the CRD's own rules: CEL validations and list-map keys --------------------------------------


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model_schema(model)


@functools.cache
def _program(rule: str) -> Any:
    return cel.compile(rule)


def _rule_holds(rule: str, value: Any) -> bool:
    context = cel.Context()
    context.add_variable("self", value)
    try:
        return bool(_program(rule).execute(context))
    except Exception:
        return True


def _walk_schema(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations") or []:
        if not _rule_holds(rule["rule"], value):
            yield f"{path}{rule.get('fieldPath', '')}: {rule['message']}"
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from _walk_schema(sub, value[key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        seen: set[str] = set()
        for i, item in enumerate(value):
            if keys and isinstance(item, dict):
                ident = json.dumps([item.get(k) for k in keys])
                if ident in seen:
                    names = ", ".join(f"{k} {item.get(k)!r}" for k in keys)
                    yield f"{path}[{i}]: duplicate entry ({names})"
                seen.add(ident)
            yield from _walk_schema(schema["items"], item, f"{path}[{i}]")


def rule_problems(model: type[BaseModel], spec: BaseModel) -> list[str]:
    """The CRD's CEL rules (`x-kubernetes-validations`) and list-map keys, on the validated spec."""
    return list(_walk_schema(_schema(model), spec.model_dump(by_alias=True, exclude_none=True, mode="json"), "spec"))


# -- what JSON, the clock and the process table can carry ----------------------------------------


def value_problems(value: Any, path: str = "") -> Iterator[str]:
    """Integers past int64, numbers JSON has no spelling for, NUL characters; `...Seconds` under
    spec past MAX_SECONDS. Iterative: the YAML loader has bounded the size, not the Python stack."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int) and not INT64[0] <= item <= INT64[1]:
            yield f"{where}: {shown(item)} is out of range (a 64-bit integer)"
        elif isinstance(item, float) and not math.isfinite(item):
            yield f"{where}: {item} is not a number JSON can carry"
        elif isinstance(item, int | float) and where.startswith("spec.") and where.endswith("Seconds"):
            if item > MAX_SECONDS:
                yield f"{where}: {shown(item)} is too large (at most {MAX_SECONDS} seconds, about 31 years)"
        elif isinstance(item, str) and "\x00" in item:
            yield f"{where}: contains a NUL character"


def name_problems(meta: Any, what: str = "") -> list[str]:
    """metadata.name and namespace, as the API server checks them."""
    if not isinstance(meta, dict):
        return []
    out = []
    name, namespace = meta.get("name"), meta.get("namespace")
    if isinstance(name, str) and name and (len(name) > 253 or not DNS_SUBDOMAIN.match(name)):
        out.append(f"{what}metadata.name: {shown(name)} is not {SUBDOMAIN_TEXT}, at most 253 characters")
    if isinstance(namespace, str) and namespace and (len(namespace) > 63 or not DNS_LABEL.match(namespace)):
        out.append(f"{what}metadata.namespace: {shown(namespace)} is not {LABEL_TEXT}, at most 63 characters")
    return out


def _templates(spec: Any) -> Iterator[tuple[str, Any]]:
    tasks = getattr(spec, "tasks", None)
    if tasks is None:
        yield "spec", spec
        return
    for group, items in (("tasks", tasks), ("onExit", spec.on_exit or [])):
        for i, task in enumerate(items):
            yield f"spec.{group}[{i}]", task


def env_problems(spec: Any) -> list[str]:
    """Environment variable names a pod would be refused for (and this machine could not set)."""
    out = []
    for where, template in _templates(spec):
        for i, var in enumerate(template.env or []):
            if not ENV_NAME.match(var.name):
                out.append(
                    f"{where}.env[{i}].name: {shown(var.name)} is not a valid environment variable name "
                    "(letters, digits, '_', '-' or '.', not starting with a digit)"
                )
    return out


# -- a Workflow's plan: the engine's problems, located -------------------------------------------


def plan(spec: WorkflowSpec, overrides: dict[str, str] | None = None) -> Plan:
    """build_plan (its cycle search is iterative: the longest chain the schema allows is fine)."""
    return build_plan(spec, overrides=overrides)


_TASK = re.compile(r"^task ([a-z0-9-]+): (.*)$", re.S)
_FIELD = re.compile(r"^([A-Za-z]\w*(?:\[[^\]]*\])?(?:\.[A-Za-z]\w*(?:\[[^\]]*\])?)*): (.*)$", re.S)
_CYCLE = re.compile(r"^dependency cycle: ([a-z0-9-]+) -> ([a-z0-9-]+)")


def _where(spec: WorkflowSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    for where, task in _templates(spec):
        out.setdefault(task.name, where)
    return out


def locate_plan_error(spec: WorkflowSpec, problem: str) -> str:
    """`task b: dependencies: ...` -> `spec.tasks[1].dependencies: ...` (the engine names tasks)."""
    where = _where(spec)
    if (match := _CYCLE.match(problem)) and match[1] in where:
        task = next(t for _, t in _templates(spec) if t.name == match[1])
        field = "dependencies" if match[2] in (task.dependencies or []) else "depends"
        names = problem.removeprefix("dependency cycle: ").split(" -> ")
        if len(names) > 8:  # one readable line, however long the cycle
            shown_names = [*names[:4], f"... ({len(names) - 6} more)", *names[-2:]]
            problem = f"dependency cycle of {len(names) - 1} tasks: " + " -> ".join(shown_names)
        return f"{where[match[1]]}.{field}: {problem}"
    if (match := _TASK.match(problem)) and match[1] in where:
        rest = match[2]
        if field_match := _FIELD.match(rest):
            return f"{where[match[1]]}.{field_match[1]}: {field_match[2]}"
        return f"{where[match[1]]}: {rest}"
    return problem


def plan_problems(spec: WorkflowSpec, overrides: dict[str, str] | None = None) -> list[str]:
    try:
        plan(spec, overrides)
    except PlanError as err:
        return [locate_plan_error(spec, p) for p in err.errors]
    return []
