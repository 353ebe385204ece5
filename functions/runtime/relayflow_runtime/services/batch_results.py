"""Reading a batch run: progress, pages of results, one item, whole-result downloads.

* **Progress** while the run runs: the 16 counter shards (one BatchGetItem); once it has ended, the
  final counts its ``complete`` kept in the execution.
* **Results** in list order, each kept item exactly once: a page is one ranged read of the run's
  item list from the cursor's byte offset and the page's outcomes (services/outcomes.py: once the
  run is compacted two ranged GETs of a segment, while it runs one Query and a GET per child
  object); an item without an outcome is ``pending`` — or, once the run is over, ``failed``: it
  never ran. A page ends early, with a next token, once its values pass READ_BYTES stored or
  ANSWER_BYTES answered (domain/outcomes.py), and at its deadline (PAGE_SECONDS: it starts no
  read after it but those that move it on), so no ``limit``, filter or value size meets API
  Gateway's 30 s or Lambda's 6 MB; ``stopped_by`` says why a page came short.
* **One item** in O(1): the index of the list (services/item_lists.py: two ranged GETs), its line
  (one), its outcome (its pointer, one GetItem, and one ranged GET of the child's object).
* Runs whose list entries carry no ordinal (prepared before child records) keep per-item records,
  read as before (one BatchGetItem per 100 items, an S3 GET per large value).
* **Downloads** (``format=jsonl|csv``): a result set up to ``max_inline_download_bytes`` is the
  answer's body. A larger one of a finished run is written to S3 by the jobs machine (the answer is
  ``202`` while it is prepared) and then answered with a presigned URL (``303``), which the client
  follows; where no presigned URL can be offered (the local stack) it is ``413
  results_too_large`` and the client pages through the results API instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from relayflow_runtime.adapters import aws
from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.batch import ItemEntry, StoredOutcome
from relayflow_runtime.domain.clock import Clock, ReadDeadline, now_iso, parse_iso
from relayflow_runtime.domain.execution_record import ExecutionRecord, ResultExportItem
from relayflow_runtime.domain.outcomes import (
    ANSWER_BYTES,
    NO_SEGMENTS,
    READ_BYTES,
    Segments,
    StoredResult,
    unpack_nodes,
)
from relayflow_runtime.domain.status import TERMINAL
from relayflow_runtime.errors import NotFound, TooLarge
from relayflow_runtime.schemas.dataset_api import format_rows, result_row
from relayflow_runtime.schemas.entities import (
    BatchItemResult,
    BatchItemStatus,
    Execution,
    ExecutionResults,
    NodeExecution,
    TokenUsage,
)
from relayflow_runtime.schemas.responses import BatchItemDetail, BatchItemResultPage, PageStoppedBy
from relayflow_runtime.services import dataset_service, deps, item_lists, outcomes, run_records
from relayflow_runtime.services.downloads import URL_SECONDS, Download, presigned_urls_enabled
from relayflow_runtime.services.values import REF_KEY, is_ref, unpack
from relayflow_runtime.settings import get_settings

#: Items in ``execution.results["items"]`` of a finished run (the rest: the results API).
RESULTS_IN_EXECUTION = 100
#: Above this many items a download of a finished run goes straight to an export (no inline try).
INLINE_TRY_ITEMS = 5_000
#: An export not ready after this long is started again (its job died).
EXPORT_STALE_SECONDS = 20 * 60
USAGE_COUNTERS = ("input_tokens", "output_tokens", "estimated_cost_nanos")


# ---- progress --------------------------------------------------------------------------------------
def _finished(execution: Execution) -> bool:
    return execution.status in ("completed", "failed") and execution.progress.processed_items is not None


def compacted(record: ExecutionRecord) -> Segments:
    """Which of a run's segments its outcomes are read from (services/outcomes.py): all once its
    compaction has ended, else those compacted while it runs."""
    return Segments(bool(record.outcome_segments), frozenset(record.compacted_segments or ()))


def fill_progress(
    tenant: str,
    execution: Execution,
    *,
    with_results: bool = False,
    compacted: Segments = NO_SEGMENTS,
    store: deps.BatchCounters | None = None,
) -> None:
    """Live counts from the counter shards (``store``: the configured one by default), or the
    final counts a finished run keeps; a finished run's first page of results when asked."""
    if not _finished(execution):
        counters = (store or deps.stores().batches).counters(tenant, execution.id)
        execution.progress.processed_items = counters["processed_items"]
        execution.progress.failed_items = counters["failed_items"]
        if counters.get("input_tokens") or counters.get("output_tokens"):
            usage = {k: counters[k] for k in USAGE_COUNTERS if counters.get(k)}
            execution.usage = TokenUsage.model_validate(run_records.usage_of(usage))
    if with_results and execution.status in TERMINAL:
        page = results_page(tenant, execution, RESULTS_IN_EXECUTION, None, compacted=compacted)
        execution.results = ExecutionResults(
            items=page.items, next_token=page.next_token, total_items=execution.progress.total_items
        )


# ---- results ---------------------------------------------------------------------------------------
#: What pages, items and downloads read of a run, as the API's Execution (services/execution_view.py
#: maps the whole record for the answers that carry an execution, with the live counters).
_READ_FIELDS = frozenset(
    {"id", "workflow_id", "version_id", "number", "status", "input_mode", "batch_config", "created_at"}
    | {"started_at", "completed_at", "progress", "error"}
)


def batch_record(tenant: str, workflow_id: str, execution_id: str) -> tuple[Execution, ExecutionRecord]:
    """The batch run (404 for a single run), as pages read it and as stored."""
    record = run_records.get_run_record(tenant, workflow_id, execution_id)
    if record.input_mode != "batch":
        raise NotFound("this execution is not a batch run: it has no item results.", code="not_a_batch")
    return Execution.model_validate(record.model_dump(include=set(_READ_FIELDS))), record


def _input_of(item: dict[str, Any], field: str) -> str | None:
    try:
        return datasets.input_text(item, field)
    except datasets.InputFieldError:
        return None


def _result(
    execution: Execution, entry_id: str, item: dict[str, Any], result: StoredResult | None
) -> BatchItemResult:
    """An item's answer from its result (domain/outcomes.py result_of: the last node's output
    packed), or None when it has no outcome."""
    field = execution.batch_config.input_field if execution.batch_config else "text"
    text = _input_of(item, field)
    if result is None:
        if execution.status in ("completed", "failed"):
            return BatchItemResult(
                source_item_id=entry_id,
                status="failed",
                input=text,
                error="the item never ran (no outcome was recorded)",
            )
        return BatchItemResult(source_item_id=entry_id, input=text)
    # The last node's text and, for a JSON node, its parsed value (see entities.with_text_output).
    texts = {"output": unpack(result.get("output")), "parsed_output": unpack(result.get("parsed_output"))}
    return BatchItemResult.model_validate({**result, "source_item_id": entry_id, "input": text, **texts})


def _legacy_result(outcome: StoredOutcome) -> StoredResult:
    """A per-item record (runs prepared before child records) in the shape of a result."""
    node = (outcome.get("nodes") or {}).get(outcome.get("output_node") or "") or {}
    return StoredResult(
        status=outcome["status"],
        error=outcome.get("error"),
        failed_node_id=outcome.get("failed_node_id"),
        duration_ms=outcome.get("duration_ms"),
        completed_at=outcome.get("completed_at"),
        output=node.get("output"),
        parsed_output=node.get("parsed_output"),
    )


def _answer_size(result: BatchItemResult) -> int:
    return len(result.output) + len(json.dumps(result.input)) + len(result.error or "")


#: Items a page filtered by status reads through at most: a page of a rare status can be short (or
#: empty) with a ``next_token`` to read on from where it stopped, like a DynamoDB filtered query.
FILTER_SCAN_ITEMS = 1_000
#: A page starts no read this long after it began (API Gateway answers 504 at 30 s, whatever the
#: function still does): it answers the items it has, with a next token from the first one it did
#: not read. The reads its first item needs are always made, so every page holds an item or moves
#: its cursor on.
#: What an invocation keeps after a page's last read starts: that read, even when its connection
#: hangs until the SDK gives it up (adapters/aws.py), and the answer.
PAGE_MARGIN_SECONDS = aws.DATA_READ_TIMEOUT_SECONDS + 3.0
#: API Gateway's limit (HTTP API: 30 s) less that margin.
PAGE_SECONDS = 30.0 - PAGE_MARGIN_SECONDS


def page_deadline(remaining_ms: int | None = None, clock: Clock = time.monotonic) -> ReadDeadline:
    """A results page's deadline: PAGE_SECONDS from now, sooner when the invocation has less left
    (``remaining_ms``: the Lambda context's) than that and PAGE_MARGIN_SECONDS."""
    seconds = PAGE_SECONDS
    if remaining_ms is not None:
        seconds = min(seconds, remaining_ms / 1000 - PAGE_MARGIN_SECONDS)
    return ReadDeadline.after(seconds, clock)


def results_page(
    tenant: str,
    execution: Execution,
    limit: int,
    next_token: str | None,
    status: BatchItemStatus | None = None,
    *,
    compacted: Segments = NO_SEGMENTS,
    read_bytes: int = READ_BYTES,
    answer_bytes: int = ANSWER_BYTES,
    deadline: ReadDeadline | None = None,
) -> BatchItemResultPage:
    """Items in list order, each exactly once; the cursor is a byte offset in the run's list. The
    page ends before ``limit`` once its outcomes pass ``read_bytes`` stored or its answer
    ``answer_bytes``, or at ``deadline`` (:func:`page_deadline` by default), with at least one
    item: the next token goes on from there. With ``status``, only the items in that status,
    reading at most ``FILTER_SCAN_ITEMS`` of the list and no further window once ``deadline``
    passed (the token goes on from the first entry not read)."""
    deadline = deadline or page_deadline()
    if status is None:
        rows, token, _ = _read_page(
            tenant, execution, limit, next_token, compacted, read_bytes, answer_bytes, deadline
        )
        short = token is not None and len(rows) < limit
        return BatchItemResultPage(
            items=[result for _, result in rows],
            next_token=token,
            stopped_by=("seconds" if deadline.stopped else "size") if short else None,
        )
    kept: list[BatchItemResult] = []
    size, scanned, token = 0, 0, next_token
    budget = max(limit, FILTER_SCAN_ITEMS)
    while scanned < budget and len(kept) < limit:
        if deadline.stops(first=True):
            break
        want = min(max(limit, 100), budget - scanned)
        rows, after, read = _read_page(
            tenant, execution, want, token, compacted, read_bytes, answer_bytes, deadline, status=status
        )
        for start, result in rows:
            if len(kept) == limit:  # full: the next page starts here
                return BatchItemResultPage(items=kept, next_token=dataset_service.encode_offset(start))
            if result.status != status:
                continue
            size += _answer_size(result)
            if size > answer_bytes and kept:
                cursor = dataset_service.encode_offset(start)
                return BatchItemResultPage(items=kept, next_token=cursor, stopped_by="size")
            kept.append(result)
        scanned += read
        deadline.moved_on = deadline.moved_on or read > 0
        if after is None:
            return BatchItemResultPage(items=kept, next_token=None)
        token = after
    short = len(kept) < limit
    stopped_by: PageStoppedBy = "seconds" if deadline.stopped else "scan"
    return BatchItemResultPage(items=kept, next_token=token, stopped_by=stopped_by if short else None)


def _read_page(
    tenant: str,
    execution: Execution,
    limit: int,
    next_token: str | None,
    compacted: Segments,
    read_bytes: int,
    answer_bytes: int,
    deadline: ReadDeadline | None,
    status: BatchItemStatus | None = None,
) -> tuple[list[tuple[int, BatchItemResult]], str | None, int]:
    """A page of every item (with ``status``: of those in it), each with its cursor (see
    :func:`results_page`), and how many entries of the list it read."""
    offset = dataset_service.decode_offset(next_token)
    page: list[tuple[int, ItemEntry]] = []
    token: str | None = None
    prefix = run_records.execution_prefix(tenant, execution.id)

    try:
        for start, entry in item_lists.entries(item_lists.list_key(prefix), offset):
            if len(page) == limit:
                token = dataset_service.encode_offset(start)
                break
            page.append((start, entry))
    except NotFound:  # the list is not written yet (the run is being prepared)
        return [], None, 0
    answer, rest = entry_results(
        tenant,
        execution,
        page,
        compacted,
        read_bytes=read_bytes,
        answer_bytes=answer_bytes,
        status=status,
        deadline=deadline,
    )
    if rest:
        token = dataset_service.encode_offset(rest[0][0])
    return answer, token, len(page) - len(rest)


def entry_results(
    tenant: str,
    execution: Execution,
    page: list[tuple[int, ItemEntry]],
    compacted: Segments,
    *,
    read_bytes: int,
    answer_bytes: int,
    status: BatchItemStatus | None = None,
    deadline: ReadDeadline | None = None,
) -> tuple[list[tuple[int, BatchItemResult]], list[tuple[int, ItemEntry]]]:
    """The results of ``page`` (consecutive entries of the run's list, with their offsets) from the
    front, and the entries left once the stored bytes pass ``read_bytes``, the answer
    ``answer_bytes``, the page's reads of values stored apart PAGE_VALUE_READS or ``deadline``
    passed before a read (at least one entry is read, and answered unless ``status`` passes it
    over). With ``status``, only those in it are answered (the others are passed over without
    reading their values)."""
    found: dict[str, StoredResult]
    if all(entry.n is not None for _, entry in page):
        ordinals = [int(entry.n or 0) for _, entry in page]
        by_ordinal, cut = outcomes.results(tenant, execution.id, ordinals, compacted, read_bytes, deadline)
        rest: list[tuple[int, ItemEntry]] = []
        if cut is not None:
            kept = [(start, entry) for start, entry in page if int(entry.n or 0) <= cut]
            page, rest = kept, page[len(kept) :]
        found = {entry.id: by_ordinal[int(entry.n or 0)] for _, entry in page if entry.n in by_ordinal}
    else:
        rest = []
        legacy = deps.stores().batches.outcomes(tenant, execution.id, [entry.id for _, entry in page])
        found = {item_id: _legacy_result(outcome) for item_id, outcome in legacy.items()}
    rows = [(start, entry, found.get(entry.id)) for start, entry in page]
    if status is not None:
        rows = [row for row in rows if _status_of(execution, row[2]) == status]
    covered, values = _values(rows, answer_bytes, deadline)
    if covered < len(rows):
        rest = [(start, entry) for start, entry, _ in rows[covered:]] + rest
        rows = rows[:covered]
    answer: list[tuple[int, BatchItemResult]] = []
    size = 0
    for index, (start, entry, stored) in enumerate(rows):
        item = values[entry.ref] if entry.ref is not None else item_lists.item_of(entry)
        result = _result(execution, entry.id, item, _with_values(stored, values))
        size += _answer_size(result)
        if size > answer_bytes and answer:
            return answer, [(s, e) for s, e, _ in rows[index:]] + rest
        answer.append((start, result))
    return answer, rest


def _status_of(execution: Execution, stored: StoredResult | None) -> BatchItemStatus:
    """An item's status as its answer will say (see :func:`_result`), without reading its values."""
    if stored is None:
        return "failed" if execution.status in ("completed", "failed") else "pending"
    return "failed" if stored.get("status") == "failed" else "completed"


#: Objects a page reads besides its list and outcomes at most — values over the batch inline limit
#: (BATCH_VALUE_LIMIT: an S3 object each) and items stored apart (over 64 KiB) — READ_THREADS at a
#: time, in order, and no more once their bytes pass the answer's: a page ends before the item
#: that would pass it. With READ_THREADS 16, a page waits for 3 rounds of reads at most.
PAGE_VALUE_READS = 48
_value_readers = ThreadPoolExecutor(outcomes.READ_THREADS, thread_name_prefix="outcome-read-values")


def _refs(entry: ItemEntry, stored: StoredResult | None) -> list[str]:
    """The objects an item's answer reads: its item stored apart, its values stored apart."""
    keys = [entry.ref] if entry.ref is not None else []
    if stored is not None:
        values = (stored.get("output"), stored.get("parsed_output"))
        keys += [value[REF_KEY] for value in values if is_ref(value)]
    return keys


def _values(
    rows: list[tuple[int, ItemEntry, StoredResult | None]],
    answer_bytes: int,
    deadline: ReadDeadline | None = None,
) -> tuple[int, dict[str, Any]]:
    """The values stored apart of the first rows, read READ_THREADS at a time (a row's in one
    wave): how many rows have theirs — all, or as many as PAGE_VALUE_READS reads, the answer's
    bytes and ``deadline`` (checked before each wave) allow, the first always unless the page has
    moved on already — and the values by key."""
    wanted = [(index, keys) for index, (_, e, s) in enumerate(rows) if (keys := _refs(e, s))]
    values: dict[str, Any] = {}
    size = reads = position = 0
    while position < len(wanted):
        row, keys = wanted[position]
        full = reads + len(keys) > PAGE_VALUE_READS or size > answer_bytes
        if (row and full) or (deadline is not None and deadline.stops(first=not row)):
            return row, values
        wave: list[str] = []
        while position < len(wanted) and len(wave) + len(wanted[position][1]) <= min(
            outcomes.READ_THREADS, PAGE_VALUE_READS - reads
        ):
            wave += wanted[position][1]
            position += 1
        for key, data in _read_objects(wave).items():
            values[key] = json.loads(data)
            size += len(data)
        reads += len(wave)
    return len(rows), values


def _read_objects(keys: list[str]) -> dict[str, bytes]:
    """The bytes of these objects, read at once on the reader threads (READ_THREADS at a time)."""
    return dict(zip(keys, _value_readers.map(deps.blobs().get_bytes, keys), strict=True))


def _resolved(value: Any, values: dict[str, Any]) -> Any:
    """A packed value with its object read (services/values.py), from ``values`` by key."""
    return values[value[REF_KEY]] if is_ref(value) else value


def _with_values(stored: StoredResult | None, values: dict[str, Any]) -> StoredResult | None:
    if stored is None:
        return None
    resolved = stored.copy()
    resolved["output"] = _resolved(stored.get("output"), values)
    resolved["parsed_output"] = _resolved(stored.get("parsed_output"), values)
    return resolved


def get_results(
    tenant: str,
    workflow_id: str,
    execution_id: str,
    limit: int,
    next_token: str | None,
    status: BatchItemStatus | None = None,
    *,
    remaining_ms: int | None = None,
    clock: Clock = time.monotonic,
) -> BatchItemResultPage:
    """A page of the run's results (:func:`results_page`), ending by :func:`page_deadline` from
    now (``remaining_ms``: what the invocation has left, when known)."""
    deadline = page_deadline(remaining_ms, clock)
    execution, record = batch_record(tenant, workflow_id, execution_id)
    return results_page(
        tenant, execution, limit, next_token, status, compacted=compacted(record), deadline=deadline
    )


class OutOfTime(Exception):
    """The results could not all be read by the instant :func:`iter_results` was given."""


def iter_results(
    tenant: str,
    execution: Execution,
    page_size: int = 500,
    *,
    compacted: Segments = NO_SEGMENTS,
    until: float | None = None,
    clock: Clock = time.monotonic,
) -> Iterator[BatchItemResult]:
    """Every item result in list order, page after page. With ``until`` (a ``clock`` instant),
    every page shares that deadline, and :class:`OutOfTime` is raised when one stops for it (one
    API answer reads them all: its pages may not each take a deadline of their own)."""
    token: str | None = None
    while True:
        if until is not None and token is not None and clock() >= until:
            raise OutOfTime(f"the results were read up to {token} by the deadline")
        deadline = ReadDeadline(until, clock) if until is not None else None
        page = results_page(tenant, execution, page_size, token, compacted=compacted, deadline=deadline)
        yield from page.items
        if not (token := page.next_token):
            return
        if deadline is not None and deadline.stopped:
            raise OutOfTime(f"the results were read up to {token} by the deadline")


# ---- one item --------------------------------------------------------------------------------------
def get_item(tenant: str, workflow_id: str, execution_id: str, source_item_id: str) -> BatchItemDetail:
    """One item of a batch run: its result and the record of every node of it that ran. Its
    values stored apart (a prompt or an output over BATCH_VALUE_LIMIT, the item over 64 KiB) are
    read at once on the reader threads: at most 3 per node and 3 more, READ_THREADS at a time."""
    execution, record = batch_record(tenant, workflow_id, execution_id)
    entry = None
    if record.item_index is not None:
        entry = item_lists.find(
            run_records.execution_prefix(tenant, execution_id), record.item_index.buckets, source_item_id
        )
    if entry is None:
        raise NotFound(f"item '{source_item_id}' is not an item of this run.", code="item_not_found")
    result: StoredResult | None = None
    # The node records as the item's detail keeps them (packed values): validated into
    # NodeExecution below, once their values are read.
    records: dict[str, dict[str, Any]] = {}
    if entry.n is not None:
        found = outcomes.detail(tenant, execution_id, entry.n)
        if found is not None:
            result, records = found[0], unpack_nodes(found[1])
    elif (outcome := deps.stores().batches.outcome(tenant, execution_id, source_item_id)) is not None:
        result, records = _legacy_result(outcome), outcome.get("nodes") or {}
    fields = ("output", "parsed_output", "prompt")
    stored_apart = [
        value[REF_KEY] for node in records.values() for field in fields if is_ref(value := node.get(field))
    ]
    keys = list(dict.fromkeys(_refs(entry, result) + stored_apart))  # the item's output is its last node's
    values = {key: json.loads(data) for key, data in _read_objects(keys).items()}
    nodes: dict[str, NodeExecution] = {}
    for node in sorted(records.values(), key=lambda n: n.get("idx", 0)):
        data = {**node, **{field: _resolved(node.get(field), values) for field in fields}}
        data["usage"] = run_records.usage_of(node["usage"]) if node.get("usage") else None
        nodes[node["node_id"]] = NodeExecution.model_validate(data)
    item = values[entry.ref] if entry.ref is not None else item_lists.item_of(entry)
    answer = _result(execution, entry.id, item, _with_values(result, values))
    return BatchItemDetail(**dict(answer), node_executions=nodes)


# ---- downloads -------------------------------------------------------------------------------------
def media_type(fmt: str) -> str:
    return "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"


def export_key(tenant: str, execution_id: str, fmt: str) -> str:
    return f"{run_records.execution_prefix(tenant, execution_id)}exports/results.{fmt}"


def _inline(
    tenant: str,
    execution: Execution,
    fmt: str,
    limit: int,
    compacted: Segments,
    clock: Clock = time.monotonic,
) -> bytes | None:
    """The whole result set as one file, or None once it passes ``limit`` bytes or cannot all be
    read within one answer's PAGE_SECONDS."""
    out = bytearray()
    until = clock() + PAGE_SECONDS
    results = iter_results(tenant, execution, compacted=compacted, until=until, clock=clock)
    rows = (result_row(r) for r in results)
    try:
        for chunk in format_rows(rows, fmt):
            out += chunk
            if len(out) > limit:
                return None
    except OutOfTime:
        return None
    return bytes(out)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the results are larger than the {limit // (1024 * 1024) or 1} MiB one answer can carry (or "
        f"take longer than its {PAGE_SECONDS:.0f} s to read); page "
        "through GET .../results, or use the client's download_execution_results(), which does.",
        code="results_too_large",
    )


def download_results(tenant: str, workflow_id: str, execution_id: str, fmt: str) -> Download:
    """The whole result set: the bytes when small, else a presigned URL of an export (``preparing``
    while the jobs machine writes it)."""
    execution, record = batch_record(tenant, workflow_id, execution_id)
    limit = get_settings().max_inline_download_bytes
    filename = f"results-{execution_id}.{fmt}"
    finished = execution.status in TERMINAL
    export = (record.exports or {}).get(fmt) or ResultExportItem()
    if finished and export.get("status") == "ready":
        url = deps.blobs().presigned_get(export_key(tenant, execution_id, fmt), URL_SECONDS, filename)
        return Download(url=url, filename=filename)
    large = (
        finished and presigned_urls_enabled() and int(execution.progress.total_items or 0) > INLINE_TRY_ITEMS
    )
    if not large:
        body = _inline(tenant, execution, fmt, limit, compacted(record))
        if body is not None:
            return Download(body=body, media_type=media_type(fmt), filename=filename)
    if not finished or not presigned_urls_enabled():
        raise _too_large(limit)
    if export.get("status") == "preparing" and _age_seconds(export.get("since")) < EXPORT_STALE_SECONDS:
        return Download(preparing=True)
    attempt = int(export.get("attempt") or 0) + 1
    exports = {
        **(record.exports or {}),
        fmt: ResultExportItem(status="preparing", since=now_iso(), attempt=attempt),
    }
    deps.stores().executions.update_execution(tenant, execution_id, {"exports": exports})
    deps.machines().start(
        get_settings().jobs_machine_arn,
        f"export-{execution_id}-{fmt}-{attempt}",
        {
            "kind": "export_results",
            "tenant": tenant,
            "workflow_id": workflow_id,
            "execution_id": execution_id,
            "format": fmt,
        },
    )
    return Download(preparing=True)


def _age_seconds(since: str | None) -> float:
    if not since:
        return float("inf")
    return (datetime.now(UTC) - parse_iso(since)).total_seconds()
