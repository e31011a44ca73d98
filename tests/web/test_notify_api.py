"""/customer notifications API through the real app: channels with masked secrets, routing rules, the delivery
log, dead letters, test sends to a real local receiver, tenant isolation and field-named errors."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.notify.channels.webhook import verify_signature
from pulse.notify.service import MASK, RetryPolicy
from pulse.notify.worker import Deliverer
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_site, make_tenant
from tests.notify.test_delivery import Receiver
from tests.web.conftest import bearer, token_for

SECRET = "original-signing-secret"
CHANNELS = "/customer/channels"
ROUTES = "/customer/routing-rules"
JOBS = "/customer/notifications/jobs"
DEAD = "/customer/notifications/dead-letters"


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def _admin(engine: AsyncEngine, settings: Settings, tenant: TenantRef) -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"]))


async def _webhook(client: AsyncTestClient[Litestar], headers: dict[str, str], url: str, name: str = "ops hook",
                   secret: str = SECRET) -> dict[str, Any]:
    response = await client.post(CHANNELS, headers=headers, json={
        "name": name, "channel_type": "WEBHOOK", "config": {"url": url}, "secrets": {"secret": secret}})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with system_tx(engine) as conn:
        row = (await conn.execute(text(
            "SELECT (SELECT count(*) FROM notification_jobs), (SELECT count(*) FROM alerts), "
            "  (SELECT count(*) FROM notification_attempts)"))).one()
    return row[0], row[1], row[2]


def _signed_with(secret: str, request: tuple[dict[str, str], bytes]) -> bool:
    headers, body = request
    return verify_signature(secret, headers["x-pulse-timestamp"], body, headers["x-pulse-signature"],
                            now=datetime.now(UTC))


async def test_secrets_are_masked_and_a_masked_patch_keeps_them(client: AsyncTestClient[Litestar],
                                                                engine: AsyncEngine, settings: Settings,
                                                                receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    created = await _webhook(client, admin, receiver.url)
    channel = created["channel_id"]
    assert created["secrets"] == {"secret": MASK} and created["config"]["url"] == receiver.url

    reader = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    one = await client.get(f"{CHANNELS}/{channel}", headers=reader)
    listed = await client.get(CHANNELS, headers=reader)
    assert one.status_code == 200 and listed.status_code == 200
    assert one.json()["secrets"] == {"secret": MASK} and [c["channel_id"] for c in listed.json()["items"]] == [channel]
    assert SECRET not in one.text and SECRET not in listed.text

    patched = await client.patch(f"{CHANNELS}/{channel}", headers=admin, json={
        "name": "ops webhook", "secrets": {"secret": MASK},
        "config": {"url": receiver.url, "headers": {"X-Team": "ops"}}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "ops webhook" and patched.json()["secrets"] == {"secret": MASK}
    assert SECRET not in patched.text

    before = await _counts(engine)
    sent = await client.post(f"{CHANNELS}/{channel}/test", headers=admin)
    assert sent.status_code == 200, sent.text
    assert sent.json()["delivered"] is True and sent.json()["status_code"] == 200
    [request] = receiver.requests
    assert _signed_with(SECRET, request), "the masked PATCH must have kept the original secret"
    assert request[0]["x-team"] == "ops"
    assert json.loads(request[1])["alert"]["title"] == "Pulse test notification"
    assert await _counts(engine) == before  # no job, no alert, no attempt

    rotated = await client.patch(f"{CHANNELS}/{channel}", headers=admin,
                                 json={"secrets": {"secret": "a-brand-new-signing-secret"}})
    assert rotated.status_code == 200 and rotated.json()["secrets"] == {"secret": MASK}
    await client.post(f"{CHANNELS}/{channel}/test", headers=admin)
    assert _signed_with("a-brand-new-signing-secret", receiver.requests[1])
    assert not _signed_with(SECRET, receiver.requests[1])


async def test_a_test_send_reports_what_the_receiver_answered(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                              settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    channel = (await _webhook(client, admin, receiver.url))["channel_id"]
    receiver.script = [(503, {})]
    before = await _counts(engine)

    sent = await client.post(f"{CHANNELS}/{channel}/test", headers=admin)

    assert sent.status_code == 200
    assert sent.json()["delivered"] is False and sent.json()["status_code"] == 503 and "503" in sent.json()["error"]
    assert await _counts(engine) == before


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "channel_type": "WEBHOOK", "config": {"url": "http://169.254.169.254/latest/meta-data/"},
      "secrets": {"secret": SECRET}}, "config.url"),
    ({"name": "x", "channel_type": "WEBHOOK", "config": {"url": "http://10.1.2.3/hook"},
      "secrets": {"secret": SECRET}}, "config.url"),
    ({"name": "x", "channel_type": "WEBHOOK", "config": {"url": "RECEIVER"}, "secrets": {}}, "secrets.secret"),
    ({"name": "x", "channel_type": "FAX", "config": {}, "secrets": {}}, "channel_type"),
    ({"name": "", "channel_type": "WEBHOOK", "config": {"url": "RECEIVER"}, "secrets": {"secret": SECRET}}, "name"),
    ({"name": "x", "channel_type": "WEBHOOK", "config": {"url": "RECEIVER"}, "secrets": {"secret": SECRET},
      "rate_limit_per_min": 0}, "rate_limit_per_min"),
    ({"name": "x", "channel_type": "WEBHOOK", "config": {"url": "RECEIVER"}, "secrets": {"secret": SECRET},
      "colour": "red"}, "colour"),
    ({"channel_type": "WEBHOOK", "config": {"url": "RECEIVER"}, "secrets": {"secret": SECRET}}, "name"),
])
async def test_bad_channels_are_400_naming_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                     settings: Settings, receiver: Receiver, body: dict[str, Any],
                                                     field: str) -> None:
    tenant = await make_tenant(engine)
    if body.get("config", {}).get("url") == "RECEIVER":
        body["config"]["url"] = receiver.url

    response = await client.post(CHANNELS, headers=await _admin(engine, settings, tenant), json=body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == field
    assert (await client.get(CHANNELS, headers=await _admin(engine, settings, tenant))).json()["items"] == []


async def test_bad_patches_are_400_and_change_nothing(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                      settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    channel = (await _webhook(client, admin, receiver.url))["channel_id"]
    url = f"{CHANNELS}/{channel}"
    for body, field in [({"config": {"url": "http://169.254.169.254/"}}, "config.url"),
                        ({"secrets": {"token": MASK}}, "secrets.token"),
                        ({"secrets": {}}, "secrets.secret"),
                        ({"config": {"url": receiver.url, "method": "DELETE"}}, "config.method"),
                        ({"is_enabled": "yes"}, "is_enabled"),
                        ({"channel_type": "SLACK"}, "channel_type")]:
        response = await client.patch(url, headers=admin, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["details"]["field"] == field, body
    shown = (await client.get(url, headers=admin)).json()
    assert shown["config"]["url"] == receiver.url and shown["name"] == "ops hook"
    assert (await client.patch(f"{CHANNELS}/not-a-uuid", headers=admin, json={})).status_code == 400
    await _webhook(client, admin, receiver.url, name="second")
    taken = await client.patch(url, headers=admin, json={"name": "second"})
    assert taken.status_code == 409


async def test_readers_read_and_only_tenant_admins_change(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                          settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    channel = (await _webhook(client, admin, receiver.url))["channel_id"]
    reader = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))
    operator = bearer(await token_for(engine, settings, tenant_id=None, roles=["operator"]))

    assert (await client.get(CHANNELS, headers=reader)).status_code == 200
    assert (await client.get(ROUTES, headers=reader)).status_code == 200
    assert (await client.get(JOBS, headers=reader)).status_code == 200
    for method, path in [("POST", CHANNELS), ("PATCH", f"{CHANNELS}/{channel}"), ("DELETE", f"{CHANNELS}/{channel}"),
                         ("POST", f"{CHANNELS}/{channel}/test"), ("POST", ROUTES)]:
        response = await client.request(method, path, headers=reader, json={} if method != "DELETE" else None)
        assert response.status_code == 403, (method, path)
    assert (await client.get(CHANNELS, headers=operator)).status_code == 403
    assert (await client.get(CHANNELS)).status_code == 401
    assert receiver.requests == []


async def _alert(engine: AsyncEngine, tenant: TenantRef, device: str, n: int) -> str:
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=f"RULE:r{n}:{device}", alert_type="THRESHOLD", severity=4,
            title=f"too warm {n}", summary="temp_c 31 > 30", device_id=device, metric="temp_c", value=31),
            now=datetime.now(UTC) - timedelta(seconds=1))
    return change.alert_id


async def _deliver_all(engine: AsyncEngine, settings: Settings) -> None:
    d = Deliverer(engine, settings, retry=RetryPolicy(base_s=0.05, cap_s=1.0, jitter=0.0))
    try:
        for _ in range(50):
            if not await d.deliver_once():
                async with system_tx(engine) as conn:
                    busy = (await conn.execute(text(
                        "SELECT count(*) FROM notification_jobs WHERE status IN ('PENDING', 'IN_PROGRESS') "
                        "AND next_attempt_at <= now() + interval '2 seconds'"))).scalar_one()
                if not busy:
                    return
                await asyncio.sleep(0.05)
    finally:
        await d.aclose()


async def test_a_routing_rule_for_an_unknown_site_or_group_is_refused(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    channel = (await _webhook(client, admin, receiver.url))["channel_id"]
    await make_site(engine, tenant, "depot")
    for scope, field in [({"site_ids": ["depot", "elsewhere"]}, "site_ids[1]"),
                         ({"group_ids": ["00000000-0000-4000-8000-000000000000"]}, "group_ids[0]")]:
        refused = await client.post(ROUTES, headers=admin, json={"name": "night", "channel_id": channel, **scope})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["details"]["field"] == field
    route = await client.post(ROUTES, headers=admin, json={"name": "night", "channel_id": channel,
                                                           "site_ids": ["depot"]})
    assert route.status_code == 201, route.text
    moved = await client.patch(f"{ROUTES}/{route.json()['route_id']}", headers=admin, json={"site_ids": ["moon"]})
    assert moved.status_code == 400 and moved.json()["error"]["details"]["field"] == "site_ids[0]"


async def _tenant_with_jobs(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings,
                            receiver: Receiver) -> tuple[TenantRef, dict[str, str], str, list[str]]:
    """A tenant with a webhook channel and route made through the API, and three delivered alerts
    plus one the receiver refused (a dead letter)."""
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    channel = (await _webhook(client, admin, receiver.url))["channel_id"]
    route = await client.post(ROUTES, headers=admin, json={"name": "everything", "channel_id": channel})
    assert route.status_code == 201, route.text
    device = await make_device(engine, tenant)
    receiver.script = [(400, {})]  # the first alert's delivery is refused for good
    alerts = [await _alert(engine, tenant, device, 0)]
    await _deliver_all(engine, settings)
    alerts += [await _alert(engine, tenant, device, n) for n in range(1, 4)]
    await _deliver_all(engine, settings)
    return tenant, admin, channel, alerts


async def test_delivery_log_filters_pages_and_shows_attempts(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                             settings: Settings, receiver: Receiver) -> None:
    tenant, _admin_headers, channel, alerts = await _tenant_with_jobs(client, engine, settings, receiver)
    reader = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))

    everything = (await client.get(JOBS, headers=reader)).json()
    assert len(everything["items"]) == 4 and everything["next_cursor"] is None
    assert sorted(j["status"] for j in everything["items"]) == ["DEAD", "DELIVERED", "DELIVERED", "DELIVERED"]
    assert {j["alert_id"] for j in everything["items"]} == set(alerts)

    delivered = (await client.get(f"{JOBS}?status=delivered&channel_id={channel}", headers=reader)).json()["items"]
    assert len(delivered) == 3 and all(j["channel_id"] == channel for j in delivered)
    [dead] = (await client.get(f"{JOBS}?alert_id={alerts[0]}", headers=reader)).json()["items"]
    assert dead["status"] == "DEAD" and dead["title"] == "too warm 0" and "400" in dead["last_error"]

    seen: list[str] = []
    cursor = None
    while True:
        query = f"{JOBS}?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(query, headers=reader)).json()
        seen += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [j["job_id"] for j in everything["items"]]  # the same order, nothing twice or missed

    one = await client.get(f"{JOBS}/{dead['job_id']}", headers=reader)
    assert one.status_code == 200
    [attempt] = one.json()["attempts"]
    assert attempt["attempt_no"] == 1 and attempt["outcome"] == "FAILED" and attempt["status_code"] == 400
    assert attempt["latency_ms"] >= 0 and attempt["started_at"] <= attempt["finished_at"] and attempt["error"]

    for query, field in [("limit=201", "limit"), ("limit=0", "limit"), ("status=LOST", "status"),
                         ("cursor=bm9wZQ", "cursor"), ("channel_id=123", "channel_id"), ("alert_id=x", "alert_id")]:
        response = await client.get(f"{JOBS}?{query}", headers=reader)
        assert response.status_code == 400, query
        assert response.json()["error"]["details"]["field"] == field, query


async def test_dead_letters_can_be_replayed(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                            settings: Settings, receiver: Receiver) -> None:
    _tenant, admin, _channel, alerts = await _tenant_with_jobs(client, engine, settings, receiver)
    [dead] = (await client.get(DEAD, headers=admin)).json()["items"]
    assert dead["alert_id"] == alerts[0]

    replayed = await client.post(f"{JOBS}/{dead['job_id']}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "PENDING" and replayed.json()["attempt_count"] == 0
    again = await client.post(f"{JOBS}/{dead['job_id']}/replay", headers=admin)
    assert again.status_code == 409

    await _deliver_all(engine, settings)
    assert (await client.get(DEAD, headers=admin)).json()["items"] == []
    shown = (await client.get(f"{JOBS}/{dead['job_id']}", headers=admin)).json()
    assert shown["status"] == "DELIVERED" and [a["outcome"] for a in shown["attempts"]] == ["FAILED", "DELIVERED"]
    assert len(receiver.requests) == 5


async def test_another_tenant_sees_and_touches_nothing(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                       settings: Settings, receiver: Receiver) -> None:
    tenant, admin_a, channel, _alerts = await _tenant_with_jobs(client, engine, settings, receiver)
    [dead] = (await client.get(DEAD, headers=admin_a)).json()["items"]
    [route] = (await client.get(ROUTES, headers=admin_a)).json()["items"]
    sent_before = len(receiver.requests)
    other = await make_tenant(engine)
    admin_b = await _admin(engine, settings, other)

    assert (await client.get(CHANNELS, headers=admin_b)).json()["items"] == []
    assert (await client.get(ROUTES, headers=admin_b)).json()["items"] == []
    assert (await client.get(JOBS, headers=admin_b)).json()["items"] == []
    assert (await client.get(f"{JOBS}?channel_id={channel}", headers=admin_b)).json()["items"] == []
    assert (await client.get(DEAD, headers=admin_b)).json()["items"] == []
    for method, path, body in [
        ("GET", f"{CHANNELS}/{channel}", None),
        ("PATCH", f"{CHANNELS}/{channel}", {"name": "mine now"}),
        ("DELETE", f"{CHANNELS}/{channel}", None),
        ("POST", f"{CHANNELS}/{channel}/test", None),
        ("PATCH", f"{ROUTES}/{route['route_id']}", {"min_severity": 5}),
        ("DELETE", f"{ROUTES}/{route['route_id']}", None),
        ("GET", f"{JOBS}/{dead['job_id']}", None),
        ("POST", f"{JOBS}/{dead['job_id']}/replay", None),
    ]:
        response = await client.request(method, path, headers=admin_b, json=body)
        assert response.status_code == 404, (method, path, response.text)
    routed_elsewhere = await client.post(ROUTES, headers=admin_b, json={"name": "steal", "channel_id": channel})
    assert routed_elsewhere.status_code == 404 and routed_elsewhere.json()["error"]["details"]["field"] == "channel_id"

    assert len(receiver.requests) == sent_before
    shown = (await client.get(f"{CHANNELS}/{channel}", headers=admin_a)).json()
    assert shown["name"] == "ops hook"
    assert (await client.get(f"{JOBS}/{dead['job_id']}", headers=admin_a)).json()["status"] == "DEAD"
    assert (await client.get(f"{ROUTES}", headers=admin_a)).json()["items"][0]["min_severity"] == 1
    assert tenant.tenant_id != other.tenant_id


async def test_routing_rules_are_listed_in_order_and_can_change(client: AsyncTestClient[Litestar],
                                                                engine: AsyncEngine, settings: Settings,
                                                                receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    admin = await _admin(engine, settings, tenant)
    channel = (await _webhook(client, admin, receiver.url))["channel_id"]
    late = (await client.post(ROUTES, headers=admin, json={
        "name": "late", "channel_id": channel, "position": 10, "tags": ["cold-chain"]})).json()
    early = (await client.post(ROUTES, headers=admin, json={
        "name": "early", "channel_id": channel, "position": 1, "min_severity": 4, "event_kinds": ["OPENED"],
        "is_final": True})).json()
    assert early["event_kinds"] == ["OPENED"] and late["tags"] == ["cold-chain"]
    assert [r["name"] for r in (await client.get(ROUTES, headers=admin)).json()["items"]] == ["early", "late"]

    moved = await client.patch(f"{ROUTES}/{late['route_id']}", headers=admin,
                               json={"position": 0, "device_id_prefix": "freezer-", "is_enabled": False})
    assert moved.status_code == 200, moved.text
    assert moved.json()["device_id_prefix"] == "freezer-" and moved.json()["is_enabled"] is False
    assert [r["name"] for r in (await client.get(ROUTES, headers=admin)).json()["items"]] == ["late", "early"]

    for body, field in [({"min_severity": 6}, "min_severity"), ({"event_kinds": ["EXPLODED"]}, "event_kinds"),
                        ({"group_ids": ["not-a-uuid"]}, "group_ids"), ({"channel_id": "nope"}, "channel_id"),
                        ({"priority": 1}, "priority"), ({"repeat_interval_s": -1}, "repeat_interval_s")]:
        response = await client.patch(f"{ROUTES}/{early['route_id']}", headers=admin, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["details"]["field"] == field, body

    assert (await client.delete(f"{ROUTES}/{late['route_id']}", headers=admin)).status_code == 204
    assert [r["name"] for r in (await client.get(ROUTES, headers=admin)).json()["items"]] == ["early"]
    assert (await client.delete(f"{ROUTES}/{late['route_id']}", headers=admin)).status_code == 404


async def test_deleting_a_channel_keeps_its_delivery_log(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                         settings: Settings, receiver: Receiver) -> None:
    tenant, admin, channel, alerts = await _tenant_with_jobs(client, engine, settings, receiver)
    device = await make_device(engine, tenant)
    queued = await _alert(engine, tenant, device, 99)  # not delivered yet when the channel goes

    assert (await client.delete(f"{CHANNELS}/{channel}", headers=admin)).status_code == 204

    assert (await client.get(f"{CHANNELS}/{channel}", headers=admin)).status_code == 404
    assert (await client.get(ROUTES, headers=admin)).json()["items"] == []
    jobs = (await client.get(JOBS, headers=admin)).json()["items"]
    assert {j["alert_id"]: j["status"] for j in jobs} == {
        alerts[0]: "DEAD", alerts[1]: "DELIVERED", alerts[2]: "DELIVERED", alerts[3]: "DELIVERED",
        queued: "CANCELLED"}
    assert all(j["channel_id"] is None for j in jobs)
    dead = next(j for j in jobs if j["status"] == "DEAD")
    assert (await client.post(f"{JOBS}/{dead['job_id']}/replay", headers=admin)).status_code == 409


async def test_the_openapi_document_lists_the_notification_api(client: AsyncTestClient[Litestar]) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert {"/customer/channels", "/customer/channels/{channel_id}/test", "/customer/routing-rules",
            "/customer/notifications/jobs/{job_id}/replay", "/customer/notifications/dead-letters"} <= set(paths)
