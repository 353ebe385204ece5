"""Lambda handler for every Task state of the generated state machines."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import runner

logger = Logger()
tracer = Tracer()


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    state = event.get("state")
    ctx = (state[0] if isinstance(state, list) else state or {}).get("ctx", {})
    logger.set_correlation_id(ctx.get("execution_id"))
    logger.append_keys(action=event.get("action"), node_id=(event.get("node") or {}).get("id"))
    return runner.handle(event)
