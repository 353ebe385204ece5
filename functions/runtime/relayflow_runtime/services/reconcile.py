"""Make a run's record agree with its state machine when the machine ended in a way the run's own
tasks did not record (a timeout, an abort, a crash, or a start that was lost).

Two callers settle runs the same way, through :func:`settle`:

* the reconciler (handlers/reconciler.py): Step Functions' status-change event of the run's
  execution arrives through EventBridge;
* the sweeper (services/sweeper.py): that event was lost, or the execution never started.

The terminal status change itself, and what follows it (the budget given back, the run out of the
sweep index), is services/transitions.py, the same for every way a run ends.
"""

from __future__ import annotations

from typing import Literal

from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.status import (
    CLOSE_ON_CANCEL,
    CLOSE_ON_ERROR,
    CLOSE_ON_TIMEOUT,
    TERMINAL,
    allowed_from,
)
from relayflow_runtime.errors import NotFound
from relayflow_runtime.services import deps
from relayflow_runtime.services.transitions import after_finish, transition

#: Step Functions' terminal statuses, and the sweeper's own: no execution by the run's name exists.
SfnOutcome = Literal["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "NEVER_STARTED"]
NEVER_STARTED = "NEVER_STARTED"


def settle(
    tenant: str, execution_id: str, sfn_status: str, error: str | None = None, cause: str | None = None
) -> bool:
    """Record the end of a run's state machine execution unless the run already recorded its end.
    True when this call moved the run to a terminal status."""
    store = deps.stores().executions
    try:
        before = store.get_record(tenant, execution_id)
    except NotFound:
        return False
    if before.status in TERMINAL:
        after_finish(tenant, before)  # e.g. the budget of a run whose follow-up was cut short
        return False
    if sfn_status == NEVER_STARTED:
        sfn_status, error, cause = (
            "FAILED",
            "the run's state machine execution never started",
            "no Step Functions execution exists with the run's name; the start was lost",
        )
    finish_unrecorded(tenant, execution_id, sfn_status, error, cause)
    return store.get_record(tenant, execution_id).status in TERMINAL


def finish_unrecorded(
    tenant: str, execution_id: str, sfn_status: str, error: str | None, cause: str | None
) -> None:
    """The state machine ended in a way the handlers did not record (timeout, abort, crash)."""
    store = deps.stores().executions
    try:
        record = store.get_record(tenant, execution_id)
    except NotFound:
        return
    if record.status in TERMINAL:
        return
    now = now_iso()
    if sfn_status == "SUCCEEDED":
        # The Complete task always records first; reaching here means its write was lost.
        transition(tenant, record, allowed_from("completed"), "completed", {"completed_at": now})
        return
    if sfn_status == "ABORTED":
        transition(
            tenant,
            record,
            allowed_from("cancelled"),
            "cancelled",
            {"completed_at": now, "error": "the state machine execution was stopped"},
        )
        store.close_open_nodes(
            tenant,
            execution_id,
            CLOSE_ON_CANCEL,
            "the state machine execution was stopped",
            now,
        )
        return
    if sfn_status == "TIMED_OUT":
        message = f"workflow timed out after {record.timeout} seconds"
        node_outcome = CLOSE_ON_TIMEOUT
    else:
        message = f"the run failed: {error or 'error'}" + (f" ({cause})" if cause else "")
        node_outcome = CLOSE_ON_ERROR
    if transition(tenant, record, allowed_from("failed"), "failed", {"completed_at": now, "error": message}):
        store.close_open_nodes(tenant, execution_id, node_outcome, message, now)
