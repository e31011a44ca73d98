"""Per-request context: the X-Request-Id (echoed or made), its log context, security headers, and NUL refusal."""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from pulse.errors import ValidationError
from pulse.log import request_id_var

REQUEST_ID_HEADER = "x-request-id"
_STATE_KEY = "pulse_request_id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# API answers load nothing; pages that need more (the OpenAPI browser, later the web app) get their own.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            "font-src 'self' data: https://fonts.gstatic.com; img-src 'self' data: https:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
CSP_BY_PATH_PREFIX: dict[str, str] = {"/schema": DOCS_CSP}

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def request_id_for(scope: Scope | dict[str, Any]) -> str:
    """This request's id: a sane incoming X-Request-Id, else a new one (stable for the request)."""
    state = scope.setdefault("state", {})  # type: ignore[union-attr]
    rid = state.get(_STATE_KEY)
    if rid is None:
        incoming = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"x-request-id":
                incoming = value.decode("latin-1").strip()
                break
        rid = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state[_STATE_KEY] = rid
    return str(rid)


def content_security_policy(path: str) -> str:
    for prefix, csp in CSP_BY_PATH_PREFIX.items():
        if path == prefix or path.startswith(prefix + "/"):
            return csp
    return API_CSP


async def add_response_headers(message: Message, scope: Scope) -> None:
    """`before_send` hook: runs for every answer, including routing errors that no middleware sees."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    headers[REQUEST_ID_HEADER] = request_id_for(scope)
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
    if "content-security-policy" not in headers:
        headers["content-security-policy"] = content_security_policy(scope.get("path", ""))


_NO_NUL = "must not contain NUL characters"


def _nul_at(value: Any, path: str) -> str | None:
    """Where in a decoded JSON value a string (or key) holds NUL, as `a.b[2].c`; None when nowhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            if (found := _nul_at(item, here)) is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _nul_at(item, f"{path}[{i}]")) is not None:
                return found
    return None


async def reject_nul(request: Request[Any, Any, Any]) -> None:
    """`before_request`: NUL in a path or query parameter or in a string of a JSON body is a 400 naming where.

    PostgreSQL text cannot hold NUL, so it would otherwise fail deep inside a write. Handlers that read the raw
    body themselves (HTTP ingest, CSV import) are left to judge it: ingest quarantines such a message."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise ValidationError(f"path parameter {name}: {_NO_NUL}", field=name)
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise ValidationError(f"query parameter {name!r}: {_NO_NUL}", field=name)
    if "data" not in request.route_handler.parsed_fn_signature.parameters:
        return
    body = await request.body()
    if b"\\u0000" not in body:
        return
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return  # not JSON: the body parser answers that
    where = _nul_at(decoded, "")
    if where is not None:
        raise ValidationError(f"{where or 'body'}: {_NO_NUL}", field=where or "body")


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    """Puts the request id into the logging context for the duration of the handler."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        token = request_id_var.set(request_id_for(scope))
        try:
            await app(scope, receive, send)
        finally:
            request_id_var.reset(token)

    return middleware
