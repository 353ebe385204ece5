"""Test-only Lambda handlers. The local stack reaches them by Handler string, built with
`handler("name")` so the string stays right however pytest imports this module."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

_lock = threading.Lock()
ATTEMPTS: dict[str, int] = {}
RECORDED: list[tuple[str, Any]] = []


class FlakyError(Exception):
    """Fails the first attempts, then works: Retry on ["FlakyError"] gets past it."""


class PermanentError(Exception):
    """Never works: only a Catch gets past it."""


def handler(name: str) -> str:
    """The Handler string of a function of this module."""
    return f"{__name__}.{name}"


def reset() -> None:
    with _lock:
        ATTEMPTS.clear()
        RECORDED.clear()


def recorded(function_name_part: str) -> list[Any]:
    with _lock:
        return [event for name, event in RECORDED if function_name_part in name]


def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
    key = event["key"]
    with _lock:
        ATTEMPTS[key] = attempt = ATTEMPTS.get(key, 0) + 1
    if attempt <= int(event.get("failures", 2)):
        raise FlakyError(f"{key}: attempt {attempt} failed")
    return {"key": key, "attempts": attempt}


def permanent(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise PermanentError(f"{event.get('key')}: cannot be processed")


def record(event: Any, context: Any) -> dict[str, Any]:
    with _lock:
        RECORDED.append((context.function_name, event))
        count = len(RECORDED)
    return {"recorded": count}


def sleep_then_record(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Sleeps event["seconds"], then records the event as `record` does."""
    time.sleep(float(event.get("seconds", 1)))
    return record(event, context)


def http_echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answers with the request body unchanged (same content type, same encoding) and the event
    without its body as JSON in the x-event header (base64)."""
    summary = {key: value for key, value in event.items() if key != "body"}
    return {
        "statusCode": 200,
        "headers": {
            "content-type": event["headers"].get("content-type", "application/octet-stream"),
            "x-event": base64.b64encode(json.dumps(summary).encode()).decode(),
        },
        "cookies": ["session=abc; Path=/", "theme=dark"],
        "body": event.get("body", ""),
        "isBase64Encoded": event["isBase64Encoded"],
    }


OPEN_SESAME = "let-me-in"


def allow_one_key(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An HTTP API Lambda authorizer (simple responses) that accepts the key OPEN_SESAME."""
    with _lock:
        RECORDED.append((context.function_name, event))
    if event.get("identitySource") == [OPEN_SESAME]:
        return {"isAuthorized": True, "context": {"tenant": "t-test", "scopes": "read write"}}
    return {"isAuthorized": False}
