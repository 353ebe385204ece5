"""Shared fixtures: the embedded local stack (built from template.yaml on moto), a helper that
calls its HTTP API in-process, and an HTTP server in front of it.

`local_stack` is function-scoped: a start costs ~0.2-0.3 s of CPU once the process is warm (~1 s
the first time, loading botocore models), and every test gets empty tables and no executions. A
module marked `pytestmark = pytest.mark.shared_stack` gets one stack for all its tests instead (the
`module_stack`; `module_api` calls it from module-scoped fixtures): its tests must not depend on
empty tables (fresh names and ids, tenant-scoped keys, listings filtered by what the test made),
must undo what they change on the stack (handler overrides, fault profiles) and may not start a
LocalStack of their own (one runs at a time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from relayflow.local.server import build_http_event, parse_http_response, start_server
from relayflow.local.stack import LocalStack
from relayflow_runtime.settings import reset_caches

ApiCall = Callable[..., tuple[int, Any]]
_NO_BODY: Any = object()


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Test credentials and region, no profile or endpoint of the machine's, and relayflow's cached
    settings and clients forgotten before and after (for tests on moto's `mock_aws`)."""
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    reset_caches()
    yield
    reset_caches()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shared_stack: the module's tests share one local stack (see tests/conftest.py)"
    )


@pytest.fixture(scope="module")
def module_stack() -> Iterator[LocalStack]:
    """One local stack for the tests of a module (see the module docstring for when it may share)."""
    with LocalStack() as stack:
        yield stack


@pytest.fixture
def local_stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """A fresh stack for the test, or the module's `module_stack` in a `shared_stack` module."""
    if request.node.get_closest_marker("shared_stack") is not None:
        # Settings and clients are read again from the environment before and after each test, as a
        # fresh stack would: what one test set (monkeypatch) is not remembered by the next.
        reset_caches()
        yield request.getfixturevalue("module_stack")
        reset_caches()
        return
    with LocalStack() as stack:
        yield stack


@pytest.fixture
def api(local_stack: LocalStack) -> ApiCall:
    """api(method, path, json_body=..., query=..., headers=...) -> (status, parsed body).

    The request goes through the template's routes and Lambda authorizer, as on API Gateway, with
    the stack's local API key in x-api-key unless `headers` sets one (pass {"x-api-key": ""} to
    send none). The body comes back parsed as JSON when it is JSON, else as text (or bytes).
    """
    return api_of(local_stack)


@pytest.fixture(scope="module")
def module_api(module_stack: LocalStack) -> ApiCall:
    """`api` on the module's stack, for module-scoped fixtures."""
    return api_of(module_stack)


def api_of(local_stack: LocalStack) -> ApiCall:
    """The `api` helper on a given stack."""

    def call(
        method: str,
        path: str,
        json_body: Any = _NO_BODY,
        *,
        query: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> tuple[int, Any]:
        extra = {} if json_body is _NO_BODY else {"json_body": json_body}
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        if local_stack.api_key and "x-api-key" not in sent:
            sent["x-api-key"] = local_stack.api_key
        sent = {k: v for k, v in sent.items() if v != ""}
        event = build_http_event(method, path, headers=sent, body=body, query=query, **extra)
        response = parse_http_response(local_stack.handle_api_request(event))
        try:
            return response.status, json.loads(response.body) if response.body else None
        except ValueError:
            try:
                return response.status, response.body.decode("utf-8")
            except UnicodeDecodeError:
                return response.status, response.body

    return call


@pytest.fixture
def served(local_stack: LocalStack) -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT) of an HTTP server in front of the stack's API."""
    server, thread = start_server(local_stack, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client(served: str, local_stack: LocalStack) -> Iterator[Any]:
    """A relayflow.Client on the served stack, authenticated with the stack's local key."""
    from relayflow import Client

    with Client(base_url=served, api_key=local_stack.api_key) as c:
        yield c
