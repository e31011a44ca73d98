"""/customer/alert-rules through the real app: every rule type, field-named errors, scopes and escalation policies
of the caller's tenant only, roles, tenant isolation, paging, the pulse_rules_changed notification, and the
evaluator picking up (and acting on) a rule created over HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.evaluator import Evaluator
from pulse.alerting.rules import GapDefinition
from pulse.alerting.worker import RULES_CHANNEL, Wakeups
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_site, make_tenant
from tests.web.conftest import bearer, insert_alert, token_for

RULES = "/customer/alert-rules"
WAIT_S = 10.0
"""Upper bound for a notification to arrive; the tests wait for an event, they do not measure time."""

DEFINITIONS: dict[str, dict[str, Any]] = {
    "THRESHOLD": {"metric": "temp_c", "op": "GT", "value": 30, "clear_value": 28},
    "MULTI": {"match": "all", "conditions": [{"metric": "temp_c", "op": "GT", "value": 8, "clear_value": 6},
                                             {"metric": "door_open", "op": "EQ", "value": True}]},
    "RATE": {"metric": "temp_c", "op": "GT", "value": 2, "window_seconds": 300, "clear_value": 1},
    "ANOMALY": {"metric": "temp_c", "window_seconds": 3600, "z_threshold": 3, "min_samples": 10, "clear_z": 2},
    "GAP": {"metric": "temp_c", "gap_seconds": 600},
}


async def _headers(engine: AsyncEngine, settings: Settings, tenant: TenantRef, role: str = "tenant-admin") -> dict[
        str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=[role]))


def _body(rule_type: str = "THRESHOLD", **overrides: Any) -> dict[str, Any]:
    return {"name": f"{rule_type.lower()} rule", "rule_type": rule_type, "severity": 4,
            "definition": DEFINITIONS[rule_type], **overrides}


async def _create(client: AsyncTestClient[Litestar], headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post(RULES, headers=headers, json=_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _field(response: Any) -> str:
    return str(response.json()["error"]["details"].get("field"))


async def _policy(engine: AsyncEngine, tenant: TenantRef, name: str = "on-call") -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO escalation_policies (tenant_id, name) VALUES (:t, :n) RETURNING policy_id::text"),
            {"t": tenant.tenant_id, "n": name})).scalar_one())


async def _group(engine: AsyncEngine, tenant: TenantRef, name: str = "freezers") -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO device_groups (tenant_id, name) VALUES (:t, :n) RETURNING group_id::text"),
            {"t": tenant.tenant_id, "n": name})).scalar_one())


async def _stored_count(engine: AsyncEngine, tenant: TenantRef) -> int:
    async with system_tx(engine) as conn:
        return int((await conn.execute(text("SELECT count(*) FROM alert_rules WHERE tenant_id = :t"),
                                       {"t": tenant.tenant_id})).scalar_one())


@pytest.fixture
async def rule_changes(database_url: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Every pulse_rules_changed payload, decoded, heard on a LISTEN connection of the test's own."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    conn = await asyncpg.connect(database_url)

    def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        queue.put_nowait(json.loads(payload))

    await conn.add_listener(RULES_CHANNEL, heard)
    yield queue
    await conn.close()


async def _next_change(queue: asyncio.Queue[dict[str, Any]], tenant: TenantRef) -> dict[str, Any]:
    """The next notification about this tenant's rules (other tenants' changes are skipped)."""
    while True:
        change = await asyncio.wait_for(queue.get(), WAIT_S)
        if change.get("tenant_id") == tenant.tenant_id:
            return change


# --- creating and reading -----------------------------------------------------------------------------------------

async def test_a_scope_naming_a_site_device_or_group_the_tenant_lacks_is_refused(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    await make_site(engine, tenant, "plant-1")
    await make_site(engine, other, "plant-2")  # another tenant's site: unknown here
    device = await make_device(engine, tenant)
    foreign = await make_device(engine, other)
    for scope, field in [({"site_ids": ["plant-1", "plant-2"]}, "site_ids[1]"),
                         ({"device_ids": [foreign]}, "device_ids[0]"),
                         ({"device_ids": [device, "no-such-device"]}, "device_ids[1]"),
                         ({"group_ids": [str(uuid.uuid4())]}, "group_ids[0]")]:
        refused = await client.post(RULES, headers=admin, json=_body(**scope))
        assert refused.status_code == 400 and _field(refused) == field, (scope, refused.text)
        assert "in this tenant" in refused.json()["error"]["message"]
    rule = await _create(client, admin, site_ids=["plant-1"], device_ids=[device])
    async with system_tx(engine) as conn:  # the site goes away later: the rule's other fields can still be edited
        await conn.execute(text("DELETE FROM sites WHERE tenant_id = :t"), {"t": tenant.tenant_id})
    renamed = await client.patch(f"{RULES}/{rule['rule_id']}", headers=admin, json={"name": "renamed"})
    assert renamed.status_code == 200, renamed.text
    rescoped = await client.patch(f"{RULES}/{rule['rule_id']}", headers=admin, json={"site_ids": ["plant-1"]})
    assert rescoped.status_code == 400 and _field(rescoped) == "site_ids[0]"


@pytest.mark.parametrize("rule_type", list(DEFINITIONS))
async def test_each_rule_type_is_created_and_read_back(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                       settings: Settings, rule_type: str) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    await make_site(engine, tenant, "site-1")
    created = await _create(client, admin, rule_type=rule_type, severity=5, for_seconds=60,
                            description="kept cold", tags=["cold-chain"], site_ids=["site-1"])
    assert created["rule_type"] == rule_type
    assert created["severity"] == 5 and created["severity_name"] == "critical"
    assert created["for_seconds"] == 60 and created["is_enabled"] is True
    assert created["tags"] == ["cold-chain"] and created["site_ids"] == ["site-1"]
    assert created["escalation_policy_id"] is None and created["description"] == "kept cold"
    for key, value in DEFINITIONS[rule_type].items():
        if key != "conditions":
            assert created["definition"][key] == value, key
    if rule_type == "MULTI":
        assert [c["metric"] for c in created["definition"]["conditions"]] == ["temp_c", "door_open"]

    reader = await _headers(engine, settings, tenant, role="customer")
    one = await client.get(f"{RULES}/{created['rule_id']}", headers=reader)
    assert one.status_code == 200 and one.json() == created
    listed = await client.get(RULES, headers=reader)
    assert listed.status_code == 200 and [r["rule_id"] for r in listed.json()["items"]] == [created["rule_id"]]


async def test_defaults_fill_optional_definition_fields(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                        settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    created = await _create(client, admin, rule_type="ANOMALY", severity=2,
                            definition={"metric": "vibration", "window_seconds": 600})
    assert created["severity_name"] == "low"
    assert created["definition"]["z_threshold"] == 3 and created["definition"]["min_samples"] == 10
    assert created["definition"]["clear_z"] is None


# --- validation ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule_type", "definition", "field"), [
    ("THRESHOLD", {"metric": "temp_c", "op": "BIGGER", "value": 30}, "definition.op"),
    ("THRESHOLD", {"metric": "temp_c", "op": "GT"}, "definition.value"),
    ("THRESHOLD", {"metric": "temp_c", "op": "GT", "value": "hot"}, "definition.value"),
    ("THRESHOLD", {"metric": "", "op": "GT", "value": 1}, "definition.metric"),
    ("THRESHOLD", {"metric": "temp_c", "op": "GT", "value": 1, "colour": "red"}, "definition.colour"),
    ("MULTI", {"conditions": [{"metric": "a", "op": "GT", "value": 1}, {"metric": "", "op": "GT", "value": 1}]},
     "definition.conditions[1].metric"),
    ("MULTI", {"conditions": [{"metric": "a", "op": "GT", "value": 1}, {"op": "GT", "value": 1}]},
     "definition.conditions[1].metric"),
    ("MULTI", {"conditions": []}, "definition.conditions"),
    ("MULTI", {"match": "most", "conditions": [{"metric": "a", "op": "GT", "value": 1}]}, "definition.match"),
    ("RATE", {"metric": "temp_c", "op": "EQ", "value": 2, "window_seconds": 300}, "definition.op"),
    ("RATE", {"metric": "temp_c", "op": "GT", "value": 2, "window_seconds": 10}, "definition.window_seconds"),
    ("RATE", {"metric": "temp_c", "op": "GT", "value": 2, "window_seconds": 300, "clear_value": 5},
     "definition.clear_value"),
    ("ANOMALY", {"metric": "temp_c", "window_seconds": 3600, "z_threshold": 2, "clear_z": 3}, "definition.clear_z"),
    ("ANOMALY", {"metric": "temp_c", "window_seconds": 3600, "min_samples": 1}, "definition.min_samples"),
    ("GAP", {"metric": "temp_c"}, "definition.gap_seconds"),
    ("GAP", {"metric": "temp_c", "gap_seconds": 100_000}, "definition.gap_seconds"),
    ("SPIKE", {"metric": "temp_c"}, "rule_type"),
])
async def test_invalid_definition_is_refused_naming_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                              settings: Settings, rule_type: str,
                                                              definition: dict[str, Any], field: str) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    response = await client.post(RULES, headers=admin, json={"name": "bad", "rule_type": rule_type, "severity": 3,
                                                             "definition": definition})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert _field(response) == field
    assert await _stored_count(engine, tenant) == 0


@pytest.mark.parametrize(("overrides", "field"), [
    ({"severity": 0}, "severity"),
    ({"severity": 6}, "severity"),
    ({"severity": "high"}, "severity"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"for_seconds": -1}, "for_seconds"),
    ({"for_seconds": 86_401}, "for_seconds"),
    ({"definition": [1, 2]}, "definition"),
    ({"site_ids": ["site-1", "no spaces please"]}, "site_ids[1]"),
    ({"device_ids": [""]}, "device_ids[0]"),
    ({"tags": ["ok", "t" * 65]}, "tags[1]"),
    ({"tags": ["t"] * 1001}, "tags"),
    ({"group_ids": ["not-a-uuid"]}, "group_ids[0]"),
    ({"escalation_policy_id": "nope"}, "escalation_policy_id"),
    ({"colour": "red"}, "colour"),
])
async def test_invalid_fields_are_refused_naming_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                           settings: Settings, overrides: dict[str, Any],
                                                           field: str) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    response = await client.post(RULES, headers=admin, json=_body(**overrides))
    assert response.status_code == 400, response.text
    assert _field(response) == field
    assert await _stored_count(engine, tenant) == 0


async def test_for_seconds_bounds_are_accepted(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                               settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    assert (await _create(client, admin, for_seconds=0, severity=1))["severity_name"] == "info"
    assert (await _create(client, admin, for_seconds=86_400, severity=3))["for_seconds"] == 86_400


async def test_group_scopes_must_be_groups_of_the_tenant(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                         settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    mine, theirs = await _group(engine, tenant), await _group(engine, other)

    created = await _create(client, admin, group_ids=[mine])
    assert created["group_ids"] == [mine]
    refused = await client.post(RULES, headers=admin, json=_body(group_ids=[mine, theirs]))
    assert refused.status_code == 400 and _field(refused) == "group_ids[1]"
    patched = await client.patch(f"{RULES}/{created['rule_id']}", headers=admin, json={"group_ids": [theirs]})
    assert patched.status_code == 400 and _field(patched) == "group_ids[0]"


async def test_escalation_policy_must_be_the_tenants(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                     settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    mine, theirs = await _policy(engine, tenant), await _policy(engine, other)

    created = await _create(client, admin, escalation_policy_id=mine)
    assert created["escalation_policy_id"] == mine
    refused = await client.post(RULES, headers=admin, json=_body(escalation_policy_id=theirs))
    assert refused.status_code == 400 and _field(refused) == "escalation_policy_id"
    assert theirs in refused.json()["error"]["message"]

    rule = f"{RULES}/{created['rule_id']}"
    moved = await client.patch(rule, headers=admin, json={"escalation_policy_id": theirs})
    assert moved.status_code == 400 and _field(moved) == "escalation_policy_id"
    assert (await client.get(rule, headers=admin)).json()["escalation_policy_id"] == mine
    unlinked = await client.patch(rule, headers=admin, json={"escalation_policy_id": None})
    assert unlinked.status_code == 200 and unlinked.json()["escalation_policy_id"] is None


# --- changing and deleting ----------------------------------------------------------------------------------------

async def test_patch_changes_only_what_is_sent_and_revalidates_the_whole_rule(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    created = await _create(client, admin, tags=["a"])
    rule = f"{RULES}/{created['rule_id']}"

    patched = await client.patch(rule, headers=admin, json={"severity": 2, "is_enabled": False})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["severity"] == 2 and body["severity_name"] == "low" and body["is_enabled"] is False
    assert body["definition"] == created["definition"] and body["tags"] == ["a"] and body["name"] == created["name"]

    # A new type without a definition of that type: the stored THRESHOLD definition is not a RATE definition.
    retyped = await client.patch(rule, headers=admin, json={"rule_type": "RATE"})
    assert retyped.status_code == 400 and _field(retyped) == "definition.window_seconds"
    bad = await client.patch(rule, headers=admin, json={"definition": {"metric": "temp_c", "op": "GT"}})
    assert bad.status_code == 400 and _field(bad) == "definition.value"
    for body_patch, field in [({"severity": 6}, "severity"), ({"severity": None}, "severity"),
                              ({"name": ""}, "name"), ({"rule_id": created["rule_id"]}, "rule_id")]:
        refused = await client.patch(rule, headers=admin, json=body_patch)
        assert refused.status_code == 400 and _field(refused) == field, (body_patch, refused.text)
    unchanged = (await client.get(rule, headers=admin)).json()
    assert unchanged["rule_type"] == "THRESHOLD" and unchanged["severity"] == 2

    changed = await client.patch(rule, headers=admin, json={"rule_type": "RATE", "definition": DEFINITIONS["RATE"],
                                                            "description": None, "tags": []})
    assert changed.status_code == 200, changed.text
    assert changed.json()["rule_type"] == "RATE" and changed.json()["definition"]["window_seconds"] == 300
    assert changed.json()["tags"] == [] and changed.json()["updated_at"] >= created["updated_at"]


async def test_delete_keeps_the_rules_alerts(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                             settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    created = await _create(client, admin)
    alert_id = await insert_alert(engine, tenant.tenant_id)
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE alerts SET rule_id = CAST(:r AS uuid) WHERE alert_id = CAST(:a AS uuid)"),
                           {"r": created["rule_id"], "a": alert_id})

    deleted = await client.delete(f"{RULES}/{created['rule_id']}", headers=admin)
    assert deleted.status_code == 204, deleted.text
    assert (await client.get(f"{RULES}/{created['rule_id']}", headers=admin)).status_code == 404
    assert (await client.delete(f"{RULES}/{created['rule_id']}", headers=admin)).status_code == 404
    alert = await client.get(f"/api/v2/alerts/{alert_id}", headers=admin)
    assert alert.status_code == 200 and alert.json()["status"] == "OPEN" and alert.json()["rule_id"] is None


# --- who may do what ----------------------------------------------------------------------------------------------

async def test_another_tenants_rule_is_not_found(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                 settings: Settings) -> None:
    tenant, other = await make_tenant(engine), await make_tenant(engine)
    created = await _create(client, await _headers(engine, settings, other))
    admin = await _headers(engine, settings, tenant)
    rule = f"{RULES}/{created['rule_id']}"
    assert (await client.get(rule, headers=admin)).status_code == 404
    assert (await client.patch(rule, headers=admin, json={"severity": 1})).status_code == 404
    assert (await client.delete(rule, headers=admin)).status_code == 404
    assert (await client.get(RULES, headers=admin)).json()["items"] == []
    survivor = await client.get(rule, headers=await _headers(engine, settings, other))
    assert survivor.status_code == 200 and survivor.json()["severity"] == 4
    malformed = await client.get(f"{RULES}/not-a-uuid", headers=admin)
    assert malformed.status_code == 400 and _field(malformed) == "rule_id"


async def test_customer_role_reads_but_cannot_write(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                    settings: Settings) -> None:
    tenant = await make_tenant(engine)
    created = await _create(client, await _headers(engine, settings, tenant))
    reader = await _headers(engine, settings, tenant, role="customer")
    rule = f"{RULES}/{created['rule_id']}"
    assert (await client.get(rule, headers=reader)).status_code == 200
    assert (await client.post(RULES, headers=reader, json=_body())).status_code == 403
    assert (await client.patch(rule, headers=reader, json={"severity": 1})).status_code == 403
    assert (await client.delete(rule, headers=reader)).status_code == 403
    assert (await client.get(RULES)).status_code == 401
    assert await _stored_count(engine, tenant) == 1
    assert (await client.get(rule, headers=reader)).json()["severity"] == 4


# --- listing ------------------------------------------------------------------------------------------------------

async def test_list_filters_and_pages(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                      settings: Settings) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    a = await _create(client, admin, name="a hot", rule_type="THRESHOLD")
    b = await _create(client, admin, name="b gap", rule_type="GAP", is_enabled=False)
    c = await _create(client, admin, name="c rate", rule_type="RATE")

    first = (await client.get(RULES, headers=admin, params={"limit": 2})).json()
    assert [r["rule_id"] for r in first["items"]] == [a["rule_id"], b["rule_id"]] and first["next_cursor"]
    second = (await client.get(RULES, headers=admin, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [r["rule_id"] for r in second["items"]] == [c["rule_id"]] and second["next_cursor"] is None

    disabled = (await client.get(RULES, headers=admin, params={"enabled": "false"})).json()["items"]
    assert [r["rule_id"] for r in disabled] == [b["rule_id"]]
    enabled = (await client.get(RULES, headers=admin, params={"enabled": "true"})).json()["items"]
    assert [r["rule_id"] for r in enabled] == [a["rule_id"], c["rule_id"]]
    rates = (await client.get(RULES, headers=admin, params={"rule_type": "rate"})).json()["items"]
    assert [r["rule_id"] for r in rates] == [c["rule_id"]]

    bad_queries: list[tuple[dict[str, str | int], str]] = [
        ({"rule_type": "SPIKE"}, "rule_type"), ({"cursor": "garbage"}, "cursor"), ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit")]
    for params, field in bad_queries:
        refused = await client.get(RULES, headers=admin, params=params)
        assert refused.status_code == 400 and _field(refused) == field, params


# --- the evaluator hears about it ---------------------------------------------------------------------------------

async def test_every_change_notifies_the_evaluator(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                   settings: Settings,
                                                   rule_changes: asyncio.Queue[dict[str, Any]]) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)

    refused = await client.post(RULES, headers=admin, json=_body(severity=0))
    assert refused.status_code == 400
    created = await _create(client, admin)
    rule_id = created["rule_id"]
    # The refused request sent nothing: the first notification is the created rule's.
    assert await _next_change(rule_changes, tenant) == {"tenant_id": tenant.tenant_id, "rule_id": rule_id,
                                                        "change": "created"}

    assert (await client.patch(f"{RULES}/{rule_id}", headers=admin, json={"severity": 9})).status_code == 400
    assert (await client.patch(f"{RULES}/{rule_id}", headers=admin, json={"severity": 1})).status_code == 200
    assert await _next_change(rule_changes, tenant) == {"tenant_id": tenant.tenant_id, "rule_id": rule_id,
                                                        "change": "updated"}

    assert (await client.delete(f"{RULES}/{rule_id}", headers=admin)).status_code == 204
    assert await _next_change(rule_changes, tenant) == {"tenant_id": tenant.tenant_id, "rule_id": rule_id,
                                                        "change": "deleted"}


async def test_evaluator_picks_up_a_rule_created_over_http(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                           settings: Settings, database_url: str) -> None:
    tenant = await make_tenant(engine)
    admin = await _headers(engine, settings, tenant)
    device = await make_device(engine, tenant)
    wakeups = Wakeups(database_url)  # the evaluator's own LISTEN connection
    await wakeups.ensure()
    try:
        gap = await _create(client, admin, name="silent sensor", rule_type="GAP")
        await asyncio.wait_for(wakeups.rules_dirty.wait(), WAIT_S)
        evaluator = Evaluator(engine)
        await evaluator.load_rules()
        [loaded] = evaluator.rules_by_tenant[tenant.tenant_id]
        assert loaded.rule_id == gap["rule_id"] and isinstance(loaded.definition, GapDefinition)
        assert loaded.definition.gap_seconds == 600

        wakeups.rules_dirty.clear()
        hot = await _create(client, admin, name="too warm", severity=5, device_ids=[device])
        assert (await client.patch(f"{RULES}/{gap['rule_id']}", headers=admin,
                                   json={"is_enabled": False})).status_code == 200
        await asyncio.wait_for(wakeups.rules_dirty.wait(), WAIT_S)
    finally:
        await wakeups.close()
    await evaluator.load_rules()
    assert [r.rule_id for r in evaluator.rules_by_tenant[tenant.tenant_id]] == [hot["rule_id"]]

    # And it acts on it: a reading above the limit opens an alert of this rule, with its severity.
    now = datetime.now(UTC).replace(microsecond=0)
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET latest_metrics = CAST(:m AS jsonb), last_seen_at = :at, last_telemetry_at = :at, "
            "  updated_at = :at WHERE tenant_id = :t AND device_id = :d"),
            {"m": json.dumps({"temp_c": 31.5}), "at": now - timedelta(seconds=1), "t": tenant.tenant_id,
             "d": device})
    await evaluator.evaluate_devices([(tenant.tenant_id, device)], now)
    alerts = (await client.get("/api/v2/alerts/", headers=admin)).json()["items"]
    assert [(a["rule_id"], a["severity"], a["device_id"]) for a in alerts] == [(hot["rule_id"], 5, device)]
