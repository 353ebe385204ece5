"""Operational metrics (CloudWatch, namespace ``POWERTOOLS_METRICS_NAMESPACE``), one place.

Each count is written at once as one Embedded Metric Format log line (Powertools ``single_metric``),
so it reaches CloudWatch whatever handler it happens in and whether or not that handler flushes a
``Metrics`` object: a count made in the middle of a node-runner action is not lost when the action
raises. docs/operations.md lists every metric and the alarms built on them.

Names (all ``Count``; dimension ``service`` plus the ones given):

* runs: ``RunsStarted``, ``RunsFinished`` (``Status``: completed | failed | cancelled);
* nodes and items, counted once per run when it finishes (services/reconcile.py ``count_finished``):
  ``NodesFinished`` (``Status``), ``NodeRetries``, ``ItemsProcessed``, ``ItemsFailed``;
* the operations of issue 13: ``StuckRunsSettled`` (``Cause``), ``StatusEventsNotPublished``,
  ``StatusEventsRepublished``, ``BatchesWaitingForBudget``, ``ModelCallsThrottled``,
  ``WebhookDeliveriesFailed``, ``WebhookDeliveriesDelivered``.

Tests listen in with :func:`recording` instead of parsing log lines.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger(child=True)

RUNS_STARTED = "RunsStarted"
RUNS_FINISHED = "RunsFinished"
NODES_FINISHED = "NodesFinished"
NODE_RETRIES = "NodeRetries"
ITEMS_PROCESSED = "ItemsProcessed"
ITEMS_FAILED = "ItemsFailed"
STUCK_RUNS_SETTLED = "StuckRunsSettled"
OVERDUE_RUNS = "OverdueRuns"
STATUS_EVENTS_NOT_PUBLISHED = "StatusEventsNotPublished"
STATUS_EVENTS_REPUBLISHED = "StatusEventsRepublished"
BATCHES_WAITING_FOR_BUDGET = "BatchesWaitingForBudget"
RUNS_WAITING_FOR_ADMISSION = "RunsWaitingForAdmission"
MODEL_CALLS_THROTTLED = "ModelCallsThrottled"
WEBHOOK_DELIVERIES_FAILED = "WebhookDeliveriesFailed"
WEBHOOK_DELIVERIES_DELIVERED = "WebhookDeliveriesDelivered"

Recorded = list[tuple[str, float, dict[str, str]]]
_listeners: list[Recorded] = []
_lock = threading.Lock()


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Add ``value`` to the metric ``name`` (with ``dimensions``). Never raises: a metric that
    cannot be written is logged, and the work it counts goes on."""
    with _lock:
        for recorded in _listeners:
            recorded.append((name, value, dict(dimensions)))
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
        return
    try:
        with single_metric(name=name, unit=MetricUnit.Count, value=value) as metric:
            for dimension, dimension_value in dimensions.items():
                metric.add_dimension(name=dimension, value=str(dimension_value))
    except Exception:  # a metric must never fail the work it counts
        logger.exception("could not write a metric", extra={"metric": name})


@contextlib.contextmanager
def recording() -> Iterator[Recorded]:
    """Every count made (by any thread) while the block runs: ``[(name, value, dimensions)]``."""
    recorded: Recorded = []
    with _lock:
        _listeners.append(recorded)
    try:
        yield recorded
    finally:
        with _lock:
            _listeners.remove(recorded)


def total(recorded: Recorded, name: str, **dimensions: str) -> float:
    """The sum of ``name`` in ``recorded`` over the counts that carry ``dimensions``."""
    return sum(
        value
        for metric, value, dims in recorded
        if metric == name and all(dims.get(k) == v for k, v in dimensions.items())
    )
