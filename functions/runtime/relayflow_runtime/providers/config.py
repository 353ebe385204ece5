"""A model's config as pydantic models: what every provider shares, and the problems a user reads.

Each adapter declares its config as a model over ``ModelConfig`` (price, rate limit, no inline
secret); the same models give the OpenAPI document its schemas (``json_schema``) and the API its
answers (``problems``). Configs are strict (``2`` is no string, ``true`` no number) and open: a
provider's config keeps settings it does not know, its nested objects (price, rate limit, Bedrock's
inference) refuse them. An optional setting is left out, not null, unless its type says ``None``
(``MISSING``: absent is fine, ``null`` is refused).

``problems`` turns pydantic's errors into one sentence each, by error type: the field by its path,
and what it takes read from the field's JSON Schema (its type, bounds, pattern and examples), so a
rule and its message cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, NoReturn, TypeVar

from pydantic import (
    MISSING,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails, PydanticKnownError

# Keys that would put a secret into the model record (stored in DynamoDB, returned by the API).
INLINE_SECRET_KEYS = ("api_key", "apiKey", "api-key")
INLINE_SECRET_REFUSAL = (
    "must not be given inline: store the key in Secrets Manager and set 'api_key_secret_arn', "
    "or in SSM Parameter Store and set 'api_key_parameter'"
)


def _refuse_inline_secret(value: object) -> NoReturn:
    raise ValueError(INLINE_SECRET_REFUSAL)


# Each spelling of an inline key is a field that refuses any value (the schema says it with "not").
InlineSecret = SkipJsonSchema[Annotated[object, BeforeValidator(_refuse_inline_secret)] | MISSING]


def refuse_inline_secrets(schema: dict[str, Any]) -> None:
    schema["not"] = {
        "description": "secrets are never inline",
        "anyOf": [{"required": [key]} for key in INLINE_SECRET_KEYS],
    }


# Numbers a config holds are bounded where relayflow computes with them (costs, rate windows, kept in
# DynamoDB, whose numbers have 38 digits): a config that validates also runs.
MAX_PRICE_PER_1K = 1_000_000
MAX_REQUESTS_PER_MINUTE = 1_000_000_000
MAX_TOKENS_PER_MINUTE = 1_000_000_000_000


class ModelPrice(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"input_per_1k": 0.003, "output_per_1k": 0.015}]},
    )

    input_per_1k: (
        Annotated[float, Field(ge=0, le=MAX_PRICE_PER_1K, description="US dollars per 1,000 input tokens")]
        | MISSING
        | None
    ) = MISSING
    output_per_1k: (
        Annotated[float, Field(ge=0, le=MAX_PRICE_PER_1K, description="US dollars per 1,000 output tokens")]
        | MISSING
        | None
    ) = MISSING

    # domain/costs.py's ``Price``: a rate left out (or null) is 0.
    @property
    def input_rate(self) -> float:
        return or_default(self.input_per_1k, None) or 0.0

    @property
    def output_rate(self) -> float:
        return or_default(self.output_per_1k, None) or 0.0


# A model's own rate limit, enforced across concurrent runs (services: rate_limits.py).
class ModelRateLimit(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "minProperties": 1,
            "examples": [{"requests_per_minute": 60, "tokens_per_minute": 40000}],
        },
    )

    requests_per_minute: Annotated[int, Field(ge=1, le=MAX_REQUESTS_PER_MINUTE)] | MISSING | None = MISSING
    tokens_per_minute: Annotated[int, Field(ge=1, le=MAX_TOKENS_PER_MINUTE)] | MISSING | None = MISSING

    @property
    def requests(self) -> int | None:
        """Requests a minute, or None: not limited."""
        return or_default(self.requests_per_minute, None)

    @property
    def tokens(self) -> int | None:
        """Tokens a minute, or None: not limited."""
        return or_default(self.tokens_per_minute, None)

    @model_validator(mode="before")
    @classmethod
    def _at_least_one_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data:
            raise PydanticKnownError(
                "too_short", {"field_type": "Object", "min_length": 1, "actual_length": 0}
            )
        return data


class ModelConfig(BaseModel):
    """What every provider's config may hold besides its own settings."""

    model_config = ConfigDict(strict=True, extra="allow", json_schema_extra=refuse_inline_secrets)

    price: (
        Annotated[ModelPrice | None, Field(description="US dollars per 1,000 tokens, for estimated costs.")]
        | MISSING
    ) = MISSING
    rate_limit: (
        Annotated[
            ModelRateLimit | None,
            Field(description="Most calls and tokens per minute, shared by every caller of this model."),
        ]
        | MISSING
    ) = MISSING
    api_key: InlineSecret = MISSING
    api_key_camel: InlineSecret = Field(MISSING, alias="apiKey")
    api_key_dash: InlineSecret = Field(MISSING, alias="api-key")

    @property
    def declared_price(self) -> ModelPrice | None:
        """The model's ``price``; None: not known (a price naming no rate is none)."""
        price = or_default(self.price, None)
        return price if price is not None and price.model_fields_set else None

    @property
    def declared_rate_limit(self) -> ModelRateLimit | None:
        """The model's ``rate_limit`` when it limits anything; None: not limited."""
        limit = or_default(self.rate_limit, None)
        return limit if limit is not None and (limit.requests or limit.tokens) else None

    @property
    def output_cap(self) -> int | None:
        """The most tokens a call answers, where the config sets it: what the rate limits and the
        estimate count a call's output as at most. OpenAI's ``max_tokens`` and Bedrock's
        ``inference.maxTokens`` are settings of theirs; another provider's config may state it as
        a ``max_tokens`` of its own (kept, as any setting the provider does not know)."""
        cap = (self.model_extra or {}).get("max_tokens")
        return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None

    @classmethod
    def subject(cls, provider: str, config: Mapping[str, object]) -> str:
        """Whose setting a problem is about, before its sentence (builtin adds its model)."""
        return provider


Value = TypeVar("Value")
Default = TypeVar("Default")


def or_default(value: Value | MISSING, default: Default) -> Value | Default:
    """A setting of a parsed config, or ``default`` where the config leaves it out."""
    return default if value is MISSING else value


#: The top-level keys every provider shares: their problems are not prefixed by the provider.
COMMON_KEYS = frozenset(field.alias or name for name, field in ModelConfig.model_fields.items())


# --- Errors into sentences -------------------------------------------------------------------------

# Each error type pydantic (or a validator here) reports, as a sentence. {field} is the setting's
# path, {expected} what it takes and {hint} its examples or description, read from its JSON Schema.
SENTENCES: dict[str, str] = {
    "missing": "{field} is required{hint}",
    "extra_forbidden": "unknown {parent}key {key}; expected {known}",
    "literal_error": "unknown {key_name} {given}; expected one of: {choices}",
    "string_pattern_mismatch": "{field} must {pattern}{hint}",
    "value_error": "{field} {reason}",  # a validator's own words
    **{
        kind: "{field} must be {expected}{hint}"
        for kind in (
            "string_type",
            "string_too_short",
            "int_type",
            "float_type",
            "bool_type",
            "list_type",
            "dict_type",
            "model_type",
            "greater_than",
            "greater_than_equal",
            "less_than_equal",
            "finite_number",
            "too_short",
        )
    },
}

# What a pattern asks for, as the end of "'field' must ...".
PATTERNS = {r"\S": "not be blank", r"^https?://": "start with http:// or https://"}


def json_schema(config_type: type[ModelConfig], ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The JSON Schema of a provider's config (``$defs`` holds the models it refers to)."""
    return config_type.model_json_schema(ref_template=ref_template)


def problems(provider: str, config_type: type[ModelConfig], config: Mapping[str, object]) -> list[str]:
    """Sentences for what is wrong with ``config``; an empty list means it is valid."""
    try:
        config_type.model_validate(config)
    except ValidationError as exc:
        schema = json_schema(config_type)
        subject = config_type.subject(provider, config)
        return [sentence(subject, schema, error) for error in exc.errors(include_url=False)]
    return []


def sentence(subject: str, schema: dict[str, Any], error: ErrorDetails) -> str:
    """One error as a sentence, prefixed by whose setting it is (the provider, builtin's model)
    unless the setting is one every provider shares."""
    defs = schema.get("$defs", {})
    loc = list(error["loc"])
    node = parent = _resolve(schema, defs)
    for step in loc:
        parent, node = node, _resolve(_field(node, step), defs)
    kind, given = error["type"], error.get("input")
    if kind == "literal_error" and not (isinstance(given, str) and given):
        kind = "missing"  # no name at all (a number, a blank) reads as none given
    context = error.get("ctx") or {}
    known = ", ".join(parent.get("properties", {}))
    values = {
        "field": f"'{_path(loc)}'" if loc else "",
        "hint": _hint(node),
        "expected": _expected(node),
        "pattern": PATTERNS.get(str(context.get("pattern")), f"match {context.get('pattern')}"),
        "reason": str(context.get("error", "")),
        "parent": f"{_path(loc[:-1])} " if len(loc) > 1 else "",
        "key": repr(loc[-1]) if loc else "",
        "key_name": str(loc[-1]) if loc else "",
        "known": known,
        "given": repr(given),
        "choices": ", ".join(str(choice) for choice in node.get("enum", ())),
    }
    template = SENTENCES.get(kind, "{field}: {message}")
    text = template.format(message=error["msg"], **values).strip()
    if loc and str(loc[0]) in COMMON_KEYS:
        return text
    return f"{subject}: {text}"


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema itself: a reference followed, a nullable one's other branch."""
    while True:
        if "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
            schema = defs[schema["$ref"].removeprefix("#/$defs/")]
        elif "anyOf" in schema and {"type": "null"} in schema["anyOf"]:
            rest = [branch for branch in schema["anyOf"] if branch != {"type": "null"}]
            if len(rest) != 1:
                return schema
            schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **rest[0]}
        else:
            return schema


def _field(schema: dict[str, Any], step: int | str) -> dict[str, Any]:
    if isinstance(step, int):
        return dict(schema.get("items", {}))
    if step in schema.get("properties", {}):
        return dict(schema["properties"][step])
    for condition in schema.get("allOf", ()):  # a setting that applies under a condition (builtin's options)
        if step in condition.get("then", {}).get("properties", {}):
            return dict(condition["then"]["properties"][step])
    return {}


def _path(loc: list[int | str]) -> str:
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else step
    return text


def _hint(schema: dict[str, Any]) -> str:
    if schema.get("type") == "object" or "properties" in schema:
        return ""  # an object's example is in what it expects
    if schema.get("enum"):
        return f", one of: {', '.join(str(choice) for choice in schema['enum'])}"
    if schema.get("examples"):
        return f" (e.g. {' or '.join(repr(example) for example in schema['examples'])})"
    if schema.get("description"):
        description = str(schema["description"]).rstrip(".")
        first_word = description.split(" ", 1)[0]
        if not (len(first_word) > 1 and first_word.isupper()):  # "A name" reads "(a name)", "US" stays
            description = description[:1].lower() + description[1:]
        return f" ({description})"
    return ""


def _expected(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        examples = schema.get("examples")
        return f"an object like {json.dumps(examples[0])}" if examples else "an object"
    if kind == "array":
        return f"a list of {_expected(schema.get('items', {})).removeprefix('a ')}s"
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return "a non-empty string" if schema.get("minLength") else "a string"
    text = {"integer": "a whole number", "number": "a number"}.get(str(kind), "a valid value")
    if "minimum" in schema and "maximum" in schema:
        return f"{text} from {schema['minimum']} to {schema['maximum']}"
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    if "exclusiveMinimum" in schema:
        text += f" > {schema['exclusiveMinimum']}"
    if "maximum" in schema:
        text += f" <= {schema['maximum']}"
    return text
