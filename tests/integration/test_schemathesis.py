"""The published document is the contract: schemathesis, with all of its checks, generates requests
from it and sends them to the local HTTP server, and finds nothing.

* Every operation, through its examples, coverage (boundaries, each constraint broken in turn,
  undeclared methods) and fuzzing phases: no 5xx; every answer (status, content type, headers,
  body) as the document says; every schema-valid request accepted and every invalid one refused;
  an undeclared method is 405 with Allow.
* Stateful: sequences that follow the document's links (create a workflow, a version, a node, run
  it, read, cancel, delete), with the same checks on every answer.

What JSON Schema cannot say is taught by relayflow.schemathesis_hooks (Mustache templates, opaque
cursors), the module a user gives schemathesis too. Bounded: examples per operation and steps per
stateful run are fixed, no deadline; half of the generated path ids are swapped for ids that exist,
so the requests reach real resources, not only 404s.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config._auth import AuthConfig
from schemathesis.config._phases import InferenceConfig
from schemathesis.generation import GenerationMode

import relayflow.schemathesis_hooks  # registers the hooks and the "mustache" format
from relayflow.local.server import start_server
from relayflow.local.stack import LocalStack
from relayflow_runtime.handlers.api import openapi_document

# schemathesis's per-operation cases are items that share one node id; pytest-xdist keeps one item
# per id, so under `-n` this module would run one operation of ~55 and still pass. `make test` runs
# it in a plain pytest of its own: refuse the other way loudly rather than test a fraction.
if os.environ.get("PYTEST_XDIST_WORKER"):
    raise pytest.UsageError(
        "tests/integration/test_schemathesis.py cannot run under pytest-xdist (its cases share one "
        "node id and xdist runs one of them): run it without -n, as `make test` does"
    )

# The key the local stack registers (relayflow reuses $RELAYFLOW_API_KEY): known before the tests are
# built, so schemathesis sends it as the document's apiKey scheme (as `st run --auth`-style config
# does) and tests its absence and invalid keys on its own (401, 403).
API_KEY = f"rf_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"

schema = schemathesis.openapi.from_dict(openapi_document())
schema.config.auth = AuthConfig(openapi={"apiKey": {"api_key": API_KEY}})
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema.config.phases.update(phases=["examples", "coverage", "fuzzing", "stateful"])
# Stateful sequences follow the document's own links only: links schemathesis infers would also
# take ids from listings, e.g. the test's own key from GET /api-keys into revokeApiKey.
schema.config.phases.stateful.inference = InferenceConfig(algorithms=[])
pytestmark = pytest.mark.timeout(900)
MAX_EXAMPLES = 8  # fuzzing examples per operation (the coverage phase adds its own, deterministic set)
STATEFUL_STEPS = 15
STATEFUL_RUNS = 25

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def _ok(response: httpx.Response, status: int = 201) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="module")
def target() -> Iterator[dict[str, Any]]:
    """One local stack and server for the module, with one of each resource, and runs that ended."""
    previous = os.environ.get("RELAYFLOW_API_KEY")
    os.environ["RELAYFLOW_API_KEY"] = API_KEY
    try:
        with LocalStack() as stack:
            assert stack.api_key == API_KEY
            server, thread = start_server(stack)
            base_url = f"http://127.0.0.1:{server.server_port}"
            headers = {"x-api-key": API_KEY}
            try:
                with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
                    # A set for the operations that read, one for those that change, and one for
                    # each operation that deletes (made when it first asks).
                    sets = {name: _resources(http, name) for name in ("ids", "changed")}
                    doomed: dict[str, dict[str, str]] = {}

                    def to_delete(label: str) -> dict[str, str]:
                        if label not in doomed:
                            doomed[label] = _resources(http, f"doomed {len(doomed)}")
                        return doomed[label]

                    yield {"base_url": base_url, "headers": headers, "to_delete": to_delete, **sets}
            finally:
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)
    finally:
        if previous is None:
            os.environ.pop("RELAYFLOW_API_KEY", None)
        else:
            os.environ["RELAYFLOW_API_KEY"] = previous


def _resources(http: httpx.Client, name: str) -> dict[str, str]:
    """One of each resource, and a single and a batch run that have ended; their ids by the names
    of the path parameters and body fields that take them."""
    echo = {"name": name, "provider": "builtin", "config": {"model": "echo"}}
    model = _ok(http.post("/models", json=echo))
    workflow = _ok(http.post("/workflows", json={"name": name}))
    version = _ok(http.post(f"/workflows/{workflow['id']}/versions", json={}))
    nodes = f"/versions/{version['id']}/nodes"
    first = _ok(http.post(nodes, json={"name": "a", "entity_id": model["id"]}))
    second = _ok(http.post(nodes, json={"name": "b", "entity_id": model["id"]}))
    pair = {"begin_node_id": first["id"], "end_node_id": second["id"]}
    edge = _ok(http.post(f"/versions/{version['id']}/edges", json=pair))
    dataset = _ok(http.post("/datasets", json={"name": name}))
    dataset_version = _ok(http.post(f"/datasets/{dataset['id']}/versions", json={}))
    items = [{"id": f"i{n}", "text": f"item {n}"} for n in range(3)]
    base = f"/datasets/{dataset['id']}/versions/{dataset_version['id']}"
    _ok(http.post(f"{base}/items", json={"items": items}), 200)
    empty_version = _ok(http.post(f"/datasets/{dataset['id']}/versions", json={}))
    upload = _ok(
        http.post(
            f"/datasets/{dataset['id']}/versions/{empty_version['id']}/uploads", json={"filename": "a.jsonl"}
        )
    )
    batch = {"dataset_id": dataset["id"], "dataset_version_id": dataset_version["id"]}
    executions = f"/workflows/{workflow['id']}/executions"
    batch_run = _ok(http.post(executions, json={"input_mode": "batch", "batch_config": batch}))
    single_run = _ok(http.post(executions, json={"single_input": "x"}))
    for run in (batch_run, single_run):
        for _ in range(600):
            if _ok(http.get(f"{executions}/{run['id']}"), 200)["status"] in ("completed", "failed"):
                break
            time.sleep(0.05)
    # A key of its own for the key operations (revoking the test's own key would end the test).
    spare_key = _ok(http.post("/api-keys", json={"name": name}))
    return {
        "workflow_id": workflow["id"],
        "version_id": version["id"],
        "active_version_id": version["id"],
        "copy_from_version_id": version["id"],
        "node_id": first["id"],
        "begin_node_id": first["id"],
        "end_node_id": second["id"],
        "edge_id": edge["id"],
        "model_id": model["id"],
        "entity_id": model["id"],
        "execution_id": batch_run["id"],
        "dataset_id": dataset["id"],
        "dataset_version_id": dataset_version["id"],
        "upload_dataset_version_id": empty_version["id"],
        "upload_id": upload["id"],
        "item_id": "i1",
        "key_id": spare_key["id"],
    }


def _real_id(ids: dict[str, str], path: str, name: str) -> str | None:
    if path.startswith("/datasets/") and name == "version_id":
        name = "upload_dataset_version_id" if "/uploads" in path else "dataset_version_id"
    return ids.get(name)


def _with_real_ids(body: Any, ids: dict[str, str]) -> Any:
    """Every id field of a body (at any depth) that names an existing resource."""
    if isinstance(body, dict):
        return {
            key: ids[key] if key in ids and isinstance(value, str) else _with_real_ids(value, ids)
            for key, value in body.items()
        }
    if isinstance(body, list):
        return [_with_real_ids(value, ids) for value in body]
    return body


@schema.parametrize()
@SETTINGS
def test_every_operation_answers_as_the_document_says(case: Any, target: dict[str, Any]) -> None:
    # Given a generated request, its ids (in the path and the body) swapped for ids that exist when
    # it is meant to be valid (an invalid one keeps what makes it invalid); an operation that
    # changes or deletes gets resources of its own
    if case.meta.generation.mode.is_positive:
        if case.method == "DELETE":
            ids = target["to_delete"](case.operation.label)
        else:
            ids = target["changed" if case.method in ("PATCH", "PUT") else "ids"]
        if case.path_parameters:
            case.path_parameters = {
                name: _real_id(ids, case.path, name) or value for name, value in case.path_parameters.items()
            }
        if isinstance(case.body, dict):
            case.body = _with_real_ids(case.body, ids)
    # When it is sent (with the configured key, unless the case is about its absence)
    # Then every check of schemathesis passes on the answer
    case.call_and_validate(base_url=target["base_url"])


def test_stateful_sequences_follow_the_links(target: dict[str, Any]) -> None:
    # Given the document's links (a created resource's id into the operations that take it)
    machine = schema.as_state_machine()

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {**super().get_call_kwargs(case), "base_url": target["base_url"]}

    # When schemathesis runs sequences of calls that follow them
    # Then every answer passes every check
    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_RUNS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )


def test_a_bad_cursor_is_refused_as_invalid_next_token(target: dict[str, Any]) -> None:
    # Given cursors this API never returned: not base64url, base64url of nothing it made, too long
    # ({}, {"a": [1]}, {"a": "x"}), too long
    bad = ["not a token", "0.5", "e30", "eyJhIjogWzFdfQ", "eyJhIjoieCJ9", "A" * 5000]
    with httpx.Client(base_url=target["base_url"], headers=target["headers"]) as http:
        dataset = _ok(http.post("/datasets", json={"name": "cursors"}))
        version = _ok(http.post(f"/datasets/{dataset['id']}/versions", json={}))
        empty_version = f"/datasets/{dataset['id']}/versions/{version['id']}/items"
        # (an empty dataset version's items too: schemathesis found "0.5" accepted there)
        for path in ("/workflows", "/models", "/datasets", "/api-keys", empty_version):
            for token in bad:
                # When a listing is asked for the page after one
                answer = http.get(path, params={"next_token": token})
                # Then it is a 400 with the documented code
                assert answer.status_code == 400, (path, token, answer.text)
                assert answer.json()["code"] == "invalid_next_token"


def test_a_real_cursor_walks_every_page(target: dict[str, Any]) -> None:
    # Given more models than one page holds
    with httpx.Client(base_url=target["base_url"], headers=target["headers"]) as http:
        for n in range(3):
            _ok(
                http.post(
                    "/models", json={"name": f"m{n}", "provider": "builtin", "config": {"model": "echo"}}
                )
            )
        # When the listing is walked a model at a time, each next_token passed back
        seen: list[str] = []
        token: str | None = None
        while True:
            page = _ok(
                http.get("/models", params={"limit": 1, **({"next_token": token} if token else {})}), 200
            )
            seen += [m["id"] for m in page["items"]]
            token = page["next_token"]
            if not token:
                break
        # Then every model comes once
        assert len(seen) == len(set(seen)) >= 3


def test_undeclared_methods_are_405_with_allow(target: dict[str, Any]) -> None:
    with httpx.Client(base_url=target["base_url"], headers=target["headers"]) as http:
        for method in ("TRACE", "PUT", "QUERY"):
            answer = http.request(method, "/workflows")
            assert answer.status_code == 405, answer.text
            assert answer.headers["allow"] == "GET, POST"
            assert answer.json()["code"] == "method_not_allowed"
        assert http.request("PATCH", "/nowhere").json()["code"] == "route_not_found"


# ---- random templates through the API, end to end ----------------------------------------------------
TEMPLATE_PIECES = st.sampled_from(
    ["{{", "}}", "{{{", "}}}", "{{#", "{{/", "{{^", "{{>", "{{=", "{{&", "{{!", "input", "nodes.n",
     "item", "{{input}}", "{{#item}}", "{{/item}}", "{{.}}", "{{nodes.n}}", " ", "\n", "\x00", "é"]
)  # fmt: skip
TEMPLATES = st.text(max_size=30) | st.lists(TEMPLATE_PIECES | st.text(max_size=3), max_size=15).map("".join)


TEMPLATE_ERRORS = {"invalid_template", "template_too_long", "invalid_request", "invalid_config"}


@pytest.fixture(scope="module")
def fresh(target: dict[str, Any]) -> dict[str, str]:
    """A model, version and node of their own (the fuzzing above may have deleted the first ones)."""
    with httpx.Client(base_url=target["base_url"], headers=target["headers"]) as http:
        echo = {"name": "e", "provider": "builtin", "config": {"model": "echo"}}
        model = http.post("/models", json=echo).json()
        workflow = http.post("/workflows", json={"name": "templates"}).json()
        version = http.post(f"/workflows/{workflow['id']}/versions", json={}).json()
        node = http.post(
            f"/versions/{version['id']}/nodes", json={"name": "n", "entity_id": model["id"]}
        ).json()
    return {"model_id": model["id"], "version_id": version["id"], "node_id": node["id"]}


@given(template=TEMPLATES)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_random_templates_answer_2xx_or_4xx_through_the_api(
    template: str, target: dict[str, Any], fresh: dict[str, str]
) -> None:
    # Given a random input_template for a new node, and for an existing node
    ids = fresh
    nodes = f"/versions/{ids['version_id']}/nodes"
    body = {
        "name": f"n-{uuid.uuid4().hex[:8]}",
        "entity_id": ids["model_id"],
        "config": {"input_template": template},
    }
    with httpx.Client(base_url=target["base_url"], headers=target["headers"]) as http:
        # When they are sent
        created = http.post(nodes, json=body)
        updated = http.patch(f"{nodes}/{ids['node_id']}", json={"config": {"input_template": template}})
        if created.status_code == 201:
            assert http.delete(f"{nodes}/{created.json()['id']}").status_code == 200
    # Then the API accepts them or refuses them with a 4xx naming the problem, never a 5xx
    assert created.status_code in (201, 400), created.text
    assert updated.status_code in (200, 400), updated.text
    for refused in (r for r in (created, updated) if r.status_code == 400):
        assert refused.json()["code"] in TEMPLATE_ERRORS, refused.text


@given(template=relayflow.schemathesis_hooks.MUSTACHE_TEMPLATES)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_templates_the_hooks_draw_are_accepted(
    template: str, target: dict[str, Any], fresh: dict[str, str]
) -> None:
    # Given a template drawn as the "mustache" format (what schemathesis sends as valid)
    with httpx.Client(base_url=target["base_url"], headers=target["headers"]) as http:
        # When a node is given it
        nodes = f"/versions/{fresh['version_id']}/nodes"
        answer = http.patch(f"{nodes}/{fresh['node_id']}", json={"config": {"input_template": template}})
    # Then it is accepted: the strategy draws only valid templates
    assert answer.status_code == 200, (template, answer.text)


def test_the_hooks_module_is_what_the_document_names() -> None:
    # The document names the format the hooks teach schemathesis
    text = json.dumps(openapi_document())
    assert '"format": "mustache"' in text
