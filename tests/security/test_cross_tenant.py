"""Cross-tenant matrix over every tenant route: tenant A's tokens with tenant B's ids are 404 (or 403), never B's data.

Routes come from the app itself (tests/security/inventory.py), so a route added later is in the matrix at once.
For a route naming k objects in its path, every mix of A's and B's ids with at least one of B's is tried, with
A's tenant-admin and (where the route lets customers in) A's customer token. Each answer is searched for anything
only B's data contains, and B's view of the objects involved must be the same afterwards.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.security.bodies import SAMPLE_BODIES, SAMPLE_QUERIES
from tests.security.inventory import SHARED_PARAMS, TENANT_PARAMS, TENANT_QUERY_PARAMS, Endpoint, select
from tests.security.world import TenantWorld, World

Client = AsyncTestClient[Litestar]

TENANT_ROUTES = select("tenant")
SCOPED = [e for e in TENANT_ROUTES if set(e.path_params) & TENANT_PARAMS]
UNSCOPED_READS = [e for e in TENANT_ROUTES if e.method == "GET" and not set(e.path_params) & TENANT_PARAMS]

# How tenant B looks at each object (its own token): compared before and after A's attempts.
B_VIEWS: dict[str, tuple[str, ...]] = {
    "device_id": ("/api/v2/devices/{device_id}", "/api/v2/devices/{device_id}/telemetry/latest"),
    "site_id": ("/customer/sites/{site_id}",),
    "group_id": ("/customer/device-groups/{group_id}",),
    "alert_id": ("/api/v2/alerts/{alert_id}",),
    "window_id": ("/customer/maintenance-windows/{window_id}",),
    "channel_id": ("/customer/channels/{channel_id}",),
    "route_id": ("/customer/routing-rules",),
    "job_id": ("/customer/notifications/jobs/{job_id}",),
    "user_id": ("/customer/users/{user_id}", "/customer/users/{user_id}/contact-methods"),
    "contact_id": ("/customer/users/{user_id}/contact-methods/{contact_id}",),
    "notification_rule_id": ("/customer/users/{user_id}/notification-rules/{notification_rule_id}",),
    "schedule_id": ("/customer/schedules/{schedule_id}",),
    "layer_id": ("/customer/schedules/{schedule_id}",),
    "override_id": ("/customer/schedules/{schedule_id}/overrides",),
    "policy_id": ("/customer/escalation-policies/{policy_id}",),
    "rule_id": ("/customer/alert-rules/{rule_id}",),
    "run_id": ("/customer/reports/{run_id}",),
}


def caller_roles(endpoint: Endpoint) -> list[str]:
    assert endpoint.roles is not None
    return [r for r in ("tenant-admin", "customer") if r in endpoint.roles]


def leaked(text: str, owner: TenantWorld, sent: set[str]) -> list[str]:
    """What of `owner`'s data an answer shows, beyond the ids the caller itself sent (errors may echo those)."""
    return sorted(s for s in owner.secrets() - sent if s in text)


async def b_view(client: Client, b: TenantWorld, objects: set[str]) -> dict[str, Any]:
    values = {**b.ids, "notification_rule_id": b.ids["notification_rule_id"]}
    out: dict[str, Any] = {}
    for obj in sorted(objects):
        for template in B_VIEWS[obj]:
            url = template.format(**values)
            response = await client.get(url, headers=b.headers())
            assert response.status_code == 200, f"B cannot read its own {url}: {response.text}"
            out[url] = response.json()
    return out


def id_mixes(endpoint: Endpoint, a: TenantWorld, b: TenantWorld) -> list[tuple[dict[str, str], set[str]]]:
    """Path values mixing A's and B's ids (at least one of B's), with the B objects each mix names."""
    scoped = [p for p in endpoint.path_params if p in TENANT_PARAMS]
    shared = {p: "high-temperature" for p in endpoint.path_params if p in SHARED_PARAMS}
    unknown = set(endpoint.path_params) - TENANT_PARAMS - SHARED_PARAMS
    assert not unknown, f"{endpoint.id}: path parameters {unknown} name nothing the matrix knows"
    out = []
    for choice in itertools.product((a, b), repeat=len(scoped)):
        if b not in choice:
            continue
        values = dict(shared)
        objects: set[str] = set()
        for param, owner in zip(scoped, choice, strict=True):
            obj = endpoint.object_param(param)
            values[param] = owner.ids[obj]
            if owner is b:
                objects.add(obj)
        out.append((values, objects))
    return out


@pytest.mark.parametrize("endpoint", SCOPED, ids=lambda e: e.id)
async def test_another_tenants_ids_are_not_found(api: Client, world: World, endpoint: Endpoint) -> None:
    a, b = world.a, world.b
    body_for = SAMPLE_BODIES.get((endpoint.method, endpoint.path))
    assert not endpoint.has_body or body_for is not None, f"add a sample body for {endpoint.id} to bodies.py"
    body = body_for(a.ids) if body_for else None
    for values, objects in id_mixes(endpoint, a, b):
        before = await b_view(api, b, objects)
        for role in caller_roles(endpoint):
            response = await api.request(endpoint.method, endpoint.url(values), headers=a.headers(role), json=body,
                                         params=SAMPLE_QUERIES.get((endpoint.method, endpoint.path)))
            where = f"{role} of A: {endpoint.method} {endpoint.url(values)}"
            assert response.status_code in (403, 404), f"{where} -> {response.status_code} {response.text}"
            assert response.json()["error"]["code"] in ("not_found", "forbidden"), where
            assert not leaked(response.text, b, set(values.values())), f"{where} shows B's data: {response.text}"
        assert await b_view(api, b, objects) == before, f"{endpoint.id} changed B's {sorted(objects)}"


def _query_variants(endpoint: Endpoint, b: TenantWorld) -> list[dict[str, str]]:
    variants: list[dict[str, str]] = [{}]
    for name in endpoint.query_params:
        if name in TENANT_QUERY_PARAMS:
            variants.append({name: b.ids[name]})
    return variants


# Reads that show no object of the world's tenants by id or name (counts, built-in templates, the caller's own
# login, windows in progress, dead letters), so A's own data is not expected in them.
NO_OWN_OBJECTS = {"/api/v2/fleet/summary", "/customer/alert-rule-templates", "/customer/alert-rule-templates/{template_id}",
                  "/customer/me", "/customer/maintenance-windows/active", "/customer/audit-log",
                  "/customer/notifications/dead-letters"}


@pytest.mark.parametrize("endpoint", UNSCOPED_READS, ids=lambda e: e.id)
async def test_listings_never_include_another_tenants_rows(api: Client, world: World, endpoint: Endpoint) -> None:
    """Every read without a path id (lists, summaries, filters) shows A's rows and none of B's, even when a filter
    names one of B's objects."""
    a, b = world.a, world.b
    values = {p: "high-temperature" for p in endpoint.path_params if p in SHARED_PARAMS}
    for query in _query_variants(endpoint, b):
        for role in caller_roles(endpoint):
            response = await api.get(endpoint.url(values), params=query, headers=a.headers(role))
            where = f"{role} of A: GET {endpoint.url(values)}?{query}"
            assert response.status_code < 500, f"{where} -> {response.status_code} {response.text}"
            assert response.status_code in (200, 404), f"{where} -> {response.status_code} {response.text}"
            assert not leaked(response.text, b, set(query.values())), f"{where} shows B's data: {response.text}"
            if not query and endpoint.path not in NO_OWN_OBJECTS and role == "tenant-admin":
                assert a.marker in response.text or a.tenant_id in response.text or any(
                    v in response.text for v in a.ids.values()), f"{where} shows none of A's own data"


async def test_a_device_token_cannot_send_as_another_tenants_device(api: Client, world: World) -> None:
    """HTTP ingest: A's device credentials on B's tenant or device path are refused and nothing reaches B."""
    a, b = world.a, world.b
    before = await b_view(api, b, {"device_id"})
    paths = [f"/ingest/v1/tenant/{b.tenant_id}/device/{b.ids['device_id']}/telemetry",
             f"/ingest/v1/tenant/{b.tenant_id}/device/{a.ids['device_id']}/telemetry",
             f"/ingest/v1/tenant/{a.tenant_id}/device/{b.ids['device_id']}/telemetry"]
    for path in paths:
        response = await api.post(path, headers={"X-Provision-Token": a.provision_token},
                                  json={"seq": 99, "metrics": {"temp_c": -40.0}})
        assert response.status_code in (401, 403), f"{path} -> {response.status_code} {response.text}"
    batch = await api.post("/ingest/v1/batch", json={"messages": [
        {"tenant_id": b.tenant_id, "device_id": b.ids["device_id"], "msg_type": "telemetry",
         "token": a.provision_token, "message": {"seq": 100, "metrics": {"temp_c": -41.0}}}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["accepted"] == 0 and batch.json()["results"][0]["status"] in (401, 403)
    assert await b_view(api, b, {"device_id"}) == before
