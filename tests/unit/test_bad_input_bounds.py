"""The pure bounds on client input: JSON bodies (nesting, numbers, text), dataset items' nesting,
Content-Disposition for any file name, and header values the local HTTP front end sends."""

from __future__ import annotations

import json

import pytest

from relayflow.local.server import header_value
from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.disposition import content_disposition
from relayflow_runtime.errors import InvalidInput
from relayflow_runtime.schemas import json_text


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [json_text.MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_a_body_nested_deeper_than_the_limit_is_invalid_json(depth: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        json_text.load('{"name": ' + _nested(depth - 1) + "}")
    assert refused.value.code == "invalid_json"
    assert refused.value.details == {"limit": "json_depth", "maximum": json_text.MAX_JSON_DEPTH}


def test_a_body_at_the_depth_limit_is_read() -> None:
    assert json_text.depth_of(json_text.load(_nested(json_text.MAX_JSON_DEPTH))) == json_text.MAX_JSON_DEPTH


@pytest.mark.parametrize(
    "literal", ["1" * 5000, "1" * 101, "-" + "9" * 100, "1." + "0" * 99, "1e999", "-1e400"]
)
def test_numbers_beyond_the_size_limit_are_invalid_json(literal: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        json_text.load('{"n": ' + literal + "}")
    assert refused.value.code == "invalid_json"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_invalid_json(constant: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        json_text.load('{"n": ' + constant + "}")
    assert refused.value.code == "invalid_json"


def test_numbers_within_the_limit_are_read_as_numbers() -> None:
    assert json_text.load('{"a": ' + "9" * 100 + ', "b": 1.5e300}') == {"a": int("9" * 100), "b": 1.5e300}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"single_input": "a\\ud800"}', "single_input"),
        ('{"config": {"input_template": "\\udc00x"}}', "config.input_template"),
        ('{"items": [{"t": "ok"}, {"t": ["x", "\\ud800"]}]}', "items.1.t.1"),
        ('{"config": {"\\ud800": 1}}', "config.\ud800"),
    ],
)
def test_a_lone_surrogate_is_invalid_text_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        json_text.load(text)
    assert refused.value.code == "invalid_text"
    assert refused.value.details == {"field": field}


def test_a_surrogate_pair_is_text() -> None:
    assert json_text.load('{"s": "\\ud83d\\ude00"}') == {"s": "\U0001f600"}


def test_a_dataset_item_nested_deeper_than_the_limit_is_refused_with_its_line() -> None:
    # Given a JSONL file whose second item nests one level more than allowed (255 used to pass
    # and break every page of items holding it)
    deep = {"a": json.loads(_nested(datasets.MAX_ITEM_DEPTH))}
    ok = {"a": json.loads(_nested(datasets.MAX_ITEM_DEPTH - 1))}
    data = (json.dumps(ok) + "\n" + json.dumps(deep) + "\n").encode()
    # When it is read
    with pytest.raises(datasets.DatasetFileError) as refused:
        list(datasets.iter_items(data, "jsonl"))
    # Then it is refused whole, naming the line and the limit
    assert refused.value.line == 2
    assert refused.value.code == "malformed_file"
    assert f"at most {datasets.MAX_ITEM_DEPTH} levels" in refused.value.reason


def test_255_levels_in_a_json_array_file_are_refused_too() -> None:
    data = ("[\n" + json.dumps({"a": json.loads(_nested(255))}) + "\n]").encode()
    with pytest.raises(datasets.DatasetFileError) as refused:
        list(datasets.iter_items(data, "json"))
    assert refused.value.line == 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ('a"b\\c.txt', "attachment; filename=\"ab_c.txt\"; filename*=UTF-8''a%22b_c.txt"),
        ("a\r\nX-Injected: 1.txt", 'attachment; filename="aX-Injected: 1.txt"'),
        (
            "résumé 日本.pdf",
            "attachment; filename=\"r_sum_ __.pdf\"; "
            "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.pdf",
        ),
        ("\x00\x1f\x7f\u2028", 'attachment; filename="download"'),
    ],
)
def test_content_disposition_is_printable_ascii_for_any_name(name: str, expected: str) -> None:
    header = content_disposition(name)
    assert header == expected
    assert all(" " <= char <= "~" for char in header)


def test_header_values_lose_control_characters_and_keep_to_latin_1() -> None:
    assert header_value("a\r\nb\x00c\td") == "abc\td"
    assert header_value("日本") == "??"
    assert header_value("café") == "café"
