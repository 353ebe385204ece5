"""The fault profile's lost status-change events, end to end: the run a lost event leaves behind is
settled by one sweep; without the profile the reconciler settles it at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.graphs import add_node, builtin_model, new_version, ok
from tests.support.items import execution_item

from relayflow.local.faults import FaultProfile

LOSSY = FaultProfile.calm(seed=1).model_copy(update={"status_event_loss_rate": 1.0})


@pytest.fixture(params=[None, LOSSY], ids=["calm", "lossy"])
def local_stack(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from relayflow.local.stack import LocalStack

    with LocalStack(faults=request.param) as stack:
        # the sweeper looks at runs of any age (set after the start, which sets the template's)
        monkeypatch.setenv("SWEEPER_GRACE_SECONDS", "0")
        yield stack


def test_a_run_whose_status_change_was_lost_is_settled_by_the_sweeper(api: Any, local_stack: Any) -> None:
    # Given a running run
    workflow_id, version_id = new_version(api, max_retries=0)
    add_node(api, version_id, "Sleep", builtin_model(api, "sleep", seconds=2), "{{input}}")
    run_id = ok(api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"}))["id"]
    # (bounds, not timings: on a loaded 2-core machine this one-node run's stop took 15 s)
    deadline = time.monotonic() + 60
    while True:  # until its state machine has begun (the run moved to running) and is known
        item = execution_item("default", run_id)
        if item.get("status") == "running" and item.get("sfn_execution_arn"):
            break
        assert time.monotonic() < deadline, "the run never started its state machine"
        time.sleep(0.05)
    arn = item["sfn_execution_arn"]
    # When its state machine is stopped outside relayflow
    local_stack.client("stepfunctions").stop_execution(executionArn=arn, error="Console", cause="an operator")
    assert local_stack.wait_for_execution(arn, timeout=60)["status"] == "ABORTED"
    assert local_stack.wait_idle(timeout=60)
    status = ok(api("GET", f"/workflows/{workflow_id}/executions/{run_id}"), 200)["status"]
    if local_stack.faults is None:
        # Then without the profile the reconciler heard of it at once
        assert status == "cancelled"
        return
    # Then under the profile the event was lost: the run still looks active
    assert local_stack.faults.injected["status_event_lost"] >= 1
    assert status == "running"
    # And one sweep settles it
    assert local_stack.run_schedule("SweeperFunction")
    assert ok(api("GET", f"/workflows/{workflow_id}/executions/{run_id}"), 200)["status"] == "cancelled"
