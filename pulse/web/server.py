"""`pulse web`: uvicorn serving the app until the stop event (signals belong to pulse.cli, not uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from pulse.runtime import Health, serve_health
from pulse.settings import Settings
from pulse.web.app import create_app

log = logging.getLogger("pulse.web.server")

GRACEFUL_SHUTDOWN_S = 10


class _Server(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT alone: the caller's stop event ends it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return


def build_server(settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(create_app(settings), host=settings.http_host, port=settings.http_port,
                            lifespan="on", log_config=None, server_header=False,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    return _Server(config)


async def _serve_until_exit(server: uvicorn.Server) -> int | None:
    """uvicorn ends with sys.exit() when startup fails (port taken, app startup error): turn that into a code."""
    try:
        await server.serve()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return None


async def _serve_metrics(settings: Settings) -> asyncio.Server | None:
    """/metrics on the health port. The API does not depend on it: a port already taken (another `pulse web` on
    this host) is logged and the API is served without it."""
    port = settings.health_port_for("web")
    try:
        return await serve_health(Health("web"), settings.health_host, port)
    except OSError as exc:
        log.warning("/metrics not served: %s:%s: %s (set PULSE_HEALTH_PORT to a free port)", settings.health_host,
                    port, exc.strerror or exc)
        return None


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    """Serve HTTP until `stop` is set, then finish requests in flight and shut the app down. Prometheus /metrics
    (and /healthz) are served apart from the API, on PULSE_HEALTH_HOST:PULSE_HEALTH_PORT (default port 9100).

    Returns 0 after a requested stop, non-zero when the server could not start or ended by itself.
    """
    metrics = await _serve_metrics(settings)
    server = build_server(settings)
    serving = asyncio.create_task(_serve_until_exit(server), name="pulse-web-uvicorn")
    stopping = asyncio.create_task(stop.wait(), name="pulse-web-stop")
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not serving.done():
            log.info("stopping web server")
            server.should_exit = True
    try:
        failed = await serving
    finally:
        if metrics is not None:
            metrics.close()
    if failed:
        log.error("web server failed to start (exit code %s)", failed)
        return failed
    if not stop.is_set():
        log.error("web server stopped without being asked to")
        return 1
    return 0
