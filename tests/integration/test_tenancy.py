"""Tenant A can neither see nor touch anything of tenant B, through any route of the API.

The walk enumerates the resolver's routes, so a route added later is walked too: it fails here until
the test knows a tenant-B id for each of its path parameters and, if it takes a body, a valid body.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from relayflow.local.server import build_http_event, parse_http_response
from relayflow.local.stack import LocalStack
from relayflow_runtime.handlers.api import app, openapi_document
from relayflow_runtime.handlers.context import required_scope
from relayflow_runtime.services import apikeys

TENANT_B = "tenant-b"
FILE_BYTES = b"tenant B's private file\n"

# A valid body for every route that takes one, given the ids of the world (A's own where a body
# refers to another resource, so that only the path decides the answer).
BODIES: dict[tuple[str, str], Callable[[dict[str, str]], Any]] = {
    ("POST", "/workflows"): lambda ids: {"name": "a-workflow"},
    ("PATCH", "/workflows/<workflow_id>"): lambda ids: {"name": "renamed by A"},
    ("POST", "/workflows/<workflow_id>/versions"): lambda ids: {"name": "v-by-a"},
    ("PATCH", "/workflows/<workflow_id>/versions/<version_id>"): lambda ids: {"name": "renamed by A"},
    ("POST", "/versions/<version_id>/nodes"): lambda ids: {"name": "by-a", "entity_id": ids["a_model_id"]},
    ("PATCH", "/versions/<version_id>/nodes/<node_id>"): lambda ids: {"name": "renamed by A"},
    ("POST", "/versions/<version_id>/edges"): lambda ids: {
        "begin_node_id": ids["node_id"],
        "end_node_id": ids["second_node_id"],
    },
    ("POST", "/models"): lambda ids: {"name": "m", "provider": "builtin", "config": {"model": "echo"}},
    ("POST", "/workflows/<workflow_id>/executions"): lambda ids: {"single_input": "run by A"},
    ("POST", "/workflows/<workflow_id>/estimate"): lambda ids: {
        "batch_config": {"dataset_id": ids["dataset_id"], "dataset_version_id": ids["dataset_version_id"]}
    },
    ("POST", "/api-keys"): lambda ids: {"name": "a-key", "scopes": ["read"]},
    ("POST", "/workflows/<workflow_id>/executions/<execution_id>/retry-failed"): lambda ids: {},
    ("POST", "/datasets"): lambda ids: {"name": "a-dataset"},
    ("POST", "/datasets/<dataset_id>/versions"): lambda ids: {"name": "v-by-a"},
    ("POST", "/datasets/<dataset_id>/versions/<version_id>/items"): lambda ids: {"items": [{"text": "a"}]},
    ("POST", "/datasets/<dataset_id>/versions/<version_id>/uploads"): lambda ids: {"filename": "a.jsonl"},
    ("PUT", "/datasets/<dataset_id>/versions/<version_id>/uploads/<upload_id>/parts/<part>"): lambda ids: {
        "content_base64": base64.b64encode(b'{"text": "a"}\n').decode()
    },
    ("POST", "/datasets/<dataset_id>/versions/<version_id>/uploads/<upload_id>/commit"): lambda ids: {},
}


def id_for(route: str, param: str, ids: dict[str, str]) -> str | None:
    """Tenant B's id for a path parameter of a route (a version under /datasets is a dataset's)."""
    if route.startswith("/datasets/") and param == "version_id":
        param = "dataset_version_id"
    if "/items/" in route and param == "execution_id":
        param = "batch_execution_id"  # an item of B's batch run
    return ids.get(param)


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def all_routes() -> list[tuple[str, str]]:
    routes = [(r.method, r.path) for r in app._static_routes + app._dynamic_routes]
    assert len(routes) > 20, "the resolver's route lists moved: update all_routes()"
    return sorted(set(routes))


def routes_with_body() -> set[tuple[str, str]]:
    with_body = set()
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation and operation["requestBody"].get("required"):
                with_body.add((method.upper(), path.replace("{", "<").replace("}", ">")))
    return with_body


def as_b(api: Any, key: str) -> Callable[..., tuple[int, Any]]:
    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if body is None:
            return api(method, path, headers={"x-api-key": key})  # type: ignore[no-any-return]
        return api(method, path, body, headers={"x-api-key": key})  # type: ignore[no-any-return]

    return call


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    """One stack for the module (the conftest `api` helper uses it): B's world is built once."""
    with LocalStack() as stack:
        yield stack


def module_api(stack: LocalStack) -> Callable[..., tuple[int, Any]]:
    """The conftest `api` helper, for module-scoped fixtures."""

    def call(method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None) -> Any:
        sent = {"x-api-key": stack.api_key or "", **(headers or {})}
        extra = {} if body is None else {"json_body": body}
        response = parse_http_response(
            stack.handle_api_request(build_http_event(method, path, headers=sent, **extra))
        )
        try:
            return response.status, response.json()
        except ValueError:
            return response.status, response.body.decode("utf-8", "replace")

    return call


@pytest.fixture(scope="module")
def world(local_stack: LocalStack) -> dict[str, Any]:
    """Tenant B's resources (every kind, a finished single and batch run) and A's own model."""
    api = module_api(local_stack)
    b_key = apikeys.create_key(TENANT_B, ["read", "write", "execute"], name="b").key
    b = as_b(api, b_key)
    _, model = b("POST", "/models", {"name": "echo", "provider": "builtin", "config": {"model": "echo"}})
    _, workflow = b("POST", "/workflows", {"name": "b-workflow"})
    b("POST", "/workflows", {"name": "b-second-workflow"})  # two, so a listing has a next page
    # No retries: a batch item's worst case (2 nodes x 300 s) fits one 15-minute invocation.
    _, version = b(
        "POST", f"/workflows/{workflow['id']}/versions", {"name": "v1", "config": {"max_retries": 0}}
    )
    _, node = b("POST", f"/versions/{version['id']}/nodes", {"name": "first", "entity_id": model["id"]})
    _, second = b(
        "POST",
        f"/versions/{version['id']}/nodes",
        {"name": "second", "entity_id": model["id"], "config": {"input_template": "{{nodes.first}}"}},
    )
    _, edge = b(
        "POST", f"/versions/{version['id']}/edges", {"begin_node_id": node["id"], "end_node_id": second["id"]}
    )
    file_body = {
        "file": {
            "filename": "private.txt",
            "content_type": "text/plain",
            "content_base64": base64.b64encode(FILE_BYTES).decode(),
        }
    }
    status, execution = b("POST", f"/workflows/{workflow['id']}/executions", file_body)
    assert status == 201, execution
    path = f"/workflows/{workflow['id']}/executions/{execution['id']}"
    assert wait_until(lambda: b("GET", path)[1]["status"] == "completed"), b("GET", path)
    _, dataset = b("POST", "/datasets", {"name": "b-dataset"})
    _, dataset_version = b("POST", f"/datasets/{dataset['id']}/versions", {"name": "items"})
    status, _ = b(
        "POST",
        f"/datasets/{dataset['id']}/versions/{dataset_version['id']}/items",
        {"items": [{"id": "b-item-1", "text": "b"}]},
    )
    assert status == 200
    _, empty_version = b("POST", f"/datasets/{dataset['id']}/versions", {"name": "upload"})
    status, upload = b(
        "POST", f"/datasets/{dataset['id']}/versions/{empty_version['id']}/uploads", {"filename": "b.jsonl"}
    )
    assert status == 201, upload
    batch = {
        "input_mode": "batch",
        "batch_config": {"dataset_id": dataset["id"], "dataset_version_id": dataset_version["id"]},
    }
    status, batch_run = b("POST", f"/workflows/{workflow['id']}/executions", batch)
    assert status == 201, batch_run
    path = f"/workflows/{workflow['id']}/executions/{batch_run['id']}"
    assert wait_until(lambda: b("GET", path)[1]["status"] == "completed"), b("GET", path)
    _, b_keys = b("GET", "/api-keys")
    _, a_model = api(
        "POST", "/models", {"name": "a-echo", "provider": "builtin", "config": {"model": "echo"}}
    )
    ids = {
        "workflow_id": workflow["id"],
        "version_id": version["id"],
        "node_id": node["id"],
        "second_node_id": second["id"],
        "edge_id": edge["id"],
        "model_id": model["id"],
        "execution_id": execution["id"],
        "key_id": b_keys["items"][0]["id"],
        "dataset_id": dataset["id"],
        "dataset_version_id": dataset_version["id"],
        "upload_id": upload["id"],
        "part": "1",
        "batch_execution_id": batch_run["id"],
        "item_id": "b-item-1",
        "a_model_id": a_model["id"],
    }
    return {"ids": ids, "b": b, "b_key": b_key}


def snapshot(b: Callable[..., tuple[int, Any]], ids: dict[str, str]) -> dict[str, Any]:
    """Everything B can read about its world (what A must not be able to change)."""
    workflow, version, execution = ids["workflow_id"], ids["version_id"], ids["execution_id"]
    reads = {
        "workflow": f"/workflows/{workflow}",
        "workflows": "/workflows",
        "versions": f"/workflows/{workflow}/versions",
        "version": f"/workflows/{workflow}/versions/{version}",
        "nodes": f"/versions/{version}/nodes",
        "edges": f"/versions/{version}/edges",
        "model": f"/models/{ids['model_id']}",
        "models": "/models",
        "executions": f"/workflows/{workflow}/executions",
        "execution": f"/workflows/{workflow}/executions/{execution}",
        "key": f"/api-keys/{ids['key_id']}",
        "dataset": f"/datasets/{ids['dataset_id']}",
        "datasets": "/datasets",
        "dataset_versions": f"/datasets/{ids['dataset_id']}/versions",
        "items": f"/datasets/{ids['dataset_id']}/versions/{ids['dataset_version_id']}/items",
        "batch": f"/workflows/{workflow}/executions/{ids['batch_execution_id']}",
        "batch_results": f"/workflows/{workflow}/executions/{ids['batch_execution_id']}/results",
        "batch_item": f"/workflows/{workflow}/executions/{ids['batch_execution_id']}/items/{ids['item_id']}",
    }
    answers = {name: b("GET", path) for name, path in reads.items()}
    for name, (status, body) in answers.items():
        assert status == 200, (name, body)
    return {name: body for name, (_, body) in answers.items()}


def test_tenant_a_gets_404_for_every_route_with_tenant_b_ids(api: Any, world: dict[str, Any]) -> None:
    # Given tenant B's world, and what B sees of it
    ids, b = world["ids"], world["b"]
    before = snapshot(b, ids)
    need_body = routes_with_body()
    missing_bodies = sorted(r for r in need_body if r not in BODIES)
    assert not missing_bodies, f"add a valid body to BODIES for {missing_bodies}"
    walked = []
    # When tenant A calls every route that takes an id, with B's ids
    for method, route in all_routes():
        if required_scope(method, route) is None:
            continue  # public: the dashboard's static files, health, the OpenAPI document
        params = [part[1:-1] for part in route.split("/") if part.startswith("<")]
        if not params:
            continue  # collections: see the listing test
        unknown = [p for p in params if id_for(route, p, ids) is None]
        assert not unknown, f"{method} {route}: give the world a tenant-B id for {unknown}"
        path = route
        for param in params:
            path = path.replace(f"<{param}>", quote(str(id_for(route, param, ids)), safe=""))
        if (method, route) in need_body:
            status, body = api(method, path, BODIES[(method, route)](ids))
        else:
            status, body = api(method, path)
        walked.append((method, route))
        # Then each answers 404, as if B's resource did not exist
        assert status == 404, f"{method} {path} as tenant A answered {status}: {body}"
        assert isinstance(body, dict)
        assert body["code"].endswith("not_found"), body
    assert len(walked) >= 25
    # And B's world is exactly as it was: nothing renamed, cancelled, re-run, deleted or revoked
    assert snapshot(b, ids) == before


def test_tenant_a_lists_none_of_tenant_b(api: Any, world: dict[str, Any]) -> None:
    # Given B's world
    b_ids = {v for k, v in world["ids"].items() if not k.startswith("a_") and k != "part"}
    # When A lists every collection
    for method, route in all_routes():
        if method != "GET" or "<" in route or required_scope(method, route) is None:
            continue
        status, body = api("GET", route)
        # Then A sees none of B's ids
        assert status == 200, (route, body)
        text = json.dumps(body)
        assert not [i for i in b_ids if i in text], f"GET {route} shows tenant B's ids"


def test_tenant_b_page_token_shows_tenant_a_nothing_of_b(api: Any, world: dict[str, Any]) -> None:
    # Given a next_token of B's workflow listing
    status, first_page = world["b"]("GET", "/workflows?limit=1")
    assert status == 200
    assert first_page["next_token"]
    # When A pages with it
    status, body = api("GET", "/workflows", query={"limit": "1", "next_token": first_page["next_token"]})
    # Then A gets the cursor refused, never B's items
    assert (status, body["code"]) == (400, "invalid_next_token"), body


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/versions/{a_version}/nodes", {"name": "n", "entity_id": "{model_id}"}),
        ("PATCH", "/workflows/{a_workflow}", {"active_version_id": "{version_id}"}),
        ("POST", "/workflows/{a_workflow}/versions", {"copy_from_version_id": "{version_id}"}),
        ("POST", "/workflows/{a_workflow}/executions", {"single_input": "x", "version_id": "{version_id}"}),
    ],
)
def test_tenant_a_cannot_use_tenant_b_ids_inside_bodies(
    api: Any, world: dict[str, Any], method: str, path: str, body: dict[str, Any]
) -> None:
    # Given A's own workflow and version
    _, workflow = api("POST", "/workflows", {"name": "a"})
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {"name": "v"})
    values = {**world["ids"], "a_workflow": workflow["id"], "a_version": version["id"]}
    # When A refers to B's model or version in a body
    filled = {k: v.format(**values) if isinstance(v, str) else v for k, v in body.items()}
    status, answer = api(method, path.format(**values), filled)
    # Then B's resource does not exist for A: the reference names nothing (409, the field named;
    # 404 is for the resource in the path)
    assert status == 409, answer
    assert answer["code"].endswith("not_found") and answer["details"]["field"] in body, answer


def test_every_stored_object_is_under_its_tenant_prefix(
    api: Any, world: dict[str, Any], local_stack: LocalStack
) -> None:
    # Given B's finished run with a file input, and a run of A
    _, model = api("POST", "/models", {"name": "e", "provider": "builtin", "config": {"model": "echo"}})
    _, workflow = api("POST", "/workflows", {"name": "a"})
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {"name": "v"})
    api("POST", f"/versions/{version['id']}/nodes", {"name": "n", "entity_id": model["id"]})
    status, execution = api("POST", f"/workflows/{workflow['id']}/executions", {"single_input": "a's input"})
    assert status == 201
    path = f"/workflows/{workflow['id']}/executions/{execution['id']}"
    assert wait_until(lambda: api("GET", path)[1]["status"] == "completed")
    # When the bucket is listed
    s3 = local_stack.client("s3")
    bucket = local_stack.environment["RELAYFLOW_BUCKET"]
    # (map-results/: the batch machine's ResultWriter, Step Functions' own manifests of map runs)
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        if not o["Key"].startswith("map-results/")
    ]
    # Then every object relayflow wrote sits under <top-level prefix>/<its tenant>/, and B's file
    # under B's (the top-level prefix is what the bucket's lifecycle rules match)
    assert keys
    tenants = ("default", TENANT_B)
    assert all(k.split("/")[0] in ("t", "executions", "uploads") for k in keys), keys
    assert all(k.split("/")[1] in tenants for k in keys), keys
    b_file = [k for k in keys if k.endswith("/private.txt")]
    assert b_file
    assert all(k.startswith(f"executions/{TENANT_B}/{world['ids']['execution_id']}/") for k in b_file)
    assert s3.get_object(Bucket=bucket, Key=b_file[0])["Body"].read() == FILE_BYTES


def test_tenant_b_reads_its_own_file(world: dict[str, Any]) -> None:
    # Given B's run with a file input
    ids = world["ids"]
    # When B downloads it
    status, body = world["b"](
        "GET", f"/workflows/{ids['workflow_id']}/executions/{ids['execution_id']}/input"
    )
    # Then B gets its bytes (and the walk above showed A gets 404 for the same path)
    assert status == 200
    assert body == FILE_BYTES.decode()
