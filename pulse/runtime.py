"""Process runtime shared by every process type: stop event, health/readiness/metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
import prometheus_client
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import create_engine
from pulse.pool_metrics import watch_pool
from pulse.settings import Settings

log = logging.getLogger("pulse.runtime")

ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass
class Health:
    """What a process reports about itself on /healthz (alive) and /readyz (dependencies usable)."""

    process_type: str
    ready_checks: dict[str, ReadyCheck] = field(default_factory=dict)
    alive: bool = True
    port: int | None = None

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        ok = True
        for name, check in self.ready_checks.items():
            try:
                good, detail = await asyncio.wait_for(check(), timeout=2.0)
            except Exception as exc:  # a failing dependency check is a report, not a crash
                good, detail = False, f"{type(exc).__name__}: {exc}"
            results[name] = ("ok" if good else "fail") + (f": {detail}" if detail else "")
            ok = ok and good
        return ok, results


async def serve_health(health: Health, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP/1.0 responder for /healthz, /readyz and /metrics (workers do not load Litestar)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
            if path == "/healthz":
                status, body, ctype = (200 if health.alive else 503), (b"ok\n" if health.alive else b"dead\n"), \
                    "text/plain"
            elif path == "/readyz":
                ok, results = await health.readiness()
                body = "".join(f"{k}: {v}\n" for k, v in results.items()).encode() or b"ok\n"
                status, ctype = (200 if ok else 503), "text/plain"
            elif path == "/metrics":
                status, body, ctype = 200, prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST
            else:
                status, body, ctype = 404, b"not found\n", "text/plain"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    health.port = server.sockets[0].getsockname()[1]
    log.info("health endpoint listening", extra={"url": f"http://{host}:{health.port}/healthz"})
    return server


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`; loops honour it (finish the item in hand, flush, exit 0)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def wait_or_stop(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    """Sleep until `stop`, `wake` (cleared after) or `timeout`, whichever comes first."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        if wake is not None:
            wake.clear()


@dataclass
class WorkerContext:
    """What every worker loop gets: its engine, its health report, and the stop event."""

    engine: AsyncEngine
    health: Health
    stop: asyncio.Event


@asynccontextmanager
async def worker_context(process_type: str, settings: Settings, stop: asyncio.Event) -> AsyncIterator[WorkerContext]:
    """Engine + health endpoint (with a database readiness check) for one worker process."""
    engine = create_engine(settings.require_database_url(), pool_size=settings.database_pool_size,
                           application_name=f"pulse-{process_type}")
    watch_pool(engine, f"pulse-{process_type}")
    health = Health(process_type)

    async def db_ready() -> tuple[bool, str]:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True, ""

    health.ready_checks["database"] = db_ready
    server = await serve_health(health, settings.health_host, settings.health_port_for(process_type))
    try:
        yield WorkerContext(engine=engine, health=health, stop=stop)
    finally:
        server.close()
        await engine.dispose()


TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, SQLAlchemyError,
                                                        asyncpg.PostgresConnectionError,
                                                        asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


class Backoff:
    """Exponential pause after failures (0.5 s doubling to `cap_s`), reset by a success.

    While failing, the process reports not-ready on /readyz with the last error.
    """

    def __init__(self, health: Health, *, cap_s: float = 10.0) -> None:
        self.health = health
        self.cap_s = cap_s
        self.delay = 0.0
        self.last_error = ""

        async def check() -> tuple[bool, str]:
            return (not self.last_error), self.last_error

        health.ready_checks["work loop"] = check

    def ok(self) -> None:
        self.delay, self.last_error = 0.0, ""

    async def failed(self, exc: BaseException, stop: asyncio.Event) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self.delay = min(self.cap_s, max(0.5, self.delay * 2))
        log.warning("work loop failed; retrying", extra={"error": self.last_error, "retry_in_s": self.delay})
        await wait_or_stop(stop, None, self.delay)
