"""The batch machine's actions called directly on the local stack's AWS (no state machine): what
prepare_batch writes, exactly-once recording under repeated children, items_failed, complete's
judgement, retry-failed's list, and O(1) item reads. End to end through the API: test_batch.py."""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest
from tests.support.batches import (
    TENANT,
    aws_calls,
    compaction_ended,
    dataset,
    pending_run,
    record,
    workflow,
)

from relayflow_runtime.domain.batch import RECORD_MARGIN_SECONDS, BatchSettings, ItemEntry
from relayflow_runtime.domain.engine import RunRef
from relayflow_runtime.domain.outcomes import unpack_nodes
from relayflow_runtime.errors import NotFound
from relayflow_runtime.schemas.responses import BatchItemDetail
from relayflow_runtime.services import (
    batch,
    batch_items,
    batch_results,
    dataset_service,
    deps,
    executions,
    item_lists,
    outcomes,
    run_records,
)
from relayflow_runtime.services.node_execution import ExecutionNotRunning

UPPER = ("upper", {"model": "uppercase"}, {"input_template": "{{input}}"})


def started(run: RunRef) -> BatchSettings:
    """prepare_batch, then reserve_budget: the run is running with its list written."""
    prepared = batch.prepare_batch(run)
    batch.reserve_budget(prepared)
    batch_items.status.forget()
    return BatchSettings.model_validate(prepared["batch"])


def entries(run: RunRef) -> list[ItemEntry]:
    prefix = run_records.execution_prefix(run.tenant, run.execution_id)
    return [entry for _, entry in item_lists.entries(item_lists.list_key(prefix))]


def stored(run: RunRef, item_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The recorded outcome of each of these items that has one: its result, with the record of
    each of its nodes under ``nodes``."""
    ordinal = {entry.id: int(entry.n or 0) for entry in entries(run)}
    found = {}
    for item_id in item_ids:
        detail = outcomes.detail(TENANT, run.execution_id, ordinal[item_id])
        if detail is not None:
            found[item_id] = {**detail[0], "nodes": unpack_nodes(detail[1])}
    return found


def test_prepare_batch_writes_the_filtered_list_and_its_index_and_sizes_the_map(api: Any) -> None:
    # Given 60 items, a third of them French, and a pending batch keeping the English ones
    items = [{"id": f"d{i:02d}", "text": f"t{i}", "lang": "fr" if i % 3 == 0 else "en"} for i in range(60)]
    dataset_id, version_id = dataset(api, items)
    workflow_id, wf_version = workflow(api, [UPPER], node_timeout=60)
    run = pending_run(
        workflow_id, wf_version, dataset_id, version_id, filter_query="lang == 'en'", parallelism=10
    )
    assert record(run)["progress"].get("total_items") is None

    # When prepare_batch runs
    prepared = batch.prepare_batch(run)

    # Then the list holds the kept items in order, total_items is set, the run is still pending
    kept = [i["id"] for i in items if i["lang"] == "en"]
    assert [e.id for e in entries(run)] == kept
    after = record(run)
    assert after["progress"]["total_items"] == 40 and after["status"] == "pending"
    # And the Map is sized: 5 items per child, 2 children, Express (60 s nodes fit in 5 minutes)
    settings = BatchSettings.model_validate(prepared["batch"])
    assert (settings.items_per_child, settings.children, settings.express, settings.total) == (5, 2, True, 40)
    assert settings.child_timeout == 60 + 15
    # And every kept item is found through the index, a dropped one is not
    prefix = run_records.execution_prefix(TENANT, run.execution_id)
    buckets = after["item_index"]["buckets"]
    assert all(item_lists.find(prefix, buckets, item_id).id == item_id for item_id in kept)  # type: ignore[union-attr]
    assert item_lists.find(prefix, buckets, "d00") is None
    # And a repeated prepare_batch answers the same without writing again
    assert batch.prepare_batch(run) == prepared


def test_a_filter_that_keeps_nothing_ends_the_run_failed_with_the_reason(api: Any) -> None:
    dataset_id, version_id = dataset(api, [{"text": "a", "lang": "en"}])
    workflow_id, wf_version = workflow(api, [UPPER])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, filter_query="lang == 'de'")

    with pytest.raises(ExecutionNotRunning):
        batch.prepare_batch(run)

    ended = record(run)
    assert ended["status"] == "failed"
    assert ended["error"] == "the filter \"lang == 'de'\" keeps none of the 1 items; nothing to run."


def test_a_filter_over_its_work_budget_fails_the_run_naming_the_item(api: Any) -> None:
    # Given a batch whose filter multiplies each item 60**4 times (within the shape limit)
    wide = "[" + ",".join(["@"] * 60) + "][]"
    dataset_id, version_id = dataset(api, [{"id": "first", "text": "a"}, {"id": "second", "text": "b"}])
    workflow_id, wf_version = workflow(api, [UPPER])
    query = " | ".join([wide] * 4) + " | length(@) > `0`"
    # (a chain of more such stages is refused when submitted, before any run exists)
    config = {"dataset_id": dataset_id, "dataset_version_id": version_id, "input_field": "text"}
    status, body = api(
        "POST",
        f"/workflows/{workflow_id}/executions",
        {"input_mode": "batch", "batch_config": {**config, "filter_query": " | ".join(["[@,@][]"] * 6)}},
    )
    assert (status, body["code"]) == (400, "filter_too_complex"), body
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, filter_query=query)
    # When prepare_batch runs
    with pytest.raises(ExecutionNotRunning):
        batch.prepare_batch(run)
    # Then the run failed on the first item, saying why, and no list was written
    ended = record(run)
    assert ended["status"] == "failed"
    assert ended["error"].startswith("item 'first': filter"), ended["error"]
    assert "work budget" in ended["error"]
    assert not ended.get("batch")


def test_a_batch_cancelled_while_its_items_are_prepared_stops_reading_them(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pending batch over 300 items, a status check at every item, and a cancel that lands
    # while the fifth item is read
    dataset_id, version_id = dataset(api, [{"text": f"t{i}"} for i in range(300)])
    workflow_id, wf_version = workflow(api, [UPPER])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, filter_query="text != 'none'")
    monkeypatch.setattr(batch, "CANCEL_CHECK_SECONDS", 0.0)
    read = collections.Counter[str]()
    real_read = dataset_service._entry_item_read

    def reading(entry: dict[str, Any]) -> tuple[dict[str, Any], int]:
        read["items"] += 1
        if read["items"] == 5:
            deps.stores().executions.update_execution(TENANT, run.execution_id, {"status": "cancelled"})
        return real_read(entry)

    monkeypatch.setattr(dataset_service, "_entry_item_read", reading)
    # When prepare_batch runs
    with pytest.raises(ExecutionNotRunning, match="cancelled"):
        batch.prepare_batch(run)
    # Then it stopped right after the cancel instead of filtering the other items
    assert read["items"] <= 6
    assert not record(run).get("batch")


def test_a_repeated_child_batch_records_nothing_twice(api: Any) -> None:
    # Given a running batch of 12 items
    dataset_id, version_id = dataset(api, [{"id": f"i{i}", "text": f"t{i}"} for i in range(12)])
    workflow_id, wf_version = workflow(api, [UPPER])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=10)
    started(run)
    child = entries(run)[:5]

    # When the same child batch runs twice (Express children run at least once)
    first = batch_items.run_items(run, child)
    recorded = stored(run, [e.id for e in child])
    second = batch_items.run_items(run, child)

    # Then the second records nothing: each item is counted once and its outcome is the first one
    assert (first, second) == ({"done": 5}, {"done": 0})
    counters = deps.stores().batches.counters(TENANT, run.execution_id, consistent=True)
    assert (counters["processed_items"], counters["failed_items"]) == (5, 0)
    assert stored(run, [e.id for e in child]) == recorded
    assert recorded["i3"]["output"] == "T3"

    # And a child overlapping it records only its new items
    assert batch_items.run_items(run, entries(run)[3:8]) == {"done": 3}
    assert deps.stores().batches.counters(TENANT, run.execution_id, consistent=True)["processed_items"] == 8


def test_an_infrastructure_failure_fails_only_its_items_and_max_failed_percent_decides(api: Any) -> None:
    # Given a running batch of 10 items allowing 30% failed items, 6 of them run
    dataset_id, version_id = dataset(api, [{"id": f"i{i}", "text": f"t{i}"} for i in range(10)])
    workflow_id, wf_version = workflow(api, [UPPER])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, max_failed_percent=30)
    started(run)
    items = entries(run)
    assert batch_items.run_items(run, items[:6]) == {"done": 6}

    # When a child's task fails for its batch (a Lambda timeout), overlapping recorded items
    error = {"Error": "States.Timeout", "Cause": "the task timed out"}
    assert batch_items.items_failed(run, items[4:7], error) == {"failed": 1}
    # And one child never ran at all (items 7-9: no outcome)

    # Then the run is judged from the counters: 1 failed + 3 never ran = 40% > 30%
    batch.complete(RunRef.model_validate(run.model_dump()))
    ended = record(run)
    assert ended["status"] == "failed"
    assert ended["error"] == (
        "4 of 10 items failed (40.0%), more than max_failed_percent (30%); 3 of them never ran"
    )
    assert (ended["progress"]["processed_items"], ended["progress"]["failed_items"]) == (10, 4)
    # And the item that failed says why; those that never ran say so
    page = batch_results.get_results(TENANT, workflow_id, run.execution_id, 100, None).items
    by_id = {r.source_item_id: r for r in page}
    assert by_id["i6"].status == "failed" and "States.Timeout" in (by_id["i6"].error or "")
    assert by_id["i8"].status == "failed" and "never ran" in (by_id["i8"].error or "")
    assert by_id["i1"].status == "completed" and by_id["i1"].output == "T1"


def test_items_failed_never_fails_a_batch_within_its_tolerance(api: Any) -> None:
    dataset_id, version_id = dataset(api, [{"id": f"i{i}", "text": f"t{i}"} for i in range(10)])
    workflow_id, wf_version = workflow(api, [UPPER])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id, max_failed_percent=10)
    started(run)
    items = entries(run)
    batch_items.run_items(run, items[1:])
    batch_items.items_failed(run, items[:1], {"Error": "Lambda.Unknown", "Cause": "crash"})

    batch.complete(run)

    ended = record(run)
    assert (ended["status"], ended["progress"]["failed_items"]) == ("completed", 1)


def test_retry_failed_lists_the_failed_items_and_those_that_never_ran_in_order(api: Any) -> None:
    # Given a finished batch of 9 items: 0-2 completed, 3-5 failed (no "extra"), 6-8 never ran
    items = [{"id": f"i{i}", "text": f"t{i}", **({"extra": "x"} if i < 3 or i > 5 else {})} for i in range(9)]
    dataset_id, version_id = dataset(api, items)
    workflow_id, wf_version = workflow(
        api, [("tag", {"model": "echo"}, {"input_template": "{{item.extra}}"})]
    )
    old = pending_run(workflow_id, wf_version, dataset_id, version_id)
    started(old)
    assert batch_items.run_items(old, entries(old)[:6]) == {"done": 6}
    batch.complete(old)
    assert record(old)["progress"]["failed_items"] == 6

    # When its items are retried
    retry = pending_run(workflow_id, wf_version, dataset_id, version_id, retry_of=old.execution_id)
    batch.prepare_batch(retry)

    # Then the new list holds the failed and the never-ran items, in the old order
    assert [e.id for e in entries(retry)] == [f"i{i}" for i in range(3, 9)]
    assert record(retry)["progress"]["total_items"] == 6


def test_a_cancelled_run_dispatches_nothing_and_records_nothing(api: Any) -> None:
    dataset_id, version_id = dataset(api, [{"id": f"i{i}", "text": f"t{i}"} for i in range(4)])
    workflow_id, wf_version = workflow(api, [UPPER])
    run = pending_run(workflow_id, wf_version, dataset_id, version_id)
    started(run)
    executions.cancel_execution(TENANT, workflow_id, run.execution_id)
    batch_items.status.forget()

    assert batch_items.run_items(run, entries(run)) == {"done": 0}
    assert batch_items.items_failed(run, entries(run), None) == {"failed": 0}
    assert deps.stores().batches.counters(TENANT, run.execution_id, consistent=True)["processed_items"] == 0


def test_inside_an_item_a_node_starts_when_its_own_parents_are_done(api: Any) -> None:
    # Given items of a diamond: a -> (slow b, fast c), c -> d; b and c sleep
    from tests.support.graphs import add_node, builtin_model, connect, new_version

    dataset_id, version_id = dataset(api, [{"id": f"i{i}", "text": f"t{i}"} for i in range(3)])
    workflow_id, wf_version = new_version(api, max_retries=0)
    echo, slow, fast = (
        builtin_model(api, "echo"),
        builtin_model(api, "sleep", seconds=0.6),
        builtin_model(api, "sleep", seconds=0.1),
    )
    a = add_node(api, wf_version, "a", echo, "{{input}}")
    b = add_node(api, wf_version, "b", slow, "{{input}}")
    c = add_node(api, wf_version, "c", fast, "{{input}}")
    d = add_node(api, wf_version, "d", echo, "{{nodes.c}}!")
    connect(api, wf_version, (a, b), (a, c), (c, d))
    run = pending_run(workflow_id, wf_version, dataset_id, version_id)
    started(run)

    # When one child runs the three items
    assert batch_items.run_items(run, entries(run)) == {"done": 3}

    # Then the items ran at once: every item's slow b began before any of them ended (their node
    # records' own times, not this machine's clock)
    outcomes = stored(run, ["i0", "i1", "i2"])
    slow_nodes = [outcomes[item]["nodes"][b] for item in ("i0", "i1", "i2")]
    assert max(n["started_at"] for n in slow_nodes) < min(n["completed_at"] for n in slow_nodes)
    outcome = outcomes["i1"]
    assert outcome["status"] == "completed"
    nodes = outcome["nodes"]
    # and b and c at once: c began before b ended
    assert nodes[c]["started_at"] < nodes[b]["completed_at"]
    # And d ended before the slow b: it waited only for its own parent c
    assert nodes[d]["completed_at"] < nodes[b]["completed_at"]
    assert nodes[d]["output"] == "t1!"


def test_retries_follow_the_version_policy_and_a_continue_node_lets_the_item_go_on(api: Any) -> None:
    from tests.support.graphs import add_node, builtin_model, connect, new_version

    dataset_id, version_id = dataset(api, [{"id": "only", "text": "t"}])
    workflow_id, wf_version = new_version(api, max_retries=2, retry_delay_seconds=1)
    flaky = add_node(api, wf_version, "flaky", builtin_model(api, "flaky", failures=2), "{{input}}")
    broken = add_node(
        api, wf_version, "broken", builtin_model(api, "fail"), "{{input}}", on_failure="continue"
    )
    last = add_node(api, wf_version, "last", builtin_model(api, "uppercase"), "{{input}}")
    connect(api, wf_version, (flaky, broken), (broken, last))
    run = pending_run(workflow_id, wf_version, dataset_id, version_id)
    started(run)

    assert batch_items.run_items(run, entries(run)) == {"done": 1}

    outcome = stored(run, ["only"])["only"]
    nodes = outcome["nodes"]
    assert (nodes[flaky]["status"], nodes[flaky]["attempts"], len(nodes[flaky]["attempt_errors"])) == (
        "completed",
        3,
        2,
    )
    assert nodes[broken]["status"] == "failed" and nodes[broken]["attempts"] == 1
    assert (outcome["status"], outcome["output"], nodes[last]["output"]) == ("completed", "T", "T")


def test_one_item_is_read_in_a_constant_number_of_calls(api: Any) -> None:
    # Given two finished batches, of 20 and of 1,200 items (one and three index buckets)
    def finished(count: int) -> RunRef:
        dataset_id, version_id = dataset(api, [{"id": f"i{i}", "text": f"t{i}"} for i in range(count)])
        workflow_id, wf_version = workflow(api, [UPPER])
        run = pending_run(workflow_id, wf_version, dataset_id, version_id, parallelism=50)
        started(run)
        items = entries(run)
        for start in range(0, count, 50):
            batch_items.run_items(run, items[start : start + 50])
        batch.complete(run)
        compaction_ended(run)  # its reads are not this test's
        return run

    small, large = finished(20), finished(1200)

    # When one item of each is read
    def read(run: RunRef, item_id: str) -> tuple[BatchItemDetail, collections.Counter[str]]:
        with aws_calls() as calls:
            item = batch_results.get_item(TENANT, run.workflow_id, run.execution_id, item_id)
        return item, calls

    small_item, small_calls = read(small, "i7")
    large_item, large_calls = read(large, "i1111")

    # Then both cost the same calls: the execution, two index reads, the list line, the item's
    # pointer and one ranged read of its child's object
    assert large_item.output == "T1111" and small_item.output == "T7"
    assert (
        large_item.node_executions
        and large_item.node_executions[next(iter(large_item.node_executions))].prompt == "t1111"
    )
    assert large_calls == small_calls, (dict(large_calls), dict(small_calls))
    assert large_calls == collections.Counter({"dynamodb.GetItem": 2, "s3.GetObject": 4}), large_calls
    with pytest.raises(NotFound):
        batch_results.get_item(TENANT, large.workflow_id, large.execution_id, "nope")


def test_near_its_deadline_a_child_records_what_finished_and_starts_no_attempt_it_cannot_end(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relayflow_runtime.providers import builtin

    # Given a model that sleeps as many seconds as its prompt says (counting its calls)
    calls: collections.Counter[str] = collections.Counter()

    def sleep_as_told(config: Any, prompt: str, ctx: Any) -> str:
        calls[prompt] += 1
        time.sleep(float(prompt))
        return prompt

    monkeypatch.setitem(builtin.MODELS, "sleep", sleep_as_told)
    # And a batch of two quick items and a slow one, nodes of 2 s with one retry
    dataset_id, version_id = dataset(
        api, [{"id": "quick0", "text": "0"}, {"id": "quick1", "text": "0"}, {"id": "slow", "text": "3"}]
    )
    workflow_id, wf_version = workflow(
        api, [("nap", {"model": "sleep"}, {"input_template": "{{input}}", "timeout": 2})], max_retries=1
    )
    run = pending_run(workflow_id, wf_version, dataset_id, version_id)
    started(run)
    items = entries(run)

    # When the child's invocation has 2.5 s left beside the time it keeps to record
    remaining_ms = int((RECORD_MARGIN_SECONDS + 2.5) * 1000)
    with pytest.raises(batch_items.ChildDeadline) as raised:
        batch_items.run_items(run, items, remaining_ms=remaining_ms)

    # Then the quick items are recorded before the deadline, and the slow item's retry (2 s more)
    # was never started
    assert "1 of 3 items did not finish" in str(raised.value)
    assert calls["3"] == 1
    finished = stored(run, ["quick0", "quick1", "slow"])
    assert sorted(finished) == ["quick0", "quick1"]
    assert all(finished[i]["status"] == "completed" for i in ("quick0", "quick1"))
    # And the machine's Catch (items_failed) records only the unfinished item, saying why
    error = {"Error": "ChildDeadline", "Cause": str(raised.value)}
    assert batch_items.items_failed(run, items, error) == {"failed": 1}
    slow = stored(run, ["slow"])["slow"]
    assert slow["status"] == "failed" and "ChildDeadline" in slow["error"]
    counters = deps.stores().batches.counters(TENANT, run.execution_id, consistent=True)
    assert (counters["processed_items"], counters["failed_items"]) == (3, 1)
