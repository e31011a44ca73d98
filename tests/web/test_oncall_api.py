"""/customer on-call API through the real app: escalation policies (targets, default, a rule's policy),
schedules with layers and overrides, who is on call and timelines; field-named errors, roles, tenant isolation."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import TenantRef, make_tenant
from tests.web.conftest import bearer, make_user, token_for

POLICIES = "/customer/escalation-policies"
SCHEDULES = "/customer/schedules"
Client = AsyncTestClient[Litestar]


async def _admin(engine: AsyncEngine, settings: Settings, tenant: TenantRef) -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"],
                                  email="lead@example.test"))


async def _customer(engine: AsyncEngine, settings: Settings, tenant: TenantRef) -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))


async def _user(engine: AsyncEngine, tenant: TenantRef, name: str) -> str:
    _, user_id = await make_user(engine, tenant.tenant_id, display_name=name)
    return str(user_id)


async def _channel(engine: AsyncEngine, tenant: TenantRef) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO notification_channels (tenant_id, name, channel_type, config) "
            "VALUES (:t, :n, 'WEBHOOK', CAST(:c AS jsonb)) RETURNING channel_id::text"),
            {"t": tenant.tenant_id, "n": f"hook-{secrets.token_hex(3)}",
             "c": json.dumps({"url": "http://127.0.0.1:9/hook"})})).scalar_one())


async def _rule(engine: AsyncEngine, tenant: TenantRef) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition) "
            "VALUES (:t, 'too hot', 'THRESHOLD', 4, CAST(:d AS jsonb)) RETURNING rule_id::text"),
            {"t": tenant.tenant_id, "d": json.dumps({"metric": "temp_c", "op": ">", "value": 30})})).scalar_one())


def _field(response: Any) -> str:
    return str(response.json()["error"]["details"].get("field"))


async def _schedule(client: Client, headers: dict[str, str], name: str = "ops",
                    timezone: str = "Europe/Berlin") -> str:
    response = await client.post(SCHEDULES, headers=headers, json={"name": name, "timezone": timezone})
    assert response.status_code == 201, response.text
    return str(response.json()["schedule_id"])


def _weekly(participants: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": "Primary", "rotation_type": "WEEKLY", "rotation_start": "2026-03-16", "handoff_time": "09:00",
            "participants": participants, **extra}


def _policy(name: str, levels: list[tuple[int, list[tuple[str, str]]]], **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra, "levels": [
        {"delay_minutes": delay, "targets": [{"type": kind, "id": target} for kind, target in targets]}
        for delay, targets in levels]}


# --- escalation policies ---------------------------------------------------------------------------------------------

async def test_a_policy_is_stored_in_the_format_the_escalation_engine_reads(
        client: Client, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    alice = await _user(engine, tenant, "alice")
    channel = await _channel(engine, tenant)
    schedule = await _schedule(client, admin)

    created = await client.post(POLICIES, headers=admin, json=_policy(
        "critical", [(0, [("schedule", schedule)]), (15, [("user", alice), ("channel", channel)])],
        description="wake someone up", repeat_count=2))
    assert created.status_code == 201, created.text
    policy = created.json()
    assert (policy["name"], policy["repeat_count"], policy["is_default"], policy["rule_count"]) == (
        "critical", 2, False, 0)
    assert [(lv["position"], lv["delay_minutes"]) for lv in policy["levels"]] == [(1, 0), (2, 15)]
    async with system_tx(engine) as conn:
        stored = (await conn.execute(text(
            "SELECT position, delay_minutes, targets FROM escalation_levels WHERE policy_id = CAST(:p AS uuid) "
            "ORDER BY position"), {"p": policy["policy_id"]})).all()
    assert [(r.position, r.delay_minutes, r.targets) for r in stored] == [
        (1, 0, [{"type": "schedule", "id": schedule}]),
        (2, 15, [{"type": "user", "id": alice}, {"type": "channel", "id": channel}])]

    reader = await _customer(engine, settings, tenant)
    listed = await client.get(POLICIES, headers=reader)
    one = await client.get(f"{POLICIES}/{policy['policy_id']}", headers=reader)
    assert [p["policy_id"] for p in listed.json()["items"]] == [policy["policy_id"]]
    assert one.json()["levels"] == policy["levels"]

    replaced = await client.put(f"{POLICIES}/{policy['policy_id']}", headers=admin,
                                json=_policy("critical v2", [(5, [("user", alice)])]))
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "critical v2" and replaced.json()["repeat_count"] == 0
    assert replaced.json()["levels"] == [
        {"position": 1, "delay_minutes": 5, "targets": [{"type": "user", "id": alice}]}]

    assert (await client.delete(f"{POLICIES}/{policy['policy_id']}", headers=admin)).status_code == 204
    assert (await client.get(f"{POLICIES}/{policy['policy_id']}", headers=reader)).status_code == 404


async def test_policy_errors_name_the_field(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    alice, stranger = await _user(engine, tenant, "alice"), await _user(engine, other, "stranger")
    foreign_channel = await _channel(engine, other)

    cases = [
        (_policy("p", [(0, [("user", alice)]), (5, [("user", stranger)])]), "levels[1].targets[0].id"),
        (_policy("p", [(0, [("channel", foreign_channel)])]), "levels[0].targets[0].id"),
        (_policy("p", [(0, [("team", alice)])]), "levels[0].targets[0].type"),
        (_policy("p", [(0, [("user", "alice")])]), "levels[0].targets[0].id"),
        (_policy("p", [(0, [("user", alice), ("user", alice)])]), "levels[0].targets[1].id"),
        (_policy("p", [(1441, [("user", alice)])]), "levels[0].delay_minutes"),
        (_policy("p", [(0, [])]), "levels[0].targets"),
        (_policy("p", []), "levels"),
        (_policy("p", [(0, [("user", alice)])] * 11), "levels"),
        (_policy("p", [(0, [("user", alice)])], repeat_count=11), "repeat_count"),
        (_policy("", [(0, [("user", alice)])]), "name"),
        ({**_policy("p", [(0, [("user", alice)])]), "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = await client.post(POLICIES, headers=admin, json=body)
        assert response.status_code == 400, (field, response.text)
        assert _field(response) == field, response.text
    assert (await client.get(POLICIES, headers=admin)).json()["items"] == []

    ok = await client.post(POLICIES, headers=admin, json=_policy("p", [(0, [("user", alice)])]))
    assert ok.status_code == 201
    taken = await client.post(POLICIES, headers=admin, json=_policy("p", [(0, [("user", alice)])]))
    assert taken.status_code == 409 and _field(taken) == "name"
    assert (await client.get(f"{POLICIES}/not-a-uuid", headers=admin)).status_code == 400


async def test_the_default_policy_moves_to_the_one_marked_last(client: Client, engine: AsyncEngine,
                                                               settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    alice = await _user(engine, tenant, "alice")
    first = (await client.post(POLICIES, headers=admin,
                               json=_policy("first", [(0, [("user", alice)])], is_default=True))).json()
    second = (await client.post(POLICIES, headers=admin,
                                json=_policy("second", [(0, [("user", alice)])], is_default=True))).json()

    async def defaults() -> list[str]:
        items = (await client.get(POLICIES, headers=admin)).json()["items"]
        return [p["name"] for p in items if p["is_default"]]

    assert second["is_default"] is True and await defaults() == ["second"]
    back = await client.put(f"{POLICIES}/{first['policy_id']}", headers=admin,
                            json=_policy("first", [(0, [("user", alice)])], is_default=True))
    assert back.json()["is_default"] is True and await defaults() == ["first"]
    none = await client.put(f"{POLICIES}/{first['policy_id']}", headers=admin,
                            json=_policy("first", [(0, [("user", alice)])], is_default=False))
    assert none.status_code == 200 and await defaults() == []


async def test_a_rules_policy_is_set_and_pulse_evaluate_is_told(client: Client, engine: AsyncEngine,
                                                                settings: Settings, database_url: str) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    alice = await _user(engine, tenant, "alice")
    rule = await _rule(engine, tenant)
    policy = (await client.post(POLICIES, headers=admin, json=_policy("p", [(0, [("user", alice)])]))).json()
    foreign = (await client.post(POLICIES, headers=await _admin(engine, settings, other), json=_policy(
        "p", [(0, [("user", await _user(engine, other, "bob"))])]))).json()
    url = f"/customer/alert-rules/{rule}/escalation-policy"

    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener("pulse_rules_changed", lambda *args: heard.put_nowait(args[-1]))
    try:
        chosen = await client.put(url, headers=admin, json={"policy_id": policy["policy_id"]})
        assert chosen.status_code == 200, chosen.text
        assert chosen.json() == {"rule_id": rule, "escalation_policy_id": policy["policy_id"],
                                 "escalation_policy_name": "p"}
        payload = json.loads(await asyncio.wait_for(heard.get(), 10))
        assert payload["tenant_id"] == tenant.tenant_id and payload["rule_id"] == rule
    finally:
        await listener.close()
    listed = (await client.get(POLICIES, headers=admin)).json()["items"]
    assert listed[0]["rule_count"] == 1

    wrong = await client.put(url, headers=admin, json={"policy_id": foreign["policy_id"]})
    assert wrong.status_code == 400 and _field(wrong) == "policy_id"
    not_mine = await client.put(f"/customer/alert-rules/{rule}/escalation-policy",
                                headers=await _admin(engine, settings, other), json={"policy_id": None})
    assert not_mine.status_code == 404
    assert (await client.put(url, headers=await _customer(engine, settings, tenant),
                             json={"policy_id": None})).status_code == 403

    cleared = await client.put(url, headers=admin, json={"policy_id": None})
    assert cleared.status_code == 200 and cleared.json()["escalation_policy_id"] is None
    await client.put(url, headers=admin, json={"policy_id": policy["policy_id"]})
    assert (await client.delete(f"{POLICIES}/{policy['policy_id']}", headers=admin)).status_code == 204
    async with system_tx(engine) as conn:
        left = (await conn.execute(text("SELECT escalation_policy_id FROM alert_rules WHERE rule_id = :r"),
                                   {"r": rule})).scalar()
    assert left is None  # its alerts now use the tenant default, if any


# --- schedules -------------------------------------------------------------------------------------------------------

async def test_schedules_and_layers_through_the_api(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    alice, bob = await _user(engine, tenant, "alice"), await _user(engine, tenant, "bob")
    schedule = await _schedule(client, admin)

    added = await client.post(f"{SCHEDULES}/{schedule}/layers", headers=admin, json=_weekly([alice, bob]))
    assert added.status_code == 201, added.text
    weekend = await client.post(f"{SCHEDULES}/{schedule}/layers", headers=admin, json={
        "name": "Weekend", "rotation_type": "DAILY", "rotation_start": "2026-03-16", "participants": [bob],
        "restrictions": [{"days": [6, 7], "start": "00:00", "end": "00:00"}], "position": 1})
    assert weekend.status_code == 201, weekend.text
    layers = weekend.json()["layers"]
    assert [(x["name"], x["position"]) for x in layers] == [("Weekend", 1), ("Primary", 2)]
    assert layers[0]["restrictions"] == [{"days": [6, 7], "start": "00:00", "end": "00:00"}]
    assert layers[0]["handoff_time"] == "09:00" and layers[1]["participants"] == [alice, bob]

    moved = await client.patch(f"{SCHEDULES}/{schedule}/layers/{layers[0]['layer_id']}", headers=admin,
                               json={"position": 2, "handoff_time": "08:00"})
    assert moved.status_code == 200, moved.text
    assert [(x["name"], x["position"], x["handoff_time"]) for x in moved.json()["layers"]] == [
        ("Primary", 1, "09:00"), ("Weekend", 2, "08:00")]

    renamed = await client.patch(f"{SCHEDULES}/{schedule}", headers=admin,
                                 json={"name": "ops eu", "timezone": "Europe/Lisbon", "description": "EU"})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["timezone"], renamed.json()["description"]) == (
        "ops eu", "Europe/Lisbon", "EU")
    await _schedule(client, admin, name="other")
    clash = await client.patch(f"{SCHEDULES}/{schedule}", headers=admin, json={"name": "other"})
    assert clash.status_code == 409 and _field(clash) == "name"

    gone = await client.delete(f"{SCHEDULES}/{schedule}/layers/{layers[1]['layer_id']}", headers=admin)
    assert gone.status_code == 204
    left = (await client.get(f"{SCHEDULES}/{schedule}", headers=admin)).json()["layers"]
    assert [(x["name"], x["position"]) for x in left] == [("Weekend", 1)]
    names = [s["name"] for s in (await client.get(SCHEDULES, headers=admin)).json()["items"]]
    assert names == ["ops eu", "other"]
    assert (await client.delete(f"{SCHEDULES}/{schedule}", headers=admin)).status_code == 204
    assert (await client.get(f"{SCHEDULES}/{schedule}", headers=admin)).status_code == 404


async def test_schedule_errors_name_the_field(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    alice, stranger = await _user(engine, tenant, "alice"), await _user(engine, other, "stranger")

    bad_zone = await client.post(SCHEDULES, headers=admin, json={"name": "ops", "timezone": "Mars/Olympus"})
    assert bad_zone.status_code == 400 and _field(bad_zone) == "timezone"
    schedule = await _schedule(client, admin)
    zone_patch = await client.patch(f"{SCHEDULES}/{schedule}", headers=admin, json={"timezone": "CEST"})
    assert zone_patch.status_code == 400 and _field(zone_patch) == "timezone"

    cases = [
        (_weekly([alice, "00000000-0000-0000-0000-000000000001"]), "participants[1]"),
        (_weekly([stranger]), "participants[0]"),
        (_weekly([alice, "bob"]), "participants[1]"),
        (_weekly([]), "participants"),
        (_weekly([alice], restrictions=[{"days": [1], "start": "9am", "end": "17:00"}]), "restrictions[0].start"),
        (_weekly([alice], restrictions=[{"days": [8], "start": "09:00", "end": "17:00"}]), "restrictions[0].days"),
        (_weekly([alice], handoff_time="25:00"), "handoff_time"),
        (_weekly([alice], rotation_type="CUSTOM"), "rotation_hours"),
        (_weekly([alice], rotation_type="HOURLY"), "rotation_type"),
        (_weekly([alice], starts_at="2026-03-16T09:00:00"), "starts_at"),
        (_weekly([alice], starts_at="2026-03-16T09:00:00Z", ends_at="2026-03-16T08:00:00Z"), "ends_at"),
        (_weekly([alice], rotation_start="16.03.2026"), "rotation_start"),
        (_weekly([alice], position=3), "position"),
    ]
    for body, field in cases:
        response = await client.post(f"{SCHEDULES}/{schedule}/layers", headers=admin, json=body)
        assert response.status_code == 400, (field, response.text)
        assert _field(response) == field, response.text
    assert (await client.get(f"{SCHEDULES}/{schedule}", headers=admin)).json()["layers"] == []

    layer = (await client.post(f"{SCHEDULES}/{schedule}/layers", headers=admin,
                               json=_weekly([alice]))).json()["layers"][0]["layer_id"]
    patched = await client.patch(f"{SCHEDULES}/{schedule}/layers/{layer}", headers=admin,
                                 json={"participants": [stranger]})
    assert patched.status_code == 400 and _field(patched) == "participants[0]"

    override = f"{SCHEDULES}/{schedule}/overrides"
    for body, field in [
        ({"user_id": alice, "starts_at": "2026-03-16T09:00:00Z", "ends_at": "2026-03-16T08:00:00Z"}, "ends_at"),
        ({"user_id": alice, "starts_at": "2026-03-01T00:00:00Z", "ends_at": "2026-06-01T00:00:00Z"}, "ends_at"),
        ({"user_id": stranger, "starts_at": "2026-03-16T09:00:00Z", "ends_at": "2026-03-16T10:00:00Z"}, "user_id"),
        ({"user_id": alice, "starts_at": "2026-03-16T09:00:00", "ends_at": "2026-03-16T10:00:00Z"}, "starts_at"),
    ]:
        response = await client.post(override, headers=admin, json=body)
        assert response.status_code == 400, (field, response.text)
        assert _field(response) == field, response.text

    days = await client.get(f"{SCHEDULES}/{schedule}/timeline", headers=admin, params={"days": 91})
    assert days.status_code == 400 and _field(days) == "days"
    start = await client.get(f"{SCHEDULES}/{schedule}/timeline", headers=admin,
                             params={"start": "2026-03-16T09:00:00"})
    assert start.status_code == 400 and _field(start) == "start"


async def test_a_schedule_an_escalation_policy_pages_cannot_be_deleted(client: Client, engine: AsyncEngine,
                                                                       settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    schedule = await _schedule(client, admin)
    policy = (await client.post(POLICIES, headers=admin,
                                json=_policy("night pager", [(0, [("schedule", schedule)])]))).json()

    refused = await client.delete(f"{SCHEDULES}/{schedule}", headers=admin)
    assert refused.status_code == 409
    assert "night pager" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"]["policies"] == ["night pager"]
    assert (await client.get(f"{SCHEDULES}/{schedule}", headers=admin)).status_code == 200

    await client.delete(f"{POLICIES}/{policy['policy_id']}", headers=admin)
    assert (await client.delete(f"{SCHEDULES}/{schedule}", headers=admin)).status_code == 204


async def test_another_tenants_schedules_and_policies_are_not_found(client: Client, engine: AsyncEngine,
                                                                    settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin, intruder = await _admin(engine, settings, tenant), await _admin(engine, settings, other)
    alice = await _user(engine, tenant, "alice")
    schedule = await _schedule(client, admin)
    layer = (await client.post(f"{SCHEDULES}/{schedule}/layers", headers=admin,
                               json=_weekly([alice]))).json()["layers"][0]["layer_id"]
    policy = (await client.post(POLICIES, headers=admin, json=_policy("p", [(0, [("user", alice)])]))).json()

    for method, url, body in [
        ("GET", f"{SCHEDULES}/{schedule}", None),
        ("PATCH", f"{SCHEDULES}/{schedule}", {"name": "mine now"}),
        ("DELETE", f"{SCHEDULES}/{schedule}", None),
        ("POST", f"{SCHEDULES}/{schedule}/layers", _weekly([alice])),
        ("PATCH", f"{SCHEDULES}/{schedule}/layers/{layer}", {"name": "x"}),
        ("DELETE", f"{SCHEDULES}/{schedule}/layers/{layer}", None),
        ("GET", f"{SCHEDULES}/{schedule}/overrides", None),
        ("GET", f"{SCHEDULES}/{schedule}/on-call", None),
        ("GET", f"{SCHEDULES}/{schedule}/timeline", None),
        ("GET", f"/customer/users/{alice}/shifts", None),
        ("GET", f"{POLICIES}/{policy['policy_id']}", None),
        ("PUT", f"{POLICIES}/{policy['policy_id']}", _policy("p", [(0, [("schedule", schedule)])])),
        ("DELETE", f"{POLICIES}/{policy['policy_id']}", None),
    ]:
        response = await client.request(method, url, headers=intruder, json=body)
        assert response.status_code == 404, (method, url, response.text)
    assert (await client.get(SCHEDULES, headers=intruder)).json()["items"] == []
    assert (await client.get(POLICIES, headers=intruder)).json()["items"] == []
    still = (await client.get(f"{SCHEDULES}/{schedule}", headers=admin)).json()
    assert still["name"] == "ops" and [x["layer_id"] for x in still["layers"]] == [layer]


async def test_a_customer_reads_but_cannot_change(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin, reader = await _admin(engine, settings, tenant), await _customer(engine, settings, tenant)
    alice = await _user(engine, tenant, "alice")
    schedule = await _schedule(client, admin)
    layer = (await client.post(f"{SCHEDULES}/{schedule}/layers", headers=admin,
                               json=_weekly([alice]))).json()["layers"][0]["layer_id"]
    policy = (await client.post(POLICIES, headers=admin, json=_policy("p", [(0, [("user", alice)])]))).json()

    for url in (SCHEDULES, f"{SCHEDULES}/{schedule}", f"{SCHEDULES}/{schedule}/on-call",
                f"{SCHEDULES}/{schedule}/timeline", f"{SCHEDULES}/{schedule}/overrides", POLICIES,
                f"/customer/users/{alice}/shifts"):
        assert (await client.get(url, headers=reader)).status_code == 200, url
    for method, url, body in [
        ("POST", SCHEDULES, {"name": "mine", "timezone": "UTC"}),
        ("PATCH", f"{SCHEDULES}/{schedule}", {"name": "mine"}),
        ("DELETE", f"{SCHEDULES}/{schedule}", None),
        ("POST", f"{SCHEDULES}/{schedule}/layers", _weekly([alice])),
        ("PATCH", f"{SCHEDULES}/{schedule}/layers/{layer}", {"name": "x"}),
        ("DELETE", f"{SCHEDULES}/{schedule}/layers/{layer}", None),
        ("POST", f"{SCHEDULES}/{schedule}/overrides",
         {"user_id": alice, "starts_at": "2026-03-16T09:00:00Z", "ends_at": "2026-03-16T10:00:00Z"}),
        ("POST", POLICIES, _policy("q", [(0, [("user", alice)])])),
        ("PUT", f"{POLICIES}/{policy['policy_id']}", _policy("q", [(0, [("user", alice)])])),
        ("DELETE", f"{POLICIES}/{policy['policy_id']}", None),
    ]:
        response = await client.request(method, url, headers=reader, json=body)
        assert response.status_code == 403, (method, url, response.text)
    assert (await client.get(SCHEDULES)).status_code == 401


async def test_who_is_on_call_and_the_timeline_over_http(client: Client, engine: AsyncEngine,
                                                         settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    alice, bob, carol = [await _user(engine, tenant, n) for n in ("alice", "bob", "carol")]
    schedule = await _schedule(client, admin)
    await client.post(f"{SCHEDULES}/{schedule}/layers", headers=admin, json=_weekly([alice, bob]))
    on_call = f"{SCHEDULES}/{schedule}/on-call"

    before = await client.get(on_call, headers=admin, params={"at": "2026-03-18T12:00:00Z"})
    assert before.status_code == 200, before.text
    person = before.json()["on_call"]
    assert (person["user_id"], person["user_name"], person["source"], person["layer_name"]) == (
        alice, "alice", "LAYER", "Primary")
    assert (person["since"], person["until"]) == ("2026-03-16T08:00:00Z", "2026-03-23T08:00:00Z")
    assert before.json()["timezone"] == "Europe/Berlin"

    made = await client.post(f"{SCHEDULES}/{schedule}/overrides", headers=admin, json={
        "user_id": carol, "starts_at": "2026-03-18T13:00:00+01:00", "ends_at": "2026-03-19T00:00:00Z",
        "reason": "alice is travelling"})
    assert made.status_code == 201, made.text
    assert made.json()["created_by"] == "lead@example.test" and made.json()["starts_at"] == "2026-03-18T12:00:00Z"
    swapped = (await client.get(on_call, headers=admin, params={"at": "2026-03-18T12:00:00Z"})).json()["on_call"]
    assert (swapped["user_id"], swapped["source"], swapped["override_id"]) == (carol, "OVERRIDE",
                                                                               made.json()["override_id"])
    assert "alice is travelling" in swapped["reason"] and swapped["until"] == "2026-03-19T00:00:00Z"

    seen = await client.get(f"{SCHEDULES}/{schedule}/timeline", headers=admin,
                            params={"start": "2026-03-16T08:00:00Z", "days": 14})
    assert seen.status_code == 200, seen.text
    assert seen.json()["timezone"] == "Europe/Berlin" and seen.json()["end"] == "2026-03-30T08:00:00Z"
    assert [(s["user_name"], s["source"], s["starts_at"], s["ends_at"]) for s in seen.json()["shifts"]] == [
        ("alice", "LAYER", "2026-03-16T08:00:00Z", "2026-03-18T12:00:00Z"),
        ("carol", "OVERRIDE", "2026-03-18T12:00:00Z", "2026-03-19T00:00:00Z"),
        ("alice", "LAYER", "2026-03-19T00:00:00Z", "2026-03-23T08:00:00Z"),
        ("bob", "LAYER", "2026-03-23T08:00:00Z", "2026-03-30T07:00:00Z"),   # 09:00 CEST after the DST change
        ("alice", "LAYER", "2026-03-30T07:00:00Z", "2026-03-30T08:00:00Z"),
    ]
    assert all(s["user_email"] for s in seen.json()["shifts"])

    window = await client.get(f"{SCHEDULES}/{schedule}/overrides", headers=admin,
                              params={"from": "2026-03-18T23:00:00Z", "to": "2026-03-20T00:00:00Z"})
    assert [o["user_id"] for o in window.json()["items"]] == [carol]
    later = await client.get(f"{SCHEDULES}/{schedule}/overrides", headers=admin,
                             params={"from": "2026-03-19T00:00:00Z"})
    assert later.json()["items"] == []

    daily = await _schedule(client, admin, name="daily")
    await client.post(f"{SCHEDULES}/{daily}/layers", headers=admin, json={
        "name": "Daily", "rotation_type": "DAILY", "rotation_start": "2020-01-01", "participants": [bob, alice]})
    shifts = await client.get(f"/customer/users/{bob}/shifts", headers=admin, params={"days": 14})
    assert shifts.status_code == 200 and shifts.json()["user_name"] == "bob"
    mine = [s for s in shifts.json()["shifts"] if s["schedule_id"] == daily]
    assert len(mine) in (7, 8)  # every other day from now, the first and last maybe cut short
    assert all(s["user_id"] == bob for s in shifts.json()["shifts"])
    assert [s["starts_at"] for s in shifts.json()["shifts"]] == sorted(s["starts_at"] for s in shifts.json()["shifts"])

    gone = await client.delete(f"{SCHEDULES}/{schedule}/overrides/{made.json()['override_id']}", headers=admin)
    assert gone.status_code == 204
    back = (await client.get(on_call, headers=admin, params={"at": "2026-03-18T12:00:00Z"})).json()["on_call"]
    assert back["user_id"] == alice
    again = await client.delete(f"{SCHEDULES}/{schedule}/overrides/{made.json()['override_id']}", headers=admin)
    assert again.status_code == 404

    empty = await _schedule(client, admin, name="empty")
    nobody = await client.get(f"{SCHEDULES}/{empty}/on-call", headers=admin)
    assert nobody.status_code == 200 and nobody.json()["on_call"] is None
