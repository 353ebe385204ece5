"""Batch runs over dataset items, end to end on the local stack (see docs/batch.md)."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest

from relayflow.client import Client
from relayflow_runtime.services.apikeys import DEFAULT_TENANT
from relayflow_runtime.services.batch import store

ITEMS = 200


def ok(response: tuple[int, Any], status: int = 200) -> Any:
    assert response[0] == status, response
    return response[1]


def wait(api: Any, workflow_id: str, execution_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        execution = ok(api("GET", f"/workflows/{workflow_id}/executions/{execution_id}"))
        if execution["status"] in ("completed", "failed", "cancelled"):
            return dict(execution)
        assert time.monotonic() < deadline, f"still {execution['status']}: {execution['progress']}"
        time.sleep(0.2)  # every poll costs the in-process stack CPU the run needs


def dataset_with(api: Any, items: list[dict[str, Any]]) -> tuple[str, str]:
    dataset = ok(api("POST", "/datasets", {"name": "docs"}), 201)
    version = ok(api("POST", f"/datasets/{dataset['id']}/versions", {}), 201)
    ready = ok(api("POST", f"/datasets/{dataset['id']}/versions/{version['id']}/items", {"items": items}))
    assert ready["status"] == "ready" and ready["item_count"] == len(items)
    return dataset["id"], version["id"]


def workflow_with(api: Any, nodes: list[tuple[str, dict[str, Any], dict[str, Any]]], **config: Any) -> str:
    """A workflow whose active version chains these (name, builtin model config, node config)."""
    workflow = ok(api("POST", "/workflows", {"name": "batch"}), 201)
    version_config = {"max_retries": 0, "retry_delay_seconds": 1, **config}
    version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {"config": version_config}), 201)
    for name, model_config, node_config in nodes:
        model = ok(api("POST", "/models", {"name": name, "provider": "builtin", "config": model_config}), 201)
        node = {"name": name, "entity_id": model["id"], "config": node_config}
        ok(api("POST", f"/versions/{version['id']}/nodes", node), 201)
    ok(api("PATCH", f"/workflows/{workflow['id']}", {"active_version_id": version["id"]}))
    return str(workflow["id"])


def all_results(api: Any, workflow_id: str, execution_id: str, limit: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    token = None
    while True:
        query = {"limit": str(limit), **({"next_token": token} if token else {})}
        page = ok(api("GET", f"/workflows/{workflow_id}/executions/{execution_id}/results", query=query))
        assert len(page["items"]) <= limit
        results.extend(page["items"])
        token = page["next_token"]
        if not token:
            return results


@pytest.fixture
def docs() -> list[dict[str, Any]]:
    """200 items: every fourth is French; every seventh has no "extra" field."""
    return [
        {
            "id": f"doc-{i:03d}",
            "text": f"document number {i}",
            "lang": "fr" if i % 4 == 0 else "en",
            **({} if i % 7 == 0 else {"extra": f"x{i}"}),
        }
        for i in range(ITEMS)
    ]


def test_a_filtered_batch_counts_exactly_pages_each_item_once_and_retries_only_the_failed(
    api: Any, docs: list[dict[str, Any]]
) -> None:
    # Given a 200-item dataset and a workflow whose second node needs the item's "extra" field
    dataset_id, version_id = dataset_with(api, docs)
    workflow_id = workflow_with(
        api,
        [
            ("upper", {"model": "uppercase"}, {"input_template": "{{input}}"}),
            ("tag", {"model": "echo"}, {"input_template": "{{input}} [{{item.extra}}]"}),
        ],
    )
    kept = [d for d in docs if d["lang"] == "en"]
    failing = sorted(d["id"] for d in kept if "extra" not in d)
    assert (len(kept), len(failing)) == (150, 21)

    # When a batch over the English items runs five at a time
    started = ok(
        api(
            "POST",
            f"/workflows/{workflow_id}/executions",
            {
                "input_mode": "batch",
                "batch_config": {
                    "dataset_id": dataset_id,
                    "dataset_version_id": version_id,
                    "input_field": "text",
                    "filter_query": "lang == 'en'",
                    "parallelism": 5,
                },
            },
        ),
        201,
    )

    # Then the total is known at once, and the counts end exact
    assert started["progress"]["total_items"] == 150
    execution = wait(api, workflow_id, started["id"])
    assert execution["status"] == "completed", execution["error"]
    assert execution["progress"]["total_items"] == 150
    assert execution["progress"]["processed_items"] == 150
    assert execution["progress"]["failed_items"] == 21

    # And paging returns each kept item exactly once, with its input, output or error
    results = all_results(api, workflow_id, started["id"], limit=40)
    assert [r["source_item_id"] for r in results] == [d["id"] for d in kept]
    by_id = {r["source_item_id"]: r for r in results}
    assert by_id["doc-001"] == {
        "source_item_id": "doc-001",
        "status": "completed",
        "input": "document number 1",
        "output": "DOCUMENT NUMBER 1 [x1]",
        "error": None,
        "failed_node_id": by_id["doc-001"]["failed_node_id"],
        "duration_ms": None,
        "completed_at": by_id["doc-001"]["completed_at"],
    }
    assert sorted(r["source_item_id"] for r in results if r["status"] == "failed") == failing
    assert "'item' has no 'extra'" in by_id["doc-007"]["error"]
    # And the execution itself carries the first page of results
    assert [r["source_item_id"] for r in execution["results"]["items"]] == [d["id"] for d in kept[:100]]

    # When the failed items are retried
    retry = ok(api("POST", f"/workflows/{workflow_id}/executions/{started['id']}/retry-failed", {}), 201)

    # Then the new run goes over exactly those items
    assert retry["retry_of"] == started["id"]
    assert retry["progress"]["total_items"] == 21
    retried = wait(api, workflow_id, retry["id"])
    assert retried["progress"]["processed_items"] == 21
    assert sorted(r["source_item_id"] for r in all_results(api, workflow_id, retry["id"], 100)) == failing


def batch_body(dataset_id: str, version_id: str, **config: Any) -> dict[str, Any]:
    return {
        "input_mode": "batch",
        "batch_config": {"dataset_id": dataset_id, "dataset_version_id": version_id, **config},
    }


def test_a_bad_submission_is_refused_with_400_and_starts_nothing(
    api: Any, docs: list[dict[str, Any]]
) -> None:
    # Given a dataset and a workflow
    dataset_id, version_id = dataset_with(api, docs)
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])
    empty = ok(api("POST", f"/datasets/{dataset_id}/versions", {}), 201)
    path = f"/workflows/{workflow_id}/executions"

    # When a submission is wrong, then it is refused at once with the reason
    cases = [
        (
            batch_body(dataset_id, version_id, filter_query="lang =="),
            "invalid_filter",
            "incomplete expression",
        ),
        (batch_body(dataset_id, version_id, filter_query="nope(lang)"), "invalid_filter", "unknown function"),
        (batch_body("missing", version_id), "dataset_not_found", "dataset 'missing'"),
        (batch_body(dataset_id, "missing"), "dataset_version_not_found", "'missing'"),
        (batch_body(dataset_id, empty["id"]), "dataset_version_not_ready", "has no items yet"),
        (batch_body(dataset_id, version_id, input_field="body"), "unknown_input_field", "'body'"),
        (
            batch_body(dataset_id, version_id, filter_query="lang == 'de'"),
            "no_items",
            "keeps none of the 200",
        ),
        (
            batch_body(dataset_id, version_id, input_field="extra"),
            "unknown_input_field",
            "item 'doc-000' is kept by the filter but has no field 'extra'",
        ),
        ({"input_mode": "batch"}, "invalid_input_mode", "needs batch_config"),
    ]
    for body, code, words in cases:
        status, answer = api("POST", path, body)
        assert (status, answer["code"]) == (400, code), (body, answer)
        assert words in answer["message"], answer
    status, answer = api("POST", path, batch_body(dataset_id, version_id, parallelism=101))
    assert status == 400 and "parallelism" in answer["message"]

    # And no execution was started
    assert ok(api("GET", path))["items"] == []


def test_a_cancelled_batch_stops_dispatching_and_its_counts_stay_true(api: Any) -> None:
    # Given a batch of slow items running two at a time
    dataset_id, version_id = dataset_with(api, [{"text": f"t{i}"} for i in range(40)])
    workflow_id = workflow_with(api, [("slow", {"model": "sleep", "seconds": 0.2}, {})])
    started = ok(
        api(
            "POST", f"/workflows/{workflow_id}/executions", batch_body(dataset_id, version_id, parallelism=2)
        ),
        201,
    )
    path = f"/workflows/{workflow_id}/executions/{started['id']}"
    deadline = time.monotonic() + 30
    while ok(api("GET", path))["progress"]["processed_items"] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    # When it is cancelled
    cancelled = ok(api("POST", f"{path}/cancel"))

    # Then it is cancelled, and once the items in flight are over no further item runs
    assert cancelled["status"] == "cancelled"
    time.sleep(1.5)
    settled = ok(api("GET", path))["progress"]["processed_items"]
    time.sleep(1.0)
    after = ok(api("GET", path))
    assert after["status"] == "cancelled"
    assert after["progress"]["processed_items"] == settled < 40
    # And each counted item has its result; the others stay pending
    results = all_results(api, workflow_id, started["id"], limit=100)
    assert sum(r["status"] == "completed" for r in results) == settled
    assert sum(r["status"] == "pending" for r in results) == 40 - settled


def test_a_batch_fails_when_more_items_fail_than_max_failed_percent(api: Any) -> None:
    # Given 10 items of which 3 lack the field the second node needs
    items = [{"text": f"t{i}", **({"extra": "x"} if i >= 3 else {})} for i in range(10)]
    dataset_id, version_id = dataset_with(api, items)
    workflow_id = workflow_with(
        api,
        [
            ("upper", {"model": "uppercase"}, {}),
            ("tag", {"model": "echo"}, {"input_template": "{{item.extra}}"}),
        ],
    )
    path = f"/workflows/{workflow_id}/executions"

    # When a batch allows at most 20% failed items, then it ends failed, with every item counted
    body = batch_body(dataset_id, version_id, parallelism=5, max_failed_percent=20)
    failed = wait(api, workflow_id, ok(api("POST", path, body), 201)["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == "3 of 10 items failed (30.0%), more than max_failed_percent (20%)"
    assert (failed["progress"]["processed_items"], failed["progress"]["failed_items"]) == (10, 3)

    # And with 30% allowed it completes
    body = batch_body(dataset_id, version_id, parallelism=5, max_failed_percent=30)
    assert wait(api, workflow_id, ok(api("POST", path, body), 201)["id"])["status"] == "completed"


def test_results_download_as_jsonl_and_csv_and_each_item_shows_its_nodes(
    api: Any, local_stack: Any, served: str, tmp_path: Any
) -> None:
    # Given a finished two-node batch whose second node outputs JSON for some items only
    items = [{"id": f"r{i}", "text": json.dumps({"n": i}) if i % 3 else "plain, text"} for i in range(12)]
    dataset_id, version_id = dataset_with(api, items)
    workflow_id = workflow_with(
        api,
        [
            ("echo", {"model": "echo"}, {}),
            ("parse", {"model": "echo"}, {"output_format": "json"}),
        ],
    )
    started = ok(api("POST", f"/workflows/{workflow_id}/executions", batch_body(dataset_id, version_id)), 201)
    assert wait(api, workflow_id, started["id"])["progress"]["failed_items"] == 4
    path = f"/workflows/{workflow_id}/executions/{started['id']}"

    # When the results are downloaded as JSONL
    status, jsonl = api("GET", f"{path}/results", query={"format": "jsonl"})

    # Then there is one line per item, in dataset order, JSON outputs kept as JSON
    assert status == 200
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert [r["source_item_id"] for r in rows] == [f"r{i}" for i in range(12)]
    assert rows[1] == {
        "source_item_id": "r1",
        "status": "completed",
        "input": '{"n": 1}',
        "output": {"n": 1},
        "error": None,
        "failed_node_id": None,
    }
    assert rows[0]["status"] == "failed" and "declared JSON output" in rows[0]["error"]

    # And as CSV, with a header and the same rows
    status, text = api("GET", f"{path}/results", query={"format": "csv"})
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["source_item_id", "status", "input", "output", "error", "failed_node_id"]
    assert table[2][:4] == ["r1", "completed", '{"n": 1}', '{"n": 1}']
    assert len(table) == 13

    # And the client pages them into the same file
    with Client(served, api_key=local_stack.api_key) as client:
        target = client.download_execution_results(
            workflow_id, started["id"], tmp_path / "r.jsonl", page_size=5
        )
        assert [json.loads(line) for line in target.read_text().splitlines()] == rows

        # And one item shows the record of each of its nodes
        item = client.get_execution_item(workflow_id, started["id"], "r0")
    assert item["status"] == "failed"
    assert [n["status"] for n in item["node_executions"].values()] == ["completed", "failed"]
    assert [n["output"] for n in item["node_executions"].values()] == ["plain, text", None]
    assert next(iter(item["node_executions"].values()))["prompt"] == "plain, text"

    # And a completed item shows both of its nodes, the last one's record kept with its outcome
    with Client(served, api_key=local_stack.api_key) as client:
        done = client.get_execution_item(workflow_id, started["id"], "r1")
    first, last = done["node_executions"].values()
    assert (first["status"], last["status"]) == ("completed", "completed")
    assert last["output"] == {"n": 1} and last["prompt"] == '{"n": 1}' and last["attempts"] == 1
    assert last["completed_at"] and last["duration_ms"] is not None
    status, answer = api("GET", f"{path}/items/nope")
    assert (status, answer["code"]) == (404, "item_not_found")


def test_retrying_failed_items_with_a_fixed_version_completes_them(api: Any) -> None:
    # Given a finished batch where the items without "extra" failed
    items = [{"id": f"i{i}", "text": f"t{i}", **({"extra": "x"} if i % 2 else {})} for i in range(8)]
    dataset_id, version_id = dataset_with(api, items)
    workflow_id = workflow_with(
        api, [("tag", {"model": "echo"}, {"input_template": "{{input}}-{{item.extra}}"})]
    )
    started = ok(api("POST", f"/workflows/{workflow_id}/executions", batch_body(dataset_id, version_id)), 201)
    first = wait(api, workflow_id, started["id"])
    assert first["progress"]["failed_items"] == 4
    # And a fixed version of the workflow
    fixed = ok(api("POST", f"/workflows/{workflow_id}/versions", {"config": {"max_retries": 0}}), 201)
    model = ok(api("POST", "/models", {"name": "e", "provider": "builtin", "config": {"model": "echo"}}), 201)
    ok(api("POST", f"/versions/{fixed['id']}/nodes", {"name": "tag", "entity_id": model["id"]}), 201)

    # When the failed items are retried with it
    path = f"/workflows/{workflow_id}/executions/{started['id']}/retry-failed"
    retry = ok(api("POST", path, {"version_id": fixed["id"], "parallelism": 2}), 201)

    # Then only those run, and they complete
    assert retry["version_id"] == fixed["id"] and retry["batch_config"]["parallelism"] == 2
    done = wait(api, workflow_id, retry["id"])
    assert (done["status"], done["progress"]["processed_items"], done["progress"]["failed_items"]) == (
        "completed",
        4,
        0,
    )
    assert [r["output"] for r in done["results"]["items"]] == ["t0", "t2", "t4", "t6"]
    # And a run without failures has nothing to retry
    status, answer = api("POST", f"/workflows/{workflow_id}/executions/{retry['id']}/retry-failed", {})
    assert (status, answer["code"]) == (409, "no_failed_items")


def test_an_outcome_recorded_twice_counts_once(api: Any, local_stack: Any) -> None:
    # Given a finished one-item batch
    dataset_id, version_id = dataset_with(api, [{"id": "only", "text": "t"}])
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])
    started = ok(api("POST", f"/workflows/{workflow_id}/executions", batch_body(dataset_id, version_id)), 201)
    assert wait(api, workflow_id, started["id"])["progress"]["processed_items"] == 1
    outcomes = store().execution_children(DEFAULT_TENANT, started["id"], ["R#only"])
    assert outcomes["R#only"]["output"] == "T"

    # When the item's outcome is recorded again (a retried task)
    recorded = store().record_item_outcome(DEFAULT_TENANT, started["id"], "only", {"status": "failed"})

    # Then nothing changes
    assert recorded is False
    assert store().execution_children(DEFAULT_TENANT, started["id"], ["R#only"]) == outcomes


def test_an_item_whose_last_node_ends_after_a_cancel_keeps_that_nodes_record(
    local_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relayflow_runtime.services import batch

    # Given an item whose last node completed (its record travels to the outcome) in a run that
    # was cancelled meanwhile
    ctx = {"tenant": DEFAULT_TENANT, "execution_id": "x-cancelled", "mode": "batch", "item_id": "k1"}
    ctx["source_item_id"] = "i1"
    record = {"node_id": "n1", "name": "last", "idx": 0, "status": "completed", "attempts": 1}
    record["output"] = "out"
    monkeypatch.setattr(batch, "is_running", lambda tenant, execution_id: False)

    # When the item finishes
    state = {"ctx": ctx, "outputs": {"n1": "out"}, "last_record": record}
    assert batch.finish_item(state, failed=False) == {}

    # Then it has no outcome (it is not counted), but its node's record is kept
    found = store().execution_children(DEFAULT_TENANT, "x-cancelled", ["R#k1", "I#k1#N#n1"])
    assert set(found) == {"I#k1#N#n1"}
    assert found["I#k1#N#n1"]["status"] == "completed" and found["I#k1#N#n1"]["output"] == "out"


def _finished_run(execution_id: str, ids: list[str], status_of: Any) -> dict[str, Any]:
    """The record of a finished batch run over ``ids``, with its item list and the outcomes
    ``status_of(index)`` gives ("completed", "failed", or None for none)."""
    from relayflow_runtime.services import batch, dataset_service

    writer = dataset_service.ItemListWriter(batch.list_key(DEFAULT_TENANT, execution_id))
    for i, item_id in enumerate(ids):
        writer.add({"id": item_id, "item": {"text": f"t{i}"}})
        if status_of(i):
            outcome = {"source_item_id": item_id, "status": status_of(i), "output": "o" * 1000}
            assert store().record_item_outcome(DEFAULT_TENANT, execution_id, batch.item_key(item_id), outcome)
    writer.close()
    config = {"dataset_id": "d", "dataset_version_id": "v", "input_field": "text"}
    return {"id": execution_id, "input_mode": "batch", "status": "completed", "batch_config": config}


def test_retrying_many_failed_items_lists_each_once_in_order_reading_outcomes_by_page(
    local_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relayflow_runtime.adapters import blob_stream
    from relayflow_runtime.adapters.table import TableStore
    from relayflow_runtime.errors import Conflict
    from relayflow_runtime.services import batch, dataset_service

    # Given a finished batch of 450 items (five pages of outcome reads): two in three failed, one
    # in ten never got an outcome, and some ids are too long for a sort key (keyed by a digest)
    ids = [f"item-{i:03d}" + ("-long" * 60 if i % 50 == 7 else "") for i in range(450)]
    old = _finished_run("x-old", ids, lambda i: None if i % 10 == 9 else "failed" if i % 3 else "completed")
    failing = [item_id for i, item_id in enumerate(ids) if i % 3 and i % 10 != 9]
    assert len(failing) > 2 * batch.OUTCOMES_PER_READ
    reads: list[tuple[list[str], tuple[str, ...]]] = []
    children = TableStore.execution_children

    def spy(self: TableStore, tenant: str, execution_id: str, sks: list[str], **kwargs: Any) -> Any:
        reads.append((list(sks), tuple(kwargs.get("fields", ()))))
        return children(self, tenant, execution_id, sks, **kwargs)

    monkeypatch.setattr(TableStore, "execution_children", spy)

    # When its failed items are made into a new run's list
    ctx = batch.prepare_retry(DEFAULT_TENANT, "x-retry", old, {"nodes": [{"id": "n1"}]})

    # Then the new list holds every failed item once, in the old list's order
    listed = [e["id"] for _, _, e in dataset_service.iter_entries(batch.list_key(DEFAULT_TENANT, "x-retry"))]
    assert listed == failing
    assert ctx["progress"]["total_items"] == len(failing)
    # And the outcomes were read a page at a time, each once, only their status
    assert [len(sks) for sks, _ in reads] == [100, 100, 100, 100, 50]
    assert [sk for sks, _ in reads for sk in sks] == [f"R#{batch.item_key(i)}" for i in ids]
    assert {fields for _, fields in reads} == {("status",)}

    # When a finished run of 150 items none of which failed is retried
    clean = _finished_run("x-clean", [f"c{i}" for i in range(150)], lambda i: "completed")
    with pytest.raises(Conflict) as refused:
        batch.prepare_retry(DEFAULT_TENANT, "x-none", clean, {"nodes": [{"id": "n1"}]})

    # Then it is refused (409 no_failed_items), and no list is left behind
    assert (refused.value.status, refused.value.code) == (409, "no_failed_items")
    bucket = dataset_service.bucket()
    assert blob_stream.object_size(bucket, batch.list_key(DEFAULT_TENANT, "x-none")) is None
