"""Process health for orchestrators: /healthz (the process runs) and /readyz (the database answers)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Request, Response, get
from litestar.enums import MediaType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.web.context import engine_of
from pulse.web.errors import error_response

log = logging.getLogger("pulse.web.health")
READY_TIMEOUT_S = 2.0


@get("/healthz", media_type=MediaType.TEXT, include_in_schema=False, sync_to_thread=False)
def healthz() -> str:
    return "ok"


async def _ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """200 when the database answers SELECT 1 within 2 s; 503 naming what failed otherwise."""
    try:
        await asyncio.wait_for(_ping(engine_of(request)), timeout=READY_TIMEOUT_S)
    except Exception as exc:  # any failure is the report itself; the detail goes to the log only
        log.warning("readiness check failed: database: %r", exc)
        reason = "timed out" if isinstance(exc, TimeoutError) else f"unreachable ({type(exc).__name__})"
        return error_response(request, 503, "not_ready", f"database {reason}", {"database": "fail"})
    return Response(content="ok", media_type=MediaType.TEXT)


ROUTES = [healthz, readyz]
