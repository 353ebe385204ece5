"""template.yaml, read as the engineer on call (issue 13): nothing lost, nothing kept forever,
nothing starved, everything alarmed and documented in docs/operations.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from relayflow.local import cfn
from relayflow_runtime.adapters.sweep import SWEEP_PROJECTION
from relayflow_runtime.services import metrics
from relayflow_runtime.services.dataset_service import upload_prefix
from relayflow_runtime.services.executions import execution_prefix

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = cfn.load_template(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function"}
ALARMS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
ASYNC_EVENT_TYPES = {"S3", "EventBridgeRule", "CloudWatchEvent", "Schedule", "ScheduleV2", "SNS"}


def props(logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = RESOURCES[logical_id].get("Properties") or {}
    return properties


def asynchronous_functions() -> list[str]:
    return sorted(
        logical_id
        for logical_id, spec in FUNCTIONS.items()
        if any(e.get("Type") in ASYNC_EVENT_TYPES for e in (spec["Properties"].get("Events") or {}).values())
    )


def test_the_asynchronous_functions_are_the_ones_expected() -> None:
    assert asynchronous_functions() == ["ReconcilerFunction", "S3TriggerFunction", "SweeperFunction"]


@pytest.mark.parametrize("logical_id", asynchronous_functions())
def test_every_asynchronously_invoked_function_has_an_on_failure_destination(logical_id: str) -> None:
    config = props(logical_id)["EventInvokeConfig"]
    assert config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]},
    }
    assert config["MaximumRetryAttempts"] == 2
    # And an event EventBridge cannot hand to Lambda at all has a dead-letter queue too
    for event in props(logical_id)["Events"].values():
        if event["Type"] in ("EventBridgeRule", "Schedule"):
            assert event["Properties"]["DeadLetterConfig"] == {
                "Arn": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
            }


def test_webhooks_go_through_a_queue_with_a_dead_letter_queue_and_the_sender_never_sleeps() -> None:
    rule = props("WebhookDeliveryRule")
    assert rule["EventPattern"]["detail"]["status"] == ["completed", "failed", "cancelled"]
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["WebhookQueue", "Arn"]}]
    # A rejected upload that names a workflow goes the same way (its webhook, where one is set)
    rejected = props("UploadRejectedWebhookRule")
    assert rejected["EventPattern"]["detail-type"] == ["Upload Rejected"]
    assert rejected["EventPattern"]["detail"] == {"workflow_id": [{"exists": True}]}
    assert [t["Arn"] for t in rejected["Targets"]] == [{"Fn::GetAtt": ["WebhookQueue", "Arn"]}]
    (allowed,) = props("WebhookQueuePolicy")["PolicyDocument"]["Statement"]
    assert allowed["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Fn::GetAtt": [name, "Arn"]} for name in ("WebhookDeliveryRule", "UploadRejectedWebhookRule")
    ]
    assert props("WebhookQueue")["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]
    }
    sender = props("WebhookSenderFunction")
    (event,) = sender["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    # A batch of attempts of at most WEBHOOK_TIMEOUT_SECONDS each fits in the timeout, with no waiting
    variables = sender["Environment"]["Variables"]
    assert event["Properties"]["BatchSize"] * int(variables["WEBHOOK_TIMEOUT_SECONDS"]) < sender["Timeout"]
    assert props("WebhookQueue")["VisibilityTimeout"] >= 6 * sender["Timeout"]
    assert int(variables["WEBHOOK_RETRY_MAX_SECONDS"]) <= 900  # SQS DelaySeconds


def test_every_dead_letter_queue_is_alarmed() -> None:
    queues = {"FailedEventsQueue", "WebhookDeadLetterQueue"}
    alarmed = {
        alarm["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in ALARMS.values()
        if alarm["Properties"].get("Namespace") == "AWS/SQS"
    }
    assert alarmed == queues


# ---- nothing kept forever --------------------------------------------------------------------------
@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_every_function_logs_to_a_declared_group_with_a_retention(logical_id: str) -> None:
    group = props(logical_id)["LoggingConfig"]["LogGroup"]["Ref"]
    assert RESOURCES[group]["Type"] == "AWS::Logs::LogGroup"
    assert props(group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_every_log_group_expires() -> None:
    groups = [k for k, v in RESOURCES.items() if v["Type"] == "AWS::Logs::LogGroup"]
    assert groups
    for logical_id in groups:
        assert "RetentionInDays" in props(logical_id), logical_id


def test_data_is_kept_on_delete_unless_the_user_chooses_otherwise() -> None:
    parameter = TEMPLATE["Parameters"]["DataDeletionPolicy"]
    assert parameter["Default"] == "Retain" and parameter["AllowedValues"] == ["Retain", "Delete"]
    for logical_id in ("RelayflowTable", "DataBucket"):
        assert RESOURCES[logical_id]["DeletionPolicy"] == {"Ref": "DataDeletionPolicy"}
        assert RESOURCES[logical_id]["UpdateReplacePolicy"] == {"Ref": "DataDeletionPolicy"}


def test_lifecycle_rules_match_where_the_runtime_writes() -> None:
    rules = {r["Prefix"]: r for r in props("DataBucket")["LifecycleConfiguration"]["Rules"] if "Prefix" in r}
    assert execution_prefix("t1", "x1").startswith("executions/")
    assert upload_prefix("t1", "d1", "u1").startswith("uploads/")
    for prefix in ("executions/", "map-results/", "inputs/", "rejected/"):
        assert rules[prefix]["ExpirationInDays"] == {"Ref": "RetentionDays"}
    assert rules["uploads/"]["ExpirationInDays"] == 2
    batch = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
    # the ResultWriter's (Prefix.$: a run's own, built with States.Format) start where a rule matches
    writers = re.findall(r'"Prefix\.\$":\s*"States\.Format\(\'([^\']+)\'', json.dumps(batch))
    assert writers and all(any(w.startswith(prefix) for prefix in rules) for w in writers)
    assert TEMPLATE["Parameters"]["RetentionDays"]["Default"] == 30


def test_the_sweep_index_is_sparse_and_projects_what_the_sweeper_reads() -> None:
    (index,) = [i for i in props("RelayflowTable")["GlobalSecondaryIndexes"] if i["IndexName"] == "sweep"]
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["sweep_pk", "sweep_sk"]
    assert index["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(SWEEP_PROJECTION)}
    assert props("RelayflowTable")["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }


# ---- nothing starved -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("logical_id", "parameter", "condition"),
    [
        ("ApiFunction", "ApiReservedConcurrency", "ReserveApiConcurrency"),
        ("AuthorizerFunction", "AuthorizerReservedConcurrency", "ReserveAuthorizerConcurrency"),
        ("ReconcilerFunction", "ReconcilerReservedConcurrency", "ReserveReconcilerConcurrency"),
        ("NodeRunnerFunction", "NodeRunnerMaxConcurrency", "CapNodeRunnerConcurrency"),
        # An account whose concurrency limit is 10 can reserve nothing: every parameter at 0 deploys.
        ("SweeperFunction", "SweeperReservedConcurrency", "ReserveSweeperConcurrency"),
    ],
)
def test_reserved_concurrency_comes_from_a_parameter(logical_id: str, parameter: str, condition: str) -> None:
    assert props(logical_id)["ReservedConcurrentExecutions"] == {
        "Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]
    }
    assert int(TEMPLATE["Parameters"][parameter]["Default"]) > 0


def test_the_batch_budget_reaches_the_runtime_and_leaves_room_for_single_runs() -> None:
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["BATCH_PARALLELISM_BUDGET"] == {"Ref": "BatchParallelismBudget"}
    assert variables["RETENTION_DAYS"] == {"Ref": "RetentionDays"}
    parameters = TEMPLATE["Parameters"]
    assert parameters["BatchParallelismBudget"]["Default"] < parameters["NodeRunnerMaxConcurrency"]["Default"]


# ---- seen ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("logical_id", sorted(ALARMS))
def test_every_alarm_notifies_the_optional_topic_and_is_documented(logical_id: str) -> None:
    alarm = props(logical_id)
    expected = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert alarm["AlarmActions"] == expected and alarm["OKActions"] == expected
    anchor = f"docs/operations.md#{logical_id.lower()}"
    assert anchor in " ".join(alarm["AlarmDescription"].split())
    assert re.search(rf"^### {logical_id}$", OPERATIONS, flags=re.M), (
        f"{logical_id} is not in docs/operations.md"
    )


def test_the_alarms_watch_what_the_issue_names() -> None:
    watched = set()
    for alarm in ALARMS.values():
        properties = alarm["Properties"]
        for metric in [properties] + [
            m.get("MetricStat", {}).get("Metric", {}) for m in properties.get("Metrics", [])
        ]:
            if metric.get("MetricName"):
                watched.add(metric["MetricName"])
    assert {"5xx", "Errors", "Throttles", "ApproximateNumberOfMessagesVisible"} <= watched
    assert {metrics.RUNS_FINISHED, metrics.STUCK_RUNS_SETTLED, metrics.STATUS_EVENTS_NOT_PUBLISHED} <= watched
    assert metrics.OVERDUE_RUNS in watched


def test_custom_metric_alarms_read_the_namespace_and_dimensions_the_runtime_writes() -> None:
    namespace = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    for logical_id, alarm in ALARMS.items():
        properties = alarm["Properties"]
        if "Metrics" in properties or str(properties["Namespace"]).startswith("AWS/"):
            continue
        assert properties["Namespace"] == namespace, logical_id
        assert {"Name": "service", "Value": "relayflow"} in properties["Dimensions"], logical_id
        assert properties["MetricName"] in vars(metrics).values(), logical_id


# ---- deployable whatever the stack is called ---------------------------------------------------------
S3_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _bucket_names(stack_name: str, region: str, overrides: dict[str, str] | None = None) -> set[str]:
    """Every spelling of the data bucket's name in the template (the bucket, the environment, the
    machines' substitutions, the policies), resolved for a stack of this name."""
    context = cfn.Context.from_template(
        TEMPLATE,
        parameter_overrides=overrides,
        stack_name=stack_name,
        region=region,
        account_id="111122223333",
    )
    names = {cfn.resolve(props("DataBucket")["BucketName"], context)}
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    names.add(cfn.resolve(variables["RELAYFLOW_BUCKET"], context))
    for machine in ("RunMachine", "BatchMachine", "JobsMachine"):
        names.add(cfn.resolve(props(machine)["DefinitionSubstitutions"]["DataBucket"], context))
    for spec in FUNCTIONS.values():
        for policy in spec["Properties"].get("Policies") or []:
            for template_name in ("S3ReadPolicy", "S3CrudPolicy"):
                if isinstance(policy, dict) and template_name in policy:
                    names.add(cfn.resolve(policy[template_name]["BucketName"], context))
    return names


@pytest.mark.parametrize(
    ("stack_name", "region"),
    [
        ("relayflow", "us-east-1"),
        ("My-Very-Long-Stack-Name-For-The-Production-Account-Of-Team-42", "ap-southeast-4"),
        ("UPPER", "us-gov-west-1"),
    ],
)
def test_the_bucket_name_is_valid_for_any_stack_name(stack_name: str, region: str) -> None:
    # Given a stack of that name (CloudFormation allows 128 characters, upper case included)
    names = _bucket_names(stack_name, region)
    # Then every place that names the bucket names the same bucket, and S3 accepts the name
    (name,) = names
    assert S3_BUCKET_NAME.match(name) and ".." not in name, name
    assert name.startswith(f"relayflow-data-111122223333-{region}-")


def test_a_deployment_keeps_its_bucket_by_naming_it() -> None:
    # A deployment from before the generated name sets its bucket's name as a parameter
    assert _bucket_names("relayflow", "eu-west-1", {"DataBucketName": "relayflow-data-1-eu-west-1"}) == {
        "relayflow-data-1-eu-west-1"
    }
