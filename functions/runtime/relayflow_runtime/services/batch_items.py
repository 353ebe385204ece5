"""One child batch of a batch run: ``run_items`` and ``items_failed`` (docs/engine.md, Batch machine).

A child of the batch machine's distributed Map gets ``items_per_child`` list entries and makes one
node-runner call: every item runs concurrently in this function (threads: an item mostly waits on
its model), and inside an item a node starts as soon as its own parents are done, with the node's
timeout (services/node_execution.run_attempt) and the version's retry policy — the run machine's
own (domain/engine.py ``RetryPolicy``, services/node_execution.py ``retried``) — and
``on_failure`` stop / continue as in a single run. The run's status is read at most once a second
(per warm function): once it is cancelled no further node is dispatched, and an item cut short
records nothing (it stays pending, as the run's counts say).

Everything the child did is recorded at its end, once for the child (services/outcomes.py): one S3
object holding every item's outcome with the record of each of its nodes, then one transaction of
the child's small record (where each item's outcome is) and one counter ADD. A repeated child
(Express children run at least once, even at the same moment) finds its items recorded and records
nothing again. Lists written before entries carried their ordinal record per item, as they did.

**The deadline.** The node runner passes the time the child has: its invocation's (Lambda's
``get_remaining_time_in_millis``) or, when sooner, its Task's own timeout (``child_timeout``). The
child keeps RECORD_MARGIN_SECONDS (domain/batch.py) of it for recording, and
no attempt starts (nor a retry's wait) that could not end within the rest, at the node's timeout.
At that deadline the items that finished are recorded (the same one transaction) and
:class:`ChildDeadline` is raised: the machine's Catch hands the child to ``items_failed``, which
records each item left without an outcome as not finished (to be retried with
``retry_failed_items``). So Lambda's hard kill never takes a finished item with it.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.batch import (
    BATCH_VALUE_LIMIT,
    ITEM_THREADS,
    NODE_THREADS,
    OUTCOME_BUDGET_BYTES,
    RECORD_MARGIN_SECONDS,
    ItemEntry,
    ItemNodeRecord,
    ItemOutcome,
    item_key,
)
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.costs import sum_usage
from relayflow_runtime.domain.engine import NodeSpec, Plan, RunRef
from relayflow_runtime.errors import NotFound
from relayflow_runtime.providers.base import InvocationContext, ModelError, PermanentModelError
from relayflow_runtime.services import deps, item_lists, outcomes
from relayflow_runtime.services.node_execution import (
    NodeOutput,
    NodeTimeout,
    error_message,
    retried,
    run_attempt,
    template_scope,
)
from relayflow_runtime.services.run_records import execution_prefix, load_plan
from relayflow_runtime.services.values import pack
from relayflow_runtime.settings import get_settings

#: How long a function trusts the run status it read (a cancel reaches its items within this).
STATUS_CACHE_SECONDS = 1.0
#: A retry's sleep looks at the run's status this often (a cancel cuts it short).
SLEEP_SLICE_SECONDS = 0.5
#: Threads that run items, and nodes of items beside their item's own thread (ITEM_THREADS,
#: NODE_THREADS: a child is sized to need no more, domain/batch.py). They are kept for the warm
#: function's next child (starting threads is a noticeable part of a short item).
_item_pool = ThreadPoolExecutor(max_workers=ITEM_THREADS, thread_name_prefix="batch-item")
_node_pool = ThreadPoolExecutor(max_workers=NODE_THREADS, thread_name_prefix="batch-node")


# ---- the run's status, read at most once a second -------------------------------------------------
@dataclass(frozen=True)
class _RunState:
    running: bool
    input_field: str = "text"
    #: The TTL every record of the run carries (services/retention.py).
    expires_at: int | None = None
    #: The items of the run's list (its segments' sizes: services/outcomes.py), once it is written.
    total_items: int | None = None


class _Status:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, _RunState]] = {}

    def read(self, run: RunRef, *, fresh: bool = False) -> _RunState:
        key = (run.tenant, run.execution_id)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
        if seen and not fresh and now - seen[0] < STATUS_CACHE_SECONDS:
            return seen[1]
        try:
            record = deps.stores().executions.get_record(run.tenant, run.execution_id)
            state = _RunState(
                running=record.status == "running",
                input_field=(record.batch_config.input_field if record.batch_config else None) or "text",
                expires_at=record.children_expire_at or None,
                total_items=record.progress.total_items,
            )
        except NotFound:
            state = _RunState(running=False)
        with self._lock:
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = (now, state)
        return state

    def forget(self) -> None:
        with self._lock:
            self._seen.clear()


status = _Status()


# ---- one item --------------------------------------------------------------------------------------
@dataclass
class _Child:
    """What every item of one child batch shares."""

    run: RunRef
    plan: Plan
    input_field: str
    prefix: str
    value_limit: int
    nodes: ThreadPoolExecutor
    #: time.monotonic() by which every attempt must have ended (None: no deadline).
    deadline: float | None = None
    #: Items cut short by the deadline (a node attempt that could not have ended in time).
    deferred: list[str] = field(default_factory=list)
    #: Draws the retries' waits (RetryPolicy.draw_wait).
    rng: random.Random = field(default_factory=random.Random)

    def cancelled(self) -> bool:
        return not status.read(self.run).running

    def fits(self, seconds: float) -> bool:
        """Whether something taking at most ``seconds`` from now ends before the deadline."""
        return self.deadline is None or time.monotonic() + seconds <= self.deadline


class ChildDeadline(Exception):
    """The child's invocation is running out: what finished is recorded; ``items_failed`` records
    the rest as not finished (the machine's Catch)."""


@dataclass
class _NodeResult:
    record: ItemNodeRecord
    output: NodeOutput | None = None
    cancelled: bool = False
    #: An attempt was not started: it could not have ended before the child's deadline.
    deferred: bool = False


def _sleep(seconds: float, cancelled: Callable[[], bool]) -> bool:
    """Sleep, in slices; False as soon as the run is cancelled."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, SLEEP_SLICE_SECONDS))
        if cancelled():
            return False
    return True


def _value_key(child: _Child, item_id: str, node: NodeSpec, what: str) -> str:
    folder = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{child.prefix}items/{folder}/{node.id}/{what}.json"


def _run_node(
    child: _Child,
    entry: ItemEntry,
    node: NodeSpec,
    outputs: dict[str, NodeOutput],
    item: dict[str, Any],
    run_input: Callable[[], str],
) -> _NodeResult:
    """Every attempt of one node of one item, as the version's retry policy allows."""
    retry = child.plan.retry
    started_at, started = now_iso(), time.monotonic()
    errors: list[str] = []
    failure: Exception | None = None
    prompt: str | None = None
    attempt = 0
    for attempt in range(1, retry.max_retries + 2):
        if child.cancelled():
            return _NodeResult(
                ItemNodeRecord(node_id=node.id, name=node.name, idx=node.idx, status="cancelled"),
                cancelled=True,
            )
        if not child.fits(node.node_timeout):
            return _deferred(node)
        context = InvocationContext(
            execution_id=child.run.execution_id,
            node_id=f"{node.id}#{item_key(entry.id)}",
            attempt=attempt,
            time_budget=float(node.node_timeout),
        )
        try:
            outcome = run_attempt(
                node, template_scope(node, outputs, run_input, item), context, tenant=child.run.tenant
            )
        except ModelError as exc:
            failure, prompt = exc, getattr(exc, "prompt", None) or prompt
            if not (retried(exc) and retry.retries_left(attempt - 1)):
                break
            errors.append(str(exc))
            wait_seconds = retry.draw_wait(attempt - 1, child.rng)
            if not child.fits(wait_seconds + node.node_timeout):
                return _deferred(node)  # the retry could not end in time: do not wait for it
            if not _sleep(wait_seconds, child.cancelled):
                return _NodeResult(
                    ItemNodeRecord(node_id=node.id, name=node.name, idx=node.idx, status="cancelled"),
                    cancelled=True,
                )
            continue
        value = outcome.output if outcome.parsed_output is None else outcome.parsed_output
        record = ItemNodeRecord(
            node_id=node.id,
            name=node.name,
            idx=node.idx,
            status="completed",
            attempts=attempt,
            attempt_errors=errors,
            duration_ms=outcome.duration_ms,
            prompt=pack(outcome.prompt, _value_key(child, entry.id, node, "prompt"), child.value_limit),
            output=pack(value, _value_key(child, entry.id, node, "output"), child.value_limit),
            started_at=started_at,
            completed_at=now_iso(),
            usage=outcome.usage,
        )
        return _NodeResult(record, NodeOutput(text=outcome.output, parsed=outcome.parsed_output))
    record = ItemNodeRecord(
        node_id=node.id,
        name=node.name,
        idx=node.idx,
        status="timed_out" if isinstance(failure, NodeTimeout) else "failed",
        attempts=attempt,
        attempt_errors=errors,
        duration_ms=int((time.monotonic() - started) * 1000),
        error=str(failure),
        prompt=pack(prompt, _value_key(child, entry.id, node, "prompt"), child.value_limit)
        if prompt
        else None,
        started_at=started_at,
        completed_at=now_iso(),
    )
    return _NodeResult(record)


def _deferred(node: NodeSpec) -> _NodeResult:
    return _NodeResult(
        ItemNodeRecord(node_id=node.id, name=node.name, idx=node.idx, status="cancelled"), deferred=True
    )


def _item_input(item: dict[str, Any], field: str) -> Callable[[], str]:
    def text() -> str:
        try:
            return datasets.input_text(item, field)
        except datasets.InputFieldError as exc:
            raise PermanentModelError(str(exc)) from None

    return text


def _run_item(child: _Child, entry: ItemEntry) -> ItemOutcome | None:
    """Run one item's graph; its outcome, or None when a cancel or the child's deadline cut it
    short (then no further node of it starts)."""
    started = time.monotonic()
    plan = child.plan
    try:
        item = item_lists.item_of(entry)
    except NotFound as exc:
        return ItemOutcome(
            source_item_id=entry.id,
            status="failed",
            error=f"the item could not be read: {exc}",
            completed_at=now_iso(),
        )
    run_input = _item_input(item, child.input_field)
    outputs: dict[str, NodeOutput] = {}
    records: dict[str, ItemNodeRecord] = {}
    done: set[str] = set()  # completed, or failed with on_failure "continue"
    dispatched: set[str] = set()
    stopped: ItemNodeRecord | None = None
    cancelled = False
    in_flight: dict[Future[_NodeResult], NodeSpec] = {}

    def settle(node: NodeSpec, result: _NodeResult) -> None:
        nonlocal stopped, cancelled
        records[node.id] = result.record
        if result.deferred and not cancelled:
            child.deferred.append(entry.id)
        if result.cancelled or result.deferred:
            cancelled = True
        elif result.output is not None:
            outputs[node.id] = result.output
            done.add(node.id)
        elif node.on_failure == "continue":
            done.add(node.id)
        elif stopped is None:
            stopped = result.record

    while True:
        if stopped is None and not cancelled:
            ready = [n for n in plan.nodes if n.id not in dispatched and all(p in done for p in n.parents)]
            # Outputs in plan order: what {{input}} and {{nodes.NAME}} read (see template_scope).
            ordered = {n.id: outputs[n.id] for n in plan.nodes if n.id in outputs}
            if len(ready) == 1 and not in_flight:  # a chain: no thread hop
                dispatched.add(ready[0].id)
                settle(ready[0], _run_node(child, entry, ready[0], ordered, item, run_input))
                continue
            for node in ready:
                dispatched.add(node.id)
                in_flight[child.nodes.submit(_run_node, child, entry, node, ordered, item, run_input)] = node
        if not in_flight:
            break
        finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in finished:
            settle(in_flight.pop(future), future.result())
    if cancelled:
        return None
    usage = sum_usage(record.usage for record in records.values())
    last = next((n.id for n in reversed(plan.nodes) if n.id in outputs), None)
    return ItemOutcome(
        source_item_id=entry.id,
        status="failed" if stopped else "completed",
        error=stopped.error if stopped else None,
        failed_node_id=stopped.node_id if stopped else None,
        output_node=last,
        duration_ms=int((time.monotonic() - started) * 1000),
        completed_at=now_iso(),
        usage=usage,
        nodes={n.id: records[n.id] for n in plan.nodes if n.id in records},
    )


# ---- the actions -----------------------------------------------------------------------------------
def run_items(run: RunRef, entries: list[ItemEntry], *, remaining_ms: int | None = None) -> dict[str, int]:
    """Run a child batch's items concurrently and record them in one transaction. Returns
    ``{"done": items recorded by this call}`` (0 for a repeated child, or a cancelled run).

    ``remaining_ms``: the time the invocation has left (the Lambda context's); the items finished
    when it runs short are recorded, then :class:`ChildDeadline` is raised (module docstring)."""
    started = time.monotonic()
    state = status.read(run)
    if not state.running or not entries:
        return {"done": 0}
    plan = load_plan(run.tenant, run.execution_id)
    if _numbered(entries):  # outcomes in the child's object: only very large values stand apart
        value_limit = BATCH_VALUE_LIMIT
    else:  # per-item records: within an item's share of the transaction (4 MB), few write units
        value_limit = min(
            get_settings().inline_output_limit, OUTCOME_BUDGET_BYTES // (2 * len(plan.nodes) + 2)
        )
    prefix = execution_prefix(run.tenant, run.execution_id)
    deadline = None if remaining_ms is None else started + remaining_ms / 1000 - RECORD_MARGIN_SECONDS
    child = _Child(run, plan, state.input_field, prefix, value_limit, _node_pool, deadline)
    futures = [_item_pool.submit(_run_item, child, entry) for entry in entries]
    budget = None if deadline is None else max(0.0, deadline - time.monotonic())
    finished, unfinished = wait(futures, timeout=budget)
    for future in unfinished:  # still running at the deadline: it starts no further attempt
        future.cancel()
    finished_outcomes = [future.result() for future in futures if future in finished]
    recorded = _record(run, entries, [o for o in finished_outcomes if o is not None], state)
    left = len(unfinished) + len(child.deferred)
    if left and status.read(run, fresh=True).running:
        raise ChildDeadline(
            f"{left} of {len(entries)} items did not finish within the node runner's time "
            f"({(remaining_ms or 0) / 1000:.0f} s left at the start, "
            f"{RECORD_MARGIN_SECONDS:.0f} s kept to record); "
            f"the {len(recorded)} that finished are recorded"
        )
    return {"done": len(recorded)}


def items_failed(run: RunRef, entries: list[ItemEntry], error: dict[str, Any] | None) -> dict[str, int]:
    """The child's task failed (a timeout, a crash): every item of it without an outcome is recorded
    failed with that error, once. Never raises for the items themselves: one child's infrastructure
    error is a failed item each, and ``max_failed_percent`` decides the run."""
    state = status.read(run, fresh=True)
    if not state.running:
        return {"failed": 0}
    name, message = error_message(error)
    now = now_iso()
    failed = [
        ItemOutcome(
            source_item_id=entry.id,
            status="failed",
            error=f"the item's batch did not finish ({name}): {message}",
            completed_at=now,
        )
        for entry in entries
    ]
    return {"failed": len(_record(run, entries, failed, state))}


def _numbered(entries: list[ItemEntry]) -> bool:
    return all(entry.n is not None for entry in entries)


def _record(
    run: RunRef, entries: list[ItemEntry], finished: list[ItemOutcome], state: _RunState
) -> list[str]:
    """Record a child's finished items, once: as the child's object and record when its entries
    carry their ordinal (keyed by the smallest, the same for every run of the child), else per item."""
    if not _numbered(entries):
        return deps.stores().batches.record_outcomes(run.tenant, run.execution_id, finished, state.expires_at)
    ordinal = {entry.id: int(entry.n or 0) for entry in entries}
    return outcomes.record(
        run,
        min(ordinal.values()),
        [(ordinal[o.source_item_id], o) for o in finished],
        state.expires_at,
        state.total_items,
    )
