"""Defer a library's submodule that its package's __init__ imports eagerly and we never use.

The CEL library (`cel`, engine/expressions.py) imports its own command line in its __init__ (`from .
import cli`), and with it typer, rich, prompt_toolkit and wcwidth: some 250 modules and 10 MiB of
the operator's memory (measured: `import kopf, scriptrun.handlers` RSS 76.1 -> 65.9 MiB) for code
the operator never runs. defer() puts a stand-in for such a submodule in sys.modules before the
package is imported; the first attribute read from the stand-in imports the real module (and puts
it in place in sys.modules and on its package), so nothing that does use it breaks.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

OPERATOR_DEFERRED = ("cel.cli",)  # deferred in the operator process (cli.py), before Kopf and our handlers load


class _Deferred(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # import machinery probing the stand-in (__path__, __file__ ...)
            raise AttributeError(attr)
        return getattr(load(self.__name__), attr)


def defer(name: str) -> bool:
    """Stand in for the submodule `name` until first used; False if it is imported already."""
    if name in sys.modules:
        return False
    sys.modules[name] = _Deferred(name)
    return True


def load(name: str) -> types.ModuleType:
    """The real module `name` (imported now if only its stand-in is there)."""
    module = sys.modules.get(name)
    if not isinstance(module, _Deferred):
        return importlib.import_module(name)
    del sys.modules[name]
    real = importlib.import_module(name)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, real)
    return real
