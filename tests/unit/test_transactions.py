"""adapters/transactions.py: a cancelled transaction read item by item, contention retried (bounded,
with jitter), on botocore's Stubber (the answers DynamoDB gives, no network)."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from relayflow_runtime.adapters.transactions import (
    StoreContended,
    TransactionCancelled,
    retry_contention,
    transact_write,
)

ITEMS: list[dict[str, Any]] = [
    {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "x"}}, "ConditionExpression": "#s = :s"}},
    {"Put": {"TableName": "t", "Item": {"pk": {"S": "n"}}}},
]


def _client() -> Any:
    return boto3.client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _cancelled(stub: Stubber, *codes: str) -> None:
    stub.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled, please refer cancellation reasons for specific reasons",
        http_status_code=400,
        response_meta={},
        modeled_fields={"CancellationReasons": [{"Code": code} for code in codes]},
    )


def _run(client: Any, **kwargs: Any) -> list[float]:
    waits: list[float] = []
    transact_write(ITEMS, client=client, sleep=waits.append, rng=random.Random(7), **kwargs)
    return waits


def test_a_transaction_conflict_is_retried_with_jittered_waits_until_it_goes_through() -> None:
    # Given DynamoDB cancelling twice for a conflict (once on each item), then accepting
    client = _client()
    with Stubber(client) as stub:
        _cancelled(stub, "TransactionConflict", "None")
        _cancelled(stub, "None", "TransactionConflict")
        stub.add_response("transact_write_items", {})
        # When the transaction is written
        waits = _run(client)
        # Then it was sent three times, with a random wait within the growing caps before each retry
        stub.assert_no_pending_responses()
    assert len(waits) == 2
    assert 0 <= waits[0] <= 0.025 and 0 <= waits[1] <= 0.05


def test_throttling_reasons_are_retried_like_conflicts() -> None:
    client = _client()
    with Stubber(client) as stub:
        _cancelled(stub, "ThrottlingError", "ProvisionedThroughputExceeded")
        stub.add_response("transact_write_items", {})
        assert len(_run(client)) == 1
        stub.assert_no_pending_responses()


def test_a_conflict_that_never_ends_is_bounded_and_raises_a_transient_error_not_a_failed_condition() -> None:
    # Given DynamoDB cancelling every call for a conflict
    client = _client()
    with Stubber(client) as stub:
        for _ in range(4):
            _cancelled(stub, "TransactionConflict", "None")
        # When the transaction is written with a bound of four calls
        with pytest.raises(StoreContended) as raised:
            _run(client, attempts=4)
        # Then it gave up after exactly four calls, saying why, and no condition is said to have failed
        stub.assert_no_pending_responses()
    assert not isinstance(raised.value, TransactionCancelled)
    assert "contention 4 times" in str(raised.value)


def test_the_time_bound_stops_retries_before_the_attempts_do() -> None:
    client = _client()
    with Stubber(client) as stub:
        _cancelled(stub, "TransactionConflict", "None")
        with pytest.raises(StoreContended):
            _run(client, max_seconds=0.0)


@pytest.mark.parametrize("failed", [0, 1])
def test_a_failed_condition_names_its_item_and_is_not_retried(failed: int) -> None:
    # Given the condition of one item failing
    client = _client()
    codes = ["None", "None"]
    codes[failed] = "ConditionalCheckFailed"
    with Stubber(client) as stub:
        _cancelled(stub, *codes)
        # When the transaction is written
        with pytest.raises(TransactionCancelled) as raised:
            _run(client)
        stub.assert_no_pending_responses()
    # Then the error says which item's condition failed, and only that one
    assert raised.value.failed_condition(failed)
    assert not raised.value.failed_condition(1 - failed)
    assert raised.value.reasons == [None if c == "None" else c for c in codes]
    assert raised.value.only_conditions


def test_a_failed_condition_beside_a_conflict_is_a_failed_condition() -> None:
    client = _client()
    with Stubber(client) as stub:
        _cancelled(stub, "ConditionalCheckFailed", "TransactionConflict")
        with pytest.raises(TransactionCancelled) as raised:
            _run(client)
    assert raised.value.failed_condition(0) and not raised.value.failed_condition(1)


def test_a_validation_error_is_neither_retried_nor_a_failed_condition() -> None:
    client = _client()
    with Stubber(client) as stub:
        _cancelled(stub, "None", "ValidationError")
        with pytest.raises(TransactionCancelled) as raised:
            _run(client)
    assert raised.value.reasons == [None, "ValidationError"]
    assert not raised.value.failed_condition(1) and not raised.value.only_conditions


def test_a_single_write_refused_for_a_transaction_in_progress_is_retried_other_errors_are_not() -> None:
    calls: list[str] = []

    def conflict_once() -> str:
        calls.append("call")
        if len(calls) == 1:
            raise ClientError({"Error": {"Code": "TransactionConflictException"}}, "UpdateItem")
        return "written"

    assert retry_contention(conflict_once, sleep=lambda _: None) == "written"
    assert len(calls) == 2

    def condition() -> None:
        calls.append("call")
        raise ClientError({"Error": {"Code": "ConditionalCheckFailedException"}}, "UpdateItem")

    with pytest.raises(ClientError):
        retry_contention(condition, sleep=lambda _: None)
    assert len(calls) == 3
