"""How a batch run's item outcomes are laid out: pure encodings, no AWS (docs/batch.md, Results).

An outcome has two parts, each one zlib stream (a *member*) of compact JSON:

* the **result** — status, error, failed node, duration, end, and the output of the item's last
  node that produced one: what a results page and an export read;
* the **detail** — the record of each of its nodes (prompt, output, attempts, usage...): what
  ``GET …/items/{item}`` reads.

**Written once per child batch.** A child puts one S3 object (its *child object*) holding, item
after item, the result and detail members of every item it ran, and records for each item a
:class:`Pointer` (entries carry their ordinal ``n`` in the run's list): the item's status, the
object's tag, and where its two members are, in a DynamoDB record shared by RECORD_BLOCK
consecutive ordinals. A pointer is ≈35 bytes, so a child of ten items is one transaction of two
small writes, whatever its prompts and outputs weigh.

**Compacted into segments**, each as soon as every ordinal of it is recorded while the run runs,
and the rest once the run ends. The results are copied, in list order, into *segments* of
SEGMENT_ITEMS ordinals each: a fixed-width header (one :data:`HEADER` slot per ordinal: where its
result is; a zero length where it has none), then the results of the block. A page of consecutive
items is one ranged GET of its header slots and one of its results, whatever the values weigh.
Details stay in the child objects, where an item's pointer finds them (one GetItem, one ranged GET).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from typing_extensions import TypedDict

from relayflow_runtime.domain.batch import RECORD_BLOCK, ItemOutcome

#: Ordinals per segment: a million items are 245 segments; a header is 48 KiB.
SEGMENT_ITEMS = 4096
#: One header slot: the result's offset and length (big-endian).
HEADER = struct.Struct(">QI")
#: A page's results read at most this many stored bytes, and answer at most ANSWER_BYTES of
#: inputs and outputs (a Lambda answer carries 6 MB; API Gateway waits 30 s): a page with large
#: values ends early, with a next token.
READ_BYTES = 8 * 1024 * 1024
ANSWER_BYTES = 4 * 1024 * 1024


def pack_nodes(outcome: ItemOutcome) -> dict[str, Any]:
    """An outcome's node records, with nothing that can be derived (the node id is the key, the
    start is the end less the duration, empty lists are left out)."""
    nodes = {}
    for node_id, node in outcome.nodes.items():
        record = node.model_dump(mode="json", exclude_none=True, exclude={"node_id", "started_at"})
        nodes[node_id] = {k: v for k, v in record.items() if v != [] and v != {}}
    return nodes


def unpack_nodes(nodes: dict[str, Any]) -> dict[str, Any]:
    """The node records :func:`pack_nodes` kept, with their id and start again."""
    for node_id, record in nodes.items():
        record["node_id"] = node_id
        if record.get("completed_at") and record.get("duration_ms") is not None:
            ended = datetime.fromisoformat(record["completed_at"].replace("Z", "+00:00"))
            started = ended - timedelta(milliseconds=int(record["duration_ms"]))
            record["started_at"] = started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return nodes


class StoredResult(TypedDict, total=False):
    """An item's result as a page reads it: the result member :func:`result_of` writes (the
    outcome's status, error, failed node, duration and end, and its last node's output), or a
    per-item record's (runs prepared before child
    records) with that node's parsed value too. Values are packed (services/values.py)."""

    status: Literal["completed", "failed"]
    error: str | None
    failed_node_id: str | None
    duration_ms: int | None
    completed_at: str | None
    output: Any
    parsed_output: Any


def result_of(outcome: ItemOutcome) -> StoredResult:
    """An outcome's result member: the fields of :class:`StoredResult` it has (none is None)."""
    result = StoredResult(status=outcome.status)
    if outcome.error is not None:
        result["error"] = outcome.error
    if outcome.failed_node_id is not None:
        result["failed_node_id"] = outcome.failed_node_id
    if outcome.duration_ms is not None:
        result["duration_ms"] = outcome.duration_ms
    if outcome.completed_at is not None:
        result["completed_at"] = outcome.completed_at
    node = outcome.nodes.get(outcome.output_node or "")
    if node is not None and node.output is not None:
        result["output"] = node.output
    return result


def member(value: Any) -> bytes:
    """One zlib stream of the compact JSON of ``value``."""
    return zlib.compress(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), 6)


def unmember(data: bytes) -> Any:
    return json.loads(zlib.decompress(data))


@dataclass(frozen=True)
class Pointer:
    """Where one item's outcome is in a child object: its status, the object's tag (several writers
    of one child write objects of their own), and the offset and lengths of its two members."""

    status: str
    tag: str
    offset: int
    result_length: int
    detail_length: int

    def encode(self) -> str:
        return f"{self.status[0]}{self.tag}:{self.offset}:{self.result_length}:{self.detail_length}"

    @classmethod
    def decode(cls, text: str) -> Pointer:
        tag, offset, result, detail = text[1:].split(":")
        status = "completed" if text[0] == "c" else "failed"
        return cls(status, tag, int(offset), int(result), int(detail))

    @property
    def end(self) -> int:
        return self.offset + self.result_length + self.detail_length


def child_object(
    outcomes: Iterable[tuple[int, str, StoredResult, dict[str, Any]]], tag: str
) -> tuple[bytes, dict[int, Pointer]]:
    """A child object's bytes and each ordinal's pointer, from (ordinal, status, result, detail)."""
    body = bytearray()
    pointers: dict[int, Pointer] = {}
    for n, status, result, detail in outcomes:
        head, tail = member(result), member(detail)
        pointers[n] = Pointer(status, tag, len(body), len(head), len(tail))
        body += head + tail
    return bytes(body), pointers


def record_block(n: int) -> int:
    """Which pointer record holds ordinal ``n``."""
    return n // RECORD_BLOCK


def segment_of(n: int) -> int:
    return n // SEGMENT_ITEMS


def segment_items(block: int, total: int) -> int:
    """How many ordinals of a run of ``total`` items segment ``block`` holds (the last one fewer)."""
    return max(0, min(SEGMENT_ITEMS, total - block * SEGMENT_ITEMS))


@dataclass(frozen=True)
class Segments:
    """Which segments of a run pages read instead of the child objects: all of them once the run's
    compaction has ended (``outcome_segments``), else those compacted while it runs, each once every
    one of its ordinals was recorded (``compacted_segments``; services/outcomes.py)."""

    every: bool = False
    blocks: frozenset[int] = frozenset()

    def hold(self, block: int) -> bool:
        return self.every or block in self.blocks


#: A run none of whose segments is written yet.
NO_SEGMENTS = Segments()


def header_range(first: int, last: int) -> tuple[int, int]:
    """The bytes (inclusive) of the header slots of ordinals first..last of one segment."""
    return HEADER.size * (first % SEGMENT_ITEMS), HEADER.size * (last % SEGMENT_ITEMS + 1) - 1


def header_slots(data: bytes) -> Iterator[tuple[int, int]]:
    """(result offset, result length) of each slot in ``data``."""
    for start in range(0, len(data) - HEADER.size + 1, HEADER.size):
        yield HEADER.unpack_from(data, start)


@dataclass
class SegmentLayout:
    """Builds one segment: results are added in ordinal order; ``header()`` is written first, then
    the results (the caller spools them)."""

    block: int
    size: int = 0

    def __post_init__(self) -> None:
        self._slots: dict[int, tuple[int, int]] = {}

    def add(self, n: int, result_length: int) -> None:
        self._slots[n % SEGMENT_ITEMS] = (self.size, result_length)
        self.size += result_length

    def header(self) -> bytes:
        start = HEADER.size * SEGMENT_ITEMS
        out = bytearray(HEADER.size * SEGMENT_ITEMS)
        for slot, (offset, length) in self._slots.items():
            HEADER.pack_into(out, slot * HEADER.size, start + offset, length)
        return bytes(out)
