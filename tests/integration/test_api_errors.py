"""Bad input through API Gateway v2 events: a 4xx with a code and a readable sentence, nothing written."""

from __future__ import annotations

import base64
from typing import Any

from relayflow.local.stack import LocalStack


def _count_items(local_stack: LocalStack) -> int:
    ddb = local_stack.client("dynamodb")
    return int(ddb.scan(TableName=local_stack.resources["RelayflowTable"], Select="COUNT")["Count"])


def _assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body["message"], str) and len(body["message"]) > 10
    if code:
        assert body["code"] == code, body


def _workflow_with_node(api) -> tuple[str, str, str]:
    _, model = api("POST", "/models", {"name": "up", "provider": "builtin", "config": {"model": "uppercase"}})
    _, workflow = api("POST", "/workflows", {"name": "w"})
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {})
    status, _node = api("POST", f"/versions/{version['id']}/nodes", {"name": "n", "entity_id": model["id"]})
    assert status == 201
    return workflow["id"], version["id"], model["id"]


def test_unknown_ids_answer_404_with_a_code(api):
    for method, path in [
        ("GET", "/workflows/nope"),
        ("GET", "/workflows/nope/versions"),
        ("GET", "/models/nope"),
        ("POST", "/versions/nope/nodes"),
        ("GET", "/workflows/nope/executions/nope"),
        ("POST", "/workflows/nope/executions/nope/cancel"),
        ("GET", "/workflows/nope/executions/nope/input"),
    ]:
        body = {"name": "x", "entity_id": "m"} if path.endswith("/nodes") else None
        status, answer = api(method, path, body) if body else api(method, path)
        _assert_error(status, answer, 404)
        assert "does not exist" in answer["message"] or "no route" in answer["message"], answer


def test_invalid_bodies_answer_400_and_write_nothing(api, local_stack: LocalStack):
    workflow_id, version_id, model_id = _workflow_with_node(api)
    before = _count_items(local_stack)
    cases = [
        ("POST", "/workflows", {"name": ""}),
        ("POST", "/workflows", {"name": "x", "colour": "red"}),
        ("POST", "/models", {"name": "m", "provider": "builtin", "config": {"model": "no_such_model"}}),
        ("POST", "/models", {"name": "m", "provider": "carrier-pigeon"}),
        (
            "POST",
            f"/versions/{version_id}/nodes",
            {"name": "n2", "entity_id": model_id, "config": {"on_failure": "explode"}},
        ),
        (
            "POST",
            f"/versions/{version_id}/nodes",
            {"name": "n3", "entity_id": model_id, "config": {"input_template": "{{#open}}"}},
        ),
        (
            "POST",
            f"/versions/{version_id}/nodes",
            {"name": "n4", "entity_id": model_id, "config": {"timeout": -5}},
        ),
        ("PATCH", f"/workflows/{workflow_id}/versions/{version_id}", {"config": {"max_retries": 99}}),
        ("POST", f"/workflows/{workflow_id}/executions", {"input_mode": "single"}),
        (
            "POST",
            f"/workflows/{workflow_id}/executions",
            {
                "input_mode": "single",
                "single_input": "a",
                "file": {"filename": "f", "content_base64": "aGk="},
            },
        ),
        (
            "POST",
            f"/workflows/{workflow_id}/executions",
            {"input_mode": "single", "single_input": "a", "timeout": 0},
        ),
        (
            "POST",
            f"/workflows/{workflow_id}/executions",
            {"input_mode": "single", "file": {"filename": "f", "content_base64": "%%%"}},
        ),
    ]
    for method, path, body in cases:
        status, answer = api(method, path, body)
        _assert_error(status, answer, 400)
    # Then nothing was written by any of them
    assert _count_items(local_stack) == before
    sfn = local_stack.client("stepfunctions")
    assert all(
        sfn.list_executions(stateMachineArn=arn)["executions"] == []
        for arn in local_stack.state_machines.values()
    )


def test_a_body_that_is_not_json_is_a_400(api):
    status, answer = api("POST", "/workflows", body="{not json", headers={"content-type": "application/json"})
    _assert_error(status, answer, 400)


def test_a_node_on_an_unknown_model_is_409_and_not_written(api, local_stack: LocalStack):
    # A body's reference that names nothing conflicts with what exists (404: the path's resource)
    _workflow_id, version_id, _ = _workflow_with_node(api)
    before = _count_items(local_stack)
    status, answer = api("POST", f"/versions/{version_id}/nodes", {"name": "x", "entity_id": "missing"})
    _assert_error(status, answer, 409, "model_not_found")
    assert answer["details"] == {"field": "entity_id"}
    assert _count_items(local_stack) == before


def test_a_file_input_round_trips_byte_for_byte(api):
    workflow_id, _, _ = _workflow_with_node(api)
    data = bytes(range(256)) * 40  # every byte value, not valid UTF-8
    file = {
        "filename": "blob.bin",
        "content_type": "application/octet-stream",
        "content_base64": base64.b64encode(data).decode(),
    }
    status, execution = api(
        "POST", f"/workflows/{workflow_id}/executions", {"input_mode": "single", "file": file}
    )
    assert status == 201
    status, downloaded = api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}/input")
    assert status == 200
    assert downloaded == data


def test_a_long_text_input_is_kept_whole(api):
    # Given a text input far larger than a DynamoDB item may be
    workflow_id, _, _ = _workflow_with_node(api)
    text = "word " * 180_000  # 900 KB
    status, execution = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": text})
    assert status == 201, execution
    # Then the execution returns it whole
    status, stored = api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}")
    assert status == 200 and stored["single_input"] == text
