"""Lambda handler for every Task state of the template's state machines (statemachine/).

Each event is ``{"action": ..., ...}`` (docs/engine.md lists them with their payloads); this
module only parses the payload into the engine's typed shapes and calls one service function.
Each machine's actions are a table (``MACHINE_ACTIONS``) of ``Action``: the typed event its Tasks
send and a handler annotated with the typed shape it answers. Exceptions leave as they are: their
class names are the error names the machines' Catch match. tests/unit/test_machine_contract.py
holds the definitions to all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from relayflow_runtime.domain.batch import (
    AwaitBudgetEvent,
    BatchStart,
    ItemsEvent,
    ItemsFailed,
    ItemsFailedEvent,
    ItemsRun,
)
from relayflow_runtime.domain.engine import (
    Carried,
    FailEvent,
    GateEvent,
    JobEvent,
    JobRound,
    NodeEvent,
    NodeFailedEvent,
    NodeFailure,
    RunEvent,
    RunRef,
    RunStart,
)
from relayflow_runtime.services import (
    batch,
    batch_items,
    budget,
    dataset_service,
    outcomes,
    results_export,
    run_machine,
    run_records,
)

logger = Logger()
tracer = Tracer()


Event = TypeVar("Event", bound=BaseModel)


@dataclass(frozen=True)
class Action(Generic[Event]):
    """One action of a machine: the typed event its Tasks send (their Parameters) and its handler,
    whose return annotation is the typed answer the machine reads (None: nothing is read)."""

    event: type[Event]
    handle: Callable[[Event, int | None], BaseModel | None]

    def __call__(self, event: dict[str, Any], remaining_ms: int | None) -> BaseModel | None:
        return self.handle(self.event.model_validate(event), remaining_ms)


# ---- the run machine (statemachine/run.asl.json) ---------------------------------------------------
def _start(event: RunEvent, remaining_ms: int | None) -> RunStart:
    return run_machine.start(event.run)


def _gate(event: GateEvent, remaining_ms: int | None) -> None:
    # executions of the previous run machine only (see run_machine.previous_gate)
    run_machine.previous_gate(event.run, event.node, event.token, event.checks)


def _node(event: NodeEvent, remaining_ms: int | None) -> None:
    run_machine.run_node(event.run, event.node, event.attempt, event.carried)


def _node_failed(event: NodeFailedEvent, remaining_ms: int | None) -> NodeFailure:
    return run_machine.node_failed(event.run, event.node, event.error)


class _Ends(Protocol):
    def complete(self, run: RunRef) -> None: ...
    def fail(self, run: RunRef, reason: str, error: dict[str, Any] | None = None) -> None: ...


def _ends(engine: _Ends) -> dict[str, Action[Any]]:
    """``complete`` and ``fail``, named alike in both machines (the run's plan says which runs it)."""

    def complete(event: RunEvent, remaining_ms: int | None) -> None:
        engine.complete(event.run)

    def fail(event: FailEvent, remaining_ms: int | None) -> None:
        engine.fail(event.run, event.reason, event.error)

    return {"complete": Action(RunEvent, complete), "fail": Action(FailEvent, fail)}


#: What the runner's SendTaskSuccess hands a task parked on a ``.waitForTaskToken`` service
#: integration of the run machine (its gate, AwaitParents): services/run_machine._release_children.
GATE_RELEASE: type[BaseModel] = Carried

RUN_ACTIONS: dict[str, Action[Any]] = {
    "start": Action(RunEvent, _start),
    "gate": Action(GateEvent, _gate),
    "node": Action(NodeEvent, _node),
    "node_failed": Action(NodeFailedEvent, _node_failed),
    **_ends(run_machine),
}


# ---- the batch machine (statemachine/batch.asl.json) -----------------------------------------------
def _child_time(event: ItemsEvent, remaining_ms: int | None) -> int | None:
    """The time a child's ``run_items`` has: the invocation's, or its ``child_timeout`` (its Task's
    timeout) when that is shorter (an Express child's is far below Lambda's 900 s, and Step
    Functions times the Task out there, discarding its result: what finished must be recorded
    before)."""
    timeout = event.child_timeout
    limits = [ms for ms in (remaining_ms, int(timeout * 1000) if timeout else None) if ms is not None]
    return min(limits) if limits else None


def _prepare_batch(event: RunEvent, remaining_ms: int | None) -> BatchStart:
    return BatchStart.model_validate(batch.prepare_batch(event.run))


def _reserve_budget(event: BatchStart, remaining_ms: int | None) -> BatchStart:
    return BatchStart.model_validate(batch.reserve_budget(event.model_dump(mode="json")))


def _await_budget(event: AwaitBudgetEvent, remaining_ms: int | None) -> None:
    run = event.run
    budget.await_budget(run.tenant, run.execution_id, event.batch, event.run_timeout, event.token)


def _run_items(event: ItemsEvent, remaining_ms: int | None) -> ItemsRun:
    done = batch_items.run_items(event.run, event.items, remaining_ms=_child_time(event, remaining_ms))
    return ItemsRun.model_validate(done)


def _items_failed(event: ItemsFailedEvent, remaining_ms: int | None) -> ItemsFailed:
    return ItemsFailed.model_validate(batch_items.items_failed(event.run, event.items, event.error))


BATCH_ACTIONS: dict[str, Action[Any]] = {
    "prepare_batch": Action(RunEvent, _prepare_batch),
    "reserve_budget": Action(BatchStart, _reserve_budget),
    "await_budget": Action(AwaitBudgetEvent, _await_budget),
    "run_items": Action(ItemsEvent, _run_items),
    "items_failed": Action(ItemsFailedEvent, _items_failed),
    **_ends(batch),
}


# ---- the jobs machine (statemachine/jobs.asl.json): background work that grows with the data -------
def _job(event: JobEvent, remaining_ms: int | None) -> JobRound:
    job = event.job.model_dump(mode="json", exclude_unset=True)
    if event.job.kind == "ingest_dataset":
        return JobRound.model_validate(dataset_service.run_ingest_job(job))
    if event.job.kind == "delete_execution":
        return JobRound.model_validate(batch.delete_execution_job(job, remaining_ms=remaining_ms))
    if event.job.kind == "export_results":
        return JobRound.model_validate(results_export.export_results_job(job, remaining_ms=remaining_ms))
    if event.job.kind == "compact_outcomes":
        return JobRound.model_validate(outcomes.compact_job(job, remaining_ms=remaining_ms))
    if event.job.kind == "compact_segment":
        return JobRound.model_validate(outcomes.compact_segment_job(job))
    raise ValueError(f"unknown job kind {event.job.kind!r}")


JOB_ACTIONS: dict[str, Action[Any]] = {"job": Action(JobEvent, _job)}

#: Each machine's actions, by its definition's name (statemachine/NAME.asl.json).
MACHINE_ACTIONS: dict[str, dict[str, Action[Any]]] = {
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
    return _answer(handler(event, remaining_ms))


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    run = event.get("run") or {}
    logger.set_correlation_id(run.get("execution_id") if isinstance(run, dict) else None)
    logger.append_keys(action=event.get("action"), node_id=(event.get("node") or {}).get("id"))
    return handle(event, remaining_ms=context.get_remaining_time_in_millis())
