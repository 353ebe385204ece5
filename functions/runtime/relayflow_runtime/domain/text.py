"""Text that can be stored: every string a run writes must encode as UTF-8.

A Python string may hold lone surrogates (``'\\ud800'``): PDF extraction yields them, and so does a
model's answer cut inside a surrogate pair (or a JSON answer with a ``"\\ud83d"`` escape). UTF-8
cannot encode them, so DynamoDB (and any JSON reader) refuses the write. :func:`storable` repairs
such text once, where it enters a run (extracted input, prompts, model outputs) and again at the
store boundary (adapters/codec.py): a surrogate pair held as two code points becomes its one
character, a lone surrogate becomes U+FFFD (the replacement character). Text that encodes already
is returned as it is.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD and split pairs joined."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def storable_value(value: Any) -> Any:
    """A JSON-shaped value with every string in it (keys too) made :func:`storable`."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_value(k): storable_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_value(v) for v in value]
    return value
