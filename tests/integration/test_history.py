"""Execution history through the HTTP API: newest first, limit, status filter, time range, paging
with no duplicate or missing entry, all served by the table's indexes (never a Scan), and deleting
an execution with its stored files and records."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from boto3.dynamodb.conditions import Key
from tests.support.graphs import add_node, builtin_model, new_version
from tests.support.items import execution_item

from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters import aws
from relayflow_runtime.domain.clock import new_id
from relayflow_runtime.schemas.entities import Execution, ExecutionProgress
from relayflow_runtime.services import apikeys, deps, run_records

# One stack for the module: each test lists the runs of a workflow of its own.
pytestmark = pytest.mark.shared_stack

TERMINAL = ("completed", "failed", "cancelled")
BASE_TIME = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def ok(answer: tuple[int, Any], status: int = 200) -> Any:
    assert answer[0] == status, answer
    return answer[1]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def tenant(local_stack: LocalStack) -> str:
    assert local_stack.api_key
    return apikeys.authenticate(local_stack.api_key).tenant


@pytest.fixture
def workflow(api: Any) -> dict[str, Any]:
    """A workflow with one echo node (its first version is the active one)."""
    model = ok(
        api("POST", "/models", {"name": "echo", "provider": "builtin", "config": {"model": "echo"}}), 201
    )
    workflow = ok(api("POST", "/workflows", {"name": "history"}), 201)
    version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {"config": {"max_retries": 0}}), 201)
    ok(api("POST", f"/versions/{version['id']}/nodes", {"name": "echo", "entity_id": model["id"]}), 201)
    return {**workflow, "version_id": version["id"]}


class TableCalls:
    def __init__(self) -> None:
        self.scans = 0
        self.query_indexes: list[str] = []


@pytest.fixture
def table_calls(local_stack: LocalStack) -> Iterator[TableCalls]:
    """The Scans and the indexes of the Queries the table store sends while the test runs."""
    calls = TableCalls()
    # Handlers on the session reach every client built after them: forget the tables built so far.
    events = aws.session().events
    aws.clear_resources()

    def on_scan(**kwargs: Any) -> None:
        calls.scans += 1

    def on_query(params: dict[str, Any], **kwargs: Any) -> None:
        calls.query_indexes.append(params.get("IndexName", "table"))

    events.register("provide-client-params.dynamodb.Scan", on_scan)
    events.register("provide-client-params.dynamodb.Query", on_query)
    yield calls
    events.unregister("provide-client-params.dynamodb.Scan", on_scan)
    events.unregister("provide-client-params.dynamodb.Query", on_query)
    aws.clear_resources()


def seed(tenant: str, workflow: dict[str, Any], statuses: list[str]) -> list[dict[str, Any]]:
    """Execution records written straight into the table (one per status, a second apart), the way
    the engine writes them, so listing can be tested on many runs without running them."""
    records = []
    for number, status in enumerate(statuses, start=1):
        created = BASE_TIME + timedelta(seconds=number)
        execution = Execution(
            id=new_id(),
            workflow_id=workflow["id"],
            version_id=workflow["version_id"],
            number=number,
            status=status,  # type: ignore[arg-type]
            created_at=iso(created),
            started_at=None if status == "pending" else iso(created + timedelta(milliseconds=100)),
            completed_at=iso(created + timedelta(milliseconds=900)) if status in TERMINAL else None,
            single_input=f"input {number}",
            progress=ExecutionProgress(total_nodes=1, current_node_idx=0),
        )
        record = execution.model_dump(mode="json", exclude={"node_executions"})
        deps.stores().executions.put_execution(tenant, record)
        records.append(record)
    return records


def newest_first(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in sorted(records, key=lambda r: r["created_at"], reverse=True)]


def walk(api: Any, workflow_id: str, **query: Any) -> list[list[dict[str, Any]]]:
    """Every page of the listing, following next_token until it is null."""
    pages: list[list[dict[str, Any]]] = []
    token = None
    while True:
        params = {k: str(v) for k, v in query.items()}
        if token:
            params["next_token"] = token
        page = ok(api("GET", f"/workflows/{workflow_id}/executions", query=params))
        pages.append(page["items"])
        token = page["next_token"]
        if not token:
            return pages
        assert len(pages) < 100, "paging does not end"


def run_to_end(api: Any, workflow_id: str, body: dict[str, Any]) -> dict[str, Any]:
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", body), 201)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        execution = ok(api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}"))
        if execution["status"] in TERMINAL:
            return execution
        time.sleep(0.05)
    raise AssertionError(f"execution still {execution['status']}")


def test_real_runs_are_listed_newest_first_numbered_per_workflow_with_their_times_and_progress(
    api: Any, workflow: dict[str, Any]
) -> None:
    # Given three runs of one workflow, one after the other
    ran = [run_to_end(api, workflow["id"], {"single_input": f"run {i}"}) for i in range(3)]

    # When the history is listed
    page = ok(api("GET", f"/workflows/{workflow['id']}/executions"))

    # Then the newest comes first, numbered 3, 2, 1, each with its times and progress
    assert [x["id"] for x in page["items"]] == [x["id"] for x in reversed(ran)]
    assert [x["number"] for x in page["items"]] == [3, 2, 1]
    assert page["next_token"] is None
    for entry in page["items"]:
        assert entry["status"] == "completed"
        assert entry["created_at"] <= entry["started_at"] <= entry["completed_at"]
        assert entry["progress"]["total_nodes"] == 1
        assert entry["workflow_id"] == workflow["id"]


def test_limit_pages_through_every_execution_exactly_once_in_order(
    api: Any, tenant: str, workflow: dict[str, Any], table_calls: TableCalls
) -> None:
    # Given 47 executions
    records = seed(tenant, workflow, ["completed"] * 47)

    # When they are listed 10 at a time
    pages = walk(api, workflow["id"], limit=10)

    # Then 5 pages of at most 10 come back, together every execution once, newest first
    assert [len(p) for p in pages] == [10, 10, 10, 10, 7]
    listed = [x["id"] for p in pages for x in p]
    assert listed == newest_first(records)
    assert len(set(listed)) == 47
    # and the table was never scanned: the workflow's creation-time index answered
    assert table_calls.scans == 0
    assert "gsi1" in table_calls.query_indexes


def test_a_page_that_ends_exactly_at_the_last_execution_needs_no_empty_extra_page(
    api: Any, tenant: str, workflow: dict[str, Any]
) -> None:
    # Given exactly two pages' worth of executions
    records = seed(tenant, workflow, ["completed"] * 20)

    # When they are listed 10 at a time
    pages = walk(api, workflow["id"], limit=10)

    # Then every execution is listed once, and no page is empty
    assert [x["id"] for p in pages for x in p] == newest_first(records)
    assert all(pages)


def test_status_filter_lists_only_that_status_newest_first_across_pages(
    api: Any, tenant: str, workflow: dict[str, Any], table_calls: TableCalls
) -> None:
    # Given 40 executions in all five statuses
    cycle = ["completed", "failed", "completed", "cancelled", "running", "pending", "completed", "failed"]
    records = seed(tenant, workflow, cycle * 5)

    for status in ("completed", "failed", "cancelled", "running", "pending"):
        # When one status is asked for, 4 at a time
        pages = walk(api, workflow["id"], status=status, limit=4)

        # Then exactly the executions with that status come back, newest first, each once
        expected = newest_first([r for r in records if r["status"] == status])
        listed = [x["id"] for p in pages for x in p]
        assert listed == expected, status
        assert all(x["status"] == status for p in pages for x in p)
    # and the status index answered, never a Scan
    assert table_calls.scans == 0
    assert "gsi2" in table_calls.query_indexes


def test_a_run_moves_from_one_status_listing_to_the_next_as_it_finishes(
    api: Any, workflow: dict[str, Any]
) -> None:
    # Given a run that has finished
    done = run_to_end(api, workflow["id"], {"single_input": "moving"})

    # When the listings by status are read
    def ids(status: str) -> list[str]:
        page = ok(api("GET", f"/workflows/{workflow['id']}/executions", query={"status": status}))
        return [x["id"] for x in page["items"]]

    # Then it is only under its final status
    assert ids("completed") == [done["id"]]
    assert ids("pending") == ids("running") == ids("failed") == []


def test_time_range_bounds_are_inclusive_and_combine_with_status_and_paging(
    api: Any, tenant: str, workflow: dict[str, Any]
) -> None:
    # Given 30 executions created a second apart (number n at BASE_TIME + n s)
    records = seed(tenant, workflow, ["completed", "failed"] * 15)
    after, before = BASE_TIME + timedelta(seconds=5), BASE_TIME + timedelta(seconds=20)

    # When a time range is asked for (as Z times, paged 4 at a time)
    pages = walk(api, workflow["id"], created_after=iso(after), created_before=iso(before), limit=4)

    # Then exactly the executions created in [after, before] come back, newest first
    in_range = [r for r in records if iso(after) <= r["created_at"] <= iso(before)]
    assert [x["number"] for p in pages for x in p] == list(range(20, 4, -1))
    assert [x["id"] for p in pages for x in p] == newest_first(in_range)

    # And with a status filter, and bounds written with another offset and in lower case (RFC 3339)
    pages = walk(
        api,
        workflow["id"],
        status="failed",
        created_after="2025-03-01T13:00:05+01:00",
        created_before="2025-03-01t12:00:20z",
    )
    assert [x["number"] for p in pages for x in p] == [20, 18, 16, 14, 12, 10, 8, 6]

    # And only one bound works too
    page = ok(api("GET", f"/workflows/{workflow['id']}/executions", query={"created_after": iso(before)}))
    assert [x["number"] for x in page["items"]] == list(range(30, 19, -1))
    page = ok(api("GET", f"/workflows/{workflow['id']}/executions", query={"created_before": iso(after)}))
    assert [x["number"] for x in page["items"]] == [5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"status": "finished"}, "invalid_request"),
        ({"limit": "0"}, "invalid_request"),
        ({"limit": "201"}, "invalid_request"),
        ({"next_token": "not-a-token"}, "invalid_next_token"),
        ({"created_after": "yesterday"}, "invalid_time"),
        ({"created_before": "2025-13-01"}, "invalid_time"),
        ({"created_before": "2025-03-01T12:00:20"}, "invalid_time"),  # no zone: ambiguous
        (
            {"created_after": "2025-03-02T00:00:00Z", "created_before": "2025-03-01T00:00:00Z"},
            "invalid_time_range",
        ),
    ],
)
def test_bad_listing_parameters_are_refused_with_a_clear_400(
    api: Any, workflow: dict[str, Any], query: dict[str, str], code: str
) -> None:
    # When the listing is asked for with a bad parameter
    status, body = api("GET", f"/workflows/{workflow['id']}/executions", query=query)

    # Then it is a 400 with a machine-readable code and a sentence
    assert status == 400, body
    assert body["code"] == code
    assert body["message"]


def test_the_history_of_an_unknown_workflow_is_a_404(api: Any) -> None:
    status, body = api("GET", f"/workflows/{new_id()}/executions")
    assert status == 404
    assert body["code"] == "workflow_not_found"


def test_the_client_pages_the_history_with_next_token(
    local_stack: LocalStack, served: str, tenant: str, workflow: dict[str, Any]
) -> None:
    from relayflow.client import Client

    # Given 12 failed and 13 completed executions
    records = seed(tenant, workflow, ["failed", "completed"] * 12 + ["completed"])

    # When the client pages the completed ones 5 at a time, as the reference docs call it
    listed: list[str] = []
    with Client(base_url=served, api_key=local_stack.api_key) as client:
        page = client.get_workflow_executions(workflow_id=workflow["id"], limit=5, status="completed")
        listed += [x.id for x in page]
        while page.next_token:
            page = client.get_workflow_executions(
                workflow_id=workflow["id"], limit=5, status="completed", next_token=page.next_token
            )
            listed += [x.id for x in page]

    # Then it gets each completed one exactly once, newest first, as typed objects
    assert listed == newest_first([r for r in records if r["status"] == "completed"])


# ---- deleting ------------------------------------------------------------------------------------------
def stored(tenant: str, execution_id: str) -> tuple[list[str], list[str]]:
    """(S3 keys under the execution's prefix, sort keys of its table items)."""
    keys = list(deps.blobs().keys(run_records.execution_prefix(tenant, execution_id)))
    items = deps.stores().executions.table.query(
        KeyConditionExpression=Key("pk").eq(f"T#{tenant}#X#{execution_id}"), ConsistentRead=True
    )["Items"]
    return keys, [str(i["sk"]) for i in items]


def test_deleting_an_execution_removes_its_files_node_records_and_history_entry(
    api: Any, tenant: str, workflow: dict[str, Any]
) -> None:
    # Given a finished run that was started with a file, and another run that stays
    file = {
        "filename": "notes.txt",
        "content_type": "text/plain",
        "content_base64": base64.b64encode(b"remember the milk").decode(),
    }
    gone = run_to_end(api, workflow["id"], {"file": file})
    kept = run_to_end(api, workflow["id"], {"single_input": "keep me"})
    keys, sort_keys = stored(tenant, gone["id"])
    assert any(k.endswith("/input/notes.txt") for k in keys), keys
    assert "X" in sort_keys and any(sk.startswith("N#") for sk in sort_keys), sort_keys

    # When it is deleted
    assert ok(api("DELETE", f"/workflows/{workflow['id']}/executions/{gone['id']}")) == {
        "deleted": gone["id"]
    }

    # Then its files, its record and its node records are gone, and so is its history entry
    assert stored(tenant, gone["id"]) == ([], [])
    status, body = api("GET", f"/workflows/{workflow['id']}/executions/{gone['id']}")
    assert (status, body["code"]) == (404, "execution_not_found")
    status, _ = api("GET", f"/workflows/{workflow['id']}/executions/{gone['id']}/input")
    assert status == 404
    page = ok(api("GET", f"/workflows/{workflow['id']}/executions"))
    assert [x["id"] for x in page["items"]] == [kept["id"]]
    assert (
        ok(api("GET", f"/workflows/{workflow['id']}/executions", query={"status": "completed"}))["items"]
        == page["items"]
    )
    # and the other run is untouched
    assert stored(tenant, kept["id"])[1]

    # And deleting it again is a 404
    status, body = api("DELETE", f"/workflows/{workflow['id']}/executions/{gone['id']}")
    assert (status, body["code"]) == (404, "execution_not_found")


def test_a_running_execution_cannot_be_deleted_until_it_is_cancelled(api: Any, tenant: str) -> None:
    # Given a run of a slow node
    model = ok(
        api(
            "POST",
            "/models",
            {"name": "sleep", "provider": "builtin", "config": {"model": "sleep", "seconds": 5}},
        ),
        201,
    )
    workflow = ok(api("POST", "/workflows", {"name": "slow"}), 201)
    version = ok(api("POST", f"/workflows/{workflow['id']}/versions", {}), 201)
    ok(api("POST", f"/versions/{version['id']}/nodes", {"name": "nap", "entity_id": model["id"]}), 201)
    execution = ok(api("POST", f"/workflows/{workflow['id']}/executions", {"single_input": "zzz"}), 201)
    path = f"/workflows/{workflow['id']}/executions/{execution['id']}"

    # When it is deleted while it runs
    status, body = api("DELETE", path)

    # Then that is refused and nothing is removed
    assert (status, body["code"]) == (409, "execution_active")
    assert ok(api("GET", path))["id"] == execution["id"]

    # And once cancelled it can be deleted
    assert ok(api("POST", f"{path}/cancel"))["status"] == "cancelled"
    ok(api("DELETE", path))
    assert stored(tenant, execution["id"]) == ([], [])
    assert api("GET", path)[0] == 404


def test_a_delete_interrupted_before_its_last_step_can_be_repeated(
    api: Any, tenant: str, workflow: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    # Given a finished run, and a table that fails the very last write of the delete once
    done = run_to_end(api, workflow["id"], {"single_input": "twice"})
    path = f"/workflows/{workflow['id']}/executions/{done['id']}"
    events = aws.session().events  # reaches the tables built from here on
    failures = ["the network went away"]

    def network_gone(**kwargs: Any) -> None:
        if failures:
            raise ConnectionError(failures.pop())

    aws.clear_resources()
    events.register("before-call.dynamodb.DeleteItem", network_gone)
    request.addfinalizer(aws.clear_resources)
    request.addfinalizer(lambda: events.unregister("before-call.dynamodb.DeleteItem", network_gone))

    # When it is deleted: the files and node records go, then the call fails
    status, _ = api("DELETE", path)
    assert status == 500

    # Then the execution is still there to delete again (nothing else of it is left)
    assert stored(tenant, done["id"]) == ([], ["X"])
    assert ok(api("GET", path))["id"] == done["id"]

    # And deleting it again finishes the job
    ok(api("DELETE", path))
    assert stored(tenant, done["id"]) == ([], [])
    assert api("GET", path)[0] == 404


def test_a_running_run_is_listed_at_the_node_it_runs_and_ends_at_its_last(api: Any, tenant: str) -> None:
    # Given a chain whose second node is slow, running
    workflow_id, version_id = new_version(api)
    upper = builtin_model(api, "uppercase")
    sleeper = builtin_model(api, "sleep", seconds=2)
    add_node(api, version_id, "first", upper, "{{input}}")
    second = add_node(api, version_id, "second", sleeper, "{{input}}")
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"}), 201)
    deadline = time.monotonic() + 20
    while True:
        entry = ok(api("GET", f"/workflows/{workflow_id}/executions"))["items"][0]
        if entry["status"] == "running" and entry["progress"]["current_node_id"] == second:
            break
        assert time.monotonic() < deadline, entry
        time.sleep(0.05)
    # When the history is listed meanwhile (a page without the nodes), then the run is at the second
    # node, read from the node records (no node start writes the execution item)
    assert entry["progress"]["current_node_idx"] == 1
    assert "current_node" not in execution_item(tenant, execution["id"])
    # and once ended, the item keeps where it ended
    deadline = time.monotonic() + 20
    while ok(api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}"))["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stored = execution_item(tenant, execution["id"])
    assert stored["current_node"] == {"idx": 1, "id": second}
    listed = ok(api("GET", f"/workflows/{workflow_id}/executions"))["items"][0]
    assert listed["progress"]["current_node_id"] == second
