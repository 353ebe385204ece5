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


def test_old_authoring_items_read_through_their_records_and_show_only_the_apis_fields(
    local_stack: LocalStack,
) -> None:
    # Given a workflow, a version, a node, an edge and a model as earlier versions wrote them:
    # DynamoDB numbers, the workflow's counters, a node timeout above today's cap, a node config
    # without the fields added since, a model config kept as a map, and fields nothing declares
    table = deps.stores().workflows.table
    base = {
        "tenant": TENANT,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
    }
    table.put_item(
        Item={
            **base,
            "pk": f"T#{TENANT}#WF#wf-a",
            "sk": "WF",
            "id": "wf-a",
            "name": "old",
            "version_count": Decimal(2),
            "execution_count": Decimal(7),
            "retired_field": "kept",
        }
    )
    version_pk = f"T#{TENANT}#V#v-a"
    table.put_item(
        Item={
            **base,
            "pk": version_pk,
            "sk": "V",
            "id": "v-a",
            "workflow_id": "wf-a",
            "number": Decimal(2),
            "config": {"max_retries": Decimal(1), "node_timeout": Decimal(900)},
        }
    )
    table.put_item(
        Item={
            **base,
            "pk": version_pk,
            "sk": "N#n-a",
            "id": "n-a",
            "workflow_id": "wf-a",
            "version_id": "v-a",
            "name": "A",
            "entity_id": "m-a",
            "config": {"input_template": "{{input}}", "timeout": Decimal(900)},
            "position": Decimal(0),
        }
    )
    table.put_item(
        Item={
            **base,
            "pk": version_pk,
            "sk": "E#e-a",
            "id": "e-a",
            "workflow_id": "wf-a",
            "version_id": "v-a",
            "begin_node_id": "n-a",
            "end_node_id": "n-a",
        }
    )
    table.put_item(
        Item={
            **base,
            "pk": f"T#{TENANT}#M#m-a",
            "sk": "M",
            "id": "m-a",
            "name": "old model",
            "provider": "builtin",
            "config": {"mode": "echo", "price": {"input": Decimal("0.5")}},
        }
    )
    # When they are read through the stores' typed reads
    workflow = deps.stores().workflows.get_workflow(TENANT, "wf-a")
    version, nodes, edges = deps.stores().workflows.version_graph(TENANT, "v-a")
    model = deps.stores().models.get_model(TENANT, "m-a")
    # Then each is its record: counters and unknown fields kept, old values read as today's
    assert (workflow.version_count, workflow.execution_count) == (2, 7)
    assert workflow.model_extra == {"retired_field": "kept"} and "retired_field" not in workflow.item()
    assert (version.number, version.config.max_retries, version.config.node_timeout) == (2, 1, 840)
    assert [(n.id, n.config.timeout, n.config.output_format) for n in nodes] == [("n-a", 840, "text")]
    assert [(e.begin_node_id, e.end_node_id) for e in edges] == [("n-a", "n-a")]
    assert model.parsed_config() == {"mode": "echo", "price": {"input": 0.5}}
    # And the API's models show their own fields only, none of the store's bookkeeping
    shown = workflow.to_api().model_dump()
    assert "version_count" not in shown and "retired_field" not in shown
    assert shown["name"] == "old" and shown["active_version_id"] is None
    assert model.to_api().config == {"mode": "echo", "price": {"input": 0.5}}
    assert version.to_api().config.node_timeout == 840


def test_old_dataset_upload_api_key_and_marker_items_read_through_their_records(
    local_stack: LocalStack,
) -> None:
    # Given a dataset, a ready version, an upload in progress, an API key and an S3 upload's marker
    # as earlier versions wrote them: DynamoDB numbers, fields read by nothing now (common_fields,
    # large_items, the upload's URL and part size), the upload's parts as a map, the key's own
    # expiry apart from the table's TTL
    table = deps.stores().datasets.table
    dataset_pk = f"T#{TENANT}#D#d-a"
    when = "2026-01-01T00:00:00.000Z"
    table.put_item(
        Item={
            "pk": dataset_pk,
            "sk": "D",
            "id": "d-a",
            "name": "old",
            "version_count": Decimal(1),
            "created_at": when,
            "updated_at": when,
        }
    )
    table.put_item(
        Item={
            "pk": dataset_pk,
            "sk": "V#dv-a",
            "id": "dv-a",
            "dataset_id": "d-a",
            "number": Decimal(1),
            "status": "ready",
            "item_count": Decimal(3),
            "fields": ["text", "label"],
            "common_fields": ["text"],
            "lacking_fields": {"label": "item-2"},
            "large_items": Decimal(0),
            "items_key": "t/x/items.json",
            "created_at": when,
            "updated_at": when,
        }
    )
    table.put_item(
        Item={
            "pk": dataset_pk,
            "sk": "U#up-a",
            "id": "up-a",
            "dataset_id": "d-a",
            "version_id": "dv-a",
            "filename": "f.jsonl",
            "format": "jsonl",
            "part_size": Decimal(5_242_880),
            "max_parts": Decimal(1000),
            "upload_url": None,
            "parts": {"00001": Decimal(12), "00002": Decimal(3)},
            "expires_at": Decimal(1_900_000_000),
        }
    )
    table.put_item(
        Item={
            "pk": "KEY#0123456789abcdef",
            "sk": "KEY",
            "tenant": TENANT,
            "kind": "api_key",
            "id": "0123456789abcdef",
            "prefix": "rf_0123456789abcdef",
            "scopes": ["read"],
            "created_at": when,
            "valid_until": "2030-01-01T00:00:00Z",
            "expires_at": Decimal(1_900_000_000),
            "key_hash": "abc",
        }
    )
    table.put_item(
        Item={
            "pk": f"T#{TENANT}#UP#digest-a",
            "sk": "UP",
            "tenant": TENANT,
            "kind": "upload",
            "bucket": "b",
            "key": "inputs/wf/a.txt",
            "etag": "e",
            "state": "started",
            "execution_id": "x-up",
            "claim_token": "tok",
            "claimed_at": when,
            "lease_until": Decimal(1_800_000_000),
            "expires_at": Decimal(1_900_000_000),
            "reason": None,
            "finished_at": when,
        }
    )
    # When they are read through the stores' typed reads
    marker = deps.stores().uploads.get_upload(TENANT, "digest-a")
    store = deps.stores().datasets
    dataset = store.get_dataset(TENANT, "d-a")
    version = store.get_dataset_version(TENANT, "d-a", "dv-a")
    upload = store.get_dataset_upload(TENANT, "d-a", "up-a")
    api_key = deps.stores().api_keys.get_api_key(TENANT, "0123456789abcdef")
    # Then each is its record, what a batch submission reads included, fields unknown kept
    assert dataset.to_api().version_count == 1
    assert (version.status, version.item_count, version.items_key) == ("ready", 3, "t/x/items.json")
    assert version.lacking_fields == {"label": "item-2"}
    assert version.model_extra == {"common_fields": ["text"], "large_items": 0}
    assert "common_fields" not in version.to_api().model_dump()
    assert (upload.format, upload.filename, upload.parts) == ("jsonl", "f.jsonl", {"00001": 12, "00002": 3})
    assert (api_key.key_hash, api_key.valid_until) == ("abc", "2030-01-01T00:00:00Z")
    # And the key's own expiry is what the API shows as its expires_at (not the table's TTL)
    assert api_key.to_api().expires_at == "2030-01-01T00:00:00Z"
    assert "key_hash" not in api_key.to_api().model_dump()
    assert marker is not None and (marker.state, marker.execution_id, marker.lease_until) == (
        "started",
        "x-up",
        1_800_000_000,
    )
