"""Errors shared by every Pulse layer; the web layer maps them to HTTP answers."""

from __future__ import annotations

from typing import Any


class PulseError(Exception):
    """Base of Pulse's own errors: a stable code, a message a user can act on, optional details."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class SettingsError(PulseError):
    """A setting is missing or invalid; the message names the variable."""

    code = "invalid_setting"


class ValidationError(PulseError):
    code = "validation_error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None):
        d = dict(details or {})
        if field:
            d.setdefault("field", field)
        super().__init__(message, details=d)
        self.field = field


class NotFound(PulseError):
    code = "not_found"
    status = 404


class Conflict(PulseError):
    code = "conflict"
    status = 409


class Unauthorized(PulseError):
    code = "unauthorized"
    status = 401


class Forbidden(PulseError):
    code = "forbidden"
    status = 403


class LimitExceeded(PulseError):
    code = "limit_exceeded"
    status = 403
