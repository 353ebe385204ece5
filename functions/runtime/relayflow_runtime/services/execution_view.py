"""An execution as the API shows it, built from its stored record.

A single run's node records come with it; a batch run's progress (and, once it is over, its first
page of results) from its counters and outcomes (services/batch_results.py). Used by every answer
that carries an execution, by the status events (services/notify.py) and by the webhooks.
"""

from __future__ import annotations

from typing import Any

from relayflow_runtime.domain.costs import sum_usage
from relayflow_runtime.domain.execution_record import ExecutionRecord, NodeRecord
from relayflow_runtime.domain.status import (
    TERMINAL,
    CurrentNodeItem,
    ExecutionStatus,
    node_tally,
    progress_node,
    settled_node_status,
)
from relayflow_runtime.schemas.entities import Execution, ExecutionResults, NodeExecution, TokenUsage
from relayflow_runtime.services import batch_results, deps
from relayflow_runtime.services.run_records import usage_of
from relayflow_runtime.services.values import is_ref, unpack


def _node_execution(
    record: NodeRecord, run_status: str, run_error: str | None, blobs: deps.Blobs
) -> NodeExecution:
    data: dict[str, Any] = dict(record)
    data["status"] = settled_node_status(data.get("status", "pending"), run_status, run_error)
    data["output"] = unpack(data.get("output"), blobs)
    data["parsed_output"] = unpack(data.get("parsed_output"), blobs)
    data["prompt"] = unpack(data.get("prompt"), blobs)
    if data.get("usage"):
        data["usage"] = usage_of(data["usage"])
    return NodeExecution.model_validate(data)


def _single_run_nodes(tenant: str, record: ExecutionRecord, env: deps.Deps) -> list[NodeRecord] | None:
    """A single run's node records when a page without the nodes needs them: its usage, its node
    counts and its progress while it runs (a node records its own, so finishing siblings never write
    one shared item). An ended run keeps them on its item (``usage_summed``, ``node_counts``,
    ``current_node``: services/transitions.keep_usage), which pages without the nodes read (None);
    runs recorded before counted usage on the item as they went, and an ended one keeps that total
    (its node counts are unknown to a page)."""
    if record.status == ExecutionStatus.PENDING:
        return []
    if record.status in TERMINAL and (
        record.usage_summed or record.input_tokens is not None or record.node_counts is not None
    ):
        return None
    return env.executions.node_records(tenant, record.id)


def to_execution(
    tenant: str,
    record: ExecutionRecord,
    *,
    with_nodes: bool = True,
    env: deps.Deps | None = None,
) -> Execution:
    """The API's execution from its stored record, field by field (domain/execution_record.py
    says what the item holds beyond it)."""
    env = deps.given(env)
    stored = record
    single = stored.input_mode == "single"
    # A single run stores its final output's text and, for a JSON node, the parsed value apart
    # (runs recorded before kept the parsed value alone). Batch runs' results are filled from their
    # item outcomes (batch_results.fill_progress).
    results = (
        ExecutionResults.of_single_run(
            unpack(stored.results, env.blobs), unpack(stored.results_parsed, env.blobs)
        )
        if single
        else None
    )
    single_input = stored.single_input
    if is_ref(single_input):
        # Pages of the history leave a long input out; the execution itself returns it whole.
        single_input = unpack(single_input, env.blobs) if with_nodes else None
    at = stored.current_node
    current = CurrentNodeItem(idx=at.idx, id=at.id) if at else None
    records: list[NodeRecord] | None = None
    counts: dict[str, int] | None = None
    if single:
        if with_nodes:
            records = sorted(env.executions.node_records(tenant, stored.id), key=lambda r: r.get("idx", 0))
        nodes = records if records is not None else _single_run_nodes(tenant, stored, env)
        if nodes is None:
            counters, counts = dict(stored.usage_counters()), stored.node_counts
        else:
            counters = sum_usage(r.get("usage") for r in nodes)
            statuses = (str(r.get("status", "pending")) for r in nodes)
            counts = node_tally(statuses, stored.status, stored.error)
        # Progress is the nodes' own (domain/status.progress_node); an ended run's item keeps the
        # node it ended at (a failed run: the node that failed).
        if nodes is not None and not (current and stored.status in TERMINAL):
            current = progress_node(nodes) or current
    else:
        counters = dict(stored.usage_counters())
    progress = stored.progress.model_copy()  # the answer's own: a batch's counts are filled into it
    if current:
        # progress keeps the totals set at start
        progress = progress.model_copy(
            update={"current_node_idx": current["idx"], "current_node_id": current["id"]}
        )
    if counts is not None:
        progress = progress.model_copy(update=counts)
    execution = Execution(
        id=stored.id,
        workflow_id=stored.workflow_id,
        version_id=stored.version_id,
        number=stored.number,
        status=stored.status,
        input_mode=stored.input_mode,
        single_input=single_input,
        input_file=stored.input_file,
        batch_config=stored.batch_config,
        timeout=stored.timeout,
        created_at=stored.created_at,
        started_at=stored.started_at,
        completed_at=stored.completed_at,
        progress=progress,
        results=results,
        error=stored.error,
        rerun_of=stored.rerun_of,
        retry_of=stored.retry_of,
        usage=TokenUsage.model_validate(usage_of(counters))
        if "input_tokens" in counters or "output_tokens" in counters
        else None,
        callback_url=stored.callback_url,
        trigger=stored.trigger,
        # why a run waited is no news once it started or ended
        waiting_reason=stored.waiting_reason if stored.status == ExecutionStatus.PENDING else None,
    )
    if records is not None:
        execution.node_executions = {
            r["node_id"]: _node_execution(r, stored.status, stored.error, env.blobs) for r in records
        }
    if execution.input_mode == "batch":
        batch_results.fill_progress(
            tenant,
            execution,
            with_results=with_nodes,
            compacted=batch_results.compacted(stored),
            store=env.batches,
        )
        progress = execution.progress
        if progress.processed_items is not None:
            progress.completed_items = progress.processed_items - (progress.failed_items or 0)
        failures = progress.failed_items
    else:
        failures = execution.progress.failed_nodes
    execution.completed_with_failures = execution.status == "completed" and bool(failures)
    return execution
