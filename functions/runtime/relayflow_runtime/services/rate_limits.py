"""Per-model rate limits, enforced across every concurrent run and Lambda instance.

A model's config may carry ``"rate_limit": {"requests_per_minute": 60, "tokens_per_minute": 40000}``
(either or both; validated with the rest of the config in ``providers.validate_model_config``, and
read here as the parsed config's ``ModelRateLimit``, never from the stored mapping).
Before each model call the node runner asks for a slot::

    config = providers.parsed_config(provider, stored_config)   # parsed once per plan's model
    permit = rate_limits.acquire(tenant, model_id, config.declared_rate_limit,
                                 estimate_tokens(prompt, config),
                                 max_wait_seconds=<what the node's time budget can spare>)
    result = providers.configured_model(provider, stored_config).invoke(prompt, ctx)
    permit.settle(result.usage.input_tokens + result.usage.output_tokens)

* **Windows**: fixed windows of ``window_seconds`` (60), one DynamoDB counter item per model and
  window (adapters/rate_windows.py). A slot is taken by one conditional ``ADD`` that succeeds only
  while the window's requests stay below ``requests_per_minute`` and its tokens within
  ``tokens_per_minute``; the limits hold however many runs call the model at once.
* **Tokens** are counted up front from an estimate (prompt characters / 4, plus the configured
  output cap), then corrected by :meth:`Permit.settle` with what the call reported.
* **Throttled**: a call that finds the window full waits for the next window (plus a little jitter
  so the waiters do not all retry at the same instant), as long as ``max_wait_seconds`` allows; past
  that it raises ``TransientModelError`` — the state machine retries it with the version's policy,
  like any transient model error. So a limited model slows its runs down; it never fails an item
  at the first full window. Each wait is counted (metric ``ModelCallsThrottled``).
* Fixed windows let up to twice the limit through around a window's edge (the end of one, the
  start of the next); a provider that measures a sliding minute may still throttle now and then,
  which the adapters report as transient errors.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from relayflow_runtime.providers.base import TransientModelError
from relayflow_runtime.providers.config import ModelConfig, ModelRateLimit
from relayflow_runtime.services import deps, metrics

logger = Logger(child=True)

WINDOW_SECONDS = 60
DEFAULT_MAX_WAIT_SECONDS = 120.0
#: A window's counter item lives this long after the window ends (DynamoDB TTL deletes it later).
WINDOW_TTL_SECONDS = 3600
CHARS_PER_TOKEN = 4


def per_window(limit: ModelRateLimit, window_seconds: int) -> tuple[int | None, int | None]:
    """The limits (requests, tokens) scaled to a window of ``window_seconds`` (at least 1 each)."""

    def scale(per_minute: int | None) -> int | None:
        return None if per_minute is None else max(1, per_minute * window_seconds // 60)

    return scale(limit.requests), scale(limit.tokens)


@dataclass
class Permit:
    """A slot taken in one window; :meth:`settle` corrects its token count after the call."""

    tenant: str
    model_id: str
    window_start: int
    estimated_tokens: int
    waited_seconds: float
    limited: bool

    def settle(self, used_tokens: int) -> None:
        if not self.limited:
            return
        try:
            correction = used_tokens - self.estimated_tokens
            deps.stores().rate_windows.add_tokens(self.tenant, self.model_id, self.window_start, correction)
        except Exception:  # the call is done; a correction that fails only skews one window
            logger.exception("could not correct a rate-limit window", extra={"model_id": self.model_id})


def text_tokens(text: str) -> int:
    """Tokens of a text before a model counts them: its characters / 4."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_tokens(prompt: str, config: ModelConfig) -> int:
    """A call's tokens before it is made: the prompt's, plus the output cap the model's parsed
    config sets (``ModelConfig.output_cap``), if any."""
    return text_tokens(prompt) + (config.output_cap or 0)


def acquire(
    tenant: str,
    model_id: str,
    limit: ModelRateLimit | None,
    estimated_tokens: int = 0,
    *,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    window_seconds: int = WINDOW_SECONDS,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Permit:
    """Take a slot for one call of the model, waiting for a later window while this one is full.

    ``limit``: the model's parsed ``rate_limit`` (``ModelConfig.declared_rate_limit``). Returns at
    once (nothing stored) when the model has none. Raises ``TransientModelError`` when no slot
    frees up within ``max_wait_seconds``.
    """
    if limit is None:
        return Permit(tenant, model_id, 0, estimated_tokens, 0.0, limited=False)
    max_requests, max_tokens = per_window(limit, window_seconds)
    waited = 0.0
    while True:
        now = clock()
        window_start = int(now // window_seconds) * window_seconds
        taken = deps.stores().rate_windows.try_take(
            tenant,
            model_id,
            window_start,
            max_requests=max_requests,
            max_tokens=max_tokens,
            tokens=estimated_tokens,
            expires_at=window_start + window_seconds + WINDOW_TTL_SECONDS,
        )
        if taken:
            return Permit(tenant, model_id, window_start, estimated_tokens, waited, limited=True)
        metrics.count(metrics.MODEL_CALLS_THROTTLED)
        jitter = random.uniform(0, min(1.0, window_seconds / 10))
        pause = window_start + window_seconds - now + jitter
        if waited + pause > max_wait_seconds:
            raise TransientModelError(
                f"model {model_id} is at its rate limit ({_describe(limit)}) and no slot freed up within "
                f"{max_wait_seconds:g} s; the call will be retried"
            )
        logger.debug("model at its rate limit: waiting", extra={"model_id": model_id, "seconds": pause})
        sleep(pause)
        waited += pause


def _describe(limit: ModelRateLimit) -> str:
    parts = []
    if limit.requests:
        parts.append(f"{limit.requests} requests/min")
    if limit.tokens:
        parts.append(f"{limit.tokens} tokens/min")
    return ", ".join(parts)
