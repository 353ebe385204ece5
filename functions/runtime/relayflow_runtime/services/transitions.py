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

from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.engine import StartNotAccepted
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.adapters.transactions import StoreContended
from relayflow_runtime.domain.costs import sum_usage
from relayflow_runtime.domain.execution_record import ExecutionRecord
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
    record: ExecutionRecord | dict[str, Any],
    from_statuses: tuple[str, ...],
    to_status: str,
    fields: dict[str, Any] | None = None,
    *,
    env: deps.Deps | None = None,
) -> dict[str, Any] | None:
    """Move the execution to to_status if it is in from_statuses; None if another writer won.

    A terminal move also gives the execution item its TTL, counts the run as finished, gives back
    its share of the batch budget and takes it out of the sweep index."""
    env = deps.given(env)
    if isinstance(record, ExecutionRecord):
        record = record.item()
    from_statuses = check_moves(from_statuses, to_status)  # the rules: domain/status.py
    fields = dict(fields or {})
    if to_status in TERMINAL:
        created = record.get("created_at") or env.now()
        fields.setdefault("expires_at", retention.record_expires_at(created, fields.get("completed_at")))
    try:
        updated = env.executions.transition_execution(
            tenant, record, from_statuses=from_statuses, to_status=to_status, fields=fields
        )
    except ConditionFailed:
        return None
    nodes = keep_usage(tenant, updated, env) if to_status in TERMINAL else None
    notify.status_changed(tenant, updated, env)
    if to_status in TERMINAL:
        metrics.count(metrics.RUNS_FINISHED, Status=to_status)
        count_finished(tenant, updated, nodes, env)
        after_finish(tenant, updated, env)
    return updated


def keep_usage(
    tenant: str, record: dict[str, Any], env: deps.Deps | None = None
) -> list[dict[str, Any]] | None:
    """A single run that just ended keeps its usage on its item: the sum of its node records (a node
    records its own; after the run's end none can) and their counts by status, marked
    ``usage_summed``, so list pages, status events and webhooks read it without querying the nodes;
    and its progress (``current_node``, the last node that began, unless its end named one).
    ``complete`` keeps them in its own move.
    Returns the node records it read (None when it read none). Kept best effort: a write that stays
    contended leaves the readers summing the nodes, as for a running run."""
    if record.get("input_mode") == "batch" or record.get("usage_summed"):
        return None
    env = deps.given(env)
    nodes = env.executions.node_records(tenant, record["id"])
    fields = {**ended_run_sums(nodes, record["status"], record.get("error")), "usage_summed": True}
    current = None if record.get("current_node") else progress_node(nodes)
    if current:
        fields["current_node"] = current
    try:
        env.executions.update_execution(tenant, record["id"], fields)
    except (StoreContended, ConditionFailed):  # contended, or the run's item deleted meanwhile
        return nodes
    record.update(fields)
    return nodes


def ended_run_sums(nodes: list[dict[str, Any]], status: str, error: str | None) -> dict[str, Any]:
    """What an ended single run keeps on its item for readers that do not read its nodes: its usage
    and how far it got (``node_counts``: its nodes by how they ended)."""
    return {
        **sum_usage(node.get("usage") for node in nodes),
        "node_counts": node_tally((str(node.get("status", "pending")) for node in nodes), status, error),
    }


def count_finished(
    tenant: str,
    record: dict[str, Any],
    nodes: list[dict[str, Any]] | None = None,
    env: deps.Deps | None = None,
) -> None:
    """Metrics of a run that just finished (called once, by the writer of its terminal status):
    its nodes by status and their retries (single runs: ``nodes`` when read already), its items
    processed and failed (batch)."""
    try:
        env = deps.given(env)
        if record.get("input_mode") == "batch":
            # The final counts its end kept; else (a cancel) the counter shards as they are.
            counts = record.get("progress") or {}
            if counts.get("processed_items") is None:
                counts = env.batches.counters(tenant, record["id"], consistent=True)
            metrics.count(metrics.ITEMS_PROCESSED, int(counts.get("processed_items") or 0))
            metrics.count(metrics.ITEMS_FAILED, int(counts.get("failed_items") or 0))
            return
        statuses: dict[str, int] = {}
        retries = 0
        if nodes is None:
            nodes = env.executions.node_records(tenant, record["id"])
        for node in nodes:
            status = settled_node_status(
                str(node.get("status", "pending")), record["status"], record.get("error")
            )
            statuses[status] = statuses.get(status, 0) + 1
            retries += max(0, int(node.get("attempts") or 0) - 1)
        for status, number in statuses.items():
            metrics.count(metrics.NODES_FINISHED, number, Status=status)
        if retries:
            metrics.count(metrics.NODE_RETRIES, retries)
    except Exception:  # metrics must never fail the end of a run
        logger.exception("could not count a finished run", extra={"execution_id": record.get("id")})


def after_finish(tenant: str, record: dict[str, Any], env: deps.Deps | None = None) -> bool:
    """What follows a run's end: give back its batch budget; a batch's outcomes sealed and their
    compaction started (services/outcomes.py ``after_end``); then leave the sweep index (unless a
    status event still waits to be published). True when the run left the index."""
    env = deps.given(env)
    if record.get("budget_reserved") is not None or record.get("input_mode") == "batch":
        try:
            budget.release(tenant, record["id"], env=env)
        except StoreContended:
            # The budget item stayed contended past the release's retries: the share stays on the
            # run, which stays in the sweep index; the sweeper's next pass releases it.
            logger.warning("budget release left to the sweeper", extra={"execution_id": record["id"]})
            return False
    if record.get("input_mode") == "batch":
        try:
            outcomes.after_end(tenant, record, env)
        except (StoreContended, StartNotAccepted):
            # The run stays in the sweep index: the sweeper's next pass seals and starts it again.
            logger.warning("outcome compaction left to the sweeper", extra={"execution_id": record["id"]})
            return False
    return env.sweep.leave(tenant, record["id"])
