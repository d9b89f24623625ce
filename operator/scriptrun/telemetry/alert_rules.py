"""spec.alerts as a PrometheusRule, for Alertmanager routing (`scriptrun prometheus-rule FILE`).

The operator judges each rule once, on the finished run's summary. The same rule as PromQL over the
monitor sidecar's series fires while the run is still going, and Alertmanager routes it like any
other alert. Only what PromQL can say is translated: comparisons of a usage field with a number
(`usage.cpuMaxPercent > 85`), joined by `&&` and `||` (CEL and PromQL give `&&`/`and` the same
precedence over `||`/`or`); anything else (parentheses, functions, exitCode, phase) is reported as not
translatable and left to the operator's own judgement. A field's series and unit come from the one
usage table (model/usage.py: cpuMaxPercent 85 -> scriptrun_run_cpu_max_cores > 0.85)."""

from __future__ import annotations

import re
from typing import Any

from scriptrun.model.alerts import AlertRule
from scriptrun.model.usage import FIELDS

_COMPARISON = re.compile(r"^usage\.([A-Za-z]\w*)\s*(<=|>=|==|!=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?)$")
_FLIPPED = re.compile(r"^(-?[0-9]+(?:\.[0-9]+)?)\s*(<=|>=|==|!=|<|>)\s*usage\.([A-Za-z]\w*)$")
_MIRROR = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
_SERIES = {f.status: f for f in FIELDS if f.metric}


class NotTranslatable(ValueError):
    pass


def _comparison(text: str, selector: str) -> str:
    text = text.strip()
    if match := _COMPARISON.match(text):
        field, op, number = match.groups()
    elif match := _FLIPPED.match(text):
        number, op, field = match.groups()
        op = _MIRROR[op]
    else:
        raise NotTranslatable(f"{text!r} is not `usage.FIELD <op> NUMBER`")
    spec = _SERIES.get(field)
    if spec is None:
        raise NotTranslatable(f"usage.{field} has no series the monitor serves")
    value = float(number) * spec.scale
    return f"{spec.metric}{{{selector}}} {op} {value:.15g}"


def promql(expression: str, selector: str) -> str:
    """The expression over the series that `selector` picks; NotTranslatable if PromQL cannot say it."""
    if "(" in expression or ")" in expression:
        raise NotTranslatable("parentheses are not translated")
    alternatives = []
    for alternative in expression.split("||"):
        parts = [_comparison(part, selector) for part in alternative.split("&&")]
        alternatives.append(" and ".join(parts))
    return " or ".join(alternatives)


def _selector(namespace: str, labels: dict[str, str]) -> str:
    pairs = {"namespace": namespace, **labels}
    return ", ".join(f'{k}="{v}"' for k, v in pairs.items())


def rules_for(kind: str, obj: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """A ScriptRun's or Workflow's alert rules as Prometheus rules, and why any was left out."""
    namespace = obj.metadata.namespace
    name = obj.metadata.name
    targets: list[tuple[str, dict[str, str], list[AlertRule]]] = []
    if kind == "ScriptRun":
        targets.append((name, {"scriptrun": name}, list(obj.spec.alerts or [])))
    else:
        for task in [*obj.spec.tasks, *(obj.spec.on_exit or [])]:
            targets.append((f"{name}.{task.name}", {"workflow": name, "task": task.name}, list(task.alerts or [])))
    rules, skipped = [], []
    for where, labels, alerts in targets:
        for alert in alerts:
            try:
                expr = promql(alert.expression, _selector(namespace, labels))
            except NotTranslatable as err:
                skipped.append(f"{where}: alert {alert.name}: {err}")
                continue
            rules.append(
                {
                    "alert": alert.name,
                    "expr": expr,
                    "labels": {"severity": alert.severity, **labels, "namespace": namespace},
                    "annotations": {
                        "summary": f"{alert.name} on {kind} {namespace}/{name}",
                        "description": alert.message or alert.expression,
                    },
                }
            )
    return rules, skipped


def prometheus_rule(kind: str, obj: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The PrometheusRule (monitoring.coreos.com/v1) of one manifest's alerts, or None if none translate."""
    rules, skipped = rules_for(kind, obj)
    if not rules:
        return None, skipped
    name = obj.metadata.name
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": f"{name}-alerts"[:253],
            "namespace": obj.metadata.namespace,
            "labels": {"app.kubernetes.io/managed-by": "scriptrun"},
        },
        "spec": {"groups": [{"name": f"scriptrun.{kind.lower()}.{name}", "rules": rules}]},
    }, skipped
