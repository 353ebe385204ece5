"""The ASL generator: a pure function from an execution plan to a state machine definition."""

from __future__ import annotations

from typing import Any

from relayflow_runtime.services.asl import (
    RETRYABLE_ERRORS,
    TIMEOUT_BACKSTOP_SECONDS,
    build_definition,
    state_name,
)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:runner"
CONFIG = {"max_retries": 4, "retry_delay_seconds": 3, "max_retry_delay_seconds": 30, "node_timeout": 300}


def node(idx: int, name: str, *, timeout: int = 300, on_failure: str = "stop", parents=()) -> dict[str, Any]:
    return {
        "id": f"id-{name}",
        "name": name,
        "idx": idx,
        "template": "{{input}}",
        "timeout": timeout,
        "on_failure": on_failure,
        "output_format": "text",
        "parents": list(parents),
        "upstream": {},
        "model": {"id": "m1", "provider": "builtin", "config": {"model": "echo"}},
    }


def plan(nodes: list[dict[str, Any]], levels: list[list[str]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "workflow_id": "wf",
        "version_id": "v1",
        "mode": "single",
        "timeout": None,
        "config": CONFIG,
        "nodes": nodes,
        "levels": levels or [[n["id"]] for n in nodes],
        **extra,
    }


def node_tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: state
        for name, state in definition["States"].items()
        if state["Type"] == "Task" and state["Parameters"]["action"] == "node"
    }


def test_one_task_state_per_node_in_order():
    # Given a three-node chain
    nodes = [node(0, "Extract"), node(1, "Summarize"), node(2, "Judge")]
    # When the definition is generated
    definition = build_definition(plan(nodes), ARN)
    # Then there is exactly one node Task per node, chained Start -> nodes -> Complete
    tasks = node_tasks(definition)
    assert list(tasks) == ["01 Extract", "02 Summarize", "03 Judge"]
    assert definition["StartAt"] == "Start"
    assert definition["States"]["Start"]["Next"] == "01 Extract"
    assert tasks["01 Extract"]["Next"] == "02 Summarize"
    assert tasks["03 Judge"]["Next"] == "Complete"
    assert all(t["Resource"] == ARN for t in tasks.values())
    assert tasks["02 Summarize"]["Parameters"]["node"]["id"] == "id-Summarize"


def test_retry_comes_from_the_version_config_with_backoff_and_jitter():
    definition = build_definition(plan([node(0, "A")]), ARN)
    retry = [r for r in node_tasks(definition)["01 A"]["Retry"] if r["ErrorEquals"] == RETRYABLE_ERRORS]
    # Then the model-error retry has the version's attempts, delay, cap, x2 backoff and full jitter
    assert retry == [
        {
            "ErrorEquals": ["TransientModelError", "NodeTimeout", "States.Timeout"],
            "IntervalSeconds": 3,
            "MaxAttempts": 4,
            "BackoffRate": 2.0,
            "MaxDelaySeconds": 30,
            "JitterStrategy": "FULL",
        }
    ]
    assert "PermanentModelError" not in str(node_tasks(definition)["01 A"]["Retry"])


def test_no_model_retry_when_max_retries_is_zero():
    zero = plan([node(0, "A")], config={**CONFIG, "max_retries": 0})
    retries = node_tasks(build_definition(zero, ARN))["01 A"]["Retry"]
    assert all(r["ErrorEquals"] != RETRYABLE_ERRORS for r in retries)


def test_timeout_seconds_comes_from_the_node_config():
    definition = build_definition(plan([node(0, "Slow", timeout=120), node(1, "Fast", timeout=5)]), ARN)
    tasks = node_tasks(definition)
    # Then the runner stops the attempt at the node's timeout; Step Functions backs it up shortly after
    assert tasks["01 Slow"]["TimeoutSeconds"] == 120 + TIMEOUT_BACKSTOP_SECONDS
    assert tasks["02 Fast"]["TimeoutSeconds"] == 5 + TIMEOUT_BACKSTOP_SECONDS


def test_catch_stops_the_run_or_continues_per_on_failure():
    nodes = [node(0, "Must"), node(1, "Optional", on_failure="continue"), node(2, "Last")]
    definition = build_definition(plan(nodes), ARN)
    states = definition["States"]
    tasks = node_tasks(definition)
    # Every node catches everything into its own failure-recording state
    for name, task in tasks.items():
        assert task["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": f"{name} failed"}
        ]
    # "stop" records the failure and ends in a Fail state; "continue" goes on to the next node
    assert states["01 Must failed"]["Next"] == "Record failure"
    assert states["Record failure"]["Next"] == "Failed"
    assert states["Failed"]["Type"] == "Fail"
    assert states["02 Optional failed"]["Next"] == "03 Last"


def test_workflow_timeout_is_the_state_machine_timeout():
    assert build_definition(plan([node(0, "A")], timeout=600), ARN)["TimeoutSeconds"] == 600
    assert "TimeoutSeconds" not in build_definition(plan([node(0, "A")]), ARN)


def test_independent_nodes_of_one_level_run_in_a_parallel_state():
    # Given a diamond A -> (B, C) -> D
    nodes = [node(0, "A"), node(1, "B", parents=["id-A"]), node(2, "C", parents=["id-A"]), node(3, "D")]
    levels = [["id-A"], ["id-B", "id-C"], ["id-D"]]
    definition = build_definition(plan(nodes, levels), ARN)
    states = definition["States"]
    parallel = [s for s in states.values() if s["Type"] == "Parallel"]
    # Then B and C are branches of one Parallel state between A and D
    assert len(parallel) == 1
    assert [b["StartAt"] for b in parallel[0]["Branches"]] == ["02 B", "03 C"]
    assert states["01 A"]["Next"] == "Stage 2-3"
    assert parallel[0]["Next"] == "04 D"
    assert parallel[0]["Catch"][0]["Next"] == "Record failure"


def test_batch_mode_is_a_distributed_map_reading_items_from_s3():
    definition = build_definition(plan([node(0, "A"), node(1, "B")], mode="batch"), ARN)
    items = definition["States"]["Items"]
    assert items["Type"] == "Map"
    assert items["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert items["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert items["MaxConcurrencyPath"] == "$.ctx.parallelism"
    assert items["ResultPath"] is None
    inner = items["ItemProcessor"]["States"]
    # Then each item runs the same node chain and its failures are caught inside its own chain
    assert inner["01 A"]["Next"] == "02 B"
    assert inner["01 A failed"]["Next"] == "Item failed"
    # And the last node records the item's outcome itself (no "Item done" task per item)
    assert inner["02 B"]["End"] is True and inner["02 B"]["Parameters"]["finish_item"] is True
    assert "Item done" not in inner
    # And each node learns its attempt number from Step Functions' retry count
    assert inner["01 A"]["Parameters"]["retry_count.$"] == "$$.State.RetryCount"
    # And an item starts from its parent's ctx and its list entry (no "ctx": not a run of its own)
    assert items["ItemSelector"] == {"parent.$": "$.ctx", "entry.$": "$$.Map.Item.Value", "outputs": {}}


def test_state_names_are_valid_and_unique():
    nodes = [node(0, 'Weird "name" {x}'), node(1, "x" * 200)]
    names = [state_name(n) for n in nodes]
    assert names[0] == "01 Weird name x"
    assert len(names[1]) <= 80
    assert len(set(names)) == 2


def test_generation_is_deterministic():
    nodes = [node(0, "A"), node(1, "B")]
    assert build_definition(plan(nodes), ARN) == build_definition(plan(nodes), ARN)
