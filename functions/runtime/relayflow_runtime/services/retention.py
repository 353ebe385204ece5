"""How long a run is kept: stack parameter ``RetentionDays`` (default 30), one number for the
DynamoDB records and the S3 objects of a run, counted from the run's creation.

* **S3**: lifecycle rules expire everything under ``executions/`` (plan, inputs, item lists, large
  prompts and outputs, the batch Map's ResultWriter output), under ``map-results/`` (where that
  output went before it moved under the run's prefix) and under ``inputs/``
  and ``rejected/`` (uploads that started a run: the run works on its own copy) RetentionDays after
  each object was written. Dataset uploads never committed (``uploads/``) go after 2 days.
* **DynamoDB** (TTL attribute ``expires_at``): a run's node records, batch item outcomes, counters
  and webhook delivery attempts carry :func:`children_expire_at` from the moment they are written
  (no second write); the execution item itself gets :func:`record_expires_at` only when the run
  finishes, so a run still going is never deleted under its watchers.

A run and its objects therefore go together, RetentionDays after the run started. So that nothing
expires while a run still uses it (its plan, its input, its early outcomes), **every run ends
within** :func:`max_run_seconds` **of its creation** (RetentionDays less an hour): a run without a
timeout of its own gets that clock (not Step Functions' year), a run's clock is what is left of it
when its machine starts the clock (a single run after its admission, a batch after its budget
wait), and a ``timeout`` longer than it is refused (400 ``timeout_exceeds_retention``). A run that
reaches it ends ``failed`` saying so; a batch's unfinished items can be retried
(``retry_failed_items``), and a deployment that needs longer runs sets a larger RetentionDays.
S3 lifecycle rules count from each object's creation only (a tag added later does not restart the
count), so bounding the run is what makes the S3 side safe too. The execution item is kept at
least a day after the run ends (TTL deletes lazily, usually within 48 hours). docs/operations.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relayflow_runtime.domain.clock import parse_iso
from relayflow_runtime.errors import InvalidInput
from relayflow_runtime.settings import get_settings

#: A run that finishes after its retention ran out is still shown this long.
MIN_KEEP_AFTER_FINISH = timedelta(days=1)
#: A run ends this long before its records and objects would expire (its last recording, the end's
#: follow-up, the sweeper's grace).
END_MARGIN_SECONDS = 3600


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


def max_run_seconds() -> int:
    """The longest a run may take, from its creation: its data expires RetentionDays after that."""
    return retention_days() * 86400 - END_MARGIN_SECONDS


def run_clock_seconds(
    created_at: str | datetime, run_timeout: int | None, now: datetime | None = None
) -> int:
    """The clock a run's machine races when it starts it (``run_timeout`` on the wire): the run's
    own ``run_timeout``, at most what is left of :func:`max_run_seconds` since the run was created
    (at least 1 second)."""
    deadline = _moment(created_at) + timedelta(seconds=max_run_seconds())
    left = (deadline - (now or datetime.now(UTC))).total_seconds()
    return max(1, int(min(float(run_timeout) if run_timeout else left, left)))


def check_timeout(run_timeout: int | None) -> None:
    """A run's ``timeout`` must end before its data expires (InvalidInput otherwise)."""
    if run_timeout is not None and run_timeout > max_run_seconds():
        raise InvalidInput(
            f"timeout {run_timeout} s is longer than this deployment keeps a run's records and files "
            f"(RetentionDays {retention_days()}: a run may take at most {max_run_seconds()} s from its "
            "start); ask for a shorter timeout, or deploy with a larger RetentionDays.",
            code="timeout_exceeds_retention",
        )


def timed_out_message(
    created_at: str | datetime, run_timeout: int | None, now: datetime | None = None
) -> str:
    """Why a run that ran out of time failed: its own timeout, or the longest a run may take."""
    elapsed = ((now or datetime.now(UTC)) - _moment(created_at)).total_seconds()
    if run_timeout is not None and elapsed < max_run_seconds() - 60:
        return f"workflow timed out after {run_timeout} seconds"
    return (
        f"the run reached the longest a run may take in this deployment ({max_run_seconds()} s from its "
        f"creation: RetentionDays {retention_days()} less an hour, when its records and files begin to "
        "expire); a batch's unfinished items can be retried (retry_failed_items), and a deployment "
        "that needs longer runs sets a larger RetentionDays"
    )
