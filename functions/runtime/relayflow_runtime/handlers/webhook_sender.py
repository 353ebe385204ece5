"""EventBridge (relayflow bus, terminal status changes): POST the run's webhook, with retries.

Runs apart from the run itself, so a slow or failing receiver never holds it up (logic/webhooks.py).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import webhooks

logger = Logger()
tracer = Tracer()


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = event.get("detail") or {}
    tenant, execution_id, status = detail.get("tenant"), detail.get("execution_id"), detail.get("status")
    if not (tenant and execution_id and status):
        logger.warning("not a relayflow status change", extra={"detail_type": event.get("detail-type")})
        return {"delivered": False}
    logger.set_correlation_id(execution_id)
    return webhooks.deliver_once(tenant, execution_id, status, lambda_context=context)
