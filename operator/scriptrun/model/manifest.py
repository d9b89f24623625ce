"""Parse manifests (YAML text, possibly several documents) into models. No file I/O here: the
callers read the file."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from scriptrun.model.scriptrun import ScriptRun
from scriptrun.model.workflow import Workflow


class ManifestError(ValueError):
    pass


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents in `text` (read from `source`, named in errors)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as err:
        raise ManifestError(f"{source}: {err}") from err
    for doc in docs:
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: every document must be a mapping")
    return docs


def read_error(source: str, err: OSError) -> ManifestError:
    """The error for a manifest file that cannot be read."""
    return ManifestError(f"{source}: {err}")


def _error_text(err: ValidationError) -> str:
    lines = []
    for e in err.errors()[:10]:
        where = ".".join(str(p) for p in e["loc"])
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_object(doc: dict[str, Any], source: str = "manifest") -> ScriptRun | Workflow:
    kind = doc.get("kind")
    model: type[ScriptRun] | type[Workflow]
    if kind == "ScriptRun":
        model = ScriptRun
    elif kind == "Workflow":
        model = Workflow
    else:
        raise ManifestError(f"{source}: kind {kind!r} is not ScriptRun or Workflow")
    try:
        return model.model_validate(doc)
    except ValidationError as err:
        raise ManifestError(f"{source}: invalid {kind}:\n{_error_text(err)}") from err
