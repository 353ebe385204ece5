"""The execution item as stored (domain/execution_record.py) and its explicit mapping to the API's
``Execution`` (services/execution_view.py): the engine's bookkeeping never reaches an answer."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.fakes import Fakes, refuse_aws

from relayflow_runtime.domain.batch import BatchSettings
from relayflow_runtime.domain.execution_record import (
    ExecutionRecord,
    ExecutionUpdate,
    ItemIndex,
    stored_fields,
)
from relayflow_runtime.services import notify
from relayflow_runtime.services.execution_view import to_execution

TENANT = "t-record"


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_aws(monkeypatch)


def stored(**fields: Any) -> dict[str, Any]:
    """An ended single run's item, with every field the engine keeps beside the API's."""
    return {
        "id": "x-1",
        "workflow_id": "wf",
        "version_id": "v1",
        "number": 3,
        "status": "completed",
        "input_mode": "single",
        "single_input": "hello",
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": "2026-01-01T00:00:01.000Z",
        "completed_at": "2026-01-01T00:00:02.000Z",
        "progress": {"total_nodes": 2, "current_node_idx": 0, "current_node_id": "a"},
        "results": "HELLO",
        "input_tokens": 3,
        "output_tokens": 5,
        "usage_summed": True,
        "state_machine_arn": "arn:run",
        "sfn_execution_arn": "arn:run:x-1",
        "children_expire_at": 1_800_000_000,
        "overdue_at": "2026-01-01T01:00:00.000Z",
        "current_node": {"idx": 1, "id": "b"},
        "waiting_reason": "waiting for admission",
        "admission_queued_at": "2026-01-01T00:00:00.500Z",
        "node_order": ["a", "b"],  # written by earlier versions, read by nothing
        **fields,
    }


def test_a_stored_item_reads_as_a_record_whatever_earlier_versions_wrote_beside_it() -> None:
    record = ExecutionRecord.model_validate(stored())
    assert record.current_node is not None and record.current_node.id == "b"
    assert record.usage_counters() == {"input_tokens": 3, "output_tokens": 5}
    assert "node_order" not in record.item()


def test_a_runs_webhook_rounds_are_declared_and_written_back_as_stored() -> None:
    # Given a run's item whose webhook was re-sent twice (WebhookStore.next_webhook_round)
    record = ExecutionRecord.model_validate(stored(webhook_rounds=2))
    # Then the count is a field of the record, and its item writes it back as it was stored
    assert record.webhook_rounds == 2
    assert record.item()["webhook_rounds"] == 2


def test_a_record_item_leaves_out_what_was_never_set() -> None:
    item = ExecutionRecord(id="x", workflow_id="wf", version_id="v", created_at="t").item()
    # conditions on an attribute's absence (the budget, the node a run is at) must hold
    assert not {"budget_reserved", "current_node", "unpublished_event", "retry_claim"} & set(item)


def test_the_api_shows_what_the_record_means_and_none_of_the_engines_bookkeeping() -> None:
    fakes = Fakes()
    execution = to_execution(
        TENANT, ExecutionRecord.model_validate(stored()), with_nodes=False, env=fakes.deps
    )
    shown = execution.model_dump()
    # the node the run is at moves its progress; its usage is the kept sum; its output the results
    assert (execution.progress.current_node_idx, execution.progress.current_node_id) == (1, "b")
    assert execution.usage is not None and execution.usage.input_tokens == 3
    assert execution.results is not None and execution.results.output == "HELLO"
    # why it waited is no news once it ended; the engine's fields are not in the answer
    assert execution.waiting_reason is None
    leaked = {"state_machine_arn", "sfn_execution_arn", "children_expire_at", "current_node", "node_order"}
    assert not leaked & set(shown)


def test_a_long_input_kept_in_the_bucket_is_shown_whole_by_the_execution_and_left_out_of_pages() -> None:
    fakes = Fakes()
    fakes.blobs.put_json("executions/t/x-1/input.json", "x" * 10_000)
    item = ExecutionRecord.model_validate(stored(single_input={"$s3": "executions/t/x-1/input.json"}))
    assert to_execution(TENANT, item, env=fakes.deps).single_input == "x" * 10_000
    assert to_execution(TENANT, item, with_nodes=False, env=fakes.deps).single_input is None


def test_an_update_writes_a_model_field_as_its_writers_wrote_the_json_before() -> None:
    # Given the values a batch's preparation writes, as models (ExecutionUpdate)
    record = ExecutionRecord.model_validate(stored(progress={"total_nodes": 2, "current_node_idx": 0}))
    settings = BatchSettings(
        items_key="executions/t/x/items.jsonl",
        express=True,
        items_per_child=2,
        children=3,
        child_timeout=60,
        total=6,
    )
    progress = record.progress.model_copy(update={"total_items": 6})
    fields: ExecutionUpdate = {"batch": settings, "item_index": ItemIndex(buckets=4), "progress": progress}
    # When they are made the values the store writes
    written = stored_fields(fields)
    # Then they are the very JSON services/batch.py wrote before the update was typed
    assert written == {
        "batch": settings.model_dump(mode="json"),
        "item_index": {"buckets": 4, "ordinals": False},  # (an unknown largest entry is not written)
        "progress": {**record.progress.model_dump(mode="json", exclude_none=True), "total_items": 6},
    }
    # And a record updated with them reads them back as models
    assert record.updated(fields).batch == settings


def test_a_status_event_is_built_from_the_record_with_the_progress_get_execution_shows() -> None:
    # Given a running single run
    fakes = Fakes()
    record = ExecutionRecord.model_validate(stored(status="running", completed_at=None, results=None))
    # When its status event is built
    detail = notify.status_event(TENANT, record, fakes.deps).model_dump(mode="json")
    # Then it is schema version 1 (docs/events-and-triggers.md; its fields: tests/integration/test_events.py)
    assert detail["schema_version"] == "1" and detail["tenant"] == TENANT and detail["number"] == 3
    assert detail["progress"] == to_execution(
        TENANT, record, with_nodes=False, env=fakes.deps
    ).progress.model_dump(mode="json")
    assert detail["time"] == fakes.clock.now()


def test_the_answer_built_from_a_batch_record_leaves_the_record_as_it_was() -> None:
    # Given a running batch run's record, its progress without the counts its counters hold
    fakes = Fakes()
    fakes.batches.totals[(TENANT, "x-1")] = {"processed_items": 4, "failed_items": 1}
    record = ExecutionRecord.model_validate(
        stored(
            status="running",
            input_mode="batch",
            progress={"total_nodes": 1, "total_items": 9},
            current_node=None,
        )
    )
    # When the API's execution is built from it (as a status event does with the record it moves)
    execution = to_execution(TENANT, record, with_nodes=False, env=fakes.deps)
    # Then the answer has the counts, and the record still has none (what follows the run's end
    # reads it: a batch whose counts were never kept is sealed before it is compacted)
    assert execution.progress.processed_items == 4
    assert record.progress.processed_items is None and record.progress.failed_items is None
