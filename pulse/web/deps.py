"""Handler dependencies: the caller (principal), one tenant-scoped transaction per request, time, settings.

A handler names what it needs as a parameter: `principal: PrincipalDep`, `tenant_conn: TenantConnDep`,
`now: NowDep`, `settings: SettingsDep`, `engine: EngineDep`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypeAlias

from litestar import Request
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pulse.db import tenant_tx
from pulse.errors import Forbidden
from pulse.settings import Settings
from pulse.web.auth import Principal, authenticate_connection
from pulse.web.context import context_of, engine_of

# Handler parameter types: the parameter's name selects the dependency, the type documents it.
PrincipalDep: TypeAlias = NamedDependency[Principal]
TenantConnDep: TypeAlias = NamedDependency[AsyncConnection]
NowDep: TypeAlias = NamedDependency[datetime]
SettingsDep: TypeAlias = NamedDependency[Settings]
EngineDep: TypeAlias = NamedDependency[AsyncEngine]


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return await authenticate_connection(request)


def require_tenant(principal: Principal) -> str:
    """The caller's tenant, from the token only; a token without one gets 403 on tenant APIs."""
    if not principal.tenant_id:
        raise Forbidden("this token carries no tenant_id claim; tenant APIs need a tenant user")
    return principal.tenant_id


async def provide_tenant_conn(request: Request[Any, Any, Any],
                              principal: PrincipalDep) -> AsyncIterator[AsyncConnection]:
    """A transaction as `pulse_app` scoped to the token's tenant; commits after the handler, rolls back on error."""
    async with tenant_tx(engine_of(request), require_tenant(principal)) as conn:
        yield conn


def provide_now(request: Request[Any, Any, Any]) -> datetime:
    """The time at request entry; handlers pass it to services rather than reading a clock."""
    return context_of(request).clock.now()


def provide_settings(request: Request[Any, Any, Any]) -> Settings:
    return context_of(request).settings


def provide_engine(request: Request[Any, Any, Any]) -> AsyncEngine:
    return engine_of(request)


DEPENDENCIES: dict[str, Provide] = {
    "principal": Provide(provide_principal),
    "tenant_conn": Provide(provide_tenant_conn),
    "now": Provide(provide_now, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "engine": Provide(provide_engine, sync_to_thread=False),
}
