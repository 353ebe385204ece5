"""Batch runs: submission, preparation, taking the run's share of the parallelism budget, the end
of a run, deleting one.

A batch is an execution of the batch machine (statemachine/batch.asl.json, docs/engine.md):

* **Submission** (the API, synchronous): only the cheap checks — the dataset version exists and is
  ready, the input field is known, the filter compiles — so bad input is still a 400 (or a 409) at
  once. The execution is written ``pending`` and the machine started; nothing that grows with the
  item count runs in the request (a rerun and a retry of failed items neither).
* **``prepare_batch``** (the machine's first task, up to 15 minutes): writes the run's item list
  and its index (services/item_lists.py) from the filtered dataset version, a copy of a re-run's
  list, or the items of a retried run that did not complete (failed, or never ran); sets
  ``progress.total_items``; sizes the Map (domain/batch.py). A filter that keeps nothing, or a kept
  item without the input field, ends the run ``failed`` with that reason.
* **``reserve_budget``**: the run's share, the items its Map runs at once (``children *
  items_per_child``, at most its ``parallelism``), is taken from the account's budget of batch
  parallelism (services/budget.py); ``pending -> running``.
* **``complete``** / **``fail``**: the counter shards, sealed (no child records after) and summed
  (16 reads, whatever the item count), decide: items without an outcome never ran and count as
  failed; ``max_failed_percent`` decides ``completed`` / ``failed``. What follows every end (a
  cancel's too) starts the compaction of the outcomes (services/outcomes.py ``after_end``).
* **Deleting** a run: the API starts a job of the jobs machine (``delete_execution_job``), which
  deletes its objects, outcomes and counters in rounds, the execution last.

Running the items (``run_items``, ``items_failed``) is services/batch_items.py; reading results,
items and downloads is services/batch_results.py.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.batch import (
    BatchCounts,
    BatchSettings,
    batch_overdue_after_seconds,
    batch_settings,
    judge,
)
from relayflow_runtime.domain.clock import iso_in, now_iso
from relayflow_runtime.domain.engine import Plan, RunRef
from relayflow_runtime.domain.execution_record import (
    ExecutionRecord,
    ExecutionUpdate,
    ItemIndex,
    usage_update,
)
from relayflow_runtime.domain.status import TERMINAL, allowed_from
from relayflow_runtime.domain.status import ExecutionStatus as Status
from relayflow_runtime.errors import Conflict, InvalidInput, NotFound, referenced
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.entities import BatchConfig
from relayflow_runtime.services import (
    budget,
    dataset_service,
    deps,
    item_lists,
    outcomes,
    retention,
    transitions,
)
from relayflow_runtime.services.node_execution import ExecutionNotRunning, error_message
from relayflow_runtime.services.run_records import execution_prefix, load_plan, read_plan
from relayflow_runtime.settings import get_settings

logger = Logger(child=True)

#: Entries whose statuses a retry of failed items reads at once (one Query of their pointer records,
#: or for per-item records one BatchGetItem: 100 keys).
OUTCOMES_PER_READ = 100
#: While prepare_batch reads items, it looks this often (seconds) whether the run is still pending,
#: and stops when it was cancelled: a cancelled batch's prepare burns no more CPU on its filter.
CANCEL_CHECK_SECONDS = 2.0


def _prefix(tenant: str, execution_id: str) -> str:
    return execution_prefix(tenant, execution_id)


def _refuse(message: str, code: str) -> InvalidInput:
    return InvalidInput(message, code=code)


def _conflict(message: str, code: str) -> Conflict:
    """A batch the request is right about but the dataset's items do not allow (409)."""
    return Conflict(message, code=code)


# ---- submission (the API) --------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchStart:
    """What a batch run's execution record starts with: its config and, when it is known without
    reading items, how many it runs over (``progress.total_items``)."""

    config: BatchConfig
    total_items: int | None


def submission(tenant: str, body: api.Execute) -> BatchStart:
    """Check a batch submission before a run exists (400 for what the request gets wrong, 409 for
    what the dataset does not allow) and return what the execution starts with: its config and,
    when it is known without reading items, its total."""
    config = body.batch_config
    if config is None:
        raise _refuse(
            "input_mode 'batch' needs batch_config: {dataset_id, dataset_version_id, input_field, "
            "filter_query, parallelism}.",
            "invalid_input_mode",
        )
    if body.single_input is not None or body.file is not None:
        raise _refuse(
            "a batch runs over dataset items: leave out single_input and file.", "invalid_input_mode"
        )
    with referenced("batch_config"):
        version = dataset_service.ready_version(tenant, config.dataset_id, config.dataset_version_id)
    try:
        datasets.compile_filter(config.filter_query)
    except datasets.FilterError as exc:
        raise _refuse(exc.message, exc.code) from None
    field = config.input_field
    fields = version.fields
    if field not in fields and len(fields) < dataset_service.MAX_TRACKED_FIELDS:
        shown = ", ".join(repr(f) for f in fields[:20]) + (", ..." if len(fields) > 20 else "")
        raise _conflict(
            f"no item of dataset version '{config.dataset_version_id}' has the field {field!r} "
            f"(input_field); their fields: {shown or 'none'}.",
            "unknown_input_field",
        )
    unfiltered = not (config.filter_query or "").strip()
    lacking = (version.lacking_fields or {}).get(field)
    if unfiltered and lacking is not None:
        raise _conflict(_lacking_message(lacking, field), "unknown_input_field")
    total = version.item_count if unfiltered else None
    return BatchStart(config, total)


def _lacking_message(item_id: str, field: str) -> str:
    return (
        f"item {item_id!r} is kept by the filter but has no field {field!r} (input_field); filter it out "
        "or fix the item."
    )


def _check_batch(old: ExecutionRecord) -> None:
    if old.input_mode != "batch":
        raise _conflict("only a batch run has items to retry.", "not_a_batch")


def rerun_submission(old: ExecutionRecord) -> BatchStart:
    """A re-run goes over exactly the items of the old run (its own list, copied in the background)."""
    if not old.batch:
        raise Conflict(
            "this batch run never got its item list (it ended before it started); start a new batch.",
            code="no_item_list",
        )
    return BatchStart(_config_of(old), old.progress.total_items or 0)


def retry_submission(tenant: str, old: ExecutionRecord, parallelism: int | None) -> BatchStart:
    """A new run over the items of a finished batch run that did not complete (failed, or never ran);
    409 when there are none. Their list is written in the background."""
    _check_batch(old)
    if old.status not in TERMINAL:
        raise Conflict(
            "this batch is still running; retry its failed items once it has finished.",
            code="execution_active",
        )
    if not old.batch:
        raise Conflict("this batch run never got its item list; start a new batch.", code="no_item_list")
    total = old.progress.total_items or 0
    counters = deps.stores().batches.counters(tenant, old.id, consistent=True)
    remaining = total - (counters["processed_items"] - counters["failed_items"])
    if remaining <= 0:
        raise Conflict("no item of this batch failed; there is nothing to retry.", code="no_failed_items")
    config = _config_of(old)
    if parallelism is not None:
        config = config.model_copy(update={"parallelism": parallelism})
    return BatchStart(config, remaining)


# ---- prepare_batch (the machine) -------------------------------------------------------------------
class _Refused(Exception):
    """The run cannot start: its message becomes the run's error."""


class _CancelWatch:
    """Called for every item read: every CANCEL_CHECK_SECONDS, one read of the run's status;
    raises ExecutionNotRunning once it is no longer pending (cancelled)."""

    def __init__(self, tenant: str, execution_id: str) -> None:
        self.tenant, self.execution_id = tenant, execution_id
        self.next_at = time.monotonic() + CANCEL_CHECK_SECONDS

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + CANCEL_CHECK_SECONDS
        status = deps.stores().executions.get_record(self.tenant, self.execution_id).status
        if status != Status.PENDING:
            raise ExecutionNotRunning(f"the run was {status} while its items were prepared")


def _dataset_entries(
    tenant: str, config: BatchConfig, watch: _CancelWatch
) -> tuple[Iterator[dict[str, Any]], int]:
    try:
        source = dataset_service.item_source(tenant, config.dataset_id, config.dataset_version_id)
    except NotFound:
        raise _Refused(
            f"dataset version '{config.dataset_version_id}' was deleted before the run could read it."
        ) from None
    field = config.input_field

    def kept() -> Iterator[dict[str, Any]]:
        kept_any = False
        for read in dataset_service.filtered_items(source.key, config.filter_query):
            watch()
            if read.refused:  # the filter over its work budget: the run cannot start
                raise _Refused(f"item {read.entry['id']!r}: {read.refused.message}")
            if not read.kept:
                continue
            if field not in read.item:
                raise _Refused(_lacking_message(str(read.entry["id"]), field))
            kept_any = True
            yield read.entry
        if not kept_any:
            raise _Refused(
                f"the filter {config.filter_query!r} keeps none of the {source.count} items; nothing to run."
            )

    return kept(), source.count


def _unfinished_entries(tenant: str, old_id: str) -> Iterator[dict[str, Any]]:
    """The entries of a run's list whose item did not complete (failed, or no outcome: never ran),
    in list order; statuses read a page of entries at a time (memory: one page): one Query of the
    child records (no S3 read), or for per-item records one BatchGetItem per 100."""
    stream = (entry for _, entry in item_lists.entries(item_lists.list_key(_prefix(tenant, old_id))))
    while page := list(itertools.islice(stream, OUTCOMES_PER_READ)):
        if all(e.n is not None for e in page):
            ordinals = [int(e.n or 0) for e in page]
            by_ordinal = outcomes.statuses(tenant, old_id, min(ordinals), max(ordinals))
            status = {e.id: by_ordinal.get(int(e.n or 0)) for e in page}
        else:
            records = deps.stores().batches.outcomes(tenant, old_id, [e.id for e in page], fields=("status",))
            status = {item_id: r.get("status") for item_id, r in records.items()}
        for entry in page:
            if status.get(entry.id) != "completed":
                yield entry.model_dump(exclude_none=True)


def _write_items(tenant: str, record: ExecutionRecord, config: BatchConfig) -> tuple[int, ItemIndex]:
    """Write the run's item list and index; (entries, the index: its buckets, and ``ordinals``: the
    entries carry theirs, so the run's outcomes are child records)."""
    prefix = _prefix(tenant, record.id)
    watch = _CancelWatch(tenant, record.id)
    source: Iterator[dict[str, Any]]
    if record.rerun_of:
        old = deps.stores().executions.get_record(tenant, record.rerun_of)
        old_total = old.progress.total_items or 0
        if old.item_index and not old.large_items:
            item_lists.copy(_prefix(tenant, old.id), prefix)  # nothing is read
            return old_total, old.item_index
        source = (e for _, e in _entries_of(tenant, old.id))
        expected = old_total
    elif record.retry_of:
        old = deps.stores().executions.get_record(tenant, record.retry_of)
        source = _unfinished_entries(tenant, old.id)
        expected = old.progress.total_items or 0
    else:
        source, expected = _dataset_entries(tenant, config, watch)
    writer = item_lists.IndexedListWriter(prefix, expected)
    try:
        for entry in source:
            watch()
            writer.add(entry)
        total = writer.close()
    except BaseException:
        writer.abort()
        raise
    if writer.large:
        deps.stores().executions.update_execution(tenant, record.id, {"large_items": writer.large})
    return total, ItemIndex(buckets=writer.buckets, ordinals=True, largest_entry=writer.largest)


def _entries_of(tenant: str, execution_id: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for offset, entry in item_lists.entries(item_lists.list_key(_prefix(tenant, execution_id))):
        yield offset, entry.model_dump(exclude_none=True)


def _machine_input(run: RunRef, settings: BatchSettings, plan: Plan) -> dict[str, Any]:
    """(``run_timeout`` here is the longest the run may take; ReserveBudget's answer is what is
    left of it when the Race starts.)"""
    run_timeout = min(plan.run_timeout or retention.max_run_seconds(), retention.max_run_seconds())
    return {
        "run": run.model_dump(mode="json"),
        "batch": settings.model_dump(mode="json"),
        "run_timeout": run_timeout,
        "budget_wait": budget.wait_period(run_timeout),
    }


#: What writes a run's item list and index: (tenant, record, config) -> (entries, the index);
#: raises _Refused when the run cannot start. Today's: :func:`_write_items` (S3).
ItemListWriter = Callable[[str, ExecutionRecord, BatchConfig], tuple[int, ItemIndex]]


def prepare_batch(
    run: RunRef, *, env: deps.Deps | None = None, write_items: ItemListWriter | None = None
) -> dict[str, Any]:
    """Write the run's item list and index, set ``total_items``, size the Map. A repeated call
    returns what the first decided. Given ``env``, the plan is read from its bucket each time (the
    configured bucket's is cached); the item list is written by ``write_items`` (S3 by default)."""
    cached_plan = env is None
    env = deps.given(env)
    store = env.executions
    record = store.get_record(run.tenant, run.execution_id)
    plan = (
        load_plan(run.tenant, run.execution_id)
        if cached_plan
        else read_plan(run.tenant, run.execution_id, env.blobs)
    )
    if record.batch:
        return _machine_input(run, record.batch, plan)
    if record.status != Status.PENDING:
        raise ExecutionNotRunning(f"the execution is {record.status}")
    config = _config_of(record)
    try:
        total, index = (write_items or _write_items)(run.tenant, record, config)
        if total == 0:
            raise _Refused("no item of the run is left to run.")
    except _Refused as refused:
        transitions.transition(
            run.tenant,
            record,
            (Status.PENDING,),
            Status.FAILED,
            {"error": str(refused), "completed_at": env.now()},
            env=env,
        )
        raise ExecutionNotRunning(f"the run did not start: {refused}") from None
    settings = batch_settings(
        plan,
        config.parallelism,
        total,
        item_lists.list_key(_prefix(run.tenant, run.execution_id)),
        index.largest_entry,
    )
    progress = record.progress.model_copy(update={"total_items": total})
    try:
        store.update_execution(
            run.tenant,
            run.execution_id,
            {"batch": settings, "item_index": index, "progress": progress},
            only_if_status=(Status.PENDING,),
        )
    except ConditionFailed:
        raise ExecutionNotRunning("the run was cancelled while its items were prepared") from None
    return _machine_input(run, settings, plan)


# ---- reserve_budget (the machine) ------------------------------------------------------------------
def reserve_budget(
    event: dict[str, Any], *, env: deps.Deps | None = None, limits: budget.BudgetLimits | None = None
) -> dict[str, Any]:
    """The body of the node runner's ``reserve_budget`` action (batch machine, state ReserveBudget).

    ``event`` is ``{"run": RunRef, "batch": BatchSettings, "run_timeout"}``. Returns the event (with
    ``batch.children`` narrowed when the batch alone is larger than the budget, and ``run_timeout`` the
    clock the run's Race starts: its own timeout, at most what is left of its time since it was
    created, services/retention.py) once the share is reserved and the run is ``running``.
    Raises :class:`budget.BudgetExhausted` while the budget is taken, and ``ExecutionNotRunning``
    when the run was cancelled (or ended) while it waited.
    """
    env = deps.given(env)
    run = RunRef.model_validate(event["run"])
    tenant, execution_id = run.tenant, run.execution_id
    store = env.executions
    settings, outcome = budget.reserve(
        tenant, execution_id, BatchSettings.model_validate(event["batch"]), env=env, limits=limits
    )
    batch = settings.model_dump(mode="json")
    if outcome == "not_pending":
        record = store.get_record(tenant, execution_id)
        if record.status != Status.RUNNING:
            raise ExecutionNotRunning(f"execution {execution_id} is {record.status}")
        # an earlier attempt started it
        return {**event, "batch": batch, "run_timeout": _clock(record, event)}
    record = store.get_record(tenant, execution_id)
    clock = _clock(record, event)
    fields: ExecutionUpdate = {
        "started_at": env.now(),
        "overdue_at": iso_in(batch_overdue_after_seconds(settings, clock)),
    }
    moved = transitions.transition(
        tenant, record, allowed_from(Status.RUNNING), Status.RUNNING, fields, env=env
    )
    if moved is None:
        record = store.get_record(tenant, execution_id)
        if record.status != Status.RUNNING:
            # Cancelled between the reservation and the move: give the share back at once.
            budget.release(tenant, execution_id, env=env, limits=limits)
            raise ExecutionNotRunning(f"execution {execution_id} is {record.status}")
    return {**event, "batch": batch, "run_timeout": clock}


def _clock(record: ExecutionRecord, event: dict[str, Any]) -> int:
    """The Race's clock: the run's timeout (Prepare's), at most what is left since its creation."""
    return retention.run_clock_seconds(record.created_at, int(event.get("run_timeout") or 0) or None)


def _config_of(record: ExecutionRecord) -> BatchConfig:
    if record.batch_config is None:
        raise ValueError(f"execution {record.id} is not a batch run (it has no batch_config)")
    return record.batch_config


# ---- the end (the machine) -------------------------------------------------------------------------
def _final_fields(tenant: str, record: ExecutionRecord) -> tuple[ExecutionUpdate, BatchCounts]:
    """The run's final counts, taken once its counters are sealed (no child records after, not even
    one that outlives the run: adapters/batch_store.py ``seal``), so they hold every item recorded."""
    batches = deps.stores().batches
    batches.seal(tenant, record.id, record.children_expire_at)
    counters = batches.counters(tenant, record.id, consistent=True)
    total = record.progress.total_items or 0
    counts = BatchCounts.final(total, counters)
    progress = record.progress.model_copy(
        update={"processed_items": counts.processed_items, "failed_items": counts.failed_items}
    )
    # Where a single run keeps its usage: the execution shows it as ``usage``.
    fields = usage_update(counts.usage)
    fields |= {"completed_at": now_iso(), "progress": progress}
    return fields, counts


def complete(run: RunRef) -> None:
    """Every child of the Map has ended: ``completed``, or ``failed`` above ``max_failed_percent``
    (items without an outcome never ran: failed). A cancelled run stays cancelled."""
    record = deps.stores().executions.get_record(run.tenant, run.execution_id)
    if record.status != Status.RUNNING:
        if record.status in TERMINAL:
            # A repeated task (its end landed, maybe not what follows it: the compaction's start),
            # or a run cancelled meanwhile: what follows an end, again (repeatable).
            transitions.after_finish(run.tenant, record)
        return
    fields, counts = _final_fields(run.tenant, record)
    config = _config_of(record)
    status, error = judge(counts, config.max_failed_percent)
    if error:
        fields["error"] = error
    # The move starts the compaction of the outcomes into segments (transitions.after_finish).
    transitions.transition(run.tenant, record, (Status.RUNNING,), status, fields)


def fail(run: RunRef, reason: str, error: dict[str, Any] | None = None) -> None:
    """``-> failed``: the run's own timeout, or an error of the machine itself."""
    record = deps.stores().executions.get_record(run.tenant, run.execution_id)
    if record.status in TERMINAL:
        transitions.after_finish(run.tenant, record)  # a repeated task, as in complete
        return
    fields, _ = _final_fields(run.tenant, record)
    if reason == "timeout":
        fields["error"] = retention.timed_out_message(record.created_at, record.timeout)
    else:
        fields["error"] = "the run failed: " + error_message(error)[1]
    transitions.transition(run.tenant, record, (Status.PENDING, Status.RUNNING), Status.FAILED, fields)


# ---- deleting a batch run (the API starts it, the jobs machine does it) ----------------------------
def delete_in_background(tenant: str, record: ExecutionRecord) -> None:
    """Hide the run from every read and listing at once; delete its records and objects (which
    grow with its items) on the jobs machine."""
    deps.stores().executions.hide_execution(tenant, record.id)
    deps.machines().start(
        get_settings().jobs_machine_arn,
        f"delete-{record.id}",
        {"kind": "delete_execution", "tenant": tenant, "execution_id": record.id},
    )


#: A delete round stops this long before its invocation would be killed.
DELETE_MARGIN_SECONDS = 60.0


def delete_execution_job(job: dict[str, Any], *, remaining_ms: int | None = None) -> dict[str, Any]:
    """The jobs machine's ``delete_execution``: objects, outcomes and counters, the execution last
    (an interrupted delete is finished by a repeat).

    A million-item run outlasts one invocation: with ``remaining_ms`` (the Lambda context's), a
    round stops DELETE_MARGIN_SECONDS before the end and returns the job again with ``more: true``
    and its ``round``; the jobs machine runs it again (bounded, statemachine/jobs.asl.json). What a
    round deleted is gone, so the next one simply goes on with the rest."""
    tenant, execution_id = str(job["tenant"]), str(job["execution_id"])
    stop = None
    if remaining_ms is not None:
        deadline = time.monotonic() + remaining_ms / 1000 - DELETE_MARGIN_SECONDS

        def stop() -> bool:
            return time.monotonic() >= deadline

    deleted = int(job.get("records") or 0)
    finished = deps.blobs().delete_prefix(_prefix(tenant, execution_id), stop=stop)
    if finished:
        count, finished = deps.stores().batches.delete_records(tenant, execution_id, stop=stop)
        deleted += count
    if not finished:
        return {**job, "more": True, "round": int(job.get("round") or 0) + 1, "records": deleted}
    deps.stores().executions.delete_execution(tenant, execution_id)
    return {"deleted": execution_id, "records": deleted}
