"""Executions: start, watch, cancel, re-run, list, download the input."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from relayflow.handlers.context import current_tenant, page
from relayflow.logic import executions
from relayflow.models import api

router = Router()

StatusFilter = Literal["pending", "running", "completed", "failed", "cancelled"]


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post("/workflows/<workflow_id>/executions", tags=["executions"])
def execute_workflow(workflow_id: str, body: api.Execute) -> tuple[dict[str, Any], int]:
    execution = executions.start_execution(_tenant(), workflow_id, body)
    return execution.model_dump(mode="json"), 201


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


@router.post("/workflows/<workflow_id>/executions/<execution_id>/rerun", tags=["executions"])
def rerun_execution(workflow_id: str, execution_id: str) -> tuple[dict[str, Any], int]:
    return executions.rerun_execution(_tenant(), workflow_id, execution_id).model_dump(mode="json"), 201


@router.get("/workflows/<workflow_id>/executions/<execution_id>/input", tags=["executions"])
def download_input(workflow_id: str, execution_id: str) -> Response:
    input_file, data = executions.read_input_file(_tenant(), workflow_id, execution_id)
    safe = input_file.filename.replace('"', "")
    return Response(
        status_code=200,
        content_type=input_file.content_type,
        body=data,
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )
