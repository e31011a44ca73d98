"""deploy/caddy/Caddyfile, run by Debian's caddy with its internal TLS in front of a real `pulse web`: the routes by
path, the live WebSocket, and what stays inside. The file is the deployed one; only its placeholders differ."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.service import issue_credentials
from tests.conftest import free_port, make_device, make_tenant
from tests.deploy.conftest import DEPLOY, requires_caddy, start_web, stop, wait_port
from tests.web.conftest import PASSWORD, bearer, make_user

pytestmark = requires_caddy

CADDYFILE = DEPLOY / "caddy/Caddyfile"
WAIT_S = 15.0


class _KeycloakStandIn(BaseHTTPRequestHandler):
    """Answers every request with the path it got, so the test sees what Caddy sent to the Keycloak upstream."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = json.dumps({"upstream": "keycloak", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@dataclass
class Edge:
    base: str
    http_base: str
    tls: ssl.SSLContext
    keycloak_paths: list[str] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, verify=self.tls, timeout=30.0, trust_env=False)


def caddy_env(data: Path, **placeholders: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CADDY_", "PULSE_"))}
    env.update({"HOME": str(data), "XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(data), **placeholders})
    return env


@pytest.fixture(scope="module")
def edge(database_url: str) -> Iterator[Edge]:
    https_port, http_port = free_port(), free_port()
    base = f"https://127.0.0.1:{https_port}"
    keycloak = ThreadingHTTPServer(("127.0.0.1", 0), _KeycloakStandIn)
    threading.Thread(target=keycloak.serve_forever, daemon=True).start()
    web, web_base = start_web(database_url, PULSE_PUBLIC_URL=base)
    data = Path(tempfile.mkdtemp(prefix="pulse-caddy-"))
    env = caddy_env(data, CADDY_SITE="127.0.0.1", CADDY_TLS="internal", CADDY_HTTP_PORT=str(http_port),
                    CADDY_HTTPS_PORT=str(https_port), CADDY_EXTRA_OPTIONS="default_bind 127.0.0.1",
                    WEB_UPSTREAM=web_base.removeprefix("http://"),
                    KEYCLOAK_UPSTREAM=f"127.0.0.1:{keycloak.server_address[1]}")
    caddy = subprocess.Popen(["caddy", "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(https_port, caddy, "caddy")
        root = data / "caddy/pki/authorities/local/root.crt"
        deadline = time.monotonic() + WAIT_S
        while not root.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _KeycloakStandIn.seen = []
        yield Edge(base, f"http://127.0.0.1:{http_port}", ssl.create_default_context(cafile=str(root)),
                   _KeycloakStandIn.seen)
    finally:
        stop(caddy)
        stop(web)
        keycloak.shutdown()
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.parametrize("placeholders", [
    {},  # what deploy/docker-compose.yml leaves to the defaults: localhost, internal TLS
    {"CADDY_SITE": "pulse.example.com", "CADDY_TLS": "acme", "CADDY_EXTRA_OPTIONS": "email ops@example.com"},
    {"CADDY_SITE": "http://pulse.example.com", "CADDY_TLS": "off"},
], ids=["defaults", "acme", "plain-http"])
def test_caddyfile_validates(placeholders: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(["caddy", "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                          env=caddy_env(tmp_path, **placeholders), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid configuration" in done.stdout + done.stderr


async def test_routes_reach_pulse_web_over_tls(edge: Edge, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id, roles=("tenant-admin",))
    device_id = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        creds = await issue_credentials(conn, tenant.tenant_id, device_id, now=datetime.now(UTC))

    async with edge.client() as client:
        root = await client.get("/")
        app = await client.get("/app/")
        login = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        alerts = await client.get("/api/v2/alerts", headers=bearer(token))
        anonymous = await client.get("/api/v2/alerts")
        sites = await client.get("/customer/sites", headers=bearer(token))
        operator_only = await client.get("/operator/tenants", headers=bearer(token))
        discovery = await client.get("/.well-known/openid-configuration")
        schema = await client.get("/schema/openapi.json")
        ingest = await client.post(f"/ingest/v1/tenant/{tenant.tenant_id}/device/{device_id}/telemetry",
                                   headers={"X-Provision-Token": creds.provision_token},
                                   json={"seq": 5, "metrics": {"temp_c": 3.5}})
        activation = await client.post("/api/device/activate", json={"activation_code": "ACT-NONE-NONE-NONE"})
        provisioning = await client.post("/api/admin/devices", json={"tenant_id": tenant.tenant_id,
                                                                     "device_id": "x-1"})
        keycloak = await client.get("/realms/pulse/protocol/openid-connect/certs")
        inside = [await client.get(p) for p in ("/healthz", "/readyz", "/metrics", "/admin/master/console/")]

    assert root.status_code == 302 and root.headers["location"] == "/app/"
    for answer in (app, alerts, anonymous, sites, operator_only, discovery, schema, ingest, activation, provisioning):
        assert "x-request-id" in answer.headers, (answer.request.url, answer.status_code, answer.text[:200])
        assert "server" not in answer.headers
    assert alerts.status_code == 200 and alerts.json()["items"] == []
    assert anonymous.status_code == 401 and sites.status_code == 200 and operator_only.status_code == 403
    assert discovery.json()["issuer"] == edge.base  # PULSE_PUBLIC_URL is the address behind Caddy
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "Pulse"
    assert ingest.status_code == 202, ingest.text
    assert activation.status_code in (400, 404) and activation.json()["error"]["code"]
    assert provisioning.status_code == 401  # reached pulse from loopback (a private range), refused without the key
    assert keycloak.status_code == 200 and keycloak.json()["upstream"] == "keycloak"
    assert "/realms/pulse/protocol/openid-connect/certs" in edge.keycloak_paths
    for answer in inside:
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        assert "x-request-id" not in answer.headers  # answered by Caddy, never forwarded
    async with system_tx(engine) as conn:
        stored = (await conn.execute(text("SELECT metrics FROM telemetry WHERE tenant_id = :t AND device_id = :d"),
                                     {"t": tenant.tenant_id, "d": device_id})).scalar_one()
    assert stored == {"temp_c": 3.5}


async def test_plain_http_redirects_to_https(edge: Edge) -> None:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        answer = await client.get(f"{edge.http_base}/app/")
    assert answer.status_code in (301, 308)
    assert answer.headers["location"].startswith("https://127.0.0.1")


async def test_live_websocket_upgrades_through_caddy(edge: Edge, engine: AsyncEngine) -> None:
    from websockets.asyncio.client import connect

    tenant = await make_tenant(engine)
    email, _ = await make_user(engine, tenant.tenant_id, roles=("customer",))
    device_id = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        creds = await issue_credentials(conn, tenant.tenant_id, device_id, now=datetime.now(UTC))
    async with edge.client() as client:
        token = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()["access_token"]
        ticket = await client.post("/api/v2/ws/ticket", headers=bearer(token))
        assert ticket.status_code == 200, ticket.text
        url = edge.base.replace("https://", "wss://") + f"/api/v2/ws?ticket={ticket.json()['ticket']}"
        async with connect(url, ssl=edge.tls) as ws:
            await ws.send(json.dumps({"op": "ping"}))
            pong = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            await ws.send(json.dumps({"op": "subscribe", "topic": "device", "device_id": device_id}))
            sent = await client.post(f"/ingest/v1/tenant/{tenant.tenant_id}/device/{device_id}/telemetry",
                                     headers={"X-Provision-Token": creds.provision_token},
                                     json={"seq": 1, "metrics": {"rpm": 1200}})
            assert sent.status_code == 202, sent.text
            frame: dict[str, object] = {}
            async with asyncio.timeout(WAIT_S):
                while frame.get("type") != "telemetry":
                    frame = json.loads(await ws.recv())
    assert pong == {"type": "pong"}
    assert frame["device_id"] == device_id and frame["metrics"] == {"rpm": 1200}
