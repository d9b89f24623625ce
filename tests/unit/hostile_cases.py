"""The hostile-manifest corpus, shared by the local (tests/unit/test_hostile_local.py) and the API
server (tests/controlplane/test_hostile_api.py) tests: tests/unit/hostile/*.yaml, each file's first
line `# expect: <fragment of the local error>`, plus the large cases built here (megabytes are not
committed), each with the local error it expects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).parent / "hostile"
MARK = 'import os; open(os.environ["HOSTILE_MARKER"], "w").write("ran")'
MiB = 1024 * 1024


def scriptrun(spec: dict[str, Any], name: str = "hostile") -> dict[str, Any]:
    return {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "ScriptRun", "metadata": {"name": name}, "spec": spec}


def workflow(tasks: list[dict[str, Any]], name: str = "hostile") -> dict[str, Any]:
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"tasks": tasks},
    }


def task(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "script": {"source": MARK}, **extra}


def dump(*docs: dict[str, Any]) -> bytes:
    return yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), width=10**9).encode()


# -- the large cases, built here -------------------------------------------------------------------


def huge_source() -> bytes:
    return dump(scriptrun({"script": {"source": MARK + "\n" + "#" * (2 * MiB)}}))


def huge_configmap() -> bytes:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "code"}, "data": {"main.py": "#" * (2 * MiB)}}
    return dump(cm, scriptrun({"script": {"configMapRef": {"name": "code"}}}))


def too_many_tasks() -> bytes:
    return dump(workflow([task(f"t{i}") for i in range(2001)]))


def long_cycle() -> bytes:
    """The longest chain the schema allows, closed into a cycle: the engine's recursive cycle
    search needs more than Python's default recursion limit."""
    return dump(workflow([task(f"t{i}", dependencies=[f"t{(i + 1) % 2000}"]) for i in range(2000)]))


def node_explosion() -> bytes:
    values = [str(v) for v in range(256)]
    return dump(workflow([task(f"t{i}", matrix={"params": [{"name": "v", "values": values}]}) for i in range(20)]))


def long_expression() -> bytes:
    return dump(workflow([task("a"), task("b", when=" || ".join(["true"] * 1000))]))


def deep_nesting() -> bytes:
    return b"[" * MiB + b"]" * MiB


def deep_block_nesting() -> bytes:
    return b"".join(b" " * i + b"a:\n" for i in range(2000)) + b" " * 2000 + b"b\n"


def wide_aliases() -> bytes:
    return b"a: &a [x, y, z]\nb: [" + b"*a, " * (MiB // 4) + b"*a]\n"


def many_bad_args(count: int = 100_000) -> bytes:
    return dump(scriptrun({"script": {"source": MARK}, "args": [1] * count}))


def too_large_file() -> bytes:
    return dump(scriptrun({"script": {"source": MARK}})) + b"#" * (5 * MiB) + b"\n"


GENERATED: dict[str, tuple[Callable[[], bytes], str]] = {
    "huge-source": (huge_source, "spec.script.source: string should have at most 262144 characters (got 2097"),
    "huge-configmap": (huge_configmap, "ConfigMap 'code': data: 2097159 bytes; a ConfigMap holds at most 1048576"),
    "too-many-tasks": (too_many_tasks, "spec.tasks: list should have at most 2000 items after validation, not 2001"),
    "long-cycle": (
        long_cycle,
        "spec.tasks[0].dependencies: dependency cycle of 2000 tasks: t0 -> t1 -> t2 -> t3 -> ...",
    ),
    "node-explosion": (node_explosion, "the workflow expands to 5120 nodes; at most 5000"),
    "long-expression": (long_expression, "spec.tasks[1].when: string should have at most 4096 characters"),
    "deep-nesting": (deep_nesting, "YAML nested more than 100 deep"),
    "deep-block-nesting": (deep_block_nesting, "YAML nested more than 100 deep"),
    "wide-aliases": (wide_aliases, "YAML aliases expand the document beyond 1000000 values"),
    "many-bad-args": (many_bad_args, "spec.args[0]: must be a string (got 1) (and 99999 more)"),
    "too-large-file": (too_large_file, "the file is larger than 4 MiB"),
}


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.suffix == ".yaml")


def expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name}: the first line must be `# expect: ...`"
    return first.removeprefix("# expect: ")
