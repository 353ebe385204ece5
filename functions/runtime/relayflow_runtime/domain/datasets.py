"""Dataset files (JSONL, CSV, JSON array) and the item filters of batch runs.

Files are read as a stream: JSONL and CSV are parsed line by line from ``stream.read(n)`` chunks
(a botocore ``StreamingBody`` works), so memory stays bounded by :data:`MAX_LINE_BYTES` however
large the file (the ids already seen, for duplicates, go to a temporary file past
:data:`IDS_IN_MEMORY` items); a JSON array is read whole (bounded by :data:`MAX_FILE_BYTES`).
Every error is a :class:`DatasetFileError` whose message starts with the 1-based line number of
the file where the problem is, e.g. ``line 3: invalid JSON (Expecting ',' delimiter at column 12)``.

Every item is a JSON object (a dict). Files must be UTF-8, with or without a byte-order mark.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import jmespath
from jmespath.exceptions import IncompleteExpressionError, JMESPathError, LexerError, ParseError
from jmespath.functions import Functions
from jmespath.visitor import TreeInterpreter

from relayflow_runtime.schemas.json_text import depth_of

__all__ = [
    "IDS_IN_MEMORY",
    "MAX_FILE_BYTES",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_LIST_STAGES",
    "MAX_FILTER_WORK",
    "MAX_ITEMS_PER_VERSION",
    "MAX_ITEM_DEPTH",
    "MAX_ITEM_ID_LENGTH",
    "MAX_LINE_BYTES",
    "SUPPORTED_FORMATS",
    "DatasetFileError",
    "FilterError",
    "InputFieldError",
    "ParsedItem",
    "check_input_field",
    "compile_filter",
    "detect_format",
    "input_text",
    "item_id",
    "iter_items",
    "parse_items",
]

#: Largest accepted dataset file.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Most items in one dataset version.
MAX_ITEMS_PER_VERSION = 1_000_000
#: Longest line of a JSONL or CSV file (one item; bounds the memory used while streaming).
MAX_LINE_BYTES = 8 * 1024 * 1024
#: How deep an item may nest (objects and arrays, the item itself included: ``{"a": [1]}`` is 2):
#: an item is read back in pages, run through templates and answered in results, all well within
#: this (pydantic stops at 255 levels).
MAX_ITEM_DEPTH = 64
#: Longest explicit item ``id``.
MAX_ITEM_ID_LENGTH = 256
#: Longest filter expression.
MAX_FILTER_LENGTH = 4096
#: Most places a filter builds a list or object (``[a, b]``, ``{k: v}``, ``[]``, ``[*]``, ``*``,
#: ``[?...]``): each may multiply the work of what follows, so a chain of them (``[@,@][]`` ...)
#: doubles per stage. Checked when the batch is submitted (400 ``filter_too_complex``).
MAX_FILTER_LIST_STAGES = 16
#: Work one item's evaluation may take (compile_filter): a step per expression node visited, plus
#: the length of each list or object built, plus one per 64 characters of each string a function
#: builds. Beyond it the run fails, naming the item (``filter_too_costly``). About 0.1-0.3 s of CPU.
MAX_FILTER_WORK = 200_000

SUPPORTED_FORMATS = ("jsonl", "csv", "json")

_CHUNK = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_JSON_WS = re.compile(r"[ \t\n\r]*")


class DatasetFileError(ValueError):
    """A dataset file that cannot be used.

    ``code``: ``malformed_file`` (bad JSON/CSV, not UTF-8, an item that is not an object, a bad
    ``id``), ``duplicate_id``, ``too_large``, ``unsupported_format`` or ``empty_file``.
    ``line`` is the 1-based line of the file (None when the problem is not on one line);
    ``reason`` the message without the line prefix. ``str(error)`` is ``"line N: reason"``.
    """

    def __init__(self, code: str, reason: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.code = code
        self.reason = reason
        self.line = line


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One item of a file: ``index`` (0-based position among the items), ``line`` (1-based line
    where it starts), ``id`` (see :func:`item_id`) and ``data`` (the object)."""

    index: int
    line: int
    id: str
    data: dict[str, Any]


def detect_format(filename: str) -> str:
    """``"jsonl"`` for ``.jsonl``/``.ndjson``, ``"csv"`` for ``.csv``, ``"json"`` for ``.json``
    (case-insensitive); anything else raises ``unsupported_format``."""
    name = filename.rsplit("/", 1)[-1].lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"), (".json", "json")):
        if name.endswith(suffix):
            return fmt
    raise DatasetFileError(
        "unsupported_format",
        f"cannot tell the format of {filename!r}: dataset files are .jsonl, .ndjson, .csv or .json",
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__  # pragma: no cover


def item_id(item: Mapping[str, Any], index: int) -> str:
    """The id of an item: its ``id`` field as a string (a string as it is, an integer in
    decimal) when present and not empty or blank; otherwise ``item-NNNNNN`` from its 0-based
    ``index`` in the file (``index + 1``, at least 6 digits: the first item is ``item-000001``),
    so re-uploading the same file gives the same ids.

    Raises :class:`DatasetFileError` ``malformed_file`` (without a line) for an ``id`` of another
    type or longer than :data:`MAX_ITEM_ID_LENGTH`.
    """
    value = item.get("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"item-{index + 1:06d}"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DatasetFileError(
            "malformed_file", f"the 'id' field must be a string or an integer, not {_json_type(value)}"
        )
    if len(value) > MAX_ITEM_ID_LENGTH:
        raise DatasetFileError(
            "malformed_file", f"the 'id' field is longer than {MAX_ITEM_ID_LENGTH} characters"
        )
    return value


# --------------------------------------------------------------------------- reading


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line with its newline) from ``stream.read`` chunks, enforcing the size
    limits."""
    buffer = bytearray()
    total = 0
    line = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > MAX_FILE_BYTES:
            raise DatasetFileError("too_large", f"the file is larger than {MAX_FILE_BYTES} bytes", line + 1)
        searched = len(buffer)
        buffer += chunk
        start = 0
        while True:
            newline = buffer.find(b"\n", max(start, searched))
            if newline < 0:
                break
            line += 1
            if newline + 1 - start > MAX_LINE_BYTES:
                raise DatasetFileError("too_large", f"the line is longer than {MAX_LINE_BYTES} bytes", line)
            yield line, bytes(buffer[start : newline + 1])
            start = newline + 1
        del buffer[:start]
        if len(buffer) > MAX_LINE_BYTES:
            raise DatasetFileError("too_large", f"the line is longer than {MAX_LINE_BYTES} bytes", line + 1)
    if buffer:
        yield line + 1, bytes(buffer)


def _decode(raw: bytes, line: int) -> str:
    if line == 1:
        if raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        elif raw.startswith(_UTF16_BOMS):
            raise DatasetFileError("malformed_file", "the file is UTF-16 text: save it as UTF-8", line)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(raw[: exc.start].decode("utf-8", "replace")) + 1
        raise DatasetFileError(
            "malformed_file",
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}): save the file as UTF-8",
            line,
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"the number {literal[:40]} is too large for a 64-bit float")
    return value


# ``1e999`` parses as infinity, which no later JSON (answers, stores, events) can carry.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "invalid JSON (nested too deeply)"
    return f"invalid JSON ({exc})"


def _jsonl(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in _lines(stream):
        text = _decode(raw, line)
        if not text.strip(" \t\r\n"):
            continue
        try:
            value = _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            raise DatasetFileError("malformed_file", _json_error(exc), line) from None
        if not isinstance(value, dict):
            raise DatasetFileError(
                "malformed_file", f"each line must be a JSON object, not {_json_type(value)}", line
            )
        yield line, value


def _csv(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    consumed = 0

    def text_lines() -> Iterator[str]:
        nonlocal consumed
        for line, raw in _lines(stream):
            consumed = line
            yield _decode(raw, line)

    reader = csv.reader(text_lines(), strict=True)
    header: list[str] | None = None
    while True:
        start = consumed + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            message = str(exc)
            if "field limit" in message:
                reason = f"a CSV field is too long ({message})"
                raise DatasetFileError("too_large", reason, consumed) from None
            raise DatasetFileError("malformed_file", f"invalid CSV ({message})", consumed) from None
        if not row:
            continue  # blank line
        if header is None:
            for column, name in enumerate(row, start=1):
                if not name.strip():
                    raise DatasetFileError(
                        "malformed_file",
                        f"the CSV header row gives column {column} no name: every column needs one",
                        start,
                    )
            duplicates = sorted({name for name in row if row.count(name) > 1})
            if duplicates:
                raise DatasetFileError(
                    "malformed_file", f"the CSV header row repeats column {duplicates[0]!r}", start
                )
            header = row
            continue
        if len(row) != len(header):
            raise DatasetFileError(
                "malformed_file",
                f"the row has {len(row)} field{'' if len(row) == 1 else 's'} "
                f"but the header has {len(header)}",
                start,
            )
        yield start, dict(zip(header, row, strict=True))


def _json_array(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    data = bytearray()
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_FILE_BYTES:
            raise DatasetFileError("too_large", f"the file is larger than {MAX_FILE_BYTES} bytes")
    raw = bytes(data)
    del data
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    elif raw.startswith(_UTF16_BOMS):
        raise DatasetFileError("malformed_file", "the file is UTF-16 text: save it as UTF-8", 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DatasetFileError(
            "malformed_file", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): save the file as UTF-8", line
        ) from None
    del raw

    line = 1
    counted = 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def fail(pos: int, reason: str) -> DatasetFileError:
        return DatasetFileError("malformed_file", reason, line_at(pos))

    pos = _JSON_WS.match(text, 0).end()  # type: ignore[union-attr]
    if pos == len(text):
        return
    if text[pos] != "[":
        raise fail(pos, "a .json dataset must be a JSON array of objects: [{...}, {...}]")
    pos = _JSON_WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            item_line = line_at(pos)
            try:
                value, pos = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise DatasetFileError("malformed_file", _json_error(exc), exc.lineno) from None
            except (ValueError, RecursionError) as exc:
                raise DatasetFileError("malformed_file", _json_error(exc), item_line) from None
            if not isinstance(value, dict):
                raise DatasetFileError(
                    "malformed_file",
                    f"each element of the array must be a JSON object, not {_json_type(value)}",
                    item_line,
                )
            yield item_line, value
            pos = _JSON_WS.match(text, pos).end()  # type: ignore[union-attr]
            if text.startswith(",", pos):
                pos = _JSON_WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            if pos == len(text):
                raise fail(pos, "invalid JSON (the array is never closed with ']')")
            raise fail(pos, "invalid JSON (Expecting ',' delimiter or ']')")
    pos = _JSON_WS.match(text, pos).end()  # type: ignore[union-attr]
    if pos != len(text):
        raise fail(pos, "invalid JSON (extra data after the array)")


_Reader = Callable[[IO[bytes]], Iterator[tuple[int, dict[str, Any]]]]
_READERS: dict[str, _Reader] = {
    "jsonl": _jsonl,
    "csv": _csv,
    "json": _json_array,
}


#: Ids of one file kept in a dict for the duplicate check; past this many they move to a temporary
#: SQLite file (:class:`_SeenIds`), so memory does not grow with the number of items.
IDS_IN_MEMORY = 10_000
#: SQLite's page cache for those ids, in KiB (the rest of the table stays on disk).
_ID_CACHE_KIB = 2048


class _SeenIds:
    """The ids of a file seen so far, each with the line where it was first used, in bounded memory.

    The first :data:`IDS_IN_MEMORY` ids are kept in a dict (small files never touch the disk);
    then all of them move to a table in a temporary SQLite file (a B-tree keyed by the id, with
    no journal and a page cache of :data:`_ID_CACHE_KIB` KiB) in a directory of its own, which
    ``close()`` (or leaving ``with``) removes. On disk the table takes up to about 1.35 times the
    bytes of the ids (measured: 662 MiB for a million random 520-byte ids, the worst a
    :data:`MAX_FILE_BYTES` file allows: more than Lambda's default 512 MB of /tmp, so the function
    that ingests large files has more, see template.yaml).
    """

    def __init__(self) -> None:
        self._memory: dict[str, int] | None = {}
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None

    def first_line(self, identifier: str, line: int) -> int | None:
        """Record that ``identifier`` is used on ``line``; if it was used before, return the line
        where it first was instead (and record nothing)."""
        memory = self._memory
        if memory is not None:
            first = memory.get(identifier)
            if first is not None or len(memory) < IDS_IN_MEMORY:
                if first is None:
                    memory[identifier] = line
                return first
            self._spill(memory)
        assert self._db is not None
        # Bound as bytes: an id may hold a lone surrogate ("\ud800" is valid JSON), which UTF-8
        # refuses; "surrogatepass" keeps the mapping one-to-one, so equal keys are equal ids.
        key = identifier.encode("utf-8", "surrogatepass")
        if self._db.execute("INSERT OR IGNORE INTO ids VALUES (?, ?)", (key, line)).rowcount:
            return None
        row = self._db.execute("SELECT line FROM ids WHERE id = ?", (key,)).fetchone()
        return int(row[0])

    def _spill(self, memory: dict[str, int]) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="relayflow-ids-")
        self._db = sqlite3.connect(
            os.path.join(self._directory.name, "ids.sqlite3"), isolation_level=None, check_same_thread=False
        )
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "locking_mode = EXCLUSIVE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(f"PRAGMA cache_size = -{_ID_CACHE_KIB}")
        self._db.execute("CREATE TABLE ids (id BLOB PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        # One transaction, never committed: the file is thrown away, and pages leave the cache
        # for the file as it fills.
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO ids VALUES (?, ?)",
            sorted((key.encode("utf-8", "surrogatepass"), line) for key, line in memory.items()),
        )
        self._memory = None

    def close(self) -> None:
        self._memory = None
        try:
            if self._db is not None:
                self._db.close()
        finally:
            self._db = None
            if self._directory is not None:
                self._directory.cleanup()
                self._directory = None

    def __enter__(self) -> _SeenIds:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _items(stream: IO[bytes], reader: _Reader) -> Iterator[ParsedItem]:
    index = 0
    with _SeenIds() as seen:
        for line, data in reader(stream):
            if index >= MAX_ITEMS_PER_VERSION:
                raise DatasetFileError(
                    "too_large", f"the file has more than {MAX_ITEMS_PER_VERSION} items", line
                )
            try:
                identifier = item_id(data, index)
            except DatasetFileError as exc:
                raise DatasetFileError(exc.code, exc.reason, line) from None
            depth = depth_of(data)
            if depth > MAX_ITEM_DEPTH:
                raise DatasetFileError(
                    "malformed_file",
                    f"the item nests {depth} levels deep; items nest at most {MAX_ITEM_DEPTH} levels",
                    line,
                )
            first = seen.first_line(identifier, line)
            if first is not None:
                raise DatasetFileError(
                    "duplicate_id", f"duplicate item id {identifier!r} (first used on line {first})", line
                )
            yield ParsedItem(index, line, identifier, data)
            index += 1
    if index == 0:
        raise DatasetFileError("empty_file", "the file contains no items")


def iter_items(source: IO[bytes] | bytes | bytearray | memoryview, fmt: str) -> Iterator[ParsedItem]:
    """Parse a dataset file into :class:`ParsedItem` tuples, lazily (errors surface while
    iterating, at the line where they are; ``unsupported_format`` is raised at once).

    ``fmt``: ``"jsonl"`` (one object per line; blank lines skipped), ``"csv"`` (a header row,
    then one item per row with string values; blank lines skipped; a row with another number of
    fields than the header is an error) or ``"json"`` (one array of objects). Besides the
    per-line errors: ``duplicate_id`` (two items with the same :func:`item_id`), ``too_large``
    (:data:`MAX_FILE_BYTES`, :data:`MAX_LINE_BYTES`, :data:`MAX_ITEMS_PER_VERSION`),
    ``empty_file`` (no items).

    Memory does not grow with the file: past :data:`IDS_IN_MEMORY` items, the ids seen so far
    (for ``duplicate_id``) are kept in a temporary SQLite file, removed when the iteration ends,
    fails or is abandoned (the iterator closed or dropped); see :class:`_SeenIds` for its size.
    """
    reader = _READERS.get(fmt.lower() if isinstance(fmt, str) else "")
    if reader is None:
        raise DatasetFileError(
            "unsupported_format",
            f"unsupported dataset format {fmt!r}: use one of {', '.join(SUPPORTED_FORMATS)}",
        )
    stream: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    return _items(stream, reader)


def parse_items(source: IO[bytes] | bytes | bytearray | memoryview, fmt: str) -> Iterator[dict[str, Any]]:
    """The items (dicts) of a dataset file; see :func:`iter_items` for formats and errors."""
    return (parsed.data for parsed in iter_items(source, fmt))


# --------------------------------------------------------------------------- input field


class InputFieldError(ValueError):
    """``code`` ``unknown_input_field``: the batch ``input_field`` is not a field of an item."""

    def __init__(self, field: str, fields: list[str]) -> None:
        shown = ", ".join(repr(f) for f in fields[:20]) + (", ..." if len(fields) > 20 else "")
        super().__init__(f"the item has no field {field!r} (its fields: {shown or 'none'})")
        self.code = "unknown_input_field"
        self.field = field


def check_input_field(item: Mapping[str, Any], field: str) -> Any:
    """Return ``item[field]``, or raise :class:`InputFieldError` when the item has no such field."""
    if field not in item:
        raise InputFieldError(field, [str(key) for key in item])
    return item[field]


def input_text(item: Mapping[str, Any], field: str) -> str:
    """The item's ``field`` as the ``input`` string of a template: a string as it is, ``null`` as
    ``""``, anything else as compact JSON. Raises :class:`InputFieldError`."""
    value = check_input_field(item, field)
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- filters


class FilterError(ValueError):
    """``code`` ``invalid_filter`` (the expression does not compile, names an unknown function or
    calls one with the wrong number of arguments), ``filter_too_complex`` (it builds lists in more
    than :data:`MAX_FILTER_LIST_STAGES` places), ``filter_failed`` (evaluating it on an item
    raised, e.g. ``length(`3`)``: a type error; only with ``compile_filter(..., on_error="raise")``)
    or ``filter_too_costly`` (evaluating it on an item took more than :data:`MAX_FILTER_WORK`;
    raised whatever ``on_error`` says)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_FUNCTIONS = Functions.FUNCTION_TABLE


def _check_functions(ast: Any) -> None:
    pending = [ast]
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") == "function_expression":
            name = node.get("value")
            args = len(node.get("children", []))
            spec = _FUNCTIONS.get(name)
            if spec is None:
                raise FilterError("invalid_filter", f"unknown function {name}()")
            signature = spec["signature"]
            if signature and signature[-1].get("variadic"):
                if args < len(signature):
                    raise FilterError(
                        "invalid_filter",
                        f"function {name}() takes at least {len(signature)} arguments, got {args}",
                    )
            elif args != len(signature):
                raise FilterError(
                    "invalid_filter", f"function {name}() takes {len(signature)} arguments, got {args}"
                )
        children = node.get("children")
        if isinstance(children, list):
            pending.extend(children)


#: The nodes that build a list or an object (projections build one from what they project).
_BUILDERS = frozenset(
    {
        "multi_select_list",
        "multi_select_dict",
        "flatten",
        "projection",
        "value_projection",
        "filter_projection",
    }
)


def _check_shape(ast: Any) -> None:
    pending, stages = [ast], 0
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        stages += node.get("type") in _BUILDERS
        children = node.get("children")
        if isinstance(children, list):
            pending.extend(children)
    if stages > MAX_FILTER_LIST_STAGES:
        raise FilterError(
            "filter_too_complex",
            f"the filter builds lists or objects in {stages} places ([a, b], {{k: v}}, [], [*], *, [?...]); "
            f"at most {MAX_FILTER_LIST_STAGES} are allowed, since each may multiply the work of the next.",
        )


class _OverBudget(Exception):
    """An evaluation went past its work budget."""


def _string_cost(length: int) -> int:
    return length // 64


def _json_cost(value: Any, limit: int) -> int:
    """The cost of ``value``'s JSON text (what ``to_string`` builds), counted until it passes ``limit``."""
    cost, pending = 0, [value]
    while pending and cost <= limit:
        item = pending.pop()
        if isinstance(item, str):
            cost += 1 + _string_cost(len(item))
        elif isinstance(item, dict):
            cost += 1 + len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            cost += 1 + len(item)
            pending.extend(item)
        else:
            cost += 1
    return cost


def _truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, "", [] and {} are false; everything else (0 too) true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


class _Interpreter(TreeInterpreter):
    """jmespath's evaluator, except that ordering a number against a string gives ``null`` (as
    the JMESPath spec says for values that cannot be ordered) instead of a Python TypeError, and
    that one evaluation's work is counted against :data:`MAX_FILTER_WORK` (``start`` resets it):
    a step per node visited, the length of each list or object built, and the size of a string a
    function is about to build (``join``, ``to_string``: counted before, since one call can build
    a large one from a short list)."""

    _ORDERING = frozenset({"lt", "gt", "lte", "gte"})

    def __init__(self, budget: int = MAX_FILTER_WORK) -> None:
        super().__init__()
        self.budget = budget
        self.work = 0

    def start(self) -> None:
        self.work = 0

    def _charge(self, units: int) -> None:
        self.work += units
        if self.work > self.budget:
            raise _OverBudget

    def visit(self, node: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self._charge(1)
        result = super().visit(node, *args, **kwargs)
        if node["type"] in _BUILDERS and isinstance(result, list | dict):
            self._charge(len(result))
        return result

    def visit_function_expression(self, node: dict[str, Any], value: Any) -> Any:
        args = [self.visit(child, value) for child in node["children"]]
        name = node["value"]
        remaining = self.budget - self.work
        if name == "join" and len(args) == 2 and isinstance(args[1], list):
            self._charge(_string_cost(sum(len(s) for s in args[1] if isinstance(s, str))))
        elif name == "to_string" and args:
            self._charge(_json_cost(args[0], remaining))
        result = self._functions.call_function(name, args)
        if isinstance(result, list | dict):
            self._charge(len(result))
        elif isinstance(result, str):
            self._charge(_string_cost(len(result)))
        return result

    def visit_comparator(self, node: dict[str, Any], value: Any) -> Any:
        if node["value"] in self._ORDERING:
            left = self.visit(node["children"][0], value)
            right = self.visit(node["children"][1], value)
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
            strings = isinstance(left, str) and isinstance(right, str)
            if not (numbers or strings):
                return None
            return self.COMPARATOR_FUNC[node["value"]](left, right)
        return super().visit_comparator(node, value)


def _syntax_message(exc: JMESPathError) -> str:
    """jmespath's message on one line (its own ``str`` draws a caret under the expression)."""
    if isinstance(exc, IncompleteExpressionError):
        return "incomplete expression"
    if isinstance(exc, LexerError):
        return f"{exc.message} at column {exc.lexer_position + 1}"
    if isinstance(exc, ParseError):
        message = "unexpected token" if exc.msg == ParseError._ERROR_MESSAGE else str(exc.msg)
        if str(exc.token_value) not in message:
            message += f" {exc.token_value!r}"
        return f"{message} at column {exc.lex_position + 1}"
    return " ".join(str(exc).split())


def _keep_all(item: Mapping[str, Any]) -> bool:
    return True


def compile_filter(query: str | None, *, on_error: str = "drop") -> Callable[[Mapping[str, Any]], bool]:
    """Compile a batch ``filter_query`` into a predicate ``item -> bool``.

    Semantics: an empty (or blank, or None) query keeps every item. Otherwise the JMESPath
    expression is evaluated against the item and the item is kept when the result is *truthy in
    JMESPath's sense*: not ``null``, ``false``, ``""``, ``[]`` or ``{}`` (``0`` is kept). A missing
    field is ``null``, and ordering values that are not both numbers or both strings gives
    ``null``, so such items are dropped. Examples: ``score > `3```, ``contains(tags, 'urgent')``,
    ``lang == 'en'``, ``!flagged``.

    Evaluation errors: a function given a value of the wrong type (typically a field missing
    from some items: ``contains(tags, 'x')`` on an item without ``tags``) means the item does
    not match, and it is dropped (``on_error="drop"``, the default); with ``on_error="raise"``
    the predicate raises :class:`FilterError` ``filter_failed`` instead. To be explicit, default
    the field: ``contains(tags || `[]`, 'x')``.

    Work: one item's evaluation may take :data:`MAX_FILTER_WORK` (see ``_Interpreter``); past it
    the predicate raises :class:`FilterError` ``filter_too_costly`` (whatever ``on_error`` says).

    Raises :class:`FilterError` ``invalid_filter`` with jmespath's message for a syntax error, an
    unknown function or a wrong argument count, or an expression longer than
    :data:`MAX_FILTER_LENGTH`; ``filter_too_complex`` when it builds lists or objects in more than
    :data:`MAX_FILTER_LIST_STAGES` places.
    """
    if on_error not in ("drop", "raise"):
        raise ValueError(f"on_error must be 'drop' or 'raise', not {on_error!r}")
    if query is None or not query.strip():
        return _keep_all
    if len(query) > MAX_FILTER_LENGTH:
        raise FilterError("invalid_filter", f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    try:
        expression = jmespath.compile(query)
    except JMESPathError as exc:
        raise FilterError("invalid_filter", f"invalid filter {query!r}: {_syntax_message(exc)}") from None
    except RecursionError:
        raise FilterError("invalid_filter", "invalid filter: the expression nests too deeply") from None
    parsed = expression.parsed
    _check_functions(parsed)
    _check_shape(parsed)
    strict = on_error == "raise"
    interpreter = _Interpreter()

    def matches(item: Mapping[str, Any]) -> bool:
        interpreter.start()
        try:
            return _truthy(interpreter.visit(parsed, item))
        except _OverBudget:
            raise FilterError(
                "filter_too_costly",
                f"filter {query!r} took more than its work budget ({MAX_FILTER_WORK:,} steps) on one item; "
                "simplify it (fewer [a, b], [] and [*] stages one after another).",
            ) from None
        except (JMESPathError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            if not strict:
                return False
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise FilterError("filter_failed", f"filter {query!r} failed on the item: {reason}") from None

    return matches
