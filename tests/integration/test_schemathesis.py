"""Property-based API test: schemathesis generates requests from the OpenAPI document and sends them
to the local HTTP server; no answer may be a 5xx, and every answer must match the document.

Bounded: MAX_EXAMPLES per operation and no deadline per example; the whole module runs in well
under a minute. Half of the generated path ids are swapped for ids that exist, so the requests
reach real workflows, versions, nodes and executions, not only 404s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.generation import GenerationMode

from relayflow.local.server import start_server
from relayflow.local.stack import LocalStack
from relayflow_runtime.handlers.api import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())
# A budget for the whole API rather than per operation, so new routes do not slow `make test` down.
REQUEST_BUDGET = 480
MAX_EXAMPLES = max(4, REQUEST_BUDGET // sum(1 for _ in schema.get_all_operations()))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def target() -> Iterator[dict[str, Any]]:
    """One local stack and server for the module, with a workflow, a model and a run."""
    with LocalStack() as stack:
        server, thread = start_server(stack)
        base_url = f"http://127.0.0.1:{server.server_port}"
        headers = {"x-api-key": stack.api_key or ""}
        try:
            with httpx.Client(base_url=base_url, headers=headers) as http:
                model = http.post(
                    "/models", json={"name": "e", "provider": "builtin", "config": {"model": "echo"}}
                )
                workflow = http.post("/workflows", json={"name": "fuzzed"}).json()
                version = http.post(f"/workflows/{workflow['id']}/versions", json={}).json()
                node = http.post(
                    f"/versions/{version['id']}/nodes", json={"name": "n", "entity_id": model.json()["id"]}
                ).json()
                execution = http.post(
                    f"/workflows/{workflow['id']}/executions", json={"single_input": "x"}
                ).json()
                ids = {
                    "workflow_id": workflow["id"],
                    "version_id": version["id"],
                    "node_id": node["id"],
                    "model_id": model.json()["id"],
                    "execution_id": execution["id"],
                    "key_id": (stack.api_key or "rf__").split("_")[1],
                }
            yield {"base_url": base_url, "headers": headers, "ids": ids}
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_every_answer_matches_the_document(case: Any, target: dict[str, Any]) -> None:
    # Given a generated request, with a real id in place of every other generated path id
    if case.path_parameters:
        case.path_parameters = {
            name: target["ids"].get(name, value) if len(str(value)) % 2 == 0 else value
            for name, value in case.path_parameters.items()
        }
    # When it is sent with a valid key
    # Then the answer is no 5xx and conforms to the document
    case.call_and_validate(
        base_url=target["base_url"],
        headers=target["headers"],
        checks=[not_a_server_error, response_schema_conformance],
    )


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
