"""Real `pulse <command>` processes for fault tests: started with a health port each, waited on through /readyz,
killed with SIGKILL or stopped with SIGTERM, their logs kept for the failure message; all stopped at the end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, TypeVar

import httpx
import pytest

from tests.conftest import free_port

T = TypeVar("T")


class PulseProcesses:
    """Named `pulse` processes sharing one base environment (PULSE_* from the test only, never the caller's)."""

    def __init__(self, **settings: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        self.env.update({"PULSE_ENV": "test", "PULSE_LOG_LEVEL": "info", **settings})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.health_ports: dict[str, int] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(self, name: str, *args: str, **settings: str) -> subprocess.Popen[bytes]:
        """Start `pulse *args` as `name` (a name may be started again after it exited)."""
        running = self.procs.get(name)
        assert running is None or running.poll() is not None, f"{name} is still running"
        port = free_port()
        self.health_ports[name] = port
        log = self._logs.get(name)
        if log is None:
            log = self._logs[name] = tempfile.TemporaryFile()
        log.write(f"--- start {' '.join(args)} ---\n".encode())
        log.flush()
        env = {**self.env, "PULSE_HEALTH_PORT": str(port), **settings}
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "pulse", *args], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self.procs[name]

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, name: str, timeout: float = 30, *, signalled: bool = False) -> int:
        """SIGTERM (once: a second one may land after the loop removed its handler) and wait; the exit code (-9
        when it had to be killed)."""
        proc = self.procs[name]
        if proc.poll() is None and not signalled:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return -9

    def stop_all(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return {name: self.stop(name, signalled=True) for name in self.procs}

    def running(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def output(self, name: str, chars: int = 4000) -> str:
        log = self._logs.get(name)
        if log is None:
            return ""
        log.flush()
        log.seek(0)
        return log.read().decode(errors="replace")[-chars:]

    def outputs(self, chars: int = 2500) -> str:
        return "\n".join(f"===== {name} =====\n{self.output(name, chars)}" for name in self.procs)

    async def ready(self, name: str, *checks: str, timeout: float = 60) -> None:
        """Wait until the process answers 200 on /readyz with each named check among them (`pulse ingest` answers
        200 before its MQTT consumer registered its check, so wait for "mqtt" there)."""
        url = f"http://127.0.0.1:{self.health_ports[name]}/readyz"

        async def probe() -> bool:
            assert self.running(name), f"{name} exited:\n{self.output(name)}"
            try:
                async with httpx.AsyncClient() as client:
                    answer = await client.get(url, timeout=2)
            except httpx.HTTPError:
                return False
            lines = answer.text.splitlines()
            return answer.status_code == 200 and all(any(x.startswith(f"{c}: ok") for x in lines) for c in checks)

        await eventually(probe, timeout=timeout, what=f"{name} to be ready", details=lambda: self.output(name))

    def close(self) -> None:
        self.stop_all()
        for log in self._logs.values():
            log.close()


async def eventually(probe: Callable[[], Awaitable[T]], *, timeout: float, what: str, every: float = 0.1,
                     details: Callable[[], str] | None = None) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"\n{details()}" if details else ""))
        await asyncio.sleep(every)


@pytest.fixture
def processes() -> Iterator[PulseProcesses]:
    group = PulseProcesses()
    try:
        yield group
    finally:
        group.close()


__all__ = ["PulseProcesses", "eventually", "processes"]
