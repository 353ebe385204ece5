"""EventBridge: a generated state machine's execution ended. Make the record agree with it.

The handlers record every normal ending themselves; this catches the others (the run's own
timeout, an abort, a crash) so no execution stays "running" forever. The rule in template.yaml
leaves out the child executions of a batch's distributed Map; one that arrives anyway is ignored.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import executions

logger = Logger()
tracer = Tracer()


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = event.get("detail", {})
    if "/" in str(detail.get("executionArn") or ""):
        # A distributed Map's child execution (one batch item): the run's own execution settles it.
        logger.debug("status change of a child execution", extra={"execution_arn": detail["executionArn"]})
        return {"reconciled": False}
    try:
        ctx = json.loads(detail.get("input") or "{}").get("ctx", {})
    except json.JSONDecodeError:
        ctx = {}
    if not ctx.get("tenant") or not ctx.get("execution_id"):
        logger.warning("status change of an execution that is not relayflow's", extra={"detail": detail})
        return {"reconciled": False}
    logger.set_correlation_id(ctx["execution_id"])
    executions.finish_unrecorded(
        ctx["tenant"], ctx["execution_id"], detail.get("status", ""), detail.get("error"), detail.get("cause")
    )
    return {"reconciled": True}
