"""The HTTP API's Lambda authorizer (REQUEST, payload 2.0, simple responses).

API Gateway calls it with the request's ``x-api-key`` header (its identity source; without the
header API Gateway answers 401 by itself) and caches the answer per key. It answers
``{"isAuthorized": true, "context": {"tenant", "scopes", "key_id"}}``; API Gateway passes the context
to the API function as ``requestContext.authorizer.lambda``. The answer depends on the key only,
never on the route, so caching it is safe: the API function checks each route's scope itself
(handlers/context.py). The local stack calls this same handler before every API request.

This module also holds the log redaction every function installs: API keys and authorization
headers never reach the logs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.errors import RelayflowError
from relayflow_runtime.services import apikeys

API_KEY_HEADER = "x-api-key"
SENSITIVE_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
REDACTED = "[redacted]"
_KEY_IN_TEXT = re.compile(r"\b(rf_[0-9a-f]{16})_[A-Za-z0-9_-]+")
_BEARER_IN_TEXT = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_STANDARD_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

logger = Logger()


# ---- redaction -------------------------------------------------------------------------------------------
def redact(value: Any) -> Any:
    """A copy of value with secret headers and anything shaped like a key or a bearer token hidden."""
    if isinstance(value, str):
        return _BEARER_IN_TEXT.sub(
            lambda m: f"{m.group(1)} {REDACTED}", _KEY_IN_TEXT.sub(r"\1_" + REDACTED, value)
        )
    if isinstance(value, Mapping):
        # dict(value) copies in one step: another thread may be changing a dict that is being logged.
        return {
            k: REDACTED if isinstance(k, str) and k.lower() in SENSITIVE_HEADERS else redact(v)
            for k, v in dict(value).items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in list(value))
    return value


class RedactSecrets(logging.Filter):
    """A logging filter that redacts the message, its arguments and the extra keys of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = redact(record.msg)
            if record.args:
                record.args = redact(record.args)
            for name, value in list(record.__dict__.items()):
                if name not in _STANDARD_RECORD_FIELDS:
                    setattr(record, name, redact(value))
        except Exception:  # never let logging break a request; drop what could not be checked
            record.msg, record.args = "[a log record that could not be redacted was dropped]", None
            for name in [n for n in record.__dict__ if n not in _STANDARD_RECORD_FIELDS]:
                setattr(record, name, REDACTED)
        return True


def install_redaction(target: Logger | logging.Logger) -> None:
    """Redact every record of this logger and of its handlers (idempotent)."""
    std = target if isinstance(target, logging.Logger) else target._logger
    for holder in (std, *std.handlers):
        if not any(isinstance(f, RedactSecrets) for f in holder.filters):
            holder.addFilter(RedactSecrets())


install_redaction(logger)


# ---- the authorizer ------------------------------------------------------------------------------------
def api_key_of(event: Mapping[str, Any]) -> str | None:
    headers = event.get("headers") or {}
    for name, value in headers.items():
        if name.lower() == API_KEY_HEADER and value:
            return str(value).split(",")[0].strip()
    return None


def authorize(event: Mapping[str, Any]) -> dict[str, Any]:
    """The simple response for one request event (also what the local stack calls)."""
    try:
        principal = apikeys.authenticate(api_key_of(event))
    except RelayflowError as exc:
        logger.info("request refused", extra={"reason": exc.code, "route": event.get("routeKey")})
        return {"isAuthorized": False, "context": {"reason": exc.code, "status": exc.status}}
    return {
        "isAuthorized": True,
        "context": {
            "tenant": principal.tenant,
            "scopes": " ".join(sorted(principal.scopes)),
            "key_id": principal.key_id,
        },
    }


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return authorize(event)
