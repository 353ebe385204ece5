"""The local stack's fault profile (relayflow.local.faults): each fault is one AWS behaviour; each
test shows it fires when the profile asks for it (seeded) and that the stack without a profile
(what `relayflow serve` and `make demo` run) does not show it."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tests import fixtures_handlers as fx

from relayflow.local.faults import HISTORY_EVENT_LIMIT, FaultInjector, FaultProfile
from relayflow.local.stack import LocalStack

CALM = FaultProfile.calm(seed=7)


def only(seed: int = 7, **faults: Any) -> FaultProfile:
    """A profile with just these faults on."""
    return CALM.model_copy(update={"seed": seed, **faults})


@pytest.fixture(autouse=True)
def _recorded() -> Iterator[None]:
    fx.reset()
    yield
    fx.reset()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def no_retries(stack: LocalStack, service: str) -> Any:
    """A client of the stack's that does not retry (so a throttle reaches the test)."""
    return boto3.client(service, region_name=stack.region, config=Config(retries={"max_attempts": 1}))


def retrying(stack: LocalStack, service: str) -> Any:
    """A client with botocore's standard retries (adaptive mode, the runtime's, retries the same
    errors and also slows its sender down after a throttle: seconds per call in a test)."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client(service, region_name=stack.region, config=config)


def two_puts(table: str) -> list[dict[str, Any]]:
    key = uuid.uuid4().hex
    return [
        {"Put": {"TableName": table, "Item": {"pk": {"S": f"a#{key}"}, "sk": {"S": "1"}}}},
        {"Put": {"TableName": table, "Item": {"pk": {"S": f"b#{key}"}, "sk": {"S": "1"}}}},
    ]


def run_machine(stack: LocalStack, definition: dict[str, Any], payload: Any = None) -> Any:
    sfn = stack.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=unique("faults"),
        definition=json.dumps(definition),
        roleArn=stack.context.attributes["BatchMachineRole"]["Arn"],
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name=unique("x"), input=json.dumps(payload or {}))
    return stack.wait_for_execution(execution["executionArn"], timeout=30)


def task(function_arn: str, **fields: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
        "OutputPath": "$.Payload",
        "End": True,
        **fields,
    }


# ---- the draws -------------------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_faults_and_another_seed_others() -> None:
    def draws(seed: int) -> list[bool]:
        injector = FaultInjector(only(seed=seed, transaction_conflict_rate=0.3))
        return [injector.chance("transaction_conflict", 0.3) for _ in range(200)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert 30 < sum(draws(1)) < 90  # about 30%


def serve_stack(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, Any, str]:
    """(exit code, the stack `relayflow serve ARGS` would serve, its error output); nothing served."""
    from relayflow import cli
    from relayflow.local import server

    served: list[LocalStack] = []
    monkeypatch.setattr(server, "run_server", lambda port, **kwargs: served.append(kwargs["stack"]))
    errors = io.StringIO()
    code = cli.main(["serve", "--ephemeral", "--port", "0", *args], stdout=io.StringIO(), stderr=errors)
    return code, served[0] if served else None, errors.getvalue()


def test_serve_runs_without_faults_unless_asked(
    monkeypatch: pytest.MonkeyPatch, local_stack: LocalStack
) -> None:
    # relayflow serve (and make demo, and the tests' stacks) start no fault profile
    code, stack, _ = serve_stack(monkeypatch)
    assert code == 0 and stack.faults is None
    assert local_stack.faults is None
    # --faults aws [--fault-seed N] switches the aws profile on
    code, stack, _ = serve_stack(monkeypatch, "--faults", "aws", "--fault-seed", "3")
    assert code == 0 and stack.faults is not None
    assert stack.faults.profile == FaultProfile.named("aws", seed=3)
    # an unknown profile, or a seed alone, is a usage error that says what to do
    code, stack, errors = serve_stack(monkeypatch, "--faults", "weather")
    assert code == 2 and stack is None and "unknown fault profile 'weather'; known: aws, none" in errors
    code, stack, errors = serve_stack(monkeypatch, "--fault-seed", "3")
    assert code == 2 and stack is None and "--fault-seed needs --faults" in errors


def test_the_aws_profile_has_every_fault_on() -> None:
    profile = FaultProfile.named("aws", seed=3)
    assert profile.seed == 3
    assert profile.transaction_conflict_rate > 0 and profile.throttle_rate > 0
    assert profile.reserved_concurrency and profile.function_timeout
    assert profile.lambda_service_exception_rate > 0 and profile.history_event_limit == HISTORY_EVENT_LIMIT
    assert profile.express_repeat_rate > 0 and profile.express_outlive_parent
    assert profile.event_duplicate_rate > 0 and profile.event_delay_rate > 0
    assert profile.status_event_loss_rate > 0
    with pytest.raises(ValueError, match="unknown fault profile"):
        FaultProfile.named("weather")


# ---- DynamoDB --------------------------------------------------------------------------------------


def test_a_transaction_conflict_cancels_the_whole_transaction_with_a_reason_per_item() -> None:
    with LocalStack(faults=only(transaction_conflict_rate=1.0)) as stack:
        table = stack.outputs["TableName"]
        dynamodb = stack.client("dynamodb")
        puts = two_puts(table)
        with pytest.raises(ClientError) as caught:
            dynamodb.transact_write_items(TransactItems=puts)
        error = caught.value.response
        assert error["Error"]["Code"] == "TransactionCanceledException"
        reasons = error["CancellationReasons"]
        assert sorted(r["Code"] for r in reasons) == ["None", "TransactionConflict"]
        # nothing of it was written
        for put in puts:
            key = {k: put["Put"]["Item"][k] for k in ("pk", "sk")}
            assert "Item" not in dynamodb.get_item(TableName=table, Key=key)
        assert stack.faults is not None and stack.faults.injected["transaction_conflict"] == 1


def test_transactions_never_conflict_without_the_profile(local_stack: LocalStack) -> None:
    dynamodb = local_stack.client("dynamodb")
    for _ in range(30):
        dynamodb.transact_write_items(TransactItems=two_puts(local_stack.outputs["TableName"]))


def test_a_throttle_reaches_a_caller_that_does_not_retry_and_the_sdk_retries_it() -> None:
    with LocalStack(faults=only(throttle_rate=0.25, seed=11)) as stack:
        table = stack.outputs["TableName"]
        codes = set()
        for n in range(40):  # until one is throttled (a quarter of them)
            try:
                key = {"pk": {"S": f"x{n}"}, "sk": {"S": "y"}}
                no_retries(stack, "dynamodb").get_item(TableName=table, Key=key)
            except ClientError as exc:
                codes.add(exc.response["Error"]["Code"])
                break
        assert codes and codes <= {"ProvisionedThroughputExceededException", "ThrottlingException"}
        # botocore's retries (the runtime's clients, Step Functions' integrations) get past them
        dynamodb = retrying(stack, "dynamodb")
        for n in range(10):
            dynamodb.put_item(TableName=table, Item={"pk": {"S": f"p{n}"}, "sk": {"S": "s"}})
        assert stack.faults is not None and stack.faults.injected["dynamodb_throttle"] > len(codes)
        # and a throttled transaction is refused whole, never cancelled item by item
        dynamodb = no_retries(stack, "dynamodb")
        outcomes: Counter[str] = Counter()
        for _ in range(12):
            try:
                dynamodb.transact_write_items(TransactItems=two_puts(table))
                outcomes["written"] += 1
            except ClientError as exc:
                outcomes[exc.response["Error"]["Code"]] += 1
        throttles = {"ProvisionedThroughputExceededException", "ThrottlingException"}
        assert outcomes["written"] and set(outcomes) - {"written"}, outcomes
        assert set(outcomes) <= {"written", *throttles}, outcomes


def test_nothing_is_throttled_without_the_profile(local_stack: LocalStack) -> None:
    dynamodb = no_retries(local_stack, "dynamodb")
    for n in range(30):
        item = {"pk": {"S": f"c{n}"}, "sk": {"S": "s"}}
        dynamodb.put_item(TableName=local_stack.outputs["TableName"], Item=item)


# ---- Lambda ----------------------------------------------------------------------------------------


def two_at_once(stack: LocalStack) -> dict[str, Any]:
    """Two branches calling one function (reserved concurrency 1 when the profile is on) at once."""
    arn = stack.register_function(unique("Gate"), fx.handler("sleep_then_record"), timeout=10)
    if stack.faults is not None:
        stack.faults.reserved[arn.rsplit(":", 1)[-1]] = 1
    branch = {"StartAt": "Call", "States": {"Call": task(arn)}}
    definition = {
        "StartAt": "Both",
        "States": {"Both": {"Type": "Parallel", "Branches": [branch, branch], "End": True}},
    }
    result: dict[str, Any] = run_machine(stack, definition, {"seconds": 0.5})
    return result


def test_an_invocation_over_reserved_concurrency_is_refused_as_lambda_does() -> None:
    with LocalStack(faults=only(reserved_concurrency=True)) as stack:
        # the template's reservations are known
        assert stack.faults is not None
        assert stack.faults.reserved[stack.functions["SweeperFunction"].function_name] == 1
        done = two_at_once(stack)
        assert done["status"] == "FAILED", done
        assert done["error"] == "Lambda.TooManyRequestsException"
        assert stack.faults.injected["lambda_too_many_requests"] == 1


def test_reserved_concurrency_is_not_enforced_without_the_profile(local_stack: LocalStack) -> None:
    done = two_at_once(local_stack)
    assert done["status"] == "SUCCEEDED", done


def slow_call(stack: LocalStack) -> tuple[dict[str, Any], float]:
    arn = stack.register_function(unique("Slow"), fx.handler("sleep_then_record"), timeout=1)
    started = time.monotonic()
    done = run_machine(stack, {"StartAt": "Call", "States": {"Call": task(arn)}}, {"seconds": 2})
    return done, time.monotonic() - started


def test_a_function_is_stopped_at_its_timeout_and_its_late_result_dropped() -> None:
    with LocalStack(faults=only(function_timeout=True)) as stack:
        done, elapsed = slow_call(stack)
        # the caller got Sandbox.Timedout at the 1 s deadline, before the handler returned
        assert done["status"] == "FAILED", done
        assert done["error"] == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in done["cause"]
        assert elapsed < 1.9
        assert fx.recorded("Slow") == []
        # the handler (a thread that cannot be killed) finishes in the background; nobody sees it
        time.sleep(1.3)
        assert len(fx.recorded("Slow")) == 1
        assert stack.faults is not None and stack.faults.injected["lambda_timeout"] == 1


def test_a_function_runs_past_its_timeout_without_the_profile(local_stack: LocalStack) -> None:
    done, _ = slow_call(local_stack)
    assert done["status"] == "SUCCEEDED", done


def quick_call(stack: LocalStack) -> dict[str, Any]:
    arn = stack.register_function(unique("Quick"), fx.handler("record"))
    result: dict[str, Any] = run_machine(stack, {"StartAt": "Call", "States": {"Call": task(arn)}}, {})
    return result


def test_lambda_answers_service_exception_at_the_profiles_rate() -> None:
    with LocalStack(faults=only(lambda_service_exception_rate=1.0)) as stack:
        done = quick_call(stack)
        assert done["status"] == "FAILED", done
        assert done["error"] == "Lambda.ServiceException"
        assert fx.recorded("Quick") == []


def test_invoke_errors_are_named_alike_for_a_task_whose_resource_is_the_functions_arn() -> None:
    # The template's machines name the node runner's ARN as Resource; moto named Invoke's errors
    # "Exception" there, which no Retry matches
    with LocalStack(faults=only(lambda_service_exception_rate=1.0)) as stack:
        arn = stack.register_function(unique("Direct"), fx.handler("record"))
        definition = {"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": arn, "End": True}}}
        done = run_machine(stack, definition)
        assert done["status"] == "FAILED", done
        assert done["error"] == "Lambda.ServiceException"


def test_lambda_never_answers_service_exception_without_the_profile(local_stack: LocalStack) -> None:
    for _ in range(5):
        assert quick_call(local_stack)["status"] == "SUCCEEDED"


# ---- Step Functions --------------------------------------------------------------------------------

# Seven Pass states in a loop of a Map: ~50 history events.
MANY_EVENTS = {
    "StartAt": "Each",
    "States": {
        "Each": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "A",
                "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "End": True}},
            },
            "End": True,
        }
    },
}


def test_an_execution_over_the_history_limit_fails_as_on_aws() -> None:
    with LocalStack(faults=only(history_event_limit=30)) as stack:
        done = run_machine(stack, MANY_EVENTS, {"items": list(range(10))})
        assert done["status"] == "FAILED", done
        assert done["error"] == "States.Runtime"
        assert "maximum number of history events (30)" in done["cause"]


def test_history_events_are_not_limited_without_the_profile(local_stack: LocalStack) -> None:
    done = run_machine(local_stack, MANY_EVENTS, {"items": list(range(10))})
    assert done["status"] == "SUCCEEDED", done


def test_a_state_output_over_256_kib_fails_with_or_without_the_profile(local_stack: LocalStack) -> None:
    # moto's interpreter enforces this quota itself: the local stack always shows it
    definition = {"StartAt": "Big", "States": {"Big": {"Type": "Pass", "Result": "x" * 262_144, "End": True}}}
    done = run_machine(local_stack, definition)
    assert done["status"] == "FAILED", done
    assert done["error"] == "States.DataLimitExceeded"


def express_map(child_states: dict[str, Any]) -> dict[str, Any]:
    return {
        "StartAt": "Items",
        "States": {
            "Items": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": next(iter(child_states)),
                    "States": child_states,
                },
                "End": True,
            }
        },
    }


def run_express_children(stack: LocalStack) -> dict[str, Any]:
    arn = stack.register_function(unique("Child"), fx.handler("record"))
    result: dict[str, Any] = run_machine(stack, express_map({"Call": task(arn)}), {"items": list(range(6))})
    return result


def test_express_children_run_at_least_once() -> None:
    with LocalStack(faults=only(express_repeat_rate=1.0)) as stack:
        done = run_express_children(stack)
        assert done["status"] == "SUCCEEDED", done
        # every child ran twice; the Map's output has each child once
        assert len(fx.recorded("Child")) == 12
        assert len(json.loads(done["output"])) == 6


def test_express_children_run_exactly_once_without_the_profile(local_stack: LocalStack) -> None:
    done = run_express_children(local_stack)
    assert done["status"] == "SUCCEEDED", done
    assert len(fx.recorded("Child")) == 6


#: How long the children of `end_parent_while_children_wait` wait before their call.
CHILD_WAIT_SECONDS = 2


def end_parent_while_children_wait(stack: LocalStack, how: str) -> str:
    """The parent's status once it was stopped (how="stop") or timed out (how="timeout") while its
    two Express children wait CHILD_WAIT_SECONDS before calling a function."""
    arn = stack.register_function(unique("Late"), fx.handler("record"))
    child = {"Pause": {"Type": "Wait", "Seconds": CHILD_WAIT_SECONDS, "Next": "Call"}, "Call": task(arn)}
    definition = express_map(child)
    if how == "timeout":
        # moto counts whole seconds: 1 ends the parent a whole second before the children call, a
        # margin a loaded machine's late timer does not eat
        definition["TimeoutSeconds"] = 1
    sfn = stack.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=unique("faults"),
        definition=json.dumps(definition),
        roleArn=stack.context.attributes["BatchMachineRole"]["Arn"],
    )["stateMachineArn"]
    payload = json.dumps({"items": [1, 2]})
    execution = sfn.start_execution(stateMachineArn=machine, name=unique("x"), input=payload)
    if how == "stop":
        time.sleep(0.3)
        sfn.stop_execution(executionArn=execution["executionArn"], error="Test", cause="stopped by the test")
    return str(stack.wait_for_execution(execution["executionArn"], timeout=10)["status"])


@pytest.mark.parametrize(("how", "status"), [("stop", "ABORTED"), ("timeout", "TIMED_OUT")])
def test_express_children_outlive_a_parent_stopped_or_timed_out(how: str, status: str) -> None:
    with LocalStack(faults=only(express_outlive_parent=True)) as stack:
        assert end_parent_while_children_wait(stack, how) == status
        deadline = time.monotonic() + 10
        while len(fx.recorded("Late")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(fx.recorded("Late")) == 2


@pytest.mark.parametrize(("how", "status"), [("stop", "ABORTED"), ("timeout", "TIMED_OUT")])
def test_children_end_with_their_parent_without_the_profile(
    local_stack: LocalStack, how: str, status: str
) -> None:
    assert end_parent_while_children_wait(local_stack, how) == status
    time.sleep(CHILD_WAIT_SECONDS + 0.5)  # past the moment the children would have called
    assert fx.recorded("Late") == []


# ---- EventBridge and S3 notifications --------------------------------------------------------------


def test_events_are_duplicated_delayed_or_lost_as_the_profile_draws() -> None:
    calls: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        with lock:
            calls.append(time.monotonic())

    lost = FaultInjector(only(status_event_loss_rate=1.0))
    lost.deliver("status-change", send)
    lost.deliver("s3", send)  # S3 notifications are late or repeated, never lost
    assert len(calls) == 1
    twice = FaultInjector(only(event_duplicate_rate=1.0))
    twice.deliver("s3", send)
    assert len(calls) == 3
    late = FaultInjector(only(event_delay_rate=1.0, event_max_delay_seconds=0.3))
    sent = time.monotonic()
    late.deliver("status-change", send)
    assert len(calls) == 3 and not late.idle()
    deadline = time.monotonic() + 2
    while not late.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late.idle() and len(calls) == 4 and calls[-1] > sent


def upload(stack: LocalStack) -> None:
    stack.override_handler("S3TriggerFunction", fx.handler("record"))
    stack.client("s3").put_object(
        Bucket=stack.environment["RELAYFLOW_BUCKET"], Key=f"inputs/{unique('w')}/a.txt", Body=b"x"
    )
    assert stack.wait_idle(timeout=10)


def test_an_s3_notification_is_delivered_twice() -> None:
    with LocalStack(faults=only(event_duplicate_rate=1.0)) as stack:
        upload(stack)
        assert len(fx.recorded("S3Trigger")) == 2


def test_an_s3_notification_is_delivered_once_without_the_profile(local_stack: LocalStack) -> None:
    upload(local_stack)
    assert len(fx.recorded("S3Trigger")) == 1
