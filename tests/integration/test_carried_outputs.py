"""A parent that releases its child's gate hands it the parents' outputs (the gate's task output,
RunNode's ``carried``): a node so released reads no node records for its template (issue 20); it
queries them when what was carried is not all it reads, and renders the same either way."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.gates import PARKED_AND_RELEASED, gate_outcomes
from tests.support.graphs import add_node, builtin_model, connect, new_version, run
from tests.support.items import execution_item

from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters.table.executions import ExecutionStore
from relayflow_runtime.services import deps, run_machine

pytestmark = pytest.mark.shared_stack

#: How long a root waits before it runs: its children's gates park first (the roots' Map and the
#: gated Map start together; a fast root that ended before a gate's write would let its child run
#: at once, reading the records, which is right but not the path these tests look at).
ROOT_DELAY_SECONDS = 0.5


@pytest.fixture(autouse=True)
def roots_after_the_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    real = run_machine.run_node

    def run_node(run: Any, node: Any, attempt: int, carried: Any) -> Any:
        if not node.parents:
            time.sleep(ROOT_DELAY_SECONDS)
        return real(run, node, attempt, carried)

    monkeypatch.setattr(run_machine, "run_node", run_node)


@pytest.fixture
def queried(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the nodes whose attempt queried its run's node records for its template."""
    names: list[str] = []
    real = ExecutionStore.node_records

    def node_records(self: ExecutionStore, tenant: str, execution_id: str) -> list[dict[str, Any]]:
        caller = sys._getframe(1)
        if caller.f_code.co_name in ("_upstream_outputs", "run_node"):  # (an attempt's read)
            names.append(caller.f_locals["node"].name)
        return real(self, tenant, execution_id)

    monkeypatch.setattr(ExecutionStore, "node_records", node_records)
    yield names


def released(local_stack: LocalStack, execution: dict[str, Any]) -> set[str]:
    """The ids of the nodes whose gate parked and was released by a parent."""
    arn = execution_item("default", execution["id"])["sfn_execution_arn"]
    return {
        node
        for node, how in gate_outcomes(local_stack.client("stepfunctions"), arn)
        if how == PARKED_AND_RELEASED
    }


def diamond(api: Any, join_template: str) -> tuple[str, dict[str, str]]:
    """A → B, A → C, B → D, C → D (echo models: the output is the prompt)."""
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api, max_retries=0)
    ids = {
        "A": add_node(api, version_id, "A", echo, "A({{input}})"),
        "B": add_node(api, version_id, "B", echo, "B({{input}})"),
        "C": add_node(api, version_id, "C", echo, "C({{input}})"),
        "D": add_node(api, version_id, "D", echo, join_template),
    }
    connect(
        api,
        version_id,
        (ids["A"], ids["B"]),
        (ids["A"], ids["C"]),
        (ids["B"], ids["D"]),
        (ids["C"], ids["D"]),
    )
    return workflow_id, ids


def test_a_chain_of_released_nodes_reads_no_records(
    local_stack: LocalStack, api: Any, queried: list[str]
) -> None:
    # Given a chain of three nodes
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api, max_retries=0)
    ids = [add_node(api, version_id, name, echo, f"{name}({{{{input}}}})") for name in ("A", "B", "C")]
    connect(api, version_id, (ids[0], ids[1]), (ids[1], ids[2]))
    # When it runs
    execution, _ = run(api, workflow_id, "hi")
    # Then each node rendered its parent's output, and none queried the records for it (the root
    # reads none; the others were handed their parent's output when released)
    assert execution["status"] == "completed", execution["error"]
    assert execution["results"]["output"] == "C(B(A(hi)))"
    assert {ids[1], ids[2]} <= released(local_stack, execution)
    assert queried == []


def test_a_join_released_by_its_last_parent_gets_both_parents_outputs(
    local_stack: LocalStack, api: Any, queried: list[str]
) -> None:
    # Given a diamond whose join quotes both parents by name and its {{input}}
    workflow_id, ids = diamond(api, "left={{nodes.B}} right={{nodes.C}}\n{{input}}")
    # When it runs
    execution, _ = run(api, workflow_id, "hi")
    # Then the join rendered both parents' outputs, read from what its last parent carried
    assert execution["status"] == "completed", execution["error"]
    assert execution["results"]["output"] == "left=B(A(hi)) right=C(A(hi))\nB(A(hi))\n\nC(A(hi))"
    if ids["D"] in released(local_stack, execution):  # (else its gate found both parents done)
        assert "D" not in queried
    assert queried in ([], ["D"])
    # And the parents' outputs kept on the join's record for its release are gone once it ran
    join = next(
        r
        for r in deps.stores().executions.node_records("default", execution["id"])
        if r["node_id"] == ids["D"]
    )
    assert [key for key in join if key.startswith("carried")] == []


def test_a_join_that_reads_an_ancestor_queries_the_records(
    api: Any, queried: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a join whose template names its grandparent, which no parent carries
    workflow_id, ids = diamond(api, "first={{nodes.A}} {{input}}")
    put_on_records: dict[str, Any] = {}
    real = ExecutionStore.mark_parent_done

    def mark_parent_done(self: ExecutionStore, *args: Any, carried: Any = None) -> Any:
        put_on_records[args[2]] = carried
        return real(self, *args, carried=carried)

    monkeypatch.setattr(ExecutionStore, "mark_parent_done", mark_parent_done)
    # When it runs
    execution, _ = run(api, workflow_id, "hi")
    # Then it read the records and rendered the grandparent's output
    assert execution["status"] == "completed", execution["error"]
    assert execution["results"]["output"] == "first=A(hi) B(A(hi))\n\nC(A(hi))"
    assert queried == ["D"]
    # And its parents put nothing on its record for it (it could not use it: every later write to
    # the record would have paid for it)
    assert ids["D"] in put_on_records and put_on_records[ids["D"]] is None


def test_outputs_past_the_carry_limit_are_read_from_the_records(
    api: Any, queried: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a carry limit smaller than any output
    monkeypatch.setattr(run_machine, "CARRY_LIMIT_BYTES", 8)
    workflow_id, _ = diamond(api, "{{nodes.B}}|{{nodes.C}}")
    # When the diamond runs
    execution, _ = run(api, workflow_id, "hi")
    # Then every node but the root read its parents' outputs from the records, as before
    assert execution["status"] == "completed", execution["error"]
    assert execution["results"]["output"] == "B(A(hi))|C(A(hi))"
    assert sorted(queried) == ["B", "C", "D"]


def test_a_join_of_parents_whose_outputs_would_grow_its_record_past_a_kb_queries_instead(
    api: Any, queried: list[str]
) -> None:
    # Given a diamond whose parents answer with 700 bytes each (1.4 KB together on the join's
    # record, over FAN_IN_CARRY_BYTES), each still under the single-parent carry limit
    workflow_id, _ = diamond(api, "{{nodes.B}}|{{nodes.C}}")
    text = "x" * 690
    assert 2 * len(text) > run_machine.FAN_IN_CARRY_BYTES and len(text) < run_machine.CARRY_LIMIT_BYTES
    # When the diamond runs
    execution, _ = run(api, workflow_id, text)
    # Then B and C were handed A's output, and only the join read its parents' from the records
    assert execution["status"] == "completed", execution["error"]
    assert execution["results"]["output"] == f"B(A({text}))|C(A({text}))"
    assert queried == ["D"]


def test_a_parent_marked_done_twice_keeps_its_output_once_and_the_last_finds_every_parents(
    local_stack: LocalStack,
) -> None:
    # Given a pending node of two parents
    store = deps.stores().executions
    execution_id = f"x-{uuid.uuid4().hex[:8]}"
    store.put_node_record_if_absent("default", execution_id, "N#C", {"node_id": "C", "status": "pending"})
    a = {"output": "out A", "parsed_output": None}
    b = {"output": {"$s3": "key/of/b"}, "parsed_output": {"score": 1.5, "tags": ["x"]}}
    # When one parent's end is recorded twice (a repeated task), then the other's
    store.mark_parent_done("default", execution_id, "C", "A", carried=a)
    store.mark_parent_done("default", execution_id, "C", "A", carried=a)
    record = store.mark_parent_done("default", execution_id, "C", "B", carried=b)
    # Then the record the last one gets back has each parent once, with its packed output as written
    assert sorted(record["done_parents"]) == ["A", "B"]
    assert record["carried"] == {"A": a, "B": b}


def test_a_json_parents_numbers_render_alike_carried_or_read_from_its_record(
    local_stack: LocalStack, api: Any, queried: list[str]
) -> None:
    # Given a parent that answers JSON with a whole float, and a child that quotes the value
    echo = builtin_model(api, "echo")
    workflow_id, version_id = new_version(api, max_retries=0)
    parent = add_node(api, version_id, "P", echo, "{{input}}", output_format="json")
    child = add_node(api, version_id, "C", echo, "n={{nodes.P.n}}")
    connect(api, version_id, (parent, child))
    # When it runs, the child released by its parent (what it reads was carried to it)
    execution, _ = run(api, workflow_id, '{"n": 1.0}')
    # Then it rendered the number as the parent's record keeps it, as a Query would have read it
    assert execution["status"] == "completed", execution["error"]
    assert child in released(local_stack, execution) and queried == []
    assert execution["results"]["output"] == "n=1"
