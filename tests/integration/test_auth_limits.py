"""The documented maximums: exceeding one answers a 4xx that names the limit; unknown fields are
refused at every level of every body, never ignored."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from relayflow_runtime.domain import limits

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"

# One stack for the module: each test makes its own workflow, version and nodes.
pytestmark = pytest.mark.shared_stack


@pytest.fixture
def version(api: Any) -> dict[str, Any]:
    """A workflow's active version with one echo node."""
    _, model = api("POST", "/models", {"name": "echo", "provider": "builtin", "config": {"model": "echo"}})
    _, workflow = api("POST", "/workflows", {"name": "limits"})
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {"name": "v1"})
    _, node = api("POST", f"/versions/{version['id']}/nodes", {"name": "first", "entity_id": model["id"]})
    return {**version, "model_id": model["id"], "node_id": node["id"]}


def test_every_limit_is_documented() -> None:
    # Given the limits table and the security documentation
    text = DOCS.read_text(encoding="utf-8")
    # Then every limit is named there with its value
    for limit in limits.LIMITS:
        assert f"`{limit.name}`" in text, limit.name
        assert f"{limit.value:,}" in text or str(limit.value) in text, limit


def test_a_body_over_the_request_limit_is_refused_with_413(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a (lowered, to keep the test fast) request limit and a body one byte over it
    from relayflow_runtime.handlers import api as api_module

    monkeypatch.setattr(api_module, "MAX_REQUEST_BODY_BYTES", 1024)
    body = b'{"name": "' + b"x" * 1013 + b'"}'
    assert len(body) == 1025
    # When it is posted
    status, answer = api("POST", "/workflows", body=body, headers={"content-type": "application/json"})
    # Then it is refused before any parsing, naming the limit
    assert status == 413
    assert answer["code"] == "request_too_large"
    assert "request_body" in answer["message"]
    assert "1024" in answer["message"]


def test_the_request_limit_fits_lambda_and_the_gateway() -> None:
    from relayflow.local.server import MAX_BODY_BYTES

    assert limits.MAX_REQUEST_BODY_BYTES <= 6 * 1024 * 1024 <= MAX_BODY_BYTES


def test_a_template_over_the_length_limit_is_refused(api: Any, version: dict[str, Any]) -> None:
    template = "x" * (limits.MAX_TEMPLATE_LENGTH + 1)
    body = {"name": "long", "entity_id": version["model_id"], "config": {"input_template": template}}
    status, answer = api("POST", f"/versions/{version['id']}/nodes", body)
    assert status == 400
    assert str(limits.MAX_TEMPLATE_LENGTH) in answer["message"]
    # And the same through an update
    path = f"/versions/{version['id']}/nodes/{version['node_id']}"
    status, answer = api("PATCH", path, {"config": {"input_template": template}})
    assert status == 400
    assert str(limits.MAX_TEMPLATE_LENGTH) in answer["message"]


def test_the_41st_node_of_a_version_is_refused(api: Any, version: dict[str, Any]) -> None:
    # Given a version with 40 nodes (the fixture made the first): as many as the run machine's inline
    # Map runs at once, so no order of starting its iterations can deadlock a run
    assert limits.MAX_NODES_PER_VERSION == 40
    for index in range(1, 40):
        body = {"name": f"n{index}", "entity_id": version["model_id"]}
        assert api("POST", f"/versions/{version['id']}/nodes", body)[0] == 201
    # When a 41st is added
    body = {"name": "n40", "entity_id": version["model_id"]}
    status, answer = api("POST", f"/versions/{version['id']}/nodes", body)
    # Then it is refused with a 4xx that names the limit
    assert status == 409
    assert answer["code"] == "too_many_nodes"
    assert "at most 40 nodes" in answer["message"]


@pytest.mark.parametrize("where", ["node", "version"])
def test_a_node_timeout_reaching_the_lambda_timeout_is_refused(
    api: Any, version: dict[str, Any], where: str
) -> None:
    # Given a node timeout of 900 s, the node runner's own Lambda timeout (Lambda would kill the
    # runner before it could record the node's timeout)
    if where == "node":
        path, body = f"/versions/{version['id']}/nodes/{version['node_id']}", {"config": {"timeout": 900}}
    else:
        path = f"/workflows/{version['workflow_id']}/versions/{version['id']}"
        body = {"config": {"node_timeout": 900}}
    # When it is set
    status, answer = api("PATCH", path, body)
    # Then it is refused, naming the limit; 840 s is accepted
    assert status == 400, answer
    assert "840" in answer["message"]
    field = "timeout" if where == "node" else "node_timeout"
    assert api("PATCH", path, {"config": {field: 840}})[0] == 200


def test_timeouts_stored_before_the_cap_read_as_the_cap_and_the_version_still_runs(
    api: Any, version: dict[str, Any], local_stack: Any
) -> None:
    # Given a version and a node stored with 900 s timeouts, as the API allowed before the cap
    table = local_stack.client("dynamodb")
    name = local_stack.environment["RELAYFLOW_TABLE"]
    for ident, path in ((version["id"], "node_timeout"), (version["node_id"], "timeout")):
        [item] = [
            i
            for i in table.scan(TableName=name)["Items"]
            if i.get("id", {}).get("S") == ident and "config" in i
        ]
        table.update_item(
            TableName=name,
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET config.#f = :v",
            ExpressionAttributeNames={"#f": path},
            ExpressionAttributeValues={":v": {"N": "900"}},
        )
    # When they are read back, and the version runs
    status, node = api("GET", f"/versions/{version['id']}/nodes/{version['node_id']}")
    assert status == 200, node
    status, shown = api("GET", f"/workflows/{version['workflow_id']}/versions/{version['id']}")
    assert status == 200, shown
    status, run = api(
        "POST",
        f"/workflows/{version['workflow_id']}/executions",
        {"version_id": version["id"], "single_input": "x"},
    )
    # Then each reads as the cap, and the run starts (its plan within the cap)
    assert (node["config"]["timeout"], shown["config"]["node_timeout"]) == (840, 840)
    assert status in (200, 201), run


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        (
            {"single_input": "x", "timeout": limits.MAX_WORKFLOW_TIMEOUT_SECONDS + 1},
            limits.MAX_WORKFLOW_TIMEOUT_SECONDS,
        ),
        (
            {
                "input_mode": "batch",
                "batch_config": {
                    "dataset_id": "d",
                    "dataset_version_id": "v",
                    "parallelism": limits.MAX_PARALLELISM + 1,
                },
            },
            limits.MAX_PARALLELISM,
        ),
        ({"single_input": "x" * (limits.MAX_SINGLE_INPUT_CHARS + 1)}, limits.MAX_SINGLE_INPUT_CHARS),
    ],
    ids=["workflow_timeout", "parallelism", "single_input"],
)
def test_run_limits_are_refused_naming_the_limit(
    api: Any, version: dict[str, Any], body: dict[str, Any], limit: int
) -> None:
    status, answer = api("POST", f"/workflows/{version['workflow_id']}/executions", body)
    assert status == 400, answer
    assert str(limit) in answer["message"]


RESULTS_PAGE, ITEMS_PAGE = limits.MAX_RESULTS_PAGE, limits.MAX_DATASET_ITEMS_PAGE


@pytest.mark.parametrize(
    ("method", "path", "body", "limit"),
    [
        ("GET", f"/workflows/w/executions/x/results?limit={RESULTS_PAGE + 1}", None, RESULTS_PAGE),
        ("GET", f"/datasets/d/versions/v/items?limit={ITEMS_PAGE + 1}", None, ITEMS_PAGE),
        (
            "POST",
            "/workflows/w/executions/x/retry-failed",
            {"parallelism": limits.MAX_PARALLELISM + 1},
            limits.MAX_PARALLELISM,
        ),
        (
            "POST",
            "/datasets/d/versions/v/items",
            {"items": [{}] * (limits.MAX_INLINE_ITEMS + 1)},
            limits.MAX_INLINE_ITEMS,
        ),
    ],
    ids=["results_page", "dataset_items_page", "retry_parallelism", "inline_items"],
)
def test_dataset_and_batch_limits_of_the_table_are_the_ones_enforced(
    api: Any, method: str, path: str, body: dict[str, Any] | None, limit: int
) -> None:
    # Given a request one over a dataset or batch limit of the table (the ids need not exist: the
    # request is refused before any lookup)
    # When it is sent
    status, answer = api(method, path, body)
    # Then it is refused with 400, naming the value the table gives
    assert status == 400, answer
    assert str(limit) in answer["message"], answer


def test_a_file_input_over_the_limit_is_refused(api: Any, version: dict[str, Any]) -> None:
    data = base64.b64encode(b"x" * (limits.MAX_INPUT_FILE_BYTES + 1)).decode()
    body = {"file": {"filename": "big.txt", "content_type": "text/plain", "content_base64": data}}
    status, answer = api("POST", f"/workflows/{version['workflow_id']}/executions", body)
    assert status == 400
    assert answer["code"] == "file_too_large"
    assert "MiB" in answer["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/workflows", {"name": "w", "owner": "me"}, "owner"),
        ("POST", "/models", {"name": "m", "provider": "builtin", "config": {"model": "echo"}, "x": 1}, "x"),
        ("POST", "/api-keys", {"scopes": ["read"], "tenant": "other"}, "tenant"),
        ("POST", "/workflows/{workflow}/versions", {"config": {"max_retries": 1, "retries": 2}}, "retries"),
        ("PATCH", "/workflows/{workflow}/versions/{version}", {"config": {"bogus": 1}}, "bogus"),
        (
            "POST",
            "/versions/{version}/nodes",
            {"name": "n", "entity_id": "{model}", "config": {"prompt": "x"}},
            "prompt",
        ),
        ("PATCH", "/versions/{version}/nodes/{node}", {"config": {"retries": 3}}, "retries"),
        (
            "POST",
            "/versions/{version}/edges",
            {"begin_node_id": "{node}", "end_node_id": "{node}", "weight": 1},
            "weight",
        ),
        ("POST", "/workflows/{workflow}/executions", {"single_input": "x", "priority": 1}, "priority"),
        (
            "POST",
            "/workflows/{workflow}/executions",
            {"file": {"filename": "a", "content_base64": "", "path": "/etc/passwd"}},
            "path",
        ),
        (
            "POST",
            "/workflows/{workflow}/executions",
            {
                "input_mode": "batch",
                "batch_config": {"dataset_id": "d", "dataset_version_id": "v", "shard": 1},
            },
            "shard",
        ),
    ],
)
def test_unknown_fields_are_refused_at_every_level(
    api: Any, version: dict[str, Any], method: str, path: str, body: dict[str, Any], field: str
) -> None:
    # Given a body with one field the API does not know, at the top or inside a nested object
    values = {
        "workflow": version["workflow_id"],
        "version": version["id"],
        "node": version["node_id"],
        "model": version["model_id"],
    }

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], value) if isinstance(value, str) else value

    # When it is sent
    status, answer = api(method, fill(path), fill(body))
    # Then it is refused, naming the field
    assert status == 400, answer
    assert field in answer["message"]
