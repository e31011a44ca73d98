"""The Litestar application of `pulse web`: routes, dependencies, error envelope, auth, OpenAPI."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from litestar import Litestar, Request, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy.ext.asyncio import AsyncEngine

import pulse
from pulse.clock import Clock, SystemClock
from pulse.db import create_engine, system_tx
from pulse.fleet.keys import public_jwks
from pulse.ingest.service import IngestPipeline
from pulse.pool_metrics import watch_pool
from pulse.settings import Settings
from pulse.web.audit import AUDIT_DEPENDENCIES, audit_middleware, record_response_status
from pulse.web.auth import JwksCache, TokenValidator, http_jwks_fetcher
from pulse.web.context import WebContext
from pulse.web.deps import DEPENDENCIES
from pulse.web.errors import EXCEPTION_HANDLERS
from pulse.web.live import LiveHub
from pulse.web.middleware import add_response_headers, reject_nul, request_context_middleware
from pulse.web.openapi import ExamplesPlugin
from pulse.web.query_params import ANY_QUERY_PARAMS, QueryParamCheck
from pulse.web.ratelimit import SlidingWindowLimiter
from pulse.web.routes import notify as notify_routes
from pulse.web.routes import operator_metrics as operator_metric_routes
from pulse.web.routes import reports as report_routes
from pulse.web.routes import route_handlers
from pulse.web.routes import spa as spa_routes
from pulse.web.routes.examples import request_examples

log = logging.getLogger("pulse.web")

AUTH_RATE_LIMIT = (10, 60.0)  # login/refresh attempts per client address per minute
JWKS_HTTP_TIMEOUT_S = 5.0


def _openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Pulse",
        version=pulse.__version__,
        description="Pulse API. Errors are always {\"error\": {\"code\", \"message\", \"details\"}}; "
                    "every response carries X-Request-Id.",
        path="/schema",
        # The API docs are pages for browsers: their query string is the page's own, never refused.
        openapi_router=Router("/schema", route_handlers=[], include_in_schema=False, dto=None, return_dto=None,
                              opt={ANY_QUERY_PARAMS: True}),
        render_plugins=[SwaggerRenderPlugin(path="/")],
        components=Components(security_schemes={
            "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT",
                                          description="access token from /auth/login or the identity provider"),
            "AdminKey": SecurityScheme(type="apiKey", name="X-Admin-Key", security_scheme_in="header",
                                       description="PULSE_ADMIN_KEY"),
        }),
    )


def _cors_config(settings: Settings) -> CORSConfig | None:
    """PULSE_CORS_ORIGINS: browsers on these origins may call the API; none set, no CORS headers at all.

    Credentials travel in the Authorization header, never in cookies, so credentialed CORS stays off."""
    if not settings.cors_origins:
        return None
    return CORSConfig(allow_origins=list(settings.cors_origins),
                      allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                      allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                      expose_headers=["X-Request-Id", "Retry-After", "WWW-Authenticate", "Content-Disposition"],
                      allow_credentials=False, max_age=600)


def _before_request() -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """The app's one `before_request` hook: NUL refusal, then undeclared query parameters (both 400s)."""
    check_query = QueryParamCheck()

    async def before_request(request: Request[Any, Any, Any]) -> None:
        await reject_nul(request)
        check_query(request)

    return before_request


def create_app(settings: Settings, *, engine: AsyncEngine | None = None, clock: Clock | None = None) -> Litestar:
    """The web app. Without `engine`, one is created at startup and disposed at shutdown.

    A passed engine belongs to the caller (tests, `pulse dev`) and is left open.
    """
    ctx = WebContext(settings=settings, clock=clock or SystemClock())
    ctx.limiters["auth"] = SlidingWindowLimiter(*AUTH_RATE_LIMIT, monotonic=ctx.clock.monotonic)
    owned: dict[str, Any] = {}

    async def start(app: Litestar) -> None:
        eng = engine
        if eng is None:
            eng = create_engine(settings.require_database_url(), pool_size=settings.database_pool_size,
                                application_name="pulse-web")
            owned["engine"] = eng
            watch_pool(eng, "pulse-web")
        app.state.engine = eng
        if settings.jwt_jwks_url:
            client = httpx.AsyncClient(timeout=JWKS_HTTP_TIMEOUT_S, follow_redirects=False)
            owned["http"] = client
            fetch = http_jwks_fetcher(client, settings.jwt_jwks_url)
        else:
            async def fetch() -> dict[str, Any]:
                async with system_tx(eng) as conn:
                    return await public_jwks(conn)
        pipeline = IngestPipeline(eng, settings, ctx.clock)
        await pipeline.start()
        app.state.ingest = pipeline
        hub = LiveHub(eng, settings.require_database_url(), ctx.clock)
        await hub.start()
        app.state.live = hub
        ctx.tokens = TokenValidator(issuer=settings.issuer, audience=settings.jwt_audience,
                                    jwks=JwksCache(fetch, ctx.clock), clock=ctx.clock)
        log.info("web app started", extra={"issuer": settings.issuer,
                                           "identity": "external" if settings.jwt_jwks_url else "built-in"})

    async def stop(app: Litestar) -> None:
        hub = app.state.get("live")
        if hub is not None:
            await hub.close()
            app.state.live = None
        pipeline = app.state.get("ingest")
        if pipeline is not None:
            await pipeline.close()  # commits what was accepted before the last 202s went out
            app.state.ingest = None
        client = owned.pop("http", None)
        if client is not None:
            await client.aclose()
        eng = owned.pop("engine", None)
        if eng is not None:
            await eng.dispose()
        app.state.engine = None

    return Litestar(
        route_handlers=[*route_handlers(), notify_routes.router, report_routes.router, operator_metric_routes.router,
                        *spa_routes.ROUTES],
        dependencies={**DEPENDENCIES, **AUDIT_DEPENDENCIES},  # tenant_conn also writes the audit row
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_context_middleware, audit_middleware],
        before_request=_before_request(),  # routers must not set their own: Litestar keeps only the innermost
        after_request=record_response_status,
        before_send=[add_response_headers],
        on_startup=[start],
        on_shutdown=[stop],
        openapi_config=_openapi_config(),
        plugins=[ExamplesPlugin(request_examples())],
        cors_config=_cors_config(settings),
        state=State({"pulse": ctx, "engine": None, "ingest": None, "live": None}),
        logging_config=None,
        debug=False,
    )
