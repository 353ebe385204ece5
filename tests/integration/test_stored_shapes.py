"""Items already in the table read through the typed records (domain/execution_record.py): a node
record and an execution item written the way earlier versions wrote them (numbers as DynamoDB
numbers, a string set, fields nothing declares any more, a status event the bus refused) come back
whole from the store's typed reads and writes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters.table import NodeAlreadyEnded
from relayflow_runtime.adapters.table.keys import execution_key, node_record_key, sweep_keys
from relayflow_runtime.schemas.events import StatusEvent
from relayflow_runtime.services import deps

pytestmark = pytest.mark.shared_stack

TENANT = "t-shapes"

#: A status event as services/notify.py wrote it on its run before it was a model.
KEPT_EVENT: dict[str, Any] = {
    "schema_version": "1",
    "tenant": TENANT,
    "execution_id": "x-old",
    "workflow_id": "wf-old",
    "version_id": "v-old",
    "number": 4,
    "input_mode": "single",
    "status": "running",
    "progress": {
        "total_nodes": 2,
        "current_node_idx": 1,
        "current_node_id": "b",
        "completed_nodes": None,
        "failed_nodes": None,
        "skipped_nodes": None,
        "cancelled_nodes": None,
        "total_items": None,
        "processed_items": None,
        "completed_items": None,
        "failed_items": None,
    },
    "error": None,
    "created_at": "2026-01-01T00:00:00.000Z",
    "started_at": "2026-01-01T00:00:01.000Z",
    "completed_at": None,
    "time": "2026-01-01T00:00:01.500Z",
}


def _old_execution() -> dict[str, Any]:
    """A running single run's item as an earlier version wrote it: its own index keys (before
    listing entries), ``node_order`` and ``levels`` (read by nothing now), a kept status event."""
    sort = "2026-01-01T00:00:00.000Z#x-old"
    run = {
        "id": "x-old",
        "workflow_id": "wf-old",
        "version_id": "v-old",
        "number": Decimal(4),
        "status": "running",
        "input_mode": "single",
        "single_input": "hello",
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": "2026-01-01T00:00:01.000Z",
        "timeout": Decimal(60),
        "progress": {"total_nodes": Decimal(2), "current_node_idx": Decimal(0)},
        "node_order": ["a", "b"],
        "levels": [["a"], ["b"]],
        "unpublished_event": KEPT_EVENT,
    }
    return {
        **run,
        **execution_key(TENANT, "x-old"),
        **sweep_keys(TENANT, "x-old", str(run["created_at"]), "ACTIVE"),
        "tenant": TENANT,
        "kind": "execution",
        "gsi1pk": f"T#{TENANT}#WF#wf-old#XS",
        "gsi1sk": sort,
        "gsi2pk": f"T#{TENANT}#WF#wf-old#XS#running",
        "gsi2sk": sort,
    }


def test_an_old_node_record_reads_whole_through_the_typed_node_reads(local_stack: LocalStack) -> None:
    # Given a completed node record as earlier versions wrote it: DynamoDB numbers, its finished
    # parents as a string set, its gate's token, and a field no version declares any more
    store = deps.stores().executions
    store.table.put_item(
        Item={
            **node_record_key(TENANT, "x-node", "N#b"),
            "tenant": TENANT,
            "expires_at": Decimal(1_900_000_000),
            "node_id": "b",
            "name": "B",
            "idx": Decimal(1),
            "status": "completed",
            "attempts": Decimal(2),
            "output": "done",
            "prompt": {"$s3": "executions/t/x/N/b/prompt.json"},
            "duration_ms": Decimal("12.5"),
            "usage": {"input_tokens": Decimal(2), "output_tokens": Decimal(1)},
            "attempt_errors": ["attempt 1: boom"],
            "done_parents": {"p2", "p1"},
            "token": "gate-token",
            "retired_field": {"kept": True},
        }
    )
    expected = {
        "node_id": "b",
        "name": "B",
        "idx": 1,
        "status": "completed",
        "attempts": 2,
        "output": "done",
        "prompt": {"$s3": "executions/t/x/N/b/prompt.json"},
        "duration_ms": 12.5,
        "usage": {"input_tokens": 2, "output_tokens": 1},
        "attempt_errors": ["attempt 1: boom"],
        "done_parents": ["p1", "p2"],
        "token": "gate-token",
        "retired_field": {"kept": True},
    }
    # When the node records are read, a parent is marked done, and a repeated task finds it ended
    records = store.node_records(TENANT, "x-node")
    marked = store.mark_parent_done(TENANT, "x-node", "b", "p3")
    store.put_execution(
        TENANT,
        {"id": "x-node", "workflow_id": "wf", "version_id": "v", "status": "running", "created_at": "t"},
    )
    with pytest.raises(NodeAlreadyEnded) as ended:
        store.finish_node(TENANT, "x-node", "N#b", {"status": "completed", "output": "again"}, attempt=2)
    # Then each read is the record as stored, every field kept (the unknown one too)
    assert records == [expected]
    assert marked == {**expected, "done_parents": ["p1", "p2", "p3"], "carried": {}}
    assert ended.value.record == {**expected, "done_parents": ["p1", "p2", "p3"]}


def test_an_old_execution_item_reads_moves_and_republishes_its_kept_event_unchanged(
    local_stack: LocalStack,
) -> None:
    # Given a running run written before listing entries, with a status event the bus refused
    store = deps.stores().executions
    store.table.put_item(Item=_old_execution())
    # When it is read as its record, and the sweep index is read
    record = store.get_record(TENANT, "x-old")
    swept = [run for run in deps.stores().sweep.runs("ACTIVE") if run.id == "x-old"]
    # Then the kept event is typed and dumps to the very detail that was kept (republished as is)
    assert record.unpublished_event == StatusEvent.model_validate(KEPT_EVENT)
    assert record.unpublished_event.model_dump(mode="json") == KEPT_EVENT
    assert len(swept) == 1 and swept[0].unpublished_event == record.unpublished_event
    assert (swept[0].tenant, swept[0].status, swept[0].created_at) == (TENANT, "running", record.created_at)
    # And when it moves to its end, the record returned is the item as it now is
    ended = store.transition_execution(
        TENANT,
        record,
        from_statuses=("running",),
        to_status="completed",
        fields={"completed_at": "2026-01-01T00:00:09.000Z", "current_node": {"idx": 1, "id": "b"}},
    )
    assert ended.status == "completed" and ended.unpublished_event is None
    assert ended.current_node is not None and (ended.current_node.idx, ended.current_node.id) == (1, "b")
    assert (ended.number, ended.timeout, ended.single_input) == (4, 60, "hello")


def test_a_move_returns_the_status_it_wrote_when_another_writer_moves_the_run_just_after(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pending run, and a cancel that lands between the start's transaction and its read of
    # the item (the start's caller announces what the move returns)
    store = deps.stores().executions
    store.put_execution(
        TENANT,
        {"id": "x-race", "workflow_id": "wf", "version_id": "v", "status": "pending", "created_at": "t"},
    )
    pending = store.get_record(TENANT, "x-race")
    real_table = type(store).table
    raced: list[str] = []

    class RacedTable:
        """The store's table, whose first read lets a cancel land just before it."""

        def __init__(self, table: Any) -> None:
            self._table = table

        def __getattr__(self, name: str) -> Any:
            return getattr(self._table, name)

        def get_item(self, **kwargs: Any) -> Any:
            if not raced:
                raced.append("cancelled")
                store.transition_execution(
                    TENANT,
                    pending,
                    from_statuses=("pending", "running"),
                    to_status="cancelled",
                    fields={"error": "cancelled by request"},
                )
            return self._table.get_item(**kwargs)

    monkeypatch.setattr(type(store), "table", property(lambda self: RacedTable(real_table.fget(self))))
    # When the run moves pending -> running
    started = store.transition_execution(
        TENANT, pending, from_statuses=("pending",), to_status="running", fields={"started_at": "t1"}
    )
    # Then the move returns the status it wrote (so "running" is announced as running, never as a
    # second "cancelled"), without the other writer's fields (a "running" event with its error)
    assert started.status == "running" and started.started_at == "t1"
    assert started.error is None and started.completed_at is None
    assert store.get_record(TENANT, "x-race").status == "cancelled"
