"""A results page is bounded in time as well as in requests (services/batch_results.py,
docs/batch.md Results): past its deadline it starts no further read, answers what it has with a
cursor from the first entry it did not read, and says so (``stopped_by: "seconds"``); following the
cursors gives every item once, in order, however slow each read. The clock is injected: a page's
reads are made slow by a clock that moves on each time it is asked, never by sleeping. One item
(``GET …/items/{item}``) reads its values stored apart at once, not one after another."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.batches import (
    TENANT,
    compaction_ended,
    dataset,
    pending_run,
    run_every_item,
    segments_compacted,
    stored,
    workflow,
)
from tests.support.graphs import ok

from relayflow_runtime.adapters.blobs import BlobStore
from relayflow_runtime.domain import outcomes as layout
from relayflow_runtime.domain.batch import BATCH_VALUE_LIMIT
from relayflow_runtime.domain.clock import Clock, ReadDeadline
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.domain.outcomes import Segments
from relayflow_runtime.schemas.entities import BatchItemStatus
from relayflow_runtime.schemas.responses import BatchItemResultPage
from relayflow_runtime.services import batch, batch_results, outcomes

pytestmark = pytest.mark.shared_stack

ITEMS = 300
#: Every FAIL_EVERY-th item lacks the field its template reads, so it fails: failures are sparse.
FAIL_EVERY = 37


def slow(seconds_per_look: float) -> Clock:
    """A clock that moves on ``seconds_per_look`` each time it is asked (a page's reads are slow)."""
    looks = itertools.count()
    return lambda: next(looks) * seconds_per_look


#: How many of the run's items its children recorded, by execution id (the rest are pending).
RECORDED: dict[str, int] = {}


@pytest.fixture(scope="module", params=["running", "mixed", "compacted"])
def sparse_run(module_api: Any, request: pytest.FixtureRequest) -> Iterator[RunRef]:
    """A batch of ITEMS items, recorded by children of 10 (30 child objects), of which every
    FAIL_EVERY-th failed:

    * running: all but the last child recorded, so its one segment is not whole: pages read the
      child objects;
    * mixed: the same with segments of 100 items: the first two, whole, are compacted while the run
      runs, so pages read those two segments and the child objects of the third;
    * compacted: every item recorded, the run ended and compacted: pages read its segment."""
    patch = pytest.MonkeyPatch()
    if request.param == "mixed":
        patch.setattr(layout, "SEGMENT_ITEMS", 100)
        patch.setattr(outcomes, "SEGMENT_ITEMS", 100)
    items = [
        {"id": f"s{i:03d}", "text": f"t{i}", **({} if i % FAIL_EVERY == 0 else {"x": f"x{i}"})}
        for i in range(ITEMS)
    ]
    dataset_id, version_id = dataset(module_api, items)
    workflow_id, wf_version = workflow(
        module_api, [("echo", {"model": "echo"}, {"input_template": "{{input}} {{item.x}}"})]
    )
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
    RECORDED[run.execution_id] = ITEMS if request.param == "compacted" else ITEMS - 10
    run_every_item(run, until=RECORDED[run.execution_id])
    if request.param == "mixed":
        segments_compacted(run, {0, 1})
        assert batch_results.compacted(stored(run)) == Segments(blocks=frozenset({0, 1}))
    if request.param == "compacted":
        batch.complete(run)
        assert compaction_ended(run) == "SUCCEEDED"
        assert batch_results.compacted(stored(run)).every
    yield run
    patch.undo()


def expected(status: BatchItemStatus | None, run: RunRef) -> list[str]:
    recorded = RECORDED[run.execution_id]
    ids = [
        (f"s{i:03d}", "pending" if i >= recorded else "failed" if i % FAIL_EVERY == 0 else "completed")
        for i in range(ITEMS)
    ]
    return [item_id for item_id, its in ids if status is None or its == status]


def every_page(
    run: RunRef, limit: int, status: BatchItemStatus | None, clock: Clock
) -> list[BatchItemResultPage]:
    """Every page of the run's results, each one's deadline on ``clock``, following the cursors."""
    pages: list[BatchItemResultPage] = []
    token: str | None = None
    while True:
        page = batch_results.get_results(
            TENANT, run.workflow_id, run.execution_id, limit, token, status, clock=clock
        )
        pages.append(page)
        assert len(pages) <= ITEMS, "the cursor does not move on"
        if not (token := page.next_token):
            return pages


def test_a_filtered_page_over_sparse_items_stops_at_its_deadline_and_its_cursors_give_each_once(
    sparse_run: RunRef,
) -> None:
    # Given a running batch whose failed items are sparse (1 in 37), read by pages of failed items
    # When each read of a page takes 3 s (its deadline, 20 s, passes after a few child objects)
    pages = every_page(sparse_run, 100, "failed", slow(3.0))
    # Then the first page stopped at its deadline, short, with a cursor, and said so
    first = pages[0]
    assert first.next_token is not None and first.stopped_by == "seconds"
    assert len(first.items) < len(expected("failed", sparse_run))
    # And following the cursors gives exactly the failed items, each once, in order
    assert [r.source_item_id for p in pages for r in p.items] == expected("failed", sparse_run)
    assert all(r.status == "failed" for p in pages for r in p.items)
    # And every page that ended early said it was the deadline
    assert {p.stopped_by for p in pages[:-1]} == {"seconds"} and pages[-1].stopped_by is None


def test_pages_past_their_deadline_from_the_start_still_hold_an_item_or_move_on(sparse_run: RunRef) -> None:
    # Given pages whose deadline has passed at their first look (each read takes far too long)
    for status in (None, "failed"):
        # When a client follows the cursors, unfiltered and filtered
        pages = every_page(sparse_run, 100, status, slow(1e9))
        # Then it ends, with every item once, in order
        assert [r.source_item_id for p in pages for r in p.items] == expected(status, sparse_run), status
        # And a page before the last is full, or was stopped by the deadline after the reads that
        # moved it on: an unfiltered page always holds an item
        assert all(
            p.stopped_by == "seconds" or (len(p.items) == 100 and p.stopped_by is None) for p in pages[:-1]
        )
        if status is None:  # each page reads its first object or segment and stops there
            assert all(p.items for p in pages)
            if batch_results.compacted(stored(sparse_run)).hold(0):  # a segment's read holds all
                assert len(pages[0].items) == 100 and pages[0].stopped_by is None
            else:  # the first child object's ten items
                assert (len(pages[0].items), pages[0].stopped_by) == (10, "seconds")
        else:  # a filtered page reads one window (or child object) and stops: 9 failed items need 1
            assert len(pages) > 1 and {p.stopped_by for p in pages[:-1]} == {"seconds"}


def test_a_page_that_keeps_its_deadline_reads_as_before(sparse_run: RunRef) -> None:
    # Given the real clock (a page far from its deadline)
    for status, limit in ((None, 1000), ("failed", 1000), ("failed", 3), (None, 120)):
        # When the results are paged
        pages = every_page(sparse_run, limit, status, batch_results.time.monotonic)
        # Then pages are full (or the last), none stopped by time, and the items are all there
        assert [r.source_item_id for p in pages for r in p.items] == expected(status, sparse_run)
        assert all(len(p.items) == limit and p.stopped_by is None for p in pages[:-1]), (status, limit)
        assert len(pages) == -(-len(expected(status, sparse_run)) // limit) or not pages[-1].items


def test_a_deadline_remembers_that_it_stopped_a_read() -> None:
    # Given a deadline 20 s ahead on a clock that moves 8 s a look
    deadline = ReadDeadline.after(20.0, slow(8.0))
    # When it is asked before each of three reads
    answers = [deadline.stops() for _ in range(3)]
    # Then it lets the first two start and stops the third, and says it stopped one
    assert answers == [False, False, True] and deadline.stopped


def test_the_api_answers_a_page_with_why_it_ended(api: Any, sparse_run: RunRef) -> None:
    # Given the running batch, read through the HTTP API
    path = f"/workflows/{sparse_run.workflow_id}/executions/{sparse_run.execution_id}/results"
    # When a page is full, and when a filtered page reads to the end of the list
    full = ok(api("GET", f"{path}?limit=5"), 200)
    failed = ok(api("GET", f"{path}?limit=100&status=failed"), 200)
    # Then neither ended early: stopped_by is null, and the failed items are all in the page
    assert full["stopped_by"] is None and full["next_token"] and len(full["items"]) == 5
    assert failed["stopped_by"] is None and failed["next_token"] is None
    assert [r["source_item_id"] for r in failed["items"]] == expected("failed", sparse_run)


def test_an_items_values_stored_apart_are_read_at_once(
    module_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a finished item of a two-node chain whose item, prompts and outputs are each over the
    # batch inline limit: five objects of its own (its output is its last node's)
    text = "z" * (BATCH_VALUE_LIMIT + 1000)
    dataset_id, version_id = dataset(module_api, [{"id": "big", "text": text}])
    workflow_id, wf_version = workflow(
        module_api,
        [
            ("first", {"model": "echo"}, {"input_template": "{{input}}"}),
            ("second", {"model": "echo"}, {"input_template": "{{nodes.first}}"}),
        ],
    )
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
    run_every_item(run)
    segments_compacted(run, {0})  # (its one segment is whole: compacted by a job of its own)
    # When the item is read, each object read waiting for the others to be under way too
    together = threading.Barrier(5, timeout=20)
    real = BlobStore.get_bytes

    def all_at_once(self: BlobStore, key: str) -> bytes:
        together.wait()
        return real(self, key)

    monkeypatch.setattr(BlobStore, "get_bytes", all_at_once)
    item = batch_results.get_item(TENANT, workflow_id, run.execution_id, "big")
    monkeypatch.undo()
    # Then the five were read at the same time, and the item holds every value whole
    assert (item.status, item.input, item.output) == ("completed", text, text)
    assert [(n.prompt, n.output) for n in item.node_executions.values()] == [(text, text), (text, text)]


def test_a_download_in_one_answer_shares_one_deadline_across_its_pages(sparse_run: RunRef) -> None:
    # Given the run's results read as one file (GET .../results?format=jsonl)
    execution, record = batch_results.batch_record(TENANT, sparse_run.workflow_id, sparse_run.execution_id)
    compacted = batch_results.compacted(record)
    # When its pages (100 items each) are read against one deadline 17 s ahead on slow reads (each
    # look at the clock 10 s on: a compacted page may look only before it)
    clock = slow(10.0)
    pages = batch_results.iter_results(
        TENANT, execution, 100, compacted=compacted, until=clock() + batch_results.PAGE_SECONDS, clock=clock
    )
    # Then the read gives up for the whole answer (the caller exports, or answers 413, instead of
    # passing API Gateway's 30 s with a fresh deadline per page)
    with pytest.raises(batch_results.OutOfTime):
        list(pages)
    # while at the real pace the file holds every item once
    whole = batch_results._inline(TENANT, execution, "jsonl", 10**9, compacted)
    assert whole is not None
    assert [json.loads(line)["source_item_id"] for line in whole.splitlines()] == expected(None, sparse_run)
