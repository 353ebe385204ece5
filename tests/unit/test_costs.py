"""Estimated cost: exact nano-dollar integers per call, dollars in the API."""

from __future__ import annotations

import pytest

from relayflow_runtime.domain.costs import NANOS_PER_DOLLAR, estimate_cost_nanos, nanos_to_dollars
from relayflow_runtime.providers.config import ModelConfig, ModelPrice


def price(**rates: float) -> ModelPrice:
    return ModelPrice.model_validate(rates)


def test_cost_is_tokens_times_the_per_1k_rates_in_nano_dollars() -> None:
    # Given 1,500 input and 500 output tokens at $0.003 / $0.015 per 1k tokens
    # When priced
    nanos = estimate_cost_nanos(1500, 500, price(input_per_1k=0.003, output_per_1k=0.015))
    # Then the cost is exact: $0.0045 + $0.0075
    assert nanos == 12_000_000
    assert nanos_to_dollars(nanos) == 0.012


def test_a_missing_rate_is_zero_and_no_price_is_no_cost() -> None:
    assert estimate_cost_nanos(1000, 1000, price(input_per_1k=0.002)) == 2_000_000
    assert estimate_cost_nanos(1000, 1000, None) is None
    assert estimate_cost_nanos(1000, 1000, price(output_per_1k=None)) == 0  # null: a rate of 0
    # And a model config whose price names no rate has no price, as one without a price
    assert ModelConfig.model_validate({"price": {}}).declared_price is None
    assert ModelConfig.model_validate({}).declared_price is None
    assert nanos_to_dollars(None) is None


def test_cheap_models_still_cost_whole_nano_dollars() -> None:
    # Given $0.00015 per 1k input tokens (a small hosted model) and one token
    # Then the call costs 150 nano-dollars, not a rounded-away fraction of a micro-dollar
    assert estimate_cost_nanos(1, 0, price(input_per_1k=0.00015)) == 150


def test_sums_of_many_calls_are_exact() -> None:
    # Given ten calls of $0.1 each (a float sum drifts: 0.1 * 10 summed is 0.9999999999999999)
    each = estimate_cost_nanos(100, 0, price(input_per_1k=1))
    assert each == NANOS_PER_DOLLAR // 10
    assert sum([0.1] * 10) != 1.0
    # When the integers are added (as DynamoDB ADD does)
    # Then the total is exactly one dollar
    assert nanos_to_dollars(sum([each] * 10)) == 1.0


def test_sub_nano_amounts_round_half_to_even() -> None:
    # $0.0000005 per 1k tokens = 0.5 nano-dollar per token
    assert estimate_cost_nanos(1, 0, price(input_per_1k=0.0000005)) == 0
    assert estimate_cost_nanos(3, 0, price(input_per_1k=0.0000005)) == 2  # 1.5 -> 2


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 1e-6, 2.5, 15])
def test_the_rate_is_read_as_the_decimal_written(rate: float) -> None:
    # 1,000 tokens at a rate cost exactly that rate (no binary float residue)
    assert estimate_cost_nanos(1000, 0, price(input_per_1k=rate)) == round(rate * NANOS_PER_DOLLAR)
