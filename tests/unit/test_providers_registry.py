"""The provider entry points: dispatch, config validation for every provider, the typed config each
adapter is handed (parsed once), cost estimates."""

from __future__ import annotations

import typing

import pytest

from relayflow_runtime.providers import (
    _ADAPTERS,
    PROVIDERS,
    InvocationContext,
    bedrock,
    builtin,
    configured_model,
    estimate_cost,
    parsed_config,
    validate_model_config,
)
from relayflow_runtime.providers.base import Adapter, Configured, PermanentModelError, Usage
from relayflow_runtime.providers.config import ModelPrice


def test_providers_are_the_five_documented_names():
    # Given the registry
    # When its names are read
    # Then they are exactly the documented providers
    assert PROVIDERS == ("builtin", "bedrock", "openai", "sagemaker", "lambda")


def test_unknown_provider_is_refused_and_fails_permanently():
    # Given a provider nobody implemented
    # When it is validated and invoked
    # Then validation names the valid providers and invocation fails permanently
    assert validate_model_config("gemini", {}) == [
        "unknown provider 'gemini'; expected one of: builtin, bedrock, openai, sagemaker, lambda"
    ]
    with pytest.raises(PermanentModelError, match="unknown provider 'gemini'"):
        configured_model("gemini", {}).invoke("x", InvocationContext())


@pytest.mark.parametrize(
    ("provider", "config"),
    [
        ("builtin", {"model": "echo"}),
        ("builtin", {"model": "summarize", "sentences": 3}),
        ("builtin", {"model": "flaky", "failures": 2, "permanent": False}),
        ("builtin", {"model": "sleep", "seconds": 0.5, "price": {"input_per_1k": 0, "output_per_1k": 0}}),
        ("bedrock", {"model_id": "amazon.nova-lite-v1:0", "inference": {"maxTokens": 100, "temperature": 0}}),
        ("openai", {"base_url": "http://127.0.0.1:8000/v1", "model": "llama3"}),
        (
            "openai",
            {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "api_key_parameter": "/k"},
        ),
        ("sagemaker", {"endpoint_name": "e", "request_template": {"text": "{{prompt}}"}}),
        (
            "lambda",
            {"function_name": "arn:aws:lambda:us-east-1:123456789012:function:m", "qualifier": "live"},
        ),
    ],
)
def test_valid_configs_have_no_problems(provider: str, config: dict):
    # Given a well-formed model definition
    # When it is validated
    # Then there is nothing to report
    assert validate_model_config(provider, config) == []


@pytest.mark.parametrize(
    ("provider", "config", "fragment"),
    [
        ("builtin", {}, "'model' is required"),
        ("builtin", {"model": "gpt-5"}, "unknown model 'gpt-5'"),
        ("builtin", {"model": "keywords", "top_k": 0}, "'top_k' must be a whole number from 1 to 1000"),
        ("builtin", {"model": "sleep", "seconds": "soon"}, "'seconds' must be a number from 0 to 840"),
        ("builtin", {"model": "flaky", "failures": -1}, "'failures' must be a whole number from 0 to 1000"),
        ("bedrock", {}, "'model_id' is required"),
        (
            "bedrock",
            {"model_id": "m", "inference": {"max_tokens": 5}},
            "unknown inference key 'max_tokens'",
        ),
        ("bedrock", {"model_id": "m", "inference": {"stopSequences": "END"}}, "list of strings"),
        ("openai", {"model": "m"}, "'base_url' is required"),
        ("openai", {"base_url": "ftp://x", "model": "m"}, "must start with http:// or https://"),
        ("openai", {"base_url": "http://x/v1"}, "'model' is required"),
        ("openai", {"base_url": "http://x/v1", "model": "m", "timeout": 0}, "'timeout' must be"),
        (
            "openai",
            {"base_url": "http://x/v1", "model": "m", "api_key_secret_arn": "a", "api_key_parameter": "b"},
            "not both",
        ),
        ("openai", {"base_url": "http://x/v1", "model": "m", "api_key": "sk"}, "must not be given inline"),
        ("bedrock", {"model_id": "m", "api_key": "sk"}, "must not be given inline"),
        ("sagemaker", {}, "'endpoint_name' is required"),
        ("sagemaker", {"endpoint_name": "e", "request_template": "{}"}, "must contain {{prompt}}"),
        ("lambda", {}, "'function_name' is required"),
        (
            "builtin",
            {"model": "echo", "price": {"input_per_1k": -1}},
            "'price.input_per_1k' must be a number",
        ),
        ("builtin", {"model": "echo", "price": {"per_token": 1}}, "unknown price key 'per_token'"),
        ("builtin", {"model": "echo", "price": 3}, "'price' must be an object"),
    ],
)
def test_invalid_configs_are_explained(provider: str, config: dict, fragment: str):
    # Given a malformed model definition
    # When it is validated
    problems = validate_model_config(provider, config)
    # Then one of the problems says what to fix
    assert any(fragment in problem for problem in problems), problems


def test_invalid_config_fails_invocation_permanently():
    # Given a model whose config no longer validates
    # When it is invoked
    # Then the call fails permanently with the validation problems
    with pytest.raises(
        PermanentModelError, match="invalid bedrock model config: bedrock: 'model_id' is required"
    ):
        configured_model("bedrock", {"inference": {}}).invoke("x", InvocationContext())


def test_estimate_cost_arithmetic():
    # Given 1,500 input and 500 output tokens
    usage = Usage(input_tokens=1500, output_tokens=500)
    # When priced at $0.003 / $0.015 per 1k tokens, input only, or not at all
    full = estimate_cost(usage, ModelPrice(input_per_1k=0.003, output_per_1k=0.015))
    input_only = estimate_cost(usage, ModelPrice(input_per_1k=0.002))
    # Then the cost is the per-1k rates times tokens / 1000, and None when the model has no price
    assert full == pytest.approx(0.0045 + 0.0075)
    assert input_only == pytest.approx(0.003)
    assert estimate_cost(usage, None) is None
    assert estimate_cost(Usage(), ModelPrice(input_per_1k=1, output_per_1k=1)) == 0.0


def test_invoke_model_dispatches_to_the_adapter():
    # Given a builtin model
    # When invoked through the entry point
    result = configured_model("builtin", {"model": "uppercase"}).invoke("relay", InvocationContext())
    # Then the adapter's result comes back
    assert result.output == "RELAY"


def test_a_stored_config_is_parsed_once_and_handed_typed_to_its_adapter(monkeypatch: pytest.MonkeyPatch):
    # Given a builtin model whose call notes the config it is handed
    seen: list[object] = []

    def summarize(config: builtin.BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
        seen.append(config)
        return prompt

    monkeypatch.setitem(builtin.MODELS, "summarize", summarize)
    stored = {"model": "summarize", "sentences": 3}
    # When the same stored config (a plan's, kept for the run) is invoked twice, and an equal copy once
    configured_model("builtin", stored).invoke("a", InvocationContext())
    configured_model("builtin", stored).invoke("b", InvocationContext())
    configured_model("builtin", dict(stored)).invoke("c", InvocationContext())
    # Then the adapter gets the typed config, the very same object for the same mapping
    assert all(isinstance(config, builtin.BuiltinModelConfig) for config in seen)
    assert seen[0] is seen[1] is parsed_config("builtin", stored)
    assert seen[2] is not seen[0] and seen[2] == seen[0]
    assert seen[0].sentences == 3


def test_every_adapter_takes_the_config_type_it_is_registered_with():
    # Given the registry (mypy checks each Adapter(config_type, invoke) statically; this is its twin)
    for name in PROVIDERS:
        adapter = _ADAPTERS[name]
        # Then each one's invoke is annotated with its own config type
        assert isinstance(adapter, Adapter)
        assert typing.get_type_hints(adapter.call)["config"] is adapter.config_type, name


def test_a_configured_model_is_its_typed_config_bound_to_its_providers_call():
    # Given a stored Bedrock config (as a plan snapshot holds it)
    stored = {"model_id": "amazon.nova-lite-v1:0", "inference": {"maxTokens": 100}}
    # When it is configured for calling
    model = configured_model("bedrock", stored)
    # Then it holds the provider's typed config, parsed once, and calls the provider's invoke with it
    assert isinstance(model.config, bedrock.BedrockModelConfig)
    assert model.config.output_cap == 100
    assert configured_model("bedrock", stored) is model
    assert model.config is parsed_config("bedrock", stored)
    assert isinstance(model, Configured) and model.call is bedrock.invoke
