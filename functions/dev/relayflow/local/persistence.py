"""Keeping the embedded stack's DynamoDB items and S3 objects on disk between runs.

moto keeps every table and bucket in memory. Here, while a stack runs:

* every write that changes an item or an object records it as dirty, on the write's own path
  (moto's ``Table.put_item`` / ``Table.delete_item``, ``DynamoDBBackend.update_item``,
  ``S3Backend.put_object`` / ``delete_object``, where every API call that changes an item or an
  object ends — PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems and its
  roll-back, PartiQL; PutObject, CopyObject, CompleteMultipartUpload, DeleteObject(s)). An item is
  copied out right there, as DynamoDB's wire JSON (the write holds moto_shim's DynamoDB lock, so
  the copy is consistent; a copy made later would need that lock); an object only by key;
* a flusher thread, every ``flush_interval`` seconds (0.5), appends the latest state of each dirty
  item, and of each dirty object (its bytes to a file of its own, plus a line of metadata), or its
  deletion, to a journal and fsyncs it. A write acknowledged more than an interval (plus the
  flush itself) before a SIGKILL is on disk; a graceful stop flushes all;
* records are whole images keyed by item or object, so replaying them is idempotent and the newest
  wins; when the journal passes ``compact_bytes`` it is rotated and merged into ``snapshot.log`` in
  the background (a merge of lines by key, without parsing the items).

On start, ``restore()`` reads the snapshot and the journals and puts the items and objects straight
into moto's tables and buckets (which the stack has just created from the template), without moto's
per-attribute size check (each item passed it when it was written; building items through moto's
own constructor made 100,000 items take ~27 s instead of ~2 s). Step Functions executions and their
threads are not kept: the stack settles runs that were in flight (see ``relayflow.local.durable``).

Layout of ``<data dir>/state``: ``snapshot.log``, ``journal/<n>.log`` (``<key JSON>\\t<payload>``
lines; ``null`` for a deletion), ``objects/<2 hex>/<sha256 of bucket and key>.<n>`` (object bytes).

This is the second module (after ``moto_shim``) that touches moto's internals, and like it checks
them first: `check_compatible()` raises MotoIncompatibleError if anything it relies on moved.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gc
import hashlib
import importlib
import inspect
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from relayflow.local.moto_shim import MotoIncompatibleError

__all__ = ["FlushStats", "Persistence", "RestoreReport", "StateError", "check_compatible"]

log = logging.getLogger("relayflow.local.persistence")

FLUSH_INTERVAL_SECONDS = 0.5
COMPACT_BYTES = 32 * 1024 * 1024

_DYNAMODB_TABLE = "moto.dynamodb.models.table"
_DYNAMODB_MODELS = "moto.dynamodb.models"
_DYNAMODB_TYPES = "moto.dynamodb.models.dynamo_type"
_S3_MODELS = "moto.s3.models"
_S3_PARTITION = "aws"

Watch = Callable[[str, dict[str, Any]], bool]


class StateError(RuntimeError):
    """The stored state does not fit this stack (a table or bucket it does not have)."""


@dataclass
class RestoreReport:
    items: int = 0
    expired: int = 0  # items whose TTL had passed: not restored, deleted
    objects: int = 0
    object_bytes: int = 0
    seconds: float = 0.0
    #: (table name, item in wire JSON) of the items the caller's `watch` picked
    watched: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class FlushStats:
    """What the flusher wrote while the stack ran (for the benchmarks)."""

    writes: int = 0  # item and object writes recorded (several may make one record)
    recording_seconds: float = 0.0  # spent inside the writes, copying items out
    flushes: int = 0
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0  # wall time, fsync waits included
    cpu_seconds: float = 0.0  # the flushing thread's own CPU time (what competes with the stack)
    longest_seconds: float = 0.0

    def add(self, records: int, size: int, seconds: float, cpu_seconds: float) -> None:
        self.flushes += 1
        self.records += records
        self.bytes += size
        self.seconds += seconds
        self.cpu_seconds += cpu_seconds
        self.longest_seconds = max(self.longest_seconds, seconds)


# ---------------------------------------------------------------------------------------------
# moto's internals this module relies on


def _module(name: str) -> Any:
    return importlib.import_module(name)


def _parameters(function: Any) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def _incompatible(what: str) -> MotoIncompatibleError:
    import moto

    return MotoIncompatibleError(
        f"moto {getattr(moto, '__version__', '?')}: {what}. relayflow's data directory relies on it "
        "(relayflow/local/persistence.py): install moto in the pinned range (moto>=5.2.3,<5.3), run "
        "with --ephemeral, or update that module."
    )


def check_compatible() -> None:
    """Raise MotoIncompatibleError unless moto's tables, items and objects look as expected."""
    table = _module(_DYNAMODB_TABLE).Table
    types = _module(_DYNAMODB_TYPES)
    backend = _module(_DYNAMODB_MODELS).DynamoDBBackend
    s3 = _module(_S3_MODELS)
    expected = {
        "Table.put_item": (table, "put_item", ("self", "item_attrs")),
        "Table.delete_item": (table, "delete_item", ("self", "hash_key", "range_key")),
        "Table.get_item": (table, "get_item", ("self", "hash_key", "range_key")),
        "DynamoDBBackend.update_item": (backend, "update_item", ("self", "table_name", "key")),
        "S3Backend.put_object": (s3.S3Backend, "put_object", ("self", "bucket_name", "key_name", "value")),
        "S3Backend.delete_object": (s3.S3Backend, "delete_object", ("self", "bucket_name", "key_name")),
    }
    for name, (owner, attribute, leading) in expected.items():
        method = owner.__dict__.get(attribute)
        if method is None or _parameters(method)[: len(leading)] != leading:
            raise _incompatible(f"{name} is gone or has another signature")
    wanted = {"name", "value", "account_id", "region_name", "storage", "etag", "bucket_name"}
    wanted |= {"encryption", "kms_key_id", "bucket_key_enabled", "checksum_value", "checksum_type"}
    if not wanted <= set(_parameters(s3.FakeKey.__init__)):
        raise _incompatible("FakeKey() takes other arguments")
    # The loader below must build what moto's constructors build, and read back what they wrote.
    sample = {
        "pk": {"S": "k"},
        "sk": {"N": "1"},
        "m": {"M": {"l": {"L": [{"N": "1"}, {"NULL": True}]}, "b": {"BOOL": False}}},
    }
    real = types.Item(types.DynamoType(sample["pk"]), types.DynamoType(sample["sk"]), sample)
    stand_in = SimpleNamespace(hash_key_attr="pk", range_key_attr="sk", items=defaultdict(dict))
    Persistence._load_items({"t": stand_in}, [("t", json.dumps(sample))], None, RestoreReport())
    ((loaded,),) = (partition.values() for partition in stand_in.items.values())
    if vars(real).keys() != vars(loaded).keys() or vars(real.hash_key).keys() != {"type", "value"}:
        raise _incompatible("DynamoDB's Item or DynamoType keeps other attributes")
    if real.to_json() != loaded.to_json() or _wire_item(real) != sample:
        raise _incompatible("DynamoDB items are built or serialized differently")
    if (loaded.hash_key, loaded.range_key) != (real.hash_key, real.range_key):
        raise _incompatible("DynamoDB item keys compare differently")


def _make_dynamo_type(types: Any) -> Callable[[dict[str, Any]], Any]:
    """DynamoType(wire) without its constructor's per-value checks (what it does, no more)."""
    new, dynamo_type = object.__new__, types.DynamoType

    def build(wire: dict[str, Any]) -> Any:
        ((kind, value),) = wire.items()
        if kind == "M":
            value = {k: build(v) for k, v in value.items()}
        elif kind == "L":
            value = [build(v) for v in value]
        made = new(dynamo_type)
        made.type, made.value = kind, value
        return made

    return build


@functools.lru_cache(maxsize=1)
def _builders(types: Any) -> Callable[[dict[str, Any]], Any]:
    return _make_dynamo_type(types)


def _ttl_attribute(table: Any) -> str | None:
    ttl = getattr(table, "ttl", None) or {}
    return ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None


def _expired(value: dict[str, Any] | None, now: float) -> bool:
    if not value or "N" not in value:
        return False  # DynamoDB's TTL ignores an attribute that is not a number
    try:
        return float(value["N"]) < now
    except ValueError:
        return False


def _wire(value: Any) -> Any:
    """A DynamoType as DynamoDB's wire JSON (what moto's Item.to_json gives, without its copies)."""
    if not hasattr(value, "type"):
        return value
    kind, inner = value.type, value.value
    if kind == "M":
        return {"M": {k: _wire(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_wire(v) for v in inner]}
    if kind == "B" and isinstance(inner, bytes):
        return {"B": base64.b64encode(inner).decode()}
    if isinstance(inner, list):
        return {kind: list(inner)}
    return {kind: inner}


def _wire_item(item: Any) -> dict[str, Any]:
    return {name: _wire(value) for name, value in item.attrs.items()}


# ---------------------------------------------------------------------------------------------
# the hooks: writes mark keys dirty

_active: Persistence | None = None
_originals: list[tuple[Any, str, Any]] = []


def _after(owner: Any, attribute: str, mark: Callable[..., None]) -> None:
    original = owner.__dict__[attribute]

    @functools.wraps(original)
    def marked(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        recorder = _active
        if recorder is not None:
            try:
                mark(recorder, result, *args, **kwargs)
            except Exception:  # never fail the write itself; the next start would miss it
                log.exception("could not record a write for the data directory")
        return result

    _originals.append((owner, attribute, original))
    setattr(owner, attribute, marked)


def _mark_put(recorder: Persistence, item: Any, table: Any, *args: Any, **kwargs: Any) -> None:
    recorder._mark_item(table, item.hash_key, item.range_key, item)


def _mark_delete(recorder: Persistence, _result: Any, table: Any, hash_key: Any, range_key: Any) -> None:
    recorder._mark_item(table, hash_key, range_key, None)


def _mark_update(
    recorder: Persistence, item: Any, backend: Any, table_name: str, *args: Any, **kwargs: Any
) -> None:
    recorder._mark_item(backend.tables.get(table_name), item.hash_key, item.range_key, item)


def _mark_object(
    recorder: Persistence, _result: Any, backend: Any, bucket_name: str, key_name: str, *args: Any, **kw: Any
) -> None:
    if backend.account_id == recorder.account_id:
        recorder._mark_object(bucket_name, key_name)


def _install() -> None:
    table = _module(_DYNAMODB_TABLE).Table
    s3 = _module(_S3_MODELS).S3Backend
    _after(table, "put_item", _mark_put)
    _after(table, "delete_item", _mark_delete)
    _after(_module(_DYNAMODB_MODELS).DynamoDBBackend, "update_item", _mark_update)
    _after(s3, "put_object", _mark_object)
    _after(s3, "delete_object", _mark_object)


def _uninstall() -> None:
    while _originals:
        owner, attribute, original = _originals.pop()
        setattr(owner, attribute, original)


# ---------------------------------------------------------------------------------------------
# the files


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _records(path: Path) -> Iterator[tuple[str, str]]:
    """(key, payload) of each complete line; a torn last line (a crash mid-write) is left out."""
    with path.open("r", encoding="utf-8", newline="\n") as lines:
        for line in lines:
            if not line.endswith("\n"):
                log.warning("%s ends with an incomplete record (cut off by a crash): ignored", path)
                return
            key, _, payload = line.partition("\t")
            yield key, payload[:-1]


_ITEM_PREFIX = '["d", "'


def _object_key(bucket: str, name: str) -> str:
    return json.dumps(["o", bucket, name])


def _item_key(table: str, hash_key: Any, range_key: Any) -> str:
    return json.dumps(["d", table, _wire(hash_key), None if range_key is None else _wire(range_key)])


class Persistence:
    """The state of one stack (an account and a region of moto) in ``directory``.

    ``restore()`` once, before the stack serves; ``start()`` to record writes from then on;
    ``close()`` to flush everything and stop. ``flush()`` writes what is dirty now (tests)."""

    def __init__(
        self,
        directory: Path,
        *,
        account_id: str,
        region: str,
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
        compact_bytes: int = COMPACT_BYTES,
    ) -> None:
        self.directory = directory
        self.account_id = account_id
        self.region = region
        self.flush_interval = flush_interval
        self.compact_bytes = compact_bytes
        self.journal_dir = directory / "journal"
        self.objects_dir = directory / "objects"
        self.snapshot = directory / "snapshot.log"
        self._dirty_items: dict[str, str] = {}  # item key -> its state when last written
        self._dirty_objects: set[tuple[str, str]] = set()
        self._mark_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time (the thread, flush(), close())
        self._object_files: dict[tuple[str, str], str] = {}
        self._file_counter = time.time_ns()
        self._journal_number = 0
        self._journal: Any = None
        self._journal_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._compactor: threading.Thread | None = None
        self.stats = FlushStats()

    # ---------------------------------------------------------------- marks (on the write path)

    def _mark_item(self, table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
        """Called inside the write (and so inside moto_shim's DynamoDB lock, which every request
        holds): the item is copied out as it is now, in wire JSON. Copying it later, in the flusher,
        would need that lock, for which the flusher waited up to seconds behind a busy batch's
        requests."""
        if table is None or table.account_id != self.account_id or table.region_name != self.region:
            return
        started = time.perf_counter()
        key = _item_key(table.name, hash_key, range_key)
        payload = "null" if item is None else json.dumps(_wire_item(item), separators=(",", ":"))
        with self._mark_lock:
            self._dirty_items[key] = payload
            self.stats.writes += 1
            self.stats.recording_seconds += time.perf_counter() - started

    def _mark_object(self, bucket: str, name: str) -> None:
        with self._mark_lock:
            self._dirty_objects.add((bucket, name))
            self.stats.writes += 1

    # ---------------------------------------------------------------- backends

    def _tables(self) -> dict[str, Any]:
        tables: dict[str, Any] = (
            _module(_DYNAMODB_MODELS).dynamodb_backends[self.account_id][self.region].tables
        )
        return tables

    def _s3(self) -> Any:
        return _module(_S3_MODELS).s3_backends[self.account_id][_S3_PARTITION]

    # ---------------------------------------------------------------- restoring

    def restore(self, watch: Watch | None = None) -> RestoreReport:
        """Put the stored items and objects into moto's (empty, just created) tables and buckets.
        Raises StateError, before changing anything, if one of them does not exist."""
        check_compatible()
        started = time.perf_counter()
        for path in (self.directory, self.journal_dir, self.objects_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "snapshot.tmp").unlink()
        latest: dict[str, str] = {}
        for path in self._log_files():
            latest.update(_records(path))
        journals = self._journals()
        self._journal_number = journals[-1][0] + 1 if journals else 1
        report = RestoreReport()
        collected = gc.isenabled()
        gc.disable()  # millions of small objects: the collector would rescan them again and again
        try:
            self._load(latest, watch, report)
        finally:
            if collected:
                gc.enable()
            # What was loaded lives as long as the stack: keep the collector from walking it.
            gc.freeze()
        self._remove_stray_objects()
        report.seconds = time.perf_counter() - started
        log.info(
            "restored %d items and %d objects (%.1f MiB) in %.2f s",
            report.items,
            report.objects,
            report.object_bytes / 2**20,
            report.seconds,
        )
        return report

    def _log_files(self) -> list[Path]:
        return ([self.snapshot] if self.snapshot.exists() else []) + [path for _, path in self._journals()]

    def _journals(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.journal_dir.glob("*.log") if self.journal_dir.exists() else []:
            with contextlib.suppress(ValueError):
                found.append((int(path.stem), path))
        return sorted(found)

    def _load(self, latest: dict[str, str], watch: Watch | None, report: RestoreReport) -> None:
        tables = self._tables()
        s3 = self._s3()
        missing: set[str] = set()
        items: list[tuple[str, str]] = []
        objects: list[tuple[list[Any], str]] = []
        for raw_key, payload in latest.items():
            if payload == "null":
                continue
            if raw_key.startswith(_ITEM_PREFIX):  # as _item_key writes it; table names need no escapes
                table_name = raw_key[len(_ITEM_PREFIX) : raw_key.index('"', len(_ITEM_PREFIX))]
            else:
                key = json.loads(raw_key)
                if key[0] != "d":
                    if key[1] not in s3.buckets:
                        missing.add(f"bucket {key[1]}")
                    objects.append((key, payload))
                    continue
                table_name = key[1]
            if table_name not in tables:
                missing.add(f"table {table_name}")
            items.append((table_name, payload))
        if missing:
            raise StateError(
                f"the stored state has a {', '.join(sorted(missing))} that this stack does not create "
                "(was it written with another template or stack name?)"
            )
        latest.clear()
        expired: list[tuple[str, dict[str, Any]]] = []
        self._load_items(tables, items, watch, report, expired)
        for table_name, attrs in expired:  # their deletion goes into the journal at the first flush
            table = tables[table_name]
            keys = [attrs[table.hash_key_attr], attrs[table.range_key_attr] if table.range_key_attr else None]
            self._dirty_items[json.dumps(["d", table_name, *keys])] = "null"
        report.expired = len(expired)
        for key, payload in objects:
            report.object_bytes += self._load_object(s3, key[1], key[2], json.loads(payload))
            report.objects += 1

    @staticmethod
    def _load_items(
        tables: dict[str, Any],
        records: list[tuple[str, str]],
        watch: Watch | None,
        report: RestoreReport,
        expired: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """The hot loop of a start. moto's Item is built as its own __deepcopy__ builds one: without
        LimitedSizeDict's size check on every attribute (quadratic in the attributes; the item passed
        it when it was written). One hash-key object and partition lookup per partition, not item."""
        types = _module(_DYNAMODB_TYPES)
        build, new, setitem, loads = _builders(types), object.__new__, dict.__setitem__, json.loads
        item_class, values_class = types.Item, types.LimitedSizeDict
        partitions: dict[tuple[str, str, Any], tuple[Any, Any]] = {}
        now = time.time()
        for table_name, payload in records:
            table = tables[table_name]
            attrs = loads(payload)
            ttl = _ttl_attribute(table)
            if ttl is not None and expired is not None and _expired(attrs.get(ttl), now):
                # DynamoDB deletes an item some time after its TTL passed; here, at the next start.
                expired.append((table_name, attrs))
                continue
            ((kind, value),) = attrs[table.hash_key_attr].items()
            partition = partitions.get((table_name, kind, value))
            if partition is None:
                hash_key = build({kind: value})
                partition = partitions[(table_name, kind, value)] = (
                    hash_key,
                    table.items[hash_key] if table.range_key_attr else None,
                )
            item = new(item_class)
            item.hash_key = partition[0]
            item.range_key = build(attrs[table.range_key_attr]) if table.range_key_attr else None
            values = values_class.__new__(values_class)
            for name, wire in attrs.items():
                setitem(values, name, build(wire))
            item.attrs = values
            if partition[1] is None:
                table.items[partition[0]] = item
            else:
                partition[1][item.range_key] = item
            report.items += 1
            if watch is not None and watch(table_name, attrs):
                report.watched.append((table_name, attrs))

    def _load_object(self, s3: Any, bucket_name: str, name: str, meta: dict[str, Any]) -> int:
        models = _module(_S3_MODELS)
        data = (self.objects_dir / meta["file"]).read_bytes()
        bucket = s3.buckets[bucket_name]
        algorithm, checksum, checksum_type = meta.get("checksum") or (None, None, None)
        key = models.FakeKey(
            name=name,
            value=data,
            account_id=self.account_id,
            region_name=s3.region_name,
            storage=meta.get("storage"),
            etag=meta.get("etag"),
            bucket_name=bucket_name,
            encryption=meta.get("encryption"),
            kms_key_id=meta.get("kms_key_id"),
            bucket_key_enabled=meta.get("bucket_key_enabled"),
            checksum_value=checksum,
            checksum_type=checksum_type,
        )
        key.checksum_algorithm = algorithm
        key.set_metadata(dict(meta.get("metadata") or {}))
        key.last_modified = datetime.fromisoformat(meta["modified"])
        bucket.keys.setlist(name, [key])
        self._object_files[(bucket_name, name)] = meta["file"]
        return len(data)

    def _remove_stray_objects(self) -> None:
        """Object files no record points to: written by a flush that a crash cut short."""
        kept = set(self._object_files.values())
        for path in self.objects_dir.glob("*/*"):
            if f"{path.parent.name}/{path.name}" not in kept:
                with contextlib.suppress(OSError):
                    path.unlink()

    # ---------------------------------------------------------------- recording

    def start(self) -> None:
        """Record every write from now on (a flush every flush_interval seconds)."""
        global _active
        if _active is not None:
            raise RuntimeError("another stack's state is being recorded in this process")
        check_compatible()
        _install()
        _active = self
        self._open_journal()
        if any(number < self._journal_number for number, _ in self._journals()):
            self._start_compaction()  # what the last run left in its journal (it was killed)
        self._thread = threading.Thread(target=self._run, name="relayflow-persistence", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:
                log.exception("writing the state to %s failed; retrying", self.directory)

    def close(self) -> None:
        """Stop recording, write everything still dirty, and merge the journal into the snapshot."""
        global _active
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if _active is self:
            _active = None
            _uninstall()
            gc.unfreeze()  # what restore() kept from the collector may go now
        try:
            if self._journal is not None:
                self.flush()  # after the hooks are gone: nothing can be marked after it
        finally:
            if self._compactor is not None:
                self._compactor.join()
                self._compactor = None
            if self._journal is not None:
                self._rotate()
                self._compact(self._journal_number)
                self._journal.close()
                self._journal = None
                with contextlib.suppress(FileNotFoundError):
                    (self.journal_dir / f"{self._journal_number:08d}.log").unlink()

    def flush(self) -> None:
        """Write the current state of everything marked dirty, durably (fsync)."""
        with self._flush_lock:
            started, cpu_started = time.perf_counter(), time.thread_time()
            with self._mark_lock:
                items, self._dirty_items = self._dirty_items, {}
                objects, self._dirty_objects = self._dirty_objects, set()
            if not items and not objects:
                return
            end = self._journal.tell()
            try:
                lines = [f"{key}\t{payload}\n" for key, payload in items.items()]
                obsolete: list[str] = []
                lines += self._object_lines(objects, obsolete)
                data = "".join(lines).encode()
                view = memoryview(data)
                while view:  # an unbuffered write may take less than all
                    view = view[self._journal.write(view) :]
                os.fsync(self._journal.fileno())
            except BaseException:
                # Nothing half-written stays (the next record would be glued to it), and what was to
                # be written is dirty again, unless written again since (the newer state wins).
                with contextlib.suppress(OSError):
                    os.ftruncate(self._journal.fileno(), end)
                with self._mark_lock:
                    for key, payload in items.items():
                        self._dirty_items.setdefault(key, payload)
                    self._dirty_objects |= objects
                raise
            self._journal_bytes += len(data)
            for name in obsolete:  # superseded by records now on disk
                with contextlib.suppress(FileNotFoundError):
                    (self.objects_dir / name).unlink()
            if self._journal_bytes >= self.compact_bytes and (
                self._compactor is None or not self._compactor.is_alive()
            ):
                self._rotate()
                self._start_compaction()
            self.stats.add(
                len(lines), len(data), time.perf_counter() - started, time.thread_time() - cpu_started
            )

    def _object_lines(self, dirty: Iterable[tuple[str, str]], obsolete: list[str]) -> list[str]:
        s3 = self._s3()
        models = _module(_S3_MODELS)
        lines: list[str] = []
        directories: set[Path] = set()
        for bucket_name, name in dirty:
            bucket = s3.buckets.get(bucket_name)
            current = None if bucket is None else bucket.keys.get(name)
            previous = self._object_files.get((bucket_name, name))
            if not isinstance(current, models.FakeKey):
                if previous is None:
                    continue
                del self._object_files[(bucket_name, name)]
                obsolete.append(previous)
                lines.append(f"{_object_key(bucket_name, name)}\tnull\n")
                continue
            try:
                data = current.value
                meta = {
                    "etag": current.etag.strip('"'),
                    "modified": current.last_modified.isoformat(),
                    "metadata": dict(current.metadata),
                    "storage": current.storage_class,
                    "encryption": current.encryption,
                    "kms_key_id": current.kms_key_id,
                    "bucket_key_enabled": current.bucket_key_enabled,
                    "checksum": [current.checksum_algorithm, current.checksum_value, current.checksum_type],
                }
            except ValueError:
                # Replaced or deleted while being read (moto closed its buffer): that write marks
                # the key again, and the next flush writes what it left.
                continue
            digest = hashlib.sha256(f"{bucket_name}\0{name}".encode()).hexdigest()
            self._file_counter += 1
            file_name = f"{digest[:2]}/{digest}.{self._file_counter:x}"
            path = self.objects_dir / file_name
            path.parent.mkdir(mode=0o700, exist_ok=True)
            _write_file(path, data)
            directories.add(path.parent)
            meta["file"] = file_name
            meta["size"] = len(data)
            self._object_files[(bucket_name, name)] = file_name
            if previous is not None:
                obsolete.append(previous)
            lines.append(f"{_object_key(bucket_name, name)}\t{json.dumps(meta)}\n")
        for directory in directories:
            _fsync_directory(directory)
        return lines

    # ---------------------------------------------------------------- journal and snapshot

    def _open_journal(self) -> None:
        path = self.journal_dir / f"{self._journal_number:08d}.log"
        self._journal = open(path, "ab", buffering=0)  # noqa: SIM115 - open for the stack's life
        os.chmod(path, 0o600)
        self._journal_bytes = 0
        _fsync_directory(self.journal_dir)

    def _rotate(self) -> None:
        """Start the next journal file (the flush lock is held, or nothing flushes any more)."""
        self._journal.close()
        self._journal_number += 1
        self._open_journal()

    def _start_compaction(self) -> None:
        upto = self._journal_number
        self._compactor = threading.Thread(
            target=self._compact_logged, args=(upto,), name="relayflow-compaction", daemon=True
        )
        self._compactor.start()

    def _compact_logged(self, upto: int) -> None:
        try:
            self._compact(upto)
        except Exception:
            log.exception("merging the journal into %s failed (it is kept; retried later)", self.snapshot)

    def _compact(self, upto: int) -> None:
        """Merge the snapshot and the journals numbered below ``upto`` into a new snapshot."""
        journals = [path for number, path in self._journals() if number < upto]
        if not any(path.stat().st_size for path in journals):
            for path in journals:  # nothing was written since the last merge
                path.unlink()
            return
        started = time.perf_counter()
        merged: dict[str, str] = {}
        for path in ([self.snapshot] if self.snapshot.exists() else []) + journals:
            merged.update(_records(path))
        temporary = self.directory / "snapshot.tmp"
        with open(temporary, "w", encoding="utf-8", newline="\n") as out:
            os.chmod(temporary, 0o600)
            out.writelines(f"{key}\t{payload}\n" for key, payload in merged.items() if payload != "null")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.snapshot)
        _fsync_directory(self.directory)
        for path in journals:
            path.unlink()
        log.info(
            "merged %d journal file(s) into %s: %d records in %.2f s",
            len(journals),
            self.snapshot.name,
            len(merged),
            time.perf_counter() - started,
        )
