"""template.yaml: what the deployed stack and the local stack both rely on, checked offline;
and the CloudFormation intrinsic resolver the local stack reads it with."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relayflow.local import cfn
from relayflow.local.eventbridge import event_matches

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = cfn.load_template(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function"}
GLOBALS = TEMPLATE["Globals"]["Function"]


def resolved(**parameters: Any) -> dict[str, Any]:
    """The template with every intrinsic resolved (resource refs stand in as their logical ids),
    its parameters' defaults or the values given."""
    context = cfn.Context.from_template(TEMPLATE, parameter_overrides=parameters)
    for logical_id in RESOURCES:
        context.refs[logical_id] = logical_id
        context.attributes[logical_id] = {
            "Arn": f"arn:aws:test:::{logical_id}",
            "Name": logical_id,
            "QueueName": logical_id,
            "QueueUrl": f"https://sqs.test/{logical_id}",
        }
    result: dict[str, Any] = cfn.resolve(TEMPLATE, context)
    return result


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, spec in template["Resources"].items():
        properties = spec.get("Properties") or {}
        for policy in properties.get("Policies") or []:
            if not isinstance(policy, dict):
                continue
            document = policy.get("PolicyDocument", policy)
            for statement in document.get("Statement", []):
                yield logical_id, statement


def test_template_is_a_sam_template_with_the_resources_the_design_names():
    # AWS::LanguageExtensions first: DeletionPolicy from the DataDeletionPolicy parameter.
    assert TEMPLATE["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    assert {
        "RelayflowTable",
        "IdempotencyTable",
        "DataBucket",
        "EventBus",
        "RunMachine",
        "BatchMachine",
        "JobsMachine",
        "HttpApi",
        "ApiFunction",
        "NodeRunnerFunction",
        "ReconcilerFunction",
        "S3TriggerFunction",
    } <= set(RESOURCES)
    # nothing of the runtime-created machines' design is left: no role to pass to CreateStateMachine
    assert not [k for k, v in RESOURCES.items() if v["Type"] == "AWS::IAM::Role"]
    assert set(TEMPLATE["Outputs"]) >= {
        "ApiUrl",
        "BucketName",
        "TableName",
        "EventBusName",
        "RunMachineArn",
        "BatchMachineArn",
        "JobsMachineArn",
    }


MACHINES = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::StateMachine"}


@pytest.mark.parametrize("logical_id", sorted(MACHINES))
def test_each_machine_is_deployed_from_its_file_with_the_runner_and_bucket_substituted(logical_id: str):
    properties = MACHINES[logical_id]["Properties"]
    assert properties["Type"] == "STANDARD"
    assert properties["DefinitionUri"].startswith("statemachine/")
    # (the run machine's node gates write task tokens on the table: its name too)
    table = {"TableName": {"Ref": "RelayflowTable"}} if logical_id == "RunMachine" else {}
    assert properties["DefinitionSubstitutions"] == {
        "NodeRunnerArn": {"Fn::GetAtt": ["NodeRunnerFunction", "Arn"]},
        # spelled as RELAYFLOW_BUCKET is (the bucket's !Ref would be circular through its notification)
        "DataBucket": GLOBALS["Environment"]["Variables"]["RELAYFLOW_BUCKET"],
        **table,
    }
    # named explicitly (its own role names it), traced as sampled, errors logged without execution data
    assert properties["Name"] == {"Fn::Sub": "${AWS::StackName}-" + properties["DefinitionUri"][13:-9]}
    assert properties["Tracing"] == {"Enabled": {"Fn::If": ["TraceRuns", True, False]}}
    assert properties["Logging"]["Level"] == "ERROR"
    assert properties["Logging"]["IncludeExecutionData"] is False
    assert {"LambdaInvokePolicy": {"FunctionName": {"Ref": "NodeRunnerFunction"}}} in properties["Policies"]


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_every_handler_names_a_lambda_handler_under_relayflow_runtime_handlers(logical_id: str):
    handler = FUNCTIONS[logical_id]["Properties"]["Handler"]
    assert re.fullmatch(r"relayflow_runtime\.handlers\.[a-z_][a-z0-9_]*\.lambda_handler", handler), handler
    # CodeUri is the folder that holds the runtime package, and the runtime alone (no dev package)
    code_uri = FUNCTIONS[logical_id]["Properties"].get("CodeUri", GLOBALS.get("CodeUri"))
    assert (ROOT / code_uri / "relayflow_runtime" / "__init__.py").is_file()
    assert not (ROOT / code_uri / "relayflow").exists()


def test_runtime_is_python_3_12_or_newer_on_arm64():
    for logical_id, spec in FUNCTIONS.items():
        runtime = spec["Properties"].get("Runtime", GLOBALS.get("Runtime"))
        match = re.fullmatch(r"python3\.(\d+)", runtime or "")
        assert match and int(match.group(1)) >= 12, f"{logical_id}: {runtime}"
    assert GLOBALS["Architectures"] == ["arm64"]


def test_no_statement_allows_every_action_on_every_resource():
    for logical_id, statement in policy_statements(resolved()):
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        wildcard_action = any(a == "*" or a.endswith(":*") for a in actions)
        assert not (wildcard_action and "*" in resources), f"{logical_id}: {statement}"
        assert "NotAction" not in statement, f"{logical_id}: NotAction is too broad"


def test_functions_get_the_environment_settings_reads():
    from relayflow_runtime.settings import Settings

    # What Settings reads: each field's alias, else its name in capitals (pydantic-settings).
    read = {str(field.validation_alias or name).upper() for name, field in Settings.model_fields.items()}
    variables = GLOBALS["Environment"]["Variables"]
    for name in (
        "RELAYFLOW_TABLE",
        "RELAYFLOW_BUCKET",
        "RELAYFLOW_STACK",
        "EVENT_BUS_NAME",
        "IDEMPOTENCY_TABLE",
    ):
        assert name in variables
        assert name in read
    # The functions that start executions get the template's machines (per function: a Globals !Ref
    # of them would make the node runner, whose ARN the machines name, depend on itself)
    for logical_id in ("ApiFunction", "S3TriggerFunction"):
        extra = FUNCTIONS[logical_id]["Properties"]["Environment"]["Variables"]
        assert extra == {
            "RUN_MACHINE_ARN": {"Ref": "RunMachine"},
            "BATCH_MACHINE_ARN": {"Ref": "BatchMachine"},
            "JOBS_MACHINE_ARN": {"Ref": "JobsMachine"},
        }
    assert not any("MACHINE" in name for name in variables)


def test_bucket_is_named_explicitly_so_the_s3_notification_is_not_circular():
    bucket_name = RESOURCES["DataBucket"]["Properties"]["BucketName"]
    assert GLOBALS["Environment"]["Variables"]["RELAYFLOW_BUCKET"] == bucket_name
    event = FUNCTIONS["S3TriggerFunction"]["Properties"]["Events"]["InputUploaded"]
    assert event["Type"] == "S3"
    assert event["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    assert event["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "inputs/"}]


def test_bucket_aborts_multipart_uploads_left_incomplete():
    # Given the data bucket's lifecycle rules
    rules = RESOURCES["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    aborting = [rule for rule in rules if "AbortIncompleteMultipartUpload" in rule]
    # Then one enabled rule, over the whole bucket, aborts a multipart upload within days of its start
    assert len(aborting) == 1
    rule = aborting[0]
    assert rule["Status"] == "Enabled"
    assert "Prefix" not in rule and "Filter" not in rule
    assert 1 <= rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 7
    # And it expires nothing else: stored items, results and inputs stay
    assert set(rule) == {"Id", "Status", "AbortIncompleteMultipartUpload"}


PREFIX = "arn:aws:states:us-east-1:123456789012"


def reconciler_pattern() -> dict[str, Any]:
    """The reconciler's rule as deployed in stack "relayflow" (the machines' !Ref are their ARNs)."""
    context = cfn.Context.from_template(TEMPLATE, stack_name="relayflow")
    for logical_id, spec in MACHINES.items():
        name = cfn.resolve(spec["Properties"]["Name"], context)
        context.refs[logical_id] = f"{PREFIX}:stateMachine:{name}"
        context.attributes[logical_id] = {"Name": name, "Arn": context.refs[logical_id]}
    pattern: dict[str, Any] = cfn.resolve(
        FUNCTIONS["ReconcilerFunction"]["Properties"]["Events"]["ExecutionEnded"]["Properties"]["Pattern"],
        context,
    )
    return pattern


def status_change(status: str, machine: str, execution: str) -> dict[str, Any]:
    return {
        "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change",
        "detail": {"status": status, "stateMachineArn": machine, "executionArn": execution},
    }


@pytest.mark.parametrize("name", ["relayflow-run", "relayflow-batch", "relayflow-jobs"])
def test_reconciler_rule_matches_only_ended_executions_of_the_templates_machines(name: str):
    pattern = reconciler_pattern()
    machine, run = f"{PREFIX}:stateMachine:{name}", f"{PREFIX}:execution:{name}:exec-1"
    assert event_matches(pattern, status_change("SUCCEEDED", machine, run))
    assert event_matches(pattern, status_change("TIMED_OUT", machine, run))
    assert not event_matches(pattern, status_change("RUNNING", machine, run))
    # not a machine of another stack, nor one that merely shares the stack's name prefix
    for other in (name.replace("relayflow-", "other-"), f"{name}-extra", "relayflow-wf1-v1"):
        assert not event_matches(
            pattern,
            status_change("FAILED", f"{PREFIX}:stateMachine:{other}", f"{PREFIX}:execution:{other}:x"),
        )
    # and the rule lists the three machines exactly, not a prefix
    assert sorted(pattern["detail"]["stateMachineArn"]) == sorted(
        f"{PREFIX}:stateMachine:relayflow-{kind}" for kind in ("batch", "jobs", "run")
    )


def test_reconciler_rule_leaves_out_the_child_executions_of_a_distributed_map():
    # Given the rule as deployed, and the status change of one batch of items' child execution
    # (state machine ARN <machine>/<map run label>, execution ARN <machine>/<label>:<uuid>)
    pattern = reconciler_pattern()
    child = status_change(
        "FAILED",
        f"{PREFIX}:stateMachine:relayflow-batch/items",
        f"{PREFIX}:execution:relayflow-batch/items:5c7b1f0e-1d2e-3f4a-9b8c-7d6e5f4a3b2c",
    )
    parent = copy.deepcopy(child)
    parent["detail"].update(
        stateMachineArn=f"{PREFIX}:stateMachine:relayflow-batch",
        executionArn=f"{PREFIX}:execution:relayflow-batch:exec-1",
    )
    # Then the child's event does not reach the reconciler, and the run's own still does
    assert not event_matches(pattern, child)
    assert event_matches(pattern, parent)
    # even were a child reported under its parent's machine ARN, its execution ARN's "/" leaves it out
    child["detail"]["stateMachineArn"] = parent["detail"]["stateMachineArn"]
    assert not event_matches(pattern, child)


@pytest.mark.parametrize(
    ("wildcard", "value", "matches"),
    [
        ("*/*", "a:b/c:d", True),
        ("*/*", "a:b:c", False),
        ("*/lib/*", "/usr/lib/x", True),
        ("*.png", "a.png", True),
        ("*.png", "a.png.txt", False),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axxb", False),
        ("exact", "exact", True),
    ],
)
def test_the_local_matcher_reads_anything_but_wildcard_as_eventbridge_does(
    wildcard: str, value: str, matches: bool
):
    # Given an anything-but wildcard rule (* is any run of characters, \* a literal star)
    pattern = {"detail": {"path": [{"anything-but": {"wildcard": wildcard}}]}}
    # Then a value the wildcard matches is left out, any other kept; a missing field never matches
    assert event_matches(pattern, {"detail": {"path": value}}) is not matches
    assert not event_matches(pattern, {"detail": {}})


def test_requirements_txt_pins_exactly_the_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = (ROOT / "functions/runtime/requirements.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert requirements == project["dependencies"]
    assert not any(r.startswith("moto") for r in requirements)


# ------------------------------------------------------------------------------ the resolver


def test_short_tags_load_into_long_form_and_dates_stay_strings():
    template = cfn.loads_template(
        """
        Resources:
          R:
            Type: X
            Properties:
              Version: 2012-10-17
              A: !GetAtt Fn.Arn
              B: !Sub "${AWS::StackName}-x"
              C: !Join [",", [!Ref P, b]]
              D: !If [IsProd, !Select [0, !Split [",", "a,b"]], !Ref AWS::NoValue]
              E: !Base64 hi
              F: !FindInMap [M, k, v]
              G: !Sub ["${X}-${!Literal}", {X: !Ref P}]
        """
    )
    properties = template["Resources"]["R"]["Properties"]
    assert properties["Version"] == "2012-10-17"
    assert properties["A"] == {"Fn::GetAtt": ["Fn", "Arn"]}
    assert properties["C"] == {"Fn::Join": [",", [{"Ref": "P"}, "b"]]}


@pytest.mark.parametrize(("is_prod", "expected_d"), [("prod", "a"), ("dev", None)])
def test_intrinsics_resolve_against_a_context(is_prod: str, expected_d: str | None):
    template = {
        "Parameters": {"P": {"Type": "String", "Default": is_prod}},
        "Mappings": {"M": {"k": {"v": "mapped"}}},
        "Conditions": {"IsProd": {"Fn::Equals": [{"Ref": "P"}, "prod"]}},
        "Resources": {},
    }
    context = cfn.Context.from_template(template, stack_name="s")
    context.attributes["Fn"] = {"Arn": "arn:fn"}
    value = cfn.resolve(
        {
            "A": {"Fn::GetAtt": ["Fn", "Arn"]},
            "B": {"Fn::Sub": "${AWS::StackName}-${AWS::Region}-${Fn.Arn}"},
            "C": {"Fn::Join": [",", [{"Ref": "P"}, "b"]]},
            "D": {
                "Fn::If": [
                    "IsProd",
                    {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]},
                    {"Ref": "AWS::NoValue"},
                ]
            },
            "F": {"Fn::FindInMap": ["M", "k", "v"]},
            "G": {"Fn::Sub": ["${X}-${!Literal}", {"X": {"Ref": "P"}}]},
            "H": {"Fn::Base64": "hi"},
            "IamCondition": {"Condition": {"StringEquals": {"k": "v"}}},
        },
        context,
    )
    assert value["A"] == "arn:fn"
    assert value["B"] == "s-us-east-1-arn:fn"
    assert value["C"] == f"{is_prod},b"
    assert value.get("D") == expected_d
    assert value["F"] == "mapped"
    assert value["G"] == f"{is_prod}-${{Literal}}"
    assert value["H"] == "aGk="
    assert value["IamCondition"] == {"Condition": {"StringEquals": {"k": "v"}}}


def test_an_unknown_reference_is_a_clear_error():
    with pytest.raises(cfn.UnresolvableError, match="Nope"):
        cfn.resolve({"Ref": "Nope"}, cfn.Context())


def test_open_routes_of_the_template_are_the_api_functions_public_routes():
    from relayflow_runtime.handlers.context import PUBLIC_ROUTES

    events = FUNCTIONS["ApiFunction"]["Properties"]["Events"].values()
    open_routes = {
        (e["Properties"]["Method"], re.sub(r"\{(\w+)\}", r"<\1>", e["Properties"]["Path"]))
        for e in events
        if (e["Properties"].get("Auth") or {}).get("Authorizer") == "NONE"
    }
    assert open_routes == set(PUBLIC_ROUTES)
    assert (
        RESOURCES["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"]
        in (RESOURCES["HttpApi"]["Properties"]["Auth"]["Authorizers"])
    )


def _references(value: Any, names: set[str]) -> set[str]:
    """Resources a property value refers to (Ref, GetAtt, ${Name} / ${Name.Attr} in Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and item in names:
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else str(item).split(".")[0])
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)} & names
                found |= _references(item, names)
            else:
                found |= _references(item, names)
    elif isinstance(value, list):
        for item in value:
            found |= _references(item, names)
    return found


def test_no_circular_dependency_between_the_machines_and_the_functions():
    # cfn-lint here runs without aws-sam-translator: it does not transform SAM resources and cannot
    # see a cycle through them. A SAM resource depends on what its properties (its policies, so its
    # role, included) refer to; its Events do not count (SAM turns an S3 event into the bucket's
    # notification, which depends on the function, and a rule into a resource of its own).
    names = set(RESOURCES)
    graph = {
        logical_id: _references(
            {
                **{k: v for k, v in (spec.get("Properties") or {}).items() if k != "Events"},
                # a function also has what Globals gives every function
                "Globals": GLOBALS if spec["Type"] == "AWS::Serverless::Function" else {},
            },
            names,
        )
        | set(spec.get("DependsOn") or []) - {logical_id}
        for logical_id, spec in RESOURCES.items()
    }
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError(f"circular dependency: {' -> '.join([*path[path.index(node) :], node])}")
        if node in done:
            return
        for child in sorted(graph[node]):
            visit(child, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    # The machines name the node runner; the functions that start them name the machines
    assert "NodeRunnerFunction" in graph["RunMachine"]
    assert {"RunMachine", "BatchMachine", "JobsMachine"} <= graph["ApiFunction"]
    assert not graph["NodeRunnerFunction"] & {"RunMachine", "BatchMachine", "JobsMachine"}
