"""What the services work with: the stores of the configured table, the bucket, the state machines,
the event bus and the clock.

The use cases at the top of the chain (start, cancel, a status change, preparing a batch, reserving
its budget) are *given* these as one :class:`Deps` argument, ``env``, whose default is
:func:`default`: today's adapters of the configured table, bucket and bus. A unit test hands them
in-memory fakes instead (tests/support/fakes.py), so a use case runs without moto or a stack. Each
store is seen through a protocol naming only what the use cases call of it; mypy checks that the
real adapters (adapters/) satisfy them where :func:`default` builds them.

The rest of the services still ask ``deps.stores().executions``, ``deps.blobs()``,
``deps.machines()``: the one place a service gets an adapter from, so no use case builds its own or
reaches into another module for one. The stores are built once per table name
(adapters/stores.py); settings.reset_caches forgets them.
"""

from __future__ import annotations

import contextlib
import time as clock
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from relayflow_runtime.adapters.blobs import BlobStore
from relayflow_runtime.adapters.budget import BudgetState, ReserveOutcome, Waiter
from relayflow_runtime.adapters.engine import StateMachines
from relayflow_runtime.adapters.events import EventBus
from relayflow_runtime.adapters.stores import Stores, stores_for
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.execution_record import ExecutionRecord, ExecutionUpdate, NodeRecord, NodeUpdate
from relayflow_runtime.domain.records import ModelRecord, VersionGraph, WorkflowRecord
from relayflow_runtime.domain.status import NodeStatus
from relayflow_runtime.schemas.events import StatusEvent
from relayflow_runtime.settings import get_settings


def stores() -> Stores:
    return stores_for(get_settings().table_name)


def blobs() -> BlobStore:
    return BlobStore(get_settings().bucket_name)


def machines() -> StateMachines:
    return StateMachines()


# ---- what the use cases call of each adapter ------------------------------------------------------
class Executions(Protocol):
    """Executions and the node records of single runs (adapters/table/executions.py)."""

    def put_record(self, tenant: str, record: ExecutionRecord) -> None: ...

    def get_record(self, tenant: str, execution_id: str) -> ExecutionRecord: ...

    def transition_execution(
        self,
        tenant: str,
        execution: ExecutionRecord,
        *,
        from_statuses: Iterable[str],
        to_status: str,
        fields: ExecutionUpdate | None = None,
    ) -> ExecutionRecord: ...

    def update_execution(
        self, tenant: str, execution_id: str, fields: ExecutionUpdate, *, only_if_status: Iterable[str] = ()
    ) -> None: ...

    def put_node_record_if_absent(
        self, tenant: str, execution_id: str, record_sk: str, fields: NodeUpdate
    ) -> None: ...

    def close_open_nodes(
        self, tenant: str, execution_id: str, outcome: Mapping[str, NodeStatus], reason: str, now: str
    ) -> None: ...

    def node_records(self, tenant: str, execution_id: str) -> list[NodeRecord]: ...


class BatchCounters(Protocol):
    """A batch run's progress counters, sealed once it has ended (adapters/batch_store.py)."""

    def counters(self, tenant: str, execution_id: str, *, consistent: bool = False) -> dict[str, int]: ...

    def seal(self, tenant: str, execution_id: str, expires_at: int | None = None) -> None: ...


class Budget(Protocol):
    """The account-wide budget of batch parallelism and its parked waiters (adapters/budget.py)."""

    def reserve(
        self, tenant: str, execution_id: str, amount: int, limit: int, now: str
    ) -> ReserveOutcome: ...

    def release(self, tenant: str, execution_id: str, now: str) -> int: ...

    def note_waiting(self, tenant: str, execution_id: str, reason: str) -> None: ...

    def park(self, tenant: str, execution_id: str, token: str, now: str, expires_at: int) -> Waiter: ...

    def waiter(self, tenant: str, execution_id: str) -> Waiter | None: ...

    def waiters(self, limit: int) -> list[Waiter]: ...

    def unpark(self, tenant: str, execution_id: str) -> None: ...

    def state(self) -> BudgetState: ...


class Sweep(Protocol):
    """The sparse index of runs the sweeper watches (adapters/sweep.py)."""

    def leave(self, tenant: str, execution_id: str) -> bool: ...

    def keep_unpublished(self, tenant: str, execution_id: str, status: str, detail: StatusEvent) -> bool: ...


class Workflows(Protocol):
    """Workflows and their versions' graphs (adapters/table/workflows.py)."""

    def get_workflow(self, tenant: str, workflow_id: str) -> WorkflowRecord: ...

    def next_execution_number(self, tenant: str, workflow_id: str) -> int: ...

    def version_graph(self, tenant: str, version_id: str) -> VersionGraph: ...


class Models(Protocol):
    """Models (adapters/table/models.py)."""

    def get_model(self, tenant: str, model_id: str) -> ModelRecord: ...


class RateWindows(Protocol):
    """Counters per window of time (adapters/rate_windows.py): the admission of single runs."""

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
    ) -> bool: ...


class Blobs(Protocol):
    """The bucket (adapters/blobs.py)."""

    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> None: ...

    def put_json(self, key: str, value: Any) -> None: ...

    def get_json(self, key: str) -> Any: ...

    def copy(self, source_key: str, dest_key: str) -> None: ...


class Machines(Protocol):
    """The template's state machines and their task tokens (adapters/engine.py)."""

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str: ...

    def stop(self, execution_arn: str, *, error: str, cause: str) -> None: ...

    def release(self, token: str, output: dict[str, Any] | None = None) -> None: ...

    def fail_task(self, token: str, *, error: str, cause: str) -> None: ...


class Queue(Protocol):
    """An SQS queue (adapters/queue.py): the admission queue of single runs."""

    def send(self, body: dict[str, Any], *, delay_seconds: int = 0) -> str: ...


class Bus(Protocol):
    """The relayflow event bus (adapters/events.py): None when the bus took the event, else why not."""

    #: Which bus (what the node runner's cache of its rules is kept by).
    name: str

    def put(self, source: str, detail_type: str, detail: dict[str, Any]) -> str | None: ...

    def rule_patterns(self) -> list[str | None]:
        """The ``EventPattern`` of every rule on the bus (None: a rule without one)."""
        ...


_bus_override: list[Bus] = []


def event_bus() -> Bus | None:
    if _bus_override:
        return _bus_override[-1]
    name = get_settings().event_bus_name
    return EventBus(name) if name else None


@contextlib.contextmanager
def using_bus(bus: Bus) -> Iterator[None]:
    """Publish to ``bus`` while the block runs, wherever the default dependencies are used (the
    integration tests: a bus that refuses events, under a whole local stack)."""
    _bus_override.append(bus)
    try:
        yield
    finally:
        _bus_override.remove(bus)


@dataclass(frozen=True)
class Deps:
    """Everything a use case at the top of the chain works with, given to it (``env=``)."""

    executions: Executions
    batches: BatchCounters
    budget: Budget
    sweep: Sweep
    workflows: Workflows
    models: Models
    rate_windows: RateWindows
    blobs: Blobs
    machines: Machines
    #: None: no bus is configured (nothing is announced).
    bus: Bus | None
    #: Where single runs wait for their turn; None: the configured queue (services/admission.py).
    admission_queue: Queue | None = None
    #: The current moment, as every record stores it (domain/clock.py).
    now: Callable[[], str] = field(default=now_iso)
    #: Seconds since the epoch (TTLs, waits).
    time: Callable[[], float] = field(default=clock.time)
    #: Waits between retries of a call (publishing an event).
    sleep: Callable[[float], None] = field(default=clock.sleep)


def default() -> Deps:
    """Today's adapters: the configured table's stores, the bucket, the state machines, the bus."""
    table = stores()
    return Deps(
        executions=table.executions,
        batches=table.batches,
        budget=table.budget,
        sweep=table.sweep,
        workflows=table.workflows,
        models=table.models,
        rate_windows=table.rate_windows,
        blobs=blobs(),
        machines=machines(),
        bus=event_bus(),
    )


def given(env: Deps | None) -> Deps:
    """The dependencies a use case was given, else the defaults."""
    return env if env is not None else default()
