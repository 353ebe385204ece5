"""Where webhooks may go (docs/security.md, "Callback URLs"): a callback URL that would reach the
sender's own network is refused when it is set (400) and again before each attempt, after DNS; a
malformed stored URL is a failed delivery in the history, never a crash of the sender.

These tests run the stack with its defaults (private addresses refused, as on AWS); the receivers of
tests/integration/test_webhooks.py opt in with the stack parameter WebhookAllowPrivateAddresses."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.test_webhooks import deliveries, make_workflow, run_to_end
from tests.support.receiver import Receiver, receiving

from relayflow.cli import build_parser
from relayflow.local.stack import LocalStack
from relayflow_runtime.services import deps
from relayflow_runtime.services.apikeys import DEFAULT_TENANT

# Each test makes its own workflows and runs: one stack for the module (tests/conftest.py).
pytestmark = pytest.mark.shared_stack

REFUSED = [
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "javascript:alert(1)",
    "http://169.254.169.254/latest/meta-data/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://127.1:8080/",
    "http://localhost:8080/hook",
    "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://0.0.0.0/",
    "http://user:secret@hooks.example.com/",
    "http://[::1/x",
    "http://hooks.example.com:99999/",
    "http://hooks.example.com:0/",
    "http:///no-host",
    "http://hooks example.com/",
]


@pytest.fixture
def listening() -> Iterator[Receiver]:
    """An HTTP receiver on 127.0.0.1 (it must never be reached here)."""
    with receiving() as state:
        yield state


def test_callback_urls_that_reach_the_senders_network_are_refused_when_set(api: Any) -> None:
    # Given a workflow, and a run to start
    workflow_id = make_workflow(api)
    for url in REFUSED:
        # When a workflow is created or updated, or a run started, with such a callback URL
        created = api("POST", "/workflows", {"name": "w", "callback_url": url})
        updated = api("PATCH", f"/workflows/{workflow_id}", {"callback_url": url})
        run = {"single_input": "x", "callback_url": url}
        started = api("POST", f"/workflows/{workflow_id}/executions", run)
        # Then each is a 400 that says why, and nothing was written
        for status, body in (created, updated, started):
            assert (status, body["code"]) == (400, "invalid_callback_url"), (url, body)
            assert body["message"].startswith("callback_url"), body
    _, workflow = api("GET", f"/workflows/{workflow_id}")
    assert workflow["callback_url"] is None
    _, page = api("GET", f"/workflows/{workflow_id}/executions")
    assert page["items"] == []
    # And a public https URL is accepted
    status, _ = api("PATCH", f"/workflows/{workflow_id}", {"callback_url": "https://hooks.example.com/rf"})
    assert status == 200


def test_a_name_that_resolves_to_a_private_address_is_refused_at_send(
    local_stack: LocalStack, api: Any, listening: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a public-looking name whose DNS answer (at send time) is the loopback address of a live
    # receiver: accepted when set, since the name is not an address
    port = listening.port
    real = socket.getaddrinfo

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "hooks.rebind.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://hooks.rebind.example:{port}/hook"
    workflow_id = make_workflow(api, callback_url=url)
    api("POST", f"/workflows/{workflow_id}/webhook-secret")
    # When a run completes
    execution = run_to_end(api, workflow_id, {"single_input": "x"})
    # Then the one attempt is a final failure that says why, and the receiver got nothing
    (attempt,) = deliveries(api, workflow_id, execution["id"], 1)
    assert (attempt["outcome"], attempt["final"], attempt["response_status"]) == ("failed", True, None)
    assert "is not a public address" in attempt["error"]
    assert local_stack.wait_idle(timeout=10)
    assert listening.requests == []


def test_a_stored_loopback_url_is_refused_at_send(
    local_stack: LocalStack, api: Any, listening: Receiver
) -> None:
    # Given a workflow whose stored callback URL is a live receiver on 127.0.0.1 (set before the
    # rules existed: written to the table directly)
    port = listening.port
    workflow_id = make_workflow(api)
    api("POST", f"/workflows/{workflow_id}/webhook-secret")
    deps.stores().workflows.update_workflow(
        DEFAULT_TENANT, workflow_id, {"callback_url": f"http://127.0.0.1:{port}/hook"}
    )
    # When a run completes
    execution = run_to_end(api, workflow_id, {"single_input": "x"})
    # Then nothing is sent: one final failed attempt says why
    (attempt,) = deliveries(api, workflow_id, execution["id"], 1)
    assert (attempt["outcome"], attempt["final"]) == ("failed", True)
    assert "is not a public address" in attempt["error"]
    assert local_stack.wait_idle(timeout=10)
    assert listening.requests == []


@pytest.mark.parametrize("url", ["http://[::1/x", "http://hooks.example.com:99999/"])
def test_a_malformed_stored_url_is_a_failed_delivery_not_a_crash(
    local_stack: LocalStack, api: Any, url: str
) -> None:
    # Given a workflow whose stored callback URL does not parse (written to the table directly)
    workflow_id = make_workflow(api)
    api("POST", f"/workflows/{workflow_id}/webhook-secret")
    deps.stores().workflows.update_workflow(DEFAULT_TENANT, workflow_id, {"callback_url": url})
    # When a run completes, and its webhook is re-sent
    execution = run_to_end(api, workflow_id, {"single_input": "x"})
    first = deliveries(api, workflow_id, execution["id"], 1)
    status, _ = api("POST", f"/workflows/{workflow_id}/executions/{execution['id']}/deliveries")
    assert status == 202
    both = deliveries(api, workflow_id, execution["id"], 2)
    # Then each round is one failed, final attempt that names the problem
    assert len(first) == 1
    assert [(a["round"], a["attempt"], a["outcome"], a["final"]) for a in both] == [
        (0, 1, "failed", True),
        (1, 1, "failed", True),
    ]
    assert all(a["error"].startswith("callback_url is not a valid URL") for a in both)
    # And no message of the sender went to the dead-letter queue (the operator's alarm)
    assert local_stack.wait_idle(timeout=10)
    dead = local_stack.client("sqs").get_queue_attributes(
        QueueUrl=local_stack.outputs["WebhookDeadLetterQueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages"],
    )
    assert dead["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_serve_allows_private_callback_urls_only_when_asked() -> None:
    assert build_parser().parse_args(["serve"]).allow_private_webhooks is False
    assert build_parser().parse_args(["serve", "--allow-private-webhooks"]).allow_private_webhooks is True
