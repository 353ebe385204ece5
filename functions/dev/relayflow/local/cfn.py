"""CloudFormation templates without CloudFormation: a YAML loader for the short tags and a resolver
for the intrinsic functions, enough for the local stack to build itself from template.yaml."""

from __future__ import annotations

import base64
import copy
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "NO_VALUE",
    "Context",
    "TemplateError",
    "UnresolvableError",
    "load_template",
    "loads_template",
    "resolve",
]


class TemplateError(ValueError):
    """The template is malformed or uses something this resolver cannot evaluate."""


class UnresolvableError(TemplateError):
    """A reference names something the context does not know (yet)."""


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()

# Short tag -> long form key. !GetAtt and !Ref / !Condition are special-cased below.
_FN_TAGS = (
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Not",
    "And",
    "Or",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "Length",
    "ToJsonString",
)


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that knows CloudFormation's short tags and keeps timestamps as plain strings
    (CloudFormation reads `Version: 2012-10-17` as a string, PyYAML would make it a date)."""


_CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise TemplateError(f"unsupported YAML node {node!r}")  # pragma: no cover


def _fn_constructor(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        return {f"Fn::{name}": _construct(loader, node)}

    return construct


def _ref(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    return {"Ref": _construct(loader, node)}


def _condition(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    return {"Condition": _construct(loader, node)}


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    value = _construct(loader, node)
    if isinstance(value, str):
        logical_id, _, attribute = value.partition(".")
        if not attribute:
            raise TemplateError(f"!GetAtt {value!r} must be 'LogicalId.Attribute'")
        value = [logical_id, attribute]
    return {"Fn::GetAtt": value}


for _name in _FN_TAGS:
    _CfnLoader.add_constructor(f"!{_name}", _fn_constructor(_name))
_CfnLoader.add_constructor("!Ref", _ref)
_CfnLoader.add_constructor("!Condition", _condition)
_CfnLoader.add_constructor("!GetAtt", _get_att)


def loads_template(text: str) -> dict[str, Any]:
    """Parse a YAML (or JSON) CloudFormation template into long-form dicts."""
    data = yaml.load(text, Loader=_CfnLoader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError("not a CloudFormation template: no top-level Resources")
    return data


_parsed_lock = threading.Lock()
_parsed: dict[str, dict[str, Any]] = {}  # template text -> parsed template (the newest few)
_PARSED_KEPT = 8


def load_template(path: str | Path) -> dict[str, Any]:
    """The template at `path`. A text parsed before is not parsed again (every local stack start
    reads template.yaml: parsing it costs ~0.1 s of CPU, a copy ~2 ms); each caller gets its own
    deep copy, free to change."""
    text = Path(path).read_text(encoding="utf-8")
    with _parsed_lock:
        parsed = _parsed.get(text)
    if parsed is None:
        parsed = loads_template(text)
        with _parsed_lock:
            _parsed[text] = parsed
            while len(_parsed) > _PARSED_KEPT:
                del _parsed[next(iter(_parsed))]
    return copy.deepcopy(parsed)


@dataclass
class Context:
    """What intrinsic functions resolve against."""

    stack_name: str = "relayflow"
    region: str = "us-east-1"
    account_id: str = "123456789012"
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"
    parameters: dict[str, Any] = field(default_factory=dict)
    # logical id -> value of !Ref
    refs: dict[str, Any] = field(default_factory=dict)
    # logical id -> {attribute: value}
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    conditions: dict[str, bool] = field(default_factory=dict)
    mappings: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, Any] = field(default_factory=dict)

    @property
    def pseudo(self) -> dict[str, Any]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::StackId": (
                f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:"
                f"stack/{self.stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }

    def ref(self, name: str) -> Any:
        pseudo = self.pseudo
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise UnresolvableError(f"Ref {name!r}: no such parameter, pseudo parameter or resource")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        try:
            return self.attributes[logical_id][attribute]
        except KeyError:
            raise UnresolvableError(f"Fn::GetAtt {logical_id}.{attribute}: unknown") from None

    def condition(self, name: str) -> bool:
        try:
            return self.conditions[name]
        except KeyError:
            raise UnresolvableError(f"Condition {name!r} is not defined") from None

    @classmethod
    def from_template(
        cls,
        template: Mapping[str, Any],
        *,
        parameter_overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Context:
        """A context with the template's parameters (defaults, then overrides), mappings and
        evaluated conditions. Resource refs/attributes are filled in by the caller."""
        context = cls(**kwargs)
        overrides = dict(parameter_overrides or {})
        for name, spec in (template.get("Parameters") or {}).items():
            if name in overrides:
                value = overrides.pop(name)
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise TemplateError(f"parameter {name!r} has no Default and no override was given")
            if str(spec.get("Type", "String")).startswith("List<") or spec.get("Type") == (
                "CommaDelimitedList"
            ):
                value = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
            context.parameters[name] = value
        if overrides:
            raise TemplateError(f"unknown parameter overrides: {sorted(overrides)}")
        context.mappings = dict(template.get("Mappings") or {})
        pending = dict(template.get("Conditions") or {})
        # Conditions may refer to each other; evaluate until no progress.
        while pending:
            progressed = False
            for name, expression in list(pending.items()):
                try:
                    context.conditions[name] = bool(resolve(expression, context))
                except UnresolvableError:
                    continue
                del pending[name]
                progressed = True
            if not progressed:
                raise TemplateError(f"cannot evaluate conditions {sorted(pending)}")
        return context


_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _sub(template: str, variables: Mapping[str, Any], context: Context) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name.startswith("!"):
            return "${" + name[1:] + "}"  # ${!Literal} -> ${Literal}
        if name in variables:
            value = variables[name]
        elif "." in name and not name.startswith("AWS::"):
            logical_id, _, attribute = name.partition(".")
            value = context.get_att(logical_id, attribute)
        else:
            value = context.ref(name)
        if isinstance(value, list | dict):
            raise TemplateError(f"Fn::Sub variable {name!r} is not a string: {value!r}")
        return str(value)

    return _SUB_VARIABLE.sub(replace, template)


def _intrinsic(name: str, args: Any, context: Context) -> Any:
    if name == "Ref":
        return context.ref(_as_str(resolve(args, context), name))
    if name == "Condition":
        return context.condition(_as_str(args, name))
    if name == "Fn::GetAtt":
        if isinstance(args, str):
            args = args.split(".", 1)
        logical_id, attribute = (resolve(part, context) for part in args)
        return context.get_att(logical_id, attribute)
    if name == "Fn::Sub":
        if isinstance(args, str):
            return _sub(args, {}, context)
        text, variables = args
        return _sub(text, {k: resolve(v, context) for k, v in variables.items()}, context)
    if name == "Fn::Join":
        delimiter, values = args
        values = resolve(values, context)
        return str(delimiter).join(str(v) for v in values if v is not NO_VALUE)
    if name == "Fn::Select":
        index, values = resolve(args, context)
        return values[int(index)]
    if name == "Fn::Split":
        delimiter, text = resolve(args, context)
        return str(text).split(delimiter)
    if name == "Fn::If":
        condition, when_true, when_false = args
        return resolve(when_true if context.condition(condition) else when_false, context)
    if name == "Fn::Equals":
        left, right = resolve(args, context)
        return str(left) == str(right)
    if name == "Fn::Not":
        (value,) = args
        return not resolve(value, context)
    if name == "Fn::And":
        return all(resolve(value, context) for value in args)
    if name == "Fn::Or":
        return any(resolve(value, context) for value in args)
    if name == "Fn::FindInMap":
        map_name, top_key, second_key = resolve(args[:3], context)
        try:
            return context.mappings[map_name][top_key][second_key]
        except KeyError:
            if len(args) > 3 and isinstance(args[3], dict) and "DefaultValue" in args[3]:
                return resolve(args[3]["DefaultValue"], context)
            raise UnresolvableError(f"Fn::FindInMap {map_name}/{top_key}/{second_key}: not found") from None
    if name == "Fn::Base64":
        return base64.b64encode(str(resolve(args, context)).encode()).decode()
    if name == "Fn::GetAZs":
        region = resolve(args, context) or context.region
        return [f"{region}{zone}" for zone in "abc"]
    if name == "Fn::ImportValue":
        export = resolve(args, context)
        if export not in context.exports:
            raise UnresolvableError(f"Fn::ImportValue {export!r}: no such export in the local context")
        return context.exports[export]
    if name == "Fn::Length":
        return len(resolve(args, context))
    if name == "Fn::ToJsonString":
        import json

        return json.dumps(resolve(args, context), separators=(",", ":"))
    raise TemplateError(f"intrinsic function {name} is not supported locally")


def _as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TemplateError(f"{where} expects a string, got {value!r}")
    return value


_INTRINSICS = {"Ref", "Condition"} | {f"Fn::{name}" for name in (*_FN_TAGS, "GetAtt")}


def resolve(value: Any, context: Context) -> Any:
    """Evaluate every intrinsic function in `value`. Keys and list items that resolve to
    AWS::NoValue are dropped, as CloudFormation does."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, args),) = value.items()
            # {"Condition": {...}} is an IAM condition block, {"Condition": "Name"} the intrinsic.
            if key in _INTRINSICS and (key != "Condition" or isinstance(args, str)):
                return _intrinsic(key, args, context)
        resolved = {key: resolve(item, context) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}
    if isinstance(value, list):
        items = [resolve(item, context) for item in value]
        return [item for item in items if item is not NO_VALUE]
    return value
