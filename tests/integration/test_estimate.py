"""A batch's estimate before it starts (POST /workflows/{wf}/estimate, services/estimate.py): held
to the run that follows it."""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

import pytest

from relayflow.client import ApiError, Client
from relayflow_runtime.schemas import api
from relayflow_runtime.services import estimate as estimate_service

# One stack for the module: each test makes its own workflows and datasets.
pytestmark = pytest.mark.shared_stack
TENANT = "default"

WORDS = [
    "the",
    "parcel",
    "came",
    "late",
    "but",
    "the",
    "support",
    "team",
    "was",
    "friendly",
    "and",
    "the",
    "refund",
    "quick",
]


def sentence(chooser: random.Random, words: int) -> str:
    return " ".join(chooser.choice(WORDS) for _ in range(words)).capitalize() + "."


def dataset(client: Client, items: list[dict[str, Any]]) -> tuple[str, str]:
    created = client.create_dataset(name="estimate")
    version = client.create_dataset_version(dataset_id=created.id)
    client.upload_dataset_items(dataset_id=created.id, version_id=version.id, items=items)
    return created.id, version.id


def chain(client: Client, *nodes: tuple[str, str, dict[str, Any], dict[str, Any]]) -> str:
    """A workflow whose active version chains (name, provider, model config, node config)."""
    workflow = client.create_workflow(name="estimate")
    version = client.create_workflow_version(workflow_id=workflow.id, config={"max_retries": 0})
    for name, provider, model_config, node_config in nodes:
        model = client.create_model(name=name, provider=provider, config=model_config)
        client.create_workflow_node(version_id=version.id, name=name, entity_id=model.id, config=node_config)
    return workflow.id


def within(estimated: float, measured: float, share: float = 0.10) -> bool:
    return abs(estimated - measured) <= share * measured


def test_the_estimate_is_within_10_percent_of_the_calls_and_tokens_of_the_run_that_follows(
    client: Client,
) -> None:
    # Given 300 reviews of two sentences (19 to 21 words), two of every three kept by the filter
    chooser = random.Random(7)
    items = [
        {
            "id": f"r{n:03d}",
            "text": sentence(chooser, chooser.randint(9, 10))
            + " "
            + sentence(chooser, chooser.randint(10, 11)),
            "keep": n % 3 != 0,
        }
        for n in range(300)
    ]
    dataset_id, version_id = dataset(client, items)
    # And a three-node chain: a priced template node, uppercase, a one-sentence summary
    workflow_id = chain(
        client,
        (
            "Frame",
            "builtin",
            {"model": "echo", "price": {"input_per_1k": 0.5, "output_per_1k": 1.5}},
            {"input_template": "Review {{item.id}}: {{input}}"},
        ),
        ("Shout", "builtin", {"model": "uppercase"}, {}),
        ("Gist", "builtin", {"model": "summarize", "sentences": 1}, {}),
    )
    batch = {
        "dataset_id": dataset_id,
        "dataset_version_id": version_id,
        "filter_query": "keep == `true`",
        "parallelism": 10,
    }

    # When the batch is estimated (a sample of 20 items), then run
    estimate = client.estimate_workflow_execution(workflow_id, batch_config=batch)
    assert client.get_workflow_executions(workflow_id) == []  # the estimate started nothing
    execution = client.execute_workflow(workflow_id, input_mode="batch", batch_config=batch)
    execution = client.wait_for_execution(workflow_id, execution.id, poll_interval=0.2, timeout=120)
    assert execution.status == "completed" and not execution.progress.failed_items

    # Then the kept items are exact, and the calls, tokens and cost within 10% of the measured run
    kept = [item for item in items if item["keep"]]
    assert (estimate.items, estimate.items_exact, estimate.sample_size) == (len(kept), True, 20)
    calls = sum(
        len(client.get_execution_item(workflow_id, execution.id, item["id"])["node_executions"])
        for item in kept
    )
    assert calls == 3 * len(kept)
    assert within(estimate.model_calls, calls)
    assert execution.usage is not None and execution.usage.estimated_cost is not None
    assert within(estimate.input_tokens, execution.usage.input_tokens), (estimate, execution.usage)
    assert within(estimate.output_tokens, execution.usage.output_tokens), (estimate, execution.usage)
    assert estimate.model_cost is not None and within(estimate.model_cost, execution.usage.estimated_cost)
    # And each node says its tokens were computed (builtin models), AWS's cost and the time are set
    assert [n.output_tokens_from for n in estimate.nodes] == ["dry_run"] * 3
    assert [n.model_cost == 0 for n in estimate.nodes] == [False, True, True]
    assert 0 < estimate.aws_cost < 0.01
    assert estimate.duration_seconds >= math.ceil(len(kept) / 10) * 3 * 0.05


def test_a_model_that_must_be_called_is_assumed_as_long_as_its_prompt_and_unpriced(client: Client) -> None:
    # Given a Lambda model (its answer needs the call) without a price, after a builtin node
    dataset_id, version_id = dataset(client, [{"id": f"i{n}", "text": "x" * 400} for n in range(5)])
    workflow_id = chain(
        client,
        ("Echo", "builtin", {"model": "echo"}, {}),
        ("Mine", "lambda", {"function_name": "my-model", "max_tokens": 50}, {}),
    )

    # When a batch over it is estimated
    estimate = client.estimate_workflow_execution(
        workflow_id, batch_config={"dataset_id": dataset_id, "dataset_version_id": version_id}
    )

    # Then its tokens are the prompt's characters / 4, its output capped by max_tokens, and no
    # cost is claimed for the run's models
    mine = estimate.nodes[1]
    assert (mine.output_tokens_from, mine.model_calls) == ("prompt_length", 5)
    assert (mine.input_tokens, mine.output_tokens) == (5 * 100, 5 * 50)
    assert mine.model_cost is None and estimate.model_cost is None
    assert estimate.duration_seconds > 2  # a hosted model's call is not free of time


def test_an_estimate_refuses_what_a_start_refuses(client: Client) -> None:
    dataset_id, version_id = dataset(client, [{"id": "a", "body": "no text field"}])
    workflow_id = chain(client, ("Echo", "builtin", {"model": "echo"}, {}))
    batch = {"dataset_id": dataset_id, "dataset_version_id": version_id}

    with pytest.raises(ApiError) as unknown_field:
        client.estimate_workflow_execution(workflow_id, batch_config=batch)
    with pytest.raises(ApiError) as bad_filter:
        client.estimate_workflow_execution(
            workflow_id, batch_config={**batch, "input_field": "body", "filter_query": "[["}
        )

    assert (unknown_field.value.status, unknown_field.value.code) == (409, "unknown_input_field")
    assert (bad_filter.value.status, bad_filter.value.code) == (400, "invalid_filter")


def test_a_batch_validation_warns_of_sampled_items_lacking_a_field_a_template_uses(client: Client) -> None:
    # Given items of which two lack "title", and a node whose template needs it (another only in a
    # section, which renders nothing for a missing field and runs)
    items = [{"id": f"d{n}", "text": "body", **({} if n in (2, 5) else {"title": f"T{n}"})} for n in range(8)]
    dataset_id, version_id = dataset(client, items)
    workflow_id = chain(
        client,
        ("Titled", "builtin", {"model": "echo"}, {"input_template": "{{item.title}}: {{input}}"}),
        ("Maybe", "builtin", {"model": "echo"}, {"input_template": "{{#item.title}}{{.}}{{/item.title}}"}),
    )
    version = client.get_workflow(workflow_id).active_version_id or ""

    # When the version is validated for a batch over that dataset version
    report = client.validate_workflow_version(
        workflow_id, version, input_mode="batch", dataset_id=dataset_id, dataset_version_id=version_id
    )

    # Then it is valid (it can run), with one warning naming the field, the node and the items
    assert report["valid"] is True and report["problems"] == []
    (warning,) = report["warnings"]
    assert warning["code"] == "item_field_missing"
    assert "node 'Titled' uses {{item.title}}, which 2 of the first 8 items" in warning["message"]
    assert "('d2', 'd5')" in warning["message"]
    # And without a dataset nothing is sampled; a dataset without its version says so
    assert client.validate_workflow_version(workflow_id, version, input_mode="batch")["warnings"] == []
    half = client.validate_workflow_version(workflow_id, version, dataset_id=dataset_id)
    assert [w["code"] for w in half["warnings"]] == ["dataset_incomplete"]


def test_an_estimate_stops_reading_at_its_bounds_and_says_it_extrapolated_from_a_sample(
    client: Client,
) -> None:
    # Given 40 items, every other one kept by the filter
    items = [{"id": f"b{n:02d}", "text": "x" * 100, "keep": n % 2 == 0} for n in range(40)]
    dataset_id, version_id = dataset(client, items)
    workflow_id = chain(client, ("Echo", "builtin", {"model": "echo"}, {}))
    body = api.EstimateBatch.model_validate(
        {"batch_config": {"dataset_id": dataset_id, "dataset_version_id": version_id, "filter_query": "keep"}}
    )
    ticks = itertools.count()

    def estimated(**bounds: Any) -> Any:
        return estimate_service.estimate_batch(
            TENANT, workflow_id, body, estimate_service.ReadBounds(**bounds)
        )

    # When the read is bounded by items, by bytes of the item list, or by time (each read a tick)
    by_items = estimated(items=10)
    by_bytes = estimated(bytes=len(json.dumps({"id": "b00", "item": items[0]})) * 5)
    by_time = estimated(seconds=8, clock=lambda: float(next(ticks)))
    whole = estimated()

    # Then each says it stopped, why, and extrapolates the kept share of what it read to all 40
    assert (by_items.items_exact, by_items.read_stopped_by, by_items.items_read, by_items.items) == (
        False,
        "items",
        10,
        20,
    )
    assert (by_bytes.items_exact, by_bytes.read_stopped_by) == (False, "bytes")
    assert 4 <= by_bytes.items_read <= 6 and by_bytes.items == round(
        40 * math.ceil(by_bytes.items_read / 2) / by_bytes.items_read
    )
    assert (by_time.items_exact, by_time.read_stopped_by, by_time.items_read) == (False, "seconds", 8)
    assert by_items.model_calls == by_items.items  # the sample's calls scaled to the extrapolated items
    # And an unbounded read of the whole version is exact, as the API answers it
    assert (whole.items_exact, whole.read_stopped_by, whole.items_read, whole.items) == (True, None, 40, 20)
    answered = client.estimate_workflow_execution(
        workflow_id,
        batch_config={"dataset_id": dataset_id, "dataset_version_id": version_id, "filter_query": "keep"},
    )
    assert (answered.items_exact, answered.read_stopped_by, answered.items) == (True, None, 20)


def test_the_bytes_an_estimate_reads_count_the_items_stored_apart(client: Client) -> None:
    # Given a first item far larger than an item list keeps inline (its own object), then small ones
    items = [{"id": "big", "text": "word " * 30_000}] + [{"id": f"s{n}", "text": "t"} for n in range(9)]
    dataset_id, version_id = dataset(client, items)
    workflow_id = chain(client, ("Echo", "builtin", {"model": "echo"}, {}))
    body = api.EstimateBatch.model_validate(
        {"batch_config": {"dataset_id": dataset_id, "dataset_version_id": version_id}}
    )

    # When the read may take 100 KB, far more than the list's own lines
    found = estimate_service.estimate_batch(
        TENANT, workflow_id, body, estimate_service.ReadBounds(bytes=100_000)
    )

    # Then the big item's 150 KB object counted: the read stopped at it, and extrapolated
    assert (found.read_stopped_by, found.items_read, found.items_exact, found.items) == (
        "bytes",
        1,
        False,
        10,
    )
