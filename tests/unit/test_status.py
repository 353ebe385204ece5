"""Status moves of runs and node records: every pair of statuses, allowed or refused, by the rules."""

from __future__ import annotations

from typing import get_args

import pytest

from relayflow_runtime.domain import status
from relayflow_runtime.domain.status import (
    ACTIVE,
    NODE_OPEN,
    NODE_TERMINAL,
    TERMINAL,
    ExecutionStatus,
    NodeStatus,
    RefusedMove,
    allowed_from,
    can_move,
    check_moves,
    node_allowed_from,
    node_can_move,
)
from relayflow_runtime.schemas import entities

X = ExecutionStatus
N = NodeStatus

# The rules, spelled out pair by pair (the module keeps them as data; this is the second witness).
RUN_MOVES = {
    (X.PENDING, X.RUNNING),
    (X.PENDING, X.FAILED),
    (X.PENDING, X.CANCELLED),
    (X.RUNNING, X.COMPLETED),
    (X.RUNNING, X.FAILED),
    (X.RUNNING, X.CANCELLED),
}
NODE_MOVES = {
    (N.PENDING, N.RUNNING),
    (N.PENDING, N.FAILED),
    (N.PENDING, N.TIMED_OUT),
    (N.PENDING, N.CANCELLED),
    (N.PENDING, N.SKIPPED),
    (N.RUNNING, N.RUNNING),  # a further attempt
    (N.RUNNING, N.COMPLETED),
    (N.RUNNING, N.FAILED),
    (N.RUNNING, N.TIMED_OUT),
    (N.RUNNING, N.CANCELLED),
}

RUN_PAIRS = [(a, b) for a in X for b in X]
NODE_PAIRS = [(a, b) for a in N for b in N]


def pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


# --------------------------------------------------------------------------- runs


@pytest.mark.parametrize("move", RUN_PAIRS, ids=pair_id)
def test_every_run_move_is_allowed_or_refused_by_the_rules(move: tuple[X, X]) -> None:
    # Given a pair of run statuses
    before, after = move
    allowed = move in RUN_MOVES
    # When the rules are asked about the move
    # Then they allow exactly the listed moves
    assert can_move(before, after) is allowed
    assert (before in allowed_from(after)) is allowed
    # And a conditional write allowing it is accepted, or refused naming the move
    if allowed:
        assert check_moves([before], after) == (before.value,)
    else:
        with pytest.raises(RefusedMove, match=f"from '{before.value}' to '{after.value}'"):
            check_moves([before], after)


@pytest.mark.parametrize("target", list(X))
def test_allowed_from_lists_the_sources_in_declaration_order(target: X) -> None:
    # Given a target status
    # When a writer asks where it may come from
    sources = allowed_from(target)
    # Then it gets plain strings (they go into a DynamoDB condition), in the enum's order
    assert all(type(source) is str for source in sources)
    assert list(sources) == [s.value for s in X if (s, target) in RUN_MOVES]


def test_allowed_from_of_each_target() -> None:
    assert allowed_from("pending") == ()
    assert allowed_from("running") == ("pending",)
    assert allowed_from("completed") == ("running",)
    assert allowed_from("failed") == ("pending", "running")
    assert allowed_from("cancelled") == ("pending", "running")


def test_terminal_statuses_have_no_way_out_and_active_ones_do() -> None:
    assert {X.COMPLETED, X.FAILED, X.CANCELLED} == TERMINAL
    assert {X.PENDING, X.RUNNING} == ACTIVE
    assert set(X) == TERMINAL | ACTIVE and not TERMINAL & ACTIVE
    for terminal in TERMINAL:
        assert not status.MOVES[terminal]
    for active in ACTIVE:
        assert status.MOVES[active]


def test_nothing_moves_backwards_nor_to_itself() -> None:
    order = {X.PENDING: 0, X.RUNNING: 1, X.COMPLETED: 2, X.FAILED: 2, X.CANCELLED: 2}
    for before, targets in status.MOVES.items():
        assert all(order[after] > order[before] for after in targets)


def test_check_moves_checks_every_source_and_unknown_statuses() -> None:
    # Given a condition naming a source the rules refuse, next to an allowed one
    with pytest.raises(RefusedMove, match="from 'pending' to 'completed'"):
        check_moves(("pending", "running"), "completed")
    # And statuses that do not exist, as source or target
    with pytest.raises(RefusedMove, match="unknown status 'done'"):
        check_moves(("done",), "completed")
    with pytest.raises(RefusedMove, match="unknown status 'finished'"):
        check_moves(("running",), "finished")
    # And enum members come back as plain strings
    assert check_moves((X.PENDING, X.RUNNING), X.FAILED) == ("pending", "running")


def test_the_api_schemas_name_the_same_statuses() -> None:
    # The API's Literal types (schemas sit below domain, so they spell the values out)
    assert set(get_args(entities.ExecutionStatus)) == {s.value for s in X}
    assert set(get_args(entities.NodeStatus)) == {s.value for s in N}


# --------------------------------------------------------------------------- node records


@pytest.mark.parametrize("move", NODE_PAIRS, ids=pair_id)
def test_every_node_move_is_allowed_or_refused_by_the_rules(move: tuple[N, N]) -> None:
    before, after = move
    allowed = move in NODE_MOVES
    assert node_can_move(before, after) is allowed
    assert (before in node_allowed_from(after)) is allowed


def test_node_allowed_from_of_each_target() -> None:
    assert node_allowed_from("pending") == ()
    assert node_allowed_from("running") == ("pending", "running")
    assert node_allowed_from("completed") == ("running",)
    assert node_allowed_from("failed") == ("pending", "running")
    assert node_allowed_from("timed_out") == ("pending", "running")
    assert node_allowed_from("cancelled") == ("pending", "running")
    assert node_allowed_from("skipped") == ("pending",)


def test_node_terminal_and_open_statuses() -> None:
    assert {N.COMPLETED, N.FAILED, N.TIMED_OUT, N.CANCELLED, N.SKIPPED} == NODE_TERMINAL
    assert {N.PENDING, N.RUNNING} == NODE_OPEN
    for terminal in NODE_TERMINAL:
        assert not status.NODE_MOVES[terminal]
    with pytest.raises(RefusedMove, match="unknown status 'done'"):
        node_can_move("done", "running")


@pytest.mark.parametrize(
    ("closing", "expected"),
    [
        (status.CLOSE_ON_CANCEL, {N.PENDING: N.CANCELLED, N.RUNNING: N.CANCELLED}),
        (status.CLOSE_ON_TIMEOUT, {N.PENDING: N.SKIPPED, N.RUNNING: N.TIMED_OUT}),
        (status.CLOSE_ON_ERROR, {N.PENDING: N.SKIPPED, N.RUNNING: N.FAILED}),
        (status.CLOSE_ON_NODE_FAILURE, {N.PENDING: N.SKIPPED, N.RUNNING: N.CANCELLED}),
    ],
)
def test_a_runs_end_closes_every_open_node_record_with_an_allowed_move(
    closing: dict[str, N], expected: dict[N, N]
) -> None:
    # Given how one way of ending a run closes the node records still open
    # Then it names exactly the open statuses, each to the terminal status expected, by an allowed move
    assert dict(closing) == expected
    assert set(closing) == NODE_OPEN
    for open_status, closed in closing.items():
        assert closed in NODE_TERMINAL
        assert node_can_move(open_status, closed)


@pytest.mark.parametrize(
    ("execution_status", "error", "expected"),
    [
        ("cancelled", "cancelled by request", {N.PENDING: N.CANCELLED, N.RUNNING: N.CANCELLED}),
        ("failed", "workflow timed out after 60 seconds", {N.PENDING: N.SKIPPED, N.RUNNING: N.TIMED_OUT}),
        ("failed", "node 'b' failed: boom", {N.PENDING: N.SKIPPED, N.RUNNING: N.CANCELLED}),
        ("completed", None, {N.PENDING: N.SKIPPED, N.RUNNING: N.CANCELLED}),
        ("running", None, {N.PENDING: N.PENDING, N.RUNNING: N.RUNNING}),
        ("pending", None, {N.PENDING: N.PENDING, N.RUNNING: N.RUNNING}),
    ],
)
def test_a_reader_settles_open_node_records_as_the_runs_end_closes_them(
    execution_status: str, error: str | None, expected: dict[N, N]
) -> None:
    # Given a node record still open when read, and the execution it belongs to
    for open_status, shown in expected.items():
        # Then it reads as the map of the way the run ended would close it (unchanged while running)
        assert status.settled_node_status(open_status, execution_status, error) == shown
    # And a record that is already over reads as it is
    for closed in NODE_TERMINAL:
        assert status.settled_node_status(closed, execution_status, error) == closed


def test_a_runs_node_tally_counts_each_node_as_it_ended_settled_by_the_runs_end() -> None:
    # Given a failed run's nodes: one completed, one failed, one timed out, one still open
    statuses = ["completed", "failed", "timed_out", "pending"]

    # Then the tally counts timed out nodes as failed, and the open one as the run's end closes it
    assert status.node_tally(statuses, "failed", "node 'x' failed: boom") == {
        "completed_nodes": 1,
        "failed_nodes": 2,
        "skipped_nodes": 1,
        "cancelled_nodes": 0,
    }
    # And a cancelled run's open nodes count as cancelled; a running run's open ones not at all
    assert status.node_tally(statuses, "cancelled", None)["cancelled_nodes"] == 1
    assert sum(status.node_tally(statuses, "running", None).values()) == 3


# --------------------------------------------------------------------------- the one writer


def test_the_execution_writer_refuses_a_move_before_writing_anything() -> None:
    # Given the service every run status change goes through
    from relayflow_runtime.services import transitions

    # When it is asked for a move the rules refuse (no store is reached: none is set up here)
    # Then it raises instead of writing a condition that would allow it
    with pytest.raises(RefusedMove, match="from 'pending' to 'completed'"):
        transitions.transition("tenant", {"id": "x"}, ("pending", "running"), "completed")
    with pytest.raises(RefusedMove, match="from 'completed' to 'failed'"):
        transitions.transition("tenant", {"id": "x"}, ("completed",), "failed")
