"""Model provider adapters: one entry point for the node runner, one validator for the API.

Every adapter module exposes ``validate(config) -> list[str]`` and
``invoke(config, prompt, ctx) -> ModelResult`` and raises only ``TransientModelError`` (retried by
the state machine) or ``PermanentModelError`` (not retried) for failures of the model call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from relayflow_runtime.domain.costs import estimate_cost_nanos, nanos_to_dollars
from relayflow_runtime.providers import bedrock, builtin, lambda_, openai, sagemaker
from relayflow_runtime.providers.base import (
    InvocationContext,
    ModelError,
    ModelResult,
    PermanentModelError,
    TransientModelError,
    Usage,
)
from relayflow_runtime.providers.builtin import extract_text

__all__ = [
    "PROVIDERS",
    "InvocationContext",
    "ModelError",
    "ModelResult",
    "PermanentModelError",
    "TransientModelError",
    "Usage",
    "estimate_cost",
    "extract_text",
    "invoke_model",
    "validate_model_config",
]

_ADAPTERS: dict[str, ModuleType] = {
    "builtin": builtin,
    "bedrock": bedrock,
    "openai": openai,
    "sagemaker": sagemaker,
    "lambda": lambda_,
}
PROVIDERS: tuple[str, ...] = tuple(_ADAPTERS)

# Keys that would put a secret into the model record (stored in DynamoDB, returned by the API).
_INLINE_SECRET_KEYS = ("api_key", "apiKey", "api-key")
PRICE_KEYS = ("input_per_1k", "output_per_1k")
# A model's own rate limit, enforced across concurrent runs (services: rate_limits.py).
RATE_LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute")


def _validate_price(price: Any) -> list[str]:
    if price is None:
        return []
    if not isinstance(price, dict):
        return ['\'price\' must be an object like {"input_per_1k": 0.003, "output_per_1k": 0.015}']
    problems = [
        f"unknown price key {key!r}; expected {', '.join(PRICE_KEYS)}"
        for key in price
        if key not in PRICE_KEYS
    ]
    for key in PRICE_KEYS:
        value = price.get(key)
        if value is not None and not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        ):
            problems.append(f"'price.{key}' must be a number >= 0 (price per 1,000 tokens)")
    return problems


def _validate_rate_limit(limit: Any) -> list[str]:
    if limit is None:
        return []
    example = '{"requests_per_minute": 60, "tokens_per_minute": 40000}'
    if not isinstance(limit, dict) or not limit:
        return [f"'rate_limit' must be an object like {example}"]
    problems = [
        f"unknown rate_limit key {key!r}; expected {', '.join(RATE_LIMIT_KEYS)}"
        for key in limit
        if key not in RATE_LIMIT_KEYS
    ]
    for key in RATE_LIMIT_KEYS:
        value = limit.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            problems.append(f"'rate_limit.{key}' must be a whole number >= 1")
    return problems


def config_schemas() -> dict[str, dict[str, Any]]:
    """Each provider's model config as JSON Schema: what validate_model_config accepts (the OpenAPI
    document gives it to CreateModel; the API's fuzz tests hold the two to each other)."""
    price = {"type": ["number", "null"], "minimum": 0}
    common: dict[str, Any] = {
        "properties": {
            "price": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {key: price for key in PRICE_KEYS},
                "description": "US dollars per 1,000 tokens, for estimated costs.",
            },
            "rate_limit": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "minProperties": 1,
                "properties": {key: {"type": ["integer", "null"], "minimum": 1} for key in RATE_LIMIT_KEYS},
                "description": "Most calls and tokens per minute, shared by every caller of this model.",
            },
        },
        "not": {
            "description": "secrets are never inline",
            "anyOf": [{"required": [key]} for key in _INLINE_SECRET_KEYS],
        },
    }
    return {name: {"allOf": [adapter.CONFIG_SCHEMA, common]} for name, adapter in _ADAPTERS.items()}


def validate_model_config(provider: str, config: Mapping[str, Any] | None) -> list[str]:
    """Human-readable problems with a model definition; an empty list means it is usable."""
    if provider not in _ADAPTERS:
        return [f"unknown provider {provider!r}; expected one of: {', '.join(PROVIDERS)}"]
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        return ["'config' must be an object"]
    problems: list[str] = []
    for key in _INLINE_SECRET_KEYS:
        if key in config:
            problems.append(
                f"'{key}' must not be given inline: store the key in Secrets Manager and set "
                "'api_key_secret_arn', or in SSM Parameter Store and set 'api_key_parameter'"
            )
    problems.extend(_ADAPTERS[provider].validate(config))
    problems.extend(_validate_price(config.get("price")))
    problems.extend(_validate_rate_limit(config.get("rate_limit")))
    return problems


def invoke_model(
    provider: str, config: Mapping[str, Any], prompt: str, ctx: InvocationContext
) -> ModelResult:
    """Run one prompt through the model; raises ``TransientModelError`` or ``PermanentModelError``."""
    adapter = _ADAPTERS.get(provider)
    if adapter is None:
        raise PermanentModelError(f"unknown provider {provider!r}; expected one of: {', '.join(PROVIDERS)}")
    problems = validate_model_config(provider, config)
    if problems:
        raise PermanentModelError(f"invalid {provider} model config: {'; '.join(problems)}")
    invoke: Callable[[Mapping[str, Any], str, InvocationContext], ModelResult] = adapter.invoke
    return invoke(config, prompt, ctx)


def estimate_cost(usage: Usage, price: Mapping[str, Any] | None) -> float | None:
    """Cost of one call in dollars from the model's ``price`` ({"input_per_1k", "output_per_1k"});
    None if unpriced. See :mod:`relayflow_runtime.domain.costs` (runs add up exact nano-dollars)."""
    return nanos_to_dollars(estimate_cost_nanos(usage.input_tokens, usage.output_tokens, price))
