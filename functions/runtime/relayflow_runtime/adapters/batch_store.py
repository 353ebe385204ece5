"""DynamoDB records of batch runs: item outcomes and progress counters.

Keys (in the one table; ``X`` is the execution's own partition ``T#t#X#x``, see adapters/table/)::

    X#Rnn        R#<item key>   the outcome of one item (nn = a hash of its id, 32 shards), holding
                                the record of each of its nodes: one write per item
    X#Cnn        C              one of 16 shards of the run's counters (processed, failed, usage)
    X#K          K#<block>      the pointers of RECORD_BLOCK consecutive ordinals of the run's list
                                (attribute ``p<n>``): where each item's outcome is in the S3
                                object of the child that ran it (domain/outcomes.py)
    X#K          S#<segment>    how many items of one segment's ordinals children have recorded
                                (``tally_segments``): when to compact it while the run runs

**Pointer records** (runs whose list entries carry their ordinal) hold no prompt or output: a child
batch writes its items' outcomes as one S3 object, then ``record_pointers`` records, in one
transaction, each item's pointer — an update of its block's record conditional on that pointer's
absence (a child of aligned items: one record) — and one counter ADD for exactly those. A repeated
child (an Express child run twice, even at the same moment, or any two children sharing items)
meets the condition, reads the block, and records only what is still missing — usually nothing:
the first complete record wins and nothing is counted twice. Once the run has ended its counter
shards are sealed (``seal``): the ADD is conditional on that, so a child still running then (an
Express child outlives its stopped parent) records nothing, and the end's counts and the run's
compacted segments hold every recorded item. A ten-item block record is ≈0.5 KB:
2 WRU per child (transactional) plus 2 for its counter ADD, against ~2 WRU per KB of every item's
outcome in the per-item records below.

**Per-item records** (``record_outcomes``; runs prepared before child records existed, whose
entries carry no ordinal) are kept as they were:

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

import functools
import json
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.codec import from_dynamo, to_dynamo
from relayflow_runtime.adapters.transactions import (
    CONTENTION_REASONS,
    StoreContended,
    TransactionCancelled,
    retry_contention,
    transact_write,
    until_processed,
)
from relayflow_runtime.domain.batch import (
    COUNTER_SHARDS,
    COUNTERS,
    OUTCOME_SHARDS,
    USAGE_COUNTERS,
    ItemOutcome,
    StoredOutcome,
    item_key,
    outcome_shard,
)
from relayflow_runtime.domain.outcomes import Pointer, pack_nodes, record_block, unpack_nodes

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
#: Why a transaction may be tried again: an outcome already there (it is dropped), or contention
#: beside it (adapters/transactions.py retries contention alone by itself).
_RETRYABLE_REASONS = frozenset({"ConditionalCheckFailed", *CONTENTION_REASONS})
#: Rounds of a child's recording that meet another writer of the same items (each round reads what
#: the other recorded): every cancelled round means the other one wrote, so this is a bound on
#: writers of one item at one moment, not on time.
CHILD_RECORD_ROUNDS = 8
#: The attribute of a counter shard that says the run's children may no longer record (seal).
SEALED = "sealed"


def _wire(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in to_dynamo(item).items()}


def _keep_expiry(names: dict[str, str], values: dict[str, Any], expires_at: int) -> str:
    """An update's clause that sets the item's TTL once (a later write keeps the first), its name
    and value added to ``names`` and ``values``."""
    names["#ttl"] = "expires_at"
    values[":ttl"] = {"N": str(expires_at)}
    return "#ttl = if_not_exists(#ttl, :ttl)"


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    plain = dict(from_dynamo({k: _deserializer.deserialize(v) for k, v in item.items()}))
    if isinstance(plain.get("nodes"), str):
        plain["nodes"] = unpack_nodes(json.loads(plain["nodes"]))
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
        return (
            [f"{pk}#R{s:02d}" for s in range(OUTCOME_SHARDS)]
            + [f"{pk}#C{s:02d}" for s in range(COUNTER_SHARDS)]
            + [self.pointers_pk(tenant, execution_id)]
        )

    def pointers_pk(self, tenant: str, execution_id: str) -> str:
        return f"{self.execution_pk(tenant, execution_id)}#K"

    def pointer_key(self, tenant: str, execution_id: str, block: int) -> dict[str, str]:
        return {"pk": self.pointers_pk(tenant, execution_id), "sk": f"K#{block:010d}"}

    # ---- recording -------------------------------------------------------------------------------
    def _outcome_put(
        self, tenant: str, execution_id: str, outcome: ItemOutcome, expires_at: int | None
    ) -> dict[str, Any]:
        item = {
            **({"expires_at": expires_at} if expires_at else {}),
            # The item's usage is counted (the counters), not kept: its nodes' usages hold it.
            **outcome.model_dump(mode="json", exclude_none=True, exclude={"nodes", "usage"}),
            # One JSON string: the same write units as a map, one attribute to encode.
            "nodes": json.dumps(pack_nodes(outcome), ensure_ascii=False, separators=(",", ":")),
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
        return self._counter_update(tenant, execution_id, amounts, expires_at)

    def _counter_update(
        self, tenant: str, execution_id: str, amounts: dict[str, int], expires_at: int | None
    ) -> dict[str, Any]:
        """One ADD on a counter shard picked at random, conditional on the run's counters not being
        sealed (:meth:`seal`)."""
        counted = {name: amount for name, amount in amounts.items() if amount}
        names = {f"#c{i}": name for i, name in enumerate(counted)}
        values = {f":c{i}": {"N": str(amount)} for i, amount in enumerate(counted.values())}
        expression = "ADD " + ", ".join(f"{n} :c{i}" for i, n in enumerate(names))
        if expires_at:  # the run's retention (services/retention.py), set by the shard's first ADD
            expression += " SET " + _keep_expiry(names, values, expires_at)
        names["#sealed"] = SEALED
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": _wire(self.counter_key(tenant, execution_id, random.randrange(COUNTER_SHARDS))),
                "UpdateExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ConditionExpression": "attribute_not_exists(#sealed)",
            }
        }

    def seal(self, tenant: str, execution_id: str, expires_at: int | None = None) -> None:
        """No child of the run records anything after this returns: every counter shard is marked
        ``sealed``, and a child's pointer transaction holds its counter ADD conditional on its
        shard's not being sealed (:meth:`record_pointers`), so it records all of its items or, once
        sealed, none. Each shard is its own write (a child's condition reads only its own shard,
        so sealing them one by one holds the same once all are sealed, and a child writing one
        shard never cancels the others' seal); a write met by a child's transaction is retried
        (``retry_contention``, then :class:`StoreContended`). Repeatable."""
        names = {"#sealed": SEALED}
        values: dict[str, Any] = {":sealed": {"BOOL": True}}
        expression = "SET #sealed = :sealed"
        if expires_at:  # a shard no child wrote yet is created here: it expires with the run
            expression += ", " + _keep_expiry(names, values, expires_at)
        for shard in range(COUNTER_SHARDS):
            self._update_one(self.counter_key(tenant, execution_id, shard), expression, names, values)

    def _update_one(
        self,
        key: dict[str, str],
        expression: str,
        names: dict[str, str],
        values: dict[str, Any],
        **extra: Any,
    ) -> dict[str, Any]:
        """One UpdateItem outside a transaction, retried while a transaction holds its item
        (``retry_contention``, then :class:`StoreContended`)."""
        response: dict[str, Any] = retry_contention(
            functools.partial(
                self._ddb.update_item,
                TableName=self.table_name,
                Key=_wire(key),
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **extra,
            )
        )
        return response

    def record_outcomes(
        self, tenant: str, execution_id: str, outcomes: list[ItemOutcome], expires_at: int | None = None
    ) -> list[str]:
        """Record each outcome unless its item already has one, and count exactly those, atomically
        (``expires_at``: the run's retention TTL). Returns the ids of the items recorded by this
        call (none when a repeated child calls, nor once the run's counters are sealed)."""
        pending = list({o.source_item_id: o for o in outcomes}.values())
        while pending:
            puts = [self._outcome_put(tenant, execution_id, o, expires_at) for o in pending]
            try:
                # Conflicts on a counter shard (another child's transaction) are retried in there.
                transact_write([*puts, self._counter_add(tenant, execution_id, pending, expires_at)])
                return [o.source_item_id for o in pending]
            except TransactionCancelled as exc:
                if exc.failed_condition(len(puts)):
                    return []  # the run has ended and sealed its counters (seal): nothing recorded
                already = {i for i in range(len(pending)) if exc.failed_condition(i)}
                if not already or any(r not in _RETRYABLE_REASONS for r in exc.reasons if r):
                    raise  # nothing to drop: trying the same transaction again would loop
                # Outcomes already there (a repeated child) are dropped, and the rest tried again:
                # every round drops one at least, so the loop ends.
                pending = [o for i, o in enumerate(pending) if i not in already]
        return []

    def record_pointers(
        self,
        tenant: str,
        execution_id: str,
        pointers: dict[int, Pointer],
        usage: dict[int, dict[str, int]],
        expires_at: int | None = None,
    ) -> list[int]:
        """Record each ordinal's pointer unless it has one already, and count exactly those,
        atomically: one conditional update per record block the ordinals fall in (a child of
        RECORD_BLOCK aligned items: one) and one counter ADD. Returns the ordinals recorded by this
        call (none when a repeated child calls, nor once the run's counters are sealed: a child that
        outlives its run's end records nothing its end did not count)."""
        recorded: set[int] = set()
        existing: set[int] = set()  # blocks known to have a record: updated, not put
        for _ in range(CHILD_RECORD_ROUNDS):
            pending = {n: p for n, p in sorted(pointers.items()) if n not in recorded}
            if not pending:
                return []
            amounts = {
                "processed_items": len(pending),
                "failed_items": sum(p.status == "failed" for p in pending.values()),
            }
            for n in pending:
                for name in USAGE_COUNTERS:
                    amounts[name] = amounts.get(name, 0) + int((usage.get(n) or {}).get(name) or 0)
            blocks: dict[int, dict[int, Pointer]] = {}
            for n, pointer in pending.items():
                blocks.setdefault(record_block(n), {})[n] = pointer
            writes = [
                self._pointer_write(tenant, execution_id, block, members, expires_at, block in existing)
                for block, members in blocks.items()
            ]
            counter = self._counter_update(tenant, execution_id, amounts, expires_at)
            try:
                transact_write([*writes, counter])
                return list(pending)
            except TransactionCancelled as exc:
                if exc.failed_condition(len(writes)):
                    return []  # the run has ended and sealed its counters (seal): nothing recorded
                met = [block for i, block in enumerate(blocks) if exc.failed_condition(i)]
                if not met or any(r not in _RETRYABLE_REASONS for r in exc.reasons if r):
                    raise
                # The block has a record (another child's items, or a repeat of this child that
                # was first): record only what it does not hold yet, by an update.
                for block in met:
                    existing.add(block)
                    recorded |= set(self._block_pointers(tenant, execution_id, block))
        raise StoreContended(
            f"{execution_id}: other writers of the same items kept recording first "
            f"({CHILD_RECORD_ROUNDS} rounds)"
        )

    def segment_tally_key(self, tenant: str, execution_id: str, block: int) -> dict[str, str]:
        return {"pk": self.pointers_pk(tenant, execution_id), "sk": f"S#{block:06d}"}

    def tally_segments(
        self, tenant: str, execution_id: str, recorded: dict[int, int], expires_at: int | None = None
    ) -> dict[int, int]:
        """Add ``recorded`` (items a child has just recorded, by segment) to each segment's tally,
        and return the tallies after: a hint of which segments are whole (services/outcomes.py).
        Its own write after the child's transaction, not in it: a counter every child of a segment
        writes would meet the others' transactions (TransactionConflict); an ADD outside one only
        queues. A hint may be short (a child that ended between the two) or, rarely, long (an ADD
        the SDK sent again after a lost answer): whoever acts on it checks the pointers."""
        tallies: dict[int, int] = {}
        for block, count in sorted(recorded.items()):
            names = {"#n": "recorded"}
            values: dict[str, Any] = {":n": {"N": str(count)}}
            expression = "ADD #n :n"
            if expires_at:
                expression += " SET " + _keep_expiry(names, values, expires_at)
            key = self.segment_tally_key(tenant, execution_id, block)
            response = self._update_one(key, expression, names, values, ReturnValues="UPDATED_NEW")
            tallies[block] = int(response["Attributes"]["recorded"]["N"])
        return tallies

    def _pointer_write(
        self,
        tenant: str,
        execution_id: str,
        block: int,
        members: dict[int, Pointer],
        expires_at: int | None,
        exists: bool,
    ) -> dict[str, Any]:
        """A new block's record as one put conditional on there being none (the common case: a
        child's aligned items); an existing one's update, conditional on each pointer's absence."""
        if not exists:
            item = {
                **self.pointer_key(tenant, execution_id, block),
                **{f"p{n}": p.encode() for n, p in members.items()},
                **({"expires_at": expires_at} if expires_at else {}),
            }
            return {
                "Put": {
                    "TableName": self.table_name,
                    "Item": _wire(item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        return self._pointer_update(tenant, execution_id, block, members, expires_at)

    def _pointer_update(
        self,
        tenant: str,
        execution_id: str,
        block: int,
        members: dict[int, Pointer],
        expires_at: int | None,
    ) -> dict[str, Any]:
        names = {f"#p{j}": f"p{n}" for j, n in enumerate(members)}
        values = {f":p{j}": {"S": p.encode()} for j, p in enumerate(members.values())}
        expression = "SET " + ", ".join(f"#p{j} = :p{j}" for j in range(len(members)))
        if expires_at:  # the run's retention (services/retention.py)
            expression += ", " + _keep_expiry(names, values, expires_at)
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": _wire(self.pointer_key(tenant, execution_id, block)),
                "UpdateExpression": expression,
                "ConditionExpression": " AND ".join(
                    f"attribute_not_exists(#p{j})" for j in range(len(members))
                ),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    @staticmethod
    def _pointers(item: dict[str, Any]) -> dict[int, Pointer]:
        return {
            int(name[1:]): Pointer.decode(value["S"])
            for name, value in item.items()
            if name[:1] == "p" and name[1:].isdigit()
        }

    def _block_pointers(
        self, tenant: str, execution_id: str, block: int, *, consistent: bool = True
    ) -> dict[int, Pointer]:
        response = self._ddb.get_item(
            TableName=self.table_name,
            Key=_wire(self.pointer_key(tenant, execution_id, block)),
            ConsistentRead=consistent,
        )
        return self._pointers(response.get("Item") or {})

    def pointers(
        self, tenant: str, execution_id: str, low: int, high: int, *, consistent: bool = False
    ) -> dict[int, Pointer]:
        """The pointer of every recorded ordinal in low..high: one GetItem for one record block,
        else one Query over the blocks (paged by DynamoDB's 1 MB: ~2,000 blocks a page)."""
        first, last = record_block(low), record_block(high)
        found: dict[int, Pointer] = {}
        if first == last:
            found = self._block_pointers(tenant, execution_id, first, consistent=consistent)
        else:
            kwargs: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
                "ExpressionAttributeValues": {
                    ":pk": {"S": self.pointers_pk(tenant, execution_id)},
                    ":low": {"S": f"K#{first:010d}"},
                    ":high": {"S": f"K#{last:010d}"},
                },
                "ConsistentRead": consistent,
            }
            while True:
                response = self._ddb.query(**kwargs)
                for item in response.get("Items", []):
                    found.update(self._pointers(item))
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return {n: p for n, p in found.items() if low <= n <= high}

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
            for response in until_processed(
                lambda r: self._ddb.batch_get_item(RequestItems=r), request, "UnprocessedKeys"
            ):
                for item in response.get("Responses", {}).get(self.table_name, []):
                    yield _plain(item)

    def outcomes(
        self,
        tenant: str,
        execution_id: str,
        item_ids: list[str],
        *,
        consistent: bool = False,
        fields: Iterable[str] = (),
    ) -> dict[str, StoredOutcome]:
        """The recorded outcomes of these items, by item id (items without one left out); only
        ``fields`` of each when given."""
        keys = {}
        for item_id in dict.fromkeys(item_ids):
            key = self.outcome_key(tenant, execution_id, item_id)
            keys[(key["pk"], key["sk"])] = item_id
        found: dict[str, StoredOutcome] = {}
        for item in self._batch_get(
            [{"pk": pk, "sk": sk} for pk, sk in keys], consistent=consistent, fields=fields
        ):
            item_id = keys[(item.pop("pk"), item.pop("sk"))]
            found[item_id] = cast(StoredOutcome, item)  # as _outcome_put wrote it
        return found

    def outcome(self, tenant: str, execution_id: str, item_id: str) -> StoredOutcome | None:
        response = self._ddb.get_item(
            TableName=self.table_name, Key=_wire(self.outcome_key(tenant, execution_id, item_id))
        )
        item = response.get("Item")
        if not item:
            return None
        plain = _plain(item)
        plain.pop("pk", None)
        plain.pop("sk", None)
        return cast(StoredOutcome, plain)  # as _outcome_put wrote it

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
        for _ in until_processed(
            lambda r: self._ddb.batch_write_item(RequestItems=r), request, "UnprocessedItems"
        ):
            pass
