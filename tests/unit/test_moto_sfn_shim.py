"""The moto shim's Step Functions patches beside the distributed Map (test_moto_dmap_shim.py): a
definition is parsed once per text, not once per execution, and the executions sharing the parsed
program keep their own state; an ended execution's output is set before its status."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from relayflow.local import moto_shim
from relayflow.local.shims import base, stepfunctions

ROLE = "arn:aws:iam::123456789012:role/sfn"
# A Choice on the input, a Pass that keeps it and a Map whose iterations each count: anything an
# execution left in a shared program would show in the next one's output.
DEFINITION = {
    "StartAt": "Route",
    "States": {
        "Route": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericGreaterThan": 1, "Next": "Each"}],
            "Default": "Small",
        },
        "Small": {"Type": "Pass", "Parameters": {"small.$": "$.n"}, "End": True},
        "Each": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemProcessor": {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}},
            "ResultSelector": {"count.$": "States.ArrayLength($)"},
            "End": True,
        },
    },
}


@pytest.fixture
def sfn(fake_aws_env: None) -> Iterator[Any]:
    moto_shim.install()
    try:
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            yield boto3.client("stepfunctions", region_name="us-east-1")
    finally:
        moto_shim.uninstall()


def _run(sfn: Any, arn: str, payload: dict[str, Any]) -> dict[str, Any]:
    execution = sfn.start_execution(
        stateMachineArn=arn, name=f"run-{time.time_ns()}", input=json.dumps(payload)
    )["executionArn"]
    deadline = time.monotonic() + 30
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not end"
        time.sleep(0.01)
    assert described["status"] == "SUCCEEDED", described
    return dict(json.loads(described["output"]))


def test_executions_of_one_definition_share_one_parse_and_keep_their_own_state(
    sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLParser import ASLParser

    parses = []
    real = ASLParser.state_machine

    def counted(self: Any) -> Any:
        parses.append(1)
        return real(self)

    monkeypatch.setattr(ASLParser, "state_machine", counted)
    definition = json.dumps({**DEFINITION, "Comment": f"parse cache {time.time_ns()}"})
    arn = sfn.create_state_machine(name="cached", definition=definition, roleArn=ROLE)["stateMachineArn"]
    outputs = [
        _run(sfn, arn, {"n": 3, "items": [1, 2, 3]}),
        _run(sfn, arn, {"n": 1}),
        _run(sfn, arn, {"n": 2, "items": [1, 2]}),
    ]
    assert outputs == [{"count": 3}, {"small": 1}, {"count": 2}]
    assert len(parses) == 1


def test_a_succeeded_executions_output_is_there_before_its_status_says_so() -> None:
    """moto sets SUCCEEDED, then the output; a reader between the two saw no output. The shim's
    termination hook sets the output first (checked at the moment the status is written)."""
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

    key = (stepfunctions._SFN_EXECUTION, "BaseExecutionWorkerCommunication.terminated")
    original = base._originals.get(key) or BaseExecutionWorkerCommunication.__dict__["terminated"]
    seen_at_status: list[Any] = []

    class Execution:
        output: Any = None
        stop_date: Any = None

        @property
        def exec_status(self) -> Any:
            return self._status

        @exec_status.setter
        def exec_status(self, value: Any) -> None:
            seen_at_status.append((value, self.output))
            self._status = value

    class States:
        def get_input(self) -> Any:
            return {"answer": 42}

    class Env:
        states = States()

        def program_state(self) -> Any:
            return ProgramEnded()

    execution = Execution()
    execution.exec_worker = type("Worker", (), {"env": Env()})()  # type: ignore[attr-defined]
    communication = BaseExecutionWorkerCommunication(execution)  # type: ignore[arg-type]
    stepfunctions._announce_termination(original)(communication)
    assert seen_at_status == [("SUCCEEDED", {"answer": 42})]
