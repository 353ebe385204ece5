"""Provider configs as pydantic models: each error type pydantic reports becomes one sentence, and the
OpenAPI document's schema of each provider's config accepts exactly what the API validates."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from pydantic import TypeAdapter, ValidationError

from relayflow_runtime.handlers.api import openapi_document
from relayflow_runtime.handlers.openapi import COMPONENTS, PROVIDER_NAMES, inline_refs
from relayflow_runtime.providers import (
    bedrock,
    builtin,
    config_schemas,
    lambda_,
    openai,
    sagemaker,
    validate_model_config,
)
from relayflow_runtime.providers.config import SENTENCES, ModelConfig, json_schema, sentence

ADAPTERS = {
    "builtin": builtin,
    "bedrock": bedrock,
    "openai": openai,
    "sagemaker": sagemaker,
    "lambda": lambda_,
}
OPENAI = {"base_url": "http://x/v1", "model": "m"}
INLINE = (
    "'api_key' must not be given inline: store the key in Secrets Manager and set 'api_key_secret_arn', "
    "or in SSM Parameter Store and set 'api_key_parameter'"
)

# (the error type pydantic reports, provider, config, the one sentence the user reads)
TRANSLATIONS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "missing",
        "openai",
        {"model": "m"},
        "openai: 'base_url' is required (e.g. 'https://api.openai.com/v1')",
    ),
    ("missing", "lambda", {}, "lambda: 'function_name' is required (a function name or ARN)"),
    (
        "extra_forbidden",
        "builtin",
        {"model": "echo", "price": {"per_token": 1}},
        "unknown price key 'per_token'; expected input_per_1k, output_per_1k",
    ),
    (
        "extra_forbidden",
        "bedrock",
        {"model_id": "m", "inference": {"max_tokens": 5}},
        "bedrock: unknown inference key 'max_tokens'; expected maxTokens, temperature, topP, stopSequences",
    ),
    ("missing", "builtin", {}, "builtin: 'model' is required, one of: echo, uppercase, "),
    ("literal_error", "builtin", {"model": "gpt-5"}, "builtin: unknown model 'gpt-5'; expected one of: echo"),
    ("literal_error", "builtin", {"model": 5}, "builtin: 'model' is required, one of: echo, uppercase, "),
    ("literal_error", "builtin", {"model": ""}, "builtin: 'model' is required, one of: echo, uppercase, "),
    (
        "string_pattern_mismatch",
        "openai",
        {**OPENAI, "base_url": "ftp://x"},
        "openai: 'base_url' must start with http:// or https:// (e.g. 'https://api.openai.com/v1')",
    ),
    (
        "string_pattern_mismatch",
        "openai",
        {**OPENAI, "model": " "},
        "openai: 'model' must not be blank (e.g. 'gpt-4o-mini')",
    ),
    (
        "value_error",
        "sagemaker",
        {"endpoint_name": "e", "request_template": "{}"},
        "sagemaker: 'request_template' must contain {{prompt}}",
    ),
    ("value_error", "bedrock", {"model_id": "m", "api_key": "sk"}, INLINE),
    (
        "value_error",
        "openai",
        {**OPENAI, "api_key_secret_arn": "a", "api_key_parameter": "b"},
        "openai: give either 'api_key_secret_arn' or 'api_key_parameter', not both",
    ),
    ("string_type", "openai", {**OPENAI, "system_prompt": None}, "openai: 'system_prompt' must be a string"),
    (
        "string_type",
        "bedrock",
        {"model_id": "m", "inference": {"stopSequences": ["END", 3]}},
        "bedrock: 'inference.stopSequences[1]' must be a string",
    ),
    (
        "string_too_short",
        "sagemaker",
        {"endpoint_name": "e", "content_type": ""},
        "sagemaker: 'content_type' must be a non-empty string",
    ),
    (
        "int_type",
        "builtin",
        {"model": "keywords", "top_k": 2.5},
        "builtin keywords: 'top_k' must be a whole number from 1 to 1000",
    ),
    ("int_type", "openai", {**OPENAI, "max_tokens": True}, "openai: 'max_tokens' must be a whole number > 0"),
    (
        "less_than_equal",
        "builtin",
        {"model": "sleep", "seconds": 1e308},
        "builtin sleep: 'seconds' must be a number from 0 to 840",
    ),
    (
        "float_type",
        "builtin",
        {"model": "sleep", "seconds": "soon"},
        "builtin sleep: 'seconds' must be a number from 0 to 840",
    ),
    (
        "bool_type",
        "builtin",
        {"model": "flaky", "permanent": 1},
        "builtin flaky: 'permanent' must be true or false",
    ),
    (
        "list_type",
        "bedrock",
        {"model_id": "m", "inference": {"stopSequences": "END"}},
        "bedrock: 'inference.stopSequences' must be a list of strings",
    ),
    (
        "dict_type",
        "sagemaker",
        {"endpoint_name": "e", "parameters": []},
        "sagemaker: 'parameters' must be an object",
    ),
    (
        "model_type",
        "builtin",
        {"model": "echo", "price": 3},
        '\'price\' must be an object like {"input_per_1k": 0.003, "output_per_1k": 0.015}',
    ),
    ("model_type", "bedrock", {"model_id": "m", "inference": []}, "bedrock: 'inference' must be an object"),
    (
        "greater_than",
        "openai",
        {**OPENAI, "timeout": 0},
        "openai: 'timeout' must be a number > 0 (seconds; capped by the node's time budget)",
    ),
    (
        "greater_than_equal",
        "builtin",
        {"model": "echo", "price": {"input_per_1k": -1}},
        "'price.input_per_1k' must be a number from 0 to 1000000 (US dollars per 1,000 input tokens)",
    ),
    (
        "finite_number",
        "builtin",
        {"model": "echo", "price": {"output_per_1k": float("inf")}},
        "'price.output_per_1k' must be a number from 0 to 1000000 (US dollars per 1,000 output tokens)",
    ),
    (
        "too_short",
        "builtin",
        {"model": "echo", "rate_limit": {}},
        '\'rate_limit\' must be an object like {"requests_per_minute": 60, "tokens_per_minute": 40000}',
    ),
]


@pytest.mark.parametrize(("kind", "provider", "config", "expected"), TRANSLATIONS)
def test_each_error_type_reads_as_one_sentence(
    kind: str, provider: str, config: dict[str, Any], expected: str
):
    # Given a config with one mistake, which pydantic reports as the error type under test
    with pytest.raises(ValidationError) as raised:
        TypeAdapter(ADAPTERS[provider].CONFIG).validate_python(config)
    assert [error["type"] for error in raised.value.errors()] == [kind]
    # When it is validated
    problems = validate_model_config(provider, config)
    # Then the user reads one sentence: the provider, the setting, what it takes
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_every_translated_error_type_is_tested():
    assert {kind for kind, *_ in TRANSLATIONS} == set(SENTENCES)


def test_an_error_type_without_a_sentence_keeps_pydantic_words():
    # Given an error type no sentence is written for
    schema = json_schema(ADAPTERS["openai"].CONFIG)
    error: Any = {"type": "bytes_type", "loc": ("model",), "msg": "Input should be a valid bytes", "input": 1}
    # When it is translated
    # Then the setting is named and pydantic's own message follows
    assert sentence("openai", schema, error) == "openai: 'model': Input should be a valid bytes"


def test_builtin_lists_every_model_it_runs():
    # Given builtin's config, one model with an enum of names
    names = json_schema(builtin.CONFIG)["properties"]["model"]["enum"]
    # Then its models are exactly the ones it can run, and a bad one names them all
    assert names == list(builtin.MODELS)
    (problem,) = validate_model_config("builtin", {"model": "gpt-5"})
    assert all(name in problem for name in builtin.MODELS)


def test_each_builtin_option_belongs_to_one_model_and_applies_to_it_alone():
    # Given builtin's own settings besides the model's name
    own = set(builtin.CONFIG.model_fields) - set(ModelConfig.model_fields) - {"model"}
    # Then each is an option of one model it runs, and the schema shows it under that model only
    assert own == set(builtin.OPTIONS) and set(builtin.OPTIONS.values()) <= set(builtin.MODELS)
    schema = json_schema(builtin.CONFIG)
    assert own.isdisjoint(schema["properties"])
    shown = {
        option: condition["if"]["properties"]["model"]["const"]
        for condition in schema["allOf"]
        for option in condition["then"]["properties"]
    }
    assert shown == builtin.OPTIONS
    # And another model's option is neither read nor checked, while its own is
    assert validate_model_config("builtin", {"model": "echo", "top_k": 0}) == []
    assert validate_model_config("builtin", {"model": "keywords", "top_k": 0}) == [
        "builtin keywords: 'top_k' must be a whole number from 1 to 1000"
    ]


def test_every_mistake_is_reported_at_once():
    config = {"model_id": "", "price": {"input_per_1k": "free"}, "rate_limit": {"per_day": 5}, "apiKey": "k"}
    assert validate_model_config("bedrock", config) == [
        "'price.input_per_1k' must be a number from 0 to 1000000 (US dollars per 1,000 input tokens)",
        "unknown rate_limit key 'per_day'; expected requests_per_minute, tokens_per_minute",
        INLINE.replace("'api_key' must", "'apiKey' must"),
        "bedrock: 'model_id' must not be blank (e.g. 'anthropic.claude-3-haiku-20240307-v1:0')",
    ]


# --- The published schema and the validator agree -----------------------------------------------------

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("builtin", {"model": "echo"}),
    ("builtin", {"model": "echo", "sentences": "ignored by echo", "anything": [1]}),
    ("builtin", {"model": "echo", "top_k": 0, "message": None}),
    ("builtin", {"model": "summarize", "sentences": 3}),
    ("builtin", {"model": "flaky", "failures": 0, "permanent": False}),
    ("builtin", {"model": "sleep", "seconds": 0.5, "price": {"input_per_1k": 0, "output_per_1k": None}}),
    ("builtin", {"model": "fail", "message": "no", "price": None, "rate_limit": None}),
    ("builtin", {"model": "uppercase", "rate_limit": {"requests_per_minute": None}}),
    ("bedrock", {"model_id": "amazon.nova-lite-v1:0", "inference": {"maxTokens": 100, "temperature": 0}}),
    ("bedrock", {"model_id": "m", "inference": None, "system_prompt": ""}),
    ("openai", {**OPENAI, "temperature": 1, "max_tokens": 1, "timeout": 0.5}),
    ("openai", {**OPENAI, "api_key_secret_arn": "s", "api_key_parameter": None}),
    ("sagemaker", {"endpoint_name": "e", "request_template": {"text": ["{{prompt}}"]}}),
    ("sagemaker", {"endpoint_name": "e", "request_template": {"{{prompt}}": 1}, "parameters": {}}),
    ("sagemaker", {"endpoint_name": "e", "request_template": None}),
    ("lambda", {"function_name": "arn:aws:lambda:us-east-1:123456789012:function:m", "qualifier": "live"}),
]

REFUSED: list[tuple[str, dict[str, Any]]] = [
    # JSON has no infinity: that case is the validator's alone
    *((provider, config) for _, provider, config, _ in TRANSLATIONS if "Infinity" not in json.dumps(config)),
    ("builtin", {"model": "echo", "rate_limit": {"requests_per_minute": 0}}),
    ("builtin", {"model": 5}),
    ("builtin", {"model": "summarize", "sentences": 0}),
    ("builtin", {"model": "fail", "message": None}),
    ("builtin", {"model": "flaky", "failures": -1}),
    ("openai", {**OPENAI, "temperature": None}),
    ("openai", {**OPENAI, "api_key_secret_arn": ""}),
    ("openai", {**OPENAI, "api-key": "sk"}),
    ("bedrock", {"model_id": "m", "inference": {"topP": -0.1}}),
    ("sagemaker", {"endpoint_name": "e", "request_template": 5}),
    ("sagemaker", {"endpoint_name": "e", "request_template": ["{{prompt"]}),
    ("lambda", {"function_name": "f", "qualifier": ""}),
    ("lambda", {"function_name": "\t"}),
]


@pytest.fixture(scope="module")
def published() -> dict[str, jsonschema.protocols.Validator]:
    schemas = openapi_document()["components"]["schemas"]
    return {
        provider: jsonschema.Draft202012Validator(
            {"components": {"schemas": schemas}, "$ref": f"#/components/schemas/{title}ModelConfig"}
        )
        for provider, title in PROVIDER_NAMES.items()
    }


@pytest.mark.parametrize(("provider", "config"), ACCEPTED)
def test_what_validate_accepts_the_document_accepts(published: dict[str, Any], provider: str, config: dict):
    # Given a config the API accepts
    # Then the published schema of its provider's config accepts it too
    assert validate_model_config(provider, config) == []
    assert published[provider].is_valid(config)


@pytest.mark.parametrize(("provider", "config"), REFUSED)
def test_what_validate_refuses_the_document_refuses(published: dict[str, Any], provider: str, config: dict):
    # Given a config the API refuses
    # Then the published schema of its provider's config refuses it too
    assert validate_model_config(provider, config) != []
    assert not published[provider].is_valid(config)


def test_the_document_shows_each_provider_config_from_its_model():
    # Given the OpenAPI document and the providers' models
    schemas = openapi_document()["components"]["schemas"]
    # Then each provider's config component is its model's schema: the models it refers to written
    # inline (generated clients keep the class names they always had), a recursive one a component
    for provider, schema in config_schemas().items():
        definitions = schema.pop("$defs", {})
        recursive = {
            name
            for name, definition in definitions.items()
            if f'"{COMPONENTS}{name}"' in json.dumps(definition)
        }
        published = schemas[f"{PROVIDER_NAMES[provider]}ModelConfig"]
        inlined = inline_refs(schema, {k: v for k, v in definitions.items() if k not in recursive})
        assert published["properties"] == inlined["properties"]
        assert published.get("allOf") == inlined.get("allOf")
        for name in definitions:
            assert (schemas.get(name) == definitions[name]) if name in recursive else name not in schemas
