"""AWS API calls per single-run node and per batch item, counted on the local stack, and what a
million batch items cost on AWS at list prices, from those counts.

Every call the node runner makes (DynamoDB, S3, Step Functions, EventBridge) is cost and latency
on AWS; so is each Lambda invocation and each Standard state transition. They are counted while
real runs go through the template's machines on moto: botocore requests made inside a node-runner
invocation, the invocations themselves, and the transitions (``*StateEntered`` events) of the
execution. Per node = (10-node run - 1-node run) / 9, so the run's fixed cost is left out.

"before" is the engine this one replaced (one generated state machine per version, created at
run time; measured at commit 2d0b64f with the same counting, 10- vs 1-node runs and a 200-item
batch of a three-node workflow): its code no longer exists, so its figures are quoted, not re-run.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any

# us-east-1 list prices (USD): the runtime's one price table, which the batch estimate reads too
from relayflow_runtime.domain.costs import (
    DYNAMODB_RRU,
    DYNAMODB_WRU,
    EVENTS,
    EXPRESS_GB,
    EXPRESS_GB_SECOND,
    EXPRESS_REQUEST,
    LAMBDA_GB,
    LAMBDA_GB_SECOND,
    LAMBDA_REQUEST,
    S3_GET,
    S3_PUT,
    STANDARD_TRANSITION,
)

#: Counted on the replaced engine (commit 2d0b64f), per single-run node and per batch item.
BEFORE_NODE = {"calls": 5.0, "invocations": 1.0, "transitions": 1.0}
BEFORE_ITEM_COST_PER_MILLION = 81.9  # docs/batch.md of that commit, same prices

HANDLER = "relayflow_runtime.handlers.node_runner.lambda_handler"


class _Counter:
    """Counts botocore requests made inside node-runner invocations, and the invocations."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.write_bytes = 0
        self._inside = threading.local()
        self._lock = threading.Lock()

    def install(self) -> None:
        import importlib

        import moto.core.botocore_stubber as stubber

        from relayflow.local import moto_shim

        original = stubber.BotocoreStubber.__call__
        counter = self

        def counting(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
            if getattr(counter._inside, "on", False):
                operation = event_name.split(".", 1)[1]
                with counter._lock:
                    counter.counts[operation] += 1
                    if operation.startswith("dynamodb.") and any(
                        w in operation for w in ("Put", "Update", "Write", "Transact")
                    ):
                        counter.write_bytes += len(request.body or b"")
            return original(self, event_name, request, **kwargs)

        stubber.BotocoreStubber.__call__ = counting  # type: ignore[method-assign]
        module_name, _, attribute = HANDLER.rpartition(".")
        real = getattr(importlib.import_module(module_name), attribute)

        def handler(event: Any, context: Any) -> Any:
            self._inside.on = True
            with self._lock:
                self.counts["lambda.Invoke (by Step Functions)"] += 1
            try:
                return real(event, context)
            finally:
                self._inside.on = False

        moto_shim.register(HANDLER, handler)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.write_bytes = 0


def _transitions(sfn: Any, execution_id: str) -> int:
    total = 0
    for machine in sfn.list_state_machines()["stateMachines"]:
        for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]:
            if execution["name"] == execution_id:
                history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
                total += sum(1 for e in history["events"] if e["type"].endswith("StateEntered"))
    return total


def _calls(snapshot: dict[str, int]) -> int:
    return sum(v for k, v in snapshot.items() if not k.startswith("lambda.Invoke (by"))


def _single(client: Any, sfn: Any, counter: _Counter) -> dict[str, float]:
    model = client.create_model(name="upper", provider="builtin", config={"model": "uppercase"})
    measured: dict[int, dict[str, int]] = {}
    for nodes in (1, 10):
        workflow = client.create_workflow(name=f"calls-{nodes}")
        version = client.create_workflow_version(workflow_id=workflow.id)
        for i in range(nodes):
            client.create_workflow_node(version_id=version.id, name=f"n{i}", entity_id=model.id)
        warm = client.execute_workflow(workflow_id=workflow.id, single_input="warm up")
        client.wait_for_execution(workflow.id, warm.id, poll_interval=0.2, timeout=120)
        counter.reset()
        execution = client.execute_workflow(workflow_id=workflow.id, single_input="count me")
        done = client.wait_for_execution(workflow.id, execution.id, poll_interval=0.5, timeout=120)
        assert done.status == "completed", done.error
        time.sleep(0.3)
        snapshot = counter.snapshot()
        measured[nodes] = {
            "calls": _calls(snapshot),
            "invocations": snapshot.get("lambda.Invoke (by Step Functions)", 0),
            "transitions": _transitions(sfn, execution.id),
        }
    return {k: (measured[10][k] - measured[1][k]) / 9 for k in measured[1]}


ITEMS = 200


def _batch(client: Any, sfn: Any, counter: _Counter) -> dict[str, float]:
    import json
    import tempfile
    from pathlib import Path

    models = [
        client.create_model(name=f"m{i}", provider="builtin", config={"model": name})
        for i, name in enumerate(("uppercase", "word_count", "echo"))
    ]
    workflow = client.create_workflow(name="calls-batch")
    # 30 s nodes, 2 retries: a worst-case item (3 x (30 x 3 + 1 + 2) = 279 s) fits an Express child
    version = client.create_workflow_version(
        workflow_id=workflow.id, config={"max_retries": 2, "node_timeout": 30, "retry_delay_seconds": 1}
    )
    for i, model in enumerate(models):
        client.create_workflow_node(version_id=version.id, name=f"n{i}", entity_id=model.id)
    lines = "\n".join(json.dumps({"id": f"item-{i}", "text": f"item number {i}"}) for i in range(ITEMS))
    dataset = client.create_dataset(name="calls")
    dataset_version = client.create_dataset_version(dataset.id)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "items.jsonl"
        path.write_text(lines)
        client.upload_dataset_items(dataset.id, dataset_version.id, path=path, poll_interval=0.2, timeout=300)
    counter.reset()
    execution = client.execute_workflow(
        workflow_id=workflow.id,
        input_mode="batch",
        batch_config={
            "dataset_id": dataset.id,
            "dataset_version_id": dataset_version.id,
            "input_field": "text",
            "parallelism": 10,
        },
    )
    done = client.wait_for_execution(workflow.id, execution.id, poll_interval=0.5, timeout=300)
    assert done.status == "completed", done.error
    time.sleep(0.3)
    snapshot = counter.snapshot()
    writes = {k: v for k, v in snapshot.items() if k.startswith("dynamodb.")}
    return {
        "calls": _calls(snapshot) / ITEMS,
        "invocations": snapshot.get("lambda.Invoke (by Step Functions)", 0) / ITEMS,
        "parent transitions": _transitions(sfn, execution.id) / ITEMS,
        "dynamodb calls": sum(writes.values()) / ITEMS,
        "dynamodb write KB": counter.write_bytes / 1024 / ITEMS,
        "s3 puts": sum(v for k, v in snapshot.items() if k in ("s3.PutObject", "s3.UploadPart")) / ITEMS,
        "s3 gets": snapshot.get("s3.GetObject", 0) / ITEMS,
        "events": snapshot.get("eventbridge.PutEvents", 0) / ITEMS,
    }


def cost_per_million(item: dict[str, float], *, model_seconds: float, nodes: int = 3) -> float:
    """Per million items of an Express batch: children and Lambda calls from the counted
    invocations (a child runs its items at once, so it lasts as long as one item); DynamoDB write
    units from the counted bytes written (transactional writes cost twice); S3 and events as counted."""
    items = 1e6
    children = item["invocations"] * items
    item_seconds = nodes * model_seconds + 0.05 * nodes  # the models, plus relayflow's own work per node
    child_seconds = math.ceil(item_seconds * 10) / 10  # billed per 100 ms
    express = children * (EXPRESS_REQUEST + child_seconds * EXPRESS_GB * EXPRESS_GB_SECOND)
    lam = children * (LAMBDA_REQUEST + item_seconds * LAMBDA_GB * LAMBDA_GB_SECOND)
    wru = max(item["dynamodb write KB"], 1.0) * 2 * items
    dynamodb = wru * DYNAMODB_WRU + 1.0 * items * DYNAMODB_RRU  # reading each result once
    s3 = items * (item["s3 puts"] * S3_PUT + item["s3 gets"] * S3_GET)
    transitions = item["parent transitions"] * items * STANDARD_TRANSITION
    events = item["events"] * items * EVENTS
    return express + lam + dynamodb + s3 + transitions + events


def run() -> list[tuple[str, float | int, str]]:
    from relayflow.demo import local_api

    counter = _Counter()
    counter.install()
    with local_api() as client:
        import boto3

        sfn = boto3.client("stepfunctions")  # the local stack's moto, as the handlers see it
        node = _single(client, sfn, counter)
        item = _batch(client, sfn, counter)
    fast = cost_per_million(item, model_seconds=0.0)
    slow = cost_per_million(item, model_seconds=2.0)
    rows: list[tuple[str, float | int, str]] = [
        ("single run, per node: AWS calls (before)", BEFORE_NODE["calls"], "calls"),
        ("single run, per node: AWS calls (now)", node["calls"], "calls"),
        ("single run, per node: Lambda invocations (before)", BEFORE_NODE["invocations"], "calls"),
        ("single run, per node: Lambda invocations (now)", node["invocations"], "calls"),
        ("single run, per node: state transitions (before)", BEFORE_NODE["transitions"], "transitions"),
        ("single run, per node: state transitions (now)", node["transitions"], "transitions"),
    ]
    rows += [(f"batch, per item (3 nodes): {k} (now)", v, "") for k, v in item.items()]
    rows += [
        ("cost per million items, 3 fast nodes (before)", BEFORE_ITEM_COST_PER_MILLION, "USD"),
        ("cost per million items, 3 fast (builtin-like) nodes, as measured (now)", fast, "USD"),
        ("cost per million items, 3 nodes of 2 s model calls, as measured (now)", slow, "USD"),
    ]
    return rows
