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
from relayflow_runtime.services import (
    batch,
    batch_items,
    batch_results,
    deps,
    item_lists,
    outcomes,
    run_records,
)

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


def tallies_fail_for(monkeypatch: pytest.MonkeyPatch, blocks: set[int]) -> None:
    """The segment tallies of a child that touches any of ``blocks`` fail (after their retries)."""
    real = BatchStore.tally_segments

    def tally(self: BatchStore, tenant: str, execution_id: str, recorded: dict[int, int], *rest: Any) -> Any:
        if blocks & set(recorded):
            raise RuntimeError("ProvisionedThroughputExceededException")
        return real(self, tenant, execution_id, recorded, *rest)

    monkeypatch.setattr(BatchStore, "tally_segments", tally)


def written_segments(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The blocks every compaction (segment jobs, the end's) writes from now on, in order."""
    written: list[int] = []
    real = outcomes._write_segment

    def write(prefix: str, block: int, pointers: Any) -> None:
        real(prefix, block, pointers)
        written.append(block)

    monkeypatch.setattr(outcomes, "_write_segment", write)
    return written


def test_a_segment_is_compacted_once_its_last_child_records_and_the_run_end_compacts_only_the_rest(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running batch of three segments whose children record out of order, the tallies of
    # segment 1 failing
    run, listed = running(api)
    tallies_fail_for(monkeypatch, {1})
    written = written_segments(monkeypatch)
    with aws_calls() as calls:
        children(run, listed, 10, 30, 40)
    # Then only segment 2 (of 10 items: its one child) is whole, and only its compaction started
    assert calls["stepfunctions.StartExecution"] == 1, calls
    segments_compacted(run, {2})
    assert written == [2]
    # When the child that completes segment 0 records
    children(run, listed, 0)
    # Then segment 0 is compacted while the run runs, and listed for pages
    segments_compacted(run, {0, 2})
    assert stored(run).status == "running" and written == [2, 0]
    # And once the last child records (segment 1 whole, its tally lost) and the run ends, the end's
    # compaction writes segment 1 alone, and pages read all three
    children(run, listed, 20)
    batch.complete(run)
    assert compaction_ended(run) == "SUCCEEDED"
    assert written == [2, 0, 1]
    assert stored(run).compacted_segments == [0, 2]
    assert stored(run).outcome_segments == {"items": SEGMENT, "blocks": 3}
    results = batch_results.get_results(TENANT, run.workflow_id, run.execution_id, 100, None).items
    assert [(r.source_item_id, r.output) for r in results] == [(f"r{i:02d}", f"t{i}") for i in range(ITEMS)]


def test_a_page_reads_a_whole_segment_from_it_and_one_not_whole_from_its_child_objects(api: Any) -> None:
    # Given a running batch whose segment 0 is not whole (its second child has not recorded) and
    # whose segments 1 and 2 are, and compacted
    run, listed = running(api)
    children(run, listed, 0, 20, 30, 40)
    segments_compacted(run, {1, 2})
    # When a page of all 50 is read
    with aws_calls() as calls:
        page = batch_results.get_results(TENANT, run.workflow_id, run.execution_id, 100, None)
    # Then every item is there once, in order, those of the missing child pending
    assert [(r.source_item_id, r.status) for r in page.items] == [
        (f"r{i:02d}", "pending" if 10 <= i < 20 else "completed") for i in range(ITEMS)
    ]
    assert page.next_token is None
    # And it read: the execution, the list, the two segments' header slots and results, one
    # Query of segment 0's pointers and its one child object
    assert calls == {"dynamodb.GetItem": 1, "s3.GetObject": 6, "dynamodb.Query": 1}, calls


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
    tallies_fail_for(monkeypatch, {0, 1, 2})
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


def test_a_run_being_deleted_gets_no_segment(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a running batch whose segment 0 is whole (no job started: its tallies failed)
    run, listed = running(api)
    tallies_fail_for(monkeypatch, {0})
    children(run, listed, 0, 10)
    job = {"kind": "compact_segment", "tenant": TENANT, "execution_id": run.execution_id, "block": 0}
    # When its job writes the segment and the run's delete begins before the job lists it
    real = outcomes._write_segment

    def write_then_delete_begins(prefix: str, block: int, pointers: Any) -> None:
        real(prefix, block, pointers)
        assert segment_written(run, 0)
        deps.stores().executions.hide_execution(TENANT, run.execution_id)

    monkeypatch.setattr(outcomes, "_write_segment", write_then_delete_begins)
    # Then the job deletes what it wrote and lists nothing (the delete job may have listed the
    # run's objects already)
    assert outcomes.compact_segment_job(job) == {"compacted": None}
    assert not segment_written(run, 0) and stored(run).compacted_segments is None
    # And a job that starts once the delete has begun writes nothing at all
    monkeypatch.setattr(outcomes, "_write_segment", real)
    assert outcomes.compact_segment_job(job) == {"compacted": None}
    assert not segment_written(run, 0)
