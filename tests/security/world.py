"""Two tenants with one of every object, made through the API as a tenant-admin would, plus tokens for each role.

Every name a tenant's objects carry contains its `marker`, so a response to another tenant can be searched for it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import make_tenant
from tests.web.conftest import bearer, token_for

HOOK = "http://127.0.0.1:9/pulse-hook"  # loopback is allowed in tests; nothing is delivered from here


@dataclass
class TenantWorld:
    tenant_id: str
    marker: str
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    """Object ids by path-parameter name (device_id, site_id, …, notification_rule_id)."""
    provision_token: str = ""
    customer_user_id: str = ""

    def headers(self, role: str = "tenant-admin") -> dict[str, str]:
        return bearer(self.tokens[role])

    def secrets(self) -> set[str]:
        """Strings that only this tenant's data contains: never in another tenant's answers."""
        return {self.marker, self.tenant_id, *self.ids.values()}


async def _ok(response: Any, what: str) -> dict[str, Any]:
    assert response.status_code in (200, 201), f"{what}: {response.status_code} {response.text}"
    return response.json()  # type: ignore[no-any-return]


async def build_tenant(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings,
                       label: str) -> TenantWorld:
    tenant = await make_tenant(engine, prefix=f"sec{label}")
    world = TenantWorld(tenant_id=tenant.tenant_id, marker=f"marker-{label}-{secrets.token_hex(6)}")
    m = world.marker
    for role in ("customer", "tenant-admin"):
        world.tokens[role] = await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=[role])
    h = world.headers()
    ids = world.ids

    site = await _ok(await client.post("/customer/sites", headers=h, json={
        "site_id": f"site-{label}-{secrets.token_hex(3)}", "name": f"site {m}", "address": f"street {m}"}), "site")
    ids["site_id"] = site["site_id"]
    created = await _ok(await client.post("/customer/devices", headers=h, json={
        "device_id": f"dev-{label}-{secrets.token_hex(3)}", "name": f"device {m}", "site_id": ids["site_id"],
        "tags": [f"tag-{label}"], "attributes": {"note": m}}), "device")
    ids["device_id"] = created["device"]["device_id"]
    world.provision_token = created["credentials"]["provision_token"]
    group = await _ok(await client.post("/customer/device-groups", headers=h, json={
        "name": f"group {m}", "device_ids": [ids["device_id"]]}), "group")
    ids["group_id"] = group["group_id"]
    user = await _ok(await client.post("/customer/users", headers=h, json={
        "email": f"{m}@example.test", "display_name": f"user {m}", "roles": ["customer"]}), "user")
    ids["user_id"] = user["user_id"]
    world.customer_user_id = user["user_id"]
    world.tokens["own-customer"] = await token_for(engine, settings, tenant_id=tenant.tenant_id,
                                                   roles=["customer"], sub=user["user_id"])
    contact = await _ok(await client.post(f"/customer/users/{ids['user_id']}/contact-methods", headers=h, json={
        "kind": "WEBHOOK", "address": f"{HOOK}/{m}", "label": f"hook {m}",
        "secrets": {"secret": f"secret-{m}"}}), "contact method")
    ids["contact_id"] = contact["contact_id"]
    rule = await _ok(await client.post(f"/customer/users/{ids['user_id']}/notification-rules", headers=h, json={
        "contact_id": ids["contact_id"], "delay_minutes": 0}), "notification rule")
    ids["notification_rule_id"] = rule["notification_rule_id"]
    channel = await _ok(await client.post("/customer/channels", headers=h, json={
        "name": f"channel {m}", "channel_type": "WEBHOOK", "config": {"url": f"{HOOK}/{m}"},
        "secrets": {"secret": f"channel-secret-{m}"}}), "channel")
    ids["channel_id"] = channel["channel_id"]
    route = await _ok(await client.post("/customer/routing-rules", headers=h, json={
        "name": f"route {m}", "channel_id": ids["channel_id"]}), "routing rule")
    ids["route_id"] = route["route_id"]
    schedule = await _ok(await client.post("/customer/schedules", headers=h, json={
        "name": f"schedule {m}", "timezone": "UTC", "description": m}), "schedule")
    ids["schedule_id"] = schedule["schedule_id"]
    layered = await _ok(await client.post(f"/customer/schedules/{ids['schedule_id']}/layers", headers=h, json={
        "name": f"layer {m}", "rotation_type": "WEEKLY", "rotation_start": "2026-01-05",
        "participants": [ids["user_id"]]}), "layer")
    ids["layer_id"] = layered["layers"][0]["layer_id"]
    now = datetime.now(UTC)
    override = await _ok(await client.post(f"/customer/schedules/{ids['schedule_id']}/overrides", headers=h, json={
        "user_id": ids["user_id"], "starts_at": (now + timedelta(days=1)).isoformat(),
        "ends_at": (now + timedelta(days=2)).isoformat(), "reason": m}), "override")
    ids["override_id"] = override["override_id"]
    policy = await _ok(await client.post("/customer/escalation-policies", headers=h, json={
        "name": f"policy {m}", "levels": [{"delay_minutes": 0, "targets": [
            {"type": "schedule", "id": ids["schedule_id"]}, {"type": "user", "id": ids["user_id"]}]}]}), "policy")
    ids["policy_id"] = policy["policy_id"]
    alert_rule = await _ok(await client.post("/customer/alert-rules", headers=h, json={
        "name": f"rule {m}", "rule_type": "THRESHOLD", "severity": 3, "description": m,
        "definition": {"metric": "temp_c", "op": "GT", "value": 30},
        "escalation_policy_id": ids["policy_id"]}), "alert rule")
    ids["rule_id"] = alert_rule["rule_id"]
    window = await _ok(await client.post("/customer/maintenance-windows", headers=h, json={
        "name": f"window {m}", "recurrence": "ONCE", "starts_at": (now + timedelta(days=3)).isoformat(),
        "ends_at": (now + timedelta(days=4)).isoformat(), "device_ids": [ids["device_id"]]}), "window")
    ids["window_id"] = window["window_id"]
    accepted = await client.post(f"/ingest/v1/tenant/{tenant.tenant_id}/device/{ids['device_id']}/telemetry",
                                 headers={"X-Provision-Token": world.provision_token},
                                 json={"seq": 1, "metrics": {"temp_c": 21.5, "note": m}})
    assert accepted.status_code == 202, accepted.text
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=f"sec-{m}", alert_type="THRESHOLD", severity=4,
            title=f"alert {m}", summary=m, device_id=ids["device_id"], metric="temp_c", value=31.0,
            rule_id=ids["rule_id"]), now=now - timedelta(seconds=1))
    ids["alert_id"] = change.alert_id
    report = await _ok(await client.post("/customer/reports", headers=h, json={}), "report")
    ids["run_id"] = report["run_id"]
    jobs = await _ok(await client.get("/customer/notifications/jobs", headers=h), "jobs")
    assert jobs["items"], "the routing rule should have queued a notification for the alert"
    ids["job_id"] = jobs["items"][0]["job_id"]
    return world


@dataclass
class World:
    a: TenantWorld
    b: TenantWorld
    operator: str
    operator_admin: str

    def token(self, role: str) -> str:
        if role == "operator":
            return self.operator
        if role == "operator-admin":
            return self.operator_admin
        return self.a.tokens[role]
