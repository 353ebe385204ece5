"""How AWS hands events to the stack's functions, done locally: asynchronous invocation (retries, then
the function's on-failure destination), SQS event sources, EventBridge rules whose targets are queues
of the template, and schedules. Used by :class:`relayflow.local.stack.LocalStack`.

* **Asynchronous invocation** (S3 notifications, EventBridge rules, schedules): the function is
  tried ``1 + EventInvokeConfig.MaximumRetryAttempts`` times (Lambda's default: 3); when every
  attempt raised, Lambda's invocation record (``requestContext.condition`` "RetriesExhausted", the
  event as ``requestPayload``, the error as ``responsePayload``) goes to the ``OnFailure``
  destination queue, or the event itself to the function's ``DeadLetterQueue``. Lambda waits a
  minute, then two, between attempts; locally ``retry_delay`` (0.1 s).
* **SQS event sources** (``Type: SQS`` events): a thread per source long-polls its queue and invokes
  the function synchronously with a batch of up to ``BatchSize`` records, as Lambda's poller does;
  the messages of a successful batch are deleted, except those named in ``batchItemFailures``
  (``ReportBatchItemFailures``); a failed message is visible again after ``visibility_after_failure``
  (0.5 s instead of the queue's VisibilityTimeout, to keep tests short), and moto's redrive policy
  moves it to the dead-letter queue after ``maxReceiveCount`` receives.
* **Rules** (``AWS::Events::Rule`` resources) are created in moto with their SQS targets; moto
  matches events and puts them on the queues.
* **Schedules** (``Type: Schedule`` events): ``LocalStack.run_schedule`` fires one, as EventBridge
  would (an asynchronous invocation with a scheduled-event payload); they tick by themselves at
  their ``rate(...)`` only with ``LocalStack(run_schedules=True)`` (``relayflow serve``), so tests
  decide when a sweep happens.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("relayflow.local")

#: Lambda retries a failed asynchronous invocation twice unless EventInvokeConfig says otherwise.
DEFAULT_ASYNC_RETRIES = 2


@dataclass
class AsyncInvokeConfig:
    """A function's EventInvokeConfig (and DeadLetterQueue), resolved."""

    maximum_retry_attempts: int = DEFAULT_ASYNC_RETRIES
    on_failure: str | None = None  # an SQS queue ARN
    dead_letter_queue: str | None = None  # an SQS queue ARN

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> AsyncInvokeConfig:
        config = properties.get("EventInvokeConfig") or {}
        destination = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}) or {}
        dead_letters = properties.get("DeadLetterQueue") or {}
        on_failure = destination.get("Destination")
        if on_failure is not None and str(destination.get("Type", "SQS")).upper() != "SQS":
            log.warning("on-failure destinations of type %s are not run locally", destination.get("Type"))
            on_failure = None
        return cls(
            maximum_retry_attempts=int(config.get("MaximumRetryAttempts", DEFAULT_ASYNC_RETRIES)),
            on_failure=str(on_failure) if on_failure else None,
            dead_letter_queue=str(dead_letters["TargetArn"])
            if str(dead_letters.get("Type", "")).upper() == "SQS" and dead_letters.get("TargetArn")
            else None,
        )


@dataclass
class QueueSource:
    """A function's SQS event: its queue and batching."""

    function_id: str
    queue_arn: str
    batch_size: int = 10
    report_failures: bool = False


@dataclass
class FailedInvocation:
    function_id: str
    event: Any
    error_type: str
    error_message: str
    attempts: int
    sent_to: str | None = None


def queue_url(sqs: Any, queue_arn: str) -> str:
    url: str = sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[-1])["QueueUrl"]
    return url


def destination_record(function_arn: str, event: Any, error: BaseException, attempts: int) -> dict[str, Any]:
    """What Lambda sends to an on-failure destination of an asynchronous invocation."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"{function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "stackTrace": traceback.format_tb(error.__traceback__),
        },
    }


def scheduled_event(rule_arn: str, region: str, account: str) -> dict[str, Any]:
    """The payload EventBridge sends a function on a schedule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class AsyncInvoker:
    """Lambda's asynchronous invocation for the stack's functions."""

    def __init__(
        self,
        invoke: Callable[[str, Any], Any],
        function_arn: Callable[[str], str],
        sqs: Callable[[], Any],
        retry_delay: float = 0.1,
    ) -> None:
        self._invoke = invoke
        self._function_arn = function_arn
        self._sqs = sqs
        self.retry_delay = retry_delay
        self.configs: dict[str, AsyncInvokeConfig] = {}
        self.failed: list[FailedInvocation] = []
        self._lock = threading.Lock()

    def __call__(self, function_id: str, event: Any) -> bool:
        """Invoke as Lambda does for an asynchronous caller; True when an attempt succeeded."""
        config = self.configs.get(function_id, AsyncInvokeConfig())
        attempts = 1 + max(0, config.maximum_retry_attempts)
        error: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                self._invoke(function_id, copy.deepcopy(event))
                return True
            except Exception as exc:
                error = exc
                log.warning(
                    "%s failed on an asynchronous event (attempt %d/%d)",
                    function_id,
                    attempt,
                    attempts,
                    exc_info=True,
                )
                if attempt < attempts:
                    time.sleep(self.retry_delay)
        assert error is not None
        sent_to = self._send_failure(function_id, config, event, error, attempts)
        with self._lock:
            self.failed.append(
                FailedInvocation(function_id, event, type(error).__name__, str(error), attempts, sent_to)
            )
        return False

    def _send_failure(
        self, function_id: str, config: AsyncInvokeConfig, event: Any, error: BaseException, attempts: int
    ) -> str | None:
        sqs = self._sqs()
        try:
            if config.on_failure:
                record = destination_record(self._function_arn(function_id), event, error, attempts)
                sqs.send_message(
                    QueueUrl=queue_url(sqs, config.on_failure), MessageBody=json.dumps(record, default=str)
                )
                return config.on_failure
            if config.dead_letter_queue:
                sqs.send_message(
                    QueueUrl=queue_url(sqs, config.dead_letter_queue),
                    MessageBody=json.dumps(event, default=str),
                )
                return config.dead_letter_queue
        except Exception:
            log.exception("%s: the failed event could not be sent to its destination", function_id)
            return None
        log.error(
            "%s failed on an asynchronous event, which is lost (no on-failure destination)", function_id
        )
        return None


@dataclass
class _Poller:
    source: QueueSource
    url: str
    thread: threading.Thread | None = None
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class QueueSources:
    """Lambda's SQS pollers for the stack's ``Type: SQS`` events."""

    WAIT_SECONDS = 1
    _WAKE = json.dumps({"relayflow-local": "stop"})

    def __init__(
        self,
        sources: list[QueueSource],
        invoke: Callable[[str, Any], Any],
        sqs: Callable[[], Any],
        region: str,
        visibility_after_failure: float = 0.5,
    ) -> None:
        self._invoke = invoke
        self._sqs = sqs
        self._region = region
        self._visibility_after_failure = visibility_after_failure
        self._stop = threading.Event()
        self._pollers = [_Poller(source, queue_url(sqs(), source.queue_arn)) for source in sources]

    def start(self) -> None:
        for poller in self._pollers:
            poller.thread = threading.Thread(
                target=self._run, args=(poller,), name=f"sqs-{poller.source.function_id}", daemon=True
            )
            poller.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        sqs = self._sqs()
        for poller in self._pollers:
            with contextlib.suppress(Exception):
                sqs.send_message(QueueUrl=poller.url, MessageBody=self._WAKE)
        for poller in self._pollers:
            if poller.thread is not None and poller.thread.is_alive():
                poller.thread.join(timeout=timeout)

    def idle(self) -> bool:
        """No message visible, in flight or delayed on any source queue, and no invocation running."""
        sqs = self._sqs()
        for poller in self._pollers:
            with poller.lock:
                if poller.in_flight:
                    return False
            attributes = sqs.get_queue_attributes(
                QueueUrl=poller.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(value) for value in attributes.values()):
                return False
        return True

    def _run(self, poller: _Poller) -> None:
        sqs = self._sqs()
        source = poller.source
        while not self._stop.is_set():
            try:
                response = sqs.receive_message(
                    QueueUrl=poller.url,
                    MaxNumberOfMessages=max(1, min(10, source.batch_size)),
                    WaitTimeSeconds=self.WAIT_SECONDS,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                messages = [m for m in response.get("Messages", []) if m["Body"] != self._WAKE]
                for wake in (m for m in response.get("Messages", []) if m["Body"] == self._WAKE):
                    sqs.delete_message(QueueUrl=poller.url, ReceiptHandle=wake["ReceiptHandle"])
                if not messages or self._stop.is_set():
                    continue
                with poller.lock:
                    poller.in_flight += 1
                try:
                    self._deliver(sqs, poller, messages)
                finally:
                    with poller.lock:
                        poller.in_flight -= 1
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("SQS poller of %s failed", source.function_id, exc_info=True)
                self._stop.wait(0.5)

    def _deliver(self, sqs: Any, poller: _Poller, messages: list[dict[str, Any]]) -> None:
        source = poller.source
        event = {"Records": [self._record(source, m) for m in messages]}
        try:
            result = self._invoke(source.function_id, event)
        except Exception:
            log.warning(
                "%s failed on a batch of %d message(s)", source.function_id, len(messages), exc_info=True
            )
            self._retry_later(sqs, poller, messages)
            return
        failed_ids: set[str] = set()
        if source.report_failures and isinstance(result, Mapping):
            failed_ids = {str(item.get("itemIdentifier")) for item in result.get("batchItemFailures") or []}
        for message in messages:
            if message["MessageId"] not in failed_ids:
                sqs.delete_message(QueueUrl=poller.url, ReceiptHandle=message["ReceiptHandle"])
        self._retry_later(sqs, poller, [m for m in messages if m["MessageId"] in failed_ids])

    def _retry_later(self, sqs: Any, poller: _Poller, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            with contextlib.suppress(Exception):
                sqs.change_message_visibility(
                    QueueUrl=poller.url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
        if messages:
            self._stop.wait(self._visibility_after_failure)

    def _record(self, source: QueueSource, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": dict(message.get("MessageAttributes") or {}),
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": source.queue_arn,
            "awsRegion": self._region,
        }


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between two firings of an EventBridge ``rate(...)`` expression; None for others."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


class Ticker:
    """Fires schedules on their rate, in a thread (``LocalStack(run_schedules=True)``, e.g. serve)."""

    def __init__(self, fire: Callable[[str, str], Any], schedules: dict[str, float]) -> None:
        self._fire = fire
        self._schedules = schedules  # "<function>.<event>" -> seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relayflow-schedules", daemon=True)

    def start(self) -> None:
        if self._schedules:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        due = {key: time.monotonic() + period for key, period in self._schedules.items()}
        while not self._stop.is_set():
            key = min(due, key=due.__getitem__)
            if self._stop.wait(max(0.0, due[key] - time.monotonic())):
                return
            function_id, event_name = key.split(".", 1)
            try:
                self._fire(function_id, event_name)
            except Exception:
                log.warning("schedule %s failed", key, exc_info=True)
            due[key] = time.monotonic() + self._schedules[key]
