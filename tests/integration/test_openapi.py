"""The OpenAPI document: generated from the handlers, served at GET /openapi.json, committed as
functions/runtime/relayflow_runtime/openapi.json; this test fails when the committed copy drifts from
the code."""

from __future__ import annotations

import json
from typing import Any

from relayflow_runtime.handlers.api import app, committed_openapi_path, openapi_document, openapi_text
from relayflow_runtime.handlers.context import required_scope

REGENERATE = (
    "regenerate it with `relayflow openapi -o functions/runtime/relayflow_runtime/openapi.json` and commit it"
)


def test_committed_document_matches_the_handlers() -> None:
    # Given the document generated from the routes, and the committed copy
    generated = openapi_text()
    committed = committed_openapi_path().read_text(encoding="utf-8")
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
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            route = path.replace("{", "<").replace("}", ">")
            assert operation["x-required-scope"] == required_scope(method, route)
            assert "422" not in operation["responses"], "validation errors are 400 here"
            assert "400" in operation["responses"]
            if operation["x-required-scope"] is None:
                assert operation["security"] == []
            else:
                assert "security" not in operation  # the document-wide apiKey requirement applies
                assert {"401", "403"} <= set(operation["responses"])


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
    # Then each object model among them forbids additional properties
    models = [ref.rsplit("/", 1)[-1] for ref in seen]
    assert models
    open_models = [
        m
        for m in models
        if schemas[m].get("properties") and schemas[m].get("additionalProperties") is not False
    ]
    assert not open_models, f"request models that accept unknown fields: {open_models}"
