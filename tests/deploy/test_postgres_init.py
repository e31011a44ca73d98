"""deploy/postgres/init-pulse.sh, run as the database container runs it on first start, leaves a login that is no
superuser yet can run `pulse migrate` and act as every Pulse role; Keycloak gets a database of its own."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import ADMIN_URL, run_pulse
from tests.deploy.conftest import DEPLOY, requires_psql

SCRIPT = DEPLOY / "postgres/init-pulse.sh"
pytestmark = requires_psql


async def _admin(sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


@pytest.fixture
def scratch() -> Iterator[dict[str, str]]:
    """A new database as POSTGRES_DB, and names for the roles and database the script creates; all dropped after."""
    suffix = secrets.token_hex(4)
    names = {"POSTGRES_DB": f"pulse_init_{suffix}", "DB_USER": f"pulse_init_{suffix}",
             "KEYCLOAK_DB_USER": f"kc_init_{suffix}", "KEYCLOAK_DB_NAME": f"kc_init_{suffix}"}
    asyncio.run(_admin(f'CREATE DATABASE "{names["POSTGRES_DB"]}"'))
    try:
        yield names
    finally:
        for db in (names["POSTGRES_DB"], names["KEYCLOAK_DB_NAME"]):
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        for role in (names["DB_USER"], names["KEYCLOAK_DB_USER"]):
            asyncio.run(_admin(f'DROP ROLE IF EXISTS "{role}"'))


def test_the_login_migrates_and_acts_without_being_superuser(scratch: dict[str, str]) -> None:
    admin = urlsplit(ADMIN_URL)
    env = {**os.environ, "PGHOST": admin.hostname or "127.0.0.1", "PGPORT": str(admin.port or 5432),
           "POSTGRES_USER": admin.username or "postgres", "DB_PASSWORD": "db-secret-1",
           "KEYCLOAK_DB_PASSWORD": "kc-secret-1", **scratch}
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr

    url = f"postgresql://{scratch['DB_USER']}:db-secret-1@{admin.hostname}:{admin.port or 5432}/{scratch['POSTGRES_DB']}"
    migrated = run_pulse("migrate", "--seed-demo", env={"PULSE_DATABASE_URL": url, "PULSE_ENV": "test"}, timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    async def facts() -> tuple[asyncpg.Record, ...]:
        conn = await asyncpg.connect(url)
        try:
            me = await conn.fetchrow("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'devices'")
            async with conn.transaction():  # what every Pulse transaction does first
                await conn.execute("SELECT set_config('role', 'pulse_worker', true)")
                demo = await conn.fetchval("SELECT count(*) FROM tenants WHERE tenant_id = 'demo'")
            return me, owner, demo
        finally:
            await conn.close()

    me, owner, demo = asyncio.run(facts())
    assert (me["rolsuper"], me["rolcreaterole"]) == (False, False)
    assert owner == scratch["DB_USER"] and demo == 1
    keycloak = asyncio.run(_admin(
        f"SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = '{scratch['KEYCLOAK_DB_NAME']}'"))
    assert [r["owner"] for r in keycloak] == [scratch["KEYCLOAK_DB_USER"]]
