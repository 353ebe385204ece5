"""Lambda handler for every Task state of the template's state machines (statemachine/).

Each event is ``{"action": ..., ...}`` (docs/engine.md lists them with their payloads); this
module only parses the payload into the engine's typed shapes and calls one service function.
Each machine's actions are a table (``MACHINE_ACTIONS``), each handler annotated with the typed
shape it answers; exceptions leave as they are: their class names are the error names the
machines' Catch match. tests/unit/test_machine_contract.py holds the definitions to all three.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from relayflow_runtime.domain.batch import BatchStart, ItemEntry, ItemsFailed, ItemsRun
from relayflow_runtime.domain.engine import JobRound, NodeFailure, NodeTask, RunRef, RunStart
from relayflow_runtime.services import (
    batch,
    batch_items,
    batch_results,
    budget,
    dataset_service,
    run_machine,
    run_records,
)

logger = Logger()
tracer = Tracer()


#: An action's handler: the Task's event (its Parameters), the run, the invocation's time left.
#: Its return annotation is the shape the machine reads (None: a Task whose ResultPath is null).
Action = Callable[[dict[str, Any], RunRef, int | None], BaseModel | None]


# ---- the run machine (statemachine/run.asl.json) ---------------------------------------------------
def _start(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> RunStart:
    return run_machine.start(run)


def _gate(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> None:
    node = NodeTask.model_validate(event["node"])
    run_machine.gate(run, node, str(event["token"]), int(event.get("checks") or 0))


def _node(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> None:
    run_machine.run_node(run, NodeTask.model_validate(event["node"]), int(event.get("attempt") or 0))


def _node_failed(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> NodeFailure:
    return run_machine.node_failed(run, NodeTask.model_validate(event["node"]), event.get("error"))


class _Ends(Protocol):
    def complete(self, run: RunRef) -> None: ...
    def fail(self, run: RunRef, reason: str, error: dict[str, Any] | None = None) -> None: ...


def _ends(engine: _Ends) -> dict[str, Action]:
    """``complete`` and ``fail``, named alike in both machines (the run's plan says which runs it)."""

    def complete(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> None:
        engine.complete(run)

    def fail(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> None:
        engine.fail(run, str(event.get("reason") or "error"), event.get("error"))

    return {"complete": complete, "fail": fail}


RUN_ACTIONS: dict[str, Action] = {
    "start": _start,
    "gate": _gate,
    "node": _node,
    "node_failed": _node_failed,
    **_ends(run_machine),
}


# ---- the batch machine (statemachine/batch.asl.json) -----------------------------------------------
def _entries(event: dict[str, Any]) -> list[ItemEntry]:
    return [ItemEntry.model_validate(entry) for entry in event.get("items") or []]


def _child_time(event: dict[str, Any], remaining_ms: int | None) -> int | None:
    """The time a child's ``run_items`` has: the invocation's, or the Task's own timeout when that is
    shorter (an Express child's ``task_timeout`` is far below Lambda's 900 s, and Step Functions
    times the Task out there, discarding its result: what finished must be recorded before)."""
    timeout = event.get("task_timeout")
    limits = [ms for ms in (remaining_ms, int(float(timeout) * 1000) if timeout else None) if ms is not None]
    return min(limits) if limits else None


def _prepare_batch(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> BatchStart:
    return BatchStart.model_validate(batch.prepare_batch(run))


def _reserve_budget(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> BatchStart:
    return BatchStart.model_validate(batch.reserve_budget(event))


def _await_budget(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> None:
    timeout, token = int(event["timeout"]), str(event["token"])
    budget.await_budget(run.tenant, run.execution_id, event["batch"], timeout, token)


def _run_items(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> ItemsRun:
    done = batch_items.run_items(run, _entries(event), remaining_ms=_child_time(event, remaining_ms))
    return ItemsRun.model_validate(done)


def _items_failed(event: dict[str, Any], run: RunRef, remaining_ms: int | None) -> ItemsFailed:
    return ItemsFailed.model_validate(batch_items.items_failed(run, _entries(event), event.get("error")))


BATCH_ACTIONS: dict[str, Action] = {
    "prepare_batch": _prepare_batch,
    "reserve_budget": _reserve_budget,
    "await_budget": _await_budget,
    "run_items": _run_items,
    "items_failed": _items_failed,
    **_ends(batch),
}


# ---- the jobs machine (statemachine/jobs.asl.json): background work that grows with the data -------
def _job(event: dict[str, Any], remaining_ms: int | None) -> JobRound:
    job = event["job"]
    kind = job.get("kind")
    if kind == "ingest_dataset":
        return JobRound.model_validate(dataset_service.run_ingest_job(job))
    if kind == "delete_execution":
        return JobRound.model_validate(batch.delete_execution_job(job, remaining_ms=remaining_ms))
    if kind == "export_results":
        return JobRound.model_validate(batch_results.export_results_job(job))
    raise ValueError(f"unknown job kind {kind!r}")


JOB_ACTIONS = {"job": _job}

#: Each machine's actions, by its definition's name (statemachine/NAME.asl.json).
MACHINE_ACTIONS: dict[str, Mapping[str, Callable[..., BaseModel | None]]] = {
    "run": RUN_ACTIONS,
    "batch": BATCH_ACTIONS,
    "jobs": JOB_ACTIONS,
}


def _answer(result: BaseModel | None) -> Any:
    """What goes back to Step Functions: JSON (a job's answer without the fields it did not set)."""
    if isinstance(result, JobRound):
        return result.model_dump(mode="json", exclude_unset=True)
    return result.model_dump(mode="json") if result is not None else None


def handle(event: dict[str, Any], remaining_ms: int | None = None) -> Any:
    """``remaining_ms``: the time this invocation has left (Lambda's context), for the actions that
    must finish ahead of Lambda's hard kill (run_items, the delete job)."""
    action = str(event["action"])
    if action in JOB_ACTIONS:
        return _answer(JOB_ACTIONS[action](event, remaining_ms))
    run = RunRef.model_validate(event["run"])
    batch_run = action not in RUN_ACTIONS or (
        action in BATCH_ACTIONS and run_records.load_plan(run.tenant, run.execution_id).mode == "batch"
    )
    handler = (BATCH_ACTIONS if batch_run else RUN_ACTIONS).get(action)
    if handler is None:
        raise ValueError(f"unknown runner action {action!r}")
    return _answer(handler(event, run, remaining_ms))


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    run = event.get("run") or {}
    logger.set_correlation_id(run.get("execution_id") if isinstance(run, dict) else None)
    logger.append_keys(action=event.get("action"), node_id=(event.get("node") or {}).get("id"))
    return handle(event, remaining_ms=context.get_remaining_time_in_millis())
