"""The item list's line format, the pure part: what a line of the list holds and how it is framed.

An item list (a dataset version's, a batch run's) is one S3 object, a JSON array with one entry per
line::

    [
    {"id":"a","item":{...}}
    ,{"id":"b","item":{...}}
    ]

so the same object is what a Step Functions distributed Map's ``ItemReader`` (JSON) reads and what
the API pages through, or seeks to (domain/item_index.py), by byte offset. An entry holds the item
(``"item"``) or, for an item stored in an object of its own, its key (``"ref"``). Writing and
reading the object is services/dataset_service.py's (``ItemListWriter``, ``iter_entries``).
"""

from __future__ import annotations

import json
from typing import Any

OPENING = b"[\n"
CLOSING = b"]\n"


def json_bytes(value: Any) -> bytes:
    """A value as the list writes it: compact UTF-8 JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def framed(entry: bytes, first: bool) -> bytes:
    """One entry's line: a comma before every entry but the first, a newline after it."""
    return (b"" if first else b",") + entry + b"\n"


def unframed(line: bytes) -> bytes:
    """The entry of a line as ``framed`` wrote it (to add it to another list unchanged)."""
    return line.strip().lstrip(b",")


def inline_entry(item_id: str, encoded_item: bytes) -> bytes:
    """The entry ``{"id", "item"}`` around the item's own dump (the very bytes ``json_bytes``
    writes for it, without dumping the item twice)."""
    return b'{"id":' + json_bytes(item_id) + b',"item":' + encoded_item + b"}"


def ref_entry(item_id: str, key: str) -> bytes:
    """The entry of an item stored in an object of its own."""
    return json_bytes({"id": item_id, "ref": key})


def parse_entry_line(line: bytes) -> dict[str, Any] | None:
    """The entry on one line of an item list; None for the opening and closing bracket lines."""
    text = line.strip()
    if not text or text in (b"[", b"]"):
        return None
    value: dict[str, Any] = json.loads(text.lstrip(b","))
    return value
