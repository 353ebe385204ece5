"""Values that travel between nodes: inline when small, an S3 reference when large."""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from relayflow_runtime.domain.text import storable_value
from relayflow_runtime.services import deps
from relayflow_runtime.settings import get_settings

REF_KEY = "$s3"


def is_ref(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and set(value) == {REF_KEY}


def pack(value: Any, key: str, limit: int | None = None, blobs: deps.Blobs | None = None) -> Any:
    """Keep value inline when its JSON is under the inline limit (``limit`` when given), else
    store it at key in S3 (``blobs``: the configured bucket by default). Text UTF-8 cannot encode
    is repaired first (domain/text.py)."""
    settings = get_settings()
    value = storable_value(value)
    encoded = json.dumps(value)
    if len(encoded.encode()) <= (settings.inline_output_limit if limit is None else limit):
        return value
    (blobs or deps.blobs()).put_bytes(key, encoded.encode(), "application/json")
    return {REF_KEY: key}


def unpack(value: Any, blobs: deps.Blobs | None = None) -> Any:
    if is_ref(value):
        return (blobs or deps.blobs()).get_json(value[REF_KEY])
    return value
