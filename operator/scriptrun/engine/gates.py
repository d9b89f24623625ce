"""Policy gates judged by the engine (pure): `spec.gates.after`, CEL over the measured usage.

The same CEL interpreter as `when` (engine/expressions.py). A gate sees:
- `usage`: the run's status.usage as the monitor reported it (memoryMaxMb, cpuMaxPercent,
  executionTimeSeconds, ...);
- `exitCode` and `attempt`: of the attempt that succeeded.

A gate that cannot be judged (no usage: the monitor is off or left no summary; a field the usage
lacks; an expression that is not true or false) is an Error, which fails the run like a failed gate
unless its action is Warn: a gate must never pass for want of data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scriptrun.engine import expressions
from scriptrun.model.alerts import FiredAlert
from scriptrun.model.gates import AfterGate, BeforeGates, GateResult
from scriptrun.model.scriptrun import RunTemplate

FAILED_REASON = "GateFailed"
INVALID_REASON = "InvalidGate"
INVALID_ALERT = "InvalidAlert"
MESSAGE_LIMIT = 300
_USAGE_FIELD = re.compile(r"\busage\.([A-Za-z_]\w*)")
_NO_SUCH_KEY = re.compile(r"^cannot evaluate .*: '[A-Za-z_]\w*'$", re.S)


def after_gates(spec: RunTemplate) -> list[AfterGate]:
    gates = getattr(spec, "gates", None)
    return list(gates.after or []) if gates is not None else []


def inputs_of(spec: RunTemplate) -> list[tuple[str, str]]:
    """The run's inputs a secret may hide in: args and plain env values (not valueFrom: a Secret's
    value is where a secret belongs)."""
    out = [(f"spec.args[{i}]", arg) for i, arg in enumerate(spec.args or [])]
    out += [(f"spec.env[{var.name}]", var.value) for var in spec.env or [] if var.value]
    return out


def before_gates(spec: RunTemplate) -> BeforeGates | None:
    gates = getattr(spec, "gates", None)
    before: BeforeGates | None = gates.before if gates is not None else None
    if before is None or not (before.static_analysis or before.secret_scan or before.dependency_scan):
        return None
    return before


def problems(spec: RunTemplate) -> list[str]:
    """Gate and alert expressions that do not compile, each with its field: `gates.after[0].expression: ...`."""
    out = []
    checked = [(f"gates.after[{i}]", g.expression) for i, g in enumerate(after_gates(spec))]
    checked += [(f"alerts[{i}]", a.expression) for i, a in enumerate(getattr(spec, "alerts", None) or [])]
    for where, expression in checked:
        try:
            expressions.check(expression)
        except expressions.ExpressionError as err:
            out.append(f"{where}.expression: {err}")
    return out


def judge_alerts(
    spec: RunTemplate, usage: Mapping[str, Any] | None, context: Mapping[str, Any], now: str
) -> tuple[list[FiredAlert], list[str]]:
    """spec.alerts over a finished run's usage: those that fire, and why any could not be judged.
    No usage (the monitor off, or no summary): nothing to judge, nothing fires."""
    rules = getattr(spec, "alerts", None) or []
    if not rules or _missing_usage(usage) is not None:
        return [], []
    variables = {"usage": dict(usage or {}), **context}
    fired, errors = [], []
    for rule in rules:
        try:
            firing = expressions.evaluate_bool(rule.expression, variables)
        except expressions.ExpressionError as err:
            errors.append(f"alert {rule.name}: {err}"[:MESSAGE_LIMIT])
            continue
        if firing:
            text = f"{rule.message or rule.expression}{_measured(rule.expression, variables)}"[:MESSAGE_LIMIT]
            fired.append(FiredAlert(name=rule.name, severity=rule.severity, message=text, fired_at=now))
    return fired, errors


@dataclass
class Verdict:
    """The gates' results, the Events they call for, and why the run fails (None: it does not)."""

    results: list[GateResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failure: str | None = None


def _missing_usage(usage: Mapping[str, Any] | None) -> str | None:
    if usage is None:
        return "no usage was measured (spec.monitor.enabled is false)"
    if usage.get("available") is False:
        return f"no usage was measured ({usage.get('reason')}: {usage.get('message')})"
    return None


def _judge(gate: AfterGate, context: dict[str, Any], missing: str | None) -> tuple[str, str]:
    """(result, message): Passed, Failed or Error, before the action is applied."""
    if missing is not None:
        return "Error", missing
    try:
        passed = expressions.evaluate_bool(gate.expression, context)
    except expressions.ExpressionError as err:
        text = str(err)
        if _NO_SUCH_KEY.search(text):  # the interpreter's KeyError names only the key
            text += f" (no such field; usage has {', '.join(sorted(context['usage']))})"
        return "Error", text[:MESSAGE_LIMIT]
    if passed:
        return "Passed", ""
    return "Failed", f"{gate.message or gate.expression + ' is false'}{_measured(gate.expression, context)}"


def _measured(expression: str, context: dict[str, Any]) -> str:
    """The usage fields the expression reads, as measured: ` (memoryMaxMb=612.5)`."""
    usage = context["usage"]
    names = dict.fromkeys(m[1] for m in _USAGE_FIELD.finditer(expression) if m[1] in usage)
    return f" ({', '.join(f'{n}={usage[n]}' for n in names)})" if names else ""


def judge_after(spec: RunTemplate, usage: Mapping[str, Any] | None, exit_code: int | None, attempt: int) -> Verdict:
    """Judge every after-gate of a run whose last attempt succeeded."""
    verdict = Verdict()
    gates = after_gates(spec)
    if not gates:
        return verdict
    missing = _missing_usage(usage)
    context = {"usage": dict(usage or {}), "exitCode": exit_code or 0, "attempt": attempt}
    failed: list[str] = []
    for gate in gates:
        result, message = _judge(gate, context, missing)
        if result != "Passed" and gate.action == "Warn":
            result = "Warned"
            verdict.warnings.append(f"gate {gate.name}: {message}"[:MESSAGE_LIMIT])
        elif result != "Passed":
            failed.append(f"gate {gate.name}: {message}")
        shown = message[:MESSAGE_LIMIT] or None
        verdict.results.append(GateResult(name=gate.name, stage="after", result=result, message=shown))
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        verdict.failure = (failed[0] + more)[:MESSAGE_LIMIT]
    return verdict
