"""Ingest on the local stack: duplicates found past the ids kept in memory, the temporary id file
gone afterwards, and items that are not text refused with their line instead of a 500."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from relayflow.client import ApiError, Client
from relayflow_runtime.domain import datasets
from relayflow_runtime.services import dataset_service


@pytest.fixture
def large_ingest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Uploads over 100 KiB ingested in the background (node runner), only 50 ids kept in memory,
    and tempfile's directory made our own: returned, to see what is left in it."""
    monkeypatch.setattr(dataset_service, "UPLOAD_PART_BYTES", 64 * 1024)
    monkeypatch.setattr(dataset_service, "SYNC_INGEST_MAX_BYTES", 100 * 1024)
    monkeypatch.setattr(datasets, "IDS_IN_MEMORY", 50)
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def write_jsonl(path: Path, ids: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": "x" * 200}) + "\n" for i in ids))


def test_a_large_file_with_its_ids_on_disk_is_ingested(
    client: Client, large_ingest: Path, tmp_path: Path
) -> None:
    # Given a 2,000-item file: all but 50 of its ids are checked for duplicates on disk
    path = tmp_path / "big.jsonl"
    write_jsonl(path, [f"b{i}" for i in range(2000)])
    dataset = client.create_dataset(name="big")
    version = client.create_dataset_version(dataset.id)
    # When it is uploaded and ingested in the background
    ready = client.upload_dataset_items(dataset.id, version.id, path=path, poll_interval=0.05, timeout=60)
    # Then every item is there, and no temporary file is left
    assert ready.status == "ready" and ready.item_count == 2000
    assert list(large_ingest.iterdir()) == []


def test_a_duplicate_found_on_disk_is_refused_with_both_lines(
    client: Client, large_ingest: Path, tmp_path: Path
) -> None:
    # Given a 2,000-item file whose line 1,800 repeats the id of line 7
    ids = [f"b{i}" for i in range(2000)]
    ids[1799] = ids[6]
    path = tmp_path / "dup.jsonl"
    write_jsonl(path, ids)
    dataset = client.create_dataset(name="dup")
    version = client.create_dataset_version(dataset.id)
    # When it is uploaded
    with pytest.raises(ApiError) as refused:
        client.upload_dataset_items(dataset.id, version.id, path=path, poll_interval=0.05, timeout=60)
    # Then it is refused on line 1,800, naming line 7, and keeps nothing (nor a temporary file)
    assert refused.value.code == "duplicate_id" and refused.value.details["line"] == 1800
    assert refused.value.message == "line 1800: duplicate item id 'b6' (first used on line 7)"
    failed = client.get_dataset_version(dataset.id, version.id)
    assert (failed.status, failed.error_code, failed.error_line, failed.item_count) == (
        "failed",
        "duplicate_id",
        1800,
        0,
    )
    assert list(large_ingest.iterdir()) == []


def test_an_item_that_is_not_text_is_refused_with_its_line(client: Client, tmp_path: Path) -> None:
    # Given a file whose third item holds an unpaired surrogate (valid JSON, not text)
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "half a pair: \\ud800"}\n')
    dataset = client.create_dataset(name="surrogate")
    version = client.create_dataset_version(dataset.id)
    # When it is uploaded, then it is refused with the line (not a 500) and keeps nothing
    with pytest.raises(ApiError) as refused:
        client.upload_dataset_items(dataset.id, version.id, path=path)
    assert refused.value.status == 400 and refused.value.code == "malformed_file"
    assert refused.value.message.startswith("line 3: the item holds an unpaired UTF-16 surrogate ('\\ud800')")
    assert client.get_dataset_version(dataset.id, version.id).item_count == 0


def test_a_listed_item_that_is_not_text_is_refused_by_its_index(api: Any) -> None:
    # Given a version
    status, dataset = api("POST", "/datasets", {"name": "d"})
    status, version = api("POST", f"/datasets/{dataset['id']}/versions", {})
    path = f"/datasets/{dataset['id']}/versions/{version['id']}/items"
    # When a list's second item holds an unpaired surrogate
    status, body = api("POST", path, {"items": [{"text": "ok"}, {"text": "bad \ud800"}]})
    # Then it is refused naming the item's field (as any string of a body that is not text), and
    # the version stays without items
    assert status == 400 and body["code"] == "invalid_text"
    assert body["message"].startswith("items.1.text: the string holds an unpaired UTF-16 surrogate")
    assert api("GET", path)[1]["items"] == []
