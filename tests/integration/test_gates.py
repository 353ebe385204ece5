"""The run machine's node gates with the real node runner on the local stack.

A gate is a conditional DynamoDB write of the node's task token (no Lambda): of it and the last
parent's update of the same record, exactly one releases the node, whichever comes first (issue
20). A root never parks. A lost gate is not invisible (issue 23 #7): a gate parks for its
ancestors' worst case (plus a margin, lowered here to keep the tests short), then checks again: it
runs its node when its parents are done, and fails its node with a clear error when they never
finish. A run past its worst case is counted by the sweeper (``OverdueRuns``)."""

from __future__ import annotations

import importlib
import itertools
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.support.gates import PARKED_AND_RELEASED, RAN_AT_ONCE, gate_outcomes
from tests.support.items import execution_item
from tests.support.run_definition import iteration
from tests.support.workflows import build, by_name, wait, wait_for_node

from relayflow import Client
from relayflow.local import moto_shim
from relayflow.local.stack import LocalStack
from relayflow_runtime.domain import engine
from relayflow_runtime.domain.engine import NodeSpec, Plan, RunRef
from relayflow_runtime.handlers import node_runner
from relayflow_runtime.services import deps, metrics, run_machine, sweeper

TENANT = "default"
UPPER = {"model": "uppercase"}
#: Two nodes of 2 s without retries: the child's gate waits 2 s (its parent's worst case) + 2 s.
CHAIN = [("First", UPPER, {"timeout": 2}), ("Second", UPPER, {"timeout": 2})]


NODE_RUNNER = "relayflow_runtime.handlers.node_runner.lambda_handler"
AWS_SDK_TASK = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk"
)


@pytest.fixture
def short_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "GATE_MARGIN_SECONDS", 2)


def sfn_arn(execution_id: str) -> str:
    return str(execution_item(TENANT, execution_id)["sfn_execution_arn"])


def node_record(execution_id: str, node_id: str) -> dict[str, Any]:
    records = deps.stores().executions.node_records(TENANT, execution_id)
    return next(r for r in records if r["node_id"] == node_id)


def gate_write(stack: LocalStack, key: dict[str, str], token: str, parents: int) -> bool:
    """The run machine's AwaitParents write, its parameters as statemachine/run.asl.json has them;
    whether it stored the token (False: its condition failed, the node runs at once)."""
    parameters = dict(iteration("Gated")["AwaitParents"]["Parameters"])
    assert parameters.pop("Key") == {"pk": {"S.$": "$.node.gate.pk"}, "sk": {"S.$": "$.node.gate.sk"}}
    assert parameters.pop("TableName") == "${TableName}"
    values = dict(parameters.pop("ExpressionAttributeValues"))
    assert values.pop(":tk") == {"S.$": "$$.Task.Token"}
    assert values.pop(":parents") == {"N.$": "States.Format('{}', $.node.parents)"}
    try:
        stack.client("dynamodb").update_item(
            TableName=stack.outputs["TableName"],
            Key={name: {"S": value} for name, value in key.items()},
            ExpressionAttributeValues={":tk": {"S": token}, ":parents": {"N": str(parents)}, **values},
            **parameters,
        )
    except ClientError as error:
        assert error.response["Error"]["Code"] == "ConditionalCheckFailedException"
        return False
    return True


def test_of_a_gate_and_its_last_parent_exactly_one_releases_the_node_in_any_order(
    local_stack: LocalStack,
) -> None:
    # Given a node with two parents, its record as launch writes it (pending)
    store = deps.stores().executions
    node = NodeSpec.model_validate(
        {"id": "C", "name": "C", "idx": 2, "template": "", "node_timeout": 30, "parents": ["A", "B"],
         "model": {"id": "m", "provider": "builtin"}}
    )
    for order in itertools.permutations(["gate", "A", "B"]):
        execution_id = f"x-{uuid.uuid4().hex[:8]}"
        store.put_node_record_if_absent(
            TENANT, execution_id, "N#C", {"node_id": "C", "status": "pending", "attempts": 0}
        )
        key = store.gate_key(TENANT, execution_id, "C")
        # When the gate's write and each parent's update (run_machine._release_children's) come in
        # this order, each seeing the record its own write left
        parked, released = None, []
        for step in order:
            if step == "gate":
                parked = gate_write(local_stack, key, f"token-{execution_id}", len(node.parents))
            else:
                record = store.mark_parent_done(TENANT, execution_id, "C", step)
                if run_machine._ready(node, record):
                    released.append(record["token"])
        # Then exactly one side lets the node go: the last parent releases the stored token, or the
        # gate finds every parent done, stores nothing and runs the node at once
        if order[-1] == "gate":
            assert parked is False and released == [], order
            assert "token" not in node_record(execution_id, "C"), order
        else:
            assert parked is True and released == [f"token-{execution_id}"], order
    # And a root's gate (no parent to wait for) stores no token: its node runs at once
    pending = {"node_id": "R", "status": "pending", "attempts": 0}
    store.put_node_record_if_absent(TENANT, "x-root", "N#R", pending)
    assert gate_write(local_stack, store.gate_key(TENANT, "x-root", "R"), "token-root", 0) is False
    assert "token" not in node_record("x-root", "R")


def test_a_child_whose_parent_ended_before_its_gate_wrote_runs_without_parking(
    local_stack: LocalStack, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a chain First -> Second whose Second's gate write is held until First's end is
    # recorded on Second's record (the parent finishing before the child's token is written)
    built = build(client, CHAIN, version_config={"max_retries": 0})
    first, second = built.node_ids["First"], built.node_ids["Second"]
    service = importlib.import_module(AWS_SDK_TASK).StateTaskServiceAwsSdk
    original = service._eval_service_task
    held: list[str] = []

    def after_the_parent(self: Any, **kwargs: Any) -> Any:
        key = kwargs["normalised_parameters"]["Key"]
        if key["sk"]["S"] == f"N#{second}":
            execution_id = key["pk"]["S"].rsplit("#", 1)[1]
            deadline = time.monotonic() + 20
            while first not in (node_record(execution_id, second).get("done_parents") or ()):
                assert time.monotonic() < deadline, "the parent never ended"
                time.sleep(0.02)
            held.append(execution_id)
        return original(self, **kwargs)

    monkeypatch.setattr(service, "_eval_service_task", after_the_parent)
    # When the run runs
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="hi", timeout=120)
    done = wait(client, built, execution, timeout=60)
    # Then Second's gate found its parent done: no token stored, nothing to release, and it ran at once
    assert held == [execution.id]
    assert done.status == "completed", done.error
    assert done.node_executions[second]["output"] == "HI"
    outcomes = dict(gate_outcomes(local_stack.client("stepfunctions"), sfn_arn(execution.id)))
    assert outcomes[second] == RAN_AT_ONCE
    assert "token" not in node_record(execution.id, second)


@contextmanager
def gate_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The node ids of the gate writes the run machine makes itself (its aws-sdk DynamoDB calls),
    counted where the local stack's Step Functions makes them."""
    service = importlib.import_module(AWS_SDK_TASK).StateTaskServiceAwsSdk
    original = service._eval_service_task
    calls: list[str] = []

    def counted(self: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["normalised_parameters"]["Key"]["sk"]["S"].removeprefix("N#"))
        return original(self, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(service, "_eval_service_task", counted)
        yield calls


def test_a_root_makes_no_gate_call_and_no_gate_invokes_the_node_runner(
    local_stack: LocalStack, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a chain Root -> Child, the node runner's invocations and the machine's gate writes recorded
    built = build(client, [("Root", {"model": "sleep", "seconds": 0.5}, {}), ("Child", UPPER, {})])
    root, child = built.node_ids["Root"], built.node_ids["Child"]
    actions: list[str] = []

    def recording(event: dict[str, Any], context: Any) -> Any:
        actions.append(event["action"])
        return node_runner.lambda_handler(event, context)

    with moto_shim.override(NODE_RUNNER, recording), gate_calls(monkeypatch) as gates:
        execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="hi")
        done = wait(client, built, execution)
    assert done.status == "completed", done.error
    # Then the runner was invoked once per node and once at each end of the run, never for a gate
    assert sorted(actions) == ["complete", "node", "node", "start"]
    # the root made no gate call at all (no DynamoDB write, no token): it ran at once; the child's
    # gate wrote once, parked while the root ran, and was released by it
    assert gates == [child]
    outcomes = dict(gate_outcomes(local_stack.client("stepfunctions"), sfn_arn(execution.id)))
    assert outcomes == {child: PARKED_AND_RELEASED}
    assert "token" not in node_record(execution.id, root)


def test_two_roots_and_a_diamond_gate_only_the_nodes_with_parents(
    local_stack: LocalStack, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two roots (A, slow B), C after A, D after A and B, E after C and D: a fan-out, two
    # fan-ins and a diamond (A -> C -> E, A -> D -> E)
    built = build(
        client,
        [
            ("A", UPPER, {}),
            ("B", {"model": "sleep", "seconds": 0.5}, {}),
            ("C", UPPER, {}),
            ("D", UPPER, {"input_template": "{{nodes.A}} {{nodes.B}}"}),
            ("E", UPPER, {"input_template": "{{nodes.C}}/{{nodes.D}}"}),
        ],
    )
    ids = built.node_ids
    for begin, end in (("A", "C"), ("A", "D"), ("B", "D"), ("C", "E"), ("D", "E")):
        client.create_workflow_edge(
            version_id=built.version_id, begin_node_id=ids[begin], end_node_id=ids[end]
        )
    # When it runs
    with gate_calls(monkeypatch) as gates:
        execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="go")
        done = wait(client, built, execution)
    # Then every node ran once, each fan-in with its parents' outputs
    assert done.status == "completed", done.error
    nodes = by_name(done)
    assert all(node["status"] == "completed" and node["attempts"] == 1 for node in nodes.values()), nodes
    assert nodes["D"]["output"] == "GO GO" and nodes["E"]["output"] == "GO/GO GO"
    assert done.results["output"] == "GO/GO GO"
    # and only the nodes with parents wrote a gate, once each; D waited for slow B
    assert sorted(gates) == sorted(ids[name] for name in ("C", "D", "E"))
    outcomes = dict(gate_outcomes(local_stack.client("stepfunctions"), sfn_arn(execution.id)))
    assert outcomes[ids["D"]] == PARKED_AND_RELEASED


def test_a_lone_node_keeps_its_gate_and_the_run_ends_after_it(
    local_stack: LocalStack, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a workflow of one slow node: a root with no children (the API allows a childless root
    # only there: a node without edges beside connected ones is refused)
    built = build(client, [("Alone", {"model": "sleep", "seconds": 1}, {})])
    # When it runs
    with gate_calls(monkeypatch) as gates:
        execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="go")
        done = wait(client, built, execution)
    # Then it ran once and the run completed after it, with its output
    assert done.status == "completed", done.error
    node = by_name(done)["Alone"]
    assert (node["status"], node["attempts"], node["output"]) == ("completed", 1, "go")
    assert node["completed_at"] <= done.completed_at and done.results["output"] == "go"
    # and it kept its gate (in the Map that ends the run): one write whose condition failed at once
    assert gates == [built.node_ids["Alone"]]
    outcomes = dict(gate_outcomes(local_stack.client("stepfunctions"), sfn_arn(execution.id)))
    assert outcomes == {built.node_ids["Alone"]: RAN_AT_ONCE}


def test_a_gate_whose_release_was_lost_releases_itself_when_it_checks_again(
    local_stack: LocalStack, client: Client, short_gates: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given parents whose end is recorded on their children, but whose release (SendTaskSuccess)
    # is lost
    def lost_release(run: RunRef, plan: Plan, node_id: str, completed: Any = None) -> None:
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
    monkeypatch.setattr(run_machine, "_release_children", lambda run, plan, node_id, completed=None: None)
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
    record = execution_item(TENANT, execution.id)
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


def test_a_gate_of_the_previous_definition_still_parks_and_releases(
    local_stack: LocalStack, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run whose First has ended (Second's record has First among its done parents), and an
    # execution of the previous run machine, whose AwaitParents invoked the runner (action gate)
    built = build(client, CHAIN, version_config={"max_retries": 0})
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="hi")
    assert wait(client, built, execution).status == "completed"
    first, second = built.node_ids["First"], built.node_ids["Second"]
    released: list[str] = []

    class Machines:
        def release(self, token: str, output: Any = None) -> None:
            released.append(token)

    monkeypatch.setattr(deps, "machines", Machines)
    run = {"tenant": TENANT, "workflow_id": built.workflow_id, "execution_id": execution.id}
    # When that gate parks the child (a node payload of the previous definition: no gate key)
    node = {"id": second, "idx": 1, "task_timeout": 4}
    function = moto_shim.FunctionInfo("runner", "arn:aws:lambda:us-east-1:123456789012:function:runner")
    context = moto_shim.LambdaContext(function)
    node_runner.lambda_handler({"action": "gate", "run": run, "node": node, "token": "t-2"}, context)
    # Then its token is stored and, its parent done, released at once
    assert node_record(execution.id, second)["token"] == "t-2"
    assert released == ["t-2"]
    assert first in node_record(execution.id, second)["done_parents"]


@pytest.mark.parametrize(
    ("error", "says"),
    [("GateTimeout", "never finished"), ("DynamoDB.InternalServerErrorException", "internal error")],
)
def test_a_gate_that_gives_up_while_a_root_still_runs_stops_the_run_whatever_its_on_failure(
    local_stack: LocalStack, client: Client, error: str, says: str
) -> None:
    # Given a run whose root is still running, and its child (on_failure continue) whose gate gave
    # up: the gated nodes' Map could then end the run's race before the roots' Map
    built = build(
        client,
        [("Slow", {"model": "sleep", "seconds": 30}, {}), ("Child", UPPER, {"on_failure": "continue"})],
        version_config={"max_retries": 0},
    )
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Slow", "running")
    run = RunRef(tenant=TENANT, workflow_id=built.workflow_id, execution_id=execution.id)
    child = run_machine.load_plan(TENANT, execution.id).node(built.node_ids["Child"])
    try:
        # When the child's gate gives up, or fails otherwise (AwaitParents catches every error),
        # and NodeFailed records it
        failure = run_machine.node_failed(
            run, engine.NodeTask.of(child, 10), {"Error": error, "Cause": "an internal error"}
        )
        # Then the run stops (the run cannot complete with Slow open), and the child's error says why
        assert failure.stop
        error = node_record(execution.id, built.node_ids["Child"])["error"]
        assert says in error and "the run stops, as Slow had not ended" in error
    finally:
        client.cancel_workflow_execution(built.workflow_id, execution.id)
