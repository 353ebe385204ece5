"""Batch runs over dataset items, end to end on the local stack (see docs/batch.md)."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest
from tests.support.batches import TENANT, compaction_ended, stored
from tests.support.items import execution_item

from relayflow.client import Client
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.services import batch_results

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

    # Then it answers at once, pending: the filter runs in the background, and the total appears
    # once the run's item list is written
    assert started["status"] == "pending" and started["progress"]["total_items"] is None
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
        "parsed_output": None,
        "error": None,
        "failed_node_id": by_id["doc-001"]["failed_node_id"],
        "duration_ms": by_id["doc-001"]["duration_ms"],
        "completed_at": by_id["doc-001"]["completed_at"],
    }
    assert by_id["doc-001"]["duration_ms"] >= 0
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


def test_a_bad_submission_is_refused_and_starts_nothing(api: Any, docs: list[dict[str, Any]]) -> None:
    # Given a dataset and a workflow
    dataset_id, version_id = dataset_with(api, docs)
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])
    empty = ok(api("POST", f"/datasets/{dataset_id}/versions", {}), 201)
    path = f"/workflows/{workflow_id}/executions"

    # When a submission is wrong, then it is refused at once with the reason: 400 for what the
    # request itself gets wrong, 409 for what the dataset does not allow
    cases = [
        (
            batch_body(dataset_id, version_id, filter_query="lang =="),
            400,
            "invalid_filter",
            "incomplete expression",
        ),
        (
            batch_body(dataset_id, version_id, filter_query="nope(lang)"),
            400,
            "invalid_filter",
            "unknown function",
        ),
        (batch_body("missing", version_id), 409, "dataset_not_found", "dataset 'missing'"),
        (batch_body(dataset_id, "missing"), 409, "dataset_version_not_found", "'missing'"),
        (batch_body(dataset_id, empty["id"]), 409, "dataset_version_not_ready", "has no items yet"),
        (batch_body(dataset_id, version_id, input_field="body"), 409, "unknown_input_field", "'body'"),
        (
            batch_body(dataset_id, version_id, input_field="extra"),
            409,
            "unknown_input_field",
            "item 'doc-000' is kept by the filter but has no field 'extra'",
        ),
        ({"input_mode": "batch"}, 400, "invalid_input_mode", "needs batch_config"),
    ]
    for body, expected, code, words in cases:
        status, answer = api("POST", path, body)
        assert (status, answer["code"]) == (expected, code), (body, answer)
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
    # And its outcomes are compacted as a finished run's: the pages come from its segments and list
    # each item once, as they did before
    run = RunRef(tenant=TENANT, workflow_id=workflow_id, execution_id=started["id"])
    assert compaction_ended(run) == "SUCCEEDED" and batch_results.compacted(stored(run)).every
    from_segments = all_results(api, workflow_id, started["id"], limit=7)
    assert [(r["source_item_id"], r["status"], r["output"]) for r in from_segments] == [
        (r["source_item_id"], r["status"], r["output"]) for r in results
    ]
    assert len({r["source_item_id"] for r in from_segments}) == 40


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

    # Then there is one line per item, in dataset order: the output as text, a JSON node's
    # parsed value beside it
    assert status == 200
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert [r["source_item_id"] for r in rows] == [f"r{i}" for i in range(12)]
    assert json.loads(rows[1].pop("output")) == {"n": 1}
    assert rows[1] == {
        "source_item_id": "r1",
        "status": "completed",
        "input": '{"n": 1}',
        "parsed_output": {"n": 1},
        "error": None,
        "failed_node_id": None,
    }
    assert rows[0]["status"] == "failed" and "declared JSON output" in rows[0]["error"]

    # And as CSV, with a header and the same rows
    status, text = api("GET", f"{path}/results", query={"format": "csv"})
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == [
        "source_item_id", "status", "input", "output", "parsed_output", "error", "failed_node_id"
    ]  # fmt: skip
    assert table[2][:3] == ["r1", "completed", '{"n": 1}']
    assert json.loads(table[2][3]) == json.loads(table[2][4]) == {"n": 1}
    assert len(table) == 13

    # And the client pages them into the same file
    with Client(served, api_key=local_stack.api_key) as client:
        target = client.download_execution_results(
            workflow_id, started["id"], tmp_path / "r.jsonl", page_size=5
        )
        downloaded = [json.loads(line) for line in target.read_text().splitlines()]
        assert [{k: v for k, v in r.items() if k != "output"} for r in downloaded] == [
            {k: v for k, v in r.items() if k != "output"} for r in rows
        ]

        # And one item shows the record of each of its nodes
        item = client.get_execution_item(workflow_id, started["id"], "r0")
    assert item["status"] == "failed"
    assert [n["status"] for n in item["node_executions"].values()] == ["completed", "failed"]
    assert [n["output"] for n in item["node_executions"].values()] == ["plain, text", ""]
    assert next(iter(item["node_executions"].values()))["prompt"] == "plain, text"

    # And a completed item shows both of its nodes, the last one's record kept with its outcome
    with Client(served, api_key=local_stack.api_key) as client:
        done = client.get_execution_item(workflow_id, started["id"], "r1")
    first, last = done["node_executions"].values()
    assert (first["status"], last["status"]) == ("completed", "completed")
    assert json.loads(last["output"]) == last["parsed_output"] == {"n": 1}
    assert last["prompt"] == '{"n": 1}' and last["attempts"] == 1
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


def test_a_filter_that_keeps_no_item_ends_the_run_failed_with_the_reason(api: Any) -> None:
    # Given a dataset without German items
    dataset_id, version_id = dataset_with(api, [{"text": "a", "lang": "en"}, {"text": "b", "lang": "fr"}])
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])

    # When a batch keeps the German ones: the submission answers at once (the filter runs later)
    body = batch_body(dataset_id, version_id, filter_query="lang == 'de'")
    started = ok(api("POST", f"/workflows/{workflow_id}/executions", body), 201)
    assert started["status"] == "pending"

    # Then the run ends failed, saying why, with nothing run
    ended = wait(api, workflow_id, started["id"])
    assert ended["status"] == "failed"
    assert ended["error"] == "the filter \"lang == 'de'\" keeps none of the 2 items; nothing to run."


def test_a_batch_rerun_copies_the_item_list_and_runs_every_item_again(api: Any) -> None:
    dataset_id, version_id = dataset_with(api, [{"id": f"k{i}", "text": f"t{i}"} for i in range(6)])
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])
    first = ok(api("POST", f"/workflows/{workflow_id}/executions", batch_body(dataset_id, version_id)), 201)
    assert first["progress"]["total_items"] == 6  # no filter: the version's count, known at once
    wait(api, workflow_id, first["id"])

    rerun = ok(api("POST", f"/workflows/{workflow_id}/executions/{first['id']}/rerun"), 201)

    assert (rerun["rerun_of"], rerun["progress"]["total_items"]) == (first["id"], 6)
    done = wait(api, workflow_id, rerun["id"])
    assert (done["status"], done["progress"]["processed_items"]) == ("completed", 6)
    assert [r["output"] for r in done["results"]["items"]] == [f"T{i}" for i in range(6)]


def test_a_large_results_download_is_a_presigned_url_of_an_export(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.parse import unquote, urlsplit

    from relayflow_runtime.adapters import aws
    from relayflow_runtime.settings import get_settings, reset_caches

    # Given a finished batch whose results are larger than an answer may carry (here: 300 bytes),
    # where presigned URLs can be offered (as on AWS)
    dataset_id, version_id = dataset_with(api, [{"id": f"r{i}", "text": f"text {i}"} for i in range(12)])
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])
    started = ok(api("POST", f"/workflows/{workflow_id}/executions", batch_body(dataset_id, version_id)), 201)
    wait(api, workflow_id, started["id"])
    monkeypatch.setenv("RELAYFLOW_PRESIGNED_UPLOADS", "1")
    monkeypatch.setenv("MAX_INLINE_DOWNLOAD_BYTES", "300")
    reset_caches()
    path = f"/workflows/{workflow_id}/executions/{started['id']}/results"

    # When it is downloaded as JSONL: first 202 while the jobs machine writes the file to S3
    status, answer = api("GET", path, query={"format": "jsonl"})
    assert (status, answer["status"]) == (202, "preparing")
    deadline = time.monotonic() + 30
    while status == 202:
        assert time.monotonic() < deadline
        time.sleep(0.2)
        status, answer = api("GET", path, query={"format": "jsonl"})

    # Then the answer is a presigned URL (303, Location) of a file holding every result
    assert status == 303, answer
    url = urlsplit(answer["url"])
    assert "X-Amz-Signature=" in url.query or "Signature=" in url.query
    key = unquote(
        url.path.lstrip("/").split("/", 1)[1] if url.netloc.startswith("s3") else url.path.lstrip("/")
    )
    body = aws.client("s3").get_object(Bucket=get_settings().bucket_name, Key=key)["Body"].read()
    rows = [json.loads(line) for line in body.decode().splitlines()]
    assert [(r["source_item_id"], r["output"]) for r in rows] == [(f"r{i}", f"TEXT {i}") for i in range(12)]


@pytest.mark.parametrize("long_delete", [False, True], ids=["one round", "a round per page"])
def test_deleting_a_batch_run_hides_it_at_once_and_deletes_its_records_in_the_background(
    api: Any, long_delete: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relayflow_runtime.services import batch, deps, run_records

    rounds: list[dict[str, Any]] = []
    if long_delete:
        # A run too large for one invocation: each round's time is up after its first page
        monkeypatch.setattr(batch, "DELETE_MARGIN_SECONDS", 10_000.0)
    real_job = batch.delete_execution_job

    def counted(job: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        rounds.append(job)
        return real_job(job, **kwargs)

    monkeypatch.setattr(batch, "delete_execution_job", counted)

    # Given a finished batch
    dataset_id, version_id = dataset_with(api, [{"id": f"d{i}", "text": f"t{i}"} for i in range(10)])
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])
    started = ok(api("POST", f"/workflows/{workflow_id}/executions", batch_body(dataset_id, version_id)), 201)
    wait(api, workflow_id, started["id"])
    path = f"/workflows/{workflow_id}/executions/{started['id']}"

    # When it is deleted
    status, answer = api("DELETE", path)

    # Then the answer is 202 at once and the run is gone for every reader
    assert (status, answer) == (202, {"deleted": started["id"], "status": "deleting"})
    assert api("GET", path)[0] == 404
    assert ok(api("GET", f"/workflows/{workflow_id}/executions"))["items"] == []
    # And the jobs machine deletes its outcomes, counters and objects, the execution last
    tenant = "default"
    deadline = time.monotonic() + 30
    while True:
        try:
            execution_item(tenant, started["id"])
        except Exception:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert deps.stores().batches.counters(tenant, started["id"], consistent=True)["processed_items"] == 0
    assert deps.stores().batches.pointers(tenant, started["id"], 0, 9, consistent=True) == {}
    prefix = run_records.execution_prefix(tenant, started["id"])
    assert list(deps.blobs().keys(prefix)) == []
    # And a delete that outlasts one invocation goes on in further rounds of the jobs machine
    if long_delete:
        assert len(rounds) > 2 and [r.get("round") for r in rounds[:3]] == [None, 1, 2]
    else:
        assert len(rounds) == 1


def test_an_input_file_larger_than_an_answer_is_a_presigned_url(
    api: Any, local_stack: Any, served: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from relayflow_runtime.settings import reset_caches

    # Given a run started with a 2 KB file, where answers carry at most 1 KB and URLs can be offered
    workflow_id = workflow_with(api, [("upper", {"model": "uppercase"}, {})])
    data = b"0123456789abcdef" * 128
    file = {
        "filename": "big.txt",
        "content_type": "text/plain",
        "content_base64": base64.b64encode(data).decode(),
    }
    started = ok(api("POST", f"/workflows/{workflow_id}/executions", {"file": file}), 201)
    monkeypatch.setenv("RELAYFLOW_PRESIGNED_UPLOADS", "1")
    monkeypatch.setenv("MAX_INLINE_DOWNLOAD_BYTES", "1024")
    reset_caches()

    # When its input is downloaded
    status, answer = api("GET", f"/workflows/{workflow_id}/executions/{started['id']}/input")

    # Then the answer is a presigned URL of the stored file, not its bytes
    assert status == 303 and "big.txt" in answer["url"] and answer["expires_in"] == 3600
    # And a small one is the body, as before
    monkeypatch.setenv("MAX_INLINE_DOWNLOAD_BYTES", str(len(data)))
    reset_caches()
    with Client(served, api_key=local_stack.api_key) as client:
        target = client.download_execution_input(workflow_id, started["id"], tmp_path / "in.txt")
    assert target.read_bytes() == data
