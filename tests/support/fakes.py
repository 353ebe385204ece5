"""In-memory fakes of what the use cases are given (services/deps.py: ``Deps``), for unit tests that
run a use case without moto or a stack.

Each fake keeps the conditions its store writes with (services rely on them): a status move only
from the statuses asked, a put only of a new item, a budget share taken only by a pending run that
holds none, a run leaving the sweep index only when it is over, holds no budget and no unpublished
event. The execution items live in :class:`FakeExecutions`; the budget and the sweep index write on
those same items, as the real stores write on the one table item.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.budget import BudgetState, ReserveOutcome, Waiter
from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain.batch import COUNTERS
from relayflow_runtime.domain.execution_record import (
    NODE_RECORDS,
    ExecutionRecord,
    ExecutionUpdate,
    NodeRecord,
    NodeUpdate,
    stored_fields,
)
from relayflow_runtime.domain.records import (
    EdgeRecord,
    GraphNodeRecord,
    ModelRecord,
    VersionGraph,
    VersionRecord,
    WorkflowRecord,
)
from relayflow_runtime.domain.status import TERMINAL, NodeStatus
from relayflow_runtime.errors import NotFound
from relayflow_runtime.schemas.events import StatusEvent
from relayflow_runtime.services.deps import Deps

Key = tuple[str, str]


def refuse_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any AWS client or session asked for fail the test (a use case given fakes must ask for
    none), and write no metric lines."""

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a use case given fakes asked for an AWS client: {args}")

    monkeypatch.setattr(aws, "client", refused)
    monkeypatch.setattr(aws, "session", refused)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


class FakeClock:
    """A clock that moves only when told (``advance``)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.slept: list[float] = []

    def now(self) -> str:
        return self.moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def time(self) -> float:
        return self.moment.timestamp()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class FakeExecutions:
    """Execution items and node records, by (tenant, execution id)."""

    def __init__(self) -> None:
        self.items: dict[Key, dict[str, Any]] = {}
        self.nodes: dict[Key, dict[str, dict[str, Any]]] = {}

    def item(self, tenant: str, execution_id: str) -> dict[str, Any]:
        try:
            return self.items[(tenant, execution_id)]
        except KeyError:
            raise NotFound(
                f"execution '{execution_id}' does not exist.", code="execution_not_found"
            ) from None

    def put_execution(self, tenant: str, execution: dict[str, Any]) -> None:
        if (tenant, execution["id"]) in self.items:
            raise ConditionFailed("the execution exists")
        self.items[(tenant, execution["id"])] = copy.deepcopy(execution)

    def get_execution(self, tenant: str, execution_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.item(tenant, execution_id))

    def put_record(self, tenant: str, record: ExecutionRecord) -> None:
        self.put_execution(tenant, record.item())

    def get_record(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return ExecutionRecord.model_validate(self.get_execution(tenant, execution_id))

    def transition_execution(
        self,
        tenant: str,
        execution: ExecutionRecord,
        *,
        from_statuses: Iterable[str],
        to_status: str,
        fields: ExecutionUpdate | None = None,
    ) -> ExecutionRecord:
        item = self.item(tenant, execution.id)
        if item["status"] not in {str(s) for s in from_statuses}:
            raise ConditionFailed(f"the execution is {item['status']}")
        item.update(copy.deepcopy(stored_fields(fields or {})))
        item["status"] = str(to_status)
        item.pop("unpublished_event", None)
        return ExecutionRecord.model_validate(copy.deepcopy(item))

    def update_execution(
        self, tenant: str, execution_id: str, fields: ExecutionUpdate, *, only_if_status: Iterable[str] = ()
    ) -> None:
        allowed = {str(s) for s in only_if_status}
        item = self.items.setdefault((tenant, execution_id), {"id": execution_id})
        if allowed and item.get("status") not in allowed:
            raise ConditionFailed(f"the execution is {item.get('status')}")
        item.update(copy.deepcopy(stored_fields(fields)))

    def put_node_record_if_absent(
        self, tenant: str, execution_id: str, record_sk: str, fields: NodeUpdate
    ) -> None:
        self.nodes.setdefault((tenant, execution_id), {}).setdefault(record_sk, copy.deepcopy(fields))

    def close_open_nodes(
        self, tenant: str, execution_id: str, outcome: Mapping[str, NodeStatus], reason: str, now: str
    ) -> None:
        for record in self.nodes.get((tenant, execution_id), {}).values():
            status = outcome.get(record.get("status", ""))
            if not status:
                continue
            if not record.get("error") or status == NodeStatus.TIMED_OUT:
                record["error"] = reason
            record.update(status=status.value, completed_at=now)

    def node_records(self, tenant: str, execution_id: str) -> list[NodeRecord]:
        return NODE_RECORDS.validate_python(
            [copy.deepcopy(r) for r in self.nodes.get((tenant, execution_id), {}).values()]
        )

    def node(self, tenant: str, execution_id: str, node_id: str) -> dict[str, Any]:
        return self.nodes[(tenant, execution_id)][f"N#{node_id}"]


class FakeBatches:
    """A batch run's counters, summed (what the counter shards add up to)."""

    def __init__(self) -> None:
        self.totals: dict[Key, dict[str, int]] = {}
        self.sealed: set[Key] = set()

    def counters(self, tenant: str, execution_id: str, *, consistent: bool = False) -> dict[str, int]:
        return {**dict.fromkeys(COUNTERS, 0), **self.totals.get((tenant, execution_id), {})}

    def seal(self, tenant: str, execution_id: str, expires_at: int | None = None) -> None:
        self.sealed.add((tenant, execution_id))


class FakeBudget:
    """The budget counter, and each run's share on its execution item (``budget_reserved``)."""

    def __init__(self, executions: FakeExecutions) -> None:
        self.executions = executions
        self.in_use = 0
        self.limit: int | None = None
        self.parked: dict[Key, Waiter] = {}
        self.waiting_reasons: dict[Key, str] = {}

    def reserve(self, tenant: str, execution_id: str, amount: int, limit: int, now: str) -> ReserveOutcome:
        item = self.executions.item(tenant, execution_id)
        if item.get("status") != "pending" or item.get("budget_reserved") is not None:
            return "already_reserved" if item.get("budget_reserved") is not None else "not_pending"
        if self.in_use > limit - amount:
            return "exhausted"
        self.in_use += amount
        self.limit = limit
        item.update(budget_reserved=amount, budget_reserved_at=now)
        item.pop("waiting_reason", None)
        return "reserved"

    def release(self, tenant: str, execution_id: str, now: str) -> int:
        item = self.executions.items.get((tenant, execution_id), {})
        held = item.pop("budget_reserved", None)
        if held is None:
            return 0
        item["budget_released_at"] = now
        self.in_use -= int(held)
        return int(held)

    def note_waiting(self, tenant: str, execution_id: str, reason: str) -> None:
        self.waiting_reasons[(tenant, execution_id)] = reason
        item = self.executions.item(tenant, execution_id)
        if item.get("status") == "pending":
            item["waiting_reason"] = reason

    def park(self, tenant: str, execution_id: str, token: str, now: str, expires_at: int) -> Waiter:
        earlier = self.parked.get((tenant, execution_id))
        waiter = Waiter(
            tenant=tenant,
            execution_id=execution_id,
            token=token,
            since=earlier.since if earlier else now,
            waits=(earlier.waits if earlier else 0) + 1,
        )
        self.parked[(tenant, execution_id)] = waiter
        return waiter

    def waiter(self, tenant: str, execution_id: str) -> Waiter | None:
        return self.parked.get((tenant, execution_id))

    def waiters(self, limit: int) -> list[Waiter]:
        return list(itertools.islice(self.parked.values(), limit))

    def unpark(self, tenant: str, execution_id: str) -> None:
        self.parked.pop((tenant, execution_id), None)

    def state(self) -> BudgetState:
        return BudgetState(in_use=self.in_use, limit=self.limit)


class FakeSweep:
    """The sweep index's conditions, on the execution items."""

    def __init__(self, executions: FakeExecutions) -> None:
        self.executions = executions
        self.left: list[str] = []

    def leave(self, tenant: str, execution_id: str) -> bool:
        item = self.executions.item(tenant, execution_id)
        if (
            item.get("status") not in {s.value for s in TERMINAL}
            or item.get("budget_reserved") is not None
            or "unpublished_event" in item
        ):
            return False
        self.left.append(execution_id)
        return True

    def keep_unpublished(self, tenant: str, execution_id: str, status: str, detail: StatusEvent) -> bool:
        item = self.executions.item(tenant, execution_id)
        if item.get("status") != status:
            return False
        item["unpublished_event"] = detail.model_dump(mode="json")
        return True


class FakeWorkflows:
    """Workflows, and each version's graph: ``(version, nodes, edges)`` as the store keeps them."""

    def __init__(self) -> None:
        self.workflows: dict[Key, dict[str, Any]] = {}
        self.numbers: dict[Key, int] = {}
        self.graphs: dict[Key, tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = {}

    def version_graph(self, tenant: str, version_id: str) -> VersionGraph:
        try:
            version, nodes, edges = copy.deepcopy(self.graphs[(tenant, version_id)])
        except KeyError:
            raise NotFound(f"version '{version_id}' does not exist.", code="version_not_found") from None
        return (
            VersionRecord.model_validate(version),
            [GraphNodeRecord.model_validate(n) for n in nodes],
            [EdgeRecord.model_validate(e) for e in edges],
        )

    def get_workflow(self, tenant: str, workflow_id: str) -> WorkflowRecord:
        try:
            return WorkflowRecord.model_validate(copy.deepcopy(self.workflows[(tenant, workflow_id)]))
        except KeyError:
            raise NotFound(f"workflow '{workflow_id}' does not exist.", code="workflow_not_found") from None

    def next_execution_number(self, tenant: str, workflow_id: str) -> int:
        self.numbers[(tenant, workflow_id)] = self.numbers.get((tenant, workflow_id), 0) + 1
        return self.numbers[(tenant, workflow_id)]


class FakeModels:
    def __init__(self) -> None:
        self.models: dict[Key, dict[str, Any]] = {}

    def get_model(self, tenant: str, model_id: str) -> ModelRecord:
        try:
            return ModelRecord.model_validate(copy.deepcopy(self.models[(tenant, model_id)]))
        except KeyError:
            raise NotFound(f"model '{model_id}' does not exist.", code="model_not_found") from None


class FakeRateWindows:
    """Admission windows: ``open`` says whether a window still has a slot."""

    def __init__(self) -> None:
        self.open = True
        self.taken: list[int] = []

    def try_take(
        self,
        tenant: str,
        model_id: str,
        window_start: int,
        *,
        max_requests: int | None,
        max_tokens: int | None,
        tokens: int,
        expires_at: int,
        partition: str | None = None,
    ) -> bool:
        if self.open:
            self.taken.append(window_start)
        return self.open


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, body: dict[str, Any], *, delay_seconds: int = 0) -> str:
        self.sent.append(copy.deepcopy(body))
        return f"m-{len(self.sent)}"


class FakeBlobs:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.json: dict[str, Any] = {}

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.objects[key] = data

    def put_json(self, key: str, value: Any) -> None:
        self.json[key] = copy.deepcopy(value)

    def get_json(self, key: str) -> Any:
        if key in self.json:
            return copy.deepcopy(self.json[key])
        return json.loads(self.objects[key])

    def copy(self, source_key: str, dest_key: str) -> None:
        self.objects[dest_key] = self.objects[source_key]


class FakeMachines:
    """What was asked of Step Functions: starts, stops, released and failed task tokens."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str, dict[str, Any]]] = []
        self.stopped: list[str] = []
        self.released: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        self.started.append((state_machine_arn, name, copy.deepcopy(payload)))
        return f"{state_machine_arn}:{name}"

    def stop(self, execution_arn: str, *, error: str, cause: str) -> None:
        self.stopped.append(execution_arn)

    def release(self, token: str, output: dict[str, Any] | None = None) -> None:
        self.released.append(token)

    def fail_task(self, token: str, *, error: str, cause: str) -> None:
        self.failed.append((token, error))


class FakeBus:
    """Takes every event, after refusing the first ``refusals``. Its rules: ``patterns`` (by
    default one rule for every relayflow event); ``listing_fails``: ListRules raises."""

    def __init__(self, refusals: int = 0, name: str = "fake-bus") -> None:
        self.name = name
        self.refusals = refusals
        self.taken: list[tuple[str, dict[str, Any]]] = []
        self.patterns: list[str | None] = ['{"source": ["relayflow"]}']
        self.listing_fails = False
        self.listed = 0

    def rule_patterns(self) -> list[str | None]:
        self.listed += 1
        if self.listing_fails:
            raise RuntimeError("ThrottlingException: ListRules refused by the fake bus")
        return list(self.patterns)

    def put(self, source: str, detail_type: str, detail: dict[str, Any]) -> str | None:
        if self.refusals > 0:
            self.refusals -= 1
            return "ThrottlingException: refused by the fake bus"
        self.taken.append((detail_type, copy.deepcopy(detail)))
        return None

    def statuses(self) -> list[str]:
        return [detail["status"] for _, detail in self.taken]


@dataclass
class Fakes:
    """One set of fakes and the ``Deps`` over them (``fakes.deps``, for a use case's ``env=``)."""

    clock: FakeClock = field(default_factory=FakeClock)
    executions: FakeExecutions = field(default_factory=FakeExecutions)
    batches: FakeBatches = field(default_factory=FakeBatches)
    workflows: FakeWorkflows = field(default_factory=FakeWorkflows)
    models: FakeModels = field(default_factory=FakeModels)
    rate_windows: FakeRateWindows = field(default_factory=FakeRateWindows)
    admission_queue: FakeQueue = field(default_factory=FakeQueue)
    blobs: FakeBlobs = field(default_factory=FakeBlobs)
    machines: FakeMachines = field(default_factory=FakeMachines)
    bus: FakeBus = field(default_factory=FakeBus)
    budget: FakeBudget = field(init=False)
    sweep: FakeSweep = field(init=False)

    def __post_init__(self) -> None:
        self.budget = FakeBudget(self.executions)
        self.sweep = FakeSweep(self.executions)

    @property
    def deps(self) -> Deps:
        return Deps(
            executions=self.executions,
            batches=self.batches,
            budget=self.budget,
            sweep=self.sweep,
            workflows=self.workflows,
            models=self.models,
            rate_windows=self.rate_windows,
            blobs=self.blobs,
            machines=self.machines,
            bus=self.bus,
            admission_queue=self.admission_queue,
            now=self.clock.now,
            time=self.clock.time,
            sleep=self.clock.sleep,
        )
