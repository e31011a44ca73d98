"""Operator API: tenants, subscriptions (and what suspension does to ingest), fleet-wide devices and alerts, system
health and the audit log; operator roles only, one audit row per request."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.service import issue_credentials
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.web.conftest import bearer, insert_alert, token_for

Client = AsyncTestClient[Litestar]


async def operator(engine: AsyncEngine, settings: Settings, *roles: str) -> tuple[str, dict[str, str]]:
    """An operator token with an email of its own, so the test can find exactly its audit rows."""
    email = f"noc-{secrets.token_hex(4)}@pulse.example"
    token = await token_for(engine, settings, tenant_id=None, roles=list(roles or ("operator",)), email=email)
    return email, bearer(token)


async def audit_rows(engine: AsyncEngine, actor: str) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT action, tenant_id, resource, details, actor_roles, request_id FROM operator_audit_log "
            "WHERE actor = :a ORDER BY audit_id"), {"a": actor})).all())


def new_tenant_id() -> str:
    return f"op-{secrets.token_hex(4)}"


async def ingest(client: Client, tenant_id: str, device: str, token: str, seq: int) -> Any:
    return await client.post(f"/ingest/v1/tenant/{tenant_id}/device/{device}/telemetry",
                             content=json.dumps({"seq": seq, "metrics": {"temp_c": 20.0}}),
                             headers={"X-Provision-Token": token, "Content-Type": "application/json"})


async def ingest_until(client: Client, tenant_id: str, device: str, token: str, status: int,
                       code: str | None = None) -> Any:
    """Send until ingest answers `status` (the registry change reaches ingest's cache by NOTIFY, moments after the
    commit); gives up well before the cache TTL (60 s) would have expired the entry on its own."""
    r = None
    for attempt in range(50):
        r = await ingest(client, tenant_id, device, token, seq=secrets.randbelow(10**9) + attempt)
        if r.status_code == status and (code is None or r.json()["error"]["code"] == code):
            return r
        await asyncio.sleep(0.2)
    assert r is not None
    raise AssertionError(f"ingest kept answering {r.status_code} {r.text}")


# --- tenants -----------------------------------------------------------------------------------------------------

async def test_operator_creates_lists_reads_and_changes_tenants_each_call_audited_once(
        engine: AsyncEngine, settings: Settings, client: Client) -> None:
    actor, auth = await operator(engine, settings)
    tenant_id = new_tenant_id()
    r = await client.post("/operator/tenants", headers=auth, json={
        "tenant_id": tenant_id, "name": "Acme Water", "device_limit": 25, "contact_email": "ops@acme.example",
        "timezone": "Europe/Berlin"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["name"], created["status"], created["timezone"], created["contact_email"]) == (
        "Acme Water", "ACTIVE", "Europe/Berlin", "ops@acme.example")
    [main] = created["subscriptions"]
    assert (main["kind"], main["status"], main["device_limit"], main["device_count"]) == ("MAIN", "ACTIVE", 25, 0)
    assert created["device_limit"] == 25

    ref = TenantRef(tenant_id, main["subscription_id"])
    device_a, _ = await make_device(engine, ref), await make_device(engine, ref)
    await insert_alert(engine, tenant_id, device_id=device_a)
    await insert_alert(engine, tenant_id, device_id=device_a, status="ACKNOWLEDGED")
    await insert_alert(engine, tenant_id, device_id=device_a, status="CLOSED")

    r = await client.get("/operator/tenants", params={"q": tenant_id.upper()}, headers=auth)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 1 and (page["limit"], page["offset"]) == (50, 0)
    [row] = page["items"]
    assert (row["tenant_id"], row["device_count"], row["open_alert_count"], row["device_limit"]) == (
        tenant_id, 2, 2, 25)

    r = await client.patch(f"/operator/tenants/{tenant_id}", headers=auth,
                           json={"name": "Acme Water GmbH", "contact_email": None})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["contact_email"]) == ("Acme Water GmbH", None)

    r = await client.get(f"/operator/tenants/{tenant_id}", headers=auth)
    assert r.status_code == 200 and r.json()["name"] == "Acme Water GmbH"
    assert r.json()["subscriptions"][0]["device_count"] == 2

    r = await client.get("/operator/tenants", params={"q": tenant_id, "status": "suspended"}, headers=auth)
    assert r.status_code == 200 and r.json()["total"] == 0

    rows = await audit_rows(engine, actor)
    assert [(x.action, x.tenant_id, x.resource) for x in rows] == [
        ("POST /operator/tenants", tenant_id, "/operator/tenants"),
        ("GET /operator/tenants", None, "/operator/tenants"),
        ("PATCH /operator/tenants/{tenant_id}", tenant_id, f"/operator/tenants/{tenant_id}"),
        ("GET /operator/tenants/{tenant_id}", tenant_id, f"/operator/tenants/{tenant_id}"),
        ("GET /operator/tenants", None, "/operator/tenants"),
    ]
    assert rows[0].details["changes"]["device_limit"] == 25 and "error" not in rows[0].details
    assert rows[1].details == {"q": tenant_id.upper()}
    assert rows[2].details == {"changes": {"name": "Acme Water GmbH", "contact_email": None}}
    assert rows[0].actor_roles == ["operator"] and all(x.request_id for x in rows)


async def test_refused_requests_are_audited_too_and_change_nothing(engine: AsyncEngine, settings: Settings,
                                                                   client: Client) -> None:
    actor, auth = await operator(engine, settings)
    tenant = await make_tenant(engine)
    r = await client.post("/operator/tenants", headers=auth, json={"tenant_id": tenant.tenant_id, "name": "Again"})
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "tenant_id"
    r = await client.get("/operator/tenants/nobody-here", headers=auth)
    assert r.status_code == 404
    r = await client.patch(f"/operator/tenants/{tenant.tenant_id}", headers=auth, json={"status": "DELETED"})
    assert r.status_code == 403  # deleting needs operator-admin
    r = await client.get(f"/operator/tenants/{tenant.tenant_id}", headers=auth)
    assert r.json()["status"] == "ACTIVE" and r.json()["name"] == f"Tenant {tenant.tenant_id}"

    rows = await audit_rows(engine, actor)
    assert [(x.action, x.tenant_id, x.details.get("error")) for x in rows] == [
        ("POST /operator/tenants", tenant.tenant_id, {"status": 409}),
        ("GET /operator/tenants/{tenant_id}", "nobody-here", {"status": 404}),
        ("PATCH /operator/tenants/{tenant_id}", tenant.tenant_id, {"status": 403}),
        ("GET /operator/tenants/{tenant_id}", tenant.tenant_id, None),
    ]

    admin_actor, admin = await operator(engine, settings, "operator-admin")
    r = await client.patch(f"/operator/tenants/{tenant.tenant_id}", headers=admin, json={"status": "DELETED"})
    assert r.status_code == 200 and r.json()["status"] == "DELETED"
    assert len(await audit_rows(engine, admin_actor)) == 1


async def test_bad_input_is_a_400_naming_the_field(engine: AsyncEngine, settings: Settings, client: Client) -> None:
    actor, auth = await operator(engine, settings, "operator-admin")
    tenant = await make_tenant(engine)
    good = {"tenant_id": new_tenant_id(), "name": "Fine"}
    cases: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, str]] = [
        ("POST", "/operator/tenants", {**good, "tenant_id": "Not Valid!"}, None, "tenant_id"),
        ("POST", "/operator/tenants", {**good, "name": "  "}, None, "name"),
        ("POST", "/operator/tenants", {**good, "device_limit": -1}, None, "device_limit"),
        ("POST", "/operator/tenants", {**good, "device_limit": "ten"}, None, "device_limit"),
        ("POST", "/operator/tenants", {**good, "timezone": "Mars/Olympus"}, None, "timezone"),
        ("POST", "/operator/tenants", {**good, "contact_email": "nobody"}, None, "contact_email"),
        ("POST", "/operator/tenants", {**good, "subscription_kind": "ADDON"}, None, "subscription_kind"),
        ("POST", "/operator/tenants", {**good, "is_active": True}, None, "is_active"),
        ("POST", "/operator/tenants", {"name": "no id"}, None, "tenant_id"),
        ("PATCH", f"/operator/tenants/{tenant.tenant_id}", {"status": "CLOSED"}, None, "status"),
        ("GET", "/operator/tenants", None, {"status": "NOPE"}, "status"),
        ("GET", "/operator/tenants", None, {"limit": 0}, "limit"),
        ("GET", "/operator/tenants", None, {"offset": -1}, "offset"),
        ("GET", "/operator/devices", None, {"offset": 99999999999999999999}, "offset"),
        ("GET", "/operator/tenants", None, {"q": "a\x00b"}, "q"),
        ("GET", "/operator/devices", None, {"q": "a\x00b"}, "q"),
        ("GET", "/operator/alerts", None, {"tenant_id": "a\x00b"}, "tenant_id"),
        ("GET", "/operator/audit-log", None, {"actor": "a\x00b"}, "actor"),
        ("GET", "/operator/quarantine/events", None, {"tenant_id": "a\x00b"}, "tenant_id"),
        ("POST", "/operator/tenants", {**good, "contact_email": "a\x00b@example.com"}, None, "contact_email"),
        ("GET", "/operator/tenants/Bad_Id", None, None, "tenant_id"),
        ("POST", f"/operator/tenants/{tenant.tenant_id}/subscriptions", {"kind": "GOLD", "device_limit": 5}, None,
         "kind"),
        ("POST", f"/operator/tenants/{tenant.tenant_id}/subscriptions", {"kind": "ADDON", "device_limit": 5}, None,
         "parent_subscription_id"),
        ("POST", f"/operator/tenants/{tenant.tenant_id}/subscriptions",
         {"kind": "TEMPORARY", "device_limit": 5, "expires_at": "2030-01-01T00:00:00"}, None, "expires_at"),
        ("POST", f"/operator/tenants/{tenant.tenant_id}/subscriptions",
         {"kind": "TEMPORARY", "device_limit": 5, "expires_at": "2001-01-01T00:00:00Z"}, None, "expires_at"),
        ("PATCH", f"/operator/subscriptions/{tenant.subscription_id}", {"status": "PAUSED"}, None, "status"),
        ("PATCH", f"/operator/subscriptions/{tenant.subscription_id}", {"device_limit": -5}, None, "device_limit"),
        ("PATCH", "/operator/subscriptions/not-a-uuid", {"status": "ACTIVE"}, None, "subscription_id"),
        ("GET", "/operator/devices", None, {"state": "ASLEEP"}, "state"),
        ("GET", "/operator/devices", None, {"status": "GONE"}, "status"),
        ("GET", "/operator/alerts", None, {"severity_min": 9}, "severity_min"),
        ("GET", "/operator/alerts", None, {"status": "OPEN,SNOOZED"}, "status"),
        ("GET", "/operator/audit-log", None, {"from": "yesterday"}, "from"),
        ("GET", "/operator/audit-log", None, {"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, "to"),
    ]
    for method, path, body, params, field in cases:
        r = await client.request(method, path, json=body, params=params, headers=auth)
        assert r.status_code == 400, (method, path, body, params, r.text)
        assert r.json()["error"]["details"]["field"] == field, (path, body, params, r.text)
    async with system_tx(engine) as conn:
        subs = (await conn.execute(text("SELECT count(*) FROM subscriptions WHERE tenant_id = :t"),
                                   {"t": tenant.tenant_id})).scalar_one()
        status = (await conn.execute(text("SELECT status FROM subscriptions WHERE subscription_id = :s"),
                                     {"s": tenant.subscription_id})).scalar_one()
    assert (subs, status) == (1, "ACTIVE")
    rows = await audit_rows(engine, actor)
    assert [(x.action.split(" ")[0], x.resource) for x in rows] == [(m, p) for m, p, _, _, _ in cases]
    assert all(x.details["error"] == {"status": 400} for x in rows)


@pytest.mark.parametrize("roles", [["customer"], ["tenant-admin"], ["customer", "tenant-admin"]])
async def test_tenant_users_get_403_everywhere_and_leave_no_audit_row(
        engine: AsyncEngine, settings: Settings, client: Client, roles: list[str]) -> None:
    tenant = await make_tenant(engine)
    email = f"user-{secrets.token_hex(4)}@tenant.example"
    auth = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=roles, email=email))
    calls = [
        ("GET", "/operator/tenants", None), ("POST", "/operator/tenants", {"tenant_id": new_tenant_id(), "name": "x"}),
        ("GET", f"/operator/tenants/{tenant.tenant_id}", None),
        ("PATCH", f"/operator/tenants/{tenant.tenant_id}", {"status": "SUSPENDED"}),
        ("GET", f"/operator/tenants/{tenant.tenant_id}/subscriptions", None),
        ("POST", f"/operator/tenants/{tenant.tenant_id}/subscriptions", {"kind": "TRIAL", "device_limit": 1}),
        ("PATCH", f"/operator/subscriptions/{tenant.subscription_id}", {"status": "SUSPENDED"}),
        ("POST", f"/operator/subscriptions/{tenant.subscription_id}/suspend", None),
        ("POST", f"/operator/subscriptions/{tenant.subscription_id}/resume", None),
        ("GET", "/operator/devices", None), ("GET", "/operator/alerts", None), ("GET", "/operator/health", None),
        ("GET", "/operator/audit-log", None),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=auth)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    r = await client.get("/operator/tenants")
    assert r.status_code == 401
    async with system_tx(engine) as conn:
        status = (await conn.execute(text("SELECT status FROM tenants WHERE tenant_id = :t"),
                                     {"t": tenant.tenant_id})).scalar_one()
    assert status == "ACTIVE"
    assert await audit_rows(engine, email) == []


# --- subscriptions -----------------------------------------------------------------------------------------------

async def test_subscriptions_list_add_and_change(engine: AsyncEngine, settings: Settings, client: Client) -> None:
    actor, auth = await operator(engine, settings)
    tenant = await make_tenant(engine, device_limit=10)
    base = f"/operator/tenants/{tenant.tenant_id}/subscriptions"
    r = await client.post(base, headers=auth, json={"kind": "MAIN", "device_limit": 5})
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "kind"

    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    r = await client.post(base, headers=auth, json={
        "kind": "ADDON", "device_limit": 50, "parent_subscription_id": tenant.subscription_id,
        "expires_at": expires.isoformat(), "description": "winter sensors"})
    assert r.status_code == 201, r.text
    addon = r.json()
    assert (addon["kind"], addon["status"], addon["device_limit"], addon["parent_subscription_id"],
            addon["tenant_id"]) == ("ADDON", "ACTIVE", 50, tenant.subscription_id, tenant.tenant_id)
    assert datetime.fromisoformat(addon["expires_at"]) == expires

    other = await make_tenant(engine)
    r = await client.post(base, headers=auth, json={"kind": "ADDON", "device_limit": 1,
                                                    "parent_subscription_id": other.subscription_id})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "parent_subscription_id"

    r = await client.patch(f"/operator/subscriptions/{addon['subscription_id']}", headers=auth,
                           json={"device_limit": 75, "expires_at": None})
    assert r.status_code == 200, r.text
    assert (r.json()["device_limit"], r.json()["expires_at"], r.json()["status"]) == (75, None, "ACTIVE")

    r = await client.get(base, headers=auth, params={"limit": 1})
    assert r.status_code == 200
    page = r.json()
    assert (page["total"], [s["kind"] for s in page["items"]]) == (2, ["MAIN"])
    r = await client.get(base, headers=auth, params={"limit": 1, "offset": 1})
    assert [s["subscription_id"] for s in r.json()["items"]] == [addon["subscription_id"]]

    r = await client.get(f"/operator/tenants/{tenant.tenant_id}", headers=auth)
    assert r.json()["device_limit"] == 85

    r = await client.get("/operator/tenants/no-such-tenant/subscriptions", headers=auth)
    assert r.status_code == 404
    r = await client.patch("/operator/subscriptions/00000000-0000-0000-0000-000000000000", headers=auth,
                           json={"device_limit": 1})
    assert r.status_code == 404

    rows = await audit_rows(engine, actor)
    sub_path = f"/operator/subscriptions/{addon['subscription_id']}"
    assert [(x.action, x.tenant_id, x.resource) for x in rows] == [
        ("POST /operator/tenants/{tenant_id}/subscriptions", tenant.tenant_id, base),
        ("POST /operator/tenants/{tenant_id}/subscriptions", tenant.tenant_id, base),
        ("POST /operator/tenants/{tenant_id}/subscriptions", tenant.tenant_id, base),
        ("PATCH /operator/subscriptions/{subscription_id}", tenant.tenant_id, sub_path),
        ("GET /operator/tenants/{tenant_id}/subscriptions", tenant.tenant_id, base),
        ("GET /operator/tenants/{tenant_id}/subscriptions", tenant.tenant_id, base),
        ("GET /operator/tenants/{tenant_id}", tenant.tenant_id, f"/operator/tenants/{tenant.tenant_id}"),
        ("GET /operator/tenants/{tenant_id}/subscriptions", "no-such-tenant",
         "/operator/tenants/no-such-tenant/subscriptions"),
        ("PATCH /operator/subscriptions/{subscription_id}", None,
         "/operator/subscriptions/00000000-0000-0000-0000-000000000000"),
    ]
    assert rows[3].details == {"changes": {"device_limit": 75, "expires_at": None}}


async def test_suspending_a_subscription_stops_http_ingest_and_resuming_lets_it_back(
        engine: AsyncEngine, settings: Settings, client: Client) -> None:
    actor, auth = await operator(engine, settings)
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        token = (await issue_credentials(conn, tenant.tenant_id, device, now=datetime.now(UTC))).provision_token
    r = await ingest(client, tenant.tenant_id, device, token, seq=1)
    assert r.status_code == 202, r.text  # ingest now holds the device's registry record in its cache

    r = await client.post(f"/operator/subscriptions/{tenant.subscription_id}/suspend", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "SUSPENDED"
    r = await ingest_until(client, tenant.tenant_id, device, token, 403, "SUBSCRIPTION_SUSPENDED")
    assert r.json()["error"]["details"]["reason"] == "SUBSCRIPTION_SUSPENDED"
    r = await client.post(f"/operator/subscriptions/{tenant.subscription_id}/suspend", headers=auth)
    assert r.status_code == 409

    r = await client.post(f"/operator/subscriptions/{tenant.subscription_id}/resume", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "ACTIVE"
    await ingest_until(client, tenant.tenant_id, device, token, 202)

    r = await client.patch(f"/operator/subscriptions/{tenant.subscription_id}", headers=auth,
                           json={"status": "EXPIRED"})
    assert r.status_code == 200 and r.json()["status"] == "EXPIRED"
    await ingest_until(client, tenant.tenant_id, device, token, 403, "SUBSCRIPTION_EXPIRED")
    r = await client.patch(f"/operator/subscriptions/{tenant.subscription_id}", headers=auth,
                           json={"status": "ACTIVE"})
    assert r.status_code == 200
    await ingest_until(client, tenant.tenant_id, device, token, 202)

    r = await client.patch(f"/operator/tenants/{tenant.tenant_id}", headers=auth, json={"status": "SUSPENDED"})
    assert r.status_code == 200 and r.json()["status"] == "SUSPENDED"
    await ingest_until(client, tenant.tenant_id, device, token, 403, "SUBSCRIPTION_SUSPENDED")
    r = await client.patch(f"/operator/tenants/{tenant.tenant_id}", headers=auth, json={"status": "ACTIVE"})
    assert r.status_code == 200
    await ingest_until(client, tenant.tenant_id, device, token, 202)

    rows = await audit_rows(engine, actor)
    assert [(x.action, x.tenant_id, x.details.get("error")) for x in rows] == [
        ("POST /operator/subscriptions/{subscription_id}/suspend", tenant.tenant_id, None),
        ("POST /operator/subscriptions/{subscription_id}/suspend", tenant.tenant_id, {"status": 409}),
        ("POST /operator/subscriptions/{subscription_id}/resume", tenant.tenant_id, None),
        ("PATCH /operator/subscriptions/{subscription_id}", tenant.tenant_id, None),
        ("PATCH /operator/subscriptions/{subscription_id}", tenant.tenant_id, None),
        ("PATCH /operator/tenants/{tenant_id}", tenant.tenant_id, None),
        ("PATCH /operator/tenants/{tenant_id}", tenant.tenant_id, None),
    ]


# --- fleet-wide views --------------------------------------------------------------------------------------------

async def test_devices_and_alerts_of_every_tenant_with_filters(engine: AsyncEngine, settings: Settings,
                                                               client: Client) -> None:
    actor, auth = await operator(engine, settings)
    a, b = await make_tenant(engine), await make_tenant(engine)
    suffix = uuid.uuid4().hex[:8]  # other tests' tenants have pumps too: look for ours
    pump_id = f"pump-{suffix}"
    pump = await make_device(engine, a, device_id=pump_id, name="Main pump")
    await make_device(engine, a, device_id=f"valve-{suffix}")
    await make_device(engine, b, device_id=pump_id)
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE device_state SET status = 'ONLINE', last_seen_at = now() "
                                "WHERE tenant_id = :t AND device_id = :d"), {"t": a.tenant_id, "d": pump})
    critical = await insert_alert(engine, a.tenant_id, severity=5, device_id=pump, title="Pump dry run")
    await insert_alert(engine, a.tenant_id, severity=2, device_id=pump)
    closed = await insert_alert(engine, b.tenant_id, severity=4, status="CLOSED")

    r = await client.get("/operator/devices", params={"q": pump_id}, headers=auth)
    assert r.status_code == 200, r.text
    found = {(d["tenant_id"], d["device_id"]) for d in r.json()["items"]}
    assert {(a.tenant_id, pump_id), (b.tenant_id, pump_id)} <= found
    assert (a.tenant_id, f"valve-{suffix}") not in found

    r = await client.get("/operator/devices", params={"tenant_id": a.tenant_id, "limit": 1}, headers=auth)
    page = r.json()
    assert (page["total"], [d["device_id"] for d in page["items"]]) == (2, [pump_id])
    assert page["items"][0]["name"] == "Main pump" and page["items"][0]["subscription_id"] == a.subscription_id

    r = await client.get("/operator/devices", params={"tenant_id": a.tenant_id, "state": "online"}, headers=auth)
    assert [(d["device_id"], d["state"], d["status"]) for d in r.json()["items"]] == [(pump_id, "ONLINE", "ACTIVE")]

    r = await client.get("/operator/alerts", params={"tenant_id": a.tenant_id, "severity_min": 4}, headers=auth)
    assert r.status_code == 200, r.text
    assert [(x["alert_id"], x["title"], x["severity"]) for x in r.json()["items"]] == [
        (critical, "Pump dry run", 5)]
    r = await client.get("/operator/alerts", params={"status": "CLOSED", "severity_min": 4, "limit": 500},
                         headers=auth)
    ids = {x["alert_id"] for x in r.json()["items"]}
    assert closed in ids and critical not in ids
    r = await client.get("/operator/alerts", params={"status": "open,acknowledged", "tenant_id": b.tenant_id},
                         headers=auth)
    assert r.json()["total"] == 0

    rows = await audit_rows(engine, actor)
    assert [(x.action, x.tenant_id) for x in rows] == [
        ("GET /operator/devices", None), ("GET /operator/devices", a.tenant_id), ("GET /operator/devices", a.tenant_id),
        ("GET /operator/alerts", a.tenant_id), ("GET /operator/alerts", None), ("GET /operator/alerts", b.tenant_id),
    ]


# --- system health -----------------------------------------------------------------------------------------------

async def test_health_shows_heartbeats_queue_telemetry_and_quarantine(engine: AsyncEngine, settings: Settings,
                                                                      client: Client) -> None:
    actor, auth = await operator(engine, settings)
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    kind = f"proc-{secrets.token_hex(3)}"
    fresh, stale = f"{kind}-a", f"{kind}-b"
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO service_heartbeats (instance, process_type, ready, ready_since, beat_at, detail) VALUES "
            "(:fresh, :k, true, now() - interval '1 hour', now(), 'ok'), "
            "(:stale, :k, true, now() - interval '2 hours', now() - interval '1 minute', 'gone quiet')"),
            {"fresh": fresh, "stale": stale, "k": kind})
        channel = (await conn.execute(text(
            "INSERT INTO notification_channels (tenant_id, name, channel_type, config) "
            "VALUES (:t, 'hook', 'WEBHOOK', '{\"url\": \"https://hooks.example.com/x\"}') RETURNING channel_id"),
            {"t": tenant.tenant_id})).scalar_one()
        for status, due in (("PENDING", "now() - interval '10 minutes'"), ("PENDING", "now() + interval '1 hour'"),
                            ("DEAD", "now()")):
            await conn.execute(text(
                "INSERT INTO notification_jobs (tenant_id, channel_id, event_kind, payload, idempotency_key, status, "
                f"next_attempt_at) VALUES (:t, :c, 'OPENED', '{{}}', :k, :s, {due})"),
                {"t": tenant.tenant_id, "c": channel, "k": secrets.token_hex(8), "s": status})
        await conn.execute(text("INSERT INTO telemetry (time, tenant_id, device_id, msg_type, metrics) "
                                "VALUES (now(), :t, :d, 'telemetry', '{}')"), {"t": tenant.tenant_id, "d": device})
        await conn.execute(text("INSERT INTO quarantine_counters (tenant_id, minute, reason, count) "
                                "VALUES (:t, date_trunc('minute', now()), 'TOKEN_INVALID', 3)"),
                           {"t": tenant.tenant_id})
    try:
        r = await client.get("/operator/health", headers=auth)
        assert r.status_code == 200, r.text
        health = r.json()
        [proc] = [p for p in health["processes"] if p["process_type"] == kind]
        assert (proc["alive"], proc["ready"]) == (1, 1)
        instances = {i["instance"]: i for i in proc["instances"]}
        assert (instances[fresh]["alive"], instances[stale]["alive"]) == (True, False)
        assert instances[stale]["detail"] == "gone quiet" and instances[stale]["beat_age_s"] >= 60
        queue = health["notifications"]
        assert queue["pending_due"] >= 1 and queue["pending_later"] >= 1 and queue["dead"] >= 1
        assert queue["oldest_due_age_s"] >= 600
        assert health["telemetry_rows_last_minute"] >= 1
        assert health["quarantine_last_hour"]["by_reason"]["TOKEN_INVALID"] >= 3
        assert health["alive_within_s"] == 15
    finally:
        async with system_tx(engine) as conn:
            await conn.execute(text("DELETE FROM service_heartbeats WHERE process_type = :k"), {"k": kind})
            await conn.execute(text("DELETE FROM notification_jobs WHERE tenant_id = :t"), {"t": tenant.tenant_id})
    assert [x.action for x in await audit_rows(engine, actor)] == ["GET /operator/health"]


# --- audit log ---------------------------------------------------------------------------------------------------

async def test_audit_log_is_for_operator_admins_newest_first_with_filters(
        engine: AsyncEngine, settings: Settings, client: Client) -> None:
    actor, auth = await operator(engine, settings)
    tenant = await make_tenant(engine)
    r = await client.get("/operator/audit-log", headers=auth)
    assert r.status_code == 403
    await client.get(f"/operator/tenants/{tenant.tenant_id}", headers=auth)
    await client.get("/operator/tenants", params={"tenant_id": tenant.tenant_id}, headers=auth)

    admin_actor, admin = await operator(engine, settings, "operator-admin")
    r = await client.get("/operator/audit-log", params={"actor": actor}, headers=admin)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 3
    assert [(x["action"], x["tenant_id"]) for x in page["items"]] == [
        ("GET /operator/tenants", tenant.tenant_id),
        ("GET /operator/tenants/{tenant_id}", tenant.tenant_id),
        ("GET /operator/audit-log", None),
    ]
    newest = page["items"][0]
    assert newest["actor"] == actor and newest["actor_roles"] == ["operator"] and newest["resource"] == (
        "/operator/tenants")
    assert page["items"][2]["details"]["error"] == {"status": 403}
    assert newest["request_id"] and newest["ip"]

    r = await client.get("/operator/audit-log", headers=admin, params={
        "actor": actor, "tenant_id": tenant.tenant_id, "action": "GET /operator/tenants/{tenant_id}"})
    assert [x["resource"] for x in r.json()["items"]] == [f"/operator/tenants/{tenant.tenant_id}"]
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    r = await client.get("/operator/audit-log", headers=admin, params={"actor": actor, "from": later})
    assert r.json()["total"] == 0
    r = await client.get("/operator/audit-log", headers=admin, params={"actor": actor, "to": later, "limit": 1})
    assert r.json()["total"] == 3 and len(r.json()["items"]) == 1

    assert [x.action for x in await audit_rows(engine, admin_actor)] == ["GET /operator/audit-log"] * 4
