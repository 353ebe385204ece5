"""Typed errors of the domain. The API turns each into one HTTP answer (see handlers/api.py)."""

from __future__ import annotations

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
