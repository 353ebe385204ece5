"""Datasets, their versions and their items: create, upload (committed whole or not at all), list.

A version's items live in one S3 object, the *item list*: a JSON array with one entry per line
(domain/item_list.py), both what a Step Functions distributed Map's ``ItemReader`` (JSON) reads and
what the API pages through by byte offset. An item whose JSON is larger than
:data:`LARGE_ITEM_BYTES` is stored in an object of its own and its entry holds ``"ref"`` instead of
``"item"``: a Map item (and so a child execution's input) stays far below the 256 KiB payload cap.

Files are parsed by domain/datasets.py, streamed: a 512 MB file never sits in memory. An upload is
committed whole: a malformed file is refused with its line number and reason and leaves nothing.
Small commits run in the API call; larger ones (over :data:`SYNC_INGEST_MAX_BYTES`) in the
node-runner function, started through a one-task state machine (the API function has 30 s, the
runner 15 minutes): the version shows ``processing``, then ``ready`` or ``failed``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, cast

from relayflow_runtime.adapters import blob_stream
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain import datasets, item_list
from relayflow_runtime.domain.clock import new_id, now_iso
from relayflow_runtime.domain.encoded import decode_base64
from relayflow_runtime.domain.limits import MAX_JSON_ARRAY_BYTES, MAX_UPLOAD_PARTS, UPLOAD_PART_BYTES
from relayflow_runtime.domain.records import (
    DatasetRecord,
    DatasetUploadRecord,
    DatasetVersionRecord,
    DatasetVersionUpdate,
)
from relayflow_runtime.errors import Conflict, InvalidInput, InvalidNextToken, NotFound, check_cursor_shape
from relayflow_runtime.schemas import dataset_api
from relayflow_runtime.schemas.entities import Dataset, DatasetItem, DatasetUpload, DatasetVersion
from relayflow_runtime.services import deps
from relayflow_runtime.settings import get_settings

#: An item whose JSON is larger than this is stored apart from the item list (see module doc).
LARGE_ITEM_BYTES = 64 * 1024
#: Uploads up to this size are committed inside the API call; larger ones asynchronously.
SYNC_INGEST_MAX_BYTES = 16 * 1024 * 1024
UPLOAD_TTL_SECONDS = 24 * 3600
#: A version still "processing" after this long was abandoned (its ingest died: the API function
#: times out at 30 s, the node runner at 15 minutes): it may be uploaded to or deleted again.
STALE_PROCESSING_SECONDS = 20 * 60
#: Field names a version remembers (to check a batch's input_field at submission).
MAX_TRACKED_FIELDS = 500


def dataset_prefix(tenant: str, dataset_id: str) -> str:
    return f"t/{tenant}/datasets/{dataset_id}/"


def version_prefix(tenant: str, dataset_id: str, version_id: str) -> str:
    return f"{dataset_prefix(tenant, dataset_id)}versions/{version_id}/"


def items_key(tenant: str, dataset_id: str, version_id: str) -> str:
    return f"{version_prefix(tenant, dataset_id, version_id)}items.json"


def upload_prefix(tenant: str, dataset_id: str, upload_id: str) -> str:
    """An upload in progress; the bucket's lifecycle rule expires ``uploads/`` after 2 days, so an
    upload never committed goes by itself (a rule's prefix cannot skip the tenant segment)."""
    return f"uploads/{tenant}/{dataset_id}/{upload_id}/"


# ---- the item list (its line format: domain/item_list.py) --------------------------------------------------
class ItemListWriter:
    """Write an item list (see the module doc) as a stream; ``count`` entries so far. ``add`` and
    ``add_line`` return where the entry's line is: (its offset in the list, its length)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.count = 0
        self._out = blob_stream.ObjectWriter(deps.blobs().bucket, key, "application/json")
        self._out.write(item_list.OPENING)

    def _write(self, entry: bytes) -> tuple[int, int]:
        line = item_list.framed(entry, first=not self.count)
        offset = self._out.size
        self._out.write(line)
        self.count += 1
        return offset, len(line)

    def add(self, entry: Mapping[str, Any]) -> tuple[int, int]:
        return self._write(item_list.json_bytes(entry))

    def add_line(self, line: bytes) -> tuple[int, int]:
        """Add an entry exactly as read from another item list."""
        return self._write(item_list.unframed(line))

    def close(self) -> int:
        self._out.write(item_list.CLOSING)
        self._out.close()
        return self._out.size

    def abort(self) -> None:
        self._out.abort()


def iter_entries(
    key: str, offset: int = 0, window: int | None = None
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(offset of the line, offset after it, entry) of an item list, streamed from ``offset`` (in
    ranged reads of ``window`` bytes when given)."""
    for position, line in blob_stream.read_lines(deps.blobs().bucket, key, offset, window):
        entry = item_list.parse_entry_line(line)
        if entry is not None:
            yield position, position + len(line), entry


def entry_item(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The item of an entry, read from its own object when it is stored apart."""
    return _entry_item_read(entry)[0]


def _entry_item_read(entry: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The item of an entry, and the bytes of its own object read for it (0: it is inline)."""
    if "ref" in entry:
        stored = deps.blobs().get_bytes(entry["ref"])
        value: dict[str, Any] = json.loads(stored)
        return value, len(stored)
    item: dict[str, Any] = entry["item"]
    return item, 0


@dataclass(frozen=True)
class ItemSource:
    """A dataset version's item list, as a batch reads it: its key and how many items it holds."""

    key: str
    count: int


def item_source(tenant: str, dataset_id: str, version_id: str) -> ItemSource:
    """Where a version's items are (NotFound: the dataset or the version is not there)."""
    version = get_version_record(tenant, dataset_id, version_id)
    key = version.items_key or items_key(tenant, dataset_id, version_id)
    return ItemSource(key=key, count=version.item_count)


@dataclass(frozen=True)
class FilteredItem:
    """One entry of an item list with its item and the filter's verdict. ``read_bytes``: bytes
    read through this entry (the list's, and the objects of the items stored apart); ``refused``:
    the filter gave up on the item (over its work budget: a run refuses it, an estimate counts it
    as not kept)."""

    entry: dict[str, Any]
    item: dict[str, Any]
    read_bytes: int
    kept: bool
    refused: datasets.FilterError | None = None


def filtered_items(key: str, filter_query: str | None) -> Iterator[FilteredItem]:
    """The entries of an item list in order, each with its item and whether ``filter_query`` keeps
    it: the one reading a batch's start (services/batch.py) and its estimate (services/estimate.py)
    share, so both keep the same items."""
    matches = datasets.compile_filter(filter_query)
    apart = 0
    for _, end, entry in iter_entries(key):
        item, stored = _entry_item_read(entry)
        apart += stored
        refused: datasets.FilterError | None = None
        try:
            kept = bool(matches(item))
        except datasets.FilterError as exc:
            kept, refused = False, exc
        yield FilteredItem(entry, item, end + apart, kept, refused)


def make_entry_line(item_id: str, item: dict[str, Any], large_key: str) -> tuple[bytes, bool]:
    """The item's entry as a line for ``ItemListWriter.add_line`` (the very bytes ``add`` writes
    for ``{"id", "item"}``, built around the one dump of the item that also measures it), and
    whether the item is large: then it is stored at ``large_key`` and the entry refers to it."""
    encoded = item_list.json_bytes(item)
    if len(encoded) <= LARGE_ITEM_BYTES:
        return item_list.inline_entry(item_id, encoded), False
    deps.blobs().put_bytes(large_key, encoded, "application/json")
    return item_list.ref_entry(item_id, large_key), True


# ---- datasets ----------------------------------------------------------------------------------------
def create_dataset(tenant: str, body: dataset_api.CreateDataset) -> Dataset:
    now = now_iso()
    dataset = DatasetRecord(
        id=new_id(), name=body.name, description=body.description, created_at=now, updated_at=now
    )
    deps.stores().datasets.put_dataset(tenant, dataset)
    return dataset.to_api()


def get_dataset(tenant: str, dataset_id: str) -> Dataset:
    return deps.stores().datasets.get_dataset(tenant, dataset_id).to_api()


def list_datasets(tenant: str, limit: int, next_token: str | None) -> tuple[list[Dataset], str | None]:
    records, token = deps.stores().datasets.list_datasets(tenant, limit, next_token)
    return [r.to_api() for r in records], token


def delete_dataset(tenant: str, dataset_id: str) -> None:
    get_dataset(tenant, dataset_id)
    for version in deps.stores().datasets.list_dataset_versions(tenant, dataset_id):
        if _processing(version):
            raise Conflict(
                f"version {version.number} of this dataset is still being ingested; try again when it "
                "is ready or failed.",
                code="dataset_version_processing",
            )
    deps.blobs().delete_prefix(dataset_prefix(tenant, dataset_id))
    deps.blobs().delete_prefix(f"uploads/{tenant}/{dataset_id}/")
    deps.stores().datasets.delete_dataset(tenant, dataset_id)


# ---- versions ----------------------------------------------------------------------------------------
def create_version(tenant: str, dataset_id: str, body: dataset_api.CreateDatasetVersion) -> DatasetVersion:
    now = now_iso()
    number = deps.stores().datasets.next_dataset_version_number(tenant, dataset_id, now)
    version = DatasetVersionRecord(
        id=new_id(),
        dataset_id=dataset_id,
        number=number,
        name=body.name or f"v{number}",
        created_at=now,
        updated_at=now,
    )
    deps.stores().datasets.put_dataset_version(tenant, version)
    return version.to_api()


def get_version_record(tenant: str, dataset_id: str, version_id: str) -> DatasetVersionRecord:
    get_dataset(tenant, dataset_id)
    return deps.stores().datasets.get_dataset_version(tenant, dataset_id, version_id)


def get_version(tenant: str, dataset_id: str, version_id: str) -> DatasetVersion:
    return get_version_record(tenant, dataset_id, version_id).to_api()


def list_versions(tenant: str, dataset_id: str) -> list[DatasetVersion]:
    get_dataset(tenant, dataset_id)
    versions = [v.to_api() for v in deps.stores().datasets.list_dataset_versions(tenant, dataset_id)]
    return sorted(versions, key=lambda v: v.number)


def delete_version(tenant: str, dataset_id: str, version_id: str) -> None:
    """Batch runs keep their own copy of the items they ran over: deleting a version never breaks
    their results."""
    record = get_version_record(tenant, dataset_id, version_id)
    if _processing(record):
        raise Conflict(
            "this version is still being ingested; try again when it is ready or failed.",
            code="dataset_version_processing",
        )
    deps.blobs().delete_prefix(version_prefix(tenant, dataset_id, version_id))
    deps.stores().datasets.delete_dataset_version(tenant, dataset_id, version_id)


def ready_version(tenant: str, dataset_id: str, version_id: str) -> DatasetVersionRecord:
    """The version record, if its items can be run over (for batch submission)."""
    record = get_version_record(tenant, dataset_id, version_id)
    if record.status != "ready":
        raise Conflict(
            f"dataset version '{version_id}' has no items yet (status {record.status}); upload its "
            "items first.",
            code="dataset_version_not_ready",
        )
    return record


# ---- items -------------------------------------------------------------------------------------------
def list_items(
    tenant: str, dataset_id: str, version_id: str, limit: int, next_token: str | None
) -> tuple[list[DatasetItem], str | None]:
    """A page of the version's items in file order; ``next_token`` is a byte offset in the list."""
    record = get_version_record(tenant, dataset_id, version_id)
    offset = decode_offset(next_token)  # a bad cursor is refused whatever the version holds
    if record.status != "ready":
        return [], None
    items: list[DatasetItem] = []
    token: str | None = None
    for start, _, entry in iter_entries(items_key(tenant, dataset_id, version_id), offset):
        if len(items) == limit:
            token = encode_offset(start)
            break
        items.append(DatasetItem(id=entry["id"], data=entry_item(entry)))
    return items, token


def encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_offset(token: str | None) -> int:
    if not token:
        return 0
    check_cursor_shape(token)
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = text.partition(":")
        offset = int(value)
        if kind != "o" or offset < 0:
            raise ValueError(text)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidNextToken() from exc
    return offset


class _ChunkStream:
    """A read(n) file object over an iterator of byte chunks (what domain/datasets.py reads)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if 0 <= size <= len(self._buffer) - self._position:
            data = self._buffer[self._position : self._position + size]
            self._position += size
            return data
        parts = [self._buffer[self._position :]]
        available = len(parts[0])
        while size < 0 or available < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            available += len(chunk)
        self._buffer = b"".join(parts) if len(parts) > 1 else parts[0]
        self._position = 0
        if size < 0 or size >= len(self._buffer):
            data, self._buffer = self._buffer, b""
            return data
        self._position = size
        return self._buffer[:size]


class _FieldStats:
    """Which field names the items have: all of them (up to a cap), those every item has, and for
    the others the first item that lacks each (a batch submission names it, without a scan)."""

    def __init__(self) -> None:
        self.seen: dict[str, None] = {}  # the names in the order first seen
        self.items = 0
        self.first_id: str | None = None
        self.common_so_far: set[str] = set()
        self.lacking: dict[str, str] = {}

    def add(self, item: Mapping[str, Any], item_id: str) -> None:
        self.items += 1
        if self.first_id is None:
            self.first_id = item_id
            self.common_so_far = set(list(item)[:MAX_TRACKED_FIELDS])
        elif not all(name in item for name in self.common_so_far):
            for name in [n for n in self.common_so_far if n not in item]:
                self.common_so_far.discard(name)
                self.lacking[name] = item_id
        for name in item:
            if name not in self.seen and len(self.seen) < MAX_TRACKED_FIELDS:
                self.seen[name] = None
                if self.items > 1 and self.first_id is not None:
                    self.lacking[name] = self.first_id

    def fields(self) -> list[str]:
        return list(self.seen)


def _stale_before() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - STALE_PROCESSING_SECONDS))


def _processing(record: DatasetVersionRecord) -> bool:
    """Being ingested now (not an ingest that died long ago)."""
    return record.status == "processing" and record.updated_at >= _stale_before()


def _claim(
    tenant: str, dataset_id: str, version_id: str, fmt: str, filename: str | None = None
) -> DatasetVersionRecord:
    """Claim an empty (or failed, or long-stalled) version for an upload of ``fmt``."""
    fields = DatasetVersionUpdate(
        format=fmt,
        status="processing",
        error=None,
        error_code=None,
        error_line=None,
        updated_at=now_iso(),
    )
    if filename is not None:
        fields["source_filename"] = filename
    try:
        return deps.stores().datasets.update_dataset_version(
            tenant,
            dataset_id,
            version_id,
            fields,
            only_if_status=("empty", "failed"),
            or_processing_since_before=_stale_before(),
        )
    except ConditionFailed:
        record = deps.stores().datasets.get_dataset_version(tenant, dataset_id, version_id)
        if record.status == "processing":
            raise Conflict(
                "another upload to this version is being processed.", code="dataset_version_processing"
            ) from None
        raise Conflict(
            "this version already has its items (a version never changes); create a new version.",
            code="dataset_version_not_empty",
        ) from None


#: What a version that failed for a reason of relayflow's own says (the cause is in the logs).
UPLOAD_FAILED = "the upload could not be processed"


def _fail_version(
    tenant: str,
    dataset_id: str,
    version_id: str,
    error: str,
    *,
    error_code: str | None = None,
    error_line: int | None = None,
) -> None:
    """Mark a dataset version failed with ``error`` (and, for a refused file, its code and line)."""
    fields = DatasetVersionUpdate(status="failed", error=error, updated_at=now_iso())
    if error_code is not None:
        fields["error_code"] = error_code
        fields["error_line"] = error_line
    deps.stores().datasets.update_dataset_version(tenant, dataset_id, version_id, fields)


def ingest(
    tenant: str,
    dataset_id: str,
    version_id: str,
    source: IO[bytes] | _ChunkStream,
    fmt: str,
    *,
    filename: str | None,
) -> DatasetVersion:
    """Parse a claimed (``processing``) version's file and commit its items, or refuse it whole.

    Raises InvalidInput with ``details: {"line", "reason"}`` when the file is refused (the version
    is then ``failed``, with that error, and holds nothing).
    """
    key = items_key(tenant, dataset_id, version_id)
    large_prefix = f"{version_prefix(tenant, dataset_id, version_id)}large/"
    writer = ItemListWriter(key)
    stats = _FieldStats()
    try:
        for parsed in datasets.iter_items(cast(IO[bytes], source), "jsonl" if fmt == "items" else fmt):
            stats.add(parsed.data, parsed.id)
            try:
                entry_line, _ = make_entry_line(
                    parsed.id, parsed.data, f"{large_prefix}{parsed.index:07d}.json"
                )
            except UnicodeEncodeError as exc:
                raise _not_text(exc, parsed.line) from None
            writer.add_line(entry_line)
        size = writer.close()
    except datasets.DatasetFileError as exc:
        writer.abort()
        deps.blobs().delete_prefix(large_prefix)
        line = exc.line
        message = str(exc)
        if fmt == "items" and line is not None:
            message = f"items[{line - 1}]: {exc.reason}"
        _fail_version(tenant, dataset_id, version_id, message, error_code=exc.code, error_line=line)
        raise InvalidInput(message, code=exc.code, details={"line": line, "reason": exc.reason}) from None
    except BaseException:
        writer.abort()
        deps.blobs().delete_prefix(large_prefix)
        _fail_version(tenant, dataset_id, version_id, UPLOAD_FAILED)
        raise
    record = deps.stores().datasets.update_dataset_version(
        tenant,
        dataset_id,
        version_id,
        {
            "status": "ready",
            "item_count": writer.count,
            "fields": stats.fields(),
            "lacking_fields": stats.lacking,
            "format": fmt,
            "source_filename": filename,
            "size_bytes": size,
            "items_key": key,
            "updated_at": now_iso(),
        },
    )
    return record.to_api()


def add_items(tenant: str, dataset_id: str, version_id: str, body: dataset_api.AddItems) -> DatasetVersion:
    """Commit a small list of items sent in the request (``items=[...]``)."""
    get_version_record(tenant, dataset_id, version_id)
    _claim(tenant, dataset_id, version_id, "items")
    return ingest(
        tenant, dataset_id, version_id, _ChunkStream(map(_item_line, body.items)), "items", filename=None
    )


def _item_line(item: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(item, ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:  # an unpaired surrogate: escaped, so that ingest refuses it by its index
        return json.dumps(item).encode() + b"\n"


def _not_text(exc: UnicodeEncodeError, line: int) -> datasets.DatasetFileError:
    """An item holding an unpaired UTF-16 surrogate (``"\\ud800"`` is valid JSON, but not text)."""
    return datasets.DatasetFileError(
        "malformed_file",
        f"the item holds an unpaired UTF-16 surrogate ({exc.object[exc.start : exc.end]!r}), which is not "
        "text: UTF-8 cannot store it",
        line,
    )


# ---- file uploads ------------------------------------------------------------------------------------
def presigned_uploads_enabled() -> bool:
    """Offer a presigned S3 PUT only where the client can reach S3 (on AWS, not on the local stack).
    RELAYFLOW_PRESIGNED_UPLOADS=1|0 overrides."""
    setting = os.environ.get("RELAYFLOW_PRESIGNED_UPLOADS")
    if setting is not None:
        return setting.strip().lower() in ("1", "true", "yes")
    return os.environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_")


def start_upload(
    tenant: str, dataset_id: str, version_id: str, body: dataset_api.StartUpload
) -> DatasetUpload:
    record = get_version_record(tenant, dataset_id, version_id)
    if record.status == "ready":
        raise Conflict(
            "this version already has its items (a version never changes); create a new version.",
            code="dataset_version_not_empty",
        )
    if _processing(record):
        raise Conflict(
            "another upload to this version is being processed.", code="dataset_version_processing"
        )
    try:
        fmt = datasets.detect_format(body.filename)
    except datasets.DatasetFileError as exc:
        raise InvalidInput(str(exc), code=exc.code) from None
    if body.size is not None:
        _check_size(body.size, fmt)
    upload_id = new_id()
    expires = int(time.time()) + UPLOAD_TTL_SECONDS
    url = None
    if presigned_uploads_enabled():
        url = deps.blobs().presigned_put(
            f"{upload_prefix(tenant, dataset_id, upload_id)}source", "application/octet-stream", 3600
        )
    upload = DatasetUpload(
        id=upload_id,
        dataset_id=dataset_id,
        version_id=version_id,
        filename=body.filename,
        format=fmt,
        part_size=UPLOAD_PART_BYTES,
        max_parts=MAX_UPLOAD_PARTS,
        upload_url=url,
        expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
    )
    stored = DatasetUploadRecord(
        id=upload.id, dataset_id=dataset_id, version_id=version_id, filename=upload.filename, format=fmt
    )
    deps.stores().datasets.put_dataset_upload(tenant, stored, expires)
    return upload


def _check_size(size: int, fmt: str) -> None:
    if size > datasets.MAX_FILE_BYTES:
        raise InvalidInput(
            f"the file is {size} bytes; dataset files are limited to {datasets.MAX_FILE_BYTES} bytes.",
            code="too_large",
        )
    if fmt == "json" and size > MAX_JSON_ARRAY_BYTES:
        raise InvalidInput(
            f"the file is {size} bytes; a .json array is read whole, so it is limited to "
            f"{MAX_JSON_ARRAY_BYTES // (1024 * 1024)} MiB: write larger datasets as JSONL "
            "(one object per line).",
            code="too_large",
        )


def _upload_record(tenant: str, dataset_id: str, version_id: str, upload_id: str) -> DatasetUploadRecord:
    record = deps.stores().datasets.get_dataset_upload(tenant, dataset_id, upload_id)
    if record.version_id != version_id:
        raise NotFound(f"upload '{upload_id}' does not exist.", code="upload_not_found")
    return record


def put_part(
    tenant: str, dataset_id: str, version_id: str, upload_id: str, part: int, body: dataset_api.UploadPart
) -> dict[str, int]:
    _upload_record(tenant, dataset_id, version_id, upload_id)
    if not 1 <= part <= MAX_UPLOAD_PARTS:
        raise InvalidInput(f"part numbers go from 1 to {MAX_UPLOAD_PARTS}.", code="invalid_part")
    data = decode_base64(
        body.content_base64,
        field="content_base64",
        code="invalid_part",
        max_bytes=UPLOAD_PART_BYTES,
        too_large=f"a part is at most {UPLOAD_PART_BYTES} bytes; this one is {{size}}.",
        too_large_code="invalid_part",
    )
    deps.blobs().put_bytes(f"{upload_prefix(tenant, dataset_id, upload_id)}parts/{part:05d}", data)
    deps.stores().datasets.add_upload_part(tenant, dataset_id, upload_id, part, len(data))
    return {"part": part, "size": len(data)}


def _upload_source(
    tenant: str, dataset_id: str, upload: DatasetUploadRecord, parts: int | None
) -> tuple[Any, int]:
    """(a chunk iterator over the uploaded file, its size)."""
    prefix = upload_prefix(tenant, dataset_id, upload.id)
    if parts is None:
        size = blob_stream.object_size(deps.blobs().bucket, f"{prefix}source")
        if size is None:
            raise Conflict(
                "nothing was uploaded: PUT the file to upload_url, or send parts and pass parts=n.",
                code="upload_incomplete",
            )
        return blob_stream.read_stream(deps.blobs().bucket, f"{prefix}source"), size
    received = upload.parts
    missing = [n for n in range(1, parts + 1) if f"{n:05d}" not in received]
    if missing:
        raise Conflict(
            f"part {missing[0]} of {parts} was never received; send it and commit again.",
            code="upload_incomplete",
        )
    keys = [f"{prefix}parts/{n:05d}" for n in range(1, parts + 1)]

    def chunks() -> Iterator[bytes]:
        for key in keys:
            yield from blob_stream.read_stream(deps.blobs().bucket, key)

    return chunks(), sum(received[f"{n:05d}"] for n in range(1, parts + 1))


def commit_upload(
    tenant: str, dataset_id: str, version_id: str, upload_id: str, body: dataset_api.CommitUpload
) -> DatasetVersion:
    """Ingest the uploaded file: at once when small (ready, or 400 with the line at fault), else
    asynchronously (the version answers ``processing``; poll it)."""
    upload = _upload_record(tenant, dataset_id, version_id, upload_id)
    chunks, size = _upload_source(tenant, dataset_id, upload, body.parts)
    _check_size(size, upload.format)
    if size <= SYNC_INGEST_MAX_BYTES:
        _claim(tenant, dataset_id, version_id, upload.format, upload.filename)
        try:
            return _ingest_upload(tenant, dataset_id, version_id, upload, chunks)
        finally:
            _forget_upload(tenant, dataset_id, upload_id)
    version = _claim(tenant, dataset_id, version_id, upload.format, upload.filename).to_api()
    job = {
        "tenant": tenant,
        "dataset_id": dataset_id,
        "version_id": version_id,
        "upload_id": upload_id,
        "parts": body.parts,
    }
    try:
        _start_ingest_job(job)
    except Exception:
        _fail_version(tenant, dataset_id, version_id, UPLOAD_FAILED)
        raise
    return version


def _ingest_upload(
    tenant: str, dataset_id: str, version_id: str, upload: DatasetUploadRecord, chunks: Iterator[bytes]
) -> DatasetVersion:
    """An upload's parts ingested as the version's file (at once, or by the ingest job)."""
    return ingest(
        tenant, dataset_id, version_id, _ChunkStream(chunks), upload.format, filename=upload.filename
    )


def _forget_upload(tenant: str, dataset_id: str, upload_id: str) -> None:
    deps.blobs().delete_prefix(upload_prefix(tenant, dataset_id, upload_id))
    deps.stores().datasets.delete_dataset_upload(tenant, dataset_id, upload_id)


def _start_ingest_job(job: dict[str, Any]) -> None:
    """Ingest a large upload on the template's jobs machine (a 15-minute node-runner task)."""
    deps.machines().start(
        get_settings().jobs_machine_arn, f"ingest-{job['upload_id']}", {"kind": "ingest_dataset", **job}
    )


def run_ingest_job(job: dict[str, Any]) -> dict[str, Any]:
    """The node runner's ``ingest_dataset`` action. A refused file is an outcome, not an error."""
    tenant, dataset_id, version_id = job["tenant"], job["dataset_id"], job["version_id"]
    upload = deps.stores().datasets.get_dataset_upload(tenant, dataset_id, job["upload_id"])
    try:
        chunks, _ = _upload_source(tenant, dataset_id, upload, job.get("parts"))
        version = _ingest_upload(tenant, dataset_id, version_id, upload, chunks)
        outcome: dict[str, Any] = {"status": version.status, "item_count": version.item_count}
    except InvalidInput as exc:
        record = deps.stores().datasets.get_dataset_version(tenant, dataset_id, version_id)
        if record.status == "processing":
            _fail_version(tenant, dataset_id, version_id, exc.message)
        outcome = {"status": "failed", "error": exc.message}
    finally:
        _forget_upload(tenant, dataset_id, job["upload_id"])
    return outcome
