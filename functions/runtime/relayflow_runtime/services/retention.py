"""How long a run is kept: stack parameter ``RetentionDays`` (default 30), one number for the
DynamoDB records and the S3 objects of a run, counted from the run's creation.

* **S3**: lifecycle rules expire everything under ``executions/`` (plan, inputs, item lists, large
  prompts and outputs), under ``map-results/`` (the batch Map's ResultWriter) and under ``inputs/``
  and ``rejected/`` (uploads that started a run: the run works on its own copy) RetentionDays after
  each object was written. Dataset uploads never committed (``uploads/``) go after 2 days.
* **DynamoDB** (TTL attribute ``expires_at``): a run's node records, batch item outcomes, counters
  and webhook delivery attempts carry :func:`children_expire_at` from the moment they are written
  (no second write); the execution item itself gets :func:`record_expires_at` only when the run
  finishes, so a run still going is never deleted under its watchers.

A run and its objects therefore go together, RetentionDays after the run started; a run that ends
later than that keeps its execution item one more day (TTL deletes lazily, usually within 48 hours).
RetentionDays is at least 7, the longest a run with a timeout may take. docs/operations.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relayflow_runtime.domain.clock import parse_iso
from relayflow_runtime.settings import get_settings

#: A run that finishes after its retention ran out is still shown this long.
MIN_KEEP_AFTER_FINISH = timedelta(days=1)


def retention_days() -> int:
    return get_settings().retention_days


def _moment(value: str | datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    moment = parse_iso(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def children_expire_at(created_at: str | datetime) -> int:
    """TTL (epoch seconds) of every item a run writes besides its execution item."""
    return int((_moment(created_at) + timedelta(days=retention_days())).timestamp())


def record_expires_at(created_at: str | datetime, completed_at: str | datetime | None = None) -> int:
    """TTL (epoch seconds) of a finished run's execution item."""
    kept = _moment(created_at) + timedelta(days=retention_days())
    return int(max(kept, _moment(completed_at) + MIN_KEEP_AFTER_FINISH).timestamp())
