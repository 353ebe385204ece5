"""JSON read from a client, within bounds: how deep it nests, how long its numbers are, and whether
its strings are text.

Python's ``json`` accepts what relayflow cannot handle later: a value nested a thousand levels deep
(a ``RecursionError`` wherever it is walked; pydantic stops at 255 levels), an integer of 5,000
digits (``int()`` refuses more than 4,300), ``1e999`` (infinity), ``NaN`` and ``Infinity`` (not JSON
at all), and ``"\\ud800"``: an escape of half a UTF-16 surrogate pair, which is valid JSON but no
text (UTF-8 cannot encode it, so no store or answer can hold it). :func:`load` refuses each of them
with :class:`~relayflow_runtime.errors.InvalidInput` (HTTP 400), naming the limit or the field;
:func:`check_value` checks a value already parsed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from relayflow_runtime.errors import InvalidInput

#: How deep a request body may nest (objects and arrays; ``{"a": [1]}`` is 2 levels).
MAX_JSON_DEPTH = 100
#: Longest number literal in a request body, in characters (sign, digits, point and exponent).
MAX_JSON_NUMBER_CHARS = 100

INVALID_JSON = "invalid_json"
INVALID_TEXT = "invalid_text"


def _number_too_long(literal: str) -> InvalidInput:
    return InvalidInput(
        f"the request body holds a number of {len(literal)} characters; numbers are at most "
        f"{MAX_JSON_NUMBER_CHARS} characters (the limit json_number).",
        code=INVALID_JSON,
        details={"limit": "json_number", "maximum": MAX_JSON_NUMBER_CHARS},
    )


def _int(literal: str) -> int:
    if len(literal) > MAX_JSON_NUMBER_CHARS:
        raise _number_too_long(literal)
    return int(literal)


def _float(literal: str) -> float:
    if len(literal) > MAX_JSON_NUMBER_CHARS:
        raise _number_too_long(literal)
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidInput(
            f"the request body holds the number {literal[:40]}, too large for a 64-bit float: "
            "send a finite number (at most about 1.8e308).",
            code=INVALID_JSON,
            details={"limit": "json_number"},
        )
    return value


def _constant(name: str) -> Any:
    raise InvalidInput(
        f"the request body holds {name}, which is not JSON: send a number or null.", code=INVALID_JSON
    )


def too_deep(depth_allowed: int = MAX_JSON_DEPTH) -> InvalidInput:
    return InvalidInput(
        f"the request body nests more than {depth_allowed} levels deep (the limit json_depth): flatten it.",
        code=INVALID_JSON,
        details={"limit": "json_depth", "maximum": depth_allowed},
    )


def field_name(path: tuple[str | int, ...]) -> str:
    """``("items", 1, "text")`` -> ``items.1.text``, the way validation errors name fields."""
    return ".".join(str(part) for part in path) or "body"


def not_text(path: tuple[str | int, ...], text: str) -> InvalidInput:
    where = field_name(path)
    position = next(i for i, char in enumerate(text) if "\ud800" <= char <= "\udfff")
    return InvalidInput(
        f"{where}: the string holds an unpaired UTF-16 surrogate ({text[position]!r} at character "
        f"{position + 1}), which is not text: send characters, or both halves of a pair.",
        code=INVALID_TEXT,
        details={"field": where},
    )


def is_text(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (holds no unpaired surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def depth_of(value: Any) -> int:
    """How many objects and arrays enclose the deepest value (a scalar: 0); level by level, so any
    depth is safe to measure."""
    depth = 0
    level = [value] if isinstance(value, dict | list) else []
    while level:
        depth += 1
        below: list[Any] = []
        for container in level:
            children = container.values() if isinstance(container, dict) else container
            below += [child for child in children if isinstance(child, dict | list)]
        level = below
    return depth


def check_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse a parsed value nested deeper than ``max_depth`` or holding a string (or a key) that
    is not text; iterative, so any depth is safe to check."""
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while pending:
        current, path = pending.pop()
        if isinstance(current, str):
            if not is_text(current):
                raise not_text(path, current)
            continue
        if isinstance(current, dict):
            items: Any = current.items()
        elif isinstance(current, list):
            items = enumerate(current)
        else:
            continue
        if len(path) >= max_depth:
            raise too_deep(max_depth)
        for key, child in items:
            if isinstance(key, str) and not is_text(key):
                raise not_text((*path, key), key)
            pending.append((child, (*path, key)))


#: The escape of half of a surrogate pair (a lone one, or one of a pair): ``\\ud800``.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _may_hold_surrogate(text: str) -> bool:
    """Cheap: False when no string parsed from ``text`` can hold an unpaired surrogate."""
    return not is_text(text) or _SURROGATE_ESCAPE.search(text) is not None


def load(text: str) -> Any:
    """The JSON value of a request body, within the bounds above (InvalidInput beyond them);
    ``json.JSONDecodeError`` for text that is not JSON."""
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise too_deep() from None
    if depth_of(value) > MAX_JSON_DEPTH:
        raise too_deep()
    if _may_hold_surrogate(text):  # rare: only then is every string looked at
        check_value(value)
    return value
