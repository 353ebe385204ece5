"""SQS (the admission queue): start the single runs that wait for their turn (services/admission.py).

Each message names one pending run. The function starts them at the deployment's rate, waiting for
the next second's window while the current one is full; what it cannot start before its own
timeout (less a margin) is reported as a batch item failure, which SQS hands out again after the
queue's visibility timeout. A message it fails on 10 times goes to the failed-events queue.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import admission

logger = Logger()
tracer = Tracer()

#: What the function keeps of its time for the last start and its answer.
MARGIN_SECONDS = 10.0


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000 - MARGIN_SECONDS
    failures: list[dict[str, str]] = []
    for record in event.get("Records") or []:
        message_id = str(record.get("messageId", ""))
        try:
            body = json.loads(record.get("body") or "{}")
            tenant, execution_id = str(body["tenant"]), str(body["execution_id"])
        except (ValueError, TypeError, KeyError):
            logger.warning("not an admission message: dropped", extra={"message_id": message_id})
            continue
        logger.set_correlation_id(execution_id)
        try:
            done = admission.admit_queued(tenant, execution_id, deadline)
        except Exception:
            logger.exception("could not start a queued run", extra={"message_id": message_id})
            done = False
        if not done:
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
