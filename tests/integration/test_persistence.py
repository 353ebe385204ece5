"""relayflow.local.persistence: moto's items and objects written to a data directory and read back
into a new stack, through every kind of write the stack's code makes."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from relayflow.local import persistence
from relayflow.local.datadir import DataDir, DataDirError
from relayflow.local.server import build_http_event, parse_http_response
from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters.table.keys import execution_key, tenant_pk

ITEM: dict[str, Any] = {
    "pk": {"S": "P#1"},
    "sk": {"S": "S#1"},
    "text": {"S": "héllo\ttab\nnewline"},
    "number": {"N": "12.50"},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "blob": {"B": b"\x00\xff binary"},
    "names": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2"]},
    "nested": {"M": {"list": {"L": [{"S": "x"}, {"N": "3"}, {"M": {"deep": {"BOOL": True}}}]}}},
}


def _stack(data_dir: Path) -> LocalStack:
    return LocalStack(data_dir=data_dir, watch_executions=False)


def _table(stack: LocalStack) -> str:
    return stack.environment["RELAYFLOW_TABLE"]


def _bucket(stack: LocalStack) -> str:
    return stack.environment["RELAYFLOW_BUCKET"]


def _key(pk: str, sk: str = "S#1") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def test_moto_has_what_the_journal_relies_on() -> None:
    persistence.check_compatible()


def test_items_and_objects_come_back_as_they_were_written(tmp_path: Path) -> None:
    # Given a stack with a data directory, where items were put, updated, deleted, batch-written and
    # written in transactions (one rolled back), and objects put, copied, overwritten and deleted
    with _stack(tmp_path) as stack:
        dynamodb, s3 = stack.client("dynamodb"), stack.client("s3")
        table, bucket = _table(stack), _bucket(stack)
        dynamodb.put_item(TableName=table, Item=ITEM)
        dynamodb.put_item(TableName=table, Item={**_key("P#2"), "count": {"N": "1"}})
        dynamodb.update_item(
            TableName=table,
            Key=_key("P#2"),
            UpdateExpression="ADD #c :one SET added = :text",
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":one": {"N": "4"}, ":text": {"S": "new"}},
        )
        dynamodb.put_item(TableName=table, Item={**_key("P#3"), "gone": {"S": "soon"}})
        dynamodb.delete_item(TableName=table, Key=_key("P#3"))
        dynamodb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": {**_key("P#4", f"S#{i}")}}} for i in range(25)]}
        )
        dynamodb.transact_write_items(
            TransactItems=[{"Put": {"TableName": table, "Item": {**_key("P#5"), "in": {"S": "transaction"}}}}]
        )
        with pytest.raises(ClientError):
            dynamodb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": table, "Item": {**_key("P#6"), "rolled": {"S": "back"}}}},
                    {
                        "Update": {
                            "TableName": table,
                            "Key": _key("P#2"),
                            "UpdateExpression": "SET spoiled = :x",
                            "ConditionExpression": "attribute_not_exists(pk)",
                            "ExpressionAttributeValues": {":x": {"S": "x"}},
                        }
                    },
                ]
            )
        s3.put_object(
            Bucket=bucket,
            Key="a/b c.json",
            Body=b'{"a": 1}',
            ContentType="application/json",
            Metadata={"who": "me"},
        )
        s3.copy_object(Bucket=bucket, Key="copies/b.json", CopySource={"Bucket": bucket, "Key": "a/b c.json"})
        s3.put_object(Bucket=bucket, Key="over", Body=b"first")
        s3.put_object(Bucket=bucket, Key="over", Body=b"second")
        s3.put_object(Bucket=bucket, Key="deleted", Body=b"x")
        s3.delete_object(Bucket=bucket, Key="deleted")
        upload = s3.create_multipart_upload(Bucket=bucket, Key="big.bin")
        parts = [b"p" * (5 * 1024 * 1024), b"tail"]
        etags = [
            s3.upload_part(
                Bucket=bucket, Key="big.bin", UploadId=upload["UploadId"], PartNumber=n, Body=body
            )["ETag"]
            for n, body in enumerate(parts, 1)
        ]
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="big.bin",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
        )
        before = {
            "items": sorted(json.dumps(i, sort_keys=True, default=str) for i in _scan(dynamodb, table)),
            "big etag": s3.head_object(Bucket=bucket, Key="big.bin")["ETag"],
        }

    # When a new stack starts on the directory
    with _stack(tmp_path) as stack:
        dynamodb, s3 = stack.client("dynamodb"), stack.client("s3")
        table, bucket = _table(stack), _bucket(stack)
        # Then every item is as it was (types, values), the deleted and rolled-back ones absent
        assert (
            sorted(json.dumps(i, sort_keys=True, default=str) for i in _scan(dynamodb, table))
            == before["items"]
        )
        assert dynamodb.get_item(TableName=table, Key=_key("P#1"))["Item"] == ITEM
        assert dynamodb.get_item(TableName=table, Key=_key("P#2"))["Item"]["count"] == {"N": "5"}
        assert "Item" not in dynamodb.get_item(TableName=table, Key=_key("P#3"))
        assert "Item" not in dynamodb.get_item(TableName=table, Key=_key("P#6"))
        assert "spoiled" not in dynamodb.get_item(TableName=table, Key=_key("P#2"))["Item"]
        # And queries and conditional writes work on what was restored
        page = dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
            ExpressionAttributeValues={":p": {"S": "P#4"}, ":s": {"S": "S#1"}},
        )
        assert [i["sk"]["S"] for i in page["Items"]] == ["S#1", *[f"S#{i}" for i in range(10, 20)]]
        with pytest.raises(ClientError, match="ConditionalCheckFailed"):
            dynamodb.put_item(TableName=table, Item=ITEM, ConditionExpression="attribute_not_exists(pk)")
        # And the objects: bytes, content type, metadata, the multipart ETag; the deleted one absent
        got = s3.get_object(Bucket=bucket, Key="a/b c.json")
        assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (
            b'{"a": 1}',
            "application/json",
            {"who": "me"},
        )
        assert s3.get_object(Bucket=bucket, Key="copies/b.json")["Body"].read() == b'{"a": 1}'
        assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == b"second"
        assert s3.head_object(Bucket=bucket, Key="big.bin")["ETag"] == before["big etag"]
        assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == b"".join(parts)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        assert keys == {"a/b c.json", "copies/b.json", "over", "big.bin"}
    # And one file per object is left (an overwritten or deleted object's file is removed)
    assert len(list((tmp_path / "state" / "objects").glob("*/*"))) == 4


def _scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    return list(dynamodb.get_paginator("scan").paginate(TableName=table).search("Items[]"))


def test_a_crash_mid_write_loses_only_the_cut_record_and_the_next_start_tidies_up(tmp_path: Path) -> None:
    # Given a stack whose journal ends in a half-written record and an object file no record names
    # (what SIGKILL during a flush leaves), as a killed server leaves them: no merge at stop
    with _stack(tmp_path) as stack:
        stack.client("dynamodb").put_item(TableName=_table(stack), Item={**_key("P#1"), "v": {"N": "1"}})
        assert stack.durable is not None and stack.durable.persistence is not None
        stack.durable.persistence.flush()
        state = tmp_path / "state"
        journal = max((state / "journal").glob("*.log"))
        kept = journal.read_bytes()
        stray = state / "objects" / "ab" / "stray.1"
        stray.parent.mkdir()
        stray.write_bytes(b"orphan")
    journal.write_bytes(kept + b'["d","' + _table(stack).encode() + b'",{"S":"P#2"},{"S":"S#1"}]\t{"pk":')
    (state / "snapshot.log").unlink()

    # When the next stack starts
    with _stack(tmp_path) as stack:
        dynamodb = stack.client("dynamodb")
        # Then the complete record is there, the torn one is not, and the stray file is gone
        assert dynamodb.get_item(TableName=_table(stack), Key=_key("P#1"))["Item"]["v"] == {"N": "1"}
        assert "Item" not in dynamodb.get_item(TableName=_table(stack), Key=_key("P#2"))
        assert not stray.exists()
    # And after a graceful stop only the merged snapshot is left
    assert [p.name for p in (state / "journal").iterdir()] == []
    assert (state / "snapshot.log").exists()


def test_state_of_a_table_the_stack_does_not_have_is_refused_untouched(tmp_path: Path) -> None:
    with _stack(tmp_path) as stack:
        stack.client("dynamodb").put_item(TableName=_table(stack), Item=_key("P#1"))
    snapshot = tmp_path / "state" / "snapshot.log"
    snapshot.write_text(snapshot.read_text() + '["d","some-other-table",{"S":"x"},null]\t{"id":{"S":"x"}}\n')
    before = snapshot.read_bytes()
    with pytest.raises(DataDirError, match=r"table some-other-table .* move it away \(mv "):
        _stack(tmp_path).start()
    assert snapshot.read_bytes() == before
    # And the failed start released the directory
    DataDir.open(tmp_path).close()


def test_numbers_keep_their_precision(tmp_path: Path) -> None:
    with _stack(tmp_path) as stack:
        table = stack.client("dynamodb")
        table.put_item(
            TableName=_table(stack), Item={**_key("N"), "n": {"N": "0.1000000000000000055511151231257827"}}
        )
    with _stack(tmp_path) as stack:
        item = stack.client("dynamodb").get_item(TableName=_table(stack), Key=_key("N"))["Item"]
        assert Decimal(item["n"]["N"]) == Decimal("0.1000000000000000055511151231257827")


def test_items_whose_ttl_passed_are_not_restored_and_are_deleted(tmp_path: Path) -> None:
    # Given items of the main table (TTL attribute expires_at): one expired, one not yet, one without
    with _stack(tmp_path) as stack:
        dynamodb, table = stack.client("dynamodb"), _table(stack)
        dynamodb.put_item(TableName=table, Item={**_key("old"), "expires_at": {"N": "1000"}})
        dynamodb.put_item(TableName=table, Item={**_key("new"), "expires_at": {"N": "99999999999"}})
        dynamodb.put_item(TableName=table, Item=_key("kept"))

    # When the stack starts again, and stops
    with _stack(tmp_path) as stack:
        assert stack.durable is not None and stack.durable.restored.expired == 1
        dynamodb, table = stack.client("dynamodb"), _table(stack)
        # Then the expired item is gone, the others are there
        assert "Item" not in dynamodb.get_item(TableName=table, Key=_key("old"))
        assert "Item" in dynamodb.get_item(TableName=table, Key=_key("new"))
        assert "Item" in dynamodb.get_item(TableName=table, Key=_key("kept"))
    # And its deletion was written: the snapshot no longer holds it
    assert '"old"' not in (tmp_path / "state" / "snapshot.log").read_text()


def test_a_failed_flush_leaves_no_half_record_and_is_written_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a write whose first flush fails at fsync (a full disk, an I/O error)
    with _stack(tmp_path) as stack:
        assert stack.durable is not None and stack.durable.persistence is not None
        recorder = stack.durable.persistence
        recorder.flush()
        stack.client("dynamodb").put_item(TableName=_table(stack), Item={**_key("F"), "v": {"S": "kept"}})
        journal = max((tmp_path / "state" / "journal").glob("*.log"))
        before = journal.stat().st_size
        real_fsync = persistence.os.fsync

        def failing(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(persistence.os, "fsync", failing)
        with pytest.raises(OSError):
            recorder.flush()
        # Then nothing of it stays in the journal
        assert journal.stat().st_size == before
        # And the next flush writes it
        monkeypatch.setattr(persistence.os, "fsync", real_fsync)
        recorder.flush()
        assert journal.stat().st_size > before
    with _stack(tmp_path) as stack:
        got = stack.client("dynamodb").get_item(TableName=_table(stack), Key=_key("F"))
        assert got["Item"]["v"] == {"S": "kept"}


def _api(stack: LocalStack, method: str, path: str, body: Any = None) -> Any:
    extra = {} if body is None else {"json_body": body}
    event = build_http_event(method, path, headers={"x-api-key": stack.api_key or ""}, **extra)
    response = parse_http_response(stack.handle_api_request(event))
    assert response.status < 300, response.body
    return response.json()


def _ended(stack: LocalStack, path: str) -> dict[str, Any]:
    for _ in range(400):
        execution: dict[str, Any] = _api(stack, "GET", path)
        if execution["status"] not in ("pending", "running"):
            return execution
        time.sleep(0.05)
    raise AssertionError(f"{path} did not end")


def test_a_run_whose_nodes_all_completed_before_a_stop_is_completed_at_restart(tmp_path: Path) -> None:
    # Given a single run whose every node completed, but whose machine did not record its end
    # before the stack stopped (its record still says running), and one whose node had not run
    with LocalStack(data_dir=tmp_path) as stack:
        echo = {"name": "e", "provider": "builtin", "config": {"model": "echo"}}
        model = _api(stack, "POST", "/models", echo)
        workflow = _api(stack, "POST", "/workflows", {"name": "w"})
        version = _api(stack, "POST", f"/workflows/{workflow['id']}/versions", {})
        for name in ("a", "b"):
            _api(stack, "POST", f"/versions/{version['id']}/nodes", {"name": name, "entity_id": model["id"]})
        executions = f"/workflows/{workflow['id']}/executions"
        done = _api(stack, "POST", executions, {"single_input": "hello"})
        cut = _api(stack, "POST", executions, {"single_input": "cut"})
        for run in (done, cut):
            assert _ended(stack, f"{executions}/{run['id']}")["status"] == "completed"
        # (every status change delivered first: a late one would have the reconciler settle the run
        # again after the writes below, on a loaded machine)
        assert stack.wait_idle()
        table = _table(stack)
        dynamodb = stack.client("dynamodb")
        for run in (done, cut):
            dynamodb.update_item(
                TableName=table,
                Key={k: {"S": v} for k, v in execution_key("default", run["id"]).items()},
                UpdateExpression="SET #s = :running REMOVE results, completed_at",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":running": {"S": "running"}},
                ConditionExpression="attribute_exists(pk)",
            )
        nodes = dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :node)",
            ExpressionAttributeValues={
                ":pk": {"S": tenant_pk("default", "X", cut["id"])},
                ":node": {"S": "N#"},
            },
        )["Items"]
        assert len(nodes) == 2
        last = max(nodes, key=lambda node: int(node["idx"]["N"]))
        dynamodb.update_item(
            TableName=table,
            Key={"pk": last["pk"], "sk": last["sk"]},
            UpdateExpression="SET #s = :running",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":running": {"S": "running"}},
        )
    # When the stack starts again from its data directory
    with LocalStack(data_dir=tmp_path) as stack:
        finished = _api(stack, "GET", f"{executions}/{done['id']}")
        interrupted = _api(stack, "GET", f"{executions}/{cut['id']}")
    # Then the run whose nodes all completed is completed, with its results; the other failed
    assert finished["status"] == "completed", finished
    assert finished["results"]["output"] == "hello"
    assert interrupted["status"] == "failed", interrupted
    assert "stopped while this run was in progress" in interrupted["error"]
