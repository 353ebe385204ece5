"""DynamoDB records of batch runs: item outcomes and progress counters.

Keys (in the one table; ``X`` is the execution's own partition ``T#t#X#x``, see adapters/table/)::

    X#Rnn        R#<item key>   the outcome of one item (nn = a hash of its id, 32 shards), holding
                                the record of each of its nodes: one write per item
    X#Cnn        C              one of 16 shards of the run's counters (processed, failed, usage)

**Exactly once under at-least-once children.** A child batch records all its items in one
``TransactWriteItems``: each outcome a put conditional on ``attribute_not_exists(pk)``, plus one ADD
on a counter shard for exactly those items. Whatever repeats (an Express child run twice, a Lambda
retried, ``items_failed`` after a ``run_items`` that did record), an item is recorded and counted
once: a transaction cancelled because some outcomes exist is retried without them (a repeated
child finds all of them and records nothing); one cancelled by a conflict (another child's
transaction on the same counter shard) is retried with jitter (adapters/transactions.py).

Transactions cost two write units per KB: an outcome of a three-node item is ~1-2 KB (prompts and
outputs over the inline limit are S3 references), so an item costs ~2-4 WRU plus its share of one
counter ADD per child — against four writes of the former design (a record per node and an ADD).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.codec import from_dynamo, to_dynamo
from relayflow_runtime.adapters.transactions import CONTENTION_REASONS, TransactionCancelled, transact_write
from relayflow_runtime.domain.batch import (
    COUNTER_SHARDS,
    COUNTERS,
    OUTCOME_SHARDS,
    USAGE_COUNTERS,
    ItemOutcome,
    item_key,
    outcome_shard,
)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
#: Why a transaction may be tried again: an outcome already there (it is dropped), or contention
#: beside it (adapters/transactions.py retries contention alone by itself).
_RETRYABLE_REASONS = frozenset({"ConditionalCheckFailed", *CONTENTION_REASONS})


def _wire(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in to_dynamo(item).items()}


def _pack_nodes(outcome: ItemOutcome) -> str:
    """An outcome's node records as one compact JSON string: the same write units as a map, one
    attribute to encode instead of a tree of typed values, and nothing that can be derived (the
    node id is the key, the start is the end less the duration, empty lists are left out). A
    three-node item of short texts stays under 1 KB: 2 write units in a transaction."""
    nodes = {}
    for node_id, node in outcome.nodes.items():
        record = node.model_dump(mode="json", exclude_none=True, exclude={"node_id", "started_at"})
        nodes[node_id] = {k: v for k, v in record.items() if v != [] and v != {}}
    return json.dumps(nodes, ensure_ascii=False, separators=(",", ":"))


def _unpack_nodes(packed: str) -> dict[str, Any]:
    nodes: dict[str, Any] = json.loads(packed)
    for node_id, record in nodes.items():
        record["node_id"] = node_id
        if record.get("completed_at") and record.get("duration_ms") is not None:
            ended = datetime.fromisoformat(record["completed_at"].replace("Z", "+00:00"))
            started = ended - timedelta(milliseconds=int(record["duration_ms"]))
            record["started_at"] = started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return nodes


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    plain = dict(from_dynamo({k: _deserializer.deserialize(v) for k, v in item.items()}))
    if isinstance(plain.get("nodes"), str):
        plain["nodes"] = _unpack_nodes(plain["nodes"])
    return plain


class BatchStore:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb")

    # ---- keys ------------------------------------------------------------------------------------
    @staticmethod
    def execution_pk(tenant: str, execution_id: str) -> str:
        return f"T#{tenant}#X#{execution_id}"

    def outcome_key(self, tenant: str, execution_id: str, item_id: str) -> dict[str, str]:
        shard = outcome_shard(item_id)
        return {
            "pk": f"{self.execution_pk(tenant, execution_id)}#R{shard:02d}",
            "sk": f"R#{item_key(item_id)}",
        }

    def counter_key(self, tenant: str, execution_id: str, shard: int) -> dict[str, str]:
        return {"pk": f"{self.execution_pk(tenant, execution_id)}#C{shard:02d}", "sk": "C"}

    def shard_partitions(self, tenant: str, execution_id: str) -> list[str]:
        """Every partition key a batch run's outcomes and counters use (for deleting it)."""
        pk = self.execution_pk(tenant, execution_id)
        return [f"{pk}#R{s:02d}" for s in range(OUTCOME_SHARDS)] + [
            f"{pk}#C{s:02d}" for s in range(COUNTER_SHARDS)
        ]

    # ---- recording -------------------------------------------------------------------------------
    def _outcome_put(
        self, tenant: str, execution_id: str, outcome: ItemOutcome, expires_at: int | None
    ) -> dict[str, Any]:
        item = {
            **({"expires_at": expires_at} if expires_at else {}),
            # The item's usage is counted (the counters), not kept: its nodes' usages hold it.
            **outcome.model_dump(mode="json", exclude_none=True, exclude={"nodes", "usage"}),
            "nodes": _pack_nodes(outcome),
            **self.outcome_key(tenant, execution_id, outcome.source_item_id),
        }
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": _wire(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _counter_add(
        self, tenant: str, execution_id: str, outcomes: list[ItemOutcome], expires_at: int | None
    ) -> dict[str, Any]:
        amounts = {
            "processed_items": len(outcomes),
            "failed_items": sum(o.status == "failed" for o in outcomes),
        }
        for outcome in outcomes:
            for name in USAGE_COUNTERS:
                amounts[name] = amounts.get(name, 0) + int(outcome.usage.get(name) or 0)
        counted = {name: amount for name, amount in amounts.items() if amount}
        names = {f"#c{i}": name for i, name in enumerate(counted)}
        values = {f":c{i}": {"N": str(amount)} for i, amount in enumerate(counted.values())}
        expression = "ADD " + ", ".join(f"{n} :c{i}" for i, n in enumerate(names))
        if expires_at:  # the run's retention (services/retention.py), set by the shard's first ADD
            names["#ttl"] = "expires_at"
            values[":ttl"] = {"N": str(expires_at)}
            expression += " SET #ttl = if_not_exists(#ttl, :ttl)"
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": _wire(self.counter_key(tenant, execution_id, random.randrange(COUNTER_SHARDS))),
                "UpdateExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def record_outcomes(
        self, tenant: str, execution_id: str, outcomes: list[ItemOutcome], expires_at: int | None = None
    ) -> list[str]:
        """Record each outcome unless its item already has one, and count exactly those, atomically
        (``expires_at``: the run's retention TTL). Returns the ids of the items recorded by this
        call (none when a repeated child calls)."""
        pending = list({o.source_item_id: o for o in outcomes}.values())
        while pending:
            puts = [self._outcome_put(tenant, execution_id, o, expires_at) for o in pending]
            try:
                # Conflicts on a counter shard (another child's transaction) are retried in there.
                transact_write([*puts, self._counter_add(tenant, execution_id, pending, expires_at)])
                return [o.source_item_id for o in pending]
            except TransactionCancelled as exc:
                already = {i for i in range(len(pending)) if exc.failed_condition(i)}
                if not already or any(r not in _RETRYABLE_REASONS for r in exc.reasons if r):
                    raise  # nothing to drop: trying the same transaction again would loop
                # Outcomes already there (a repeated child) are dropped, and the rest tried again:
                # every round drops one at least, so the loop ends.
                pending = [o for i, o in enumerate(pending) if i not in already]
        return []

    # ---- reading ---------------------------------------------------------------------------------
    def _batch_get(
        self, keys: list[dict[str, str]], *, consistent: bool, fields: Iterable[str] = ()
    ) -> Iterator[dict[str, Any]]:
        projection: dict[str, Any] = {}
        wanted = list(dict.fromkeys(("pk", "sk", *fields))) if fields else []
        if wanted:
            names = {f"#p{i}": name for i, name in enumerate(wanted)}
            projection = {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [_wire(k) for k in keys[start : start + 100]],
                    "ConsistentRead": consistent,
                    **projection,
                }
            }
            backoff = 0.01
            while request:
                response = self._ddb.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    yield _plain(item)
                request = response.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)

    def outcomes(
        self,
        tenant: str,
        execution_id: str,
        item_ids: list[str],
        *,
        consistent: bool = False,
        fields: Iterable[str] = (),
    ) -> dict[str, dict[str, Any]]:
        """The recorded outcomes of these items, by item id (items without one left out); only
        ``fields`` of each when given."""
        keys = {}
        for item_id in dict.fromkeys(item_ids):
            key = self.outcome_key(tenant, execution_id, item_id)
            keys[(key["pk"], key["sk"])] = item_id
        found: dict[str, dict[str, Any]] = {}
        for item in self._batch_get(
            [{"pk": pk, "sk": sk} for pk, sk in keys], consistent=consistent, fields=fields
        ):
            item_id = keys[(item.pop("pk"), item.pop("sk"))]
            found[item_id] = item
        return found

    def outcome(self, tenant: str, execution_id: str, item_id: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(
            TableName=self.table_name, Key=_wire(self.outcome_key(tenant, execution_id, item_id))
        )
        item = response.get("Item")
        if not item:
            return None
        plain = _plain(item)
        plain.pop("pk", None)
        plain.pop("sk", None)
        return plain

    def counters(self, tenant: str, execution_id: str, *, consistent: bool = False) -> dict[str, int]:
        """The sum of the counter shards (one BatchGetItem of 16 small items)."""
        totals = dict.fromkeys(COUNTERS, 0)
        keys = [self.counter_key(tenant, execution_id, shard) for shard in range(COUNTER_SHARDS)]
        for item in self._batch_get(keys, consistent=consistent):
            for name in COUNTERS:
                totals[name] += int(item.get(name) or 0)
        return totals

    # ---- deleting --------------------------------------------------------------------------------
    def delete_records(
        self, tenant: str, execution_id: str, *, stop: Callable[[], bool] | None = None
    ) -> tuple[int, bool]:
        """Delete every outcome and counter of a batch run (a Query per shard, batched deletes);
        returns how many, and whether none is left. With ``stop``, it stops once that answers True
        after a page (at least one page is deleted). Repeatable: what is deleted is gone, so the
        next call goes on with the rest."""
        deleted = 0
        for pk in self.shard_partitions(tenant, execution_id):
            kwargs: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
                "ProjectionExpression": "pk, sk",
            }
            while True:
                response = self._ddb.query(**kwargs)
                keys = [{"pk": i["pk"], "sk": i["sk"]} for i in response.get("Items", [])]
                for start in range(0, len(keys), 25):
                    self._delete_batch(keys[start : start + 25])
                deleted += len(keys)
                if keys and stop is not None and stop():
                    return deleted, False
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return deleted, True

    def _delete_batch(self, keys: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {self.table_name: [{"DeleteRequest": {"Key": k}} for k in keys]}
        backoff = 0.01
        while request:
            request = self._ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if request:
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
