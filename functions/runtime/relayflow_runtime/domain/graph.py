"""Workflow version graphs: validation, execution order, parents and upstream nodes.

A version's nodes are given as their ids **in creation order**; its edges as
``(begin_node_id, end_node_id)`` pairs ("begin feeds end").

* **Without edges** the nodes form an implicit chain in creation order: each node's parent is the
  node created just before it (``n1 → n2 → n3``). Every function here applies that rule.
* **With edges** the edges alone define the graph, which must be a DAG. A node may have several
  parents and several children; nodes without parents are roots (they receive the execution
  input).

Determinism: wherever several nodes are equally possible, creation order decides.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "BLOCKING_CODES",
    "GraphError",
    "GraphProblem",
    "ancestors",
    "children",
    "effective_edges",
    "parents",
    "sinks",
    "topological_order",
    "validate_graph",
    "with_names",
]

Edge = tuple[str, str]
Edges = Sequence[Edge] | Sequence[Sequence[str]]


@dataclass(frozen=True)
class GraphProblem:
    """One thing wrong with a graph.

    ``code``: ``empty_workflow``, ``duplicate_node``, ``self_loop``, ``dangling_edge``,
    ``duplicate_edge``, ``cycle`` or ``unreachable_node``. ``node_id`` is the node the problem is
    about (for a cycle, its earliest-created node; for a dangling edge, the unknown id), and
    ``node_ids`` every node involved (all the nodes of a cycle, both ends of an edge).
    """

    code: str
    message: str
    node_id: str | None = None
    node_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["node_ids"] = list(self.node_ids)
        return data


#: Problems that make an execution order impossible (the other ones are still errors for
#: workflow validation, but order, parents and ancestors stay well defined).
BLOCKING_CODES = frozenset({"duplicate_node", "self_loop", "dangling_edge", "cycle"})


class GraphError(ValueError):
    """Raised by the ordering functions when the graph has a :data:`BLOCKING_CODES` problem."""

    def __init__(self, problems: list[GraphProblem]) -> None:
        self.problems = problems
        self.code = problems[0].code
        super().__init__("; ".join(p.message for p in problems))


def _strongly_connected(order: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one node, in creation order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in order:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            nexts = succ[node]
            while i < len(nexts):
                nxt = nexts[i]
                i += 1
                if nxt not in index:
                    work.append((node, i))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    position = {node: i for i, node in enumerate(order)}
    for component in found:
        component.sort(key=position.__getitem__)
    found.sort(key=lambda c: position[c[0]])
    return found


def _cycle_path(component: list[str], succ: dict[str, list[str]]) -> list[str]:
    """A shortest cycle through the component's first node: [a, b, ..., a]."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following = []
        for node in frontier:
            for nxt in succ[node]:
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt in members and nxt not in seen:
                    seen.add(nxt)
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return [*component, start]  # pragma: no cover - a strongly connected component has a cycle


def validate_graph(node_ids: Sequence[str], edges: Edges) -> list[GraphProblem]:
    """Every problem of a version graph at once (an empty list means the graph is valid).

    In order: ``empty_workflow`` (no nodes), ``duplicate_node`` (an id listed twice), then per edge
    in the given order ``duplicate_edge`` (the same pair again; reported once per extra copy),
    ``self_loop`` (a node feeding itself), ``dangling_edge`` (an end that is not a node of the
    version), then one ``cycle`` per strongly connected group of nodes (the message names all of
    them and one concrete loop, e.g. ``a → b → c → a``), then ``unreachable_node``.

    ``unreachable_node``: once a version has at least one edge between its nodes, the edges
    define the graph, so a node that no edge touches (neither begins nor ends one) is cut off
    from the rest of the workflow: nothing feeds it and nothing consumes its output. Versions
    without edges never have this problem (their nodes form a chain in creation order). Several
    separate groups of connected nodes are allowed: each group's roots receive the execution
    input.
    """
    problems: list[GraphProblem] = []
    if not node_ids:
        problems.append(GraphProblem("empty_workflow", "the workflow version has no nodes"))
    known: set[str] = set()
    order: list[str] = []
    for node in node_ids:
        if node in known:
            problems.append(GraphProblem("duplicate_node", f"node {node!r} is listed twice", node, (node,)))
        else:
            known.add(node)
            order.append(node)

    succ: dict[str, list[str]] = {node: [] for node in order}
    touched: set[str] = set()
    seen_edges: set[tuple[str, str]] = set()
    for begin, end in edges:
        pair = (begin, end)
        if pair in seen_edges:
            problems.append(
                GraphProblem("duplicate_edge", f"edge {begin!r} → {end!r} is listed twice", begin, pair)
            )
            continue
        seen_edges.add(pair)
        unknown = [n for n in dict.fromkeys(pair) if n not in known]
        if unknown:
            names = " and ".join(repr(n) for n in unknown)
            problems.append(
                GraphProblem(
                    "dangling_edge",
                    f"edge {begin!r} → {end!r} refers to {names}, not a node of this version",
                    unknown[0],
                    pair,
                )
            )
            continue
        touched.update(pair)
        if begin == end:
            problems.append(GraphProblem("self_loop", f"node {begin!r} has an edge to itself", begin, pair))
            continue
        succ[begin].append(end)

    position = {node: i for i, node in enumerate(order)}
    for node in order:
        succ[node].sort(key=position.__getitem__)
    for component in _strongly_connected(order, succ):
        loop = " → ".join(_cycle_path(component, succ))
        problems.append(
            GraphProblem(
                "cycle",
                f"nodes {', '.join(map(repr, component))} form a cycle ({loop}); a workflow must be acyclic",
                component[0],
                tuple(component),
            )
        )

    if touched:
        for node in order:
            if node not in touched:
                problems.append(
                    GraphProblem(
                        "unreachable_node",
                        f"node {node!r} has no edges while the other nodes are connected by edges: "
                        "connect it or delete it",
                        node,
                        (node,),
                    )
                )
    return problems


def effective_edges(node_ids: Sequence[str], edges: Edges) -> list[Edge]:
    """The edges the engine runs on: the given ones (deduplicated), or, when there are none, the
    implicit chain in creation order."""
    if not edges:
        return [(node_ids[i], node_ids[i + 1]) for i in range(len(node_ids) - 1)]
    return list(dict.fromkeys((begin, end) for begin, end in edges))


def _prepare(node_ids: Sequence[str], edges: Edges) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    blocking = [p for p in validate_graph(node_ids, edges) if p.code in BLOCKING_CODES]
    if blocking:
        raise GraphError(blocking)
    position = {node: i for i, node in enumerate(node_ids)}
    succ: dict[str, list[str]] = {node: [] for node in node_ids}
    pred: dict[str, list[str]] = {node: [] for node in node_ids}
    for begin, end in effective_edges(node_ids, edges):
        succ[begin].append(end)
        pred[end].append(begin)
    for table in (succ, pred):
        for node in node_ids:
            table[node].sort(key=position.__getitem__)
    return succ, pred


def topological_order(node_ids: Sequence[str], edges: Edges) -> list[str]:
    """The order nodes run in (one at a time).

    Without edges: creation order. With edges: Kahn's algorithm, always taking the
    earliest-created node among those whose parents have all run. Raises :class:`GraphError`
    for duplicate nodes, self loops, dangling edges and cycles.
    """
    succ, pred = _prepare(node_ids, edges)
    position = {node: i for i, node in enumerate(node_ids)}
    waiting = {node: len(pred[node]) for node in node_ids}
    ready = [position[node] for node in node_ids if waiting[node] == 0]
    heapq.heapify(ready)
    result: list[str] = []
    while ready:
        node = node_ids[heapq.heappop(ready)]
        result.append(node)
        for nxt in succ[node]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, position[nxt])
    return result


def levels(node_ids: Sequence[str], edges: Edges) -> list[list[str]]:
    """Nodes grouped into stages for drawing (``relayflow graph``; a run does not wait for stages:
    each node starts when its own parents end). A root's stage is 0; any other node's stage is 1 +
    the highest stage of its parents. Within a stage, creation order. Without edges this is a
    chain: one node per stage, in creation order. A diamond ``a→b, a→c, b→d, c→d`` gives
    ``[[a], [b, c], [d]]``."""
    _, pred = _prepare(node_ids, edges)
    stage: dict[str, int] = {}
    for node in topological_order(node_ids, edges):
        stage[node] = 1 + max((stage[p] for p in pred[node]), default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(stage.values(), default=-1) + 1)]
    for node in node_ids:
        grouped[stage[node]].append(node)
    return grouped


def parents(node_ids: Sequence[str], edges: Edges) -> dict[str, list[str]]:
    """Each node's direct parents (the nodes feeding it), in creation order; roots map to ``[]``.
    Without edges, each node's parent is the node created before it."""
    return _prepare(node_ids, edges)[1]


def children(node_ids: Sequence[str], edges: Edges) -> dict[str, list[str]]:
    """Each node's direct children, in creation order."""
    return _prepare(node_ids, edges)[0]


def ancestors(node_ids: Sequence[str], edges: Edges) -> dict[str, list[str]]:
    """Each node's transitive parents, in creation order: the nodes whose output has been
    produced when it runs, i.e. what its template may reference as ``{{nodes.NAME}}``.
    Without edges, every node created before it."""
    _, pred = _prepare(node_ids, edges)
    position = {node: i for i, node in enumerate(node_ids)}
    found: dict[str, set[str]] = {}
    for node in topological_order(node_ids, edges):
        upstream: set[str] = set()
        for parent in pred[node]:
            upstream.add(parent)
            upstream |= found[parent]
        found[node] = upstream
    return {node: sorted(found[node], key=position.__getitem__) for node in node_ids}


def sinks(node_ids: Sequence[str], edges: Edges) -> list[str]:
    """Nodes without children (whose outputs are the final results), in creation order."""
    succ = _prepare(node_ids, edges)[0]
    return [node for node in node_ids if not succ[node]]


def with_names(message: str, names: dict[str, str]) -> str:
    """A problem's message with node ids replaced by node names (``names``: id → name): the
    functions here speak in ids, people recognise their nodes by name."""
    for node_id, name in names.items():
        message = message.replace(repr(node_id), repr(name)).replace(node_id, name)
    return message
