"""The listing filters the dashboard reads: a version's runs (`GET …/executions?version_id=`) and a
batch run's items in one status (`GET …/results?status=failed`), each item or run exactly once
across pages, in the unfiltered order."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.test_batch import ok, wait

from relayflow.client import Client
from relayflow_runtime.services import batch_results

# One stack for the module: each test makes a workflow of its own.
pytestmark = pytest.mark.shared_stack


def version_with_echo(api: Any, workflow_id: str, output_format: str = "text") -> str:
    echo = {"name": "echo", "provider": "builtin", "config": {"model": "echo"}}
    model = ok(api("POST", "/models", echo), 201)
    version = ok(api("POST", f"/workflows/{workflow_id}/versions", {"config": {"max_retries": 0}}), 201)
    node = {"name": "Parse", "entity_id": model["id"], "config": {"output_format": output_format}}
    ok(api("POST", f"/versions/{version['id']}/nodes", node), 201)
    return str(version["id"])


def pages(api: Any, path: str, query: dict[str, str]) -> list[list[dict[str, Any]]]:
    found: list[list[dict[str, Any]]] = []
    token = None
    while True:
        page = ok(api("GET", path, query={**query, **({"next_token": token} if token else {})}))
        found.append(page["items"])
        token = page["next_token"]
        if not token:
            return found


def test_a_versions_runs_are_listed_alone_newest_first_across_pages(api: Any, client: Client) -> None:
    # Given a workflow with two versions and runs of each, interleaved
    workflow = ok(api("POST", "/workflows", {"name": "two versions"}), 201)
    first, second = version_with_echo(api, workflow["id"]), version_with_echo(api, workflow["id"])
    started: dict[str, list[str]] = {first: [], second: []}
    for version_id in (first, second, first, first, second):
        body = {"input_mode": "single", "single_input": "hi", "version_id": version_id}
        run = ok(api("POST", f"/workflows/{workflow['id']}/executions", body), 201)
        started[version_id].append(run["id"])

    # When each version's runs are listed a page of one at a time
    path = f"/workflows/{workflow['id']}/executions"
    listed = {v: pages(api, path, {"version_id": v, "limit": "1"}) for v in (first, second)}

    # Then each lists exactly its own runs, newest first, one a page
    for version_id, runs in started.items():
        ids = [x["id"] for page in listed[version_id] for x in page]
        assert ids == list(reversed(runs)), (version_id, ids)
        assert all(x["version_id"] == version_id for page in listed[version_id] for x in page)
    # And the filter combines with the status filter
    for run_id in started[first]:
        wait(api, workflow["id"], run_id)
    both = ok(api("GET", path, query={"version_id": first, "status": "completed"}))
    assert sorted(x["id"] for x in both["items"]) == sorted(started[first])
    # And the client passes it
    listed_by_client = client.get_workflow_executions(workflow["id"], version_id=second)
    assert [x.id for x in listed_by_client] == list(reversed(started[second]))


def test_a_batchs_failed_items_are_paged_alone_in_list_order_even_past_the_scan_bound(
    api: Any, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a finished batch run of 30 items, every seventh not JSON for a JSON node (it fails)
    dataset = ok(api("POST", "/datasets", {"name": "mixed"}), 201)
    dataset_version = ok(api("POST", f"/datasets/{dataset['id']}/versions", {}), 201)
    items = [{"id": f"it-{i:02d}", "text": "not json" if i % 7 == 3 else f'{{"n": {i}}}'} for i in range(30)]
    path = f"/datasets/{dataset['id']}/versions/{dataset_version['id']}/items"
    assert ok(api("POST", path, {"items": items}))["status"] == "ready"
    workflow = ok(api("POST", "/workflows", {"name": "mixed"}), 201)
    version_with_echo(api, workflow["id"], output_format="json")
    body = {
        "input_mode": "batch",
        "batch_config": {"dataset_id": dataset["id"], "dataset_version_id": dataset_version["id"]},
    }
    run = ok(api("POST", f"/workflows/{workflow['id']}/executions", body), 201)
    done = wait(api, workflow["id"], run["id"])
    failed = [f"it-{i:02d}" for i in range(30) if i % 7 == 3]
    assert done["progress"]["failed_items"] == len(failed), done["progress"]
    results = f"/workflows/{workflow['id']}/executions/{run['id']}/results"

    # When the failed items are paged two at a time, and the completed ones
    failed_pages = pages(api, results, {"status": "failed", "limit": "2"})
    completed_pages = pages(api, results, {"status": "completed", "limit": "10"})

    # Then each status lists exactly its items, in the list's order, each once, full pages
    assert [x["source_item_id"] for page in failed_pages for x in page] == failed
    assert all(x["status"] == "failed" and x["error"] for page in failed_pages for x in page)
    # (the last failed item ends the second page, which read the rest of the list: no third page)
    assert [len(page) for page in failed_pages] == [2, 2]
    completed = [x["source_item_id"] for page in completed_pages for x in page]
    assert completed == [f"it-{i:02d}" for i in range(30) if i % 7 != 3]
    by_client = client.get_execution_results(workflow["id"], run["id"], limit=10, status="failed")
    assert [x.source_item_id for x in by_client] == failed

    # And with a scan bound of 4 items a page, pages come short or empty but still carry on to the end
    monkeypatch.setattr(batch_results, "FILTER_SCAN_ITEMS", 4)
    bounded = pages(api, results, {"status": "failed", "limit": "2"})
    assert [x["source_item_id"] for page in bounded for x in page] == failed
    assert len(bounded) == 8 and [] in bounded  # 30 items, at most 4 read a page
    # And without a status every item is listed, as before
    assert sum(len(p) for p in pages(api, results, {"limit": "7"})) == 30
