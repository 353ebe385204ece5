"""Typed errors of the domain. The API turns each into one HTTP answer (see handlers/api.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class RelayflowError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class NotFound(RelayflowError):
    status = 404
    code = "not_found"


class Conflict(RelayflowError):
    status = 409
    code = "conflict"


class InvalidInput(RelayflowError):
    status = 400
    code = "invalid_input"


class TooLarge(RelayflowError):
    status = 413
    code = "too_large"


class Unauthorized(RelayflowError):
    status = 401
    code = "unauthorized"


class Forbidden(RelayflowError):
    status = 403
    code = "forbidden"


#: A page cursor is base64url text (no padding) of at most this many characters.
MAX_CURSOR_LENGTH = 4096
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"


class InvalidNextToken(InvalidInput):
    """A ``next_token`` this listing did not return (they are opaque: passed back, never built)."""

    code = "invalid_next_token"

    def __init__(self) -> None:
        super().__init__(
            "next_token is not a cursor this listing returned: pass back the next_token of the "
            "previous page unchanged (same path and filters), or omit it for the first page."
        )


def check_cursor_shape(token: str) -> None:
    """Refuse what cannot be a cursor (too long, not base64url) before decoding it."""
    if len(token) > MAX_CURSOR_LENGTH or not re.fullmatch(CURSOR_PATTERN, token):
        raise InvalidNextToken()


@contextmanager
def referenced(field: str) -> Iterator[None]:
    """An id the request's body refers to, looked up: if it names nothing, the request conflicts
    with what exists (409, naming the field); 404 is kept for the resource the path names."""
    try:
        yield
    except NotFound as exc:
        raise Conflict(f"{field}: {exc.message}", code=exc.code, details={"field": field}) from exc
