"""AWS Step Functions: executions of the template's state machines, and their task tokens.

The state machines themselves are deployed by template.yaml (statemachine/); nothing here
creates one. Starting is named by the execution id, so a second start of the same run is refused
by Step Functions and answered with the first one's ARN.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws

#: What Step Functions answers for a token whose task already ended (released twice, or the run
#: was cancelled or timed out meanwhile): nothing is left to release.
_STALE_TOKEN_CODES = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


#: StartExecution's answers that mean "not now" (throttled, unavailable): the start may be tried again.
_NOT_NOW_CODES = frozenset(
    {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailable", "InternalServerError"}
)


class StartNotAccepted(Exception):
    """Step Functions could not take the start now (throttled, unavailable): try again later."""


class StateMachines:
    @property
    def _sfn(self) -> Any:
        return aws.client("stepfunctions")

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        """Start an execution named by our execution id: Step Functions refuses a second start."""
        try:
            response = self._sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
            )
            return str(response["executionArn"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
                return f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
            if exc.response["Error"]["Code"] in _NOT_NOW_CODES:
                raise StartNotAccepted(str(exc)) from exc
            raise

    def stop(self, execution_arn: str, *, error: str, cause: str) -> None:
        try:
            self._sfn.stop_execution(executionArn=execution_arn, error=error, cause=cause)
        except ClientError as exc:
            # Already finished: nothing left to stop.
            if exc.response["Error"]["Code"] not in ("ExecutionDoesNotExist", "ValidationException"):
                raise

    def release(self, token: str, output: dict[str, Any] | None = None) -> None:
        """Let a task parked on ``.waitForTaskToken`` go on (a node whose parents are done), with
        ``output`` as the task's result (the run machine's gate: the parents' outputs it carries)."""
        try:
            self._sfn.send_task_success(taskToken=token, output=json.dumps(output or {}, default=str))
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in _STALE_TOKEN_CODES:
                raise

    def fail_task(self, token: str, *, error: str, cause: str) -> None:
        try:
            self._sfn.send_task_failure(taskToken=token, error=error, cause=cause[:32768])
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in _STALE_TOKEN_CODES:
                raise
