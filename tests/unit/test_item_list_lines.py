"""An ingested item's list entry is built around the one dump of the item, byte for byte what the
item list format has always held (lists written before stay readable, and equal to new ones)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relayflow_runtime.domain.item_list import parse_entry_line
from relayflow_runtime.services import dataset_service
from relayflow_runtime.services.dataset_service import make_entry_line

ITEMS: list[tuple[str, dict[str, Any]]] = [
    ("a", {"id": "a", "text": "plain"}),
    ("item-000002", {"text": "no id field", "n": 2, "score": 1.5, "ok": True, "none": None}),
    ('quote "and" \\ back\nslash', {"id": 'quote "and" \\ back\nslash', "tags": ["x", ["y"], {}]}),
    (
        "héllo ✓ 😀",
        {"id": "héllo ✓ 😀", "text": "déjà vu \u2028 \u0000 \t", "nested": {"k": [1, {"v": "ü"}]}},
    ),
    ("42", {"id": 42, "text": ""}),
]


@pytest.mark.parametrize(("item_id", "item"), ITEMS, ids=lambda v: repr(v)[:20])
def test_the_entry_line_is_the_entry_as_the_list_format_writes_it(item_id: str, item: dict[str, Any]) -> None:
    # Given an item small enough to sit in the list (nothing is stored apart: no S3 needed)
    # When its entry line is built from its one dump
    line, stored_apart = make_entry_line(item_id, item, "unused/large.json")
    # Then it is exactly the bytes ItemListWriter.add writes for {"id", "item"}
    expected = json.dumps({"id": item_id, "item": item}, ensure_ascii=False, separators=(",", ":")).encode()
    assert (line, stored_apart) == (expected, False)
    # And a reader of the list gets the entry back, as the first line or after the others' comma
    assert parse_entry_line(line + b"\n") == {"id": item_id, "item": item}
    assert parse_entry_line(b"," + line + b"\n") == {"id": item_id, "item": item}


def test_an_item_with_a_lone_surrogate_is_refused_as_not_text() -> None:
    # Given an item holding half a UTF-16 surrogate pair (valid JSON, but not text)
    item = {"id": "s", "text": "\ud800"}
    # When its entry line is built, Then UTF-8 refuses it (ingest turns this into its line's error)
    with pytest.raises(UnicodeEncodeError):
        make_entry_line("s", item, "unused/large.json")


def test_the_largest_item_kept_in_the_list_is_not_stored_apart() -> None:
    # Given an item whose JSON is exactly LARGE_ITEM_BYTES long
    base = {"id": "big", "text": ""}
    padding = dataset_service.LARGE_ITEM_BYTES - len(json.dumps(base, separators=(",", ":")))
    item = {"id": "big", "text": "x" * padding}
    # When its entry line is built, Then it stays in the list (only larger items go apart)
    line, stored_apart = make_entry_line("big", item, "unused/large.json")
    assert stored_apart is False
    assert parse_entry_line(line) == {"id": "big", "item": item}
