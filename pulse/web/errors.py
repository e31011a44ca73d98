"""HTTP error answers: every error is {"error": {"code", "message", "details"}}; internals never leak."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from pulse.errors import PulseError
from pulse.web.middleware import request_id_for

log = logging.getLogger("pulse.web")


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(msgspec.Struct, kw_only=True):
    """What every 4xx/5xx answer carries."""

    error: ErrorDetail


class HttpError(PulseError):
    """A PulseError that only the web layer raises, optionally with response headers."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, details=details)
        self.headers = headers or {}


class RateLimited(HttpError):
    code = "rate_limited"
    status = 429

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests; retry in {retry_after_s} s",
                         details={"retry_after_s": retry_after_s}, headers={"Retry-After": str(retry_after_s)})


class Unavailable(HttpError):
    code = "unavailable"
    status = 503


def error_response(request: Request[Any, Any, Any], status: int, code: str, message: str,
                   details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Response[Any]:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details or {}))
    return Response(content=body, status_code=status, headers=headers or {}, media_type="application/json")


_DESCRIPTIONS = {400: "Invalid request (details.field names the parameter)", 401: "Missing or invalid credentials",
                 403: "Not allowed for this caller", 404: "Not found", 409: "Conflicts with existing data",
                 429: "Rate limited (see Retry-After)", 503: "A dependency is unavailable"}


def error_specs(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of a handler's error answers (all share the error envelope)."""
    return {s: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS.get(s, "Error"),
                            generate_examples=False)  # the ErrorBody schema carries a real example
            for s in statuses}


def _pulse_error(request: Request[Any, Any, Any], exc: PulseError) -> Response[Any]:
    return error_response(request, exc.status, exc.code, exc.message, exc.details, getattr(exc, "headers", None))


_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
_BODY_PREFIX = re.compile(r"^data(\.|$)")


def _validation_entry(raw: dict[str, Any]) -> dict[str, Any]:
    """One Litestar/msgspec complaint as {field, source, message}; `data.x` becomes `x`."""
    message = str(raw.get("message", "invalid value"))
    field = str(raw.get("key", "") or "")
    raw_source = raw.get("source") or ""
    source = str(getattr(raw_source, "value", raw_source))
    if field.startswith("data") and _BODY_PREFIX.match(field):
        field, source = _BODY_PREFIX.sub("", field), source or "body"
    if not field and (m := _NAMED_FIELD.search(message)):
        field = m.group(1)
    if not field and source == "body":
        field = "body"
    return {"field": field, "source": source, "message": message}


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [_validation_entry(e) for e in extra if isinstance(e, dict)]
    if errors:
        first = errors[0]
        where = f"{first['source']} parameter " if first["source"] not in ("", "body") else ""
        message = f"{where}{first['field'] or 'request'}: {first['message']}"
        details: dict[str, Any] = {"field": first["field"], "errors": errors}
    else:
        message, details = (exc.detail or "invalid request"), {}
    return error_response(request, 400, "validation_error", message, details)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               429: "rate_limited", 500: "internal_error", 503: "unavailable"}


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        return _internal_error(request, exc)
    code = _HTTP_CODES.get(status, "error")
    message = exc.detail if exc.detail and exc.detail != _default_detail(status) else code.replace("_", " ")
    if status == 404 and message == "not found":
        message = f"no route for {request.method} {request.url.path}"
    return error_response(request, status, code, message, {}, dict(exc.headers or {}))


def _default_detail(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    rid = request_id_for(request.scope)
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc,
              extra={"request_id": rid})
    return error_response(request, 500, "internal_error",
                          "internal error; quote the request id when reporting it", {"request_id": rid})


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    PulseError: _pulse_error,
    ValidationException: _validation_error,
    HTTPException: _http_exception,
    Exception: _internal_error,
}
