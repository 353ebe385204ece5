"""Estimated cost of model calls, from the optional ``price`` of a model's config.

``price``: ``{"input_per_1k": dollars, "output_per_1k": dollars}`` per 1,000 tokens (a missing rate
is 0). Costs are kept in **nano-dollars** (billionths of a US dollar) as integers: each node's cost
is computed with exact decimal arithmetic and summed as integers (:func:`sum_usage`: a single run's
node records, a batch item's nodes; batch counters with DynamoDB ``ADD``), so the sum of any
number of calls is exact (no float drift), and even $0.00015 per 1k tokens costs a whole 150
nano-dollars per token. The API shows dollars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

NANOS_PER_DOLLAR = 1_000_000_000
_NANOS_PER_TOKEN_AT_ONE_DOLLAR_PER_1K = NANOS_PER_DOLLAR // 1000


class Price(Protocol):
    """A model's price, parsed (providers/config.py ``ModelPrice``): dollars per 1,000 tokens."""

    @property
    def input_rate(self) -> float: ...

    @property
    def output_rate(self) -> float: ...


def estimate_cost_nanos(input_tokens: int, output_tokens: int, price: Price | None) -> int | None:
    """Cost of one call in nano-dollars, rounded half-even to a whole one; None without a price."""
    if price is None:
        return None
    total = Decimal(0)
    for tokens, rate_per_1k in ((input_tokens, price.input_rate), (output_tokens, price.output_rate)):
        rate = Decimal(str(rate_per_1k))  # str(): the decimal the user wrote, not its binary float
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


# ---- what AWS charges a batch ------------------------------------------------------------------------
# us-east-1 on-demand list prices (USD): the one price table of the project. bench/calls.py reads
# it for its cost per million items; a batch's estimate (services/estimate.py) for its AWS cost.
LAMBDA_REQUEST = 0.20 / 1e6
LAMBDA_GB_SECOND = 0.0000133334  # arm64
LAMBDA_GB = 0.5  # the node runner's 512 MB
STANDARD_TRANSITION = 0.025 / 1000
EXPRESS_REQUEST = 1.00 / 1e6
EXPRESS_GB_SECOND = 0.00001667
EXPRESS_GB = 0.0625  # billed in 64 MB chunks; a child's payload is far below it
DYNAMODB_WRU = 0.625 / 1e6
DYNAMODB_RRU = 0.125 / 1e6
S3_PUT = 0.005 / 1000
S3_GET = 0.0004 / 1000
EVENTS = 1.00 / 1e6
SQS_REQUEST = 0.40 / 1e6
LOG_GB = 0.50  # CloudWatch Logs, per GB ingested
XRAY_TRACE = 5.00 / 1e6  # per trace recorded
HTTP_API_REQUEST = 1.00 / 1e6
DYNAMODB_GB_MONTH = 0.25
S3_GB_MONTH = 0.023

#: What one batch item costs beyond its children's time, as bench/calls.py counted it (docs/batch.md
#: has the arithmetic): its outcome with its node records in a transaction (~1 KB: 2 write units)
#: and its share of the child's counter ADD; every result read once, and the children's status reads.
ITEM_WRITE_UNITS = 2.2
ITEM_READ_UNITS = 0.6
#: State transitions of a Standard child (its run_items task and the states around it).
STANDARD_CHILD_TRANSITIONS = 4


def batch_aws_cost(items: int, *, items_per_child: int, express: bool, item_seconds: float) -> float:
    """What AWS charges for a batch of ``items`` (dollars, list prices): one child execution and
    one node-runner invocation per ``items_per_child`` items, each lasting one item's time (a
    child runs its items at once: its models and relayflow's own work); DynamoDB per item as
    bench/calls.py counted it. The models themselves are not included."""
    children = math.ceil(items / max(1, items_per_child))
    child_seconds = math.ceil(item_seconds * 10) / 10  # billed per 100 ms
    if express:
        machine = children * (EXPRESS_REQUEST + child_seconds * EXPRESS_GB * EXPRESS_GB_SECOND)
    else:
        machine = children * STANDARD_CHILD_TRANSITIONS * STANDARD_TRANSITION
    lam = children * (LAMBDA_REQUEST + item_seconds * LAMBDA_GB * LAMBDA_GB_SECOND)
    dynamodb = items * (ITEM_WRITE_UNITS * DYNAMODB_WRU + ITEM_READ_UNITS * DYNAMODB_RRU)
    return machine + lam + dynamodb
