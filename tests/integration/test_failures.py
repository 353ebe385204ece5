"""Runs that fail, stall or are stopped behave exactly as documented (issue 3), on the local stack."""

from __future__ import annotations

import threading
import time

import pytest
from tests.support.workflows import build, by_name, wait, wait_for_node

from relayflow import ApiError, Client
from relayflow.local.stack import LocalStack

# One stack for the module: each test builds and runs workflows of its own.
pytestmark = pytest.mark.shared_stack

FAST = {"max_retries": 3, "retry_delay_seconds": 1, "max_retry_delay_seconds": 1}
UPPER = {"model": "uppercase"}


def test_transient_failures_are_retried_until_success(client: Client):
    # Given a node that fails transiently twice, and three retries allowed
    built = build(
        client, [("Flaky", {"model": "flaky", "failures": 2}, {}), ("Shout", UPPER, {})], version_config=FAST
    )
    # When it runs
    started = time.monotonic()
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="ok"))
    # Then the run completes after three attempts, each failed attempt's error recorded
    nodes = by_name(done)
    assert done.status == "completed" and done.results["output"] == "OK"
    assert nodes["Flaky"]["status"] == "completed"
    assert nodes["Flaky"]["attempts"] == 3
    assert [e.split(":")[0] for e in nodes["Flaky"]["attempt_errors"]] == ["attempt 1", "attempt 2"]
    assert nodes["Shout"]["attempts"] == 1
    assert time.monotonic() - started < 15  # two capped 1 s retry delays, not minutes


def test_a_permanent_error_is_not_retried(client: Client):
    # Given a node whose model fails permanently, with retries allowed
    built = build(
        client,
        [("Broken", {"model": "flaky", "permanent": True}, {}), ("Next", UPPER, {})],
        version_config=FAST,
    )
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    # Then it ran once, the run failed naming the node, and the next node never started
    nodes = by_name(done)
    assert done.status == "failed"
    assert nodes["Broken"]["attempts"] == 1
    assert nodes["Broken"]["status"] == "failed"
    assert "Broken" in done.error
    assert done.progress.current_node_id == built.node_ids["Broken"]
    assert nodes["Next"]["attempts"] == 0 and nodes["Next"]["status"] == "skipped"


def test_an_unknown_template_variable_at_run_time_is_permanent(client: Client):
    # Given a node reading an upstream node's output, where that node fails and the run continues
    built = build(
        client,
        [
            ("Optional", {"model": "fail"}, {"on_failure": "continue"}),
            ("Reader", UPPER, {"input_template": "{{nodes.Optional}}"}),
        ],
        version_config=FAST,
    )
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    # Then the reader fails once (not retried) because the variable has no value
    reader = by_name(done)["Reader"]
    assert done.status == "failed"
    assert reader["attempts"] == 1
    assert "nodes.Optional" in reader["error"]


def test_node_timeout_fails_the_attempt_and_the_retry_policy_applies(client: Client):
    # Given a node that sleeps 3 s with a 1 s timeout and one retry
    built = build(
        client,
        [("Slow", {"model": "sleep", "seconds": 3}, {"timeout": 1}), ("After", UPPER, {})],
        version_config={**FAST, "max_retries": 1},
    )
    started = time.monotonic()
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    elapsed = time.monotonic() - started
    # Then both attempts timed out after about a second each and the run failed
    slow = by_name(done)["Slow"]
    assert done.status == "failed"
    assert slow["status"] == "timed_out"
    assert slow["attempts"] == 2
    assert all("timed out after 1 seconds" in e for e in slow["attempt_errors"])
    assert 2.0 <= elapsed < 8
    assert by_name(done)["After"]["attempts"] == 0


def test_version_default_timeout_applies_where_the_node_has_none(client: Client):
    built = build(
        client,
        [("Slow", {"model": "sleep", "seconds": 3}, {})],
        version_config={**FAST, "max_retries": 0, "node_timeout": 1},
    )
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    assert done.status == "failed"
    assert by_name(done)["Slow"]["status"] == "timed_out"
    assert "timed out after 1 seconds" in by_name(done)["Slow"]["error"]


def test_continue_on_failure_records_the_node_and_passes_on_the_last_good_output(client: Client):
    built = build(
        client,
        [
            ("First", UPPER, {}),
            ("Optional", {"model": "fail", "message": "enhancer is down"}, {"on_failure": "continue"}),
            ("Last", {"model": "echo"}, {"input_template": "got: {{input}}"}),
        ],
        version_config=FAST,
    )
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="hello"))
    nodes = by_name(done)
    # Then the run completed, the failed node is visible, and the next node received "HELLO"
    assert done.status == "completed"
    assert nodes["Optional"]["status"] == "failed"
    assert nodes["Optional"]["error"] == "enhancer is down"
    assert nodes["Optional"]["prompt"] == "HELLO"  # what the failed node was sent
    assert nodes["Last"]["prompt"] == "got: HELLO"
    assert done.results["output"] == "got: HELLO"
    assert done.error is None


def test_stop_on_failure_fails_the_run_at_that_node(client: Client):
    built = build(
        client,
        [("First", UPPER, {}), ("Required", {"model": "fail", "message": "boom"}, {}), ("Never", UPPER, {})],
        version_config=FAST,
    )
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="hello"))
    nodes = by_name(done)
    assert done.status == "failed"
    assert done.error == "node 'Required' failed: boom"
    assert done.progress.current_node_id == built.node_ids["Required"]
    assert done.progress.current_node_idx == 1
    assert nodes["First"]["status"] == "completed"
    assert nodes["Never"]["status"] == "skipped" and nodes["Never"]["attempts"] == 0
    assert done.results is None


def test_workflow_timeout_fails_the_run_promptly_and_marks_the_running_node(client: Client):
    # Given a 10 s node in a run limited to 2 s
    built = build(
        client, [("Slow", {"model": "sleep", "seconds": 10}, {}), ("Never", UPPER, {})], version_config=FAST
    )
    started = time.monotonic()
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x", timeout=2)
    done = wait(client, built, execution, timeout=20)
    elapsed = time.monotonic() - started
    # Then it failed with a timeout error within a few seconds of the limit
    assert done.status == "failed"
    assert "timed out after 2 seconds" in done.error
    assert 2.0 <= elapsed < 6
    nodes = by_name(done)
    assert nodes["Slow"]["status"] == "timed_out"
    assert nodes["Never"]["attempts"] == 0


def test_cancel_while_a_node_runs_stops_the_machine_and_no_later_node_starts(
    client: Client, local_stack: LocalStack
):
    built = build(
        client, [("Sleeper", {"model": "sleep", "seconds": 2}, {}), ("After", UPPER, {})], version_config=FAST
    )
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Sleeper", "running")
    # When it is cancelled while the sleep node runs
    cancelled = client.cancel_workflow_execution(workflow_id=built.workflow_id, execution_id=execution.id)
    assert cancelled.status == "cancelled"
    # Then, after the sleeper would have finished, nothing moved on
    time.sleep(2.5)
    final = client.get_workflow_execution(built.workflow_id, execution.id)
    nodes = by_name(final)
    assert final.status == "cancelled"
    assert nodes["Sleeper"]["status"] == "cancelled"
    assert nodes["After"]["status"] == "cancelled" and nodes["After"]["attempts"] == 0
    assert final.results is None
    sfn = local_stack.client("stepfunctions")
    runs = sfn.list_executions(stateMachineArn=_machine_arn(local_stack, execution.id))["executions"]
    run = next(r for r in runs if r["name"] == execution.id)
    # AWS reports ABORTED at once; moto lets the in-flight task return first, which then fails the run
    assert run["status"] in ("ABORTED", "FAILED")
    history = sfn.get_execution_history(executionArn=run["executionArn"], maxResults=1000)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert "02 After" not in entered


def _settled(local_stack: LocalStack, execution_id: str) -> None:
    """Every writer of a run is done: its state machine execution has ended (an in-flight task has
    returned) and its status change has reached the reconciler. (A fixed 0.3 s wait before: 18 s of
    the cancel race's 60 runs; this is shorter and does not depend on the machine's speed.)"""
    machine = _machine_arn(local_stack, execution_id)
    local_stack.wait_for_execution(f"{machine.replace(':stateMachine:', ':execution:')}:{execution_id}")
    deadline = time.monotonic() + 30
    local_stack.eventbridge.catch_up()
    while not local_stack.eventbridge.idle():
        assert time.monotonic() < deadline, "a status change of the run is still being delivered"
        time.sleep(0.02)


def _machine_arn(local_stack: LocalStack, execution_id: str) -> str:
    sfn = local_stack.client("stepfunctions")
    for machine in sfn.list_state_machines()["stateMachines"]:
        for run in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]:
            if run["name"] == execution_id:
                return str(machine["stateMachineArn"])
    raise AssertionError("no state machine execution")


def test_cancel_of_a_finished_run_is_409_and_cancel_twice_is_harmless(client: Client):
    built = build(client, [("Shout", UPPER, {})])
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    with pytest.raises(ApiError) as error:
        client.cancel_workflow_execution(workflow_id=built.workflow_id, execution_id=done.id)
    assert error.value.status == 409
    assert error.value.code == "execution_finished"
    assert "completed" in error.value.message

    slow = build(client, [("Sleeper", {"model": "sleep", "seconds": 1}, {})])
    running = client.execute_workflow(workflow_id=slow.workflow_id, single_input="x")
    first = client.cancel_workflow_execution(workflow_id=slow.workflow_id, execution_id=running.id)
    second = client.cancel_workflow_execution(workflow_id=slow.workflow_id, execution_id=running.id)
    assert first.status == second.status == "cancelled"
    assert first.completed_at == second.completed_at


def test_cancel_racing_completion_always_ends_in_one_consistent_outcome(
    client: Client, local_stack: LocalStack
):
    # Given a fast one-node workflow, cancelled at varying moments around its completion
    built = build(client, [("Shout", UPPER, {})])
    outcomes: dict[str, int] = {}
    for attempt in range(60):
        execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="race")
        time.sleep((attempt % 10) * 0.01)
        answer: list[object] = []

        def cancel(execution_id: str = execution.id, sink: list[object] = answer) -> None:
            try:
                sink.append(client.cancel_workflow_execution(built.workflow_id, execution_id).status)
            except ApiError as exc:
                sink.append(exc.status)

        worker = threading.Thread(target=cancel)
        worker.start()
        worker.join()
        done = wait(client, built, execution)
        _settled(local_stack, execution.id)  # give a losing writer every chance to overwrite
        final = client.get_workflow_execution(built.workflow_id, execution.id)
        node = by_name(final)["Shout"]
        # Then status, answer, node record and results agree, and the terminal state never changed
        assert final.status == done.status
        if final.status == "completed":
            assert answer == [409]
            assert final.results["output"] == "RACE" and node["status"] == "completed"
        else:
            assert final.status == "cancelled" and answer == ["cancelled"], (final.error, answer)
            assert final.results is None
            assert node["status"] in ("cancelled", "completed", "pending"), node
            assert node["status"] != "running", node
        outcomes[final.status] = outcomes.get(final.status, 0) + 1
    assert set(outcomes) <= {"completed", "cancelled"}


def test_retry_settings_changed_on_the_version_apply_to_the_next_execution(client: Client):
    built = build(client, [("Flaky", {"model": "flaky", "failures": 1}, {})], version_config=FAST)
    client.update_workflow_version(
        workflow_id=built.workflow_id, version_id=built.version_id, config={"max_retries": 0}
    )
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    assert done.status == "failed"
    assert by_name(done)["Flaky"]["attempts"] == 1


def test_an_execution_keeps_the_snapshot_it_ran_with_and_rerun_reuses_it(client: Client):
    built = build(client, [("Echo", {"model": "echo"}, {"input_template": "v1: {{input}}"})])
    first = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="a"))
    # When the version's node is edited after the run
    client.update_workflow_node(
        built.version_id, built.node_ids["Echo"], config={"input_template": "v2: {{input}}"}
    )
    # Then the old record keeps its meaning, a re-run repeats it, and a new run uses the edit
    assert client.get_workflow_execution(built.workflow_id, first.id).results["output"] == "v1: a"
    rerun = client.rerun_workflow_execution(workflow_id=built.workflow_id, execution_id=first.id)
    assert rerun.id != first.id and rerun.rerun_of == first.id
    assert wait(client, built, rerun).results["output"] == "v1: a"
    fresh = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="a"))
    assert fresh.results["output"] == "v2: a"


def test_version_id_runs_that_version_even_when_another_is_active(client: Client):
    built = build(client, [("Echo", {"model": "echo"}, {"input_template": "old {{input}}"})])
    newer = client.create_workflow_version(
        workflow_id=built.workflow_id, copy_from_version_id=built.version_id
    )
    node = client.get_workflow_nodes(newer.id)[0]
    client.update_workflow_node(newer.id, node.id, config={"input_template": "new {{input}}"})
    client.update_workflow(built.workflow_id, active_version_id=newer.id)
    active = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    pinned = wait(
        client,
        built,
        client.execute_workflow(workflow_id=built.workflow_id, version_id=built.version_id, single_input="x"),
    )
    assert (active.results["output"], active.version_id) == ("new x", newer.id)
    assert (pinned.results["output"], pinned.version_id) == ("old x", built.version_id)


def test_an_abort_outside_relayflow_is_reconciled_to_cancelled(client: Client, local_stack: LocalStack):
    # Given a running execution
    built = build(client, [("Sleeper", {"model": "sleep", "seconds": 1}, {}), ("After", UPPER, {})])
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Sleeper", "running")
    sfn = local_stack.client("stepfunctions")
    arn = (
        _machine_arn(local_stack, execution.id).replace(":stateMachine:", ":execution:") + f":{execution.id}"
    )
    # When Step Functions reports it ABORTED (stopped in the console; moto cannot preempt a running
    # Lambda task, so the status-change event AWS would send is delivered to the reconciler as is)
    event = local_stack.status_change_event({**sfn.describe_execution(executionArn=arn), "status": "ABORTED"})
    assert local_stack.invoke("ReconcilerFunction", event) == {"reconciled": True}
    # Then the record ends cancelled with its open nodes cancelled, and nothing overwrites that
    done = wait(client, built, execution, timeout=10)
    assert done.status == "cancelled"
    time.sleep(1.5)
    final = client.get_workflow_execution(built.workflow_id, execution.id)
    assert final.status == "cancelled"
    assert by_name(final)["Sleeper"]["status"] == "cancelled"
    assert by_name(final)["After"]["status"] == "cancelled"


def test_the_reconciler_ignores_a_distributed_map_child_execution(client: Client, local_stack: LocalStack):
    # Given a running execution
    built = build(client, [("Sleeper", {"model": "sleep", "seconds": 1}, {}), ("After", UPPER, {})])
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Sleeper", "running")
    sfn = local_stack.client("stepfunctions")
    machine = _machine_arn(local_stack, execution.id)
    executions_of_machine = machine.replace(":stateMachine:", ":execution:")
    run = sfn.describe_execution(executionArn=f"{executions_of_machine}:{execution.id}")
    # When a FAILED status change of one of its batch items' child executions reaches the reconciler
    # (the rule leaves those out; this one even carries the run's own ctx in its input)
    child_arn = f"{executions_of_machine}/Items:5c7b1f0e-1d2e-3f4a-9b8c-7d6e5f4a3b2c"
    child = {**run, "executionArn": child_arn, "stateMachineArn": f"{machine}/Items", "status": "FAILED"}
    # Then it is ignored, and the run goes on to complete
    assert local_stack.invoke("ReconcilerFunction", local_stack.status_change_event(child)) == {
        "reconciled": False
    }
    assert client.get_workflow_execution(built.workflow_id, execution.id).status == "running"
    assert wait(client, built, execution, timeout=10).status == "completed"


def test_the_reconciler_ignores_runs_already_recorded(client: Client, local_stack: LocalStack):
    built = build(client, [("Shout", UPPER, {})])
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    sfn = local_stack.client("stepfunctions")
    arn = _machine_arn(local_stack, done.id).replace(":stateMachine:", ":execution:") + f":{done.id}"
    event = local_stack.status_change_event({**sfn.describe_execution(executionArn=arn), "status": "FAILED"})
    local_stack.invoke("ReconcilerFunction", event)
    assert client.get_workflow_execution(built.workflow_id, done.id).status == "completed"
