"""Answers that say "part of it": recording a child's outcomes ends whatever DynamoDB answers
(outcomes already recorded by a repeated child are dropped and the rest tried again; a
cancellation that names none is raised, never tried again as it was), and deleting a prefix is
finished only when S3 deleted every key (DeleteObjects names the others under Errors)."""

from __future__ import annotations

from typing import Any

import pytest

from relayflow_runtime.adapters import batch_store, transactions
from relayflow_runtime.adapters.batch_store import BatchStore
from relayflow_runtime.adapters.transactions import TransactionCancelled
from relayflow_runtime.domain.batch import ItemOutcome


def outcomes(*ids: str) -> list[ItemOutcome]:
    return [ItemOutcome(source_item_id=i, status="completed") for i in ids]


def answering(monkeypatch: pytest.MonkeyPatch, answers: list[list[str | None] | None]) -> list[int]:
    """transact_write answering each call in turn: a list of reasons cancels, None writes."""
    sizes: list[int] = []

    def transact_write(items: list[dict[str, Any]], **_: Any) -> None:
        sizes.append(len(items))
        if len(sizes) > 10:
            raise AssertionError("recording kept trying the same transaction")
        reasons = answers.pop(0)
        if reasons is not None:
            raise TransactionCancelled(reasons)

    monkeypatch.setattr(batch_store, "transact_write", transact_write)
    return sizes


def test_outcomes_recorded_already_are_dropped_and_the_rest_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = answering(monkeypatch, [["ConditionalCheckFailed", None, None, None], None])
    recorded = BatchStore("t").record_outcomes("tenant", "x", outcomes("a", "b", "c"))
    assert recorded == ["b", "c"]
    assert sizes == [4, 3]  # three outcomes + the counter, then two + the counter


def test_a_cancellation_naming_no_recorded_outcome_is_raised_not_tried_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answering(monkeypatch, [[None, None, None]] * 20)
    with pytest.raises(TransactionCancelled):
        BatchStore("t").record_outcomes("tenant", "x", outcomes("a", "b"))


class _S3:
    """list_objects_v2 pages of the given keys; delete_objects reports the keys in ``failing``."""

    def __init__(self, keys: list[str], failing: set[str]) -> None:
        self.objects, self.failing = keys, failing

    def get_paginator(self, _: str) -> Any:
        objects = self.objects

        class Pages:
            def paginate(self, **_: Any) -> list[dict[str, Any]]:
                return [{"Contents": [{"Key": k} for k in objects]}]

        return Pages()

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        keys = [o["Key"] for o in Delete["Objects"]]
        errors = [{"Key": key, "Code": "SlowDown"} for key in keys if key in self.failing]
        return {"Errors": errors} if errors else {}


@pytest.mark.parametrize(("failing", "finished"), [(set(), True), ({"p/b"}, False)])
def test_a_prefix_is_finished_only_when_s3_deleted_every_key(
    monkeypatch: pytest.MonkeyPatch, failing: set[str], finished: bool
) -> None:
    # S3's DeleteObjects answers 200 and names the keys it could not delete under Errors: the delete
    # job must come back for those (another round), not call the prefix empty.
    from relayflow_runtime.adapters import blobs

    store = blobs.BlobStore("bucket")
    monkeypatch.setattr(blobs.BlobStore, "_s3", _S3(["p/a", "p/b"], failing))
    assert store.delete_prefix("p/") is finished


class _Throttled:
    """batch_get_item that leaves every key unprocessed (DynamoDB's answer when it throttles)."""

    def __init__(self) -> None:
        self.calls = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"Responses": {}, "UnprocessedKeys": RequestItems}


def test_keys_left_unprocessed_are_asked_again_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from relayflow_runtime.adapters.transactions import ATTEMPTS, StoreContended

    throttled = _Throttled()
    monkeypatch.setattr(BatchStore, "_ddb", property(lambda self: throttled))
    monkeypatch.setattr(transactions.time, "sleep", lambda seconds: None)
    with pytest.raises(StoreContended, match="unprocessed"):
        list(BatchStore("t")._batch_get([{"pk": "a", "sk": "b"}], consistent=False))
    assert throttled.calls == ATTEMPTS


class _PartlyWritten:
    """batch_write_item that leaves the last request unprocessed ``throttled`` times, then takes it."""

    def __init__(self, throttled: int) -> None:
        self.throttled, self.sizes = throttled, []  # type: ignore[var-annotated]

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self.sizes.append(len(requests))
        if self.throttled:
            self.throttled -= 1
            return {"UnprocessedItems": {table: requests[-1:]}}
        return {}


def test_deletes_left_unprocessed_are_sent_again_only_they_and_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from relayflow_runtime.adapters.transactions import ATTEMPTS, StoreContended

    waits: list[float] = []
    monkeypatch.setattr(transactions.time, "sleep", waits.append)
    partly = _PartlyWritten(throttled=2)
    monkeypatch.setattr(BatchStore, "_ddb", property(lambda self: partly))
    BatchStore("t")._delete_batch([{"pk": "a", "sk": str(i)} for i in range(3)])
    assert partly.sizes == [3, 1, 1]  # the whole batch, then the one item left twice
    assert len(waits) == 2 and all(0 <= w <= 1.0 for w in waits)

    stuck = _PartlyWritten(throttled=10**6)
    monkeypatch.setattr(BatchStore, "_ddb", property(lambda self: stuck))
    with pytest.raises(StoreContended, match="unprocessed"):
        BatchStore("t")._delete_batch([{"pk": "a", "sk": "b"}])
    assert len(stuck.sizes) == ATTEMPTS
