"""`pulse web`'s server loop: serves over real HTTP, leaves signal handling to pulse.cli, stops on the event."""

from __future__ import annotations

import asyncio
import signal
import socket

import httpx

from pulse.settings import Settings
from pulse.web.server import serve
from tests.conftest import free_port


async def _wait_healthy(url: str, task: asyncio.Task[int]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        for _ in range(200):
            assert not task.done(), f"server ended early with {task.result()}"
            try:
                return await client.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def test_serves_until_stop_and_leaves_signals_alone(settings: Settings) -> None:
    port = free_port()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings.replace(http_port=port), stop))

    health = await _wait_healthy(f"http://127.0.0.1:{port}/healthz", task)
    during = {sig: signal.getsignal(sig) for sig in before}
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        ready = await client.get(f"http://127.0.0.1:{port}/readyz")
    stop.set()
    code = await asyncio.wait_for(task, timeout=30)

    assert health.status_code == 200 and health.text == "ok" and "x-request-id" in health.headers
    assert "server" not in health.headers
    assert ready.status_code == 200
    assert during == before  # uvicorn installed no handlers of its own
    assert code == 0
    with socket.socket() as s:  # the port is released
        s.bind(("127.0.0.1", port))


async def test_port_in_use_is_a_nonzero_exit(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = await asyncio.wait_for(serve(settings.replace(http_port=port), asyncio.Event()), timeout=30)
    assert code != 0
