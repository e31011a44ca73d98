"""Database access: engine factory (nothing created at import) and role/tenant-scoped transactions.

Every transaction Pulse opens declares who it acts as:

- ``tenant_tx``   -> role ``pulse_app`` with ``app.tenant_id`` set: row-level security shows one tenant.
- ``operator_tx`` -> role ``pulse_operator`` (BYPASSRLS); callers write an operator_audit_log row.
- ``ingest_tx``   -> role ``pulse_ingest``: may read the device registry and write telemetry/state.
- ``system_tx``   -> role ``pulse_worker`` (BYPASSRLS) for background processes acting for the platform.

The role is set with ``set_config(..., true)`` so it lasts exactly one transaction, which also
keeps it correct behind PgBouncer in transaction pooling mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

APP_ROLE = "pulse_app"
OPERATOR_ROLE = "pulse_operator"
INGEST_ROLE = "pulse_ingest"
WORKER_ROLE = "pulse_worker"

_SCOPE = text("SELECT set_config('role', :role, true), set_config('app.tenant_id', :tenant, true)")


def sqlalchemy_url(database_url: str) -> str:
    return "postgresql+asyncpg://" + database_url.split("://", 1)[1]


def create_engine(database_url: str, *, pool_size: int = 10, application_name: str = "pulse") -> AsyncEngine:
    """An AsyncEngine over asyncpg. Callers own it and dispose of it."""
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": application_name}},
    )


@asynccontextmanager
async def scoped_tx(engine: AsyncEngine, role: str, tenant_id: str | None = None) -> AsyncIterator[AsyncConnection]:
    """One transaction acting as `role` (and tenant). Commits on success, rolls back on error."""
    async with engine.begin() as conn:
        await conn.execute(_SCOPE, {"role": role, "tenant": tenant_id or ""})
        yield conn


def tenant_tx(engine: AsyncEngine, tenant_id: str) -> Any:
    if not tenant_id:
        raise ValueError("tenant_tx needs a tenant id")
    return scoped_tx(engine, APP_ROLE, tenant_id)


def operator_tx(engine: AsyncEngine) -> Any:
    return scoped_tx(engine, OPERATOR_ROLE)


def ingest_tx(engine: AsyncEngine) -> Any:
    return scoped_tx(engine, INGEST_ROLE)


def system_tx(engine: AsyncEngine) -> Any:
    return scoped_tx(engine, WORKER_ROLE)


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy connection, for COPY and other hot paths."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


async def connect_raw(database_url: str, application_name: str = "pulse-listen") -> asyncpg.Connection:
    """A dedicated asyncpg connection (LISTEN needs one of its own)."""
    return await asyncpg.connect(database_url, server_settings={"application_name": application_name})
