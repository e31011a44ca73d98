"""The subscription lifecycle as users notice it: the job suspends a lapsed subscription and HTTP ingest refuses its
device (quarantined SUBSCRIPTION_SUSPENDED); an operator's renewal over the API lets it back in at once; the tenant
sees every change in its audit log; operator checks on add-ons and conversion answer 4xx naming the field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.lifecycle import run_lifecycle
from pulse.fleet.service import issue_credentials
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.web.conftest import bearer, token_for
from tests.web.test_operator_api import ingest, ingest_until, operator

Client = AsyncTestClient[Litestar]


async def test_a_lapsed_subscription_is_refused_by_ingest_until_renewed(engine: AsyncEngine, settings: Settings,
                                                                        client: Client) -> None:
    _, auth = await operator(engine, settings)
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    now = datetime.now(UTC)
    async with system_tx(engine) as conn:
        token = (await issue_credentials(conn, tenant.tenant_id, device, now=now)).provision_token
        await conn.execute(text("UPDATE subscriptions SET term_end_at = :end, grace_days = 0 "
                                "WHERE subscription_id = CAST(:s AS uuid)"),
                           {"end": now - timedelta(hours=1), "s": tenant.subscription_id})
    assert (await ingest(client, tenant.tenant_id, device, token, seq=1)).status_code == 202  # cached as usable

    async with system_tx(engine) as conn:  # the lifecycle job's run: ACTIVE → GRACE → SUSPENDED (no grace days)
        run = await run_lifecycle(conn, now=now, expire_after_days=30, tenant_ids=[tenant.tenant_id])
    assert run.transitions == 2
    r = await ingest_until(client, tenant.tenant_id, device, token, 403, "SUBSCRIPTION_SUSPENDED")
    assert r.json()["error"]["details"]["reason"] == "SUBSCRIPTION_SUSPENDED"

    async def quarantined() -> int:
        async with system_tx(engine) as conn:
            return int((await conn.execute(text(
                "SELECT count(*) FROM quarantine_events WHERE tenant_id = :t AND device_id = :d "
                "AND transport = 'HTTP' AND reason = 'SUBSCRIPTION_SUSPENDED'"),
                {"t": tenant.tenant_id, "d": device})).scalar_one())

    for _ in range(100):  # the refused message is filed with the next quarantine batch (within a second)
        if await quarantined():
            break
        await asyncio.sleep(0.1)
    assert await quarantined() >= 1

    r = await client.patch(f"/operator/subscriptions/{tenant.subscription_id}", headers=auth,
                           json={"expires_at": (now + timedelta(days=365)).isoformat(), "device_limit": 50})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["device_limit"]) == ("ACTIVE", 50)
    await ingest_until(client, tenant.tenant_id, device, token, 202)

    admin = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"]))
    r = await client.get("/customer/audit-log", headers=admin)
    assert r.status_code == 200, r.text
    changes = [(e["action"], e["details"].get("to"), e["details"].get("reason")) for e in r.json()["items"]
               if e["action"].startswith("subscription.")]
    assert sorted(changes) == sorted([("subscription.status_changed", "GRACE", "TERM_ENDED"),
                                      ("subscription.status_changed", "SUSPENDED", "GRACE_ENDED"),
                                      ("subscription.status_changed", "ACTIVE", "RENEWED")])


async def test_operator_api_checks_addon_parents_and_conversions(engine: AsyncEngine, settings: Settings,
                                                                 client: Client) -> None:
    _, auth = await operator(engine, settings)
    tenant = await make_tenant(engine)
    base = f"/operator/tenants/{tenant.tenant_id}/subscriptions"
    trial = (await client.post(base, headers=auth, json={"kind": "TRIAL", "device_limit": 5})).json()
    r = await client.post(base, headers=auth, json={"kind": "ADDON", "device_limit": 5,
                                                    "parent_subscription_id": trial["subscription_id"]})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "parent_subscription_id"
    assert "MAIN" in r.json()["error"]["message"]
    r = await client.post(base, headers=auth, json={"kind": "ADDON", "device_limit": 5,
                                                    "parent_subscription_id": tenant.subscription_id})
    assert r.status_code == 201 and r.json()["grace_days"] == settings.subscription_grace_days

    r = await client.patch(f"/operator/subscriptions/{trial['subscription_id']}", headers=auth, json={"kind": "MAIN"})
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "kind"  # the tenant has a MAIN
    r = await client.patch(f"/operator/subscriptions/{tenant.subscription_id}", headers=auth, json={"kind": "ADDON"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "kind"

    other = await make_tenant(engine)
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE subscriptions SET kind = 'TRIAL', status = 'EXPIRED' "
                                "WHERE subscription_id = CAST(:s AS uuid)"), {"s": other.subscription_id})
    r = await client.patch(f"/operator/subscriptions/{other.subscription_id}", headers=auth,
                           json={"kind": "MAIN", "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()})
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["status"]) == ("MAIN", "ACTIVE")
