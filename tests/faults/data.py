"""Database helpers for fault tests: many devices at once, and what was stored, read on fresh connections (a
restarted server has closed every pooled one)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from tests.conftest import TenantRef
from tests.faults.mqtt_tools import Key


async def add_devices(engine: AsyncEngine, tenant: TenantRef, device_ids: list[str]) -> None:
    """Register ACTIVE devices (with their device_state rows) in one transaction."""
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO devices (tenant_id, device_id, subscription_id, name, device_type) "
            "SELECT :t, d, CAST(:s AS uuid), d, 'sensor' FROM unnest(CAST(:ids AS text[])) d"),
            {"t": tenant.tenant_id, "s": tenant.subscription_id, "ids": device_ids})
        await conn.execute(text(
            "INSERT INTO device_state (tenant_id, device_id) SELECT :t, d FROM unnest(CAST(:ids AS text[])) d"),
            {"t": tenant.tenant_id, "ids": device_ids})


async def stored_keys(database_url: str, tenant_id: str, msg_type: str = "telemetry") -> Counter[Key]:
    """How many telemetry rows each (device_id, seq) of the tenant has."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT device_id, seq, count(*) AS n FROM telemetry WHERE tenant_id = $1 "
                                "AND msg_type = $2 GROUP BY device_id, seq", tenant_id, msg_type)
    finally:
        await conn.close()
    return Counter({(r["device_id"], r["seq"]): r["n"] for r in rows})


async def fetch(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def fetchval(database_url: str, sql: str, *args: object) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
