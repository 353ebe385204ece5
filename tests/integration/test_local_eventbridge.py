"""The local stack's EventBridge emulator end to end: which events reach a function's rule, decided
by moto's pattern matcher, for the rules moto runs on a bus and for Step Functions' status changes
that the stack delivers itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import fixtures_handlers as fx
from relayflow.local.stack import LocalStack, StackError


@pytest.fixture(autouse=True)
def _fresh_recordings() -> None:
    fx.reset()


def _bus_template(tmp_path: Path, pattern: str) -> Path:
    template = tmp_path / "template.yaml"
    template.write_text(
        f"""
Transform: AWS::Serverless-2016-10-31
Resources:
  Bus:
    Type: AWS::Events::EventBus
    Properties:
      Name: !Sub "${{AWS::StackName}}-bus"
  Recorder:
    Type: AWS::Serverless::Function
    Properties:
      Handler: {fx.handler("record")}
      Runtime: python3.13
      CodeUri: .
      Events:
        Uploaded:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern: {pattern}
"""
    )
    return template


def test_a_functions_rule_on_a_bus_gets_the_events_its_pattern_matches(tmp_path: Path):
    # Given a function whose rule on the template's bus asks for a prefix, a field that exists and
    # anything but one status
    pattern = (
        "{source: [tests], detail: {key: [{prefix: inputs/}], size: [{exists: true}],"
        " status: [{anything-but: [draft]}]}}"
    )
    template = _bus_template(tmp_path, pattern)
    with LocalStack(template, watch_executions=False, create_api_key=False) as stack:
        events = stack.client("events")
        sent = {
            "match": {"key": "inputs/a.txt", "size": 1, "status": "live"},
            "other-prefix": {"key": "rejected/a.txt", "size": 1, "status": "live"},
            "no-size": {"key": "inputs/b.txt", "status": "live"},
            "draft": {"key": "inputs/c.txt", "size": 1, "status": "draft"},
            "no-status": {"key": "inputs/d.txt", "size": 1},
            "null-size": {"key": "inputs/e.txt", "size": None, "status": "live"},
        }
        # When each is put on the bus, and one from another source
        entries = [
            {
                "EventBusName": stack.resources["Bus"],
                "Source": "tests",
                "DetailType": "Uploaded",
                "Detail": json.dumps({"name": name, **detail}),
            }
            for name, detail in sent.items()
        ]
        entries.append({**entries[0], "Source": "elsewhere"})
        assert events.put_events(Entries=entries)["FailedEntryCount"] == 0
        assert stack.wait_idle(timeout=15)
        # Then the function got exactly the events the pattern matches, as EventBridge hands them on
        received = fx.recorded(stack.functions["Recorder"].function_name)
    assert sorted(event["detail"]["name"] for event in received) == ["match", "null-size"]
    assert {event["source"] for event in received} == {"tests"}


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{source: tests}", "Recorder.Uploaded: .*'source' must be an object or an array"),
        ("{detail: {key: [{startswith: inputs/}]}}", "Recorder.Uploaded: .*startswith"),
    ],
)
def test_a_rule_eventbridge_would_refuse_stops_the_start(tmp_path: Path, pattern: str, message: str):
    template = _bus_template(tmp_path, pattern)
    with pytest.raises(StackError, match=message):
        LocalStack(template, watch_executions=False, create_api_key=False).start()


def _ended(machine: str, execution: str, status: str) -> dict[str, Any]:
    """A DescribeExecution result of an execution that ended."""
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return {
        "executionArn": execution,
        "stateMachineArn": machine,
        "name": execution.rsplit(":", 1)[-1],
        "status": status,
        "startDate": started,
        "stopDate": started,
        "input": "{}",
    }


def test_status_changes_reach_the_reconciler_when_its_rule_matches(local_stack: LocalStack):
    # Given the reconciler (the template's rule on Step Functions' status changes) replaced by a
    # recorder
    local_stack.override_handler("ReconcilerFunction", fx.handler("record"))
    reconciler = local_stack.functions["ReconcilerFunction"].function_name
    batch = local_stack.state_machines["BatchMachine"]
    run = batch.replace(":stateMachine:", ":execution:") + ":run-1"
    child_machine = f"{batch}/items"
    child = child_machine.replace(":stateMachine:", ":execution:") + ":5c7b1f0e"
    other = batch.replace("relayflow-batch", "other-batch")
    # When the emulator is told of a run that ended, one still running, a distributed Map's child
    # and a run of another stack's machine
    for description in (
        _ended(batch, run, "FAILED"),
        _ended(batch, run.replace("run-1", "run-2"), "RUNNING"),
        _ended(child_machine, child, "FAILED"),
        _ended(batch, child, "FAILED"),
        _ended(other, other.replace(":stateMachine:", ":execution:") + ":x", "SUCCEEDED"),
    ):
        local_stack.eventbridge.deliver_status_change(description)
    # Then only the run that ended reached the rule (status list, machine list, anything-but
    # wildcard), as one real-shaped event
    assert [arn for _, event in local_stack.delivered_events for arn in event["resources"]] == [run]
    [event] = fx.recorded(reconciler)
    assert event["detail"]["executionArn"] == run
    assert event["detail-type"] == "Step Functions Execution Status Change"
