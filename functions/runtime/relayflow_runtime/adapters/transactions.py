"""DynamoDB writes read as AWS answers them: a cancelled transaction's reasons item by item, and
the contention DynamoDB reports but the SDK does not retry, retried here with full jitter.

``transact_write(items)`` runs a ``TransactWriteItems`` call. DynamoDB cancels a transaction with
one ``CancellationReasons`` entry per item, in the order of ``items`` (``None`` / ``"None"`` for an
item that was fine):

* ``TransactionConflict`` (another request changed one of the items at the same moment; botocore
  does not retry it), ``ThrottlingError`` and ``ProvisionedThroughputExceeded``: nothing was
  written; the call is repeated after a random wait (full jitter, capped doubling), at most
  ``attempts`` times and for at most ``max_seconds``, then :class:`StoreContended` (transient: a
  caller may retry later, it is never "a condition failed");
* anything else (``ConditionalCheckFailed`` on some item, ``ValidationError``, ...):
  :class:`TransactionCancelled`, whose ``reasons`` say which item failed how
  (``failed_condition(i)``).

``retry_contention(call)`` does the same for a single-item write (``PutItem``, ``UpdateItem``...):
DynamoDB refuses it with ``TransactionConflictException`` while a transaction holds the item, and
botocore does not retry that either. Its ``ConditionalCheckFailedException`` is left to the caller.

Only contention is retried: a retried call has not been applied (DynamoDB cancels the whole
transaction), so repeating it cannot count anything twice.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from relayflow_runtime.adapters import aws

T = TypeVar("T")

#: Cancellation reasons that mean "try again": nothing was written and nothing was wrong.
CONTENTION_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
#: Error codes of a whole single-item call that mean the same (botocore retries the throttles itself
#: but gives up after its own attempts; the conflict it does not retry at all).
CONTENTION_ERRORS = frozenset(
    {
        "TransactionConflictException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)

#: The default bound: up to 8 calls within 5 s (waits drawn from 0..25 ms, 0..50 ms, ... capped at 1 s).
ATTEMPTS = 8
MAX_SECONDS = 5.0
_BASE_DELAY = 0.025
_MAX_DELAY = 1.0


class TransactionCancelled(Exception):
    """DynamoDB cancelled the transaction for a reason retrying does not cure.

    ``reasons`` has one entry per transaction item, in order: the reason's code
    (``"ConditionalCheckFailed"``, ``"ValidationError"``, ...) or ``None`` for an item that was fine.
    """

    def __init__(self, reasons: Sequence[str | None], messages: Sequence[str | None] = ()) -> None:
        self.reasons = list(reasons)
        self.messages = list(messages) or [None] * len(self.reasons)
        described = ", ".join(
            f"item {i}: {code}" + (f" ({self.messages[i]})" if self.messages[i] else "")
            for i, code in enumerate(self.reasons)
            if code
        )
        super().__init__(f"transaction cancelled: {described or 'no reason given'}")

    def failed_condition(self, index: int) -> bool:
        """Whether item ``index``'s condition (or ConditionCheck) failed."""
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"

    @property
    def only_conditions(self) -> bool:
        """Whether every reason is a failed condition (no validation or other error)."""
        codes = [code for code in self.reasons if code]
        return bool(codes) and all(code == "ConditionalCheckFailed" for code in codes)


class StoreContended(Exception):
    """DynamoDB kept refusing a write for contention (a transaction conflict or throttling) for
    longer than the bounded retries: nothing was written; the write may be tried again later."""


def _reasons(exc: ClientError) -> tuple[list[str | None], list[str | None]]:
    codes: list[str | None] = []
    messages: list[str | None] = []
    for reason in exc.response.get("CancellationReasons") or []:
        code = (reason or {}).get("Code")
        codes.append(None if code in (None, "", "None") else str(code))
        messages.append((reason or {}).get("Message"))
    return codes, messages


def _contended(exc: ClientError) -> bool:
    """Whether DynamoDB refused the call for contention only (nothing written, nothing wrong)."""
    code = exc.response.get("Error", {}).get("Code")
    if code == "TransactionCanceledException":
        reasons = {c for c in _reasons(exc)[0] if c}
        return bool(reasons) and reasons <= CONTENTION_REASONS
    return code in CONTENTION_ERRORS


def retry_contention(
    call: Callable[[], T],
    *,
    attempts: int = ATTEMPTS,
    max_seconds: float = MAX_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """``call()`` (one DynamoDB write), repeated while DynamoDB refuses it for contention (full
    jitter: a random wait up to a capped doubling delay); :class:`StoreContended` when that
    outlasts ``attempts`` calls or ``max_seconds``. Other errors leave as they are."""
    deadline = time.monotonic() + max_seconds
    attempt = 0
    while True:
        try:
            return call()
        except ClientError as exc:
            if not _contended(exc):
                raise
            attempt += 1
            delay = (rng or random).uniform(0, min(_MAX_DELAY, _BASE_DELAY * 2 ** (attempt - 1)))
            if attempt >= attempts or time.monotonic() + delay > deadline:
                raise StoreContended(f"the write met contention {attempt} times: {exc}") from exc
        sleep(delay)


def transact_write(
    items: list[dict[str, Any]],
    *,
    client: Any = None,
    attempts: int = ATTEMPTS,
    max_seconds: float = MAX_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> None:
    """``TransactWriteItems(TransactItems=items)``, contention retried as by
    :func:`retry_contention`. Raises :class:`TransactionCancelled` (which items failed how) or
    :class:`StoreContended`; any other error of the call leaves as botocore raised it."""
    ddb = client or aws.client("dynamodb")
    try:
        retry_contention(
            lambda: ddb.transact_write_items(TransactItems=items),
            attempts=attempts,
            max_seconds=max_seconds,
            sleep=sleep,
            rng=rng,
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            raise TransactionCancelled(*_reasons(exc)) from exc
        raise


def until_processed(
    call: Callable[[dict[str, Any]], dict[str, Any]],
    request: dict[str, Any],
    leftover: str,
    *,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> Iterator[dict[str, Any]]:
    """Each response of a batch call (``BatchGetItem``, ``BatchWriteItem``) on ``request``, asked
    again for what DynamoDB left unprocessed (its ``leftover`` field: ``UnprocessedKeys`` or
    ``UnprocessedItems``, throttled parts) after a full-jitter wait, ``attempts`` calls at most,
    then :class:`StoreContended`. A whole call refused for contention is retried as
    :func:`retry_contention` retries it."""
    attempt = 0
    while request:
        response = retry_contention(functools.partial(call, request))
        yield response
        request = response.get(leftover) or {}
        attempt += 1
        if request and attempt >= attempts:
            left = sum(len(v.get("Keys", v) if isinstance(v, dict) else v) for v in request.values())
            raise StoreContended(f"{left} requests stayed unprocessed (throttled) after {attempt} calls")
        if request:
            (sleep or time.sleep)((rng or random).uniform(0, min(_MAX_DELAY, _BASE_DELAY * 2**attempt)))
