"""Each attempt of a node has its time: a failed attempt's start and failure (``attempt_times``,
beside its error in ``attempt_errors``), the latest attempt's start (``attempt_started_at``)."""

from __future__ import annotations

from datetime import datetime

import pytest
from tests.support.workflows import build, by_name, wait

from relayflow import Client

pytestmark = pytest.mark.shared_stack


def at(value: str | None) -> datetime:
    assert value, value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_retried_nodes_attempts_each_have_their_start_and_failure_in_order(client: Client) -> None:
    # Given a node that fails twice, then succeeds on its third attempt
    built = build(
        client,
        [("Echo", {"model": "echo"}, {}), ("Flaky", {"model": "flaky", "failures": 2}, {})],
        version_config={"max_retries": 3, "retry_delay_seconds": 1},
    )

    # When it runs
    run = client.execute_workflow(workflow_id=built.workflow_id, single_input="hi")
    done = wait(client, built, run)

    # Then its two failed attempts are timed in order, each failing after it started, before the
    # next one started; the latest attempt's start is after them and before the node completed
    assert done.status == "completed"
    flaky = by_name(done)["Flaky"]
    assert flaky["attempts"] == 3
    times = flaky["attempt_times"]
    assert [t["attempt"] for t in times] == [1, 2]
    assert len(flaky["attempt_errors"]) == 2
    moments = [at(flaky["started_at"])]
    for t in times:
        moments += [at(t["started_at"]), at(t["failed_at"])]
    moments += [at(flaky["attempt_started_at"]), at(flaky["completed_at"])]
    assert moments == sorted(moments), moments
    assert moments[0] == moments[1]  # the node started with its first attempt
    # And a node that succeeded at once has no failed attempt to time
    echo = by_name(done)["Echo"]
    assert echo["attempt_times"] == [] and echo["attempt_started_at"] == echo["started_at"]
