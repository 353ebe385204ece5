"""The embedded local stack: template.yaml on moto, handlers in-process, the events moto does not
run (S3 notifications' shape, Step Functions status changes, the HTTP API) wired by relayflow."""

from __future__ import annotations

import base64
import inspect
import json
import os
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

import fixtures_handlers as fx
from relayflow.local import cfn, moto_shim
from relayflow.local.server import build_http_event, make_server, run_server
from relayflow.local.stack import LocalStack, StackError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = cfn.load_template(ROOT / "template.yaml")


@pytest.fixture(autouse=True)
def _fresh_recordings() -> None:
    fx.reset()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def create_state_machine(stack: LocalStack, name: str, definition: dict[str, Any]) -> str:
    arn: str = stack.client("stepfunctions").create_state_machine(
        name=name,
        definition=json.dumps(definition),
        # a test's own machine, with a role of the stack's (the template's machines are made by the stack)
        roleArn=stack.context.attributes["JobsMachineRole"]["Arn"],
    )["stateMachineArn"]
    return arn


def run(stack: LocalStack, state_machine_arn: str, payload: Any, timeout: float = 15.0) -> dict[str, Any]:
    execution_arn = stack.client("stepfunctions").start_execution(
        stateMachineArn=state_machine_arn, name=unique("run"), input=json.dumps(payload)
    )["executionArn"]
    return stack.wait_for_execution(execution_arn, timeout=timeout)


# ------------------------------------------------------------------------------------- moto


def test_moto_still_has_the_private_lambda_hook_the_shim_replaces():
    # Given the installed moto (pinned >=5.2.3,<5.3)
    method = moto_shim.moto_invoke_lambda()
    # Then LambdaFunction._invoke_lambda(self, event=None) is where the shim expects it
    parameters = list(inspect.signature(method).parameters.values())
    assert [p.name for p in parameters] == ["self", "event"], (
        f"moto changed LambdaFunction._invoke_lambda to {inspect.signature(method)}: "
        "update functions/dev/relayflow/local/shims/ or the moto pin"
    )
    assert parameters[1].default is None
    assert method.__module__ == "moto.awslambda.models"
    moto_shim.check_compatible()
    # and the optional hooks (cached SFN Lambda client, AWS-shaped S3 events) are there too
    from moto.s3 import notifications
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    assert callable(lambda_eval_utils.boto_client_for)
    assert list(inspect.signature(notifications._get_s3_event).parameters) == [
        "event_name",
        "bucket",
        "key",
        "notification_id",
    ]


# ------------------------------------------------------------------------------------- stack


def test_tables_are_created_exactly_as_the_template_declares_them(local_stack: LocalStack):
    dynamodb = local_stack.client("dynamodb")
    for logical_id in ("RelayflowTable", "IdempotencyTable"):
        declared = TEMPLATE["Resources"][logical_id]["Properties"]
        name = local_stack.resources[logical_id]
        # When the created table is described
        table = dynamodb.describe_table(TableName=name)["Table"]
        # Then keys, attributes, indexes, billing and TTL are the template's
        assert table["KeySchema"] == declared["KeySchema"]
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            declared["AttributeDefinitions"], key=str
        )
        assert table["BillingModeSummary"]["BillingMode"] == declared["BillingMode"]
        created_indexes = {
            index["IndexName"]: (index["KeySchema"], index["Projection"])
            for index in table.get("GlobalSecondaryIndexes", [])
        }
        declared_indexes = {
            index["IndexName"]: (index["KeySchema"], index["Projection"])
            for index in declared.get("GlobalSecondaryIndexes", [])
        }
        assert created_indexes == declared_indexes
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl["AttributeName"] == declared["TimeToLiveSpecification"]["AttributeName"]
    assert local_stack.outputs["TableName"] == local_stack.resources["RelayflowTable"]


def test_functions_environment_is_resolved_into_os_environ_and_restored_on_stop():
    before = os.environ.get("RELAYFLOW_TABLE")
    with LocalStack() as stack:
        # Then the template's environment (Globals merged) is this process's environment
        assert os.environ["RELAYFLOW_TABLE"] == stack.outputs["TableName"]
        assert os.environ["RELAYFLOW_BUCKET"] == stack.outputs["BucketName"]
        assert os.environ["EVENT_BUS_NAME"] == stack.outputs["EventBusName"]
        assert os.environ["RELAYFLOW_STACK"] == stack.stack_name
        # and the template's state machines (!Ref: their ARNs) for the functions that start executions
        for variable, logical_id in (
            ("RUN_MACHINE_ARN", "RunMachine"),
            ("BATCH_MACHINE_ARN", "BatchMachine"),
            ("JOBS_MACHINE_ARN", "JobsMachine"),
        ):
            assert os.environ[variable] == stack.state_machines[logical_id]
            assert os.environ[variable].startswith("arn:aws:states:us-east-1:123456789012:stateMachine:")
        assert "STATE_MACHINE_ROLE_ARN" not in os.environ
        assert "AWS_PROFILE" not in os.environ
        assert os.environ["AWS_CONFIG_FILE"] == os.devnull
        lambda_config = stack.client("lambda").get_function_configuration(
            FunctionName=stack.functions["NodeRunnerFunction"].function_name
        )
        assert lambda_config["Handler"] == "relayflow_runtime.handlers.node_runner.lambda_handler"
        assert lambda_config["Timeout"] == 900
        # and a second stack cannot start beside it (moto's mock is process-wide)
        with pytest.raises(StackError, match="another LocalStack"):
            LocalStack().start()
    assert os.environ.get("RELAYFLOW_TABLE") == before


def test_a_missing_template_is_a_clear_error(tmp_path: Path):
    with pytest.raises(StackError, match=r"template\.yaml not found"):
        LocalStack(tmp_path / "template.yaml").start()


# ------------------------------------------------------------------------------------- tasks


def test_step_functions_retry_and_catch_see_the_exception_class_name(local_stack: LocalStack):
    # Given two test-only functions: one fails twice with FlakyError, one always with PermanentError
    flaky_arn = local_stack.register_function("Flaky", fx.handler("flaky"))
    permanent_arn = local_stack.register_function("Permanent", fx.handler("permanent"))
    state_machine = create_state_machine(
        local_stack,
        unique("retry-catch"),  # not the stack prefix: the reconciler is not concerned
        {
            "StartAt": "Flaky",
            "States": {
                "Flaky": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": flaky_arn, "Payload.$": "$"},
                    "ResultSelector": {"attempts.$": "$.Payload.attempts"},
                    "ResultPath": "$.flaky",
                    "Retry": [
                        {
                            "ErrorEquals": ["FlakyError"],
                            "IntervalSeconds": 1,
                            "BackoffRate": 1,
                            "MaxAttempts": 2,
                        }
                    ],
                    "Next": "Permanent",
                },
                "Permanent": {
                    "Type": "Task",
                    "Resource": permanent_arn,
                    "Retry": [{"ErrorEquals": ["FlakyError"], "IntervalSeconds": 1, "MaxAttempts": 3}],
                    "Catch": [
                        {"ErrorEquals": ["PermanentError"], "ResultPath": "$.caught", "Next": "Recovered"}
                    ],
                    "Next": "Unreachable",
                },
                "Unreachable": {"Type": "Fail", "Error": "Unreachable"},
                "Recovered": {"Type": "Pass", "End": True},
            },
        },
    )
    # When it runs
    key = unique("k")
    result = run(local_stack, state_machine, {"key": key})
    # Then the retries got past FlakyError and the Catch caught PermanentError by name
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["flaky"] == {"attempts": 3}
    assert output["caught"]["Error"] == "PermanentError"
    cause = json.loads(output["caught"]["Cause"])
    assert cause["errorType"] == "PermanentError"
    assert cause["errorMessage"] == f"{key}: cannot be processed"
    assert cause["stackTrace"]


def test_an_uncaught_error_fails_the_execution_with_that_name(local_stack: LocalStack):
    arn = local_stack.register_function("Permanent", fx.handler("permanent"))
    state_machine = create_state_machine(
        local_stack,
        unique("fail"),
        {"StartAt": "P", "States": {"P": {"Type": "Task", "Resource": arn, "End": True}}},
    )
    result = run(local_stack, state_machine, {"key": "x"})
    assert result["status"] == "FAILED"
    assert result["error"] == "PermanentError"


def test_a_handler_that_cannot_be_imported_fails_like_lambda_does(local_stack: LocalStack):
    local_stack.register_function("Broken", "relayflow_runtime.handlers.does_not_exist.lambda_handler")
    response = local_stack.client("lambda").invoke(
        FunctionName=local_stack.functions["Broken"].function_name, Payload=b"{}"
    )
    assert response["FunctionError"]
    assert json.loads(response["Payload"].read())["errorType"] == "Runtime.ImportModuleError"


# ------------------------------------------------------------------------------------- wiring


def test_the_watcher_delivers_each_ended_execution_once_to_the_rule_target(local_stack: LocalStack):
    # Given the reconciler (the template's aws.states rule target) replaced by a recorder, and the
    # node runner by a job runner that fails the jobs asking for it
    local_stack.override_handler("ReconcilerFunction", fx.handler("record"))
    reconciler_name = local_stack.functions["ReconcilerFunction"].function_name

    def job_runner(event: dict[str, Any], context: Any) -> Any:
        if event["job"].get("fail"):
            raise fx.PermanentError("it broke")
        return event["job"]

    handler = unique("tests.job_runner")
    moto_shim.register(handler, job_runner)
    local_stack.override_handler("NodeRunnerFunction", handler)
    jobs = local_stack.state_machines["JobsMachine"]
    foreign = create_state_machine(
        local_stack,
        unique("not-the-templates"),
        {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}},
    )
    # When an execution of the template's jobs machine succeeds, one fails, and a test's own machine runs
    try:
        ok = run(local_stack, jobs, {"n": 1})
        failed = run(local_stack, jobs, {"n": 2, "fail": True})
        run(local_stack, foreign, {"n": 3})
        assert local_stack.wait_idle(timeout=10)
    finally:
        moto_shim.unregister(handler)
    # Then the target got one real-shaped event per ended execution of the template's state machines
    events = {e["detail"]["executionArn"]: e for e in fx.recorded(reconciler_name)}
    assert set(events) == {ok["executionArn"], failed["executionArn"]}
    ok_event, failed_event = events[ok["executionArn"]], events[failed["executionArn"]]
    assert ok_event["source"] == "aws.states"
    assert ok_event["detail-type"] == "Step Functions Execution Status Change"
    assert ok_event["resources"] == [ok["executionArn"]]
    assert ok_event["detail"]["status"] == "SUCCEEDED"
    assert ok_event["detail"]["stateMachineArn"] == jobs
    assert json.loads(ok_event["detail"]["input"]) == {"n": 1}
    assert json.loads(ok_event["detail"]["output"]) == {"n": 1}
    assert isinstance(ok_event["detail"]["startDate"], int)
    assert ok_event["detail"]["stopDate"] >= ok_event["detail"]["startDate"]
    assert failed_event["detail"]["status"] == "FAILED"
    assert failed_event["detail"]["error"] == "PermanentError"
    assert json.loads(failed_event["detail"]["cause"])["errorMessage"] == "it broke"
    assert failed_event["detail"]["output"] is None
    # and the checked-in sample event has the same shape
    sample = json.loads((ROOT / "events" / "sfn_status_change.json").read_text())
    assert set(sample) == set(ok_event)
    assert set(sample["detail"]) == set(ok_event["detail"])
    # and nothing is delivered twice, however often the executions are looked at again
    assert local_stack.wait_idle(timeout=10) and local_stack.wait_idle(timeout=10)
    assert len(fx.recorded(reconciler_name)) == 2


def test_an_upload_under_inputs_invokes_the_s3_trigger_function(local_stack: LocalStack):
    # Given the S3 trigger replaced by a recorder
    local_stack.override_handler("S3TriggerFunction", fx.handler("record"))
    trigger_name = local_stack.functions["S3TriggerFunction"].function_name
    bucket = local_stack.outputs["BucketName"]
    s3 = local_stack.client("s3")
    workflow = unique("wf")
    # When one file lands under inputs/ and one elsewhere
    s3.put_object(Bucket=bucket, Key=f"inputs/{workflow}/quarterly report.txt", Body=b"hello")
    s3.put_object(Bucket=bucket, Key=f"datasets/{workflow}/rows.jsonl", Body=b"{}")
    # Then the trigger ran once (synchronously, inside the upload), with an AWS-shaped event
    events = fx.recorded(trigger_name)
    assert len(events) == 1
    (record,) = events[0]["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["object"]["key"] == f"inputs/{workflow}/quarterly+report.txt"
    assert record["s3"]["object"]["size"] == 5
    # and the checked-in sample has the same shape and the local stack's bucket name
    sample = json.loads((ROOT / "events" / "s3_put_input.json").read_text())["Records"][0]
    assert set(sample) == set(record)
    assert set(sample["s3"]["object"]) <= set(record["s3"]["object"])
    assert sample["s3"]["bucket"]["name"] == bucket


def test_monkeypatching_a_handler_module_is_seen_by_direct_invokes(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
):
    seen: list[Any] = []

    def fake_record(event: Any, context: Any) -> dict[str, bool]:
        seen.append(event)
        return {"ok": True}

    monkeypatch.setattr(fx, "record", fake_record)
    local_stack.override_handler("ReconcilerFunction", fx.handler("record"))
    assert local_stack.invoke("ReconcilerFunction", {"detail": {}}) == {"ok": True}
    assert seen == [{"detail": {}}]


# ------------------------------------------------------------------------------------- HTTP


def test_the_http_server_round_trips_a_request_byte_for_byte(local_stack: LocalStack, served: str):
    # Given the API function replaced by an echo handler, the authorizer by a one-key one
    local_stack.override_handler("ApiFunction", fx.handler("http_echo"))
    local_stack.override_handler("AuthorizerFunction", fx.handler("allow_one_key"))
    payload = bytes(range(256)) * 64
    request = urllib.request.Request(
        f"{served}/files/a%20b?x=1&x=2&y=",
        data=payload,
        method="PUT",
        headers={
            "Content-Type": "application/octet-stream",
            "Cookie": "a=1; b=2",
            "X-Thing": "v",
            "X-Api-Key": fx.OPEN_SESAME,
        },
    )
    # When a binary body goes through the server
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        headers = response.headers
    # Then it comes back byte for byte, and the event was API Gateway's v2 shape
    assert body == payload
    event = json.loads(base64.b64decode(headers["x-event"]))
    assert event["version"] == "2.0"
    assert event["routeKey"] == "ANY /{proxy+}"
    assert event["rawPath"] == "/files/a%20b"
    assert event["pathParameters"] == {"proxy": "files/a b"}
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["headers"]["x-thing"] == "v"
    assert "cookie" not in event["headers"]
    assert event["isBase64Encoded"] is True
    assert event["requestContext"]["http"]["method"] == "PUT"
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["stage"] == "$default"
    assert event["requestContext"]["authorizer"] == {"lambda": {"tenant": "t-test", "scopes": "read write"}}
    assert headers.get_all("set-cookie") == ["session=abc; Path=/", "theme=dark"]


def test_the_http_server_binds_loopback_only_and_refuses_oversized_bodies(
    local_stack: LocalStack, served: str
):
    host, port = served.removeprefix("http://").split(":")
    assert host == "127.0.0.1"
    with pytest.raises(ValueError, match="loopback"):
        make_server(local_stack, "0.0.0.0", 0)
    # A body over API Gateway's 10 MB limit is refused before the function runs
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(
            b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10485761\r\n\r\n"
        )
        answer = connection.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["code"] == "payload_too_large"


def test_cors_preflight_is_answered_from_the_template(served: str):
    request = urllib.request.Request(
        f"{served}/workflows",
        method="OPTIONS",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204
        assert response.headers["access-control-allow-origin"] == "*"
        assert "idempotency-key" in response.headers["access-control-allow-headers"]


def test_routes_and_the_lambda_authorizer_behave_as_on_api_gateway(local_stack: LocalStack, api: Any):
    # Given the template's routes and authorizer, with test doubles behind them
    local_stack.override_handler("ApiFunction", fx.handler("http_echo"))
    local_stack.override_handler("AuthorizerFunction", fx.handler("allow_one_key"))
    authorizer_name = local_stack.functions["AuthorizerFunction"].function_name
    # Then a request without the identity header is refused before the authorizer runs
    assert api("GET", "/workflows", headers={"x-api-key": ""}) == (401, {"message": "Unauthorized"})
    assert fx.recorded(authorizer_name) == []
    # and a key the authorizer refuses gets 403
    assert api("GET", "/workflows", headers={"x-api-key": "nope"}) == (403, {"message": "Forbidden"})
    # and an accepted key reaches the function; the answer is cached per key (ReauthorizeEvery)
    for _ in range(2):
        status, _body = api("GET", "/workflows/w1", headers={"x-api-key": fx.OPEN_SESAME})
        assert status == 200
    calls = fx.recorded(authorizer_name)
    assert len(calls) == 2  # "nope" once, OPEN_SESAME once
    assert calls[-1]["type"] == "REQUEST" and calls[-1]["identitySource"] == [fx.OPEN_SESAME]
    assert calls[-1]["routeKey"] == "ANY /{proxy+}"
    # and the open routes (Auth: NONE) need no key and get their own routeKey
    route, parameters = local_stack.match_route("GET", "/dashboard/app.js") or (None, None)
    assert route is not None and route.route_key == "GET /dashboard/{asset}" and route.authorizer is None
    assert parameters == {"asset": "app.js"}
    assert api("GET", "/health", headers={"x-api-key": ""})[0] == 200
    root_route, _ = local_stack.match_route("GET", "/") or (None, None)
    assert root_route is not None and root_route.route_key == "GET /"
    post_root, _ = local_stack.match_route("POST", "/") or (None, None)
    assert post_root is not None and post_root.route_key == "ANY /" and post_root.authorizer


def test_json_bodies_travel_as_text_and_the_api_fixture_parses_answers(local_stack: LocalStack, api: Any):
    local_stack.override_handler("ApiFunction", fx.handler("http_echo"))
    local_stack.override_handler("AuthorizerFunction", fx.handler("allow_one_key"))
    status, body = api(
        "POST", "/workflows", {"name": "é"}, query={"dry_run": "1"}, headers={"x-api-key": fx.OPEN_SESAME}
    )
    assert (status, body) == (200, {"name": "é"})
    event = build_http_event("POST", "/workflows", json_body={"name": "x"})
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == {"name": "x"}
    root = build_http_event("GET", "/")
    assert root["routeKey"] == "ANY /" and "pathParameters" not in root


def test_run_server_serves_until_stopped_and_cleans_up(capsys: pytest.CaptureFixture[str]):
    ready: list[str] = []
    stop = threading.Event()

    def on_ready(base_url: str, stack: LocalStack) -> None:
        stack.override_handler("ApiFunction", fx.handler("http_echo"))
        ready.append(base_url)

    thread = threading.Thread(target=run_server, args=(0,), kwargs={"on_ready": on_ready, "stop": stop})
    thread.start()
    try:
        assert wait_until(lambda: ready, timeout=15)
        with urllib.request.urlopen(f"{ready[0]}/health", timeout=5) as response:
            assert response.status == 200
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert f"relayflow serving on {ready[0]}" in capsys.readouterr().out
    assert ready[0].startswith("http://127.0.0.1:")
    # the stack is stopped: another one may start
    with LocalStack(watch_executions=False):
        pass


def test_the_sample_api_events_work_against_the_real_api_function(local_stack: LocalStack):
    # The checked-in samples are what the API function receives behind the authorizer
    create = json.loads((ROOT / "events" / "apigw_create_workflow.json").read_text())
    created = local_stack.invoke_api(create)
    assert created["statusCode"] == 201, created
    assert json.loads(created["body"])["name"] == json.loads(create["body"])["name"]
    missing = local_stack.invoke_api(json.loads((ROOT / "events" / "apigw_get_execution.json").read_text()))
    assert missing["statusCode"] == 404, missing


def test_conditional_writes_are_atomic_across_threads(local_stack):
    # Given one item and many threads racing the same conditional write (as a cancel races a completion)
    import threading as _threading

    from botocore.exceptions import ClientError

    table = local_stack.resources["RelayflowTable"]
    ddb = local_stack.client("dynamodb")
    ddb.put_item(TableName=table, Item={"pk": {"S": "race"}, "sk": {"S": "X"}, "status": {"S": "running"}})
    winners: list[int] = []
    barrier = _threading.Barrier(16)

    def write(i: int) -> None:
        barrier.wait()
        try:
            ddb.update_item(
                TableName=table,
                Key={"pk": {"S": "race"}, "sk": {"S": "X"}},
                UpdateExpression="SET #s = :new",
                ConditionExpression="#s = :running",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":new": {"S": f"done-{i}"}, ":running": {"S": "running"}},
            )
            winners.append(i)
        except ClientError:
            pass

    threads = [_threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one wins, as on DynamoDB
    assert len(winners) == 1
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "race"}, "sk": {"S": "X"}})["Item"]
    assert item["status"]["S"] == f"done-{winners[0]}"


def test_a_failed_transaction_writes_nothing(local_stack):
    # Given an item, and a transaction whose second part fails its condition
    from botocore.exceptions import ClientError

    table = local_stack.resources["RelayflowTable"]
    ddb = local_stack.client("dynamodb")
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "sk": {"S": "X"}, "n": {"N": "1"}})
    try:
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "a"}, "sk": {"S": "X"}},
                        "UpdateExpression": "SET n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}, "sk": {"S": "X"}}}},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": {"pk": {"S": "c"}, "sk": {"S": "X"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
        raise AssertionError("the transaction should have been cancelled")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "TransactionCanceledException"
    # Then neither the update nor the put happened (all or nothing, as on DynamoDB)
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "a"}, "sk": {"S": "X"}})["Item"]["n"]["N"] == "1"
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "b"}, "sk": {"S": "X"}})


def test_a_distributed_map_worker_runs_more_items_than_pythons_recursion_limit(local_stack: LocalStack):
    # Given 1,500 items in S3 and a distributed Map that runs them one at a time (one worker:
    # moto's worker called itself once per item, so it died past ~900 items)
    items = [{"n": i} for i in range(1500)]
    bucket = local_stack.outputs["BucketName"]
    local_stack.client("s3").put_object(Bucket=bucket, Key="lists/many.json", Body=json.dumps(items).encode())
    arn = create_state_machine(
        local_stack,
        unique("map"),
        {
            "StartAt": "Items",
            "States": {
                "Items": {
                    "Type": "Map",
                    "ItemReader": {
                        "Resource": "arn:aws:states:::s3:getObject",
                        "ReaderConfig": {"InputType": "JSON"},
                        "Parameters": {"Bucket": bucket, "Key": "lists/many.json"},
                    },
                    "MaxConcurrency": 1,
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "Double",
                        "States": {"Double": {"Type": "Pass", "End": True}},
                    },
                    "End": True,
                }
            },
        },
    )
    # When it runs
    done = run(local_stack, arn, {}, timeout=120)
    # Then every item ran, in order
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == items


def test_the_interpreter_does_not_keep_every_thread_it_ever_started(local_stack: LocalStack):
    # Given a state machine whose Map runs a Lambda Task for each of 150 items (moto starts a thread
    # per Task and appended every one to a list it never empties)
    from moto.stepfunctions.parser.asl.component.state.exec import execute_state

    arn = local_stack.register_function("Record", fx.handler("record"))
    machine = create_state_machine(
        local_stack,
        unique("threads"),
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "MaxConcurrency": 5,
                    "ItemProcessor": {
                        "StartAt": "Call",
                        "States": {"Call": {"Type": "Task", "Resource": arn, "End": True}},
                    },
                    "End": True,
                }
            },
        },
    )
    # When it runs
    done = run(local_stack, machine, {"items": list(range(150))}, timeout=60)
    # Then every item ran, and the list holds far fewer threads than were started
    assert done["status"] == "SUCCEEDED", done
    assert len(fx.recorded("Record")) >= 150
    assert len(execute_state.TMP_THREADS) < 100


def test_conditional_writes_evaluate_each_requests_own_values(local_stack: LocalStack):
    # Given an item, and the shim remembering parsed condition expressions
    table = local_stack.resources["RelayflowTable"]
    dynamodb = local_stack.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "cond"}, "sk": {"S": "x"}, "n": {"N": "5"}})

    def put_if_below(limit: int) -> bool:
        try:
            dynamodb.put_item(
                TableName=table,
                Item={"pk": {"S": "cond"}, "sk": {"S": "x"}, "n": {"N": str(limit)}},
                ConditionExpression="#n < :limit",
                ExpressionAttributeNames={"#n": "n"},
                ExpressionAttributeValues={":limit": {"N": str(limit)}},
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def set_if_below(limit: int, extra: dict[str, Any]) -> None:
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": "cond"}, "sk": {"S": "x"}},
            UpdateExpression="SET #n = :limit",
            ConditionExpression="#n < :limit",
            ExpressionAttributeNames={"#n": "n"},
            ExpressionAttributeValues={":limit": {"N": str(limit)}, **extra},
        )

    # When the same expression comes with other values, then each is judged on its own values
    assert put_if_below(3) is False
    assert put_if_below(9) is True
    assert put_if_below(9) is False
    assert put_if_below(12) is True
    # and an update whose values the expressions do not all use is refused, as DynamoDB does,
    # the second time too (when the condition's parse is remembered)
    set_if_below(20, {})
    for _ in range(2):
        with pytest.raises(dynamodb.exceptions.ClientError, match="unused"):
            set_if_below(30, {":spare": {"N": "1"}})


def test_a_stack_shortens_the_thread_switch_interval_while_it_runs_and_restores_it() -> None:
    import sys

    # Given the interpreter's own switch interval
    before = sys.getswitchinterval()
    # When a stack runs, then its threads hand over the interpreter every millisecond at most
    with LocalStack(watch_executions=False):
        assert sys.getswitchinterval() <= 0.001
    # And afterwards the interval is what it was
    assert sys.getswitchinterval() == before


def test_concurrent_api_requests_each_get_their_own_answer(local_stack: LocalStack, served: str):
    # Given a workflow, and 16 clients asking for it and for the workflow list at the same time
    # (Powertools' resolver keeps the request it answers on its module-level app)
    from concurrent.futures import ThreadPoolExecutor

    headers = {"x-api-key": local_stack.api_key or "", "content-type": "application/json"}
    create = urllib.request.Request(
        f"{served}/workflows", data=b'{"name": "concurrent"}', headers=headers, method="POST"
    )
    with urllib.request.urlopen(create, timeout=10) as answer:
        workflow_id = json.loads(answer.read())["id"]

    def ask(i: int) -> tuple[int, Any]:
        path = f"/workflows/{workflow_id}" if i % 2 else "/workflows"
        request = urllib.request.Request(f"{served}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())

    # When they all ask
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(400)))

    # Then every request got its own, whole answer
    assert all(status == 200 for status, _ in answers)
    assert all(body["id"] == workflow_id for i, (_, body) in enumerate(answers) if i % 2)
    assert all("items" in body or isinstance(body, list) for i, (_, body) in enumerate(answers) if not i % 2)


def test_the_api_function_runs_one_request_at_a_time(local_stack: LocalStack):
    # Given an API function that notes how many requests it is answering at once
    from concurrent.futures import ThreadPoolExecutor

    lock, inside, most = threading.Lock(), [0], [0]

    def api_function(event: Any, context: Any) -> dict[str, Any]:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        with lock:
            inside[0] -= 1
        return {"statusCode": 200, "body": "{}"}

    moto_shim.register("tests_one_at_a_time.handler", api_function)
    try:
        local_stack.override_handler(local_stack.api_function_id, "tests_one_at_a_time.handler")
        # When 8 requests arrive together
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: local_stack.invoke_api({"rawPath": "/"}), range(8)))
    finally:
        moto_shim.unregister("tests_one_at_a_time.handler")
    # Then each was answered, never two at once (as separate Lambda instances would)
    assert [a["statusCode"] for a in answers] == [200] * 8
    assert most[0] == 1


# ------------------------------------------------------------------------------- state machines


def _machine_template(tmp_path: Path, definition: dict[str, Any], substitutions: str) -> Path:
    (tmp_path / "machine.asl.json").write_text(json.dumps(definition))
    template = tmp_path / "template.yaml"
    template.write_text(
        f"""
Transform: AWS::Serverless-2016-10-31
Resources:
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      Handler: {fx.handler("record")}
      Runtime: python3.13
      CodeUri: .
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: machine.asl.json
      DefinitionSubstitutions: {substitutions}
      Policies:
        - LambdaInvokePolicy: {{ FunctionName: !Ref Worker }}
  Starter:
    Type: AWS::Serverless::Function
    Properties:
      Handler: {fx.handler("record")}
      Runtime: python3.13
      CodeUri: .
      Environment:
        Variables:
          MACHINE_ARN: !Ref Machine
          MACHINE_NAME: !GetAtt Machine.Name
"""
    )
    return template


def test_a_state_machine_of_the_template_runs_its_file_with_the_substitutions(tmp_path: Path):
    # Given a template whose machine (no explicit Name) calls its function through a substitution
    definition = {
        "StartAt": "Call",
        "States": {"Call": {"Type": "Task", "Resource": "${WorkerArn}", "End": True}},
    }
    template = _machine_template(tmp_path, definition, "{WorkerArn: !GetAtt Worker.Arn}")
    with LocalStack(template, watch_executions=False, create_api_key=False) as stack:
        arn = stack.state_machines["Machine"]
        # Then !Ref is its ARN, !GetAtt .Name its generated name, in the environment of the functions
        assert os.environ["MACHINE_ARN"] == arn == stack.resources["Machine"]
        assert arn.endswith(f":stateMachine:{os.environ['MACHINE_NAME']}")
        assert os.environ["MACHINE_NAME"].startswith("relayflow-Machine-")
        # and it runs the file with the function's ARN in place of ${WorkerArn}
        result = run(stack, arn, {"key": "v"})
        assert result["status"] == "SUCCEEDED", result
        assert fx.recorded(stack.functions["Worker"].function_name) == [{"key": "v"}]


def test_a_definition_variable_without_its_substitution_is_a_clear_error(tmp_path: Path):
    definition = {
        "StartAt": "Call",
        "States": {"Call": {"Type": "Task", "Resource": "${Missing}", "End": True}},
    }
    template = _machine_template(tmp_path, definition, "{WorkerArn: !GetAtt Worker.Arn}")
    with pytest.raises(StackError, match=r"\$\{Missing\}"):
        LocalStack(template, watch_executions=False, create_api_key=False).start()


def test_a_distributed_maps_child_executions_are_not_the_templates_runs(local_stack: LocalStack):
    # A child of a distributed Map is arn:...:execution:<machine>/<map run label>:<id>: no rule of
    # the stack is told of it (the reconciler's rule also leaves out ARNs with a "/")
    machine = local_stack.state_machines["BatchMachine"]
    run_arn = machine.replace(":stateMachine:", ":execution:") + ":ex-1"
    child = machine.replace(":stateMachine:", ":execution:") + "/items:5c7b1f0e-1d2e-3f4a-9b8c-7d6e5f4a3b2c"
    assert local_stack.is_template_execution(run_arn)
    assert not local_stack.is_template_execution(child)
    assert not local_stack.is_template_execution(run_arn.replace("relayflow-batch", "other-batch"))
