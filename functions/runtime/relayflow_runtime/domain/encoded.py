"""Bytes sent through the API as base64 text (a start's input file, an upload's part): decoded and
bounded in one place, each caller saying what the field is and what its limit means."""

from __future__ import annotations

import base64
import binascii

from relayflow_runtime.errors import InvalidInput


def decode_base64(
    text: str, *, field: str, code: str, max_bytes: int, too_large: str, too_large_code: str
) -> bytes:
    """``text`` decoded (standard alphabet, padded). A text that is not base64 is 400 ``code``
    naming ``field``; more than ``max_bytes`` decoded is 400 ``too_large_code`` with ``too_large``
    (``{size}``: the decoded size)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{field} is not valid base64.", code=code) from exc
    if len(data) > max_bytes:
        raise InvalidInput(too_large.format(size=len(data)), code=too_large_code)
    return data
