"""SQS (the webhook queue): one attempt of a run's (or a rejected upload's) webhook per message
(services/webhooks.py).

The queue gets the relayflow bus's terminal status changes (an EventBridge rule), the retries this
function queues with a backoff delay, and re-sends asked for through the API. A message whose
attempt raised is reported as a batch item failure: SQS hands it out again after its visibility
timeout, and after ``maxReceiveCount`` receives it goes to the dead-letter queue (alarmed). A
refused webhook is not a failure here: it is recorded and retried through the queue.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import webhooks

logger = Logger()
tracer = Tracer()


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    for record in event.get("Records") or []:
        message_id = str(record.get("messageId", ""))
        try:
            body = json.loads(record.get("body") or "{}")
            task = webhooks.task_from_message(body) if isinstance(body, dict) else None
        except (ValueError, TypeError):
            task = None
        if task is None:
            logger.warning("not a webhook delivery: dropped", extra={"message_id": message_id})
            continue
        logger.set_correlation_id(task.correlation_id)
        try:
            webhooks.deliver_once(task, lambda_context=context)
        except Exception:
            logger.exception("webhook attempt failed to run", extra={"message_id": message_id})
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
