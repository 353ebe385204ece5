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
from relayflow_runtime.services import budget, executions
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


def after_finish(tenant: str, record: dict[str, Any]) -> bool:
    """What follows a run's end: give back its batch budget, then leave the sweep index (unless a
    status event still waits to be published). True when the run left the index."""
    if record.get("budget_reserved") is not None or record.get("input_mode") == "batch":
        budget.release(tenant, record["id"])
    return sweep_index().leave(tenant, record["id"])
