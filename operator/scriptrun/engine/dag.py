"""Validate a Workflow spec and expand it into a plan: tasks, matrix nodes, dependencies, order.

Every problem is reported at once, each naming the task and the field, so a user fixes a manifest
in one go. Hostile input is bounded: node counts, matrix products, expression size and depth.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

from scriptrun.engine import expressions, params
from scriptrun.engine import gates as gate_rules
from scriptrun.model.workflow import WorkflowSpec, WorkflowTask

MAX_NODES = 5000
DEFAULT_DEPENDS_FLAGS = ("Succeeded", "Skipped")  # `dependencies: [a]` means a.Succeeded || a.Skipped


class PlanError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Node:
    id: str
    task: str
    index: int | None = None
    matrix: tuple[tuple[str, str], ...] = ()
    exit_handler: bool = False

    @property
    def display(self) -> str:
        if not self.matrix:
            return self.task
        return f"{self.task}(" + ",".join(f"{k}={v}" for k, v in self.matrix) + ")"


@dataclass
class Plan:
    tasks: dict[str, WorkflowTask]
    exit_tasks: set[str]
    nodes: dict[str, Node]
    nodes_of: dict[str, list[str]]
    deps: dict[str, set[str]]
    order: list[str]
    parameters: dict[str, str]
    handled_failures: set[str] = field(default_factory=set)

    @property
    def main_tasks(self) -> list[str]:
        return [t for t in self.order if t not in self.exit_tasks]

    @property
    def exit_order(self) -> list[str]:
        return [t for t in self.order if t in self.exit_tasks]


def declared_outputs(task: WorkflowTask) -> list[str]:
    return [o.name for o in task.outputs.parameters or []] if task.outputs else []


def _template_texts(task: WorkflowTask) -> list[tuple[str, str]]:
    """(field, text) of every string that placeholders may appear in."""
    out: list[tuple[str, str]] = []
    if task.script.source:
        out.append(("script.source", task.script.source))
    for i, part in enumerate(task.script.command or []):
        out.append((f"script.command[{i}]", part))
    for i, arg in enumerate(task.args or []):
        out.append((f"args[{i}]", arg))
    for var in task.env or []:
        if var.value is not None:
            out.append((f"env[{var.name}]", var.value))
    for par in task.parameters or []:
        if par.value is not None:
            out.append((f"parameters[{par.name}]", par.value))
    if task.image:
        out.append(("image", task.image))
    return out


def _cycle(deps: dict[str, set[str]]) -> list[str] | None:
    """The first dependency cycle in a depth-first walk (names sorted), as a path that ends where it
    starts; None if there is none. Iterative: a chain as long as the schema allows (MAX_TASKS) must
    not reach Python's recursion limit."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(deps):
        if state.get(root) is not None:
            continue
        path: list[str] = [root]
        todo: list[list[str]] = [sorted(deps.get(root, ()), reverse=True)]  # per path entry, what is left
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            dep = todo[-1].pop()
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if state.get(dep) is None:
                state[dep] = 1
                path.append(dep)
                todo.append(sorted(deps.get(dep, ()), reverse=True))
    return None


def _toposort(deps: dict[str, set[str]], names: list[str]) -> list[str]:
    order: list[str] = []
    done: set[str] = set()
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if deps.get(n, set()) <= done]
        if not ready:
            break
        for n in ready:
            order.append(n)
            done.add(n)
        remaining = [n for n in remaining if n not in done]
    return order


def _upstream(deps: dict[str, set[str]], task: str) -> set[str]:
    seen: set[str] = set()
    frontier = list(deps.get(task, ()))
    while frontier:
        t = frontier.pop()
        if t not in seen:
            seen.add(t)
            frontier.extend(deps.get(t, ()))
    return seen


def build_plan(spec: WorkflowSpec, *, overrides: dict[str, str] | None = None) -> Plan:
    errors: list[str] = []
    overrides = overrides or {}
    declared = {p.name: p.value for p in (spec.arguments.parameters if spec.arguments else None) or []}
    for name in overrides:
        if name not in declared:
            errors.append(f"parameter {name!r} is not declared in spec.arguments.parameters")
    parameters: dict[str, str] = {}
    for name, value in declared.items():
        if name in overrides:
            parameters[name] = overrides[name]
        elif value is None:
            errors.append(f"spec.arguments.parameters[{name}]: no value (give one, or pass -p {name}=VALUE)")
        else:
            parameters[name] = value

    main = list(spec.tasks)
    exits = list(spec.on_exit or [])
    tasks: dict[str, WorkflowTask] = {}
    for where, group in (("spec.tasks", main), ("spec.onExit", exits)):
        for task in group:
            if task.name in tasks:
                errors.append(f"{where}: duplicate task name {task.name!r}")
            tasks[task.name] = task
    exit_names = {t.name for t in exits}

    deps: dict[str, set[str]] = {}
    handled: set[str] = set()
    for task in tasks.values():
        where = f"task {task.name}"
        mine: set[str] = set()
        for dep in task.dependencies or []:
            if dep not in tasks:
                errors.append(f"{where}: dependencies: task {dep!r} does not exist")
            elif dep == task.name:
                errors.append(f"{where}: dependencies: a task cannot depend on itself")
            mine.add(dep)
        if task.depends and params.references(task.depends):
            errors.append(f"{where}: depends: placeholders are not allowed (depends sees task results; use when)")
        elif task.depends:
            try:
                expressions.check(expressions.rewrite_depends(task.depends), task.depends)
                refs = expressions.referenced_tasks(task.depends)
                if not refs:
                    errors.append(f"{where}: depends: {task.depends!r} names no task result (e.g. a.Succeeded)")
                for dep, flags in refs.items():
                    if dep not in tasks:
                        errors.append(f"{where}: depends: task {dep!r} does not exist")
                    if flags & set(expressions.FAILURE_FLAGS):
                        handled.add(dep)
                    mine.add(dep)
            except expressions.ExpressionError as err:
                errors.append(f"{where}: depends: {err}")
        if task.name in exit_names:
            bad = sorted(d for d in mine if d not in exit_names)
            if bad:
                errors.append(f"{where}: an exit handler can depend only on other exit handlers, not {bad}")
        elif any(d in exit_names for d in mine):
            errors.append(f"{where}: a task cannot depend on an exit handler")
        deps[task.name] = {d for d in mine if d in tasks}

    cycle = _cycle(deps)
    if cycle:
        errors.append("dependency cycle: " + " -> ".join(cycle))

    # matrix expansion and node ids
    nodes: dict[str, Node] = {}
    nodes_of: dict[str, list[str]] = {}
    for task in tasks.values():
        where = f"task {task.name}"
        if task.matrix is None:
            nodes_of[task.name] = [task.name]
            nodes[task.name] = Node(task.name, task.name, exit_handler=task.name in exit_names)
            continue
        names = [p.name for p in task.matrix.params]
        if len(set(names)) != len(names):
            errors.append(f"{where}: matrix: duplicate parameter names")
        size = 1
        for p in task.matrix.params:
            size *= len(p.values)
        if size > task.matrix.max_combinations:
            errors.append(f"{where}: matrix has {size} combinations; the cap is {task.matrix.max_combinations}")
            continue
        values = []
        for p in task.matrix.params:
            try:
                values.append(
                    [
                        params.substitute(v, {f"workflow.parameters.{k}": v2 for k, v2 in parameters.items()})
                        for v in p.values
                    ]
                )
            except params.MissingValue as err:
                errors.append(f"{where}: matrix.params[{p.name}]: {err}")
                values.append(list(p.values))
        ids = []
        for i, combo in enumerate(itertools.product(*values)):
            node_id = f"{task.name}-{i}"
            ids.append(node_id)
            nodes[node_id] = Node(
                node_id, task.name, i, tuple(zip(names, combo, strict=True)), exit_handler=task.name in exit_names
            )
        nodes_of[task.name] = ids
    if len(nodes) > MAX_NODES:
        errors.append(f"the workflow expands to {len(nodes)} nodes; at most {MAX_NODES}")
    for task_name, ids in nodes_of.items():
        for node_id in ids:
            if node_id != task_name and node_id in tasks:
                errors.append(f"task {task_name}: matrix node {node_id!r} collides with the task of that name")

    # placeholders must point at something that will exist
    for task in tasks.values():
        upstream = _upstream(deps, task.name)
        inputs = {p.name for p in task.parameters or []}
        matrix_names = {p.name for p in task.matrix.params} if task.matrix else set()
        texts = _template_texts(task)
        if task.when:
            texts.append(("when", task.when))
        for fld, text in texts:
            for ref in params.references(text):
                problem = _check_ref(ref, task, tasks, upstream, parameters, inputs, matrix_names, exit_names)
                if problem:
                    errors.append(f"task {task.name}: {fld}: {{{{{ref}}}}}: {problem}")
        if task.when:
            try:
                expressions.check(expressions.bind_placeholders(task.when).text, task.when)
            except expressions.ExpressionError as err:
                errors.append(f"task {task.name}: when: {err}")
        errors.extend(f"task {task.name}: {problem}" for problem in gate_rules.problems(task))
        for out in (task.outputs.parameters if task.outputs else None) or []:
            if out.path and (out.path.startswith("/") or ".." in out.path.split("/")):
                errors.append(
                    f"task {task.name}: outputs.parameters[{out.name}].path: must be relative to "
                    "$SCRIPTRUN_OUTPUTS, without '..'"
                )
    if errors:
        raise PlanError(errors)
    order = _toposort(deps, list(tasks))
    return Plan(tasks, exit_names, nodes, nodes_of, deps, order, parameters, handled)


def _check_ref(
    ref: str,
    task: WorkflowTask,
    tasks: dict[str, WorkflowTask],
    upstream: set[str],
    parameters: dict[str, str],
    inputs: set[str],
    matrix_names: set[str],
    exit_names: set[str],
) -> str | None:
    parts = ref.split(".")
    if parts[0] == "workflow":
        if parts[1:2] == ["parameters"] and len(parts) == 3:
            return None if parts[2] in parameters else "no such workflow parameter"
        if ref in ("workflow.name", "workflow.namespace", "workflow.uid"):
            return None
        if ref in ("workflow.status", "workflow.failures"):
            return None if task.name in exit_names else "only exit handlers can read the workflow's result"
        return "unknown workflow field"
    if parts[0] == "inputs" and len(parts) == 3 and parts[1] == "parameters":
        return None if parts[2] in inputs else "no such parameter in this task's parameters"
    if parts[0] == "matrix" and len(parts) == 2:
        return None if parts[1] in matrix_names else "no such matrix parameter"
    if parts[0] == "tasks" and len(parts) == 5 and parts[2:4] == ["outputs", "parameters"]:
        source, name = parts[1], parts[4]
        if source not in tasks:
            return f"task {source!r} does not exist"
        if task.name not in exit_names and source not in upstream:
            return f"task {source!r} is not upstream of this task (add it to dependencies)"
        declared = set(declared_outputs(tasks[source]))
        return None if name in declared else f"task {source!r} declares no output {name!r}"
    return "unknown reference"


def aggregate_output(values: list[str | None]) -> str:
    """A matrix task's output, as Argo aggregates withItems outputs: a JSON list, in node order."""
    return json.dumps(values)
