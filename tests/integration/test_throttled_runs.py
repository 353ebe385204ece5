"""Throttling slows runs, it does not fail them (issue 23 #3), on the local stack with Lambda's
reserved concurrency enforced (the fault profile's ``reserved_concurrency``): the node runner is
held to one invocation at a time, so a fan-out's gates and nodes are refused with
``Lambda.TooManyRequestsException`` and wait their turn (the machines' long, fully jittered Retry)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from tests.support.workflows import build, wait

from relayflow import Client
from relayflow.local.faults import FaultProfile
from relayflow.local.stack import LocalStack

#: Node runner invocations at once: one, so every parallel branch is refused while another runs.
RUNNER_CONCURRENCY = 1
FAN_OUT = 5
SLEEP_SECONDS = 1.5


@pytest.fixture
def local_stack() -> Iterator[LocalStack]:
    profile = FaultProfile.calm(seed=3).model_copy(update={"reserved_concurrency": True})
    with LocalStack(faults=profile) as stack:
        assert stack.faults is not None
        stack.faults.reserved[stack.functions["NodeRunnerFunction"].function_name] = RUNNER_CONCURRENCY
        yield stack


def test_a_fan_out_over_the_runners_concurrency_waits_its_turn_and_completes(
    local_stack: LocalStack, client: Client
) -> None:
    # Given a root and five children of 1.5 s each, on a node runner that runs one at a time (the
    # children need 7.5 s in turn: more than the former Retry's 3 attempts waited, ~7 s at most)
    nodes = [("Root", {"model": "uppercase"}, {})] + [
        (f"Child{n}", {"model": "sleep", "seconds": SLEEP_SECONDS}, {}) for n in range(FAN_OUT)
    ]
    built = build(client, nodes, version_config={"max_retries": 0})
    for n in range(FAN_OUT):
        client.create_workflow_edge(built.version_id, built.node_ids["Root"], built.node_ids[f"Child{n}"])
    began = time.monotonic()
    # When it runs
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="hi")
    done = wait(client, built, execution, timeout=240)
    # Then the throttled invocations waited their turn and every node ran: the run completed
    assert local_stack.faults is not None
    assert local_stack.faults.injected["lambda_too_many_requests"] > 0
    assert done.status == "completed", done.error
    assert {n["status"] for n in done.node_executions.values()} == {"completed"}
    assert all(n["attempts"] == 1 for n in done.node_executions.values())
    assert time.monotonic() - began >= FAN_OUT * SLEEP_SECONDS
