"""API keys: every route but the public ones needs a valid, unrevoked, unexpired key holding the
route's scope. The requests go through the template's Lambda authorizer, as on API Gateway."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from relayflow.client import ApiError, Client
from relayflow.local.server import build_http_event, parse_http_response
from relayflow.local.stack import LocalStack
from relayflow_runtime.services import apikeys

NO_KEY = {"x-api-key": ""}

# One stack for the module: each test makes its own keys (and tenants where it counts them).
pytestmark = pytest.mark.shared_stack


def key_headers(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def make_key(api: Any, scopes: list[str], name: str = "test") -> dict[str, Any]:
    status, body = api("POST", "/api-keys", {"name": name, "scopes": scopes})
    assert status == 201, body
    return body


def runnable_workflow(api: Any) -> str:
    """A workflow with one echo node, ready to run; returns its id."""
    _, model = api("POST", "/models", {"name": "echo", "provider": "builtin", "config": {"model": "echo"}})
    _, workflow = api("POST", "/workflows", {"name": "wf"})
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {"name": "v1"})
    status, _ = api("POST", f"/versions/{version['id']}/nodes", {"name": "echo", "entity_id": model["id"]})
    assert status == 201
    return str(workflow["id"])


# ---- refused requests ---------------------------------------------------------------------------------
def test_request_without_a_key_is_refused_with_401(api: Any) -> None:
    # Given no x-api-key header
    # When any protected route is called
    for method, path in (("GET", "/workflows"), ("POST", "/workflows"), ("GET", "/api-keys")):
        status, body = api(method, path, {"name": "x"} if method == "POST" else None, headers=NO_KEY)
        # Then API Gateway's own 401 answers, before any function runs
        assert status == 401, (method, path, body)
        assert body == {"message": "Unauthorized"}


@pytest.mark.parametrize(
    "key",
    [
        "not-a-key",
        "rf_0123456789abcdef_" + "A" * 43,  # well-formed, never issued
        "rf_zz_short",
    ],
)
def test_unknown_or_malformed_key_is_refused_with_403(api: Any, key: str) -> None:
    # Given a key the table does not know
    # When it is used
    status, body = api("GET", "/workflows", headers=key_headers(key))
    # Then the authorizer refuses it
    assert status == 403
    assert body == {"message": "Forbidden"}


def test_a_key_with_a_wrong_secret_is_refused(api: Any, local_stack: LocalStack) -> None:
    # Given the id of a real key with another secret
    assert local_stack.api_key
    forged = f"rf_{local_stack.api_key.split('_')[1]}_" + "B" * 43
    assert forged != local_stack.api_key
    # When it is used
    status, _ = api("GET", "/workflows", headers=key_headers(forged))
    # Then it is refused
    assert status == 403


def test_revoked_key_is_refused_with_403(api: Any, local_stack: LocalStack) -> None:
    # Given a key that works
    created = make_key(api, ["read"])
    assert api("GET", "/workflows", headers=key_headers(created["key"]))[0] == 200
    # When it is revoked (and API Gateway's cached answer for it has expired)
    status, revoked = api("POST", f"/api-keys/{created['id']}/revoke")
    assert status == 200
    assert revoked["revoked_at"]
    local_stack.flush_authorizer_cache()
    # Then it is refused, and the listing shows when it was revoked
    assert api("GET", "/workflows", headers=key_headers(created["key"])) == (403, {"message": "Forbidden"})
    _, listed = api("GET", f"/api-keys/{created['id']}")
    assert listed["revoked_at"] == revoked["revoked_at"]
    # And revoking again keeps the first time
    assert api("POST", f"/api-keys/{created['id']}/revoke")[1]["revoked_at"] == revoked["revoked_at"]


def test_expired_key_is_refused_with_403(api: Any, local_stack: LocalStack) -> None:
    # Given a key that expired a second ago, and one that expires tomorrow
    past = apikeys.create_key("default", ["read"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    future = apikeys.create_key("default", ["read"], expires_at=datetime.now(UTC) + timedelta(days=1))
    # When they are used
    # Then only the expired one is refused
    assert api("GET", "/workflows", headers=key_headers(past.key))[0] == 403
    assert api("GET", "/workflows", headers=key_headers(future.key))[0] == 200
    # And the authorizer says why
    answer = local_stack.invoke("AuthorizerFunction", {"headers": key_headers(past.key)})
    assert answer["isAuthorized"] is False
    assert answer["context"]["reason"] == "api_key_expired"


def test_expiry_given_in_days_is_recorded(api: Any) -> None:
    # Given a key created to expire in 7 days
    status, created = api("POST", "/api-keys", {"scopes": ["read"], "expires_in_days": 7})
    # Then it carries that expiry
    assert status == 201
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body"),
    [
        (["read"], "POST", "/workflows", {"name": "x"}),
        (["read"], "POST", "/models", {"name": "m", "provider": "builtin", "config": {"model": "echo"}}),
        (["read", "execute"], "DELETE", "/workflows/anything", None),
        (["write", "execute"], "GET", "/workflows", None),
        (["write"], "GET", "/api-keys", None),
        (["read", "write"], "POST", "/workflows/anything/executions", {"single_input": "hi"}),
        (["read", "write"], "POST", "/workflows/anything/executions/anything/retry-failed", {}),
    ],
)
def test_key_lacking_the_route_scope_is_refused_with_403(
    api: Any, scopes: list[str], method: str, path: str, body: Any
) -> None:
    # Given a key without the scope the route needs
    key = make_key(api, scopes)["key"]
    # When it calls the route
    status, answer = api(method, path, body, headers=key_headers(key))
    # Then the API function refuses it, naming the missing scope
    assert status == 403, answer
    assert answer["code"] == "insufficient_scope"
    needed = {"GET": "read", "DELETE": "write"}.get(method, "execute" if "executions" in path else "write")
    assert f"'{needed}'" in answer["message"]


def test_each_scope_opens_its_routes(api: Any) -> None:
    # Given a runnable workflow and one key per scope
    workflow_id = runnable_workflow(api)
    reader, writer, runner = (make_key(api, [s])["key"] for s in ("read", "write", "execute"))
    # Then read reads, write writes, execute runs
    assert api("GET", f"/workflows/{workflow_id}", headers=key_headers(reader))[0] == 200
    assert api("POST", "/workflows", {"name": "w"}, headers=key_headers(writer))[0] == 201
    status, execution = api(
        "POST", f"/workflows/{workflow_id}/executions", {"single_input": "hi"}, headers=key_headers(runner)
    )
    assert status == 201, execution
    # And validate is a read
    version = api("GET", f"/workflows/{workflow_id}")[1]["active_version_id"]
    path = f"/workflows/{workflow_id}/versions/{version}/validate"
    assert api("POST", path, headers=key_headers(reader))[0] == 200


def test_retrying_failed_items_needs_the_execute_scope(api: Any) -> None:
    # Given a runnable workflow, a key holding read and write but not execute, and one holding execute
    workflow_id = runnable_workflow(api)
    writer, runner = make_key(api, ["read", "write"])["key"], make_key(api, ["execute"])["key"]
    path = f"/workflows/{workflow_id}/executions/missing/retry-failed"
    # When each asks to retry the failed items of a run
    refused_status, refused = api("POST", path, {}, headers=key_headers(writer))
    passed_status, passed = api("POST", path, {}, headers=key_headers(runner))
    # Then it starts a run, so the key without execute is refused with 403 naming the scope
    assert refused_status == 403, refused
    assert refused["code"] == "insufficient_scope"
    assert "'execute'" in refused["message"]
    # And the execute key gets past the scope check to the run lookup (no such run here)
    assert passed_status == 404, passed
    # And the OpenAPI document names the scope
    document = api("GET", "/openapi.json", headers=NO_KEY)[1]
    operation = document["paths"]["/workflows/{workflow_id}/executions/{execution_id}/retry-failed"]["post"]
    assert operation["x-required-scope"] == "execute"


def test_public_routes_need_no_key(api: Any) -> None:
    # Given no key
    # Then the health check, the OpenAPI document and the dashboard page answer
    assert api("GET", "/health", headers=NO_KEY)[0] == 200
    status, document = api("GET", "/openapi.json", headers=NO_KEY)
    assert status == 200
    assert document["openapi"].startswith("3.")
    assert api("GET", "/dashboard", headers=NO_KEY)[0] == 200


def test_the_api_function_refuses_a_request_no_authorizer_vouched_for(local_stack: LocalStack) -> None:
    # Given a request that bypasses the authorizer (the function invoked directly, no context)
    event = build_http_event("GET", "/workflows", headers=key_headers(local_stack.api_key or ""))
    # When the API function handles it
    response = parse_http_response(local_stack.invoke_api(event))
    # Then it refuses it itself
    assert response.status == 401
    assert response.json()["code"] == "missing_api_key"


# ---- managing keys -------------------------------------------------------------------------------------
def test_a_key_is_shown_once_and_stored_only_as_a_hash(api: Any, local_stack: LocalStack) -> None:
    # Given a new key
    created = make_key(api, ["read", "write"], name="ci")
    key = created["key"]
    assert key.startswith(f"rf_{created['id']}_")
    assert created["prefix"] == f"rf_{created['id']}"
    # When it is read back and listed
    _, one = api("GET", f"/api-keys/{created['id']}")
    _, listed = api("GET", "/api-keys")
    # Then neither shows the key or its hash
    for shown in (one, *listed["items"]):
        assert "key" not in shown
        assert "key_hash" not in shown
    assert created["id"] in {k["id"] for k in listed["items"]}
    assert one["scopes"] == ["read", "write"]
    # And the table holds its SHA-256, never the key or its secret
    table = local_stack.client("dynamodb")
    dump = json.dumps(table.scan(TableName=local_stack.environment["RELAYFLOW_TABLE"])["Items"])
    assert key not in dump
    assert key.split("_", 2)[2] not in dump
    assert hashlib.sha256(key.encode()).hexdigest() in dump


def test_a_key_cannot_grant_scopes_it_lacks(api: Any) -> None:
    # Given a key with read and write only
    key = make_key(api, ["read", "write"])["key"]
    # When it creates a key with execute
    status, body = api("POST", "/api-keys", {"scopes": ["execute"]}, headers=key_headers(key))
    # Then it is refused
    assert status == 403
    assert body["code"] == "scope_not_held"
    # And without scopes, the new key gets the creator's
    status, child = api("POST", "/api-keys", {"name": "child"}, headers=key_headers(key))
    assert status == 201
    assert child["scopes"] == ["read", "write"]


@pytest.mark.parametrize(
    "body",
    [{"scopes": []}, {"scopes": ["admin"]}, {"expires_in_days": 0}, {"expires_in_days": 99999}, {"x": 1}],
)
def test_bad_key_requests_are_refused_with_400(api: Any, body: dict[str, Any]) -> None:
    status, answer = api("POST", "/api-keys", body)
    assert status == 400, answer
    assert answer["code"] == "invalid_request"


def test_keys_of_another_tenant_are_invisible(api: Any) -> None:
    # Given a key of tenant "other"
    other = apikeys.create_key("other", ["read", "write"])
    # When tenant "default" reads, lists or revokes it
    # Then it does not exist for "default"
    assert api("GET", f"/api-keys/{other.id}")[0] == 404
    assert api("POST", f"/api-keys/{other.id}/revoke")[0] == 404
    assert other.id not in {k["id"] for k in api("GET", "/api-keys")[1]["items"]}
    # And it still works for its own tenant
    assert api("GET", "/workflows", headers=key_headers(other.key))[0] == 200


def test_bootstrap_key_creates_a_working_key_for_a_tenant(api: Any) -> None:
    # Given a fresh tenant's bootstrap key (what `relayflow create-api-key` runs)
    key = apikeys.bootstrap_key("acme", ["read", "write", "execute"], expires_in_days=30)
    # When it is used
    status, created = api("POST", "/workflows", {"name": "first"}, headers=key_headers(key))
    # Then it works, and its workflows are acme's alone
    assert status == 201
    assert created["id"] not in {w["id"] for w in api("GET", "/workflows")[1]["items"]}
    _, keys = api("GET", "/api-keys", headers=key_headers(key))
    assert [k["name"] for k in keys["items"]] == ["bootstrap"]
    assert keys["items"][0]["expires_at"]


@pytest.mark.parametrize(
    ("tenant", "scopes"), [("a#b", ["read"]), ("", ["read"]), ("t", ["root"]), ("t", [])]
)
def test_bootstrap_key_refuses_bad_tenants_and_scopes(
    local_stack: LocalStack, tenant: str, scopes: list
) -> None:
    from relayflow_runtime.errors import InvalidInput

    with pytest.raises(InvalidInput):
        apikeys.bootstrap_key(tenant, scopes)


def test_local_key_from_the_environment_is_registered_once(
    local_stack: LocalStack, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a RELAYFLOW_API_KEY of the right shape
    key = "rf_00112233445566ff_" + "k" * 43
    monkeypatch.setenv("RELAYFLOW_API_KEY", key)
    # When the local key is ensured twice (two `relayflow serve` starts on one table)
    assert apikeys.ensure_local_key() == key
    assert apikeys.ensure_local_key() == key
    # Then the key works, and exists once
    assert api("GET", "/workflows", headers=key_headers(key))[0] == 200
    ids = [k["id"] for k in api("GET", "/api-keys")[1]["items"]]
    assert ids.count("00112233445566ff") == 1


def test_a_malformed_local_key_is_refused(local_stack: LocalStack) -> None:
    from relayflow_runtime.errors import InvalidInput

    with pytest.raises(InvalidInput, match="rf_"):
        apikeys.ensure_local_key("password123")


def test_too_many_keys_answers_409_naming_the_limit(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a tenant at the (lowered) key limit
    monkeypatch.setattr(apikeys, "MAX_API_KEYS_PER_TENANT", 2)
    key = apikeys.bootstrap_key("key-limit", ["read", "write"])
    assert api("POST", "/api-keys", {"scopes": ["read"]}, headers=key_headers(key))[0] == 201  # 2 keys now
    # When one more is created
    status, body = api("POST", "/api-keys", {"scopes": ["read"]}, headers=key_headers(key))
    # Then it is refused, naming the limit
    assert status == 409
    assert body["code"] == "too_many_api_keys"
    assert "api_keys_per_tenant" in body["message"]


# ---- over HTTP, with the client ------------------------------------------------------------------------
def test_client_sends_its_key_and_reports_refusals(served: str, local_stack: LocalStack) -> None:
    # Given a client with the local key, and one without
    with Client(base_url=served, api_key=local_stack.api_key) as client:
        # Then the first works
        assert client.create_workflow(name="over http").name == "over http"
        key = client.create_api_key(name="read only", scopes=["read"])
        assert key.key.startswith("rf_")
        assert [k.id for k in client.get_api_keys() if k.id == key.id] == [key.id]
    with Client(base_url=served, api_key=key.key) as reader:
        with pytest.raises(ApiError) as refused:
            reader.create_workflow(name="nope")
        assert refused.value.status == 403
        assert refused.value.code == "insufficient_scope"
    response = httpx.get(f"{served}/workflows")
    assert response.status_code == 401


def test_client_revokes_keys(served: str, local_stack: LocalStack) -> None:
    with Client(base_url=served, api_key=local_stack.api_key) as client:
        key = client.create_api_key(scopes=["read"])
        revoked = client.revoke_api_key(key.id)
        assert revoked.revoked_at is not None
        assert client.get_api_key(key.id).revoked_at == revoked.revoked_at
    local_stack.flush_authorizer_cache()
    assert httpx.get(f"{served}/workflows", headers=key_headers(key.key)).status_code == 403


# ---- logs ----------------------------------------------------------------------------------------------
def test_logs_never_show_keys_or_authorization_headers(api: Any) -> None:
    # Given the functions' loggers, written to a buffer in their JSON format
    import io
    import logging

    from relayflow_runtime.handlers import api as api_module
    from relayflow_runtime.handlers import authorizer

    buffer = io.StringIO()
    sink = logging.StreamHandler(buffer)
    sink.setFormatter(api_module.logger.registered_formatter)
    std_loggers = {api_module.logger._logger, authorizer.logger._logger}
    for std in std_loggers:
        std.addHandler(sink)
    key = "rf_0123456789abcdef_" + "S" * 43
    try:
        # When a key, a bearer token and basic credentials reach them as a message, an argument,
        # extra keys or a whole event
        api_module.logger.info({"headers": {"x-api-key": key, "Authorization": "Bearer sekrit-token"}})
        api_module.logger.warning(
            "failed with %s", key, extra={"headers": {"authorization": "Basic dXNlcjpwYXNz"}}
        )
        authorizer.logger.info(f"the caller sent {key}")
        # And a refused request goes through the authorizer
        api("GET", "/workflows", headers={"x-api-key": key})
    finally:
        for std in std_loggers:
            std.removeHandler(sink)
    # Then no secret is in the output, and the key's id still is (to trace it)
    output = buffer.getvalue()
    for secret in ("S" * 43, "sekrit-token", "dXNlcjpwYXNz"):
        assert secret not in output
    assert "rf_0123456789abcdef_[redacted]" in output
    assert '"x-api-key":"[redacted]"' in output.replace(" ", "")
    assert "invalid_api_key" in output  # the authorizer logged the refusal
