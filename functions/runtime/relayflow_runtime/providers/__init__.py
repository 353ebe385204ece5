"""Model provider adapters: one entry point for the node runner, one validator for the API.

Every adapter module exposes ``CONFIG`` (the pydantic type of its config, over
``config.ModelConfig``) and ``invoke(config, prompt, ctx) -> ModelResult``, and raises only
``TransientModelError`` (retried by the state machine) or ``PermanentModelError`` (not retried) for
failures of the model call.
"""

from __future__ import annotations

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
from relayflow_runtime.providers.config import json_schema, problems

__all__ = [
    "PROVIDERS",
    "InvocationContext",
    "ModelError",
    "ModelResult",
    "PermanentModelError",
    "TransientModelError",
    "Usage",
    "dry_run_model",
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


def config_schemas(ref_template: str = "#/components/schemas/{model}") -> dict[str, dict[str, Any]]:
    """Each provider's model config as JSON Schema, from the models validate_model_config validates
    with (the OpenAPI document gives them to CreateModel and moves each ``$defs`` into its
    components; the API's fuzz tests hold the two to each other)."""
    return {name: json_schema(adapter.CONFIG, ref_template) for name, adapter in _ADAPTERS.items()}


def validate_model_config(provider: str, config: Mapping[str, Any] | None) -> list[str]:
    """Human-readable problems with a model definition; an empty list means it is usable."""
    if provider not in _ADAPTERS:
        return [f"unknown provider {provider!r}; expected one of: {', '.join(PROVIDERS)}"]
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        return ["'config' must be an object"]
    return problems(provider, _ADAPTERS[provider].CONFIG, config)


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


def dry_run_model(provider: str, config: Mapping[str, Any], prompt: str) -> ModelResult | None:
    """What a model would answer without calling it, where that is known (the builtin models,
    which compute their answer here); None for a provider whose answer needs the call. Raises
    ``PermanentModelError`` for a call that would fail."""
    if provider != "builtin":
        return None
    return builtin.dry_run(config, prompt)


def estimate_cost(usage: Usage, price: Mapping[str, Any] | None) -> float | None:
    """Cost of one call in dollars from the model's ``price`` ({"input_per_1k", "output_per_1k"});
    None if unpriced. See :mod:`relayflow_runtime.domain.costs` (runs add up exact nano-dollars)."""
    return nanos_to_dollars(estimate_cost_nanos(usage.input_tokens, usage.output_tokens, price))
