"""/customer alert operations through the real app: alert actions and comments, bulk acknowledge, maintenance
windows, rule templates and the tenant audit log; roles, tenant isolation and field-named 400s."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.settings import Settings
from pulse.web import audit
from tests.conftest import TenantRef, make_device, make_site, make_tenant
from tests.notify.test_delivery import Receiver
from tests.web.conftest import bearer, insert_alert, token_for

ALERTS = "/customer/alerts"
WINDOWS = "/customer/maintenance-windows"
TEMPLATES = "/customer/alert-rule-templates"
AUDIT = "/customer/audit-log"


async def _headers(engine: AsyncEngine, settings: Settings, tenant: TenantRef, role: str = "tenant-admin",
                   email: str = "admin@example.test") -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=[role], email=email))


def _field(response: Any) -> str:
    return str(response.json()["error"]["details"].get("field"))


def _once(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"name": "firmware rollout", "recurrence": "ONCE", "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(), **overrides}


def _weekly(**overrides: Any) -> dict[str, Any]:
    return {"name": "sunday night", "recurrence": "WEEKLY", "weekdays": [7], "start_time": "02:00",
            "duration_minutes": 120, "timezone": "Europe/Berlin", **overrides}


async def _audit_rows(engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT actor, action, resource, details, ip, request_id FROM tenant_audit_log WHERE tenant_id = :t "
            "ORDER BY audit_id"), {"t": tenant.tenant_id})).all())


# --- alert actions and comments ---------------------------------------------------------------------------------

async def test_alert_actions_under_customer(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                            settings: Settings) -> None:
    tenant = await make_tenant(engine)
    member = await _headers(engine, settings, tenant, role="customer", email="carla@example.test")
    alert = await insert_alert(engine, tenant.tenant_id)

    acked = await client.post(f"{ALERTS}/{alert}/acknowledge", headers=member)
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "ACKNOWLEDGED" and acked.json()["acknowledged_by"] == "carla@example.test"
    again = await client.post(f"{ALERTS}/{alert}/acknowledge", headers=member)
    assert again.status_code == 409 and again.json()["error"]["details"]["status"] == "ACKNOWLEDGED"

    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    silenced = await client.post(f"{ALERTS}/{alert}/silence", headers=member, json={"until": until})
    assert silenced.status_code == 200 and silenced.json()["silenced_until"] is not None
    unsilenced = await client.post(f"{ALERTS}/{alert}/unsilence", headers=member)
    assert unsilenced.status_code == 200 and unsilenced.json()["silenced_until"] is None
    closed = await client.post(f"{ALERTS}/{alert}/close", headers=member, json={"reason": "replaced the probe"})
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    assert [e["kind"] for e in closed.json()["events"]] == ["OPENED", "ACKNOWLEDGED", "SILENCED", "UNSILENCED",
                                                             "CLOSED"]

    bad = await client.post(f"{ALERTS}/not-a-uuid/acknowledge", headers=member)
    assert bad.status_code == 400 and _field(bad) == "alert_id"
    assert (await client.post(f"{ALERTS}/{alert}/acknowledge")).status_code == 401


async def test_comments_appear_in_the_alerts_events(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                    settings: Settings) -> None:
    tenant = await make_tenant(engine)
    member = await _headers(engine, settings, tenant, role="customer", email="carla@example.test")
    alert = await insert_alert(engine, tenant.tenant_id, status="CLOSED", events=("OPENED", "CLOSED"))

    response = await client.post(f"{ALERTS}/{alert}/comments", headers=member,
                                 json={"text": "probe was in the sun; moved it"})
    assert response.status_code == 201, response.text
    last = response.json()["events"][-1]
    assert (last["kind"], last["actor"], last["reason"]) == ("COMMENTED", "carla@example.test",
                                                             "probe was in the sun; moved it")
    read = await client.get(f"/api/v2/alerts/{alert}", headers=member)
    assert [e["kind"] for e in read.json()["events"]] == ["OPENED", "CLOSED", "COMMENTED"]

    for body, field in (({"text": ""}, "text"), ({"text": "   "}, "text"), ({"text": "x" * 2001}, "text"),
                        ({}, "text"), ({"text": "hi", "pin": True}, "pin")):
        bad = await client.post(f"{ALERTS}/{alert}/comments", headers=member, json=body)
        assert bad.status_code == 400 and _field(bad) == field, (body, bad.text)
    assert (await client.post(f"{ALERTS}/{alert}/comments", headers=member,
                              json={"text": "x" * 2000})).status_code == 201


async def test_another_tenants_alert_is_not_found(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                  settings: Settings) -> None:
    mine, theirs = await make_tenant(engine), await make_tenant(engine)
    alert = await insert_alert(engine, theirs.tenant_id)
    headers = await _headers(engine, settings, mine)
    for path, body in (("acknowledge", None), ("close", None), ("unsilence", None), ("comments", {"text": "hi"}),
                       ("silence", {"until": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})):
        response = await client.post(f"{ALERTS}/{alert}/{path}", headers=headers, json=body)
        assert response.status_code == 404, (path, response.text)
    async with system_tx(engine) as conn:
        kinds = (await conn.execute(text("SELECT array_agg(kind) FROM alert_events WHERE alert_id = :a"),
                                    {"a": uuid.UUID(alert)})).scalar_one()
    assert kinds == ["OPENED"]


async def test_bulk_acknowledge_answers_per_alert(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                  settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    member = await _headers(engine, settings, tenant, role="customer", email="carla@example.test")
    first, second = await insert_alert(engine, tenant.tenant_id), await insert_alert(engine, tenant.tenant_id)
    closed = await insert_alert(engine, tenant.tenant_id, status="CLOSED")
    acked = await insert_alert(engine, tenant.tenant_id, status="ACKNOWLEDGED")
    foreign = await insert_alert(engine, other.tenant_id)
    missing = str(uuid.uuid4())

    response = await client.post(f"{ALERTS}/acknowledge", headers=member,
                                 json={"alert_ids": [first, closed, foreign, second, acked, missing, first.upper()]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(r["alert_id"], r["result"], r.get("status")) for r in body["results"]] == [
        (first, "acknowledged", None), (closed, "conflict", "CLOSED"), (foreign, "not_found", None),
        (second, "acknowledged", None), (acked, "conflict", "ACKNOWLEDGED"), (missing, "not_found", None)]
    assert (body["acknowledged"], body["not_found"], body["conflict"]) == (2, 2, 2)
    async with system_tx(engine) as conn:
        rows = dict((await conn.execute(text(
            "SELECT alert_id::text, status || ':' || coalesce(acknowledged_by, '') FROM alerts "
            "WHERE alert_id = ANY(CAST(:ids AS uuid[]))"), {"ids": [first, second, foreign]})).all())
    assert rows == {first: "ACKNOWLEDGED:carla@example.test", second: "ACKNOWLEDGED:carla@example.test",
                    foreign: "OPEN:"}


@pytest.mark.parametrize(("body", "field"), [
    ({"alert_ids": []}, "alert_ids"),
    ({"alert_ids": [str(uuid.uuid4()) for _ in range(501)]}, "alert_ids"),
    ({"alert_ids": [str(uuid.uuid4()), "nope"]}, "alert_ids[1]"),
    ({"alert_ids": "all"}, "alert_ids"),
    ({}, "alert_ids"),
])
async def test_bulk_acknowledge_bad_input(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                          settings: Settings, body: dict[str, Any], field: str) -> None:
    tenant = await make_tenant(engine)
    response = await client.post(f"{ALERTS}/acknowledge", headers=await _headers(engine, settings, tenant), json=body)
    assert response.status_code == 400 and _field(response) == field, response.text


@pytest.mark.parametrize("path", ["/api/v2/alerts", WINDOWS, AUDIT])
async def test_an_offset_beyond_any_page_names_the_parameter(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                             settings: Settings, path: str) -> None:
    tenant = await make_tenant(engine)
    headers = await _headers(engine, settings, tenant)
    response = await client.get(path, headers=headers, params={"offset": "3684546023571542869807202304"})
    assert response.status_code == 400 and "offset" in response.text, response.text
    assert (await client.get(path, headers=headers, params={"offset": "1000000000"})).status_code == 200


# --- maintenance windows ----------------------------------------------------------------------------------------

async def test_a_window_scoped_to_an_unknown_site_or_device_is_refused(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    device = await make_device(engine, tenant)
    for scope, field in [({"site_ids": ["nowhere"]}, "site_ids[0]"), ({"device_ids": [device, "ghost"]}, "device_ids[1]")]:
        refused = await client.post(WINDOWS, headers=admin, json=_once(**scope))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["details"]["field"] == field
    assert (await client.post(WINDOWS, headers=admin, json=_once(device_ids=[device]))).status_code == 201


async def test_maintenance_window_lifecycle_and_roles(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                      settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    member = await _headers(engine, settings, tenant, role="customer")
    stranger = await _headers(engine, settings, other)

    assert (await client.post(WINDOWS, headers=member, json=_once())).status_code == 403
    await make_site(engine, tenant, "s-1")
    created = await client.post(WINDOWS, headers=admin, json=_once(device_types=["freezer"], site_ids=["s-1"]))
    assert created.status_code == 201, created.text
    window = created.json()
    assert (window["recurrence"], window["device_types"], window["weekdays"], window["start_time"]) == (
        "ONCE", ["freezer"], [], None)
    weekly = await client.post(WINDOWS, headers=admin, json=_weekly(weekdays=[7, 6, 7]))
    assert weekly.status_code == 201 and weekly.json()["weekdays"] == [6, 7]
    assert weekly.json()["start_time"] == "02:00" and weekly.json()["timezone"] == "Europe/Berlin"

    listed = await client.get(WINDOWS, headers=member)
    assert listed.status_code == 200 and listed.json()["total"] == 2
    assert [w["name"] for w in listed.json()["items"]] == ["firmware rollout", "sunday night"]
    path = f"{WINDOWS}/{window['window_id']}"
    assert (await client.get(path, headers=member)).json()["name"] == "firmware rollout"

    assert (await client.patch(path, headers=member, json={"name": "x"})).status_code == 403
    assert (await client.delete(path, headers=member)).status_code == 403
    for response in (await client.get(path, headers=stranger), await client.patch(path, headers=stranger,
                                                                                   json={"name": "mine"}),
                     await client.delete(path, headers=stranger)):
        assert response.status_code == 404 and _field(response) == "window_id"
    assert (await client.get(WINDOWS, headers=stranger)).json()["total"] == 0

    renamed = await client.patch(path, headers=admin, json={"name": "rollout v2", "is_enabled": False})
    assert renamed.status_code == 200 and renamed.json()["name"] == "rollout v2"
    assert renamed.json()["is_enabled"] is False and renamed.json()["device_types"] == ["freezer"]
    to_weekly = await client.patch(path, headers=admin, json={
        "recurrence": "WEEKLY", "weekdays": [1], "start_time": "06:30", "duration_minutes": 30})
    assert to_weekly.status_code == 200, to_weekly.text
    assert (to_weekly.json()["starts_at"], to_weekly.json()["start_time"]) == (None, "06:30")
    half = await client.patch(path, headers=admin, json={"recurrence": "ONCE"})
    assert half.status_code == 400 and _field(half) == "starts_at"

    assert (await client.delete(path, headers=admin)).status_code == 204
    assert (await client.get(path, headers=admin)).status_code == 404
    assert (await client.get(f"{WINDOWS}/nope", headers=admin)).status_code == 400


@pytest.mark.parametrize(("body", "field"), [
    (_once(starts_at=None), "starts_at"),
    (_once(starts_at="2026-06-01T10:00:00"), "starts_at"),
    (_once(ends_at=None), "ends_at"),
    (_once(starts_at="2026-06-01T10:00:00Z", ends_at="2026-06-01T10:00:00Z"), "ends_at"),
    (_once(starts_at="2026-06-01T10:00:00Z", ends_at="2026-07-02T10:00:01Z"), "ends_at"),
    (_once(weekdays=[1]), "weekdays"),
    (_once(starts_at="yesterday"), "starts_at"),
    (_once(name=" "), "name"),
    (_once(recurrence="DAILY"), "recurrence"),
    (_once(timezone="Mars/Olympus_Mons"), "timezone"),
    (_once(group_ids=["not-a-uuid"]), "group_ids[0]"),
    (_once(group_ids=[str(uuid.uuid4())]), "group_ids[0]"),
    (_once(device_ids=["bad id"]), "device_ids[0]"),
    (_once(colour="red"), "colour"),
    (_weekly(weekdays=[]), "weekdays"),
    (_weekly(weekdays=[0]), "weekdays[0]"),
    (_weekly(weekdays=[1, 8]), "weekdays[1]"),
    (_weekly(start_time="25:00"), "start_time"),
    (_weekly(start_time="2:00"), "start_time"),
    (_weekly(start_time=None), "start_time"),
    (_weekly(duration_minutes=0), "duration_minutes"),
    (_weekly(duration_minutes=10081), "duration_minutes"),
    (_weekly(timezone="CEST+2"), "timezone"),
    (_weekly(starts_at="2026-06-01T10:00:00Z"), "starts_at"),
])
async def test_bad_windows_are_400_naming_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                    settings: Settings, body: dict[str, Any], field: str) -> None:
    tenant = await make_tenant(engine)
    response = await client.post(WINDOWS, headers=await _headers(engine, settings, tenant), json=body)
    assert response.status_code == 400, response.text
    assert _field(response) == field, response.text


async def test_whether_a_device_is_in_maintenance_now(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                      settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    member = await _headers(engine, settings, tenant, role="customer")
    freezer = await make_device(engine, tenant, device_type="freezer")
    sensor = await make_device(engine, tenant, device_type="sensor")
    foreign = await make_device(engine, other, device_type="freezer")
    now = datetime.now(UTC)
    created = await client.post(WINDOWS, headers=admin, json=_once(name="defrost", device_types=["freezer"]))
    await client.post(WINDOWS, headers=admin, json=_once(
        name="next week", starts_at=(now + timedelta(days=7)).isoformat(),
        ends_at=(now + timedelta(days=8)).isoformat()))

    held = await client.get(f"{WINDOWS}/active", headers=member, params={"device_id": freezer})
    assert held.status_code == 200, held.text
    assert held.json()["in_maintenance"] is True
    [active] = held.json()["windows"]
    assert active["window_id"] == created.json()["window_id"] and active["name"] == "defrost"
    assert datetime.fromisoformat(active["until"]) == datetime.fromisoformat(created.json()["ends_at"])
    free = await client.get(f"{WINDOWS}/active", headers=member, params={"device_id": sensor})
    assert free.json() == {"device_id": sensor, "in_maintenance": False, "windows": []}
    everything = await client.get(f"{WINDOWS}/active", headers=member)
    assert [w["name"] for w in everything.json()["windows"]] == ["defrost"]
    for unknown in (foreign, "no-such-device"):
        response = await client.get(f"{WINDOWS}/active", headers=member, params={"device_id": unknown})
        assert response.status_code == 404 and _field(response) == "device_id"


# --- rule templates ---------------------------------------------------------------------------------------------

async def test_rule_templates_list_and_instantiate(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                   settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    member = await _headers(engine, settings, tenant, role="customer")

    listed = await client.get(TEMPLATES, headers=member)
    assert listed.status_code == 200
    templates = {t["template_id"]: t for t in listed.json()["items"]}
    assert {"high-temperature", "battery-low", "device-offline"} <= set(templates)
    hot = templates["high-temperature"]
    assert (hot["rule_type"], hot["definition"], hot["for_seconds"]) == (
        "THRESHOLD", {"metric": "temp_c", "op": "GT", "value": 30}, 300)
    assert {p["name"] for p in hot["parameters"]} == {"metric", "threshold", "for_seconds"}
    assert templates["battery-low"]["definition"] == {"metric": "battery_pct", "op": "LT", "value": 15}
    assert (await client.get(f"{TEMPLATES}/battery-low", headers=member)).json()["name"] == "Battery low"

    url = f"{TEMPLATES}/high-temperature/instantiate"
    assert (await client.post(url, headers=member, json={})).status_code == 403
    made = await client.post(url, headers=admin, json={
        "name": "Cold room too warm", "parameters": {"threshold": 8.5}, "tags": ["cold-room"], "severity": 5})
    assert made.status_code == 201, made.text
    rule = made.json()
    assert (rule["name"], rule["rule_type"], rule["severity"], rule["for_seconds"], rule["tags"]) == (
        "Cold room too warm", "THRESHOLD", 5, 300, ["cold-room"])
    assert rule["definition"]["value"] == 8.5 and rule["definition"]["op"] == "GT"
    assert (await client.get(f"/customer/alert-rules/{rule['rule_id']}", headers=member)).status_code == 200
    default = await client.post(f"{TEMPLATES}/battery-low/instantiate", headers=admin, json={})
    assert default.status_code == 201 and default.json()["name"] == "Battery low"
    offline = await client.post(f"{TEMPLATES}/device-offline/instantiate", headers=admin,
                                json={"parameters": {"metric": "rssi", "gap_seconds": 600}})
    assert offline.status_code == 201 and offline.json()["definition"] == {"metric": "rssi", "gap_seconds": 600}

    missing = await client.post(f"{TEMPLATES}/no-such-template/instantiate", headers=admin, json={})
    assert missing.status_code == 404 and _field(missing) == "template_id"
    assert (await client.get(f"{TEMPLATES}/no-such-template", headers=member)).status_code == 404


@pytest.mark.parametrize(("template", "body", "field"), [
    ("high-temperature", {"parameters": {"threshold": "hot"}}, "parameters.threshold"),
    ("high-temperature", {"parameters": {"threshold": True}}, "parameters.threshold"),
    ("high-temperature", {"parameters": {"for_seconds": 1.5}}, "parameters.for_seconds"),
    ("high-temperature", {"parameters": {"for_seconds": 100_000}}, "parameters.for_seconds"),
    ("high-temperature", {"parameters": {"limit": 3}}, "parameters.limit"),
    ("battery-low", {"parameters": {"threshold": 120}}, "parameters.threshold"),
    ("device-offline", {}, "parameters.metric"),
    ("device-offline", {"parameters": {"metric": "rssi", "gap_seconds": 10}}, "parameters.gap_seconds"),
    ("high-temperature", {"severity": 9}, "severity"),
    ("high-temperature", {"name": ""}, "name"),
    ("high-temperature", {"device_ids": ["bad id"]}, "device_ids[0]"),
    ("high-temperature", {"rule_type": "GAP"}, "rule_type"),
])
async def test_bad_template_instantiation_is_400_naming_the_field(client: AsyncTestClient[Litestar],
                                                                  engine: AsyncEngine, settings: Settings,
                                                                  template: str, body: dict[str, Any],
                                                                  field: str) -> None:
    tenant = await make_tenant(engine)
    response = await client.post(f"{TEMPLATES}/{template}/instantiate",
                                 headers=await _headers(engine, settings, tenant), json=body)
    assert response.status_code == 400, response.text
    assert _field(response) == field, response.text


# --- the tenant audit log ---------------------------------------------------------------------------------------

async def test_writes_are_audited_and_reads_and_failures_are_not(client: AsyncTestClient[Litestar],
                                                                  engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant, email="ada@example.test")
    member = await _headers(engine, settings, tenant, role="customer", email="carla@example.test")
    alert = await insert_alert(engine, tenant.tenant_id)

    created = await client.post(WINDOWS, headers=admin, json=_once())
    window_id = created.json()["window_id"]
    await client.get(WINDOWS, headers=admin)
    await client.get(f"{WINDOWS}/{window_id}", headers=member)
    await client.post(WINDOWS, headers=member, json=_once())  # 403
    await client.post(WINDOWS, headers=admin, json=_once(recurrence="DAILY"))  # 400
    await client.patch(f"{WINDOWS}/{window_id}", headers=admin, json={"name": "renamed"})
    commented = await client.post(f"{ALERTS}/{alert}/comments", headers=member, json={"text": "secret-ish note"})
    await client.post(f"{ALERTS}/{alert}/comments", headers=member, json={"text": ""})  # 400
    await client.delete(f"{WINDOWS}/{window_id}", headers=admin)
    await client.delete(f"{WINDOWS}/{window_id}", headers=admin)  # 404

    rows = await _audit_rows(engine, tenant)
    assert [(r.actor, r.action, r.resource) for r in rows] == [
        ("ada@example.test", "POST /customer/maintenance-windows", "/customer/maintenance-windows"),
        ("ada@example.test", "PATCH /customer/maintenance-windows/{window_id}", f"{WINDOWS}/{window_id}"),
        ("carla@example.test", "POST /customer/alerts/{alert_id}/comments", f"{ALERTS}/{alert}/comments"),
        ("ada@example.test", "DELETE /customer/maintenance-windows/{window_id}", f"{WINDOWS}/{window_id}"),
    ]
    assert [r.details for r in rows] == [{"status": 201}, {"status": 200}, {"status": 201}, {"status": 204}]
    assert rows[0].request_id == created.headers["x-request-id"]
    assert rows[2].request_id == commented.headers["x-request-id"]
    assert all(r.ip for r in rows)
    assert "secret-ish" not in json.dumps([list(r) for r in rows])  # bodies are never recorded


async def test_audit_log_is_read_by_tenant_admins_with_filters(client: AsyncTestClient[Litestar],
                                                                engine: AsyncEngine, settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _headers(engine, settings, tenant, email="ada@example.test")
    member = await _headers(engine, settings, tenant, role="customer", email="carla@example.test")
    alert = await insert_alert(engine, tenant.tenant_id)
    await client.post(WINDOWS, headers=admin, json=_once())
    await client.post(f"{ALERTS}/{alert}/acknowledge", headers=member)
    await client.post(f"{TEMPLATES}/battery-low/instantiate", headers=admin, json={})

    assert (await client.get(AUDIT, headers=member)).status_code == 403
    page = await client.get(AUDIT, headers=admin)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 3 and (body["limit"], body["offset"]) == (50, 0)
    assert [i["action"] for i in body["items"]] == [  # newest first
        "POST /customer/alert-rule-templates/{template_id}/instantiate",
        "POST /customer/alerts/{alert_id}/acknowledge", "POST /customer/maintenance-windows"]

    async def actions(**query: str) -> list[str]:
        response = await client.get(AUDIT, headers=admin, params=query)
        assert response.status_code == 200, response.text
        return [i["action"] for i in response.json()["items"]]

    assert await actions(actor="carla@example.test") == ["POST /customer/alerts/{alert_id}/acknowledge"]
    assert await actions(action="POST /customer/maintenance-windows") == ["POST /customer/maintenance-windows"]
    assert await actions(limit="1", offset="1") == ["POST /customer/alerts/{alert_id}/acknowledge"]
    hour = timedelta(hours=1)
    assert len(await actions(**{"from": (datetime.now(UTC) - hour).isoformat()})) == 3
    assert await actions(**{"from": (datetime.now(UTC) + hour).isoformat()}) == []
    assert await actions(to=(datetime.now(UTC) - hour).isoformat()) == []
    assert (await client.get(AUDIT, headers=await _headers(engine, settings, other))).json()["total"] == 0

    for query, field in (({"limit": "0"}, "limit"), ({"from": "yesterday"}, "from"),
                         ({"from": "2026-06-01T10:00:00"}, "from"),
                         ({"from": "2026-06-02T10:00:00Z", "to": "2026-06-01T10:00:00Z"}, "to")):
        bad = await client.get(AUDIT, headers=admin, params=query)
        assert bad.status_code == 400 and _field(bad) == field, (query, bad.text)
    assert len(await _audit_rows(engine, tenant)) == 3  # reading the log is not itself recorded


async def test_a_write_outside_the_request_transaction_is_audited_too(client: AsyncTestClient[Litestar],
                                                                       engine: AsyncEngine, settings: Settings,
                                                                       receiver: Receiver) -> None:
    """A channel test send opens transactions of its own; its audit row is written separately."""
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    channel = await client.post("/customer/channels", headers=admin, json={
        "name": "hook", "channel_type": "WEBHOOK", "config": {"url": receiver.url}, "secrets": {"secret": "s3cr3t-signing-secret"}})
    assert channel.status_code == 201, channel.text
    sent = await client.post(f"/customer/channels/{channel.json()['channel_id']}/test", headers=admin)
    assert sent.status_code == 200, sent.text
    rows = await _audit_rows(engine, tenant)
    assert [r.action for r in rows] == ["POST /customer/channels", "POST /customer/channels/{channel_id}/test"]
    assert rows[1].request_id == sent.headers["x-request-id"]
    assert "s3cr3t" not in json.dumps([list(r) for r in rows])


async def test_a_change_and_its_audit_row_commit_in_the_same_transaction(client: AsyncTestClient[Litestar],
                                                                         engine: AsyncEngine, settings: Settings,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that use the request transaction never take the separate path."""
    separate: list[str] = []

    async def record(scope: Any, status: int) -> None:
        separate.append(scope["path"])

    monkeypatch.setattr(audit, "_write_separately", record)
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    created = await client.post(WINDOWS, headers=admin, json=_once())
    assert created.status_code == 201
    assert (await client.delete(f"{WINDOWS}/{created.json()['window_id']}", headers=admin)).status_code == 204
    assert separate == []
    assert [r.action for r in await _audit_rows(engine, tenant)] == [
        "POST /customer/maintenance-windows", "DELETE /customer/maintenance-windows/{window_id}"]
