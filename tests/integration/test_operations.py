"""Issue 13 on the local stack: nothing lost (failed asynchronous events reach their destination,
refused status events are kept and published later), nothing stuck (the sweeper settles a run whose
status event was lost, or whose execution never started), nothing kept forever (TTL and lifecycle)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.fakes import FakeBus
from tests.support.items import execution_item
from tests.support.workflows import build, wait, wait_for_node

from relayflow import Client
from relayflow.local import moto_shim
from relayflow.local.stack import LocalStack
from relayflow_runtime.adapters.table.keys import execution_key
from relayflow_runtime.domain.execution_record import SweptRun
from relayflow_runtime.services import deps, metrics, notify, retention

TENANT = "default"
TRIGGER = "relayflow_runtime.handlers.s3_trigger.lambda_handler"
RECONCILER = "relayflow_runtime.handlers.reconciler.lambda_handler"
UPPER = {"model": "uppercase"}


def queue_messages(local_stack: LocalStack, output: str, *, wait_seconds: float = 5) -> list[dict[str, Any]]:
    """Every message now in the queue the stack output names (each left in the queue)."""
    sqs = local_stack.client("sqs")
    url = local_stack.outputs[output]
    deadline = time.monotonic() + wait_seconds
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
        for message in response.get("Messages", []):
            found[message["MessageId"]] = json.loads(message["Body"])
        if found and not response.get("Messages"):
            break
        if not response.get("Messages"):
            time.sleep(0.05)
    return list(found.values())


def raw_item(local_stack: LocalStack, key: dict[str, str]) -> dict[str, Any]:
    table = local_stack.outputs["TableName"]
    item: dict[str, Any] = local_stack.client("dynamodb").get_item(
        TableName=table, Key={k: {"S": v} for k, v in key.items()}
    )["Item"]
    return item


def execution_arn(local_stack: LocalStack, execution_id: str) -> str:
    arn = execution_item(TENANT, execution_id).get("sfn_execution_arn")
    assert arn, "the run's execution ARN is recorded at start"
    return str(arn)


@pytest.fixture
def sweep_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweeper looks at runs of any age (its grace period is 5 minutes in the template)."""
    monkeypatch.setenv("SWEEPER_GRACE_SECONDS", "0")


RefusingBus = FakeBus  # refuses the first `refusals` events it is given, then takes them


# ---- nothing lost ----------------------------------------------------------------------------------
def test_an_upload_the_trigger_fails_on_is_retried_then_kept_in_the_failed_events_queue(
    local_stack: LocalStack,
) -> None:
    # Given an S3 trigger that fails on every event
    calls: list[dict[str, Any]] = []

    def broken(event: dict[str, Any], context: Any) -> Any:
        calls.append(event)
        raise RuntimeError("the trigger is broken")

    with moto_shim.override(TRIGGER, broken):
        # When a file is uploaded under inputs/
        local_stack.client("s3").put_object(
            Bucket=local_stack.outputs["BucketName"], Key="inputs/wf-1/report.txt", Body=b"hello"
        )
    # Then Lambda tried it three times, and the failed-events queue holds its invocation record
    assert len(calls) == 3
    (record,) = queue_messages(local_stack, "FailedEventsQueueUrl")
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].startswith(local_stack.function_arn("S3TriggerFunction"))
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "inputs/wf-1/report.txt"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == "the trigger is broken"


def test_a_status_change_the_reconciler_fails_on_reaches_the_failed_events_queue(
    local_stack: LocalStack, client: Client
) -> None:
    # Given a reconciler that fails on every event
    def broken(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("the reconciler is broken")

    built = build(client, [("Shout", UPPER, {})])
    with moto_shim.override(RECONCILER, broken):
        # When a run ends (its own task records the end; the reconciler only double-checks)
        done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
        assert local_stack.wait_idle(timeout=20)
    # Then the Step Functions event it failed on is kept, with the reason
    records = queue_messages(local_stack, "FailedEventsQueueUrl")
    assert [r["requestPayload"]["detail"]["name"] for r in records] == [done.id]
    assert records[0]["requestContext"]["functionArn"].startswith(
        local_stack.function_arn("ReconcilerFunction")
    )
    assert records[0]["responsePayload"]["errorMessage"] == "the reconciler is broken"
    assert done.status == "completed"


def test_a_refused_status_event_is_retried_and_published_once_the_bus_takes_it(
    local_stack: LocalStack, client: Client
) -> None:
    # Given a bus that refuses twice, then takes events
    bus = RefusingBus(refusals=2)
    built = build(client, [("Shout", UPPER, {})])
    with notify.using_bus(bus), metrics.recording() as counted:
        # When a run is started
        execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
        wait(client, built, execution)
    # Then its pending event went out on the third try, nothing was counted as lost
    statuses = [d["status"] for kind, d in bus.taken if kind == notify.STATUS_CHANGE]
    assert statuses[:1] == ["pending"] and statuses[-1] == "completed"
    assert metrics.total(counted, metrics.STATUS_EVENTS_NOT_PUBLISHED) == 0


def test_a_status_event_the_bus_keeps_refusing_is_counted_kept_and_published_by_the_sweeper(
    local_stack: LocalStack, client: Client, sweep_now: None
) -> None:
    # Given a bus that refuses every event of a whole run
    bus = RefusingBus(refusals=10_000)
    built = build(client, [("Shout", UPPER, {})])
    with notify.using_bus(bus), metrics.recording() as counted:
        execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
        done = wait(client, built, execution)
        assert local_stack.wait_idle(timeout=20)
    # Then each refused status event was counted (and alarmed), and the last one kept on the run
    assert metrics.total(counted, metrics.STATUS_EVENTS_NOT_PUBLISHED, DetailType=notify.STATUS_CHANGE) >= 2
    kept = execution_item(TENANT, done.id)
    assert kept["unpublished_event"]["status"] == "completed"
    # When the bus takes events again and the sweeper runs
    bus.refusals = 0
    with notify.using_bus(bus), metrics.recording() as counted:
        assert local_stack.run_schedule("SweeperFunction")
    # Then the completed event is published, once, and no longer kept
    assert [(kind, d["status"], d["execution_id"]) for kind, d in bus.taken] == [
        (notify.STATUS_CHANGE, "completed", done.id)
    ]
    assert metrics.total(counted, metrics.STATUS_EVENTS_REPUBLISHED) == 1
    assert "unpublished_event" not in execution_item(TENANT, done.id)
    item = raw_item(local_stack, execution_key(TENANT, done.id))
    assert "sweep_pk" not in item, "a settled run leaves the sweep index"


# ---- nothing stuck ---------------------------------------------------------------------------------
def test_the_sweeper_settles_a_run_whose_status_event_was_lost(
    local_stack: LocalStack, client: Client, sweep_now: None
) -> None:
    # Given a running execution
    built = build(client, [("Sleeper", {"model": "sleep", "seconds": 1}, {}), ("After", UPPER, {})])
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Sleeper", "running")
    sfn = local_stack.client("stepfunctions")
    arn = execution_arn(local_stack, execution.id)
    # When its state machine execution is stopped outside relayflow and the status event is lost
    with local_stack.losing_status_events():
        sfn.stop_execution(executionArn=arn, error="Console", cause="stopped by an operator")
        assert local_stack.wait_for_execution(arn, timeout=20)["status"] == "ABORTED"
        assert local_stack.wait_idle(timeout=20)
    time.sleep(0.5)
    # Then the run still looks active: nothing else would ever settle it
    assert client.get_workflow_execution(built.workflow_id, execution.id).status == "running"
    # When the sweeper runs
    with metrics.recording() as counted:
        assert local_stack.run_schedule("SweeperFunction")
    # Then it is settled exactly as the reconciler would have (an abort is a cancel), and counted
    settled = client.get_workflow_execution(built.workflow_id, execution.id)
    assert settled.status == "cancelled"
    assert settled.error == "the state machine execution was stopped"
    assert {n["status"] for n in settled.node_executions.values()} <= {"completed", "cancelled"}
    assert metrics.total(counted, metrics.STUCK_RUNS_SETTLED, Cause="ended") == 1
    # And it left the sweep index: a second sweep finds nothing to do
    with metrics.recording() as counted:
        local_stack.run_schedule("SweeperFunction")
    assert metrics.total(counted, metrics.STUCK_RUNS_SETTLED) == 0


def test_the_sweeper_fails_a_run_whose_execution_never_started(
    local_stack: LocalStack, client: Client, sweep_now: None
) -> None:
    # Given a run written ten minutes ago whose StartExecution never happened (the API died between)
    built = build(client, [("Shout", UPPER, {})])
    started = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    machine = execution_item(TENANT, started.id)["state_machine_arn"]
    created = (datetime.now(UTC) - timedelta(minutes=10)).isoformat(timespec="milliseconds")
    lost = {
        "id": "lost-start-1",
        "workflow_id": built.workflow_id,
        "version_id": built.version_id,
        "number": 99,
        "status": "pending",
        "input_mode": "single",
        "created_at": created.replace("+00:00", "Z"),
        "progress": {"total_nodes": 1, "current_node_idx": 0},
        "state_machine_arn": machine,
    }
    deps.stores().executions.put_execution(TENANT, lost)
    # When the sweeper runs
    with metrics.recording() as counted:
        local_stack.run_schedule("SweeperFunction")
    # Then the run is failed with a reason a person can act on, and counted apart
    failed = client.get_workflow_execution(built.workflow_id, "lost-start-1")
    assert failed.status == "failed"
    assert failed.error is not None and "never started" in failed.error
    assert metrics.total(counted, metrics.STUCK_RUNS_SETTLED, Cause="never_started") == 1
    # And a run that is simply still running is left alone
    assert client.get_workflow_execution(built.workflow_id, started.id).status == "completed"


def test_a_young_or_running_run_is_left_alone(local_stack: LocalStack, client: Client) -> None:
    # Given a running execution (and the template's grace period of five minutes)
    built = build(client, [("Sleeper", {"model": "sleep", "seconds": 1}, {})])
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Sleeper", "running")
    # When the sweeper runs, with and without the grace period
    with metrics.recording() as counted:
        local_stack.run_schedule("SweeperFunction")
        from relayflow_runtime.services import sweeper

        report = sweeper.sweep(grace_seconds=0)
    # Then nothing is settled: its state machine is still running
    assert report.settled == [] and report.checked >= 1
    assert metrics.total(counted, metrics.STUCK_RUNS_SETTLED) == 0
    assert wait(client, built, execution).status == "completed"


# ---- nothing kept forever --------------------------------------------------------------------------
def test_a_finished_run_and_everything_it_wrote_carry_the_ttl(
    local_stack: LocalStack, client: Client, api: Any
) -> None:
    # Given a completed run
    built = build(client, [("Shout", UPPER, {}), ("Again", UPPER, {})])
    done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
    assert local_stack.wait_idle(timeout=20)  # the end's follow-up comes right after the status
    # Then the execution item carries the TTL: RetentionDays (30) after the run started
    item = raw_item(local_stack, execution_key(TENANT, done.id))
    expires = int(item["expires_at"]["N"])
    created = datetime.fromisoformat(done.created_at.replace("Z", "+00:00"))
    assert expires == retention.record_expires_at(done.created_at, done.completed_at)
    assert abs(expires - (created + timedelta(days=30)).timestamp()) < 2
    # And so does every other item of the run
    table = local_stack.outputs["TableName"]
    partition = local_stack.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"T#{TENANT}#X#{done.id}"}},
    )["Items"]
    assert len(partition) == 4  # the execution, its two node records, its listing entry
    assert all(abs(int(i["expires_at"]["N"]) - expires) < 2 for i in partition)
    # And it left the sweep index
    assert "sweep_pk" not in item
    # And its objects lie under executions/, which a lifecycle rule expires after the same 30 days
    objects = local_stack.client("s3").list_objects_v2(Bucket=local_stack.outputs["BucketName"])
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert keys and all(k.startswith(f"executions/{TENANT}/{done.id}/") for k in keys)
    rules = local_stack.client("s3").get_bucket_lifecycle_configuration(
        Bucket=local_stack.outputs["BucketName"]
    )["Rules"]
    expiry = {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules if "Expiration" in r}
    assert expiry == {"executions/": 30, "map-results/": 30, "inputs/": 30, "rejected/": 30, "uploads/": 2}


def test_a_running_run_has_no_ttl_and_is_in_the_sweep_index(local_stack: LocalStack, client: Client) -> None:
    built = build(client, [("Sleeper", {"model": "sleep", "seconds": 1}, {})])
    execution = client.execute_workflow(workflow_id=built.workflow_id, single_input="x")
    wait_for_node(client, built, execution.id, "Sleeper", "running")
    item = raw_item(local_stack, execution_key(TENANT, execution.id))
    assert "expires_at" not in item
    assert item["sweep_pk"]["S"].startswith("ACTIVE#")
    wait(client, built, execution)


@pytest.fixture
def short_retention() -> Iterator[LocalStack]:
    with LocalStack(parameters={"RetentionDays": 7}) as stack:
        yield stack


def test_the_retention_parameter_sets_both_ttl_and_lifecycle(short_retention: LocalStack) -> None:
    rules = short_retention.client("s3").get_bucket_lifecycle_configuration(
        Bucket=short_retention.outputs["BucketName"]
    )["Rules"]
    assert {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules if "Expiration" in r}[
        "executions/"
    ] == 7
    assert retention.retention_days() == 7
    assert retention.children_expire_at("2030-01-01T00:00:00.000Z") == int(
        datetime(2030, 1, 8, tzinfo=UTC).timestamp()
    )


# ---- seen ------------------------------------------------------------------------------------------
def test_a_run_counts_itself_its_nodes_and_their_retries(local_stack: LocalStack, client: Client) -> None:
    # Given a workflow whose first node fails once before it succeeds
    fast = {"max_retries": 2, "retry_delay_seconds": 1, "max_retry_delay_seconds": 1}
    built = build(
        client, [("Flaky", {"model": "flaky", "failures": 1}, {}), ("Shout", UPPER, {})], version_config=fast
    )
    # When it runs to the end
    with metrics.recording() as counted:
        done = wait(client, built, client.execute_workflow(workflow_id=built.workflow_id, single_input="x"))
        assert local_stack.wait_idle(timeout=20)
    # Then the run, its nodes and the retry are counted once each
    assert done.status == "completed"
    assert metrics.total(counted, metrics.RUNS_STARTED, Mode="single") == 1
    assert metrics.total(counted, metrics.RUNS_FINISHED, Status="completed") == 1
    assert metrics.total(counted, metrics.NODES_FINISHED, Status="completed") == 2
    assert metrics.total(counted, metrics.NODE_RETRIES) == 1


@pytest.mark.parametrize("status", ["running", "completed"], ids=["active runs", "runs to follow up"])
def test_the_sweeper_examines_every_run_of_the_index_over_successive_passes(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    from relayflow_runtime.adapters.table.keys import sweep_shard
    from relayflow_runtime.services import sweeper

    # Given five long-lived runs in one shard of the sweep index (active ones, or finished ones
    # whose follow-up keeps failing), more than a pass reads there
    ids = [i for i in (f"long-{n}" for n in range(200)) if sweep_shard(i) == 0][:5]
    for number, execution_id in enumerate(ids):
        deps.stores().executions.put_execution(
            TENANT,
            {
                "id": execution_id,
                "workflow_id": "wf",
                "version_id": "v",
                "number": number,
                "status": status,
                "input_mode": "single",
                "created_at": f"2020-01-01T00:00:0{number}.000Z",
                "progress": {"total_nodes": 1, "current_node_idx": 0},
                **({"completed_at": "2020-01-02T00:00:00.000Z"} if status == "completed" else {}),
            },
        )
    examined: list[list[str]] = []

    def seen(run: SweptRun, *rest: Any) -> None:
        examined[-1].append(run.id)

    monkeypatch.setattr(sweeper, "_check_active" if status == "running" else "_follow_up", seen)

    # When the sweeper passes three times, reading two runs per shard each time
    for _ in range(3):
        examined.append([])
        sweeper.sweep(grace_seconds=0, per_shard=2)

    # Then each pass goes on where the previous one stopped, so every run is examined, and the
    # third pass, reaching the newest, starts again from the oldest next time
    assert examined == [ids[:2], ids[2:4], ids[4:]]
    examined.append([])
    sweeper.sweep(grace_seconds=0, per_shard=2)
    assert examined[-1] == ids[:2]
