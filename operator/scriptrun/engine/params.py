"""`{{...}}` placeholders: workflow parameters, task inputs, matrix values and upstream outputs.

{{workflow.name}}  {{workflow.parameters.NAME}}  {{inputs.parameters.NAME}}  {{matrix.NAME}}
{{tasks.TASK.outputs.parameters.NAME}}  {{workflow.status}} (exit handlers)

`substitute` is text substitution, for the task's fields (`script`, `args`, `env`, `image`). A
`when` never goes through it: there each placeholder is a CEL variable bound to its value
(expressions.bind_placeholders), so a value cannot become code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


class MissingValue(KeyError):
    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref

    def __str__(self) -> str:
        return f"no value for {{{{{self.ref}}}}}"


def references(text: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER.finditer(text)]


def substitute(text: str, values: Mapping[str, str], *, strict: bool = True) -> str:
    def repl(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref in values:
            return values[ref]
        if strict:
            raise MissingValue(ref)
        return m.group(0)

    return PLACEHOLDER.sub(repl, text)
