"""Reading a batch run's results at size (docs/batch.md, Results), measured side by side in one run:

* a results page of 1,000 items and a whole export, on outcomes with 6 KB outputs, counting every
  AWS request relayflow makes (botocore, all threads of this process) and the time;
* **after**: 100,000 items recorded as the node runner records them (services/outcomes.py: one S3
  object, one pointer transaction and one segment tally per child of 10), all but the last child:
  read while the run runs, from the start (the segments compacted while it runs, each by the job
  its last child started) and from the last segment (not whole yet: the child objects); then the
  last child, the run's end and its compaction (``compact_outcomes``: nothing left to write) and
  a page read again, then
  exported (``export_results``, the jobs machine's job) one read and one part at a time and
  concurrently, side by side: on the local stack as it is, then with S3's latency added to each
  request (the local stack answers from memory at once); and each one's peak memory
  (tracemalloc) at 10,000 and 100,000 items;
* **before**: the per-item records this replaced (one outcome per item in a transaction, each
  output over the 4 KB inline limit an S3 object of its own), still read by runs prepared before
  ordinals: a page of 1,000 and an export of BEFORE_ITEMS items (the same per-item requests at any
  size; 100,000 would take most of an hour here).

With ``RELAYFLOW_BENCH_EXPORT_ITEMS`` set (``make bench-million``: 1,000,000), also a run of that
many items recorded, ended, compacted and exported by the jobs machine's jobs in rounds, each handed
on to the next as the machine does, and the file read back: each item once, in order.

AWS is the embedded local stack (moto in this process, with the local stack's shims: its
transactions back up the items they touch, not the whole table). The requests counted are those of
this thread and of the reader threads it hands work to (``outcome-read``): relayflow's, none of
the stack's own watchers. The recording's requests and the bytes it writes are printed per item
too: the figures that cost a million items (bench/calls.py, docs/batch.md).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

Row = tuple[str, float | int, str]

ITEMS = 100_000
BEFORE_ITEMS = 5_000
PAGE = 1_000
ITEMS_PER_CHILD = 10
OUTPUT_BYTES = 6 * 1024
PROMPT_BYTES = 1536
WRITERS = 4  # children recording at once
RECORDING_SAMPLE = 1_000
TARGET = 0.02  # requests per item (issue 20)
_WORDS = "the quick brown fox jumps over the lazy dog while a model writes its answer "


class _Requests:
    """Every botocore request of this process while counting, by service.operation."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @contextmanager
    def counting(self) -> Iterator[collections.Counter[str]]:
        import botocore.client

        counts: collections.Counter[str] = collections.Counter()
        real = botocore.client.BaseClient._make_api_call
        me = threading.get_ident()

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            thread = threading.current_thread()
            if thread.ident == me or thread.name.startswith(("outcome-read", "bench-writer")):
                with self._lock:
                    counts[f"{client.meta.service_model.service_name}.{operation}"] += 1
            return real(client, operation, params)

        botocore.client.BaseClient._make_api_call = counted  # type: ignore[method-assign]
        try:
            yield counts
        finally:
            botocore.client.BaseClient._make_api_call = real  # type: ignore[method-assign]


def _text(size: int, seed: int) -> str:
    body = f"{seed} " + _WORDS * (size // len(_WORDS) + 1)
    return body[:size]


def _outcome(item_id: str, n: int) -> Any:
    from relayflow_runtime.domain.batch import ItemNodeRecord, ItemOutcome
    from relayflow_runtime.domain.clock import now_iso

    ended = now_iso()
    node = ItemNodeRecord(
        node_id="answer",
        name="answer",
        status="completed",
        attempts=1,
        duration_ms=900,
        prompt=_text(PROMPT_BYTES, n),
        output=_text(OUTPUT_BYTES, n),
        completed_at=ended,
        usage={"input_tokens": 400, "output_tokens": 1500},
    )
    return ItemOutcome(
        source_item_id=item_id,
        status="completed",
        output_node="answer",
        duration_ms=950,
        completed_at=ended,
        usage=node.usage,
        nodes={"answer": node},
    )


def _run(items: int, *, ordinals: bool) -> tuple[Any, Any]:
    """A running batch execution over ``items`` items: its record and its item list (with ordinals:
    as prepare_batch writes it now; without: as it did before)."""
    from relayflow_runtime.domain.clock import new_id, now_iso
    from relayflow_runtime.domain.engine import RunRef
    from relayflow_runtime.schemas.entities import BatchConfig, Execution, ExecutionProgress
    from relayflow_runtime.services import dataset_service, deps, item_lists, run_records
    from relayflow_runtime.services.apikeys import DEFAULT_TENANT as TENANT

    execution_id = new_id()
    prefix = run_records.execution_prefix(TENANT, execution_id)
    writer: Any = (
        item_lists.IndexedListWriter(prefix, items)
        if ordinals
        else dataset_service.ItemListWriter(item_lists.list_key(prefix))
    )
    for i in range(items):
        writer.add({"id": f"x{i:06d}", "item": {"text": f"question {i}"}})
    writer.close()
    execution = Execution(
        id=execution_id,
        workflow_id="bench",
        version_id="bench",
        status="running",
        input_mode="batch",
        batch_config=BatchConfig(dataset_id="d", dataset_version_id="v", input_field="text"),
        created_at=now_iso(),
        progress=ExecutionProgress(total_nodes=1, total_items=items),
    )
    record = execution.model_dump(mode="json", exclude={"node_executions"})
    if ordinals:
        record["item_index"] = {"buckets": writer.buckets, "ordinals": True}
    deps.stores().executions.put_execution(TENANT, record)
    return RunRef(tenant=TENANT, workflow_id="bench", execution_id=execution_id), execution


def _record_all(run: Any, items: int, *, ordinals: bool, total: int | None = None, start: int = 0) -> None:
    """Items ``start`` to ``items`` recorded, child by child (WRITERS children at once), as the node
    runner does (of ``total``, the run's items: each segment whole is compacted as the run runs)."""
    from relayflow_runtime.services import deps, outcomes
    from relayflow_runtime.services.values import pack

    def child(first: int) -> None:
        batch = [(n, _outcome(f"x{n:06d}", n)) for n in range(first, min(first + ITEMS_PER_CHILD, items))]
        if ordinals:
            outcomes.record(run, first, batch, None, total or items)
            return
        for n, outcome in batch:  # before: values over the 4 KB inline limit stood in S3 apart
            node = outcome.nodes["answer"]
            base = f"executions/bench/{run.execution_id}/items/{n}/answer/"
            node.prompt = pack(node.prompt, base + "prompt.json", 4096)
            node.output = pack(node.output, base + "output.json", 4096)
        deps.stores().batches.record_outcomes(run.tenant, run.execution_id, [o for _, o in batch])

    with ThreadPoolExecutor(WRITERS, thread_name_prefix="bench-writer") as pool:
        list(pool.map(child, range(start, items, ITEMS_PER_CHILD)))


def _ended(run: Any, execution: Any) -> Any:
    from relayflow_runtime.services import deps

    deps.stores().executions.update_execution(run.tenant, run.execution_id, {"status": "completed"})
    execution.status = "completed"
    return execution


def _measured(requests: _Requests, step: Callable[[], Any]) -> tuple[float, int, Any]:
    with requests.counting() as counts:
        started = time.monotonic()
        result = step()
        elapsed = time.monotonic() - started
    return elapsed, sum(counts.values()), result


def _page(run: Any, execution: Any, first: int = 0) -> Callable[[], int]:
    """PAGE results from ordinal ``first`` through the results API with ``limit`` PAGE, the run's
    segments read as its record lists them: pages end early past 4 MiB of answer (a Lambda answer
    carries 6 MB; 1,000 outputs of 6 KB do not fit one), so this is as many pages as that takes
    (their number is returned)."""
    from relayflow_runtime.services import batch_results, dataset_service, deps, item_lists, run_records

    prefix = run_records.execution_prefix(run.tenant, run.execution_id)
    start = next(
        (offset for offset, entry in item_lists.entries(item_lists.list_key(prefix)) if entry.n == first), 0
    )

    def read() -> int:
        token, seen, pages = dataset_service.encode_offset(start) if start else None, 0, 0
        while seen < PAGE:
            record = deps.stores().executions.get_record(run.tenant, run.execution_id)
            compacted = batch_results.compacted(record)
            page = batch_results.results_page(run.tenant, execution, PAGE - seen, token, compacted=compacted)
            items, token = page.items, page.next_token
            assert items and all(item.status == "completed" for item in items), items[-1:]
            seen, pages = seen + len(items), pages + 1
        return pages

    return read


def _export(
    run: Any, items: int, concurrent: bool = True, remaining_ms: int = 900_000
) -> Callable[[], tuple[int, int]]:
    """The jobs machine's export_results, round after round as the machine runs it (each round's
    Lambda has ``remaining_ms`` left, 900 s by default: a round stops 60 s before), until the file is
    written: concurrent inside a round, or one read and one part at a time. Its size and rounds."""
    from relayflow_runtime.services import results_export

    def export() -> tuple[int, int]:
        job: dict[str, Any] = {
            "tenant": run.tenant,
            "workflow_id": "bench",
            "execution_id": run.execution_id,
            "format": "jsonl",
        }
        rounds = 1
        while (
            answer := results_export.export_results_job(job, remaining_ms=remaining_ms, concurrent=concurrent)
        ).get("more"):
            job, rounds = answer, rounds + 1
        assert answer["size"] > items * OUTPUT_BYTES, answer
        return int(answer["size"]), rounds

    return export


def _item_bytes(item: dict[str, Any]) -> int:
    """A DynamoDB item's billed size: attribute names and values (strings and numbers as text)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        kind, inner = next(iter(value.items()))
        size += len(str(inner).encode()) if kind in ("S", "N") else len(str(inner))
    return size


def _recording(requests: _Requests, run: Any) -> list[Row]:
    """What recording costs per item, counted on RECORDING_SAMPLE items of a fresh run: requests,
    the pointer record's billed size (its write units), the bytes stored in S3."""
    from relayflow_runtime.adapters import aws
    from relayflow_runtime.services import deps, outcomes, run_records
    from relayflow_runtime.settings import get_settings

    with requests.counting() as counts:
        _record_all(run, RECORDING_SAMPLE, ordinals=True)
    key = deps.stores().batches.pointer_key(run.tenant, run.execution_id, 0)
    block = aws.client("dynamodb").get_item(
        TableName=get_settings().table_name, Key={k: {"S": v} for k, v in key.items()}
    )["Item"]
    prefix = outcomes.child_object_key(run_records.execution_prefix(run.tenant, run.execution_id), "")
    stored = sum(
        obj["Size"]
        for page in aws.client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=get_settings().bucket_name, Prefix=prefix)
        for obj in page.get("Contents", [])
    )
    record_bytes = _item_bytes(block)
    # A transactional write bills 2 WRU per started KB of each item: the record, and the counter
    # shard's ADD (under 1 KB), once per child; then the segment's tally, 1 WRU (not transactional).
    wru = (2 * -(-record_bytes // 1024) + 2 + 1) / ITEMS_PER_CHILD
    per = RECORDING_SAMPLE
    return [
        ("recording, per item: S3 PUT (one object per child)", counts["s3.PutObject"] / per, "requests"),
        (
            "recording, per item: TransactWriteItems (pointers + counter ADD)",
            counts["dynamodb.TransactWriteItems"] / per,
            "requests",
        ),
        (
            "recording, per item: UpdateItem (its segment's tally)",
            counts["dynamodb.UpdateItem"] / per,
            "requests",
        ),
        ("recording, per item: every request", sum(counts.values()) / per, "requests"),
        (f"recording: a pointer record of {ITEMS_PER_CHILD} items", record_bytes, "bytes"),
        ("recording, per item: DynamoDB write units (2 per KB per item in a transaction)", wru, "WRU"),
        ("recording, per item: stored in S3 (its share of a compressed child object)", stored / per, "bytes"),
    ]


def run() -> list[Row]:
    from relayflow_runtime.domain.outcomes import SEGMENT_ITEMS
    from relayflow_runtime.services import outcomes

    requests = _Requests()
    rows: list[Row] = []
    from relayflow.local.stack import LocalStack

    with LocalStack():
        # ---- before: per-item records, a GET per value over the inline limit ----
        old_run, old_execution = _run(BEFORE_ITEMS, ordinals=False)
        _record_all(old_run, BEFORE_ITEMS, ordinals=False)
        _ended(old_run, old_execution)
        seconds, count, pages = _measured(requests, _page(old_run, old_execution))
        rows += [
            (f"before: {PAGE:,} results ({pages} pages of limit {PAGE:,}), requests", count, ""),
            (f"before: {PAGE:,} results, requests per item", count / PAGE, ""),
            (f"before: {PAGE:,} results, time", seconds, "s"),
        ]
        seconds, count, _ = _measured(requests, _export(old_run, BEFORE_ITEMS, concurrent=False))
        rows += [
            (f"before: export of {BEFORE_ITEMS:,} items, requests per item", count / BEFORE_ITEMS, ""),
            (f"before: export of {BEFORE_ITEMS:,} items, time", seconds, "s"),
            (
                "before: export, items per second (a GET per value, 16 at once)",
                BEFORE_ITEMS / seconds,
                "items/s",
            ),
        ]
        # ---- after: per-child objects and pointers, segments compacted as the run runs ----
        # Every item but the last child's: each segment but the last is whole, and compacted by a
        # job its last child starts; the last is still read from its child objects.
        new_run, new_execution = _run(ITEMS, ordinals=True)
        started = time.monotonic()
        _record_all(new_run, ITEMS - ITEMS_PER_CHILD, ordinals=True, total=ITEMS)
        rows.append(
            (
                f"after: recording {ITEMS - ITEMS_PER_CHILD:,} items ({WRITERS} children at once)",
                time.monotonic() - started,
                "s",
            )
        )
        whole = set(range(-(-ITEMS // SEGMENT_ITEMS) - 1))
        _segments_compacted(new_run, whole)
        rows.append(
            (
                f"after: its {len(whole)} whole segments compacted while it runs",
                time.monotonic() - started,
                "s (from the recording's start)",
            )
        )
        frontier = max(whole) * SEGMENT_ITEMS + SEGMENT_ITEMS
        for label, first in (("compacted while it runs", 0), ("not whole yet: child objects", frontier)):
            seconds, count, pages = _measured(requests, _page(new_run, new_execution, first))
            rows += [
                (
                    f"after, running, {label}: {PAGE:,} results ({pages} pages), requests per item",
                    count / PAGE,
                    f"(target <= {TARGET})",
                ),
                (f"after, running, {label}: {PAGE:,} results, time", seconds, "s"),
            ]
        _record_all(new_run, ITEMS, ordinals=True, start=ITEMS - ITEMS_PER_CHILD)  # the last child
        # (its segment is whole: its job runs, and is waited for, before anything is counted again)
        _segments_compacted(new_run, whole | {max(whole) + 1})
        _ended(new_run, new_execution)
        seconds, count, _ = _measured(
            requests,
            lambda: outcomes.compact_job({"tenant": new_run.tenant, "execution_id": new_run.execution_id}),
        )
        rows += [
            ("after: compaction at the run's end (every segment was whole before), time", seconds, "s"),
            ("after: compaction at the end, requests per item of the run", count / ITEMS, ""),
        ]
        page_seconds, page_count, pages = _measured(requests, _page(new_run, new_execution))
        rows += [
            (f"after: a page of {PAGE:,} items (ended, compacted), requests", page_count, ""),
            (
                f"after: a page of {PAGE:,} items (ended, compacted), requests per item",
                page_count / PAGE,
                f"(target <= {TARGET})",
            ),
            (f"after: a page of {PAGE:,} items (ended, compacted), time", page_seconds, "s"),
        ]
        runs = {ITEMS: new_run}
        for size in EXPORT_SIZES:
            if size not in runs:
                runs[size], small = _run(size, ordinals=True)
                _record_all(runs[size], size, ordinals=True)
                _ended(runs[size], small)
                outcomes.compact_job({"tenant": runs[size].tenant, "execution_id": runs[size].execution_id})
        rows += exports(requests, runs)
        rows += _recording(requests, _run(RECORDING_SAMPLE, ordinals=True)[0])
        if large := int(os.environ.get(LARGE_ITEMS_ENV) or 0):
            rows += at_scale(requests, large)
    return rows


def _segments_compacted(run: Any, blocks: set[int], timeout: float = 900.0) -> None:
    """Wait (bounded) until the jobs the run's children started have compacted ``blocks``."""
    from relayflow_runtime.services import deps

    deadline = time.monotonic() + timeout
    while not blocks <= set(
        deps.stores().executions.get_record(run.tenant, run.execution_id).compacted_segments or ()
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"segments {sorted(blocks)} not compacted after {timeout:.0f} s")
        time.sleep(0.2)


# ---- exports: sequential and concurrent side by side ---------------------------------------------
EXPORT_SIZES = (10_000, ITEMS)
MODES = (("sequential", False), ("concurrent", True))
#: S3 as seen from a Lambda in its region, for the second measurement: a first byte after this
#: long, then this many bytes a second per connection (the local stack answers at once, from
#: memory, under the same lock as the code it serves).
S3_FIRST_BYTE_SECONDS = 0.03
S3_BYTES_PER_SECOND = 80 * 1024 * 1024


@contextmanager
def _s3_latency() -> Iterator[None]:
    """Every S3 request of this process waits as if S3 were across a network (see above)."""
    import botocore.client

    real = botocore.client.BaseClient._make_api_call

    def slowed(client: Any, operation: str, params: dict[str, Any]) -> Any:
        answer = real(client, operation, params)
        if client.meta.service_model.service_name == "s3":
            sent = len(params.get("Body") or b"") if isinstance(params.get("Body"), (bytes, bytearray)) else 0
            received = int(answer.get("ContentLength") or 0) if operation == "GetObject" else 0
            time.sleep(S3_FIRST_BYTE_SECONDS + (sent + received) / S3_BYTES_PER_SECOND)
        return answer

    botocore.client.BaseClient._make_api_call = slowed  # type: ignore[method-assign]
    try:
        yield
    finally:
        botocore.client.BaseClient._make_api_call = real  # type: ignore[method-assign]


@contextmanager
def _as_on_aws(run: Any) -> Iterator[None]:
    """What S3 would hand relayflow and nothing more, for tracemalloc: the local stack runs in this
    process, so its own memory would count as relayflow's. It keeps the export's file: here the
    parts go nowhere, each held as long as S3's latency (above) would take to receive it. It
    answers a ranged GET by building the whole object first (the item list: 6 MB at 100,000
    items): the list's bytes are read before tracing starts and each ranged GET of it answers its
    range, as S3 does."""
    from relayflow_runtime.adapters import blob_stream
    from relayflow_runtime.adapters.blobs import BlobStore
    from relayflow_runtime.services import deps, item_lists, run_records

    listed = deps.blobs().get_bytes(
        item_lists.list_key(run_records.execution_prefix(run.tenant, run.execution_id))
    )

    def windows(bucket: str, key: str, offset: int, window: int) -> Iterator[bytes]:
        while offset < len(listed):
            yield listed[offset : offset + window]
            offset += window

    upload = blob_stream.PartUpload
    saved = upload.send, upload.complete, BlobStore.put_bytes, blob_stream.read_windows

    def send(self: Any, number: int, body: bytes) -> None:  # held as long as S3 would take it
        time.sleep(S3_FIRST_BYTE_SECONDS + len(body) / S3_BYTES_PER_SECOND)

    upload.send = send  # type: ignore[method-assign]
    upload.complete = lambda self, count, size: None  # type: ignore[method-assign]
    BlobStore.put_bytes = lambda self, key, data, content_type="", **meta: None  # type: ignore[method-assign]
    blob_stream.read_windows = windows
    try:
        yield
    finally:
        upload.send, upload.complete, BlobStore.put_bytes, blob_stream.read_windows = saved  # type: ignore[method-assign]


def _peak(step: Callable[[], Any]) -> float:
    """relayflow's high-water mark over the step, in MiB (tracemalloc: every allocation)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        step()
        return (tracemalloc.get_traced_memory()[1] - start) / 2**20
    finally:
        tracemalloc.stop()


def exports(requests: _Requests, runs: dict[int, Any]) -> list[Row]:
    """The export of ITEMS items one read and one part at a time and concurrently, side by side:
    on the local stack as it is, then with S3's latency (above); and each one's peak memory at
    each of EXPORT_SIZES (``runs``: a compacted run of each size)."""
    from relayflow_runtime.services import batch_results, deps

    rows: list[Row] = []
    run = runs[ITEMS]
    timed: dict[tuple[str, str], float] = {}
    for network in ("local stack", "S3 latency"):
        for mode, concurrent in MODES:
            with _s3_latency() if network == "S3 latency" else contextlib.nullcontext():
                seconds, count, _ = _measured(requests, _export(run, ITEMS, concurrent))
            deps.blobs().delete(batch_results.export_key(run.tenant, run.execution_id, "jsonl"))
            timed[(network, mode)] = seconds
            rows += [
                (f"export of {ITEMS:,} items, {network}, {mode}: time", seconds, "s"),
                (
                    f"export of {ITEMS:,} items, {network}, {mode}: items per second",
                    ITEMS / seconds,
                    "items/s",
                ),
                (
                    f"export of {ITEMS:,} items, {network}, {mode}: requests per item",
                    count / ITEMS,
                    f"(target <= {TARGET})",
                ),
            ]
        speed_up = timed[(network, "sequential")] / timed[(network, "concurrent")]
        rows.append((f"export, {network}: concurrent over sequential", speed_up, "x"))
    for mode, concurrent in MODES:
        peaks = {}
        for size in EXPORT_SIZES:
            with _as_on_aws(runs[size]):
                peaks[size] = _peak(_export(runs[size], size, concurrent))
            rows.append((f"export of {size:,} items, {mode}: relayflow's peak memory", peaks[size], "MiB"))
        small, large = min(EXPORT_SIZES), max(EXPORT_SIZES)
        ratio = peaks[large] / max(peaks[small], 0.01)
        rows.append((f"export, {mode}: peak memory, {large:,} over {small:,} items", ratio, "x"))
    return rows


# ---- at scale: opt-in (make bench-million) ---------------------------------------------------------
#: Also record, compact and export a run of this many items (make bench-million: 1,000,000).
LARGE_ITEMS_ENV = "RELAYFLOW_BENCH_EXPORT_ITEMS"
#: The time each round's Lambda has left. On AWS a round has 900 s (and works 840); the local stack
#: answers S3 from memory, so a round here does in 2 minutes what takes longer there: with 180 s a
#: run of a million items hands on from round to round as it would on AWS, several times.
ROUND_MS = 180_000


def _progress(message: str) -> None:
    print(f"  [bench/export] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _compact(run: Any) -> Callable[[], int]:
    """The jobs machine's compact_outcomes, round after round (ROUND_MS each): its rounds."""
    from relayflow_runtime.services import outcomes

    def compact() -> int:
        job: dict[str, Any] = {"tenant": run.tenant, "execution_id": run.execution_id}
        rounds = 1
        while (answer := outcomes.compact_job(job, remaining_ms=ROUND_MS)).get("more"):
            job, rounds = answer, rounds + 1
        assert answer.get("compacted") == run.execution_id, answer
        return rounds

    return compact


def _stored_lines(key: str) -> Iterator[bytes]:
    """The exported object's lines as the local stack keeps them, read from its file a MiB at a
    time: moto answers a GET, ranged or not, by reading the whole object into memory first
    (``FakeKey.value``: 6 GB at a million items), which no reader of S3 would do."""
    from moto.s3.models import s3_backends

    from relayflow.local.provision import ACCOUNT_ID
    from relayflow_runtime.adapters import blob_stream
    from relayflow_runtime.services import deps

    stored = s3_backends[ACCOUNT_ID]["aws"].get_object(deps.blobs().bucket, key)
    assert stored is not None, key

    def chunks() -> Iterator[bytes]:
        with stored.lock:
            stored._value_buffer.seek(0)
            while chunk := stored._value_buffer.read(2**20):
                yield chunk

    return (line for _, line in blob_stream.split_lines(chunks()))


def _each_item_once(key: str, items: int) -> int:
    """The lines of the exported file, checked to be the run's items, each once, in list order."""
    count = 0
    for count, line in enumerate(_stored_lines(key), 1):
        row = json.loads(line)
        assert row["source_item_id"] == f"x{count - 1:06d}" and row["status"] == "completed", (count, row)
        assert len(row["output"]) == OUTPUT_BYTES, count
    assert count == items, (count, items)
    return count


def at_scale(requests: _Requests, items: int) -> list[Row]:
    """A run of ``items`` items recorded as the node runner records it, ended, compacted and
    exported by the jobs machine's jobs in rounds of ROUND_MS (each round's state handed to the
    next as the machine does), the file read back; then exported again for relayflow's peak
    memory (as ``exports`` measures it: the parts go nowhere)."""
    from relayflow_runtime.services import batch_results, deps

    rows: list[Row] = []
    name = f"{items:,} items"
    run, execution = _run(items, ordinals=True)
    started = time.monotonic()
    _record_all(run, items, ordinals=True)
    rows.append((f"{name}: recording ({WRITERS} children at once)", time.monotonic() - started, "s"))
    _progress(f"{name} recorded in {rows[-1][1]:.0f} s")
    # Each segment is compacted by the job its last child starts: all are whole, so the end has
    # nothing left to write once they are done (waited for, not counted).
    from relayflow_runtime.domain.outcomes import SEGMENT_ITEMS

    _segments_compacted(run, set(range(-(-items // SEGMENT_ITEMS))), timeout=3600.0)
    rows.append(
        (
            f"{name}: every segment compacted while it ran, from the recording's start",
            time.monotonic() - started,
            "s",
        )
    )
    _ended(run, execution)
    seconds, count, rounds = _measured(requests, _compact(run))
    rows += [
        (f"{name}: compaction into segments, time", seconds, "s"),
        (f"{name}: compaction, rounds of {ROUND_MS // 1000} s", rounds, ""),
        (f"{name}: compaction, requests per item", count / items, ""),
    ]
    _progress(f"{name} compacted in {seconds:.0f} s, {rounds} rounds")
    seconds, count, (size, rounds) = _measured(requests, _export(run, items, remaining_ms=ROUND_MS))
    rows += [
        (f"{name}: export, time", seconds, "s"),
        (f"{name}: export, rounds of {ROUND_MS // 1000} s", rounds, ""),
        (f"{name}: export, requests", count, ""),
        (f"{name}: export, requests per item", count / items, f"(target <= {TARGET})"),
        (f"{name}: export, items per second", items / seconds, "items/s"),
        (f"{name}: export, the file's size", size / 2**30, "GiB"),
    ]
    _progress(f"{name} exported in {seconds:.0f} s, {rounds} rounds, {size / 2**30:.2f} GiB")
    key = batch_results.export_key(run.tenant, run.execution_id, "jsonl")
    lines = _each_item_once(key, items)
    rows.append((f"{name}: the file's lines, each item once and in order", lines, "lines"))
    deps.blobs().delete(key)
    with _as_on_aws(run):
        peak = _peak(_export(run, items, remaining_ms=ROUND_MS))
    rows += [
        (f"{name}: export, relayflow's peak memory", peak, "MiB"),
        (
            "this process's peak resident memory (the local stack's too)",
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "GiB",
        ),
    ]
    return rows
