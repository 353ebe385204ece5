"""A batch run's outcomes as they are stored (services/outcomes.py, docs/batch.md Results): once per
child, exactly once when a child runs twice at the same moment, read by page, by item and for a
retry while the run runs and once compacted, exported in rounds, and read in requests that grow
with the pages, never with the values. The batch machine's actions are called directly."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import pytest
from tests.support.batches import (
    TENANT,
    aws_calls,
    compaction_ended,
    dataset,
    pending_run,
    record,
    segments_compacted,
    stored,
    workflow,
)

from relayflow_runtime.adapters import blob_stream
from relayflow_runtime.domain.batch import ItemEntry
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.domain.outcomes import ANSWER_BYTES
from relayflow_runtime.schemas.entities import BatchItemResult
from relayflow_runtime.services import (
    batch,
    batch_items,
    batch_results,
    deps,
    executions,
    item_lists,
    outcomes,
    results_export,
    run_records,
)
from relayflow_runtime.settings import get_settings

pytestmark = pytest.mark.shared_stack

ECHO = ("echo", {"model": "echo"}, {"input_template": "{{input}}"})


def started(run: RunRef) -> None:
    batch.reserve_budget(batch.prepare_batch(run))
    batch_items.status.forget()


def entries(run: RunRef) -> list[ItemEntry]:
    prefix = run_records.execution_prefix(run.tenant, run.execution_id)
    return [entry for _, entry in item_lists.entries(item_lists.list_key(prefix))]


def every_result(run: RunRef, limit: int) -> tuple[list[BatchItemResult], int]:
    """Every result of the run through the results API's pages, and how many pages."""
    results: list[BatchItemResult] = []
    token, pages = None, 0
    while True:
        answer = batch_results.get_results(TENANT, run.workflow_id, run.execution_id, limit, token)
        page, token = answer.items, answer.next_token
        results.extend(page)
        pages += 1
        if not token:
            return results, pages


def running_echo_batch(api: Any, ids: list[str]) -> tuple[RunRef, list[ItemEntry]]:
    """A running batch of one echo node over items of these ids (text ``t<i>``), parallelism 20,
    and its list's entries."""
    dataset_id, version_id = dataset(api, [{"id": item_id, "text": f"t{i}"} for i, item_id in enumerate(ids)])
    workflow_id, wf_version = workflow(api, [ECHO])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
    started(run)
    return run, entries(run)


def compacted(run: RunRef) -> None:
    """The compaction the run's end started on the jobs machine has ended: reads use segments."""
    assert compaction_ended(run) == "SUCCEEDED"
    assert batch_results.compacted(stored(run)).every


def test_a_child_run_twice_at_the_same_moment_records_and_counts_each_item_once(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running batch, and two runs of one child (an Express child run twice) that both
    # wrote their object and reach their record at the same moment
    run, child = running_echo_batch(api, [f"i{i}" for i in range(10)])
    store = deps.stores().batches
    together = threading.Barrier(2, timeout=30)
    real = store.record_pointers

    def at_once(*args: Any, **kwargs: Any) -> list[int]:
        together.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "record_pointers", at_once)
    done: list[dict[str, int]] = []
    runs = [threading.Thread(target=lambda: done.append(batch_items.run_items(run, child))) for _ in range(2)]

    # When both record
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(60)

    # Then one recorded every item and the other none: the first complete record wins
    assert sorted(d["done"] for d in done) == [0, 10]
    counters = store.counters(TENANT, run.execution_id, consistent=True)
    assert (counters["processed_items"], counters["failed_items"]) == (10, 0)
    # And every item's pointer leads to one object, the winner's, whole
    pointers = store.pointers(TENANT, run.execution_id, 0, 9, consistent=True)
    assert sorted(pointers) == list(range(10)) and len({p.tag for p in pointers.values()}) == 1
    assert [outcomes.detail(TENANT, run.execution_id, n)[0]["output"] for n in range(10)] == [  # type: ignore[index]
        f"t{i}" for i in range(10)
    ]
    # And items_failed after them (the machine's Catch of a third run) records nothing either
    monkeypatch.setattr(store, "record_pointers", real)
    error = {"Error": "States.Timeout", "Cause": "late"}
    assert batch_items.items_failed(run, child, error) == {"failed": 0}
    assert store.counters(TENANT, run.execution_id, consistent=True)["processed_items"] == 10


def mixed_run(api: Any) -> RunRef:
    """A finished batch of 25 items, children of 10: 0-11 completed, 12-14 failed (a template
    field they lack), 15-19 failed by their child's timeout, 20-24 never ran."""
    items = [{"id": f"m{i:02d}", "text": f"t{i}", **({} if 12 <= i < 15 else {"x": "y"})} for i in range(25)]
    dataset_id, version_id = dataset(api, items)
    workflow_id, wf_version = workflow(
        api, [ECHO, ("tag", {"model": "uppercase"}, {"input_template": "{{nodes.echo}} {{item.x}}"})]
    )
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
    started(run)
    listed = entries(run)
    assert batch_items.run_items(run, listed[:10]) == {"done": 10}
    assert batch_items.run_items(run, listed[10:15]) == {"done": 5}
    batch_items.items_failed(run, listed[15:20], {"Error": "States.Timeout", "Cause": "slow"})
    return run


def _expected(i: int) -> tuple[str, str, str]:
    if i < 12:
        return f"m{i:02d}", "completed", f"T{i} Y"
    if i < 15:  # the output of its last node that produced one
        return f"m{i:02d}", "failed", f"t{i}"
    return f"m{i:02d}", "failed" if i < 20 else "pending", ""


def test_pages_items_and_a_retry_read_the_outcomes_while_the_run_runs_and_once_compacted(api: Any) -> None:
    # Given a batch with completed, failed and unrecorded items
    run = mixed_run(api)
    for phase in ("running", "compacted"):
        if phase == "compacted":
            # When the run ends and its outcomes are compacted into segments
            batch.complete(run)
            compacted(run)
        # Then pages of any size list every item once, in order, with its status and output
        for limit in (1, 7, 1000):
            results, _ = every_result(run, limit)
            expected = [_expected(i) for i in range(25)]
            if phase == "compacted":  # once ended, an item without an outcome never ran
                expected = [(i, "failed" if s == "pending" else s, o) for i, s, o in expected]
            assert [(r.source_item_id, r.status, r.output) for r in results] == expected, (phase, limit)
        by_id = {r.source_item_id: r for r in results}
        assert by_id["m13"].failed_node_id and "x" in (by_id["m13"].error or "")
        assert "States.Timeout" in (by_id["m17"].error or "")
        # And one item comes with the record of each of its nodes
        item = batch_results.get_item(TENANT, run.workflow_id, run.execution_id, "m03")
        assert (item.status, item.output) == ("completed", "T3 Y")
        nodes = sorted(item.node_executions.values(), key=lambda n: n.started_at or "")
        assert [(n.prompt, n.output) for n in nodes] == [("t3", "t3"), ("t3 y", "T3 Y")]
        failed = batch_results.get_item(TENANT, run.workflow_id, run.execution_id, "m16")
        assert failed.status == "failed" and not failed.node_executions
    # And a retry of the failed items lists those that did not complete, in order
    retry = pending_run(
        run.workflow_id, record(run)["version_id"], "d", "v", retry_of=run.execution_id, parallelism=20
    )
    batch.prepare_batch(retry)
    assert [e.id for e in entries(retry)] == [f"m{i:02d}" for i in range(12, 25)]


def test_a_page_makes_requests_by_child_or_segment_never_by_value(api: Any) -> None:
    # Given a batch of 300 items (one segment) whose outputs are 6 KB each (over the 4 KB that
    # once kept a value inline), run by children of 10, all of them but the last
    text = "the quick brown fox jumps over the lazy dog " * 140
    items = [{"id": f"p{i:03d}", "text": f"{i} {text}"} for i in range(300)]
    dataset_id, version_id = dataset(api, items)
    workflow_id, wf_version = workflow(api, [ECHO])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
    started(run)
    listed = entries(run)
    for start in range(0, 290, 10):
        assert batch_items.run_items(run, listed[start : start + 10]) == {"done": 10}

    def page(count: int) -> tuple[list[BatchItemResult], dict[str, int]]:
        with aws_calls() as calls:
            answer = batch_results.get_results(TENANT, workflow_id, run.execution_id, 300, None)
        results, token = answer.items, answer.next_token
        assert token is None and len(results) == 300
        assert all(r.output.startswith(f"{i} the quick") for i, r in enumerate(results[:count]))
        return results, dict(calls)

    # When a page of all 300 is read while the run runs and its segment is not whole: the
    # execution, the list, one Query of the pointers, one ranged read per child object (29)
    running, calls = page(290)
    assert calls == {"dynamodb.GetItem": 1, "s3.GetObject": 30, "dynamodb.Query": 1}, calls
    assert [r.status for r in running[290:]] == ["pending"] * 10
    # And once the last child has recorded, the segment is whole and compacted while the run
    # runs: the execution, the list, the header slots, the results
    assert batch_items.run_items(run, listed[290:300]) == {"done": 10}
    segments_compacted(run, {0})
    whole, calls = page(300)
    assert calls == {"dynamodb.GetItem": 1, "s3.GetObject": 3}, calls
    assert stored(run).status == "running"
    # And once the run has ended and is compacted: the same
    batch.complete(run)
    compacted(run)
    ended, calls = page(300)
    assert calls == {"dynamodb.GetItem": 1, "s3.GetObject": 3}, calls
    assert [r.output for r in ended] == [r.output for r in whole]
    assert [r.output for r in ended[:290]] == [r.output for r in running[:290]]


def test_large_values_end_a_page_early_and_an_export_larger_than_a_page_runs_in_rounds(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relayflow_runtime.providers import builtin

    # Given a finished, compacted batch of 150 items whose outputs are 60 KB each (9 MB in all)
    # (the builtin echo, made to answer 60 KB, while this test runs)
    monkeypatch.setitem(builtin.MODELS, "echo", lambda config, prompt, ctx: f"{prompt}:" + "x" * 60_000)
    dataset_id, version_id = dataset(api, [{"id": f"b{i:03d}", "text": f"b{i}"} for i in range(150)])
    workflow_id, wf_version = workflow(api, [ECHO])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=20)
    started(run)
    listed = entries(run)
    for start in range(0, 150, 10):
        batch_items.run_items(run, listed[start : start + 10])
    batch.complete(run)
    compacted(run)

    # When it is read by pages of 100: a page ends once its answer passes ANSWER_BYTES
    results, pages = every_result(run, 100)
    assert pages == 3 and len(results) == 150
    first = batch_results.get_results(TENANT, workflow_id, run.execution_id, 100, None).items
    assert sum(len(r.output) for r in first[:-1]) <= ANSWER_BYTES < 100 * 60_000

    # And exported by a job whose every round is out of time after a part (parts of S3's least
    # size, each taking 30 s on the round's clock, 50 s before its margin): the file is larger
    # than a page and than a round
    monkeypatch.setattr(results_export, "EXPORT_PART_BYTES", blob_stream.MIN_PART_SIZE)
    clock = [0.0]
    send = blob_stream.PartUpload.send

    def slow(upload: blob_stream.PartUpload, number: int, body: bytes) -> None:
        send(upload, number, body)
        clock[0] += 30

    monkeypatch.setattr(blob_stream.PartUpload, "send", slow)
    job: dict[str, Any] = {
        "tenant": TENANT,
        "workflow_id": workflow_id,
        "execution_id": run.execution_id,
        "format": "jsonl",
    }
    rounds = 0
    while True:
        clock[0] = 0.0
        answer = results_export.export_results_job(
            job,
            remaining_ms=int((results_export.EXPORT_MARGIN_SECONDS + 50) * 1000),
            clock=lambda: clock[0],
            concurrent=False,
        )
        rounds += 1
        if not answer.get("more"):
            break
        job = answer
    # Then it took more than one round, and the file holds every result once, in order
    assert rounds >= 2, rounds
    body = deps.blobs().get_bytes(answer["key"]).decode()
    rows = [json.loads(line) for line in body.splitlines()]
    assert [(r["source_item_id"], r["output"]) for r in rows] == [
        (r.source_item_id, r.output) for r in results
    ]
    assert record(run)["exports"]["jsonl"]["status"] == "ready"
    assert answer["key"].startswith(run_records.execution_prefix(TENANT, run.execution_id))
    assert get_settings().bucket_name


def test_the_compaction_starts_once_the_runs_end_is_written_and_a_repeated_end_starts_it_again(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch whose children all ended, and a first start of its compaction that fails
    run = mixed_run(api)
    seen: list[str] = []
    real = outcomes.after_end

    def failing_once(tenant: str, stored: dict[str, Any], env: Any) -> None:
        # the run's status as the compaction would find it, at the moment it is started
        seen.append(record(run)["status"])
        if len(seen) == 1:
            raise RuntimeError("StartExecution throttled")
        real(tenant, stored, env)

    monkeypatch.setattr(outcomes, "after_end", failing_once)
    # When the machine's complete fails on that start, and the machine repeats the task
    with pytest.raises(RuntimeError):
        batch.complete(run)
    batch.complete(run)
    # Then each start came after the end was written (a job started before it would find the run
    # running and give up for good), and the repeat started it: the run is compacted
    assert seen == ["completed", "completed"]
    compacted(run)


def test_a_cancelled_run_is_compacted_and_a_child_still_running_records_nothing_after_it(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running batch of 30 items whose first child recorded its 10
    run, listed = running_echo_batch(api, [f"c{i:02d}" for i in range(30)])
    assert batch_items.run_items(run, listed[:10]) == {"done": 10}

    # When the run is cancelled, and a child that has not seen the cancel yet (an Express child
    # outlives its stopped parent; its status read is up to a second old) runs and records after it
    executions.cancel_execution(TENANT, run.workflow_id, run.execution_id)
    assert record(run)["status"] == "cancelled"
    running = batch_items.status.read(run)
    monkeypatch.setattr(batch_items.status, "read", lambda *a, **k: replace(running, running=True))
    assert batch_items.run_items(run, listed[10:20]) == {"done": 0}

    # Then the cancelled run is compacted: its pages come from segments
    compacted(run)
    # And they list every item exactly once: the 10 recorded before the end, the rest pending,
    # the late child's items too (not recorded, not counted: the counts and the pages agree)
    results, _ = every_result(run, 7)
    assert [(r.source_item_id, r.status) for r in results] == [
        (f"c{i:02d}", "completed" if i < 10 else "pending") for i in range(30)
    ]
    store = deps.stores().batches
    assert store.counters(TENANT, run.execution_id, consistent=True)["processed_items"] == 10
    assert sorted(store.pointers(TENANT, run.execution_id, 0, 29, consistent=True)) == list(range(10))
    # And the execution shows the same counts
    shown = batch_results.get_item(TENANT, run.workflow_id, run.execution_id, "c15")
    assert shown.status == "pending" and not shown.node_executions
