"""statemachine/: the Amazon States Language the template deploys, checked offline by a validator
nobody here wrote (npm asl-validator, pinned and installed by the Makefile), and the rules that
keep the engine static: no workflow data in a definition, nothing creates a state machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.support.run_definition import GATE_STATES, ROOT_PREFIX, iteration, node_maps, roots_iteration_of

from relayflow.local import cfn
from relayflow_runtime.adapters.transactions import StoreContended
from relayflow_runtime.domain.engine import TIMEOUT_BACKSTOP_SECONDS
from relayflow_runtime.domain.limits import MAX_NODES_PER_VERSION
from relayflow_runtime.schemas.entities import MAX_NODE_TIMEOUT_SECONDS

ROOT = Path(__file__).resolve().parents[2]
STATEMACHINE_DIR = ROOT / "statemachine"
DEFINITIONS = sorted(STATEMACHINE_DIR.glob("*.asl.json"))
TEMPLATE = cfn.load_template(ROOT / "template.yaml")
MACHINES = {
    logical_id: spec
    for logical_id, spec in TEMPLATE["Resources"].items()
    if spec["Type"] in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
}
ASL_VALIDATOR = Path(
    os.environ.get("RELAYFLOW_ASL_VALIDATOR", ROOT / ".node" / "node_modules" / ".bin" / "asl-validator")
)
#: Step Functions' limit on a definition's size (quotas: 1 MB).
DEFINITION_LIMIT_BYTES = 1024 * 1024
#: What a deployed stack substitutes, realistically spelled (a stack named with the longest
#: CloudFormation-generated function name and a bucket name of the template's pattern).
REALISTIC = {
    "NodeRunnerArn": (
        "arn:aws:lambda:eu-west-1:111122223333:function:relayflow-prod-NodeRunnerFunction-AbCdEfGh1234"
    ),
    "DataBucket": "relayflow-prod-data-111122223333-eu-west-1",
    "TableName": "relayflow-prod-RelayflowTable-1A2B3C4D5E6F",
}
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def substituted(path: Path, values: dict[str, str] = REALISTIC) -> str:
    return _VARIABLE.sub(lambda match: values[match.group(1)], path.read_text(encoding="utf-8"))


def test_there_are_the_three_machines_of_the_engine():
    assert [p.name for p in DEFINITIONS] == ["batch.asl.json", "jobs.asl.json", "run.asl.json"]


def test_the_templates_state_machines_are_exactly_the_files_in_statemachine():
    # Given every state machine the template declares
    uris = {logical_id: spec["Properties"].get("DefinitionUri") for logical_id, spec in MACHINES.items()}
    # Then each is deployed from a file of statemachine/ (no inline definition), one machine per file
    assert all(isinstance(uri, str) for uri in uris.values()), uris
    assert sorted((ROOT / uri).resolve() for uri in uris.values()) == [p.resolve() for p in DEFINITIONS]
    for logical_id, spec in MACHINES.items():
        assert "Definition" not in spec["Properties"], logical_id
        # and its substitutions set every variable its definition uses, and only where the stack is
        used = set(_VARIABLE.findall((ROOT / uris[logical_id]).read_text()))
        given = set(spec["Properties"].get("DefinitionSubstitutions") or {})
        assert used <= given <= set(REALISTIC), logical_id


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_a_definition_uses_only_the_deployment_substitutions(path: Path):
    # The only variables are where the stack is (the node runner, the bucket, the table): never a workflow's
    assert set(_VARIABLE.findall(path.read_text())) <= set(REALISTIC)


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_a_definition_is_far_below_the_1_mb_limit(path: Path):
    size = len(substituted(path).encode("utf-8"))
    assert size < DEFINITION_LIMIT_BYTES
    # and it is fixed: a workflow's size cannot make it grow (it holds no workflow data at all)
    assert size < 64 * 1024


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_asl_validator_accepts_each_definition_with_its_substitutions_filled(path: Path, tmp_path: Path):
    if not ASL_VALIDATOR.is_file():
        pytest.fail(f"asl-validator is not installed at {ASL_VALIDATOR}: run `make .node/.installed`")
    filled = tmp_path / path.name
    filled.write_text(substituted(path), encoding="utf-8")
    # When npm's asl-validator (pinned 4.0.0) checks it, ARNs and JSONPaths included
    result = subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(filled)], capture_output=True, text=True, timeout=60
    )
    # Then it is valid
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


def test_asl_validator_is_the_pinned_version():
    if not ASL_VALIDATOR.is_file():
        pytest.fail(f"asl-validator is not installed at {ASL_VALIDATOR}: run `make .node/.installed`")
    version = subprocess.run([str(ASL_VALIDATOR), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "4.0.0"
    assert "ASL_VALIDATOR_VERSION := 4.0.0" in (ROOT / "Makefile").read_text()


def test_asl_validator_rejects_what_aws_rejects(tmp_path: Path):
    # A control: the validator is not a no-op (a duplicate-free machine whose Next names no state)
    if not ASL_VALIDATOR.is_file():
        pytest.fail(f"asl-validator is not installed at {ASL_VALIDATOR}: run `make .node/.installed`")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}))
    result = subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


def _states(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for name, state in document.get("States", {}).items():
        found.append((name, state))
        for branch in state.get("Branches", []):
            found.extend(_states(branch))
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            found.extend(_states(processor))
    return found


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_state_names_are_unique_in_the_whole_machine_and_every_task_is_the_node_runner(path: Path):
    states = _states(json.loads(path.read_text()))
    names = [name for name, _ in states]
    assert len(names) == len(set(names)), "Step Functions refuses DUPLICATE_STATE_NAME"
    for name, state in states:
        if (path.name, name) == ("run.asl.json", "AwaitParents"):
            continue  # the node gate: a DynamoDB write of the run's own table (tested below)
        if state["Type"] == "Task":
            resource = state["Resource"]
            function = state.get("Parameters", {}).get("FunctionName", resource)
            assert function == "${NodeRunnerArn}", f"{path.name}:{name} calls {function}"


def test_nothing_creates_a_state_machine_or_passes_a_role():
    # Given the template and every Python file under functions/, except the local stack's package,
    # which deploys the template's machines into moto (CloudFormation's part, not the runtime's)
    offenders = []
    pattern = re.compile(r"CreateStateMachine|create_state_machine|PassRole")
    code = [f for f in sorted((ROOT / "functions").rglob("*.py")) if "local" not in f.relative_to(ROOT).parts]
    for file in [ROOT / "template.yaml", *code]:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()}")
    # Then none of it creates a state machine or passes an IAM role: the machines are the template's
    assert offenders == []


# ---- AWS's weather: throttles are waited out, errors are recorded, labels, limits ---------------------
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def _load(name: str) -> dict[str, Any]:
    return json.loads((STATEMACHINE_DIR / name).read_text(encoding="utf-8"))


def _tasks_with_kind(
    document: dict[str, Any], express: bool = False
) -> list[tuple[str, dict[str, Any], bool]]:
    """Every Task of the node runner, and whether it runs inside an Express child (5 minutes in
    all). (The run machine's node gate is a DynamoDB write with retries of its own.)"""
    found = []
    for name, state in document.get("States", {}).items():
        if state["Type"] == "Task" and not state["Resource"].startswith("arn:aws:states:::aws-sdk:"):
            found.append((name, state, express))
        for branch in state.get("Branches", []):
            found.extend(_tasks_with_kind(branch, express))
        processor = state.get("ItemProcessor")
        if processor:
            kind = processor.get("ProcessorConfig", {}).get("ExecutionType")
            found.extend(_tasks_with_kind(processor, kind == "EXPRESS"))
    return found


def _retry_waits(retrier: dict[str, Any]) -> list[float]:
    """The longest wait before each retry of a Retrier (full jitter draws below it)."""
    interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
    cap = retrier.get("MaxDelaySeconds", float("inf"))
    return [min(cap, interval * rate**i) for i in range(retrier.get("MaxAttempts", 3))]


@pytest.mark.parametrize("name", ["run.asl.json", "batch.asl.json", "jobs.asl.json"])
def test_every_task_waits_out_lambda_throttling_with_a_long_full_jitter_backoff(name: str):
    for state_name, state, express in _tasks_with_kind(_load(name)):
        retry = state.get("Retry", [])
        retriers = [r for r in retry if "Lambda.TooManyRequestsException" in r["ErrorEquals"]]
        assert len(retriers) == 1, state_name
        retrier = retriers[0]
        assert set(retrier["ErrorEquals"]) >= LAMBDA_SERVICE_ERRORS, state_name
        assert retrier["JitterStrategy"] == "FULL", state_name
        waits = _retry_waits(retrier)
        if express:
            # An Express child lives 5 minutes: its retries fit in what the batch keeps for them
            assert sum(waits) <= 20, state_name
        else:
            # A Standard execution waits minutes, not seconds (the old 3 attempts were ~7 s), each wait
            # capped at a minute, and few enough attempts that the history stays small (3 events each)
            assert retrier["MaxAttempts"] >= 10, state_name
            assert retrier["MaxDelaySeconds"] <= 60, state_name
            assert sum(waits) >= 240, state_name
            assert 3 * retrier["MaxAttempts"] <= 40, state_name



@pytest.mark.parametrize("name", ["run.asl.json", "batch.asl.json", "jobs.asl.json"])
def test_every_task_retries_a_store_that_stayed_contended(name: str):
    # The runner raises StoreContended when DynamoDB kept refusing a write for contention (a
    # transaction conflict, throttling) past its own bounded retries: nothing was written, so the
    # task is repeated with full jitter instead of taking the state's error path (issue 23 #1).
    for state_name, state, express in _tasks_with_kind(_load(name)):
        retriers = [r for r in state.get("Retry", []) if StoreContended.__name__ in r["ErrorEquals"]]
        assert len(retriers) == 1, state_name
        assert retriers[0]["JitterStrategy"] == "FULL", state_name
        waits = _retry_waits(retriers[0])
        # Minutes would be a hang in disguise; an Express child keeps within its 45 s of margin.
        assert 5 <= sum(waits) <= (10 if express else 60), (state_name, waits)



def test_a_child_tells_run_items_the_child_timeout_its_task_has():
    # run_items records what finished before the child's Task times out (issue 23 #5): it must be
    # told that timeout, the very path the Task's TimeoutSecondsPath reads.
    children = [(n, s) for n, s, _ in _tasks_with_kind(_load("batch.asl.json"))
                if s["Parameters"].get("action") == "run_items"]
    assert len(children) == 2
    for state_name, state in children:
        assert state["Parameters"]["child_timeout.$"] == state["TimeoutSecondsPath"], state_name


def _node_states() -> dict[str, Any]:
    """The iteration of a node with parents (every gate state, and the node's own)."""
    return iteration("Gated")


def _catch_target(state: dict[str, Any], error: str) -> str:
    """The state a Catch sends ``error`` to (the first Catcher that matches, as Step Functions reads them)."""
    for catcher in state.get("Catch", []):
        if error in catcher["ErrorEquals"] or "States.ALL" in catcher["ErrorEquals"]:
            return str(catcher["Next"])
    return "(uncaught)"


def test_a_throttled_gate_or_node_is_waited_out_never_failed():
    states = _node_states()
    # When the node runner (RunNode) or DynamoDB (the gate's write) stays throttled past the Retry
    for task, error in (
        ("RunNode", "Lambda.TooManyRequestsException"),
        ("AwaitParents", "DynamoDb.ProvisionedThroughputExceededException"),
        ("AwaitParents", "DynamoDb.ThrottlingException"),
    ):
        target = _catch_target(states[task], error)
        # Then the iteration waits and tries the same task again: no attempt spent, no NodeFailed
        assert states[target]["Type"] == "Wait", task
        assert states[target]["Next"] == task
        assert any(error in retry["ErrorEquals"] for retry in states[task]["Retry"]), task


def test_a_gate_that_fails_records_the_node_failed_rather_than_failing_the_run_silently():
    states = _node_states()
    # Any other error of the gate (past its Retry) is recorded on the node, like a node's own failure
    assert _catch_target(states["AwaitParents"], "DynamoDb.ResourceNotFoundException") == "NodeFailed"
    assert _catch_target(states["AwaitParents"], "Cancelled") == "NodeFailed"


def test_a_gate_parks_without_a_lambda_and_runs_its_node_when_the_parents_are_done():
    gate = _node_states()["AwaitParents"]
    # The gate is a DynamoDB write with a task token (AWS SDK integration: the optimized DynamoDB
    # one has no .waitForTaskToken), conditional on the node still waiting for a parent
    assert gate["Resource"] == "arn:aws:states:::aws-sdk:dynamodb:updateItem.waitForTaskToken"
    parameters = gate["Parameters"]
    assert parameters["TableName"] == "${TableName}"
    assert parameters["ExpressionAttributeValues"][":tk"] == {"S.$": "$$.Task.Token"}
    assert "size(#dp) < :parents" in parameters["ConditionExpression"]
    assert ":parents > :zero" in parameters["ConditionExpression"]  # a root (0 parents) never parks
    # (the count from start's NodeTask: a record written before this machine parks as well)
    parents = parameters["ExpressionAttributeValues"][":parents"]
    assert parents == {"N.$": "States.Format('{}', $.node.parents)"}
    # Then a failed condition (the parents are done, or the node no longer pending) runs the node
    assert _catch_target(gate, "DynamoDb.ConditionalCheckFailedException") == "RunNode"


def test_a_gate_gives_up_after_max_gate_checks_timeouts_and_records_its_node():
    states = _node_states()
    assert _catch_target(states["AwaitParents"], "States.Timeout") == "GateTimedOut"
    assert states["GateTimedOut"]["Next"] == "GateChecksLeft"
    (again,) = states["GateChecksLeft"]["Choices"]
    assert again == {
        "Variable": "$.gate_checks",
        "NumericLessThanPath": "$.node.max_gate_checks",
        "Next": "AwaitParents",
    }
    gave_up = states[states["GateChecksLeft"]["Default"]]
    assert gave_up["Parameters"]["error"]["Error"] == "GateTimeout"
    assert gave_up["Next"] == "NodeFailed"


def test_a_node_killed_by_the_lambda_timeout_is_retried_by_the_versions_retry_loop():
    states = _node_states()
    for error in ("Sandbox.Timedout", "States.Timeout", "NodeTimeout", "Lambda.ServiceException"):
        assert _catch_target(states["RunNode"], error) == "AttemptsLeft", error


def test_the_distributed_maps_have_distinct_labels():
    labels = [
        state["Label"]
        for _, state in _states(_load("batch.asl.json"))
        if state["Type"] == "Map" and state.get("ItemProcessor", {}).get("ProcessorConfig", {}).get("Mode")
        == "DISTRIBUTED"
    ]
    assert len(labels) == 2
    assert len(set(labels)) == len(labels)
    # AWS: at most 40 characters, letters, digits, - and _
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", label) for label in labels)


def test_every_node_of_a_version_fits_the_inline_maps_concurrency_at_once():
    # Parked gates hold Map slots: when every node fits at once, no start order can deadlock a run
    for name, nodes in node_maps().items():
        assert MAX_NODES_PER_VERSION <= nodes["MaxConcurrency"] <= 40, name


def test_a_root_runs_at_once_with_no_gate_call_and_no_state_added_per_node():
    # Given the run machine's nodes: two Maps, over start's two lists
    maps = node_maps()
    assert sorted(maps) == ["Gated", "Roots"]
    assert (maps["Roots"]["ItemsPath"], maps["Gated"]["ItemsPath"]) == ("$.roots", "$.gated")
    roots, gated = iteration("Roots"), iteration("Gated")
    # Then a root's iteration starts at the node: no gate write (no DynamoDB call), and no Choice
    # (a state transition, billed per node) decides whether it is a root
    first = roots[maps["Roots"]["ItemProcessor"]["StartAt"]]
    assert first["Type"] == "Task" and first["Parameters"]["action"] == "node"
    integrations = [name for name, state in roots.items() if "aws-sdk" in state.get("Resource", "")]
    assert integrations == []
    assert maps["Gated"]["ItemProcessor"]["StartAt"] == "AwaitParents"
    # And every node's own states are the same in both (ASL wants state names unique in the whole
    # machine, so a root's are the gated iteration's named Root*): one retry loop, one on_failure
    assert roots == roots_iteration_of(gated)
    assert set(gated) - set(GATE_STATES) == {name.removeprefix(ROOT_PREFIX) for name in roots}
    # and the gated Map's items start with no gate check yet, the roots' need none
    gated_items, root_items = dict(maps["Gated"]["ItemSelector"]), maps["Roots"]["ItemSelector"]
    assert gated_items.pop("gate_checks") == 0
    assert gated_items == root_items


def test_a_node_that_stops_the_run_fails_the_race_from_either_map():
    # A failed node with on_failure "stop" ends in a Fail state of its iteration; nothing between
    # it and the Race catches it, so the Race's Catch records the run failed (RecordFailure)
    for name in ("Roots", "Gated"):
        prefix = ROOT_PREFIX if name == "Roots" else ""
        states = iteration(name)
        stop = states[states[prefix + "ContinueOrStop"]["Choices"][0]["Next"]]
        assert (stop["Type"], stop["Error"]) == ("Fail", "NodeFailed")
        assert "Catch" not in node_maps()[name]
    race = _load("run.asl.json")["States"]["Race"]
    assert _catch_target(race, "NodeFailed") == "RecordFailure"


def test_the_two_node_maps_are_branches_of_the_race_and_only_the_gated_one_ends_the_run():
    # Given the Race: the roots with children, every other node, and the run's clock, side by side
    # (no Parallel of its own around the two Maps: it and a second Map would be 2 transitions a run)
    race = _load("run.asl.json")["States"]["Race"]
    branches = {branch["StartAt"]: branch["States"] for branch in race["Branches"]}
    assert sorted(branches) == ["Gated", "Roots", "RunClock"]
    # Then the roots' branch is its Map alone, which ends it: one transition a run, no Succeed after
    assert list(branches["Roots"]) == ["Roots"] and branches["Roots"]["Roots"]["End"] is True
    # and the gated Map (which ends after every root of Roots: each has a child in it) is followed
    # by the Fail that ends the race as every node done
    assert branches["Gated"]["Gated"]["Next"] == "RunFinished"
    assert set(branches["Gated"]) == {"Gated", "RunFinished"}
    assert branches["Gated"]["RunFinished"]["Error"] == "RunFinished"
    assert _catch_target(race, "RunFinished") == "Complete"
    assert _catch_target(race, "RunTimedOut") == "RecordTimeout"


def test_a_node_times_out_before_the_lambda_that_runs_it_is_killed():
    lambda_timeout = TEMPLATE["Resources"]["NodeRunnerFunction"]["Properties"].get("Timeout") or TEMPLATE[
        "Globals"
    ]["Function"]["Timeout"]
    # The runner's timer and Step Functions' backstop fire with a margin before Lambda's kill
    assert lambda_timeout >= MAX_NODE_TIMEOUT_SECONDS + TIMEOUT_BACKSTOP_SECONDS + 30
