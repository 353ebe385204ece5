"""What the node-runner Lambda does for each Task state of a generated state machine.

Actions: ``start`` (pending -> running), ``node`` (render the template, call the model, record the
attempt), ``node_failed`` (record a node whose retries are spent; go on or stop), ``fail`` and
``complete`` (finish the run), and for batches ``item_done`` / ``item_failed``.

Errors leave the Lambda as exceptions whose class names are the Step Functions error names the
generated Retry and Catch match: ``TransientModelError`` and ``NodeTimeout`` are retried,
everything else (``PermanentModelError``, ``ExecutionNotRunning``) is not.
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from relayflow_runtime.adapters.table import ConditionFailed
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.costs import estimate_cost_nanos
from relayflow_runtime.domain.templating import TemplateError, render
from relayflow_runtime.providers import extract_text, invoke_model
from relayflow_runtime.providers.base import (
    InvocationContext,
    ModelError,
    PermanentModelError,
    TransientModelError,
)
from relayflow_runtime.services import executions, notify
from relayflow_runtime.services.values import pack, unpack


class NodeTimeout(Exception):
    """The node's attempt ran past its timeout (retried like a transient error)."""


class ExecutionNotRunning(Exception):
    """The execution was cancelled or finished meanwhile: this node must not run or record."""


def merge_states(state: Any) -> dict[str, Any]:
    """After a Parallel state the input is a list of branch states: fold them into one."""
    if isinstance(state, dict):
        return state
    merged: dict[str, Any] = {"ctx": state[0]["ctx"], "outputs": {}, "last": None}
    for branch in state:
        merged["outputs"].update(branch.get("outputs", {}))
        if branch.get("last"):
            merged["last"] = branch["last"]
        if branch.get("cancelled"):  # batch item: a node found the run cancelled
            merged["cancelled"] = True
        # Batch item: usage per node. Every branch carries the usage of the nodes before the
        # Parallel state too, so summing the branches' totals would count those nodes twice.
        if branch.get("node_usage"):
            merged.setdefault("node_usage", {}).update(branch["node_usage"])
    if merged.get("node_usage"):
        merged["usage"] = _total_usage(merged["node_usage"])
    return merged


def _total_usage(node_usage: dict[str, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for usage in node_usage.values():
        for name, amount in usage.items():
            total[name] = total.get(name, 0) + amount
    return total


def _batch_item(state: dict[str, Any], *, check_running: bool = True) -> dict[str, Any]:
    """A batch item's state with its ctx derived from its Map entry (see logic/batch.item_state)."""
    if "entry" not in state and state.get("ctx", {}).get("mode") != "batch":
        return state
    from relayflow_runtime.services import batch

    return batch.item_state(state, check_running=check_running)


def record_sk(ctx: dict[str, Any], node_id: str) -> str:
    if ctx.get("mode") == "batch":
        return f"I#{ctx['item_id']}#N#{node_id}"
    return f"N#{node_id}"


def _input_text(ctx: dict[str, Any]) -> str:
    if ctx.get("input") is not None:
        return str(unpack(ctx["input"]))
    if ctx.get("input_file"):
        return extract_text(executions.blobs().get_bytes(ctx["input_file"]["key"]))
    return ""


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def node_input(node: dict[str, Any], state: dict[str, Any]) -> str:
    """{{input}}: the parents' outputs (joined by a blank line when several), or, when no parent
    produced one (a root node, or parents that failed with on_failure "continue"), the last
    successful output of the run, else the execution input."""
    outputs = state.get("outputs", {})
    available = [unpack(outputs[p]) for p in node["parents"] if p in outputs]
    if available:
        return "\n\n".join(_as_text(v) for v in available)
    last = state.get("last")
    if last and last in outputs:
        return _as_text(unpack(outputs[last]))
    return _input_text(state["ctx"])


def _scope(node: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    outputs = state.get("outputs", {})
    scope: dict[str, Any] = {
        "input": node_input(node, state),
        "nodes": {
            name: unpack(outputs[node_id]) for name, node_id in node["upstream"].items() if node_id in outputs
        },
    }
    if state["ctx"].get("item") is not None:
        scope["item"] = unpack(state["ctx"]["item"])
    return scope


def _call_with_timeout(node: dict[str, Any], prompt: str, context: InvocationContext) -> Any:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"node-{node['idx']}")
    future = pool.submit(invoke_model, node["model"]["provider"], node["model"]["config"], prompt, context)
    try:
        return future.result(timeout=node["timeout"])
    except FutureTimeout:
        raise NodeTimeout(f"node '{node['name']}' timed out after {node['timeout']} seconds") from None
    finally:
        # Never wait for a timed-out call: the attempt is over for the engine.
        pool.shutdown(wait=False, cancel_futures=True)


def run_node(
    node: dict[str, Any],
    state: dict[str, Any],
    retry_count: int | None = None,
    *,
    finishes_item: bool = False,
) -> dict[str, Any]:
    """Run one node. ``finishes_item``: the node is the last of a batch item's chain, whose record
    then goes into the item's outcome (``batch.finish_item``) rather than a write of its own."""
    state = _batch_item(merge_states(state))
    ctx = state["ctx"]
    tenant, execution_id = ctx["tenant"], ctx["execution_id"]
    store = executions.store()
    sk = record_sk(ctx, node["id"])
    if ctx.get("mode") == "batch":
        from relayflow_runtime.services import batch

        # One write per node of an item, at its end; the attempt is Step Functions' retry count.
        record = batch.node_attempt(node, retry_count)
    else:
        try:
            record = store.start_node_attempt(
                tenant,
                execution_id,
                sk,
                {"node_id": node["id"], "name": node["name"], "idx": node["idx"], "tenant": tenant},
                now_iso(),
            )
        except ConditionFailed:
            raise ExecutionNotRunning("the execution is no longer running") from None
    attempt = int(record["attempts"])
    if ctx.get("mode") != "batch":
        try:
            store.advance_current_node(tenant, execution_id, node["idx"], node["id"])
        except ConditionFailed:
            raise ExecutionNotRunning("the execution is no longer running") from None

    started = time.monotonic()
    try:
        prompt = render(node["template"], _scope(node, state))
    except TemplateError as exc:
        store.note_attempt_error(tenant, execution_id, sk, attempt, f"template: {exc}")
        raise PermanentModelError(f"template of node '{node['name']}': {exc}") from None
    context = InvocationContext(
        execution_id=execution_id,
        node_id=node["id"] if ctx.get("mode") != "batch" else f"{node['id']}#{ctx['item_id']}",
        attempt=attempt,
        read_input_file=(lambda: executions.blobs().get_bytes(ctx["input_file"]["key"]))
        if ctx.get("input_file")
        else None,
        input_filename=(ctx.get("input_file") or {}).get("filename"),
        time_budget=float(node["timeout"]),
    )
    prefix = f"{executions.execution_prefix(tenant, execution_id)}{sk.replace('#', '/')}/"
    try:
        result = _call_with_timeout(node, prompt, context)
    except Exception as exc:
        sent = pack(prompt, f"{prefix}prompt.json")
        if isinstance(exc, NodeTimeout):
            store.note_attempt_error(tenant, execution_id, sk, attempt, str(exc), prompt=sent)
            raise
        if isinstance(exc, ModelError):
            store.note_attempt_error(tenant, execution_id, sk, attempt, str(exc), prompt=sent)
            error_class = TransientModelError if exc.transient else PermanentModelError
            raise error_class(str(exc)) from None
        # An adapter bug is a permanent failure of this node, not a crash of the run.
        message = f"{type(exc).__name__}: {exc}"
        store.note_attempt_error(tenant, execution_id, sk, attempt, message, prompt=sent)
        raise PermanentModelError(message) from None

    output: Any = result.output
    if node.get("output_format") == "json":
        try:
            output = json.loads(result.output)
        except json.JSONDecodeError as exc:
            store.note_attempt_error(tenant, execution_id, sk, attempt, f"output is not JSON: {exc}")
            raise PermanentModelError(
                f"node '{node['name']}' declared JSON output but returned: {exc}"
            ) from None
    packed = pack(output, f"{prefix}output.json")
    usage = {"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens}
    cost = estimate_cost_nanos(
        result.usage.input_tokens, result.usage.output_tokens, node["model"]["config"].get("price")
    )
    if cost is not None:
        usage["estimated_cost_nanos"] = cost
    duration_ms = int((time.monotonic() - started) * 1000)
    outcome = {
        "status": "completed",
        "output": packed,
        "prompt": pack(prompt, f"{prefix}prompt.json"),
        "duration_ms": duration_ms,
        "completed_at": now_iso(),
        "usage": usage,
        "error": None,
    }
    try:
        if ctx.get("mode") == "batch":
            node_usage = {**state.get("node_usage", {}), node["id"]: usage}
            state = {**state, "node_usage": node_usage, "usage": _total_usage(node_usage)}
            if finishes_item:
                state["last_record"] = {**record, **outcome}
            else:
                # No transaction with the execution item: every item would contend for it.
                store.put_item_node(tenant, execution_id, sk, {**record, **outcome}, attempt=attempt)
        else:
            store.finish_node(tenant, execution_id, sk, outcome, attempt=attempt, execution_add=usage)
    except ConditionFailed:
        raise ExecutionNotRunning("the execution is no longer running") from None
    notify.node_finished(ctx, node, {"attempts": attempt, "duration_ms": duration_ms}, "completed", None)
    return {**state, "outputs": {**state.get("outputs", {}), node["id"]: packed}, "last": node["id"]}


def _error_message(error: dict[str, Any] | None) -> tuple[str, str]:
    """(error name, readable message) from a Catch's ResultPath value."""
    if not error:
        return "Error", "unknown error"
    name = error.get("Error", "Error")
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
        message = parsed.get("errorMessage") or cause
    except (json.JSONDecodeError, AttributeError):
        message = cause
    return name, message or name


def _node_record(ctx: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    """The node's record of a single run (for its announcement); None for batch items."""
    if ctx.get("mode") == "batch":
        return None
    records = executions.store().node_records(ctx["tenant"], ctx["execution_id"])
    return next((r for r in records if r.get("node_id") == node["id"]), None)


def node_failed(node: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Record a node whose attempts are spent. With on_failure "continue" the run goes on."""
    state = _batch_item(merge_states(state), check_running=False)
    ctx = state["ctx"]
    name, message = _error_message(state.get("error"))
    timed_out = name in ("NodeTimeout", "States.Timeout")
    if name == "States.Timeout":
        message = f"node '{node['name']}' timed out after {node['timeout']} seconds"
    if ctx.get("mode") == "batch":
        from relayflow_runtime.services import batch

        return batch.item_node_failed(node, state, name, message, "timed_out" if timed_out else "failed")
    executions.store().put_node_record_if_absent(
        ctx["tenant"],
        ctx["execution_id"],
        record_sk(ctx, node["id"]),
        {"node_id": node["id"], "name": node["name"], "idx": node["idx"], "status": "pending", "attempts": 0},
    )
    # Cancelled or already finished: that record stays as it is.
    status = "timed_out" if timed_out else "failed"
    with contextlib.suppress(ConditionFailed):
        executions.store().finish_node(
            ctx["tenant"],
            ctx["execution_id"],
            record_sk(ctx, node["id"]),
            {"status": status, "error": message, "completed_at": now_iso()},
        )
        notify.node_finished(ctx, node, _node_record(ctx, node), status, message)
    rest = {k: v for k, v in state.items() if k != "error"}
    if node["on_failure"] == "continue":
        return rest
    return {**rest, "failure": {"node_id": node["id"], "node_name": node["name"], "message": message}}


def start(state: dict[str, Any]) -> dict[str, Any]:
    ctx = state["ctx"]
    record = executions.store().get_execution(ctx["tenant"], ctx["execution_id"])
    updated = executions.transition(ctx["tenant"], record, ("pending",), "running", {"started_at": now_iso()})
    if updated is None and record["status"] != "running":
        raise ExecutionNotRunning(f"the execution is {record['status']}")
    return state


def complete(state: Any) -> dict[str, Any]:
    state = merge_states(state)
    ctx = state["ctx"]
    tenant, execution_id = ctx["tenant"], ctx["execution_id"]
    record = executions.store().get_execution(tenant, execution_id)
    if ctx.get("mode") == "batch":
        from relayflow_runtime.services import batch

        batch.complete(tenant, record)
        return {"ctx": ctx}
    order = record.get("node_order", [])
    outputs = state.get("outputs", {})
    final = next((outputs[n] for n in reversed(order) if n in outputs), None)
    executions.transition(
        tenant, record, ("running",), "completed", {"results": final, "completed_at": now_iso()}
    )
    return {"ctx": ctx}


def fail(state: Any) -> dict[str, Any]:
    state = merge_states(state)
    ctx = state["ctx"]
    tenant, execution_id = ctx["tenant"], ctx["execution_id"]
    store = executions.store()
    record = store.get_execution(tenant, execution_id)
    failure = state.get("failure")
    if failure:
        message = f"node '{failure['node_name']}' failed: {failure['message']}"
        failed_node = failure["node_id"]
    else:
        failed = [
            r for r in store.node_records(tenant, execution_id) if r.get("status") in ("failed", "timed_out")
        ]
        if failed:
            first = min(failed, key=lambda r: r.get("completed_at") or "")
            message, failed_node = f"node '{first['name']}' failed: {first.get('error')}", first["node_id"]
        else:
            message, failed_node = "the run failed: " + _error_message(state.get("error"))[1], None
    fields: dict[str, Any] = {"error": message, "completed_at": now_iso()}
    if failed_node:
        order = record.get("node_order", [])
        fields["current_node"] = {
            "idx": order.index(failed_node) if failed_node in order else 0,
            "id": failed_node,
        }
    if executions.transition(tenant, record, ("pending", "running"), "failed", fields):
        store.close_open_nodes(
            tenant,
            execution_id,
            {"pending": "skipped", "running": "cancelled"},
            "not run: an earlier node failed",
            now_iso(),
        )
    return {"ctx": ctx}


def handle(event: dict[str, Any]) -> Any:
    action = event["action"]
    state = event.get("state")
    if action in ("node", "node_failed"):
        if action == "node":
            result = run_node(
                event["node"],
                state,  # type: ignore[arg-type]
                event.get("retry_count"),
                finishes_item=bool(event.get("finish_item")),
            )
        else:
            result = node_failed(event["node"], state)  # type: ignore[arg-type]
        if not event.get("finish_item"):
            return result
        # The last node of a batch item records the item's outcome itself (see logic/asl.py).
        from relayflow_runtime.services import batch

        return batch.finish_item(result, failed=False)
    if action == "start":
        return start(state)  # type: ignore[arg-type]
    if action == "complete":
        return complete(state)
    if action == "fail":
        return fail(state)
    if action in ("item_done", "item_failed"):
        from relayflow_runtime.services import batch

        return batch.finish_item(merge_states(state), failed=action == "item_failed")
    if action == "ingest_dataset":
        from relayflow_runtime.services import dataset_service

        return dataset_service.run_ingest_job(event["job"])
    raise ValueError(f"unknown runner action {action!r}")
