"""Bodies that name another tenant's objects: tenant A sends B's ids where a body refers to a channel, contact,
device, site, group, user, schedule, policy or alert.

Several foreign keys are single-column (a row of A could point at a row of B as far as PostgreSQL is concerned), so
the application must check. The rule tested: one of B's ids is answered exactly like an id that exists nowhere
(same status, same error code and field), B's objects do not change, and A's data never shows B's names.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.security.inventory import ENDPOINTS, inventory_app, select
from tests.security.test_cross_tenant import b_view, leaked
from tests.security.world import World

Client = AsyncTestClient[Litestar]
Ids = dict[str, str]

# Body fields that name an existing object of the tenant (as opposed to the id of the object being created).
REFERENCE_FIELDS = frozenset({"channel_id", "contact_id", "device_id", "device_ids", "site_id", "site_ids", "group_ids", "user_id",
                              "policy_id", "escalation_policy_id", "participants", "alert_ids", "targets",
                              "handoff_channel_id"})
NEW_OBJECT_IDS = {("POST", "/customer/devices"): {"device_id"}, ("POST", "/customer/sites"): {"site_id"}}


def _soon(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _rule(**extra: Any) -> dict[str, Any]:
    return {"name": f"ref rule {uuid.uuid4().hex[:6]}", "rule_type": "THRESHOLD", "severity": 2,
            "definition": {"metric": "temp_c", "op": "GT", "value": 50}, **extra}


def _window(**extra: Any) -> dict[str, Any]:
    return {"name": f"ref window {uuid.uuid4().hex[:6]}", "recurrence": "ONCE", "starts_at": _soon(5),
            "ends_at": _soon(6), **extra}


def _policy(target: dict[str, str]) -> dict[str, Any]:
    return {"name": f"ref policy {uuid.uuid4().hex[:6]}", "levels": [{"delay_minutes": 0, "targets": [target]}]}


def _layer(user_id: str) -> dict[str, Any]:
    return {"name": "ref layer", "rotation_type": "DAILY", "rotation_start": "2026-01-05", "participants": [user_id]}


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    """Template filled with A's ids."""
    field: str
    obj: str
    """The kind of object the field names (a key of TenantWorld.ids)."""
    body: Callable[[Ids, str], Any]
    """Given A's ids and the id to refer to."""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} {self.field}"


CASES = [
    Case("POST", "/customer/routing-rules", "channel_id", "channel_id", lambda a, x: {"name": "r", "channel_id": x}),
    Case("POST", "/customer/routing-rules", "site_ids", "site_id",
         lambda a, x: {"name": "r", "channel_id": a["channel_id"], "site_ids": [x]}),
    Case("POST", "/customer/routing-rules", "group_ids", "group_id",
         lambda a, x: {"name": "r", "channel_id": a["channel_id"], "group_ids": [x]}),
    Case("PATCH", "/customer/routing-rules/{route_id}", "channel_id", "channel_id", lambda a, x: {"channel_id": x}),
    Case("PATCH", "/customer/routing-rules/{route_id}", "site_ids", "site_id", lambda a, x: {"site_ids": [x]}),
    Case("PATCH", "/customer/routing-rules/{route_id}", "group_ids", "group_id", lambda a, x: {"group_ids": [x]}),
    Case("POST", "/customer/device-groups", "device_ids", "device_id",
         lambda a, x: {"name": f"g {uuid.uuid4().hex[:6]}", "device_ids": [x]}),
    Case("POST", "/customer/device-groups/{group_id}/members", "device_ids", "device_id",
         lambda a, x: {"device_ids": [x]}),
    Case("PUT", "/customer/device-groups/{group_id}/members", "device_ids", "device_id",
         lambda a, x: {"device_ids": [a["device_id"], x]}),
    Case("POST", "/customer/devices", "site_id", "site_id",
         lambda a, x: {"device_id": f"ref-{uuid.uuid4().hex[:8]}", "site_id": x}),
    Case("POST", "/customer/devices", "group_ids", "group_id",
         lambda a, x: {"device_id": f"ref-{uuid.uuid4().hex[:8]}", "group_ids": [x]}),
    Case("PATCH", "/customer/devices/{device_id}", "site_id", "site_id", lambda a, x: {"site_id": x}),
    Case("POST", "/customer/devices/tags", "device_ids", "device_id",
         lambda a, x: {"device_ids": [a["device_id"], x], "add": ["ref"]}),
    *[Case("POST", "/customer/alert-rules", f, o, lambda a, x, f=f, many=many: _rule(**{f: [x] if many else x}))
      for f, o, many in (("escalation_policy_id", "policy_id", False), ("site_ids", "site_id", True),
                         ("group_ids", "group_id", True), ("device_ids", "device_id", True))],
    *[Case("PATCH", "/customer/alert-rules/{rule_id}", f, o, lambda a, x, f=f, many=many: {f: [x] if many else x})
      for f, o, many in (("escalation_policy_id", "policy_id", False), ("site_ids", "site_id", True),
                         ("group_ids", "group_id", True), ("device_ids", "device_id", True))],
    Case("POST", "/customer/alert-rules/preview", "device_id", "device_id",
         lambda a, x: {"rule_type": "THRESHOLD", "definition": {"metric": "temp_c", "op": "GT", "value": 50},
                       "device_id": x}),
    Case("PUT", "/customer/alert-rules/{rule_id}/escalation-policy", "policy_id", "policy_id",
         lambda a, x: {"policy_id": x}),
    *[Case("POST", "/customer/alert-rule-templates/high-temperature/instantiate", f, o,
           lambda a, x, f=f, many=many: {"name": f"t {uuid.uuid4().hex[:6]}", f: [x] if many else x})
      for f, o, many in (("escalation_policy_id", "policy_id", False), ("site_ids", "site_id", True),
                         ("group_ids", "group_id", True), ("device_ids", "device_id", True))],
    *[Case(m, p, "targets", o, lambda a, x, t=t: _policy({"type": t, "id": x}))
      for m, p in (("POST", "/customer/escalation-policies"), ("PUT", "/customer/escalation-policies/{policy_id}"))
      for t, o in (("user", "user_id"), ("schedule", "schedule_id"), ("channel", "channel_id"))],
    Case("POST", "/customer/schedules", "handoff_channel_id", "channel_id",
         lambda a, x: {"name": f"s {uuid.uuid4().hex[:6]}", "timezone": "UTC", "handoff_channel_id": x}),
    Case("PATCH", "/customer/schedules/{schedule_id}", "handoff_channel_id", "channel_id",
         lambda a, x: {"handoff_channel_id": x}),
    Case("POST", "/customer/schedules/{schedule_id}/layers", "participants", "user_id", lambda a, x: _layer(x)),
    Case("PATCH", "/customer/schedules/{schedule_id}/layers/{layer_id}", "participants", "user_id",
         lambda a, x: {"participants": [x]}),
    Case("POST", "/customer/schedules/{schedule_id}/overrides", "user_id", "user_id",
         lambda a, x: {"user_id": x, "starts_at": _soon(40), "ends_at": _soon(41)}),
    Case("POST", "/customer/users/{user_id}/notification-rules", "contact_id", "contact_id",
         lambda a, x: {"contact_id": x, "delay_minutes": 3}),
    Case("PATCH", "/customer/users/{user_id}/notification-rules/{rule_id}", "contact_id", "contact_id",
         lambda a, x: {"contact_id": x}),
    Case("POST", "/customer/alerts/acknowledge", "alert_ids", "alert_id", lambda a, x: {"alert_ids": [x]}),
    *[Case(m, p, f, o, lambda a, x, m=m, f=f: _window(**{f: [x]}) if m == "POST" else {f: [x]})
      for m, p in (("POST", "/customer/maintenance-windows"), ("PATCH", "/customer/maintenance-windows/{window_id}"))
      for f, o in (("site_ids", "site_id"), ("group_ids", "group_id"), ("device_ids", "device_id"))],
]


def _nowhere(obj: str) -> str:
    """An id of the same shape that names nothing anywhere."""
    if obj in ("device_id", "site_id"):
        return f"nowhere-{uuid.uuid4().hex[:8]}"
    return str(uuid.uuid4())


def _url(case: Case, a: Ids) -> str:
    values = {**a, "rule_id": a["notification_rule_id"] if "/notification-rules/" in case.path else a["rule_id"]}
    return case.path.format(**values)


def _outcome(response: Any) -> tuple[int, str | None, str | None]:
    if response.status_code >= 300:
        error = response.json()["error"]
        return response.status_code, error["code"], error.get("details", {}).get("field")
    return response.status_code, None, None


def _bulk_results(response: Any) -> list[str]:
    return [r["result"] for r in response.json()["results"]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_another_tenants_id_in_a_body_is_like_no_id_at_all(api: Client, world: World, case: Case) -> None:
    a, b = world.a, world.b
    before = await b_view(api, b, {case.obj})
    url = _url(case, a.ids)
    theirs = await api.request(case.method, url, headers=a.headers(), json=case.body(a.ids, b.ids[case.obj]))
    nowhere = await api.request(case.method, url, headers=a.headers(), json=case.body(a.ids, _nowhere(case.obj)))

    where = f"{case.id} with B's {case.obj}"
    assert theirs.status_code < 500, f"{where}: {theirs.status_code} {theirs.text}"
    assert _outcome(theirs) == _outcome(nowhere), \
        f"{where} answers {theirs.status_code} {theirs.text}, an unknown id {nowhere.status_code} {nowhere.text}"
    refused_field = _outcome(theirs)[2]
    assert theirs.status_code < 300 or (refused_field and case.field in refused_field), \
        f"{where} was refused for something else than {case.field} (the sample body is wrong): {theirs.text}"
    if case.path == "/customer/alerts/acknowledge":
        assert _bulk_results(theirs) == _bulk_results(nowhere) == ["not_found"]
    assert not leaked(theirs.text, b, {b.ids[case.obj]}), f"{where} shows B's data: {theirs.text}"
    assert await b_view(api, b, {case.obj}) == before, f"{where} changed B's {case.obj}"


def _request_fields(method: str, path: str, document: dict[str, Any]) -> set[str]:
    operation = document["paths"].get(path, {}).get(method.lower(), {})
    body = (operation.get("requestBody") or {}).get("content", {}).get("application/json")
    if not body:
        return set()
    schema = body["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return set(schema.get("properties", {}))


def test_every_reference_field_of_a_tenant_body_is_tried() -> None:
    document = inventory_app().openapi_schema.to_schema()
    covered = {(c.method, c.path.replace("high-temperature", "{template_id}"), c.field) for c in CASES}
    missing = []
    for endpoint in select("tenant"):
        if not endpoint.has_body:
            continue
        fields = _request_fields(endpoint.method, endpoint.path, document) & REFERENCE_FIELDS
        fields -= NEW_OBJECT_IDS.get((endpoint.method, endpoint.path), set())
        missing += [f"{endpoint.id} {f}" for f in sorted(fields) if (endpoint.method, endpoint.path, f) not in covered]
    assert not missing, f"body fields naming other objects that no case tries with another tenant's id: {missing}"
    assert len(ENDPOINTS) > 0


async def test_a_sees_none_of_bs_names_anywhere_afterwards(api: Client, world: World) -> None:
    """After every attempt above, A's lists and objects show none of B's names (B's ids may be echoed where A
    stored an id that names nothing in A)."""
    a, b = world.a, world.b
    for endpoint in select("tenant"):
        if endpoint.method != "GET" or "template_id" in endpoint.path_params:
            continue
        values = {**a.ids, "rule_id": a.ids["notification_rule_id"] if "/notification-rules/" in endpoint.path
                  else a.ids["rule_id"]}
        response = await api.get(endpoint.url(values), headers=a.headers(),
                                 params={"metric": "temp_c"} if endpoint.path.endswith("/history") else None)
        assert b.marker not in response.text and b.tenant_id not in response.text, f"{endpoint.id}: {response.text}"
