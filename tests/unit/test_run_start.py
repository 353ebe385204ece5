"""What ``start`` hands the run machine: the plan's roots (their Map runs them at once, with no
gate call) apart from the other nodes (their Map gates each), and, for an execution on the
previous definition (one Map over every node), every node still."""

from __future__ import annotations

from relayflow_runtime.domain.engine import NodeTask, RetryPolicy, RunRef, RunStart

RUN = RunRef(tenant="t", workflow_id="w", execution_id="e")


def test_start_answers_the_roots_apart_from_the_gated_nodes_each_in_plan_order() -> None:
    # Given a plan's nodes in order: two roots among nodes with parents
    parents = {"a": 0, "b": 1, "c": 0, "d": 2, "e": 1}
    nodes = [NodeTask(id=n, idx=i, task_timeout=32, parents=p) for i, (n, p) in enumerate(parents.items())]
    # When start answers them
    answer = RunStart.of(RUN, nodes, RetryPolicy(max_retries=0, delays=[]), 600)
    # Then the roots are one list and every other node the other, in plan order, no node in both
    assert [n.id for n in answer.roots] == ["a", "c"]
    assert [n.id for n in answer.gated] == ["b", "d", "e"]
    # And what the machine reads (the answer as JSON) still has every node in plan order under
    # "nodes", for an execution on the previous definition
    sent = answer.model_dump(mode="json")
    assert [n["id"] for n in sent["nodes"]] == ["a", "b", "c", "d", "e"]
    assert [n["id"] for n in sent["roots"]] == ["a", "c"] and len(sent["gated"]) == 3
    # while reading that answer back takes the two lists (a repeated answer is the same)
    assert RunStart.model_validate(sent) == answer
