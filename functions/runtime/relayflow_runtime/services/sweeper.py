"""The sweeper: nothing stays ``pending`` or ``running`` after its state machine is gone.

The reconciler settles a run when Step Functions' status-change event arrives. If that event is
lost (EventBridge gave up, the reconciler failed past its retries) or the run's execution never
started (the API died between writing the run and StartExecution), nothing else would ever move the
run: it would look active forever, and a batch would hold its budget forever. The sweeper is run on
a schedule (template: SweeperFunction, every ``SweepIntervalMinutes``) and, reading only the sparse
sweep index (never a scan):

1. **active runs** created more than ``grace_seconds`` ago: DescribeExecution of the run's execution.
   Still RUNNING: left alone, but counted (metric ``OverdueRuns``, alarmed) when past its
   ``overdue_at`` (written at its start: its worst case or timeout, plus a margin). Ended more
   than ``grace_seconds`` ago: settled exactly as the reconciler would (services/reconcile.py
   ``settle``). No such execution: settled as failed ("never started"), unless the run is waiting
   for admission (services/admission.py): then its start is queued again once it has waited an
   hour. Each settled run is counted: metric ``StuckRunsSettled`` (alarmed; dimension ``Cause``
   ``ended`` or ``never_started``).
2. **status events the bus refused** (kept on their run by services/notify.py) are published again.
3. **finished runs whose follow-up was cut short** (index partition SETTLE, finished more than
   ``grace_seconds`` ago): their budget is released, a batch's outcomes are sealed and their
   compaction started (services/transitions.py ``after_finish``), and they leave the index.

DescribeExecution is refilled at 15 calls a second per account: the sweeper reads at most
``per_shard`` runs of each of the index's 8 shards per partition in one invocation, oldest first
from where its previous pass stopped (a cursor kept in the table), and only runs older than the grace
period; the next pass goes on from there, and after the newest it starts again from the oldest. So
every active run is examined within ``ceil(active runs per shard / per_shard)`` passes, however
many long-lived runs (e.g. pending batches) are ahead of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.sfn_status import describe_execution
from relayflow_runtime.adapters.table.keys import SWEEP_SHARDS
from relayflow_runtime.domain.clock import parse_iso
from relayflow_runtime.services import admission, deps, metrics, notify, reconcile, transitions
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)

DEFAULT_GRACE_SECONDS = 300
DEFAULT_PER_SHARD = 100


@dataclass
class SweepReport:
    checked: int = 0
    settled: list[dict[str, str]] = field(default_factory=list)
    republished: int = 0
    followed_up: int = 0
    errors: list[str] = field(default_factory=list)
    #: Runs still running past their ``overdue_at`` (their worst case or timeout, plus a margin).
    overdue: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "settled": self.settled,
            "republished": self.republished,
            "followed_up": self.followed_up,
            "errors": self.errors,
            "overdue": self.overdue,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def execution_arn_of(run: dict[str, Any]) -> str | None:
    """The ARN of the run's Step Functions execution (named by the execution id): the one recorded
    at start, else built from its machine (the record's, or the deployment's machine for its mode)."""
    if run.get("sfn_execution_arn"):
        return str(run["sfn_execution_arn"])
    settings = get_settings()
    machine = run.get("state_machine_arn") or (
        settings.batch_machine_arn if run.get("input_mode") == "batch" else settings.run_machine_arn
    )
    if not machine:
        return None
    return f"{str(machine).replace(':stateMachine:', ':execution:')}:{run['id']}"


def sweep(
    *,
    now: datetime | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    per_shard: int = DEFAULT_PER_SHARD,
) -> SweepReport:
    """One pass over the sweep index (see the module's docstring)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=grace_seconds)
    report = SweepReport()
    for run in _next_pages("ACTIVE", _iso(cutoff), per_shard):
        report.checked += 1
        try:
            _check_active(run, cutoff, report, now)
        except Exception as exc:  # one bad run must not stop the sweep of the others
            logger.exception("could not sweep a run", extra={"execution_id": run.get("id")})
            report.errors.append(f"{run.get('id')}: {type(exc).__name__}: {exc}")
    for run in _next_pages("SETTLE", None, per_shard):
        finished = run.get("completed_at")
        if finished and parse_iso(str(finished)) > cutoff:
            continue  # its own follow-up is probably still under way
        try:
            _follow_up(run, report)
        except Exception as exc:
            logger.exception("could not finish a run's follow-up", extra={"execution_id": run.get("id")})
            report.errors.append(f"{run.get('id')}: {type(exc).__name__}: {exc}")
    if report.overdue:
        metrics.count(metrics.OVERDUE_RUNS, len(report.overdue))
        logger.warning("runs past their worst case are still running", extra={"overdue": report.overdue})
    if report.settled or report.republished or report.followed_up or report.errors:
        logger.info("sweep", extra={"report": report.as_dict()})
    return report


def _next_pages(partition: str, created_before: str | None, per_shard: int) -> Iterator[dict[str, Any]]:
    """A page of each shard of ``partition`` from where the previous pass stopped (the cursor,
    saved once the pages are read); after the newest, the next pass starts from the oldest."""
    index = deps.stores().sweep
    cursor = index.cursor(partition)
    pages = []
    for shard in range(SWEEP_SHARDS):
        runs, last = index.page(
            partition, shard, created_before=created_before, after=cursor.pop(shard, None), limit=per_shard
        )
        if last is not None:
            cursor[shard] = last
        pages.append(runs)
    index.save_cursor(partition, cursor)
    for runs in pages:
        yield from runs


def _check_active(run: dict[str, Any], cutoff: datetime, report: SweepReport, now: datetime) -> None:
    tenant, execution_id = str(run["tenant"]), str(run["id"])
    if run.get("unpublished_event") and notify.republish(tenant, execution_id, run["unpublished_event"]):
        report.republished += 1
    arn = execution_arn_of(run)
    description = describe_execution(arn) if arn else None
    if description is None:
        if run.get("status") == "pending" and admission.requeue_if_lost(
            tenant, deps.stores().executions.get_execution(tenant, execution_id)
        ):
            return  # waiting for admission, not lost (re-queued once it waited long)
        outcome, error, cause = reconcile.NEVER_STARTED, None, None
    elif description["status"] == "RUNNING":
        overdue_at = run.get("overdue_at")  # projected on the sweep index: no read per running run
        if overdue_at and parse_iso(str(overdue_at)) < now:
            report.overdue.append(execution_id)
        return
    else:
        stopped = description.get("stopDate")
        if isinstance(stopped, datetime) and stopped.astimezone(UTC) > cutoff:
            return  # just ended: the reconciler's event is most likely on its way
        outcome, error, cause = description["status"], description.get("error"), description.get("cause")
    if reconcile.settle(tenant, execution_id, outcome, error, cause):
        label = "never_started" if outcome == reconcile.NEVER_STARTED else "ended"
        metrics.count(metrics.STUCK_RUNS_SETTLED, Cause=label)
        logger.warning(
            "settled a stuck run",
            extra={"execution_id": execution_id, "tenant": tenant, "cause": label, "sfn_status": outcome},
        )
        report.settled.append({"tenant": tenant, "execution_id": execution_id, "cause": label})


def _follow_up(run: dict[str, Any], report: SweepReport) -> None:
    tenant, execution_id = str(run["tenant"]), str(run["id"])
    if run.get("unpublished_event"):
        if not notify.republish(tenant, execution_id, run["unpublished_event"]):
            return  # still refused: kept for the next sweep
        report.republished += 1
    if transitions.after_finish(tenant, run):
        report.followed_up += 1
