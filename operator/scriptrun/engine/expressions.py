"""Conditions (`depends`, `when`) in CEL, the language Kubernetes users already write in CRD
validation rules and admission policies; evaluated by the maintained `common-expression-language`
package (a Rust CEL interpreter), never by `eval`.

Argo spells `depends: "a.Succeeded || !b.Failed"` and so do we: each task is a variable holding its
result flags. `{{...}}` placeholders are substituted first (see params.py), as in Argo's `when`.
"""

from __future__ import annotations

import re
from typing import Any

import cel

MAX_LENGTH = 4096
MAX_NESTING = 32
RESULT_FLAGS = ("Succeeded", "Failed", "Skipped", "Omitted", "AnySucceeded", "AllFailed", "AnyFailed", "AllSucceeded")
FAILURE_FLAGS = ("Failed", "AnyFailed", "AllFailed")
IDENT = re.compile(r"(?<![\w.-])([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(" + "|".join(RESULT_FLAGS) + r")\b")


class ExpressionError(ValueError):
    pass


def _nesting(expr: str) -> int:
    depth = deepest = 0
    quote: str | None = None
    for ch in expr:
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def check(expr: str) -> None:
    """Refuse what is too long or too deep before the interpreter sees it; then parse it."""
    if len(expr) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(expr)} characters; at most {MAX_LENGTH}")
    if _nesting(expr) > MAX_NESTING:
        raise ExpressionError(f"expression nests deeper than {MAX_NESTING} levels")
    try:
        cel.compile(expr)
    except Exception as err:  # the binding raises ValueError; be safe with anything it raises
        raise ExpressionError(f"invalid expression {expr!r}: {str(err).splitlines()[0]}") from None


def referenced_tasks(expr: str) -> dict[str, set[str]]:
    """Task names used as `name.Flag` in a depends expression, with the flags used."""
    out: dict[str, set[str]] = {}
    for m in IDENT.finditer(expr):
        out.setdefault(m.group(1), set()).add(m.group(3))
    return out


def _cel_name(task: str) -> str:
    return "t_" + task.replace("-", "_")


def rewrite_depends(expr: str) -> str:
    """`extract-a.Succeeded` is not a CEL identifier: map task names onto safe variable names."""
    return IDENT.sub(lambda m: f"{_cel_name(m.group(1))}.{m.group(3)}", expr)


def evaluate_bool(expr: str, context: dict[str, Any]) -> bool:
    check(expr)
    try:
        value = cel.evaluate(expr, context)
    except Exception as err:
        raise ExpressionError(f"cannot evaluate {expr!r}: {str(err).splitlines()[0]}") from None
    if not isinstance(value, bool):
        raise ExpressionError(f"{expr!r} gave {value!r}, not true or false")
    return value


def depends_context(results: dict[str, dict[str, bool]]) -> dict[str, Any]:
    return {_cel_name(task): flags for task, flags in results.items()}
