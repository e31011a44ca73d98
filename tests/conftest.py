"""Test fixtures: a fresh PostgreSQL database migrated from the migrations, the real broker, factories."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import create_engine, system_tx
from pulse.migrate import upgrade
from pulse.settings import Settings

ADMIN_URL = os.environ.get("PULSE_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_URL = os.environ.get("PULSE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mosquitto(conf: Path, port: int, log: Path | None = None) -> Iterator[None]:
    """Start `mosquitto -c conf`, wait until it listens on `port`, and stop it afterwards (use with yield from).
    The broker's output goes to `log` when given."""
    out = log.open("ab") if log is not None else subprocess.PIPE
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        output = proc.stdout.read().decode() if proc.stdout else log.read_text() if log else ""
        raise AssertionError(f"mosquitto did not start:\n{output}")
    yield
    proc.terminate()
    proc.wait(10)
    if log is not None:
        out.close()  # type: ignore[union-attr]


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this test run, built by the migrations, dropped afterwards."""
    name = f"pulse_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = _with_db(ADMIN_URL, name)
    upgrade(url)
    yield url
    if os.environ.get("PULSE_TEST_KEEP_DB") != "1":
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    return MQTT_URL


@pytest.fixture(scope="session")
def settings(database_url: str, mqtt_url: str) -> Settings:
    return Settings.from_env({"PULSE_ENV": "test", "PULSE_DATABASE_URL": database_url,
                              "PULSE_MQTT_URL": mqtt_url, "PULSE_ALLOW_PRIVATE_URLS": "loopback",
                              "PULSE_HEALTH_PORT": "0"})


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=5)
    yield eng
    await eng.dispose()


@dataclass
class TenantRef:
    tenant_id: str
    subscription_id: str


async def make_tenant(engine: AsyncEngine, *, device_limit: int = 1000, prefix: str = "t",
                      heartbeat_interval_s: int = 30) -> TenantRef:
    """A new tenant with an ACTIVE MAIN subscription; each test gets its own tenant."""
    tenant_id = f"{prefix}-{secrets.token_hex(4)}"
    async with system_tx(engine) as conn:
        await conn.execute(text("INSERT INTO tenants (tenant_id, name, heartbeat_interval_s) VALUES (:t, :n, :h)"),
                           {"t": tenant_id, "n": f"Tenant {tenant_id}", "h": heartbeat_interval_s})
        sub = (await conn.execute(text(
            "INSERT INTO subscriptions (tenant_id, kind, status, device_limit, term_end_at) "
            "VALUES (:t, 'MAIN', 'ACTIVE', :l, now() + interval '365 days') RETURNING subscription_id"),
            {"t": tenant_id, "l": device_limit})).scalar_one()
    return TenantRef(tenant_id, str(sub))


async def make_site(engine: AsyncEngine, tenant: TenantRef, site_id: str, name: str | None = None) -> str:
    """A site of the tenant."""
    async with system_tx(engine) as conn:
        await conn.execute(text("INSERT INTO sites (tenant_id, site_id, name) VALUES (:t, :s, :n)"),
                           {"t": tenant.tenant_id, "s": site_id, "n": name or site_id})
    return site_id


async def make_device(engine: AsyncEngine, tenant: TenantRef, device_id: str | None = None, **fields: object) -> str:
    """A registered ACTIVE device in the tenant's subscription."""
    device_id = device_id or f"dev-{secrets.token_hex(4)}"
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO devices (tenant_id, device_id, subscription_id, name, device_type, tags) "
            "VALUES (:t, :d, :s, :n, :dt, :tags)"),
            {"t": tenant.tenant_id, "d": device_id, "s": tenant.subscription_id, "n": fields.get("name", device_id),
             "dt": fields.get("device_type", "sensor"), "tags": list(fields.get("tags", []))})  # type: ignore[call-overload]
        await conn.execute(text("INSERT INTO device_state (tenant_id, device_id) VALUES (:t, :d)"),
                           {"t": tenant.tenant_id, "d": device_id})
    return device_id


def run_pulse(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the `pulse` command as a user would."""
    import sys

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pulse", *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_pulse(command: str, url: str, **settings: str) -> subprocess.Popen[bytes]:
    """`pulse <command>` against `url` in test mode, quiet, on a free health port; `settings`: more PULSE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_DATABASE_URL": url, "PULSE_ENV": "test", "PULSE_HEALTH_PORT": "0",
                "PULSE_LOG_LEVEL": "warning", **settings})
    return subprocess.Popen([sys.executable, "-m", "pulse", command], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A real local HTTP receiver (tests.notify.test_delivery.Receiver) for webhook channels and contact methods."""
    from tests.notify.test_delivery import Receiver

    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()
