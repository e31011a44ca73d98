"""The API and HTTP ingest through Debian's pgbouncer in transaction mode (deploy/pgbouncer/pgbouncer.ini), with
PULSE_DATABASE_URL's ?pgbouncer=true: two real `pulse web` processes share a small server pool, so concurrent
transactions of different clients run on the same PostgreSQL sessions one after another."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import create_engine, database_target, driver_connection, system_tx
from pulse.settings import Settings
from tests.conftest import make_tenant, run_pulse
from tests.deploy.conftest import (
    pgbouncer_setting,
    pgbouncer_show,
    pooled_url,
    requires_pgbouncer,
    start_web,
    stop,
)
from tests.web.conftest import bearer, insert_alert, token_for

pytestmark = requires_pgbouncer

ISSUER = "https://pulse.deploy.test"
ROUNDS = 12  # per client and operation; each round runs every operation at once on both web processes
WAIT_S = 15.0


@pytest.fixture(scope="module")
def webs(database_url: str, pgbouncer: int) -> Iterator[list[str]]:
    """Two `pulse web` processes whose engines go through PgBouncer."""
    url = pooled_url(database_url, pgbouncer)
    started: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(2):
            proc, base = start_web(url, PULSE_PUBLIC_URL=ISSUER, PULSE_DATABASE_POOL_SIZE="5")
            started.append(proc)
            bases.append(base)
        yield bases
    finally:
        for proc in started:
            stop(proc)


def test_the_deployed_pooler_pools_transactions() -> None:
    assert pgbouncer_setting("pool_mode") == "transaction"
    target = database_target("postgresql://pulse:pw@pgbouncer:6432/pulse?pgbouncer=true&direct=postgres:5432")
    assert (target.url, target.direct_url, target.pgbouncer) == (
        "postgresql://pulse:pw@pgbouncer:6432/pulse", "postgresql://pulse:pw@postgres:5432/pulse", True)


async def test_pooled_engines_leave_no_named_statement_on_the_server(database_url: str) -> None:
    """What makes transaction pooling safe, seen in one session: after SQLAlchemy statements (run twice, so cached
    ones are reused), raw asyncpg queries and a COPY, the session holds no prepared statement a twin could trip on."""
    parts = urlsplit(database_url)
    engine = create_engine(parts._replace(query=f"pgbouncer=true&direct={parts.hostname}:{parts.port or 5432}"
                                          ).geturl(), pool_size=1)
    try:
        for _ in range(2):
            async with engine.begin() as conn:
                await conn.execute(text("SELECT CAST(:v AS int)"), {"v": 1})
                await conn.execute(text("SELECT count(*) FROM tenants WHERE tenant_id = :t"), {"t": "x"})
                raw = await driver_connection(conn)
                await raw.fetch("SELECT $1::text", "y")
                await raw.execute("CREATE TEMP TABLE IF NOT EXISTS pooled_copy (v int) ON COMMIT DROP")
                await raw.copy_records_to_table("pooled_copy", records=[(1,), (2,)])
                named = (await conn.execute(text("SELECT name FROM pg_prepared_statements"))).scalars().all()
                assert named == []
    finally:
        await engine.dispose()


def test_pgbouncer_without_a_direct_address_is_refused_at_start(database_url: str) -> None:
    parts = urlsplit(database_url)
    done = run_pulse("migrate", env={"PULSE_DATABASE_URL": parts._replace(query="pgbouncer=true").geturl(),
                                     "PULSE_ENV": "test"})
    assert done.returncode == 2
    assert "PULSE_DATABASE_URL" in done.stderr and "direct=" in done.stderr


def test_migrate_with_the_pooled_url_runs_on_postgresql_itself(database_url: str, pgbouncer: int) -> None:
    done = run_pulse("migrate", env={"PULSE_DATABASE_URL": pooled_url(database_url, pgbouncer), "PULSE_ENV": "test"})
    assert done.returncode == 0, done.stderr


async def _admin_headers(engine: AsyncEngine, settings: Settings, tenant_id: str) -> dict[str, str]:
    return bearer(await token_for(engine, settings.replace(public_url=ISSUER), tenant_id=tenant_id,
                                  roles=["tenant-admin"]))


async def test_api_and_http_ingest_work_concurrently_through_transaction_pooling(
        webs: list[str], pgbouncer: int, engine: AsyncEngine, settings: Settings, database_url: str) -> None:
    tenant = await make_tenant(engine)
    headers = await _admin_headers(engine, settings, tenant.tenant_id)
    alerts = [await insert_alert(engine, tenant.tenant_id) for _ in range(ROUNDS * len(webs))]
    failures: list[str] = []
    tokens: dict[str, str] = {}

    async def check(what: str, response: httpx.Response, status: int) -> Any:
        if response.status_code != status:
            failures.append(f"{what}: {response.status_code} {response.text[:300]}")
            return None
        return response.json()

    async def create(client: httpx.AsyncClient, device_id: str) -> None:
        body = await check("create", await client.post("/customer/devices", headers=headers,
                                                       json={"device_id": device_id, "name": device_id}), 201)
        if body:
            tokens[device_id] = body["credentials"]["provision_token"]

    async def listing(client: httpx.AsyncClient) -> None:
        await check("list", await client.get("/api/v2/devices", headers=headers, params={"limit": 200}), 200)

    async def acknowledge(client: httpx.AsyncClient, alert_id: str) -> None:
        body = await check("ack", await client.post(f"/api/v2/alerts/{alert_id}/acknowledge", headers=headers), 200)
        if body and body["status"] != "ACKNOWLEDGED":
            failures.append(f"ack: alert {alert_id} is {body['status']}")

    async def ingest(client: httpx.AsyncClient, seq: int) -> None:
        messages = [{"tenant_id": tenant.tenant_id, "device_id": d, "token": t,
                     "message": {"seq": seq, "metrics": {"temp_c": 4.0 + seq}}} for d, t in list(tokens.items())[:5]]
        if not messages:
            return
        body = await check("ingest", await client.post("/ingest/v1/batch", json={"messages": messages}), 200)
        if body and body["accepted"] != len(messages):
            failures.append(f"ingest: {body}")

    clients = [httpx.AsyncClient(base_url=b, timeout=30.0, trust_env=False) for b in webs]
    try:
        for n in range(ROUNDS):
            work = []
            for i, client in enumerate(clients):
                work += [create(client, f"pooled-{n}-{i}"), listing(client),
                         acknowledge(client, alerts[n * len(clients) + i]), ingest(client, n * 10 + i + 1)]
            await asyncio.wait_for(asyncio.gather(*work), timeout=120)
    finally:
        for client in clients:
            await client.aclose()

    assert failures == []
    async with system_tx(engine) as conn:
        devices = (await conn.execute(text("SELECT count(*) FROM devices WHERE tenant_id = :t"),
                                      {"t": tenant.tenant_id})).scalar_one()
        acked = (await conn.execute(text("SELECT count(*) FROM alerts WHERE tenant_id = :t AND status = "
                                         "'ACKNOWLEDGED'"), {"t": tenant.tenant_id})).scalar_one()
        rows = (await conn.execute(text("SELECT count(*) FROM telemetry WHERE tenant_id = :t"),
                                   {"t": tenant.tenant_id})).scalar_one()
    assert devices == ROUNDS * len(webs) and acked == len(alerts) and rows > 0
    # it went through the pooler, whose few server connections the two processes shared
    user = urlsplit(database_url).username or "postgres"
    stats = {r["database"]: r for r in pgbouncer_show(pgbouncer, user, "STATS")}
    dbname = urlsplit(database_url).path.lstrip("/")
    assert int(stats[dbname]["total_xact_count"]) > ROUNDS * 4 * len(webs)
    servers = [r for r in pgbouncer_show(pgbouncer, user, "SERVERS") if r["database"] == dbname]
    assert 0 < len(servers) <= 6
    # the LISTEN connections of the web processes go to PostgreSQL itself, never through the pooler
    listening = [r for r in pgbouncer_show(pgbouncer, user, "CLIENTS")
                 if r["database"] == dbname and r.get("application_name", "").endswith("listen")]
    assert listening == []


async def test_live_updates_and_registry_changes_still_arrive(webs: list[str], engine: AsyncEngine,
                                                              settings: Settings) -> None:
    """What travels by LISTEN/NOTIFY (direct connections) works while the engines are pooled: a disabled device is
    refused by HTTP ingest at once, and a WebSocket subscriber sees telemetry ingested through the other process."""
    from websockets.asyncio.client import connect

    tenant = await make_tenant(engine)
    headers = await _admin_headers(engine, settings, tenant.tenant_id)
    device_id = f"live-{secrets.token_hex(3)}"
    async with httpx.AsyncClient(base_url=webs[0], timeout=30.0, trust_env=False) as first, \
            httpx.AsyncClient(base_url=webs[1], timeout=30.0, trust_env=False) as second:
        created = await first.post("/customer/devices", headers=headers, json={"device_id": device_id})
        assert created.status_code == 201, created.text
        token = created.json()["credentials"]["provision_token"]
        path = f"/ingest/v1/tenant/{tenant.tenant_id}/device/{device_id}/telemetry"
        ticket = await first.post("/api/v2/ws/ticket", headers=headers)
        assert ticket.status_code == 200, ticket.text
        ws_url = webs[0].replace("http://", "ws://") + f"/api/v2/ws?ticket={ticket.json()['ticket']}"
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "topic": "device", "device_id": device_id}))
            sent = await second.post(path, headers={"X-Provision-Token": token}, json={"seq": 1, "metrics": {"v": 7}})
            assert sent.status_code == 202, sent.text
            frame: dict[str, Any] = {}
            async with asyncio.timeout(WAIT_S):
                while frame.get("type") != "telemetry":
                    frame = json.loads(await ws.recv())
        assert frame["device_id"] == device_id and frame["metrics"] == {"v": 7}

        disabled = await first.patch(f"/customer/devices/{device_id}", headers=headers, json={"status": "DISABLED"})
        assert disabled.status_code == 200, disabled.text
        answer = None
        for seq in range(2, 200):  # the other process hears of it by NOTIFY, well before its cache would expire
            answer = await second.post(path, headers={"X-Provision-Token": token},
                                       json={"seq": seq, "metrics": {"v": seq}})
            if answer.status_code != 202:
                break
            await asyncio.sleep(0.05)
        assert answer is not None and answer.status_code == 403, answer.text if answer else None
