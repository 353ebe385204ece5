"""The relayflow EventBridge bus: one PutEvents call per event, and the patterns of its rules (the
only code that talks to it)."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from relayflow_runtime.adapters import aws
from relayflow_runtime.adapters.transactions import retry_contention

#: ListRules pages read at most (a bus holds 300 rules by default quota; a page up to 100).
MAX_RULE_PAGES = 20


class RulesUnknown(Exception):
    """The bus's rules could not all be listed (more pages than MAX_RULE_PAGES)."""


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

    def rule_patterns(self) -> list[str | None]:
        """The ``EventPattern`` of every rule on the bus (None for a rule without one: a schedule),
        every page of ListRules, each call's throttling retried with jitter (adapters/transactions.py;
        its StoreContended, or any other error of the call, leaves to the caller)."""
        events = aws.client("events")
        patterns: list[str | None] = []
        kwargs: dict[str, Any] = {"EventBusName": self.name}
        for _ in range(MAX_RULE_PAGES):
            page = retry_contention(partial(events.list_rules, **kwargs))
            patterns += [rule.get("EventPattern") for rule in page.get("Rules") or []]
            if not page.get("NextToken"):
                return patterns
            kwargs["NextToken"] = page["NextToken"]
        raise RulesUnknown(f"the bus {self.name} has more than {MAX_RULE_PAGES} pages of rules")
