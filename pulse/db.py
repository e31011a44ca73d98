"""Database access: engine factory (nothing created at import) and role/tenant-scoped transactions.

Every transaction Pulse opens declares who it acts as:

- ``tenant_tx``   -> role ``pulse_app`` with ``app.tenant_id`` set: row-level security shows one tenant.
- ``operator_tx`` -> role ``pulse_operator`` (BYPASSRLS); callers write an operator_audit_log row.
- ``ingest_tx``   -> role ``pulse_ingest``: may read the device registry and write telemetry/state.
- ``system_tx``   -> role ``pulse_worker`` (BYPASSRLS) for background processes acting for the platform.

The role is set with ``set_config(..., true)`` so it lasts exactly one transaction, which also
keeps it correct behind PgBouncer in transaction pooling mode.

Behind PgBouncer (transaction pooling), PULSE_DATABASE_URL names the pooler and carries two parameters of
Pulse's own, which are removed before the URL reaches the driver::

    postgresql://pulse:secret@pgbouncer:6432/pulse?pgbouncer=true&direct=postgres:5432

``pgbouncer=true`` makes every statement an unnamed one, parsed in the transaction that runs it: two clients
sharing a server connection can never clash on a statement name, and nothing is left behind on the server.
``direct=host:port`` is PostgreSQL itself, used for what transaction pooling cannot carry: LISTEN connections
(``connect_raw``) and migrations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

APP_ROLE = "pulse_app"
OPERATOR_ROLE = "pulse_operator"
INGEST_ROLE = "pulse_ingest"
WORKER_ROLE = "pulse_worker"

_SCOPE = text("SELECT set_config('role', :role, true), set_config('app.tenant_id', :tenant, true)")

PGBOUNCER_PARAM = "pgbouncer"
DIRECT_PARAM = "direct"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class DatabaseTarget:
    """Where a PULSE_DATABASE_URL leads: the pooled URL, PostgreSQL itself, and whether PgBouncer is between."""

    url: str
    """What engines connect to (PgBouncer or PostgreSQL), without Pulse's own parameters."""
    direct_url: str
    """PostgreSQL itself: LISTEN connections and migrations (equal to `url` without PgBouncer)."""
    pgbouncer: bool


def database_target(database_url: str) -> DatabaseTarget:
    """Split PULSE_DATABASE_URL into its targets; ValueError names a bad `pgbouncer` or `direct` parameter."""
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in (PGBOUNCER_PARAM, DIRECT_PARAM)}
    if not ours:
        return DatabaseTarget(database_url, database_url, False)
    flag = ours.get(PGBOUNCER_PARAM, "false").strip().lower()
    if flag not in _TRUE + _FALSE:
        raise ValueError(f"{PGBOUNCER_PARAM}= must be true or false, got {flag!r}")
    pooled = flag in _TRUE
    direct = ours.get(DIRECT_PARAM, "").strip()
    if pooled and not direct:
        raise ValueError(f"{PGBOUNCER_PARAM}=true needs {DIRECT_PARAM}=<host>:<port> of PostgreSQL itself "
                         "(LISTEN and migrations cannot go through transaction pooling)")
    rest = [(k, v) for k, v in query if k not in ours]
    url = urlunsplit(parts._replace(query=urlencode(rest)))
    if not direct:
        return DatabaseTarget(url, url, pooled)
    host, _, port = direct.rpartition(":") if direct.rpartition(":")[2].isdigit() else (direct, "", "")
    if not host or "/" in host or "@" in host:
        raise ValueError(f"{DIRECT_PARAM}= must be <host>:<port> of PostgreSQL, got {direct!r}")
    if port and not 0 < int(port) < 65536:
        raise ValueError(f"{DIRECT_PARAM}= has a bad port {port!r}")
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host + (":" + port if port else "")
    direct_query = [(k, v) for k, v in rest if k not in ("host", "port")]
    return DatabaseTarget(url, urlunsplit(parts._replace(netloc=netloc, query=urlencode(direct_query))), pooled)


def _unnamed_statement() -> str:
    return ""


def _asyncpg_url(url: str) -> str:
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def sqlalchemy_url(database_url: str) -> str:
    return _asyncpg_url(database_target(database_url).url)


def create_engine(database_url: str, *, pool_size: int = 10, application_name: str = "pulse") -> AsyncEngine:
    """An AsyncEngine over asyncpg. Callers own it and dispose of it."""
    target = database_target(database_url)
    connect_args: dict[str, Any] = {"server_settings": {"application_name": application_name}}
    if target.pgbouncer:
        # Unnamed statements only: asyncpg's own (statement cache off; asyncpg >= 0.31 also for COPY) and
        # SQLAlchemy's (the name function gives the unnamed statement, which asyncpg re-parses in the transaction
        # that runs it, also when SQLAlchemy reuses its statement object). Unique names (a uuid per statement)
        # would avoid clashes too, but leave every named statement behind on whichever server connection it was
        # made on, since asyncpg closes it later, through another one.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unnamed_statement
    return create_async_engine(
        _asyncpg_url(target.url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
        json_deserializer=msgspec.json.decode,  # jsonb columns: the same values as json.loads, several times faster
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
    """A dedicated asyncpg session with PostgreSQL itself, bypassing PgBouncer (LISTEN needs one of its own)."""
    return await asyncpg.connect(database_target(database_url).direct_url,
                                 server_settings={"application_name": application_name})


DATA_ERROR_CLASSES = ("22", "23", "54")
"""SQLSTATE classes that a statement's own values cause (data exception, integrity violation, program limit):
retrying the same statement fails the same way, while other statements go through."""


def error_chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (SQLAlchemy's `orig`, causes), outermost first."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out and len(out) < 10:
        out.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return out


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a database error, wherever it is in the chain; None for other errors."""
    for e in error_chain(exc):
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_data_error(exc: BaseException) -> bool:
    """Whether the statement's own values were refused (DATA_ERROR_CLASSES, or asyncpg could not encode one), as
    opposed to the database being unreachable or busy."""
    if any(isinstance(e, asyncpg.exceptions.DataError) for e in error_chain(exc)):
        return True
    state = sqlstate(exc)
    return state is not None and state[:2] in DATA_ERROR_CLASSES
