"""What the run machine's node gates (AwaitParents) did, read from an execution's history: each gate
write's node and how it ended."""

from __future__ import annotations

import json
from typing import Any

#: How a gate's DynamoDB write ended
PARKED_AND_RELEASED = "released"  # the token was stored, a parent's SendTaskSuccess ended the wait
RAN_AT_ONCE = "ran at once"  # the condition failed: every parent done already (or a root)
TIMED_OUT = "timed out"  # parked past its gate_timeout (States.Timeout)
FAILED = "failed"  # any other error (SendTaskFailure, a DynamoDB error)
WAITING = "waiting"  # still parked


def gate_outcomes(sfn: Any, execution_arn: str) -> list[tuple[str, str]]:
    """(node id, outcome) of each gate write of the execution, in the order they were scheduled."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = sfn.get_execution_history(
            executionArn=execution_arn, maxResults=1000, **({"nextToken": token} if token else {})
        )
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            break
    # a task's own events follow each other (Scheduled, Started, Submitted, then its end)
    after = {
        e["previousEventId"]: e
        for e in events
        if e.get("previousEventId") and e["type"].startswith("Task") and not e["type"].startswith("TaskState")
    }
    outcomes = []
    for event in events:
        details = event.get("taskScheduledEventDetails")
        if event["type"] != "TaskScheduled" or not details or details["resourceType"] != "aws-sdk:dynamodb":
            continue
        node_id = json.loads(details["parameters"])["Key"]["sk"]["S"].removeprefix("N#")
        outcome, step = WAITING, after.get(event["id"])
        while step is not None:
            if step["type"] == "TaskSucceeded":
                outcome = PARKED_AND_RELEASED
            elif step["type"] == "TaskTimedOut":
                outcome = TIMED_OUT
            elif step["type"] == "TaskFailed":
                error = step["taskFailedEventDetails"]["error"]
                outcome = RAN_AT_ONCE if error == "DynamoDb.ConditionalCheckFailedException" else FAILED
            if step["type"] not in ("TaskStarted", "TaskSubmitted"):
                break
            step = after.get(step["id"])
        outcomes.append((node_id, outcome))
    return outcomes
