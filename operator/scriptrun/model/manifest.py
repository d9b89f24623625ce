"""Parse manifest documents (already read and loaded by local/yamlsafe.py, which refuses alias bombs
and non-UTF-8 bytes) into models. No file I/O here."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from scriptrun.model.scriptrun import ScriptRun
from scriptrun.model.workflow import Workflow


class ManifestError(ValueError):
    pass


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
