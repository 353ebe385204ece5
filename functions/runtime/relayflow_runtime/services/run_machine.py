"""The run machine's actions (statemachine/run.asl.json): one single-input execution.

The machine is the same for every workflow: it reads nothing but the ids in ``RunRef`` and the
``NodeTask``s ``start`` hands it; each action loads the execution's plan snapshot (cached, a plan
never changes) and records in DynamoDB. docs/engine.md draws the states; the gate protocol:

* a node with parents first parks on a gate (the machine's AwaitParents: no Lambda, a DynamoDB
  ``UpdateItem`` with ``.waitForTaskToken``) that writes its task token on the node record only
  while fewer than all its parents are done; a root with children has no gate at all (the machine's
  Roots Map starts at the node: no gate call); a root without children keeps its gate, whose write
  fails at once (the Map it is in ends the run, so it holds every node that nothing waits for);
* a node that ends (completed, or failed with ``on_failure: "continue"``) adds its id to each
  child's ``done_parents`` set (a repeated add counts once) and gets the record back;
* both are writes on the same item, so one of them is the later: when it is the parent's, it
  finds the token and (its id completing the set) releases the child (SendTaskSuccess); when it
  is the gate's, its condition fails and the node runs without parking. A repeated parent's
  second release of a token is refused by Step Functions and ignored (see adapters/engine.py);
* the releasing parent hands the node its parents' packed outputs (the release's output, which
  the gate keeps at ``$.carried`` for RunNode; a parent of a node with several also writes its
  own on the node's record in the same update, so the last one finds them all), and the node
  reads no records for its template; it queries them when what was carried is not all it reads
  (domain/engine.carried_suffices: its gate found the parents done, a template naming an
  ancestor, outputs past CARRY_LIMIT_BYTES, an execution of the previous definition).

Every write is conditional on the run still running, so a cancelled or finished run records
nothing more (``ExecutionNotRunning``, which the machine catches and ends the iteration quietly).
Only that failed condition ends an iteration quietly: a node record found already completed (a
repeated task) still releases the node's children, and contention that outlasted the store's
retries is a ``TransientModelError`` (docs/engine.md, "Recording a node").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

from relayflow_runtime.adapters.codec import as_stored
from relayflow_runtime.adapters.table import ExecutionEnded, NodeAlreadyEnded
from relayflow_runtime.adapters.transactions import StoreContended
from relayflow_runtime.domain.clock import iso_in, now_iso
from relayflow_runtime.domain.engine import (
    CARRY_LIMIT_BYTES,
    FAN_IN_CARRY_BYTES,
    MAX_GATE_CHECKS,
    Carried,
    CarriedOutput,
    GateKey,
    NodeFailure,
    NodeSpec,
    NodeTask,
    Plan,
    RunRef,
    RunStart,
    carried_suffices,
    gate_timeouts,
    overdue_after_seconds,
    reads_only_parents,
)
from relayflow_runtime.domain.execution_record import ExecutionUpdate, NodeRecord, NodeUpdate
from relayflow_runtime.domain.status import (
    CLOSE_ON_NODE_FAILURE,
    CLOSE_ON_TIMEOUT,
    NODE_TERMINAL,
    ExecutionStatus,
    NodeStatus,
    allowed_from,
    progress_node,
)
from relayflow_runtime.providers import extract_text
from relayflow_runtime.providers.base import InvocationContext, ModelError, TransientModelError
from relayflow_runtime.schemas.entities import InputFile
from relayflow_runtime.schemas.events import EventNode, EventRun
from relayflow_runtime.services import deps, notify, retention, transitions
from relayflow_runtime.services.node_execution import (
    ExecutionNotRunning,
    NodeOutput,
    error_message,
    run_attempt,
    template_scope,
)
from relayflow_runtime.services.run_records import execution_prefix, load_plan
from relayflow_runtime.services.values import pack, unpack

logger = Logger(child=True)

RUNNING, COMPLETED, FAILED = ExecutionStatus.RUNNING, ExecutionStatus.COMPLETED, ExecutionStatus.FAILED


def _ctx(run: RunRef, plan: Plan) -> EventRun:
    """The fields notify's events carry."""
    return {
        "tenant": run.tenant,
        "workflow_id": run.workflow_id,
        "version_id": plan.version_id,
        "execution_id": run.execution_id,
        "mode": plan.mode,
    }


def _node_dict(node: NodeSpec) -> EventNode:
    return {"id": node.id, "name": node.name, "idx": node.idx}


# ---- start -----------------------------------------------------------------------------------------
def start(run: RunRef) -> RunStart:
    """``pending -> running``; the nodes the machine's two Maps iterate (the roots with children,
    which run at once, and the rest, which wait at their gates) and the retry policy."""
    record = deps.stores().executions.get_record(run.tenant, run.execution_id)
    plan = load_plan(run.tenant, run.execution_id)
    fields: ExecutionUpdate = {"started_at": now_iso(), "overdue_at": iso_in(overdue_after_seconds(plan))}
    updated = transitions.transition(run.tenant, record, allowed_from(RUNNING), RUNNING, fields)
    if updated is None and record.status != "running":
        raise ExecutionNotRunning(f"the execution is {record.status}")
    gates = gate_timeouts(plan)
    store = deps.stores().executions
    return RunStart.of(
        run,
        [
            NodeTask.of(
                node,
                gates[node.id],
                gate=GateKey.model_validate(store.gate_key(run.tenant, run.execution_id, node.id)),
                max_gate_checks=MAX_GATE_CHECKS,
            )
            for node in plan.nodes
        ],
        plan.retry,
        retention.run_clock_seconds(record.created_at, plan.run_timeout),
        plan.waited_for(),
    )


# ---- gates -----------------------------------------------------------------------------------------
def _ready(node: NodeSpec, record: NodeRecord) -> bool:
    return bool(record.get("token")) and set(node.parents) <= set(record.get("done_parents") or ())


def _gate_gave_up(plan: Plan, node: NodeSpec, task: NodeTask, record: NodeRecord | None) -> str:
    """The error of a node whose gate timed out ``max_gate_checks`` times (the machine's
    GateGaveUp): which parents it waited for, and how long."""
    done = set((record or {}).get("done_parents") or ())
    waiting = [plan.node(p).name for p in node.parents if p not in done]
    checks = task.max_gate_checks
    return (
        f"node '{node.name}' waited {checks * task.gate_timeout} s for its parents "
        f"({', '.join(waiting)}), {checks} times their worst case: they never finished"
    )


class GateTimeout(Exception):
    """A node's parents did not finish within their worst case, checked MAX_GATE_CHECKS times."""


def previous_gate(run: RunRef, task: NodeTask, token: str, checks: int = 0) -> None:
    """The gate of an execution started on the previous run.asl.json, whose AwaitParents invoked
    this function (``action: gate``) instead of writing the token itself: store the token, release
    it when the parents are done by now. A deploy updates the runner before the machine, so such
    executions can still be running; remove this once none can be (a run lasts at most its
    timeout). ``checks``: the gate's timeouts so far; after MAX_GATE_CHECKS it fails its node."""
    plan = load_plan(run.tenant, run.execution_id)
    node = plan.node(task.id)
    store = deps.stores().executions
    if checks:
        status = store.get_record(run.tenant, run.execution_id).status
        if status != RUNNING.value:
            raise ExecutionNotRunning(f"the execution is {status}")
    record = store.register_gate(run.tenant, run.execution_id, node.id, token)
    if _ready(node, record):
        deps.machines().release(token)
    elif checks >= MAX_GATE_CHECKS:
        raise GateTimeout(_gate_gave_up(plan, node, task, record))


def _packed_size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


def _release_children(
    run: RunRef, plan: Plan, node_id: str, completed: Mapping[str, Any] | None = None
) -> None:
    """Mark ``node_id`` done on each child's record and release the children it completes.
    ``completed``: the node's completed record (its packed outputs), carried to each child it
    releases (the gate puts them in RunNode's input: domain/engine.Carried) so the child reads
    no records. A child of several parents gets each parent's on its record, in the same update
    (its share of FAN_IN_CARRY_BYTES at most: past it, a larger record costs more than the
    child's Query saves), and the last one carries them all."""
    store = deps.stores().executions
    children = plan.children(node_id)
    own = (
        CarriedOutput(output=completed.get("output"), parsed_output=completed.get("parsed_output"))
        if completed is not None and children
        else None
    )
    size = _packed_size(own.model_dump(mode="json")) if own is not None else 0
    for child in children:
        useful = own if own is not None and reads_only_parents(child) else None
        several = len(child.parents) > 1
        share = min(CARRY_LIMIT_BYTES, FAN_IN_CARRY_BYTES) // len(child.parents)
        on_record = useful if several and useful is not None and size <= share else None
        record = store.mark_parent_done(
            run.tenant,
            run.execution_id,
            child.id,
            node_id,
            carried=on_record.model_dump(mode="json") if on_record is not None else None,
        )
        if _ready(child, record):
            deps.machines().release(record["token"], _carried(child, node_id, useful, size, record))


def _carried(
    child: NodeSpec, node_id: str, own: CarriedOutput | None, size: int, record: NodeRecord
) -> dict[str, Any]:
    """What the releasing parent hands ``child``: every parent's packed output, or none (one
    missing, or too large to carry)."""
    if len(child.parents) == 1:
        fits = own is not None and size <= CARRY_LIMIT_BYTES
        return Carried(outputs={node_id: own} if own is not None and fits else {}).model_dump(mode="json")
    kept = record.get("carried") or {}
    outputs = {
        p: CarriedOutput.model_validate(kept[p]) for p in child.parents if isinstance(kept.get(p), dict)
    }
    # (each parent put its own on the record only within its share of FAN_IN_CARRY_BYTES: together
    # they are within CARRY_LIMIT_BYTES)
    return Carried(outputs=outputs if len(outputs) == len(child.parents) else {}).model_dump(mode="json")


# ---- one node --------------------------------------------------------------------------------------
class _StoredOutputs(Mapping[str, NodeOutput]):
    """Completed nodes' outputs in plan order, each read (from S3 when large) only when used:
    a node reads its parents' and the upstream outputs its template names, not every output."""

    def __init__(self, plan: Plan, records: list[NodeRecord]) -> None:
        by_id = {r["node_id"]: r for r in records if r.get("status") == "completed"}
        self._records = {n.id: by_id[n.id] for n in plan.nodes if n.id in by_id}
        self._read: dict[str, NodeOutput] = {}

    def __getitem__(self, node_id: str) -> NodeOutput:
        if node_id not in self._read:
            record = self._records[node_id]
            self._read[node_id] = NodeOutput(
                text=_as_text(unpack(record.get("output"))), parsed=unpack(record.get("parsed_output"))
            )
        return self._read[node_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


@lru_cache(maxsize=256)
def _input_of(tenant: str, execution_id: str) -> tuple[str | dict[str, str] | None, InputFile | None]:
    """(packed single_input, input_file) of an execution: written at launch, never changed."""
    record = deps.stores().executions.get_record(tenant, execution_id)
    return record.single_input, record.input_file


class _RunInput:
    """The execution's input, read only when a template or a model needs it."""

    def __init__(self, run: RunRef) -> None:
        self.single_input, self.input_file = _input_of(run.tenant, run.execution_id)

    def text(self) -> str:
        if self.single_input is not None:
            return str(unpack(self.single_input))
        if self.input_file:
            return extract_text(self.file_bytes())
        return ""

    def file_bytes(self) -> bytes:
        return deps.blobs().get_bytes(self.input_file.key) if self.input_file else b""


def _upstream_outputs(run: RunRef, plan: Plan, node: NodeSpec, carried: Carried | None) -> _StoredOutputs:
    """The outputs a node's attempt reads: none for a node without upstream nodes (a root), those
    its releasing parent carried when they are all it reads (domain/engine.carried_suffices), else
    its run's node records (one Query)."""
    if not node.upstream and not node.parents:
        records: list[NodeRecord] = []
    elif carried is not None and carried_suffices(node, carried):
        records = [
            NodeRecord(
                node_id=parent, status="completed", output=value.output, parsed_output=value.parsed_output
            )
            for parent, value in carried.outputs.items()
        ]
    else:
        records = deps.stores().executions.node_records(run.tenant, run.execution_id)
    return _StoredOutputs(plan, records)


def run_node(run: RunRef, task: NodeTask, attempt: int, carried: Carried | None = None) -> None:
    """One attempt of one node (``attempt`` counts retries: 0 for the first). On success the node's
    record is completed and its ready children are released; a failed attempt raises for the
    machine's retry loop, its error and prompt kept on the record. ``carried``: the parents'
    outputs the releasing parent handed the node's gate."""
    plan = load_plan(run.tenant, run.execution_id)
    node = plan.node(task.id)
    store = deps.stores().executions
    sk = f"N#{node.id}"
    upstream = _upstream_outputs(run, plan, node, carried)
    number = attempt + 1
    started_at = now_iso()
    try:
        store.begin_node_attempt(
            run.tenant,
            run.execution_id,
            node.id,
            node.idx,
            number,
            NodeUpdate(id=node.id, name=node.name, idx=node.idx, node_id=node.id),
            started_at,
            carried_from=node.parents if len(node.parents) > 1 else (),
        )
    except NodeAlreadyEnded as ended:
        # A repeated task of a node recorded already: only what follows the record is left to do.
        _recorded(run, plan, node, _completed(ended, node, number))
        return
    except (ExecutionEnded, StoreContended) as exc:
        raise _not_recorded(exc) from None
    prefix = f"{execution_prefix(run.tenant, run.execution_id)}N/{node.id}/"
    run_input = _RunInput(run)
    try:
        scope = template_scope(node, upstream, run_input.text)
        context = InvocationContext(
            execution_id=run.execution_id,
            node_id=node.id,
            attempt=number,
            read_input_file=run_input.file_bytes if run_input.input_file else None,
            input_filename=run_input.input_file.filename if run_input.input_file else None,
            time_budget=float(node.node_timeout),
        )
        outcome = run_attempt(node, scope, context, tenant=run.tenant)
    except ModelError as exc:
        prompt = getattr(exc, "prompt", None)
        try:
            store.note_attempt_error(
                run.tenant,
                run.execution_id,
                sk,
                number,
                str(exc),
                prompt=pack(prompt, f"{prefix}prompt.json") if prompt is not None else None,
                started_at=started_at,
                failed_at=now_iso(),
            )
        except StoreContended:
            # The note is lost, not the error: the machine still gets the model's, and its policy
            # (retry, or node_failed recording the error) applies.
            logger.warning("attempt error not noted: the store stayed contended", node_id=node.id)
        raise
    fields: NodeUpdate = {
        "status": "completed",
        "output": pack(outcome.output, f"{prefix}output.json"),
        "prompt": pack(outcome.prompt, f"{prefix}prompt.json"),
        "duration_ms": outcome.duration_ms,
        "completed_at": now_iso(),
        "usage": outcome.usage,
        "error": None,
    }
    if outcome.parsed_output is not None:
        fields["parsed_output"] = pack(outcome.parsed_output, f"{prefix}parsed_output.json")
    record: NodeRecord = {"attempts": number, "duration_ms": outcome.duration_ms, "status": "completed"}
    # the outputs as the record keeps them (DynamoDB's numbers: 1.0 reads back 1), so a child
    # renders the same text whether they were carried to it or read from the record
    record |= as_stored({"output": fields["output"], "parsed_output": fields.get("parsed_output")})
    try:
        store.finish_node(run.tenant, run.execution_id, sk, fields, attempt=number)
    except NodeAlreadyEnded as ended:
        record = _completed(ended, node, number)
    except (ExecutionEnded, StoreContended) as exc:
        raise _not_recorded(exc) from None
    _recorded(run, plan, node, record)


def _not_recorded(exc: Exception) -> Exception:
    """What the machine is told when a node's write did not happen: ``ExecutionNotRunning`` (the
    iteration ends quietly) only when the run's own condition failed; contention that outlasted
    the store's retries is a ``TransientModelError``, retried by the version's policy."""
    if isinstance(exc, ExecutionEnded):
        return ExecutionNotRunning("the execution is no longer running")
    return TransientModelError(f"the node's record could not be written: {exc}")


def _completed(ended: NodeAlreadyEnded, node: NodeSpec, number: int) -> NodeRecord:
    """The record a node's write found closed: completed (a repeated task recorded it already,
    or another attempt did) is returned; anything else means this attempt was superseded (a
    later attempt holds the record, or the node ended otherwise: the machine has moved past this
    task and waits for it no more), and the attempt ends quietly."""
    if ended.record.get("status") != NodeStatus.COMPLETED:
        raise ExecutionNotRunning(f"attempt {number} of node '{node.name}' was superseded: {ended}")
    return ended.record


def _recorded(run: RunRef, plan: Plan, node: NodeSpec, record: Mapping[str, Any]) -> None:
    """What follows a node's completed record, safe to repeat: its event and its children's release
    (a parent marked done twice counts once, a second release of a token is ignored)."""
    _release_children(run, plan, node.id, record)  # first: the event may wait on reading the rules
    summary = {"attempts": record.get("attempts"), "duration_ms": record.get("duration_ms")}
    notify.node_finished(_ctx(run, plan), _node_dict(node), summary, "completed", None)


def node_failed(run: RunRef, task: NodeTask, error: dict[str, Any] | None) -> NodeFailure:
    """A node whose attempts are spent (or whose error is permanent): record it; with
    ``on_failure: "continue"`` it counts as done for its children."""
    plan = load_plan(run.tenant, run.execution_id)
    node = plan.node(task.id)
    store = deps.stores().executions
    name, message = error_message(error)
    timed_out = name in ("NodeTimeout", "States.Timeout")
    if name == "States.Timeout":
        message = f"node '{node.name}' timed out after {node.node_timeout} seconds"
    stop_anyway = False
    records: dict[str, NodeRecord] | None = None
    if name == "GateTimeout" or (node.parents and plan.ungated_roots()):
        records = {r["node_id"]: r for r in store.node_records(run.tenant, run.execution_id)}
        if name == "GateTimeout":
            message = _gate_gave_up(plan, node, task, records.get(node.id))
        # The gated nodes' Map ends the run's race; it may end first only if no root of the roots'
        # Map is still open (every other node waits for its parents). A node that failed before its
        # parents were all done breaks that — its gate gave up, or failed otherwise (AwaitParents
        # catches every error): the run stops rather than complete while such a root still runs.
        done = set((records.get(node.id) or {}).get("done_parents") or ())
        open_roots = [n.name for n in plan.ungated_roots() if not _ended(records.get(n.id))]
        if open_roots and not set(node.parents) <= done:
            stop_anyway = True
            message += f"; the run stops, as {', '.join(open_roots)} had not ended"
    status = "timed_out" if timed_out else "failed"
    try:
        store.finish_node(
            run.tenant,
            run.execution_id,
            f"N#{node.id}",
            {"status": status, "error": message, "completed_at": now_iso()},
        )
    except ExecutionEnded:
        raise ExecutionNotRunning("the execution is no longer running") from None
    except NodeAlreadyEnded as ended:
        # Recorded already: a repeated task (go on as its first run did), or the attempt's own
        # write went through after the machine gave up on it (the node completed).
        ended_as = ended.record.get("status")
        if ended_as == NodeStatus.COMPLETED:
            _release_children(run, plan, node.id, ended.record)
            return NodeFailure(stop=False)
        if ended_as not in (NodeStatus.FAILED, NodeStatus.TIMED_OUT):
            raise ExecutionNotRunning(f"node '{node.name}' was closed {ended_as} by the run's end") from None
        status, message = str(ended_as), str(ended.record.get("error") or message)
    if node.on_failure == "continue" and not stop_anyway:  # released first: the event may wait
        _release_children(run, plan, node.id)
    if notify.node_events_wanted():  # (the event alone reads the record: its attempts, duration)
        if records is None:  # (a gate that gave up read them already: its attempts stay 0)
            records = {r["node_id"]: r for r in store.node_records(run.tenant, run.execution_id)}
        notify.node_finished(_ctx(run, plan), _node_dict(node), records.get(node.id), status, message)
    return NodeFailure(stop=stop_anyway or node.on_failure != "continue")


def _ended(record: NodeRecord | None) -> bool:
    return record is not None and record.get("status") in NODE_TERMINAL


# ---- the end ---------------------------------------------------------------------------------------
def all_nodes_completed(run: RunRef) -> bool:
    """Whether every node of a single run's plan has completed: the run is done, even if its machine
    never reached the Complete task (a local stack stopped in between)."""
    plan = load_plan(run.tenant, run.execution_id)
    records = deps.stores().executions.node_records(run.tenant, run.execution_id)
    completed = {r["node_id"] for r in records if r.get("status") == "completed"}
    return bool(plan.nodes) and all(node.id in completed for node in plan.nodes)


def complete(run: RunRef) -> None:
    """``running -> completed``; the results are the output of the last node (plan order) that
    produced one: its text, and apart its parsed value when it is a JSON node (as stored: inline
    or a reference)."""
    plan = load_plan(run.tenant, run.execution_id)
    store = deps.stores().executions
    record = store.get_record(run.tenant, run.execution_id)
    by_id = {r["node_id"]: r for r in store.node_records(run.tenant, run.execution_id)}
    # The run's usage, summed once its nodes are all recorded: what pages without the nodes show.
    final: ExecutionUpdate = {
        "results": None,
        **transitions.ended_run_sums(by_id.values(), COMPLETED, None),
        "usage_summed": True,  # (transitions.keep_usage: summed here, from the records just read)
    }
    current = progress_node(by_id.values())
    if current:
        final["current_node"] = current
    for node in reversed(plan.nodes):
        finished = by_id.get(node.id)
        if finished and finished.get("status") == "completed":
            final |= {"results": finished.get("output"), "results_parsed": finished.get("parsed_output")}
            break
    transitions.transition(
        run.tenant, record, allowed_from(COMPLETED), COMPLETED, {**final, "completed_at": now_iso()}
    )


def fail(run: RunRef, reason: str, error: dict[str, Any] | None = None) -> None:
    """``-> failed``: the run's timeout, a node with ``on_failure: "stop"``, or any other error."""
    store = deps.stores().executions
    record = store.get_record(run.tenant, run.execution_id)
    now = now_iso()
    if reason == "timeout":
        message = retention.timed_out_message(record.created_at, record.timeout)
        fields: ExecutionUpdate = {"error": message, "completed_at": now}
        if transitions.transition(run.tenant, record, allowed_from(FAILED), FAILED, fields):
            store.close_open_nodes(run.tenant, run.execution_id, CLOSE_ON_TIMEOUT, message, now)
        return
    failed = [
        r
        for r in store.node_records(run.tenant, run.execution_id)
        if r.get("status") in ("failed", "timed_out")
    ]
    fields = {"completed_at": now}
    if failed:
        first = min(failed, key=lambda r: r.get("completed_at") or "")
        fields["error"] = f"node '{first['name']}' failed: {first.get('error')}"
        fields["current_node"] = {"idx": int(first.get("idx") or 0), "id": first["node_id"]}
    else:
        fields["error"] = "the run failed: " + error_message(error)[1]
    if transitions.transition(run.tenant, record, allowed_from(FAILED), FAILED, fields):
        store.close_open_nodes(
            run.tenant,
            run.execution_id,
            CLOSE_ON_NODE_FAILURE,
            "not run: an earlier node failed",
            now,
        )
