"""The pure part of batch runs: sizing a batch, judging it, keys and shards, the item index format."""

from __future__ import annotations

import collections
import random

import pytest

from relayflow_runtime.domain import item_index
from relayflow_runtime.domain.batch import (
    MAX_ITEMS_PER_CHILD,
    MAX_KEYED_ID_BYTES,
    NODE_THREADS,
    OUTCOME_BUDGET_BYTES,
    OUTCOME_SHARDS,
    RECORD_BLOCK,
    RECORD_MARGIN_SECONDS,
    BatchCounts,
    BatchSettings,
    batch_settings,
    default_items_per_child,
    item_key,
    judge,
    most_items_per_child,
    outcome_shard,
)
from relayflow_runtime.domain.engine import (
    GATE_MARGIN_SECONDS,
    LAMBDA_LIMIT_SECONDS,
    Plan,
    gate_timeouts,
    worst_case_item_seconds,
)


def plan(timeouts: list[int], max_retries: int = 0, delay: int = 1, *, fan_out: bool = False) -> Plan:
    """A chain of nodes with these timeouts (``fan_out``: every node after the first its child)."""
    nodes = [
        {
            "id": f"n{i}",
            "name": f"n{i}",
            "idx": i,
            "template": "{{input}}",
            "node_timeout": timeout,
            "parents": [f"n{0 if fan_out else i - 1}"] if i else [],
            "model": {"id": "m", "provider": "builtin", "config": {"model": "echo"}},
        }
        for i, timeout in enumerate(timeouts)
    ]
    config = {"max_retries": max_retries, "retry_delay_seconds": delay}
    return Plan.model_validate(
        {"workflow_id": "w", "version_id": "v", "mode": "batch", "config": config, "nodes": nodes}
    )


@pytest.mark.parametrize(
    ("parallelism", "per_child", "children"),
    [
        (1, 1, 1),
        (2, 1, 2),
        (5, 1, 5),
        (10, 5, 2),
        (15, 5, 3),
        (25, 5, 5),
        (30, 10, 3),
        (40, 20, 2),
        (50, 10, 5),
        (97, 8, 12),
        (100, 20, 5),
    ],
)
def test_a_batch_runs_parallelism_items_at_once_over_children_of_items(
    parallelism: int, per_child: int, children: int
) -> None:
    settings = batch_settings(plan([30]), parallelism, 1000, "k")
    assert (settings.items_per_child, settings.children) == (per_child, children)
    assert settings.items_per_child == default_items_per_child(parallelism)


def test_parallelism_is_a_maximum_never_exceeded_and_nearly_reached() -> None:
    # 15 was 3 children of 7: 21 items at once
    for parallelism in range(1, 101):
        settings = batch_settings(plan([30]), parallelism, 1000, "k")
        at_once = settings.children * settings.items_per_child
        assert at_once <= parallelism, parallelism
        assert at_once >= parallelism * 0.9 or parallelism - at_once < settings.items_per_child, parallelism
        assert settings.items_per_child >= min(5, max(1, parallelism // 4)), parallelism


def test_children_over_one_record_block_are_whole_blocks_and_keep_ninety_percent_at_once() -> None:
    # A child's own costs (its S3 PUT, Express and Lambda requests, transaction) are shared by more
    # items at large parallelism, without two children ever writing one pointer record
    larger = 0
    for parallelism in range(1, 101):
        settings = batch_settings(plan([30]), parallelism, 100_000, "k")
        size, children = settings.items_per_child, settings.children
        assert size <= MAX_ITEMS_PER_CHILD
        if size > RECORD_BLOCK:
            larger += 1
            assert size % RECORD_BLOCK == 0, parallelism
            assert children >= 2 and size * children >= 0.9 * parallelism, parallelism
    assert larger >= 20  # 40, 60, 80, 100 ... not a corner case


def test_a_wide_plan_gets_no_more_items_a_child_than_its_nodes_have_threads() -> None:
    # Given a root and 30 nodes that all start once it ends: 30 nodes of an item at once
    wide = plan([10] * 31, fan_out=True)
    # Then a child's items never wait for a node thread: their worst case stays one item's
    for parallelism in (10, 40, 100):
        settings = batch_settings(wide, parallelism, 1000, "k")
        assert settings.items_per_child * 30 <= NODE_THREADS, parallelism
        assert settings.children * settings.items_per_child <= parallelism
    # A chain of as many nodes runs one node of an item at a time: not narrowed for threads
    assert most_items_per_child(plan([10] * 31)) > most_items_per_child(wide)


def test_a_long_plan_gets_no_more_items_a_child_than_its_values_fit_in_memory() -> None:
    # 40 nodes (the most a version holds) whose prompts and outputs may each be 256 KiB inline:
    # 20 MiB an item at most, 12 items in 256 MB
    long = plan([5] * 40)
    assert most_items_per_child(long) == 12
    assert batch_settings(long, 100, 1000, "k").items_per_child <= 12
    assert most_items_per_child(plan([5] * 3)) == MAX_ITEMS_PER_CHILD


def test_a_child_of_per_item_records_fits_one_transaction_whatever_the_plan() -> None:
    # Lists without ordinals record a child's items per item in one transaction (100 actions, 4 MB)
    for the_plan in (plan([5]), plan([5] * 3), plan([5] * 20, fan_out=True)):
        for parallelism in range(1, 101):
            size = batch_settings(the_plan, parallelism, 1000, "k").items_per_child
            assert size + 1 <= 100 and size * OUTCOME_BUDGET_BYTES <= 4_000_000


def test_children_are_express_when_a_worst_case_item_fits_in_five_minutes() -> None:
    # 3 nodes x (60 s x 3 attempts) + delays 1 + 2 each = 549 s: Standard, in one invocation
    standard = batch_settings(plan([60, 60, 60], max_retries=2), 10, 5, "k")
    assert (standard.express, standard.child_timeout) == (False, 549 + 15)
    # 3 x 80 s, no retries = 240 s (+ 60 s margin) <= 300 s: Express
    express = batch_settings(plan([80, 80, 80]), 10, 5, "k")
    assert (express.express, express.child_timeout) == (True, 240 + 15)
    # just over: 3 x 81 s = 243 + 60 > 300
    assert batch_settings(plan([81, 81, 81]), 10, 5, "k").express is False


def test_an_express_child_keeps_at_least_30_seconds_after_its_items_for_items_failed() -> None:
    # Given every plan of three nodes of 1..100 s (some fit Express, the largest do not)
    express = [batch_settings(plan([seconds] * 3), 10, 5, "k") for seconds in range(1, 101)]
    express = [settings for settings in express if settings.express]
    assert express
    # Then an Express child whose run_items times out still has 30 s of its 5 minutes to record the error
    assert max(settings.child_timeout for settings in express) + 30 <= 300


@pytest.mark.parametrize("timeouts", [[80, 80, 80], [10], [60, 60, 60], [300], [200, 200]])
@pytest.mark.parametrize("max_retries", [0, 2])
def test_a_worst_case_item_ends_within_its_childs_task_timeout_less_what_recording_keeps(
    timeouts: list[int], max_retries: int
) -> None:
    # run_items starts no attempt that could not end before child_timeout - RECORD_MARGIN_SECONDS
    # (its Task's timeout is child_timeout): a child sized for its worst case must never refuse it.
    the_plan = plan(timeouts, max_retries=max_retries)
    settings = batch_settings(the_plan, 10, 5, "k")
    if settings.child_timeout < LAMBDA_LIMIT_SECONDS:  # not capped by Lambda's own 15 minutes
        assert worst_case_item_seconds(the_plan) <= settings.child_timeout - RECORD_MARGIN_SECONDS


def test_items_without_an_outcome_count_as_failed_and_max_failed_percent_decides() -> None:
    counts = BatchCounts.final(10, {"processed_items": 8, "failed_items": 1, "input_tokens": 5})
    assert (counts.processed_items, counts.failed_items, counts.never_ran) == (10, 3, 2)
    assert counts.usage == {"input_tokens": 5}
    assert judge(counts, None) == ("completed", None)
    assert judge(counts, 30) == ("completed", None)
    assert judge(counts, 29.9) == (
        "failed",
        "3 of 10 items failed (30.0%), more than max_failed_percent (29.9%); 2 of them never ran",
    )
    assert judge(BatchCounts.final(0, {}), 0) == ("completed", None)


def test_item_keys_and_shards_are_stable_and_spread() -> None:
    assert item_key("doc-1") == "doc-1"
    long = "x" * (MAX_KEYED_ID_BYTES + 1)
    assert item_key(long).startswith("h:") and len(item_key(long)) == 66
    assert outcome_shard("doc-1") == outcome_shard("doc-1")
    shards = collections.Counter(outcome_shard(f"item-{i}") for i in range(32_000))
    assert set(shards) == set(range(OUTCOME_SHARDS))
    assert max(shards.values()) < 1.1 * 1000  # within 10% of an even spread


def test_the_index_finds_every_id_in_its_bucket_and_no_other() -> None:
    # Given 5,000 ids (some with spaces, quotes, newlines and other scripts) at list offsets
    rng = random.Random(7)
    ids = [f'id {i} "q"\n{"日本" if i % 3 else ""}' for i in range(5000)]
    buckets = item_index.bucket_count(len(ids))
    assert buckets == 16
    lines: dict[int, bytearray] = collections.defaultdict(bytearray)
    places = {}
    for item_id in ids:
        places[item_id] = (rng.randrange(10**9), rng.randrange(1, 70_000))
        lines[item_index.bucket_of(item_id, buckets)] += item_index.encode_line(item_id, *places[item_id])
    blob = item_index.header(len(lines[b]) for b in range(buckets)) + b"".join(
        bytes(lines[b]) for b in range(buckets)
    )

    # When each is looked up as the service does (two ranges of the index)
    def find(item_id: str) -> tuple[int, int] | None:
        start, end = item_index.header_range(item_index.bucket_of(item_id, buckets))
        bounds = item_index.bucket_range(blob[start : end + 1])
        if bounds is None:
            return None
        return item_index.find_in_bucket(blob[bounds[0] : bounds[1] + 1], item_id)

    # Then each is found where it is, and an unknown id is not
    assert all(find(item_id) == places[item_id] for item_id in ids)
    assert find("id 1") is None
    assert item_index.bucket_count(0) == 1 and item_index.bucket_count(10**9) == item_index.MAX_BUCKETS


def test_a_gate_waits_for_its_ancestors_worst_case_along_the_longest_path() -> None:
    # Given a diamond n0 -> {n1 (100 s), n2 (10 s)} -> n3, each node with 2 retries (delays 1, 2)
    diamond = plan([5, 100, 10, 1], max_retries=2)
    nodes = [node.model_dump() for node in diamond.nodes]
    nodes[2]["parents"] = ["n0"]
    nodes[3]["parents"] = ["n1", "n2"]
    diamond = Plan.model_validate({**diamond.model_dump(), "nodes": nodes})
    # Then a root's gate waits only the margin, and each other's its slowest path of worst cases
    worst = {"n0": 5 * 3 + 3, "n1": 100 * 3 + 3, "n2": 10 * 3 + 3}
    assert gate_timeouts(diamond) == {
        "n0": GATE_MARGIN_SECONDS,
        "n1": worst["n0"] + GATE_MARGIN_SECONDS,
        "n2": worst["n0"] + GATE_MARGIN_SECONDS,
        "n3": worst["n0"] + worst["n1"] + GATE_MARGIN_SECONDS,
    }


def test_a_childs_limit_is_called_child_timeout_and_settings_kept_under_the_old_name_still_read() -> None:
    # item_timeout bounded a child (its items run at once), not an item: settings a run prepared
    # before the rename kept it under that name, and its repeated prepare_batch still reads them
    kept = {
        "items_key": "k",
        "express": True,
        "items_per_child": 2,
        "children": 3,
        "item_timeout": 75,
        "total": 9,
    }
    settings = BatchSettings.model_validate(kept)
    assert settings.child_timeout == 75
    # and the answer still carries the old name too: a batch started on the machine's previous
    # definition reads $.batch.item_timeout from it after a deploy
    assert settings.model_dump()["child_timeout"] == settings.model_dump()["item_timeout"] == 75
