"""The account-wide budget of batch parallelism: how many batch items may run at once, summed over
every running batch of the deployment (stack parameter ``BatchParallelismBudget``).

Lambda concurrency is shared by the whole account: ten batches at parallelism 100 would take all of
it and starve the API, the authorizer and the reconciler. So a batch reserves its share before its
distributed Map starts (the batch machine's ``ReserveBudget`` state, runner action
``reserve_budget``) and gives it back when it ends:

* **share** = ``batch.children * batch.items_per_child`` (the items the Map can run at once). A batch
  whose share is larger than the whole budget is narrowed to fit (fewer children), so it runs alone
  at the budget instead of waiting forever.
* **waiting**: while the budget is taken, ``reserve_budget`` raises :class:`BudgetExhausted`; the
  machine waits 10 s and asks again. The run stays ``pending`` and says why (``waiting_reason``).
* **release**: :func:`release` — called by every terminal status change of a run (its ``complete`` /
  ``fail``, a cancel, the reconciler and the sweeper settling a run that ended abnormally). It gives
  back exactly what the run holds, once; calling it again is harmless.

The counter and the run's share change together in one DynamoDB transaction (adapters/budget.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.budget import BudgetState, BudgetStore
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.status import allowed_from
from relayflow_runtime.services import metrics
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)


class BudgetExhausted(Exception):
    """The budget is taken by other batches: wait and try again (the batch machine's AwaitBudget)."""


@lru_cache(maxsize=4)
def _store(table_name: str) -> BudgetStore:
    return BudgetStore(table_name)


def store() -> BudgetStore:
    return _store(get_settings().table_name)


def limit() -> int:
    return get_settings().batch_parallelism_budget


def fit(batch: dict[str, Any], budget: int) -> dict[str, Any]:
    """The batch narrowed (fewer children) so that its share is at most ``budget``; at least one
    child always remains."""
    per_child = max(1, int(batch.get("items_per_child") or 1))
    children = max(1, int(batch.get("children") or 1))
    most = max(1, budget // per_child)
    return {**batch, "children": min(children, most)} if children > most else dict(batch)


def share(batch: dict[str, Any]) -> int:
    return max(1, int(batch.get("children") or 1)) * max(1, int(batch.get("items_per_child") or 1))


def reserve_budget(event: dict[str, Any]) -> dict[str, Any]:
    """The body of the node runner's ``reserve_budget`` action (batch machine, state ReserveBudget).

    ``event`` is ``{"run": {"tenant", "workflow_id", "execution_id"}, "batch": {..., "children",
    "items_per_child"}, "timeout"}``. Returns the event (with ``batch.children`` narrowed when the
    batch alone is larger than the budget) once the share is reserved and the run is ``running``.
    Raises :class:`BudgetExhausted` while the budget is taken, and the runner's
    ``ExecutionNotRunning`` when the run was cancelled (or ended) while it waited.
    """
    from relayflow_runtime.services import executions
    from relayflow_runtime.services.node_execution import ExecutionNotRunning

    run = event["run"]
    tenant, execution_id = run["tenant"], run["execution_id"]
    budget = limit()
    batch = fit(event["batch"], budget)
    wanted = share(batch)
    outcome = store().reserve(tenant, execution_id, wanted, budget, now_iso())
    if outcome == "exhausted":
        state = store().state()
        reason = (
            f"waiting for batch parallelism: {state.in_use} of {budget} items are running in other "
            f"batches and this batch needs {wanted}; it starts when they finish "
            "(stack parameter BatchParallelismBudget)"
        )
        store().note_waiting(tenant, execution_id, reason)
        metrics.count(metrics.BATCHES_WAITING_FOR_BUDGET)
        logger.info("batch waits for budget", extra={"execution_id": execution_id, "needs": wanted})
        raise BudgetExhausted(reason)
    if outcome == "not_pending":
        record = executions.store().get_execution(tenant, execution_id)
        if record["status"] != "running":
            raise ExecutionNotRunning(f"execution {execution_id} is {record['status']}")
        return {**event, "batch": batch}  # started by an earlier attempt of this task
    record = executions.store().get_execution(tenant, execution_id)
    moved = executions.transition(
        tenant, record, allowed_from("running"), "running", {"started_at": now_iso()}
    )
    if moved is None:
        record = executions.store().get_execution(tenant, execution_id)
        if record["status"] != "running":
            # Cancelled between the reservation and the move: give the share back at once.
            release(tenant, execution_id)
            raise ExecutionNotRunning(f"execution {execution_id} is {record['status']}")
    return {**event, "batch": batch}


def release(tenant: str, execution_id: str) -> int:
    """Give back the run's share of the budget, if it holds one; returns the amount released.
    Idempotent: every terminal status change may call it."""
    released = store().release(tenant, execution_id, now_iso())
    if released:
        logger.info("batch budget released", extra={"execution_id": execution_id, "amount": released})
    return released


def state() -> BudgetState:
    """How much of the budget is in use now (and the limit last reserved against)."""
    return store().state()
