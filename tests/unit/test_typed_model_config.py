"""Rate limits, token estimates and costs read a model's parsed config (providers/config.py), parsed
once per plan's model, never the stored mapping."""

from __future__ import annotations

from typing import Any

import pytest

from relayflow_runtime.domain.engine import ModelRef, NodeSpec
from relayflow_runtime.providers import builtin, parsed_config
from relayflow_runtime.providers.base import InvocationContext
from relayflow_runtime.services import node_execution, rate_limits


@pytest.mark.parametrize(
    ("provider", "config", "cap"),
    [
        ("openai", {"base_url": "https://x.example", "model": "m", "max_tokens": 50}, 50),
        ("bedrock", {"model_id": "anthropic.x", "inference": {"maxTokens": 40}}, 40),
        ("lambda", {"function_name": "mine", "max_tokens": 30}, 30),  # a setting Lambda does not know
        ("builtin", {"model": "echo"}, 0),
    ],
)
def test_a_calls_token_estimate_counts_the_output_cap_its_parsed_config_sets(
    provider: str, config: dict[str, Any], cap: int
) -> None:
    # 40 characters are 10 tokens, plus the most the call may answer
    assert rate_limits.estimate_tokens("x" * 40, parsed_config(provider, config)) == 10 + cap


def test_a_rate_limit_and_a_price_are_read_from_the_parsed_config() -> None:
    parsed = parsed_config(
        "builtin",
        {"model": "echo", "rate_limit": {"tokens_per_minute": 600}, "price": {"output_per_1k": 2}},
    )
    limit = parsed.declared_rate_limit
    assert limit is not None and (limit.requests, limit.tokens) == (None, 600)
    assert rate_limits.per_window(limit, 10) == (None, 100)
    price = parsed.declared_price
    assert price is not None and (price.input_rate, price.output_rate) == (0.0, 2.0)
    # And a config without them is neither limited nor priced
    plain = parsed_config("builtin", {"model": "echo", "rate_limit": None})
    assert (plain.declared_rate_limit, plain.declared_price) == (None, None)


def test_attempts_of_a_node_parse_its_model_config_once_and_cost_it_from_the_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a priced builtin model, and every validation of a builtin config counted
    parsed: list[object] = []
    validate = builtin.BuiltinModelConfig.model_validate

    def counted(data: Any, **kwargs: Any) -> Any:
        parsed.append(data)
        return validate(data, **kwargs)

    monkeypatch.setattr(builtin.BuiltinModelConfig, "model_validate", counted)
    node = NodeSpec(
        id="n",
        name="n",
        idx=0,
        template="{{input}}",
        node_timeout=30,
        model=ModelRef(id="m", provider="builtin", config={"model": "echo", "price": {"input_per_1k": 1}}),
    )

    # When three attempts run (as a node's retries, or a batch's items, would)
    outcomes = [
        node_execution.run_attempt(node, {"input": "x" * 400}, InvocationContext(attempt=n))
        for n in (1, 2, 3)
    ]

    # Then the config was parsed once, and each attempt is costed from its price: $1 per 1k input
    # tokens is a million nano-dollars a token
    assert len(parsed) == 1
    assert all(o.usage["estimated_cost_nanos"] == o.usage["input_tokens"] * 1_000_000 > 0 for o in outcomes)
