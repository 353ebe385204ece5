"""AWS Step Functions: content-addressed state machines and their executions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws


class StateMachines:
    def __init__(self, prefix: str, role_arn: str) -> None:
        self.prefix = prefix
        self.role_arn = role_arn

    @property
    def _sfn(self) -> Any:
        return aws.client("stepfunctions")

    def name_for(self, definition: dict[str, Any]) -> str:
        """The machine's name is a hash of its definition, so a changed graph can never reuse it."""
        digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:20]
        return f"{self.prefix}-{digest}"

    def ensure(self, definition: dict[str, Any]) -> str:
        """Create the state machine for this definition unless it exists; return its ARN."""
        name = self.name_for(definition)
        try:
            response = self._sfn.create_state_machine(
                name=name,
                definition=json.dumps(definition),
                roleArn=self.role_arn,
                type="STANDARD",
                tracingConfiguration={"enabled": True},
            )
            return response["stateMachineArn"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "StateMachineAlreadyExists":
                raise
            arn = self._arn_from_name(name)
            return arn

    def _arn_from_name(self, name: str) -> str:
        account_arn = self.role_arn.split(":")
        partition, account = account_arn[1], account_arn[4]
        region = self._sfn.meta.region_name
        return f"arn:{partition}:states:{region}:{account}:stateMachine:{name}"

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        """Start an execution named by our execution id: Step Functions refuses a second start."""
        try:
            response = self._sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
            )
            return response["executionArn"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
                return f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
            raise

    def stop(self, execution_arn: str, *, error: str, cause: str) -> None:
        try:
            self._sfn.stop_execution(executionArn=execution_arn, error=error, cause=cause)
        except ClientError as exc:
            # Already finished: nothing left to stop.
            if exc.response["Error"]["Code"] not in ("ExecutionDoesNotExist", "ValidationException"):
                raise
