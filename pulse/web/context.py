"""What the web process shares between requests (settings, clock, engine, token validator, limits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import Clock
from pulse.settings import Settings
from pulse.web.errors import Unavailable

if TYPE_CHECKING:
    from pulse.web.auth import TokenValidator
    from pulse.web.ratelimit import SlidingWindowLimiter


@dataclass
class WebContext:
    """Lives in `app.state.pulse`; the engine lives in `app.state.engine` (made at startup)."""

    settings: Settings
    clock: Clock
    limiters: dict[str, SlidingWindowLimiter] = field(default_factory=dict)
    tokens: TokenValidator | None = None


def context_of(connection: Any) -> WebContext:
    """The WebContext of the app serving `connection` (a Request or WebSocket)."""
    return connection.app.state.pulse  # type: ignore[no-any-return]


def engine_of(connection: Any) -> AsyncEngine:
    engine = connection.app.state.get("engine")
    if engine is None:
        raise Unavailable("the database engine is not started")
    return engine  # type: ignore[no-any-return]


def tokens_of(connection: Any) -> TokenValidator:
    tokens = context_of(connection).tokens
    if tokens is None:
        raise Unavailable("token validation is not started")
    return tokens
