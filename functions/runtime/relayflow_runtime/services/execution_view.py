"""An execution as the API shows it, built from its stored record.

A single run's node records come with it; a batch run's progress (and, once it is over, its first
page of results) from its counters and outcomes (services/batch_results.py). Used by every answer
that carries an execution, by the status events (services/notify.py) and by the webhooks.
"""

from __future__ import annotations

from typing import Any

from relayflow_runtime.domain.costs import sum_usage
from relayflow_runtime.domain.status import TERMINAL, ExecutionStatus, settled_node_status
from relayflow_runtime.schemas.entities import Execution, ExecutionResults, NodeExecution
from relayflow_runtime.services import batch_results, deps
from relayflow_runtime.services.run_records import usage_of
from relayflow_runtime.services.values import is_ref, unpack


def _node_execution(record: dict[str, Any], execution: dict[str, Any]) -> NodeExecution:
    data = dict(record)
    data["status"] = settled_node_status(
        data.get("status", "pending"), execution["status"], execution.get("error")
    )
    data["output"] = unpack(data.get("output"))
    data["parsed_output"] = unpack(data.get("parsed_output"))
    data["prompt"] = unpack(data.get("prompt"))
    if data.get("usage"):
        data["usage"] = usage_of(data["usage"])
    return NodeExecution.model_validate(data)


def _single_run_usage(
    tenant: str, record: dict[str, Any], node_records: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """A single run's usage counters: the sum of its node records' ``usage`` (a node records its
    own, so finishing siblings never write one shared item). An ended run keeps the sum on its
    item (``usage_summed``, services/transitions.keep_usage), which pages without the nodes read;
    runs recorded before counted on the item as they went, and an ended one keeps that total."""
    if node_records is None:
        if record.get("status") in TERMINAL and (record.get("usage_summed") or "input_tokens" in record):
            return record
        if record.get("status") == ExecutionStatus.PENDING:
            return {}
        node_records = deps.stores().executions.node_records(tenant, record["id"])
    return sum_usage(r.get("usage") for r in node_records)


def to_execution(tenant: str, record: dict[str, Any], *, with_nodes: bool = True) -> Execution:
    data = dict(record)
    # A single run stores its final output's text and, for a JSON node, the parsed value apart
    # (runs recorded before kept the parsed value alone). Batch runs' results are filled from their
    # item outcomes (batch_results.fill_progress).
    stored = unpack(data.pop("results", None))
    parsed = unpack(data.pop("results_parsed", None))
    if data.get("input_mode", "single") == "single":
        data["results"] = ExecutionResults.of_single_run(stored, parsed)
    if is_ref(data.get("single_input")):
        # Pages of the history leave a long input out; the execution itself returns it whole.
        data["single_input"] = unpack(data["single_input"]) if with_nodes else None
    current = data.pop("current_node", None)
    if current:
        # The runner moves only this small attribute; progress keeps the totals set at start.
        data["progress"] = {
            **data.get("progress", {}),
            "current_node_idx": current["idx"],
            "current_node_id": current["id"],
        }
    records: list[dict[str, Any]] | None = None
    if data.get("input_mode", "single") == "single":
        if with_nodes:
            records = sorted(
                deps.stores().executions.node_records(tenant, data["id"]), key=lambda r: r.get("idx", 0)
            )
        counters = _single_run_usage(tenant, data, records)
    else:
        counters = data
    if "input_tokens" in counters or "output_tokens" in counters:
        data["usage"] = usage_of(counters)
    if data.get("status") != "pending":
        data.pop("waiting_reason", None)  # why a run waited is no news once it started or ended
    execution = Execution.model_validate(data)
    if records is not None:
        execution.node_executions = {r["node_id"]: _node_execution(r, record) for r in records}
    if execution.input_mode == "batch":
        batch_results.fill_progress(
            tenant, execution, with_results=with_nodes, compacted=batch_results.compacted(record)
        )
    return execution
