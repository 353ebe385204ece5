"""Idempotent starts: the same Idempotency-Key and body within 24 hours give one execution; the
same key with another body is a 409. Over real HTTP, through the local stack's server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from relayflow.client import ApiError, Client
from relayflow.local.stack import LocalStack

# One stack for the module: each test makes its own workflows and idempotency keys.
pytestmark = pytest.mark.shared_stack


@pytest.fixture
def http(local_stack: LocalStack, served: str) -> Iterator[httpx.Client]:
    headers = {"x-api-key": local_stack.api_key or ""}
    with httpx.Client(base_url=served, headers=headers, timeout=30) as client:
        yield client


def make_workflow(http: httpx.Client) -> str:
    model = http.post("/models", json={"name": "u", "provider": "builtin", "config": {"model": "uppercase"}})
    workflow = http.post("/workflows", json={"name": "retry-safe"}).json()
    version = http.post(f"/workflows/{workflow['id']}/versions", json={}).json()
    node = http.post(f"/versions/{version['id']}/nodes", json={"name": "n", "entity_id": model.json()["id"]})
    assert node.status_code == 201
    return str(workflow["id"])


def start(http: httpx.Client, workflow_id: str, body: Any, key: str | None = "order-42") -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    content = body if isinstance(body, str) else json.dumps(body)
    headers["Content-Type"] = "application/json"
    return http.post(f"/workflows/{workflow_id}/executions", content=content, headers=headers)


def execution_ids(http: httpx.Client, workflow_id: str) -> list[str]:
    return [e["id"] for e in http.get(f"/workflows/{workflow_id}/executions").json()["items"]]


def test_the_same_key_and_body_twice_give_one_execution(http: httpx.Client) -> None:
    # Given a workflow
    workflow_id = make_workflow(http)
    # When the same start is sent twice with the same Idempotency-Key (a client retrying)
    first = start(http, workflow_id, {"single_input": "pay once"})
    second = start(http, workflow_id, {"single_input": "pay once"})
    # Then both answers carry the same execution, the second marked as a replay
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    # And only one execution exists
    assert execution_ids(http, workflow_id) == [first.json()["id"]]


def test_a_changed_body_with_the_same_key_is_a_409(http: httpx.Client) -> None:
    # Given a start made with a key
    workflow_id = make_workflow(http)
    first = start(http, workflow_id, {"single_input": "pay once"})
    # When the key is sent again with a different body
    reused = start(http, workflow_id, {"single_input": "pay twice"})
    # Then it is refused with a code the client can act on, and nothing new starts
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    assert "different request body" in reused.json()["message"]
    assert execution_ids(http, workflow_id) == [first.json()["id"]]


def test_the_same_body_means_the_same_request_not_the_same_bytes(http: httpx.Client) -> None:
    # Given a start made with a key
    workflow_id = make_workflow(http)
    first = start(http, workflow_id, '{"single_input": "x", "timeout": 60}')
    # When it is retried with the keys reordered, other spacing and a default spelled out
    again = start(http, workflow_id, '{ "timeout":60,"input_mode":"single",  "single_input":"x" }')
    # Then it is the same request
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]


def test_keys_belong_to_one_workflow_and_requests_without_a_key_are_not_deduplicated(
    http: httpx.Client,
) -> None:
    # Given two workflows
    one, two = make_workflow(http), make_workflow(http)
    # When the same key and body start both, and two starts go without a key
    a, b = start(http, one, {"single_input": "x"}), start(http, two, {"single_input": "x"})
    plain = [start(http, one, {"single_input": "x"}, key=None) for _ in range(2)]
    # Then each workflow got its own execution, and each keyless start its own
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    assert len({r.json()["id"] for r in plain}) == 2
    assert len(execution_ids(http, one)) == 3


def test_a_refused_request_does_not_use_up_its_key(http: httpx.Client) -> None:
    # Given a start that is refused (single mode needs an input)
    workflow_id = make_workflow(http)
    refused = start(http, workflow_id, {"input_mode": "single"})
    assert refused.status_code == 400
    # When the corrected request is sent with the same key
    fixed = start(http, workflow_id, {"single_input": "now with input"})
    # Then it starts the run
    assert fixed.status_code == 201 and "idempotent-replayed" not in fixed.headers
    # And an overlong key is refused
    overlong = start(http, workflow_id, {"single_input": "x"}, key="k" * 256)
    assert overlong.status_code == 400 and overlong.json()["code"] == "invalid_idempotency_key"


def test_after_the_window_the_key_starts_a_new_run(local_stack: LocalStack, http: httpx.Client) -> None:
    # Given a start made with a key, whose record has passed its 24-hour expiry
    workflow_id = make_workflow(http)
    table = local_stack.resources["IdempotencyTable"]
    dynamodb = local_stack.client("dynamodb")
    earlier = {i["id"]["S"] for i in dynamodb.scan(TableName=table)["Items"]}  # other tests' keys
    first = start(http, workflow_id, {"single_input": "x"})
    (item,) = [  # the start's record (runs ending meanwhile add their webhook deliveries' records)
        i
        for i in dynamodb.scan(TableName=table)["Items"]
        if i["id"]["S"].startswith("relayflow.execute_workflow") and i["id"]["S"] not in earlier
    ]
    assert int(item["expiration"]["N"]) - time.time() > 23.9 * 3600
    dynamodb.update_item(
        TableName=table,
        Key={"id": item["id"]},
        UpdateExpression="SET expiration = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    # When the key is used again
    later = start(http, workflow_id, {"single_input": "x"})
    # Then a new execution starts
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]


def test_the_client_sends_the_key(local_stack: LocalStack, served: str, http: httpx.Client) -> None:
    # Given the Python client
    workflow_id = make_workflow(http)
    with Client(served, api_key=local_stack.api_key) as client:
        # When it starts the same run twice with idempotency_key, then changes the input
        first = client.execute_workflow(workflow_id, single_input="hi", idempotency_key="client-1")
        second = client.execute_workflow(workflow_id, single_input="hi", idempotency_key="client-1")
        with pytest.raises(ApiError) as reused:
            client.execute_workflow(workflow_id, single_input="ho", idempotency_key="client-1")
    # Then one execution, and a 409 with the code
    assert first.id == second.id
    assert reused.value.status == 409 and reused.value.code == "idempotency_key_reused"
