"""The contract between statemachine/*.asl.json and the node runner, checked without running either.

Both sides spell it in strings: a Task's ``action``, the error names a Catch or Retry matches, the
JSONPaths a state reads from what an earlier Task returned. A rename on one side used to fail only
when a machine ran (on AWS first). Here the definitions are read as data and walked state by state
with the *types* of what flows through them: each machine's input, each action's return annotation
in handlers/node_runner.py (pydantic models), a Catch's ``{"Error", "Cause"}``; every path a state
reads must be a field of the shape at that point, and what each Task sends must be the typed event
its action parses (no field it does not have, every field it requires, of its type).
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import pytest
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from tests.support.run_definition import one_map_of_nodes

import relayflow_runtime
from relayflow_runtime.domain.batch import ItemEntry
from relayflow_runtime.domain.engine import JobRound, RunInput
from relayflow_runtime.handlers import node_runner

ROOT = Path(__file__).resolve().parents[2]
STATEMACHINE_DIR = ROOT / "statemachine"
RUNTIME_DIR = Path(relayflow_runtime.__file__).parent


# ---- shapes: what a state's input holds, as far as the types say ----------------------------------
@dataclass(frozen=True)
class Obj:
    fields: tuple[tuple[str, Shape], ...]
    name: str
    #: The fields a value of this shape must have (a model's required fields).
    required: frozenset[str] = frozenset()

    def get(self, key: str) -> Shape | None:
        return dict(self.fields).get(key)

    def put(self, key: str, value: Shape) -> Obj:
        return Obj(tuple(sorted({**dict(self.fields), key: value}.items())), self.name, self.required | {key})


@dataclass(frozen=True)
class Arr:
    item: Shape


@dataclass(frozen=True)
class Scalar:
    kind: str


class _Anything:
    """A value the types do not describe further (``dict[str, Any]``): any path may be read."""

    def __repr__(self) -> str:
        return "Any"


Shape = Union[Obj, Arr, Scalar, _Anything]  # noqa: UP007 (a runtime alias under __future__ annotations)
ANY = _Anything()
NULL = Scalar("null")
STR, INT, BOOL = Scalar("str"), Scalar("int"), Scalar("bool")
#: What a Catch puts at its ResultPath.
CAUGHT = Obj((("Cause", STR), ("Error", STR)), "caught error")


def _former_names(field: FieldInfo) -> list[str]:
    """The names a field is also read under (a validation alias: what a previous definition sends)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [alias] if isinstance(alias, str) else []


def shape_of(tp: Any, former: bool = False) -> Shape:
    """A Python type (a pydantic model, a TypedDict, a builtin) as the shape Step Functions sees.
    ``former``: as an execution on a previous definition sees it, which also sends a field's former
    name (its validation alias) and reads what the runner still answers under it (a computed field);
    a required field is then given by any of its names (``required`` holds them joined by "|")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return ANY
    if tp is None or tp is type(None):
        return NULL
    if origin is typing.Annotated:
        return shape_of(args[0], former)
    if origin is Literal:
        return Scalar(type(args[0]).__name__)
    if origin in (Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        return shape_of(present[0], former) if len(present) == 1 else ANY
    if origin in (list, tuple) or (origin is not None and origin.__name__ == "Sequence"):
        return Arr(shape_of(args[0], former) if args else ANY)
    if origin in (dict, Mapping):
        return ANY
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        shapes: dict[str, Shape] = {}
        required: set[str] = set()
        for name, field in tp.model_fields.items():
            names = [name, *(n for n in _former_names(field) if n != name)] if former else [name]
            for each in names:
                shapes[each] = shape_of(field.annotation, former)
            if field.is_required():
                required.add("|".join(names))
        if former:
            for name, computed in tp.model_computed_fields.items():
                shapes.setdefault(name, shape_of(computed.return_type, former))
        return Obj(tuple(sorted(shapes.items())), tp.__name__, frozenset(required))
    if tp in (str, int, float, bool):
        return Scalar(tp.__name__)
    raise TypeError(f"no shape for {tp!r}")


def literal_shape(value: Any) -> Shape:
    if value is None:
        return NULL
    if isinstance(value, dict):
        fields = tuple(sorted((k, literal_shape(v)) for k, v in value.items()))
        return Obj(fields, "literal", frozenset(value))
    if isinstance(value, list):
        return Arr(literal_shape(value[0]) if value else ANY)
    return Scalar(type(value).__name__)


# ---- reading and writing paths ---------------------------------------------------------------------
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def steps(path: str) -> list[str | int]:
    assert path.startswith("$"), path
    rest, out = path[1:], []
    while rest:
        match = _STEP.match(rest)
        assert match, f"unsupported JSONPath {path!r}"
        out.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        rest = rest[match.end() :]
    return out


class Problems(list[str]):
    def read(self, shape: Shape, path: str, where: str) -> Shape:
        """The shape at ``path``; a problem noted when the types say it cannot be there."""
        node = shape
        for step in steps(path):
            if node is ANY:
                return ANY
            if isinstance(step, int) and isinstance(node, Arr):
                node = node.item
            elif isinstance(step, str) and isinstance(node, Obj) and node.get(step) is not None:
                node = node.get(step)  # type: ignore[assignment]
            else:
                what = node.name if isinstance(node, Obj) else repr(node)
                self.append(f"{where}: {path} reads {step!r}, which {what} does not have")
                return ANY
        return node


def write(shape: Shape, path: str | None, value: Shape) -> Shape:
    """A ResultPath: the result replaces the input ($), is dropped (null) or set at a field."""
    if path is None:
        return shape
    if path == "$":
        return value
    keys = steps(path)
    assert all(isinstance(k, str) for k in keys), path

    def put(node: Shape, rest: list[str | int]) -> Shape:
        base = node if isinstance(node, Obj) else Obj((), "object")
        head = str(rest[0])
        return base.put(head, value if len(rest) == 1 else put(base.get(head) or Obj((), "object"), rest[1:]))

    return put(shape, keys)


_FUNCTION = re.compile(r"^(States\.[A-Za-z]+)\(")
_ARGUMENT_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*")
#: What an intrinsic function returns, by its name (the ones whose answer a machine reads).
FUNCTION_RESULTS: dict[str, Shape] = {
    "States.MathAdd": INT,
    "States.MathRandom": INT,
    "States.Format": STR,
    "States.UUID": STR,
    "States.ArrayLength": INT,
}


@dataclass
class Walk:
    """One definition walked from its StartAt with its input's shape."""

    machine: str
    actions: Mapping[str, Any]
    problems: Problems
    item_reader: Shape
    fails: set[str]
    #: Walked as a previous definition: the runner's former names count (see ``shape_of``).
    former: bool = False

    def value(self, spec: Any, shape: Shape, context: Mapping[str, Shape], where: str) -> Shape:
        """A Parameters / ItemSelector / BatchInput template evaluated over ``shape``."""
        if not isinstance(spec, dict):
            return literal_shape(spec)
        fields: dict[str, Shape] = {}
        for key, raw in spec.items():
            if key.endswith(".$"):
                fields[key[:-2]] = self.expression(str(raw), shape, context, f"{where} {key}")
            else:
                fields[key] = self.value(raw, shape, context, where)
        return Obj(tuple(sorted(fields.items())), "parameters", frozenset(fields))

    def expression(self, text: str, shape: Shape, context: Mapping[str, Shape], where: str) -> Shape:
        if text.startswith("$$."):
            return context.get(text, ANY)
        function = _FUNCTION.match(text)
        if function:
            for path in _ARGUMENT_PATH.findall(text):
                self.problems.read(shape, path, where)
            return FUNCTION_RESULTS.get(function.group(1), ANY)
        return self.problems.read(shape, text, where)

    def run(self, states: dict[str, Any], start: str, shape: Shape, context: Mapping[str, Shape]) -> None:
        pending, seen = [(start, shape)], set()
        while pending:
            name, shape = pending.pop()
            if (name, shape) in seen:
                continue
            seen.add((name, shape))
            assert len(seen) < 500, f"{self.machine}: the walk does not settle at {name}"
            for next_name, next_shape in self.state(name, states[name], shape, context):
                pending.append((next_name, next_shape))

    def task(self, name: str, state: dict[str, Any], data: Shape, context: Mapping[str, Shape]) -> Shape:
        """A Task's answer: its action's typed answer, once what it sends is checked against the
        action's typed event."""
        where = f"{self.machine}.{name}"
        parameters = state.get("Parameters") or {}
        if not is_runner_task(state):
            # a service integration Step Functions calls itself (the run machine's gate: DynamoDB
            # UpdateItem): the JSONPaths its Parameters read are checked, there is no action; one
            # that waits for its token answers what the runner's SendTaskSuccess sends
            self.value(parameters, data, context, where)
            if state["Resource"].endswith(".waitForTaskToken"):
                return shape_of(node_runner.GATE_RELEASE)
            return ANY
        payload = parameters.get("Payload", parameters)
        sent = self.value(payload, data, context, where)
        action = self.actions.get(payload.get("action"))
        if action is None:
            self.problems.append(
                f"{where}: action {payload.get('action')!r} has no handler in the node runner"
            )
            return ANY
        assert isinstance(sent, Obj)
        sent = Obj(tuple(f for f in sent.fields if f[0] != "action"), sent.name, sent.required - {"action"})
        self.conforms(sent, shape_of(action.event, self.former), f"{where} sends")
        if state["Resource"].endswith(".waitForTaskToken"):
            return ANY  # the answer is what SendTaskSuccess sends, not the handler's
        return shape_of(typing.get_type_hints(action.handle)["return"], self.former)

    def conforms(self, sent: Shape, expected: Shape, where: str) -> None:
        """What a Task sends against what its action's event declares, field by field."""
        if sent is ANY or expected is ANY or sent == NULL:
            return
        if isinstance(sent, Obj) and isinstance(expected, Obj):
            sent_keys, expected_keys = {k for k, _ in sent.fields}, {k for k, _ in expected.fields}
            for key in sorted(sent_keys - expected_keys):
                self.problems.append(f"{where} {key!r}, which {expected.name} does not have")
            for key in sorted(expected.required):
                if not sent_keys & set(key.split("|")):
                    self.problems.append(f"{where} no {key!r}, which {expected.name} requires")
            for key in sorted(sent_keys & expected_keys):
                self.conforms(sent.get(key), expected.get(key), f"{where}.{key}")  # type: ignore[arg-type]
        elif isinstance(sent, Arr) and isinstance(expected, Arr):
            self.conforms(sent.item, expected.item, f"{where}[]")
        elif isinstance(sent, Scalar) and isinstance(expected, Scalar):
            if sent.kind != expected.kind and (sent.kind, expected.kind) != ("int", "float"):
                self.problems.append(f"{where}: a {sent.kind} where {expected.kind} is expected")
        else:
            self.problems.append(f"{where}: {sent!r} where {expected!r} is expected")

    def state(
        self, name: str, state: dict[str, Any], shape: Shape, context: Mapping[str, Shape]
    ) -> Iterator[tuple[str, Shape]]:
        where = f"{self.machine}.{name}"
        kind = state["Type"]
        read = self.problems.read
        for key in (
            "SecondsPath",
            "TimestampPath",
            "TimeoutSecondsPath",
            "HeartbeatSecondsPath",
            "ErrorPath",
        ):
            if key in state:
                read(shape, state[key], f"{where} {key}")
        data = read(shape, state["InputPath"], f"{where} InputPath") if state.get("InputPath") else shape
        result: Shape = data
        if kind == "Task":
            result = self.task(name, state, data, context)
        elif kind == "Pass":
            if "Parameters" in state:
                result = self.value(state["Parameters"], data, context, where)
            elif "Result" in state:
                result = literal_shape(state["Result"])
        elif kind == "Map":
            result = Arr(ANY)
            self.map(name, state, data, context)
        elif kind == "Parallel":
            result = Arr(ANY)
            for branch in state["Branches"]:
                self.run(branch["States"], branch["StartAt"], data, context)
        elif kind == "Choice":
            for choice in state["Choices"]:
                self.choice(choice, shape, where)
            for target in [c["Next"] for c in state["Choices"]] + [state.get("Default")]:
                if target:
                    yield target, shape
            return
        elif kind in ("Succeed", "Fail"):
            if kind == "Fail" and "Error" in state:
                self.fails.add(state["Error"])
            return
        output = write(shape, state.get("ResultPath", "$"), result) if kind != "Wait" else shape
        if state.get("OutputPath"):
            output = read(output, state["OutputPath"], f"{where} OutputPath")
        for catcher in state.get("Catch", ()):
            yield catcher["Next"], write(shape, catcher.get("ResultPath", "$"), CAUGHT)
        if state.get("Next"):
            yield state["Next"], output

    def choice(self, rule: dict[str, Any], shape: Shape, where: str) -> None:
        for nested in rule.get("And", []) + rule.get("Or", []) + ([rule["Not"]] if "Not" in rule else []):
            self.choice(nested, shape, where)
        if "Variable" in rule:
            self.problems.read(shape, rule["Variable"], f"{where} Variable")
        for key, value in rule.items():
            if key.endswith("Path") and isinstance(value, str):
                self.problems.read(shape, value, f"{where} {key}")

    def map(self, name: str, state: dict[str, Any], data: Shape, context: Mapping[str, Shape]) -> None:
        where = f"{self.machine}.{name}"
        for key in (
            "ItemsPath",
            "MaxConcurrencyPath",
            "ToleratedFailurePercentagePath",
            "ToleratedFailureCountPath",
        ):
            if key in state:
                self.problems.read(data, state[key], f"{where} {key}")
        if "ItemReader" in state:
            self.value(state["ItemReader"].get("Parameters"), data, context, f"{where} ItemReader")
            item = self.item_reader
        else:
            items = self.problems.read(data, state.get("ItemsPath", "$"), f"{where} ItemsPath")
            item = items.item if isinstance(items, Arr) else ANY
        inner = {**context, "$$.Map.Item.Value": item, "$$.Map.Item.Index": INT}
        if "ItemSelector" in state:
            item = self.value(state["ItemSelector"], data, inner, f"{where} ItemSelector")
        batcher = state.get("ItemBatcher")
        if batcher:
            for key in ("MaxItemsPerBatchPath", "MaxInputBytesPerBatchPath"):
                if key in batcher:
                    self.problems.read(data, batcher[key], f"{where} {key}")
            batch_input = self.value(batcher.get("BatchInput", {}), data, context, f"{where} BatchInput")
            item = Obj((("BatchInput", batch_input), ("Items", Arr(item))), "a child's batch")
        processor = state.get("ItemProcessor") or state["Iterator"]
        self.run(processor["States"], processor["StartAt"], item, context)


#: What starts each machine, and what its distributed Maps' ItemReader yields (the item list
#: prepare_batch writes, one ItemEntry a line, which run_items parses).
MACHINE_INPUTS: dict[str, type[BaseModel]] = {"run": RunInput, "batch": RunInput, "jobs": JobRound}
ITEM_READER_YIELDS = ItemEntry
CONTEXT = {"$$.Task.Token": STR, "$$.Execution.Id": STR, "$$.Execution.Name": STR}


def _definitions() -> list[str]:
    return sorted(p.name.removesuffix(".asl.json") for p in STATEMACHINE_DIR.glob("*.asl.json"))


def _load(machine: str) -> dict[str, Any]:
    return json.loads((STATEMACHINE_DIR / f"{machine}.asl.json").read_text(encoding="utf-8"))


def walk(
    machine: str, document: dict[str, Any] | None = None, *, former: bool = False
) -> tuple[Problems, set[str]]:
    document = document or _load(machine)
    problems, fails = Problems(), set[str]()
    walker = Walk(
        machine,
        node_runner.MACHINE_ACTIONS[machine],
        problems,
        shape_of(ITEM_READER_YIELDS, former),
        fails,
        former,
    )
    walker.run(document["States"], document["StartAt"], shape_of(MACHINE_INPUTS[machine], former), CONTEXT)
    return problems, fails


#: The definitions deployed before, as changes of today's (text replacements: today's spelling, the
#: former one; or a function rebuilding the former shape), newest first, each generation on top of
#: the ones after it. A running execution keeps the definition it started with across a deploy
#: (Step Functions UpdateStateMachine: "Running executions will continue to use the previous
#: definition"), and meets the updated runner: the runner reads what such an execution sends and
#: answers what it reads, until none can be running.
FORMER_SPELLINGS: list[tuple[str, list[tuple[str, str]] | Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("before a root ran without a gate (one Map gated every node)", one_map_of_nodes),
    (
        "before the run's clock was run_timeout and run_items's limit child_timeout",
        [
            ('"run_timeout.$": "$.run_timeout"', '"timeout.$": "$.timeout"'),
            ('"SecondsPath": "$.run_timeout"', '"SecondsPath": "$.timeout"'),
            (
                '"child_timeout.$": "$.BatchInput.child_timeout"',
                '"task_timeout.$": "$.BatchInput.child_timeout"',
            ),
        ],
    ),
    ("before a child's limit was child_timeout", [("child_timeout", "item_timeout")]),
]


def former_definitions(machine: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each previous definition of ``machine`` that differs from today's, named by its generation."""
    document = _load(machine)
    for generation, change in FORMER_SPELLINGS:
        before = json.dumps(document)
        if callable(change):
            document = change(document)
        else:
            text = before
            for today, former in change:
                text = text.replace(today, former)
            document = json.loads(text)
        if json.dumps(document) != before:
            yield generation, document


def _all_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        for branch in state.get("Branches", ()):
            yield from _all_states(branch["States"])
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _all_states(processor["States"])


# ---- the errors the runner raises --------------------------------------------------------------------
def _runtime_modules() -> list[types.ModuleType]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(relayflow_runtime.__path__, "relayflow_runtime.")
    ]


def _constructed_names() -> set[str]:
    """Every name the runtime's code calls (``SomeError(...)``) or raises bare (``raise SomeError``)."""
    names: set[str] = set()
    for path in RUNTIME_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = (
                node.func if isinstance(node, ast.Call) else node.exc if isinstance(node, ast.Raise) else None
            )
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
    return names


def runner_errors() -> dict[str, type[BaseException]]:
    """The exception classes of the runtime (found by introspection) that its code raises: a raised
    exception's class name is the error name Step Functions matches."""
    _runtime_modules()
    found: dict[str, type[BaseException]] = {}
    pending: list[type[BaseException]] = [BaseException]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("relayflow_runtime."):
            found[cls.__name__] = cls
    constructed = _constructed_names()
    return {name: cls for name, cls in found.items() if name in constructed}


def is_runner_task(state: dict[str, Any]) -> bool:
    """A Task that invokes the node runner (directly, or through lambda:invoke) rather than another
    service's integration."""
    resource = str(state.get("Resource", ""))
    function = str((state.get("Parameters") or {}).get("FunctionName", ""))
    return "NodeRunnerArn" in resource or "NodeRunnerArn" in function


def custom_error_names(document: dict[str, Any]) -> set[str]:
    """The error names a definition's Retry and Catch match, but Step Functions' own (``States.*``)
    and AWS services' (``Lambda.*``, ``Sandbox.*``, ...: every such name has a dot; a class name
    has none)."""
    names = set()
    for _, state in _all_states(document["States"]):
        for rule in [*state.get("Retry", ()), *state.get("Catch", ())]:
            names.update(name for name in rule["ErrorEquals"] if "." not in name)
    return names


# ---- the tests ------------------------------------------------------------------------------------
def test_every_machine_has_its_table_of_actions():
    assert sorted(node_runner.MACHINE_ACTIONS) == _definitions()


@pytest.mark.parametrize("machine", _definitions())
def test_every_task_action_has_a_handler_of_that_machine(machine: str):
    actions = set()
    for name, state in _all_states(_load(machine)["States"]):
        if state["Type"] == "Task" and is_runner_task(state):
            parameters = state.get("Parameters") or {}
            actions.add((name, parameters.get("Payload", parameters).get("action")))
    assert actions
    missing = [
        (name, action) for name, action in actions if action not in node_runner.MACHINE_ACTIONS[machine]
    ]
    assert not missing, f"{machine}: Tasks whose action the node runner does not handle: {missing}"


@pytest.mark.parametrize("machine", _definitions())
def test_every_handler_says_the_shape_it_takes_and_answers(machine: str):
    for name, action in node_runner.MACHINE_ACTIONS[machine].items():
        hints = typing.get_type_hints(action.handle)
        answer = hints.get("return", "missing")
        assert answer is type(None) or (isinstance(answer, type) and issubclass(answer, BaseModel)), (
            f"{machine} action {name!r} answers {answer!r}: annotate a pydantic model (or None)"
        )
        assert hints["event"] is action.event, f"{machine} action {name!r} takes another event than it parses"


@pytest.mark.parametrize("machine", _definitions())
def test_every_jsonpath_a_definition_reads_is_a_field_of_what_the_runner_returns_and_sends_what_it_takes(
    machine: str,
):
    problems, _ = walk(machine)
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("machine", _definitions())
def test_every_custom_error_name_is_an_exception_the_runner_raises_or_a_fail_state(machine: str):
    document = _load(machine)
    _, fails = walk(machine, document)
    raised = runner_errors()
    unknown = sorted(custom_error_names(document) - set(raised) - fails)
    assert not unknown, f"{machine}: error names no runner exception and no Fail state carries: {unknown}"


def test_the_walk_sees_what_it_checks():
    # Given the run machine, the walk reads the shapes the runner returns at the places they are used
    document = _load("run")
    # When a field the machine reads is renamed in the definition
    text = json.dumps(document).replace('"$.node.task_timeout"', '"$.node.task_timeout_s"')
    problems, _ = walk("run", json.loads(text))
    # Then the walk names it
    assert any("task_timeout_s" in problem and "RunNode" in problem for problem in problems), problems
    # And the errors found by introspection include the ones the machines match
    assert {"ExecutionNotRunning", "BudgetExhausted", "StoreContended", "NodeTimeout"} <= set(runner_errors())


@pytest.mark.parametrize("machine", _definitions())
def test_an_execution_on_a_previous_definition_still_reads_and_sends_what_the_runner_takes(machine: str):
    # Given the definitions a running execution may still hold after a deploy (today's with the
    # former names of the timeouts, generation by generation)
    for generation, document in former_definitions(machine):
        # When walked against the runner's shapes as such an execution sees them
        problems, _ = walk(machine, document, former=True)
        # Then every path it reads is still answered and every field it sends still taken
        assert not problems, f"{machine} {generation}:\n" + "\n".join(sorted(set(problems)))


def test_the_timeouts_are_read_under_their_names_and_a_former_name_is_not_enough_today():
    # Given today's definitions, which read each timeout under its one name
    run, batch = json.dumps(_load("run")), json.dumps(_load("batch"))
    assert '"$.run_timeout"' in run and '"$.run_timeout"' in batch and '"$.node.task_timeout"' in run
    assert '"$.node.gate_timeout"' in run and '"$.BatchInput.child_timeout"' in batch
    # When a definition reads a former name instead (the runner still answers it, for running
    # executions, but only as a computed field today's shapes do not count)
    for machine, text in (("run", run), ("batch", batch)):
        problems, _ = walk(machine, json.loads(text.replace('"$.run_timeout"', '"$.timeout"')))
        # Then the walk names it
        assert any("reads 'timeout'" in problem for problem in problems), (machine, problems)
    # And a child that sends run_items its limit under the former name is named too
    former = batch.replace(
        '"child_timeout.$": "$.BatchInput.child_timeout"', '"task_timeout.$": "$.BatchInput.child_timeout"'
    )
    problems, _ = walk("batch", json.loads(former))
    assert any("'task_timeout', which ItemsEvent does not have" in problem for problem in problems), problems
    # While the renamed paths are each of a previous definition's generations
    assert len(list(former_definitions("batch"))) == 2 and len(list(former_definitions("run"))) == 2


def test_the_gate_hands_run_node_what_the_releasing_parent_carries():
    # Given the run machine, whose gate keeps what the releasing parent sends at $.carried
    document = _load("run")
    assert walk("run", document)[0] == []
    # When RunNode reads it under another name
    text = json.dumps(document).replace('"carried.$": "$.carried"', '"carried.$": "$.carried_outputs"')
    problems, _ = walk("run", json.loads(text))
    # Then the walk names the read that finds nothing
    assert any("carried_outputs" in problem and "RunNode" in problem for problem in problems), problems
    # And what RunNode sends is what the runner's release hands the gate (typed on both sides)
    assert (
        typing.get_type_hints(node_runner.RUN_ACTIONS["node"].event)["carried"]
        == node_runner.GATE_RELEASE | None
    )


def test_the_two_node_maps_read_the_lists_start_splits_and_a_previous_execution_still_reads_nodes():
    # Given the run machine: a Map over the plan's roots (no gate) and one over the other nodes
    document = _load("run")
    text = json.dumps(document)
    assert '"ItemsPath": "$.roots"' in text and '"ItemsPath": "$.gated"' in text
    assert walk("run", document)[0] == []
    # When a Map read the one list of every node instead (the previous definition's $.nodes)
    problems, _ = walk("run", json.loads(text.replace('"ItemsPath": "$.roots"', '"ItemsPath": "$.nodes"')))
    # Then the walk names it: today's answer types the two lists, every node only as a computed field
    assert any("Roots ItemsPath" in problem and "'nodes'" in problem for problem in problems), problems
    # While an execution on the previous definition (one Map over $.nodes, every node gated) still
    # finds the list it reads, and only because start still answers it
    generation, previous = next(former_definitions("run"))
    assert "root" in generation and '"ItemsPath": "$.nodes"' in json.dumps(previous)
    assert walk("run", previous, former=True)[0] == []
    assert any("'nodes'" in problem for problem in walk("run", previous, former=False)[0])
