"""JSON merge patch (RFC 7386) between two plain documents."""

from __future__ import annotations

from typing import Any


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `old` into `new` (keys gone from `new` become null)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before or key not in old:
            patch[key] = value
    return patch


def as_stored(model_dump: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """A status model's dump restricted to the top-level fields the object really stores: a field
    filled in by a model default (phase Pending) was never written, so a patch must write it."""
    present = stored or {}
    return {key: value for key, value in model_dump.items() if key in present}
