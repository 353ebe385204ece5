"""Provisioning: template.yaml made real in moto, in this process.

`Deployment` is what CloudFormation and SAM do with the template, for the resources moto can hold:
it resolves the template's intrinsic functions (`relayflow.local.cfn`), plans every resource's
!Ref and !GetAtt before anything exists (generated names are CloudFormation's
`<stack>-<LogicalId>-<SUFFIX>`, deterministic here), then creates the roles, tables, bucket, event
buses, queues, Lambda functions (SAM `Globals` merged in; the code is a placeholder, the shim runs
the Handler in-process), state machines and `AWS::Events::Rule` resources in moto, and configures
the bucket's notifications to Lambda.

State machines are the template's `AWS::Serverless::StateMachine` resources: each is created in
moto from its `DefinitionUri` file (statemachine/*.asl.json) with its `DefinitionSubstitutions`
resolved like any other property, so `!Ref RunMachine` in a function's environment is the ARN of
exactly the definition AWS would run. Nothing else creates state machines.

One process runs every function, so the union of their environments goes into `os.environ`
(`apply_environment`; two functions may not disagree on a variable), after
`isolate_from_real_aws` has made sure nothing can reach a real account; `restore_environment`
puts back what was there. A function's other event sources are read here as data for whoever
runs them: SQS sources, schedules and asynchronous-invocation settings for `relayflow.local.delivery`;
its HttpApi and EventBridgeRule events are read by `relayflow.local.apigateway` and
`relayflow.local.eventbridge`, which emulate what moto does not run.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config

from relayflow.local import cfn, delivery, moto_shim
from relayflow_runtime import settings

__all__ = [
    "ACCOUNT_ID",
    "Deployment",
    "LocalFunction",
    "StackError",
    "as_list",
    "default_template_path",
    "physical_name",
    "share_service_models",
    "shared_client",
]

log = logging.getLogger("relayflow.local")

ACCOUNT_ID = "123456789012"  # moto's default account

# Resource types that have nothing to create locally.
_NOTHING_TO_CREATE = frozenset(
    {
        "AWS::Serverless::HttpApi",
        "AWS::Serverless::Api",
        "AWS::Lambda::Permission",
        "AWS::Logs::LogGroup",
        "AWS::CloudWatch::Alarm",
        "AWS::SQS::QueuePolicy",
        "AWS::SNS::TopicPolicy",
        "AWS::CloudWatch::Dashboard",
        "AWS::XRay::SamplingRule",  # X-Ray has no daemon here (POWERTOOLS_TRACE_DISABLED)
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Stage",
        "AWS::ApiGatewayV2::Route",
        "AWS::ApiGatewayV2::Integration",
    }
)
# A function's events that relayflow.local.eventbridge runs.
EVENTBRIDGE_EVENT_TYPES = ("EventBridgeRule", "CloudWatchEvent")
_FUNCTION_TYPES = frozenset({"AWS::Serverless::Function"})
_STATE_MACHINE_TYPES = frozenset({"AWS::Serverless::StateMachine"})
# ${Name} in a definition: a DefinitionSubstitutions variable (CloudFormation's syntax).
_DEFINITION_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class StackError(RuntimeError):
    """The local stack could not be built or used."""


def default_template_path() -> Path:
    """template.yaml of the source checkout this package lives in (or $RELAYFLOW_TEMPLATE)."""
    override = os.environ.get("RELAYFLOW_TEMPLATE")
    if override:
        return Path(override)
    # functions/dev/relayflow/local/provision.py -> repository root
    return Path(__file__).resolve().parents[4] / "template.yaml"


@dataclass
class LocalFunction:
    """One Lambda function of the stack, as created in moto."""

    logical_id: str
    function_name: str
    arn: str
    handler: str
    role_arn: str
    timeout: int = 3
    memory_size: int = 128
    environment: dict[str, str] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)
    reserved_concurrency: int | None = None

    @property
    def info(self) -> moto_shim.FunctionInfo:
        return moto_shim.FunctionInfo(
            function_name=self.function_name,
            function_arn=self.arn,
            memory_mb=self.memory_size,
            timeout_s=self.timeout,
        )


class Deployment:
    """The template deployed into moto (whose mock must be running for `deploy()` and after).

    Attributes after `deploy()`: `template`, `context` (the intrinsic-function context),
    `resources` (logical id -> physical id, i.e. the value of !Ref), `outputs` (the template's
    resolved Outputs), `functions` (logical id -> LocalFunction), `state_machines` (logical id ->
    ARN of the template's state machines), `environment` (the variables put into os.environ), and
    the event sources `relayflow.local.delivery` runs: `async_configs`, `queue_sources`,
    `schedules` ("<function>.<event>" -> rule ARN) and `schedule_rates` (-> seconds).
    """

    def __init__(
        self,
        template_path: Path,
        *,
        stack_name: str,
        region: str,
        parameters: Mapping[str, Any],
        handler_overrides: Mapping[str, str],
    ) -> None:
        self.template_path = template_path
        self.stack_name = stack_name
        self.region = region
        self.account_id = ACCOUNT_ID
        self.parameters = dict(parameters)
        self.handler_overrides = dict(handler_overrides)

        self.template: dict[str, Any] = {}
        self.context = cfn.Context()
        self.resources: dict[str, str] = {}
        self.outputs: dict[str, Any] = {}
        self.functions: dict[str, LocalFunction] = {}
        self.state_machines: dict[str, str] = {}
        self.environment: dict[str, str] = {}
        self.async_configs: dict[str, delivery.AsyncInvokeConfig] = {}
        self.queue_sources: list[delivery.QueueSource] = []
        self.schedules: dict[str, str] = {}
        self.schedule_rates: dict[str, float] = {}
        self._helper_role_arn: str | None = None
        self._saved_environ: dict[str, str | None] = {}

    def load(self) -> None:
        """Read the template (before moto starts: a missing one is the first thing to say)."""
        if not self.template_path.is_file():
            raise StackError(
                f"template.yaml not found at {self.template_path}. The local stack builds itself from "
                "the SAM template of a source checkout: install relayflow editable (pip install -e .) "
                "from the repository, pass LocalStack(template_path=...), or set RELAYFLOW_TEMPLATE."
            )
        self.template = cfn.load_template(self.template_path)

    def deploy(self) -> None:
        """Create the template's resources in moto, resolve its Outputs and set the environment."""
        parameters = dict(self.parameters)
        if "DataBucketName" in (self.template.get("Parameters") or {}):
            # The local stack keeps the name it always had (data directories hold objects by bucket).
            parameters.setdefault(
                "DataBucketName", f"{self.stack_name}-data-{self.account_id}-{self.region}".lower()
            )
        self.context = cfn.Context.from_template(
            self.template,
            parameter_overrides=parameters,
            stack_name=self.stack_name,
            region=self.region,
            account_id=self.account_id,
        )
        self._plan_identities()
        self._create_resources()
        self.outputs = {
            name: self.resolve(spec["Value"], f"Outputs.{name}")
            for name, spec in (self.template.get("Outputs") or {}).items()
            if "Condition" not in spec or self.context.condition(spec["Condition"])
        }
        self.apply_environment()

    def client(self, service: str) -> Any:
        """A boto3 client for `service` in the stack's region (talks to moto while it runs)."""
        return shared_client(service, self.region)

    # ------------------------------------------------------------------ functions

    def override_handler(self, logical_id: str, handler: str) -> None:
        """Point a function at another Handler string (a test double), for every path that
        reaches it: Step Functions tasks, S3 notifications, the watcher, invoke()."""
        function = self.function(logical_id)
        self.client("lambda").update_function_configuration(
            FunctionName=function.function_name, Handler=handler
        )
        function.handler = handler

    def function_arn(self, logical_id: str) -> str:
        return self.function(logical_id).arn

    def register_function(
        self,
        logical_id: str,
        handler: str,
        *,
        environment: Mapping[str, str] | None = None,
        timeout: int = 30,
        memory_size: int = 128,
    ) -> str:
        """Create an extra (test-only) Lambda function in moto whose Handler is `handler`; returns
        its ARN. Step Functions tasks and `lambda.invoke` reach it through the shim."""
        if logical_id in self.functions:
            raise StackError(f"function {logical_id!r} already exists")
        if self._helper_role_arn is None:
            self._helper_role_arn = self._create_role(
                f"{self.stack_name}-local-helper-role", _LAMBDA_TRUST, {}
            )
        name = physical_name(self.stack_name, logical_id, 64)
        function = LocalFunction(
            logical_id=logical_id,
            function_name=name,
            arn=self.arn("lambda", f"function:{name}"),
            handler=handler,
            role_arn=self._helper_role_arn,
            timeout=timeout,
            memory_size=memory_size,
            environment=dict(environment or {}),
        )
        self._create_function(function, {})
        self.functions[logical_id] = function
        return function.arn

    def function(self, logical_id: str) -> LocalFunction:
        try:
            return self.functions[logical_id]
        except KeyError:
            raise StackError(f"no function {logical_id!r}; have {sorted(self.functions)}") from None

    # ------------------------------------------------------------------ building

    def resolve(self, value: Any, where: str) -> Any:
        try:
            return cfn.resolve(value, self.context)
        except cfn.TemplateError as exc:
            raise StackError(f"{self.template_path.name}: {where}: {exc}") from exc

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.context.partition}:{service}:{self.region if region else ''}:"
            f"{self.account_id if account else ''}:{resource}"
        )

    def active_resources(self) -> dict[str, dict[str, Any]]:
        return {
            logical_id: spec
            for logical_id, spec in self.template["Resources"].items()
            if "Condition" not in spec or self.context.condition(spec["Condition"])
        }

    def _explicit_name(self, logical_id: str, spec: Mapping[str, Any], key: str) -> str | None:
        value = (spec.get("Properties") or {}).get(key)
        if value is None:
            return None
        try:
            return str(cfn.resolve(value, self.context))
        except cfn.UnresolvableError as exc:
            raise StackError(
                f"{logical_id}.{key} may only use parameters / pseudo parameters: {exc}"
            ) from exc

    def _plan_identities(self) -> None:
        """Ref values and GetAtt attributes of every resource, before anything is created."""
        refs, attributes = self.context.refs, self.context.attributes
        for logical_id, spec in self.active_resources().items():
            kind = spec.get("Type", "")
            if kind == "AWS::DynamoDB::Table":
                name = self._explicit_name(logical_id, spec, "TableName") or physical_name(
                    self.stack_name, logical_id, 255
                )
                arn = self.arn("dynamodb", f"table/{name}")
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": arn, "StreamArn": f"{arn}/stream/1970-01-01T00:00:00.000"}
            elif kind == "AWS::S3::Bucket":
                name = (
                    self._explicit_name(logical_id, spec, "BucketName")
                    or physical_name(self.stack_name, logical_id, 63).lower()
                )
                refs[logical_id] = name
                attributes[logical_id] = {
                    "Arn": f"arn:{self.context.partition}:s3:::{name}",
                    "DomainName": f"{name}.s3.amazonaws.com",
                    "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
                    "WebsiteURL": f"http://{name}.s3-website-{self.region}.amazonaws.com",
                }
            elif kind == "AWS::Events::EventBus":
                name = self._explicit_name(logical_id, spec, "Name") or logical_id
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": self.arn("events", f"event-bus/{name}"), "Name": name}
            elif kind == "AWS::IAM::Role":
                name = self._explicit_name(logical_id, spec, "RoleName") or physical_name(
                    self.stack_name, logical_id, 64
                )
                self._plan_role(logical_id, name)
            elif kind == "AWS::SQS::Queue":
                name = self._explicit_name(logical_id, spec, "QueueName") or physical_name(
                    self.stack_name, logical_id, 80
                )
                if (spec.get("Properties") or {}).get("FifoQueue") and not name.endswith(".fifo"):
                    name = f"{name[:75]}.fifo"
                url = f"https://sqs.{self.region}.amazonaws.com/{self.account_id}/{name}"
                refs[logical_id] = url
                attributes[logical_id] = {
                    "Arn": self.arn("sqs", name),
                    "QueueName": name,
                    "QueueUrl": url,
                }
            elif kind == "AWS::Events::Rule":
                name = self._explicit_name(logical_id, spec, "Name") or physical_name(
                    self.stack_name, logical_id, 64
                )
                refs[logical_id] = name
                # A rule on a custom bus is rule/<bus>/<name>: the ARN moto gives it replaces this.
                attributes[logical_id] = {"Arn": self.arn("events", f"rule/{name}")}
            elif kind == "AWS::SNS::Topic":
                name = self._explicit_name(logical_id, spec, "TopicName") or physical_name(
                    self.stack_name, logical_id, 256
                )
                refs[logical_id] = self.arn("sns", name)
                attributes[logical_id] = {"TopicArn": refs[logical_id], "TopicName": name}
            elif kind in _FUNCTION_TYPES:
                name = self._explicit_name(logical_id, spec, "FunctionName") or physical_name(
                    self.stack_name, logical_id, 64
                )
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": self.arn("lambda", f"function:{name}")}
                if "Role" not in (spec.get("Properties") or {}):
                    self._plan_role(
                        f"{logical_id}Role", physical_name(self.stack_name, f"{logical_id}Role", 64)
                    )
            elif kind in _STATE_MACHINE_TYPES:
                name = self._explicit_name(logical_id, spec, "Name") or physical_name(
                    self.stack_name, logical_id, 80
                )
                arn = self.arn("states", f"stateMachine:{name}")
                refs[logical_id] = arn
                attributes[logical_id] = {"Arn": arn, "Name": name}
                if "Role" not in (spec.get("Properties") or {}):
                    self._plan_role(
                        f"{logical_id}Role", physical_name(self.stack_name, f"{logical_id}Role", 64)
                    )
            elif kind in ("AWS::Serverless::HttpApi", "AWS::Serverless::Api"):
                api_id = hashlib.sha1(f"{self.stack_name}/{logical_id}".encode()).hexdigest()[:10]
                refs[logical_id] = api_id
                attributes[logical_id] = {
                    "ApiId": api_id,
                    "ApiEndpoint": f"https://{api_id}.execute-api.{self.region}.amazonaws.com",
                    "RootResourceId": api_id,
                }
            elif kind == "AWS::Logs::LogGroup":  # nothing to create; its name and ARN are known
                name = self._explicit_name(logical_id, spec, "LogGroupName") or physical_name(
                    self.stack_name, logical_id, 512
                )
                refs[logical_id] = name
                attributes[logical_id] = {"Arn": self.arn("logs", f"log-group:{name}:*")}
            elif kind in _NOTHING_TO_CREATE:
                refs[logical_id] = physical_name(self.stack_name, logical_id, 64)
            else:
                raise StackError(
                    f"{logical_id}: resource type {kind} is not supported by the local stack "
                    "(relayflow/local/provision.py creates the types template.yaml uses)"
                )

    def _plan_role(self, logical_id: str, name: str) -> None:
        self.context.refs[logical_id] = name
        self.context.attributes[logical_id] = {
            "Arn": self.arn("iam", f"role/{name}", region=False),
            "RoleId": "AROA" + hashlib.sha1(name.encode()).hexdigest()[:17].upper(),
        }

    def _create_resources(self) -> None:
        resources = self.active_resources()
        by_type: dict[str, list[str]] = {}
        for logical_id, spec in resources.items():
            by_type.setdefault(spec["Type"], []).append(logical_id)

        for logical_id in by_type.get("AWS::IAM::Role", []):
            properties = self.resolve(resources[logical_id].get("Properties") or {}, logical_id)
            self._create_role(
                self.context.refs[logical_id],
                properties.get("AssumeRolePolicyDocument", _LAMBDA_TRUST),
                {p["PolicyName"]: p["PolicyDocument"] for p in properties.get("Policies", [])},
                path=properties.get("Path", "/"),
            )
        for logical_id in by_type.get("AWS::DynamoDB::Table", []):
            self._create_table(logical_id, self.resolve(resources[logical_id]["Properties"], logical_id))
        for logical_id in by_type.get("AWS::S3::Bucket", []):
            self._create_bucket(
                logical_id, self.resolve(resources[logical_id].get("Properties") or {}, logical_id)
            )
        for logical_id in by_type.get("AWS::Events::EventBus", []):
            self.client("events").create_event_bus(Name=self.context.refs[logical_id])
        for logical_id in by_type.get("AWS::SQS::Queue", []):
            properties = self.resolve(resources[logical_id].get("Properties") or {}, logical_id)
            attributes = {
                key: json.dumps(value)
                if isinstance(value, dict)
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
                for key, value in properties.items()
                if key not in ("QueueName", "Tags")
            }
            self.client("sqs").create_queue(
                QueueName=self.context.attributes[logical_id]["QueueName"], Attributes=attributes
            )
        globals_ = (self.template.get("Globals") or {}).get("Function") or {}
        for logical_id in by_type.get("AWS::Serverless::Function", []):
            spec = _merge_sam_globals(globals_, resources[logical_id].get("Properties") or {})
            self._create_sam_function(logical_id, spec)
        # After the functions: a definition's substitutions name their ARNs.
        for logical_id in by_type.get("AWS::Serverless::StateMachine", []):
            self._create_state_machine(logical_id, resources[logical_id].get("Properties") or {})
        for logical_id in by_type.get("AWS::Events::Rule", []):
            self._create_rule(logical_id, resources[logical_id])
        self._wire_s3_notifications(resources)
        self.resources = {logical_id: str(ref) for logical_id, ref in self.context.refs.items()}

    def _create_rule(self, logical_id: str, spec: Mapping[str, Any]) -> None:
        """An EventBridge rule of the template, in moto: its queue targets receive what it matches
        (other targets are not run locally)."""
        properties = self.resolve(spec.get("Properties") or {}, logical_id)
        name = self.context.refs[logical_id]
        bus = str(properties.get("EventBusName") or "default")
        events = self.client("events")
        if "EventPattern" not in properties:
            log.warning("%s: only rules with an EventPattern are run locally", logical_id)
            return
        events.put_rule(
            Name=name,
            EventBusName=bus,
            EventPattern=json.dumps(properties["EventPattern"]),
            State=str(properties.get("State", "ENABLED")),
        )
        arn = events.describe_rule(Name=name, EventBusName=bus)["Arn"]
        self.context.attributes[logical_id] = {"Arn": arn}
        targets = []
        for target in properties.get("Targets") or []:
            if ":sqs:" not in str(target.get("Arn", "")):
                log.warning("%s: target %s is not a queue: not run locally", logical_id, target.get("Id"))
                continue
            targets.append({"Id": str(target["Id"]), "Arn": str(target["Arn"])})
        if targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=targets)

    def _create_role(
        self, name: str, trust: Mapping[str, Any], policies: Mapping[str, Any], *, path: str = "/"
    ) -> str:
        iam = self.client("iam")
        arn: str = iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"
        ]["Arn"]
        for policy_name, document in policies.items():
            iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
        return arn

    def _sam_role(self, logical_id: str, properties: Mapping[str, Any], trust: Mapping[str, Any]) -> str:
        """The ARN of a SAM resource's `Role`, or of the role SAM makes for it (`<LogicalId>Role`)
        from the statements of its inline `Policies` (SAM policy templates are left out: moto does
        not enforce IAM)."""
        if "Role" in properties:
            return str(properties["Role"])
        statements = [
            statement
            for policy in properties.get("Policies") or []
            if isinstance(policy, dict) and "Statement" in policy
            for statement in policy["Statement"]
        ]
        inline = {"inline": {"Version": "2012-10-17", "Statement": statements}} if statements else {}
        return self._create_role(self.context.refs[f"{logical_id}Role"], trust, inline)

    def _create_table(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self.context.refs[logical_id]
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PROVISIONED"),
        }
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in properties:
                request[key] = [
                    {k: v for k, v in index.items() if k != "ContributorInsightsSpecification"}
                    for index in properties[key]
                ]
        for key in ("ProvisionedThroughput", "TableClass", "DeletionProtectionEnabled", "Tags"):
            if key in properties:
                request[key] = properties[key]
        if "StreamSpecification" in properties:
            request["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
        if "SSESpecification" in properties:
            sse = properties["SSESpecification"]
            request["SSESpecification"] = {
                "Enabled": bool(sse.get("SSEEnabled")),
                **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
                **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {}),
            }
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(**request)
        ttl = properties.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        pitr = properties.get("PointInTimeRecoverySpecification")
        if pitr and pitr.get("PointInTimeRecoveryEnabled"):
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )

    def _create_bucket(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self.context.refs[logical_id]
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        encryption = (properties.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration")
        if encryption:
            # CloudFormation's ServerSideEncryptionByDefault is the API's ApplyServerSideEncryptionByDefault
            rules = [
                {("Apply" + k if k == "ServerSideEncryptionByDefault" else k): v for k, v in rule.items()}
                for rule in encryption
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in properties:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"]
            )
        versioning = (properties.get("VersioningConfiguration") or {}).get("Status")
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
        if "OwnershipControls" in properties:
            s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=properties["OwnershipControls"])
        lifecycle = (properties.get("LifecycleConfiguration") or {}).get("Rules")
        if lifecycle:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in lifecycle]}
            )
        cors = (properties.get("CorsConfiguration") or {}).get("CorsRules")
        if cors:
            renamed = {"Id": "ID", "MaxAge": "MaxAgeSeconds"}
            rules = [{renamed.get(k, k): v for k, v in rule.items()} for rule in cors]
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})

    def definition_of(self, logical_id: str) -> str:
        """The definition a state machine of the template is created with: its DefinitionUri file
        (or inline Definition) with DefinitionSubstitutions filled in, as CloudFormation does."""
        spec = self.template["Resources"][logical_id]
        properties = spec.get("Properties") or {}
        if "DefinitionUri" in properties:
            uri = properties["DefinitionUri"]
            if not isinstance(uri, str) or uri.startswith("s3://"):
                raise StackError(f"{logical_id}: DefinitionUri must be a file of the checkout, got {uri!r}")
            path = (self.template_path.parent / uri).resolve()
            if not path.is_file():
                raise StackError(f"{logical_id}: DefinitionUri {uri} not found at {path}")
            text = path.read_text(encoding="utf-8")
        elif "Definition" in properties:
            text = json.dumps(self.resolve(properties["Definition"], f"{logical_id}.Definition"))
        else:
            raise StackError(f"{logical_id}: no DefinitionUri or Definition")
        substitutions = self.resolve(
            properties.get("DefinitionSubstitutions") or {}, f"{logical_id}.DefinitionSubstitutions"
        )

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in substitutions:
                raise StackError(
                    f"{logical_id}: the definition uses ${{{name}}}, which DefinitionSubstitutions "
                    f"does not set (it sets {sorted(substitutions)})"
                )
            value = substitutions[name]
            return value if isinstance(value, str) else json.dumps(value)

        return _DEFINITION_VARIABLE.sub(substitute, text)

    def _create_state_machine(self, logical_id: str, spec: Mapping[str, Any]) -> None:
        properties = self.resolve(
            {k: v for k, v in spec.items() if k not in ("Definition", "DefinitionSubstitutions", "Events")},
            logical_id,
        )
        if spec.get("Events"):
            log.warning("%s: state machine events are not run locally", logical_id)
        definition = self.definition_of(logical_id)
        role_arn = self._sam_role(logical_id, properties, _STATES_TRUST)
        request: dict[str, Any] = {
            "name": self.context.attributes[logical_id]["Name"],
            "definition": definition,
            "roleArn": role_arn,
            "type": properties.get("Type", "STANDARD"),
        }
        if (properties.get("Tracing") or {}).get("Enabled") is not None:
            request["tracingConfiguration"] = {"enabled": bool(properties["Tracing"]["Enabled"])}
        arn: str = self.client("stepfunctions").create_state_machine(**request)["stateMachineArn"]
        if arn != self.context.refs[logical_id]:  # pragma: no cover - moto's ARN scheme changed
            raise StackError(
                f"{logical_id}: moto made {arn}, the template's !Ref says {self.context.refs[logical_id]}"
            )
        self.state_machines[logical_id] = arn

    def _create_sam_function(self, logical_id: str, spec: Mapping[str, Any]) -> None:
        properties = self.resolve({k: v for k, v in spec.items() if k != "Events"}, logical_id)
        events = dict(spec.get("Events") or {})
        name = self.context.refs[logical_id]
        role_arn = self._sam_role(logical_id, properties, _LAMBDA_TRUST)
        handler = self.handler_overrides.get(logical_id) or properties.get("Handler")
        if not handler:
            raise StackError(f"{logical_id}: no Handler")
        function = LocalFunction(
            logical_id=logical_id,
            function_name=name,
            arn=self.context.attributes[logical_id]["Arn"],
            handler=str(handler),
            role_arn=role_arn,
            timeout=int(properties.get("Timeout", 3)),
            memory_size=int(properties.get("MemorySize", 128)),
            environment={
                key: _env_string(value)
                for key, value in ((properties.get("Environment") or {}).get("Variables") or {}).items()
            },
            events=events,
            reserved_concurrency=(
                int(properties["ReservedConcurrentExecutions"])
                if "ReservedConcurrentExecutions" in properties
                else None
            ),
        )
        self._create_function(function, properties)
        self.functions[logical_id] = function
        self.async_configs[logical_id] = delivery.AsyncInvokeConfig.of(properties)
        for event_name, event in events.items():
            if event.get("Type") == "SQS":
                source = self.resolve(event.get("Properties") or {}, f"{logical_id}.{event_name}")
                responses = source.get("FunctionResponseTypes") or []
                self.queue_sources.append(
                    delivery.QueueSource(
                        function_id=logical_id,
                        queue_arn=str(source["Queue"]),
                        batch_size=int(source.get("BatchSize", 10)),
                        report_failures="ReportBatchItemFailures" in responses,
                    )
                )
            elif event.get("Type") in ("Schedule", "ScheduleV2"):
                key = f"{logical_id}.{event_name}"
                self.schedules[key] = self.arn(
                    "events", f"rule/{physical_name(self.stack_name, f'{logical_id}{event_name}', 64)}"
                )
                expression = self.resolve((event.get("Properties") or {}).get("Schedule", ""), key)
                period = delivery.rate_seconds(str(expression))
                if period is not None:
                    self.schedule_rates[key] = period
                else:
                    log.warning("%s: schedule %r does not tick locally (only rate(...))", key, expression)
            elif event.get("Type") not in ("HttpApi", "Api", "S3", *EVENTBRIDGE_EVENT_TYPES):
                log.warning("%s.%s: %s events are not run locally", logical_id, event_name, event.get("Type"))

    def _create_function(self, function: LocalFunction, properties: Mapping[str, Any]) -> None:
        request: dict[str, Any] = {
            "FunctionName": function.function_name,
            "Runtime": properties.get("Runtime", "python3.13"),
            "Role": function.role_arn,
            "Handler": function.handler,
            "Code": {"ZipFile": _DUMMY_ZIP},
            "Timeout": function.timeout,
            "MemorySize": function.memory_size,
            "Environment": {"Variables": function.environment},
        }
        if properties.get("Architectures"):
            request["Architectures"] = properties["Architectures"]
        if properties.get("Tracing"):
            request["TracingConfig"] = {"Mode": properties["Tracing"]}
        if properties.get("Description"):
            request["Description"] = properties["Description"]
        self.client("lambda").create_function(**request)

    def _wire_s3_notifications(self, resources: Mapping[str, Mapping[str, Any]]) -> None:
        """S3 events of SAM functions (and plain LambdaConfigurations) -> bucket notifications."""
        per_bucket: dict[str, list[dict[str, Any]]] = {}
        for logical_id, function in self.functions.items():
            for event_name, event in function.events.items():
                if event.get("Type") != "S3":
                    continue
                properties = event.get("Properties") or {}
                bucket = properties.get("Bucket")
                if not (isinstance(bucket, dict) and "Ref" in bucket and bucket["Ref"] in resources):
                    raise StackError(
                        f"{logical_id}.{event_name}: Bucket must be !Ref of a bucket in the template"
                    )
                resolved = self.resolve(properties, f"{logical_id}.{event_name}")
                for s3_event in as_list(resolved.get("Events")):
                    per_bucket.setdefault(bucket["Ref"], []).append(
                        _lambda_notification(
                            f"{logical_id}{event_name}", function.arn, s3_event, resolved.get("Filter")
                        )
                    )
        for logical_id, spec in resources.items():
            if spec.get("Type") != "AWS::S3::Bucket":
                continue
            configuration = self.resolve(
                ((spec.get("Properties") or {}).get("NotificationConfiguration") or {}), logical_id
            )
            for index, item in enumerate(configuration.get("LambdaConfigurations") or []):
                per_bucket.setdefault(logical_id, []).append(
                    _lambda_notification(
                        f"{logical_id}{index}", item["Function"], item["Event"], item.get("Filter")
                    )
                )
        for bucket_id, configurations in per_bucket.items():
            self.client("s3").put_bucket_notification_configuration(
                Bucket=self.context.refs[bucket_id],
                NotificationConfiguration={"LambdaFunctionConfigurations": configurations},
            )

    # ------------------------------------------------------------------ environment

    def apply_environment(self) -> None:
        """The union of the functions' environments goes into os.environ: one process runs them
        all, so two functions may not disagree on a variable."""
        union: dict[str, str] = {}
        owner: dict[str, str] = {}
        for logical_id, function in self.functions.items():
            for key, value in function.environment.items():
                if key in union and union[key] != value:
                    raise StackError(
                        f"{logical_id} and {owner[key]} set {key} differently ({value!r} vs {union[key]!r}); "
                        "the local stack runs every function in one process and needs one value"
                    )
                union[key] = value
                owner.setdefault(key, logical_id)
        self.environment = union
        for key, value in union.items():
            self._set_environ(key, value)
        # X-Ray has no daemon here; Powertools' Tracer is off outside Lambda anyway.
        if "POWERTOOLS_TRACE_DISABLED" not in os.environ:
            self._set_environ("POWERTOOLS_TRACE_DISABLED", "true")
        # Nor CloudWatch: metrics (EMF lines on stdout) would only clutter the console and test output.
        if "POWERTOOLS_METRICS_DISABLED" not in os.environ:
            self._set_environ("POWERTOOLS_METRICS_DISABLED", "true")
        self._reset_relayflow_caches()

    def _set_environ(self, key: str, value: str | None) -> None:
        if key not in self._saved_environ:
            self._saved_environ[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def isolate_from_real_aws(self) -> None:
        """Fake credentials and no profile, config file or endpoint override: nothing this process
        does while the stack runs can reach a real account."""
        for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
            self._set_environ(key, None)
        for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            self._set_environ(key, None)
        self._set_environ("AWS_CONFIG_FILE", os.devnull)
        self._set_environ("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        self._set_environ("AWS_ACCESS_KEY_ID", "testing")
        self._set_environ("AWS_SECRET_ACCESS_KEY", "testing")
        self._set_environ("AWS_SESSION_TOKEN", "testing")
        self._set_environ("AWS_DEFAULT_REGION", self.region)
        self._set_environ("AWS_REGION", self.region)

    def restore_environment(self) -> None:
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ.clear()
        self._reset_relayflow_caches()

    @staticmethod
    def _reset_relayflow_caches() -> None:
        settings.reset_caches()

    # ------------------------------------------------------------------ executions

    def _state_machine_arns(self) -> list[str]:
        """Every state machine in moto: the template's, and any a test made."""
        paginator = self.client("stepfunctions").get_paginator("list_state_machines")
        return [sm["stateMachineArn"] for page in paginator.paginate() for sm in page["stateMachines"]]

    def is_template_execution(self, execution_arn: str) -> bool:
        """Whether an execution ARN (arn:...:execution:<machine name>:<id>) is a run of one of the
        template's state machines; a distributed Map's child (<machine>/<label>:<id>) is not."""
        parts = execution_arn.split(":")
        if len(parts) < 8 or parts[5] != "execution":
            return False
        machine = ":".join([*parts[:5], "stateMachine", parts[6]])
        return machine in self.state_machines.values()

    def executions(self, state_machine_arn: str) -> list[dict[str, Any]]:
        paginator = self.client("stepfunctions").get_paginator("list_executions")
        return [
            execution
            for page in paginator.paginate(stateMachineArn=state_machine_arn)
            for execution in page["executions"]
        ]

    def running_executions(self) -> list[str]:
        return [
            execution["executionArn"]
            for arn in self._state_machine_arns()
            for execution in self.executions(arn)
            if execution["status"] == "RUNNING"
        ]

    def abort_running_executions(self) -> None:
        running = self.running_executions()
        sfn = self.client("stepfunctions")
        for arn in running:
            try:
                sfn.stop_execution(executionArn=arn, error="LocalStack.Stopped", cause="local stack stopped")
            except Exception:  # pragma: no cover - it ended meanwhile
                log.debug("stop_execution %s failed", arn, exc_info=True)
        deadline = time.monotonic() + 2.0
        while running and time.monotonic() < deadline and self.running_executions():
            time.sleep(0.05)

    def wait_for_execution(self, execution_arn: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll DescribeExecution until the execution is no longer RUNNING; returns the description."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            description: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return description
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{execution_arn} still RUNNING after {timeout}s")
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# helpers


_LAMBDA_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
_STATES_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


_client_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def shared_client(service: str, region: str) -> Any:
    """Clients are shared by every LocalStack of the process: building one costs ~60-150 ms and
    moto's interception does not depend on when a client was made. Credentials are fake."""
    with _client_lock:
        key = (service, region)
        if key not in _clients:
            global _session
            if _session is None:
                _session = boto3.session.Session(
                    aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing"
                )
            _clients[key] = _session.client(
                service, region_name=region, config=Config(retries={"max_attempts": 1})
            )
        return _clients[key]


_session: Any = None


class _SearchPaths(list[str]):
    """A shared loader's search paths: boto3 appends its own data path to the loader of every
    session it makes; a path is kept once."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


_stock_create_loader = botocore.loaders.create_loader
_loaders: dict[str | None, botocore.loaders.Loader] = {}
_loaders_lock = threading.Lock()


def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    """botocore.loaders.create_loader, one Loader per data path for the whole process."""
    with _loaders_lock:
        loader = _loaders.get(search_path_string)
        if loader is None:
            paths = _SearchPaths()
            for path in (search_path_string or "").split(os.pathsep):
                if path:
                    paths.append(os.path.expanduser(os.path.expandvars(path)))
            loader = _loaders[search_path_string] = botocore.loaders.Loader(extra_search_paths=paths)
        return loader


def share_service_models(shared: bool) -> None:
    """While `shared`, every botocore session shares one loader, i.e. the service models it has
    read. The runtime keeps one boto3 session per warm container, and the local stack makes it
    start a new one at every start and stop (new environment, new settings): each used to read the
    JSON models of its clients again (~0.2 s of CPU per stack start, more for a test that uses more
    services). The models are read-only data; credentials and settings stay per session."""
    botocore.session.create_loader = _shared_loader if shared else _stock_create_loader


def _dummy_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "relayflow local stack: handlers run in-process (relayflow.local)\n")
    return buffer.getvalue()


_DUMMY_ZIP = _dummy_zip()


def physical_name(stack_name: str, logical_id: str, limit: int) -> str:
    """CloudFormation-style generated name: <stack>-<LogicalId>-<SUFFIX>, deterministic here."""
    digest = hashlib.sha1(f"{stack_name}/{logical_id}".encode()).digest()
    suffix = base64.b32encode(digest).decode()[:12]
    room = limit - len(suffix) - 2
    head = f"{stack_name}-{logical_id}"
    return f"{head[:room]}-{suffix}"


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the shape of S3's PutBucketLifecycleConfiguration."""
    converted: dict[str, Any] = {"ID": rule.get("Id", ""), "Status": rule.get("Status", "Enabled")}
    prefix = rule.get("Prefix")
    converted["Filter"] = {"Prefix": prefix} if prefix is not None else {"Prefix": ""}
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        converted["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpiration" in rule:
        days = int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        converted["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    return converted


def _merge_sam_globals(globals_: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge (the function wins), lists add up, scalars are replaced."""
    merged: dict[str, Any] = copy.deepcopy(dict(globals_))
    for key, value in properties.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = _merge_sam_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + value
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    if len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def _env_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _lambda_notification(
    notification_id: str, function_arn: str, events: Any, sam_or_cfn_filter: Mapping[str, Any] | None
) -> dict[str, Any]:
    configuration: dict[str, Any] = {
        "Id": notification_id,
        "LambdaFunctionArn": function_arn,
        "Events": as_list(events),
    }
    rules = ((sam_or_cfn_filter or {}).get("S3Key") or {}).get("Rules") or []
    if rules:
        configuration["Filter"] = {
            "Key": {"FilterRules": [{"Name": rule["Name"], "Value": rule["Value"]} for rule in rules]}
        }
    return configuration
