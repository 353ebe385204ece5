"""Duplicate item ids in bounded memory: past IDS_IN_MEMORY ids, the ids seen go to a temporary
SQLite file, which is gone however the iteration ends."""

from __future__ import annotations

import gc
import json
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayflow.local import cfn
from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.datasets import DatasetFileError, iter_items
from relayflow_runtime.services import dataset_service

ROOT = Path(__file__).resolve().parents[2]

# The same five items (ids a, b, c, d, b) in each format, with the lines they are on.
FILES: dict[str, tuple[bytes, int, int]] = {
    # format: (file, line of the duplicate, line where its id was first used)
    "jsonl": (b"".join(json.dumps({"id": i, "n": n}).encode() + b"\n" for n, i in enumerate("abcdb")), 5, 2),
    # A quoted field spanning two lines: the rows after it start one line further down.
    "csv": (b'id,text\na,"one\ntwo"\nb,x\nc,x\nd,x\nb,x\n', 7, 4),
    "json": (b"[\n" + b",\n".join(json.dumps({"id": i}).encode() for i in "abcdb") + b"\n]\n", 6, 3),
}


@pytest.fixture(params=[datasets.IDS_IN_MEMORY, 2, 0], ids=["in-memory", "spills-midway", "on-disk"])
def in_memory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Where the ids are kept: a dict only (the default limit is far above these files), a dict
    then the SQLite file (from the third id on), or the SQLite file from the first id."""
    monkeypatch.setattr(datasets, "IDS_IN_MEMORY", request.param)
    return int(request.param)


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory where tempfile puts temporary directories during the test."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def jsonl(count: int) -> bytes:
    return b"".join(b'{"id": "id-%d"}\n' % n for n in range(count))


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_duplicate_names_both_lines(fmt: str, in_memory: int) -> None:
    data, line, first = FILES[fmt]
    # Given a file whose fifth item repeats the id of its second
    parsed: list[str] = []
    with pytest.raises(DatasetFileError) as info:
        for item in iter_items(data, fmt):
            parsed.append(item.id)
    # Then the duplicate is refused on its own line, naming the line of the first use
    assert info.value.code == "duplicate_id"
    assert info.value.line == line
    assert info.value.reason == f"duplicate item id 'b' (first used on line {first})"
    # And the items before it came through, as they did before
    assert parsed == ["a", "b", "c", "d"]


def test_duplicate_on_the_same_line_of_a_json_array(in_memory: int) -> None:
    # Given a minified JSON array: every element on line 1, the third repeating the first's id
    with pytest.raises(DatasetFileError) as info:
        list(iter_items(b'[{"id": "a"}, {"id": "b"}, {"id": "a"}]', "json"))
    # Then it is still a duplicate, first used on that same line
    assert info.value.code == "duplicate_id" and info.value.line == 1
    assert "first used on line 1" in info.value.reason


def test_many_distinct_ids_pass_the_disk_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 3,000 distinct ids, of which all but the first 100 are checked on disk
    monkeypatch.setattr(datasets, "IDS_IN_MEMORY", 100)
    # Then none is taken for a duplicate, and they come in file order
    assert [item.id for item in iter_items(jsonl(3000), "jsonl")] == [f"id-{n}" for n in range(3000)]


def test_ids_that_utf8_cannot_encode_are_compared_exactly(in_memory: int) -> None:
    # Given ids with lone surrogates (valid JSON escapes), a surrogate pair (one character), and
    # the lone surrogate again on line 5
    data = b'{"id": "\\ud800"}\n{"id": "\\udc00"}\n{"id": "\\ud800\\udc00"}\n{"id": "x"}\n{"id": "\\ud800"}\n'
    with pytest.raises(DatasetFileError) as info:
        list(iter_items(data, "jsonl"))
    # Then only the true repeat is a duplicate, named as it is
    assert info.value.line == 5
    assert info.value.reason == "duplicate item id '\\ud800' (first used on line 1)"


# --------------------------------------------------------------------------- the temporary file


def spill_dirs(root: Path) -> list[Path]:
    return sorted(root.iterdir())


def test_no_temporary_file_for_a_small_file(temp_root: Path) -> None:
    # Given fewer items than IDS_IN_MEMORY: the ids stay in memory
    items = iter_items(jsonl(50), "jsonl")
    next(items)
    assert spill_dirs(temp_root) == []
    assert len(list(items)) == 49
    assert spill_dirs(temp_root) == []


def test_temporary_file_removed_after_a_successful_parse(
    temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "IDS_IN_MEMORY", 10)
    items = iter_items(jsonl(100), "jsonl")
    # Given a parse past IDS_IN_MEMORY: its ids are in a file of its own
    for _ in range(20):
        next(items)
    (spill,) = spill_dirs(temp_root)
    assert spill.name.startswith("relayflow-ids-") and (spill / "ids.sqlite3").is_file()
    # When the parse ends
    assert len(list(items)) == 80
    # Then the file and its directory are gone
    assert spill_dirs(temp_root) == []


@pytest.mark.parametrize(
    "last_line, code",
    [(b'{"id": "id-3"}\n', "duplicate_id"), (b'{"id": \n', "malformed_file"), (b"[1]\n", "malformed_file")],
)
def test_temporary_file_removed_after_an_error(
    temp_root: Path, monkeypatch: pytest.MonkeyPatch, last_line: bytes, code: str
) -> None:
    monkeypatch.setattr(datasets, "IDS_IN_MEMORY", 10)
    # Given a file refused on its 101st line, after its ids went to disk
    with pytest.raises(DatasetFileError) as info:
        list(iter_items(jsonl(100) + last_line, "jsonl"))
    assert info.value.code == code and info.value.line == 101
    # Then nothing is left on disk
    assert spill_dirs(temp_root) == []


@pytest.mark.parametrize("how", ["closed", "dropped"])
def test_temporary_file_removed_when_the_iteration_is_abandoned(
    temp_root: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(datasets, "IDS_IN_MEMORY", 10)
    items: Iterator[datasets.ParsedItem] = iter_items(jsonl(100), "jsonl")
    # Given a parse left half way, with its ids on disk
    for _ in range(50):
        next(items)
    assert len(spill_dirs(temp_root)) == 1
    # When the caller closes the iterator, or drops it
    if how == "closed":
        items.close()  # type: ignore[attr-defined]
    else:
        del items
        gc.collect()
    # Then the file is gone
    assert spill_dirs(temp_root) == []


def test_memory_does_not_grow_with_the_item_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given files of 2,000 and 40,000 items with ids of 100 characters, read from disk (the
    # bytes of the file are not the parser's memory), and at most 1,000 ids kept in memory
    monkeypatch.setattr(datasets, "IDS_IN_MEMORY", 1000)

    def peak(count: int) -> int:
        path = tmp_path / f"{count}.jsonl"
        path.write_bytes(b"".join(b'{"id": "%s-%d", "n": %d}\n' % (b"x" * 94, n, n) for n in range(count)))
        with path.open("rb") as stream:
            tracemalloc.start()
            try:
                for _ in iter_items(stream, "jsonl"):
                    pass
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    small, large = peak(2000), peak(40_000)
    # Then the larger file needs no more memory than the small one (a dict of 40,000 such ids
    # alone would take over 5 MB)
    assert large < small + 256 * 1024, (small, large)


def test_the_ingesting_function_has_room_for_the_id_file() -> None:
    # Given the largest dataset file, made of the longest ids it can hold: measured, the table
    # takes 662 MiB for 496 MiB of ids (a million random 520-byte ids); allow 1.4 times the file
    worst = 1.4 * datasets.MAX_FILE_BYTES
    # Then the function that ingests large files (the node runner) has that much /tmp
    template = cfn.load_template(ROOT / "template.yaml")
    runner = template["Resources"]["NodeRunnerFunction"]["Properties"]
    assert runner["EphemeralStorage"]["Size"] * 1024 * 1024 >= worst
    # And the API function, which ingests only small files itself, fits in Lambda's default 512 MB
    assert 1.4 * dataset_service.SYNC_INGEST_MAX_BYTES < 512 * 1000 * 1000
    assert "EphemeralStorage" not in template["Resources"]["ApiFunction"]["Properties"]
