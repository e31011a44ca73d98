"""Security headers and a request id on every answer of every route (errors included), and CORS only for the
origins PULSE_CORS_ORIGINS lists."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from pulse.settings import Settings
from pulse.web.app import create_app
from tests.security.inventory import ENDPOINTS, Endpoint
from tests.security.world import World

Client = AsyncTestClient[Litestar]
ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
HTTP_ENDPOINTS = [e for e in ENDPOINTS if e.method != "WS"]


def assert_security_headers(response: object, where: str) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers.get("x-request-id"), f"{where}: no X-Request-Id"
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("x-frame-options") == "DENY", where
    assert headers.get("referrer-policy") == "no-referrer", where
    assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), where


def _values(endpoint: Endpoint) -> dict[str, str]:
    return {p: str(uuid.uuid4()) for p in endpoint.path_params}


@pytest.mark.parametrize("endpoint", HTTP_ENDPOINTS, ids=lambda e: e.id)
async def test_every_answer_has_security_headers_and_a_request_id(api: Client, world: World,
                                                                  endpoint: Endpoint) -> None:
    url = endpoint.url(_values(endpoint))
    body = {} if endpoint.has_body else None
    for headers in ({}, world.a.headers(), {"Authorization": "Bearer not-a-token"}):
        response = await api.request(endpoint.method, url, headers=headers, json=body)
        assert response.status_code < 500, f"{endpoint.method} {url}: {response.status_code} {response.text}"
        assert_security_headers(response, f"{endpoint.method} {url} -> {response.status_code}")


async def test_routing_errors_and_malformed_requests_have_them_too(api: Client, world: World) -> None:
    cases = [("GET", "/no/such/route", None, {}), ("DELETE", "/healthz", None, {}),
             ("POST", "/customer/channels", b"{not json", {**world.a.headers(), "content-type": "application/json"}),
             ("POST", "/customer/devices/import", b"device_id\nx", {**world.a.headers(), "content-type": "text/plain"}),
             ("POST", "/ingest/v1/batch", b"x" * 3_000_000, {"content-type": "application/json"})]
    for method, path, content, headers in cases:
        response = await api.request(method, path, content=content, headers=headers)
        assert 400 <= response.status_code < 500, f"{method} {path}: {response.status_code} {response.text}"
        assert_security_headers(response, f"{method} {path} -> {response.status_code}")
        assert response.json()["error"]["code"]


async def test_a_sane_request_id_is_echoed_and_others_replaced(api: Client) -> None:
    echoed = await api.get("/healthz", headers={"X-Request-Id": "trace-42.a:b_c"})
    replaced = [await api.get("/healthz", headers={"X-Request-Id": bad}) for bad in ("x" * 200, "a b", "<script>")]
    fresh = {(await api.get("/healthz")).headers["x-request-id"] for _ in range(3)}
    assert echoed.headers["x-request-id"] == "trace-42.a:b_c"
    assert all(r.headers["x-request-id"] not in ("x" * 200, "a b", "<script>") for r in replaced)
    assert len(fresh) == 3


# --- CORS ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def cors_api(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings.replace(cors_origins=(ALLOWED, "http://localhost:5173"))),
                               timeout=30) as client:
        yield client


def _preflight(origin: str, method: str = "PATCH") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}


async def test_without_cors_origins_no_answer_carries_cors_headers(api: Client, world: World) -> None:
    preflight = await api.options("/customer/channels", headers=_preflight(ALLOWED))
    simple = await api.get("/api/v2/devices", headers={**world.a.headers(), "Origin": ALLOWED})
    for response in (preflight, simple):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers
        assert_security_headers(response, "no CORS")
    assert simple.status_code == 200


async def test_listed_origins_get_cors_headers(cors_api: Client, world: World) -> None:
    preflight = await cors_api.options("/customer/channels/x", headers=_preflight(ALLOWED))
    simple = await cors_api.get("/api/v2/devices", headers={**world.a.headers(), "Origin": ALLOWED})

    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers
    assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert_security_headers(simple, "CORS")


async def test_other_origins_get_no_cors_headers(cors_api: Client, world: World) -> None:
    preflight = await cors_api.options("/customer/channels", headers=_preflight(OTHER))
    simple = await cors_api.get("/api/v2/devices", headers={**world.a.headers(), "Origin": OTHER})
    lookalike = await cors_api.get("/api/v2/devices", headers={**world.a.headers(),
                                                              "Origin": "https://app.example.com.evil.net"})
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    for response in (simple, lookalike):
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers, response.headers


async def test_cors_origins_setting_is_checked() -> None:
    for bad in ("*", "https://app.example.com/", "app.example.com", "https://app.example.com/path", "ftp://x.y"):
        with pytest.raises(Exception, match="PULSE_CORS_ORIGINS"):
            Settings.from_env({"PULSE_CORS_ORIGINS": bad})
    assert Settings.from_env({"PULSE_CORS_ORIGINS": f"{ALLOWED}, http://localhost:5173"}).cors_origins == (
        ALLOWED, "http://localhost:5173")
