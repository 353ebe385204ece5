"""The engine on the template's fixed state machines (statemachine/), end to end on the local stack.

Graphs that the generated per-version machines got wrong on AWS (issue 12): two nodes in one
level, all-``continue`` workflows, node names that are ASL syntax, huge templates; and the
behaviours the static run machine must keep: a node starts when its own parents end, per-run
timeouts without a new machine, payloads by reference, cancel of a run parked on gates.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.support.graphs import add_node, builtin_model, connect, interval, new_version, ok, run

from relayflow.local.stack import LocalStack

# One stack for the module: each test builds and runs workflows of its own.
pytestmark = pytest.mark.shared_stack


def _machines(stack: LocalStack) -> list[str]:
    sfn = stack.client("stepfunctions")
    return sorted(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"])


def test_diamond_runs_through_the_run_machine_and_joins(api: Any) -> None:
    # Given A → {B, C} → D (two nodes in one level: one Parallel state of the old design)
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api)
    a = add_node(api, version_id, "A", echo, "{{input}}")
    b = add_node(api, version_id, "B", echo, "b:{{input}}")
    c = add_node(api, version_id, "C", echo, "c:{{input}}")
    d = add_node(api, version_id, "D", echo, "{{nodes.B}}|{{nodes.C}}")
    connect(api, version_id, (a, b), (a, c), (b, d), (c, d))
    # When it runs
    execution, _ = run(api, workflow_id, "x")
    # Then every node completed and D joined both branches
    assert execution["status"] == "completed", execution.get("error")
    assert execution["node_executions"][d]["output"] == "b:x|c:x"
    assert execution["results"]["output"] == "b:x|c:x"


def test_a_node_starts_when_its_own_parents_end_not_its_level(api: Any) -> None:
    # Given A → {SLOW, FAST}, FAST → AFTER: AFTER is in SLOW's graph level but depends on FAST only
    echo, slow_model = builtin_model(api, "echo"), builtin_model(api, "sleep", seconds=1.5)
    workflow_id, version_id = new_version(api)
    a = add_node(api, version_id, "A", echo, "{{input}}")
    slow = add_node(api, version_id, "SLOW", slow_model, "{{input}}")
    fast = add_node(api, version_id, "FAST", echo, "{{input}}")
    after = add_node(api, version_id, "AFTER", echo, "{{input}}")
    connect(api, version_id, (a, slow), (a, fast), (fast, after))
    # When it runs
    execution, _ = run(api, workflow_id, "go")
    assert execution["status"] == "completed", execution.get("error")
    nodes = execution["node_executions"]
    # Then AFTER finished before the slow node of the level before it did
    assert interval(nodes[after])[1] < interval(nodes[slow])[1]


def test_all_continue_workflow_completes_with_every_failure_recorded(api: Any) -> None:
    # Given three failing nodes, each on_failure "continue" (unreachable states in the old design)
    fail = builtin_model(api, "fail")
    workflow_id, version_id = new_version(api)
    ids = [add_node(api, version_id, f"F{i}", fail, "{{input}}", on_failure="continue") for i in range(3)]
    # When it runs
    execution, _ = run(api, workflow_id, "x")
    # Then the run completes and every node is recorded failed, attempted once
    assert execution["status"] == "completed", execution.get("error")
    assert [execution["node_executions"][i]["status"] for i in ids] == ["failed"] * 3
    assert all(execution["node_executions"][i]["attempts"] == 1 for i in ids)


def test_node_names_that_are_asl_syntax_run(api: Any) -> None:
    # Given nodes named "x.$", "States" and 200 characters of mixed scripts, a model config key "note.$"
    odd = ("x.$", "States", ("日本語テキスト ελληνικά русский العربية हिन्दी " * 10)[:200])
    model = ok(
        api("POST", "/models", {"name": "m", "provider": "builtin", "config": {"model": "echo"}}), 201
    )["id"]
    workflow_id, version_id = new_version(api)
    ids = [add_node(api, version_id, name, model, "{{input}}!") for name in odd]
    # When it runs
    execution, _ = run(api, workflow_id, "hi")
    # Then the chain ran in creation order
    assert execution["status"] == "completed", execution.get("error")
    assert execution["node_executions"][ids[-1]]["output"] == "hi!!!"
    assert [execution["node_executions"][i]["name"] for i in ids] == list(odd)


def test_forty_nodes_with_20000_character_templates(api: Any, local_stack: LocalStack) -> None:
    # Given 40 chained nodes (the most a version holds), each with a 20,000-character template
    # (800 KB of templates in all, near what a definition may hold: the old design copied them into it)
    counter = builtin_model(api, "word_count")
    workflow_id, version_id = new_version(api)
    template = "é " * 9_990 + "{{input}}"
    assert len(template) == 19_989
    ids = [add_node(api, version_id, f"n{i}", counter, template) for i in range(40)]
    machines_before = _machines(local_stack)
    # When it runs
    execution, _ = run(api, workflow_id, "one two three", timeout=120)
    # Then it completes, every node counted its 20,000-character prompt, on the same machines
    assert execution["status"] == "completed", execution.get("error")
    assert execution["node_executions"][ids[0]]["output"] == "9993"
    assert execution["node_executions"][ids[-1]]["output"] == "9991"
    assert len(execution["node_executions"][ids[-1]]["prompt"]) > 19_000
    assert _machines(local_stack) == machines_before


def test_twenty_runs_with_different_timeouts_and_versions_keep_the_machines(
    api: Any, local_stack: LocalStack
) -> None:
    # Given a workflow and the stack's state machines
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api)
    add_node(api, version_id, "A", echo, "{{input}}")
    machines = _machines(local_stack)
    assert len(machines) == 3
    started = []
    # When 20 runs start with 20 timeouts, over 4 versions (a new one every fifth run)
    for i in range(20):
        if i and i % 5 == 0:
            version = ok(api("POST", f"/workflows/{workflow_id}/versions", {"config": {}}))
            add_node(api, version["id"], f"A{i}", echo, "{{input}}")
            ok(api("PATCH", f"/workflows/{workflow_id}", {"active_version_id": version["id"]}), 200)
        body = {"single_input": f"run {i}", "timeout": 60 + i}
        started.append(ok(api("POST", f"/workflows/{workflow_id}/executions", body)))
    # Then they all complete, each with its own timeout, and no state machine was created
    deadline = time.monotonic() + 60
    for execution in started:
        path = f"/workflows/{workflow_id}/executions/{execution['id']}"
        while (current := ok(api("GET", path), 200))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert current["status"] == "completed"
    assert [e["timeout"] for e in started] == [60 + i for i in range(20)]
    assert _machines(local_stack) == machines


def test_a_run_timeout_ends_a_run_parked_on_a_slow_node(api: Any) -> None:
    # Given an 8-second node and a run timeout of 1 second
    slow = builtin_model(api, "sleep", seconds=8)
    workflow_id, version_id = new_version(api, node_timeout=10)
    node = add_node(api, version_id, "slow", slow, "{{input}}")
    started = time.monotonic()
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x", "timeout": 1}))
    path = f"/workflows/{workflow_id}/executions/{execution['id']}"
    while (execution := ok(api("GET", path), 200))["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.05)
    # Then the run failed on its own timeout, long before the node would have ended
    assert execution["status"] == "failed"
    assert "timed out after 1 seconds" in execution["error"]
    assert time.monotonic() - started < 6  # the run's 1 s and its end's work, far from the node's 8 s
    assert execution["node_executions"][node]["status"] == "timed_out"


def test_cancel_ends_a_run_whose_nodes_are_parked_on_gates(api: Any, local_stack: LocalStack) -> None:
    # Given A (slow) → B: B is parked on its gate while A runs
    slow, echo = builtin_model(api, "sleep", seconds=1), builtin_model(api, "echo")
    workflow_id, version_id = new_version(api)
    add_node(api, version_id, "A", slow, "{{input}}")
    b = add_node(api, version_id, "B", echo, "{{input}}")
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"}))
    time.sleep(0.3)
    # When it is cancelled
    cancelled = ok(api("POST", f"/workflows/{workflow_id}/executions/{execution['id']}/cancel"), 200)
    assert cancelled["status"] == "cancelled"
    # Then the state machine execution ends too (moto never ends a run parked on a token by itself)
    sfn = local_stack.client("stepfunctions")
    deadline = time.monotonic() + 10
    while True:
        arns = [
            e["executionArn"]
            for m in sfn.list_state_machines()["stateMachines"]
            for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]
            if e["name"] == execution["id"]
        ]
        status = sfn.describe_execution(executionArn=arns[0])["status"]
        if status != "RUNNING":
            break
        assert time.monotonic() < deadline, "the state machine execution never ended"
        time.sleep(0.1)
    final = ok(api("GET", f"/workflows/{workflow_id}/executions/{execution['id']}"), 200)
    assert final["status"] == "cancelled"
    assert final["node_executions"][b]["status"] == "cancelled"


def test_large_outputs_travel_by_reference(api: Any) -> None:
    # Given a 10-node chain passing a 30 KB output along, and a 4-wide level of 80 KB outputs
    # joined by one node (the old design carried every output in the state: 256 KiB at most)
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api)
    for i in range(10):
        add_node(api, version_id, f"c{i}", echo, "{{input}}")
    chain, _ = run(api, workflow_id, "y" * 30_000, timeout=60)
    assert chain["status"] == "completed", chain.get("error")
    assert chain["results"]["output"] == "y" * 30_000

    wide_id, wide_version = new_version(api)
    root = add_node(api, wide_version, "root", echo, "{{input}}")
    branches = [add_node(api, wide_version, f"w{i}", echo, "{{input}}") for i in range(4)]
    join = add_node(api, wide_version, "join", echo, "{{input}}")
    connect(api, wide_version, *[(root, b) for b in branches], *[(b, join) for b in branches])
    wide, _ = run(api, wide_id, "z" * 80_000, timeout=60)
    # Then both complete; the join read every branch's output (4 x 80 KB + separators)
    assert wide["status"] == "completed", wide.get("error")
    assert len(wide["node_executions"][join]["output"]) == 4 * 80_000 + 3 * 2


def test_stopping_the_run_machine_mid_map_ends_aborted_and_the_run_cancelled(
    api: Any, local_stack: LocalStack
) -> None:
    # Given a run whose node is running inside the run machine's inline Map
    slow = builtin_model(api, "sleep", seconds=1)
    workflow_id, version_id = new_version(api)
    node = add_node(api, version_id, "slow", slow, "{{input}}")
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", {"single_input": "x"}))
    path = f"/workflows/{workflow_id}/executions/{execution['id']}"
    while ok(api("GET", path), 200)["node_executions"][node]["status"] != "running":
        time.sleep(0.05)
    # When its state machine execution is stopped from outside relayflow (the console, an operator)
    sfn = local_stack.client("stepfunctions")
    arn = ok(api("GET", path), 200).get("sfn_execution_arn") or next(
        e["executionArn"]
        for m in sfn.list_state_machines()["stateMachines"]
        for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]
        if e["name"] == execution["id"]
    )
    sfn.stop_execution(executionArn=arn, error="Console", cause="stopped by an operator")
    # Then it ends ABORTED as on AWS (moto's interpreter said FAILED: the Map's aborted iterations
    # overwrote the stop), and the reconciler settles the run as cancelled
    assert local_stack.wait_for_execution(arn, timeout=20)["status"] == "ABORTED"
    deadline = time.monotonic() + 20
    while (final := ok(api("GET", path), 200))["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert final["status"] == "cancelled"


def test_a_model_over_its_rate_limit_waits_then_fails_as_transient_within_the_node_timeout(api: Any) -> None:
    # Given a chain of three nodes on one model limited to one request a minute, in a version
    # without retries, each node with a 2-second timeout (a minute's edge can free one slot at most)
    limited = {"model": "echo", "rate_limit": {"requests_per_minute": 1}}
    model = ok(api("POST", "/models", {"name": "limited", "provider": "builtin", "config": limited}))["id"]
    workflow_id, version_id = new_version(api, max_retries=0)
    ids = [add_node(api, version_id, f"n{i}", model, "{{input}}", timeout=2) for i in range(3)]
    # When it runs
    execution, _ = run(api, workflow_id, "x")
    # Then the first node ran, and a later one found no slot within half its timeout (the next
    # window is further off) and failed as a transient error naming the limit, within its timeout
    assert execution["status"] == "failed"
    nodes = [execution["node_executions"][i] for i in ids]
    assert nodes[0]["status"] == "completed"
    throttled = next(n for n in nodes if n["status"] == "failed")
    assert "rate limit" in throttled["error"]
    started, ended = interval(throttled)
    assert (ended - started).total_seconds() < 2.0
