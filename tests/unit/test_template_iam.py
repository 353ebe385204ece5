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


def statements_of(logical_id: str) -> list[dict[str, Any]]:
    """The inline statements of a SAM function's Policies, every intrinsic resolved as CloudFormation
    would in REGION / ACCOUNT with the parameters' defaults."""
    context = cfn.Context.from_template(TEMPLATE)
    context.region, context.account_id = REGION, ACCOUNT
    for resource_id in TEMPLATE["Resources"]:
        context.refs.setdefault(resource_id, resource_id)
        context.attributes.setdefault(
            resource_id, {"Arn": f"arn:aws:test:::{resource_id}", "QueueName": resource_id}
        )
    policies = cfn.resolve(TEMPLATE["Resources"][logical_id]["Properties"].get("Policies") or [], context)
    found: list[dict[str, Any]] = []
    for policy in policies:
        if isinstance(policy, dict) and "Statement" in policy:
            for statement in policy["Statement"]:
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
