"""Security suite fixtures: one app for the session and a world of two tenants with one of every object."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from pulse.web.app import create_app
from tests.security.world import World, build_tenant
from tests.web.conftest import token_for


@pytest.fixture(scope="session")
async def api(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app as `pulse web` runs it (its own engine, ingest pipeline and live hub), for the whole suite."""
    async with AsyncTestClient(app=create_app(settings), timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
async def world(api: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> World:
    a = await build_tenant(api, engine, settings, "a")
    b = await build_tenant(api, engine, settings, "b")
    return World(a=a, b=b,
                 operator=await token_for(engine, settings, tenant_id=None, roles=["operator"]),
                 operator_admin=await token_for(engine, settings, tenant_id=None, roles=["operator-admin"]))
