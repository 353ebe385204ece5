"""The run machine's node Maps as statemachine/run.asl.json has them, and the definition they
replaced (rebuilt from today's), for the tests that read or run them.

Today the ``Race`` Parallel has two inline Maps as branches of its own, beside the run's clock:
``Roots`` over the plan's roots that have children, whose iteration starts at the node (no gate
call) and which ends its branch, and ``Gated`` over every other node (a childless root included),
whose iteration starts at its gate (AwaitParents), followed by ``RunFinished``. ASL wants every
state name unique in the whole machine, so the roots' iteration is the gated one without its gate
states, each state named ``Root`` + its name: :func:`roots_iteration_of` spells that rule, and a
test holds the file to it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

RUN_MACHINE = Path(__file__).resolve().parents[2] / "statemachine" / "run.asl.json"
#: The states of the gated iteration that wait for the parents (the rest is the node's own).
GATE_STATES = ("AwaitParents", "GateThrottled", "GateTimedOut", "GateChecksLeft", "GateGaveUp")
ROOT_PREFIX = "Root"
_TARGETS = ("Next", "Default", "StartAt")


def load(path: Path = RUN_MACHINE) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def node_maps(document: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The run machine's two node Maps, ``{"Roots": ..., "Gated": ...}``: the states the Race's
    branches start at, but the clock."""
    document = document or load()
    maps: dict[str, dict[str, Any]] = {}
    for branch in document["States"]["Race"]["Branches"]:
        state = branch["States"][branch["StartAt"]]
        if state["Type"] == "Map":
            maps[branch["StartAt"]] = state
    assert sorted(maps) == ["Gated", "Roots"], sorted(maps)
    return maps


def iteration(name: str, document: dict[str, Any] | None = None) -> dict[str, Any]:
    """The states of one Map's iteration (``"Roots"`` or ``"Gated"``)."""
    states: dict[str, Any] = node_maps(document)[name]["ItemProcessor"]["States"]
    return states


def root_name(state: str) -> str:
    """What a state of the gated iteration is called in the roots' iteration."""
    return ROOT_PREFIX + state


def roots_iteration_of(gated: dict[str, Any]) -> dict[str, Any]:
    """The roots' iteration as the gated one defines it: without the gate's states, renamed."""
    names = {name: root_name(name) for name in gated if name not in GATE_STATES}

    def renamed(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: names.get(item, item) if key in _TARGETS and isinstance(item, str) else renamed(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [renamed(item) for item in value]
        return value

    return {names[name]: renamed(state) for name, state in gated.items() if name in names}


def one_map_of_nodes(document: dict[str, Any]) -> dict[str, Any]:
    """The run definition before a root ran without a gate: one Map (``Nodes``) over ``$.nodes``
    (every node, from ``start``'s answer) whose iteration is today's gated one (a root's gate write
    failed its condition at once), then ``RunFinished``, beside the clock. A definition without the
    two Maps is returned as it is."""
    branches = document.get("States", {}).get("Race", {}).get("Branches") or []
    starts = [branch.get("StartAt") for branch in branches]
    if "Roots" not in starts or "Gated" not in starts:
        return document
    previous = copy.deepcopy(document)
    gated_branch = copy.deepcopy(branches[starts.index("Gated")])
    gated = gated_branch["States"].pop("Gated")
    gated.pop("Comment", None)
    gated["ItemsPath"] = "$.nodes"
    gated_branch["States"] = {"Nodes": gated, **gated_branch["States"]}
    gated_branch["StartAt"] = "Nodes"
    clocks = [branch for branch in branches if branch.get("StartAt") not in ("Roots", "Gated")]
    previous["States"]["Race"]["Branches"] = [gated_branch, *copy.deepcopy(clocks)]
    return previous
