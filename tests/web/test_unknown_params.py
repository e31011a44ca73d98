"""Query parameters a route does not declare are a 400 naming them; declared ones (aliased, repeated, from
dependencies and layers) keep working and are the ones the API document lists; browser pages, device-facing
routes and OPTIONS are left alone."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from litestar import Litestar, Router, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.service import issue_credentials
from pulse.settings import Settings
from pulse.web.errors import EXCEPTION_HANDLERS
from pulse.web.query_params import QueryParamCheck, declared_query_params
from tests.conftest import TenantRef, make_device, make_tenant
from tests.web.conftest import bearer, token_for

DEVICES = "/api/v2/devices"
DEVICE_LIST_PARAMS = ["group_id", "lifecycle", "limit", "offset", "q", "site_id", "sort", "state", "tag"]


async def _fleet(engine: AsyncEngine) -> TenantRef:
    """pump-01 ONLINE (tags pump, boiler), pump-02 STALE (pump), valve-01 OFFLINE (valve)."""
    tenant = await make_tenant(engine)
    for device_id, state, tags in (("pump-01", "ONLINE", ["pump", "boiler"]), ("pump-02", "STALE", ["pump"]),
                                   ("valve-01", "OFFLINE", ["valve"])):
        await make_device(engine, tenant, device_id, tags=tags)
        async with system_tx(engine) as conn:
            await conn.execute(text("UPDATE device_state SET status = :s, last_seen_at = now() "
                                    "WHERE tenant_id = :t AND device_id = :d"),
                               {"s": state, "t": tenant.tenant_id, "d": device_id})
    return tenant


async def _headers(engine: AsyncEngine, settings: Settings, tenant: TenantRef) -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["customer"]))


def _ids(body: dict[str, Any]) -> list[str]:
    return sorted(item["device_id"] for item in body["items"])


async def test_a_typo_is_a_400_naming_the_parameter_and_what_is_accepted(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await _fleet(engine)
    r = await client.get(f"{DEVICES}?stauts=OFFLINE", headers=await _headers(engine, settings, tenant))

    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"]["field"] == "stauts"
    assert error["details"]["accepted"] == DEVICE_LIST_PARAMS
    assert error["message"] == ("query parameter stauts: unknown query parameter; accepted: "
                                + ", ".join(DEVICE_LIST_PARAMS))
    assert error["details"]["errors"] == [{"field": "stauts", "source": "query",
                                           "message": "unknown query parameter; accepted: "
                                                      + ", ".join(DEVICE_LIST_PARAMS)}]


async def test_every_unknown_parameter_is_listed_once_and_names_are_exact(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await _fleet(engine)
    headers = await _headers(engine, settings, tenant)

    r = await client.get(f"{DEVICES}?state=ONLINE&Limit=5&stauts=x&stauts=y", headers=headers)
    assert r.status_code == 400, r.text
    details = r.json()["error"]["details"]
    assert details["field"] == "Limit"
    assert [e["field"] for e in details["errors"]] == ["Limit", "stauts"]

    r = await client.get(f"{DEVICES}?=OFFLINE", headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["field"] == ""
    assert r.json()["error"]["message"].startswith("query parameter (no name): unknown query parameter")

    # The Python name of an aliased parameter is not its wire name.
    r = await client.get(f"{DEVICES}/pump-01/telemetry?from_=2026-01-01T00:00:00Z", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "from_"
    assert "from" in r.json()["error"]["details"]["accepted"]


async def test_a_route_without_query_parameters_says_so(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    tenant = await _fleet(engine)
    r = await client.get("/api/v2/fleet/summary?site=plant-a", headers=await _headers(engine, settings, tenant))

    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["details"]["field"] == "site" and error["details"]["accepted"] == []
    assert error["message"] == "query parameter site: unknown query parameter; this route takes no query parameters"


async def test_declared_parameters_still_filter(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                settings: Settings) -> None:
    tenant = await _fleet(engine)
    headers = await _headers(engine, settings, tenant)

    r = await client.get(f"{DEVICES}?state=OFFLINE&limit=10&offset=0&sort=-device_id", headers=headers)
    assert r.status_code == 200, r.text
    assert _ids(r.json()) == ["valve-01"]

    # Aliased names (`from`, `to`) and an empty value are accepted.
    r = await client.get(f"{DEVICES}/pump-01/telemetry?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&cursor=",
                         headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []

    # A bad value of a declared parameter is still judged by its own check.
    r = await client.get(f"{DEVICES}?limit=0", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "limit"


async def test_repeated_array_parameters_still_work(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                    settings: Settings) -> None:
    tenant = await _fleet(engine)
    headers = await _headers(engine, settings, tenant)

    r = await client.get(f"{DEVICES}?state=ONLINE&state=STALE", headers=headers)
    assert r.status_code == 200, r.text
    assert _ids(r.json()) == ["pump-01", "pump-02"]

    r = await client.get(f"{DEVICES}?tag=pump&tag=boiler", headers=headers)
    assert r.status_code == 200, r.text
    assert _ids(r.json()) == ["pump-01"]

    r = await client.get(f"{DEVICES}?state=ONLINE&state=OFFLINE&tag=pump&tagg=valve", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "tagg"


async def test_credentials_are_checked_before_parameters(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                          settings: Settings) -> None:
    r = await client.get(f"{DEVICES}?stauts=OFFLINE")
    assert r.status_code == 401, r.text

    operator = bearer(await token_for(engine, settings, tenant_id=None, roles=["operator"]))
    r = await client.get(f"{DEVICES}?stauts=OFFLINE", headers=operator)
    assert r.status_code == 403, r.text

    # Operator routes are checked the same way.
    r = await client.get("/operator/devices?tenant=acme", headers=operator)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["field"] == "tenant"
    assert "tenant_id" in r.json()["error"]["details"]["accepted"]
    r = await client.get("/operator/devices?status=ACTIVE&limit=1", headers=operator)
    assert r.status_code == 200, r.text


async def test_health_routes_take_no_parameters(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/healthz")).text == "ok"
    assert (await client.get("/readyz")).status_code == 200
    r = await client.get("/healthz?verbose=1")
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "verbose"


async def test_pages_for_browsers_and_options_are_left_alone(client: AsyncTestClient[Litestar]) -> None:
    schema = await client.get("/schema/openapi.json?v=2")
    assert schema.status_code == 200 and "paths" in schema.json()
    docs = await client.get("/schema?x=1")
    assert docs.status_code == 200

    # The web app keeps its page state in the query string; without a build it answers 503 instead of a page.
    page = await client.get("/app/devices?site_id=plant-a&whatever=1")
    assert page.status_code in (200, 503), page.text
    assert page.headers["content-type"].startswith(("text/html", "text/plain"))

    # OPTIONS carries the query string of the request it asks about.
    options = await client.options("/healthz?verbose=1")
    assert options.status_code == 204, options.text
    assert "GET" in options.headers["allow"]


async def test_device_facing_routes_ignore_stray_parameters(client: AsyncTestClient[Litestar],
                                                            engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        creds = await issue_credentials(conn, tenant.tenant_id, device, now=datetime.now(UTC))

    r = await client.post(f"/ingest/v1/tenant/{tenant.tenant_id}/device/{device}/telemetry?fw=1.2.3",
                          content=json.dumps({"seq": 1, "metrics": {"temp_c": 4.5}}),
                          headers={"X-Provision-Token": creds.provision_token, "Content-Type": "application/json"})
    assert r.status_code == 202, r.text

    r = await client.post("/api/device/activate?fw=1.2.3", json={"activation_code": "ACT-NOPE-NOPE"})
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "activation_code"


# --- the mechanism on a small app: dependencies' and layers' query parameters count as declared ---------------

def _page_size(size: Annotated[int, QueryParameter(name="page-size")] = 10) -> int:
    return size


@get("/things", sync_to_thread=False, dependencies={"page_size": Provide(_page_size, sync_to_thread=False)})
def _things(page_size: NamedDependency[int],
            kind: Annotated[list[str] | None, QueryParameter()] = None) -> dict[str, Any]:
    return {"page_size": page_size, "kind": kind or []}


@pytest.fixture
async def small_client() -> AsyncIterator[AsyncTestClient[Litestar]]:
    router = Router("/v1", route_handlers=[_things], parameters={"region": QueryParameter(annotation=str, required=False)})
    # `region` is a layer's parameter: Litestar checks it on every route of the router, the handler never sees it.
    app = Litestar([router], before_request=QueryParamCheck(), exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app=app) as c:
        yield c


async def test_parameters_of_dependencies_and_layers_are_declared(small_client: AsyncTestClient[Litestar]) -> None:
    r = await small_client.get("/v1/things?page-size=3&kind=a&kind=b&region=eu")
    assert r.status_code == 200, r.text
    assert r.json() == {"page_size": 3, "kind": ["a", "b"]}

    r = await small_client.get("/v1/things?page_size=3")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["field"] == "page_size"
    assert r.json()["error"]["details"]["accepted"] == ["kind", "page-size", "region"]


async def test_accepted_parameters_are_those_the_api_document_lists(client: AsyncTestClient[Litestar]) -> None:
    """What a 400 calls accepted is what /schema/openapi.json documents, route by route."""
    document = (await client.get("/schema/openapi.json")).json()
    app = client.app
    declared = declared_query_params(app)
    compared = 0
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
        for method, (handler, _) in route.route_handler_map.items():
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            documented = {p["name"] for p in operation.get("parameters") or () if p.get("in") == "query"}
            assert declared[handler] == documented, f"{method} {path}"
            compared += 1
    assert compared > 100
