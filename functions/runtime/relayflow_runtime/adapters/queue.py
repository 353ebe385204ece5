"""An SQS queue of the stack (webhook deliveries): send one JSON message, optionally delayed."""

from __future__ import annotations

import json
from typing import Any

from relayflow_runtime.adapters import aws

#: SQS delays a message by at most 15 minutes.
MAX_DELAY_SECONDS = 900


class MessageQueue:
    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, body: dict[str, Any], *, delay_seconds: int = 0) -> str:
        """Send ``body`` (as JSON), visible after ``delay_seconds`` (0 to 900); returns its id."""
        response = aws.client("sqs").send_message(
            QueueUrl=self.url,
            MessageBody=json.dumps(body, separators=(",", ":")),
            DelaySeconds=max(0, min(MAX_DELAY_SECONDS, int(delay_seconds))),
        )
        return str(response["MessageId"])
