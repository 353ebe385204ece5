"""What ``start`` hands the run machine: the plan's roots with children (their Map runs them at
once, with no gate call) apart from the other nodes (their Map gates each, a childless root
included: that Map ends the run, so it must end last), and, for an execution on the previous
definition (one Map over every node), every node still."""

from __future__ import annotations

from relayflow_runtime.domain.engine import NodeTask, RetryPolicy, RunRef, RunStart

RUN = RunRef(tenant="t", workflow_id="w", execution_id="e")


def test_start_answers_the_roots_with_children_apart_from_the_gated_nodes_each_in_plan_order() -> None:
    # Given a plan's nodes in order: roots a and c with children, f a root without, the rest after
    # them (b after a, d after a and c, e after b)
    parents = {"a": [], "b": ["a"], "c": [], "d": ["a", "c"], "e": ["b"], "f": []}
    nodes = [
        NodeTask(id=n, idx=i, task_timeout=32, parents=len(p)) for i, (n, p) in enumerate(parents.items())
    ]
    waited_for = {parent for of in parents.values() for parent in of}
    # When start answers them
    answer = RunStart.of(RUN, nodes, RetryPolicy(max_retries=0, delays=[]), 600, waited_for)
    # Then the roots with children are one list and every other node the other (the childless root
    # f among them: it keeps its gate), in plan order, no node in both
    assert [n.id for n in answer.roots] == ["a", "c"]
    assert [n.id for n in answer.gated] == ["b", "d", "e", "f"]
    # And what the machine reads (the answer as JSON) still has every node in plan order under
    # "nodes", for an execution on the previous definition
    sent = answer.model_dump(mode="json")
    assert [n["id"] for n in sent["nodes"]] == ["a", "b", "c", "d", "e", "f"]
    assert [n["id"] for n in sent["roots"]] == ["a", "c"] and len(sent["gated"]) == 4
    # while reading that answer back takes the two lists (a repeated answer is the same)
    assert RunStart.model_validate(sent) == answer


def test_a_run_whose_roots_have_no_children_gates_them_all() -> None:
    # Given one node alone, and two roots with nothing after them
    retry = RetryPolicy(max_retries=0, delays=[])
    for ids in (["a"], ["a", "b"]):
        nodes = [NodeTask(id=n, idx=i, task_timeout=32) for i, n in enumerate(ids)]
        # When start answers them
        answer = RunStart.of(RUN, nodes, retry, 600, set())
        # Then no root skips its gate: the gated Map (which ends the run) is never empty
        assert (answer.roots, [n.id for n in answer.gated]) == ([], ids)
