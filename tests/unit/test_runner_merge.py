"""Folding the branch states of a Parallel state (a fan-out) back into one run state."""

from __future__ import annotations

from typing import Any

from relayflow_runtime.services.runner import merge_states


def branch(outputs: dict[str, str], last: str, node_usage: dict[str, dict[str, int]]) -> dict[str, Any]:
    total: dict[str, int] = {}
    for usage in node_usage.values():
        for name, amount in usage.items():
            total[name] = total.get(name, 0) + amount
    return {
        "ctx": {"mode": "batch"},
        "outputs": outputs,
        "last": last,
        "node_usage": node_usage,
        "usage": total,
    }


def test_branches_merge_outputs_and_the_last_output_of_the_last_branch() -> None:
    # Given A ran before a Parallel state whose branches ran B and C
    merged = merge_states([branch({"A": "a", "B": "b"}, "B", {}), branch({"A": "a", "C": "c"}, "C", {})])
    # Then every output is kept once, and "last" is the last branch's
    assert merged["outputs"] == {"A": "a", "B": "b", "C": "c"}
    assert merged["last"] == "C"


def test_usage_of_nodes_before_the_fan_out_is_counted_once() -> None:
    # Given A (10 input tokens, 100 nano-dollars) ran before the fan-out, then B and C in branches
    before = {"A": {"input_tokens": 10, "estimated_cost_nanos": 100}}
    b = branch({"A": "a", "B": "b"}, "B", {**before, "B": {"input_tokens": 2}})
    c = branch({"A": "a", "C": "c"}, "C", {**before, "C": {"input_tokens": 3, "estimated_cost_nanos": 5}})
    # (each branch's running total includes A's usage)
    assert b["usage"]["input_tokens"] + c["usage"]["input_tokens"] == 25
    # When the branches are merged
    merged = merge_states([b, c])
    # Then A counts once: 10 + 2 + 3 tokens, 100 + 5 nano-dollars
    assert merged["usage"] == {"input_tokens": 15, "estimated_cost_nanos": 105}


def test_a_single_state_passes_through_unchanged() -> None:
    state = {"ctx": {}, "outputs": {"A": "a"}, "last": "A"}
    assert merge_states(state) is state
