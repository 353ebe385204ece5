"""template.yaml's IAM: the node runner may do exactly what each model provider needs, on the
resources it needs, and no other function may call models or read provider secrets."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from relayflow.local import cfn
from relayflow_runtime.providers import PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = cfn.load_template(ROOT / "template.yaml")
REGION, ACCOUNT = "eu-west-1", "111122223333"
HERE = f"{REGION}:{ACCOUNT}"  # region:account of the stack
ELSEWHERE = f"{REGION}:444455556666"  # another account
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"

# What each adapter calls (providers/*.py) -> the IAM action that call needs.
PROVIDER_ACTIONS = {
    "bedrock": {"bedrock:InvokeModel"},  # bedrock-runtime Converse
    "sagemaker": {"sagemaker:InvokeEndpoint"},  # sagemaker-runtime InvokeEndpoint
    "lambda": {"lambda:InvokeFunction"},  # lambda Invoke
    "openai": {"secretsmanager:GetSecretValue", "ssm:GetParameter"},  # the API key, by reference
    "builtin": set(),
}
MODEL_ACTIONS = set().union(*PROVIDER_ACTIONS.values())
MODEL_SERVICES = {action.split(":")[0] for action in MODEL_ACTIONS}


_HERE = "${AWS::Region}:${AWS::AccountId}"
# The SAM policy templates the template uses, as SAM expands them (samtranslator's
# policy_templates.json), so that the checks below see every statement a role gets.
SAM_POLICY_TEMPLATES: dict[str, list[dict[str, Any]]] = {
    "StepFunctionsExecutionPolicy": [
        {
            "Action": ["states:StartExecution"],
            "Resource": "arn:${AWS::Partition}:states:" + _HERE + ":stateMachine:${StateMachineName}",
        }
    ],
    "LambdaInvokePolicy": [
        {
            "Action": ["lambda:InvokeFunction"],
            "Resource": "arn:${AWS::Partition}:lambda:" + _HERE + ":function:${FunctionName}*",
        }
    ],
    "S3ReadPolicy": [
        {
            "Action": [
                "s3:GetObject",
                "s3:ListBucket",
                "s3:GetBucketLocation",
                "s3:GetObjectVersion",
                "s3:GetLifecycleConfiguration",
            ],
            "Resource": [
                "arn:${AWS::Partition}:s3:::${BucketName}",
                "arn:${AWS::Partition}:s3:::${BucketName}/*",
            ],
        }
    ],
    "S3CrudPolicy": [
        {
            "Action": [
                "s3:GetObject",
                "s3:ListBucket",
                "s3:GetBucketLocation",
                "s3:GetObjectVersion",
                "s3:PutObject",
                "s3:PutObjectAcl",
                "s3:GetLifecycleConfiguration",
                "s3:PutLifecycleConfiguration",
                "s3:DeleteObject",
            ],
            "Resource": [
                "arn:${AWS::Partition}:s3:::${BucketName}",
                "arn:${AWS::Partition}:s3:::${BucketName}/*",
            ],
        }
    ],
    "DynamoDBCrudPolicy": [
        {
            "Action": [
                "dynamodb:GetItem",
                "dynamodb:DeleteItem",
                "dynamodb:PutItem",
                "dynamodb:Scan",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:BatchGetItem",
                "dynamodb:DescribeTable",
                "dynamodb:ConditionCheckItem",
            ],
            "Resource": [
                "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${TableName}",
                "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${TableName}/index/*",
            ],
        }
    ],
    "SQSSendMessagePolicy": [
        {"Action": ["sqs:SendMessage*"], "Resource": "arn:${AWS::Partition}:sqs:" + _HERE + ":${QueueName}"}
    ],
    "EventBridgePutEventsPolicy": [
        {
            "Action": ["events:PutEvents"],
            "Resource": "arn:${AWS::Partition}:events:" + _HERE + ":event-bus/${EventBusName}",
        }
    ],
}
STACK = "relayflow"
PRINCIPALS = sorted(
    logical_id
    for logical_id, spec in TEMPLATE["Resources"].items()
    if spec["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine")
)


def _context() -> cfn.Context:
    """Every resource as CloudFormation would name it in stack STACK, REGION / ACCOUNT."""
    context = cfn.Context.from_template(TEMPLATE, stack_name=STACK, region=REGION, account_id=ACCOUNT)
    for resource_id, spec in TEMPLATE["Resources"].items():
        if spec["Type"] == "AWS::Serverless::StateMachine":
            name = cfn.resolve(spec["Properties"]["Name"], context)
            arn = f"arn:aws:states:{HERE}:stateMachine:{name}"
            context.refs[resource_id], context.attributes[resource_id] = arn, {"Arn": arn, "Name": name}
        elif spec["Type"] == "AWS::Serverless::Function":
            name = f"{STACK}-{resource_id}-AbC123"
            context.refs[resource_id] = name
            context.attributes[resource_id] = {"Arn": f"arn:aws:lambda:{HERE}:function:{name}"}
        else:
            context.refs.setdefault(resource_id, f"{STACK}-{resource_id}")
            context.attributes.setdefault(
                resource_id,
                {"Arn": f"arn:aws:test:{HERE}:{resource_id}", "QueueName": f"{STACK}-{resource_id}"},
            )
    return context


def _expand(name: str, arguments: dict[str, Any], context: cfn.Context) -> list[dict[str, Any]]:
    local = cfn.Context.from_template(TEMPLATE, stack_name=STACK, region=REGION, account_id=ACCOUNT)
    local.parameters.update(arguments)
    return [
        {"Effect": "Allow", **cfn.resolve({"Action": s["Action"], "Resource": _sub(s["Resource"])}, local)}
        for s in SAM_POLICY_TEMPLATES[name]
    ]


def _sub(resource: Any) -> Any:
    return [{"Fn::Sub": r} for r in resource] if isinstance(resource, list) else {"Fn::Sub": resource}


def statements_of(logical_id: str) -> list[dict[str, Any]]:
    """Every statement of a SAM function's or state machine's role (inline statements and the SAM
    policy templates, expanded), every intrinsic resolved as CloudFormation would in REGION /
    ACCOUNT with the parameters' defaults."""
    context = _context()
    policies = cfn.resolve(TEMPLATE["Resources"][logical_id]["Properties"].get("Policies") or [], context)
    raw: list[dict[str, Any]] = []
    for policy in policies:
        if isinstance(policy, dict) and "Statement" in policy:
            raw.extend(policy["Statement"])
        elif isinstance(policy, dict) and len(policy) == 1:
            ((name, arguments),) = policy.items()
            if name not in SAM_POLICY_TEMPLATES:
                raise AssertionError(
                    f"{logical_id} uses SAM policy template {name}: add it to SAM_POLICY_TEMPLATES"
                )
            raw.extend(_expand(name, arguments, context))
        else:
            raise AssertionError(f"{logical_id}: policy {policy!r} is neither a statement nor a SAM template")
    found: list[dict[str, Any]] = []
    for statement in raw:
        actions = statement["Action"]
        resources = statement["Resource"]
        found.append(
            {
                **statement,
                "Action": [actions] if isinstance(actions, str) else list(actions),
                "Resource": [resources] if isinstance(resources, str) else list(resources),
            }
        )
    return found


NODE_RUNNER = statements_of("NodeRunnerFunction")


def allowed(action: str, arn: str, statements: list[dict[str, Any]] = NODE_RUNNER) -> bool:
    """IAM's wildcard matching (``*`` spans any characters, ``/`` and ``:`` included)."""
    return any(
        statement["Effect"] == "Allow"
        and any(fnmatchcase(action, pattern) for pattern in statement["Action"])
        and any(fnmatchcase(arn, pattern) for pattern in statement["Resource"])
        for statement in statements
    )


def test_every_provider_has_its_permissions_listed() -> None:
    # A new provider must say here what it needs (and the template must grant it)
    assert set(PROVIDER_ACTIONS) == set(PROVIDERS)


def test_the_node_runner_grants_exactly_the_provider_actions() -> None:
    # Given the node runner's statements that touch model services
    granted = {
        action
        for statement in NODE_RUNNER
        for action in statement["Action"]
        if action.split(":")[0] in MODEL_SERVICES
    }
    # Then they are exactly what the adapters call: no wildcards, no streaming, no management APIs
    assert granted == MODEL_ACTIONS
    for statement in NODE_RUNNER:
        if any(a.split(":")[0] in MODEL_SERVICES for a in statement["Action"]):
            assert statement["Effect"] == "Allow"
            assert "*" not in statement["Resource"]
            assert all("*" not in action for action in statement["Action"])


@pytest.mark.parametrize(
    ("action", "arn"),
    [
        # Converse on a foundation model, here or in another region (cross-region inference)
        ("bedrock:InvokeModel", f"arn:aws:bedrock:eu-west-1::foundation-model/{HAIKU}"),
        ("bedrock:InvokeModel", f"arn:aws:bedrock:eu-central-1::foundation-model/{HAIKU}"),
        # ... through a system-defined or an application inference profile of this account
        ("bedrock:InvokeModel", f"arn:aws:bedrock:{HERE}:inference-profile/eu.{HAIKU}"),
        ("bedrock:InvokeModel", f"arn:aws:bedrock:{HERE}:application-inference-profile/a1b2c3"),
        ("sagemaker:InvokeEndpoint", f"arn:aws:sagemaker:{HERE}:endpoint/my-llm"),
        # The parameterised function pattern (default relayflow-model-*), with or without a qualifier
        ("lambda:InvokeFunction", f"arn:aws:lambda:{HERE}:function:relayflow-model-classify"),
        ("lambda:InvokeFunction", f"arn:aws:lambda:{HERE}:function:relayflow-model-classify:prod"),
        # Keys under the relayflow/ prefix (a secret's ARN ends with a random suffix)
        ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{HERE}:secret:relayflow/openai-AbCdEf"),
        ("ssm:GetParameter", f"arn:aws:ssm:{HERE}:parameter/relayflow/openai/key"),
    ],
)  # fmt: skip
def test_the_node_runner_may_call_what_models_need(action: str, arn: str) -> None:
    assert allowed(action, arn), f"{action} on {arn} is not allowed"


@pytest.mark.parametrize(
    ("action", "arn"),
    [
        ("bedrock:InvokeModelWithResponseStream", f"arn:aws:bedrock:eu-west-1::foundation-model/{HAIKU}"),
        ("bedrock:InvokeModel", f"arn:aws:bedrock:{ELSEWHERE}:inference-profile/eu.{HAIKU}"),
        ("sagemaker:InvokeEndpoint", f"arn:aws:sagemaker:{ELSEWHERE}:endpoint/their-llm"),
        ("sagemaker:CreateEndpoint", f"arn:aws:sagemaker:{HERE}:endpoint/my-llm"),
        ("lambda:InvokeFunction", f"arn:aws:lambda:{HERE}:function:billing-export"),
        ("lambda:UpdateFunctionCode", f"arn:aws:lambda:{HERE}:function:relayflow-model-classify"),
        ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{HERE}:secret:prod/database-AbCdEf"),
        ("secretsmanager:PutSecretValue", f"arn:aws:secretsmanager:{HERE}:secret:relayflow/openai-AbCdEf"),
        ("ssm:GetParameter", f"arn:aws:ssm:{HERE}:parameter/prod/database/password"),
        ("ssm:GetParametersByPath", f"arn:aws:ssm:{HERE}:parameter/relayflow/openai"),
    ],
)  # fmt: skip
def test_the_node_runner_may_not_go_further(action: str, arn: str) -> None:
    assert not allowed(action, arn), f"{action} on {arn} should not be allowed"


def test_the_lambda_model_pattern_is_a_parameter() -> None:
    # Given the template's parameter for the functions "lambda" models may invoke
    parameter = TEMPLATE["Parameters"]["ModelFunctionArnPattern"]
    # Then its default keeps to the relayflow-model- prefix, and the statement uses it as is
    assert parameter["Default"] == "arn:aws:lambda:*:*:function:relayflow-model-*"
    spec = TEMPLATE["Resources"]["NodeRunnerFunction"]["Properties"]["Policies"]
    lambda_statements = [
        s
        for p in spec
        if isinstance(p, dict)
        for s in p.get("Statement", [])
        if s.get("Sid") == "LambdaModels"
    ]
    assert [s["Resource"] for s in lambda_statements] == [{"Ref": "ModelFunctionArnPattern"}]


@pytest.mark.parametrize(
    "logical_id",
    [
        logical_id
        for logical_id, spec in TEMPLATE["Resources"].items()
        if spec["Type"] == "AWS::Serverless::Function" and logical_id != "NodeRunnerFunction"
    ],
)
def test_no_other_function_may_call_models_or_read_provider_keys(logical_id: str) -> None:
    for statement in statements_of(logical_id):
        assert not any(action.split(":")[0] in MODEL_SERVICES for action in statement["Action"]), (
            f"{logical_id} has {statement['Action']}"
        )


# ------------------------------------------------------------------------------ Step Functions

STATES = f"arn:aws:states:{HERE}"
MACHINES = {"run": f"{STATES}:stateMachine:{STACK}-run", "batch": f"{STATES}:stateMachine:{STACK}-batch"}
MACHINES["jobs"] = f"{STATES}:stateMachine:{STACK}-jobs"
# The generated name (parameter DataBucketName empty): the last group of the stack id's UUID, zeros here.
BUCKET = f"arn:aws:s3:::relayflow-data-{ACCOUNT}-{REGION}-000000000000"
NOT_OURS = [
    f"{STATES}:stateMachine:{STACK}-wf1-v1",  # a machine the old design created at run time
    f"{STATES}:stateMachine:{STACK}-run-extra",  # one that merely shares a name prefix
    f"{STATES}:stateMachine:other-run",
    f"arn:aws:states:{ELSEWHERE}:stateMachine:{STACK}-run",
]


def execution(machine: str, name: str = "ex-1") -> str:
    return f"{machine.replace(':stateMachine:', ':execution:')}:{name}"


@pytest.mark.parametrize("logical_id", PRINCIPALS)
def test_nothing_may_create_state_machines_tag_them_or_pass_roles(logical_id: str):
    for statement in statements_of(logical_id):
        for action in statement["Action"]:
            assert not fnmatchcase("states:CreateStateMachine", action), f"{logical_id}: {action}"
            assert not fnmatchcase("states:TagResource", action), f"{logical_id}: {action}"
            assert not fnmatchcase("iam:PassRole", action), f"{logical_id}: {action}"
            assert not action.startswith("iam:"), f"{logical_id}: {action}"


# Who may start executions of which machine: exactly these, nothing else anywhere.
STARTS = {
    "ApiFunction": {"run", "batch", "jobs"},
    "S3TriggerFunction": {"run", "batch"},
    "AdmissionFunction": {"run"},  # single runs that waited for their turn (services/admission.py)
    "BatchMachine": {"batch"},  # the distributed Map's children are executions of their own machine
    # Whoever ends a batch run starts the compaction of its outcomes (services/outcomes.after_end):
    # the runner (complete/fail), the API (cancel), the reconciler and the sweeper (settling).
    "NodeRunnerFunction": {"jobs"},
    "ReconcilerFunction": {"jobs"},
    "SweeperFunction": {"jobs"},
}


@pytest.mark.parametrize("logical_id", PRINCIPALS)
def test_start_execution_only_on_the_templates_machines(logical_id: str):
    statements = statements_of(logical_id)
    for kind, machine in MACHINES.items():
        assert allowed("states:StartExecution", machine, statements) is (
            kind in STARTS.get(logical_id, set())
        ), (
            logical_id,
            kind,
        )
    for machine in NOT_OURS:
        assert not allowed("states:StartExecution", machine, statements), (logical_id, machine)
    # and no StartExecution statement has a wildcard in its resources
    for statement in statements:
        if "states:StartExecution" in statement["Action"]:
            assert all("*" not in resource for resource in statement["Resource"]), statement


def test_the_api_may_watch_and_cancel_executions_of_the_templates_machines_and_fail_gates():
    api = statements_of("ApiFunction")
    for machine in MACHINES.values():
        assert allowed("states:StopExecution", execution(machine), api)
        assert allowed("states:DescribeExecution", execution(machine), api)
    for machine in NOT_OURS:
        assert not allowed("states:StopExecution", execution(machine), api)
    # cancel fails the parked gates and wakes batches waiting for the budget it gives back;
    # SendTask* have no resource-level permissions ("*")
    assert allowed("states:SendTaskFailure", "*", api)
    assert allowed("states:SendTaskSuccess", "*", api)


#: Whoever ends a run gives its batch budget back and wakes the batches parked for it
#: (services/transitions.after_finish -> services/budget.release: SendTaskSuccess/SendTaskFailure):
#: the runner (complete/fail), the API (cancel), the reconciler and the sweeper (settling).
SETTLERS = ("NodeRunnerFunction", "ApiFunction", "ReconcilerFunction", "SweeperFunction")


def test_only_the_functions_that_end_runs_may_send_task_tokens():
    for logical_id in PRINCIPALS:
        statements = statements_of(logical_id)
        for action in ("states:SendTaskSuccess", "states:SendTaskFailure"):
            assert allowed(action, "*", statements) is (logical_id in SETTLERS), (logical_id, action)
    # and the node runner starts nothing, stops nothing
    runner = statements_of("NodeRunnerFunction")
    for machine in MACHINES.values():
        assert not allowed("states:StopExecution", execution(machine), runner)


def test_the_reconciler_may_settle_executions_of_the_templates_machines_only():
    reconciler = statements_of("ReconcilerFunction")
    for machine in MACHINES.values():
        assert allowed("states:DescribeExecution", execution(machine), reconciler)
        assert allowed("states:StopExecution", execution(machine), reconciler)
    for machine in NOT_OURS:
        assert not allowed("states:DescribeExecution", execution(machine), reconciler)


@pytest.mark.parametrize("machine", ["RunMachine", "BatchMachine", "JobsMachine"])
def test_each_machine_may_invoke_the_node_runner_and_no_other_function(machine: str):
    statements = statements_of(machine)
    runner = f"arn:aws:lambda:{HERE}:function:{STACK}-NodeRunnerFunction-AbC123"
    assert allowed("lambda:InvokeFunction", runner, statements)
    assert allowed("lambda:InvokeFunction", f"{runner}:$LATEST", statements)
    for other in ("ApiFunction", "ReconcilerFunction", "S3TriggerFunction"):
        assert not allowed(
            "lambda:InvokeFunction", f"arn:aws:lambda:{HERE}:function:{STACK}-{other}-AbC123", statements
        )
    assert not allowed(
        "lambda:InvokeFunction", f"arn:aws:lambda:{HERE}:function:relayflow-model-x", statements
    )
    # and touches no data but the batch machine's item lists and map results, and the run
    # machine's node gates (below)
    if machine == "JobsMachine":
        assert not any(a.startswith(("s3:", "dynamodb:")) for s in statements for a in s["Action"])
    if machine == "RunMachine":
        assert not any(a.startswith("s3:") for s in statements for a in s["Action"])


def test_the_run_machine_may_write_its_gates_task_tokens_on_the_table_and_nothing_else():
    run = statements_of("RunMachine")
    table = f"arn:aws:dynamodb:{HERE}:table/{STACK}-RelayflowTable"
    # AwaitParents: a conditional UpdateItem of a node record (aws-sdk integration, .waitForTaskToken)
    assert allowed("dynamodb:UpdateItem", table, run)
    for action in ("dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query"):
        assert not allowed(action, table, run), action
    assert not allowed("dynamodb:UpdateItem", f"arn:aws:dynamodb:{HERE}:table/{STACK}-IdempotencyTable", run)
    assert not allowed("dynamodb:UpdateItem", f"{table}/index/by-workflow", run)


def test_the_batch_machine_reads_item_lists_writes_map_results_and_manages_its_children_only():
    batch = statements_of("BatchMachine")
    # ItemReader: the run's item list (written by prepare_batch) anywhere in the bucket
    assert allowed("s3:GetObject", f"{BUCKET}/executions/t1/ex1/items.json", batch)
    # ResultWriter: under a run's map-results/ only (statemachine/batch.asl.json's Prefix)
    results = f"{BUCKET}/executions/t1/ex1/map-results/0b6f"
    assert allowed("s3:PutObject", f"{results}/manifest.json", batch)
    assert allowed("s3:AbortMultipartUpload", f"{results}/SUCCEEDED_0.json", batch)
    assert not allowed("s3:PutObject", f"{BUCKET}/executions/t1/ex1/items.json", batch)
    assert not allowed("s3:PutObject", f"{BUCKET}/map-results/0b6f/manifest.json", batch)
    assert not allowed("s3:DeleteObject", f"{results}/manifest.json", batch)
    assert not allowed("s3:GetObject", "arn:aws:s3:::someone-elses-bucket/x", batch)
    # distributed Map children: execution:<machine>/<map run label>:<id>
    child = f"{STATES}:execution:{STACK}-batch/items:5c7b1f0e-1d2e-3f4a-9b8c-7d6e5f4a3b2c"
    assert allowed("states:DescribeExecution", child, batch)
    assert allowed("states:StopExecution", child, batch)
    assert not allowed("states:StopExecution", execution(MACHINES["run"]), batch)
    assert not allowed("states:StopExecution", f"{STATES}:execution:{STACK}-run/items:x", batch)
