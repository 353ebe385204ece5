"""Dataset files (JSONL, CSV, JSON array), item ids, limits, filters and the input field."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.datasets import (
    DatasetFileError,
    FilterError,
    InputFieldError,
    check_input_field,
    compile_filter,
    detect_format,
    input_text,
    item_id,
    iter_items,
    parse_items,
)


def fails(data: bytes, fmt: str) -> DatasetFileError:
    with pytest.raises(DatasetFileError) as info:
        list(parse_items(data, fmt))
    return info.value


class ChunkedStream:
    """A read(n)-only stream returning at most ``size`` bytes per call (like a network body)."""

    def __init__(self, data: bytes, size: int = 7) -> None:
        self.data = data
        self.pos = 0
        self.size = size
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        take = min(self.size, n if n >= 0 else len(self.data))
        chunk = self.data[self.pos : self.pos + take]
        self.pos += len(chunk)
        return chunk


# --------------------------------------------------------------------------- formats


def test_detect_format() -> None:
    assert detect_format("data/items.jsonl") == "jsonl"
    assert detect_format("ITEMS.NDJSON") == "jsonl"
    assert detect_format("x.csv") == "csv"
    assert detect_format("x.json") == "json"
    with pytest.raises(DatasetFileError) as info:
        detect_format("x.xlsx")
    assert info.value.code == "unsupported_format"


def test_unsupported_format_is_raised_at_once() -> None:
    with pytest.raises(DatasetFileError) as info:
        parse_items(b"{}", "xml")
    assert info.value.code == "unsupported_format"


def test_jsonl_items() -> None:
    # Given a JSONL file with two objects
    data = b'{"id": "a", "text": "hi", "n": 1.5, "tags": ["x"]}\n{"text": "yo"}\n'
    # When parsed
    items = list(parse_items(data, "jsonl"))
    # Then each line is one dict, values keep their JSON types
    assert items == [{"id": "a", "text": "hi", "n": 1.5, "tags": ["x"]}, {"text": "yo"}]


def test_jsonl_blank_lines_are_skipped_but_counted() -> None:
    # Given blank and whitespace-only lines, CRLF endings and no final newline
    data = b'\n{"a": 1}\r\n   \n\t\r\n{"a": 2}'
    parsed = list(iter_items(data, "jsonl"))
    # Then only the objects are items, with their real line numbers and 0-based indexes
    assert [(p.index, p.line, p.data) for p in parsed] == [(0, 2, {"a": 1}), (1, 5, {"a": 2})]


def test_jsonl_with_bom() -> None:
    assert list(parse_items(b'\xef\xbb\xbf{"a": 1}\n', "jsonl")) == [{"a": 1}]


def test_jsonl_malformed_line_number() -> None:
    # Given line 3 is broken JSON
    data = b'{"a": 1}\n{"a": 2}\n{"a": 3 "b": 4}\n{"a": 5}\n'
    err = fails(data, "jsonl")
    # Then the error names line 3 and jsonlib's reason
    assert err.code == "malformed_file"
    assert err.line == 3
    assert str(err).startswith("line 3: invalid JSON (Expecting ',' delimiter")


def test_jsonl_errors_surface_lazily_after_good_items() -> None:
    items = parse_items(b'{"a": 1}\n{oops}\n', "jsonl")
    assert next(items) == {"a": 1}
    with pytest.raises(DatasetFileError):
        next(items)


@pytest.mark.parametrize(
    ("line", "kind"),
    [(b"[1, 2]", "an array"), (b'"text"', "a string"), (b"3", "a number"), (b"null", "null")],
)
def test_jsonl_non_object_items(line: bytes, kind: str) -> None:
    err = fails(b'{"a": 1}\n' + line + b"\n", "jsonl")
    assert err.code == "malformed_file"
    assert err.line == 2
    assert f"must be a JSON object, not {kind}" in str(err)


def test_jsonl_rejects_nan() -> None:
    err = fails(b'{"a": NaN}\n', "jsonl")
    assert err.line == 1 and "NaN" in str(err)


@pytest.mark.parametrize(
    ("data", "fmt"), [(b'{"a": 1}\n{"a": 1e999}\n', "jsonl"), (b'[{"a": 1}, {"a": -1e400}]', "json")]
)
def test_numbers_beyond_a_float_are_refused_not_read_as_infinity(data: bytes, fmt: str) -> None:
    err = fails(data, fmt)
    assert err.code == "malformed_file"
    assert "too large for a 64-bit float" in str(err)


def test_jsonl_non_utf8() -> None:
    err = fails(b'{"a": "ok"}\n{"a": "caf\xe9"}\n', "jsonl")
    assert err.code == "malformed_file"
    assert err.line == 2
    assert "not UTF-8" in str(err) and "0xe9" in str(err)


def test_utf16_is_refused_with_a_hint() -> None:
    err = fails('{"a": 1}\n'.encode("utf-16"), "jsonl")
    assert err.code == "malformed_file" and "UTF-16" in str(err)


def test_csv_items() -> None:
    # Given a CSV file with a header, a quoted field containing a comma and a newline
    data = b'id,text,score\n1,hello,3\n2,"a, b\nc",4\n'
    parsed = list(iter_items(data, "csv"))
    # Then rows become dicts of strings keyed by the header, with their first line
    assert [p.data for p in parsed] == [
        {"id": "1", "text": "hello", "score": "3"},
        {"id": "2", "text": "a, b\nc", "score": "4"},
    ]
    assert [p.line for p in parsed] == [2, 3]


def test_csv_with_bom_and_crlf() -> None:
    data = "\ufeffname,lang\r\nAda,en\r\n".encode()
    assert list(parse_items(data, "csv")) == [{"name": "Ada", "lang": "en"}]


def test_csv_blank_lines_skipped() -> None:
    assert list(parse_items(b"a\n\n1\n\n2\n", "csv")) == [{"a": "1"}, {"a": "2"}]


def test_csv_ragged_row_reports_its_line() -> None:
    # Given row 4 (after a multi-line quoted field) has too few fields
    data = b'a,b\n1,2\n"x\ny",3\nonly-one\n'
    err = fails(data, "csv")
    assert err.code == "malformed_file"
    assert err.line == 5
    assert "1 field but the header has 2" in str(err)


def test_csv_too_many_fields() -> None:
    err = fails(b"a,b\n1,2,3\n", "csv")
    assert err.line == 2 and "3 fields" in str(err)


def test_csv_header_problems() -> None:
    assert "no name" in str(fails(b"a,,b\n1,2,3\n", "csv"))
    assert "repeats column 'a'" in str(fails(b"a,b,a\n1,2,3\n", "csv"))


def test_csv_unclosed_quote() -> None:
    err = fails(b'a,b\n1,"open\n', "csv")
    assert err.code == "malformed_file"
    assert "invalid CSV" in str(err)


def test_csv_non_utf8() -> None:
    err = fails(b"name\nJos\xe9\n", "csv")
    assert err.code == "malformed_file" and err.line == 2


def test_json_array_items() -> None:
    data = b'\xef\xbb\xbf[\n  {"id": "x", "v": 1},\n  {"v": 2}\n]\n'
    parsed = list(iter_items(data, "json"))
    assert [(p.line, p.id, p.data) for p in parsed] == [
        (2, "x", {"id": "x", "v": 1}),
        (3, "item-000002", {"v": 2}),
    ]


def test_json_array_non_object_element_line() -> None:
    err = fails(b'[\n{"a": 1},\n"str"\n]', "json")
    assert err.line == 3 and "not a string" in str(err)


@pytest.mark.parametrize(
    ("data", "line", "fragment"),
    [
        (b'{"a": 1}', 1, "JSON array of objects"),
        (b'[\n{"a": 1}\n{"b": 2}\n]', 3, "Expecting ','"),
        (b'[\n{"a": 1},\n{"b": 2 ]', 3, "Expecting ','"),
        (b'[\n{"a": 1},\n', 3, "Expecting value"),
        (b'[{"a": 1}', 1, "never closed"),
        (b'[{"a": 1}]\n[]', 2, "extra data"),
        (b'[{"a": 1},]', 1, "Expecting value"),
    ],
)
def test_json_array_malformed(data: bytes, line: int, fragment: str) -> None:
    err = fails(data, "json")
    assert err.code == "malformed_file"
    assert err.line == line
    assert fragment in str(err)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [(b"", "jsonl"), (b"\n\n", "jsonl"), (b"", "csv"), (b"a,b\n", "csv"), (b"[]", "json"), (b"  ", "json")],
)
def test_empty_files(data: bytes, fmt: str) -> None:
    assert fails(data, fmt).code == "empty_file"


def test_reads_streams_in_bounded_chunks() -> None:
    # Given a stream that only supports read(n) and returns small chunks
    lines = [json.dumps({"i": i, "text": "é" * 5}).encode() for i in range(50)]
    stream = ChunkedStream(b"\n".join(lines) + b"\n", size=5)
    # When parsed
    items = list(parse_items(stream, "jsonl"))  # type: ignore[arg-type]
    # Then every item survives chunk boundaries (even inside multi-byte characters)
    assert [item["i"] for item in items] == list(range(50))
    assert items[0]["text"] == "é" * 5


def test_csv_from_a_file_object() -> None:
    assert list(parse_items(io.BytesIO(b"a\n1\n"), "csv")) == [{"a": "1"}]


# --------------------------------------------------------------------------- limits


def test_too_many_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_ITEMS_PER_VERSION", 2)
    err = fails(b"{}\n{}\n{}\n", "jsonl")
    assert err.code == "too_large" and err.line == 3


def test_file_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_FILE_BYTES", 10)
    assert fails(b'{"a": 1}\n{"a": 2}\n', "jsonl").code == "too_large"
    assert fails(b'[{"a": 1}, {"a": 2}]', "json").code == "too_large"


def test_line_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 16)
    err = fails(b'{"a": 1}\n{"a": "' + b"x" * 100_000 + b'"}\n', "jsonl")
    assert err.code == "too_large" and err.line == 2


def test_csv_field_too_long() -> None:
    # Given a quoted CSV field beyond the csv module's field limit (128 KiB)
    err = fails(b'a\n"' + b"x" * 200_000 + b'"\n', "csv")
    assert err.code == "too_large" and err.line == 2


def test_documented_limits() -> None:
    assert datasets.MAX_ITEMS_PER_VERSION == 1_000_000
    assert datasets.MAX_FILE_BYTES == 512 * 1024 * 1024


# --------------------------------------------------------------------------- ids


def test_item_id_from_field_or_generated() -> None:
    assert item_id({"id": "abc"}, 5) == "abc"
    assert item_id({"id": 42}, 5) == "42"
    assert item_id({}, 0) == "item-000001"
    assert item_id({"id": ""}, 1) == "item-000002"
    assert item_id({"id": "   "}, 2) == "item-000003"
    assert item_id({"id": None}, 999_999) == "item-1000000"


@pytest.mark.parametrize("bad", [True, 1.5, ["x"], {"k": 1}, "x" * 257])
def test_item_id_bad_values(bad: Any) -> None:
    with pytest.raises(DatasetFileError) as info:
        item_id({"id": bad}, 0)
    assert info.value.code == "malformed_file"


def test_bad_id_in_file_names_the_line() -> None:
    err = fails(b'{"id": "a"}\n{"id": [1]}\n', "jsonl")
    assert err.line == 2 and "'id'" in str(err)


def test_generated_ids_are_stable_across_uploads() -> None:
    # Given the same file uploaded twice
    data = b'{"t": 1}\n\n{"id": "x"}\n{"t": 3}\n'
    first = [p.id for p in iter_items(data, "jsonl")]
    second = [p.id for p in iter_items(io.BytesIO(data), "jsonl")]
    # Then ids are identical, generated from the item position (blank lines do not count)
    assert first == second == ["item-000001", "x", "item-000003"]


def test_duplicate_ids() -> None:
    err = fails(b'{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n', "jsonl")
    assert err.code == "duplicate_id"
    assert err.line == 3
    assert "first used on line 1" in str(err)


def test_explicit_id_colliding_with_a_generated_one() -> None:
    # Given a first item without id (generated item-000001) and a second claiming that id
    err = fails(b"id,t\n,a\nitem-000001,b\n", "csv")
    # Then the collision is reported like any duplicate
    assert err.code == "duplicate_id" and err.line == 3
    assert fails(b'{}\n{"id": "item-000001"}\n', "jsonl").code == "duplicate_id"


def test_csv_integer_like_ids_are_strings() -> None:
    assert [p.id for p in iter_items(b"id,t\n1,a\n,b\n", "csv")] == ["1", "item-000002"]


# --------------------------------------------------------------------------- filters


ITEMS: list[dict[str, Any]] = [
    {"id": "1", "score": 5, "lang": "en", "tags": ["urgent"]},
    {"id": "2", "score": 2, "lang": "fr", "tags": []},
    {"id": "3", "score": 0, "lang": "en", "tags": ["urgent", "x"]},
    {"id": "4", "lang": "en"},
    {"id": "5", "score": "high", "tags": "urgent-ish"},
]


def kept(query: str | None) -> list[str]:
    predicate = compile_filter(query)
    return [item["id"] for item in ITEMS if predicate(item)]


@pytest.mark.parametrize("query", [None, "", "   "])
def test_empty_filter_keeps_everything(query: str | None) -> None:
    assert kept(query) == ["1", "2", "3", "4", "5"]


def test_comparison_filter() -> None:
    # Missing fields and a string score compare to null: the item is dropped, not an error
    assert kept("score > `3`") == ["1"]
    assert kept("score >= `0`") == ["1", "2", "3"]


def test_equality_filter() -> None:
    assert kept("lang == 'en'") == ["1", "3", "4"]


def test_contains_filter() -> None:
    # contains() on a string is substring search, on a list membership; item 4 has no tags
    assert kept("contains(tags, 'urgent')") == ["1", "3", "5"]


def test_truthiness_of_results() -> None:
    # Given expressions returning non-booleans
    # Then null, false, "", [] and {} drop the item; 0 and other values keep it
    assert kept("score") == ["1", "2", "3", "5"]  # 0 is truthy
    assert kept("tags") == ["1", "3", "5"]  # [] is falsy
    assert kept("`{}`") == []
    assert kept("`false`") == []
    assert kept("''") == []
    assert kept("!tags") == ["2", "4"]


@pytest.mark.parametrize("query", ["score >", "a[", "`unclosed", "lang = 'en'", "&&"])
def test_invalid_filter_syntax(query: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(query)
    assert info.value.code == "invalid_filter"
    assert "\n" not in str(info.value)


def test_invalid_filter_functions_are_caught_at_compile_time() -> None:
    with pytest.raises(FilterError, match=r"unknown function nope\(\)"):
        compile_filter("nope(tags)")
    with pytest.raises(FilterError, match="takes 2 arguments, got 1"):
        compile_filter("contains(tags)")
    with pytest.raises(FilterError, match="at least 1"):
        compile_filter("not_null()")


def test_filter_type_error_drops_the_item_by_default() -> None:
    # Given a function call that fails on items where the field is missing or of another type
    predicate = compile_filter("length(score) > `1`")
    # Then those items simply do not match
    assert predicate({"score": "abc"}) is True
    assert predicate({"score": 3}) is False
    assert predicate({}) is False


def test_filter_type_error_raises_when_asked() -> None:
    predicate = compile_filter("length(score) > `1`", on_error="raise")
    assert predicate({"score": "abc"}) is True
    with pytest.raises(FilterError) as info:
        predicate({"score": 3})
    assert info.value.code == "filter_failed"
    assert "length()" in str(info.value)


def test_filter_with_defaulted_field() -> None:
    assert compile_filter("contains(tags || `[]`, 'urgent')", on_error="raise")({}) is False


def test_filter_too_long() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("a" * (datasets.MAX_FILTER_LENGTH + 1))
    assert info.value.code == "invalid_filter"


#: A stage that doubles what it is given: four of them in a chain multiply the work by 16.
DOUBLING = "[@,@][]"
#: A stage that multiplies what it is given by 60 (one list-building place however wide).
WIDE = "[" + ",".join(["@"] * 60) + "][]"


def test_a_filter_whose_stages_multiply_the_work_is_refused_when_compiled() -> None:
    # Given [@,@][] stages in a chain, far below the length limit
    query = " | ".join([DOUBLING] * 6)
    assert len(query) < datasets.MAX_FILTER_LENGTH
    # When it is compiled (what a batch submission does)
    with pytest.raises(FilterError) as info:
        compile_filter(query)
    # Then it is refused, saying how many list-building places it has and how many are allowed
    assert info.value.code == "filter_too_complex"
    assert f"at most {datasets.MAX_FILTER_LIST_STAGES}" in info.value.message
    # And a filter with a few such places is fine
    assert compile_filter("length(tags[?starts_with(@, 'a')] | [@, @][]) > `1`")({"tags": ["ab"]}) is True


def test_a_filter_over_its_work_budget_stops_on_the_first_item_whatever_on_error_says() -> None:
    # Given four wide stages (within the shape limit) that multiply each item 60**4 = 13 million times
    query = " | ".join([WIDE] * 4) + " | length(@) > `0`"
    predicate = compile_filter(query)
    for on_error in ("drop", "raise"):
        # When it is evaluated on an item
        with pytest.raises(FilterError) as info:
            compile_filter(query, on_error=on_error)({"text": "x"})
        # Then it stops at its budget, saying so (never read as "the item does not match")
        assert info.value.code == "filter_too_costly"
        assert f"{datasets.MAX_FILTER_WORK:,}" in info.value.message
    # And a string built past the budget by one call (join) counts too, before it is built
    big = {"text": "x" * (datasets.MAX_FILTER_WORK * 64)}
    with pytest.raises(FilterError, match="work budget"):
        compile_filter("length(join('', [text, text])) > `0`")(big)
    with pytest.raises(FilterError, match="work budget"):
        predicate({"text": "y"})
    # And ordinary filters on a large item stay within it
    assert compile_filter("contains(text, 'x') && length(text) > `10`")(big) is True


# --------------------------------------------------------------------------- input field


def test_check_input_field() -> None:
    assert check_input_field({"text": "hi"}, "text") == "hi"
    with pytest.raises(InputFieldError) as info:
        check_input_field({"text": "hi", "id": "1"}, "body")
    assert isinstance(info.value, ValueError)
    assert info.value.code == "unknown_input_field"
    assert "'body'" in str(info.value) and "'text'" in str(info.value)


def test_input_text() -> None:
    assert input_text({"t": "x"}, "t") == "x"
    assert input_text({"t": None}, "t") == ""
    assert input_text({"t": {"a": [1, "é"]}}, "t") == '{"a":[1,"é"]}'
