"""The relayflow EventBridge bus: one PutEvents call per event (the only code that talks to it)."""

from __future__ import annotations

import json
from typing import Any

from relayflow_runtime.adapters import aws


class EventBus:
    def __init__(self, name: str) -> None:
        self.name = name

    def put(self, source: str, detail_type: str, detail: dict[str, Any]) -> str | None:
        """Put one event; None when the bus took it, else why not (the call itself may raise)."""
        response = aws.client("events").put_events(
            Entries=[
                {
                    "Source": source,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": self.name,
                    "Resources": [],
                }
            ]
        )
        if not response.get("FailedEntryCount"):
            return None
        entry = (response.get("Entries") or [{}])[0]
        return f"{entry.get('ErrorCode', 'error')}: {entry.get('ErrorMessage', 'the bus refused the event')}"
