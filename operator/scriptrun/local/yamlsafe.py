"""YAML for manifests, safe against hostile input: JSON-shaped data only, bounded in nesting and in
what its aliases expand to.

libyaml (the C parser) parses; its composer recurses in C, so a document nested a million deep
would crash the process: the nodes are composed here from its events, without recursion, and
nesting past the bound is refused at the first event past it. The node graph is then checked
without recursion before anything is built from it: every alias target is
counted as often as it is used, so a "billion laughs" document is refused from its size, and an
alias to itself is refused as recursive. Only the tags JSON has are accepted (a timestamp stays a
string; `!!binary`, `!!set` and custom tags are refused), mapping keys are strings (an unquoted
`on:` or `1:` key is its text, as Kubernetes reads it) and a key given twice is an error, as the
API server's strict field validation makes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

MAX_DEPTH = 100
"""Nesting of mappings and sequences, also through aliases."""
MAX_VALUES = 1_000_000
"""Every mapping, sequence and scalar, counted once per alias that reaches it."""

_TAG = "tag:yaml.org,2002:"
_SCALARS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null")}
_MERGE = f"{_TAG}merge"
_SEQ, _MAP, _STR = f"{_TAG}seq", f"{_TAG}map", f"{_TAG}str"
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """What is wrong with the YAML, in one line (with `path`, where there is one)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader without implicit timestamps (Kubernetes keeps `2024-01-01` a string)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != f"{_TAG}timestamp"]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


def _syntax(err: yaml.YAMLError) -> YamlError:
    if isinstance(err, yaml.reader.ReaderError):
        code = err.character if isinstance(err.character, int) else ord(err.character)
        return YamlError(f"YAML: character U+{code:04X} at offset {err.position} is not allowed")
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (err.context, err.problem) if p)
        return YamlError(f"YAML syntax: {what}{where}")
    return YamlError(f"YAML: {' '.join(str(err).split())}")


def _line(event: yaml.Event) -> int:
    mark: Any = event.start_mark
    return int(mark.line) + 1 if mark is not None else 0


def _new_node(loader: _Loader, event: yaml.NodeEvent) -> yaml.Node:
    start: Any = event.start_mark
    end: Any = event.end_mark
    if isinstance(event, yaml.ScalarEvent):
        tag = (
            event.tag if event.tag not in (None, "!") else loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        )
        return yaml.ScalarNode(tag, event.value, start, end, style=event.style)
    assert isinstance(event, yaml.CollectionStartEvent)
    kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
    tag = event.tag if event.tag not in (None, "!") else loader.resolve(kind, None, event.implicit)
    return kind(tag, [], start, end, flow_style=event.flow_style)


def _compose(loader: _Loader) -> Iterator[yaml.Node]:
    """The documents' node graphs, built from libyaml's event stream without recursion (its own
    composer recurses in C), refusing nesting past MAX_DEPTH as soon as it is reached."""
    anchors: dict[str, yaml.Node] = {}
    open_: list[yaml.CollectionNode] = []
    root: yaml.Node | None = None
    while loader.check_event():
        event = loader.get_event()
        if isinstance(event, yaml.DocumentStartEvent):
            anchors, root = {}, None
            continue
        if isinstance(event, yaml.DocumentEndEvent):
            if root is not None:
                yield root
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            done = open_.pop()
            if isinstance(done, yaml.MappingNode):  # composed as [k1, v1, k2, v2, ...]
                done.value = list(zip(done.value[::2], done.value[1::2], strict=True))
            continue
        if not isinstance(event, yaml.NodeEvent):  # stream start and end
            continue
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise YamlError(f"YAML: alias *{event.anchor} is not defined (line {_line(event)})")
            node = anchors[event.anchor]
        else:
            node = _new_node(loader, event)
            if event.anchor is not None:
                anchors[event.anchor] = node
        if open_:
            open_[-1].value.append(node)
        else:
            root = node
        if isinstance(event, yaml.CollectionStartEvent):
            assert isinstance(node, yaml.CollectionNode)
            open_.append(node)
            if len(open_) > MAX_DEPTH:
                raise YamlError(f"YAML nested more than {MAX_DEPTH} deep (line {_line(event)})")


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return "a list" if isinstance(node, yaml.SequenceNode) else "a scalar"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _children(node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
    """The node's children with their paths; checks a mapping's keys on the way."""
    if isinstance(node, yaml.SequenceNode):
        return [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
    if not isinstance(node, yaml.MappingNode):
        return []
    out: list[tuple[yaml.Node, str]] = []
    seen: set[str] = set()
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise YamlError(f"a mapping key must be a string, not {_kind(key)}", path)
        if key.tag == _MERGE:
            out.append((value, path))
            continue
        if key.tag != _STR:
            if key.tag not in _SCALARS:
                raise YamlError(f"YAML tag {key.tag} is not allowed on a key", path)
            key.tag = _STR  # `on:`, `1:`: the key is its text
        if key.value in seen:
            raise YamlError("duplicate field", _join(path, key.value))
        seen.add(key.value)
        out.append((value, _join(path, key.value)))
    return out


_ALLOWED = {yaml.ScalarNode: _SCALARS, yaml.SequenceNode: {_SEQ}, yaml.MappingNode: {_MAP}}


def _check_tag(node: yaml.Node, path: str) -> None:
    if node.tag not in _ALLOWED[type(node)]:
        tag = node.tag.replace(_TAG, "!!")
        raise YamlError(f"YAML tag {tag} is not allowed (a manifest holds JSON data)", path or "document")


def check_graph(root: yaml.Node) -> None:
    """Refuse recursive aliases, what expands beyond MAX_VALUES or MAX_DEPTH, non-JSON tags and
    duplicate keys; without recursion, each shared node walked once."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_: set[int] = set()
    kids: dict[int, list[yaml.Node]] = {}
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            children = kids.pop(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            height[key] = 1 + max((height[id(c)] for c in children), default=0)
            if size[key] > MAX_VALUES:
                raise YamlError(f"YAML aliases expand the document beyond {MAX_VALUES} values", path or "document")
            if height[key] > MAX_DEPTH:
                raise YamlError(f"YAML aliases nest the document more than {MAX_DEPTH} deep", path or "document")
            continue
        if key in size:
            continue
        _check_tag(node, path)
        if isinstance(node, yaml.ScalarNode):
            size[key] = height[key] = 1
            continue
        pairs = _children(node, path)
        open_.add(key)
        kids[key] = [child for child, _ in pairs]
        stack.append((node, path, True))
        for child, child_path in reversed(pairs):
            child_key = id(child)
            if child_key in open_:
                raise YamlError("a YAML alias refers to itself (recursive data)", child_path)
            if child_key in size:
                continue
            if isinstance(child, yaml.ScalarNode):  # most nodes: no trip through the stack
                _check_tag(child, child_path)
                size[child_key] = height[child_key] = 1
            else:
                stack.append((child, child_path, False))


def load_all(text: str) -> list[Any]:
    """The documents in `text`, each checked before it is built into Python values."""
    try:
        loader = _Loader(text)
        docs: list[Any] = []
        try:
            for node in _compose(loader):
                check_graph(node)
                docs.append(loader.construct_document(node))
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise _syntax(err) from err
    return docs
