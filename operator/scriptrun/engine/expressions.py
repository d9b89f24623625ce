"""Conditions (`depends`, `when`) in CEL, the language Kubernetes users already write in CRD
validation rules and admission policies; evaluated by the maintained `common-expression-language`
package (a Rust CEL interpreter), never by `eval`.

Argo spells `depends: "a.Succeeded || !b.Failed"` and so do we: each task is a variable holding its
result flags.

`{{...}}` placeholders in a `when` are never spliced into the expression as text (an output
`x' || true || '` would turn data into code). `bind_placeholders` lexes the expression and puts a
CEL variable where each placeholder stands; the value is passed to the interpreter in the context:

- a quoted literal that is only a placeholder, `'{{ref}}'`, becomes the variable, a string;
- a literal with more text, `'v{{ref}}-x'`, becomes `('v' + var + '-x')`, still a string;
- a bare placeholder, `{{ref}} > 3`, is the value read as JSON (number, bool, null, list, map,
  string) when it is JSON, and otherwise the string itself;
- placeholders in `//` comments are left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from scriptrun.engine import params

MAX_LENGTH = 4096
MAX_NESTING = 32
RESULT_FLAGS = ("Succeeded", "Failed", "Skipped", "Omitted", "AnySucceeded", "AllFailed", "AnyFailed", "AllSucceeded")
FAILURE_FLAGS = ("Failed", "AnyFailed", "AllFailed")
IDENT = re.compile(r"(?<![\w.-])([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(" + "|".join(RESULT_FLAGS) + r")\b")
VARIABLE_PREFIX = "_sr_"  # placeholders become _sr_s0, _sr_j1, ...; users' variables are tasks, workflow...
MAX_MESSAGE = 200
# one lexer step outside literals: a comment, a string literal's opening (with its r/b prefix), a
# word (identifier, number, keyword) or any other single character
TOKEN = re.compile(r"(?P<comment>//[^\n]*)|(?P<prefix>[bB]?[rR]?)(?P<quote>'''|\"\"\"|'|\")|\w+|.", re.S)


class ExpressionError(ValueError):
    pass


def _first_line(err: BaseException) -> str:
    lines = str(err).splitlines()
    return lines[0][:MAX_MESSAGE] if lines else type(err).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


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


def check(expr: str, shown: str | None = None) -> None:
    """Refuse what is too long or too deep before the interpreter sees it; then parse it.
    `shown` is what messages quote (the user's text, when `expr` is its rewrite)."""
    shown = expr if shown is None else shown
    if len(expr) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(expr)} characters; at most {MAX_LENGTH}")
    if _nesting(expr) > MAX_NESTING:
        raise ExpressionError(f"expression nests deeper than {MAX_NESTING} levels")
    try:
        cel.compile(expr)
    except Exception as err:  # the binding raises ValueError; be safe with anything it raises
        raise ExpressionError(f"invalid expression {shown!r}: {_first_line(err)}") from None


# -- placeholders bound as variables -----------------------------------------------------------------


@dataclass
class Bound:
    """A `when` with its placeholders replaced by CEL variables."""

    text: str
    variables: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (reference, read as JSON)

    def name_for(self, ref: str, typed: bool) -> str:
        for name, key in self.variables.items():
            if key == (ref, typed):
                return name
        name = f"{VARIABLE_PREFIX}{'j' if typed else 's'}{len(self.variables)}"
        self.variables[name] = (ref, typed)
        return name

    def context(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The variables' values; MissingValue for a placeholder that has none."""
        out: dict[str, Any] = {}
        for name, (ref, typed) in self.variables.items():
            if ref not in values:
                raise params.MissingValue(ref)
            out[name] = json_value(values[ref]) if typed else values[ref]
        return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a CEL value")


def _too_deep(value: Any, budget: int) -> bool:
    if budget < 0:
        return True
    if isinstance(value, list):
        return any(_too_deep(v, budget - 1) for v in value)
    if isinstance(value, dict):
        return any(_too_deep(v, budget - 1) for v in value.values())
    return False


def json_value(text: str) -> Any:
    """A bare placeholder's value: the JSON it spells (within MAX_NESTING), else the string itself."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return text
    return text if _too_deep(value, MAX_NESTING) else value


def _scan_literal(expr: str, i: int, quote: str, raw: bool) -> tuple[list[tuple[bool, str]], int]:
    """The literal whose body starts at i, as (is_placeholder, text) pieces; and where it ends."""
    pieces: list[tuple[bool, str]] = []
    start = body = i
    while True:
        if i >= len(expr) or (len(quote) == 1 and expr[i] in "\r\n"):
            raise ExpressionError(f"unterminated string literal at character {body - len(quote)}")
        if expr.startswith(quote, i):
            pieces.append((False, expr[start:i]))
            return pieces, i + len(quote)
        m = params.PLACEHOLDER.match(expr, i)
        if m:
            pieces += [(False, expr[start:i]), (True, m.group(1))]
            i = start = m.end()
            continue
        i += 2 if expr[i] == "\\" and not raw else 1


def _literal_code(prefix: str, quote: str, pieces: list[tuple[bool, str]], bound: Bound) -> str:
    """CEL for a literal: itself, its placeholder's string variable, or a concatenation."""
    if len(pieces) == 1:
        return prefix + quote + pieces[0][1] + quote
    if "b" in prefix.lower():
        raise ExpressionError("a placeholder cannot stand in a bytes literal")
    parts = []
    for is_ref, text in pieces:
        if is_ref:
            parts.append(bound.name_for(text, typed=False))
        elif text:
            if len(quote) == 3 and text.endswith(quote[0]):
                raise ExpressionError(f"cannot split {quote}...{quote} around a placeholder after a quote")
            parts.append(prefix + quote + text + quote)
    return f" {parts[0]} " if len(parts) == 1 else " (" + " + ".join(parts) + ") "


def bind_placeholders(expr: str) -> Bound:
    """Replace each `{{ref}}` by a CEL variable (see the module doc); ExpressionError if unlexable."""
    bound = Bound("")
    out: list[str] = []
    i = 0
    while i < len(expr):
        ph = params.PLACEHOLDER.match(expr, i)
        if ph:
            out.append(f" {bound.name_for(ph.group(1), typed=True)} ")
            i = ph.end()
            continue
        tok = TOKEN.match(expr, i)
        assert tok is not None  # the last alternative matches any character
        if tok.group("quote"):
            prefix, quote = tok.group("prefix"), tok.group("quote")
            pieces, i = _scan_literal(expr, tok.end(), quote, raw="r" in prefix.lower())
            out.append(_literal_code(prefix, quote, pieces, bound))
            continue
        out.append(tok.group(0))
        i = tok.end()
    bound.text = "".join(out)
    return bound


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


def evaluate_bool(expr: str, context: dict[str, Any], shown: str | None = None) -> bool:
    shown = expr if shown is None else shown
    check(expr, shown)
    try:
        value = cel.evaluate(expr, context)
    except Exception as err:
        raise ExpressionError(f"cannot evaluate {shown!r}: {_first_line(err)}") from None
    if not isinstance(value, bool):
        raise ExpressionError(f"{shown!r} gave {_short(value)}, not true or false")
    return value


def evaluate_when(expr: str, values: Mapping[str, str], variables: Mapping[str, Any]) -> bool:
    """A `when`: its placeholders bound to `values` as CEL variables, next to `variables`."""
    bound = bind_placeholders(expr)
    return evaluate_bool(bound.text, {**variables, **bound.context(values)}, shown=expr)


def depends_context(results: dict[str, dict[str, bool]]) -> dict[str, Any]:
    return {_cel_name(task): flags for task, flags in results.items()}
