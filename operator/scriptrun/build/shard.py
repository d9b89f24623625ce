"""Sharding by label selector: an operator watches only the ScriptRuns and Workflows its selector
matches (server-side), and what it creates (a Workflow's ScriptRuns, a ScriptRun's pods) carries
the parent's values of the selector's keys, so children stay in their parent's shard. Pure.

The selector is Kubernetes' label-selector syntax (`team=ml`, `tier!=batch`, `team in (ml,data)`,
`team notin (ml)`, `team`, `!team`); it is parsed here only to find its keys and to refuse a
malformed one at start-up with a clear message (the API server would refuse it on every watch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_REQUIREMENT = re.compile(
    rf"""^\s*(?:
        !\s*(?P<absent>{_KEY})
      | (?P<key>{_KEY})\s*(?:
            (?:==|!=|=)\s*{_VALUE}
          | \s(?:in|notin)\s*\(\s*{_VALUE}(?:\s*,\s*{_VALUE})*\s*\)
        )?
    )\s*$""",
    re.VERBOSE,
)


class SelectorError(ValueError):
    """A label selector that is not Kubernetes' syntax (the message quotes the requirement)."""


def requirements(selector: str) -> list[str]:
    """The comma-separated requirements (commas inside `in (...)` belong to their requirement)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p.strip() for p in parts if p.strip()]


def selector_keys(selector: str) -> tuple[str, ...]:
    """The label keys a selector tests, in order; SelectorError for a malformed selector."""
    keys: list[str] = []
    for requirement in requirements(selector):
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SelectorError(f"not a label selector requirement: {requirement!r}")
        key = match.group("absent") or match.group("key")
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def inherited(labels: Mapping[str, str] | None, keys: tuple[str, ...]) -> dict[str, str]:
    """The parent's labels a child carries so that the same shard's selector matches it."""
    return {k: labels[k] for k in keys if labels and k in labels}
