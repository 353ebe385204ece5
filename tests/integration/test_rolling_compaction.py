"""Segments compacted while a batch runs (services/outcomes.py ``_tally``, ``compact_segment_job``;
docs/batch.md Results): a child whose record makes a segment's tally whole starts its compaction,
and pages of the finished part of a running run read segments instead of each child's object. The
tally is a hint: one counted twice starts a job that finds the segment not whole and writes
nothing, one lost leaves the segment to the run's end, and neither ever fails a child. Segments of
SEGMENT items (patched small) keep each run small."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.batches import (
    TENANT,
    aws_calls,
    compaction_ended,
    dataset,
    pending_run,
    segments_compacted,
    stored,
    workflow,
)

from relayflow_runtime.adapters.batch_store import BatchStore
from relayflow_runtime.domain import outcomes as layout
from relayflow_runtime.domain.batch import ItemEntry
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.errors import NotFound
from relayflow_runtime.services import batch, batch_items, deps, item_lists, outcomes, run_records

pytestmark = pytest.mark.shared_stack

SEGMENT = 20
ITEMS = 50  # segments 0 and 1 of 20, segment 2 of 10


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "SEGMENT_ITEMS", SEGMENT)
    monkeypatch.setattr(outcomes, "SEGMENT_ITEMS", SEGMENT)


def running(api: Any) -> tuple[RunRef, list[ItemEntry]]:
    dataset_id, version_id = dataset(api, [{"id": f"r{i:02d}", "text": f"t{i}"} for i in range(ITEMS)])
    workflow_id, wf_version = workflow(api, [("echo", {"model": "echo"}, {"input_template": "{{input}}"})])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
    batch.reserve_budget(batch.prepare_batch(run))
    batch_items.status.forget()
    prefix = run_records.execution_prefix(run.tenant, run.execution_id)
    return run, [entry for _, entry in item_lists.entries(item_lists.list_key(prefix))]


def children(run: RunRef, listed: list[ItemEntry], *starts: int) -> None:
    for start in starts:
        child = listed[start : start + 10]
        assert batch_items.run_items(run, child) == {"done": len(child)}


def segment_written(run: RunRef, block: int) -> bool:
    key = outcomes.segment_key(run_records.execution_prefix(run.tenant, run.execution_id), block)
    try:
        deps.blobs().get_range(key, 0, 0)
    except NotFound:
        return False
    return True


def test_a_segment_is_compacted_once_its_last_child_records_and_the_run_end_compacts_only_the_rest(
    api: Any,
) -> None:
    # Given a running batch of three segments whose children record out of order
    run, listed = running(api)
    children(run, listed, 10, 30, 40)
    # Then no segment is whole yet, and none is compacted (segment 2, of 10, is whole: its child)
    segments_compacted(run, {2})
    assert not segment_written(run, 0) and not segment_written(run, 1)
    # When the child that completes segment 0 records
    children(run, listed, 0)
    # Then segment 0 is compacted while the run runs, and listed for pages
    segments_compacted(run, {0, 2})
    assert stored(run).status == "running" and not segment_written(run, 1)
    # And once the last child records and the run ends, its compaction writes only segment 1
    children(run, listed, 20)
    segments_compacted(run, {0, 1, 2})
    batch.complete(run)
    assert compaction_ended(run) == "SUCCEEDED"
    with aws_calls() as calls:
        answer = outcomes.compact_job({"tenant": TENANT, "execution_id": run.execution_id})
    assert answer == {"compacted": run.execution_id, "segments": 3}
    assert "s3.PutObject" not in calls and "s3.CreateMultipartUpload" not in calls, calls


def test_a_tally_counted_twice_starts_a_job_that_writes_nothing_until_the_segment_is_whole(api: Any) -> None:
    # Given a running batch whose segment 0 has one child of two recorded, and a tally that was
    # counted twice (an ADD the SDK sent again after a lost answer)
    run, listed = running(api)
    children(run, listed, 0)
    deps.stores().batches.tally_segments(TENANT, run.execution_id, {0: 10})
    # When the job that tally would start runs
    job = {"kind": "compact_segment", "tenant": TENANT, "execution_id": run.execution_id, "block": 0}
    # Then it finds the segment not whole and writes nothing
    assert outcomes.compact_segment_job(job) == {"compacted": None, "missing": 10}
    assert not segment_written(run, 0) and not stored(run).compacted_segments
    # And once the segment's last child records, its tally (30) starts the job that compacts it
    children(run, listed, 10)
    segments_compacted(run, {0})
    # And a repeat of a job that compacted it writes nothing
    assert outcomes.compact_segment_job(job) == {"compacted": None}


def test_a_lost_tally_never_fails_the_child_and_the_run_end_compacts_its_segment(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running batch whose tallies cannot be written (the call fails after its retries)
    run, listed = running(api)

    def throttled(self: BatchStore, *args: Any, **kwargs: Any) -> dict[int, int]:
        raise RuntimeError("ProvisionedThroughputExceededException")

    monkeypatch.setattr(BatchStore, "tally_segments", throttled)
    # When every child records
    children(run, listed, 0, 10, 20, 30, 40)
    # Then every item is recorded and counted, and no segment was compacted while the run ran
    assert stored(run).compacted_segments is None
    assert deps.stores().batches.counters(TENANT, run.execution_id)["processed_items"] == ITEMS
    # And the run's end compacts every segment
    batch.complete(run)
    assert compaction_ended(run) == "SUCCEEDED"
    assert stored(run).outcome_segments == {"items": SEGMENT, "blocks": 3}
    assert all(segment_written(run, block) for block in range(3))


def test_a_run_being_deleted_gets_no_segment(api: Any) -> None:
    # Given a running batch whose segment 0 is whole, and which is then being deleted
    run, listed = running(api)
    children(run, listed, 40)
    segments_compacted(run, {2})
    children_recorded = [0, 10]
    deps.stores().executions.hide_execution(TENANT, run.execution_id)
    # When the segment's children record and its job runs
    children(run, listed, *children_recorded)
    job = {"kind": "compact_segment", "tenant": TENANT, "execution_id": run.execution_id, "block": 0}
    # Then it writes nothing, and lists nothing
    assert outcomes.compact_segment_job(job) == {"compacted": None}
    assert not segment_written(run, 0) and stored(run).compacted_segments == [2]
