"""A batch run's own item list and its index, written in bounded memory, read in O(1) per item.

The list (``<execution prefix>items.json``) has the format of a dataset version's list
(domain/item_list.py, written by services/dataset_service.py): it is what the batch machine's
``ItemReader`` reads and what the results API pages through by byte offset. Its index
(``items.index``, domain/item_index.py) says where the line of an id is, so ``GET …/items/{item}``
costs three small ranged GETs whatever the list's length.

``IndexedListWriter`` writes both as a stream: the list goes out in 5 MiB multipart parts, the
index lines wait in one buffer per bucket, spilled to temporary files past ``SPILL_BYTES``, and
the index is uploaded once the list is closed (header, then each bucket in turn).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

from relayflow_runtime.adapters import blob_stream
from relayflow_runtime.domain import item_index, item_list
from relayflow_runtime.domain.batch import ItemEntry
from relayflow_runtime.errors import NotFound
from relayflow_runtime.services import dataset_service, deps

#: Index lines held in memory before they are spilled to one temporary file per bucket (a
#: million items spill ~160 times; memory stays this buffer, whatever the list).
SPILL_BYTES = 256 * 1024


def list_key(prefix: str) -> str:
    return f"{prefix}items.json"


def index_key(prefix: str) -> str:
    return f"{prefix}items.index"


class _IndexBuilder:
    def __init__(self, buckets: int) -> None:
        self.buckets = buckets
        self._pending: dict[int, bytearray] = {}
        self._held = 0
        self._spill_dir: tempfile.TemporaryDirectory[str] | None = None

    def add(self, item_id: str, offset: int, length: int) -> None:
        line = item_index.encode_line(item_id, offset, length)
        self._pending.setdefault(item_index.bucket_of(item_id, self.buckets), bytearray()).extend(line)
        self._held += len(line)
        if self._held >= SPILL_BYTES:
            self._spill()

    def _path(self, bucket: int) -> str:
        assert self._spill_dir is not None
        return os.path.join(self._spill_dir.name, f"{bucket:05d}")

    def _spill(self) -> None:
        if self._spill_dir is None:
            self._spill_dir = tempfile.TemporaryDirectory(prefix="relayflow-index-")
        for bucket, lines in self._pending.items():
            with open(self._path(bucket), "ab") as out:
                out.write(lines)
        self._pending.clear()
        self._held = 0

    def _bucket(self, bucket: int) -> bytes:
        spilled = b""
        if self._spill_dir is not None and os.path.exists(self._path(bucket)):
            with open(self._path(bucket), "rb") as spill:
                spilled = spill.read()
        return spilled + bytes(self._pending.get(bucket, b""))

    def _size(self, bucket: int) -> int:
        spilled = 0
        if self._spill_dir is not None and os.path.exists(self._path(bucket)):
            spilled = os.path.getsize(self._path(bucket))
        return spilled + len(self._pending.get(bucket, b""))

    def write(self, key: str) -> None:
        with blob_stream.ObjectWriter(deps.blobs().bucket, key, "application/octet-stream") as out:
            out.write(item_index.header(self._size(b) for b in range(self.buckets)))
            for bucket in range(self.buckets):
                out.write(self._bucket(bucket))

    def discard(self) -> None:
        self._pending.clear()
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None


class IndexedListWriter:
    """A run's item list and its index, written together. ``expected`` bounds the entries (it sizes
    the index's buckets). Entries whose item is stored apart (``ref``) are copied into the run's
    own prefix, so the run keeps its items whatever happens to the source later."""

    def __init__(self, prefix: str, expected: int) -> None:
        self.prefix = prefix
        self.buckets = item_index.bucket_count(expected)
        self._list = dataset_service.ItemListWriter(list_key(prefix))
        self._index = _IndexBuilder(self.buckets)
        self.large = 0
        self.largest = 0

    @property
    def count(self) -> int:
        return self._list.count

    def add(self, entry: dict[str, Any]) -> None:
        """Add an entry, numbered with its ordinal ``n`` in this list (domain/batch.py ItemEntry)."""
        if "ref" in entry:
            target = f"{self.prefix}large/{self._list.count:07d}.json"
            deps.blobs().copy(entry["ref"], target)
            entry = {"id": entry["id"], "ref": target}
            self.large += 1
        entry = {"id": entry["id"], **{k: entry[k] for k in ("item", "ref") if k in entry}, "n": self.count}
        offset, length = self._list.add(entry)
        self._index.add(str(entry["id"]), offset, length)
        self.largest = max(self.largest, length)

    def close(self) -> int:
        """Finish the list and upload the index; returns how many entries were written."""
        try:
            self._list.close()
            self._index.write(index_key(self.prefix))
        finally:
            self._index.discard()
        return self._list.count

    def abort(self) -> None:
        self._list.abort()
        self._index.discard()
        deps.blobs().delete_prefix(f"{self.prefix}large/")


def entries(key: str, offset: int = 0, window: int | None = None) -> Iterator[tuple[int, ItemEntry]]:
    """(offset of the line, entry) of an item list from byte ``offset``, streamed (in ranged reads
    of ``window`` bytes when given)."""
    for start, _, entry in dataset_service.iter_entries(key, offset, window):
        yield start, ItemEntry.model_validate(entry)


def find(prefix: str, buckets: int, item_id: str) -> ItemEntry | None:
    """The entry of ``item_id`` in the run's list, or None: three ranged GETs (two of the index,
    one of the list), whatever the list's length."""
    blobs = deps.blobs()
    bucket = item_index.bucket_of(item_id, buckets)
    try:
        bounds = item_index.bucket_range(blobs.get_range(index_key(prefix), *item_index.header_range(bucket)))
        if bounds is None:
            return None
        place = item_index.find_in_bucket(blobs.get_range(index_key(prefix), *bounds), item_id)
        if place is None:
            return None
        line = blobs.get_range(list_key(prefix), place[0], place[0] + place[1] - 1)
    except NotFound:
        return None
    entry = item_list.parse_entry_line(line)
    return ItemEntry.model_validate(entry) if entry is not None else None


def copy(source_prefix: str, target_prefix: str) -> None:
    """A run's list and index as another run's (two server-side copies: no item is read)."""
    blobs = deps.blobs()
    blobs.copy(list_key(source_prefix), list_key(target_prefix))
    blobs.copy(index_key(source_prefix), index_key(target_prefix))


def item_of(entry: ItemEntry) -> dict[str, Any]:
    """The item of an entry, read from its own object when it is stored apart."""
    if entry.ref is not None:
        value: dict[str, Any] = deps.blobs().get_json(entry.ref)
        return value
    return entry.item or {}
