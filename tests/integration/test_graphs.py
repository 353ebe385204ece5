"""Workflows as graphs, end to end on the local stack: fan-out/fan-in in parallel, joins that wait
for every parent, templates over upstream outputs (JSON included), progress in topological order."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.support.graphs import TERMINAL, add_node, builtin_model, connect, interval, new_version, ok, run

# One stack for the module: each test builds and runs workflows of its own.
pytestmark = pytest.mark.shared_stack


def test_fan_out_fan_in_runs_branches_in_parallel_and_joins_both(api: Any) -> None:
    # Given A → B, A → C, B → D, C → D where B and C sleep (0.6 s and 0.9 s) and D's prompt
    # quotes both branches by name and its {{input}} (the two parents' outputs)
    echo, sleep_b, sleep_c = (
        builtin_model(api, "echo"),
        builtin_model(api, "sleep", seconds=0.6),
        builtin_model(api, "sleep", seconds=0.9),
    )
    workflow_id, version_id = new_version(api, max_retries=0)
    a = add_node(api, version_id, "A", echo, "A({{input}})")
    b = add_node(api, version_id, "B", sleep_b, "B({{input}})")
    c = add_node(api, version_id, "C", sleep_c, "C({{input}})")
    d = add_node(
        api, version_id, "D", echo, "left={{nodes.B}} right={{nodes.C}} first={{nodes.A}}\n{{input}}"
    )
    connect(api, version_id, (a, b), (a, c), (b, d), (c, d))

    # When it runs
    execution, progress = run(api, workflow_id, "hi")

    # Then it completes with the join's output as the result
    assert execution["status"] == "completed", execution["error"]
    nodes = execution["node_executions"]
    join_prompt = "left=B(A(hi)) right=C(A(hi)) first=A(hi)\nB(A(hi))\n\nC(A(hi))"
    assert nodes[d]["prompt"] == join_prompt
    assert execution["results"]["output"] == join_prompt
    # And the two branches overlapped in time (each started before the other finished)
    b_start, b_end = interval(nodes[b])
    c_start, c_end = interval(nodes[c])
    assert b_start < c_end and c_start < b_end, (nodes[b], nodes[c])
    # And the join started only after both of its parents had finished
    d_start, _ = interval(nodes[d])
    assert d_start >= b_end and d_start >= c_end
    assert interval(nodes[a])[1] <= min(b_start, c_start)
    # And progress only moved forward through the topological order A, B, C, D
    order = [a, b, c, d]
    indexes = [idx for idx, _ in progress]
    assert indexes == sorted(indexes)
    assert all(node_id == order[idx] for idx, node_id in progress if node_id)
    assert progress[-1] == (3, d)


def test_a_join_waits_for_its_slowest_parent(api: Any) -> None:
    # Given two roots of different speeds feeding one join (no common ancestor)
    fast, slow, echo = (
        builtin_model(api, "sleep", seconds=0.1),
        builtin_model(api, "sleep", seconds=0.7),
        builtin_model(api, "echo"),
    )
    workflow_id, version_id = new_version(api, max_retries=0)
    quick = add_node(api, version_id, "quick", fast, "quick:{{input}}")
    careful = add_node(api, version_id, "careful", slow, "careful:{{input}}")
    join = add_node(api, version_id, "join", echo, "{{input}}")
    connect(api, version_id, (quick, join), (careful, join))

    # When it runs
    execution, _ = run(api, workflow_id, "x")

    # Then the join starts after the slow parent ends, and {{input}} joins the parents' outputs with a
    # blank line, in the order the parents were created
    assert execution["status"] == "completed", execution["error"]
    nodes = execution["node_executions"]
    assert interval(nodes[join])[0] >= interval(nodes[careful])[1]
    assert nodes[join]["prompt"] == "quick:x\n\ncareful:x"


def test_json_outputs_reach_later_templates_by_field_and_in_loops(api: Any) -> None:
    # Given a node that echoes JSON and declares output_format "json", and a later node whose
    # template reads a field, loops over a list of objects and tests a boolean
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api, max_retries=0)
    add_node(api, version_id, "extract", echo, "{{input}}", output_format="json")
    add_node(
        api,
        version_id,
        "report",
        echo,
        "{{nodes.extract.title}}:{{#nodes.extract.people}} {{name}}{{/nodes.extract.people}}"
        "{{#nodes.extract.final}} (final){{/nodes.extract.final}} n={{nodes.extract.count}}",
    )
    document = '{"title": "Q3 & Q4", "people": [{"name": "Ada"}, {"name": "Lin"}], "final": true, "count": 0}'

    # When it runs (no edges: the nodes run in creation order)
    execution, _ = run(api, workflow_id, document)

    # Then the JSON node's output is the text the model produced, its parsed_output the object,
    # and the report reads its fields (no HTML escaping)
    assert execution["status"] == "completed", execution["error"]
    nodes = {n["name"]: n for n in execution["node_executions"].values()}
    assert nodes["extract"]["output"] == document
    assert nodes["extract"]["parsed_output"]["people"][1] == {"name": "Lin"}
    assert nodes["report"]["parsed_output"] is None
    assert execution["results"]["output"] == "Q3 & Q4: Ada Lin (final) n=0"


def test_a_node_declaring_json_that_returns_text_fails_without_retries(api: Any) -> None:
    # Given a JSON-declared node fed plain text
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api, max_retries=2, retry_delay_seconds=1)
    node = add_node(api, version_id, "extract", echo, "{{input}}", output_format="json")

    # When it runs
    execution, _ = run(api, workflow_id, "not json")

    # Then the run fails on that node at the first attempt (a permanent error)
    assert execution["status"] == "failed"
    assert execution["node_executions"][node]["attempts"] == 1
    assert "declared JSON output" in execution["error"]


def test_input_after_a_parent_that_failed_with_continue_is_the_last_successful_output(api: Any) -> None:
    # Given A → B → C where B always fails but may be skipped (on_failure "continue")
    echo, fail = builtin_model(api, "echo"), builtin_model(api, "fail", message="B is down")
    workflow_id, version_id = new_version(api, max_retries=0)
    a = add_node(api, version_id, "A", echo, "A({{input}})")
    b = add_node(api, version_id, "B", fail, "{{input}}", on_failure="continue")
    c = add_node(api, version_id, "C", echo, "C({{input}})")
    connect(api, version_id, (a, b), (b, c))

    # When it runs
    execution, _ = run(api, workflow_id, "hi")

    # Then B is recorded as failed, and C's {{input}} is A's output, the last successful one
    assert execution["status"] == "completed", execution["error"]
    assert execution["node_executions"][b]["status"] == "failed"
    assert execution["node_executions"][b]["error"] == "B is down"
    assert execution["node_executions"][c]["prompt"] == "C(A(hi))"


def test_a_fan_out_in_a_batch_run_counts_each_node_once_per_item(api: Any) -> None:
    # Given a diamond whose nodes cost $1 per 1k tokens (words, for builtin models), and two items
    echo = str(
        ok(
            api(
                "POST",
                "/models",
                {
                    "name": "priced-echo",
                    "provider": "builtin",
                    "config": {"model": "echo", "price": {"input_per_1k": 1, "output_per_1k": 1}},
                },
            )
        )["id"]
    )
    # (60 s node timeouts: a worst-case item of three levels must fit in one 15-minute invocation)
    workflow_id, version_id = new_version(api, max_retries=0, node_timeout=60)
    a = add_node(api, version_id, "A", echo, "{{input}}")
    b = add_node(api, version_id, "B", echo, "B {{input}}")
    c = add_node(api, version_id, "C", echo, "C {{input}}")
    d = add_node(api, version_id, "D", echo, "{{nodes.B}}|{{nodes.C}}|{{item.id}}")
    connect(api, version_id, (a, b), (a, c), (b, d), (c, d))
    dataset = ok(api("POST", "/datasets", {"name": "two"}))
    dataset_version = ok(api("POST", f"/datasets/{dataset['id']}/versions", {}))
    items = [{"id": "i1", "text": "a b"}, {"id": "i2", "text": "c d"}]
    ok(
        api("POST", f"/datasets/{dataset['id']}/versions/{dataset_version['id']}/items", {"items": items}),
        200,
    )

    # When the batch runs
    body = {
        "input_mode": "batch",
        "batch_config": {"dataset_id": dataset["id"], "dataset_version_id": dataset_version["id"]},
    }
    execution = ok(api("POST", f"/workflows/{workflow_id}/executions", body))
    path = f"/workflows/{workflow_id}/executions/{execution['id']}"
    deadline = time.monotonic() + 30
    while execution["status"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.05)
        execution = ok(api("GET", path), 200)

    # Then every item's join saw both branches
    assert execution["status"] == "completed", execution["error"]
    results = ok(api("GET", f"{path}/results"), 200)["items"]
    assert [r["output"] for r in results] == ["B a b|C a b|i1", "B c d|C c d|i2"]
    # And usage counts each node once per item: A 2, B 3, C 3, D 5 words in (and out), twice
    assert execution["usage"] == {"input_tokens": 26, "output_tokens": 26, "estimated_cost": 0.052}
