"""Every status change of a run, and each node's completion, is published on the relayflow
EventBridge bus with a versioned schema; captured here the way a user would: a rule to a queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relayflow.local.stack import LocalStack
from relayflow_runtime.services import notify

STATUS_FIELDS = {
    "schema_version",
    "tenant",
    "execution_id",
    "workflow_id",
    "version_id",
    "number",
    "input_mode",
    "status",
    "progress",
    "error",
    "created_at",
    "started_at",
    "completed_at",
    "time",
}
NODE_FIELDS = {
    "schema_version",
    "tenant",
    "execution_id",
    "workflow_id",
    "version_id",
    "node_id",
    "node_name",
    "node_idx",
    "status",
    "attempts",
    "duration_ms",
    "error",
    "time",
}


class Capture:
    """An EventBridge rule on the relayflow bus whose target is an SQS queue."""

    def __init__(self, stack: LocalStack, pattern: dict[str, Any]) -> None:
        self.sqs = stack.client("sqs")
        name = f"capture-{uuid.uuid4().hex[:8]}"
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events, bus = stack.client("events"), stack.outputs["EventBusName"]
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
        # the node runner reads the bus's rules once a minute: a rule just added is read now
        notify.forget_rules()
        self.received: list[dict[str, Any]] = []
        self._events, self._bus, self._name = events, bus, name

    def close(self) -> None:
        """Remove the rule and its queue, so the tests after this one (on the shared stack) meet
        the bus as the template leaves it: no rule for node events, none sent."""
        self._events.remove_targets(Rule=self._name, EventBusName=self._bus, Ids=["queue"])
        self._events.delete_rule(Name=self._name, EventBusName=self._bus)
        self.sqs.delete_queue(QueueUrl=self.url)
        notify.forget_rules()

    def until(self, predicate: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not predicate(self.received) and time.monotonic() < deadline:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            for message in messages:
                self.received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            if not messages:
                time.sleep(0.05)
        return self.received


def of_run(execution_id: str) -> Any:
    """A predicate of the events received so far: whether the run's own end is among them (the
    shared stack's other runs publish on the same bus)."""
    return lambda events: terminal([e for e in events if e["detail"].get("execution_id") == execution_id])


def terminal(events: list[dict[str, Any]]) -> bool:
    return any(
        e["detail-type"] == "Execution Status Change"
        and e["detail"]["status"] in ("completed", "failed", "cancelled")
        for e in events
    )


def make_workflow(api: Any, models: list[str], config: dict[str, Any] | None = None) -> tuple[str, str]:
    _, workflow = api("POST", "/workflows", {"name": "announced"})
    _, version = api("POST", f"/workflows/{workflow['id']}/versions", {"config": config} if config else {})
    for index, name in enumerate(models):
        model_config = {"model": name, **({"seconds": 5} if name == "sleep" else {})}
        _, model = api("POST", "/models", {"name": name, "provider": "builtin", "config": model_config})
        node = {"name": f"step{index}", "entity_id": model["id"]}
        status, body = api("POST", f"/versions/{version['id']}/nodes", node)
        assert status == 201, body
    return str(workflow["id"]), str(version["id"])


@pytest.fixture
def capturing(local_stack: LocalStack) -> Iterator[Callable[[dict[str, Any]], Capture]]:
    """Captures of the given patterns, each closed when the test ends."""
    made: list[Capture] = []

    def make(pattern: dict[str, Any]) -> Capture:
        made.append(Capture(local_stack, pattern))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def capture(capturing: Callable[[dict[str, Any]], Capture]) -> Capture:
    return capturing({"source": ["relayflow"]})


def test_a_whole_run_announces_its_status_changes_in_order(
    local_stack: LocalStack, api: Any, capture: Capture
) -> None:
    # Given a rule that sends every relayflow event to a queue, and a workflow of two nodes
    workflow_id, version_id = make_workflow(api, ["uppercase", "word_count"])

    # When a run goes from start to end
    _, execution = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "one two three"})
    events = [
        e
        for e in capture.until(of_run(execution["id"]))
        if e["detail"].get("execution_id") == execution["id"]
    ]

    # Then the queue got pending, running, completed, in that order, with the node completions between
    assert all(e["source"] == "relayflow" for e in events)
    sequence = [(e["detail-type"], e["detail"]["status"]) for e in events]
    assert sequence == [
        ("Execution Status Change", "pending"),
        ("Execution Status Change", "running"),
        ("Node Execution Finished", "completed"),
        ("Node Execution Finished", "completed"),
        ("Execution Status Change", "completed"),
    ]
    statuses = [e["detail"] for e in events if e["detail-type"] == "Execution Status Change"]
    nodes = [e["detail"] for e in events if e["detail-type"] == "Node Execution Finished"]
    # And every event carries schema version 1 and the documented fields
    for detail in statuses:
        assert set(detail) == STATUS_FIELDS
        assert detail["schema_version"] == "1" and detail["tenant"] == "default"
        assert (detail["execution_id"], detail["workflow_id"], detail["version_id"]) == (
            execution["id"],
            workflow_id,
            version_id,
        )
        assert detail["progress"]["total_nodes"] == 2
    for detail in nodes:
        assert set(detail) == NODE_FIELDS
        assert detail["execution_id"] == execution["id"] and detail["version_id"] == version_id
        assert detail["attempts"] == 1 and detail["duration_ms"] >= 0 and detail["error"] is None
    # (the two nodes' events in either order: the first releases its child before it sends its own)
    assert sorted((n["node_idx"], n["node_name"]) for n in nodes) == [(0, "step0"), (1, "step1")]
    assert statuses[0]["started_at"] is None and statuses[1]["started_at"] is not None
    assert statuses[2]["completed_at"] is not None and statuses[2]["error"] is None
    assert statuses[2]["progress"]["current_node_id"] == nodes[1]["node_id"]
    times = [d["time"] for d in statuses]
    assert times == sorted(times)


def test_a_failed_run_announces_the_failed_node_and_the_error(
    local_stack: LocalStack, api: Any, capture: Capture
) -> None:
    # Given a workflow whose second node always fails
    workflow_id, _ = make_workflow(api, ["uppercase", "fail"])

    # When it runs
    _, execution = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"})
    events = [
        e
        for e in capture.until(of_run(execution["id"]))
        if e["detail"].get("execution_id") == execution["id"]
    ]

    # Then the failed node and the failed run are announced, each with its error
    sequence = [(e["detail-type"], e["detail"]["status"]) for e in events]
    assert sequence == [
        ("Execution Status Change", "pending"),
        ("Execution Status Change", "running"),
        ("Node Execution Finished", "completed"),
        ("Node Execution Finished", "failed"),
        ("Execution Status Change", "failed"),
    ]
    failed_node, failed_run = events[3]["detail"], events[4]["detail"]
    assert failed_node["node_name"] == "step1" and failed_node["error"]
    assert failed_run["error"].startswith("node 'step1' failed")


def test_a_cancelled_run_ends_with_cancelled(local_stack: LocalStack, api: Any, capture: Capture) -> None:
    # Given a run of a slow node
    workflow_id, _ = make_workflow(api, ["sleep"])
    _, execution = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"})

    # When it is cancelled
    status, _ = api("POST", f"/workflows/{workflow_id}/executions/{execution['id']}/cancel")
    assert status == 200
    events = [
        e
        for e in capture.until(of_run(execution["id"]))
        if e["detail"].get("execution_id") == execution["id"]
    ]

    # Then its announcements move forward only and end with cancelled (an announcement delivered
    # twice is one: PutEvents and its retries deliver at least once, and a consumer drops a repeat
    # of the same detail)
    details = [e["detail"] for e in events if e["detail-type"] == "Execution Status Change"]
    statuses = [d["status"] for i, d in enumerate(details) if d not in details[:i]]
    assert statuses[0] == "pending" and statuses[-1] == "cancelled"
    assert statuses in (["pending", "cancelled"], ["pending", "running", "cancelled"])
    assert events[-1]["detail"]["error"] == "cancelled by request"


def test_a_rule_can_select_terminal_statuses_only(
    local_stack: LocalStack, api: Any, capturing: Callable[[dict[str, Any]], Capture]
) -> None:
    # Given a rule for the end of runs only, as a user would write it
    ends = capturing(
        {
            "source": ["relayflow"],
            "detail-type": ["Execution Status Change"],
            "detail": {"status": ["completed", "failed", "cancelled"]},
        },
    )
    workflow_id, _ = make_workflow(api, ["uppercase"])

    # When a run completes
    _, execution = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"})
    events = ends.until(terminal)
    assert local_stack.wait_idle(timeout=10)
    events = ends.until(lambda received: False, timeout=0.3)

    # Then that rule saw exactly one event
    assert [(e["detail"]["execution_id"], e["detail"]["status"]) for e in events] == [
        (execution["id"], "completed")
    ]


def test_a_rule_for_node_events_only_gets_each_node_of_a_run(
    local_stack: LocalStack, api: Any, capturing: Callable[[dict[str, Any]], Capture]
) -> None:
    # Given a rule for node events alone (the template's own rules match none: without such a
    # rule the runner sends none)
    nodes = capturing({"detail-type": [{"prefix": "Node "}]})
    workflow_id, _ = make_workflow(api, ["uppercase", "word_count"])

    # When a run of two nodes completes
    _, execution = api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "a b"})
    events = nodes.until(lambda received: len(received) >= 2)

    # Then the queue got both nodes' events, through the local stack's EventBridge, as before (in
    # either order: neither EventBridge nor a standard queue keeps one, and the first node releases
    # its child before it sends its own event)
    assert sorted((e["detail-type"], e["detail"]["node_name"]) for e in events) == [
        ("Node Execution Finished", "step0"),
        ("Node Execution Finished", "step1"),
    ]
    assert all(
        set(e["detail"]) == NODE_FIELDS and e["detail"]["execution_id"] == execution["id"] for e in events
    )
