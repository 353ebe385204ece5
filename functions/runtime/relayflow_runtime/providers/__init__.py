"""Model provider adapters: one entry point for the node runner, one validator for the API.

Every adapter module declares its config as a pydantic model over ``config.ModelConfig`` and binds
it to its ``invoke(config, prompt, ctx) -> ModelResult`` as ``PROVIDER`` (a ``base.Adapter``, which
is a ``base.ModelProvider``: mypy checks that ``invoke`` takes that config type). A model's stored
config (the plan snapshot's JSON) is parsed into it once (``configured_model``: at the first call of
each plan's model, then cached) and bound to the adapter's call as a ``base.ConfiguredModel``, which
the node runner invokes with the prompt alone. The adapter raises only ``TransientModelError``
(retried by the version's policy) or ``PermanentModelError`` (not retried) for failures of the
model call, and answers a ``ModelResult`` (text and ``Usage``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from relayflow_runtime.domain.costs import estimate_cost_nanos, nanos_to_dollars
from relayflow_runtime.providers import bedrock, builtin, lambda_, openai, sagemaker
from relayflow_runtime.providers.base import (
    ConfiguredModel,
    InvocationContext,
    ModelError,
    ModelProvider,
    ModelResult,
    PermanentModelError,
    TransientModelError,
    Usage,
)
from relayflow_runtime.providers.builtin import extract_text
from relayflow_runtime.providers.config import ModelConfig, ModelPrice, json_schema, problems

__all__ = [
    "PROVIDERS",
    "ConfiguredModel",
    "InvocationContext",
    "ModelError",
    "ModelResult",
    "PermanentModelError",
    "TransientModelError",
    "Usage",
    "configured_model",
    "dry_run_model",
    "estimate_cost",
    "extract_text",
    "parsed_config",
    "validate_model_config",
]

_ADAPTERS: dict[str, ModelProvider] = {
    "builtin": builtin.PROVIDER,
    "bedrock": bedrock.PROVIDER,
    "openai": openai.PROVIDER,
    "sagemaker": sagemaker.PROVIDER,
    "lambda": lambda_.PROVIDER,
}
PROVIDERS: tuple[str, ...] = tuple(_ADAPTERS)


def config_schemas(ref_template: str = "#/components/schemas/{model}") -> dict[str, dict[str, Any]]:
    """Each provider's model config as JSON Schema, from the models validate_model_config validates
    with (the OpenAPI document gives them to CreateModel and moves each ``$defs`` into its
    components; the API's fuzz tests hold the two to each other)."""
    return {name: json_schema(adapter.config_type, ref_template) for name, adapter in _ADAPTERS.items()}


def _unknown(provider: str) -> str:
    return f"unknown provider {provider!r}; expected one of: {', '.join(PROVIDERS)}"


def validate_model_config(provider: str, config: Mapping[str, object] | None) -> list[str]:
    """Human-readable problems with a model definition; an empty list means it is usable."""
    if provider not in _ADAPTERS:
        return [_unknown(provider)]
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        return ["'config' must be an object"]
    return problems(provider, _ADAPTERS[provider].config_type, config)


#: Models configured so far, by the identity of the stored mapping (a plan's model config, kept
#: with the plan for the warm container's life of the run, services/run_records.py). An entry holds
#: the mapping itself, so its id cannot be another's while it is cached.
_configured: dict[tuple[str, int], tuple[Mapping[str, object], ConfiguredModel]] = {}
_configured_lock = threading.Lock()
MAX_PARSED_CONFIGS = 4096


def configured_model(provider: str, config: Mapping[str, object]) -> ConfiguredModel:
    """The model's stored config parsed into its provider's typed config, bound to the provider's
    call; parsed once per mapping. A config that no longer validates (or an unknown provider) is a
    ``PermanentModelError`` naming why."""
    with _configured_lock:
        cached = _configured.get((provider, id(config)))
    if cached is not None and cached[0] is config:
        return cached[1]
    adapter = _ADAPTERS.get(provider)
    if adapter is None:
        raise PermanentModelError(_unknown(provider))
    try:
        model = adapter.configure(config)
    except ValidationError:
        found = "; ".join(problems(provider, adapter.config_type, config))
        raise PermanentModelError(f"invalid {provider} model config: {found}") from None
    with _configured_lock:
        if len(_configured) >= MAX_PARSED_CONFIGS:
            _configured.clear()
        _configured[provider, id(config)] = (config, model)
    return model


def parsed_config(provider: str, config: Mapping[str, object]) -> ModelConfig:
    """The model's stored config as its provider's typed config (``configured_model``'s, parsed
    once per mapping); raises as it does."""
    return configured_model(provider, config).config


def dry_run_model(config: ModelConfig, prompt: str) -> ModelResult | None:
    """What a model would answer without calling it, where that is known (the builtin models,
    which compute their answer here); None for a provider whose answer needs the call. ``config``:
    the model's parsed config (``parsed_config``). Raises ``PermanentModelError`` for a call that
    would fail."""
    if not isinstance(config, builtin.BuiltinModelConfig):
        return None
    return builtin.dry_run(config, prompt)


def estimate_cost(usage: Usage, price: ModelPrice | None) -> float | None:
    """Cost of one call in dollars from the model's parsed ``price`` (``ModelConfig.declared_price``);
    None if unpriced. See :mod:`relayflow_runtime.domain.costs` (runs add up exact nano-dollars)."""
    return nanos_to_dollars(estimate_cost_nanos(usage.input_tokens, usage.output_tokens, price))
