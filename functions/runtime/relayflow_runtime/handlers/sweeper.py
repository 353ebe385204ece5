"""EventBridge schedule: settle the runs whose state machine ended (or never started) unannounced,
publish status events the bus refused, finish cut-short follow-ups (services/sweeper.py)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import sweeper

logger = Logger()
tracer = Tracer()


@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    grace = float(os.environ.get("SWEEPER_GRACE_SECONDS", sweeper.DEFAULT_GRACE_SECONDS))
    report = sweeper.sweep(grace_seconds=grace)
    if report.errors:
        # Counted in the function's Errors metric and sent to its on-failure destination; the runs
        # that could be swept were swept.
        raise SweepIncomplete(f"{len(report.errors)} run(s) could not be swept: {report.errors[:5]}")
    return report.as_dict()


class SweepIncomplete(Exception):
    """Some runs could not be swept this time (each is logged); the next schedule tries again."""
