"""Fixtures and helpers of the ingest-side security tests: a real `pulse web` process, devices with provision tokens,
and what the database holds for a device afterwards (telemetry rows, quarantine events)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import TenantRef, free_port, make_device, make_tenant
from tests.ingest.conftest import issue_token, sql


@dataclass(frozen=True)
class Device:
    tenant: TenantRef
    device_id: str
    token: str

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    def path(self, msg_type: str = "telemetry") -> str:
        return f"/ingest/v1/tenant/{self.tenant_id}/device/{self.device_id}/{msg_type}"

    def topic(self, msg_type: str = "telemetry") -> str:
        return f"tenant/{self.tenant_id}/device/{self.device_id}/{msg_type}"


async def new_device(engine: AsyncEngine, tenant: TenantRef | None = None, device_id: str | None = None) -> Device:
    """A registered ACTIVE device (in a new tenant unless given) with a live provision token."""
    tenant = tenant or await make_tenant(engine, prefix="sec")
    device_id = await make_device(engine, tenant, device_id)
    return Device(tenant, device_id, await issue_token(engine, tenant.tenant_id, device_id))


async def telemetry_of(engine: AsyncEngine, tenant_id: str) -> list[Any]:
    return await sql(engine, "SELECT device_id, msg_type, seq, metrics FROM telemetry WHERE tenant_id = :t "
                     "ORDER BY device_id, seq", t=tenant_id)


async def quarantine_of(engine: AsyncEngine, where: str, **params: Any) -> list[Any]:
    return await sql(engine, "SELECT tenant_id, device_id, transport, reason, detail, topic, payload_size "
                     f"FROM quarantine_events WHERE {where} ORDER BY quarantine_id", **params)


@pytest.fixture(scope="module")
def web_url(database_url: str) -> Iterator[str]:
    """`pulse web` as an operator runs it (uvicorn, the real request limits), on a free loopback port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_ENV": "test", "PULSE_DATABASE_URL": database_url, "PULSE_HTTP_HOST": "127.0.0.1",
                "PULSE_HTTP_PORT": str(port), "PULSE_HEALTH_PORT": "0", "PULSE_INGEST_FLUSH_MS": "20",
                "PULSE_LOG_LEVEL": "warning"})
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "web"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"pulse web did not start:\n{log.read().decode(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
