"""ExecutionStore's node writes read a cancelled transaction item by item (issue 23 #1), on the
local stack with cancellations injected (tests/support/transactions.py): item 0 is the execution's
ConditionCheck, item 1 the node record's update."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.items import execution_item
from tests.support.transactions import Cancel, cancelling_transactions

from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters.table import ExecutionEnded, NodeAlreadyEnded
from relayflow_runtime.adapters.transactions import StoreContended
from relayflow_runtime.domain.batch import ItemOutcome
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.status import progress_node
from relayflow_runtime.services import deps

TENANT = "default"
RUN = "x-recording"
DONE = {"status": "completed", "output": "done", "usage": {"input_tokens": 2, "output_tokens": 1}}


@pytest.fixture
def running_node(local_stack: LocalStack) -> Iterator[Any]:
    """A running single run whose node ``a`` is at its first attempt; yields the store."""
    store = deps.stores().executions
    run = {"id": RUN, "workflow_id": "wf", "status": "running", "input_mode": "single"}
    store.put_execution(TENANT, {**run, "created_at": now_iso()})
    store.put_node_record_if_absent(TENANT, RUN, "N#a", {"node_id": "a", "status": "pending", "attempts": 0})
    store.begin_node_attempt(TENANT, RUN, "a", 0, 1, {"node_id": "a"}, now_iso())
    yield store


def node(store: Any) -> dict[str, Any]:
    return dict(next(r for r in store.node_records(TENANT, RUN) if r["node_id"] == "a"))


def test_a_conflict_is_retried_and_the_node_recorded_once(
    running_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DynamoDB cancelling three calls in a row for a conflict, on either item
    conflicts = iter(
        [Cancel(["TransactionConflict", None]), Cancel([None, "TransactionConflict"])] * 2
    )
    with cancelling_transactions(monkeypatch, lambda items: next(conflicts, None)) as calls:
        # When the node's outcome is written
        running_node.finish_node(TENANT, RUN, "N#a", DONE, attempt=1)
    # Then it went through on the fifth call, and the record says so
    assert len(calls.items) == 5
    assert node(running_node)["status"] == "completed"


def test_the_executions_failed_condition_means_the_run_is_not_running(
    running_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cancelling_transactions(monkeypatch, lambda items: Cancel(["ConditionalCheckFailed", None])):
        with pytest.raises(ExecutionEnded):
            running_node.finish_node(TENANT, RUN, "N#a", DONE, attempt=1)
        with pytest.raises(ExecutionEnded):
            running_node.begin_node_attempt(TENANT, RUN, "a", 0, 2, {}, now_iso())
    assert node(running_node)["status"] == "running"


def test_the_node_records_failed_condition_is_a_node_already_recorded_with_its_record(
    running_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the write going through but answered "the node record's condition failed"
    recorded = Cancel([None, "ConditionalCheckFailed"], apply=True)
    # When the node's outcome is written
    with cancelling_transactions(monkeypatch, lambda _: recorded), pytest.raises(NodeAlreadyEnded) as raised:
        running_node.finish_node(TENANT, RUN, "N#a", DONE, attempt=1)
    # Then the error carries the record as it is: completed by this very attempt
    assert raised.value.record["status"] == "completed"
    assert raised.value.record["attempts"] == 1


def test_an_earlier_attempt_never_takes_the_record_back(running_node: Any) -> None:
    running_node.begin_node_attempt(TENANT, RUN, "a", 0, 3, {}, now_iso())
    with pytest.raises(NodeAlreadyEnded) as raised:
        running_node.begin_node_attempt(TENANT, RUN, "a", 0, 2, {}, now_iso())
    assert (raised.value.record["status"], raised.value.record["attempts"]) == ("running", 3)


def test_contention_that_never_ends_is_a_transient_error_and_nothing_is_written(
    running_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conflict = Cancel([None, "TransactionConflict"])
    with cancelling_transactions(monkeypatch, lambda items: conflict), pytest.raises(StoreContended):
        running_node.finish_node(TENANT, RUN, "N#a", DONE, attempt=1)
    assert node(running_node)["status"] == "running"


def test_progress_is_read_from_the_node_records_and_never_goes_back(running_node: Any) -> None:
    # Given node a (idx 0) started; when a later node starts, then an earlier one
    running_node.put_node_record_if_absent(TENANT, RUN, "N#c", {"node_id": "c", "status": "pending"})
    running_node.put_node_record_if_absent(TENANT, RUN, "N#b", {"node_id": "b", "status": "pending"})
    running_node.begin_node_attempt(TENANT, RUN, "c", 2, 1, {}, now_iso())
    running_node.begin_node_attempt(TENANT, RUN, "b", 1, 1, {}, now_iso())
    # Then both are running, the run's progress is the later one, and no start wrote the execution
    # item (the one item every node of the run would otherwise update)
    records = running_node.node_records(TENANT, RUN)
    assert progress_node(records) == {"idx": 2, "id": "c"}
    assert "current_node" not in execution_item(TENANT, RUN)
    assert {r["node_id"]: r["status"] for r in records} == dict.fromkeys("abc", "running")



def test_batch_outcomes_are_recorded_once_through_conflicts_and_repeats(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a child's three outcomes, one of them recorded already (a repeated child), and DynamoDB
    # cancelling the first call for a conflict on the counter shard
    batches = deps.stores().batches
    outcomes = [
        ItemOutcome(source_item_id=f"i{n}", status="completed", usage={"input_tokens": 1}) for n in range(3)
    ]
    batches.record_outcomes(TENANT, "x-batch", outcomes[:1])
    answers = iter([Cancel([None, None, None, "TransactionConflict"])])

    def decide(items: list[dict[str, Any]]) -> Cancel | None:
        return next(answers, None)

    with cancelling_transactions(monkeypatch, decide) as calls:
        # When the child records all three
        recorded = batches.record_outcomes(TENANT, "x-batch", outcomes)
    # Then the two new ones are recorded and counted once each, the first neither again
    assert sorted(recorded) == ["i1", "i2"]
    assert len(calls.items) == 3  # the conflict, the cancellation naming i0, the write of i1 and i2
    counters = batches.counters(TENANT, "x-batch", consistent=True)
    assert (counters["processed_items"], counters["input_tokens"]) == (3, 3)
