"""The live WebSocket (WS /api/v2/ws) across tenants, against a real uvicorn server: tenant A cannot follow B's
devices, and none of B's telemetry, device states, alerts or fleet counts reach A's socket; a JWT is no ticket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pulse.alerting.evaluator import Evaluator
from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.settings import Settings
from pulse.web.app import create_app
from pulse.web.server import _Server
from tests.conftest import free_port
from tests.security.world import TenantWorld, World
from tests.web.conftest import bearer

WAIT_S = 15.0  # bound on every wait; nothing asserts how fast


@pytest.fixture(scope="module")
async def live(settings: Settings) -> AsyncIterator[str]:
    """A real `pulse web` (uvicorn, the app's own startup) on a free port; yields its base URL."""
    port = free_port()
    app = create_app(settings)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None))
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        for _ in range(300):
            assert not task.done(), "server ended early"
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    await asyncio.wait_for(app.state.live.listening.wait(), timeout=WAIT_S)
    yield base
    server.should_exit = True
    await asyncio.wait_for(task, timeout=30)


async def _socket(base: str, tenant: TenantWorld, role: str = "customer") -> ClientConnection:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        r = await client.post(f"{base}/api/v2/ws/ticket", headers=tenant.headers(role))
    assert r.status_code == 200, r.text
    return await connect(f"{base.replace('http', 'ws', 1)}/api/v2/ws?ticket={r.json()['ticket']}")


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=WAIT_S))  # type: ignore[no-any-return]


async def _ask(ws: ClientConnection, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one message; its answer and the snapshot frames a subscription brings."""
    await ws.send(json.dumps(message))
    first = await _recv(ws)
    out = [first]
    if first.get("type") == "subscribed" and message.get("topic") in ("device", "fleet"):
        out.append(await _recv(ws))
    return out


async def _telemetry(base: str, tenant: TenantWorld, seq: int, metrics: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        r = await client.post(f"{base}/ingest/v1/tenant/{tenant.tenant_id}/device/{tenant.ids['device_id']}/telemetry",
                              json={"seq": seq, "metrics": metrics}, headers={"X-Provision-Token": tenant.provision_token})
    assert r.status_code == 202, r.text


async def _alert(engine: AsyncEngine, tenant: TenantWorld, title: str) -> str:
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=f"live-{title}", alert_type="THRESHOLD", severity=5, title=title,
            summary=tenant.marker, device_id=tenant.ids["device_id"]), now=datetime.now(UTC))
    return change.alert_id


async def test_a_socket_of_tenant_a_sees_nothing_of_tenant_b(live: str, world: World, engine: AsyncEngine) -> None:
    a, b = world.a, world.b
    ws_a = await _socket(live, a, "tenant-admin")
    ws_b = await _socket(live, b)
    try:
        refused = []
        for device_id in (b.ids["device_id"], f" {b.ids['device_id']}", b.ids["device_id"].upper(),
                          f"{b.tenant_id}/{b.ids['device_id']}"):
            refused += await _ask(ws_a, {"op": "subscribe", "topic": "device", "device_id": device_id})
        refused += await _ask(ws_a, {"op": "subscribe", "topic": "alerts", "tenant_id": b.tenant_id})
        for topic in ("alerts", "fleet"):
            await _ask(ws_a, {"op": "subscribe", "topic": topic})
        own = await _ask(ws_a, {"op": "subscribe", "topic": "device", "device_id": a.ids["device_id"]})
        await _ask(ws_b, {"op": "subscribe", "topic": "device", "device_id": b.ids["device_id"]})
        await _ask(ws_b, {"op": "subscribe", "topic": "alerts"})

        # B's events: telemetry, a status change, a new alert and its acknowledgement
        await _telemetry(live, b, 1000, {"temp_c": 77.7, "note": b.marker})
        await Evaluator(engine).evaluate_devices([(b.tenant_id, b.ids["device_id"])], datetime.now(UTC))
        b_alert = await _alert(engine, b, f"live alert {b.marker}")
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            acked = await client.post(f"{live}/api/v2/alerts/{b_alert}/acknowledge", headers=b.headers())
        assert acked.status_code == 200, acked.text
        # then A's own, as a fence: once A has these, B's earlier events were dispatched
        await _telemetry(live, a, 1000, {"temp_c": 11.1})
        a_alert = await _alert(engine, a, f"live alert {a.marker}")

        seen_a: list[dict[str, Any]] = []
        while not (any(f.get("type") == "telemetry" and f["metrics"].get("temp_c") == 11.1 for f in seen_a)
                   and any(f.get("type") == "alert" and f["alert_id"] == a_alert for f in seen_a)):
            seen_a.append(await _recv(ws_a))
        seen_b: list[dict[str, Any]] = []
        while not any(f.get("type") == "alert" and f["alert_id"] == b_alert and f["event_kind"] == "ACKNOWLEDGED"
                      for f in seen_b):
            seen_b.append(await _recv(ws_b))
    finally:
        await ws_a.close()
        await ws_b.close()

    assert len(refused) == 5 and all(r["type"] == "error" and r["code"] in ("not_found", "invalid_field")
                                     for r in refused), refused
    assert refused[0]["code"] == "not_found"
    assert own[0]["type"] == "subscribed"
    text_a = json.dumps(seen_a) + json.dumps(refused)
    for secret in (b.marker, b.tenant_id, b_alert, "77.7"):
        assert secret not in text_a, f"A's socket got B's {secret}: {text_a}"
    assert all(f.get("device_id") in (None, a.ids["device_id"]) for f in seen_a)
    # control: B's events did go out, to B
    assert any(f.get("type") == "telemetry" and f["metrics"].get("temp_c") == 77.7 for f in seen_b)
    assert {f["event_kind"] for f in seen_b if f.get("type") == "alert" and f["alert_id"] == b_alert} >= \
        {"OPENED", "ACKNOWLEDGED"}


@pytest.mark.parametrize("query", ["ticket={token}", "token={token}", "access_token={token}"])
async def test_an_access_token_in_the_url_opens_nothing(live: str, world: World, query: str) -> None:
    url = f"{live.replace('http', 'ws', 1)}/api/v2/ws?{query.format(token=world.a.tokens['tenant-admin'])}"
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=WAIT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_operators_get_no_ticket(live: str, world: World) -> None:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        for token in (world.operator, world.operator_admin):
            r = await client.post(f"{live}/api/v2/ws/ticket", headers=bearer(token))
            assert r.status_code == 403, r.text
