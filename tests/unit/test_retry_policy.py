"""One retry policy, two engines: a single run's node is retried by the run machine (RunNode's Catch
→ AttemptsLeft → Backoff → RetryWait in statemachine/run.asl.json, driven by the RetryPolicy that
``start`` hands it from the plan), a batch item's node by the batch engine in Python threads
(services/batch_items.py). Both must retry the same errors, as often, with the same waits. Each row
of the table runs through both: the machine's states are interpreted from the definition itself
(no stack), the batch engine's loop is the real one with a model that keeps failing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.run_definition import ROOT_PREFIX, iteration

import relayflow_runtime  # noqa: F401
from relayflow_runtime.domain.batch import ItemEntry
from relayflow_runtime.domain.engine import ModelRef, NodeSpec, Plan, RetryPolicy, RunRef
from relayflow_runtime.providers.base import ModelError, PermanentModelError, TransientModelError
from relayflow_runtime.services import batch_items
from relayflow_runtime.services.node_execution import NodeTimeout, retried

#: (the error every attempt raises, the version's config) -> (attempts, the bounds of each retry's wait)
TABLE: list[tuple[type[ModelError], dict[str, int], int, list[tuple[int, int]]]] = [
    (TransientModelError, {"max_retries": 3, "retry_delay_seconds": 1}, 4, [(0, 1), (0, 2), (0, 4)]),
    (
        NodeTimeout,
        {"max_retries": 2, "retry_delay_seconds": 5, "max_retry_delay_seconds": 8},
        3,
        [(0, 5), (0, 8)],
    ),
    (
        TransientModelError,
        {"max_retries": 4, "retry_delay_seconds": 30, "max_retry_delay_seconds": 60},
        5,
        [(0, 30), (0, 60), (0, 60), (0, 60)],
    ),
    (TransientModelError, {"max_retries": 0, "retry_delay_seconds": 10}, 1, []),
    (PermanentModelError, {"max_retries": 3, "retry_delay_seconds": 1}, 1, []),
]


def _plan(config: dict[str, int]) -> Plan:
    node = NodeSpec(
        id="n1", name="n1", idx=0, template="x", node_timeout=30, model=ModelRef(id="m", provider="builtin")
    )
    return Plan(workflow_id="wf", version_id="v", mode="single", config=config, nodes=[node])


# ---- the run machine, interpreted from its definition ---------------------------------------------
#: The run machine's two node iterations (a root's starts at the node, every other node's at its
#: gate) and what each calls the node's first state: both retry alike.
ITERATIONS = {"Gated": "", "Roots": ROOT_PREFIX}


def _node_states(kind: str = "Gated") -> dict[str, Any]:
    return dict(iteration(kind))


def _read(data: Any, path: str) -> Any:
    for key in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", path):
        data = data[key]
    return data


_TOKEN = re.compile(r"\s*(States\.[A-Za-z]+\(|\$[.A-Za-z0-9_]*|-?\d+|[(),])")


@dataclass
class _Intrinsics:
    """The intrinsic functions the retry states use; MathRandom's bounds are noted, its draw is
    the upper bound."""

    data: Any
    draws: list[tuple[int, int]]

    def evaluate(self, text: str) -> Any:
        tokens = _TOKEN.findall(text)
        value, rest = self._expression(tokens)
        assert not rest, text
        return value

    def _expression(self, tokens: list[str]) -> tuple[Any, list[str]]:
        head, rest = tokens[0].strip(), tokens[1:]
        if head.startswith("$"):
            return _read(self.data, head), rest
        if not head.startswith("States."):
            return int(head), rest
        args: list[Any] = []
        while rest[0] != ")":
            value, rest = self._expression(rest)
            args.append(value)
            if rest[0] == ",":
                rest = rest[1:]
        name = head[:-1]
        if name == "States.MathAdd":
            return args[0] + args[1], rest[1:]
        if name == "States.ArrayGetItem":
            return args[0][args[1]], rest[1:]
        if name == "States.MathRandom":
            self.draws.append((args[0], args[1]))
            return args[1], rest[1:]
        raise AssertionError(f"intrinsic {name} is not interpreted here")


def _catch_target(state: dict[str, Any], error: str) -> str:
    for catcher in state["Catch"]:
        if error in catcher["ErrorEquals"] or "States.ALL" in catcher["ErrorEquals"]:
            return str(catcher["Next"])
    raise AssertionError(f"{error} is not caught")


_CHOICE = {"NumericLessThanPath": lambda value, other: value < other}


def run_machine_attempts(
    error: str, retry: RetryPolicy, kind: str = "Gated"
) -> tuple[int, list[tuple[int, int]]]:
    """RunNode (of the ``kind`` iteration) failing with ``error`` every time: how often it ran, and
    each Backoff's bounds."""
    states, prefix = _node_states(kind), ITERATIONS[kind]
    data: dict[str, Any] = {
        "run": {},
        "node": {"id": "n1"},
        "retry": retry.model_dump(mode="json"),
        "attempt": 0,
        "carried": {},
    }
    attempts, draws, name = 0, list[tuple[int, int]](), prefix + "RunNode"
    for _ in range(1000):
        state = states[name]
        if name == prefix + "RunNode":
            attempts += 1
            name = _catch_target(state, error)
        elif state["Type"] == "Choice":
            name = state["Default"]
            for choice in state["Choices"]:
                (operator,) = set(choice) & set(_CHOICE)
                if _CHOICE[operator](_read(data, choice["Variable"]), _read(data, choice[operator])):
                    name = choice["Next"]
                    break
        elif state["Type"] == "Pass":
            evaluate = _Intrinsics(data, draws).evaluate
            data = {
                key.removesuffix(".$"): evaluate(value) if key.endswith(".$") else value
                for key, value in state["Parameters"].items()
            }
            name = state["Next"]
        elif state["Type"] == "Wait":
            assert _read(data, state["SecondsPath"]) == draws[-1][1]
            name = state["Next"]
        else:
            assert name == prefix + "NodeFailed", name
            return attempts, draws
    raise AssertionError("the retry loop does not end")


# ---- the batch engine, its own loop ---------------------------------------------------------------
class _Rng:
    def __init__(self) -> None:
        self.draws: list[tuple[int, int]] = []

    def randint(self, low: int, high: int) -> int:
        self.draws.append((low, high))
        return 0  # no real sleep


@dataclass
class _Child(batch_items._Child):
    def cancelled(self) -> bool:
        return False


def batch_engine_attempts(
    error: type[ModelError], plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[tuple[int, int]]]:
    calls: list[int] = []

    def run_attempt(node: NodeSpec, scope: Any, context: Any, *, tenant: str | None = None) -> Any:
        calls.append(context.attempt)
        raise error("the model failed")

    monkeypatch.setattr(batch_items, "run_attempt", run_attempt)
    rng = _Rng()
    child = _Child(
        RunRef(tenant="t", workflow_id="wf", execution_id="x"), plan, "text", "p/", 1000, None, rng=rng
    )  # type: ignore[arg-type]
    result = batch_items._run_node(child, ItemEntry(id="i1"), plan.nodes[0], {}, {}, lambda: "")
    assert result.record.status == ("timed_out" if error is NodeTimeout else "failed")
    assert result.record.attempts == len(calls)
    return len(calls), rng.draws


# ---- the table -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("error", "config", "attempts", "waits"), TABLE)
def test_the_run_machine_and_the_batch_engine_retry_alike(
    error: type[ModelError],
    config: dict[str, int],
    attempts: int,
    waits: list[tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a version's retry config, as the plan carries it
    plan = _plan(config)
    # When a node fails with the same error on every attempt in each engine
    in_machine = {kind: run_machine_attempts(error.__name__, plan.retry, kind) for kind in ITERATIONS}
    in_batch = batch_engine_attempts(error, plan, monkeypatch)
    # Then both attempted as often, drawing each wait between the same bounds (in the machine, a
    # root's iteration as every other node's)
    assert in_machine == {kind: (attempts, waits) for kind in ITERATIONS}
    assert in_batch == (attempts, waits)


def _model_errors() -> list[type[ModelError]]:
    found, pending = [], [ModelError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("relayflow_runtime."):
            found.append(cls)
    return found


@pytest.mark.parametrize("error", _model_errors(), ids=lambda cls: cls.__name__)
def test_the_run_machine_retries_exactly_the_errors_the_policy_retries(error: type[ModelError]) -> None:
    # Step Functions matches names, not classes: every subclass the policy retries must be named
    for kind, prefix in ITERATIONS.items():
        target = _catch_target(_node_states(kind)[prefix + "RunNode"], error.__name__)
        retries = target == prefix + "AttemptsLeft"
        assert retries == retried(error("x")), f"{kind}: {error.__name__} goes to {target}"
