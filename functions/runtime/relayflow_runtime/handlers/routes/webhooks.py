"""Webhooks: the workflow's signing secret, the record of every delivery attempt, and re-sending."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from relayflow_runtime.handlers.context import current_tenant, page
from relayflow_runtime.services import webhooks

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post("/workflows/<workflow_id>/webhook-secret", tags=["webhooks"], status_code=201)
def rotate_webhook_secret(workflow_id: str) -> tuple[dict[str, Any], int]:
    """A new secret to verify this workflow's webhooks with; shown only in this answer."""
    return webhooks.rotate_secret(_tenant(), workflow_id).model_dump(mode="json"), 201


@router.get("/workflows/<workflow_id>/deliveries", tags=["webhooks"])
def list_workflow_deliveries(
    workflow_id: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    next_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    return page(*webhooks.list_deliveries(_tenant(), workflow_id, limit=limit, next_token=next_token))


@router.get("/workflows/<workflow_id>/executions/<execution_id>/deliveries", tags=["webhooks"])
def list_execution_deliveries(
    workflow_id: str,
    execution_id: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    next_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    items, token = webhooks.list_deliveries(
        _tenant(), workflow_id, execution_id, limit=limit, next_token=next_token
    )
    return page(items, token)


@router.post(
    "/workflows/<workflow_id>/executions/<execution_id>/deliveries", tags=["webhooks"], status_code=202
)
def resend_execution_webhook(workflow_id: str, execution_id: str) -> tuple[dict[str, Any], int]:
    """Send a finished execution's webhook again (a new round of attempts, listed in its deliveries)."""
    return webhooks.resend(_tenant(), workflow_id, execution_id).model_dump(mode="json"), 202
