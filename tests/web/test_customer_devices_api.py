"""/customer device administration through the real app: a device created over the API sends over HTTP ingest at
once; disabling, rotating, revoking and decommissioning take effect in ingest; sites, groups, tags and CSV import;
roles, tenant isolation and field-named errors."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.crypto import hash_token
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.web.conftest import bearer, token_for

DEVICES = "/customer/devices"
SITES = "/customer/sites"
GROUPS = "/customer/device-groups"


async def _headers(engine: AsyncEngine, settings: Settings, tenant: TenantRef,
                   role: str = "tenant-admin") -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=[role]))


async def _send(client: AsyncTestClient[Litestar], tenant_id: str, device_id: str, token: str,
                seq: int = 1) -> httpx.Response:
    return await client.post(f"/ingest/v1/tenant/{tenant_id}/device/{device_id}/telemetry",
                             content=json.dumps({"seq": seq, "metrics": {"temp_c": 4.5}}),
                             headers={"X-Provision-Token": token, "Content-Type": "application/json"})


async def _send_until(client: AsyncTestClient[Litestar], tenant_id: str, device_id: str, token: str,
                      status: int) -> httpx.Response:
    """Send until ingest answers `status` (its registry cache is told of changes by a NOTIFY after commit)."""
    response = await _send(client, tenant_id, device_id, token)
    for attempt in range(50):
        if response.status_code == status:
            break
        await asyncio.sleep(0.1)
        response = await _send(client, tenant_id, device_id, token, seq=attempt + 2)
    return response


async def _create(client: AsyncTestClient[Litestar], headers: dict[str, str], device_id: str,
                  **fields: Any) -> dict[str, Any]:
    response = await client.post(DEVICES, headers=headers, json={"device_id": device_id, **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _device_row(engine: AsyncEngine, tenant_id: str, device_id: str) -> Any:
    async with system_tx(engine) as conn:
        return (await conn.execute(text("SELECT * FROM devices WHERE tenant_id = :t AND device_id = :d"),
                                   {"t": tenant_id, "d": device_id})).first()


async def _live_credentials(engine: AsyncEngine, tenant_id: str, device_id: str) -> int:
    async with system_tx(engine) as conn:
        return int((await conn.execute(text(
            "SELECT count(*) FROM device_credentials WHERE tenant_id = :t AND device_id = :d AND revoked_at IS NULL"),
            {"t": tenant_id, "d": device_id})).scalar_one())


# --- create and send ---------------------------------------------------------------------------------------------

async def test_a_device_created_over_the_api_can_send_at_once(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                             settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    site = await client.post(SITES, headers=admin, json={"site_id": "plant-1", "name": "Plant 1",
                                                         "timezone": "Europe/Berlin"})
    group = await client.post(GROUPS, headers=admin, json={"name": "freezers"})
    assert site.status_code == 201 and group.status_code == 201, (site.text, group.text)
    group_id = group.json()["group_id"]

    response = await client.post(DEVICES, headers=admin, json={
        "device_id": "freezer-7", "name": "Freezer 7", "site_id": "plant-1", "device_type": "freezer",
        "tags": ["cold", "kitchen", "cold"], "attributes": {"model": "FZ-200"}, "heartbeat_interval_s": 60,
        "lat": 52.52, "lng": 13.40, "group_ids": [group_id]})

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    device, creds = body["device"], body["credentials"]
    assert device["device_id"] == "freezer-7" and device["status"] == "ACTIVE"
    assert (device["name"], device["site_id"], device["device_type"]) == ("Freezer 7", "plant-1", "freezer")
    assert device["tags"] == ["cold", "kitchen"] and device["attributes"] == {"model": "FZ-200"}
    assert (device["heartbeat_interval_s"], device["lat"], device["lng"]) == (60, 52.52, 13.40)
    assert device["group_ids"] == [group_id] and device["credentials_issued_at"]
    assert creds["tenant_id"] == tenant.tenant_id and creds["device_id"] == "freezer-7"
    assert creds["mqtt"]["username"] == f"{tenant.tenant_id}/freezer-7" and creds["mqtt"]["password"]
    assert creds["mqtt"]["topic_prefix"] == f"tenant/{tenant.tenant_id}/device/freezer-7/"
    async with system_tx(engine) as conn:
        stored = (await conn.execute(text(
            "SELECT secret_hash FROM device_credentials WHERE tenant_id = :t AND device_id = 'freezer-7' "
            "AND kind = 'PROVISION_TOKEN' AND revoked_at IS NULL"), {"t": tenant.tenant_id})).scalar_one()
    assert stored == hash_token(creds["provision_token"])  # only the hash is kept

    sent = await _send(client, tenant.tenant_id, "freezer-7", creds["provision_token"], seq=41)

    assert sent.status_code == 202, sent.text
    async with system_tx(engine) as conn:
        row = (await conn.execute(text("SELECT seq, site_id, metrics FROM telemetry WHERE tenant_id = :t "
                                       "AND device_id = 'freezer-7'"), {"t": tenant.tenant_id})).one()
    assert (row.seq, row.site_id, row.metrics) == (41, "plant-1", {"temp_c": 4.5})


@pytest.mark.parametrize(("body", "field"), [
    ({"device_id": "bad/id"}, "device_id"),
    ({"device_id": "has space"}, "device_id"),
    ({"device_id": "import"}, "device_id"),
    ({"device_id": "d-1", "site_id": "no-such-site"}, "site_id"),
    ({"device_id": "d-1", "group_ids": ["{missing_group}"]}, "group_ids"),
    ({"device_id": "d-1", "group_ids": ["not-a-uuid"]}, "group_ids"),
    ({"device_id": "d-1", "heartbeat_interval_s": 0}, "heartbeat_interval_s"),
    ({"device_id": "d-1", "heartbeat_interval_s": "soon"}, "heartbeat_interval_s"),
    ({"device_id": "d-1", "colour": "red"}, "colour"),
    ({"device_id": "d-1", "tags": ["ok", ""]}, "tags"),
    ({"device_id": "d-1", "lat": 91, "lng": 0}, "lat"),
    ({"device_id": "d-1", "lat": 10}, "lng"),
    ({"device_id": "d-1", "name": "two\nlines"}, "name"),
    ({"name": "no id"}, "device_id"),
])
async def test_bad_device_requests_name_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                  settings: Settings, body: dict[str, Any], field: str) -> None:
    tenant = await make_tenant(engine)
    payload = {k: ([str(uuid.uuid4())] if v == ["{missing_group}"] else v) for k, v in body.items()}

    response = await client.post(DEVICES, headers=await _headers(engine, settings, tenant), json=payload)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == field
    async with system_tx(engine) as conn:
        count = (await conn.execute(text("SELECT count(*) FROM devices WHERE tenant_id = :t"),
                                    {"t": tenant.tenant_id})).scalar_one()
    assert count == 0


async def test_duplicate_device_is_409_and_the_device_limit_is_403(client: AsyncTestClient[Litestar],
                                                                  engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine, device_limit=1)
    admin = await _headers(engine, settings, tenant)
    await _create(client, admin, "d-1")

    twice = await client.post(DEVICES, headers=admin, json={"device_id": "d-1"})
    over = await client.post(DEVICES, headers=admin, json={"device_id": "d-2"})

    assert twice.status_code == 409 and twice.json()["error"]["details"]["field"] == "device_id"
    assert over.status_code == 403 and over.json()["error"]["code"] == "limit_exceeded"
    assert await _device_row(engine, tenant.tenant_id, "d-2") is None


# --- status and credentials as ingest sees them ------------------------------------------------------------------

async def test_a_disabled_device_is_refused_by_ingest_until_enabled(client: AsyncTestClient[Litestar],
                                                                    engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    token = (await _create(client, admin, "pump-1"))["credentials"]["provision_token"]
    assert (await _send(client, tenant.tenant_id, "pump-1", token)).status_code == 202  # now in ingest's cache

    disabled = await client.patch(f"{DEVICES}/pump-1", headers=admin, json={"status": "DISABLED"})

    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["status"] == "DISABLED"
    refused = await _send_until(client, tenant.tenant_id, "pump-1", token, 403)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "DEVICE_REVOKED"
    assert "disabled" in refused.json()["error"]["message"]

    enabled = await client.patch(f"{DEVICES}/pump-1", headers=admin, json={"status": "ACTIVE"})

    assert enabled.status_code == 200 and enabled.json()["status"] == "ACTIVE"
    assert (await _send_until(client, tenant.tenant_id, "pump-1", token, 202)).status_code == 202


async def test_patch_changes_fields_and_refuses_bad_values(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                           settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    await client.post(SITES, headers=admin, json={"site_id": "s-1", "name": "Site 1"})
    await _create(client, admin, "d-1", heartbeat_interval_s=30)

    changed = await client.patch(f"{DEVICES}/d-1", headers=admin, json={
        "name": "Boiler", "site_id": "s-1", "device_type": "boiler", "attributes": {"fw": "2.1"},
        "heartbeat_interval_s": None, "lat": 1.5, "lng": 2.5})

    assert changed.status_code == 200, changed.text
    device = changed.json()
    assert (device["name"], device["site_id"], device["device_type"]) == ("Boiler", "s-1", "boiler")
    assert device["attributes"] == {"fw": "2.1"} and device["heartbeat_interval_s"] is None
    assert (device["lat"], device["lng"]) == (1.5, 2.5)
    for body, field in [({"status": "DECOMMISSIONED"}, "status"), ({"status": "PAUSED"}, "status"),
                        ({"site_id": "nowhere"}, "site_id"), ({"heartbeat_interval_s": -5}, "heartbeat_interval_s"),
                        ({"lat": None}, "lat"), ({"device_id": "renamed"}, "device_id")]:
        bad = await client.patch(f"{DEVICES}/d-1", headers=admin, json=body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["error"]["details"]["field"] == field
    assert (await _device_row(engine, tenant.tenant_id, "d-1")).name == "Boiler"


async def test_rotating_credentials_retires_the_old_token(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                          settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    old = (await _create(client, admin, "gw-1"))["credentials"]
    assert (await _send(client, tenant.tenant_id, "gw-1", old["provision_token"])).status_code == 202

    rotated = await client.post(f"{DEVICES}/gw-1/credentials", headers=admin)

    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()
    assert new["provision_token"] != old["provision_token"] and new["mqtt"]["password"] != old["mqtt"]["password"]
    assert new["mqtt"]["username"] == old["mqtt"]["username"]
    stale = await _send_until(client, tenant.tenant_id, "gw-1", old["provision_token"], 401)
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "TOKEN_INVALID"
    assert (await _send(client, tenant.tenant_id, "gw-1", new["provision_token"], seq=99)).status_code == 202
    assert await _live_credentials(engine, tenant.tenant_id, "gw-1") == 2  # one token, one MQTT password


async def test_revoking_credentials_stops_the_device_until_new_ones_are_issued(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    token = (await _create(client, admin, "gw-2"))["credentials"]["provision_token"]
    assert (await _send(client, tenant.tenant_id, "gw-2", token)).status_code == 202

    revoked = await client.delete(f"{DEVICES}/gw-2/credentials", headers=admin)

    assert revoked.status_code == 204, revoked.text
    assert await _live_credentials(engine, tenant.tenant_id, "gw-2") == 0
    assert (await _send_until(client, tenant.tenant_id, "gw-2", token, 401)).status_code == 401
    assert (await _device_row(engine, tenant.tenant_id, "gw-2")).status == "ACTIVE"
    fresh = await client.post(f"{DEVICES}/gw-2/credentials", headers=admin)
    assert fresh.status_code == 200
    assert (await _send_until(client, tenant.tenant_id, "gw-2", fresh.json()["provision_token"], 202)).status_code \
        == 202


async def test_decommission_then_delete(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                        settings: Settings) -> None:
    tenant = await make_tenant(engine, device_limit=1)
    admin = await _headers(engine, settings, tenant)
    token = (await _create(client, admin, "old-1"))["credentials"]["provision_token"]
    assert (await _send(client, tenant.tenant_id, "old-1", token)).status_code == 202

    early = await client.delete(f"{DEVICES}/old-1", headers=admin)
    assert early.status_code == 409 and early.json()["error"]["code"] == "conflict"

    decommissioned = await client.post(f"{DEVICES}/old-1/decommission", headers=admin)

    assert decommissioned.status_code == 200, decommissioned.text
    device = decommissioned.json()
    assert device["status"] == "DECOMMISSIONED" and device["decommissioned_at"]
    assert device["credentials_issued_at"] is None
    assert await _live_credentials(engine, tenant.tenant_id, "old-1") == 0
    refused = await _send_until(client, tenant.tenant_id, "old-1", token, 403)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "DEVICE_REVOKED"
    assert "decommissioned" in refused.json()["error"]["message"]
    assert (await client.patch(f"{DEVICES}/old-1", headers=admin, json={"status": "ACTIVE"})).status_code == 409
    assert (await client.post(f"{DEVICES}/old-1/credentials", headers=admin)).status_code == 409
    # A decommissioned device no longer counts against the device limit.
    await _create(client, admin, "new-1")

    deleted = await client.delete(f"{DEVICES}/old-1", headers=admin)

    assert deleted.status_code == 204, deleted.text
    assert await _device_row(engine, tenant.tenant_id, "old-1") is None
    async with system_tx(engine) as conn:
        state = (await conn.execute(text("SELECT count(*) FROM device_state WHERE tenant_id = :t AND "
                                         "device_id = 'old-1'"), {"t": tenant.tenant_id})).scalar_one()
    assert state == 0
    assert (await client.delete(f"{DEVICES}/old-1", headers=admin)).status_code == 404


# --- tags --------------------------------------------------------------------------------------------------------

async def test_tags_replace_and_bulk_change(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                            settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    for device_id in ("a", "b", "c"):
        await _create(client, admin, device_id, tags=["old"])
    assert (await client.post(f"{DEVICES}/c/decommission", headers=admin)).status_code == 200

    replaced = await client.put(f"{DEVICES}/a/tags", headers=admin, json={"tags": ["x", "y"]})
    bulk = await client.post(f"{DEVICES}/tags", headers=admin,
                             json={"device_ids": ["a", "b", "c"], "add": ["z", "x"], "remove": ["old", "y"]})

    assert replaced.status_code == 200 and replaced.json()["tags"] == ["x", "y"]
    assert bulk.status_code == 200, bulk.text
    assert bulk.json() == {"updated": 2, "skipped": ["c"]}
    tags = {d: list((await _device_row(engine, tenant.tenant_id, d)).tags) for d in ("a", "b", "c")}
    assert tags == {"a": ["x", "z"], "b": ["z", "x"], "c": ["old"]}

    unknown = await client.post(f"{DEVICES}/tags", headers=admin, json={"device_ids": ["a", "ghost"], "add": ["q"]})
    bad_tag = await client.put(f"{DEVICES}/a/tags", headers=admin, json={"tags": ["semi;colon"]})
    assert unknown.status_code == 400 and unknown.json()["error"]["details"]["field"] == "device_ids"
    assert "ghost" in unknown.json()["error"]["message"]
    assert bad_tag.status_code == 400 and bad_tag.json()["error"]["details"]["field"] == "tags"
    assert list((await _device_row(engine, tenant.tenant_id, "a")).tags) == ["x", "z"]


# --- sites and groups --------------------------------------------------------------------------------------------

async def test_sites_crud(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)

    created = await client.post(SITES, headers=admin, json={"site_id": "hq", "name": "HQ", "address": "Main St 1",
                                                            "lat": 48.1, "lng": 11.6})
    twice = await client.post(SITES, headers=admin, json={"site_id": "hq", "name": "HQ again"})
    bad_zone = await client.post(SITES, headers=admin, json={"site_id": "x", "name": "X", "timezone": "Mars/Base"})
    bad_id = await client.post(SITES, headers=admin, json={"site_id": "a b", "name": "X"})

    assert created.status_code == 201, created.text
    assert created.json()["timezone"] == "UTC" and created.json()["device_count"] == 0
    assert twice.status_code == 409 and twice.json()["error"]["details"]["field"] == "site_id"
    assert bad_zone.status_code == 400 and bad_zone.json()["error"]["details"]["field"] == "timezone"
    assert bad_id.status_code == 400 and bad_id.json()["error"]["details"]["field"] == "site_id"
    await _create(client, admin, "d-1", site_id="hq")

    changed = await client.patch(f"{SITES}/hq", headers=admin, json={"name": "Head office",
                                                                     "timezone": "Europe/Berlin", "address": None})
    listed = await client.get(SITES, headers=admin)

    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["timezone"], changed.json()["address"]) == \
        ("Head office", "Europe/Berlin", None)
    assert [(s["site_id"], s["device_count"]) for s in listed.json()["items"]] == [("hq", 1)]

    deleted = await client.delete(f"{SITES}/hq", headers=admin)

    assert deleted.status_code == 204
    assert (await client.get(f"{SITES}/hq", headers=admin)).status_code == 404
    assert (await _device_row(engine, tenant.tenant_id, "d-1")).site_id is None  # the device stays, siteless


async def test_groups_and_members(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    for device_id in ("a", "b", "c"):
        await _create(client, admin, device_id)

    created = await client.post(GROUPS, headers=admin, json={"name": "line 1", "description": "first line",
                                                             "device_ids": ["a"]})
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    same_name = await client.post(GROUPS, headers=admin, json={"name": "line 1"})
    unknown_member = await client.post(GROUPS, headers=admin, json={"name": "line 2", "device_ids": ["ghost"]})
    assert same_name.status_code == 409 and same_name.json()["error"]["details"]["field"] == "name"
    assert unknown_member.status_code == 400 and unknown_member.json()["error"]["details"]["field"] == "device_ids"

    added = await client.post(f"{GROUPS}/{group_id}/members", headers=admin, json={"device_ids": ["b", "a"]})
    assert added.status_code == 200 and added.json()["device_ids"] == ["a", "b"]
    replaced = await client.put(f"{GROUPS}/{group_id}/members", headers=admin, json={"device_ids": ["c"]})
    assert replaced.status_code == 200 and replaced.json()["device_ids"] == ["c"]
    renamed = await client.patch(f"{GROUPS}/{group_id}", headers=admin, json={"name": "line one"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "line one"
    device_c = await client.patch(f"{DEVICES}/c", headers=admin, json={"name": "C"})
    assert device_c.json()["group_ids"] == [group_id]
    listed = await client.get(GROUPS, headers=admin)
    assert [(g["name"], g["device_ids"]) for g in listed.json()["items"]] == [("line one", ["c"])]
    assert (await client.get(f"{GROUPS}/not-a-uuid", headers=admin)).json()["error"]["details"]["field"] == "group_id"

    deleted = await client.delete(f"{GROUPS}/{group_id}", headers=admin)

    assert deleted.status_code == 204
    assert (await client.get(f"{GROUPS}/{group_id}", headers=admin)).status_code == 404
    assert await _device_row(engine, tenant.tenant_id, "c") is not None


# --- CSV import --------------------------------------------------------------------------------------------------

async def test_csv_import_keeps_good_rows_and_reports_bad_ones(client: AsyncTestClient[Litestar],
                                                              engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    await client.post(SITES, headers=admin, json={"site_id": "plant-1", "name": "Plant 1"})
    csv_body = (
        "device_id,name,site_id,device_type,tags,heartbeat_interval_s\n"
        "cold-1,Cold room 1,plant-1,freezer,cold;kitchen,60\n"
        "bad/id,Broken,,,,\n"
        "cold-2,Cold room 2,nowhere,freezer,,\n"
        "cold-3,\"Cold room 3, east\",,freezer,,soon\n"
        "cold-1,Again,,,,\n"
        ",No id,,,,\n"
        "cold-4,,,,,0\n"
        "cold-5,,,sensor,, \n"
    )

    response = await client.post(f"{DEVICES}/import", headers={**admin, "Content-Type": "text/csv"},
                                 content=csv_body.encode())

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["failed"]) == (2, 6)
    results = {r["row"]: r for r in body["results"]}
    assert [r["row"] for r in body["results"]] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert results[2] == {"row": 2, "device_id": "cold-1", "status": "created"}
    assert results[9] == {"row": 9, "device_id": "cold-5", "status": "created"}
    assert [(results[n]["status"], results[n]["error"]["field"]) for n in (3, 4, 5, 6, 7, 8)] == [
        ("error", "device_id"), ("error", "site_id"), ("error", "heartbeat_interval_s"), ("error", "device_id"),
        ("error", "device_id"), ("error", "heartbeat_interval_s")]
    assert "already exists" in results[6]["error"]["message"]
    cold_1 = await _device_row(engine, tenant.tenant_id, "cold-1")
    assert (cold_1.name, cold_1.site_id, cold_1.device_type, list(cold_1.tags), cold_1.heartbeat_interval_s) == \
        ("Cold room 1", "plant-1", "freezer", ["cold", "kitchen"], 60)
    async with system_tx(engine) as conn:
        ids = [r[0] for r in await conn.execute(text(
            "SELECT device_id FROM devices WHERE tenant_id = :t ORDER BY device_id"), {"t": tenant.tenant_id})]
    assert ids == ["cold-1", "cold-5"]
    assert await _live_credentials(engine, tenant.tenant_id, "cold-1") == 0  # bulk import issues no credentials

    issued = await client.post(f"{DEVICES}/cold-1/credentials", headers=admin)

    assert issued.status_code == 200
    assert (await _send(client, tenant.tenant_id, "cold-1", issued.json()["provision_token"])).status_code == 202


async def test_csv_import_stops_at_the_device_limit(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                    settings: Settings) -> None:
    tenant = await make_tenant(engine, device_limit=2)
    admin = await _headers(engine, settings, tenant)

    response = await client.post(f"{DEVICES}/import", headers={**admin, "Content-Type": "text/csv"},
                                 content=b"device_id\nd-1\nd-2\nd-3\n")

    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["created", "created", "error"]
    assert "allows 2 devices" in response.json()["results"][2]["error"]["message"]


@pytest.mark.parametrize(("content", "content_type", "status", "field"), [
    (b"device_id,colour\nd-1,red\n", "text/csv", 400, "header"),
    (b"name\nno id column\n", "text/csv", 400, "header"),
    (b"", "text/csv", 400, "body"),
    (b"device_id\n\xff\xfe\n", "text/csv", 400, "body"),
    (b"device_id\n" + b"d\n" * 5001, "text/csv", 400, "body"),
    (b'{"device_id": "d-1"}', "application/json", 415, "content-type"),
])
async def test_csv_documents_that_cannot_be_read_are_refused_whole(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings, content: bytes,
        content_type: str, status: int, field: str) -> None:
    tenant = await make_tenant(engine)

    response = await client.post(f"{DEVICES}/import", content=content, headers={
        **await _headers(engine, settings, tenant), "Content-Type": content_type})

    assert response.status_code == status, response.text
    assert response.json()["error"]["details"]["field"] == field
    assert (await client.get(SITES, headers=await _headers(engine, settings, tenant))).status_code == 200


async def test_csv_over_two_megabytes_is_413(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                             settings: Settings) -> None:
    tenant = await make_tenant(engine)
    content = b"device_id,name\n" + b"d-1," + b"x" * (2 * 1024 * 1024) + b"\n"

    response = await client.post(f"{DEVICES}/import", content=content, headers={
        **await _headers(engine, settings, tenant), "Content-Type": "text/csv"})

    assert response.status_code == 413


# --- roles and tenants -------------------------------------------------------------------------------------------

async def test_customers_read_but_cannot_change(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                settings: Settings) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    customer = await _headers(engine, settings, tenant, role="customer")
    writes = [
        ("POST", DEVICES, {"device_id": "d-new"}), ("PATCH", f"{DEVICES}/{device}", {"name": "x"}),
        ("POST", f"{DEVICES}/{device}/decommission", None), ("DELETE", f"{DEVICES}/{device}", None),
        ("POST", f"{DEVICES}/{device}/credentials", None), ("DELETE", f"{DEVICES}/{device}/credentials", None),
        ("PUT", f"{DEVICES}/{device}/tags", {"tags": []}), ("POST", f"{DEVICES}/tags", {"device_ids": [device]}),
        ("POST", SITES, {"site_id": "s", "name": "S"}), ("POST", GROUPS, {"name": "g"}),
    ]
    for method, path, body in writes:
        response = await client.request(method, path, headers=customer, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "forbidden"
    imported = await client.post(f"{DEVICES}/import", content=b"device_id\nd-x\n",
                                 headers={**customer, "Content-Type": "text/csv"})
    assert imported.status_code == 403
    assert (await client.get(SITES, headers=customer)).status_code == 200
    assert (await client.get(GROUPS, headers=customer)).status_code == 200
    assert (await _device_row(engine, tenant.tenant_id, device)).status == "ACTIVE"
    assert (await client.get(SITES)).status_code == 401


async def test_another_tenants_ids_are_not_found(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                 settings: Settings) -> None:
    owner, other = await make_tenant(engine), await make_tenant(engine)
    owner_admin, intruder = await _headers(engine, settings, owner), await _headers(engine, settings, other)
    await _create(client, owner_admin, "theirs")
    await client.post(SITES, headers=owner_admin, json={"site_id": "their-site", "name": "Theirs"})
    group_id = (await client.post(GROUPS, headers=owner_admin, json={"name": "theirs"})).json()["group_id"]
    calls = [
        ("PATCH", f"{DEVICES}/theirs", {"status": "DISABLED"}), ("POST", f"{DEVICES}/theirs/decommission", None),
        ("DELETE", f"{DEVICES}/theirs", None), ("POST", f"{DEVICES}/theirs/credentials", None),
        ("DELETE", f"{DEVICES}/theirs/credentials", None), ("PUT", f"{DEVICES}/theirs/tags", {"tags": ["x"]}),
        ("GET", f"{SITES}/their-site", None), ("PATCH", f"{SITES}/their-site", {"name": "mine"}),
        ("DELETE", f"{SITES}/their-site", None), ("GET", f"{GROUPS}/{group_id}", None),
        ("PATCH", f"{GROUPS}/{group_id}", {"name": "mine"}), ("DELETE", f"{GROUPS}/{group_id}", None),
        ("POST", f"{GROUPS}/{group_id}/members", {"device_ids": ["theirs"]}),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, headers=intruder, json=body)
        assert response.status_code == 404, (method, path, response.text)
    # Referring to their device or site from a body of one's own is a 400 naming the field.
    mine = await client.post(GROUPS, headers=intruder, json={"name": "mine", "device_ids": ["theirs"]})
    sited = await client.post(DEVICES, headers=intruder, json={"device_id": "d-1", "site_id": "their-site"})
    tagged = await client.post(f"{DEVICES}/tags", headers=intruder, json={"device_ids": ["theirs"], "add": ["x"]})
    assert mine.status_code == 400 and mine.json()["error"]["details"]["field"] == "device_ids"
    assert sited.status_code == 400 and sited.json()["error"]["details"]["field"] == "site_id"
    assert tagged.status_code == 400 and tagged.json()["error"]["details"]["field"] == "device_ids"
    row = await _device_row(engine, owner.tenant_id, "theirs")
    assert row.status == "ACTIVE" and list(row.tags) == []
    assert (await client.get(GROUPS, headers=intruder)).json()["items"] == []
