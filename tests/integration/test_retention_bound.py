"""Nothing a run wrote expires while it runs (issue 23 #6, services/retention.py): a run's records
and objects expire RetentionDays after its start (DynamoDB TTL, S3 lifecycle by creation), so every
run ends within that time — a run without a timeout races what is left of it (not Step Functions'
year), and a timeout longer than it is refused with a 400."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.batches import TENANT, dataset, pending_run, record, workflow

from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.services import admission, batch, deps, retention, run_machine
from relayflow_runtime.settings import reset_caches

DAY = 86400


@pytest.fixture
def seven_days(monkeypatch: pytest.MonkeyPatch, local_stack: Any) -> Iterator[None]:
    """A deployment with RetentionDays 7 (the template's least)."""
    monkeypatch.setenv("RETENTION_DAYS", "7")
    reset_caches()
    yield
    monkeypatch.undo()
    reset_caches()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_timeout_longer_than_the_retention_is_refused(api: Any, seven_days: None) -> None:
    workflow_id, version_id = workflow(api, [("shout", {"model": "uppercase"}, {})])
    path = f"/workflows/{workflow_id}/executions"

    # When a run asks for 7 days, the whole retention (its data would expire before it ends)
    status, body = api("POST", path, {"version_id": version_id, "single_input": "x", "timeout": 7 * DAY})

    # Then it is refused, saying what to do, and nothing was started
    assert status == 400, body
    assert body["code"] == "timeout_exceeds_retention"
    assert "RetentionDays 7" in body["message"] and "shorter timeout" in body["message"]
    assert api("GET", path)[1]["items"] == []
    # And a timeout within it runs
    status, body = api("POST", path, {"version_id": version_id, "single_input": "x", "timeout": 6 * DAY})
    assert status == 201, body


def test_a_run_without_a_timeout_races_what_is_left_of_its_retention(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a single run without a timeout of its own (RetentionDays 30, the default), written but
    # not started yet (it waits for admission; its machine is what this test plays)
    class Held:
        def send(self, body: dict[str, Any], *, delay_seconds: int = 0) -> str:
            return "held"

    monkeypatch.setattr(admission, "take_slot", lambda *args, **kwargs: False)
    monkeypatch.setattr(admission, "queue", Held)
    workflow_id, version_id = workflow(api, [("shout", {"model": "uppercase"}, {})])
    status, body = api(
        "POST", f"/workflows/{workflow_id}/executions", {"version_id": version_id, "single_input": "x"}
    )
    assert status == 201, body
    run = RunRef(tenant=TENANT, workflow_id=workflow_id, execution_id=body["id"])

    # When its machine asks for its clock
    clock = run_machine.start(run).run_timeout

    # Then it is the retention less an hour from the run's creation, not Step Functions' year
    assert 30 * DAY - 3600 - 120 <= clock <= 30 * DAY - 3600


def test_a_batch_that_waited_long_races_only_what_is_left_and_says_why_it_ended(api: Any) -> None:
    # Given a batch created almost RetentionDays ago (it waited for the budget most of that time)
    dataset_id, version_id = dataset(api, [{"id": "i0", "text": "t"}])
    workflow_id, wf_version = workflow(api, [("upper", {"model": "uppercase"}, {})])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id)
    long_ago = datetime.now(UTC) - timedelta(seconds=retention.max_run_seconds() - 60)
    deps.stores().executions.update_execution(TENANT, run.execution_id, {"created_at": _iso(long_ago)})

    # When its budget is reserved and its Race starts
    event = batch.reserve_budget(batch.prepare_batch(run))

    # Then its clock is the minute left, not the run's whole time
    assert 1 <= event["run_timeout"] <= 60
    # And when that runs out, the run says that it reached the longest a run may take, and why
    batch.fail(run, "timeout")
    ended = record(run)
    assert ended["status"] == "failed"
    assert "RetentionDays 30" in ended["error"] and "retry_failed_items" in ended["error"]
