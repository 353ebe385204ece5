"""Run and node-record statuses, and the moves between them: the rules, written once as data.

An execution's status only moves forward::

    pending -> running -> completed
       |          |-----> failed
       |          '-----> cancelled
       |-----> failed       (it could not start, or failed before its first node)
       '-----> cancelled    (cancelled before it started)

Nothing moves out of a terminal status (``completed``, ``failed``, ``cancelled``), nothing moves
back, and ``pending`` never jumps to ``completed``. Every status change is a conditional write
(``status IN (...)``), so a terminal status is never overwritten and when two writers race (a cancel
and the last node's completion) exactly one wins. :func:`allowed_from` gives a write the statuses it
may move from; :func:`check_moves` refuses a write whose condition would allow a move the rules do
not.

A node record (one per node of a single run, per node of an item of a batch) has its own moves::

    pending -> running -> running (another attempt) -> completed | failed | timed_out | cancelled
    pending -> failed | timed_out | cancelled | skipped   (it never ran an attempt)

``skipped`` is only for a node that never started; ``completed`` only after an attempt ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from typing_extensions import TypedDict

__all__ = [
    "ACTIVE",
    "CLOSE_ON_CANCEL",
    "CLOSE_ON_ERROR",
    "CLOSE_ON_NODE_FAILURE",
    "CLOSE_ON_TIMEOUT",
    "MOVES",
    "NODE_MOVES",
    "NODE_OPEN",
    "NODE_TERMINAL",
    "TERMINAL",
    "CurrentNodeItem",
    "ExecutionStatus",
    "NodeStatus",
    "RefusedMove",
    "allowed_from",
    "can_move",
    "check_moves",
    "node_allowed_from",
    "node_can_move",
    "node_tally",
    "settled_node_status",
]


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


_S = TypeVar("_S", ExecutionStatus, NodeStatus)
_X = ExecutionStatus
_N = NodeStatus

#: A run that is over: its status never changes again.
TERMINAL: frozenset[ExecutionStatus] = frozenset({_X.COMPLETED, _X.FAILED, _X.CANCELLED})
#: A run that is not over (it holds its place in the sweep index, it can be cancelled).
ACTIVE: frozenset[ExecutionStatus] = frozenset({_X.PENDING, _X.RUNNING})

#: Each status, and the statuses an execution may move to from it.
MOVES: Mapping[ExecutionStatus, frozenset[ExecutionStatus]] = MappingProxyType(
    {
        _X.PENDING: frozenset({_X.RUNNING, _X.FAILED, _X.CANCELLED}),
        _X.RUNNING: frozenset({_X.COMPLETED, _X.FAILED, _X.CANCELLED}),
        _X.COMPLETED: frozenset(),
        _X.FAILED: frozenset(),
        _X.CANCELLED: frozenset(),
    }
)

#: A node record that is over.
NODE_TERMINAL: frozenset[NodeStatus] = frozenset(
    {_N.COMPLETED, _N.FAILED, _N.TIMED_OUT, _N.CANCELLED, _N.SKIPPED}
)
#: A node record still waiting or running: the one a run's end settles (or a reader settles, see
#: :func:`settled_node_status`).
NODE_OPEN: frozenset[NodeStatus] = frozenset({_N.PENDING, _N.RUNNING})

#: Each node status, and the statuses a node record may move to from it. ``running -> running`` is a
#: further attempt of the node (the record counts its attempts).
NODE_MOVES: Mapping[NodeStatus, frozenset[NodeStatus]] = MappingProxyType(
    {
        _N.PENDING: frozenset({_N.RUNNING, _N.FAILED, _N.TIMED_OUT, _N.CANCELLED, _N.SKIPPED}),
        _N.RUNNING: frozenset({_N.RUNNING, _N.COMPLETED, _N.FAILED, _N.TIMED_OUT, _N.CANCELLED}),
        _N.COMPLETED: frozenset(),
        _N.FAILED: frozenset(),
        _N.TIMED_OUT: frozenset(),
        _N.CANCELLED: frozenset(),
        _N.SKIPPED: frozenset(),
    }
)


#: How a run's end closes its node records still open (``ExecutionStore.close_open_nodes``): each
#: open status and the terminal one it gets, by the way the run ended.
#: Cancelled (by request, or its state machine execution was stopped).
CLOSE_ON_CANCEL: Mapping[str, NodeStatus] = MappingProxyType(
    {_N.PENDING: _N.CANCELLED, _N.RUNNING: _N.CANCELLED}
)
#: The run's own timeout.
CLOSE_ON_TIMEOUT: Mapping[str, NodeStatus] = MappingProxyType(
    {_N.PENDING: _N.SKIPPED, _N.RUNNING: _N.TIMED_OUT}
)
#: Its state machine failed (an error of the machine itself, seen by the reconciler).
CLOSE_ON_ERROR: Mapping[str, NodeStatus] = MappingProxyType({_N.PENDING: _N.SKIPPED, _N.RUNNING: _N.FAILED})
#: A node failed and stopped the run: what has not run is skipped, what still runs is cancelled.
CLOSE_ON_NODE_FAILURE: Mapping[str, NodeStatus] = MappingProxyType(
    {_N.PENDING: _N.SKIPPED, _N.RUNNING: _N.CANCELLED}
)


def settled_node_status(node_status: str, execution_status: str, error: str | None) -> str:
    """What an open node record means once its execution is over, as a reader can tell from the
    execution alone. The writer that ends a run closes its open records right after its conditional
    status write, with the map of the way it ended; a reader in between (or a node attempt that
    raced a cancel) applies the same maps, so the records it shows agree with the execution: a
    cancel's, a timeout's (the error says the run timed out), else a stopping node failure's. The
    one end a reader cannot tell apart — the state machine's own error (CLOSE_ON_ERROR), seen by
    the reconciler — shows a running node ``cancelled`` until the reconciler writes ``failed``."""
    if node_status not in NODE_OPEN or execution_status not in TERMINAL:
        return node_status
    if execution_status == ExecutionStatus.CANCELLED:
        close = CLOSE_ON_CANCEL
    elif execution_status == ExecutionStatus.FAILED and "timed out" in (error or ""):
        close = CLOSE_ON_TIMEOUT
    else:
        close = CLOSE_ON_NODE_FAILURE
    return close[node_status].value


#: How a single run's progress counts its nodes: each settled node status, and its count's name.
TALLY_OF: Mapping[str, str] = MappingProxyType(
    {
        _N.COMPLETED: "completed_nodes",
        _N.FAILED: "failed_nodes",
        _N.TIMED_OUT: "failed_nodes",
        _N.SKIPPED: "skipped_nodes",
        _N.CANCELLED: "cancelled_nodes",
    }
)


def node_tally(node_statuses: Iterable[str], execution_status: str, error: str | None) -> dict[str, int]:
    """How far a single run got: its nodes by how they ended (each status settled as
    :func:`settled_node_status` reads it), every count present (0 when none)."""
    tally = dict.fromkeys(TALLY_OF.values(), 0)
    for status in node_statuses:
        name = TALLY_OF.get(settled_node_status(status, execution_status, error))
        if name:
            tally[name] += 1
    return tally


class RefusedMove(ValueError):
    """A status change the rules do not allow (a programming error, never a user's)."""


def can_move(from_status: str, to_status: str) -> bool:
    """Whether an execution may move from ``from_status`` to ``to_status``."""
    return _known(ExecutionStatus, to_status) in MOVES[_known(ExecutionStatus, from_status)]


def allowed_from(target: str) -> tuple[str, ...]:
    """The statuses a conditional write may move an execution from to reach ``target``, in the
    order of :class:`ExecutionStatus`: e.g. ``allowed_from("failed") == ("pending", "running")``.
    Empty for ``pending`` (a run is created pending, never moved there)."""
    wanted = _known(ExecutionStatus, target)
    return tuple(status.value for status in ExecutionStatus if wanted in MOVES[status])


def check_moves(from_statuses: Iterable[str], to_status: str) -> tuple[str, ...]:
    """``from_statuses`` as plain strings, after checking that the rules allow a move from each of
    them to ``to_status``; raises :class:`RefusedMove` naming the first that does not."""
    target = _known(ExecutionStatus, to_status)
    checked = tuple(_known(ExecutionStatus, status).value for status in from_statuses)
    for status in checked:
        if target not in MOVES[ExecutionStatus(status)]:
            raise RefusedMove(f"an execution cannot move from {status!r} to {target.value!r}")
    return checked


def node_can_move(from_status: str, to_status: str) -> bool:
    """Whether a node record may move from ``from_status`` to ``to_status``."""
    return _known(NodeStatus, to_status) in NODE_MOVES[_known(NodeStatus, from_status)]


def node_allowed_from(target: str) -> tuple[str, ...]:
    """The statuses a conditional write may move a node record from to reach ``target``, in the
    order of :class:`NodeStatus`: e.g. ``node_allowed_from("running") == ("pending", "running")``."""
    wanted = _known(NodeStatus, target)
    return tuple(status.value for status in NodeStatus if wanted in NODE_MOVES[status])


def _known(kind: type[_S], status: str) -> _S:
    try:
        return kind(status)
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise RefusedMove(f"unknown status {str(status)!r} (one of: {names})") from None


class CurrentNodeItem(TypedDict):
    """A single run's progress as its item keeps it (``current_node``): a node's index and id."""

    idx: int
    id: str


def progress_node(records: Iterable[Mapping[str, Any]]) -> CurrentNodeItem | None:
    """A single run's progress (``current_node``): of its nodes that began an attempt, the one
    latest in plan order. Node records only move forward, so progress never goes back; None before
    any node began."""
    begun = [r for r in records if int(r.get("attempts") or 0) >= 1 and r.get("node_id")]
    if not begun:
        return None
    last = max(begun, key=lambda r: int(r.get("idx") or 0))
    return {"idx": int(last.get("idx") or 0), "id": str(last["node_id"])}
