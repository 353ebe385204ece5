"""An execution's status changes, and what follows a run's end. Status only moves forward:

    pending -> running -> completed | failed | cancelled

Every transition is a conditional write (domain/status.py names the moves), so a terminal state is
never overwritten and when two writers race (a cancel and the last node's completion) exactly one
wins. The winner announces the change (services/notify.py); a terminal move also gives the record
its TTL, counts the run as finished and calls :func:`after_finish`: the run gives back its share of
the batch budget and leaves the sweep index.

Whatever ends a run calls :func:`transition`: its own ``complete``/``fail`` (run_machine, batch), a
cancel (services/executions.py), the reconciler and the sweeper (services/reconcile.py). A run whose
follow-up is cut short (the Lambda died) stays in the sweep index's SETTLE partition and the sweeper
calls :func:`after_finish` again; every step of it is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.engine import StartNotAccepted
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.adapters.transactions import StoreContended
from relayflow_runtime.domain.costs import sum_usage
from relayflow_runtime.domain.execution_record import (
    ExecutionRecord,
    ExecutionUpdate,
    NodeRecord,
    SweptRun,
    usage_update,
)
from relayflow_runtime.domain.status import (
    TERMINAL,
    check_moves,
    node_tally,
    progress_node,
    settled_node_status,
)
from relayflow_runtime.services import budget, deps, metrics, notify, outcomes, retention

logger = Logger(child=True)


def transition(
    tenant: str,
    record: ExecutionRecord,
    from_statuses: tuple[str, ...],
    to_status: str,
    fields: ExecutionUpdate | None = None,
    *,
    env: deps.Deps | None = None,
) -> ExecutionRecord | None:
    """Move the execution to to_status if it is in from_statuses; None if another writer won.

    A terminal move also gives the execution item its TTL, counts the run as finished, gives back
    its share of the batch budget and takes it out of the sweep index."""
    env = deps.given(env)
    from_statuses = check_moves(from_statuses, to_status)  # the rules: domain/status.py
    fields = ExecutionUpdate(**(fields or {}))
    if to_status in TERMINAL:
        created = record.created_at or env.now()
        fields.setdefault("expires_at", retention.record_expires_at(created, fields.get("completed_at")))
    try:
        updated = env.executions.transition_execution(
            tenant, record, from_statuses=from_statuses, to_status=to_status, fields=fields
        )
    except ConditionFailed:
        return None
    nodes = None
    if to_status in TERMINAL:
        updated, nodes = keep_usage(tenant, updated, env)
    notify.status_changed(tenant, updated, env)
    if to_status in TERMINAL:
        metrics.count(metrics.RUNS_FINISHED, Status=to_status)
        after_finish(tenant, updated, env)  # first: a batch's counters are sealed before they are read
        count_finished(tenant, updated, nodes, env)
    return updated


def keep_usage(
    tenant: str, record: ExecutionRecord, env: deps.Deps | None = None
) -> tuple[ExecutionRecord, list[NodeRecord] | None]:
    """A single run that just ended keeps its usage on its item: the sum of its node records (a node
    records its own; after the run's end none can) and their counts by status, marked
    ``usage_summed``, so list pages, status events and webhooks read it without querying the nodes;
    and its progress (``current_node``, the last node that began, unless its end named one).
    ``complete`` keeps them in its own move.
    Returns the record as it now is and the node records it read (None when it read none). Kept
    best effort: a write that stays contended leaves the readers summing the nodes, as for a
    running run."""
    if record.input_mode == "batch" or record.usage_summed:
        return record, None
    env = deps.given(env)
    nodes = env.executions.node_records(tenant, record.id)
    fields = ended_run_sums(nodes, record.status, record.error)
    fields["usage_summed"] = True
    current = None if record.current_node else progress_node(nodes)
    if current:
        fields["current_node"] = current
    try:
        env.executions.update_execution(tenant, record.id, fields)
    except (StoreContended, ConditionFailed):  # contended, or the run's item deleted meanwhile
        return record, nodes
    return record.updated(fields), nodes


def ended_run_sums(nodes: Iterable[NodeRecord], status: str, error: str | None) -> ExecutionUpdate:
    """What an ended single run keeps on its item for readers that do not read its nodes: its usage
    and how far it got (``node_counts``: its nodes by how they ended)."""
    nodes = list(nodes)
    fields = usage_update(sum_usage(node.get("usage") for node in nodes))
    fields["node_counts"] = node_tally((str(node.get("status", "pending")) for node in nodes), status, error)
    return fields


def count_finished(
    tenant: str,
    record: ExecutionRecord,
    nodes: list[NodeRecord] | None = None,
    env: deps.Deps | None = None,
) -> None:
    """Metrics of a run that just finished (called once, by the writer of its terminal status):
    its nodes by status and their retries (single runs: ``nodes`` when read already), its items
    processed and failed (batch)."""
    try:
        env = deps.given(env)
        if record.input_mode == "batch":
            # The final counts its end kept; else (a cancel) the counter shards as they are.
            processed, failed = record.progress.processed_items, record.progress.failed_items
            if processed is None:
                counts = env.batches.counters(tenant, record.id, consistent=True)
                processed, failed = counts.get("processed_items"), counts.get("failed_items")
            metrics.count(metrics.ITEMS_PROCESSED, int(processed or 0))
            metrics.count(metrics.ITEMS_FAILED, int(failed or 0))
            return
        statuses: dict[str, int] = {}
        retries = 0
        if nodes is None:
            nodes = env.executions.node_records(tenant, record.id)
        for node in nodes:
            status = settled_node_status(str(node.get("status", "pending")), record.status, record.error)
            statuses[status] = statuses.get(status, 0) + 1
            retries += max(0, int(node.get("attempts") or 0) - 1)
        for status, number in statuses.items():
            metrics.count(metrics.NODES_FINISHED, number, Status=status)
        if retries:
            metrics.count(metrics.NODE_RETRIES, retries)
    except Exception:  # metrics must never fail the end of a run
        logger.exception("could not count a finished run", extra={"execution_id": record.id})


def after_finish(tenant: str, run: ExecutionRecord | SweptRun, env: deps.Deps | None = None) -> bool:
    """What follows a run's end: give back its batch budget; a batch's outcomes sealed and their
    compaction started (services/outcomes.py ``after_end``); then leave the sweep index (unless a
    status event still waits to be published). True when the run left the index. ``run``: its
    record, or its entry in the sweep index (the sweeper's)."""
    env = deps.given(env)
    if run.budget_reserved is not None or run.input_mode == "batch":
        try:
            budget.release(tenant, run.id, env=env)
        except StoreContended:
            # The budget item stayed contended past the release's retries: the share stays on the
            # run, which stays in the sweep index; the sweeper's next pass releases it.
            logger.warning("budget release left to the sweeper", extra={"execution_id": run.id})
            return False
    if run.input_mode == "batch":
        try:
            outcomes.after_end(tenant, run, env)
        except (StoreContended, StartNotAccepted):
            # The run stays in the sweep index: the sweeper's next pass seals and starts it again.
            logger.warning("outcome compaction left to the sweeper", extra={"execution_id": run.id})
            return False
    return env.sweep.leave(tenant, run.id)
