"""What every store of the one table shares: its primitives and the shape of its answers.

``_get`` / ``_put`` / ``_update`` / ``_query_page`` / ``_query_all`` / ``_delete_keys`` are the only
calls the entity stores make on the table resource (a few transactions go through the client).
Items leave without their key attributes (:func:`strip_keys`); a write DynamoDB refuses for
contention is tried again (:meth:`BaseStore._write`); a conditional write that loses raises
:class:`ConditionFailed`; a page's cursor is opaque and only accepted by the query that made
it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.codec import decode_cursor, encode_cursor, from_dynamo, to_dynamo
from relayflow_runtime.adapters.table.keys import tenant_pk
from relayflow_runtime.adapters.transactions import retry_contention, until_processed
from relayflow_runtime.errors import InvalidNextToken, NotFound

_KEY_FIELDS = (
    "pk",
    "sk",
    "gsi1pk",
    "gsi1sk",
    "gsi2pk",
    "gsi2sk",
    "sweep_pk",
    "sweep_sk",
    "tenant",
    "kind",
    "expires_at",
)


class ConditionFailed(Exception):
    """A conditional write lost (another writer got there first)."""


def strip_keys(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in from_dynamo(item).items() if k not in _KEY_FIELDS}


def update_expression(
    set_fields: Mapping[str, object],
    *,
    remove: Iterable[str] = (),
    add: Mapping[str, int | set[int]] | None = None,
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """An UpdateExpression that SETs ``set_fields``, ADDs ``add`` (a number, or numbers to a number
    set) and REMOVEs ``remove``, with its
    attribute names and (DynamoDB-ready) values."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets, adds, removes = [], [], []
    for i, (field, value) in enumerate(set_fields.items()):
        names[f"#s{i}"] = field
        values[f":s{i}"] = to_dynamo(value)
        sets.append(f"#s{i} = :s{i}")
    for i, (field, amount) in enumerate((add or {}).items()):
        names[f"#a{i}"] = field
        values[f":a{i}"] = amount
        adds.append(f"#a{i} :a{i}")
    for i, field in enumerate(remove):
        names[f"#r{i}"] = field
        removes.append(f"#r{i}")
    expression = ""
    if sets:
        expression += "SET " + ", ".join(sets)
    if adds:
        expression += " ADD " + ", ".join(adds)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return expression.strip(), names, values


def _batch_get(request: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = aws.resource("dynamodb").batch_get_item(RequestItems=request)
    return answer


def _partition(condition: Any) -> tuple[str, Any] | None:
    """The (name, value) of the partition key a query's key condition names, if it names one."""
    operator = getattr(condition, "expression_operator", None)
    values = getattr(condition, "_values", ())
    if operator == "=" and values and hasattr(values[0], "name"):
        return values[0].name, values[1]
    if operator == "AND":
        return next((found for part in values if (found := _partition(part))), None)
    return None


def _check_cursor(start: dict[str, Any], key_condition: Any, index: str | None) -> None:
    """A cursor is the last key of a page of this very query: the table's key (and the index's,
    ``gsiN`` keyed by ``gsiNpk``/``gsiNsk``), in the partition the query reads."""
    expected = {"pk", "sk"} | ({f"{index}pk", f"{index}sk"} if index else set())
    partition = _partition(key_condition)
    if set(start) != expected or (partition is not None and start.get(partition[0]) != partition[1]):
        raise InvalidNextToken()


class BaseStore:
    """One entity family's store over the one table (see adapters/stores.py for the set)."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    @property
    def table(self) -> Any:
        return aws.dynamodb_table(self.table_name)

    def _get(self, pk: str, sk: str, what: str, ident: str) -> dict[str, Any]:
        item = self.table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")
        if not item:
            raise NotFound(f"{what} '{ident}' does not exist.", code=f"{what.replace(' ', '_')}_not_found")
        return strip_keys(item)

    def _put(self, item: dict[str, Any], *, must_not_exist: bool = False) -> None:
        kwargs: dict[str, Any] = {"Item": to_dynamo(item)}
        if must_not_exist:
            kwargs["ConditionExpression"] = Attr("pk").not_exists()
        self._write("put_item", **kwargs)

    def _write(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One single-item write (``put_item``, ``update_item``...) on the table: refused for
        contention (a transaction holds the item, throttling), it is tried again with jitter
        (adapters/transactions.py); a failed condition raises :class:`ConditionFailed`."""
        try:
            response: dict[str, Any] = retry_contention(lambda: getattr(self.table, operation)(**kwargs))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise ConditionFailed(str(exc)) from exc
            raise
        return response

    def _update(
        self,
        key: dict[str, str],
        set_fields: Mapping[str, object],
        *,
        condition: Any = None,
        remove: Iterable[str] = (),
        add: Mapping[str, int | set[int]] | None = None,
        return_values: str = "ALL_NEW",
    ) -> dict[str, Any]:
        expression, names, values = update_expression(set_fields, remove=remove, add=add)
        kwargs: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeNames": names,
            "ReturnValues": return_values,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        kwargs["ConditionExpression"] = Attr("pk").exists() if condition is None else condition
        response = self._write("update_item", **kwargs)
        return strip_keys(response.get("Attributes", {}))

    def _query_page(
        self,
        *,
        key_condition: Any,
        index: str | None = None,
        limit: int = 50,
        next_token: str | None = None,
        forward: bool = True,
        filter_expression: Any = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {"KeyConditionExpression": key_condition, "ScanIndexForward": forward}
        if index:
            kwargs["IndexName"] = index
        if filter_expression is not None:
            kwargs["FilterExpression"] = filter_expression
        start = decode_cursor(next_token)
        if start is not None:
            _check_cursor(start, key_condition, index)
        items: list[dict[str, Any]] = []
        # A filter can return short pages: keep reading until the page is full or the index ends.
        while True:
            kwargs["Limit"] = limit - len(items)
            if start:
                kwargs["ExclusiveStartKey"] = start
            try:
                response = self.table.query(**kwargs)
            except ClientError as exc:
                if start and exc.response["Error"]["Code"] == "ValidationException":
                    raise InvalidNextToken() from exc
                raise
            items.extend(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start or len(items) >= limit:
                break
        return [strip_keys(i) for i in items], encode_cursor(start)

    def _query_all(
        self, key_condition: Any, index: str | None = None, *, fields: Iterable[str] = ()
    ) -> Iterator[dict[str, Any]]:
        """Every item the key condition matches (only ``fields`` of each, when given)."""
        kwargs: dict[str, Any] = {"KeyConditionExpression": key_condition}
        if fields:
            names = {f"#p{i}": field for i, field in enumerate(fields)}
            kwargs["ProjectionExpression"] = ", ".join(names)
            kwargs["ExpressionAttributeNames"] = names
        if index:
            kwargs["IndexName"] = index
        else:
            kwargs["ConsistentRead"] = True
        while True:
            response = self.table.query(**kwargs)
            for item in response.get("Items", []):
                yield from_dynamo(item)
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _get_many(self, keys: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The items at ``keys`` that exist, eventually consistent, in no particular order: one
        BatchGetItem per 100 keys. Keys DynamoDB leaves unprocessed (throttling) are asked again
        after a jittered wait, ATTEMPTS times at most (then :class:`StoreContended`)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {self.table_name: {"Keys": keys[start : start + 100]}}
            for response in until_processed(_batch_get, request, "UnprocessedKeys"):
                found.extend(strip_keys(i) for i in response.get("Responses", {}).get(self.table_name, []))
        return found

    def _delete_keys(self, keys: Iterable[dict[str, str]]) -> None:
        with self.table.batch_writer() as batch:
            for key in keys:
                batch.delete_item(Key=key)

    # ---- top-level entities: one item each, listed newest first through gsi1 ----------------------
    def _put_listed(self, tenant: str, kind: str, code: str, entity: dict[str, Any], listing: str) -> None:
        self._put(
            {
                **entity,
                "pk": tenant_pk(tenant, code, entity["id"]),
                "sk": code,
                "tenant": tenant,
                "kind": kind,
                "gsi1pk": f"T#{tenant}#{listing}",
                "gsi1sk": f"{entity['created_at']}#{entity['id']}",
            },
            must_not_exist=True,
        )

    def _list_listed(
        self, tenant: str, listing: str, limit: int, next_token: str | None, *, newest_first: bool = True
    ) -> tuple[list[dict[str, Any]], str | None]:
        return self._query_page(
            key_condition=Key("gsi1pk").eq(f"T#{tenant}#{listing}"),
            index="gsi1",
            limit=limit,
            next_token=next_token,
            forward=not newest_first,
        )
