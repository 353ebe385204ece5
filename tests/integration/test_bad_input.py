"""Bad input through the API (issue 24): a 4xx with a code, never a 5xx, nothing half-written; scopes
checked before bodies; downloads whose headers no file name can break; and the local HTTP front end
answering whatever framing it is sent. One stack for the module."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from relayflow.local import server as local_server
from relayflow.local.server import build_http_event, parse_http_response, start_server
from relayflow.local.stack import LocalStack


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        yield local


def _call(
    stack: LocalStack,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: str | bytes | None = None,
    key: str | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    headers = {"x-api-key": key or stack.api_key or "", "content-type": content_type}
    if raw is None and body is not None:
        raw = json.dumps(body)
    event = build_http_event(method, path, headers=headers, body=raw)
    response = parse_http_response(stack.handle_api_request(event))
    return response.status, json.loads(response.body) if response.body else None


def _ok(answer: tuple[int, Any], status: int = 201) -> Any:
    assert answer[0] == status, answer
    return answer[1]


def _wait(stack: LocalStack, workflow_id: str, execution_id: str) -> dict[str, Any]:
    for _ in range(400):
        execution = _ok(_call(stack, "GET", f"/workflows/{workflow_id}/executions/{execution_id}"), 200)
        if execution["status"] in ("completed", "failed", "cancelled"):
            return execution
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not end")


@pytest.fixture(scope="module")
def ids(stack: LocalStack) -> dict[str, str]:
    echo = _ok(
        _call(stack, "POST", "/models", {"name": "e", "provider": "builtin", "config": {"model": "echo"}})
    )
    workflow = _ok(_call(stack, "POST", "/workflows", {"name": "w"}))
    version = _ok(_call(stack, "POST", f"/workflows/{workflow['id']}/versions", {}))
    node = _ok(
        _call(stack, "POST", f"/versions/{version['id']}/nodes", {"name": "a", "entity_id": echo["id"]})
    )
    dataset = _ok(_call(stack, "POST", "/datasets", {"name": "d"}))
    dataset_version = _ok(_call(stack, "POST", f"/datasets/{dataset['id']}/versions", {}))
    items = f"/datasets/{dataset['id']}/versions/{dataset_version['id']}/items"
    _ok(_call(stack, "POST", items, {"items": [{"id": "1", "text": "a"}]}), 200)
    return {
        "model": echo["id"],
        "workflow": workflow["id"],
        "version": version["id"],
        "node": node["id"],
        "dataset": dataset["id"],
        "dataset_version": dataset_version["id"],
    }


def _objects(stack: LocalStack) -> list[str]:
    s3 = stack.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.environment["RELAYFLOW_BUCKET"])
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _next_number(stack: LocalStack, workflow_id: str) -> int:
    """Starts a run (and waits for its end): its number, the one after the last one given."""
    execution = _ok(_call(stack, "POST", f"/workflows/{workflow_id}/executions", {"single_input": "n"}))
    _wait(stack, workflow_id, execution["id"])
    return int(execution["number"])


# ---- #2: 500s on bad input --------------------------------------------------------------------------
def test_a_lone_surrogate_is_400_naming_the_field_and_nothing_is_written(
    stack: LocalStack, ids: dict[str, str]
) -> None:
    # Given a lone surrogate (valid JSON, not text) in each field that used to answer 500
    executions = f"/workflows/{ids['workflow']}/executions"
    nodes = f"/versions/{ids['version']}/nodes"
    batch = {"dataset_id": ids["dataset"], "dataset_version_id": ids["dataset_version"]}
    cases = [
        ("POST", executions, '{"single_input": "half \\ud800"}', "single_input"),
        (
            "POST",
            nodes,
            json.dumps({"name": "s", "entity_id": ids["model"]})[:-1]
            + ', "config": {"input_template": "\\ud800"}}',
            "config.input_template",
        ),
        (
            "PATCH",
            f"{nodes}/{ids['node']}",
            '{"config": {"input_template": "{{input}}\\udfff"}}',
            "config.input_template",
        ),
        (
            "POST",
            "/models",
            '{"name": "m", "provider": "builtin", "config": {"model": "fail", "message": "\\ud800"}}',
            "config.message",
        ),
        (
            "POST",
            executions,
            json.dumps({"input_mode": "batch", "batch_config": batch})[:-2]
            + ', "filter_query": "a == \'\\ud800\'"}}',
            "batch_config.filter_query",
        ),
    ]
    first = _next_number(stack, ids["workflow"])
    objects = _objects(stack)
    for method, path, raw, field in cases:
        # When it is sent
        status, answer = _call(stack, method, path, raw=raw)
        # Then it is a 400 naming the field
        assert status == 400, (path, answer)
        assert answer["code"] == "invalid_text", answer
        assert answer["details"] == {"field": field}, answer
        assert field in answer["message"]
    # And nothing was written: no object, no execution number spent
    assert _objects(stack) == objects
    assert _next_number(stack, ids["workflow"]) == first + 1


def test_deep_nesting_and_huge_numbers_are_400_invalid_json_on_any_route(
    stack: LocalStack, ids: dict[str, str]
) -> None:
    # Given bodies nested 1,000 levels, an integer of 5,000 digits, a float beyond a double's range
    bodies = [
        '{"name": ' + "[" * 1000 + "]" * 1000 + "}",
        '{"name": "x", "description": ' + "1" * 5000 + "}",
        '{"timeout": 1e999}',
    ]
    routes = [
        ("POST", "/workflows"),
        ("PATCH", f"/workflows/{ids['workflow']}"),
        ("POST", f"/workflows/{ids['workflow']}/executions"),
        ("POST", f"/versions/{ids['version']}/nodes"),
        ("POST", "/models"),
        ("POST", "/api-keys"),
    ]
    for method, path in routes:
        for raw in bodies:
            # When each is sent
            status, answer = _call(stack, method, path, raw=raw)
            # Then it is a 400 invalid_json whose message names the limit
            assert status == 400, (method, path, raw[:30], answer)
            assert answer["code"] == "invalid_json", answer
            assert (
                "json_depth" in answer["message"]
                or "json_number" in answer["message"]
                or "float" in answer["message"]
            )


def test_a_content_type_with_crlf_is_400_and_leaves_no_object_and_no_spent_number(
    stack: LocalStack, ids: dict[str, str]
) -> None:
    # Given a file input whose content type holds CR/LF (it used to fail after plan.json was written)
    first = _next_number(stack, ids["workflow"])
    objects = _objects(stack)
    body = {"file": {"filename": "a.txt", "content_base64": "aGk=", "content_type": "text/plain\r\nX-A: b"}}
    # When a run is started with it
    status, answer = _call(stack, "POST", f"/workflows/{ids['workflow']}/executions", body)
    # Then it is refused, naming the field, before anything is written
    assert status == 400, answer
    assert answer["details"][0]["field"] == "file.content_type"
    assert _objects(stack) == objects
    assert _next_number(stack, ids["workflow"]) == first + 1


def test_listed_items_nested_too_deep_are_refused_at_ingest_by_their_index(
    stack: LocalStack, ids: dict[str, str]
) -> None:
    # Given a list whose second item nests 70 levels (more than an item may; the body itself is fine)
    version = _ok(_call(stack, "POST", f"/datasets/{ids['dataset']}/versions", {}))
    path = f"/datasets/{ids['dataset']}/versions/{version['id']}/items"
    deep: Any = "x"
    for _ in range(69):
        deep = [deep]
    # When it is sent
    status, answer = _call(stack, "POST", path, {"items": [{"t": "ok"}, {"t": deep}]})
    # Then the list is refused whole, naming the item, and the version holds nothing
    assert status == 400, answer
    assert answer["code"] == "malformed_file"
    assert answer["message"].startswith("items[1]: the item nests 70 levels deep")
    assert _ok(_call(stack, "GET", path), 200)["items"] == []


# ---- #3: Content-Disposition ------------------------------------------------------------------------
@pytest.mark.parametrize("filename", ["a\r\nX-Injected: yes\r\n.txt", "résumé 日本.txt"])
def test_a_file_name_cannot_split_or_break_the_download_answer(
    stack: LocalStack, ids: dict[str, str], filename: str
) -> None:
    # Given a run whose input file name holds CR/LF, or characters outside Latin-1
    body = {"file": {"filename": filename, "content_base64": "aGk=", "content_type": "text/plain"}}
    execution = _ok(_call(stack, "POST", f"/workflows/{ids['workflow']}/executions", body))
    server, thread = start_server(stack)
    try:
        # When its input is downloaded over HTTP
        url = f"http://127.0.0.1:{server.server_port}/workflows/{ids['workflow']}/executions/{execution['id']}/input"
        answer = httpx.get(url, headers={"x-api-key": stack.api_key or ""}, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    # Then the answer comes whole, with no header of the name's making, and the name in RFC 6266 form
    assert answer.status_code == 200 and answer.content == b"hi"
    assert "x-injected" not in answer.headers
    disposition = answer.headers["content-disposition"]
    if "é" in filename:
        assert (
            disposition == 'attachment; filename="r_sum_ __.txt"; '
            "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.txt"
        )
    else:
        assert disposition == 'attachment; filename="aX-Injected: yes.txt"'


# ---- #8: the smaller ones ---------------------------------------------------------------------------
def test_a_key_without_the_scope_gets_403_before_its_body_is_read(
    stack: LocalStack, ids: dict[str, str]
) -> None:
    # Given a read-only key
    key = _ok(_call(stack, "POST", "/api-keys", {"name": "reader", "scopes": ["read"]}))["key"]
    stack.flush_authorizer_cache()
    # When it sends invalid bodies (and a body that is not JSON) to write and execute routes
    for method, path, raw in [
        ("POST", "/workflows", '{"colour": 1}'),
        ("POST", "/workflows", "not json"),
        ("POST", "/workflows", "[" * 1000),
        ("PATCH", f"/workflows/{ids['workflow']}", '{"name": ""}'),
        ("POST", f"/workflows/{ids['workflow']}/executions", '{"input_mode": "sideways"}'),
    ]:
        status, answer = _call(stack, method, path, raw=raw, key=key)
        # Then the answer is about the key's scope, not the body
        assert status == 403, (path, answer)
        assert answer["code"] == "insufficient_scope"


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=x",
        "multipart/form-data",
        "application/jsonfoo",
        "text/plain",
        "application/json-patch",
    ],
)
def test_a_body_of_another_media_type_is_415(stack: LocalStack, content_type: str) -> None:
    for raw in ('{"name": "x"}', ""):  # an empty multipart body without a boundary used to be a 500
        status, answer = _call(stack, "POST", "/workflows", raw=raw, content_type=content_type)
        assert status == 415, answer
        assert answer["code"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_with_parameters_or_another_case_is_json(stack: LocalStack, content_type: str) -> None:
    status, answer = _call(stack, "POST", "/workflows", raw='{"name": "x"}', content_type=content_type)
    assert status == 201, answer


def test_a_write_key_cannot_revoke_a_key_with_more_scopes(stack: LocalStack) -> None:
    # Given a write-only key, a key that can also execute, and another write-only key
    writer = _ok(_call(stack, "POST", "/api-keys", {"name": "writer", "scopes": ["write"]}))
    runner = _ok(_call(stack, "POST", "/api-keys", {"name": "runner", "scopes": ["execute", "read"]}))
    peer = _ok(_call(stack, "POST", "/api-keys", {"name": "peer", "scopes": ["write"]}))
    stack.flush_authorizer_cache()
    # When the write key revokes the other two
    refused = _call(stack, "POST", f"/api-keys/{runner['id']}/revoke", {}, key=writer["key"])
    revoked = _call(stack, "POST", f"/api-keys/{peer['id']}/revoke", {}, key=writer["key"])
    # Then only the one within its scopes is revoked
    assert refused[0] == 403 and refused[1]["code"] == "scope_not_held", refused
    assert _ok(_call(stack, "GET", f"/api-keys/{runner['id']}"), 200)["revoked_at"] is None
    assert _ok(revoked, 200)["revoked_at"] is not None


@pytest.mark.parametrize(
    "config",
    [
        {"model": "sleep", "seconds": 1e308},
        {"model": "flaky", "failures": 10**50},
        {"model": "summarize", "sentences": 10**40},
        {"model": "echo", "price": {"input_per_1k": 1e300}},
        {"model": "echo", "rate_limit": {"tokens_per_minute": 10**39}},
    ],
)
def test_builtin_configs_that_could_not_run_are_refused(stack: LocalStack, config: dict[str, Any]) -> None:
    status, answer = _call(stack, "POST", "/models", {"name": "m", "provider": "builtin", "config": config})
    assert status == 400, answer
    assert answer["code"] == "invalid_model_config"


def test_retry_failed_twice_in_a_row_starts_one_retry(stack: LocalStack, ids: dict[str, str]) -> None:
    # Given a batch run whose item failed, and a version that sleeps (its retry stays running a while)
    failing = _ok(
        _call(stack, "POST", "/models", {"name": "f", "provider": "builtin", "config": {"model": "fail"}})
    )
    sleepy = _ok(
        _call(
            stack,
            "POST",
            "/models",
            {"name": "s", "provider": "builtin", "config": {"model": "sleep", "seconds": 3}},
        )
    )
    workflow = _ok(_call(stack, "POST", "/workflows", {"name": "retry"}))
    executions = f"/workflows/{workflow['id']}/executions"
    versions = []
    for model in (failing, sleepy):
        version = _ok(_call(stack, "POST", f"/workflows/{workflow['id']}/versions", {}))
        _ok(_call(stack, "POST", f"/versions/{version['id']}/nodes", {"name": "n", "entity_id": model["id"]}))
        versions.append(version["id"])
    batch = {"dataset_id": ids["dataset"], "dataset_version_id": ids["dataset_version"]}
    run = _ok(
        _call(
            stack,
            "POST",
            executions,
            {"input_mode": "batch", "version_id": versions[0], "batch_config": batch},
        )
    )
    assert _wait(stack, workflow["id"], run["id"])["progress"]["failed_items"] == 1
    retry = f"{executions}/{run['id']}/retry-failed"
    # When its failed items are retried twice in a row
    first = _ok(_call(stack, "POST", retry, {"version_id": versions[1]}))
    second = _call(stack, "POST", retry, {"version_id": versions[1]})
    # Then the second names the retry already under way, and starts nothing
    assert second[0] == 409, second
    assert second[1]["code"] == "retry_in_progress"
    assert second[1]["details"]["execution_id"] == first["id"]
    listed = _ok(_call(stack, "GET", executions), 200)["items"]
    assert len(listed) == 2
    # And once that retry has ended, the items can be retried again
    _wait(stack, workflow["id"], first["id"])


# ---- #8: the local HTTP front end -------------------------------------------------------------------
def _raw_exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received:
                head, _, rest = received.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                if len(rest) >= length:
                    break
        return received


@pytest.fixture
def front_end(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(local_server, "SOCKET_TIMEOUT_SECONDS", 1)
    server, thread = start_server(stack)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    "request_bytes",
    [
        # a chunk size of -1 (read to the end of the stream, past the body limit)
        b"POST /workflows HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n" + b"a" * 1000,
        # a Content-Length that is not a number
        b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        # a chunked body that stops coming (the connection stays open, silent)
        b'POST /workflows HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n',
        # a body shorter than its Content-Length (the connection stays open, silent)
        b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
    ],
)
def test_the_front_end_answers_400_to_framing_it_cannot_read(front_end: int, request_bytes: bytes) -> None:
    started = time.monotonic()
    answer = _raw_exchange(front_end, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert time.monotonic() - started < 8
