"""Admission control for single runs (issue 23 #3, services/admission.py): many starts at once run,
waiting their turn (pending, with the reason), at most SingleRunStartsPerSecond a second, and none
fails or is started twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.support.batches import workflow
from tests.support.items import execution_item

from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters.rate_windows import ADMISSION_PARTITION
from relayflow_runtime.services import deps

RATE = 1
RUNS = 10


@pytest.fixture
def local_stack() -> Iterator[LocalStack]:
    with LocalStack(parameters={"SingleRunStartsPerSecond": RATE}) as stack:
        yield stack


def statuses(api: Any, workflow_id: str) -> dict[str, str]:
    found: dict[str, str] = {}
    token = None
    while True:
        query = {"limit": "100", **({"next_token": token} if token else {})}
        status, page = api("GET", f"/workflows/{workflow_id}/executions", query=query)
        assert status == 200, page
        found.update({e["id"]: e["status"] for e in page["items"]})
        token = page.get("next_token")
        if not token:
            return found


def test_many_starts_at_once_wait_their_turn_and_all_run(api: Any, local_stack: LocalStack) -> None:
    # Given a one-node workflow, and a stack that starts at most RATE single runs a second
    workflow_id, version_id = workflow(api, [("shout", {"model": "uppercase"}, {})])

    # When RUNS runs are asked for at once
    def start(n: int) -> dict[str, Any]:
        status, body = api(
            "POST",
            f"/workflows/{workflow_id}/executions",
            {"version_id": version_id, "single_input": f"text {n}"},
        )
        assert status == 201, body
        return dict(body)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(start, range(RUNS)))

    # Then every start is accepted, and those over the rate wait pending, saying why
    waiting = [a for a in answers if a.get("waiting_reason")]
    assert waiting and all(a["status"] == "pending" for a in waiting)
    assert "SingleRunStartsPerSecond" in waiting[0]["waiting_reason"]
    status, seen = api("GET", f"/workflows/{workflow_id}/executions/{waiting[-1]['id']}")
    assert status == 200
    assert seen["status"] != "pending" or "waiting for admission" in seen["waiting_reason"]

    # And every run ends completed, none failed, in a bounded time
    deadline = time.monotonic() + 120
    while True:
        found = statuses(api, workflow_id)
        if len(found) == RUNS and all(s in ("completed", "failed", "cancelled") for s in found.values()):
            break
        assert time.monotonic() < deadline, sorted(found.values())[:5]
        time.sleep(0.5)
    assert set(found.values()) == {"completed"}
    # And no second ever started more than the rate, each run once
    windows = local_stack.client("dynamodb").query(
        TableName=local_stack.outputs["TableName"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": ADMISSION_PARTITION}},
    )["Items"]
    per_second = [int(w["requests"]["N"]) for w in windows]
    assert max(per_second) <= RATE and sum(per_second) == RUNS
    # And a run that waited reads as started once it did: no stale reason
    done = execution_item("default", waiting[0]["id"])
    assert done["status"] == "completed" and done["sfn_execution_arn"]
    status, shown = api("GET", f"/workflows/{workflow_id}/executions/{waiting[0]['id']}")
    assert shown["waiting_reason"] is None


def test_a_run_whose_admission_message_was_lost_is_queued_again_not_failed(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    from relayflow_runtime.services import admission, sweeper

    # Given a run that had to wait for admission, and whose queue message was lost
    workflow_id, version_id = workflow(api, [("shout", {"model": "uppercase"}, {})])

    class LostQueue:
        def send(self, body: dict[str, Any], *, delay_seconds: int = 0) -> str:
            return "lost"

    monkeypatch.setattr(admission, "take_slot", lambda *args, **kwargs: False)
    monkeypatch.setattr(admission, "queue", LostQueue)
    status, body = api(
        "POST", f"/workflows/{workflow_id}/executions", {"version_id": version_id, "single_input": "x"}
    )
    assert status == 201 and body["waiting_reason"], body
    monkeypatch.undo()
    long_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="milliseconds")
    deps.stores().executions.update_execution(
        "default", body["id"], {"admission_queued_at": long_ago.replace("+00:00", "Z")}
    )

    # When the sweeper finds it pending without an execution
    report = sweeper.sweep(grace_seconds=0)

    # Then it is not failed as "never started": its start is queued again, and it runs
    assert report.settled == []
    deadline = time.monotonic() + 30
    while (record := execution_item("default", body["id"]))["status"] != "completed":
        assert record["status"] in ("pending", "running"), record
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_uploads_at_once_wait_their_turn_and_all_run(
    api: Any, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relayflow_runtime.services import metrics
    from relayflow_runtime.settings import reset_caches

    # Given a workflow, and a deployment that starts one single run a second
    monkeypatch.setenv("SINGLE_RUN_STARTS_PER_SECOND", "1")
    reset_caches()
    workflow_id, version_id = workflow(api, [("shout", {"model": "uppercase"}, {})])
    s3 = local_stack.client("s3")
    bucket = local_stack.outputs["BucketName"]

    # When 8 files are uploaded under inputs/<workflow>/versions/<version>/ at once
    with metrics.recording() as counted:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(
                    lambda n: s3.put_object(
                        Bucket=bucket, Key=f"inputs/{workflow_id}/versions/{version_id}/f{n}.txt", Body=b"hi"
                    ),
                    range(8),
                )
            )
        # Then every upload becomes a run that ends completed, some after waiting their turn
        deadline = time.monotonic() + 90
        while True:
            found = statuses(api, workflow_id)
            if len(found) == 8 and set(found.values()) <= {"completed", "failed", "cancelled"}:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
    assert set(found.values()) == {"completed"}
    assert metrics.total(counted, metrics.RUNS_WAITING_FOR_ADMISSION) >= 1
    monkeypatch.undo()
    reset_caches()
