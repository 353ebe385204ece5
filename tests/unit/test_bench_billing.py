"""bench/calls.py bills global secondary index writes as DynamoDB does: an index that projects ALL
is written again by any change of an item in it, a KEYS_ONLY index only when its keys change (a
delete and a put), each per KB of the index entry rounded up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from bench.calls import _Image, _index_writes, _kb, _Tables
from moto import mock_aws

TABLE = "billing"
KEY = {"pk": {"S": "p"}, "sk": {"S": "s"}}


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "a", "k")
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "all",
                    "KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {
                    "IndexName": "keys",
                    "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                },
            ],
        )
        client.put_item(
            TableName=TABLE, Item={**KEY, "a": {"S": "a1"}, "k": {"S": "k1"}, "body": {"S": "x" * 3000}}
        )
        yield client


def _image() -> _Image | None:
    table = _Tables.table("us-east-1", TABLE)
    return _Tables.image(table, _Tables.item(table, _Tables.key_of(table, KEY)))


def _update(client: Any, expression: str, values: dict[str, Any]) -> None:
    client.update_item(
        TableName=TABLE, Key=KEY, UpdateExpression=expression, ExpressionAttributeValues=values
    )


def test_a_change_outside_the_keys_rewrites_an_all_index_and_not_a_keys_only_one(table: Any) -> None:
    before = _image()
    _update(table, "SET body = :b", {":b": {"S": "y" * 3000}})
    after = _image()
    assert before is not None and after is not None
    assert _index_writes(before, after, ["all"]) == _kb(after.size) == 3
    assert _index_writes(before, after, ["keys"]) == 0


def test_a_key_change_is_a_delete_and_a_put_and_a_new_or_gone_entry_one_write(table: Any) -> None:
    before = _image()
    _update(table, "SET k = :k", {":k": {"S": "k2"}})
    moved = _image()
    assert _index_writes(before, moved, ["keys"]) == 2  # each entry well under 1 KB
    assert _index_writes(None, moved, ["keys", "all"]) == 1 + 3  # a new item: a put in each
    assert _index_writes(moved, None, ["keys"]) == 1  # a deleted item: its entry deleted
