"""Batch runs over dataset items, end to end on the local stack (see docs/batch.md)."""

from __future__ import annotations

import time
from typing import Any

import pytest

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
        time.sleep(0.05)


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
