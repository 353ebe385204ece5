"""Reading a batch run: progress, pages of results, one item, whole-result downloads.

* **Progress** while the run runs: the 16 counter shards (one BatchGetItem); once it has ended, the
  final counts its ``complete`` kept in the execution.
* **Results** in list order, each kept item exactly once: a page is one ranged read of the run's
  item list from the cursor's byte offset and one BatchGetItem of the page's outcomes (over their
  shards); an item without an outcome is ``pending`` — or, once the run is over, ``failed``: it
  never ran.
* **One item** in O(1): the index of the list (services/item_lists.py: two ranged GETs), its line
  (one), its outcome (one GetItem) and the S3 objects of its large prompts and outputs.
* **Downloads** (``format=jsonl|csv``): a result set up to ``max_inline_download_bytes`` is the
  answer's body. A larger one of a finished run is written to S3 by the jobs machine (the answer is
  ``202`` while it is prepared) and then answered with a presigned URL (``303``), which the client
  follows; where no presigned URL can be offered (the local stack) it is ``413
  results_too_large`` and the client pages through the results API instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from relayflow_runtime.adapters import blob_stream
from relayflow_runtime.domain import datasets
from relayflow_runtime.domain.clock import now_iso, parse_iso
from relayflow_runtime.domain.status import TERMINAL
from relayflow_runtime.errors import NotFound, TooLarge
from relayflow_runtime.schemas.dataset_api import format_rows, result_row
from relayflow_runtime.schemas.entities import (
    BatchItemResult,
    BatchItemStatus,
    Execution,
    ExecutionResults,
    NodeExecution,
    TokenUsage,
)
from relayflow_runtime.schemas.responses import BatchItemDetail
from relayflow_runtime.services import dataset_service, deps, item_lists, run_records
from relayflow_runtime.services.downloads import URL_SECONDS, Download, presigned_urls_enabled
from relayflow_runtime.services.values import unpack
from relayflow_runtime.settings import get_settings

#: Items in ``execution.results["items"]`` of a finished run (the rest: the results API).
RESULTS_IN_EXECUTION = 100
#: Above this many items a download of a finished run goes straight to an export (no inline try).
INLINE_TRY_ITEMS = 5_000
#: An export not ready after this long is started again (its job died).
EXPORT_STALE_SECONDS = 20 * 60
USAGE_COUNTERS = ("input_tokens", "output_tokens", "estimated_cost_nanos")


# ---- progress --------------------------------------------------------------------------------------
def _finished(execution: Execution) -> bool:
    return execution.status in ("completed", "failed") and execution.progress.processed_items is not None


def fill_progress(
    tenant: str,
    execution: Execution,
    *,
    with_results: bool = False,
    store: deps.BatchCounters | None = None,
) -> None:
    """Live counts from the counter shards (``store``: the configured one by default), or the
    final counts a finished run keeps; a finished run's first page of results when asked."""
    if not _finished(execution):
        counters = (store or deps.stores().batches).counters(tenant, execution.id)
        execution.progress.processed_items = counters["processed_items"]
        execution.progress.failed_items = counters["failed_items"]
        if counters.get("input_tokens") or counters.get("output_tokens"):
            usage = {k: counters[k] for k in USAGE_COUNTERS if counters.get(k)}
            execution.usage = TokenUsage.model_validate(run_records.usage_of(usage))
    if with_results and execution.status in TERMINAL:
        items, token = results_page(tenant, execution, RESULTS_IN_EXECUTION, None)
        execution.results = ExecutionResults(
            items=items, next_token=token, total_items=execution.progress.total_items
        )


# ---- results ---------------------------------------------------------------------------------------
def _batch_record(tenant: str, workflow_id: str, execution_id: str) -> tuple[Execution, dict[str, Any]]:
    record = run_records.get_execution_record(tenant, workflow_id, execution_id)
    if record.get("input_mode") != "batch":
        raise NotFound("this execution is not a batch run: it has no item results.", code="not_a_batch")
    return Execution.model_validate({k: v for k, v in record.items() if k != "results"}), record


def _input_of(item: dict[str, Any], field: str) -> str | None:
    try:
        return datasets.input_text(item, field)
    except datasets.InputFieldError:
        return None


def _result(
    execution: Execution, entry_id: str, item: dict[str, Any], outcome: dict[str, Any] | None
) -> BatchItemResult:
    field = execution.batch_config.input_field if execution.batch_config else "text"
    text = _input_of(item, field)
    if outcome is None:
        if execution.status in ("completed", "failed"):
            return BatchItemResult(
                source_item_id=entry_id,
                status="failed",
                input=text,
                error="the item never ran (no outcome was recorded)",
            )
        return BatchItemResult(source_item_id=entry_id, input=text)
    node = (outcome.get("nodes") or {}).get(outcome.get("output_node") or "") or {}
    # The last node's text and, for a JSON node, its parsed value (see entities.with_text_output).
    texts = {"output": unpack(node.get("output")), "parsed_output": unpack(node.get("parsed_output"))}
    return BatchItemResult.model_validate({**outcome, "source_item_id": entry_id, "input": text, **texts})


#: Items a page filtered by status reads through at most: a page of a rare status can be short (or
#: empty) with a ``next_token`` to read on from where it stopped, like a DynamoDB filtered query.
FILTER_SCAN_ITEMS = 1_000


def results_page(
    tenant: str,
    execution: Execution,
    limit: int,
    next_token: str | None,
    status: BatchItemStatus | None = None,
) -> tuple[list[BatchItemResult], str | None]:
    """Items in list order, each exactly once; the cursor is a byte offset in the run's list. With
    ``status``, only the items in that status, reading at most ``FILTER_SCAN_ITEMS`` of the list."""
    offset = dataset_service.decode_offset(next_token)
    chunk_size = limit if status is None else max(limit, 100)
    budget = limit if status is None else max(limit, FILTER_SCAN_ITEMS)
    kept: list[BatchItemResult] = []
    chunk: list[tuple[int, str, dict[str, Any]]] = []
    prefix = run_records.execution_prefix(tenant, execution.id)

    def read(chunk: list[tuple[int, str, dict[str, Any]]]) -> str | None:
        """Keep the chunk's results that pass; the cursor of the first one left unread, if any."""
        ids = [entry_id for _, entry_id, _ in chunk]
        outcomes = deps.stores().batches.outcomes(tenant, execution.id, ids)
        for start, entry_id, item in chunk:
            if len(kept) == limit:
                return dataset_service.encode_offset(start)
            result = _result(execution, entry_id, item, outcomes.get(entry_id))
            if status is None or result.status == status:
                kept.append(result)
        return None

    scanned = 0
    try:
        for start, entry in item_lists.entries(item_lists.list_key(prefix), offset):
            if len(kept) == limit or scanned == budget:
                return kept, dataset_service.encode_offset(start)
            chunk.append((start, entry.id, item_lists.item_of(entry)))
            scanned += 1
            if len(chunk) == chunk_size or scanned == budget:
                token = read(chunk)
                chunk = []
                if token is not None:
                    return kept, token
    except NotFound:  # the list is not written yet (the run is being prepared)
        return [], None
    return kept, read(chunk) if chunk else None


def get_results(
    tenant: str,
    workflow_id: str,
    execution_id: str,
    limit: int,
    next_token: str | None,
    status: BatchItemStatus | None = None,
) -> tuple[list[BatchItemResult], str | None]:
    execution = _batch_record(tenant, workflow_id, execution_id)[0]
    return results_page(tenant, execution, limit, next_token, status)


def iter_results(tenant: str, execution: Execution, page_size: int = 500) -> Iterator[BatchItemResult]:
    token: str | None = None
    while True:
        items, token = results_page(tenant, execution, page_size, token)
        yield from items
        if not token:
            return


# ---- one item --------------------------------------------------------------------------------------
def get_item(tenant: str, workflow_id: str, execution_id: str, source_item_id: str) -> BatchItemDetail:
    """One item of a batch run: its result and the record of every node of it that ran."""
    execution, record = _batch_record(tenant, workflow_id, execution_id)
    buckets = (record.get("item_index") or {}).get("buckets")
    entry = None
    if buckets:
        entry = item_lists.find(
            run_records.execution_prefix(tenant, execution_id), int(buckets), source_item_id
        )
    if entry is None:
        raise NotFound(f"item '{source_item_id}' is not an item of this run.", code="item_not_found")
    outcome = deps.stores().batches.outcome(tenant, execution_id, source_item_id)
    nodes: dict[str, NodeExecution] = {}
    for node in sorted(((outcome or {}).get("nodes") or {}).values(), key=lambda n: n.get("idx", 0)):
        data = {
            **node,
            "output": unpack(node.get("output")),
            "parsed_output": unpack(node.get("parsed_output")),
            "prompt": unpack(node.get("prompt")),
        }
        data["usage"] = run_records.usage_of(node["usage"]) if node.get("usage") else None
        nodes[node["node_id"]] = NodeExecution.model_validate(data)
    result = _result(execution, entry.id, item_lists.item_of(entry), outcome)
    return BatchItemDetail(**dict(result), node_executions=nodes)


# ---- downloads -------------------------------------------------------------------------------------
def _media(fmt: str) -> str:
    return "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"


def export_key(tenant: str, execution_id: str, fmt: str) -> str:
    return f"{run_records.execution_prefix(tenant, execution_id)}exports/results.{fmt}"


def _inline(tenant: str, execution: Execution, fmt: str, limit: int) -> bytes | None:
    """The whole result set as one file, or None once it passes ``limit`` bytes."""
    out = bytearray()
    for chunk in format_rows((result_row(r) for r in iter_results(tenant, execution)), fmt):
        out += chunk
        if len(out) > limit:
            return None
    return bytes(out)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the results are larger than the {limit // (1024 * 1024) or 1} MiB one answer can carry; page "
        "through GET .../results, or use the client's download_execution_results(), which does.",
        code="results_too_large",
    )


def download_results(tenant: str, workflow_id: str, execution_id: str, fmt: str) -> Download:
    """The whole result set: the bytes when small, else a presigned URL of an export (``preparing``
    while the jobs machine writes it)."""
    execution, record = _batch_record(tenant, workflow_id, execution_id)
    limit = get_settings().max_inline_download_bytes
    filename = f"results-{execution_id}.{fmt}"
    finished = execution.status in TERMINAL
    export = (record.get("exports") or {}).get(fmt) or {}
    if finished and export.get("status") == "ready":
        url = deps.blobs().presigned_get(export_key(tenant, execution_id, fmt), URL_SECONDS, filename)
        return Download(url=url, filename=filename)
    large = (
        finished and presigned_urls_enabled() and int(execution.progress.total_items or 0) > INLINE_TRY_ITEMS
    )
    if not large:
        body = _inline(tenant, execution, fmt, limit)
        if body is not None:
            return Download(body=body, media_type=_media(fmt), filename=filename)
    if not finished or not presigned_urls_enabled():
        raise _too_large(limit)
    if export.get("status") == "preparing" and _age_seconds(export.get("since")) < EXPORT_STALE_SECONDS:
        return Download(preparing=True)
    attempt = int(export.get("attempt") or 0) + 1
    exports = {
        **(record.get("exports") or {}),
        fmt: {"status": "preparing", "since": now_iso(), "attempt": attempt},
    }
    deps.stores().executions.update_execution(tenant, execution_id, {"exports": exports})
    deps.machines().start(
        get_settings().jobs_machine_arn,
        f"export-{execution_id}-{fmt}-{attempt}",
        {
            "kind": "export_results",
            "tenant": tenant,
            "workflow_id": workflow_id,
            "execution_id": execution_id,
            "format": fmt,
        },
    )
    return Download(preparing=True)


def _age_seconds(since: str | None) -> float:
    if not since:
        return float("inf")
    return (datetime.now(UTC) - parse_iso(since)).total_seconds()


def export_results_job(job: dict[str, Any]) -> dict[str, Any]:
    """The jobs machine's ``export_results``: the whole result set of a finished run as one S3
    object (streamed: memory holds one page), then marked ready on the execution."""
    tenant, workflow_id, execution_id, fmt = (
        str(job["tenant"]),
        str(job["workflow_id"]),
        str(job["execution_id"]),
        str(job["format"]),
    )
    execution, _ = _batch_record(tenant, workflow_id, execution_id)
    key = export_key(tenant, execution_id, fmt)
    with blob_stream.ObjectWriter(deps.blobs().bucket, key, _media(fmt)) as out:
        for chunk in format_rows((result_row(r) for r in iter_results(tenant, execution, 1000)), fmt):
            out.write(chunk)
    fresh = deps.stores().executions.get_execution(tenant, execution_id)
    exports = {**(fresh.get("exports") or {}), fmt: {"status": "ready", "since": now_iso(), "size": out.size}}
    deps.stores().executions.update_execution(tenant, execution_id, {"exports": exports})
    return {"key": key, "size": out.size}
