"""Hostile input to every operation (issue 24, "Done when"), beside the schemathesis run: hypothesis
sends lone surrogates, deep nesting, huge and non-finite numbers, CR/LF, control characters and odd
content types, in bodies (one field of an otherwise valid body, an extra key, or the whole body),
query and header parameters and path segments, through the local HTTP front end. Every answer is below 500,
and nothing is half-written: a refused start spends no execution number, and at the end every
object of a run or of a dataset version belongs to one that exists, and each workflow's execution
numbers are exactly 1..its count; every input file left downloads with a clean Content-Disposition.

Bounded: one stack and server for the module, a fixed number of examples, derandomized; DELETE
operations get ids that name nothing (a real delete would leave legitimate gaps in the numbers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.items import execution_item

from relayflow.local.server import start_server
from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters.table.keys import tenant_pk
from relayflow_runtime.errors import NotFound
from relayflow_runtime.handlers.api import openapi_document
from relayflow_runtime.services import deps

pytestmark = pytest.mark.timeout(600)
EXAMPLES = 300
TENANT = "default"


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is (numbers Python cannot make, nesting json.dumps would refuse)."""

    text: str


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate goes as its \ud800 escape


HOSTILE_STRINGS = [
    "\ud800",
    "half a pair: \udbff",
    "\udc00 first",
    "a\r\nX-Injected: yes",
    "\r\n\r\n",
    "\x00\x01\x1f\x7f",
    "é日本\u2028\u2029",
    "{{input}}\ud800",
    "lang == '\ud800'",
]
HOSTILE_RAW = [
    Raw("1" * 5000),
    Raw("-" + "9" * 200),
    Raw("1e999"),
    Raw("-1e400"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("[" * 1000 + "]" * 1000),
    Raw('{"a": ' * 150 + "1" + "}" * 150),
    Raw("1" * 40),
    Raw("1e308"),
]
HOSTILE = st.sampled_from([*HOSTILE_STRINGS, *HOSTILE_RAW])
WHOLE_BODIES = st.sampled_from(
    [
        b"[" * 100_000,
        b"{" * 5000,
        b'{"name": ' + b"1" * 5000 + b"}",
        b'{"name": "\\ud800"}',
        b"\xff\xfe not utf-8",
        b"not json",
        b"",
        b"null",
        b'"\\udfff"',
    ]
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "multipart/form-data; boundary=x",
        "multipart/form-data",
        "application/jsonfoo",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/json-patch+json",
    ]
)
HOSTILE_HEADERS = [
    b"\xff\xfe",
    "é".encode("latin-1"),
    "日本".encode(),
    b"x" * 5000,
    b"x y",
    b"a\tb",
    b"{{input}}",
]
HOSTILE_SEGMENTS = ["\ud800", "a\r\nb", "\x00", "é", "1" * 300, "..", "%", "-1"]


@dataclass
class Target:
    http: httpx.Client
    stack: LocalStack
    ids: dict[str, str]
    operations: list[tuple[str, str, dict[str, Any]]]


def _ok(answer: httpx.Response, status: int = 201) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with LocalStack() as stack:
        server, thread = start_server(stack)
        base_url = f"http://127.0.0.1:{server.server_port}"
        try:
            with httpx.Client(
                base_url=base_url, headers={"x-api-key": stack.api_key or ""}, timeout=30
            ) as http:
                yield Target(http, stack, _resources(http), _operations())
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _resources(http: httpx.Client) -> dict[str, str]:
    echo = {"name": "e", "provider": "builtin", "config": {"model": "echo"}}
    model = _ok(http.post("/models", json=echo))
    workflow = _ok(http.post("/workflows", json={"name": "w"}))
    version = _ok(http.post(f"/workflows/{workflow['id']}/versions", json={}))
    nodes = f"/versions/{version['id']}/nodes"
    first = _ok(http.post(nodes, json={"name": "a", "entity_id": model["id"]}))
    second = _ok(http.post(nodes, json={"name": "b", "entity_id": model["id"]}))
    edge = _ok(
        http.post(
            f"/versions/{version['id']}/edges",
            json={"begin_node_id": first["id"], "end_node_id": second["id"]},
        )
    )
    dataset = _ok(http.post("/datasets", json={"name": "d"}))
    ready = _ok(http.post(f"/datasets/{dataset['id']}/versions", json={}))
    items = [{"id": f"i{n}", "text": f"item {n}"} for n in range(3)]
    _ok(http.post(f"/datasets/{dataset['id']}/versions/{ready['id']}/items", json={"items": items}), 200)
    empty = _ok(http.post(f"/datasets/{dataset['id']}/versions", json={}))
    upload = _ok(
        http.post(f"/datasets/{dataset['id']}/versions/{empty['id']}/uploads", json={"filename": "a.jsonl"})
    )
    batch = {"dataset_id": dataset["id"], "dataset_version_id": ready["id"]}
    executions = f"/workflows/{workflow['id']}/executions"
    run = _ok(http.post(executions, json={"input_mode": "batch", "batch_config": batch}))
    for _ in range(400):
        if _ok(http.get(f"{executions}/{run['id']}"), 200)["status"] not in ("pending", "running"):
            break
        time.sleep(0.05)
    spare = _ok(http.post("/api-keys", json={"name": "spare"}))
    return {
        "model_id": model["id"],
        "workflow_id": workflow["id"],
        "version_id": version["id"],
        "node_id": first["id"],
        "second_node_id": second["id"],
        "edge_id": edge["id"],
        "dataset_id": dataset["id"],
        "dataset_version_id": ready["id"],
        "upload_version_id": empty["id"],
        "upload_id": upload["id"],
        "execution_id": run["id"],
        "key_id": spare["id"],
        "asset": "app.js",
        "item_id": "i1",
        "part": "1",
    }


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = openapi_document()
    return [
        (method.upper(), path, operation)
        for path, operations in sorted(document["paths"].items())
        for method, operation in sorted(operations.items())
    ]


def _base_body(operation_id: str, ids: dict[str, str]) -> dict[str, Any]:
    """A body each operation accepts (or refuses for the state of things, 409), to make hostile."""
    batch = {"dataset_id": ids["dataset_id"], "dataset_version_id": ids["dataset_version_id"]}
    bodies: dict[str, dict[str, Any]] = {
        "createWorkflow": {"name": "w", "description": "d"},
        "updateWorkflow": {"name": "w", "description": "d"},
        "createWorkflowVersion": {"config": {"max_retries": 1}},
        "updateWorkflowVersion": {"config": {"max_retries": 1}},
        "createWorkflowNode": {
            "name": "n",
            "entity_id": ids["model_id"],
            "config": {"input_template": "{{input}}"},
        },
        "updateWorkflowNode": {"config": {"input_template": "{{input}}"}},
        "createWorkflowEdge": {"begin_node_id": ids["node_id"], "end_node_id": ids["second_node_id"]},
        "executeWorkflow": {"input_mode": "single", "single_input": "x"},
        "retryFailedItems": {"parallelism": 1},
        "createDatasetVersion": {},
        "addDatasetItems": {"items": [{"id": "x", "text": "t"}]},
        "startDatasetUpload": {"filename": "a.jsonl"},
        "putDatasetUploadPart": {"content_base64": "e30K"},
        "commitDatasetUpload": {},
        "createModel": {"name": "m", "provider": "builtin", "config": {"model": "echo", "message": "m"}},
        "createApiKey": {"name": "k", "scopes": ["read"]},
        "createDataset": {"name": "d"},
    }
    body = bodies.get(operation_id, {})
    if operation_id == "executeWorkflow":
        body = {
            "0": body,
            "1": {"file": {"filename": "a.txt", "content_base64": "aGk=", "content_type": "text/plain"}},
            "2": {"input_mode": "batch", "batch_config": {**batch, "filter_query": "text"}},
        }
    return json.loads(json.dumps(body))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths of a body's values (containers included), to replace one."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _leaves(child, (*path, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _real_id(ids: dict[str, str], path: str, name: str) -> str:
    if path.startswith("/datasets/") and name == "version_id":
        return ids["upload_version_id"] if "/uploads" in path else ids["dataset_version_id"]
    return ids.get(name, "nothing")


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def requests(draw: st.DrawFn, target: Target) -> tuple[str, str, dict[str, Any], bytes, str]:
    method, path, operation = draw(st.sampled_from(target.operations))
    ids = target.ids
    names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
    values = {name: ("0" * 36 if method == "DELETE" else _real_id(ids, path, name)) for name in names}
    if names and draw(st.booleans()):
        values[draw(st.sampled_from(names))] = draw(st.sampled_from(HOSTILE_SEGMENTS))
    url = path
    for name, value in values.items():
        url = url.replace("{" + name + "}", _segment(value))
    query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
    if query and draw(st.booleans()):
        hostile = draw(st.sampled_from([*HOSTILE_STRINGS, "1" * 5000, "-1", "1e999", "NaN"]))
        url += f"?{draw(st.sampled_from(query))}={_segment(hostile)}"
    headers: dict[str, Any] = {}
    header_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
    if header_names and draw(st.booleans()):
        headers[draw(st.sampled_from(header_names))] = draw(st.sampled_from(HOSTILE_HEADERS))
    body = b""
    if "requestBody" in operation:
        headers["content-type"] = draw(CONTENT_TYPES)
        base = _base_body(operation["operationId"], ids)
        if operation["operationId"] == "executeWorkflow":
            base = base[draw(st.sampled_from(["0", "1", "2"]))]
        how = draw(st.sampled_from(["field", "field", "field", "key", "whole"]))
        if how == "whole":
            body = draw(WHOLE_BODIES)
        else:
            hostile = draw(HOSTILE)
            leaves = _leaves(base)
            if how == "field" and leaves:
                mutated = _replace(base, draw(st.sampled_from(leaves)), hostile)
            else:
                mutated = {**base, draw(st.sampled_from(["\ud800", "a\r\nb", "extra"])): hostile}
            body = to_json(mutated).encode()
    return method, url, headers, body, operation["operationId"]


def _execution_count(stack: LocalStack, workflow_id: str) -> int:
    item = stack.client("dynamodb").get_item(
        TableName=stack.environment["RELAYFLOW_TABLE"],
        Key={"pk": {"S": tenant_pk(TENANT, "WF", workflow_id)}, "sk": {"S": "WF"}},
    )["Item"]
    return int(item.get("execution_count", {"N": "0"})["N"])


STARTS = {"executeWorkflow", "rerunWorkflowExecution", "retryFailedItems"}


@given(data=st.data())
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_hostile_input_to_every_operation_answers_below_500_and_spends_nothing(
    data: st.DataObject, target: Target
) -> None:
    # Given a request to any operation with one hostile part (a body field, a key, the whole body,
    # a query parameter, a header parameter, a path segment, its content type)
    method, url, headers, body, operation_id = data.draw(requests(target))
    workflow_id = target.ids["workflow_id"]
    before = _execution_count(target.stack, workflow_id)
    # When it is sent through the HTTP front end
    answer = target.http.request(method, url, content=body, headers=headers)
    # Then it is answered, below 500, with a code when refused
    assert answer.status_code < 500, (method, url, body[:200], answer.text)
    if answer.status_code >= 400 and answer.headers.get("content-type", "").startswith("application/json"):
        assert answer.json().get("code") or answer.status_code in (401, 403), answer.text
    # And a refused start spent no execution number
    if answer.status_code >= 400 and operation_id in STARTS:
        assert _execution_count(target.stack, workflow_id) == before, (url, body[:200], answer.text)


def test_after_the_hostile_requests_nothing_is_half_written(target: Target) -> None:
    # (runs after the property test: the module's stack holds what it left)
    stack, http = target.stack, target.http
    workflow_id = target.ids["workflow_id"]
    executions: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params = {"limit": 200, **({"next_token": token} if token else {})}
        page = _ok(http.get(f"/workflows/{workflow_id}/executions", params=params), 200)
        executions += page["items"]
        token = page["next_token"]
        if not token:
            break
    # Every execution number was given to a run that exists: 1..count, no gap
    count = _execution_count(stack, workflow_id)
    assert sorted(e["number"] for e in executions) == list(range(1, count + 1))
    # Every object of a run or a dataset version belongs to one that exists
    s3 = stack.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.environment["RELAYFLOW_BUCKET"])
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    store = deps.stores()
    for key in keys:
        parts = key.split("/")
        if parts[0] == "executions":
            try:
                execution_item(parts[1], parts[2])
            except NotFound:
                pytest.fail(f"orphan object {key}: no execution {parts[2]}")
        elif parts[0] == "t" and parts[2] == "datasets" and len(parts) > 5 and parts[4] == "versions":
            try:
                store.datasets.get_dataset_version(parts[1], parts[3], parts[5])
            except NotFound:
                pytest.fail(f"orphan object {key}: no dataset version {parts[5]}")


def test_every_input_file_left_by_the_hostile_requests_downloads_with_a_clean_header(target: Target) -> None:
    # Given the runs the hostile requests started with a file input (CR/LF, control characters
    # and characters outside Latin-1 in their names), and one started here with all of them
    http = target.http
    workflow = _ok(http.post("/workflows", json={"name": "downloads"}))
    version = _ok(http.post(f"/workflows/{workflow['id']}/versions", json={}))
    node = {"name": "a", "entity_id": target.ids["model_id"]}
    _ok(http.post(f"/versions/{version['id']}/nodes", json=node))
    name = "a\r\nX-Injected: yes\x00\x7f é日本\u2028.txt"
    body = {"file": {"filename": name, "content_base64": "aGk=", "content_type": "text/plain"}}
    _ok(http.post(f"/workflows/{workflow['id']}/executions", json=body))
    with_files = [
        (workflow_id, run["id"])
        for workflow_id in (target.ids["workflow_id"], workflow["id"])
        for run in _ok(http.get(f"/workflows/{workflow_id}/executions", params={"limit": 200}), 200)["items"]
        if run.get("input_file")
    ]
    assert with_files
    for workflow_id, execution_id in with_files:
        # When its input is downloaded through the HTTP front end
        answer = http.get(f"/workflows/{workflow_id}/executions/{execution_id}/input")
        # Then the answer comes whole, its Content-Disposition printable ASCII, no header injected
        assert answer.status_code == 200, answer.text
        disposition = answer.headers["content-disposition"]
        assert disposition.startswith("attachment; filename=")
        assert all(" " <= char <= "~" for char in disposition), disposition
        assert "x-injected" not in answer.headers
