"""The moto shim's distributed-Map patches, piece by piece (no stack): the definition rewrite
before moto's parser, the batches ItemBatcher makes, the failure-tolerance rule, and the guards
that fail loudly if moto moves what is patched."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from relayflow.local import moto_shim
from relayflow.local.moto_shim import DistributedMapSpec
from relayflow.local.shims import base, stepfunctions_map


def distributed_map(**fields: Any) -> dict[str, Any]:
    return {
        "Type": "Map",
        "ItemProcessor": {
            "ProcessorConfig": {
                "Mode": "DISTRIBUTED",
                "ExecutionType": fields.pop("execution_type", "STANDARD"),
            },
            "StartAt": fields.pop("child_start", "Child"),
            "States": fields.pop("child_states", {"Child": {"Type": "Pass", "End": True}}),
        },
        "End": True,
        **fields,
    }


def prepare(states: dict[str, Any]) -> tuple[dict[str, Any], dict[str, DistributedMapSpec]]:
    rewritten = copy.deepcopy(states)
    found: dict[str, DistributedMapSpec] = {}
    stepfunctions_map._prepare_states(rewritten, found, in_express=False)
    return rewritten, found


# ------------------------------------------------------------------------ the definition rewrite


def test_the_rewrite_keeps_the_batcher_aside_and_makes_the_rest_parseable_by_moto():
    # Given a distributed Map with an ItemBatcher, Express children and an integer tolerance,
    # inside a Parallel branch (as in statemachine/batch.asl.json)
    batcher = {"MaxItemsPerBatchPath": "$.per_child", "BatchInput": {"run.$": "$.run"}}
    states = {
        "Race": {
            "Type": "Parallel",
            "Branches": [
                {
                    "StartAt": "Items",
                    "States": {
                        "Items": distributed_map(
                            ItemBatcher=batcher, ToleratedFailurePercentage=100, execution_type="EXPRESS"
                        )
                    },
                }
            ],
            "End": True,
        }
    }
    rewritten, found = prepare(states)
    # Then moto gets a Map without ItemBatcher, a float tolerance and STANDARD children
    items = rewritten["Race"]["Branches"][0]["States"]["Items"]
    assert "ItemBatcher" not in items
    assert items["ToleratedFailurePercentage"] == 100.0 and isinstance(
        items["ToleratedFailurePercentage"], float
    )
    assert items["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] == "STANDARD"
    # and what it cannot hold is kept for the Map of that name
    assert found == {
        "Items": DistributedMapSpec(
            name="Items", batcher=batcher, express=True, tolerances=frozenset({"ToleratedFailurePercentage"})
        )
    }


def test_a_definition_without_distributed_maps_is_left_alone():
    states = {
        "A": {
            "Type": "Map",
            "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
        }
    }
    rewritten, found = prepare(states)
    assert rewritten == states and found == {}


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (distributed_map(ItemBatcher={"MaxItemsPerBatch": 2, "MaxItemsPerBatchPath": "$.n"}), "both"),
        (distributed_map(ItemBatcher={"MaxItems": 2}), "unknown fields"),
        (distributed_map(ResultWriter={"WriterConfig": {"Transformation": "SMALL"}}), "WriterConfig"),
        (distributed_map(ResultWriter={"WriterConfig": {"OutputType": "CSV"}}), "WriterConfig"),
        (distributed_map(ItemBatcher={"BatchInput": {}}), "needs MaxItemsPerBatch"),
        (distributed_map(ItemBatcher={"MaxItemsPerBatch": 0}), "positive integer"),
        (distributed_map(ItemBatcher={"MaxInputBytesPerBatch": 262_145}), "MaxInputBytesPerBatch"),
        (distributed_map(ItemBatcher={"MaxItemsPerBatch": 2}, ItemSelector={"x.$": "$"}), "ItemSelector"),
        (
            {
                "Type": "Map",
                "ItemBatcher": {"MaxItemsPerBatch": 2},
                "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
                "End": True,
            },
            "only valid in a DISTRIBUTED Map",
        ),
        (
            distributed_map(
                execution_type="EXPRESS",
                child_states={
                    "Child": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                        "Parameters": {"FunctionName": "f", "Payload": {"t.$": "$$.Task.Token"}},
                        "End": True,
                    }
                },
            ),
            "Express executions do not support",
        ),
    ],
)
def test_what_aws_refuses_is_refused_here_too(state: dict[str, Any], message: str):
    from moto.stepfunctions.parser.asl.parse.asl_parser import ASLParserException

    with pytest.raises(ASLParserException, match=message):
        prepare({"M": state})


def test_a_distributed_map_name_used_twice_is_refused():
    from moto.stepfunctions.parser.asl.parse.asl_parser import ASLParserException

    twice = {
        "P": {
            "Type": "Parallel",
            "Branches": [{"StartAt": "M", "States": {"M": distributed_map()}} for _ in range(2)],
            "End": True,
        }
    }
    with pytest.raises(ASLParserException, match="unique"):
        prepare(twice)


def test_the_parse_patch_attaches_the_spec_to_the_parsed_map():
    # Given the patched parser (moto's own, wrapped)
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    original = AmazonStateLanguageParser.__dict__["parse"].__func__
    parse = stepfunctions_map._make_parse(original)
    definition = {
        "StartAt": "Items",
        "States": {"Items": distributed_map(ItemBatcher={"MaxItemsPerBatch": 3}, execution_type="EXPRESS")},
    }
    # When it parses a definition moto alone refuses
    program, _ = parse(json.dumps(definition))
    # Then the Map's iteration component carries the batcher and the Express flag
    component = program.states.states["Items"].iteration_component
    assert component._relayflow_map.batcher == {"MaxItemsPerBatch": 3}
    assert component._relayflow_map.express is True


# ------------------------------------------------------------------------ what moto did before


@pytest.mark.parametrize(
    "fields",
    [
        {"ItemBatcher": {"MaxItemsPerBatch": 2}},
        {"ToleratedFailurePercentage": 50},
        {"execution_type": "EXPRESS"},
    ],
    ids=["ItemBatcher", "integer-ToleratedFailurePercentage", "EXPRESS"],
)
def test_moto_itself_still_refuses_what_the_parse_patch_rewrites(fields: dict[str, Any]):
    # moto 5.2's grammar has no ItemBatcher, wants 50.0 and only STANDARD children. If moto learns
    # them, this fails: then the rewrite (and the batching in the map run) must go, not double up.
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser, ASLParserException

    original = AmazonStateLanguageParser.__dict__["parse"].__func__
    definition = {"StartAt": "Items", "States": {"Items": distributed_map(**fields)}}
    with pytest.raises(ASLParserException):
        original(json.dumps(definition))


def test_moto_itself_still_ignores_the_tolerances_and_counts_child_executions():
    # moto's map run never reads ToleratedFailure*: the source of _map_run does not mention them
    import inspect

    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as module,
    )

    source = inspect.getsource(module.DistributedIterationComponent._map_run)
    if moto_shim.is_installed():
        source = inspect.getsource(
            base._originals[
                (stepfunctions_map._DISTRIBUTED_COMPONENT, "DistributedIterationComponent._map_run")
            ]
        )
    assert "tolerated" not in source.lower()


# ------------------------------------------------------------------------ batches


class FakeStates:
    def __init__(self, state_input: Any):
        self._input = state_input
        self.context_object = type(
            "Context", (), {"context_object_data": {"Execution": {"Id": "arn:exec"}}}
        )()

    def get_input(self) -> Any:
        return self._input


class FakeEnv:
    """The part of moto's Environment the batching reads (and a failure event records)."""

    next_state_name = "Items"
    event_history_context = type("History", (), {"source_event_id": 0})()

    def __init__(self, state_input: Any):
        self.states = FakeStates(state_input)


def test_batches_hold_at_most_max_items_per_batch_from_a_path_with_the_batch_input():
    env = FakeEnv({"batch": {"per_child": 4}, "run": {"id": "r1"}})
    batcher = {
        "MaxItemsPerBatchPath": "$.batch.per_child",
        "BatchInput": {"run.$": "$.run", "fixed": 1, "execution.$": "$$.Execution.Id"},
    }
    batches = stepfunctions_map._make_batches(env, batcher, list(range(25)))
    assert [len(b["Items"]) for b in batches] == [4, 4, 4, 4, 4, 4, 1]
    assert [i for b in batches for i in b["Items"]] == list(range(25))
    assert all(b["BatchInput"] == {"run": {"id": "r1"}, "fixed": 1, "execution": "arn:exec"} for b in batches)
    # without BatchInput, a child's input is {"Items": [...]} alone
    assert stepfunctions_map._make_batches(env, {"MaxItemsPerBatch": 10}, [1, 2]) == [{"Items": [1, 2]}]


def test_batches_stay_under_max_input_bytes_and_an_oversized_item_goes_alone():
    env = FakeEnv({})
    items = [{"text": "x" * 90} for _ in range(10)] + [{"text": "y" * 500}, {"text": "z"}]
    batches = stepfunctions_map._make_batches(env, {"MaxInputBytesPerBatch": 350}, items)
    sizes = [len(json.dumps(b, separators=(",", ":")).encode()) for b in batches]
    assert [i for b in batches for i in b["Items"]] == items
    for batch, size in zip(batches, sizes, strict=True):
        assert size <= 350 or len(batch["Items"]) == 1
    assert {"text": "y" * 500} in [b["Items"][0] for b in batches if len(b["Items"]) == 1]
    # and both limits together: whichever is reached first
    both = stepfunctions_map._make_batches(
        env, {"MaxInputBytesPerBatch": 350, "MaxItemsPerBatch": 2}, items[:10]
    )
    assert all(len(b["Items"]) <= 2 for b in both)


@pytest.mark.parametrize("value", [0, -1, "4", 2.5, True, None])
def test_a_max_items_path_to_anything_but_a_positive_integer_is_a_runtime_error(value: Any):
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEventException

    env = FakeEnv({"n": value})
    with pytest.raises(FailureEventException):
        stepfunctions_map._make_batches(env, {"MaxItemsPerBatchPath": "$.n"}, [1, 2, 3])


# ------------------------------------------------------------------------ tolerances


@pytest.mark.parametrize(
    ("tolerances", "count", "percentage", "failed", "total", "exceeded"),
    [
        (set(), 0, 0.0, 0, 10, False),  # nothing failed
        (set(), 0, 0.0, 1, 10, True),  # no tolerance: one failed item fails the Map
        ({"ToleratedFailurePercentage"}, 0, 30.0, 3, 10, False),  # 30% is not more than 30%
        ({"ToleratedFailurePercentage"}, 0, 20.0, 3, 10, True),
        ({"ToleratedFailurePercentage"}, 0, 100.0, 10, 10, False),  # 100: never
        ({"ToleratedFailureCount"}, 3, 0.0, 3, 10, False),
        ({"ToleratedFailureCount"}, 2, 0.0, 3, 10, True),
        ({"ToleratedFailureCountPath"}, 5, 0.0, 3, 10, False),
        ({"ToleratedFailureCount", "ToleratedFailurePercentage"}, 10, 10.0, 2, 10, True),  # either
        ({"ToleratedFailureCount", "ToleratedFailurePercentage"}, 1, 50.0, 2, 10, True),
        ({"ToleratedFailureCount", "ToleratedFailurePercentage"}, 5, 50.0, 2, 10, False),
    ],
)
def test_the_tolerance_rule(
    tolerances: set[str], count: int, percentage: float, failed: int, total: int, exceeded: bool
):
    spec = DistributedMapSpec(name="M", tolerances=frozenset(tolerances))
    assert stepfunctions_map._tolerance_exceeded(spec, failed, total, count, percentage) is exceeded


# ------------------------------------------------------------------------ guards


def test_moto_has_the_distributed_map_hooks_the_patches_replace():
    stepfunctions_map._check_distributed_map_hooks()


@pytest.mark.parametrize(
    ("module", "attribute", "replacement"),
    [
        (
            stepfunctions_map._DISTRIBUTED_COMPONENT,
            "DistributedIterationComponent._map_run",
            lambda self, env: None,
        ),
        (
            stepfunctions_map._DISTRIBUTED_WORKER,
            "DistributedItemProcessorWorker._eval_job",
            lambda self, job: None,
        ),
        (stepfunctions_map._ASL_PARSER, "AmazonStateLanguageParser.parse", lambda definition: None),
        (stepfunctions_map._RESULT_WRITER, "ResultWriter._eval_body", lambda self, env, more: None),
    ],
)
def test_the_guard_fails_loudly_when_moto_moves_a_patched_hook(
    module: str, attribute: str, replacement: Any, monkeypatch: pytest.MonkeyPatch
):
    import importlib

    owner: Any = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(moto_shim.MotoIncompatibleError, match="moto"):
        stepfunctions_map._check_distributed_map_hooks()
