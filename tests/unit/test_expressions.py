"""`when` placeholders are values, never code (issue 8, item 7).

An output `x' || true || '` spliced into `'{{...}}' == 'y'` used to make the condition true. Now
each placeholder is a CEL variable bound to its value (engine/expressions.py `bind_placeholders`),
so no value can change what a condition means: it is compared, or it fails the task cleanly.
"""

from __future__ import annotations

from typing import Any

import pytest

from scriptrun.engine import expressions
from scriptrun.engine.dag import build_plan
from scriptrun.engine.expressions import ExpressionError
from scriptrun.engine.params import MissingValue
from scriptrun.engine.workflow import _eval_when
from tests.unit.test_engine_workflow import errors_of, simulate, spec, task

REF = "tasks.a.outputs.parameters.v"

# hostile outputs: none of them is the string 'y', nor JSON that reads as 'y'
HOSTILE = [
    pytest.param("x' || true || '", id="single-quote-or-true"),
    pytest.param('x" || true || "', id="double-quote-or-true"),
    pytest.param("'", id="lone-single-quote"),
    pytest.param('"', id="lone-double-quote"),
    pytest.param("' == '' || '", id="quote-equals-empty"),
    pytest.param("y' && false || 'y' == 'y", id="and-or-chain"),
    pytest.param("||", id="bare-or"),
    pytest.param("&&", id="bare-and"),
    pytest.param("\\", id="backslash"),
    pytest.param("\\' || true || \\'", id="escaped-quotes"),
    pytest.param("y\\", id="trailing-backslash"),
    pytest.param("x'\n|| true || '", id="newline-or-true"),
    pytest.param("\n", id="newline"),
    pytest.param("') || (true", id="parentheses"),
    pytest.param("')) || ((true", id="parentheses-double"),
    pytest.param("' || true // ", id="cel-comment"),
    pytest.param("' // \n || true || '", id="cel-comment-newline"),
    pytest.param("/* ' || true || ' */", id="c-comment"),
    pytest.param("{{tasks.a.outputs.parameters.v}}", id="placeholder-in-value"),
    pytest.param("_sr_s0", id="variable-name"),
    pytest.param("true", id="json-true"),
    pytest.param('["y"]', id="json-list"),
    pytest.param('{"y": "y"}', id="json-map"),
    pytest.param("x' || true || '" * 200 + "z" * (3072 - 15 * 200), id="3KiB"),
    pytest.param("[" * 3000, id="3KiB-brackets"),
    pytest.param("y\u0301 ' || true || ' 🚀 ✓ ́", id="unicode"),
    pytest.param("\u202e' || true || '", id="unicode-rtl"),
    pytest.param("y\x00", id="nul"),
    pytest.param("", id="empty"),
]

# (condition, what it must give for any value that is not 'y'): both spellings users write, plus
# the bare placeholder and a placeholder with more text in the literal
CONDITIONS = [
    pytest.param(f"'{{{{{REF}}}}}' == 'y'", False, id="quoted-placeholder"),
    pytest.param(f'"{{{{{REF}}}}}" == "y"', False, id="double-quoted-placeholder"),
    pytest.param(f"'''{{{{{REF}}}}}''' == 'y'", False, id="triple-quoted-placeholder"),
    pytest.param(f"r'{{{{{REF}}}}}' == 'y'", False, id="raw-quoted-placeholder"),
    pytest.param(f"'{{{{{REF}}}}}' != 'y'", True, id="quoted-placeholder-negated"),
    pytest.param(f"'pre-{{{{{REF}}}}}-post' == 'pre-y-post'", False, id="placeholder-inside-text"),
    pytest.param(f"{REF} == 'y'", False, id="variable"),
    pytest.param(f"{REF} != 'y'", True, id="variable-negated"),
    pytest.param(f"{{{{{REF}}}}} == 'y'", False, id="bare-placeholder"),
    pytest.param(f"'{{{{{REF}}}}}' == 'y' // '{{{{{REF}}}}}' == '{{{{{REF}}}}}'", False, id="comment"),
]


def when(expr: str, value: str) -> bool | str:
    """What the decider makes of a `when` (workflow._eval_when); 'InvalidTask' for a clean refusal."""
    try:
        return _eval_when(expr, {REF: value})
    except (ExpressionError, MissingValue):
        return "InvalidTask"


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(("expr", "expected"), CONDITIONS)
def test_a_hostile_value_cannot_change_a_condition(expr: str, expected: bool, value: str) -> None:
    got = when(expr, value)
    if expr.startswith("{{"):  # a bare value is read as JSON: it may not fit, and then the task fails
        assert got in (expected, "InvalidTask")
    else:
        assert got is expected


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    "expr",
    [
        pytest.param(f"'{{{{{REF}}}}}' == {REF}", id="quoted-placeholder"),
        pytest.param(f"'<{{{{{REF}}}}}>' == '<' + {REF} + '>'", id="placeholder-inside-text"),
        pytest.param(f"size('{{{{{REF}}}}}') == size({REF})", id="size"),
    ],
)
def test_a_quoted_placeholder_is_exactly_the_value(expr: str, value: str) -> None:
    """Bound, not quoted by us: no escaping can mangle a value."""
    assert when(expr, value) is True


@pytest.mark.parametrize(
    ("expr", "value", "expected"),
    [
        pytest.param(f"'{{{{{REF}}}}}' == 'y'", "y", True, id="quoted"),
        pytest.param(f"'{{{{{REF}}}}}' == 'y'", "n", False, id="quoted-false"),
        pytest.param(f"{REF} == 'y'", "y", True, id="variable"),
        pytest.param(f"'v{{{{{REF}}}}}-rc' == 'v1.2-rc'", "1.2", True, id="inside-text"),
        pytest.param(f"'{{{{{REF}}}}}{{{{{REF}}}}}' == 'abab'", "ab", True, id="twice-in-one-literal"),
        pytest.param(f"{{{{{REF}}}}} > 100", "120", True, id="bare-int"),
        pytest.param(f"{{{{{REF}}}}} > 1.5", "2.5", True, id="bare-double"),
        pytest.param(f"{{{{{REF}}}}}", "true", True, id="bare-bool"),
        pytest.param(f"{{{{{REF}}}}} == null", "null", True, id="bare-null"),
        pytest.param(f"size({{{{{REF}}}}}) == 2", '["a", "b"]', True, id="bare-list"),
        pytest.param(f"{{{{{REF}}}}}.k == 1", '{"k": 1}', True, id="bare-map"),
        pytest.param(f"{{{{{REF}}}}} == 'y'", '"y"', True, id="bare-json-string"),
        pytest.param(f"{{{{{REF}}}}} == 'fast'", "fast", True, id="bare-word-is-a-string"),
        pytest.param(f"{{{{{REF}}}}} == 'NaN'", "NaN", True, id="bare-nan-is-a-string"),
        pytest.param(f"'{{{{{REF}}}}}' == '120'", "120", True, id="quoted-number-is-a-string"),
        pytest.param(f"int({REF}) > 100", "120", True, id="variable-converted"),
        pytest.param(f"{{{{{REF}}}}} > 100", "abc", "InvalidTask", id="bare-does-not-fit"),
        pytest.param(f"{{{{{REF}}}}}", "yes", "InvalidTask", id="bare-not-a-bool"),
    ],
)
def test_benign_values_keep_their_meaning(expr: str, value: str, expected: bool | str) -> None:
    assert when(expr, value) == expected


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        pytest.param("'{{a.b}}' == 'y'", " _sr_s0  == 'y'", id="quoted"),
        pytest.param('"{{ a.b }}" == "y"', ' _sr_s0  == "y"', id="double-quoted-with-spaces"),
        pytest.param("{{a.b}} > 1", " _sr_j0  > 1", id="bare"),
        pytest.param("'{{a.b}}' == {{a.b}}", " _sr_s0  ==  _sr_j1 ", id="both-readings"),
        pytest.param("'x{{a.b}}' + \"{{a.b}}\"", " ('x' + _sr_s0)  +  _sr_s0 ", id="one-variable-per-reading"),
        pytest.param("r'\\{{a.b}}'", " (r'\\' + _sr_s0) ", id="raw"),
        pytest.param("'\\'{{a.b}}'", " ('\\'' + _sr_s0) ", id="escaped-quote-before"),
        pytest.param("'{{a.b}}' // '{{c}}", " _sr_s0  // '{{c}}", id="comment-untouched"),
        pytest.param("a.b == 'y'", "a.b == 'y'", id="no-placeholder"),
    ],
)
def test_bind_placeholders_text(expr: str, text: str) -> None:
    assert expressions.bind_placeholders(expr).text == text


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        pytest.param("b'{{a.b}}' == b'y'", "bytes literal", id="bytes-literal"),
        pytest.param("'''x'{{a.b}}''' == 'y'", "after a quote", id="triple-quote-split"),
        pytest.param("'{{a.b}} == 'y'", "unterminated string literal at character 14", id="unterminated"),
        pytest.param("'{{a.b}}\n' == 'y'", "unterminated string literal at character 0", id="newline-in-literal"),
    ],
)
def test_unlexable_when_is_refused(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        expressions.bind_placeholders(expr)


def test_a_value_the_interpreter_cannot_take_is_a_clean_error() -> None:
    assert when(f"'{{{{{REF}}}}}' == 'y'", "\ud800") == "InvalidTask"  # a lone surrogate
    assert when(f"'{{{{{REF}}}}}' == 'y'", "ok") is False
    with pytest.raises(MissingValue):
        _eval_when("'{{tasks.b.outputs.parameters.v}}' == 'y'", {})


def test_messages_quote_the_users_text_and_cut_long_values() -> None:
    with pytest.raises(ExpressionError) as info:
        _eval_when(f"{{{{{REF}}}}}", {REF: "x" * 5000})
    assert "{{tasks.a.outputs.parameters.v}}" in str(info.value) and "_sr_" not in str(info.value)
    assert len(str(info.value)) < 400


# -- validation --------------------------------------------------------------------------------------


def test_validation_reads_the_when_as_bound_and_refuses_placeholders_in_depends() -> None:
    out = {"outputs": {"parameters": [{"name": "v"}]}}
    errs = errors_of(
        spec(
            [
                task("a", **out),
                task("b", dependencies=["a"], when="b'{{tasks.a.outputs.parameters.v}}' == b'y'"),
                task("c", dependencies=["a"], when="'{{tasks.a.outputs.parameters.v}}' == 'y' &&"),
                task("d", depends="a.Succeeded && '{{tasks.a.outputs.parameters.v}}' == 'y'"),
            ]
        )
    )
    assert "task b: when: a placeholder cannot stand in a bytes literal" in errs
    assert any(e.startswith("task c: when: invalid expression \"'{{tasks.a") for e in errs), errs
    assert "task d: depends: placeholders are not allowed (depends sees task results; use when)" in errs
    ok = spec([task("a", **out), task("b", dependencies=["a"], when="{{tasks.a.outputs.parameters.v}} > 3")])
    build_plan(ok)


# -- through the workflow decider --------------------------------------------------------------------

SPELLINGS = [
    pytest.param("'{{tasks.a.outputs.parameters.v}}' == 'y'", id="quoted-placeholder"),
    pytest.param("tasks.a.outputs.parameters.v == 'y'", id="variable"),
    pytest.param("{{tasks.a.outputs.parameters.v}} == 'y'", id="bare-placeholder"),
]


def deploy_workflow(when_: str) -> Any:
    return spec(
        [
            task("a", outputs={"parameters": [{"name": "v"}]}),
            task("deploy", dependencies=["a"], when=when_),
        ]
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x' || true || '", id="single-quote-or-true"),
        pytest.param('x" || true || "', id="double-quote-or-true"),
        pytest.param("x'\n|| true || '", id="newline-or-true"),
        pytest.param("') || (true", id="parentheses"),
    ],
)
@pytest.mark.parametrize("when_", SPELLINGS)
def test_a_hostile_output_no_longer_runs_a_task(when_: str, value: str) -> None:
    starts: list[tuple[str, Any]] = []
    status = simulate(deploy_workflow(when_), {"a": {"outputs": {"v": value}}}, starts=starts)
    assert "deploy" not in dict(starts)
    assert status.tasks["deploy"].phase == "Skipped"
    assert status.phase == "Succeeded"


@pytest.mark.parametrize("when_", SPELLINGS)
def test_the_benign_output_still_runs_it(when_: str) -> None:
    starts: list[tuple[str, Any]] = []
    status = simulate(deploy_workflow(when_), {"a": {"outputs": {"v": "y"}}}, starts=starts)
    assert "deploy" in dict(starts) and status.tasks["deploy"].phase == "Succeeded"


def test_parameters_matrix_and_workflow_status_are_bound_too() -> None:
    s = spec(
        [
            task("p", when="'{{workflow.parameters.env}}' == 'prod'"),
            task("q", when="{{workflow.parameters.n}} > 2 && workflow.parameters.env != 'prod'"),
            task(
                "m",
                matrix={"params": [{"name": "fmt", "values": ["csv", "json"]}]},
                when="'{{matrix.fmt}}' == 'csv' && matrix.fmt != 'json'",
            ),
        ],
        arguments={"parameters": [{"name": "env"}, {"name": "n", "value": "3"}]},
        onExit=[
            task("on-fail", when="'{{workflow.status}}' == 'Failed'"),
            task("on-ok", when="{{workflow.status}} == 'Succeeded' && size({{workflow.failures}}) == 0"),
        ],
    )
    phases = {n: t.phase for n, t in simulate(s, overrides={"env": "prod' || true || '"}).tasks.items()}
    assert phases == {
        "p": "Skipped",
        "q": "Succeeded",
        "m-0": "Succeeded",
        "m-1": "Skipped",
        "on-fail": "Skipped",
        "on-ok": "Succeeded",
    }
    assert simulate(s, overrides={"env": "prod"}).tasks["p"].phase == "Succeeded"
