"""Lambda handler for every Task state of the template's state machines (statemachine/).

Each event is ``{"action": ..., ...}`` (docs/engine.md lists them with their payloads); this
module only parses the payload into the engine's typed shapes and calls one service function.
Exceptions leave as they are: their class names are the error names the machines' Catch match.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.domain.batch import ItemEntry
from relayflow_runtime.domain.engine import NodeTask, RunRef
from relayflow_runtime.services import (
    batch,
    batch_items,
    batch_results,
    budget,
    dataset_service,
    outcomes,
    run_machine,
    run_records,
)

logger = Logger()
tracer = Tracer()


def _single(action: str, event: dict[str, Any], run: RunRef) -> Any:
    if action == "start":
        return run_machine.start(run).model_dump(mode="json")
    if action == "gate":
        node = NodeTask.model_validate(event["node"])
        run_machine.gate(run, node, str(event["token"]), int(event.get("checks") or 0))
        return None
    if action == "node":
        run_machine.run_node(run, NodeTask.model_validate(event["node"]), int(event.get("attempt") or 0))
        return None
    if action == "node_failed":
        return run_machine.node_failed(run, NodeTask.model_validate(event["node"]), event.get("error"))
    if action == "complete":
        run_machine.complete(run)
        return None
    if action == "fail":
        run_machine.fail(run, str(event.get("reason") or "error"), event.get("error"))
        return None
    raise ValueError(f"unknown runner action {action!r}")


#: The batch machine's own actions (its complete and fail are the run machine's names).
BATCH_ACTIONS = frozenset({"prepare_batch", "reserve_budget", "await_budget", "run_items", "items_failed"})


def _entries(event: dict[str, Any]) -> list[ItemEntry]:
    return [ItemEntry.model_validate(entry) for entry in event.get("items") or []]


def _child_time(event: dict[str, Any], remaining_ms: int | None) -> int | None:
    """The time a child's ``run_items`` has: the invocation's, or the Task's own timeout when that is
    shorter (an Express child's ``task_timeout`` is far below Lambda's 900 s, and Step Functions
    times the Task out there, discarding its result: what finished must be recorded before)."""
    timeout = event.get("task_timeout")
    limits = [ms for ms in (remaining_ms, int(float(timeout) * 1000) if timeout else None) if ms is not None]
    return min(limits) if limits else None


def _batch(action: str, event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> Any:
    if action == "prepare_batch":
        return batch.prepare_batch(run)
    if action == "reserve_budget":
        return batch.reserve_budget(event)
    if action == "await_budget":
        timeout, token = int(event["timeout"]), str(event["token"])
        budget.await_budget(run.tenant, run.execution_id, event["batch"], timeout, token)
        return None
    if action == "run_items":
        return batch_items.run_items(run, _entries(event), remaining_ms=_child_time(event, remaining_ms))
    if action == "items_failed":
        return batch_items.items_failed(run, _entries(event), event.get("error"))
    if action == "complete":
        batch.complete(run)
        return None
    if action == "fail":
        batch.fail(run, str(event.get("reason") or "error"), event.get("error"))
        return None
    raise ValueError(f"unknown batch action {action!r}")


def _job(job: dict[str, Any], remaining_ms: int | None) -> Any:
    """The jobs machine: background work that grows with the data."""
    kind = job.get("kind")
    if kind == "ingest_dataset":
        return dataset_service.run_ingest_job(job)
    if kind == "delete_execution":
        return batch.delete_execution_job(job, remaining_ms=remaining_ms)
    if kind == "export_results":
        return batch_results.export_results_job(job, remaining_ms=remaining_ms)
    if kind == "compact_outcomes":
        return outcomes.compact_job(job, remaining_ms=remaining_ms)
    raise ValueError(f"unknown job kind {kind!r}")


def handle(event: dict[str, Any], remaining_ms: int | None = None) -> Any:
    """``remaining_ms``: the time this invocation has left (Lambda's context), for the actions that
    must finish ahead of Lambda's hard kill (run_items, the delete job)."""
    action = str(event["action"])
    if action == "job":
        return _job(event["job"], remaining_ms)
    run = RunRef.model_validate(event["run"])
    if action in BATCH_ACTIONS or (
        action in ("complete", "fail") and run_records.load_plan(run.tenant, run.execution_id).mode == "batch"
    ):
        return _batch(action, event, run, remaining_ms)
    return _single(action, event, run)


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    run = event.get("run") or {}
    logger.set_correlation_id(run.get("execution_id") if isinstance(run, dict) else None)
    logger.append_keys(action=event.get("action"), node_id=(event.get("node") or {}).get("id"))
    return handle(event, remaining_ms=context.get_remaining_time_in_millis())
