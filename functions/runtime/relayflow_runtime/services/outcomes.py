"""A batch run's item outcomes: written once per child batch, read by pages and by item, compacted
into ranged segments — each as soon as all its items are recorded, the rest once the run ends (the
layout: domain/outcomes.py; docs/batch.md, Results).

* **Recording** (``record``): one S3 PUT of the child's object, then one transaction of the
  child's pointers and a counter ADD (adapters/batch_store.py ``record_pointers``: the first complete
  record of an item wins, a repeated child counts nothing twice), then its segments' tallies
  (``_tally``: the child that makes a segment whole starts ``compact_segment_job``). Per item of
  a ten-item child: 0.1 PUT, ≈0.5 write units, and its share of one compressed object.
* **One item** (``detail``), running or ended: its pointer (one GetItem of its record block), then
  one ranged GET of its two members in the child object.
* **A page** (``results``): the ordinals of a compacted segment (every segment once the run's
  compaction has ended, ``outcome_segments``; those compacted while it runs,
  ``compacted_segments``) are one ranged GET of their header slots and one of their results; the
  others are one Query of their pointer records, then one ranged GET per child object they point
  into (READ_THREADS at once, at most PAGE_OBJECT_READS: the page ends before the item that would
  pass it). A page of 1,000 items is a handful of requests whatever the values weigh; a page
  whose values are large ends early (READ_BYTES read), with a next token.
"""

from __future__ import annotations

import math
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, TypeVar

from aws_lambda_powertools import Logger

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
    Segments,
    StoredResult,
    child_object,
    header_range,
    header_slots,
    pack_nodes,
    result_of,
    segment_items,
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

logger = Logger(child=True)
_readers = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="outcome-read")
_Job = TypeVar("_Job")
_Read = TypeVar("_Read")


def child_object_key(prefix: str, tag: str) -> str:
    return f"{prefix}outcomes/c/{tag}"


def segment_key(prefix: str, block: int) -> str:
    return f"{prefix}outcomes/s/{block:06d}"


# ---- recording -------------------------------------------------------------------------------------
def record(
    run: RunRef,
    first: int,
    outcomes: list[tuple[int, ItemOutcome]],
    expires_at: int | None,
    total: int | None = None,
) -> list[str]:
    """Record a child batch's outcomes (``first``: the smallest ordinal of the child's entries,
    which names its object): the ids of the items this call recorded. With ``total`` (the run's
    items), a segment whose every ordinal is now recorded is compacted at once (:func:`_tally`)."""
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
    if recorded and total:
        _tally(run, recorded, total, expires_at)
    ids = {n: o.source_item_id for n, o in outcomes}
    return [ids[n] for n in recorded]


def _tally(run: RunRef, recorded: list[int], total: int, expires_at: int | None) -> None:
    """Count what a child recorded into its segments' tallies; a segment whose tally reaches its
    ordinals is compacted now, while the run runs (``compact_segment`` on the jobs machine), so
    pages of the finished part of a running run read segments, not each child's object. Only a
    hint, so never the child's failure: a tally lost (the call failed, or the child ended between
    its record and this) leaves its segment for the run's end; one too high starts a job that finds
    the segment not whole yet and leaves it, and every later child of that segment starts another
    (each named by its tally) until one finds it whole."""
    counts: dict[int, int] = {}
    for n in recorded:
        counts[segment_of(n)] = counts.get(segment_of(n), 0) + 1
    try:
        tallies = deps.stores().batches.tally_segments(run.tenant, run.execution_id, counts, expires_at)
    except Exception:  # a hint: the run's end compacts what this leaves
        logger.warning("segment tally not counted", exc_info=True, extra={"execution_id": run.execution_id})
        return
    for block, tally in tallies.items():
        if tally < segment_items(block, total):
            continue
        try:  # each on its own: a start refused (throttled) leaves only its segment to the end
            deps.machines().start(
                get_settings().jobs_machine_arn,
                f"segment-{run.execution_id}-{block}-{tally}",
                {
                    "kind": "compact_segment",
                    "tenant": run.tenant,
                    "execution_id": run.execution_id,
                    "block": block,
                },
            )
        except Exception:
            logger.warning(
                "segment compaction not started", exc_info=True, extra={"execution_id": run.execution_id}
            )


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
    compacted: Segments,
    budget: int = READ_BYTES,
    deadline: ReadDeadline | None = None,
) -> tuple[dict[int, StoredResult], int | None]:
    """The result members of the recorded ones among ``ordinals`` (sorted, consecutive in the
    list), and the last ordinal read when the stored bytes passed ``budget`` or the objects left
    when ``deadline`` passed are the page's next (None: all read). The ordinals of a compacted
    segment are read from it (its header slots, then its results), the others from their child
    objects (their pointers, then a ranged GET per object)."""
    if not ordinals:
        return {}, None
    prefix = execution_prefix(tenant, execution_id)
    low, high = ordinals[0], ordinals[-1]
    if deadline is not None and deadline.stops(first=True):
        return {}, low - 1
    spans = [
        (block, max(low, block * SEGMENT_ITEMS), min(high, (block + 1) * SEGMENT_ITEMS - 1))
        for block in range(segment_of(low), segment_of(high) + 1)
    ]
    # Where each recorded ordinal's result is: (object key, offset, length), in ordinal order.
    places: dict[int, tuple[str, int, int]] = {}
    cut: int | None = None
    segmented = [span for span in spans if compacted.hold(span[0])]
    headers = started_in_time(lambda span: _segment_slots(prefix, *span), segmented, deadline)
    if len(headers) < len(segmented):  # the deadline passed: the page ends with the headers read
        cut = segmented[len(headers)][1] - 1
    for (block, _, _), slots in zip(segmented, headers, strict=False):
        places.update({n: (segment_key(prefix, block), *slot) for n, slot in slots.items()})
    loose = [span for span in spans if not compacted.hold(span[0]) and (cut is None or span[1] <= cut)]
    if loose:  # child objects: one Query from the first to the last (a page spans ≤ 2 segments)
        pointers = deps.stores().batches.pointers(tenant, execution_id, loose[0][1], loose[-1][2])
        tags: set[str] = set()
        for n, pointer in sorted(pointers.items()):
            if compacted.hold(segment_of(n)):
                continue
            if pointer.tag not in tags and len(tags) == PAGE_OBJECT_READS:
                cut = n - 1 if cut is None else min(cut, n - 1)
                break
            tags.add(pointer.tag)
            places[n] = (child_object_key(prefix, pointer.tag), pointer.offset, pointer.result_length)
    ordered = sorted((n, place) for n, place in places.items() if cut is None or n <= cut)
    within = _within(((n, place[2]) for n, place in ordered), budget)
    if within is not None:
        cut = within if cut is None else min(cut, within)
        ordered = [(n, place) for n, place in ordered if n <= within]
    groups: dict[str, list[tuple[int, int, int]]] = {}  # by object, in the order of their first
    for n, (key, offset, length) in ordered:
        groups.setdefault(key, []).append((n, offset, length))
    reads = [
        (key, min(m[1] for m in members), max(m[1] + m[2] for m in members) - 1, members)
        for key, members in groups.items()
    ]

    def read(job: tuple[str, int, int, list[tuple[int, int, int]]]) -> dict[int, StoredResult]:
        key, first, last, members = job
        data = deps.blobs().get_range(key, first, last)
        return {n: unmember(data[offset - first : offset - first + length]) for n, offset, length in members}

    found: dict[int, StoredResult] = {}
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


# ---- compaction (the jobs machine: each segment once whole, the rest once the run has ended) ------
def _segment_pointers(tenant: str, execution_id: str, block: int) -> dict[int, Pointer]:
    low = block * SEGMENT_ITEMS
    return deps.stores().batches.pointers(tenant, execution_id, low, low + SEGMENT_ITEMS - 1, consistent=True)


def _write_segment(prefix: str, block: int, pointers: dict[int, Pointer]) -> None:
    """Segment ``block``: the result of every recorded item of its ordinals (``pointers``), copied
    from the child objects (no member is decoded), behind the header of their places."""
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
    (``more``, as the delete job), but those compacted while it ran (``compacted_segments``: whole
    then, nothing could change them since); once all are written the execution says so
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
    done = set(record.compacted_segments or ())
    prefix = execution_prefix(tenant, execution_id)
    block = int(job.get("block") or 0)
    while block < blocks:
        if block not in done:
            _write_segment(prefix, block, _segment_pointers(tenant, execution_id, block))
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


def compact_segment_job(job: dict[str, Any]) -> dict[str, Any]:
    """The jobs machine's ``compact_segment``, started by the child whose record made a segment's
    tally whole (:func:`_tally`) while the run runs: the segment is written once the pointers show
    every one of its ordinals recorded (a pointer is never changed or removed, so a whole segment
    is final), then the execution lists it (``compacted_segments``) and pages read it. A segment not
    whole yet (a tally counted twice), one compacted already, a run that has ended (its own
    compaction writes every segment) or is being deleted: nothing is written. Repeatable: a repeat
    writes the same bytes."""
    tenant, execution_id, block = str(job["tenant"]), str(job["execution_id"]), int(job["block"])
    try:
        record = deps.stores().executions.get_record(tenant, execution_id)
    except NotFound:
        return {"compacted": None}
    total = record.progress.total_items or 0
    if record.deleting or record.outcome_segments or block in (record.compacted_segments or ()):
        return {"compacted": None}
    pointers = _segment_pointers(tenant, execution_id, block)
    missing = segment_items(block, total) - len(pointers)
    if not segment_items(block, total) or missing > 0:
        return {"compacted": None, "missing": missing}
    prefix = execution_prefix(tenant, execution_id)
    _write_segment(prefix, block, pointers)
    try:  # after the write, conditional on the run's not being deleted: as compact_job's check
        deps.stores().executions.add_compacted_segment(tenant, execution_id, block)
    except ConditionFailed:  # being deleted: its delete job may have listed the objects already
        deps.blobs().delete(segment_key(prefix, block))
        return {"compacted": None}
    return {"compacted": execution_id, "segment": block}
