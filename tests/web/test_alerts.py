"""/api/v2/alerts: a tenant sees only its own alerts, filters and paging work, bad input is a 400."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from tests.conftest import make_tenant
from tests.web.conftest import bearer, insert_alert, login, make_user, token_for

ALERTS = "/api/v2/alerts"


async def test_a_tenant_lists_only_its_own_alerts(client: AsyncTestClient[Litestar], engine: AsyncEngine) -> None:
    a, b = await make_tenant(engine), await make_tenant(engine)
    mine = {await insert_alert(engine, a.tenant_id, opened_offset_s=60), await insert_alert(engine, a.tenant_id)}
    await insert_alert(engine, b.tenant_id)
    email, _ = await make_user(engine, a.tenant_id)
    token = (await login(client, email))["access_token"]

    response = await client.get(ALERTS, headers=bearer(token))

    assert response.status_code == 200
    body = response.json()
    assert {item["alert_id"] for item in body["items"]} == mine
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    newest, older = body["items"]
    assert newest["opened_at"] > older["opened_at"]
    assert newest["severity"] == 3 and newest["status"] == "OPEN" and newest["alert_type"] == "THRESHOLD"
    assert newest["trigger_value"] == 31.5 and newest["last_value"] == 32 and newest["metric"] == "temp_c"
    assert set(newest) >= {"alert_id", "fingerprint", "alert_type", "rule_id", "device_id", "site_id", "severity",
                           "status", "title", "summary", "metric", "trigger_value", "last_value",
                           "occurrence_count", "opened_at", "last_seen_at", "acknowledged_at", "closed_at",
                           "triggered_at", "detected_at"}


async def test_filters_and_paging(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                  settings: Settings) -> None:
    tenant = await make_tenant(engine)
    open_hot = await insert_alert(engine, tenant.tenant_id, severity=5, device_id="dev-1", opened_offset_s=30)
    acked = await insert_alert(engine, tenant.tenant_id, severity=4, status="ACKNOWLEDGED", device_id="dev-2",
                               opened_offset_s=20)
    closed = await insert_alert(engine, tenant.tenant_id, severity=2, status="CLOSED", device_id="dev-1",
                                opened_offset_s=10)
    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"]))

    async def ids(query: str) -> list[str]:
        response = await client.get(f"{ALERTS}?{query}", headers=headers)
        assert response.status_code == 200, response.text
        return [item["alert_id"] for item in response.json()["items"]]

    assert await ids("status=OPEN,acknowledged") == [acked, open_hot]
    assert await ids("status=OPEN&status=CLOSED") == [closed, open_hot]
    assert await ids("severity_min=4") == [acked, open_hot]
    assert await ids("device_id=dev-1") == [closed, open_hot]
    assert await ids("device_id=dev-1&status=CLOSED") == [closed]
    assert await ids("limit=1") == [closed]
    page = (await client.get(f"{ALERTS}?limit=1&offset=1", headers=headers)).json()
    assert [i["alert_id"] for i in page["items"]] == [acked] and page["total"] == 3 and page["offset"] == 1


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"),
    ("severity_min=6", "severity_min"), ("status=RESOLVED", "status"), ("status=OPEN,nope", "status"),
])
async def test_bad_query_parameters_are_400_naming_the_parameter(client: AsyncTestClient[Litestar],
                                                                 engine: AsyncEngine, settings: Settings,
                                                                 query: str, field: str) -> None:
    tenant = await make_tenant(engine)
    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id))

    response = await client.get(f"{ALERTS}?{query}", headers=headers)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"]["field"] == field
    assert field in error["message"]


async def test_alert_detail_has_its_events_in_order(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                    settings: Settings) -> None:
    tenant = await make_tenant(engine)
    alert_id = await insert_alert(engine, tenant.tenant_id, status="ACKNOWLEDGED",
                                  events=("OPENED", "UPDATED", "ACKNOWLEDGED"))
    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id))

    response = await client.get(f"{ALERTS}/{alert_id}", headers=headers)

    assert response.status_code == 200
    body = response.json()
    assert body["alert_id"] == alert_id and body["status"] == "ACKNOWLEDGED" and body["acknowledged_at"]
    assert [e["kind"] for e in body["events"]] == ["OPENED", "UPDATED", "ACKNOWLEDGED"]
    assert body["events"][0]["details"] == {"kind": "OPENED"} and body["events"][0]["actor"] == "system"


async def test_another_tenants_alert_is_not_found(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                  settings: Settings) -> None:
    a, b = await make_tenant(engine), await make_tenant(engine)
    theirs = await insert_alert(engine, b.tenant_id)
    headers = bearer(await token_for(engine, settings, tenant_id=a.tenant_id))

    other = await client.get(f"{ALERTS}/{theirs}", headers=headers)
    unknown = await client.get(f"{ALERTS}/{uuid.uuid4()}", headers=headers)

    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    assert theirs not in str(other.json()["error"]["details"])


async def test_malformed_alert_id_is_400_naming_the_parameter(client: AsyncTestClient[Litestar],
                                                              engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id))

    response = await client.get(f"{ALERTS}/not-a-uuid", headers=headers)

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "alert_id"


async def test_token_without_tenant_claim_is_403(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                 settings: Settings) -> None:
    headers = bearer(await token_for(engine, settings, tenant_id=None, roles=["customer"]))

    response = await client.get(ALERTS, headers=headers)

    assert response.status_code == 403
    assert "tenant_id" in response.json()["error"]["message"]


async def test_operator_role_alone_cannot_use_the_customer_api(client: AsyncTestClient[Litestar],
                                                                engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["operator"]))

    response = await client.get(ALERTS, headers=headers)

    assert response.status_code == 403
    assert response.json()["error"]["details"]["required_roles"] == ["customer", "tenant-admin"]


async def test_a_customer_token_cannot_call_the_admin_api(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                          settings: Settings) -> None:
    tenant = await make_tenant(engine)
    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"]))

    response = await client.post("/api/admin/devices", headers=headers,
                                 json={"tenant_id": tenant.tenant_id, "device_id": "sneaky-1"})

    assert response.status_code == 401
    assert "X-Admin-Key" in response.json()["error"]["message"]


async def test_acknowledge_silence_unsilence_and_close_over_http(client: AsyncTestClient[Litestar],
                                                                 engine: AsyncEngine) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    alert_id = await insert_alert(engine, tenant.tenant_id)
    foreign = await insert_alert(engine, other.tenant_id)
    email, _ = await make_user(engine, tenant.tenant_id)
    headers = bearer((await login(client, email))["access_token"])

    assert (await client.post(f"{ALERTS}/{foreign}/acknowledge", headers=headers)).status_code == 404
    bad = await client.post(f"{ALERTS}/{alert_id}/silence", json={"until": "2020-01-01T00:00:00Z"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "until"
    naive = await client.post(f"{ALERTS}/{alert_id}/silence", json={"until": "2099-01-01T00:00:00"}, headers=headers)
    assert naive.status_code == 400 and naive.json()["error"]["details"]["field"] == "until"
    assert (await client.post(f"{ALERTS}/{alert_id}/unsilence", headers=headers)).status_code == 409

    silenced = await client.post(f"{ALERTS}/{alert_id}/silence", headers=headers,
                                 json={"until": "2099-01-01T00:00:00Z", "reason": "maintenance"})
    assert silenced.status_code == 400  # at most 30 days ahead
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    silenced = await client.post(f"{ALERTS}/{alert_id}/silence", json={"until": until}, headers=headers)
    assert silenced.status_code == 200, silenced.text
    assert silenced.json()["events"][-1]["kind"] == "SILENCED"
    resumed = await client.post(f"{ALERTS}/{alert_id}/unsilence", headers=headers)
    assert resumed.status_code == 200 and resumed.json()["events"][-1]["kind"] == "UNSILENCED"

    acked = await client.post(f"{ALERTS}/{alert_id}/acknowledge", headers=headers)
    assert acked.status_code == 200
    body = acked.json()
    assert body["status"] == "ACKNOWLEDGED" and body["events"][-1]["actor"] in (email, email.lower())
    again = await client.post(f"{ALERTS}/{alert_id}/acknowledge", headers=headers)
    assert again.status_code == 409 and again.json()["error"]["details"]["status"] == "ACKNOWLEDGED"
    closed = await client.post(f"{ALERTS}/{alert_id}/close", json={"reason": "valve replaced"}, headers=headers)
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    assert closed.json()["events"][-1]["reason"] == "valve replaced"
