"""A lost gate is not invisible (issue 23 #7), with the real node runner on the local stack: a gate
parks for its ancestors' worst case (plus a margin, lowered here to keep the tests short), then
checks again: it releases itself when its parents are done, and fails its node with a clear error
when they never finish. A run past its worst case is counted by the sweeper (``OverdueRuns``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.workflows import build, wait, wait_for_node

from relayflow import Client
from relayflow.local.stack import LocalStack
from relayflow_runtime.domain import engine
from relayflow_runtime.domain.engine import Plan, RunRef
from relayflow_runtime.services import deps, metrics, run_machine, sweeper

TENANT = "default"
UPPER = {"model": "uppercase"}
#: Two nodes of 2 s without retries: the child's gate waits 2 s (its parent's worst case) + 2 s.
CHAIN = [("First", UPPER, {"timeout": 2}), ("Second", UPPER, {"timeout": 2})]


@pytest.fixture
def short_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "GATE_MARGIN_SECONDS", 2)


def test_a_gate_whose_release_was_lost_releases_itself_when_it_checks_again(
    local_stack: LocalStack, client: Client, short_gates: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given parents whose end is recorded on their children, but whose release (SendTaskSuccess)
    # is lost
    def lost_release(run: RunRef, plan: Plan, node_id: str) -> None:
        for child in plan.children(node_id):
            deps.stores().executions.mark_parent_done(run.tenant, run.execution_id, child.id, node_id)

    monkeypatch.setattr(run_machine, "_release_children", lost_release)
    built = build(client, CHAIN, version_config={"max_retries": 0})
    # When the run runs (its own timeout far away)
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="hi", timeout=120)
    done = wait(client, built, execution, timeout=60)
    # Then the second node's gate timed out after its parent's worst case, saw its parent done and
    # released itself: the run completed, long before its own timeout
    assert done.status == "completed", done.error
    assert done.node_executions[built.node_ids["Second"]]["output"] == "HI"


def test_a_gate_whose_parents_never_finish_fails_its_node_with_a_clear_error(
    local_stack: LocalStack, client: Client, short_gates: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given parents whose end never reaches their children (neither the record nor the release)
    monkeypatch.setattr(run_machine, "_release_children", lambda run, plan, node_id: None)
    monkeypatch.setattr(run_machine, "MAX_GATE_CHECKS", 2)
    built = build(client, CHAIN, version_config={"max_retries": 0})
    # When the run runs
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="hi", timeout=120)
    done = wait(client, built, execution, timeout=60)
    # Then the child's gate parked again once, then failed its node: the run fails saying why,
    # instead of waiting for its own timeout
    assert done.status == "failed"
    second = done.node_executions[built.node_ids["Second"]]
    assert second["status"] == "failed"
    assert "waited" in second["error"] and "(First)" in second["error"]
    assert "never finished" in second["error"]
    assert done.error is not None and "Second" in done.error and "never finished" in done.error


def test_a_run_past_its_worst_case_is_counted_overdue_by_the_sweeper(
    local_stack: LocalStack, client: Client, api: Any
) -> None:
    # Given a running run (a slow node) and one whose overdue_at, written at its start, has passed
    built = build(client, [("Sleeper", {"model": "sleep", "seconds": 3}, {})])
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Sleeper", "running")
    record = deps.stores().executions.get_execution(TENANT, execution.id)
    started = datetime.fromisoformat(record["started_at"].replace("Z", "+00:00"))
    overdue_at = datetime.fromisoformat(record["overdue_at"].replace("Z", "+00:00"))
    # (its worst case: one 300 s node, 3 retries and their delays, plus the 30-minute margin)
    assert overdue_at - started >= timedelta(seconds=300 * 4 + engine.OVERDUE_MARGIN_SECONDS)
    # When the sweeper looks now, and as if after overdue_at
    with metrics.recording() as counted:
        now_report = sweeper.sweep(grace_seconds=0)
        later_report = sweeper.sweep(grace_seconds=0, now=overdue_at + timedelta(seconds=1))
    # Then it is overdue only after overdue_at, and counted (metric OverdueRuns, alarmed)
    assert execution.id not in now_report.overdue
    assert later_report.overdue == [execution.id]
    assert metrics.total(counted, metrics.OVERDUE_RUNS) == 1
    assert wait(client, built, execution).status == "completed"
    assert datetime.now(UTC) < overdue_at
