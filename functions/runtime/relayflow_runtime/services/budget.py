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
  machine parks on a task token (``AwaitBudget``, :func:`await_budget`: the token is kept under
  the budget's partition) until a release wakes it or ``budget_wait`` seconds pass (a lost wake-up
  costs one period), then asks again: a handful of history events per wake-up, not a loop every
  10 s. The run stays ``pending`` and says why (``waiting_reason``). The whole wait is bounded by
  the run's ``timeout`` (at most MAX_WAIT_SECONDS) and by MAX_WAITS parkings (the history's
  25,000 events): past either the batch fails with :class:`BudgetWaitTooLong`, saying why.
* **release**: :func:`release` — called by every terminal status change of a run (its ``complete`` /
  ``fail``, a cancel, the reconciler and the sweeper settling a run that ended abnormally). It gives
  back exactly what the run holds, once; calling it again is harmless. A release that gave a share
  back wakes the waiting batches (SendTaskSuccess: each asks again); a run that ends while parked
  has its token failed (``ExecutionNotRunning``: its machine ends quietly).

The counter and the run's share change together in one DynamoDB transaction (adapters/budget.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.budget import BudgetState, ReserveOutcome
from relayflow_runtime.domain.batch import BatchSettings
from relayflow_runtime.domain.clock import parse_iso
from relayflow_runtime.domain.status import ExecutionStatus
from relayflow_runtime.services import deps, metrics
from relayflow_runtime.services.node_execution import ExecutionNotRunning
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)


class BudgetExhausted(Exception):
    """The budget is taken by other batches: wait and try again (the batch machine's AwaitBudget)."""


class BudgetWaitTooLong(Exception):
    """A batch waited for its share longer than its timeout (or than the engine waits at all)."""


#: A parked batch asks again after this long even when no release woke it (AwaitBudget's timeout).
WAIT_PERIOD_SECONDS = 600
#: The longest a batch without a timeout of its own waits for its share.
MAX_WAIT_SECONDS = 7 * 24 * 3600
#: Most times a batch parks (each costs ~12 history events: far below 25,000).
MAX_WAITS = 1500
#: Most waiting batches one release wakes (the others: a later release, or their period).
MAX_WOKEN = 50


@dataclass(frozen=True)
class BudgetLimits:
    """The budget's numbers, given to its use cases: :meth:`configured` by default (the stack
    parameter and the constants above); a test gives its own."""

    #: Batch items that may run at once over every batch of the deployment.
    budget: int
    wait_period_seconds: int = WAIT_PERIOD_SECONDS
    max_wait_seconds: int = MAX_WAIT_SECONDS
    max_waits: int = MAX_WAITS
    max_woken: int = MAX_WOKEN

    @classmethod
    def configured(cls) -> BudgetLimits:
        return cls(budget=get_settings().batch_parallelism_budget)


def wait_period(run_timeout: int, limits: BudgetLimits | None = None) -> int:
    """How long a parked batch waits before it asks again unwoken (``budget_wait`` in the machine)."""
    period = limits.wait_period_seconds if limits is not None else WAIT_PERIOD_SECONDS
    return max(1, min(period, run_timeout))


def fit(batch: BatchSettings, budget: int) -> BatchSettings:
    """The batch narrowed (fewer children) so that its share is at most ``budget``; at least one
    child always remains."""
    per_child = max(1, batch.items_per_child)
    children = max(1, batch.children)
    most = max(1, budget // per_child)
    return batch.model_copy(update={"children": most}) if children > most else batch


def share(batch: BatchSettings) -> int:
    """The items the batch's Map may run at once: its children times the items of each."""
    return max(1, batch.children) * max(1, batch.items_per_child)


def reserve(
    tenant: str,
    execution_id: str,
    batch: BatchSettings,
    *,
    env: deps.Deps | None = None,
    limits: BudgetLimits | None = None,
) -> tuple[BatchSettings, ReserveOutcome]:
    """Take the run's share of the budget (the batch machine's ``reserve_budget``, services/batch.py).

    Returns the batch (with ``children`` narrowed when the batch alone is larger than the budget)
    and the outcome: ``reserved`` now, ``already_reserved`` by an earlier attempt of the task, or
    ``not_pending`` (the run started or ended meanwhile: it holds nothing new). Raises
    :class:`BudgetExhausted`, with the run's ``waiting_reason`` noted, while the budget is taken.
    """
    env, limits = deps.given(env), limits or BudgetLimits.configured()
    budget = limits.budget
    batch = fit(batch, budget)
    wanted = share(batch)
    outcome = env.budget.reserve(tenant, execution_id, wanted, budget, env.now())
    if outcome in ("reserved", "already_reserved"):
        env.budget.unpark(tenant, execution_id)
    if outcome in ("exhausted", "contended"):
        state = env.budget.state()
        reason = (
            f"waiting for batch parallelism: {state.in_use} of {budget} items are running in other "
            f"batches and this batch needs {wanted}; it starts when they finish "
            "(stack parameter BatchParallelismBudget)"
            if outcome == "exhausted"
            else "waiting for batch parallelism: other batches are taking or giving back their share "
            "right now; this batch asks again shortly"
        )
        env.budget.note_waiting(tenant, execution_id, reason)
        metrics.count(metrics.BATCHES_WAITING_FOR_BUDGET)
        logger.info("batch waits for budget", extra={"execution_id": execution_id, "needs": wanted})
        raise BudgetExhausted(reason)
    return batch, outcome


def await_budget(
    tenant: str,
    execution_id: str,
    batch: BatchSettings,
    run_timeout: int,
    token: str,
    *,
    env: deps.Deps | None = None,
    limits: BudgetLimits | None = None,
) -> None:
    """The body of AwaitBudget (``.waitForTaskToken``): park the batch's token where a release finds
    it; wake it at once when the budget has room by now (a release between the reservation that
    failed and this park) or the run no longer waits. Raises :class:`BudgetWaitTooLong` past the
    run's timeout (``run_timeout``) or MAX_WAITS parkings."""
    env, limits = deps.given(env), limits or BudgetLimits.configured()
    store = env.budget
    record = env.executions.get_record(tenant, execution_id)
    if record.status != ExecutionStatus.PENDING:
        store.unpark(tenant, execution_id)
        raise ExecutionNotRunning(f"execution {execution_id} is {record.status}")
    bound = min(run_timeout, limits.max_wait_seconds)
    waiter = store.park(tenant, execution_id, token, env.now(), int(env.time()) + bound + 86_400)
    waited = (parse_iso(env.now()) - parse_iso(waiter.since)).total_seconds()
    if waited >= bound or waiter.waits > limits.max_waits:
        store.unpark(tenant, execution_id)
        limit_text = (
            f"its timeout of {run_timeout} s"
            if run_timeout <= limits.max_wait_seconds
            else f"{limits.max_wait_seconds} s"
        )
        if waiter.waits > limits.max_waits:
            limit_text = f"{limits.max_waits} wake-ups"
        raise BudgetWaitTooLong(
            f"the batch waited {int(waited)} s for batch parallelism, longer than {limit_text}: "
            f"{record.waiting_reason or 'other batches held the budget'}"
        )
    budget = limits.budget
    if store.state().in_use + share(fit(batch, budget)) <= budget:
        try:
            env.machines.release(token)  # room by now: ask again at once
        except Exception:  # the wait's own timeout asks again: never fail the batch for it
            logger.exception("could not wake a batch that has room", extra={"execution_id": execution_id})


def release(
    tenant: str, execution_id: str, *, env: deps.Deps | None = None, limits: BudgetLimits | None = None
) -> int:
    """Give back the run's share of the budget, if it holds one; returns the amount released.
    Idempotent: every terminal status change may call it. A share given back wakes the waiting
    batches; a run that ends while parked has its token failed."""
    env = deps.given(env)
    store = env.budget
    released = store.release(tenant, execution_id, env.now())
    parked = store.waiter(tenant, execution_id)
    if parked is not None:
        store.unpark(tenant, execution_id)
        record = env.executions.get_record(tenant, execution_id)
        if record.status != ExecutionStatus.PENDING:
            cause = f"the run is {record.status}"
            env.machines.fail_task(parked.token, error=ExecutionNotRunning.__name__, cause=cause)
    if released:
        logger.info("batch budget released", extra={"execution_id": execution_id, "amount": released})
        wake_waiters(env=env, limits=limits)
    return released


def wake_waiters(*, env: deps.Deps | None = None, limits: BudgetLimits | None = None) -> int:
    """Wake the batches waiting for budget (each asks again); returns how many were woken. A token
    already used or ended is ignored by Step Functions; one that cannot be woken now waits out its
    period."""
    env = deps.given(env)
    most = limits.max_woken if limits is not None else MAX_WOKEN
    woken = 0
    for waiter in env.budget.waiters(most):
        try:
            env.machines.release(waiter.token)
            woken += 1
        except Exception:
            logger.exception("could not wake a waiting batch", extra={"execution_id": waiter.execution_id})
    return woken


def state() -> BudgetState:
    """How much of the budget is in use now (and the limit last reserved against)."""
    return deps.stores().budget.state()
