"""The use cases at the top of the chain, given in-memory fakes (tests/support/fakes.py) instead of
the configured stores, bus and state machines: a status change, a cancel, preparing a batch,
reserving and giving back its budget. No moto, no stack: what each use case decides, and what it
asks of each dependency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.support.fakes import Fakes, refuse_aws

from relayflow_runtime.domain.batch import BatchSettings
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.domain.execution_record import ExecutionRecord, ItemIndex
from relayflow_runtime.errors import Conflict
from relayflow_runtime.schemas.entities import BatchConfig
from relayflow_runtime.services import batch, budget, executions, notify, transitions
from relayflow_runtime.services.budget import BudgetExhausted, BudgetLimits, BudgetWaitTooLong
from relayflow_runtime.services.node_execution import ExecutionNotRunning
from relayflow_runtime.services.run_records import plan_key

TENANT = "t-usecases"
WORKFLOW = "wf-1"


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_aws(monkeypatch)


def put_run(fakes: Fakes, execution_id: str, status: str = "pending", **fields: Any) -> dict[str, Any]:
    record = {
        "id": execution_id,
        "workflow_id": WORKFLOW,
        "version_id": "v-1",
        "number": 1,
        "status": status,
        "input_mode": "single",
        "created_at": fakes.clock.now(),
        "progress": {"total_nodes": 2, "current_node_idx": 0},
        **fields,
    }
    fakes.executions.put_execution(TENANT, record)
    return fakes.executions.get_execution(TENANT, execution_id)


def put_batch(fakes: Fakes, execution_id: str) -> dict[str, Any]:
    return put_run(fakes, execution_id, input_mode="batch", progress={"total_nodes": 1, "total_items": 40})


def settings(children: int, items_per_child: int = 1) -> BatchSettings:
    return BatchSettings(
        items_key="executions/x/items.jsonl",
        express=True,
        items_per_child=items_per_child,
        children=children,
        child_timeout=60,
        total=40,
    )


def reserve_event(execution_id: str, children: int, items_per_child: int = 1) -> dict[str, Any]:
    return {
        "run": {"tenant": TENANT, "workflow_id": WORKFLOW, "execution_id": execution_id},
        "batch": settings(children, items_per_child).model_dump(mode="json"),
        "timeout": 3600,
    }


# ---- a status change ---------------------------------------------------------------------------------
def test_a_transition_moves_the_run_once_and_announces_it_on_the_given_bus() -> None:
    # Given a pending run
    fakes = Fakes()
    record = put_run(fakes, "x-1")
    # When it is moved to running, then a second writer tries the same move from pending
    moved = transitions.transition(TENANT, record, ("pending",), "running", env=fakes.deps)
    lost = transitions.transition(TENANT, record, ("pending",), "running", env=fakes.deps)
    # Then the first move won, the second found it moved, and one event went out
    assert moved is not None and moved["status"] == "running"
    assert lost is None
    assert fakes.bus.statuses() == ["running"]
    assert fakes.bus.taken[0][0] == notify.STATUS_CHANGE
    assert fakes.bus.taken[0][1]["time"] == fakes.clock.now()


def test_a_terminal_transition_gives_back_the_budget_wakes_a_waiter_and_leaves_the_sweep_index() -> None:
    # Given a running batch holding 6 of the budget and another batch parked waiting for it
    fakes, limits = Fakes(), BudgetLimits(budget=8)
    put_batch(fakes, "holder")
    put_batch(fakes, "waiter")
    batch.reserve_budget(reserve_event("holder", children=6), env=fakes.deps, limits=limits)
    fakes.budget.park(TENANT, "waiter", "token-w", fakes.clock.now(), 0)
    # When the holder completes
    record = fakes.executions.get_execution(TENANT, "holder")
    done = transitions.transition(
        TENANT, record, ("running",), "completed", {"completed_at": fakes.clock.now()}, env=fakes.deps
    )
    # Then its share is back, the waiter was woken, and it left the sweep index with a TTL
    assert done is not None
    assert fakes.budget.state().in_use == 0
    assert "budget_reserved" not in fakes.executions.item(TENANT, "holder")
    assert fakes.machines.released == ["token-w"]
    assert fakes.sweep.left == ["holder"]
    assert isinstance(fakes.executions.item(TENANT, "holder")["expires_at"], int)
    assert fakes.bus.statuses() == ["running", "completed"]


def test_a_status_event_the_bus_refuses_is_retried_with_the_given_clock_then_kept_on_the_run() -> None:
    # Given a bus that refuses every attempt
    fakes = Fakes()
    fakes.bus.refusals = notify.PUBLISH_ATTEMPTS
    record = put_run(fakes, "x-2")
    # When the run moves
    transitions.transition(TENANT, record, ("pending",), "running", env=fakes.deps)
    # Then it waited between attempts on the fake clock (no real sleep), and kept the event
    assert fakes.clock.slept == [notify.PUBLISH_BACKOFF_SECONDS, notify.PUBLISH_BACKOFF_SECONDS * 2]
    assert fakes.bus.taken == []
    assert fakes.executions.item(TENANT, "x-2")["unpublished_event"]["status"] == "running"


# ---- a cancel --------------------------------------------------------------------------------------------
def test_a_cancel_stops_the_machine_fails_parked_gates_and_closes_open_nodes() -> None:
    # Given a running single run with one node running and one parked on its gate
    fakes = Fakes()
    put_run(fakes, "x-3", status="running", sfn_execution_arn="arn:run:x-3")
    fakes.executions.put_node_record_if_absent(
        TENANT, "x-3", "N#a", {"node_id": "a", "name": "A", "idx": 0, "status": "running", "attempts": 1}
    )
    fakes.executions.put_node_record_if_absent(
        TENANT,
        "x-3",
        "N#b",
        {"node_id": "b", "name": "B", "idx": 1, "status": "pending", "attempts": 0, "token": "gate-b"},
    )
    # When it is cancelled
    execution = executions.cancel_execution(TENANT, WORKFLOW, "x-3", env=fakes.deps)
    # Then it is cancelled, its machine stopped, the parked gate failed, every open node cancelled
    assert execution.status == "cancelled" and execution.error == "cancelled by request"
    assert fakes.machines.stopped == ["arn:run:x-3"]
    assert fakes.machines.failed == [("gate-b", "Cancelled")]
    assert {n["node_id"]: n["status"] for n in fakes.executions.node_records(TENANT, "x-3")} == {
        "a": "cancelled",
        "b": "cancelled",
    }
    assert set(execution.node_executions) == {"a", "b"}
    assert fakes.bus.statuses() == ["cancelled"]


def test_a_cancelled_batch_is_sealed_and_its_compaction_started_as_any_ended_batch() -> None:
    # Given a running batch whose list carries ordinals (its outcomes are child records), and one
    # prepared before them (per-item records: nothing to compact)
    fakes = Fakes()
    index = {"buckets": 1, "ordinals": True}
    first = put_run(fakes, "b-1", status="running", input_mode="batch", item_index=index)
    second = put_run(fakes, "b-2", status="running", input_mode="batch", item_index={"buckets": 1})
    # When both are cancelled (the cancel's move; its answer reads the results from S3)
    for record in (first, second):
        transitions.transition(TENANT, record, ("running",), "cancelled", env=fakes.deps)
    # Then the first's counters are sealed (a child still running records nothing after) and its
    # compaction is started on the jobs machine, named by the run; the second has neither
    assert fakes.batches.sealed == {(TENANT, "b-1")}
    started = [(name, job) for _, name, job in fakes.machines.started]
    assert started == [("compact-b-1", {"kind": "compact_outcomes", "tenant": TENANT, "execution_id": "b-1"})]
    # And both left the sweep index: nothing is left for the sweeper
    assert fakes.sweep.left == ["b-1", "b-2"]
    # And the sweeper's follow-up, given a row of its index (no item_index), starts it again
    row = {"id": "b-1", "tenant": TENANT, "status": "cancelled", "input_mode": "batch"}
    assert transitions.after_finish(TENANT, row, env=fakes.deps)
    assert [name for _, name, _ in fakes.machines.started] == ["compact-b-1", "compact-b-1"]


def test_a_cancel_of_a_finished_run_is_a_conflict_and_changes_nothing() -> None:
    fakes = Fakes()
    put_run(fakes, "x-4", status="completed")
    with pytest.raises(Conflict) as refused:
        executions.cancel_execution(TENANT, WORKFLOW, "x-4", env=fakes.deps)
    assert refused.value.code == "execution_finished"
    assert fakes.bus.taken == [] and fakes.machines.stopped == []


def test_a_second_cancel_answers_the_cancelled_run_again() -> None:
    fakes = Fakes()
    put_run(fakes, "x-5", status="running")
    executions.cancel_execution(TENANT, WORKFLOW, "x-5", env=fakes.deps)
    again = executions.cancel_execution(TENANT, WORKFLOW, "x-5", env=fakes.deps)
    assert again.status == "cancelled"
    assert fakes.bus.statuses() == ["cancelled"]


# ---- the batch budget --------------------------------------------------------------------------------
def test_reserving_the_budget_starts_the_batch_and_a_second_batch_waits_with_a_reason() -> None:
    # Given a budget of 8 and two pending batches
    fakes, limits = Fakes(), BudgetLimits(budget=8)
    put_batch(fakes, "a")
    put_batch(fakes, "b")
    # When the first takes 3 children of 2 items, and the second asks for 4
    started = batch.reserve_budget(
        reserve_event("a", children=3, items_per_child=2), env=fakes.deps, limits=limits
    )
    with pytest.raises(BudgetExhausted):
        batch.reserve_budget(reserve_event("b", children=4), env=fakes.deps, limits=limits)
    # Then the first runs with its share taken, the second stays pending and says why
    assert started["batch"]["children"] == 3
    first = fakes.executions.item(TENANT, "a")
    assert first["status"] == "running" and first["started_at"] == fakes.clock.now()
    assert first["budget_reserved"] == 6 and fakes.budget.state().in_use == 6
    second = fakes.executions.item(TENANT, "b")
    assert second["status"] == "pending"
    assert "6 of 8 items are running" in second["waiting_reason"]


def test_a_batch_larger_than_the_whole_budget_is_narrowed_to_fit() -> None:
    fakes = Fakes()
    put_batch(fakes, "huge")
    started = batch.reserve_budget(
        reserve_event("huge", children=10, items_per_child=2), env=fakes.deps, limits=BudgetLimits(budget=8)
    )
    assert started["batch"]["children"] == 4
    assert BatchSettings.model_validate(started["batch"]).items_per_child == 2
    assert fakes.budget.state().in_use == 8


def test_a_repeated_reservation_takes_nothing_more() -> None:
    fakes, limits = Fakes(), BudgetLimits(budget=8)
    put_batch(fakes, "again")
    first = batch.reserve_budget(reserve_event("again", children=3), env=fakes.deps, limits=limits)
    second = batch.reserve_budget(reserve_event("again", children=3), env=fakes.deps, limits=limits)
    assert first["batch"] == second["batch"]
    assert fakes.budget.state().in_use == 3
    assert fakes.bus.statuses() == ["running"]


def test_a_batch_cancelled_while_it_waited_reserves_nothing() -> None:
    fakes = Fakes()
    record = put_batch(fakes, "gone")
    transitions.transition(TENANT, record, ("pending",), "cancelled", env=fakes.deps)
    with pytest.raises(ExecutionNotRunning):
        batch.reserve_budget(reserve_event("gone", children=2), env=fakes.deps, limits=BudgetLimits(budget=8))
    assert fakes.budget.state().in_use == 0


def test_a_parked_batch_past_its_limit_of_wakeups_fails_saying_so() -> None:
    # Given a pending batch that parked once already, and a limit of one wake-up
    fakes, limits = Fakes(), BudgetLimits(budget=8, max_waits=1)
    put_batch(fakes, "patient")
    budget.await_budget(TENANT, "patient", settings(2), 3600, "token-1", env=fakes.deps, limits=limits)
    # When it parks a second time
    with pytest.raises(BudgetWaitTooLong) as too_long:
        budget.await_budget(TENANT, "patient", settings(2), 3600, "token-2", env=fakes.deps, limits=limits)
    # Then it fails saying why, and is no longer parked
    assert "1 wake-ups" in str(too_long.value)
    assert fakes.budget.waiter(TENANT, "patient") is None


def test_a_parked_batch_past_its_timeout_on_the_given_clock_fails() -> None:
    fakes, limits = Fakes(), BudgetLimits(budget=8)
    put_batch(fakes, "late")
    budget.await_budget(TENANT, "late", settings(2), 60, "token-1", env=fakes.deps, limits=limits)
    fakes.clock.advance(61)
    with pytest.raises(BudgetWaitTooLong, match="its timeout of 60 s"):
        budget.await_budget(TENANT, "late", settings(2), 60, "token-2", env=fakes.deps, limits=limits)


def test_a_batch_that_parks_while_the_budget_has_room_is_woken_at_once() -> None:
    fakes = Fakes()
    put_batch(fakes, "roomy")
    budget.await_budget(
        TENANT, "roomy", settings(2), 3600, "token-r", env=fakes.deps, limits=BudgetLimits(budget=8)
    )
    assert fakes.machines.released == ["token-r"]


def test_a_release_wakes_at_most_max_woken_waiters() -> None:
    fakes, limits = Fakes(), BudgetLimits(budget=8, max_woken=2)
    put_batch(fakes, "holder")
    batch.reserve_budget(reserve_event("holder", children=8), env=fakes.deps, limits=limits)
    for name in ("w1", "w2", "w3"):
        fakes.budget.park(TENANT, name, f"token-{name}", fakes.clock.now(), 0)
    assert budget.release(TENANT, "holder", env=fakes.deps, limits=limits) == 8
    assert fakes.machines.released == ["token-w1", "token-w2"]


# ---- preparing a batch -------------------------------------------------------------------------------
def batch_plan(fakes: Fakes, execution_id: str) -> None:
    node = {
        "id": "a",
        "name": "A",
        "idx": 0,
        "template": "{{item.text}}",
        "timeout": 30,
        "model": {"id": "m1", "provider": "builtin", "config": {"model": "uppercase"}},
    }
    plan = {
        "workflow_id": WORKFLOW,
        "version_id": "v-1",
        "mode": "batch",
        "timeout": None,
        "config": {"max_retries": 0, "retry_delay_seconds": 1},
        "nodes": [node],
    }
    fakes.blobs.put_json(plan_key(TENANT, execution_id), plan)


def pending_batch(fakes: Fakes, execution_id: str, parallelism: int = 4) -> RunRef:
    put_batch(fakes, execution_id)
    config = {"dataset_id": "d", "dataset_version_id": "dv", "parallelism": parallelism}
    fakes.executions.update_execution(TENANT, execution_id, {"batch_config": config})
    batch_plan(fakes, execution_id)
    return RunRef(tenant=TENANT, workflow_id=WORKFLOW, execution_id=execution_id)


class ListWriter:
    """Writes no list: says how many entries and index buckets it wrote, and runs ``during``."""

    def __init__(self, total: int, buckets: int = 1, during: Callable[[], None] = lambda: None) -> None:
        self.total, self.buckets, self.during = total, buckets, during
        self.calls = 0

    def __call__(self, tenant: str, record: ExecutionRecord, config: BatchConfig) -> tuple[int, ItemIndex]:
        self.calls += 1
        self.during()
        return self.total, ItemIndex(buckets=self.buckets, ordinals=True)


def test_preparing_a_batch_sizes_its_map_and_keeps_the_decision_for_a_repeat() -> None:
    # Given a pending batch of parallelism 4 whose list holds 40 items
    fakes = Fakes()
    run = pending_batch(fakes, "p-1", parallelism=4)
    writer = ListWriter(total=40, buckets=2)
    # When it is prepared, and the task repeated
    first = batch.prepare_batch(run, env=fakes.deps, write_items=writer)
    again = batch.prepare_batch(run, env=fakes.deps, write_items=writer)
    # Then the Map holds 2 children of 2 items, the run knows its total, still pending
    settings = BatchSettings.model_validate(first["batch"])
    assert (settings.children, settings.items_per_child, settings.total) == (2, 2, 40)
    record = fakes.executions.item(TENANT, "p-1")
    assert record["status"] == "pending" and record["progress"]["total_items"] == 40
    assert record["item_index"] == {"buckets": 2, "ordinals": True}
    # and the repeat answered the same without writing the list again
    assert again == first and writer.calls == 1


def test_a_batch_with_nothing_to_run_fails_saying_so() -> None:
    fakes = Fakes()
    run = pending_batch(fakes, "p-2")
    with pytest.raises(ExecutionNotRunning, match="no item of the run is left"):
        batch.prepare_batch(run, env=fakes.deps, write_items=ListWriter(total=0))
    record = fakes.executions.item(TENANT, "p-2")
    assert record["status"] == "failed" and record["completed_at"] == fakes.clock.now()
    assert fakes.bus.statuses() == ["failed"]


def test_a_batch_cancelled_while_its_list_is_written_keeps_no_decision() -> None:
    fakes = Fakes()
    run = pending_batch(fakes, "p-3")
    record = fakes.executions.get_execution(TENANT, "p-3")

    def cancel() -> None:
        transitions.transition(TENANT, record, ("pending",), "cancelled", env=fakes.deps)

    with pytest.raises(ExecutionNotRunning, match="cancelled while its items were prepared"):
        batch.prepare_batch(run, env=fakes.deps, write_items=ListWriter(total=5, during=cancel))
    assert "batch" not in fakes.executions.item(TENANT, "p-3")


def test_a_batch_no_longer_pending_is_not_prepared() -> None:
    fakes = Fakes()
    run = pending_batch(fakes, "p-4")
    record = fakes.executions.get_execution(TENANT, "p-4")
    transitions.transition(TENANT, record, ("pending",), "cancelled", env=fakes.deps)
    writer = ListWriter(total=5)
    with pytest.raises(ExecutionNotRunning):
        batch.prepare_batch(run, env=fakes.deps, write_items=writer)
    assert writer.calls == 0
