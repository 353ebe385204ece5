"""Property tests: templates, dataset files and filters only ever fail with their own error types."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayflow_runtime.domain.datasets import (
    DatasetFileError,
    FilterError,
    compile_filter,
    iter_items,
    parse_items,
)
from relayflow_runtime.domain.graph import GraphError, topological_order, validate_graph
from relayflow_runtime.domain.templating import TemplateError, parse_template, render

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

NAMES = st.sampled_from(["input", "nodes", "item", "a", "b", "tags", "0", "1", "text", "id", "upper"])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(NAMES | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)

SCOPES = st.fixed_dictionaries(
    {"input": st.text(max_size=10)},
    optional={
        "nodes": st.dictionaries(NAMES, JSON, max_size=3),
        "item": st.dictionaries(NAMES, JSON, max_size=4),
    },
) | st.dictionaries(NAMES | st.text(max_size=3), JSON, max_size=4)

TEMPLATE_PIECES = st.sampled_from(
    ["{{", "}}", "{{{", "}}}", "#", "^", "/", ">", "=", "&", "!", ".", " ", "\n", "input", "nodes",
     "item", "a", "b", "tags", "0", "{{input}}", "{{#item.tags}}", "{{/item.tags}}", "{{.}}",
     "{{^a}}", "{{/a}}", "{{nodes.a}}", "{{item}}", "{{#a}}"]
)  # fmt: skip
TEMPLATES = st.text(max_size=40) | st.lists(TEMPLATE_PIECES | st.text(max_size=3), max_size=20).map("".join)

FILTER_PIECES = st.sampled_from(
    ["score", "tags", "a.b", "[0]", "[?", "]", "`3`", "`\"x\"`", "'en'", "==", "!=", ">", "<=", "&&", "||",
     "!", "(", ")", "contains(", "length(", "sort(", "max(", ",", "@", "*", "|", "{a: b}", "[*]", " ",
     "to_number(", "abs(", "sum(", "`[1, \"a\"]`", "`null`", ".", "&", "nope("]
)  # fmt: skip
FILTERS = st.text(max_size=30) | st.lists(FILTER_PIECES, max_size=12).map("".join)

ITEMS: list[dict[str, Any]] = [
    {},
    {"score": 4, "tags": ["x", "urgent"], "lang": "en", "a": {"b": [1, "2"]}},
    {"score": "high", "tags": "urgent", "a": None},
    {"score": [1, "a"], "tags": [{"k": 1}], "a": {"b": {"c": True}}},
]

JSONL_PIECES = st.sampled_from(
    [b"{", b"}", b"[", b"]", b'"id"', b'"a"', b":", b",", b"1", b"null", b"\n", b"\r\n", b" ",
     b"\xef\xbb\xbf", b"\xff", b"\xc3", b'"', b"NaN", b"1e999", b'{"id": 1}\n', b'{"a": "x"}\n',
     b'{"id": "item-000001"}\n']
)  # fmt: skip
CSV_PIECES = st.sampled_from(
    [b"id", b"a", b",", b"\n", b"\r\n", b'"', b'""', b"x", b"\x00", b"\xef\xbb\xbf", b"\xff", b"1", b" "]
)
DATA = (
    st.binary(max_size=200)
    | st.lists(JSONL_PIECES, max_size=30).map(b"".join)
    | st.lists(CSV_PIECES, max_size=30).map(b"".join)
)


FINITE_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
ROWS = st.lists(
    st.dictionaries(st.sampled_from(["a", "text", "é", "", "x y"]), FINITE_JSON, max_size=3),
    min_size=1,
    max_size=6,
)


# --------------------------------------------------------------------------- templates


@FUZZ
@given(template=TEMPLATES, scope=SCOPES)
def test_render_returns_text_or_template_error(template: str, scope: dict[str, Any]) -> None:
    # Given any string as a template and any JSON-like scope
    # When it is rendered
    # Then the result is a string, or the failure is a TemplateError with a known code
    try:
        out = render(template, scope)
    except TemplateError as exc:
        assert exc.code in {
            "invalid_template",
            "template_too_long",
            "unknown_variable",
            "unrenderable_value",
            "rendered_too_long",
        }
        assert str(exc)
    else:
        assert isinstance(out, str)


@FUZZ
@given(template=TEMPLATES)
def test_parse_agrees_with_render_on_syntax(template: str) -> None:
    # Given any template
    # When parse_template accepts it, render never reports a syntax error
    try:
        info = parse_template(template)
    except TemplateError as exc:
        assert exc.code in {"invalid_template", "template_too_long"}
        return
    assert all(path and "" not in path.split(".") for path in info.variables)
    try:
        render(template, {"input": "x", "nodes": {}, "item": {}})
    except TemplateError as exc:
        assert exc.code == "unknown_variable"


@FUZZ
@given(text=st.text())
def test_text_without_tags_and_input_values_pass_through(text: str) -> None:
    # Given any text: inserted as {{input}} it comes out unchanged (no escaping of any kind)
    assert render("{{input}}", {"input": text}) == text
    # And as a template without '{{' it renders to itself
    if "{{" not in text:
        assert render(text, {}) == text


# --------------------------------------------------------------------------- dataset files


@FUZZ
@given(data=DATA)
def test_parse_items_yields_dicts_or_dataset_errors(data: bytes) -> None:
    # Given arbitrary bytes in each format
    for fmt in ("jsonl", "csv", "json"):
        # When parsed
        try:
            items = list(iter_items(data, fmt))
        except DatasetFileError as exc:
            # Then a failure is a DatasetFileError with a code and (mostly) a line
            assert exc.code in {"malformed_file", "too_large", "empty_file", "duplicate_id"}
            assert exc.line is None or exc.line >= 1
        else:
            # Or every item is a dict with a unique string id
            assert items and all(isinstance(p.data, dict) for p in items)
            assert len({p.id for p in items}) == len(items)
            assert [p.index for p in items] == list(range(len(items)))


@FUZZ
@given(rows=ROWS)
def test_valid_jsonl_and_json_round_trip(rows: list[dict[str, Any]]) -> None:
    # Given objects without ids, serialized as JSONL and as a (pretty-printed) JSON array
    jsonl = "\n".join(json.dumps(row) for row in rows).encode()
    array = json.dumps(rows, indent=1).encode()
    # When parsed
    # Then the same objects come back, with generated ids in order
    assert list(parse_items(jsonl, "jsonl")) == rows
    assert list(parse_items(array, "json")) == rows
    assert [p.id for p in iter_items(jsonl, "jsonl")] == [f"item-{i + 1:06d}" for i in range(len(rows))]


# --------------------------------------------------------------------------- filters


@FUZZ
@given(query=FILTERS)
def test_compile_filter_returns_or_raises_filter_error(query: str) -> None:
    # Given any string as a filter
    try:
        predicate = compile_filter(query)
    except FilterError as exc:
        # Then it is refused with invalid_filter
        assert exc.code == "invalid_filter"
        return
    # Or it compiles, and evaluating it on any item gives a bool (errors drop the item)
    for item in ITEMS:
        assert predicate(item) in (True, False)
    strict = compile_filter(query, on_error="raise")
    for item in ITEMS:
        try:
            assert strict(item) in (True, False)
        except FilterError as exc:
            assert exc.code == "filter_failed"


# --------------------------------------------------------------------------- graphs


@FUZZ
@given(
    count=st.integers(min_value=0, max_value=7),
    edges=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=12),
)
def test_graph_functions_are_consistent(count: int, edges: list[tuple[int, int]]) -> None:
    # Given any small graph (ids n0..n7, some of them possibly unknown)
    nodes = [f"n{i}" for i in range(count)]
    pairs = [(f"n{a}", f"n{b}") for a, b in edges]
    problems = validate_graph(nodes, pairs)
    try:
        order = topological_order(nodes, pairs)
    except GraphError as exc:
        # Then ordering fails exactly when a blocking problem exists
        assert {p.code for p in exc.problems} <= {"self_loop", "dangling_edge", "cycle", "duplicate_node"}
        assert any(p.code in ("self_loop", "dangling_edge", "cycle") for p in problems)
        return
    # Or the order is a permutation respecting every edge
    assert sorted(order) == sorted(nodes)
    position = {n: i for i, n in enumerate(order)}
    for begin, end in pairs:
        assert position[begin] < position[end]
