"""Webhooks: a finished run is POSTed to its callback URL, signed with the workflow's secret,
retried with backoff, and every attempt is recorded. A real receiver listens on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from boto3.dynamodb.conditions import Key
from tests.support.receiver import Receiver, receiving

from relayflow.local.stack import LocalStack
from relayflow_runtime.services import deps, webhooks
from relayflow_runtime.services.apikeys import DEFAULT_TENANT


@pytest.fixture
def local_stack() -> Iterator[LocalStack]:
    """The receivers here listen on 127.0.0.1: this stack lets callback URLs name private addresses
    (the stack parameter WebhookAllowPrivateAddresses, "false" by default and on AWS;
    tests/integration/test_webhook_urls.py runs the default)."""
    with LocalStack(parameters={"WebhookAllowPrivateAddresses": "true"}) as stack:
        yield stack


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as state:
        yield state


@pytest.fixture
def quick_retries(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry delays of tens of milliseconds instead of seconds (the sender reads them per delivery)."""
    monkeypatch.setenv("WEBHOOK_RETRY_BASE_SECONDS", "0.05")
    monkeypatch.setenv("WEBHOOK_RETRY_MAX_SECONDS", "0.2")
    monkeypatch.setenv("WEBHOOK_TIMEOUT_SECONDS", "5")


def verify_like_the_readme(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver-side check of docs/events-and-triggers.md, written out independently."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < tolerance


def make_workflow(api: Any, *, model: str = "uppercase", callback_url: str | None = None) -> str:
    _, created = api("POST", "/models", {"name": model, "provider": "builtin", "config": {"model": model}})
    body: dict[str, Any] = {"name": "hooked"}
    if callback_url:
        body["callback_url"] = callback_url
    _, workflow = api("POST", "/workflows", body)
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {})
    status, _ = api("POST", f"/versions/{version['id']}/nodes", {"name": "only", "entity_id": created["id"]})
    assert status == 201
    return str(workflow["id"])


def run_to_end(api: Any, workflow_id: str, body: dict[str, Any]) -> dict[str, Any]:
    status, execution = api("POST", f"/workflows/{workflow_id}/executions", body)
    assert status == 201, execution
    deadline = time.monotonic() + 20
    while execution["status"] not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.05)
        _, execution = api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}")
    return dict(execution)


def deliveries(api: Any, workflow_id: str, execution_id: str, count: int) -> list[dict[str, Any]]:
    """The execution's delivery attempts, oldest first, once `count` are recorded."""
    deadline = time.monotonic() + 15
    while True:
        status, page = api("GET", f"/workflows/{workflow_id}/executions/{execution_id}/deliveries")
        assert status == 200, page
        if len(page["items"]) >= count or time.monotonic() > deadline:
            return list(reversed(page["items"]))
        time.sleep(0.05)


def test_a_receiver_gets_a_correctly_signed_webhook_when_a_run_completes(
    local_stack: LocalStack, api: Any, receiver: Receiver, quick_retries: None
) -> None:
    # Given a workflow whose callback URL is a receiver on 127.0.0.1, and its secret (shown once)
    workflow_id = make_workflow(api, callback_url=receiver.url)
    status, created = api("POST", f"/workflows/{workflow_id}/webhook-secret")
    assert status == 201 and created["secret"].startswith("whsec_")
    _, shown_again = api("GET", f"/workflows/{workflow_id}")
    assert created["secret"] not in json.dumps(shown_again)

    # When a run completes
    execution = run_to_end(api, workflow_id, {"single_input": "hello hooks"})
    assert execution["status"] == "completed"

    # Then the receiver gets one POST, signed over "<t>.<body>" with that secret
    (request,) = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["path"] == "/hooks/relayflow"
    assert headers["content-type"] == "application/json"
    assert verify_like_the_readme(created["secret"], headers["x-relayflow-signature"], request["body"])
    assert not verify_like_the_readme("whsec_wrong", headers["x-relayflow-signature"], request["body"])
    payload = json.loads(request["body"])
    assert payload["type"] == "execution.completed" == headers["x-relayflow-event"]
    assert payload["schema_version"] == "1"
    assert payload["id"] == headers["x-relayflow-delivery"]
    assert payload["data"]["id"] == execution["id"]
    assert payload["data"]["workflow_id"] == workflow_id
    assert payload["data"]["status"] == "completed"
    assert payload["data"]["results"]["output"] == "HELLO HOOKS"
    # And the attempt is recorded and listed, for the execution and for the workflow
    (attempt,) = deliveries(api, workflow_id, execution["id"], 1)
    assert attempt["outcome"] == "delivered" and attempt["response_status"] == 200 and attempt["final"]
    assert attempt["delivery_id"] == payload["id"] and attempt["url"] == receiver.url
    _, per_workflow = api("GET", f"/workflows/{workflow_id}/deliveries")
    assert [a["delivery_id"] for a in per_workflow["items"]] == [payload["id"]]
    # And however often the status change reaches the webhook queue, it is not POSTed again
    detail = {"tenant": "default", "execution_id": execution["id"], "status": "completed"}
    event = {"detail-type": "Execution Status Change", "source": "relayflow", "detail": detail}
    sqs = local_stack.client("sqs")
    for _ in range(2):
        sqs.send_message(QueueUrl=local_stack.outputs["WebhookQueueUrl"], MessageBody=json.dumps(event))
    assert local_stack.wait_idle(timeout=10)
    assert len(receiver.requests) == 1


def test_a_receiver_that_fails_twice_gets_the_webhook_on_the_third_try(
    local_stack: LocalStack, api: Any, receiver: Receiver, quick_retries: None
) -> None:
    # Given a receiver that answers 500, then 503, then 200
    receiver.statuses[:] = [500, 503]
    workflow_id = make_workflow(api, callback_url=receiver.url)
    _, created = api("POST", f"/workflows/{workflow_id}/webhook-secret")

    # When a run completes
    execution = run_to_end(api, workflow_id, {"single_input": "again"})

    # Then the third POST is accepted: the same delivery, each attempt freshly signed
    requests = receiver.wait_for(3)
    assert len(requests) == 3
    ids = {r["headers"]["X-Relayflow-Delivery"] for r in requests}
    assert len(ids) == 1
    assert {r["body"] for r in requests} == {requests[0]["body"]}
    assert all(
        verify_like_the_readme(created["secret"], r["headers"]["X-Relayflow-Signature"], r["body"])
        for r in requests
    )
    # And the record shows two failures with the answers, then the delivery
    attempts = deliveries(api, workflow_id, execution["id"], 3)
    assert [(a["attempt"], a["outcome"], a["response_status"], a["final"]) for a in attempts] == [
        (1, "failed", 500, False),
        (2, "failed", 503, False),
        (3, "delivered", 200, True),
    ]
    assert attempts[0]["error"] == "the receiver answered 500"
    assert attempts[0]["next_attempt_at"] is not None and attempts[2]["next_attempt_at"] is None
    assert execution["status"] == "completed"


def test_a_rejected_upload_is_posted_to_its_workflow_callback_url_signed_and_retried(
    local_stack: LocalStack, api: Any, receiver: Receiver, quick_retries: None
) -> None:
    # Given a workflow with a callback URL (a receiver answering 503, then 200) and its secret, and
    # one without a callback URL
    receiver.statuses[:] = [503]
    workflow_id = make_workflow(api, callback_url=receiver.url)
    _, created = api("POST", f"/workflows/{workflow_id}/webhook-secret")
    quiet_id = make_workflow(api)
    api("POST", f"/workflows/{quiet_id}/webhook-secret")
    s3 = local_stack.client("s3")
    bucket = local_stack.outputs["BucketName"]

    # When an empty file (which no run can read) is uploaded for each, and one for no workflow
    key = f"inputs/{workflow_id}/empty.txt"
    for where in (workflow_id, quiet_id, "wf-that-does-not-exist"):
        s3.put_object(Bucket=bucket, Key=f"inputs/{where}/empty.txt", Body=b"")
    assert local_stack.wait_idle(timeout=15)

    # Then the receiver gets the first one's rejection: refused once, then accepted, both attempts
    # the same delivery and body, each signed with the workflow's secret
    requests = receiver.wait_for(2)
    assert len(requests) == 2
    assert {r["headers"]["X-Relayflow-Delivery"] for r in requests} == {json.loads(requests[0]["body"])["id"]}
    assert requests[0]["body"] == requests[1]["body"]
    assert all(
        verify_like_the_readme(created["secret"], r["headers"]["X-Relayflow-Signature"], r["body"])
        for r in requests
    )
    payload = json.loads(requests[1]["body"])
    assert payload["type"] == "upload.rejected" == requests[1]["headers"]["X-Relayflow-Event"]
    assert payload["schema_version"] == "1"
    # And its data is the reason the uploader finds beside the key
    beside = s3.get_object(Bucket=bucket, Key=f"{key}.reason.json")["Body"].read()
    assert payload["data"] == json.loads(beside)
    assert payload["data"]["code"] == "empty_file" and payload["data"]["workflow_id"] == workflow_id
    assert payload["created_at"] == payload["data"]["rejected_at"]
    # And nothing else was POSTed: the other rejections have no callback URL to go to
    assert local_stack.wait_idle(timeout=10)
    assert len(receiver.requests) == 2


def test_a_dead_receiver_never_fails_the_run_and_the_attempts_stop_at_the_limit(
    local_stack: LocalStack,
    api: Any,
    receiver: Receiver,
    quick_retries: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a receiver that always answers 500, and at most 3 attempts
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "3")
    receiver.statuses[:] = [500] * 10
    workflow_id = make_workflow(api, callback_url=receiver.url)
    api("POST", f"/workflows/{workflow_id}/webhook-secret")

    # When a run completes
    execution = run_to_end(api, workflow_id, {"single_input": "x"})

    # Then the run is completed all the same, and three failed attempts are recorded, the last final
    assert execution["status"] == "completed"
    attempts = deliveries(api, workflow_id, execution["id"], 3)
    assert [(a["outcome"], a["final"]) for a in attempts] == [
        ("failed", False),
        ("failed", False),
        ("failed", True),
    ]
    assert local_stack.wait_idle(timeout=10)
    assert len(receiver.requests) == 3


def test_a_receiver_that_cannot_be_reached_reads_the_same_whatever_the_reason(
    local_stack: LocalStack, api: Any, quick_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a callback URL on a port where nothing listens (connection refused), two attempts at most
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    workflow_id = make_workflow(api, callback_url=f"http://127.0.0.1:{closed_port}/hook")
    api("POST", f"/workflows/{workflow_id}/webhook-secret")
    # When a run completes
    execution = run_to_end(api, workflow_id, {"single_input": "x"})
    # Then the attempts record one generic outcome, no network detail (refused, reset and timed out
    # read the same: the history is no port scanner), and are retried like any failure
    attempts = deliveries(api, workflow_id, execution["id"], 2)
    assert [(a["outcome"], a["final"], a["response_status"]) for a in attempts] == [
        ("failed", False, None),
        ("failed", True, None),
    ]
    assert {a["error"] for a in attempts} == {webhooks.UNREACHABLE}


def test_an_execution_callback_url_gets_its_failed_run(
    local_stack: LocalStack, api: Any, receiver: Receiver, quick_retries: None
) -> None:
    # Given a workflow without a callback URL whose only node always fails
    workflow_id = make_workflow(api, model="fail")
    _, created = api("POST", f"/workflows/{workflow_id}/webhook-secret")

    # When a run names its own callback URL and fails
    execution = run_to_end(api, workflow_id, {"single_input": "x", "callback_url": receiver.url})
    assert execution["status"] == "failed"

    # Then that URL gets execution.failed with the error
    (request,) = receiver.wait_for(1)
    payload = json.loads(request["body"])
    assert payload["type"] == "execution.failed"
    assert payload["data"]["error"] == execution["error"]
    assert verify_like_the_readme(
        created["secret"], request["headers"]["X-Relayflow-Signature"], request["body"]
    )


def test_without_a_secret_nothing_is_sent_and_the_record_says_why(
    local_stack: LocalStack, api: Any, receiver: Receiver, quick_retries: None
) -> None:
    # Given a workflow with a callback URL but no webhook secret yet
    workflow_id = make_workflow(api, callback_url=receiver.url)

    # When a run completes
    execution = run_to_end(api, workflow_id, {"single_input": "x"})

    # Then nothing is POSTed unsigned, and the one recorded attempt tells how to fix it
    (attempt,) = deliveries(api, workflow_id, execution["id"], 1)
    assert attempt["outcome"] == "failed" and attempt["final"]
    assert f"POST /workflows/{workflow_id}/webhook-secret" in attempt["error"]
    assert receiver.requests == []


def test_rotating_replaces_the_secret_and_unknown_workflows_are_404(api: Any) -> None:
    # Given a workflow with a secret
    workflow_id = make_workflow(api)
    _, first = api("POST", f"/workflows/{workflow_id}/webhook-secret")
    # When it is rotated
    status, second = api("POST", f"/workflows/{workflow_id}/webhook-secret")
    # Then a different secret is shown
    assert status == 201 and second["secret"] != first["secret"]
    # And neither secrets nor deliveries exist for a workflow that does not
    status, body = api("POST", "/workflows/nope/webhook-secret")
    assert status == 404 and body["code"] == "workflow_not_found"
    status, body = api("GET", "/workflows/nope/deliveries")
    assert status == 404


def test_deleting_a_workflow_deletes_its_signing_secret(api: Any) -> None:
    # Given a workflow with a webhook signing secret, and another workflow with one
    workflow_id, other_id = make_workflow(api), make_workflow(api)
    for wf in (workflow_id, other_id):
        assert api("POST", f"/workflows/{wf}/webhook-secret")[0] == 201
    store = deps.stores().webhooks
    assert store.get_webhook_secret(DEFAULT_TENANT, workflow_id) is not None
    # When the first workflow is deleted
    status, _ = api("DELETE", f"/workflows/{workflow_id}")
    # Then its secret item is gone from the table, and the other workflow keeps its own
    assert status == 200
    assert store.get_webhook_secret(DEFAULT_TENANT, workflow_id) is None
    assert store.get_webhook_secret(DEFAULT_TENANT, other_id) is not None
    # And no item of the workflow's own key remains
    left = store.table.query(KeyConditionExpression=Key("pk").eq(f"T#{DEFAULT_TENANT}#WF#{workflow_id}"))
    assert left["Items"] == []


def test_signatures_and_the_retry_schedule() -> None:
    # Given a secret, a body and a time
    secret, body, now = "whsec_test", b'{"a":1}', 1_700_000_000
    # When relayflow signs
    header = webhooks.sign(secret, now, body)
    # Then the README's check accepts it, and a changed body, secret or an old stamp is refused
    assert header.startswith(f"t={now},v1=")
    assert webhooks.verify(secret, header, body, now=now + 10)
    assert not webhooks.verify(secret, header, b'{"a":2}', now=now)
    assert not webhooks.verify("whsec_other", header, body, now=now)
    assert not webhooks.verify(secret, header, body, now=now + 301)
    assert not webhooks.verify(secret, "garbage", body, now=now)
    # And the delays double from the base up to the cap
    config = webhooks.WebhookConfig(retry_base_seconds=1, retry_max_seconds=5)
    assert [config.delay_after(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_the_client_rotates_the_secret_and_lists_deliveries(
    local_stack: LocalStack, served: str, receiver: Receiver, quick_retries: None
) -> None:
    from relayflow.client import Client

    with Client(served, api_key=local_stack.api_key) as client:
        # Given a workflow with a callback URL and a secret, through the Python client
        model = client.create_model("u", "builtin", {"model": "uppercase"})
        workflow = client.create_workflow("by client", callback_url=receiver.url)
        version = client.create_workflow_version(workflow.id)
        client.create_workflow_node(version.id, "n", model.id)
        secret = client.rotate_webhook_secret(workflow.id)
        # When a run completes
        execution = client.execute_workflow(workflow.id, single_input="x")
        client.wait_for_execution(workflow.id, execution.id, poll_interval=0.05, timeout=20)
        receiver.wait_for(1)
        # Then the deliveries are typed objects, per execution and per workflow
        deadline = time.monotonic() + 10
        while not (attempts := client.get_webhook_deliveries(workflow.id, execution.id)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert [(a.outcome, a.attempt, a.execution_id) for a in attempts] == [("delivered", 1, execution.id)]
        assert attempts.next_token is None
        assert [a.delivery_id for a in client.get_webhook_deliveries(workflow.id)] == [
            attempts[0].delivery_id
        ]
    assert webhooks.verify(
        secret.secret, receiver.requests[0]["headers"]["X-Relayflow-Signature"], receiver.requests[0]["body"]
    )


def test_a_webhook_that_ran_out_of_attempts_is_re_sent_by_request_through_the_client_and_the_cli(
    local_stack: LocalStack,
    served: str,
    receiver: Receiver,
    quick_retries: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from relayflow.cli import main
    from relayflow.client import Client

    # Given a receiver that was down for a run's two attempts
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "2")
    receiver.statuses[:] = [503, 503]
    with Client(served, api_key=local_stack.api_key) as client:
        model = client.create_model("u", "builtin", {"model": "uppercase"})
        workflow = client.create_workflow("re-sent", callback_url=receiver.url)
        version = client.create_workflow_version(workflow.id)
        client.create_workflow_node(version.id, "n", model.id)
        secret = client.rotate_webhook_secret(workflow.id)
        execution = client.execute_workflow(workflow.id, single_input="x")
        client.wait_for_execution(workflow.id, execution.id, poll_interval=0.05, timeout=20)
        assert local_stack.wait_idle(timeout=15)
        first = list(client.get_webhook_deliveries(workflow.id, execution.id))
        assert [(a.round, a.attempt, a.outcome, a.final) for a in reversed(first)] == [
            (0, 1, "failed", False),
            (0, 2, "failed", True),
        ]

        # When the receiver is back and the user re-sends through the client
        queued = client.resend_webhook(workflow.id, execution.id)
        assert (queued.round, queued.delivery_id, queued.event_type) == (
            1,
            first[0].delivery_id,
            "execution.completed",
        )
        assert local_stack.wait_idle(timeout=15)

        # Then it is delivered: the same delivery id and body, signed afresh, recorded under round 1
        requests = receiver.wait_for(3)
        assert len(requests) == 3
        assert {r["headers"]["X-Relayflow-Delivery"] for r in requests} == {queued.delivery_id}
        assert requests[2]["body"] == requests[0]["body"]
        assert verify_like_the_readme(
            secret.secret, requests[2]["headers"]["X-Relayflow-Signature"], requests[2]["body"]
        )
        latest = client.get_webhook_deliveries(workflow.id, execution.id)[0]
        assert (latest.round, latest.attempt, latest.outcome, latest.final) == (1, 1, "delivered", True)

    # And the CLI re-sends too, and lists the history
    env = {"RELAYFLOW_URL": served, "RELAYFLOW_API_KEY": local_stack.api_key or ""}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    assert main(["resend-webhook", workflow.id, execution.id, "--json"], stdout=out) == 0
    assert json.loads(out.getvalue())["round"] == 2
    assert local_stack.wait_idle(timeout=15)
    out = io.StringIO()
    assert main(["deliveries", workflow.id, execution.id, "--json"], stdout=out) == 0
    listed = json.loads(out.getvalue())["items"]
    assert [(a["round"], a["outcome"]) for a in listed][:2] == [(2, "delivered"), (1, "delivered")]
    assert len(receiver.requests) == 4


def test_a_re_send_needs_a_finished_run_with_a_callback_url(
    local_stack: LocalStack, api: Any, receiver: Receiver, quick_retries: None
) -> None:
    # Given a finished run of a workflow without a callback URL
    workflow_id = make_workflow(api)
    execution = run_to_end(api, workflow_id, {"single_input": "x"})
    # Then a re-send says what is missing
    status, body = api("POST", f"/workflows/{workflow_id}/executions/{execution['id']}/deliveries")
    assert (status, body["code"]) == (409, "no_callback_url")
    # And a run still going has nothing to re-send yet
    _, sleepy = api("POST", "/models", {"name": "s", "provider": "builtin", "config": {"model": "sleep"}})
    _, workflow = api("POST", "/workflows", {"name": "slow", "callback_url": receiver.url})
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {})
    api("POST", f"/versions/{version['id']}/nodes", {"name": "z", "entity_id": sleepy["id"]})
    status, running = api("POST", f"/workflows/{workflow['id']}/executions", {"single_input": "x"})
    status, body = api("POST", f"/workflows/{workflow['id']}/executions/{running['id']}/deliveries")
    assert (status, body["code"]) == (409, "execution_active")
    # And an unknown execution is 404
    status, body = api("POST", f"/workflows/{workflow_id}/executions/nope/deliveries")
    assert status == 404


def test_a_message_the_sender_keeps_failing_on_ends_in_the_webhook_dead_letter_queue(
    local_stack: LocalStack, api: Any, receiver: Receiver, quick_retries: None
) -> None:
    from relayflow.local import moto_shim

    # Given a webhook sender that crashes on every message
    def crashing(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("the sender is broken")

    workflow_id = make_workflow(api, callback_url=receiver.url)
    api("POST", f"/workflows/{workflow_id}/webhook-secret")
    with moto_shim.override("relayflow_runtime.handlers.webhook_sender.lambda_handler", crashing):
        # When a run completes
        execution = run_to_end(api, workflow_id, {"single_input": "x"})
        # Then after five receives (the queue's maxReceiveCount) the message is in the dead-letter queue
        sqs = local_stack.client("sqs")
        url = local_stack.outputs["WebhookDeadLetterQueueUrl"]
        deadline = time.monotonic() + 30
        messages: list[dict[str, Any]] = []
        while not messages and time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert body["detail"]["execution_id"] == execution["id"] and body["detail"]["status"] == "completed"
    assert receiver.requests == []
