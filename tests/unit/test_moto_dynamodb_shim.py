"""The moto shim's DynamoDB Query patch: a base-table Query reads its own partition, an index Query
every item without sorting the table first; both answer exactly what moto answered (items, order,
pages)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from relayflow.local import moto_shim
from relayflow.local.shims import base
from relayflow.local.shims import dynamodb as dynamodb_shim

TABLE = "shim-query"


def _create(client: Any) -> None:
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for pk in ("A", "B", "C"):
        for i in (3, 1, 2, 10):  # written out of order: a Query sorts by sort key
            for kind in ("N", "X"):
                client.put_item(
                    TableName=TABLE,
                    Item={"pk": {"S": pk}, "sk": {"S": f"{kind}#{i:02d}"}, "g": {"S": f"g{i % 2}"}},
                )


QUERIES: list[dict[str, Any]] = [
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "B"}}},
    {
        "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
        "ExpressionAttributeValues": {":p": {"S": "B"}, ":s": {"S": "N#"}},
    },
    {
        "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":p": {"S": "C"}, ":a": {"S": "N#02"}, ":b": {"S": "X#02"}},
        "ScanIndexForward": False,
    },
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "nobody"}}},
    {
        "KeyConditionExpression": "g = :g",
        "ExpressionAttributeValues": {":g": {"S": "g0"}},
        "IndexName": "by-g",
    },
]


def _pages(client: Any, query: dict[str, Any], limit: int | None = None) -> list[list[str]]:
    kwargs: dict[str, Any] = {"TableName": TABLE, **query, **({"Limit": limit} if limit else {})}
    pages = []
    while True:
        response = client.query(**kwargs)
        pages.append([f"{i['pk']['S']}/{i['sk']['S']}" for i in response["Items"]])
        if "LastEvaluatedKey" not in response:
            return pages
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _answers(client: Any) -> list[list[list[str]]]:
    return [_pages(client, query, limit) for query in QUERIES for limit in (None, 3)]


@pytest.fixture
def dynamodb(fake_aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


def test_base_table_queries_answer_as_moto_did_and_read_one_partition(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(dynamodb)
    unpatched = _answers(dynamodb)
    assert unpatched[0] == [[f"B/{k}#{i:02d}" for k in ("N", "X") for i in (1, 2, 3, 10)]]
    moto_shim.install()
    try:
        assert _answers(dynamodb) == unpatched
        # and no Query sorts the whole table any more
        from moto.dynamodb.models.table import Table

        whole_table = base._originals[(dynamodb_shim._DYNAMODB_TABLE, "Table.all_items")]
        read: list[int] = []

        def counting(self: Any) -> Any:
            items = whole_table(self)
            read.append(len(items))
            return items

        monkeypatch.setitem(base._originals, (dynamodb_shim._DYNAMODB_TABLE, "Table.all_items"), counting)
        monkeypatch.setattr(Table, "all_items", dynamodb_shim._all_items_of_partition(counting))
        _pages(dynamodb, QUERIES[1])
        _pages(dynamodb, QUERIES[-1])
        assert read == []
    finally:
        moto_shim.uninstall()
