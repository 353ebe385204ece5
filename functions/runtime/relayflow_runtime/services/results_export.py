"""The jobs machine's ``export_results``: a finished batch's whole result set as one S3 object
(JSONL or CSV), in rounds, with bounded concurrency inside each (docs/batch.md, Downloads).

* **Pieces, read ahead.** The run's item list is read once per round (ranged GETs of 1 MiB) and cut into
  chunks of EXPORT_CHUNK_ITEMS entries; up to EXPORT_READ_AHEAD (2) chunks are read and formatted at
  once on reader threads (services/batch_results.py ``entry_results``: a segment's header slots and
  results, two ranged GETs per chunk once the run is compacted, and the values stored apart), each
  chunk's answer bounded by EXPORT_CHUNK_BYTES (what is left of a chunk is read next, in order).
  The pieces are written in list order, whatever order they finish in.
* **Parts, in flight.** The file is cut into parts of exactly EXPORT_PART_BYTES (the last one
  shorter), sent EXPORT_UPLOADS at a time: memory holds at most EXPORT_READ_AHEAD pieces,
  EXPORT_UPLOADS parts and the part being filled.
* **Exact under kills and repeats.** Part k is always the file's bytes (k-1)·P to k·P, whoever
  sends it: a round ends at a whole part, handing on the upload, the count of parts sent, and
  where to read on — the list offset of a piece that holds the next part's first byte and how many
  of its bytes are already sent (``skip``). A round killed half-way (Lambda's timeout) or run twice
  (Step Functions retrying a Lambda error) sends the same bytes under the same numbers again; the
  upload is completed from parts 1..count as S3 lists them, once (a second completion finds it
  gone and the object of the right size: nothing to do).
* **A round stops in time.** Before each piece it takes, a round with a deadline (Lambda's time
  left less EXPORT_MARGIN_SECONDS) checks that the worst case of what it starts can still end
  before it: the slowest piece and the slowest part it has seen, at least EXPORT_PART_SECONDS.
  Then it waits for its parts in flight (reads ahead are dropped) and hands on. The clock is
  injected (tests drive it, no sleeps).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from relayflow_runtime.adapters import blob_stream
from relayflow_runtime.domain.batch import ItemEntry
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.execution_record import ResultExportItem
from relayflow_runtime.domain.outcomes import Segments
from relayflow_runtime.schemas.dataset_api import format_rows, result_row
from relayflow_runtime.schemas.entities import BatchItemResult, Execution
from relayflow_runtime.services import batch_results, dataset_service, deps, item_lists, run_records

#: The item list is read this many bytes at a time (a million items of 100-byte inputs: ~100 GETs).
EXPORT_LIST_WINDOW = 1024 * 1024
#: Entries of the list a reader takes at a time (a compacted run: 2 to 4 ranged GETs).
EXPORT_CHUNK_ITEMS = 1000
#: A reader's answer ends past this many bytes stored or formatted (the rest of its chunk is read
#: next): what one piece holds in memory.
EXPORT_CHUNK_BYTES = 8 * 1024 * 1024
#: Chunks read and formatted at once, ahead of the one being written.
EXPORT_READ_AHEAD = 2
#: Parts sent at once (S3: at most 10,000 parts, so files up to 160 GiB).
EXPORT_PART_BYTES = 16 * 1024 * 1024
EXPORT_UPLOADS = 4
#: A round ends this long before its invocation would be killed...
EXPORT_MARGIN_SECONDS = 60.0
#: ...and starts nothing whose worst case could pass that: the slowest piece plus the slowest part
#: it has seen, and at least this (a 16 MiB part read, formatted and sent on a 512 MB Lambda takes
#: a few seconds).
EXPORT_PART_SECONDS = 20.0

Clock = Callable[[], float]
Entries = list[tuple[int, ItemEntry]]


@dataclass
class _Piece:
    """Bytes of the file from the item at list offset ``cursor`` on; ``rest``: the entries of its
    chunk still to read after it."""

    cursor: int
    data: bytes | bytearray
    rest: Entries
    seconds: float = 0.0


@dataclass
class _Resume:
    """Where a round starts: the open upload, the parts sent, and the piece to read on from (its
    list offset; ``skip`` of its bytes are in the parts sent)."""

    upload_id: str | None = None
    parts: int = 0
    cursor: int = 0
    skip: int = 0

    @classmethod
    def of(cls, job: dict[str, Any]) -> _Resume:
        upload = job.get("upload") or {}
        return cls(
            upload_id=upload.get("upload_id"),
            parts=int(upload.get("parts") or 0),
            cursor=dataset_service.decode_offset(job.get("next_token")),
            skip=int(job.get("skip") or 0),
        )


@dataclass
class _Run:
    """What a round reads: the run, and its output format."""

    tenant: str
    execution: Execution
    compacted: Segments
    fmt: str

    def piece(self, entries: Entries, header: bool, clock: Clock) -> _Piece:
        started = clock()
        answer, rest = batch_results.entry_results(
            self.tenant,
            self.execution,
            entries,
            self.compacted,
            read_bytes=EXPORT_CHUNK_BYTES,
            answer_bytes=EXPORT_CHUNK_BYTES,
        )
        data = bytearray()
        answer.reverse()  # each result is dropped once formatted: memory holds the answer, once
        for chunk in format_rows(_rows(answer), self.fmt, header=header):
            data += chunk
        return _Piece(entries[0][0], data, rest, clock() - started)


def _rows(answer: list[tuple[int, BatchItemResult]]) -> Iterator[dict[str, Any]]:
    """The rows of ``answer`` (reversed) in order, each result dropped as its row is taken."""
    while answer:
        yield result_row(answer.pop()[1])


@dataclass
class _Parts:
    """The file from the round's start, cut into parts of exactly EXPORT_PART_BYTES sent by number
    (EXPORT_UPLOADS at once with ``pool``, else one after another)."""

    upload: blob_stream.PartUpload
    resume: _Resume
    pool: ThreadPoolExecutor | None
    clock: Clock
    #: the next part's number, its bytes so far, the bytes still to drop (sent before)
    number: int = 1
    buffer: bytearray = field(default_factory=bytearray)
    skip: int = 0
    position: int = 0  # of the file: where the next piece begins
    #: (position, cursor) of the pieces not yet wholly sent; each part's place to resume from
    marks: deque[tuple[int, int]] = field(default_factory=deque)
    resume_at: dict[int, tuple[int, int]] = field(default_factory=dict)
    in_flight: deque[Future[None]] = field(default_factory=deque)
    slowest_part: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.number = self.resume.parts + 1
        self.skip = self.resume.skip
        self.position = self.resume.parts * EXPORT_PART_BYTES - self.resume.skip

    @property
    def sent(self) -> int:
        return self.number - 1

    def add(self, piece: _Piece) -> None:
        self.marks.append((self.position, piece.cursor))
        self.position += len(piece.data)
        data = memoryview(piece.data)
        if self.skip:
            dropped = min(self.skip, len(data))
            data, self.skip = data[dropped:], self.skip - dropped
        self.buffer += data
        while len(self.buffer) >= EXPORT_PART_BYTES:
            with memoryview(self.buffer) as view, view[:EXPORT_PART_BYTES] as head:
                body = bytes(head)  # one copy, then the buffer drops it
            del self.buffer[:EXPORT_PART_BYTES]
            self._send(body)

    def _send(self, body: bytes) -> None:
        number = self.number
        self.number += 1
        boundary = number * EXPORT_PART_BYTES
        while len(self.marks) > 1 and self.marks[1][0] <= boundary:
            self.marks.popleft()
        self.resume_at[number] = (self.marks[0][1], boundary - self.marks[0][0])
        self.upload.open()
        while len(self.in_flight) >= EXPORT_UPLOADS:
            self.in_flight.popleft().result()
        if self.pool is None:
            self._timed_send(number, body)
        else:
            self.in_flight.append(self.pool.submit(self._timed_send, number, body))

    def _timed_send(self, number: int, body: bytes) -> None:
        started = self.clock()
        self.upload.send(number, body)
        took = self.clock() - started
        with self._lock:
            self.slowest_part = max(self.slowest_part, took)

    def drain(self) -> None:
        while self.in_flight:
            self.in_flight.popleft().result()

    def suspended(self) -> dict[str, Any]:
        """The job's state after the parts sent (all of them arrived: ``drain`` first)."""
        if self.sent == self.resume.parts:
            cursor, skip = self.resume.cursor, self.resume.skip
        else:
            cursor, skip = self.resume_at[self.sent]
        return {
            "upload": {
                "upload_id": self.upload.upload_id,
                "parts": self.sent,
                "size": self.sent * EXPORT_PART_BYTES,
            },
            "next_token": dataset_service.encode_offset(cursor) if cursor else None,
            "skip": skip,
        }

    def finish(self) -> int:
        """Send the rest and complete the object: its size."""
        if self.upload.upload_id is None:  # the whole file is shorter than a part: one PUT
            deps.blobs().put_bytes(self.upload.key, bytes(self.buffer), self.upload.content_type)
            return len(self.buffer)
        if self.buffer:
            self._send(bytes(self.buffer))
        self.drain()
        size = self.position
        self.upload.complete(self.sent, size)
        return size


def _chunks(prefix: str, cursor: int) -> Iterator[Entries]:
    """The run's list from ``cursor`` on, EXPORT_CHUNK_ITEMS entries (or EXPORT_CHUNK_BYTES of
    lines) at a time, read in ranged GETs of EXPORT_LIST_WINDOW bytes (a round takes minutes over
    it: one open GET would sit idle between chunks)."""
    chunk: Entries = []
    for start, entry in item_lists.entries(item_lists.list_key(prefix), cursor, EXPORT_LIST_WINDOW):
        if chunk and (len(chunk) == EXPORT_CHUNK_ITEMS or start - chunk[0][0] >= EXPORT_CHUNK_BYTES):
            yield chunk
            chunk = []
        chunk.append((start, entry))
    if chunk:
        yield chunk


_readers = ThreadPoolExecutor(EXPORT_READ_AHEAD, thread_name_prefix="outcome-read-export")
_senders = ThreadPoolExecutor(EXPORT_UPLOADS, thread_name_prefix="outcome-read-parts")


def export_results_job(
    job: dict[str, Any],
    *,
    remaining_ms: int | None = None,
    clock: Clock = time.monotonic,
    concurrent: bool = True,
) -> dict[str, Any]:
    """One round of the export (see the module's doc): the job again with ``more`` and where to go
    on, or, once the object is complete, its key and size (and the export marked ready on the
    execution). ``concurrent=False`` reads and sends one thing at a time (bench/export.py's
    baseline)."""
    tenant, workflow_id, execution_id, fmt = (
        str(job["tenant"]),
        str(job["workflow_id"]),
        str(job["execution_id"]),
        str(job["format"]),
    )
    deadline = None if remaining_ms is None else clock() + remaining_ms / 1000 - EXPORT_MARGIN_SECONDS
    execution, record = batch_results.batch_record(tenant, workflow_id, execution_id)
    key = batch_results.export_key(tenant, execution_id, fmt)
    resume = _Resume.of(job)
    run = _Run(tenant, execution, batch_results.compacted(record), fmt)
    upload = blob_stream.PartUpload(
        deps.blobs().bucket, key, batch_results.media_type(fmt), upload_id=resume.upload_id
    )
    parts = _Parts(upload, resume, _senders if concurrent else None, clock)
    chunks = _chunks(run_records.execution_prefix(tenant, execution_id), resume.cursor)
    ahead: deque[Future[_Piece]] = deque()
    header = resume.cursor == 0  # the file's first piece carries the CSV header
    slowest_piece = 0.0

    def read(entries: Entries, first: bool) -> Future[_Piece]:
        if not concurrent:
            done: Future[_Piece] = Future()
            done.set_result(run.piece(entries, first, clock))
            return done
        return _readers.submit(run.piece, entries, first, clock)

    rest: Entries = []  # of a chunk whose answer ended early (large values): read next, in order
    try:
        while True:
            worst = max(EXPORT_PART_SECONDS, slowest_piece + parts.slowest_part)
            if deadline is not None and clock() + worst > deadline:
                for future in ahead:
                    future.cancel()
                parts.drain()
                return {**job, **parts.suspended(), "more": True, "round": int(job.get("round") or 0) + 1}
            if rest:
                piece = run.piece(rest, False, clock)
            else:
                while len(ahead) < (EXPORT_READ_AHEAD if concurrent else 1):
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    ahead.append(read(chunk, header))
                    header = False
                if not ahead:
                    break
                piece = ahead.popleft().result()
            slowest_piece = max(slowest_piece, piece.seconds)
            parts.add(piece)
            rest = piece.rest
        if header:  # a list without items: the CSV header alone
            parts.add(_Piece(0, b"".join(format_rows([], fmt, header=True)), []))
        size = parts.finish()
    except blob_stream.UploadGone:
        # Another run of this round completed the object (a repeated round): it is there, whole.
        found = blob_stream.object_size(deps.blobs().bucket, key)
        if found is None:
            raise
        size = found
    fresh = deps.stores().executions.get_record(tenant, execution_id)
    exports = {**(fresh.exports or {}), fmt: ResultExportItem(status="ready", since=now_iso(), size=size)}
    deps.stores().executions.update_execution(tenant, execution_id, {"exports": exports})
    return {"key": key, "size": size}
