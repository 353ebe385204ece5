"""Nothing starved (issue 13), on the local stack: the account-wide budget of batch parallelism
(services/budget.py) and per-model rate limits (services/rate_limits.py), each under concurrency."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.support.items import execution_item

from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.budget import BudgetStore
from relayflow_runtime.adapters.engine import StateMachines
from relayflow_runtime.adapters.transactions import ATTEMPTS as CONTENTION_ATTEMPTS
from relayflow_runtime.domain.batch import BatchSettings
from relayflow_runtime.domain.execution_record import ExecutionRecord
from relayflow_runtime.providers import TransientModelError, parsed_config, validate_model_config
from relayflow_runtime.providers.config import ModelRateLimit
from relayflow_runtime.services import batch, budget, deps, metrics, rate_limits, sweeper, transitions
from relayflow_runtime.services.node_execution import ExecutionNotRunning

TENANT = "default"
BUDGET = 8


@pytest.fixture
def local_stack() -> Iterator[LocalStack]:
    """The stack with a budget of 8 batch items at once (stack parameter BatchParallelismBudget)."""
    with LocalStack(parameters={"BatchParallelismBudget": BUDGET}) as local:
        yield local


def pending_batch(execution_id: str, workflow_id: str = "wf-budget") -> dict[str, Any]:
    """A batch run as prepare_batch leaves it: pending until its budget is reserved."""
    record = {
        "id": execution_id,
        "workflow_id": workflow_id,
        "version_id": "v1",
        "number": 1,
        "status": "pending",
        "input_mode": "batch",
        "created_at": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(timespec="milliseconds"),
        "progress": {"total_nodes": 1, "current_node_idx": 0, "total_items": 100},
    }
    deps.stores().executions.put_execution(TENANT, record)
    return record


def reserve_event(execution_id: str, children: int, items_per_child: int = 1) -> dict[str, Any]:
    """The input of the batch machine's ReserveBudget state."""
    return {
        "run": {"tenant": TENANT, "workflow_id": "wf-budget", "execution_id": execution_id},
        "batch": {
            "items_key": "executions/x/items.jsonl",
            "express": True,
            "items_per_child": items_per_child,
            "children": children,
            "child_timeout": 60,
            "total": 100,
        },
        "run_timeout": 3600,
    }


def status_of(execution_id: str) -> dict[str, Any]:
    return execution_item(TENANT, execution_id)


def record_of(execution_id: str) -> ExecutionRecord:
    return deps.stores().executions.get_record(TENANT, execution_id)


# ---- the batch budget ------------------------------------------------------------------------------
def test_a_second_batch_waits_pending_with_a_reason_and_starts_when_the_first_frees_its_budget(
    local_stack: LocalStack, api: Any
) -> None:
    # Given a batch that takes 6 of the 8 items of the budget (3 children of 2 items)
    pending_batch("batch-a")
    started = batch.reserve_budget(reserve_event("batch-a", children=3, items_per_child=2))
    assert started["batch"]["children"] == 3
    assert status_of("batch-a")["status"] == "running"
    assert budget.state().in_use == 6

    # When a second batch asks for 4
    pending_batch("batch-b")
    with metrics.recording() as counted, pytest.raises(budget.BudgetExhausted):
        batch.reserve_budget(reserve_event("batch-b", children=4))

    # Then it stays pending, and says why (the API shows it)
    waiting = status_of("batch-b")
    assert waiting["status"] == "pending"
    assert "6 of 8 items are running in other batches" in waiting["waiting_reason"]
    assert metrics.total(counted, metrics.BATCHES_WAITING_FOR_BUDGET) == 1
    status, shown = api("GET", "/workflows/wf-budget/executions/batch-b")
    assert status == 200 and shown["waiting_reason"] == waiting["waiting_reason"]

    # When the first batch completes (its complete action: any terminal status change releases)
    record = record_of("batch-a")
    transitions.transition(
        TENANT, record, ("running",), "completed", {"completed_at": "2030-01-01T01:00:00Z"}
    )
    assert budget.state().in_use == 0

    # Then the second batch's next try reserves its share and starts; its reason is gone
    batch.reserve_budget(reserve_event("batch-b", children=4))
    assert status_of("batch-b")["status"] == "running"
    assert "waiting_reason" not in status_of("batch-b")
    assert budget.state().in_use == 4


def test_reserving_is_exactly_once_under_concurrent_batches(local_stack: LocalStack) -> None:
    # Given 12 pending batches of 2 items each, and a budget of 8
    ids = [f"race-{n}" for n in range(12)]
    for execution_id in ids:
        pending_batch(execution_id)

    def try_reserve(execution_id: str) -> str:
        try:
            batch.reserve_budget(reserve_event(execution_id, children=2))
        except budget.BudgetExhausted:
            return "waits"
        return "runs"

    # When they all ask at once, each twice (a retried task)
    with ThreadPoolExecutor(max_workers=12) as pool:
        first = dict(zip(ids, pool.map(try_reserve, ids), strict=True))
    with ThreadPoolExecutor(max_workers=12) as pool:
        again = dict(zip(ids, pool.map(try_reserve, ids), strict=True))

    # Then exactly 4 run, the retries change nothing, and the counter is exact
    running = [i for i, outcome in first.items() if outcome == "runs"]
    assert len(running) == 4
    assert {i for i, outcome in again.items() if outcome == "runs"} == set(running)
    assert budget.state().in_use == 8
    # And releasing twice gives each share back once
    for execution_id in running:
        assert budget.release(TENANT, execution_id) == 2
        assert budget.release(TENANT, execution_id) == 0
    assert budget.state().in_use == 0


def test_a_batch_larger_than_the_whole_budget_is_narrowed_and_a_cancelled_one_stops_waiting(
    local_stack: LocalStack,
) -> None:
    # Given a batch of 10 children of 2 items (20 > 8)
    pending_batch("huge")
    # When it reserves
    started = batch.reserve_budget(reserve_event("huge", children=10, items_per_child=2))
    # Then it runs alone at the budget: 4 children of 2
    assert started["batch"]["children"] == 4 and budget.state().in_use == 8
    # And a batch cancelled while it waited is told it is not running (the machine's NotRunning)
    pending_batch("cancelled")
    record = record_of("cancelled")
    transitions.transition(
        TENANT, record, ("pending",), "cancelled", {"completed_at": "2030-01-01T00:00:01Z"}
    )
    with pytest.raises(ExecutionNotRunning):
        batch.reserve_budget(reserve_event("cancelled", children=1))
    assert budget.state().in_use == 8


def test_the_sweeper_releases_the_budget_of_a_batch_whose_machine_ended_unannounced(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running batch holding budget, whose execution never existed on this stack
    pending_batch("orphan")
    batch.reserve_budget(reserve_event("orphan", children=3))
    assert budget.state().in_use == 3
    # When the sweeper runs
    report = sweeper.sweep(grace_seconds=0)
    # Then the run is settled and its budget given back
    assert [s["execution_id"] for s in report.settled] == ["orphan"]
    assert status_of("orphan")["status"] == "failed"
    assert budget.state().in_use == 0


class ConflictingClient:
    """The DynamoDB client as AWS answers under contention: its next ``conflicts`` transactions are
    cancelled with reason ``TransactionConflict`` (another request changed the budget item at that
    moment; nothing is written and botocore does not retry it); the rest go through."""

    def __init__(self, real: Any, conflicts: int) -> None:
        self.real, self.left, self.refused = real, conflicts, 0

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self.left > 0:
            self.left -= 1
            self.refused += 1
            reasons = [{"Code": "TransactionConflict"} if i == 0 else {"Code": "None"} for i in range(2)]
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        return self.real.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def conflicting(monkeypatch: pytest.MonkeyPatch, conflicts: int) -> ConflictingClient:
    client = ConflictingClient(aws.client("dynamodb"), conflicts)
    monkeypatch.setattr(BudgetStore, "_client", property(lambda self: client))
    return client


def test_a_conflict_on_the_budget_item_is_retried_and_the_batch_reserves(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pending batch, and a budget item that two other requests are changing right now
    pending_batch("contended")
    client = conflicting(monkeypatch, conflicts=2)
    # When it reserves its share
    batch.reserve_budget(reserve_event("contended", children=3))
    # Then the conflicts were retried and it runs, counted once
    assert client.refused == 2
    assert status_of("contended")["status"] == "running"
    assert budget.state().in_use == 3


def test_a_budget_item_that_stays_contended_makes_the_batch_wait_never_fail(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pending batch and a budget item contended for longer than the bounded retries
    pending_batch("hot")
    client = conflicting(monkeypatch, conflicts=1000)
    # When it reserves its share
    # Then it waits (BudgetExhausted: the machine asks again later), pending with a reason, holding nothing
    with pytest.raises(budget.BudgetExhausted):
        batch.reserve_budget(reserve_event("hot", children=3))
    assert 1 < client.refused <= CONTENTION_ATTEMPTS
    assert status_of("hot")["status"] == "pending"
    assert "asks again" in status_of("hot")["waiting_reason"]
    assert budget.state().in_use == 0
    # And once the contention is over, it reserves
    client.left = 0
    batch.reserve_budget(reserve_event("hot", children=3))
    assert status_of("hot")["status"] == "running"
    assert budget.state().in_use == 3


def test_a_release_that_meets_a_conflict_gives_the_share_back(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running batch holding 3 of the budget
    pending_batch("releasing")
    batch.reserve_budget(reserve_event("releasing", children=3))
    assert budget.state().in_use == 3
    # When it is released while the budget item is contended (more than one write's retries)
    client = conflicting(monkeypatch, conflicts=CONTENTION_ATTEMPTS + 2)
    released = budget.release(TENANT, "releasing")
    # Then the share is given back now (not left for the sweeper), once
    assert client.refused == CONTENTION_ATTEMPTS + 2
    assert released == 3
    assert budget.state().in_use == 0
    assert "budget_reserved" not in status_of("releasing")
    assert budget.release(TENANT, "releasing") == 0


def test_a_release_contended_past_its_retries_is_left_to_the_sweeper_never_lost(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running batch holding 3 of the budget, and a budget item contended for longer than
    # every retry of the release
    pending_batch("ends-contended")
    batch.reserve_budget(reserve_event("ends-contended", children=3))
    client = conflicting(monkeypatch, conflicts=1000)
    # When the batch ends
    finished = {"completed_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    ended = transitions.transition(TENANT, record_of("ends-contended"), ("running",), "completed", finished)
    # Then its end is recorded all the same, and its share stays on it (nothing lost, nothing doubled)
    assert ended is not None and status_of("ends-contended")["status"] == "completed"
    assert client.refused > CONTENTION_ATTEMPTS
    assert status_of("ends-contended")["budget_reserved"] == 3
    # And once the contention is over, the sweeper's pass gives it back
    client.left = 0
    report = sweeper.sweep(grace_seconds=0, now=datetime.now(UTC) + timedelta(minutes=10))
    assert report.followed_up == 1
    assert budget.state().in_use == 0


def test_a_parked_batch_that_cannot_wake_itself_waits_out_its_period_never_fails(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pending batch parking while the budget has room (a release came in between), and a
    # SendTaskSuccess that Step Functions refuses right now
    pending_batch("self-wake")

    def refused(self: Any, token: str) -> None:
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        raise ClientError(error, "SendTaskSuccess")

    monkeypatch.setattr(StateMachines, "release", refused)
    # When it parks
    wanted = BatchSettings.model_validate(reserve_event("self-wake", children=2)["batch"])
    budget.await_budget(TENANT, "self-wake", wanted, 3600, "token-1")
    # Then it did not fail: it stays parked, and its wait's own timeout asks again
    parked = deps.stores().budget.waiter(TENANT, "self-wake")
    assert parked is not None and parked.token == "token-1" and parked.waits == 1
    assert status_of("self-wake")["status"] == "pending"


# ---- per-model rate limits -------------------------------------------------------------------------
def test_a_model_limit_holds_under_concurrent_callers_and_every_call_gets_through(
    local_stack: LocalStack,
) -> None:
    # Given a model limited to 300 requests a minute, i.e. 5 in each 1-second window of this test
    limit = parsed_config("builtin", {"model": "uppercase", "rate_limit": {"requests_per_minute": 300}})
    taken: list[int] = []
    lock = threading.Lock()

    def call(_: int) -> float:
        permit = rate_limits.acquire(
            TENANT, "model-rl", limit.declared_rate_limit, window_seconds=1, max_wait_seconds=30
        )
        with lock:
            taken.append(permit.window_start)
        return permit.waited_seconds

    # When 16 calls (as from concurrent runs) ask at once
    with metrics.recording() as counted, ThreadPoolExecutor(max_workers=16) as pool:
        waited = list(pool.map(call, range(16)))
    # Then no window let more than 5 through, every call got through, and the waits were counted
    # (each call that waited was refused at least once; how many waited depends on how close
    # together the threads asked, which a loaded machine spreads)
    per_window = Counter(taken)
    assert len(taken) == 16
    assert max(per_window.values()) <= 5
    assert len(per_window) >= 4
    waiting_calls = sum(1 for w in waited if w > 0)
    assert waiting_calls >= 1
    assert metrics.total(counted, metrics.MODEL_CALLS_THROTTLED) >= waiting_calls


def test_a_token_limit_counts_estimates_and_corrections(local_stack: LocalStack) -> None:
    config = ModelRateLimit(tokens_per_minute=600)  # 10 tokens in a 1-second window
    first = rate_limits.acquire(TENANT, "model-tok", config, 6, window_seconds=1)
    first.settle(2)  # it used fewer than estimated: 4 tokens go back to the window
    second = rate_limits.acquire(TENANT, "model-tok", config, 8, window_seconds=1, max_wait_seconds=5)
    assert deps.stores().rate_windows.usage(TENANT, "model-tok", second.window_start)[1] in (8, 10)
    if second.window_start == first.window_start:
        assert second.waited_seconds == 0


def test_a_call_that_cannot_get_a_slot_in_time_is_a_transient_error(local_stack: LocalStack) -> None:
    # Given a model allowed 1 request a minute, already used in this window
    config = ModelRateLimit(requests_per_minute=1)
    now = time.time()
    rate_limits.acquire(TENANT, "model-slow", config, clock=lambda: now)
    # When another call may wait only 5 seconds
    with pytest.raises(TransientModelError, match="rate limit"):
        rate_limits.acquire(TENANT, "model-slow", config, clock=lambda: now, max_wait_seconds=5)
    # Then a model without a limit is never held up (nothing is stored)
    free = rate_limits.acquire(
        TENANT, "model-free", parsed_config("builtin", {"model": "uppercase"}).declared_rate_limit
    )
    assert not free.limited and free.waited_seconds == 0


def test_the_rate_limit_of_a_model_config_is_validated() -> None:
    assert (
        validate_model_config("builtin", {"model": "uppercase", "rate_limit": {"requests_per_minute": 60}})
        == []
    )
    assert (
        validate_model_config(
            "builtin",
            {"model": "uppercase", "rate_limit": {"requests_per_minute": 60, "tokens_per_minute": 9000}},
        )
        == []
    )
    problems = validate_model_config(
        "builtin", {"model": "uppercase", "rate_limit": {"requests_per_minute": 0, "per_day": 5}}
    )
    assert "unknown rate_limit key 'per_day'; expected requests_per_minute, tokens_per_minute" in problems
    assert "'rate_limit.requests_per_minute' must be a whole number from 1 to 1000000000" in problems
    assert validate_model_config("builtin", {"model": "uppercase", "rate_limit": 5}) == [
        '\'rate_limit\' must be an object like {"requests_per_minute": 60, "tokens_per_minute": 40000}'
    ]


class Batches:
    """Batch runs through the API over a dataset of 8 items, with a node that sleeps ``seconds``."""

    def __init__(self, api: Any, seconds: float) -> None:
        self.api = api
        self.dataset = api("POST", "/datasets", {"name": "budget"})[1]
        self.version = api("POST", f"/datasets/{self.dataset['id']}/versions", {})[1]
        items = [{"id": f"i{n}", "text": f"item {n}"} for n in range(8)]
        path = f"/datasets/{self.dataset['id']}/versions/{self.version['id']}/items"
        assert api("POST", path, {"items": items})[1]["status"] == "ready"
        self.workflow = api("POST", "/workflows", {"name": "slow batch"})[1]
        path = f"/workflows/{self.workflow['id']}/versions"
        flow_version = api("POST", path, {"config": {"max_retries": 0}})[1]
        config = {"model": "sleep", "seconds": seconds}
        model = api("POST", "/models", {"name": "s", "provider": "builtin", "config": config})[1]
        api("POST", f"/versions/{flow_version['id']}/nodes", {"name": "slow", "entity_id": model["id"]})
        api("PATCH", f"/workflows/{self.workflow['id']}", {"active_version_id": flow_version["id"]})

    def start(self, parallelism: int, **more: Any) -> str:
        config = {
            "dataset_id": self.dataset["id"],
            "dataset_version_id": self.version["id"],
            "parallelism": parallelism,
        }
        body = {"input_mode": "batch", "batch_config": config, **more}
        status, answer = self.api("POST", f"/workflows/{self.workflow['id']}/executions", body)
        assert status == 201, answer
        return str(answer["id"])

    def get(self, execution_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/workflows/{self.workflow['id']}/executions/{execution_id}")[1])

    def wait_until(self, check: Any, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            assert time.monotonic() < deadline, budget.state()
            time.sleep(0.2)
        return found


def history_events(local_stack: LocalStack, execution_id: str) -> list[dict[str, Any]]:
    """The Step Functions history of the run's execution (GetExecutionHistory, every page)."""
    arn = execution_item(TENANT, execution_id)["sfn_execution_arn"]
    sfn = local_stack.client("stepfunctions")
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def test_a_waiting_batch_parks_on_a_token_and_a_release_wakes_it(local_stack: LocalStack, api: Any) -> None:
    # Given the whole budget (8) held by another batch, and a batch asking for 2
    pending_batch("holder")
    batch.reserve_budget(reserve_event("holder", children=8))
    batches = Batches(api, seconds=0.1)
    waiting = batches.start(2)
    batches.wait_until(lambda: deps.stores().budget.waiter(TENANT, waiting) is not None)
    time.sleep(2)  # the parked task's own events written
    # When it has waited a while (the former loop asked again every 10 s, ~7 history events a time)
    parked = len(history_events(local_stack, waiting))
    time.sleep(12)
    # Then its history did not grow while it waited: it is parked on a task token, pending
    assert len(history_events(local_stack, waiting)) == parked
    assert batches.get(waiting)["status"] == "pending"
    # When the other batch ends (any terminal status change releases its share)
    ended_at = time.monotonic()
    finished = {"completed_at": "2030-01-01T01:00:00Z"}
    transitions.transition(TENANT, record_of("holder"), ("running",), "completed", finished)
    # Then the release wakes the waiting batch at once: it reserves its share and runs to the end
    batches.wait_until(lambda: batches.get(waiting)["status"] != "pending", timeout=30)
    assert time.monotonic() - ended_at < 8  # the former loop asked every 10 s
    done = batches.wait_until(lambda: (x := batches.get(waiting))["status"] in ("completed", "failed") and x)
    assert done["status"] == "completed", done
    # with a handful of history events for the whole wait
    assert len(history_events(local_stack, waiting)) < parked + 60
    assert budget.state().in_use == 0


def test_a_batch_waits_for_budget_no_longer_than_its_timeout(local_stack: LocalStack, api: Any) -> None:
    # Given the whole budget held by another batch, and a batch with a timeout of 3 s
    pending_batch("holder")
    batch.reserve_budget(reserve_event("holder", children=8))
    batches = Batches(api, seconds=0.1)
    waiting = batches.start(2, timeout=3)
    # When it has waited longer than its timeout
    done = batches.wait_until(lambda: (x := batches.get(waiting))["status"] != "pending" and x, timeout=60)
    # Then it fails, saying why, and holds nothing (the other batch's share is untouched)
    assert done["status"] == "failed"
    assert "waited" in done["error"] and "longer than its timeout of 3 s" in done["error"]
    assert "8 of 8 items are running in other batches" in done["error"]
    assert budget.state().in_use == 8
    assert deps.stores().budget.waiter(TENANT, waiting) is None


def test_a_batch_cancelled_while_it_waits_for_budget_ends_its_machine(
    local_stack: LocalStack, api: Any
) -> None:
    # Given a batch parked on AwaitBudget (the whole budget held by another)
    pending_batch("holder")
    batch.reserve_budget(reserve_event("holder", children=8))
    batches = Batches(api, seconds=0.1)
    waiting = batches.start(2)
    batches.wait_until(lambda: deps.stores().budget.waiter(TENANT, waiting) is not None)
    # When it is cancelled
    path = f"/workflows/{batches.workflow['id']}/executions/{waiting}/cancel"
    assert api("POST", path)[0] in (200, 202)
    # Then its parked task is failed (ExecutionNotRunning): its machine ends at once, not in 10 minutes
    arn = execution_item(TENANT, waiting)["sfn_execution_arn"]
    assert local_stack.wait_for_execution(arn, timeout=15)["status"] in ("SUCCEEDED", "ABORTED")
    assert batches.get(waiting)["status"] == "cancelled"
    assert deps.stores().budget.waiter(TENANT, waiting) is None
    assert budget.state().in_use == 8


def test_on_the_batch_machine_a_second_batch_waits_for_the_first_then_runs(
    local_stack: LocalStack, api: Any
) -> None:
    # Given a dataset of 8 items and a workflow whose node takes a second per item
    batches = Batches(api, seconds=1)
    start, get, wait_until = batches.start, batches.get, batches.wait_until

    # When a batch at parallelism 8 takes the whole budget (8), and a second one asks for 2
    first = start(8)
    wait_until(lambda: get(first)["status"] == "running")
    second = start(2)
    # Then the second waits, pending, and says why
    waiting = wait_until(lambda: (x := get(second))["waiting_reason"] and x)
    assert waiting["status"] == "pending"
    assert "8 of 8 items are running in other batches and this batch needs 2" in waiting["waiting_reason"]
    # And once the first is done, the second runs to the end, with the budget all given back
    done_first = wait_until(lambda: (x := get(first))["status"] == "completed" and x)
    done_second = wait_until(lambda: (x := get(second))["status"] in ("completed", "failed") and x)
    assert done_second["status"] == "completed", done_second
    assert done_second["started_at"] >= done_first["completed_at"]
    assert done_second["waiting_reason"] is None
    assert budget.state().in_use == 0
