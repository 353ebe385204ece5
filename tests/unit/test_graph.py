"""Workflow version graphs: every validation problem, deterministic order, parents, upstream nodes."""

from __future__ import annotations

import pytest

from relayflow_runtime.domain.graph import (
    GraphError,
    GraphProblem,
    ancestors,
    children,
    effective_edges,
    levels,
    parents,
    sinks,
    topological_order,
    validate_graph,
)

DIAMOND_NODES = ["A", "B", "C", "D"]
DIAMOND = [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")]


def codes(problems: list[GraphProblem]) -> list[str]:
    return [p.code for p in problems]


# --------------------------------------------------------------------------- validate_graph


def test_valid_graphs_have_no_problems() -> None:
    assert validate_graph(DIAMOND_NODES, DIAMOND) == []
    assert validate_graph(["a", "b", "c"], []) == []  # a chain in creation order
    assert validate_graph(["only"], []) == []


def test_empty_workflow() -> None:
    problems = validate_graph([], [])
    assert codes(problems) == ["empty_workflow"]
    assert problems[0].node_id is None


def test_self_loop() -> None:
    problems = validate_graph(["a", "b"], [("a", "b"), ("b", "b")])
    assert codes(problems) == ["self_loop"]
    assert problems[0].node_id == "b"


def test_dangling_edge_names_the_unknown_id() -> None:
    # Given an edge whose end is not a node of the version
    problems = validate_graph(["a", "b"], [("a", "b"), ("b", "ghost")])
    # Then it is reported with the unknown id
    assert codes(problems) == ["dangling_edge"]
    assert problems[0].node_id == "ghost"
    assert "'ghost'" in problems[0].message


def test_duplicate_edge_reported_once_per_extra_copy() -> None:
    problems = validate_graph(["a", "b"], [("a", "b"), ("a", "b"), ("a", "b")])
    assert codes(problems) == ["duplicate_edge", "duplicate_edge"]
    assert problems[0].node_ids == ("a", "b")


def test_duplicate_node() -> None:
    assert codes(validate_graph(["a", "a"], [])) == ["duplicate_node"]


def test_cycle_names_all_its_nodes_and_a_concrete_loop() -> None:
    # Given a -> b -> c -> a hanging off a root r
    problems = validate_graph(["r", "a", "b", "c"], [("r", "a"), ("a", "b"), ("b", "c"), ("c", "a")])
    # Then one cycle problem names every node of it, and the loop itself
    assert codes(problems) == ["cycle"]
    assert problems[0].node_ids == ("a", "b", "c")
    assert problems[0].node_id == "a"
    assert "a → b → c → a" in problems[0].message


def test_two_separate_cycles_are_two_problems() -> None:
    problems = validate_graph(["a", "b", "c", "d"], [("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")])
    assert codes(problems) == ["cycle", "cycle"]
    assert [p.node_ids for p in problems] == [("a", "b"), ("c", "d")]


def test_unreachable_node_only_when_edges_exist() -> None:
    # Given edges between a and b, and c touched by no edge
    problems = validate_graph(["a", "b", "c"], [("a", "b")])
    # Then c is cut off from the graph
    assert codes(problems) == ["unreachable_node"]
    assert problems[0].node_id == "c"
    # But with no edges at all the nodes form a chain and nothing is unreachable
    assert validate_graph(["a", "b", "c"], []) == []


def test_separate_connected_groups_are_allowed() -> None:
    assert validate_graph(["a", "b", "c", "d"], [("a", "b"), ("c", "d")]) == []


def test_every_problem_at_once() -> None:
    problems = validate_graph(
        ["a", "b", "c", "d", "lonely"],
        [("a", "b"), ("b", "c"), ("c", "b"), ("a", "b"), ("d", "d"), ("a", "x")],
    )
    assert codes(problems) == ["duplicate_edge", "self_loop", "dangling_edge", "cycle", "unreachable_node"]
    assert problems[-1].node_id == "lonely"
    assert problems[0].to_dict()["node_ids"] == ["a", "b"]


def test_edges_may_be_lists() -> None:
    # Given edges decoded from JSON (lists, not tuples)
    assert validate_graph(["a", "b"], [["a", "b"]]) == []
    assert topological_order(["a", "b"], [["b", "a"]]) == ["b", "a"]


# --------------------------------------------------------------------------- order


def test_order_without_edges_is_creation_order() -> None:
    assert topological_order(["n3", "n1", "n2"], []) == ["n3", "n1", "n2"]


def test_order_ties_are_broken_by_creation_order() -> None:
    # Given three roots created z, y, x and a join node
    nodes = ["z", "y", "x", "j"]
    edges = [("x", "j"), ("y", "j"), ("z", "j")]
    # Then the roots run in creation order, not by id or edge order
    assert topological_order(nodes, edges) == ["z", "y", "x", "j"]


def test_order_follows_edges_against_creation_order() -> None:
    # Given c created first but fed by b, fed by a
    assert topological_order(["c", "b", "a"], [("a", "b"), ("b", "c")]) == ["a", "b", "c"]


def test_order_prefers_earliest_ready_node() -> None:
    # Given a -> d and b -> c; creation a, b, c, d
    # Then after a and b, c (created before d) runs first
    assert topological_order(["a", "b", "c", "d"], [("a", "d"), ("b", "c")]) == ["a", "b", "c", "d"]


def test_diamond_order() -> None:
    assert topological_order(DIAMOND_NODES, DIAMOND) == ["A", "B", "C", "D"]


def test_order_of_a_cyclic_graph_raises() -> None:
    with pytest.raises(GraphError) as info:
        topological_order(["a", "b"], [("a", "b"), ("b", "a")])
    assert info.value.code == "cycle"
    assert codes(info.value.problems) == ["cycle"]


def test_order_ignores_duplicate_edges_and_unconnected_nodes() -> None:
    assert topological_order(["a", "b", "c"], [("a", "b"), ("a", "b")]) == ["a", "b", "c"]


# --------------------------------------------------------------------------- levels (relayflow graph)


def test_levels_of_a_diamond() -> None:
    assert levels(DIAMOND_NODES, DIAMOND) == [["A"], ["B", "C"], ["D"]]


def test_levels_without_edges_are_a_chain() -> None:
    assert levels(["a", "b", "c"], []) == [["a"], ["b"], ["c"]]


def test_level_is_one_past_the_deepest_parent() -> None:
    # Given a -> b -> c and a -> c (c waits for b)
    assert levels(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")]) == [["a"], ["b"], ["c"]]


def test_levels_within_a_stage_keep_creation_order() -> None:
    nodes = ["r", "z", "y"]
    assert levels(nodes, [("r", "y"), ("r", "z")]) == [["r"], ["z", "y"]]


# --------------------------------------------------------------------------- parents / ancestors


def test_parents_and_children_of_a_diamond() -> None:
    assert parents(DIAMOND_NODES, DIAMOND) == {"A": [], "B": ["A"], "C": ["A"], "D": ["B", "C"]}
    assert children(DIAMOND_NODES, DIAMOND) == {"A": ["B", "C"], "B": ["D"], "C": ["D"], "D": []}
    assert sinks(DIAMOND_NODES, DIAMOND) == ["D"]


def test_parents_without_edges_are_the_previous_node() -> None:
    assert parents(["a", "b", "c"], []) == {"a": [], "b": ["a"], "c": ["b"]}
    assert effective_edges(["a", "b", "c"], []) == [("a", "b"), ("b", "c")]


def test_ancestors_are_transitive_and_in_creation_order() -> None:
    nodes = ["A", "B", "C", "D", "E"]
    edges = [*DIAMOND, ("D", "E")]
    result = ancestors(nodes, edges)
    assert result["A"] == []
    assert result["D"] == ["A", "B", "C"]
    assert result["E"] == ["A", "B", "C", "D"]


def test_ancestors_exclude_sibling_branches() -> None:
    # Given a -> b and a -> c
    result = ancestors(["a", "b", "c"], [("a", "b"), ("a", "c")])
    # Then c cannot reference b (they run side by side)
    assert result["c"] == ["a"]


def test_ancestors_without_edges_are_all_earlier_nodes() -> None:
    assert ancestors(["a", "b", "c"], []) == {"a": [], "b": ["a"], "c": ["a", "b"]}


def test_ancestors_of_a_graph_with_a_dangling_edge_raise() -> None:
    with pytest.raises(GraphError) as info:
        ancestors(["a"], [("a", "b")])
    assert info.value.code == "dangling_edge"


def test_with_names_replaces_ids_in_messages() -> None:
    # Given a cycle problem about nodes known by id
    from relayflow_runtime.domain.graph import with_names

    problem = validate_graph(["n1", "n2"], [("n1", "n2"), ("n2", "n1")])[0]
    # When its message is shown to a person
    message = with_names(problem.message, {"n1": "extract", "n2": "summarise"})
    # Then it names the nodes (quoted and in the loop path)
    assert "'extract', 'summarise'" in message
    assert "extract → summarise → extract" in message
