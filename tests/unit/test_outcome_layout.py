"""The layout of batch outcomes (domain/outcomes.py): pointers, child objects, segment headers."""

from __future__ import annotations

from relayflow_runtime.domain.batch import ItemNodeRecord, ItemOutcome
from relayflow_runtime.domain.outcomes import (
    HEADER,
    SEGMENT_ITEMS,
    Pointer,
    SegmentLayout,
    child_object,
    header_range,
    header_slots,
    pack_nodes,
    record_block,
    result_of,
    unmember,
    unpack_nodes,
)


def test_a_pointer_reads_back_as_written() -> None:
    pointer = Pointer("failed", "0000000a-1f2e3d4c", 1234, 56, 789)
    assert Pointer.decode(pointer.encode()) == pointer
    assert pointer.end == 1234 + 56 + 789


def test_a_child_object_holds_each_items_result_and_detail_where_its_pointer_says() -> None:
    # Given two outcomes, the second with a node whose output is its result
    node = ItemNodeRecord(
        node_id="n",
        name="n",
        status="completed",
        output="OUT",
        prompt="in",
        duration_ms=5,
        completed_at="2026-01-01T00:00:01.000Z",
    )
    done = ItemOutcome(source_item_id="b", status="completed", output_node="n", nodes={"n": node})
    failed = ItemOutcome(source_item_id="a", status="failed", error="boom")
    # When they are written as one child object
    body, pointers = child_object(
        [(n, o.status, result_of(o), pack_nodes(o)) for n, o in ((7, failed), (8, done))], "t"
    )
    # Then each pointer finds its item's two parts
    second = pointers[8]
    assert (second.status, second.tag) == ("completed", "t")
    result = unmember(body[second.offset : second.offset + second.result_length])
    detail = unpack_nodes(unmember(body[second.offset + second.result_length : second.end]))
    assert result == {"status": "completed", "output": "OUT"}
    assert detail["n"]["prompt"] == "in" and detail["n"]["started_at"] == "2026-01-01T00:00:00.995Z"
    assert unmember(body[: pointers[7].result_length]) == {"status": "failed", "error": "boom"}
    assert record_block(7) == record_block(8) == 0 and record_block(10) == 1


def test_a_segment_header_has_a_slot_per_ordinal_and_zero_where_there_is_no_outcome() -> None:
    block = 2
    layout = SegmentLayout(block)
    first = block * SEGMENT_ITEMS
    layout.add(first + 1, 10)
    layout.add(first + 3, 20)
    header = layout.header()
    assert len(header) == HEADER.size * SEGMENT_ITEMS
    start, end = header_range(first, first + 3)
    slots = list(header_slots(header[start : end + 1]))
    assert slots == [(0, 0), (len(header), 10), (0, 0), (len(header) + 10, 20)]
