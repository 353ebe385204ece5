"""Batch runs, the pure part: what travels (list entries, item outcomes, the Map's settings), where
an item's records live (shards), how a child batch is sized, and how a finished batch is judged.

A batch is the batch machine (statemachine/batch.asl.json, docs/engine.md) over the run's *item
list* (an S3 object, one entry per line): ``prepare_batch`` writes the list and decides the
``BatchSettings``; a distributed Map hands ``items_per_child`` entries at a time to ``run_items``,
which runs them concurrently and records them in one DynamoDB transaction; ``complete`` judges the
run from the counter shards. Nothing here touches AWS.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field
from typing_extensions import TypedDict

from relayflow_runtime.domain.engine import (
    EXPRESS_LIMIT_SECONDS,
    EXPRESS_RESERVE_SECONDS,
    LAMBDA_LIMIT_SECONDS,
    OVERDUE_MARGIN_SECONDS,
    Plan,
    RunClock,
    RunRef,
    fits_express,
    worst_case_item_seconds,
)

#: An item's outcome lives under one of this many partition keys, picked by a hash of its id:
#: at parallelism 100 no key takes more than a few writes per second (DynamoDB: ~1,000 per key).
OUTCOME_SHARDS = 32
#: The progress counters of a run: one ADD per child batch goes to one of these.
COUNTER_SHARDS = 16
#: Consecutive ordinals of a run's list whose pointers share one DynamoDB record (domain/outcomes.py):
#: ten pointers are ≈0.4 KB, the 2 write units of one transactional write. Part of the stored
#: layout (a run's records are read back by it): never changed for a size of child.
RECORD_BLOCK = 10
#: Items one child batch runs at once (the Map's ItemBatcher), at most. A child's own costs — its
#: S3 PUT, its Express and Lambda requests, its transaction, the time its invocation waits on its
#: slowest item — are shared by its items: at 20 a child they are half of what they were at 10
#: (docs/batch.md, Cost). More would hold more finished items back behind a child's slowest one.
MAX_ITEMS_PER_CHILD = 20
#: Children of whole pointer records (RECORD_BLOCK x 2, x 3 ...) are chosen over the smaller sizes
#: only while they still run at least this share of ``parallelism`` at once.
WHOLE_BLOCKS_AT_ONCE = 0.9
#: A function's threads that run items, and nodes of items beside their item's own thread
#: (services/batch_items.py): a child's items all run at once, and its worst case is one item's,
#: only while they have a thread each.
ITEM_THREADS = 128
NODE_THREADS = 256
#: What a child's prompts and outputs may hold in memory at their largest (each value up to
#: BATCH_VALUE_LIMIT stays in the child's object): half the node runner's 512 MB; a child of ten
#: items of a 40-node plan (the most a version holds) could hold 200 MiB before children of 20.
CHILD_VALUES_BYTES = 256 * 1024 * 1024
#: Runs whose list entries carry no ordinal (prepared before child records; a re-run copies such a
#: list) record per item, all of a child's items in one TransactWriteItems: at most 100 actions and
#: 4 MB, so at most 50 items of OUTCOME_BUDGET_BYTES each (and the counter ADD).
PER_ITEM_RECORDS_MAX_ITEMS = 50
OUTCOME_BUDGET_BYTES = 64 * 1024
#: The batch machine's ItemBatcher cuts a child at this many bytes of input (its
#: ``MaxInputBytesPerBatch``, statemachine/batch.asl.json; AWS's most is 256 KiB), whatever
#: ``items_per_child`` says; a child so cut no longer holds whole pointer records, and two
#: children then write one record at once. Children are sized to fit it: BATCH_INPUT_RESERVE for
#: the child's BatchInput, ENTRY_OVERHEAD_BYTES for each item's place in the array.
MAX_CHILD_INPUT_BYTES = 196608
BATCH_INPUT_RESERVE = 2048
ENTRY_OVERHEAD_BYTES = 16
#: A prompt or output larger than this stands in an S3 object of its own even when the child's
#: object holds its item's outcome (domain/outcomes.py): a results page reads its item's output
#: whole, so no single value may weigh much of a page.
BATCH_VALUE_LIMIT = 256 * 1024
#: What a child keeps of its time (the sooner of its invocation's end and its Task's timeout) to
#: record its items: one transaction, whose contention retries are bounded at 5 s
#: (adapters/transactions.py); values over the inline limit are in S3 already.
RECORD_MARGIN_SECONDS = 10
#: A child's task may run this much longer than its worst-case item: the recording margin, so a
#: worst-case item still starts its last attempt, plus a cold start's few seconds.
CHILD_MARGIN_SECONDS = RECORD_MARGIN_SECONDS + 5
#: Item ids longer than this (UTF-8 bytes) are keyed by a digest (a DynamoDB sort key: 1 KiB).
MAX_KEYED_ID_BYTES = 200
#: What the counters count: items with an outcome, the failed ones, and their usage.
COUNTERS = ("processed_items", "failed_items", "input_tokens", "output_tokens", "estimated_cost_nanos")
USAGE_COUNTERS = ("input_tokens", "output_tokens", "estimated_cost_nanos")


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- what travels -----------------------------------------------------------------------------------
class ItemEntry(_Shape):
    """One entry of an item list (and one Map item): the item inline, or ``ref`` to an S3 object
    holding it (items over 64 KiB; see services/dataset_service.py). ``n``: the entry's ordinal
    in a run's list (0, 1, ...), which keys its child's outcome record (domain/outcomes.py); lists
    written before ordinals existed have none (their outcomes are per-item records)."""

    id: str
    item: dict[str, Any] | None = None
    ref: str | None = None
    n: int | None = None


class ItemNodeRecord(_Shape):
    """One node of one item, as the item's outcome keeps it. ``prompt`` and ``output`` are inline
    when small, else ``{"$s3": key}`` references (services/values.py)."""

    node_id: str
    name: str = ""
    idx: int = 0
    status: Literal["completed", "failed", "timed_out", "cancelled"] = "completed"
    attempts: int = 0
    attempt_errors: list[str] = Field(default_factory=list)
    duration_ms: int | None = None
    error: str | None = None
    prompt: Any = None
    output: Any = None
    started_at: str | None = None
    completed_at: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)


class ItemOutcome(_Shape):
    """The one record of a finished item: its status, the output of its last node that produced
    one (``output_node``), and the record of every node that ran."""

    source_item_id: str
    status: Literal["completed", "failed"]
    error: str | None = None
    failed_node_id: str | None = None
    output_node: str | None = None
    duration_ms: int | None = None
    completed_at: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    nodes: dict[str, ItemNodeRecord] = Field(default_factory=dict)

    @property
    def output(self) -> Any:
        """The item's result (packed: inline, or an S3 reference)."""
        node = self.nodes.get(self.output_node or "")
        return node.output if node else None


class StoredOutcome(TypedDict, total=False):
    """A per-item record as the batch store reads it: an :class:`ItemOutcome` as runs prepared
    before child records recorded it (adapters/batch_store.py ``record_outcomes``), or only the
    fields asked of it. Node records are the mappings stored (packed values, services/values.py)."""

    source_item_id: str
    status: Literal["completed", "failed"]
    error: str | None
    failed_node_id: str | None
    output_node: str | None
    duration_ms: int | None
    completed_at: str | None
    usage: dict[str, int]
    nodes: dict[str, dict[str, Any]]


class BatchSettings(_Shape):
    """What ``prepare_batch`` hands the batch machine (``$.batch``): the list to read and the Map's
    shape. ``express``: children are Express executions (a worst-case child fits in 5 minutes);
    ``child_timeout``: the longest one child (its items run at once) may take, its Task's timeout
    (``$.BatchInput.child_timeout``). Settings kept by runs prepared before it had that name read
    ``item_timeout``."""

    items_key: str
    express: bool
    items_per_child: int
    children: int
    child_timeout: int = Field(validation_alias=AliasChoices("child_timeout", "item_timeout"))
    total: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def item_timeout(self) -> int:
        """``child_timeout`` under its former name, still written: a batch started on the batch
        machine's previous definition (e.g. parked on AwaitBudget across a deploy, which updates
        the runner first) reads ``$.batch.item_timeout`` from ReserveBudget's answer."""
        return self.child_timeout


class BatchStart(RunClock):
    """What ``prepare_batch`` and ``reserve_budget`` return to the batch machine (and what
    ``reserve_budget`` is sent: Prepare's answer, or its own before AwaitBudget). ``run_timeout``:
    the run's clock (Prepare's: the longest the run may take; ReserveBudget's: what is left of it
    when the Race starts); ``budget_wait``: how long AwaitBudget stays parked before asking again."""

    run: RunRef
    batch: BatchSettings
    budget_wait: int


class AwaitBudgetEvent(_Shape):
    """``await_budget``: the batch parked until the budget has room (``run_timeout``: the run's
    clock, the longest it may wait), with the task token a release sends back."""

    run: RunRef
    batch: BatchSettings
    run_timeout: int = Field(validation_alias=AliasChoices("run_timeout", "timeout"))
    token: str


class ItemsEvent(_Shape):
    """``run_items``: one child's entries, and its ``child_timeout`` (its Task's timeout, seconds;
    ``task_timeout`` in the previous definition, absent in the ones before)."""

    run: RunRef
    items: list[ItemEntry] = Field(default_factory=list)
    child_timeout: float | None = Field(None, validation_alias=AliasChoices("child_timeout", "task_timeout"))


class ItemsFailedEvent(_Shape):
    """``items_failed``: a child's entries, with the Catch's error."""

    run: RunRef
    items: list[ItemEntry] = Field(default_factory=list)
    error: dict[str, Any] | None = None


class ItemsRun(_Shape):
    """What ``run_items`` returns: how many of the child's items it recorded."""

    done: int


class ItemsFailed(_Shape):
    """What ``items_failed`` returns: how many of the child's items it recorded failed."""

    failed: int


# ---- keys and shards --------------------------------------------------------------------------------
def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def item_key(item_id: str) -> str:
    """The item's part of a sort key: its id, or a digest of an id too long for one."""
    if len(item_id.encode("utf-8", "surrogatepass")) <= MAX_KEYED_ID_BYTES:
        return item_id
    return "h:" + _digest(item_id).hex()


def outcome_shard(item_id: str) -> int:
    """Which of the OUTCOME_SHARDS partition keys holds the item's outcome (stable: a hash)."""
    return int.from_bytes(_digest(item_id)[:4], "big") % OUTCOME_SHARDS


# ---- sizing a batch ---------------------------------------------------------------------------------
def most_items_per_child(plan: Plan, largest_entry: int | None = None) -> int:
    """The most items one child of this plan may hold, from what a child now holds and writes: a
    thread for each item and for each of its nodes that may run at once (at most the nodes off its
    longest chain, plus one), so that the child's worst case stays one item's; its prompts and
    outputs in memory at their largest; a per-item records' transaction; and, given the bytes of
    the run's largest list entry, as many of those as the ItemBatcher's MAX_CHILD_INPUT_BYTES
    holds (see the constants)."""
    nodes = len(plan.nodes) or 1
    depth: dict[str, int] = {}
    for node in plan.nodes:  # topological order
        depth[node.id] = 1 + max((depth.get(parent, 0) for parent in node.parents), default=0)
    widest = nodes - max(depth.values(), default=1) + 1
    in_memory = CHILD_VALUES_BYTES // (nodes * 2 * BATCH_VALUE_LIMIT)
    threads = min(ITEM_THREADS, NODE_THREADS // widest)
    by_bytes = (
        (MAX_CHILD_INPUT_BYTES - BATCH_INPUT_RESERVE) // (largest_entry + ENTRY_OVERHEAD_BYTES)
        if largest_entry
        else MAX_ITEMS_PER_CHILD
    )
    return max(1, min(MAX_ITEMS_PER_CHILD, threads, in_memory, PER_ITEM_RECORDS_MAX_ITEMS, by_bytes))


def default_items_per_child(parallelism: int, most: int = MAX_ITEMS_PER_CHILD) -> int:
    """Items per child (at most ``most``, and at least two children when ``parallelism`` allows).

    Children of whole pointer records — 20 items, 30 ... (RECORD_BLOCK x n, n >= 2): the largest
    that still runs WHOLE_BLOCKS_AT_ONCE of ``parallelism`` at once: a child's own costs are shared
    by twice the items or more, and no two children write one record. Otherwise children of up to
    RECORD_BLOCK items: enough to divide the Map's requests and transactions (at least half of
    ``min(RECORD_BLOCK, parallelism // 2)``), of those the one whose whole children run the most
    items at once without exceeding ``parallelism`` (the larger on a tie): 15 is 3 children of 5,
    25 is 5 of 5, 50 is 5 of 10, 97 is 12 of 8 (96 at once); 40 and 100 are children of 20."""
    most = min(most, max(1, parallelism // 2))
    for size in range(most - most % RECORD_BLOCK, RECORD_BLOCK, -RECORD_BLOCK):
        if parallelism // size * size >= WHOLE_BLOCKS_AT_ONCE * parallelism:
            return size
    small = min(most, RECORD_BLOCK)
    return max(range(max(1, small // 2), small + 1), key=lambda size: (parallelism // size * size, size))


def children_for(parallelism: int, items_per_child: int) -> int:
    """The Map's children (its ``MaxConcurrency``): ``children * items_per_child`` items run at
    once, never more than ``parallelism``."""
    return max(1, parallelism // items_per_child)


def child_seconds(plan: Plan) -> int:
    """The longest a child batch may take: its items run at once, so one worst-case item."""
    return worst_case_item_seconds(plan) + CHILD_MARGIN_SECONDS


def batch_settings(
    plan: Plan, parallelism: int, total: int, items_key: str, largest_entry: int | None = None
) -> BatchSettings:
    """Express children when a worst-case item fits in Express's 5 minutes, else Standard children
    given the node runner's whole 15 minutes. A plan's worst case is an upper bound (with the
    version defaults, 300 s nodes and 3 retries, one node may take 20 minutes, though a real model
    call rarely takes one): a child that really runs past 15 minutes is caught, and its items are
    recorded failed (``items_failed``), to be retried with ``retry_failed_items``. ``largest_entry``:
    the bytes of the run's largest list entry (``ItemIndex.largest_entry``; unknown for lists
    written before it was kept)."""
    express = fits_express(plan)
    items_per_child = default_items_per_child(parallelism, most_items_per_child(plan, largest_entry))
    limit = EXPRESS_LIMIT_SECONDS - EXPRESS_RESERVE_SECONDS if express else LAMBDA_LIMIT_SECONDS
    return BatchSettings(
        items_key=items_key,
        express=express,
        items_per_child=items_per_child,
        children=children_for(parallelism, items_per_child),
        child_timeout=max(1, min(limit, child_seconds(plan))),
        total=total,
    )


def batch_overdue_after_seconds(settings: BatchSettings, run_timeout: int) -> int:
    """How long after its start a batch is overdue: its own ``run_timeout`` or, sooner, every wave
    of children at its worst case (``child_timeout`` each); plus OVERDUE_MARGIN_SECONDS."""
    at_once = max(1, settings.children) * max(1, settings.items_per_child)
    waves = max(1, math.ceil(settings.total / at_once))
    worst = waves * (settings.child_timeout or LAMBDA_LIMIT_SECONDS)
    return min(run_timeout, worst) + OVERDUE_MARGIN_SECONDS


# ---- judging a finished batch -----------------------------------------------------------------------
class BatchCounts(_Shape):
    """A batch's counts: from the counter shards while it runs; final once it has ended, when items
    without an outcome (they never ran) count as processed and failed."""

    total_items: int
    processed_items: int = 0
    failed_items: int = 0
    never_ran: int = 0
    usage: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def final(cls, total: int, counters: dict[str, int]) -> BatchCounts:
        processed = min(int(counters.get("processed_items", 0)), total)
        never_ran = total - processed
        return cls(
            total_items=total,
            processed_items=total,
            failed_items=int(counters.get("failed_items", 0)) + never_ran,
            never_ran=never_ran,
            usage={k: int(counters[k]) for k in USAGE_COUNTERS if counters.get(k)},
        )


def judge(counts: BatchCounts, max_failed_percent: float | None) -> tuple[str, str | None]:
    """(``completed`` | ``failed``, the error): failed when more than ``max_failed_percent`` of
    the items failed (never-ran items included); without a limit any share is tolerated."""
    total, failed = counts.total_items, counts.failed_items
    if max_failed_percent is None or not total or failed * 100 / total <= float(max_failed_percent):
        return "completed", None
    error = (
        f"{failed} of {total} items failed ({failed * 100 / total:.1f}%), more than max_failed_percent "
        f"({float(max_failed_percent):g}%)"
    )
    if counts.never_ran:
        error += f"; {counts.never_ran} of them never ran"
    return "failed", error
