"""EventBridge: a run's state machine execution ended. Make the record agree with it.

The runner records every normal ending itself; this catches the others (an abort, a crash, a task
that could not record) so no execution stays "running" forever. When this event is lost, the
sweeper (handlers/sweeper.py) settles the run the same way (services/reconcile.py). The rule in
template.yaml leaves out the child executions of a batch's distributed Map; one that arrives anyway
is ignored, as is an execution that is not a run (a background job of the jobs machine).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import reconcile

logger = Logger()
tracer = Tracer()


def run_of(detail: dict[str, Any]) -> dict[str, Any]:
    """The run an execution's input names: ``{"run": {...}}`` (the engine's machines) or the earlier
    ``{"ctx": {...}}``; empty when it names none."""
    try:
        payload = json.loads(detail.get("input") or "{}")
    except json.JSONDecodeError:
        return {}
    if not isinstance(payload, dict):
        return {}
    run = payload.get("run") or payload.get("ctx") or {}
    return run if isinstance(run, dict) else {}


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = event.get("detail", {})
    if "/" in str(detail.get("executionArn") or ""):
        # A distributed Map's child execution (one batch item): the run's own execution settles it.
        logger.debug("status change of a child execution", extra={"execution_arn": detail["executionArn"]})
        return {"reconciled": False}
    run = run_of(detail)
    if not run.get("tenant") or not run.get("execution_id"):
        logger.info("status change of an execution that is not a run", extra={"detail": detail})
        return {"reconciled": False}
    logger.set_correlation_id(run["execution_id"])
    reconcile.settle(
        run["tenant"], run["execution_id"], detail.get("status", ""), detail.get("error"), detail.get("cause")
    )
    return {"reconciled": True}
