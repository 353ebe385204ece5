"""What Step Functions says about one execution (the sweeper's DescribeExecution)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws


def describe_execution(execution_arn: str) -> dict[str, Any] | None:
    """The execution's description (status, stopDate, error, cause), or None when no execution has
    that ARN (it never started, or Step Functions has forgotten it: closed executions are kept 90
    days)."""
    try:
        sfn = aws.client("stepfunctions")
        description: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("ExecutionDoesNotExist", "StateMachineDoesNotExist"):
            return None
        raise
    return description
