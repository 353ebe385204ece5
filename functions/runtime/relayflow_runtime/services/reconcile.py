"""Make a run's record agree with its state machine, and finish what follows a run's end.

Two callers settle runs the same way, through :func:`settle`:

* the reconciler (handlers/reconciler.py): Step Functions' status-change event of the run's
  execution arrives through EventBridge;
* the sweeper (services/sweeper.py): that event was lost, or the execution never started.

Whatever ends a run (its own ``complete``/``fail``, a cancel, or :func:`settle`), the terminal status
change calls :func:`after_finish`: the run gives back its share of the batch budget and leaves the
sweep index. A run whose follow-up is cut short (the Lambda died) stays in the index's SETTLE
partition and the sweeper calls :func:`after_finish` again; every step is idempotent.
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.sweep import SweepIndex
from relayflow_runtime.schemas.entities import TERMINAL_STATUSES
from relayflow_runtime.services import budget, executions, metrics
from relayflow_runtime.services.batch import batch_store
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)

#: Step Functions' terminal statuses, and the sweeper's own: no execution by the run's name exists.
SfnOutcome = Literal["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "NEVER_STARTED"]
NEVER_STARTED = "NEVER_STARTED"


def sweep_index() -> SweepIndex:
    return SweepIndex(get_settings().table_name)


def settle(
    tenant: str, execution_id: str, sfn_status: str, error: str | None = None, cause: str | None = None
) -> bool:
    """Record the end of a run's state machine execution unless the run already recorded its end.
    True when this call moved the run to a terminal status."""
    try:
        before = executions.store().get_execution(tenant, execution_id)
    except executions.NotFound:
        return False
    if before["status"] in TERMINAL_STATUSES:
        after_finish(tenant, before)  # e.g. the budget of a run whose follow-up was cut short
        return False
    if sfn_status == NEVER_STARTED:
        sfn_status, error, cause = (
            "FAILED",
            "the run's state machine execution never started",
            "no Step Functions execution exists with the run's name; the start was lost",
        )
    executions.finish_unrecorded(tenant, execution_id, sfn_status, error, cause)
    after = executions.store().get_execution(tenant, execution_id)
    return after["status"] in TERMINAL_STATUSES


def count_finished(tenant: str, record: dict[str, Any]) -> None:
    """Metrics of a run that just finished (called once, by the writer of its terminal status):
    its nodes by status and their retries (single runs), its items processed and failed (batch)."""
    try:
        if record.get("input_mode") == "batch":
            # The final counts its end kept; else (a cancel) the counter shards as they are.
            counts = record.get("progress") or {}
            if counts.get("processed_items") is None:
                counts = batch_store().counters(tenant, record["id"], consistent=True)
            metrics.count(metrics.ITEMS_PROCESSED, int(counts.get("processed_items") or 0))
            metrics.count(metrics.ITEMS_FAILED, int(counts.get("failed_items") or 0))
            return
        statuses: dict[str, int] = {}
        retries = 0
        for node in executions.store().node_records(tenant, record["id"]):
            status = executions.settled_node_status(str(node.get("status", "pending")), record)
            statuses[status] = statuses.get(status, 0) + 1
            retries += max(0, int(node.get("attempts") or 0) - 1)
        for status, number in statuses.items():
            metrics.count(metrics.NODES_FINISHED, number, Status=status)
        if retries:
            metrics.count(metrics.NODE_RETRIES, retries)
    except Exception:  # metrics must never fail the end of a run
        logger.exception("could not count a finished run", extra={"execution_id": record.get("id")})


def after_finish(tenant: str, record: dict[str, Any]) -> bool:
    """What follows a run's end: give back its batch budget, then leave the sweep index (unless a
    status event still waits to be published). True when the run left the index."""
    if record.get("budget_reserved") is not None or record.get("input_mode") == "batch":
        budget.release(tenant, record["id"])
    return sweep_index().leave(tenant, record["id"])
