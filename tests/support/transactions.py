"""A test double for DynamoDB's cancelled transactions on the local stack (moto never cancels one
for a conflict: it runs one call at a time).

``cancelling_transactions(monkeypatch, decide)`` puts a wrapper around the runtime's DynamoDB
client: before each ``TransactWriteItems`` call, ``decide(items)`` returns ``None`` (the call goes
through) or the cancellation to answer instead: ``Cancel(reasons)``, one reason code per item
(``None`` for an item that was fine), raised as DynamoDB raises it; with ``apply=True`` the real
write happens first (the transaction went through, and this caller is told it was cancelled, as a
repeated task is when its record is already there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws


@dataclass(frozen=True)
class Cancel:
    reasons: Sequence[str | None]
    apply: bool = False


@dataclass
class Calls:
    """What the wrapper saw: every call's items, and which were cancelled."""

    items: list[list[dict[str, Any]]] = field(default_factory=list)
    cancelled: list[Cancel] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def cancellation(reasons: Sequence[str | None]) -> ClientError:
    """The error DynamoDB answers for a cancelled transaction (as botocore parses it)."""
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": code or "None"} for code in reasons],
        },
        "TransactWriteItems",
    )


class _Client:
    def __init__(self, real: Any, decide: Callable[[list[dict[str, Any]]], Cancel | None], calls: Calls):
        self._real, self._decide, self._calls = real, decide, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        items = kwargs["TransactItems"]
        with self._calls.lock:
            self._calls.items.append(items)
            cancel = self._decide(items)
            if cancel:
                self._calls.cancelled.append(cancel)
        if cancel is None:
            return self._real.transact_write_items(**kwargs)
        if cancel.apply:
            self._real.transact_write_items(**kwargs)
        raise cancellation(cancel.reasons)


@contextmanager
def cancelling_transactions(
    monkeypatch: pytest.MonkeyPatch, decide: Callable[[list[dict[str, Any]]], Cancel | None]
) -> Iterator[Calls]:
    calls = Calls()
    real_client = aws.client

    def client(service: str) -> Any:
        real = real_client(service)
        return _Client(real, decide, calls) if service == "dynamodb" else real

    with monkeypatch.context() as patch:
        patch.setattr(aws, "client", client)
        yield calls


def updates_node(items: list[dict[str, Any]], node_id: str, status: str) -> bool:
    """Whether the transaction writes ``status`` on the record of ``node_id`` (a node's recording)."""
    for item in items:
        update = item.get("Update") or {}
        if update.get("Key", {}).get("sk", {}).get("S") == f"N#{node_id}" and {"S": status} in (
            update.get("ExpressionAttributeValues") or {}
        ).values():
            return True
    return False


class _Table:
    def __init__(self, real: Any, decide: Callable[[dict[str, Any]], str | None], refused: list[str]):
        self._real, self._decide, self._refused = real, decide, refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def update_item(self, **kwargs: Any) -> Any:
        code = self._decide(kwargs)
        if code is None:
            return self._real.update_item(**kwargs)
        self._refused.append(code)
        raise ClientError({"Error": {"Code": code, "Message": "refused by the test"}}, "UpdateItem")


@contextmanager
def refusing_updates(
    monkeypatch: pytest.MonkeyPatch, decide: Callable[[dict[str, Any]], str | None]
) -> Iterator[list[str]]:
    """Each ``UpdateItem`` through a store's table: ``decide(kwargs)`` returns ``None`` (it goes
    through) or the error code DynamoDB answers instead (``TransactionConflictException``: a
    transaction holds the item). Yields the codes answered."""
    refused: list[str] = []
    real_table = aws.dynamodb_table

    def table(name: str) -> Any:
        return _Table(real_table(name), decide, refused)

    with monkeypatch.context() as patch:
        patch.setattr(aws, "dynamodb_table", table)
        yield refused
