"""The client raises relayflow's own errors, with the hints the CLI prints: an API that cannot be
reached, a key the API Gateway authorizer refuses, an id that names nothing."""

from __future__ import annotations

import socket

import httpx
import pytest

from relayflow import ApiError, ApiUnreachable, Client, RelayflowError


def answering(status: int, body: object) -> Client:
    return Client(
        base_url="http://api.example", api_key="rf_x", transport=httpx.MockTransport(
            lambda request: httpx.Response(status, json=body)
        )
    )  # fmt: skip


def test_a_connection_refused_is_a_relayflow_error_saying_what_to_check() -> None:
    # Given a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # When the client calls it
    with pytest.raises(ApiUnreachable) as refused:
        Client(base_url=f"http://127.0.0.1:{port}").get_workflows()

    # Then the error is relayflow's, names the URL and says what to check; the cause is kept
    assert isinstance(refused.value, RelayflowError)
    assert f"cannot reach the relayflow API at http://127.0.0.1:{port}" in str(refused.value)
    assert "`relayflow serve` running" in str(refused.value) and "RELAYFLOW_URL" in str(refused.value)
    assert isinstance(refused.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    ("status", "code", "hint"),
    [
        (401, "unauthorized", "send an API key"),
        (403, "forbidden", "the API key was refused"),
    ],
)
def test_a_key_the_authorizer_refuses_says_where_keys_come_from(status: int, code: str, hint: str) -> None:
    # Given the API Gateway authorizer's own answer, which is only a message
    client = answering(status, {"message": "Unauthorized" if status == 401 else "Forbidden"})

    # When a call is refused
    with pytest.raises(ApiError) as refused:
        client.get_workflows()

    # Then it has a code of its own and the hint: what to send, and where the key is printed
    assert (refused.value.status, refused.value.code) == (status, code)
    assert hint in refused.value.hint and "`relayflow serve` prints its key" in refused.value.hint
    assert "RELAYFLOW_API_KEY" in str(refused.value) or status == 403


def test_an_id_that_names_nothing_says_how_to_list_what_exists() -> None:
    client = answering(404, {"code": "execution_not_found", "message": "execution 'x' does not exist."})

    with pytest.raises(ApiError) as missing:
        client.get_workflow_execution("w", "x")

    assert "client.get_workflow_executions()" in missing.value.hint
    assert "relayflow list WORKFLOW" in str(missing.value)
