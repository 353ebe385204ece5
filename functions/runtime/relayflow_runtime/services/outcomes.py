"""A batch run's item outcomes: written once per child batch, read by pages and by item, compacted
into ranged segments once the run ends (the layout: domain/outcomes.py; docs/batch.md, Results).

* **Recording** (``record``): one S3 PUT of the child's object, then one transaction of the
  child's record and a counter ADD (adapters/batch_store.py ``record_child``: the first complete
  record of an item wins, a repeated child counts nothing twice). Per item of a ten-item child:
  0.1 PUT, ≈0.4 write units, and its share of one compressed object.
* **One item** (``detail``), running or ended: its pointer (one GetItem of its record block), then
  one ranged GET of its two members in the child object.
* **A page of a running run** (``results``): one Query of the pointer records of the ordinals
  asked, then one ranged GET per child object they point into (READ_THREADS at once, at most
  PAGE_OBJECT_READS: the page ends before the item that would pass it).
* **A page of a compacted run** (``outcome_segments`` on the execution, set by ``compact_job``):
  one ranged GET of the header slots of the ordinals asked and one of their results. A page of
  1,000 items is a handful of requests whatever the values weigh; a page whose values are large
  ends early (READ_BYTES read), with a next token.
"""

from __future__ import annotations

import math
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, TypeVar

from relayflow_runtime.adapters import blob_stream
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain.batch import ItemOutcome
from relayflow_runtime.domain.clock import ReadDeadline
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.domain.execution_record import ExecutionRecord, SweptRun
from relayflow_runtime.domain.outcomes import (
    READ_BYTES,
    SEGMENT_ITEMS,
    Pointer,
    SegmentLayout,
    StoredResult,
    child_object,
    header_range,
    header_slots,
    pack_nodes,
    result_of,
    segment_of,
    unmember,
)
from relayflow_runtime.domain.status import TERMINAL
from relayflow_runtime.errors import NotFound
from relayflow_runtime.services import deps
from relayflow_runtime.services.run_records import execution_prefix
from relayflow_runtime.settings import get_settings

#: S3 reads of one page or one segment at once (a Lambda's connections; S3 takes thousands).
READ_THREADS = 16
#: A compaction round stops this long before its invocation would be killed.
COMPACT_MARGIN_SECONDS = 60.0
#: Child objects a compaction holds (and fetches at once, READ_THREADS at a time).
COMPACT_WINDOW = 64
#: Segment parts held in memory before they go to a temporary file.
SPOOL_BYTES = 16 * 1024 * 1024

_readers = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="outcome-read")
_Job = TypeVar("_Job")
_Read = TypeVar("_Read")


def child_object_key(prefix: str, tag: str) -> str:
    return f"{prefix}outcomes/c/{tag}"


def segment_key(prefix: str, block: int) -> str:
    return f"{prefix}outcomes/s/{block:06d}"


# ---- recording -------------------------------------------------------------------------------------
def record(
    run: RunRef, first: int, outcomes: list[tuple[int, ItemOutcome]], expires_at: int | None
) -> list[str]:
    """Record a child batch's outcomes (``first``: the smallest ordinal of the child's entries,
    which names its object): the ids of the items this call recorded."""
    if not outcomes:
        return []
    # Each writer its own object: two runs of a child never overwrite each other's.
    tag = f"{first:08x}-{secrets.token_hex(4)}"
    body, pointers = child_object(((n, o.status, result_of(o), pack_nodes(o)) for n, o in outcomes), tag)
    key = child_object_key(execution_prefix(run.tenant, run.execution_id), tag)
    deps.blobs().put_bytes(key, body)  # before the record: a pointer never points at nothing
    recorded = deps.stores().batches.record_pointers(
        run.tenant, run.execution_id, pointers, {n: o.usage for n, o in outcomes}, expires_at
    )
    ids = {n: o.source_item_id for n, o in outcomes}
    return [ids[n] for n in recorded]


# ---- reading ---------------------------------------------------------------------------------------
def _within(sizes: Iterable[tuple[int, int]], budget: int) -> int | None:
    """The last ordinal whose stored bytes, summed in order, stay within ``budget`` (the first one
    always): None when all of them do."""
    total = 0
    for index, (n, size) in enumerate(sizes):
        total += size
        if total > budget and index:
            return n - 1
    return None


#: Child objects a page of a running run reads at most (READ_THREADS at a time: 7 waves); a page
#: whose items are spread over more (small children) ends before the item that would pass it. As
#: many as the first page a finished run's execution carries (batch_results.RESULTS_IN_EXECUTION).
PAGE_OBJECT_READS = 100


def _objects_within(pointers: list[tuple[int, Pointer]], cut: int | None) -> int | None:
    """``cut`` lowered to the last ordinal before the page's child objects pass PAGE_OBJECT_READS."""
    tags: set[str] = set()
    for n, pointer in pointers:
        if cut is not None and n > cut:
            break
        if pointer.tag not in tags and len(tags) == PAGE_OBJECT_READS:
            return n - 1
        tags.add(pointer.tag)
    return cut


def _segment_slots(prefix: str, block: int, low: int, high: int) -> dict[int, tuple[int, int]]:
    try:
        data = deps.blobs().get_range(segment_key(prefix, block), *header_range(low, high))
    except NotFound:
        return {}
    return {low + i: slot for i, slot in enumerate(header_slots(data)) if slot[1]}


def started_in_time(
    read: Callable[[_Job], _Read], jobs: list[_Job], deadline: ReadDeadline | None
) -> list[_Read]:
    """``read`` of each of ``jobs`` on the reader threads (READ_THREADS at once, in order), the
    answers of those started: all, or those started before ``deadline`` (the first unless the
    answer has moved on already)."""
    answers: list[Future[_Read]] = []
    for index, job in enumerate(jobs):
        if deadline is not None and deadline.stops(first=index == 0):
            break
        if index >= READ_THREADS:  # a thread is free once the read READ_THREADS before has ended
            answers[index - READ_THREADS].result()
        answers.append(_readers.submit(read, job))
    return [answer.result() for answer in answers]


def results(
    tenant: str,
    execution_id: str,
    ordinals: list[int],
    compacted: bool,
    budget: int = READ_BYTES,
    deadline: ReadDeadline | None = None,
) -> tuple[dict[int, StoredResult], int | None]:
    """The result members of the recorded ones among ``ordinals`` (sorted, consecutive in the
    list), and the last ordinal read when the stored bytes passed ``budget`` or the child objects
    left when ``deadline`` passed are the page's next (None: all read)."""
    if not ordinals:
        return {}, None
    prefix = execution_prefix(tenant, execution_id)
    low, high = ordinals[0], ordinals[-1]
    if deadline is not None and deadline.stops(first=True):
        return {}, low - 1
    found: dict[int, StoredResult] = {}
    if compacted:
        spans = [
            (block, max(low, block * SEGMENT_ITEMS), min(high, (block + 1) * SEGMENT_ITEMS - 1))
            for block in range(segment_of(low), segment_of(high) + 1)
        ]
        headers = started_in_time(lambda span: _segment_slots(prefix, *span), spans, deadline)
        slots = {n: slot for part in headers for n, slot in part.items()}
        cut = _within(((n, s[1]) for n, s in sorted(slots.items())), budget)
        if len(headers) < len(spans):  # the deadline passed: the page ends with the headers read
            last = spans[len(headers)][1] - 1
            cut = last if cut is None else min(cut, last)
        wanted = sorted(n for n in slots if cut is None or n <= cut)
        reads = []
        for block in sorted({segment_of(n) for n in wanted}):  # in order: a deadline keeps the first
            ns = [n for n in wanted if segment_of(n) == block]
            first, last = slots[ns[0]][0], slots[ns[-1]][0] + slots[ns[-1]][1] - 1
            reads.append(
                (segment_key(prefix, block), first, last, [(n, slots[n][0], slots[n][1]) for n in ns])
            )
    else:
        pointers = deps.stores().batches.pointers(tenant, execution_id, low, high)
        cut = _within(((n, p.result_length) for n, p in sorted(pointers.items())), budget)
        cut = _objects_within(sorted(pointers.items()), cut)
        groups: dict[str, list[tuple[int, Pointer]]] = {}
        for n, pointer in sorted(pointers.items()):
            if cut is None or n <= cut:
                groups.setdefault(child_object_key(prefix, pointer.tag), []).append((n, pointer))
        reads = [
            (
                key,
                min(p.offset for _, p in items),
                max(p.offset + p.result_length for _, p in items) - 1,
                [(n, p.offset, p.result_length) for n, p in items],
            )
            for key, items in groups.items()
        ]

    def read(job: tuple[str, int, int, list[tuple[int, int, int]]]) -> dict[int, StoredResult]:
        key, first, last, members = job
        data = deps.blobs().get_range(key, first, last)
        return {n: unmember(data[offset - first : offset - first + length]) for n, offset, length in members}

    done = started_in_time(read, reads, deadline)
    for part in done:
        found.update(part)
    if len(done) < len(reads):  # the deadline passed: the page ends before the first item not read
        cut = min(n for _, _, _, members in reads[len(done) :] for n, _, _ in members) - 1
    return found, cut


def detail(tenant: str, execution_id: str, n: int) -> tuple[StoredResult, dict[str, Any]] | None:
    """(result, node records) of the item of ordinal ``n``, or None when it has no outcome."""
    pointer = deps.stores().batches.pointers(tenant, execution_id, n, n).get(n)
    if pointer is None:
        return None
    key = child_object_key(execution_prefix(tenant, execution_id), pointer.tag)
    data = deps.blobs().get_range(key, pointer.offset, pointer.end - 1)
    return unmember(data[: pointer.result_length]), unmember(data[pointer.result_length :])


def statuses(tenant: str, execution_id: str, low: int, high: int) -> dict[int, str]:
    """The status of every recorded ordinal in low..high: the child records alone (no S3 read)."""
    pointers = deps.stores().batches.pointers(tenant, execution_id, low, high)
    return {n: pointer.status for n, pointer in pointers.items()}


# ---- compaction (the jobs machine, once the run has ended) -----------------------------------------
def _write_segment(tenant: str, execution_id: str, prefix: str, block: int) -> None:
    """Segment ``block``: the result of every recorded item of its ordinals, copied from the child
    objects (no member is decoded), behind the header of their places."""
    low = block * SEGMENT_ITEMS
    pointers = deps.stores().batches.pointers(
        tenant, execution_id, low, low + SEGMENT_ITEMS - 1, consistent=True
    )
    ordered = [(n, p, child_object_key(prefix, p.tag)) for n, p in sorted(pointers.items())]
    layout = SegmentLayout(block)
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as results:
        # The objects of the next items in ordinal order, COMPACT_WINDOW at a time (fetched at once):
        # memory holds one window of child objects and SPOOL_BYTES of results.
        position = 0
        while position < len(ordered):
            keys: dict[str, None] = {}  # (in order, a set's lookups)
            end = position
            while end < len(ordered) and (ordered[end][2] in keys or len(keys) < COMPACT_WINDOW):
                keys[ordered[end][2]] = None
                end += 1
            objects = dict(zip(keys, _readers.map(deps.blobs().get_bytes, keys), strict=True))
            for n, pointer, key in ordered[position:end]:
                results.write(objects[key][pointer.offset : pointer.offset + pointer.result_length])
                layout.add(n, pointer.result_length)
            position = end
        with blob_stream.ObjectWriter(
            deps.blobs().bucket, segment_key(prefix, block), "application/octet-stream"
        ) as out:
            out.write(layout.header())
            _copy(results, out.write)


def _copy(spool: IO[bytes], write: Callable[[bytes], None]) -> None:
    spool.seek(0)
    while chunk := spool.read(4 * 1024 * 1024):
        write(chunk)


def _deleting(tenant: str, execution_id: str) -> bool:
    try:
        return deps.stores().executions.get_record(tenant, execution_id).deleting
    except NotFound:
        return True


def after_end(tenant: str, run: ExecutionRecord | SweptRun, env: deps.Deps) -> None:
    """What follows a batch run's end for its outcomes, whatever ended it (its own complete or
    fail, a cancel, the reconciler, the sweeper: services/transitions.py ``after_finish``), once
    the end is written (started before, the job could find the run running and give up):

    1. its counters are **sealed** (adapters/batch_store.py ``seal``): a child still running — an
       Express child outlives its stopped parent, a timed-out run's children go on — records
       nothing after this, so what was recorded is all there will be; an end that kept final
       counts sealed them before counting (services/batch.py), and is not sealed again;
    2. ``compact_outcomes`` is started on the jobs machine, once (its execution is named by the
       run): every recorded item goes into the segments, exactly once.

    Repeatable (a repeated end, the sweeper's follow-up). Every batch run with an item list is
    sealed, its counters read or not (a seal is idempotent; an end written by the code before
    seals existed kept counts but sealed nothing); runs whose entries carry no ordinal (per-item
    records) have nothing to compact. A run being deleted is left alone: its delete job removes
    the counters, and a seal would write them again."""
    if isinstance(run, ExecutionRecord):
        record = run
    else:  # a row of the sweep index, which projects no item_index
        try:
            record = env.executions.get_record(tenant, run.id)
        except NotFound:
            return
    if record.deleting or not record.item_index:
        return
    env.batches.seal(tenant, record.id, record.children_expire_at)
    if not record.item_index.ordinals:
        return
    env.machines.start(
        get_settings().jobs_machine_arn,
        f"compact-{record.id}",
        {"kind": "compact_outcomes", "tenant": tenant, "execution_id": record.id},
    )


def compact_job(job: dict[str, Any], *, remaining_ms: int | None = None) -> dict[str, Any]:
    """The jobs machine's ``compact_outcomes``: the run's segments in order, a round at a time
    (``more``, as the delete job); once all are written the execution says so
    (``outcome_segments``) and reads move to them. A repeated round rewrites what it repeats.

    A run deleted meanwhile (``deleting``, set before the delete job lists the run's objects) stops
    it: each segment is written, then the run is read, and a segment written after the delete began
    is deleted again, so none outlives the run."""
    tenant, execution_id = str(job["tenant"]), str(job["execution_id"])
    deadline = (
        None if remaining_ms is None else time.monotonic() + remaining_ms / 1000 - COMPACT_MARGIN_SECONDS
    )
    try:
        record = deps.stores().executions.get_record(tenant, execution_id)
    except NotFound:
        return {"compacted": None}
    total = record.progress.total_items or 0
    blocks = math.ceil(total / SEGMENT_ITEMS)
    prefix = execution_prefix(tenant, execution_id)
    block = int(job.get("block") or 0)
    while block < blocks:
        _write_segment(tenant, execution_id, prefix, block)
        if _deleting(tenant, execution_id):
            deps.blobs().delete(segment_key(prefix, block))
            return {"compacted": None}
        block += 1
        if block < blocks and deadline is not None and time.monotonic() >= deadline:
            return {**job, "block": block, "more": True, "round": int(job.get("round") or 0) + 1}
    try:
        deps.stores().executions.update_execution(
            tenant,
            execution_id,
            {"outcome_segments": {"items": SEGMENT_ITEMS, "blocks": blocks}},
            only_if_status=TERMINAL,
        )
    except ConditionFailed:  # deleted meanwhile: an update must not create it again
        return {"compacted": None}
    return {"compacted": execution_id, "segments": blocks}
