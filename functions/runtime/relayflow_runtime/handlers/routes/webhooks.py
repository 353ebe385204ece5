"""Webhooks: the workflow's signing secret, the record of every delivery attempt, and re-sending."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from relayflow_runtime.handlers.context import Limit, NextToken, current_tenant
from relayflow_runtime.schemas.entities import WebhookResend, WebhookSecret
from relayflow_runtime.schemas.responses import DeliveryAttemptPage
from relayflow_runtime.services import webhooks

router = Router()


def _tenant() -> str:
    return current_tenant(router.current_event.raw_event)


@router.post(
    "/workflows/<workflow_id>/webhook-secret",
    operation_id="rotateWebhookSecret",
    summary="Rotate the workflow's webhook secret",
    description="A new secret to verify this workflow's webhooks with (the old one stops at once); "
    "shown only in this answer.",
    tags=["webhooks"],
    status_code=201,
    response_description="The new secret",
)
def rotate_webhook_secret(workflow_id: str) -> WebhookSecret:
    return webhooks.rotate_secret(_tenant(), workflow_id)


@router.get(
    "/workflows/<workflow_id>/deliveries",
    operation_id="getWebhookDeliveries",
    summary="List a workflow's webhook deliveries",
    description="Every attempt to deliver a terminal status of one of its runs, newest first.",
    tags=["webhooks"],
    response_description="A page of delivery attempts",
)
def list_workflow_deliveries(
    workflow_id: str, limit: Limit = 50, next_token: NextToken = None
) -> DeliveryAttemptPage:
    items, token = webhooks.list_deliveries(_tenant(), workflow_id, limit=limit, next_token=next_token)
    return DeliveryAttemptPage(items=items, next_token=token)


@router.get(
    "/workflows/<workflow_id>/executions/<execution_id>/deliveries",
    operation_id="getExecutionWebhookDeliveries",
    summary="List an execution's webhook deliveries",
    description="Every attempt to deliver this run's terminal status, newest first.",
    tags=["webhooks"],
    response_description="A page of delivery attempts",
)
def list_execution_deliveries(
    workflow_id: str, execution_id: str, limit: Limit = 50, next_token: NextToken = None
) -> DeliveryAttemptPage:
    items, token = webhooks.list_deliveries(
        _tenant(), workflow_id, execution_id, limit=limit, next_token=next_token
    )
    return DeliveryAttemptPage(items=items, next_token=token)


@router.post(
    "/workflows/<workflow_id>/executions/<execution_id>/deliveries",
    operation_id="resendWebhook",
    summary="Send a finished execution's webhook again",
    description="A new round of attempts (the same delivery id and payload shape), e.g. after the "
    "receiver was fixed; its attempts appear in the execution's deliveries. 409 while the run is "
    "going, or when neither the execution nor its workflow has a callback_url.",
    tags=["webhooks"],
    status_code=202,
    response_description="The round, queued",
)
def resend_execution_webhook(workflow_id: str, execution_id: str) -> WebhookResend:
    return webhooks.resend(_tenant(), workflow_id, execution_id)
