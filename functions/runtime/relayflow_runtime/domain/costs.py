"""Estimated cost of model calls, from the optional ``price`` of a model's config.

``price``: ``{"input_per_1k": dollars, "output_per_1k": dollars}`` per 1,000 tokens (a missing rate
is 0). Costs are kept in **nano-dollars** (billionths of a US dollar) as integers: each node's cost
is computed with exact decimal arithmetic and summed as integers (:func:`sum_usage`: a single run's
node records, a batch item's nodes; batch counters with DynamoDB ``ADD``), so the sum of any
number of calls is exact (no float drift), and even $0.00015 per 1k tokens costs a whole 150
nano-dollars per token. The API shows dollars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

NANOS_PER_DOLLAR = 1_000_000_000
_NANOS_PER_TOKEN_AT_ONE_DOLLAR_PER_1K = NANOS_PER_DOLLAR // 1000


def estimate_cost_nanos(input_tokens: int, output_tokens: int, price: Mapping[str, Any] | None) -> int | None:
    """Cost of one call in nano-dollars, rounded half-even to a whole one; None without a price."""
    if not price:
        return None
    total = Decimal(0)
    for tokens, key in ((input_tokens, "input_per_1k"), (output_tokens, "output_per_1k")):
        rate = Decimal(str(price.get(key) or 0))  # str(): the decimal the user wrote, not its binary float
        total += rate * int(tokens) * _NANOS_PER_TOKEN_AT_ONE_DOLLAR_PER_1K
    return int(total.to_integral_value(rounding=ROUND_HALF_EVEN))


def nanos_to_dollars(nanos: Any) -> float | None:
    """Dollars from stored nano-dollars (None stays None)."""
    return None if nanos is None else int(nanos) / NANOS_PER_DOLLAR


def sum_usage(usages: Iterable[Mapping[str, Any] | None]) -> dict[str, int]:
    """Usage counters (``input_tokens``, ``output_tokens``, ``estimated_cost_nanos``) added up; a
    counter none of them has stays absent (an unpriced run has no cost, not a cost of 0)."""
    total: dict[str, int] = {}
    for usage in usages:
        for name, amount in (usage or {}).items():
            total[name] = total.get(name, 0) + int(amount)
    return total
