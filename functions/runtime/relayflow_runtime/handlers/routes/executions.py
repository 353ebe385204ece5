"""Executions: start, watch, cancel, re-run, list, download the input."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from relayflow_runtime.domain.disposition import content_disposition
from relayflow_runtime.handlers.context import Limit, NextToken, current_tenant
from relayflow_runtime.schemas import api, dataset_api
from relayflow_runtime.schemas.entities import BatchItemStatus, Execution
from relayflow_runtime.schemas.responses import (
    BatchItemDetail,
    BatchItemResultPage,
    Deleted,
    Deleting,
    DownloadLink,
    DownloadPreparing,
    ExecutionEstimate,
    ExecutionPage,
)
from relayflow_runtime.services import batch_results, estimate, executions
from relayflow_runtime.services.downloads import URL_SECONDS, Download

router = Router()

StatusFilter = Literal["pending", "running", "completed", "failed", "cancelled"]


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


def _remaining_ms() -> int | None:
    """What the invocation has left (the Lambda context's), when the request came with one."""
    context = getattr(router, "lambda_context", None)
    return None if context is None else int(context.get_remaining_time_in_millis())


#: A download too large for one API answer: fetch ``Location`` (a presigned S3 GET, no API key).
_SEE_URL: OpenAPIResponse = {
    "description": "Larger than one answer carries: GET the presigned URL in Location (without the API key)",
    "headers": {
        "Location": {"description": "The presigned URL", "schema": {"type": "string", "format": "uri"}}
    },
    "content": {"application/json": {"model": DownloadLink}},
}
#: Seconds a client waits before asking again for a download being prepared.
RETRY_AFTER_SECONDS = 2


def _json(status: int, model: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    """An answer whose body is a declared model (validated by building it), for the routes that
    answer more than one model and so declare no single return type."""
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=model.model_dump(mode="json"),
        headers=headers,
    )


def _download(download: Download) -> Response[Any]:
    if download.preparing:
        preparing = DownloadPreparing(retry_after=RETRY_AFTER_SECONDS)
        return _json(202, preparing, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if download.url is not None:
        return _json(303, DownloadLink(url=download.url, expires_in=URL_SECONDS), {"Location": download.url})
    return Response(
        status_code=200,
        content_type=download.media_type,
        body=download.body,
        headers={"Content-Disposition": content_disposition(download.filename)},
    )


# Request examples: the reference documentation's calls, as the bodies the client sends for them.
EXECUTE_EXAMPLES = {
    "text": {
        "summary": "Single execution, text input",
        "value": {"input_mode": "single", "single_input": "Test input"},
    },
    "file": {
        "summary": "Single execution, file input (the client's item=path sends the file's bytes)",
        "value": {
            "input_mode": "single",
            "file": {
                "filename": "document.pdf",
                "content_type": "application/pdf",
                "content_base64": "JVBERi0xLjQK",
            },
        },
    },
    "version": {
        "summary": "A specific version instead of the active one",
        "value": {"input_mode": "single", "single_input": "Test input", "version_id": "version-id"},
    },
    "timeout": {
        "summary": "Workflow-level timeout: 10 minutes max",
        "value": {"input_mode": "single", "single_input": "...", "timeout": 600},
    },
    "batch": {
        "summary": "Batch execution over a dataset version",
        "value": {
            "input_mode": "batch",
            "batch_config": {
                "dataset_id": "dataset-id",
                "dataset_version_id": "dataset-version-id",
                "input_field": "text",
                "filter_query": "",
                "parallelism": 5,
            },
        },
    },
}


@router.post(
    "/workflows/<workflow_id>/executions",
    operation_id="executeWorkflow",
    summary="Run a workflow",
    description="Starts a run and answers at once (status `pending`): poll getWorkflowExecution until "
    "the status is `completed`, `failed` or `cancelled`. `single`: one text (`single_input`) or one "
    "file (`file`) through the active version, or `version_id`; `batch`: every item of a dataset "
    "version (`batch_config`). `timeout` bounds the whole run, in seconds.",
    tags=["executions"],
    status_code=201,
    response_description="The execution, pending",
    responses={
        201: {
            "description": "The execution, pending (or the first one, replayed for the same key)",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when an earlier request with the same Idempotency-Key "
                    "started this execution.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
            "content": {"application/json": {"model": Execution}},
        }
    },
)
def execute_workflow(
    workflow_id: str,
    body: Annotated[api.Execute, Body(openapi_examples=EXECUTE_EXAMPLES)],
    idempotency_key: Annotated[
        str | None,
        Header(
            # Stated here, checked by the service (400 invalid_idempotency_key).
            json_schema_extra={"pattern": executions.IDEMPOTENCY_KEY_PATTERN},
            description="Retry-safe starts: the same key and body within 24 h return the same "
            "execution (header Idempotent-Replayed: true); the same key with another body is a 409. "
            "Printable ASCII without spaces, at most 255 characters (a UUID is a good key).",
        ),
    ] = None,
) -> Response[Execution]:
    if idempotency_key is None:
        execution, replayed = executions.start_execution(_tenant(), workflow_id, body), False
    else:
        execution, replayed = executions.start_execution_once(
            _tenant(), workflow_id, body, idempotency_key, lambda_context=router.lambda_context
        )
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=execution,
        headers={"Idempotent-Replayed": "true"} if replayed else None,
    )


@router.post(
    "/workflows/<workflow_id>/estimate",
    operation_id="estimateWorkflowExecution",
    summary="Estimate a batch before it starts",
    description="The body of a batch start (`input_mode: batch`, `batch_config`, `version_id`), "
    "checked as a start checks it, and nothing started or written: the items the filter keeps, the "
    "model calls and tokens from the templates rendered on a sample of them (`sample_size`; a builtin "
    "model's answer computed, another's assumed as long as its prompt), the models' cost where their "
    "`price` is known, what AWS charges at list prices, and the time at the given parallelism. "
    "First attempts only (no retries).",
    tags=["executions"],
    response_description="The estimate",
)
def estimate_workflow_execution(workflow_id: str, body: api.EstimateBatch) -> ExecutionEstimate:
    return estimate.estimate_batch(_tenant(), workflow_id, body)


@router.get(
    "/workflows/<workflow_id>/executions",
    operation_id="getWorkflowExecutions",
    summary="List a workflow's executions",
    description="Execution history, newest first, a page at a time; filter by `status`, by "
    "`version_id` (the runs of one version) and by creation time (`created_after`, "
    "`created_before`: RFC 3339 times, bounds included). Pages "
    "leave out node details and batch results: get one execution for those.",
    tags=["executions"],
    response_description="A page of executions",
)
def list_executions(
    workflow_id: str,
    limit: Limit = 50,
    next_token: NextToken = None,
    status: Annotated[StatusFilter | None, Query(description="Only executions in this status.")] = None,
    created_after: Annotated[
        str | None,
        Query(description="Only executions created at or after this time (RFC 3339: 2025-01-31T12:00:00Z)."),
    ] = None,
    created_before: Annotated[
        str | None,
        Query(
            description="Only executions created at or before this time (RFC 3339); not earlier than "
            "created_after (400 invalid_time_range)."
        ),
    ] = None,
    version_id: Annotated[
        str | None, Query(max_length=64, description="Only the executions of this workflow version.")
    ] = None,
) -> ExecutionPage:
    items, token = executions.list_executions(
        _tenant(),
        workflow_id,
        limit=limit,
        next_token=next_token,
        status=status,
        created_after=created_after,
        created_before=created_before,
        version_id=version_id,
    )
    return ExecutionPage(items=items, next_token=token)


@router.get(
    "/workflows/<workflow_id>/executions/<execution_id>",
    operation_id="getWorkflowExecution",
    summary="Get an execution",
    description="Status, `progress` (`total_nodes`, `current_node_idx`, `current_node_id`; batch: "
    "`total_items`, `processed_items`, `failed_items`), `results` once finished, `error` when "
    "failed, and each node's record in `node_executions` (`status`, `output`, `prompt`, "
    "`duration_ms`, `error`, `attempts`; a JSON node's parsed value in `parsed_output`).",
    tags=["executions"],
    response_description="The execution",
)
def get_execution(workflow_id: str, execution_id: str) -> Execution:
    return executions.get_execution(_tenant(), workflow_id, execution_id)


@router.delete(
    "/workflows/<workflow_id>/executions/<execution_id>",
    operation_id="deleteWorkflowExecution",
    summary="Delete a finished execution",
    description="With its stored files and results; a run that is still going is a 409. A batch run "
    "is gone for every reader at once and its records deleted in the background (202).",
    tags=["executions"],
    responses={
        200: {
            "description": "The id of the deleted execution",
            "content": {"application/json": {"model": Deleted}},
        },
        202: {
            "description": "A batch run, being deleted in the background",
            "content": {"application/json": {"model": Deleting}},
        },
    },
)
# No return annotation: the answer is one of two models, both declared above and built here.
def delete_execution(workflow_id: str, execution_id: str):
    if executions.delete_execution(_tenant(), workflow_id, execution_id):
        return _json(202, Deleting(deleted=execution_id))
    return _json(200, Deleted(deleted=execution_id))


@router.post(
    "/workflows/<workflow_id>/executions/<execution_id>/cancel",
    operation_id="cancelWorkflowExecution",
    summary="Cancel an execution",
    description="Stops a pending or running execution (status `cancelled`); a finished one is a 409.",
    tags=["executions"],
    response_description="The execution, cancelled",
)
def cancel_execution(workflow_id: str, execution_id: str) -> Execution:
    return executions.cancel_execution(_tenant(), workflow_id, execution_id)


@router.post(
    "/workflows/<workflow_id>/executions/<execution_id>/rerun",
    operation_id="rerunWorkflowExecution",
    summary="Run an execution's input again",
    description="A new execution with the same input and version.",
    tags=["executions"],
    status_code=201,
    response_description="The new execution, pending",
)
def rerun_execution(workflow_id: str, execution_id: str) -> Execution:
    return executions.rerun_execution(_tenant(), workflow_id, execution_id)


@router.get(
    "/workflows/<workflow_id>/executions/<execution_id>/input",
    operation_id="downloadExecutionInput",
    summary="Download an execution's input file",
    description="The original file of a file-based execution, byte for byte (404 `no_input_file` "
    "for a text input); a large one (on AWS) as a presigned URL (303).",
    tags=["executions"],
    responses={
        200: {
            "description": "The original input file, byte for byte (its own content type)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        303: _SEE_URL,
    },
)
# No return annotation on purpose: the resolver would validate the body as text, and a file is bytes.
def download_input(workflow_id: str, execution_id: str):
    return _download(executions.input_download(_tenant(), workflow_id, execution_id))


# ---- batch runs: results, one item, retry of the failed items (see docs/batch.md) ---------------------
ResultsFormat = Literal["json", "jsonl", "csv"]


@router.get(
    "/workflows/<workflow_id>/executions/<execution_id>/results",
    operation_id="getExecutionResults",
    summary="A batch run's item results",
    description="One page of the items' results in dataset order (`format=json`), or all of them as "
    "one JSONL or CSV file (`format=jsonl|csv`): the body up to 5 MiB; larger (a finished run, on "
    "AWS) 202 while the file is written to S3, then 303 to a presigned URL; 413 where there is none "
    "(page instead). Each item appears exactly once across the pages; `output` is the text of its "
    "last node.",
    tags=["executions"],
    responses={
        200: {
            "description": "A page of item results (json), or the whole set as a file (jsonl, csv)",
            "content": {
                "application/json": {"model": BatchItemResultPage},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        202: {
            "description": "A large download of a finished run is being written to S3: ask again after "
            "Retry-After seconds",
            "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
            "content": {"application/json": {"model": DownloadPreparing}},
        },
        303: _SEE_URL,
    },
)
# No return annotation: the answer is a page or a file, both declared above; the page is built here.
def get_results(
    workflow_id: str,
    execution_id: str,
    limit: Annotated[
        int, Query(ge=1, le=dataset_api.MAX_RESULTS_PAGE, description="Most item results in the page.")
    ] = 100,
    next_token: NextToken = None,
    format: Annotated[
        ResultsFormat, Query(description="A page (json) or the whole set (jsonl, csv).")
    ] = "json",
    status: Annotated[
        BatchItemStatus | None,
        Query(
            description="json pages: only the items in this status (e.g. `failed`). A page reads "
            f"at most {batch_results.FILTER_SCAN_ITEMS} items of the list (and for at most "
            f"{batch_results.PAGE_SECONDS:.0f} s), so it can be short or empty with a `next_token` "
            "to read on (`stopped_by` says why)."
        ),
    ] = None,
):
    if format != "json":
        return _download(batch_results.download_results(_tenant(), workflow_id, execution_id, format))
    page = batch_results.get_results(
        _tenant(), workflow_id, execution_id, limit, next_token, status, remaining_ms=_remaining_ms()
    )
    return _json(200, page)


@router.get(
    "/workflows/<workflow_id>/executions/<execution_id>/items/<item_id>",
    operation_id="getExecutionItem",
    summary="One item of a batch run",
    description="Its result and the record of every node of it that ran (`node_executions`).",
    tags=["executions"],
    response_description="The item",
)
def get_item(workflow_id: str, execution_id: str, item_id: str) -> BatchItemDetail:
    return batch_results.get_item(_tenant(), workflow_id, execution_id, item_id)


@router.post(
    "/workflows/<workflow_id>/executions/<execution_id>/retry-failed",
    operation_id="retryFailedItems",
    summary="Run a batch run's failed items again",
    description="A new batch run over only the items of this finished batch run that failed, with its "
    "version (or `version_id`). One retry at a time: while an earlier retry of this run is pending or "
    "running, 409 `retry_in_progress` names it in `details.execution_id`.",
    tags=["executions"],
    status_code=201,
    response_description="The new execution, pending",
)
def retry_failed_items(workflow_id: str, execution_id: str, body: dataset_api.RetryFailed) -> Execution:
    return executions.retry_failed_items(
        _tenant(), workflow_id, execution_id, version_id=body.version_id, parallelism=body.parallelism
    )
