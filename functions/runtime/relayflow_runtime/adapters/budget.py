"""The account-wide budget of batch parallelism: one counter item, reserved and released exactly once
per run by DynamoDB transactions (see services/budget.py for the rules).

    BUDGET#batch_parallelism   BUDGET    in_use (items running at once, summed over batches)
    T#t#X#x                    X         budget_reserved (this run's share, while it holds one)
    BUDGET#batch_parallelism   WAIT#t#x  a batch waiting for its share: its task token (the batch
                                         machine's AwaitBudget), since, waits (how often it parked)

A reservation is one transaction of two conditional updates: the counter grows by the run's share
only while the sum stays within the limit, and the execution records its share only while it is
``pending`` and holds none. A release is the mirror image: the execution's share is removed only
while it is still there, and the counter shrinks by exactly that much. A retried reservation or a
second release therefore changes nothing: the counter can neither leak nor count a run twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.table.keys import execution_key
from relayflow_runtime.adapters.transactions import StoreContended, TransactionCancelled, transact_write
from relayflow_runtime.domain.status import ExecutionStatus

BUDGET_PK = "BUDGET#batch_parallelism"
BUDGET_KEY = {"pk": {"S": BUDGET_PK}, "sk": {"S": "BUDGET"}}
WAITER_PREFIX = "WAIT#"

ReserveOutcome = Literal["reserved", "already_reserved", "exhausted", "contended", "not_pending"]

#: A release reads the run's share and tries again this many times before giving up to the sweeper.
RELEASE_ROUNDS = 4


class BudgetError(Exception):
    """DynamoDB refused a budget transaction for a reason retrying does not cure."""


@dataclass(frozen=True)
class Waiter:
    """A batch parked on AwaitBudget: its task token, when it first waited, how often it parked."""

    tenant: str
    execution_id: str
    token: str
    since: str
    waits: int


@dataclass(frozen=True)
class BudgetState:
    in_use: int
    limit: int | None


class BudgetStore:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    @property
    def _client(self) -> Any:
        return aws.client("dynamodb")

    def _execution_key(self, tenant: str, execution_id: str) -> dict[str, Any]:
        key = execution_key(tenant, execution_id)
        return {name: {"S": value} for name, value in key.items()}

    def _transact(self, items: list[dict[str, Any]]) -> list[str | None]:
        """One TransactWriteItems, contention retried (adapters/transactions.py): ``[]`` when it was
        written, else each item's cancellation reason (``None`` for an item that was fine). Still
        contended past the bounded retries: :class:`StoreContended`."""
        try:
            transact_write(items, client=self._client)
        except TransactionCancelled as exc:
            return exc.reasons
        return []

    def reserve(self, tenant: str, execution_id: str, amount: int, limit: int, now: str) -> ReserveOutcome:
        """Take ``amount`` of the budget for the run (``limit`` in all), unless the run took its share
        already (a retried task) or is no longer pending (cancelled while it waited). A budget item
        that stays contended (other batches reserving or releasing at that moment) is
        ``contended``: like ``exhausted``, the batch waits and asks again; it never fails for it."""
        items = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": BUDGET_KEY,
                    "UpdateExpression": "ADD in_use :n SET #limit = :limit, updated_at = :now",
                    "ConditionExpression": "attribute_not_exists(in_use) OR in_use <= :room",
                    "ExpressionAttributeNames": {"#limit": "limit"},
                    "ExpressionAttributeValues": {
                        ":n": {"N": str(amount)},
                        ":limit": {"N": str(limit)},
                        ":room": {"N": str(limit - amount)},
                        ":now": {"S": now},
                    },
                }
            },
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": self._execution_key(tenant, execution_id),
                    "UpdateExpression": "SET budget_reserved = :n, budget_reserved_at = :now "
                    "REMOVE waiting_reason",
                    "ConditionExpression": "#st = :pending AND attribute_not_exists(budget_reserved)",
                    "ExpressionAttributeNames": {"#st": "status"},
                    "ExpressionAttributeValues": {
                        ":n": {"N": str(amount)},
                        ":pending": {"S": ExecutionStatus.PENDING.value},
                        ":now": {"S": now},
                    },
                }
            },
        ]
        try:
            reasons = self._transact(items)
        except StoreContended:
            return "contended"
        if not reasons:
            return "reserved"
        if len(reasons) == 2 and reasons[1] == "ConditionalCheckFailed":
            if self._held(tenant, execution_id) is not None:
                return "already_reserved"
            return "not_pending"
        if len(reasons) == 2 and reasons[0] == "ConditionalCheckFailed":
            return "exhausted"
        raise BudgetError(f"reserving the batch budget was refused: {reasons}")

    def release(self, tenant: str, execution_id: str, now: str) -> int:
        """Give the run's share back; returns how much was released (0: it held none). A conflict
        is retried until the share is given back or the run is seen to hold none (another release
        got there first); only a budget item contended for longer than that raises
        :class:`StoreContended` (the share stays recorded on the run: the sweeper releases it)."""
        for _ in range(RELEASE_ROUNDS):
            amount = self._held(tenant, execution_id)
            if amount is None:
                return 0
            try:
                reasons = self._transact(
                    [
                        {
                            "Update": {
                                "TableName": self.table_name,
                                "Key": self._execution_key(tenant, execution_id),
                                "UpdateExpression": "SET budget_released_at = :now REMOVE budget_reserved",
                                "ConditionExpression": "budget_reserved = :n",
                                "ExpressionAttributeValues": {":n": {"N": str(amount)}, ":now": {"S": now}},
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table_name,
                                "Key": BUDGET_KEY,
                                "UpdateExpression": "ADD in_use :minus SET updated_at = :now",
                                "ExpressionAttributeValues": {
                                    ":minus": {"N": str(-amount)},
                                    ":now": {"S": now},
                                },
                            }
                        },
                    ]
                )
            except StoreContended:
                continue  # read the share again, then try again
            if not reasons:
                return amount
            if reasons[0] != "ConditionalCheckFailed":
                raise BudgetError(f"releasing the batch budget was refused: {reasons}")
            # the run's share changed meanwhile (another release): read it again
        raise StoreContended(f"could not release the batch budget of {execution_id}: it stays contended")

    def note_waiting(self, tenant: str, execution_id: str, reason: str) -> None:
        """Say why a pending run waits (shown by GET execution), only while it is still pending."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=self._execution_key(tenant, execution_id),
                UpdateExpression="SET waiting_reason = :reason",
                ConditionExpression="#st = :pending",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":reason": {"S": reason},
                    ":pending": {"S": ExecutionStatus.PENDING.value},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    # ---- batches waiting for their share (woken by a release) ----------------------------------------
    def _waiter_key(self, tenant: str, execution_id: str) -> dict[str, Any]:
        return {"pk": {"S": BUDGET_PK}, "sk": {"S": f"{WAITER_PREFIX}{tenant}#{execution_id}"}}

    @staticmethod
    def _waiter(item: dict[str, Any]) -> Waiter:
        return Waiter(
            tenant=item["tenant"]["S"],
            execution_id=item["execution_id"]["S"],
            token=item["token"]["S"],
            since=item["since"]["S"],
            waits=int(item["waits"]["N"]),
        )

    def park(self, tenant: str, execution_id: str, token: str, now: str, expires_at: int) -> Waiter:
        """Record the batch's task token as waiting (a new token replaces the last); returns the
        waiter with ``since`` (its first wait) and ``waits`` (counting this one)."""
        response = self._client.update_item(
            TableName=self.table_name,
            Key=self._waiter_key(tenant, execution_id),
            UpdateExpression="SET #tk = :tk, tenant = :tenant, execution_id = :x, "
            "since = if_not_exists(since, :now), expires_at = :exp ADD waits :one",
            ExpressionAttributeNames={"#tk": "token"},
            ExpressionAttributeValues={
                ":tk": {"S": token},
                ":tenant": {"S": tenant},
                ":x": {"S": execution_id},
                ":now": {"S": now},
                ":exp": {"N": str(expires_at)},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_NEW",
        )
        return self._waiter(response["Attributes"])

    def waiter(self, tenant: str, execution_id: str) -> Waiter | None:
        item = self._client.get_item(
            TableName=self.table_name, Key=self._waiter_key(tenant, execution_id), ConsistentRead=True
        ).get("Item")
        return self._waiter(item) if item else None

    def waiters(self, limit: int) -> list[Waiter]:
        """The batches waiting, longest first by key (at most ``limit``: one page)."""
        response = self._client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :wait)",
            ExpressionAttributeValues={":pk": {"S": BUDGET_PK}, ":wait": {"S": WAITER_PREFIX}},
            ConsistentRead=True,
            Limit=limit,
        )
        return [self._waiter(item) for item in response.get("Items") or []]

    def unpark(self, tenant: str, execution_id: str) -> None:
        """The batch waits no more (it reserved its share, or it ended)."""
        self._client.delete_item(TableName=self.table_name, Key=self._waiter_key(tenant, execution_id))

    def state(self) -> BudgetState:
        item = (
            self._client.get_item(TableName=self.table_name, Key=BUDGET_KEY, ConsistentRead=True).get("Item")
            or {}
        )
        limit = item.get("limit")
        return BudgetState(
            in_use=int(item.get("in_use", {}).get("N", "0")),
            limit=int(limit["N"]) if limit else None,
        )

    def _held(self, tenant: str, execution_id: str) -> int | None:
        """The share the run holds (its item's ``budget_reserved``), None when it holds none."""
        response = self._client.get_item(
            TableName=self.table_name,
            Key=self._execution_key(tenant, execution_id),
            ConsistentRead=True,
            ProjectionExpression="budget_reserved",
        )
        held = (response.get("Item") or {}).get("budget_reserved")
        return int(held["N"]) if held else None
