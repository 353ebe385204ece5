"""DynamoDB value mapping and opaque page cursors."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

from relayflow_runtime.domain.text import storable
from relayflow_runtime.errors import InvalidNextToken, check_cursor_shape


def to_dynamo(value: Any) -> Any:
    """JSON-shaped Python values → what boto3's DynamoDB resource accepts (floats as Decimal; text
    that UTF-8 cannot encode repaired, see domain/text.py: DynamoDB would refuse the write)."""
    return json.loads(storable(json.dumps(value, ensure_ascii=False)), parse_float=Decimal)


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    if isinstance(value, set):
        return sorted(from_dynamo(v) for v in value)
    return value


def as_stored(value: Any) -> Any:
    """``value`` as DynamoDB gives it back once written (numbers through Decimal: 1.0 is 1)."""
    return from_dynamo(to_dynamo(value))


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    raw = json.dumps(from_dynamo(last_key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    check_cursor_shape(token)
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, json.JSONDecodeError) as exc:
        raise InvalidNextToken() from exc
    if not isinstance(value, dict) or not value or not all(isinstance(v, (str, int)) for v in value.values()):
        raise InvalidNextToken()
    return to_dynamo(value)
