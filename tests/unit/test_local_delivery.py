"""The local stack's stand-ins for Lambda's asynchronous invocation, SQS pollers and schedules."""

from __future__ import annotations

import threading
from typing import Any

from relayflow.local import delivery


def test_rate_expressions_become_periods() -> None:
    assert delivery.rate_seconds("rate(5 minutes)") == 300
    assert delivery.rate_seconds("rate(1 hour)") == 3600
    assert delivery.rate_seconds("rate(2 days)") == 172800
    assert delivery.rate_seconds("cron(0 12 * * ? *)") is None


def test_event_invoke_config_is_read_like_lambda() -> None:
    config = delivery.AsyncInvokeConfig.of(
        {
            "EventInvokeConfig": {
                "MaximumRetryAttempts": 1,
                "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": "arn:aws:sqs:r:1:failed"}},
            }
        }
    )
    assert (config.maximum_retry_attempts, config.on_failure) == (1, "arn:aws:sqs:r:1:failed")
    assert delivery.AsyncInvokeConfig.of({}).maximum_retry_attempts == 2


def test_an_invocation_that_keeps_failing_is_tried_then_recorded_like_lambda() -> None:
    calls: list[Any] = []
    sent: list[tuple[str, str]] = []

    class Sqs:
        def get_queue_url(self, QueueName: str) -> dict[str, str]:
            return {"QueueUrl": f"https://sqs/{QueueName}"}

        def send_message(self, QueueUrl: str, MessageBody: str) -> None:
            sent.append((QueueUrl, MessageBody))

    def invoke(function_id: str, event: Any) -> Any:
        calls.append(event)
        raise ValueError("nope")

    invoker = delivery.AsyncInvoker(invoke, lambda f: f"arn:aws:lambda:r:1:function:{f}", Sqs, retry_delay=0)
    invoker.configs["F"] = delivery.AsyncInvokeConfig(on_failure="arn:aws:sqs:r:1:failed")
    assert invoker("F", {"a": 1}) is False
    assert len(calls) == 3
    ((url, body),) = sent
    assert url == "https://sqs/failed"
    assert '"condition": "RetriesExhausted"' in body and '"errorType": "ValueError"' in body
    assert invoker.failed[0].sent_to == "arn:aws:sqs:r:1:failed"


def test_the_ticker_fires_each_schedule_on_its_period() -> None:
    fired = threading.Event()
    seen: list[tuple[str, str]] = []

    def fire(function_id: str, event_name: str) -> None:
        seen.append((function_id, event_name))
        fired.set()

    ticker = delivery.Ticker(fire, {"SweeperFunction.Every": 0.05})
    ticker.start()
    try:
        assert fired.wait(5)
    finally:
        ticker.stop()
    assert seen[0] == ("SweeperFunction", "Every")
