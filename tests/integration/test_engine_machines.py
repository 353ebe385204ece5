"""The real statemachine/ files, as the template deploys them, run on the local stack with a stub
node runner (a recorder standing in for the runner actions of docs/engine.md, releasing the gates
the run machine parks on the stack's table as the real runner does): the facts the engine relies
on, checked on moto through the shim."""

from __future__ import annotations

import importlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.gates import PARKED_AND_RELEASED, RAN_AT_ONCE, TIMED_OUT, gate_outcomes
from tests.support.run_definition import one_map_of_nodes

import fixtures_handlers as fx
from relayflow.local import moto_shim
from relayflow.local.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
NO_TIMEOUT = 30_000_000  # the run's clock when it has no timeout of its own (docs/engine.md)


# ------------------------------------------------------------------------------------ the stub


class TransientModelError(Exception):
    """Caught by RunNode's Catch and retried (the runner's own class has this name)."""


class PermanentModelError(Exception):
    """Caught by RunNode's Catch and recorded (the runner's own class has this name)."""


class BatchBroke(Exception):
    """A child batch's infrastructure error."""


@dataclass
class Node:
    id: str
    parents: list[str] = field(default_factory=list)
    task_timeout: int = 30
    # per attempt: "ok", "sleep:<s>", "transient", "permanent", "permanent-after:<s>"
    behaviour: list[str] = field(default_factory=lambda: ["ok"])
    on_failure: str = "stop"


class StubRunner:
    """The node runner's actions for the run, batch and jobs machines. The run machine's gates
    (AwaitParents) write their tokens on node records in the stack's table: ``start`` writes the
    records (pending, as launch does) and a finishing node adds itself to its children's
    ``done_parents`` and releases each child whose token it finds with every parent done, as
    services/run_machine.py does."""

    def __init__(self, stack: LocalStack, nodes: list[Node] | None = None, **options: Any):
        self.stack = stack
        self.nodes = {node.id: node for node in nodes or []}
        self.order = [node.id for node in nodes or []]
        self.options = options
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        self.pk = f"STUB#{uuid.uuid4().hex}"
        self.done: set[str] = set()
        #: every release sent, by node (a node's token is released once)
        self.releases: list[str] = []
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.attempts: dict[str, list[int]] = {}
        self.items_seen: list[list[Any]] = []
        self.batch_inputs: list[Any] = []
        self.failed_batches: list[list[Any]] = []
        self.handler = f"stub_runner_{uuid.uuid4().hex}"
        self.t0 = time.monotonic()

    @property
    def released(self) -> set[str]:
        with self.lock:
            return set(self.releases)

    # the Lambda handler
    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        action = event["action"]
        with self.lock:
            self.calls.append((time.monotonic() - self.t0, action, event))
        return getattr(self, f"do_{action}")(event)

    def actions(self) -> list[str]:
        with self.lock:
            return [action for _, action, _ in self.calls]

    def called(self, action: str) -> list[dict[str, Any]]:
        with self.lock:
            return [event for _, name, event in self.calls if name == action]

    # the gates' records
    def _table(self) -> Any:
        return self.stack.client("dynamodb")

    def gate_key(self, node_id: str) -> dict[str, str]:
        return {"pk": self.pk, "sk": f"N#{node_id}"}

    def tokens(self) -> dict[str, str]:
        """The tokens the gates stored, by node."""
        items = self._table().query(
            TableName=self.stack.outputs["TableName"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": self.pk}},
        )["Items"]
        return {item["sk"]["S"][2:]: item["token"]["S"] for item in items if "token" in item}

    # run machine
    def do_start(self, event: dict[str, Any]) -> dict[str, Any]:
        retry = self.options.get("retry", {"max_retries": 0, "delays": [1]})
        for node_id in self.order:
            self._table().put_item(
                TableName=self.stack.outputs["TableName"],
                Item={
                    "pk": {"S": self.pk},
                    "sk": {"S": f"N#{node_id}"},
                    "status": {"S": "pending"},
                },
            )
        nodes = [
            {
                "id": node_id,
                "idx": index,
                "task_timeout": self.nodes[node_id].task_timeout,
                "parents": len(self.nodes[node_id].parents),
                "gate": self.options.get("gate_keys", {}).get(node_id, self.gate_key(node_id)),
                "gate_timeout": self.options.get("gate_timeout", NO_TIMEOUT),
                "max_gate_checks": self.options.get("max_gate_checks", 3),
            }
            for index, node_id in enumerate(self.order)
        ]
        waited_for = {parent for node in self.nodes.values() for parent in node.parents}
        return {
            "run": event["run"],
            # the two Maps' items (a root with children runs with no gate; a childless root stays
            # gated), and every node for the previous definition
            "roots": [node for node in nodes if not node["parents"] and node["id"] in waited_for],
            "gated": [node for node in nodes if node["parents"] or node["id"] not in waited_for],
            "nodes": nodes,
            "retry": retry,
            "run_timeout": self.options.get("timeout", NO_TIMEOUT),
        }

    def do_node(self, event: dict[str, Any]) -> dict[str, Any]:
        node = self.nodes[event["node"]["id"]]
        attempt = int(event["attempt"])
        with self.lock:
            self.attempts.setdefault(node.id, []).append(attempt)
            self.started.setdefault(node.id, time.monotonic() - self.t0)
        behaviour = node.behaviour[min(attempt, len(node.behaviour) - 1)]
        if behaviour.startswith("sleep:"):
            time.sleep(float(behaviour.split(":", 1)[1]))
        elif behaviour == "transient":
            raise TransientModelError(f"{node.id}: attempt {attempt} failed")
        elif behaviour == "permanent":
            raise PermanentModelError(f"{node.id}: cannot be done")
        elif behaviour.startswith("permanent-after:"):
            time.sleep(float(behaviour.split(":", 1)[1]))
            raise PermanentModelError(f"{node.id}: cannot be done")
        self._finish(node.id)
        return {"ok": True}

    def do_node_failed(self, event: dict[str, Any]) -> dict[str, bool]:
        node = self.nodes[event["node"]["id"]]
        if node.on_failure == "continue":
            self._finish(node.id)
            return {"stop": False}
        return {"stop": True}

    def do_complete(self, event: dict[str, Any]) -> None:
        return None

    def do_fail(self, event: dict[str, Any]) -> None:
        return None

    def _finish(self, node_id: str) -> None:
        with self.lock:
            self.done.add(node_id)
            self.ended[node_id] = time.monotonic() - self.t0
        sfn = self.stack.client("stepfunctions")
        for child in (n for n in self.nodes.values() if node_id in n.parents):
            record = self._table().update_item(
                TableName=self.stack.outputs["TableName"],
                Key={"pk": {"S": self.pk}, "sk": {"S": f"N#{child.id}"}},
                UpdateExpression="ADD done_parents :p",
                ExpressionAttributeValues={":p": {"SS": [node_id]}},
                ReturnValues="ALL_NEW",
            )["Attributes"]
            # option lose_releases: the release never arrives (the gate's next check runs the node)
            if (
                "token" in record
                and set(child.parents) <= set(record["done_parents"]["SS"])
                and not self.options.get("lose_releases")
            ):
                with self.lock:
                    self.releases.append(child.id)
                sfn.send_task_success(taskToken=record["token"]["S"], output="{}")

    def cancel(self) -> int:
        """What the API's cancel does to the parked gates: SendTaskFailure on each unreleased token."""
        parked = [(n, t) for n, t in self.tokens().items() if n not in self.released]
        sfn = self.stack.client("stepfunctions")
        for _, token in parked:
            sfn.send_task_failure(taskToken=token, error="Cancelled", cause="cancelled by request")
        return len(parked)

    # batch machine
    def do_prepare_batch(self, event: dict[str, Any]) -> dict[str, Any]:
        items = self.options["items"]
        key = f"runs/{event['run']['execution_id']}/items.json"
        self.stack.client("s3").put_object(
            Bucket=self.stack.outputs["BucketName"], Key=key, Body=json.dumps(items).encode()
        )
        return {
            "run": event["run"],
            "batch": {
                "items_key": key,
                "express": self.options.get("express", True),
                "items_per_child": self.options.get("items_per_child", 4),
                "children": self.options.get("children", 3),
                "child_timeout": self.options.get("child_timeout", 60),
                "total": len(items),
            },
            "run_timeout": self.options.get("timeout", NO_TIMEOUT),
            "budget_wait": 600,
        }

    def do_reserve_budget(self, event: dict[str, Any]) -> dict[str, Any]:
        return {key: event[key] for key in ("run", "batch", "run_timeout")}

    def do_run_items(self, event: dict[str, Any]) -> dict[str, int]:
        items = event["items"]
        with self.lock:
            self.items_seen.append(items)
            self.batch_inputs.append(event["run"])
        broken = self.options.get("broken_item")
        if broken is not None and broken in items:
            raise BatchBroke(f"the batch with {broken} broke")
        return {"done": len(items)}

    def do_items_failed(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.failed_batches.append(event["items"])
        if self.options.get("items_failed_breaks"):
            raise BatchBroke("could not record the failed items either")

    # jobs machine
    def do_job(self, event: dict[str, Any]) -> dict[str, Any]:
        if event["job"].get("fail"):
            raise BatchBroke("the job failed")
        return {"done": event["job"]}


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack() as local:
        # the reconciler's events are not these tests' concern: a recorder stands in for it
        local.override_handler("ReconcilerFunction", fx.handler("record"))
        yield local


@pytest.fixture(autouse=True)
def _fresh_recordings() -> None:
    fx.reset()


def use_stub(stack: LocalStack, stub: StubRunner) -> Callable[[], None]:
    moto_shim.register(stub.handler, stub)
    stack.override_handler("NodeRunnerFunction", stub.handler)
    return lambda: moto_shim.unregister(stub.handler)


RUN = {"tenant": "t1", "workflow_id": "wf1", "execution_id": "ex1"}


def start(stack: LocalStack, machine: str, payload: dict[str, Any] | None = None) -> str:
    arn: str = stack.client("stepfunctions").start_execution(
        stateMachineArn=stack.state_machines[machine],
        name=f"ex-{uuid.uuid4().hex[:12]}",
        input=json.dumps(payload if payload is not None else {"run": RUN}),
    )["executionArn"]
    return arn


def run_to_end(stack: LocalStack, stub: StubRunner, machine: str, timeout: float = 30, **kw: Any) -> Any:
    unregister = use_stub(stack, stub)
    try:
        began = time.monotonic()
        description = stack.wait_for_execution(start(stack, machine, **kw), timeout=timeout)
        return description, time.monotonic() - began
    finally:
        unregister()


def diamond(**overrides: Any) -> list[Node]:
    """A -> {B, C} -> D, and E after C alone: B is the slow one."""
    nodes = {
        "A": Node("A"),
        "B": Node("B", ["A"], behaviour=["sleep:1.5"]),
        "C": Node("C", ["A"]),
        "E": Node("E", ["C"]),
        "D": Node("D", ["B", "C"]),
    }
    for node_id, node in overrides.items():
        nodes[node_id] = node
    return list(nodes.values())


# ------------------------------------------------------------------------------- the machines


def test_the_stack_deploys_exactly_the_statemachine_files_with_their_substitutions(stack: LocalStack):
    sfn = stack.client("stepfunctions")
    node_runner = stack.function_arn("NodeRunnerFunction")
    bucket = stack.outputs["BucketName"]
    # Then the stack's state machines are the template's three, nothing else
    listed = {sm["stateMachineArn"] for sm in sfn.list_state_machines()["stateMachines"]}
    assert listed == set(stack.state_machines.values())
    for logical_id, file in (("RunMachine", "run"), ("BatchMachine", "batch"), ("JobsMachine", "jobs")):
        described = sfn.describe_state_machine(stateMachineArn=stack.state_machines[logical_id])
        # each created from its file, byte for byte but for the deployment substitutions
        text = (ROOT / "statemachine" / f"{file}.asl.json").read_text()
        assert described["definition"] == text.replace("${NodeRunnerArn}", node_runner).replace(
            "${DataBucket}", bucket
        ).replace("${TableName}", stack.outputs["TableName"])
        assert described["type"] == "STANDARD"
        assert described["roleArn"] == stack.context.attributes[f"{logical_id}Role"]["Arn"]
        # and the functions that start executions have its ARN (!Ref) in their environment
        variable = {"RunMachine": "RUN", "BatchMachine": "BATCH", "JobsMachine": "JOBS"}[logical_id]
        assert (
            stack.functions["ApiFunction"].environment[f"{variable}_MACHINE_ARN"]
            == described["stateMachineArn"]
        )
    assert stack.outputs["RunMachineArn"] == stack.state_machines["RunMachine"]


def test_run_machine_a_node_starts_when_its_own_parents_are_done(stack: LocalStack):
    # Given a diamond whose B is slow, E waiting only on C, and no run timeout (a 30,000,000 s clock)
    stub = StubRunner(stack, diamond())
    # When the run machine runs it
    description, took = run_to_end(stack, stub, "RunMachine")
    # Then it succeeded, each node ran once, and complete was called
    assert description["status"] == "SUCCEEDED", description
    assert sorted(stub.attempts) == ["A", "B", "C", "D", "E"]
    assert all(attempts == [0] for attempts in stub.attempts.values())
    assert stub.actions().count("complete") == 1 and "fail" not in stub.actions()
    # each gate was one DynamoDB write and no runner call, and the root had none (it ran at once,
    # from the roots' Map); D (after slow B) parked; every parked gate was released exactly once
    outcomes = gate_outcomes(stack.client("stepfunctions"), description["executionArn"])
    assert sorted(node_id for node_id, _ in outcomes) == ["B", "C", "D", "E"]
    assert dict(outcomes)["D"] == PARKED_AND_RELEASED
    assert sorted(stub.releases) == sorted(n for n, outcome in outcomes if outcome == PARKED_AND_RELEASED)
    assert "gate" not in stub.actions()
    # a node waits for its own parents only: E (after C) started before slow B ended; D after both
    assert stub.started["E"] < stub.ended["B"]
    assert stub.started["D"] >= max(stub.ended["B"], stub.ended["C"])
    assert stub.started["B"] >= stub.ended["A"] and stub.started["C"] >= stub.ended["A"]
    # and the run clock's Wait of 30,000,000 s was cancelled as soon as the nodes' branch ended
    assert took < 10


def test_run_machine_retries_a_timed_out_node_with_the_versions_policy(stack: LocalStack):
    # Given B whose first attempt outlives its task timeout (TimeoutSecondsPath), then a transient
    # error, then success; max_retries 2 with capped delays of 1 s (MathRandom over ArrayGetItem)
    nodes = diamond(B=Node("B", ["A"], task_timeout=1, behaviour=["sleep:3", "transient", "ok"]))
    stub = StubRunner(stack, nodes, retry={"max_retries": 2, "delays": [1, 1]})
    # When the run machine runs it
    description, _ = run_to_end(stack, stub, "RunMachine", timeout=40)
    # Then B was attempted 0, 1, 2 (AttemptsLeft: NumericLessThanPath max_retries), and the run completed
    assert description["status"] == "SUCCEEDED", description
    assert stub.attempts["B"] == [0, 1, 2]
    assert stub.attempts["D"] == [0]
    assert "node_failed" not in stub.actions()


def test_run_machine_records_a_node_out_of_retries_and_continues_or_stops(stack: LocalStack):
    # Given C failing permanently with on_failure "continue"
    stub = StubRunner(stack, diamond(C=Node("C", ["A"], behaviour=["permanent"], on_failure="continue")))
    description, _ = run_to_end(stack, stub, "RunMachine")
    # Then node_failed recorded it, its children still ran, and the run completed
    assert description["status"] == "SUCCEEDED", description
    (failed,) = stub.called("node_failed")
    assert failed["node"]["id"] == "C" and failed["error"]["Error"] == "PermanentModelError"
    assert "D" in stub.attempts and "E" in stub.attempts
    # Given the same with on_failure "stop"
    stub = StubRunner(stack, diamond(C=Node("C", ["A"], behaviour=["permanent"], on_failure="stop")))
    description, took = run_to_end(stack, stub, "RunMachine")
    # Then the run failed at once (parked D and E aborted), recorded through fail(reason "error")
    assert description["status"] == "FAILED"
    assert description["error"] == "WorkflowFailed"
    (fail,) = stub.called("fail")
    assert fail["reason"] == "error" and fail["error"]["Error"] == "NodeFailed"
    assert "D" not in stub.attempts and "complete" not in stub.actions()
    assert took < 10


def test_run_machine_two_roots_run_with_no_gate_and_their_child_waits_for_both(stack: LocalStack):
    # Given two roots, R1 and slow R2, and J after both (a fan-in of roots), K after R1 alone
    nodes = [
        Node("R1"),
        Node("R2", behaviour=["sleep:1"]),
        Node("J", ["R1", "R2"]),
        Node("K", ["R1"]),
    ]
    stub = StubRunner(stack, nodes)
    # When the run machine runs it
    description, _ = run_to_end(stack, stub, "RunMachine")
    # Then both roots ran at once, with no gate write between the run's start and theirs
    assert description["status"] == "SUCCEEDED", description
    outcomes = dict(gate_outcomes(stack.client("stepfunctions"), description["executionArn"]))
    assert sorted(outcomes) == ["J", "K"]
    # J waited for both (parked until slow R2 released it), K only for R1
    assert outcomes["J"] == PARKED_AND_RELEASED
    assert stub.started["J"] >= max(stub.ended["R1"], stub.ended["R2"])
    assert stub.started["K"] < stub.ended["R2"]
    assert all(attempts == [0] for attempts in stub.attempts.values()) and len(stub.attempts) == 4


def test_run_machine_a_slow_root_with_no_children_beside_a_chain_ends_before_the_run_does(stack: LocalStack):
    # Given a chain A -> B and, alone, C: a root with no children, slower than the whole chain (the
    # API refuses such a graph today, but the machine must not end a run before any node of its plan)
    nodes = [Node("A"), Node("B", ["A"]), Node("C", behaviour=["sleep:2"])]
    stub = StubRunner(stack, nodes)
    # When the run machine runs it
    description, _ = run_to_end(stack, stub, "RunMachine")
    # Then the run completed only after C ended: the chain's end did not end the race
    assert description["status"] == "SUCCEEDED", description
    assert sorted(stub.attempts) == ["A", "B", "C"] and all(a == [0] for a in stub.attempts.values())
    ((completed_at, _, _),) = [call for call in stub.calls if call[1] == "complete"]
    assert stub.ended["C"] <= completed_at and stub.ended["B"] < stub.ended["C"]
    # C kept its gate (its write failed at once: it ran), A (a root with a child) had none
    outcomes = dict(gate_outcomes(stack.client("stepfunctions"), description["executionArn"]))
    assert sorted(outcomes) == ["B", "C"] and outcomes["C"] == RAN_AT_ONCE


@pytest.mark.parametrize("on_failure", ["continue", "stop"])
def test_run_machine_retries_a_root_and_records_its_failure_as_any_nodes(stack: LocalStack, on_failure: str):
    # Given two roots with children (both run in the roots' Map): R1 fails once then succeeds, R2
    # fails on both its attempts (a transient error, then a permanent one 1.5 s into its retry;
    # on_failure given), C after R2 and D after R1; the version retries once
    nodes = [
        Node("R1", behaviour=["transient", "ok"]),
        Node("R2", behaviour=["transient", "permanent-after:1.5"], on_failure=on_failure),
        Node("C", ["R2"], behaviour=["sleep:0.5"]),
        Node("D", ["R1"]),
    ]
    stub = StubRunner(stack, nodes, retry={"max_retries": 1, "delays": [1]})
    description, _ = run_to_end(stack, stub, "RunMachine", timeout=40)
    # Then the roots were retried by the version's policy (the roots' iteration: RootAttemptsLeft,
    # RootBackoff, RootRetryWait) and R2 recorded failed (RootNodeFailed: node_failed). (R1's retry
    # waits a random 0-1 s: a stop can end the run before it starts, so a stopped run is only
    # sure of R1's first attempt)
    assert stub.attempts["R2"] == [0, 1]
    assert stub.attempts["R1"] == [0, 1] if on_failure == "continue" else stub.attempts["R1"][:1] == [0]
    (failed,) = stub.called("node_failed")
    assert failed["node"]["id"] == "R2" and failed["error"]["Error"] == "PermanentModelError"
    if on_failure == "continue":
        # its child still ran and the run completed
        assert description["status"] == "SUCCEEDED", description
        assert "C" in stub.attempts and stub.actions().count("complete") == 1
    else:
        # the run failed at once, recorded through fail (reason "error"); its child never ran
        assert (description["status"], description["error"]) == ("FAILED", "WorkflowFailed")
        (fail,) = stub.called("fail")
        assert fail["reason"] == "error" and fail["error"]["Error"] == "NodeFailed"
        assert "C" not in stub.attempts and "complete" not in stub.actions()


def test_run_machine_an_execution_of_the_previous_definition_still_runs(stack: LocalStack):
    # Given the run machine as it was before a root ran without a gate (one Map over start's
    # "nodes", every node gated): an execution started before a deploy keeps it
    sfn = stack.client("stepfunctions")
    arn = stack.state_machines["RunMachine"]
    today = sfn.describe_state_machine(stateMachineArn=arn)["definition"]
    previous = one_map_of_nodes(json.loads(today))
    assert previous != json.loads(today)
    sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(previous))
    try:
        # When it runs the diamond
        stub = StubRunner(stack, diamond())
        description, _ = run_to_end(stack, stub, "RunMachine")
    finally:
        sfn.update_state_machine(stateMachineArn=arn, definition=today)
    # Then it completed as it did: the root's gate write failed its condition and the root ran
    assert description["status"] == "SUCCEEDED", description
    outcomes = gate_outcomes(sfn, description["executionArn"])
    assert sorted(node_id for node_id, _ in outcomes) == ["A", "B", "C", "D", "E"]
    assert dict(outcomes)["A"] == RAN_AT_ONCE
    assert sorted(stub.attempts) == ["A", "B", "C", "D", "E"]


def _states_entered(sfn: Any, execution_arn: str) -> list[str]:
    """The states an execution entered, in order: its Standard transitions, as bench/calls counts them."""
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    entered = [event for event in events if event["type"].endswith("StateEntered")]
    return [event["stateEnteredEventDetails"]["name"] for event in entered]


def test_run_machine_a_one_root_chain_takes_no_more_transitions_than_when_every_node_was_gated(
    stack: LocalStack,
):
    # Given a chain A -> B -> C (one root, as most workflows have), run on main's definition (one
    # Map gating every node) and on today's, side by side
    sfn = stack.client("stepfunctions")
    arn = stack.state_machines["RunMachine"]
    today = sfn.describe_state_machine(stateMachineArn=arn)["definition"]
    entered: dict[str, list[str]] = {}
    for name, definition in (("before", json.dumps(one_map_of_nodes(json.loads(today)))), ("now", today)):
        sfn.update_state_machine(stateMachineArn=arn, definition=definition)
        try:
            stub = StubRunner(stack, [Node("A"), Node("B", ["A"]), Node("C", ["B"])])
            description, _ = run_to_end(stack, stub, "RunMachine")
        finally:
            sfn.update_state_machine(stateMachineArn=arn, definition=today)
        assert description["status"] == "SUCCEEDED", description
        entered[name] = _states_entered(sfn, description["executionArn"])
    # Then the whole run took no more transitions than before: the roots' Map (one a run) is paid
    # for by the root's gate, gone with its failing DynamoDB write
    assert len(entered["now"]) <= len(entered["before"]), entered
    assert (entered["before"].count("AwaitParents"), entered["now"].count("AwaitParents")) == (3, 2)
    assert entered["now"].count("Roots") == 1 and "Nodes" not in entered["now"]


def test_run_machine_a_gate_whose_release_was_lost_asks_again_after_its_timeout(stack: LocalStack):
    # Given a diamond whose children's releases are lost (the parent's SendTaskSuccess never
    # arrives), with gates that wait 2 s (start's gate_timeout: the ancestors' worst case + a margin)
    stub = StubRunner(stack, diamond(), lose_releases=True, gate_timeout=2)
    # When the run machine runs it
    description, took = run_to_end(stack, stub, "RunMachine", timeout=40)
    # Then each parked gate timed out (States.Timeout) and wrote again: its parents done by then, the
    # condition failed and the node ran; the run completed instead of waiting for its own clock
    assert description["status"] == "SUCCEEDED", description
    outcomes = gate_outcomes(stack.client("stepfunctions"), description["executionArn"])
    timed_out = {node_id for node_id, outcome in outcomes if outcome == TIMED_OUT}
    assert "D" in timed_out  # (D waits for B, 1.5 s)
    for node_id in timed_out:
        assert outcomes.index((node_id, TIMED_OUT)) < outcomes.index((node_id, RAN_AT_ONCE))
    assert not stub.releases
    assert sorted(stub.attempts) == ["A", "B", "C", "D", "E"]
    assert "node_failed" not in stub.actions()
    assert took < 20


def test_run_machine_a_gate_that_never_opens_fails_its_node_after_max_gate_checks(stack: LocalStack):
    # Given a child whose parents' end never reaches its record (releases lost, and its gate writes
    # on a record no parent marks), gates of 1 s and 2 checks
    stub = StubRunner(
        stack,
        [Node("A"), Node("B", ["A"], on_failure="continue")],
        lose_releases=True,
        gate_timeout=1,
        max_gate_checks=2,
        gate_keys={"B": {"pk": f"STUB#{uuid.uuid4().hex}", "sk": "N#B"}},
    )
    # (the record B's gate writes on: pending, never marked done; there before the run starts, so
    # no gate write can come before it)
    key = stub.options["gate_keys"]["B"]
    stack.client("dynamodb").put_item(
        TableName=stack.outputs["TableName"],
        Item={"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}, "status": {"S": "pending"}},
    )
    unregister = use_stub(stack, stub)
    try:
        arn = start(stack, "RunMachine")
        description = stack.wait_for_execution(arn, timeout=30)
    finally:
        unregister()
    # Then B's gate parked twice, timed out twice, and B was recorded failed (GateTimeout) unrun
    assert description["status"] == "SUCCEEDED", description
    assert [o for n, o in gate_outcomes(stack.client("stepfunctions"), arn) if n == "B"] == [TIMED_OUT] * 2
    (failed,) = stub.called("node_failed")
    assert failed["node"]["id"] == "B" and failed["error"]["Error"] == "GateTimeout"
    assert "B" not in stub.attempts


def test_run_machine_a_gate_that_fails_records_its_node_failed(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
):
    # Given a gate whose write DynamoDB refuses (a ValidationException, no Retry)
    stub = StubRunner(stack, diamond(C=Node("C", ["A"], on_failure="stop")))
    backend = importlib.import_module("moto.dynamodb.models").DynamoDBBackend
    update_item = backend.update_item

    def refusing(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if key["pk"] == {"S": stub.pk} and key["sk"] == {"S": "N#C"} and "token" in str((args, kwargs)):
            raise importlib.import_module("moto.dynamodb.exceptions").MockValidationException("refused")
        return update_item(self, table_name, key, *args, **kwargs)

    monkeypatch.setattr(backend, "update_item", refusing)
    description, took = run_to_end(stack, stub, "RunMachine")
    # Then the node is recorded failed with the gate's error (node_failed), and the run stops with it
    (failed,) = stub.called("node_failed")
    assert failed["node"]["id"] == "C" and failed["error"]["Error"].startswith("DynamoDb."), failed
    assert description["status"] == "FAILED" and description["error"] == "WorkflowFailed"
    assert took < 10


def test_run_machine_ends_the_run_on_its_own_timeout(stack: LocalStack):
    # Given a run whose timeout (1 s, chosen per execution) is shorter than its slow node
    stub = StubRunner(stack, diamond(B=Node("B", ["A"], behaviour=["sleep:4"])), timeout=1)
    description, took = run_to_end(stack, stub, "RunMachine")
    # Then the run clock won: fail(reason "timeout"), FAILED RunTimedOut, well before B returned
    assert description["status"] == "FAILED"
    assert description["error"] == "RunTimedOut"
    assert [event["reason"] for event in stub.called("fail")] == ["timeout"]
    assert took < 3.5


def test_run_machine_cancel_fails_the_parked_gates_and_the_run_ends(stack: LocalStack):
    # Given a run whose B is slow, so D and E... D parks on its gate
    stub = StubRunner(stack, diamond(B=Node("B", ["A"], behaviour=["sleep:3"])))
    unregister = use_stub(stack, stub)
    try:
        arn = start(stack, "RunMachine")
        deadline = time.monotonic() + 10
        while "D" not in stub.tokens() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "D" in stub.tokens()
        # When it is cancelled as the API does: every stored, unreleased token fails
        began = time.monotonic()
        assert stub.cancel() >= 1
        description = stack.wait_for_execution(arn, timeout=15)
    finally:
        unregister()
    # Then the run ended (moto's StopExecution alone never ends a run parked on a gate)
    assert description["status"] == "FAILED"
    assert time.monotonic() - began < 5
    assert "D" not in stub.attempts


def test_batch_machine_delivers_every_item_once_in_batches_of_at_most_items_per_child(stack: LocalStack):
    # Given 25 list entries, 4 per child (MaxItemsPerBatchPath), Express children, 3 at a time
    items = [{"n": n, "key": f"item-{n}"} for n in range(25)]
    stub = StubRunner(stack, items=items, items_per_child=4, children=3, express=True)
    # When the batch machine runs the run
    description, took = run_to_end(stack, stub, "BatchMachine", timeout=60)
    # Then it succeeded and completed once; each item arrived exactly once, in batches of <= 4
    assert description["status"] == "SUCCEEDED", description
    assert stub.actions()[:2] == ["prepare_batch", "reserve_budget"]
    assert stub.actions().count("complete") == 1 and "fail" not in stub.actions()
    delivered = [item["n"] for batch in stub.items_seen for item in batch]
    assert sorted(delivered) == list(range(25))
    assert max(len(batch) for batch in stub.items_seen) == 4
    assert len(stub.items_seen) == 7  # ceil(25 / 4)
    # with the run (BatchInput) in every child's task
    assert all(run == RUN for run in stub.batch_inputs)
    # and the Map's results went to the ResultWriter (S3), not into the state: under the run's own
    # prefix, where its tenant's data lies and the run's deletion and retention reach them
    bucket = stack.outputs["BucketName"]
    keys = [obj["Key"] for obj in stack.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    results = [key for key in keys if key.startswith("executions/t1/ex1/map-results/")]
    assert any(key.endswith("/manifest.json") for key in results), keys
    assert not [key for key in keys if key.startswith("map-results/")], keys
    assert took < 30


def test_batch_machine_a_broken_batch_is_recorded_and_the_batch_still_finishes(stack: LocalStack):
    # Given Standard children of 5 items, one of which breaks its child's run_items
    items = [{"n": n} for n in range(12)]
    stub = StubRunner(stack, items=items, items_per_child=5, express=False, broken_item={"n": 7})
    description, _ = run_to_end(stack, stub, "BatchMachine", timeout=60)
    # Then the child's Catch recorded that batch's items as failed, and the run completed
    assert description["status"] == "SUCCEEDED", description
    assert stub.failed_batches == [[{"n": n} for n in range(5, 10)]]
    assert stub.actions().count("complete") == 1


def test_batch_machine_tolerates_a_child_that_fails_outright(stack: LocalStack):
    # Given a batch whose broken child cannot even record its failure (items_failed raises too)
    items = [{"n": n} for n in range(8)]
    stub = StubRunner(stack, items=items, items_per_child=2, broken_item={"n": 3}, items_failed_breaks=True)
    description, _ = run_to_end(stack, stub, "BatchMachine", timeout=60)
    # Then ToleratedFailurePercentage 100 keeps the Map going: the run still completes (the
    # runner's complete counts items without an outcome as failed)
    assert description["status"] == "SUCCEEDED", description
    assert stub.actions().count("complete") == 1
    assert sorted(item["n"] for batch in stub.items_seen for item in batch) == list(range(8))


def test_batch_machine_ends_on_the_runs_timeout(stack: LocalStack):
    # Given a batch whose run timeout (1 s) is shorter than its children's work
    items = [{"n": n} for n in range(4)]
    stub = StubRunner(stack, items=items, items_per_child=2, children=1, timeout=1)
    original = stub.do_run_items

    def slow(event: dict[str, Any]) -> dict[str, int]:
        time.sleep(2)
        return original(event)

    stub.do_run_items = slow  # type: ignore[method-assign]
    description, took = run_to_end(stack, stub, "BatchMachine", timeout=30)
    # Then the run clock ended it: fail(reason "timeout"), FAILED RunTimedOut
    assert description["status"] == "FAILED"
    assert description["error"] == "RunTimedOut"
    assert [event["reason"] for event in stub.called("fail")] == ["timeout"]
    assert took < 6


def test_jobs_machine_runs_a_job_and_the_reconciler_hears_of_each_template_execution(stack: LocalStack):
    reconciler = stack.functions["ReconcilerFunction"].function_name
    stub = StubRunner(stack)
    description, _ = run_to_end(stack, stub, "JobsMachine", payload={"kind": "ingest", "upload_id": "u1"})
    # Then the job ran with the execution input as its job
    assert description["status"] == "SUCCEEDED", description
    (job,) = stub.called("job")
    assert job["job"] == {"kind": "ingest", "upload_id": "u1"}
    failed, _ = run_to_end(stack, stub, "JobsMachine", payload={"fail": True})
    assert failed["status"] == "FAILED" and failed["error"] == "BatchBroke"
    # And a machine that is not the template's (a test's own) is not delivered to the reconciler
    sfn = stack.client("stepfunctions")
    foreign = sfn.create_state_machine(
        name="not-the-templates",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=stack.context.attributes["JobsMachineRole"]["Arn"],
    )["stateMachineArn"]
    other = sfn.start_execution(stateMachineArn=foreign, name="other", input="{}")["executionArn"]
    stack.wait_for_execution(other)
    assert stack.wait_idle(timeout=10)
    delivered = {event["detail"]["executionArn"]: event for event in fx.recorded(reconciler)}
    assert set(delivered) == {description["executionArn"], failed["executionArn"]}
    assert delivered[failed["executionArn"]]["detail"]["status"] == "FAILED"


def test_the_machines_stay_the_same_whatever_workflows_are_authored(local_stack: LocalStack, client: Any):
    # Given the machines as the stack deployed them
    from support.workflows import build

    sfn = local_stack.client("stepfunctions")

    def deployed() -> dict[str, str]:
        return {
            sm["stateMachineArn"]: sfn.describe_state_machine(stateMachineArn=sm["stateMachineArn"])[
                "definition"
            ]
            for sm in sfn.list_state_machines()["stateMachines"]
        }

    before = deployed()
    # When workflows are authored whose node names and templates would have broken a generated
    # definition (ASL keys, a reserved prefix, mixed scripts, 20,000-character templates)
    for names in (["x.$", "States", "节点-ノード-узел-" + "n" * 150], [f"n{i}" for i in range(5)]):
        build(
            client,
            [
                (name, {"model": "echo"}, {"input_template": "{{ input }} " + "t" * (20_000 - 12)})
                for name in names
            ],
        )
    # Then not one state machine was added or changed: the definitions hold no workflow data
    assert deployed() == before
    assert len(before) == 3
