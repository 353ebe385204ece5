"""Items already in the table read through the typed records of domain/records.py: a workflow, a
version with its node and edge, a model, a dataset with a version and an upload, an API key and an
S3 upload's marker, written the way earlier versions wrote them (DynamoDB numbers, values since
capped, fields read by nothing now), come back from the stores' typed reads as their records, and
the API's models built from them show none of the store's bookkeeping."""

from __future__ import annotations

from decimal import Decimal

import pytest

from relayflow.local.stack import LocalStack
from relayflow_runtime.services import deps

pytestmark = pytest.mark.shared_stack

TENANT = "t-records"


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
