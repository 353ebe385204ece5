"""The account-wide budget of batch parallelism: how many batch items may run at once, summed over
every running batch of the deployment (stack parameter ``BatchParallelismBudget``).

Lambda concurrency is shared by the whole account: ten batches at parallelism 100 would take all of
it and starve the API, the authorizer and the reconciler. So a batch reserves its share before its
distributed Map starts (the batch machine's ``ReserveBudget`` state, runner action
``reserve_budget`` in services/batch.py, which then moves the run ``running``) and gives it back
when it ends:

* **share** = ``batch.children * batch.items_per_child`` (the items the Map can run at once). A batch
  whose share is larger than the whole budget is narrowed to fit (fewer children), so it runs alone
  at the budget instead of waiting forever.
* **waiting**: while the budget is taken, :func:`reserve` raises :class:`BudgetExhausted`; the
  machine waits 10 s and asks again. The run stays ``pending`` and says why (``waiting_reason``).
* **release**: :func:`release` — called by every terminal status change of a run (its ``complete`` /
  ``fail``, a cancel, the reconciler and the sweeper settling a run that ended abnormally). It gives
  back exactly what the run holds, once; calling it again is harmless.

The counter and the run's share change together in one DynamoDB transaction (adapters/budget.py).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.budget import BudgetState, ReserveOutcome
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.services import deps, metrics
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)


class BudgetExhausted(Exception):
    """The budget is taken by other batches: wait and try again (the batch machine's AwaitBudget)."""


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


def reserve(tenant: str, execution_id: str, batch: dict[str, Any]) -> tuple[dict[str, Any], ReserveOutcome]:
    """Take the run's share of the budget (the batch machine's ``reserve_budget``, services/batch.py).

    Returns the batch (with ``children`` narrowed when the batch alone is larger than the budget)
    and the outcome: ``reserved`` now, ``already_reserved`` by an earlier attempt of the task, or
    ``not_pending`` (the run started or ended meanwhile: it holds nothing new). Raises
    :class:`BudgetExhausted`, with the run's ``waiting_reason`` noted, while the budget is taken.
    """
    budget = limit()
    batch = fit(batch, budget)
    wanted = share(batch)
    outcome = deps.stores().budget.reserve(tenant, execution_id, wanted, budget, now_iso())
    if outcome in ("exhausted", "contended"):
        state = deps.stores().budget.state()
        reason = (
            f"waiting for batch parallelism: {state.in_use} of {budget} items are running in other "
            f"batches and this batch needs {wanted}; it starts when they finish "
            "(stack parameter BatchParallelismBudget)"
            if outcome == "exhausted"
            else "waiting for batch parallelism: other batches are taking or giving back their share "
            "right now; this batch asks again shortly"
        )
        deps.stores().budget.note_waiting(tenant, execution_id, reason)
        metrics.count(metrics.BATCHES_WAITING_FOR_BUDGET)
        logger.info("batch waits for budget", extra={"execution_id": execution_id, "needs": wanted})
        raise BudgetExhausted(reason)
    return batch, outcome


def release(tenant: str, execution_id: str) -> int:
    """Give back the run's share of the budget, if it holds one; returns the amount released.
    Idempotent: every terminal status change may call it."""
    released = deps.stores().budget.release(tenant, execution_id, now_iso())
    if released:
        logger.info("batch budget released", extra={"execution_id": execution_id, "amount": released})
    return released


def state() -> BudgetState:
    """How much of the budget is in use now (and the limit last reserved against)."""
    return deps.stores().budget.state()
