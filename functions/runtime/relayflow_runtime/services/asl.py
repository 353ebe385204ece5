"""Generate the Amazon States Language definition of a workflow version.

A pure function of the execution plan (see logic/plan.py): the Step Functions console then shows
the user's own graph, one Task state per node, each with its own Retry, TimeoutSeconds and Catch.

Every Task invokes the node-runner Lambda with ``{"action": ..., "state": <the run's state>}``.
The run's state is small: ``ctx`` (ids, the input or an S3 reference to it) and ``outputs``
(node id -> output, or an S3 reference when larger than the inline limit), so no payload comes
near Step Functions' 256 KiB cap.
"""

from __future__ import annotations

import re
from typing import Any

# Errors worth another attempt; PermanentModelError and everything else are not retried.
RETRYABLE_ERRORS = ["TransientModelError", "NodeTimeout", "States.Timeout"]
# Infrastructure hiccups of the Lambda service itself, retried on every runner task.
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
# Step Functions' TimeoutSeconds backstop: the runner itself stops an attempt at the node's timeout,
# this many seconds earlier, so the recorded error names the node's own limit.
TIMEOUT_BACKSTOP_SECONDS = 2


def state_name(node: dict[str, Any]) -> str:
    clean = re.sub(r"[^A-Za-z0-9 _.\-]", "", node["name"]).strip() or "node"
    return f"{node['idx'] + 1:02d} {clean}"[:70]


def _failed_name(node: dict[str, Any]) -> str:
    return f"{state_name(node)} failed"[:80]


def node_retry(config: dict[str, Any]) -> list[dict[str, Any]]:
    retries: list[dict[str, Any]] = [
        {"ErrorEquals": LAMBDA_SERVICE_ERRORS, "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2.0}
    ]
    if config["max_retries"] > 0:
        retries.append(
            {
                "ErrorEquals": RETRYABLE_ERRORS,
                "IntervalSeconds": int(config["retry_delay_seconds"]),
                "MaxAttempts": int(config["max_retries"]),
                "BackoffRate": 2.0,
                "MaxDelaySeconds": int(config["max_retry_delay_seconds"]),
                "JitterStrategy": "FULL",
            }
        )
    return retries


def _runner_task(arn: str, action: str, next_state: str | None, extra: dict[str, Any] | None = None) -> dict:
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": arn,
        "Parameters": {"action": action, "state.$": "$", **(extra or {})},
        "Retry": [
            {"ErrorEquals": LAMBDA_SERVICE_ERRORS, "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2.0}
        ],
    }
    if next_state:
        task["Next"] = next_state
    else:
        task["End"] = True
    return task


def _node_states(
    node: dict[str, Any], arn: str, config: dict[str, Any], next_state: str | None, stop_state: str
) -> dict[str, Any]:
    """The Task of one node and the Task that records its failure."""
    name, failed = state_name(node), _failed_name(node)
    task: dict[str, Any] = {
        "Type": "Task",
        "Comment": f"node {node['id']} ({node['model']['provider']} model {node['model']['id']})",
        "Resource": arn,
        "Parameters": {"action": "node", "node": node, "state.$": "$"},
        "TimeoutSeconds": int(node["timeout"]) + TIMEOUT_BACKSTOP_SECONDS,
        "Retry": node_retry(config),
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}],
    }
    on_failure = _runner_task(arn, "node_failed", None, {"node": node})
    if next_state:
        task["Next"] = next_state
    else:
        task["End"] = True
    if node["on_failure"] == "continue":
        if next_state:
            on_failure.pop("End")
            on_failure["Next"] = next_state
    else:
        on_failure.pop("End")
        on_failure["Next"] = stop_state
    return {name: task, failed: on_failure}


def _chain(
    levels: list[list[dict[str, Any]]],
    arn: str,
    config: dict[str, Any],
    end_state: str | None,
    stop_state: str,
) -> tuple[str, dict[str, Any]]:
    """States that run the levels one after another; nodes of one level run in a Parallel state."""
    states: dict[str, Any] = {}
    heads: list[str] = []
    for level in levels:
        if len(level) == 1:
            heads.append(state_name(level[0]))
        else:
            heads.append(f"Stage {level[0]['idx'] + 1}-{level[-1]['idx'] + 1}")
    for i, level in enumerate(levels):
        next_state = heads[i + 1] if i + 1 < len(levels) else end_state
        if len(level) == 1:
            states.update(_node_states(level[0], arn, config, next_state, stop_state))
            continue
        branches = []
        for node in level:
            branch_states = _node_states(node, arn, config, None, "Branch failed")
            branch_states["Branch failed"] = {"Type": "Fail", "Error": "NodeFailed", "Cause": "a node failed"}
            branches.append({"StartAt": state_name(node), "States": branch_states})
        parallel: dict[str, Any] = {
            "Type": "Parallel",
            "Comment": "nodes that do not depend on each other run at the same time",
            "Branches": branches,
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": stop_state}],
        }
        if next_state:
            parallel["Next"] = next_state
        else:
            parallel["End"] = True
        states[heads[i]] = parallel
    return heads[0], states


def _pass_retry_count(states: dict[str, Any]) -> None:
    """Batch items: each node Task passes its attempt number (the context object's retry count), so
    the runner writes an item's node record once, when the attempt ends, instead of twice."""
    for state in states.values():
        if state.get("Type") == "Task" and state["Parameters"].get("action") == "node":
            state["Parameters"]["retry_count.$"] = "$$.State.RetryCount"
        for branch in state.get("Branches", []):
            _pass_retry_count(branch["States"])


def _finish_items_in_last_node(states: dict[str, Any]) -> None:
    """A batch item whose chain ends with one node (not a Parallel) is recorded by that node's own
    task (``finish_item``) instead of an extra "Item done" task: one state transition and one
    Lambda invocation less per item, a third of what a one-node item costs."""
    for state in states.values():
        if state.get("Next") == "Item done" and state.get("Type") == "Task":
            state.pop("Next")
            state["End"] = True
            state["Parameters"]["finish_item"] = True
    if not any(state.get("Next") == "Item done" for state in states.values()):
        states.pop("Item done")


def build_definition(plan: dict[str, Any], node_runner_arn: str) -> dict[str, Any]:
    """The ASL of one execution plan (mode "single" or "batch").

    ``plan``: ``{"mode", "config": version config, "nodes": [node specs in topological order],
    "levels": [[node ids]], "timeout": seconds or None}``.
    """
    config = plan["config"]
    by_id = {n["id"]: n for n in plan["nodes"]}
    levels = [[by_id[i] for i in level] for level in plan["levels"]]
    arn = node_runner_arn
    definition: dict[str, Any] = {
        "Comment": f"relayflow workflow {plan['workflow_id']} version {plan['version_id']} ({plan['mode']})",
        "StartAt": "Start",
    }
    if plan.get("timeout"):
        definition["TimeoutSeconds"] = int(plan["timeout"])

    if plan["mode"] == "single":
        first, node_states = _chain(levels, arn, config, "Complete", "Record failure")
        definition["States"] = {
            "Start": _runner_task(arn, "start", first),
            **node_states,
            "Complete": _runner_task(arn, "complete", None),
            "Record failure": _runner_task(arn, "fail", "Failed"),
            "Failed": {
                "Type": "Fail",
                "Error": "WorkflowFailed",
                "Cause": "a node failed; see the execution",
            },
        }
        return definition

    # Batch: a distributed Map reads the item list from S3; each item runs the whole node chain,
    # and an item's failure is caught inside its own chain (recorded with the item, never failing
    # the Map), so both Step Functions and moto's interpreter agree on the outcome.
    first, node_states = _chain(levels, arn, config, "Item done", "Item failed")
    _pass_retry_count(node_states)
    item_states = {
        **node_states,
        "Item done": _runner_task(arn, "item_done", None),
        "Item failed": _runner_task(arn, "item_failed", None),
    }
    _finish_items_in_last_node(item_states)
    processor = {
        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
        "StartAt": first,
        "States": item_states,
    }
    definition["States"] = {
        "Start": _runner_task(arn, "start", "Items"),
        "Items": {
            "Type": "Map",
            "ItemReader": {
                "Resource": "arn:aws:states:::s3:getObject",
                "ReaderConfig": {"InputType": "JSON"},
                "Parameters": {"Bucket.$": "$.ctx.items_bucket", "Key.$": "$.ctx.items_key"},
            },
            # An item starts as {parent ctx, its list entry}; the runner derives the item's own ctx
            # (logic/batch.item_state). No "ctx" key here: a child execution's input must not look
            # like a run of its own to the reconciler, which reads ctx from execution inputs.
            "ItemSelector": {"parent.$": "$.ctx", "entry.$": "$$.Map.Item.Value", "outputs": {}},
            "MaxConcurrencyPath": "$.ctx.parallelism",
            "ItemProcessor": processor,
            "ResultPath": None,
            "Next": "Complete",
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Record failure"}],
        },
        "Complete": _runner_task(arn, "complete", None),
        "Record failure": _runner_task(arn, "fail", "Failed"),
        "Failed": {
            "Type": "Fail",
            "Error": "WorkflowFailed",
            "Cause": "the batch run failed; see the execution",
        },
    }
    return definition
