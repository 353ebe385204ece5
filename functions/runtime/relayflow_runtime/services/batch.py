"""Batch runs: one workflow over every item of a dataset version that a filter keeps.

How a batch runs (see docs/batch.md):

* **Submission** (``prepare``): the filter is compiled, the dataset version and the input field are
  checked, and the kept items are streamed into the run's own *item list* in S3 (the format of
  logic/dataset_service.py), so ``total_items`` is exact from the first answer. Nothing is held in
  memory but one item at a time; a refused submission leaves nothing behind.
* **Running**: a distributed Map reads the list (``ItemReader``) and runs the node chain once per
  item, at most ``parallelism`` at a time. The item's ctx is derived from its Map entry by
  ``item_state``; its node records are ``I#<item>#N#<node>``, except the last node's when it ends the
  item: that one is kept in the item's outcome, written once with it. An item's failure is caught
  inside its own chain ("Item failed") and never fails the Map.
* **Counting** (``finish_item``, in the last node's task or in "Item done" / "Item failed"): the
  item's outcome is a conditional put (a retried task finds it and counts nothing), then one ADD
  on one of 16 counter shards, so no single DynamoDB item takes more than 1/16 of the writes.
* **Ending** (``complete``): the outcomes are recounted (exact final counts, kept in the record);
  ``completed`` when every item has one, ``failed`` when more than ``max_failed_percent`` of them
  failed or some never got one; a cancelled run stays cancelled.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from relayflow_runtime.adapters.table import ConditionFailed, TableStore
from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.clock import now_iso
from relayflow_runtime.domain.limits import MAX_RESULTS_DOWNLOAD_BYTES as MAX_DOWNLOAD_BYTES
from relayflow_runtime.errors import Conflict, InvalidInput, NotFound, TooLarge
from relayflow_runtime.schemas import api
from relayflow_runtime.schemas.dataset_api import format_rows, result_row
from relayflow_runtime.schemas.entities import (
    TERMINAL_STATUSES,
    BatchConfig,
    BatchItemResult,
    Execution,
    NodeExecution,
    TokenUsage,
)
from relayflow_runtime.services import dataset_service
from relayflow_runtime.services.runner import ExecutionNotRunning, record_sk
from relayflow_runtime.services.values import pack, unpack

#: Items in ``execution.results["items"]`` of a finished run (the rest: the results API).
RESULTS_IN_EXECUTION = 100
#: How long a node runner trusts the status it read (cancellation reaches items within this).
STATUS_CACHE_SECONDS = 1.0
#: Item ids longer than this (in UTF-8 bytes) are keyed by a digest (DynamoDB sort keys: 1 KiB).
MAX_KEYED_ID_BYTES = 200
#: An item's final output is copied into its outcome when its JSON is at most this long; a longer
#: one is read from its node's record (outcomes stay small: the final recount reads them all).
INLINE_RESULT_BYTES = 4 * 1024
#: Entries whose outcomes a retry of failed items reads at once (one BatchGetItem: at most 100 keys).
OUTCOMES_PER_READ = 100
USAGE_COUNTERS = ("input_tokens", "output_tokens", "estimated_cost_nanos")


def store() -> TableStore:
    from relayflow_runtime.services import executions

    return executions.store()


def _prefix(tenant: str, execution_id: str) -> str:
    from relayflow_runtime.services import executions

    return executions.execution_prefix(tenant, execution_id)


def list_key(tenant: str, execution_id: str) -> str:
    """The run's own item list (the Map's ItemReader object)."""
    return f"{_prefix(tenant, execution_id)}items.json"


def item_key(item_id: str) -> str:
    """The item's part of table keys: its id, or a digest of an id too long for a sort key."""
    if len(item_id.encode()) <= MAX_KEYED_ID_BYTES:
        return item_id
    return "h:" + hashlib.sha256(item_id.encode()).hexdigest()


# ---- submission ------------------------------------------------------------------------------------
def _refuse(message: str, code: str) -> InvalidInput:
    return InvalidInput(message, code=code)


def _entries(key: str) -> Iterator[dict[str, Any]]:
    return (entry for _, _, entry in dataset_service.iter_entries(key))


def _copy_list(tenant: str, execution_id: str, entries: Iterable[dict[str, Any]]) -> int:
    """Stream ``entries`` (of another item list, read as they are written) into the run's item
    list; items stored apart are copied into the run's prefix. Returns how many were written. On
    any error, from the writing or from ``entries``, the partial list is discarded."""
    blobs = dataset_service.blobs()
    writer = dataset_service.ItemListWriter(list_key(tenant, execution_id))
    large_prefix = f"{_prefix(tenant, execution_id)}large/"
    try:
        for entry in entries:
            if "ref" in entry:
                target = f"{large_prefix}{writer.count:07d}.json"
                blobs.copy(entry["ref"], target)
                entry = {"id": entry["id"], "ref": target}
            writer.add(entry)
        writer.close()
    except BaseException:
        writer.abort()
        blobs.delete_prefix(large_prefix)
        raise
    return writer.count


def _batch_ctx(
    config: BatchConfig, tenant: str, execution_id: str, total: int, plan: dict[str, Any]
) -> dict[str, Any]:
    return {
        "batch_config": config,
        # processed/failed come from the counters while running, then from the final recount.
        "progress": {"total_items": total},
        "ctx": {
            "items_bucket": dataset_service.bucket(),
            "items_key": list_key(tenant, execution_id),
            "parallelism": config.parallelism,
            "input_field": config.input_field,
            # An item's result is the output of the last node, in this order, that produced one.
            "node_order": [node["id"] for node in plan["nodes"]],
        },
    }


def prepare(tenant: str, execution_id: str, body: api.Execute, plan: dict[str, Any]) -> dict[str, Any]:
    """Validate a batch submission and write its item list; 400 for anything wrong, before a run."""
    config = body.batch_config
    if config is None:
        raise _refuse(
            "input_mode 'batch' needs batch_config: {dataset_id, dataset_version_id, input_field, "
            "filter_query, parallelism}.",
            "invalid_input_mode",
        )
    if body.single_input is not None or body.file is not None:
        raise _refuse(
            "a batch runs over dataset items: leave out single_input and file.", "invalid_input_mode"
        )
    version = dataset_service.ready_version(tenant, config.dataset_id, config.dataset_version_id)
    try:
        matches = datasets.compile_filter(config.filter_query)
    except datasets.FilterError as exc:
        raise _refuse(exc.message, exc.code) from None
    field = config.input_field
    fields: list[str] = version.get("fields") or []
    if field not in fields and len(fields) < dataset_service.MAX_TRACKED_FIELDS:
        shown = ", ".join(repr(f) for f in fields[:20]) + (", ..." if len(fields) > 20 else "")
        raise _refuse(
            f"no item of dataset version '{config.dataset_version_id}' has the field {field!r} "
            f"(input_field); their fields: {shown or 'none'}.",
            "unknown_input_field",
        )
    source = version.get("items_key") or dataset_service.items_key(
        tenant, config.dataset_id, config.dataset_version_id
    )
    unfiltered = not (config.filter_query or "").strip()
    if unfiltered and field in (version.get("common_fields") or []) and not version.get("large_items"):
        # Every item is kept and has the field: the list is copied inside S3, not read at all.
        dataset_service.blobs().copy(source, list_key(tenant, execution_id))
        total = int(version["item_count"])
    else:

        def keep(entry: dict[str, Any]) -> bool:
            item = dataset_service.entry_item(entry)
            if not matches(item):
                return False
            if field not in item:
                raise _refuse(
                    f"item {entry['id']!r} is kept by the filter but has no field {field!r} "
                    "(input_field); filter it out or fix the item.",
                    "unknown_input_field",
                )
            return True

        total = _copy_list(tenant, execution_id, filter(keep, _entries(source)))
    if total == 0:
        dataset_service.blobs().delete(list_key(tenant, execution_id))
        raise _refuse(
            f"the filter {config.filter_query!r} keeps none of the {version['item_count']} items; nothing "
            "to run.",
            "no_items",
        )
    return _batch_ctx(config, tenant, execution_id, total, plan)


def prepare_rerun(
    tenant: str, new_execution_id: str, old_record: dict[str, Any], plan: dict[str, Any]
) -> dict[str, Any]:
    """A re-run goes over exactly the items the old run went over (its own list, not the dataset)."""
    config = BatchConfig.model_validate(old_record["batch_config"])
    total = _copy_list(tenant, new_execution_id, _entries(list_key(tenant, old_record["id"])))
    return _batch_ctx(config, tenant, new_execution_id, total, plan)


def prepare_retry(
    tenant: str,
    new_execution_id: str,
    old_record: dict[str, Any],
    plan: dict[str, Any],
    parallelism: int | None = None,
) -> dict[str, Any]:
    """The items of a finished batch run that failed, as a new run's list."""
    if old_record.get("input_mode") != "batch":
        raise _refuse("only a batch run has items to retry.", "not_a_batch")
    if old_record["status"] not in TERMINAL_STATUSES:
        raise Conflict(
            "this batch is still running; retry its failed items once it has finished.",
            code="execution_active",
        )
    config = BatchConfig.model_validate(old_record["batch_config"])
    if parallelism is not None:
        config = config.model_copy(update={"parallelism": parallelism})
    total = _copy_list(tenant, new_execution_id, _failed_entries(tenant, old_record["id"]))
    if total == 0:
        dataset_service.blobs().delete(list_key(tenant, new_execution_id))
        raise Conflict("no item of this batch failed; there is nothing to retry.", code="no_failed_items")
    return _batch_ctx(config, tenant, new_execution_id, total, plan)


def _failed_entries(tenant: str, execution_id: str) -> Iterator[dict[str, Any]]:
    """The entries of a run's item list whose item failed, in list order. The outcomes are read a
    page of entries at a time (one BatchGetItem of their status), so memory holds one page however
    many items failed, and each outcome is read once."""
    entries = _entries(list_key(tenant, execution_id))
    while page := list(itertools.islice(entries, OUTCOMES_PER_READ)):
        keys = [f"R#{item_key(entry['id'])}" for entry in page]
        outcomes = store().execution_children(tenant, execution_id, keys, fields=("status",))
        yield from (
            entry
            for entry, key in zip(page, keys, strict=True)
            if outcomes.get(key, {}).get("status") == "failed"
        )


# ---- running: the item's state ---------------------------------------------------------------------
_status_cache: dict[tuple[str, str], tuple[float, bool]] = {}
_status_lock = threading.Lock()


def is_running(tenant: str, execution_id: str) -> bool:
    """Whether the run is still running, as read at most STATUS_CACHE_SECONDS ago in this process
    (one read per second per warm function instead of one per node)."""
    now = time.monotonic()
    key = (tenant, execution_id)
    with _status_lock:
        cached = _status_cache.get(key)
    if cached and now - cached[0] < STATUS_CACHE_SECONDS:
        return cached[1]
    try:
        running = store().get_execution(tenant, execution_id).get("status") == "running"
    except NotFound:
        running = False
    with _status_lock:
        if len(_status_cache) > 1000:
            _status_cache.clear()
        _status_cache[key] = (now, running)
    return running


def item_state(state: dict[str, Any], *, check_running: bool = True) -> dict[str, Any]:
    """The state of one item's chain, with its ctx derived from its Map entry on the first call:
    ``item_id`` (the key of its records), ``source_item_id``, ``item`` and ``input`` (the item's
    input_field; both S3 references when large). Raises ExecutionNotRunning (when check_running)
    once the run is cancelled or over, so a cancelled batch dispatches no further node."""
    if "entry" in state:
        entry = state["entry"]
        parent = state.get("parent") or state["ctx"]
        prefix = f"{_prefix(parent['tenant'], parent['execution_id'])}items/{item_key(entry['id'])}/"
        item = dataset_service.entry_item(entry)
        try:
            text: str | None = datasets.input_text(item, parent["input_field"])
        except datasets.InputFieldError:
            text = None  # the item's first node fails on it (checked at submission: rare)
        ctx = {
            **parent,
            "item_id": item_key(entry["id"]),
            "source_item_id": entry["id"],
            "item": {"$s3": entry["ref"]} if "ref" in entry else item,
            "input": pack(text, f"{prefix}input.json") if text is not None else None,
        }
        state = {k: v for k, v in state.items() if k not in ("entry", "parent")}
        state["ctx"] = ctx
        state.setdefault("outputs", {})
    ctx = state["ctx"]
    if check_running and (state.get("cancelled") or not is_running(ctx["tenant"], ctx["execution_id"])):
        raise ExecutionNotRunning("the batch run was cancelled or has ended")
    return state


def node_attempt(node: dict[str, Any], retry_count: int | None) -> dict[str, Any]:
    """The node record of an item's node attempt, written once when the attempt ends (a batch
    writes one record per node of each item, not one when it starts and one when it ends)."""
    return {
        "node_id": node["id"],
        "name": node["name"],
        "idx": node["idx"],
        "status": "running",
        "attempts": int(retry_count or 0) + 1,
        "started_at": now_iso(),
    }


def item_node_failed(
    node: dict[str, Any], state: dict[str, Any], error_name: str, message: str, status: str
) -> dict[str, Any]:
    """An item's node whose attempts are spent: record it; with on_failure "stop" the item fails.
    A node that found the run cancelled makes the item neither processed nor failed."""
    rest = {k: v for k, v in state.items() if k != "error"}
    if error_name == "ExecutionNotRunning" or state.get("cancelled"):
        return {**rest, "cancelled": True}
    ctx = state["ctx"]
    record = {
        "node_id": node["id"],
        "name": node["name"],
        "idx": node["idx"],
        "status": status,
        "error": message,
        "completed_at": now_iso(),
    }
    with contextlib.suppress(ConditionFailed):
        store().put_item_node(
            ctx["tenant"], ctx["execution_id"], record_sk(ctx, node["id"]), record, attempt=None
        )
    if node["on_failure"] == "continue":
        return rest
    return {**rest, "failure": {"node_id": node["id"], "node_name": node["name"], "message": message}}


def finish_item(state: dict[str, Any], *, failed: bool) -> dict[str, Any]:
    """Record the item's outcome and count it, once (the "Item done" / "Item failed" states).

    The outcome is a conditional put (a retried task finds it and counts nothing), then one ADD
    on a counter shard. The final counts are recounted from the outcomes when the run completes.
    """
    state = item_state(state, check_running=False)
    ctx = state["ctx"]
    tenant, execution_id = ctx["tenant"], ctx["execution_id"]
    last = state.get("last_record")  # the record of the last node, when it finishes the item
    if state.get("cancelled") or not is_running(tenant, execution_id):
        if last:  # the item is not counted, but its node did run: keep its record
            with contextlib.suppress(ConditionFailed):
                store().put_item_node(
                    tenant, execution_id, record_sk(ctx, last["node_id"]), last, attempt=last["attempts"]
                )
        return {}
    outputs = state.get("outputs") or {}
    order = ctx.get("node_order") or list(outputs)
    final_node = next((n for n in reversed(order) if n in outputs), None)
    failure = state.get("failure") or {}
    usage = {k: int(v) for k, v in (state.get("usage") or {}).items() if k in USAGE_COUNTERS and v}
    result: dict[str, Any] = {
        "source_item_id": ctx["source_item_id"],
        "status": "failed" if failed else "completed",
        "error": (failure.get("message") or "the item failed") if failed else None,
        "failed_node_id": failure.get("node_id") if failed else None,
        "completed_at": now_iso(),
        "usage": usage,
    }
    if last:
        # The last node's record lives in the outcome (one write for both); its output is the
        # outcome's output, as its node record would have held it (inline, or an S3 reference).
        result["last_node"] = {k: v for k, v in last.items() if k != "output"}
        result["output"] = last.get("output")
    elif not failed and final_node is not None:
        final = outputs[final_node]
        if len(json.dumps(final)) <= INLINE_RESULT_BYTES:
            result["output"] = final
        else:  # already stored with the node's record: point at it, keep outcomes small
            result["output_node_id"] = final_node
    if store().record_item_outcome(tenant, execution_id, ctx["item_id"], result):
        store().add_to_batch_counters(
            tenant, execution_id, {"processed_items": 1, "failed_items": int(failed), **usage}
        )
    return {}  # the Map keeps every item's output until it ends: keep it empty


# ---- ending ----------------------------------------------------------------------------------------
def recount(tenant: str, execution_id: str) -> dict[str, int]:
    """Counts and usage summed from the recorded outcomes themselves (one Query of them)."""
    totals = dict.fromkeys(TableStore.BATCH_COUNTERS, 0)
    for outcome in store().item_outcomes(tenant, execution_id, fields=("status", "usage")):
        totals["processed_items"] += 1
        totals["failed_items"] += outcome.get("status") == "failed"
        for name, amount in (outcome.get("usage") or {}).items():
            if name in totals:
                totals[name] += int(amount)
    return totals


def complete(tenant: str, record: dict[str, Any]) -> None:
    """The Map has run every item: completed, or failed when more than max_failed_percent of them
    failed or some item has no outcome. The final counts are recounted from the outcomes and kept
    in the execution. Only a running run moves (a cancelled one stays cancelled)."""
    from relayflow_runtime.services import executions

    counts = recount(tenant, record["id"])
    progress = dict(record.get("progress") or {})
    total = int(progress.get("total_items") or 0)
    processed, failed = counts["processed_items"], counts["failed_items"]
    progress.update(processed_items=processed, failed_items=failed)
    fields: dict[str, Any] = {"completed_at": now_iso(), "progress": progress}
    if counts["input_tokens"] or counts["output_tokens"]:
        # Where a single run keeps its usage: the execution shows it as usage.
        fields.update({k: counts[k] for k in USAGE_COUNTERS if counts[k]})
    limit = (record.get("batch_config") or {}).get("max_failed_percent")
    status = "completed"
    if processed < total:
        status = "failed"
        fields["error"] = f"{total - processed} of {total} items ended without a recorded outcome"
    elif limit is not None and total and failed * 100 / total > float(limit):
        status = "failed"
        fields["error"] = (
            f"{failed} of {total} items failed ({failed * 100 / total:.1f}%), more than max_failed_percent "
            f"({float(limit):g}%)"
        )
    executions.transition(tenant, record, ("running",), status, fields)


# ---- reading ---------------------------------------------------------------------------------------
def fill_progress(tenant: str, execution: Execution, *, with_results: bool = False) -> None:
    """Live counts from the counter shards (one BatchGetItem), or the final counts a completed run
    keeps; a finished run's first page of results when asked."""
    final = execution.status in ("completed", "failed") and execution.progress.processed_items is not None
    if not final:
        counters = store().batch_counters(tenant, execution.id)
        execution.progress.processed_items = counters["processed_items"]
        execution.progress.failed_items = counters["failed_items"]
        _set_usage(execution, counters)
    if with_results and execution.status in TERMINAL_STATUSES:
        items, token = results_page(tenant, execution, RESULTS_IN_EXECUTION, None)
        execution.results = {
            "items": [i.model_dump(mode="json") for i in items],
            "next_token": token,
            "total_items": execution.progress.total_items,
        }


def _set_usage(execution: Execution, counters: Mapping[str, int]) -> None:
    from relayflow_runtime.services import executions

    if counters.get("input_tokens") or counters.get("output_tokens"):
        usage = {k: counters.get(k) for k in USAGE_COUNTERS if counters.get(k)}
        execution.usage = TokenUsage.model_validate(executions.usage_of(usage))


def _batch_execution(tenant: str, workflow_id: str, execution_id: str) -> Execution:
    from relayflow_runtime.services import executions

    record = executions.get_execution_record(tenant, workflow_id, execution_id)
    if record.get("input_mode") != "batch":
        raise InvalidInput("this execution is not a batch run: it has no item results.", code="not_a_batch")
    return Execution.model_validate({k: v for k, v in record.items() if k != "results"})


def _input_of(entry: dict[str, Any], field: str) -> str | None:
    try:
        return datasets.input_text(dataset_service.entry_item(entry), field)
    except datasets.InputFieldError:
        return None


def _results(tenant: str, execution: Execution, entries: list[dict[str, Any]]) -> list[BatchItemResult]:
    """The results of these list entries: one BatchGetItem of their outcomes, one more for the
    node records that hold the outputs too large to be copied into an outcome."""
    keys = [item_key(e["id"]) for e in entries]
    outcomes = store().execution_children(tenant, execution.id, [f"R#{k}" for k in keys])
    pointed = {
        f"I#{k}#N#{o['output_node_id']}": k
        for k in keys
        if (o := outcomes.get(f"R#{k}")) and o.get("output_node_id")
    }
    node_records = store().execution_children(tenant, execution.id, list(pointed)) if pointed else {}
    outputs = {key: node_records.get(sk, {}).get("output") for sk, key in pointed.items()}
    field = execution.batch_config.input_field if execution.batch_config else "text"
    results = []
    for entry, key in zip(entries, keys, strict=True):
        outcome = outcomes.get(f"R#{key}")
        text = _input_of(entry, field)
        if outcome is None:
            results.append(BatchItemResult(source_item_id=entry["id"], input=text))
            continue
        output = outputs.get(key) if outcome.get("output_node_id") else outcome.get("output")
        results.append(BatchItemResult.model_validate({**outcome, "input": text, "output": unpack(output)}))
    return results


def results_page(
    tenant: str, execution: Execution, limit: int, next_token: str | None
) -> tuple[list[BatchItemResult], str | None]:
    """Items in list order, each exactly once (``pending`` until it has an outcome)."""
    offset = dataset_service.decode_offset(next_token)
    entries: list[dict[str, Any]] = []
    token: str | None = None
    try:
        for start, _, entry in dataset_service.iter_entries(list_key(tenant, execution.id), offset):
            if len(entries) == limit:
                token = dataset_service.encode_offset(start)
                break
            entries.append(entry)
    except NotFound:
        return [], None
    return _results(tenant, execution, entries), token


def get_results(
    tenant: str, workflow_id: str, execution_id: str, limit: int, next_token: str | None
) -> tuple[list[BatchItemResult], str | None]:
    return results_page(tenant, _batch_execution(tenant, workflow_id, execution_id), limit, next_token)


def iter_results(tenant: str, execution: Execution, page_size: int = 500) -> Iterator[BatchItemResult]:
    token: str | None = None
    while True:
        items, token = results_page(tenant, execution, page_size, token)
        yield from items
        if not token:
            return


def download_results(tenant: str, workflow_id: str, execution_id: str, fmt: str) -> tuple[bytes, str]:
    """The whole result set as one JSONL or CSV file, when it fits in one API answer."""
    execution = _batch_execution(tenant, workflow_id, execution_id)
    out = bytearray()
    for chunk in format_rows((result_row(r) for r in iter_results(tenant, execution)), fmt):
        out += chunk
        if len(out) > MAX_DOWNLOAD_BYTES:
            raise TooLarge(
                f"the results are larger than the {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MiB one answer can "
                "carry; page through GET .../results, or use the client's download_execution_results(), "
                "which does.",
                code="results_too_large",
            )
    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"
    return bytes(out), media


def get_item(tenant: str, workflow_id: str, execution_id: str, source_item_id: str) -> dict[str, Any]:
    """One item of a batch run: its result and the record of every node of its chain."""
    from relayflow_runtime.services import executions

    execution = _batch_execution(tenant, workflow_id, execution_id)
    key = item_key(source_item_id)
    entry = next(
        (
            e
            for _, _, e in dataset_service.iter_entries(list_key(tenant, execution_id))
            if e["id"] == source_item_id
        ),
        None,
    )
    if entry is None:
        raise NotFound(f"item '{source_item_id}' is not an item of this run.", code="item_not_found")
    order = executions.get_execution_record(tenant, workflow_id, execution_id).get("node_order") or []
    sks = [f"I#{key}#N#{node}" for node in order] + [f"R#{key}"]
    found = store().execution_children(tenant, execution_id, sks)
    records = {r["node_id"]: r for sk, r in found.items() if sk.startswith("I#")}
    outcome = found.get(f"R#{key}") or {}
    if outcome.get("last_node"):  # the last node's record, kept in the outcome (see finish_item)
        last = outcome["last_node"]
        records[last["node_id"]] = {
            **records.get(last["node_id"], {}),
            **last,
            "output": outcome.get("output"),
        }
    nodes = {}
    for record in sorted(records.values(), key=lambda r: r.get("idx", 0)):
        data = {**record, "output": unpack(record.get("output")), "prompt": unpack(record.get("prompt"))}
        if data.get("usage"):
            data["usage"] = executions.usage_of(data["usage"])
        nodes[record["node_id"]] = NodeExecution.model_validate(data).model_dump(mode="json")
    (result,) = _results(tenant, execution, [entry])
    return {**result.model_dump(mode="json"), "node_executions": nodes}
