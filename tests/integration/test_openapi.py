"""The OpenAPI document: generated from the handlers, served at GET /openapi.json, committed as
docs/openapi.json (outside the Lambda package, which ships no copy); this test fails when the
committed copy drifts from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from relayflow_runtime.handlers.api import app, openapi_document, openapi_text
from relayflow_runtime.handlers.context import required_scope

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "regenerate it with `relayflow openapi -o docs/openapi.json` and commit it"


def test_committed_document_matches_the_handlers() -> None:
    # Given the document generated from the routes, and the committed copy
    generated = openapi_text()
    committed = COMMITTED.read_text(encoding="utf-8")
    # Then they are the same
    assert json.loads(committed) == json.loads(generated), f"openapi.json is out of date; {REGENERATE}"
    assert committed == generated, f"openapi.json is not formatted as generated; {REGENERATE}"


def test_served_document_is_the_generated_one(api: Any) -> None:
    # When the document is fetched without a key
    status, document = api("GET", "/openapi.json", headers={"x-api-key": ""})
    # Then it is the generated document
    assert status == 200
    assert document == openapi_document()


def test_every_documented_route_exists_and_every_route_is_documented() -> None:
    # Given the resolver's routes and the document's operations
    routes = {(r.method, r.path) for r in app._static_routes + app._dynamic_routes if r.include_in_schema}
    documented = {
        (method.upper(), path.replace("{", "<").replace("}", ">"))
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    # Then they are the same set
    assert routes == documented


def test_operations_name_their_scope_key_and_errors() -> None:
    document = openapi_document()
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    assert document["security"] == [{"apiKey": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            route = path.replace("{", "<").replace("}", ">")
            responses = operation["responses"]
            assert operation["x-required-scope"] == required_scope(method, route)
            assert "422" not in responses, "validation errors are 400 here"
            # Every error answer is the Error schema, and the statuses an operation can answer are there
            for status, answer in responses.items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if status.startswith(("4", "5")):
                    assert schema == {"$ref": ERROR}, status
                elif status.startswith("3"):  # a download too large for one answer: its URL
                    assert schema == {"$ref": "#/components/schemas/DownloadLink"}, status
                    assert "Location" in answer["headers"]
            assert "500" in responses
            if operation.get("parameters") or "requestBody" in operation:
                assert "400" in responses or all(p["in"] == "path" for p in operation["parameters"])
            if "{" in path:
                assert "404" in responses
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= set(responses)
            if operation["x-required-scope"] is None:
                assert operation["security"] == []
            else:
                assert "security" not in operation  # the document-wide apiKey requirement applies
                assert {"401", "403"} <= set(responses)


ERROR = "#/components/schemas/Error"
#: Operations that are steps of one client method (upload_dataset_items) or have no client method.
NOT_CLIENT_METHODS = {
    "addDatasetItems",
    "startDatasetUpload",
    "putDatasetUploadPart",
    "commitDatasetUpload",
    "getExecutionWebhookDeliveries",  # get_webhook_deliveries(workflow_id, execution_id=...)
    "getHealth",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_operation_ids_are_the_client_methods() -> None:
    # Given the Python client's public methods, and the document's operations
    from relayflow.client import Client

    methods = {_camel(n) for n in dir(Client) if not n.startswith("_") and callable(getattr(Client, n))}
    operation_ids = [o["operationId"] for ops in openapi_document()["paths"].values() for o in ops.values()]
    # Then each operation is named after the client method that calls it (camelCase), once
    assert len(operation_ids) == len(set(operation_ids))
    unnamed = sorted(set(operation_ids) - methods - NOT_CLIENT_METHODS)
    assert not unnamed, f"operations named after no client method: {unnamed}"
    for reference_name in ("executeWorkflow", "getWorkflowExecution", "getWorkflowExecutions",
                           "cancelWorkflowExecution", "downloadExecutionInput", "createWorkflowNode",
                           "updateWorkflowVersion"):  # fmt: skip
        assert reference_name in operation_ids


def test_every_operation_is_tagged_described_and_answers_a_declared_model() -> None:
    document = openapi_document()
    tags = {t["name"] for t in document["tags"]}
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation["tags"] and set(operation["tags"]) <= tags, where
            assert operation["summary"] and not operation["summary"].startswith(method.upper()), where
            success = [s for s in operation["responses"] if s.startswith("2")]
            assert success, where
            for status in success:
                content = operation["responses"][status]["content"]
                schema = next(iter(content.values()))["schema"]
                if "$ref" in schema:  # a model: an object whose every field is always sent
                    model = schemas[schema["$ref"].rsplit("/", 1)[-1]]
                    assert model["type"] == "object", where
                    assert set(model.get("required", [])) == set(model["properties"]), where
                else:  # only files are not models
                    assert schema["type"] == "string", where


def test_every_reference_resolves() -> None:
    document = openapi_document()
    text = json.dumps(document)
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text))
    assert refs <= set(document["components"]["schemas"]), refs - set(document["components"]["schemas"])


def test_parameters_say_what_the_server_checks() -> None:
    document = openapi_document()
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                assert {"type": "null"} not in schema.get("anyOf", []), (path, parameter["name"])
                if parameter["in"] == "path" and schema["type"] == "string":
                    assert schema["maxLength"] == 256, (path, parameter["name"])
                if parameter["name"] == "next_token":
                    assert (
                        schema["pattern"] == "^[A-Za-z0-9_-]*$" and "opaque" in schema["description"].lower()
                    )
                    assert "invalid_next_token" in operation["responses"]["400"]["description"]
                if parameter["name"] in ("created_after", "created_before"):
                    assert schema["format"] == "date-time"
    execute = document["paths"]["/workflows/{workflow_id}/executions"]["post"]
    key = next(p for p in execute["parameters"] if p["name"] == "idempotency-key")
    assert key["schema"]["pattern"] == "^[\\x21-\\x7e]{1,255}$"
    schemas = document["components"]["schemas"]
    assert schemas["CreateModel"]["discriminator"]["propertyName"] == "provider"
    assert set(schemas["CreateModel"]["discriminator"]["mapping"]) == {
        "builtin", "bedrock", "openai", "sagemaker", "lambda"
    }  # fmt: skip
    # A PATCH field may be left out but is not nullable (callback_url: null removes it)
    update = schemas["UpdateWorkflow"]["properties"]
    assert update["name"] == {"type": "string", "minLength": 1, "maxLength": 200, "title": "Name"}
    assert {"type": "null"} in update["callback_url"]["anyOf"]


def test_examples_come_from_the_reference_documentation() -> None:
    document = openapi_document()
    execute = document["paths"]["/workflows/{workflow_id}/executions"]["post"]
    examples = execute["requestBody"]["content"]["application/json"]["examples"]
    assert examples["batch"]["value"]["batch_config"]["parallelism"] == 5
    assert examples["timeout"]["value"]["timeout"] == 600
    nodes = document["paths"]["/versions/{version_id}/nodes"]["post"]["requestBody"]["content"]
    assert nodes["application/json"]["examples"]["continue"]["value"]["config"]["on_failure"] == "continue"


def test_provider_enum_is_the_registry() -> None:
    from typing import get_args

    from relayflow_runtime.providers import PROVIDERS
    from relayflow_runtime.schemas.api import Provider

    assert get_args(Provider) == PROVIDERS


def test_every_request_body_refuses_unknown_fields() -> None:
    # Given every schema reachable from a request body
    document = openapi_document()
    schemas = document["components"]["schemas"]
    seen: set[str] = set()

    def walk(schema: Any) -> None:
        if isinstance(schema, dict):
            ref = schema.get("$ref")
            if ref and ref not in seen:
                seen.add(ref)
                walk(schemas[ref.rsplit("/", 1)[-1]])
            for value in schema.values():
                walk(value)
        elif isinstance(schema, list):
            for value in schema:
                walk(value)

    for operations in document["paths"].values():
        for operation in operations.values():
            walk(operation.get("requestBody", {}))
    # Then each object model among them forbids additional properties (but a model's config,
    # open by design: each provider reads the settings it knows)
    models = [ref.rsplit("/", 1)[-1] for ref in seen]
    assert models
    open_models = [
        m
        for m in models
        if schemas[m].get("properties")
        and schemas[m].get("additionalProperties") is not False
        and not m.endswith("ModelConfig")
    ]
    assert not open_models, f"request models that accept unknown fields: {open_models}"
