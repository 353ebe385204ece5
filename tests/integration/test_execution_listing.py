"""A run's listing entry (adapters/table/executions.py, LISTING_SK): the one item of a run the listing
indexes hold, so what a running run writes (its progress, its nodes) never reaches an index and the
workflow's index partitions see only a run's creation and status moves (issue 20). Listings read
the runs by key and stay as they were: newest first, paged, by status; runs recorded before entries
existed (their own item carries the index keys) are listed with them. Each test uses its own
workflow, so the module shares one stack."""

from __future__ import annotations

from typing import Any

import pytest

from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.adapters.table.executions import LISTING_SK
from relayflow_runtime.adapters.table.keys import execution_key
from relayflow_runtime.domain.execution_record import ExecutionRecord
from relayflow_runtime.services import deps

pytestmark = pytest.mark.shared_stack

TENANT = "default"
INDEX_KEYS = ("gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")


def _run(workflow: str, number: int, status: str = "running") -> dict[str, Any]:
    return {
        "id": f"{workflow}-x{number:02d}",
        "workflow_id": workflow,
        "version_id": "v-1",
        "status": status,
        "input_mode": "single",
        "created_at": f"2026-12-07T10:00:{number:02d}.000Z",
    }


def _raw(key: dict[str, str]) -> dict[str, Any]:
    return dict(deps.stores().executions.table.get_item(Key=key, ConsistentRead=True).get("Item") or {})


def _entry_key(run: dict[str, Any]) -> dict[str, str]:
    return {"pk": execution_key(TENANT, run["id"])["pk"], "sk": LISTING_SK}


def _ids(workflow: str, **kwargs: Any) -> list[str]:
    records, _ = deps.stores().executions.list_executions(
        TENANT, workflow, limit=50, next_token=None, **kwargs
    )
    return [r.id for r in records]


def test_node_starts_and_ends_write_no_item_a_listing_index_holds(local_stack: LocalStack) -> None:
    # Given a running single run with a node
    store = deps.stores().executions
    run = _run("wf-hot", 1)
    store.put_execution(TENANT, run)
    store.put_node_record_if_absent(
        TENANT, run["id"], "N#a", {"node_id": "a", "status": "pending", "attempts": 0}
    )
    entry = _raw(_entry_key(run))
    # When the node starts and ends
    store.begin_node_attempt(TENANT, run["id"], "a", 0, 1, {"node_id": "a"}, "2026-12-07T10:01:00.000Z")
    store.finish_node(TENANT, run["id"], "N#a", {"status": "completed", "output": "done"}, attempt=1)
    # Then the execution item they wrote is in no listing index, and the listing entry is untouched
    execution = _raw(execution_key(TENANT, run["id"]))
    assert not set(INDEX_KEYS) & set(execution)
    assert _raw(_entry_key(run)) == entry
    assert set(INDEX_KEYS) <= set(entry)


def _record(run: dict[str, Any]) -> ExecutionRecord:
    return ExecutionRecord.model_validate(run)


def test_listings_read_the_runs_newest_first_page_by_page_and_by_status(local_stack: LocalStack) -> None:
    store = deps.stores().executions
    runs = [_run("wf-list", n) for n in range(5)]
    for run in runs:
        store.put_execution(TENANT, run)
    store.update_execution(TENANT, runs[1]["id"], {"current_node": {"idx": 3, "id": "c"}})
    store.transition_execution(
        TENANT, _record(runs[2]), from_statuses=("running",), to_status="completed", fields={"expires_at": 99}
    )
    # newest first, whole records
    records, _ = store.list_executions(TENANT, "wf-list", limit=50, next_token=None)
    assert [r.id for r in records] == [r["id"] for r in reversed(runs)]
    at = records[3].current_node
    assert at is not None and (at.idx, at.id) == (3, "c")
    assert records[2].status == "completed"
    # page by page, each run once
    seen, token = [], None
    while True:
        page, token = store.list_executions(TENANT, "wf-list", limit=2, next_token=token)
        seen += [r.id for r in page]
        if not token:
            break
    assert seen == [r["id"] for r in reversed(runs)]
    # by status: the entry moved with the run, in the same write, and expires with it
    assert _ids("wf-list", status="completed") == [runs[2]["id"]]
    assert runs[2]["id"] not in _ids("wf-list", status="running")
    assert _raw(_entry_key(runs[2]))["expires_at"] == 99
    # by time
    assert _ids("wf-list", created_after="2026-12-07T10:00:03.000Z") == [runs[4]["id"], runs[3]["id"]]
    # a hidden run (being deleted) leaves the listings
    store.hide_execution(TENANT, runs[0]["id"])
    assert runs[0]["id"] not in _ids("wf-list")


def test_a_transition_that_loses_changes_neither_the_run_nor_its_entry(local_stack: LocalStack) -> None:
    store = deps.stores().executions
    run = _run("wf-lose", 1, status="completed")
    store.put_execution(TENANT, run)
    entry = _raw(_entry_key(run))
    with pytest.raises(ConditionFailed):
        store.transition_execution(TENANT, _record(run), from_statuses=("running",), to_status="failed")
    assert _raw(_entry_key(run)) == entry
    assert _raw(execution_key(TENANT, run["id"]))["status"] == "completed"


def test_runs_recorded_before_listing_entries_are_listed_and_moved_as_before(local_stack: LocalStack) -> None:
    # Given a run written the old way (its own item carries the index keys, no entry) beside a new one
    store = deps.stores().executions
    old, new = _run("wf-old", 1), _run("wf-old", 2)
    sort = f"{old['created_at']}#{old['id']}"
    store.table.put_item(
        Item={
            **old,
            **execution_key(TENANT, old["id"]),
            "tenant": TENANT,
            "kind": "execution",
            "gsi1pk": f"T#{TENANT}#WF#wf-old#XS",
            "gsi1sk": sort,
            "gsi2pk": f"T#{TENANT}#WF#wf-old#XS#running",
            "gsi2sk": sort,
        }
    )
    store.put_execution(TENANT, new)
    assert _ids("wf-old") == [new["id"], old["id"]]
    # When the old run ends
    updated = store.transition_execution(
        TENANT, _record(old), from_statuses=("running",), to_status="completed"
    )
    # Then it moved between the status listings as it did before
    assert updated.status == "completed"
    assert _ids("wf-old", status="completed") == [old["id"]]
    assert _ids("wf-old", status="running") == [new["id"]]


def test_a_page_is_one_query_and_a_batch_get_per_hundred_runs(local_stack: LocalStack) -> None:
    store = deps.stores().executions
    for n in range(120):
        store.put_execution(TENANT, _run("wf-page", n))
    calls: list[str] = []
    events = aws.session().events
    aws.clear_resources()  # handlers on the session reach the clients built after them

    def count(event_name: str, **kwargs: Any) -> None:
        calls.append(event_name.rsplit(".", 1)[1])

    for operation in ("Query", "BatchGetItem", "GetItem", "Scan"):
        events.register(f"provide-client-params.dynamodb.{operation}", count)
    try:
        small, _ = store.list_executions(TENANT, "wf-page", limit=50, next_token=None)
        assert (len(small), calls) == (50, ["Query", "BatchGetItem"])
        calls.clear()
        large, _ = store.list_executions(TENANT, "wf-page", limit=200, next_token=None)
        assert (len(large), calls) == (120, ["Query", "BatchGetItem", "BatchGetItem"])
    finally:
        for operation in ("Query", "BatchGetItem", "GetItem", "Scan"):
            events.unregister(f"provide-client-params.dynamodb.{operation}", count)
        aws.clear_resources()
    assert [r.id for r in large[:50]] == [r.id for r in small]
