"""What every answer shares: request ids, security headers, the error envelope; health; the OpenAPI document."""

from __future__ import annotations

import base64
import secrets

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from pulse.web.app import create_app
from tests.conftest import free_port, make_tenant
from tests.web.conftest import PASSWORD, active_key, make_user


@pytest.mark.parametrize("path", ["/healthz", "/api/v2/alerts", "/no/such/route", "/schema"])
async def test_every_answer_has_a_request_id_and_security_headers(client: AsyncTestClient[Litestar],
                                                                  path: str) -> None:
    response = await client.get(path)

    assert len(response.headers["x-request-id"]) >= 16
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_request_ids_are_unique_and_a_sane_incoming_one_is_echoed(client: AsyncTestClient[Litestar]) -> None:
    first, second = await client.get("/healthz"), await client.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]

    echoed = await client.get("/healthz", headers={"X-Request-Id": "lb-7f3a.2b:9"})
    assert echoed.headers["x-request-id"] == "lb-7f3a.2b:9"

    for bad in ("has spaces in it", "x" * 200, "<script>"):
        replaced = await client.get("/healthz", headers={"X-Request-Id": bad})
        assert replaced.headers["x-request-id"] != bad


async def test_unknown_route_is_404_in_the_error_envelope(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/v2/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "no route for GET /api/v2/nothing-here",
                                         "details": {}}}


async def test_wrong_method_is_405_in_the_error_envelope(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/auth/login")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "a@example.test"}, "password"),
    ({"email": 7, "password": "x"}, "email"),
    ({"email": "a@example.test", "password": "x", "extra": True}, "extra"),
])
async def test_invalid_body_is_400_naming_the_field(client: AsyncTestClient[Litestar], body: dict[str, object],
                                                    field: str) -> None:
    response = await client.post("/auth/login", json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "validation_error" and error["details"]["field"] == field


async def test_malformed_json_is_400_not_500(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/auth/login", content=b'{"email": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def test_unexpected_failure_is_500_with_request_id_and_no_internals(settings: Settings,
                                                                          engine: AsyncEngine) -> None:
    """A web process started with another PULSE_SECRET_KEY cannot decrypt the signing key."""
    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id)
    await active_key(engine, settings)  # the key exists, encrypted with the right secret
    other_secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    async with AsyncTestClient(app=create_app(settings.replace(secret_key=other_secret))) as client:
        response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert error["details"] == {"request_id": response.headers["x-request-id"]}
    assert "secret" not in response.text.lower() and "Traceback" not in response.text


async def test_healthz_and_readyz(client: AsyncTestClient[Litestar]) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")
    assert (health.status_code, health.text) == (200, "ok")
    assert (ready.status_code, ready.text) == (200, "ok")


async def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    unreachable = settings.replace(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/pulse")
    async with AsyncTestClient(app=create_app(unreachable)) as client:
        ready = await client.get("/readyz")
        health = await client.get("/healthz")

    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "not_ready" and "database" in ready.json()["error"]["message"]
    assert health.status_code == 200  # alive, just not ready


async def test_openapi_document_lists_the_routes(client: AsyncTestClient[Litestar]) -> None:
    import pulse

    document = (await client.get("/schema/openapi.json")).json()
    ui = await client.get("/schema")

    assert document["info"]["title"] == "Pulse" and document["info"]["version"] == pulse.__version__
    assert {"/auth/login", "/auth/refresh", "/.well-known/jwks.json", "/.well-known/openid-configuration",
            "/api/v2/alerts", "/api/v2/alerts/{alert_id}", "/api/admin/devices",
            "/api/device/activate"} <= set(document["paths"])
    assert document["paths"]["/api/v2/alerts"]["get"]["security"] == [{"BearerToken": []}]
    assert document["paths"]["/api/admin/devices"]["post"]["security"] == [{"AdminKey": []}]
    params = {p["name"] for p in document["paths"]["/api/v2/alerts"]["get"]["parameters"]}
    assert params == {"status", "severity_min", "device_id", "limit", "offset"}
    assert ui.status_code == 200 and "text/html" in ui.headers["content-type"]
