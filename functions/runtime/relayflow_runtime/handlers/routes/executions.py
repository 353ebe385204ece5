"""Executions: start, watch, cancel, re-run, list, download the input."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from relayflow_runtime.handlers.context import current_tenant, page
from relayflow_runtime.schemas import api, dataset_api
from relayflow_runtime.services import batch_results, executions
from relayflow_runtime.services.downloads import URL_SECONDS, Download

router = Router()

StatusFilter = Literal["pending", "running", "completed", "failed", "cancelled"]


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


_DELETED = {
    "type": "object",
    "properties": {
        "deleted": {"type": "string"},
        "status": {"type": "string", "enum": ["deleting"]},
    },
}
_PREPARING = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["preparing"]}, "retry_after": {"type": "integer"}},
}
#: A download too large for one API answer: fetch ``Location`` (a presigned S3 GET, no API key).
_SEE_URL: OpenAPIResponse = {
    "description": "larger than one answer carries: GET the presigned URL in Location (without the API key)",
    "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"url": {"type": "string", "format": "uri"}, "expires_in": {"type": "integer"}},
            }
        }
    },
}
#: Seconds a client waits before asking again for a download being prepared.
RETRY_AFTER_SECONDS = 2


def _download(download: Download) -> Response[Any]:
    if download.preparing:
        return Response(
            status_code=202,
            content_type=content_types.APPLICATION_JSON,
            body={"status": "preparing", "retry_after": RETRY_AFTER_SECONDS},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if download.url is not None:
        return Response(
            status_code=303,
            content_type=content_types.APPLICATION_JSON,
            body={"url": download.url, "expires_in": URL_SECONDS},
            headers={"Location": download.url},
        )
    return Response(
        status_code=200,
        content_type=download.media_type,
        body=download.body,
        headers={"Content-Disposition": f'attachment; filename="{download.filename}"'},
    )


@router.post("/workflows/<workflow_id>/executions", tags=["executions"], status_code=201)
def execute_workflow(
    workflow_id: str,
    body: api.Execute,
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Retry-safe starts: the same key and body within 24 h return the same "
            "execution (header Idempotent-Replayed: true); the same key with another body is a 409."
        ),
    ] = None,
) -> Response[dict[str, Any]]:
    if idempotency_key is None:
        execution, replayed = executions.start_execution(_tenant(), workflow_id, body), False
    else:
        execution, replayed = executions.start_execution_once(
            _tenant(), workflow_id, body, idempotency_key, lambda_context=router.lambda_context
        )
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=execution.model_dump(mode="json"),
        headers={"Idempotent-Replayed": "true"} if replayed else None,
    )


@router.get("/workflows/<workflow_id>/executions", tags=["executions"])
def list_executions(
    workflow_id: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    next_token: Annotated[str | None, Query()] = None,
    status: Annotated[StatusFilter | None, Query()] = None,
    created_after: Annotated[str | None, Query()] = None,
    created_before: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    items, token = executions.list_executions(
        _tenant(),
        workflow_id,
        limit=limit,
        next_token=next_token,
        status=status,
        created_after=created_after,
        created_before=created_before,
    )
    return page(items, token)


@router.get("/workflows/<workflow_id>/executions/<execution_id>", tags=["executions"])
def get_execution(workflow_id: str, execution_id: str) -> dict[str, Any]:
    return executions.get_execution(_tenant(), workflow_id, execution_id).model_dump(mode="json")


@router.delete(
    "/workflows/<workflow_id>/executions/<execution_id>",
    tags=["executions"],
    responses={
        200: {"description": "deleted", "content": {"application/json": {"schema": _DELETED}}},
        202: {
            "description": "a batch run: gone for every reader at once, its records and objects (which "
            "grow with its items) deleted in the background",
            "content": {"application/json": {"schema": _DELETED}},
        },
    },
)
def delete_execution(workflow_id: str, execution_id: str) -> Response[dict[str, Any]]:
    background = executions.delete_execution(_tenant(), workflow_id, execution_id)
    return Response(
        status_code=202 if background else 200,
        content_type=content_types.APPLICATION_JSON,
        body={"deleted": execution_id, "status": "deleting"} if background else {"deleted": execution_id},
    )


@router.post("/workflows/<workflow_id>/executions/<execution_id>/cancel", tags=["executions"])
def cancel_execution(workflow_id: str, execution_id: str) -> dict[str, Any]:
    return executions.cancel_execution(_tenant(), workflow_id, execution_id).model_dump(mode="json")


@router.post("/workflows/<workflow_id>/executions/<execution_id>/rerun", tags=["executions"], status_code=201)
def rerun_execution(workflow_id: str, execution_id: str) -> tuple[dict[str, Any], int]:
    return executions.rerun_execution(_tenant(), workflow_id, execution_id).model_dump(mode="json"), 201


@router.get(
    "/workflows/<workflow_id>/executions/<execution_id>/input",
    tags=["executions"],
    responses={
        200: {
            "description": "the original input file, byte for byte",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        303: _SEE_URL,
    },
)
# No return annotation on purpose: Powertools would validate the body as text, and a file is bytes.
def download_input(workflow_id: str, execution_id: str):
    return _download(executions.input_download(_tenant(), workflow_id, execution_id))


# ---- batch runs: results, one item, retry of the failed items (see docs/batch.md) ---------------------
ResultsFormat = Literal["json", "jsonl", "csv"]


@router.get(
    "/workflows/<workflow_id>/executions/<execution_id>/results",
    tags=["executions"],
    responses={
        200: {
            "description": "a page of results (format=json), or the whole set as one file (jsonl, csv)",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        202: {
            "description": "a large download of a finished run is being written to S3: ask again after "
            "Retry-After seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": _PREPARING}},
        },
        303: _SEE_URL,
    },
)
def get_results(
    workflow_id: str,
    execution_id: str,
    limit: Annotated[int, Query(ge=1, le=dataset_api.MAX_RESULTS_PAGE)] = 100,
    next_token: Annotated[str | None, Query()] = None,
    format: Annotated[ResultsFormat, Query()] = "json",
) -> Any:
    """One page of a batch run's item results (``format=json``), or all of them as one JSONL or CSV
    file (``format=jsonl|csv``): the body up to 5 MiB; larger (a finished run, on AWS) ``202`` while
    the file is written to S3, then ``303`` to a presigned URL; ``413`` where there is none (page)."""
    if format != "json":
        return _download(batch_results.download_results(_tenant(), workflow_id, execution_id, format))
    items, token = batch_results.get_results(_tenant(), workflow_id, execution_id, limit, next_token)
    return page(items, token)


@router.get("/workflows/<workflow_id>/executions/<execution_id>/items/<item_id>", tags=["executions"])
def get_item(workflow_id: str, execution_id: str, item_id: str) -> dict[str, Any]:
    """One item of a batch run: its result and the record of every node of it that ran."""
    return batch_results.get_item(_tenant(), workflow_id, execution_id, item_id)


@router.post(
    "/workflows/<workflow_id>/executions/<execution_id>/retry-failed", tags=["executions"], status_code=201
)
def retry_failed_items(
    workflow_id: str, execution_id: str, body: dataset_api.RetryFailed
) -> tuple[dict[str, Any], int]:
    execution = executions.retry_failed_items(
        _tenant(), workflow_id, execution_id, version_id=body.version_id, parallelism=body.parallelism
    )
    return execution.model_dump(mode="json"), 201
