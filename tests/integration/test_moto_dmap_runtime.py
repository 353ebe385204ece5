"""The moto shim's distributed-Map patches at run time, each on a small machine of its own on the
local stack: ItemBatcher (MaxItemsPerBatch(Path), MaxInputBytesPerBatch, BatchInput), the
failure tolerances and their error, Express children (and their 5-minute limit), a static
ResultWriter, Label, and the map run's item counts."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from relayflow.local.shims import stepfunctions_map
from relayflow.local.stack import LocalStack

# One stack for the module: each test runs batches of its own.
pytestmark = pytest.mark.shared_stack


def put_items(stack: LocalStack, items: list[Any]) -> tuple[str, str]:
    bucket = stack.outputs["BucketName"]
    key = f"lists/{uuid.uuid4().hex}.json"
    stack.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(items).encode())
    return bucket, key


def items_map(bucket: str, key: str, *, child: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A distributed Map over a JSON list in S3 whose child (by default) returns its input."""
    states = child or {"Echo": {"Type": "Pass", "End": True}}
    return {
        "Type": "Map",
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSON"},
            "Parameters": {"Bucket": bucket, "Key": key},
        },
        "ItemProcessor": {
            "ProcessorConfig": {
                "Mode": "DISTRIBUTED",
                "ExecutionType": fields.pop("execution_type", "STANDARD"),
            },
            "StartAt": next(iter(states)),
            "States": states,
        },
        "End": True,
        **fields,
    }


def without_end(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key != "End"}


def run_machine(
    stack: LocalStack, definition: dict[str, Any], payload: Any = None, timeout: float = 30
) -> Any:
    sfn = stack.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=f"dmap-{uuid.uuid4().hex[:10]}",
        definition=json.dumps(definition),
        roleArn=stack.context.attributes["BatchMachineRole"]["Arn"],
    )["stateMachineArn"]
    execution = sfn.start_execution(
        stateMachineArn=arn, name=f"x-{uuid.uuid4().hex[:10]}", input=json.dumps(payload or {})
    )["executionArn"]
    return stack.wait_for_execution(execution, timeout=timeout)


def map_run(stack: LocalStack, execution_arn: str) -> dict[str, Any]:
    sfn = stack.client("stepfunctions")
    (run,) = sfn.list_map_runs(executionArn=execution_arn)["mapRuns"]
    described: dict[str, Any] = sfn.describe_map_run(mapRunArn=run["mapRunArn"])
    return described


# A child that fails (no Catch) when the first item of its batch is "bad". (Not a Choice on
# $.Items[0].bad: moto's JSONPath gives [true] for a field under an index, AWS gives true.)
FAILING_CHILD = {
    "First": {
        "Type": "Pass",
        "Parameters": {"first.$": "States.ArrayGetItem($.Items, 0)"},
        "Next": "Check",
    },
    "Check": {
        "Type": "Choice",
        "Choices": [{"Variable": "$.first.bad", "BooleanEquals": True, "Next": "Broke"}],
        "Default": "Fine",
    },
    "Broke": {"Type": "Fail", "Error": "ItemBroke", "Cause": "a bad item"},
    "Fine": {"Type": "Pass", "End": True},
}


def test_item_batcher_delivers_batches_with_max_items_per_batch_path_and_batch_input(local_stack: LocalStack):
    # Given 25 items and an ItemBatcher whose size comes from the state input (moto 5.2 alone
    # refuses the definition: ASLParserException at "ItemBatcher")
    bucket, key = put_items(local_stack, [{"n": n} for n in range(25)])
    definition = {
        "StartAt": "Items",
        "States": {
            "Items": items_map(
                bucket,
                key,
                ItemBatcher={
                    "MaxItemsPerBatchPath": "$.per_child",
                    "BatchInput": {"run.$": "$.run", "kind": "test"},
                },
                MaxConcurrency=3,
            )
        },
    }
    # When it runs
    done = run_machine(local_stack, definition, {"per_child": 4, "run": {"id": "r1"}})
    # Then each child got {"Items": [<= 4 items], "BatchInput": {...}}, every item exactly once
    assert done["status"] == "SUCCEEDED", done
    batches = json.loads(done["output"])
    assert [len(b["Items"]) for b in batches] == [4, 4, 4, 4, 4, 4, 1]
    assert [item["n"] for b in batches for item in b["Items"]] == list(range(25))
    assert all(b["BatchInput"] == {"run": {"id": "r1"}, "kind": "test"} for b in batches)
    # and the map run counts items (25) and child executions (7), as AWS does
    counts = map_run(local_stack, done["executionArn"])
    assert counts["itemCounts"]["total"] == counts["itemCounts"]["succeeded"] == 25
    assert counts["executionCounts"]["total"] == counts["executionCounts"]["succeeded"] == 7


def test_item_batcher_splits_by_max_input_bytes_per_batch(local_stack: LocalStack):
    bucket, key = put_items(local_stack, [{"text": "x" * 90, "n": n} for n in range(10)])
    definition = {
        "StartAt": "Items",
        "States": {"Items": items_map(bucket, key, ItemBatcher={"MaxInputBytesPerBatch": 350})},
    }
    done = run_machine(local_stack, definition)
    assert done["status"] == "SUCCEEDED", done
    batches = json.loads(done["output"])
    assert [item["n"] for b in batches for item in b["Items"]] == list(range(10))
    assert all(len(json.dumps(b, separators=(",", ":"))) <= 350 for b in batches)
    assert len(batches) > 1


def test_a_max_items_path_to_a_bad_value_fails_with_states_runtime(local_stack: LocalStack):
    bucket, key = put_items(local_stack, [1, 2, 3])
    definition = {
        "StartAt": "Items",
        "States": {"Items": items_map(bucket, key, ItemBatcher={"MaxItemsPerBatchPath": "$.n"})},
    }
    done = run_machine(local_stack, definition, {"n": 0})
    assert done["status"] == "FAILED"
    assert done["error"] == "States.Runtime"


@pytest.mark.parametrize(
    ("tolerance", "status"),
    [
        ({}, "FAILED"),  # moto alone: SUCCEEDED with null for the failed items
        ({"ToleratedFailurePercentage": 30}, "SUCCEEDED"),  # an integer literal (moto: parse error)
        ({"ToleratedFailurePercentage": 20}, "FAILED"),
        ({"ToleratedFailureCount": 3}, "SUCCEEDED"),
        ({"ToleratedFailureCount": 2}, "FAILED"),
        ({"ToleratedFailureCount": 10, "ToleratedFailurePercentage": 20}, "FAILED"),
        ({"ToleratedFailurePercentage": 100}, "SUCCEEDED"),
    ],
)
def test_failure_tolerances_decide_the_maps_outcome(
    local_stack: LocalStack, tolerance: dict[str, Any], status: str
):
    # Given 10 items, 3 of which fail their child (one item per child)
    items = [{"n": n, "bad": n in (2, 5, 8)} for n in range(10)]
    bucket, key = put_items(local_stack, items)
    definition = {
        "StartAt": "Items",
        "States": {
            "Items": items_map(
                bucket, key, child=FAILING_CHILD, ItemBatcher={"MaxItemsPerBatch": 1}, **tolerance
            )
        },
    }
    done = run_machine(local_stack, definition)
    # Then the Map fails exactly when a given threshold is exceeded, with AWS's error name
    assert done["status"] == status, done
    if status == "FAILED":
        assert done["error"] == "States.ExceedToleratedFailureThreshold"
    counts = map_run(local_stack, done["executionArn"])["itemCounts"]
    assert (counts["total"], counts["failed"], counts["succeeded"]) == (10, 3, 7)


def test_a_failed_child_fails_every_item_of_its_batch_and_the_error_can_be_caught(local_stack: LocalStack):
    # Given batches of 2 and one bad item, 40% tolerated, and a Catch on the Map
    items = [{"n": n, "bad": n == 4} for n in range(10)]
    bucket, key = put_items(local_stack, items)
    definition = {
        "StartAt": "Items",
        "States": {
            "Items": {
                **without_end(
                    items_map(
                        bucket,
                        key,
                        child=FAILING_CHILD,
                        ItemBatcher={"MaxItemsPerBatch": 2},
                        ToleratedFailurePercentage=10,
                    )
                ),
                "Next": "Fine",
                "Catch": [{"ErrorEquals": ["States.ExceedToleratedFailureThreshold"], "Next": "Caught"}],
            },
            "Fine": {"Type": "Succeed"},
            "Caught": {"Type": "Pass", "Result": {"caught": True}, "End": True},
        },
    }
    done = run_machine(local_stack, definition)
    # Then the batch's 2 items count as failed (20% > 10%), and the Catch routes the Map's error
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == {"caught": True}
    counts = map_run(local_stack, done["executionArn"])
    assert counts["itemCounts"]["failed"] == 2 and counts["executionCounts"]["failed"] == 1


def test_express_children_run_and_stop_at_expresss_time_limit(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
):
    # Given Express children (moto alone refuses EXPRESS), whose limit is shortened to 1 s here
    monkeypatch.setattr(stepfunctions_map, "EXPRESS_CHILD_TIMEOUT_SECONDS", 1)
    bucket, key = put_items(local_stack, [{"n": 0, "wait": 0}, {"n": 1, "wait": 3}])
    child = {"Wait": {"Type": "Wait", "SecondsPath": "$.wait", "End": True}}
    definition = {
        "StartAt": "Items",
        "States": {
            "Items": items_map(
                bucket, key, child=child, execution_type="EXPRESS", ToleratedFailureCount=0, MaxConcurrency=2
            )
        },
    }
    began = time.monotonic()
    done = run_machine(local_stack, definition)
    # Then the quick child succeeded, the slow one timed out (a failure), and the Map failed on it
    assert done["status"] == "FAILED", done
    assert done["error"] == "States.ExceedToleratedFailureThreshold"
    counts = map_run(local_stack, done["executionArn"])["itemCounts"]
    assert (counts["succeeded"], counts["timedOut"]) == (1, 1)
    assert time.monotonic() - began < 2.9


def test_express_children_refuse_wait_for_task_token_at_creation(local_stack: LocalStack):
    bucket, key = put_items(local_stack, [1])
    child = {
        "Park": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {"FunctionName": "f", "Payload": {"token.$": "$$.Task.Token"}},
            "End": True,
        }
    }
    definition = {
        "StartAt": "Items",
        "States": {"Items": items_map(bucket, key, child=child, execution_type="EXPRESS")},
    }
    with pytest.raises(Exception, match="Express executions do not support"):
        run_machine(local_stack, definition)


def test_a_static_result_writer_writes_its_manifest_and_label_names_the_map_run(local_stack: LocalStack):
    bucket, key = put_items(local_stack, [{"n": n} for n in range(5)])
    definition = {
        "StartAt": "Items",
        "States": {
            "Items": items_map(
                bucket,
                key,
                Label="items",
                ItemBatcher={"MaxItemsPerBatch": 2},
                ResultWriter={
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": bucket, "Prefix": "map-results"},
                },
            )
        },
    }
    done = run_machine(local_stack, definition)
    assert done["status"] == "SUCCEEDED", done
    output = json.loads(done["output"])
    # The Map's output is the ResultWriter's reference, not the results
    assert output["ResultWriterDetails"]["Bucket"] == bucket
    manifest_key = output["ResultWriterDetails"]["Key"]
    assert manifest_key.startswith("map-results/") and manifest_key.endswith("/manifest.json")
    manifest = json.loads(local_stack.client("s3").get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["MapRunArn"] == output["MapRunArn"]
    assert ":mapRun:" in output["MapRunArn"] and "/items:" in output["MapRunArn"]
