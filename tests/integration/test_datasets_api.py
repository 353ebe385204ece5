"""Datasets: versions, items from lists and files, uploads committed whole or refused whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relayflow.client import ApiError, Client
from relayflow.local.stack import LocalStack
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.services import dataset_service, deps
from relayflow_runtime.services.apikeys import DEFAULT_TENANT

# One stack for the module: each test makes its own datasets.
pytestmark = pytest.mark.shared_stack


def ok(response: tuple[int, Any], status: int = 200) -> Any:
    assert response[0] == status, response
    return response[1]


@pytest.fixture
def client(local_stack: LocalStack, served: str) -> Iterator[Client]:
    with Client(served, api_key=local_stack.api_key) as client:
        yield client


def all_items(client: Client, dataset_id: str, version_id: str, limit: int) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = client.get_dataset_items(dataset_id, version_id, limit=limit, next_token=token)
        assert len(page) <= limit
        items.extend(page)
        token = page.next_token
        if not token:
            return items


def test_a_jsonl_file_becomes_a_version_whose_items_page_in_file_order(
    client: Client, tmp_path: Path
) -> None:
    # Given a JSONL file of 250 items, some with their own id, a blank line among them
    lines = [json.dumps({"id": f"a{i}", "text": f"t{i}"} if i % 2 else {"text": f"t{i}"}) for i in range(250)]
    lines.insert(10, "")
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    dataset = client.create_dataset(name="docs")
    version = client.create_dataset_version(dataset.id)
    assert version.status == "empty" and version.number == 1

    # When it is uploaded
    ready = client.upload_dataset_items(dataset.id, version.id, path=path)

    # Then the version is ready with its count and fields
    assert ready.status == "ready"
    assert ready.item_count == 250 == client.get_dataset_item_count(dataset.id, version.id)
    assert (
        ready.fields == ["text", "id"] and ready.format == "jsonl" and ready.source_filename == "docs.jsonl"
    )
    # And paging returns every item once, in file order, with its stable id
    items = all_items(client, dataset.id, version.id, limit=60)
    assert [i.id for i in items] == [f"a{i}" if i % 2 else f"item-{i + 1:06d}" for i in range(250)]
    assert items[3].data == {"id": "a3", "text": "t3"}


def test_csv_and_json_array_files_and_small_lists_are_items_too(client: Client, tmp_path: Path) -> None:
    # Given a CSV file, a JSON array file and a list
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text('id,text,score\nr1,"hello, world",3\nr2,bye,5\n')
    json_path = tmp_path / "rows.json"
    json_path.write_text(json.dumps([{"text": "x", "n": 1}, {"text": "y", "n": 2}]))
    dataset = client.create_dataset(name="mixed")
    versions = [client.create_dataset_version(dataset.id) for _ in range(3)]

    # When each becomes a version
    client.upload_dataset_items(dataset.id, versions[0].id, path=csv_path)
    client.upload_dataset_items(dataset.id, versions[1].id, path=json_path)
    client.upload_dataset_items(dataset.id, versions[2].id, items=[{"text": "z"}])

    # Then their items read back as they were written (CSV values are strings)
    assert [i.model_dump() for i in client.get_dataset_items(dataset.id, versions[0].id)] == [
        {"id": "r1", "data": {"id": "r1", "text": "hello, world", "score": "3"}},
        {"id": "r2", "data": {"id": "r2", "text": "bye", "score": "5"}},
    ]
    assert [i.data["n"] for i in client.get_dataset_items(dataset.id, versions[1].id)] == [1, 2]
    assert [i.id for i in client.get_dataset_items(dataset.id, versions[2].id)] == ["item-000001"]
    assert [v.number for v in client.get_dataset_versions(dataset.id)] == [1, 2, 3]


def test_a_malformed_file_is_refused_with_its_line_and_leaves_nothing(
    client: Client, local_stack: LocalStack, tmp_path: Path
) -> None:
    # Given a JSONL file whose fourth line is not JSON
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n{"text": oops}\n{"text": "e"}\n')
    dataset = client.create_dataset(name="bad")
    version = client.create_dataset_version(dataset.id)

    # When it is uploaded
    with pytest.raises(ApiError) as refused:
        client.upload_dataset_items(dataset.id, version.id, path=path)

    # Then it is refused with the line number and the reason
    assert refused.value.status == 400 and refused.value.code == "malformed_file"
    assert refused.value.message.startswith("line 4: invalid JSON")
    assert refused.value.details["line"] == 4
    # And the version keeps nothing: no items, no stored object, no upload left behind
    failed = client.get_dataset_version(dataset.id, version.id)
    assert (failed.status, failed.item_count, failed.error_line) == ("failed", 0, 4)
    assert list(client.get_dataset_items(dataset.id, version.id)) == []
    bucket = local_stack.environment["RELAYFLOW_BUCKET"]
    prefix = f"t/{DEFAULT_TENANT}/datasets/{dataset.id}/"
    listed = local_stack.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert listed.get("KeyCount", 0) == 0

    # When a good file follows, the same version takes it
    path.write_text('{"text": "a"}\n')
    assert client.upload_dataset_items(dataset.id, version.id, path=path).item_count == 1


def test_duplicate_ids_and_bad_items_in_a_list_name_the_item(api: Any) -> None:
    # Given a version
    dataset = ok(api("POST", "/datasets", {"name": "d"}), 201)
    version = ok(api("POST", f"/datasets/{dataset['id']}/versions", {}), 201)
    path = f"/datasets/{dataset['id']}/versions/{version['id']}/items"

    # When a list repeats an id
    status, body = api("POST", path, {"items": [{"id": "x"}, {"id": "y"}, {"id": "x"}]})

    # Then it is refused naming the item, and the version stays without items
    assert status == 400 and body["code"] == "duplicate_id"
    assert body["message"].startswith("items[2]: duplicate item id 'x'")
    assert ok(api("GET", path))["items"] == []


def test_a_version_never_changes_once_it_has_items(api: Any) -> None:
    # Given a version with items
    dataset = ok(api("POST", "/datasets", {"name": "d"}), 201)
    version = ok(api("POST", f"/datasets/{dataset['id']}/versions", {}), 201)
    path = f"/datasets/{dataset['id']}/versions/{version['id']}"
    ok(api("POST", f"{path}/items", {"items": [{"text": "a"}]}))

    # When more items or a file are sent to it, then it refuses with 409
    status, body = api("POST", f"{path}/items", {"items": [{"text": "b"}]})
    assert (status, body["code"]) == (409, "dataset_version_not_empty")
    status, body = api("POST", f"{path}/uploads", {"filename": "more.jsonl"})
    assert (status, body["code"]) == (409, "dataset_version_not_empty")
    # And an unknown format is refused before anything is uploaded
    other = ok(api("POST", f"/datasets/{dataset['id']}/versions", {}), 201)
    status, body = api(
        "POST", f"/datasets/{dataset['id']}/versions/{other['id']}/uploads", {"filename": "x.xlsx"}
    )
    assert (status, body["code"]) == (400, "unsupported_format")


def test_a_large_file_goes_up_in_parts_and_is_ingested_in_the_background(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given an upload larger than what the API commits inline (limits made small for the test)
    monkeypatch.setattr(dataset_service, "UPLOAD_PART_BYTES", 64 * 1024)
    monkeypatch.setattr(dataset_service, "SYNC_INGEST_MAX_BYTES", 100 * 1024)
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"id": f"b{i}", "text": "x" * 200}) + "\n" for i in range(2000)))
    assert path.stat().st_size > 6 * 64 * 1024
    dataset = client.create_dataset(name="big")
    version = client.create_dataset_version(dataset.id)

    # When it is uploaded (the client sends parts through the API, then waits for the version)
    ready = client.upload_dataset_items(dataset.id, version.id, path=path, poll_interval=0.05, timeout=60)

    # Then every item arrived, in order
    assert ready.status == "ready" and ready.item_count == 2000
    items = all_items(client, dataset.id, version.id, limit=1000)
    assert [i.id for i in items] == [f"b{i}" for i in range(2000)]

    # And a malformed large file is refused the same way, with its line
    path.write_text(path.read_text() + "not json\n")
    second = client.create_dataset_version(dataset.id)
    with pytest.raises(ApiError) as refused:
        client.upload_dataset_items(dataset.id, second.id, path=path, poll_interval=0.05, timeout=60)
    assert refused.value.details["line"] == 2001


def test_a_large_item_is_kept_whole(client: Client) -> None:
    # Given an item far larger than a Step Functions payload
    text = "word " * 60_000
    dataset = client.create_dataset(name="large")
    version = client.create_dataset_version(dataset.id)

    # When it is uploaded with a small one
    client.upload_dataset_items(dataset.id, version.id, items=[{"id": "big", "text": text}, {"id": "small"}])

    # Then both read back whole
    items = list(client.get_dataset_items(dataset.id, version.id))
    assert [len(i.data.get("text", "")) for i in items] == [len(text), 0]


def test_unknown_datasets_and_versions_are_404(api: Any) -> None:
    status, body = api("GET", "/datasets/nope")
    assert (status, body["code"]) == (404, "dataset_not_found")
    dataset = ok(api("POST", "/datasets", {"name": "d"}), 201)
    status, body = api("GET", f"/datasets/{dataset['id']}/versions/nope/items")
    assert (status, body["code"]) == (404, "dataset_version_not_found")


def test_a_version_left_processing_by_a_dead_ingest_takes_items_again(api: Any) -> None:
    # Given a version whose ingest is under way
    dataset = ok(api("POST", "/datasets", {"name": "d"}), 201)
    version = ok(api("POST", f"/datasets/{dataset['id']}/versions", {}), 201)
    path = f"/datasets/{dataset['id']}/versions/{version['id']}"
    store = deps.stores().datasets
    store.update_dataset_version(
        DEFAULT_TENANT, dataset["id"], version["id"], {"status": "processing", "updated_at": now_iso()}
    )

    # When items are sent meanwhile, then they are refused
    status, body = api("POST", f"{path}/items", {"items": [{"text": "a"}]})
    assert (status, body["code"]) == (409, "dataset_version_processing")

    # When that ingest died long ago (a function timed out mid-way), then the version takes items
    store.update_dataset_version(
        DEFAULT_TENANT, dataset["id"], version["id"], {"updated_at": "2020-01-01T00:00:00.000Z"}
    )
    assert ok(api("POST", f"{path}/items", {"items": [{"text": "a"}]}))["status"] == "ready"
