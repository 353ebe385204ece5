"""Batch runs set up for the batch machine's actions, called directly (no state machine): a dataset
and a workflow through the HTTP API, then a ``pending`` batch execution written as the API writes
it (its record and its plan snapshot)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.client
from tests.support.graphs import ok
from tests.support.items import execution_item

from relayflow_runtime.adapters import aws
from relayflow_runtime.domain.clock import new_id, now_iso
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.domain.execution_record import ExecutionRecord
from relayflow_runtime.schemas.entities import BatchConfig, Execution, ExecutionProgress
from relayflow_runtime.services import batch, batch_items, deps, item_lists, run_records
from relayflow_runtime.services.plan import build_plan
from relayflow_runtime.services.run_records import load_plan
from relayflow_runtime.settings import get_settings

TENANT = "default"


def dataset(api: Any, items: list[dict[str, Any]]) -> tuple[str, str]:
    created = ok(api("POST", "/datasets", {"name": "items"}))
    version = ok(api("POST", f"/datasets/{created['id']}/versions", {}))
    ready = ok(
        api("POST", f"/datasets/{created['id']}/versions/{version['id']}/items", {"items": items}), 200
    )
    assert ready["status"] == "ready", ready
    return created["id"], version["id"]


def workflow(
    api: Any, nodes: list[tuple[str, dict[str, Any], dict[str, Any]]], **config: Any
) -> tuple[str, str]:
    """(workflow id, version id): a chain of (name, builtin model config, node config)."""
    created = ok(api("POST", "/workflows", {"name": "batch"}))
    version = ok(
        api("POST", f"/workflows/{created['id']}/versions", {"config": {"max_retries": 0, **config}})
    )
    for name, model_config, node_config in nodes:
        model = ok(api("POST", "/models", {"name": name, "provider": "builtin", "config": model_config}))
        ok(
            api(
                "POST",
                f"/versions/{version['id']}/nodes",
                {"name": name, "entity_id": model["id"], "config": node_config},
            )
        )
    return created["id"], version["id"]


def pending_run(
    workflow_id: str, version_id: str, dataset_id: str, dataset_version_id: str, **extra: Any
) -> RunRef:
    """A pending batch execution as the API leaves it; ``extra`` adds record fields (``rerun_of``,
    ``retry_of``) or batch_config fields (``filter_query``, ``parallelism``, ...)."""
    record_fields = {k: extra.pop(k) for k in ("rerun_of", "retry_of") if k in extra}
    config = BatchConfig(dataset_id=dataset_id, dataset_version_id=dataset_version_id, **extra)
    plan = build_plan(TENANT, workflow_id, version_id, mode="batch", run_timeout=None)
    execution_id = new_id()
    deps.blobs().put_json(run_records.plan_key(TENANT, execution_id), plan.model_dump(mode="json"))
    execution = Execution(
        id=execution_id,
        workflow_id=workflow_id,
        version_id=version_id,
        status="pending",
        input_mode="batch",
        batch_config=config,
        created_at=now_iso(),
        progress=ExecutionProgress(total_nodes=len(plan.nodes)),
    )
    record = {**execution.model_dump(mode="json", exclude={"node_executions"}), **record_fields}
    deps.stores().executions.put_execution(TENANT, record)
    run = RunRef(tenant=TENANT, workflow_id=workflow_id, execution_id=execution_id)
    load_plan(TENANT, execution_id)
    return run


def run_every_item(run: RunRef, per_child: int = 10, until: int | None = None) -> None:
    """Start a pending batch (its list, its budget) and run all its items (the first ``until``),
    ``per_child`` at a time, as its children would: every item recorded."""
    batch.reserve_budget(batch.prepare_batch(run))
    batch_items.status.forget()
    prefix = run_records.execution_prefix(run.tenant, run.execution_id)
    listed = [entry for _, entry in item_lists.entries(item_lists.list_key(prefix))][:until]
    for start in range(0, len(listed), per_child):
        child = listed[start : start + per_child]
        assert batch_items.run_items(run, child) == {"done": len(child)}


def record(run: RunRef) -> dict[str, Any]:
    return execution_item(run.tenant, run.execution_id)


def stored(run: RunRef) -> ExecutionRecord:
    """The run's execution record (domain/execution_record.py), as the store reads it."""
    return deps.stores().executions.get_record(run.tenant, run.execution_id)


@contextmanager
def aws_calls() -> Iterator[collections.Counter[str]]:
    """Every AWS API call this thread (and the threads it hands work to, named ``outcome-read``)
    makes while the block runs, by service.operation (the local stack's own threads, its watchers,
    are not counted)."""
    calls: collections.Counter[str] = collections.Counter()
    real = botocore.client.BaseClient._make_api_call
    me = threading.get_ident()

    def counted(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if threading.get_ident() == me or threading.current_thread().name.startswith("outcome-read"):
            calls[f"{self.meta.service_model.service_name}.{operation}"] += 1
        return real(self, operation, params)

    botocore.client.BaseClient._make_api_call = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = real  # type: ignore[method-assign]


def compaction_ended(run: RunRef, timeout: float = 60.0) -> str:
    """Wait for the compaction a batch's end starts on the jobs machine (services/outcomes.py) to
    end: its status (the jobs machine's threads read S3 while it runs)."""
    machine = get_settings().jobs_machine_arn
    arn = f"{machine.replace(':stateMachine:', ':execution:')}:compact-{run.execution_id}"
    deadline = time.monotonic() + timeout
    while True:
        status = str(aws.client("stepfunctions").describe_execution(executionArn=arn)["status"])
        if status != "RUNNING":
            return status
        assert time.monotonic() < deadline, "the compaction is still running"
        time.sleep(0.05)


def segments_compacted(run: RunRef, blocks: set[int], timeout: float = 60.0) -> None:
    """Wait until the jobs the run's children started have compacted ``blocks`` while it runs
    (services/outcomes.py ``compact_segment_job``: the execution lists them)."""
    deadline = time.monotonic() + timeout
    while True:
        record = deps.stores().executions.get_record(run.tenant, run.execution_id)
        if blocks <= set(record.compacted_segments or ()):
            return
        assert time.monotonic() < deadline, f"segments {blocks} not compacted: {record.compacted_segments}"
        time.sleep(0.05)
