"""Executions: start, watch, cancel, re-run, list, download the input."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from relayflow_runtime.handlers.context import current_tenant, page
from relayflow_runtime.schemas import api, dataset_api
from relayflow_runtime.services import executions

router = Router()

StatusFilter = Literal["pending", "running", "completed", "failed", "cancelled"]


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


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


@router.delete("/workflows/<workflow_id>/executions/<execution_id>", tags=["executions"])
def delete_execution(workflow_id: str, execution_id: str) -> dict[str, Any]:
    executions.delete_execution(_tenant(), workflow_id, execution_id)
    return {"deleted": execution_id}


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
        }
    },
)
# No return annotation on purpose: Powertools would validate the body as text, and a file is bytes.
def download_input(workflow_id: str, execution_id: str):
    input_file, data = executions.read_input_file(_tenant(), workflow_id, execution_id)
    safe = input_file.filename.replace('"', "")
    return Response(
        status_code=200,
        content_type=input_file.content_type,
        body=data,
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


# ---- batch runs: results, one item, retry of the failed items (see docs/batch.md) ---------------------
ResultsFormat = Literal["json", "jsonl", "csv"]


@router.get("/workflows/<workflow_id>/executions/<execution_id>/results", tags=["executions"])
def get_results(
    workflow_id: str,
    execution_id: str,
    limit: Annotated[int, Query(ge=1, le=dataset_api.MAX_RESULTS_PAGE)] = 100,
    next_token: Annotated[str | None, Query()] = None,
    format: Annotated[ResultsFormat, Query()] = "json",
) -> Any:
    """One page of a batch run's item results (``format=json``), or all of them as one JSONL or CSV
    file (``format=jsonl|csv``, up to 5 MiB; larger: page, or the client's download method)."""
    from relayflow_runtime.services import batch

    if format != "json":
        data, media = batch.download_results(_tenant(), workflow_id, execution_id, format)
        return Response(
            status_code=200,
            content_type=media,
            body=data,
            headers={"Content-Disposition": f'attachment; filename="results-{execution_id}.{format}"'},
        )
    items, token = batch.get_results(_tenant(), workflow_id, execution_id, limit, next_token)
    return page(items, token)


@router.get("/workflows/<workflow_id>/executions/<execution_id>/items/<item_id>", tags=["executions"])
def get_item(workflow_id: str, execution_id: str, item_id: str) -> dict[str, Any]:
    """One item of a batch run: its result and the record of every node of its chain."""
    from relayflow_runtime.services import batch

    return batch.get_item(_tenant(), workflow_id, execution_id, item_id)


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
