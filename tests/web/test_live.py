"""Live updates over WebSocket against a real `pulse web` server: tickets, subscriptions, fan-out, isolation."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pulse.alerting.evaluator import Evaluator
from pulse.alerting.service import AlertSignal, raise_alert
from pulse.clock import SystemClock
from pulse.db import system_tx
from pulse.fleet.service import issue_credentials
from pulse.settings import Settings
from pulse.web.app import create_app
from pulse.web.auth import Principal
from pulse.web.live import LiveHub, LiveSocket
from pulse.web.server import _Server
from tests.conftest import TenantRef, free_port, make_device, make_tenant
from tests.web.conftest import bearer, token_for

WAIT_S = 15.0  # upper bound for a frame to arrive; tests never assert how fast


class ShiftedClock(SystemClock):
    """The system clock, movable forward by hand (ticket expiry)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(super().now().timestamp() + self.offset, UTC)

    def monotonic(self) -> float:
        return super().monotonic() + self.offset


@dataclass
class LiveServer:
    base: str
    ws: str
    app: Litestar
    clock: ShiftedClock


@pytest.fixture(scope="module")
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    """One real uvicorn server for the module, with the app's own startup (engine, ingest, live hub)."""
    port = free_port()
    clock = ShiftedClock()
    app = create_app(settings, clock=clock)
    srv = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None))
    task = asyncio.create_task(srv.serve())
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        for _ in range(300):
            assert not task.done(), "server ended early"
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    await asyncio.wait_for(app.state.live.listening.wait(), timeout=WAIT_S)
    yield LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/api/v2/ws", app, clock)
    srv.should_exit = True
    await asyncio.wait_for(task, timeout=30)


@dataclass
class Device:
    tenant: TenantRef
    device_id: str
    token: str
    seq: int = 0


async def device(engine: AsyncEngine, tenant: TenantRef) -> Device:
    device_id = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        creds = await issue_credentials(conn, tenant.tenant_id, device_id, now=datetime.now(UTC))
    return Device(tenant, device_id, creds.provision_token)


async def send_telemetry(server: LiveServer, dev: Device, metrics: dict[str, Any]) -> None:
    """Through the real ingest path (HTTP ingest of the same web process): 202 means committed and notified."""
    dev.seq += 1
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        r = await client.post(f"{server.base}/ingest/v1/tenant/{dev.tenant.tenant_id}/device/{dev.device_id}/telemetry",
                              json={"seq": dev.seq, "metrics": metrics}, headers={"X-Provision-Token": dev.token})
    assert r.status_code == 202, r.text


async def get_ticket(server: LiveServer, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        return await client.post(f"{server.base}/api/v2/ws/ticket", headers=bearer(token))


async def open_socket(server: LiveServer, engine: AsyncEngine, settings: Settings, tenant_id: str,
                      roles: list[str] | None = None) -> ClientConnection:
    token = await token_for(engine, settings, tenant_id=tenant_id, roles=roles or ["customer"])
    r = await get_ticket(server, token)
    assert r.status_code == 200, r.text
    return await connect(f"{server.ws}?ticket={r.json()['ticket']}")


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=WAIT_S))  # type: ignore[no-any-return]


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def subscribe(ws: ClientConnection, topic: str, device_id: str | None = None) -> list[dict[str, Any]]:
    """Subscribe and return the acknowledgement plus the snapshot that follows it."""
    message: dict[str, Any] = {"op": "subscribe", "topic": topic}
    if device_id is not None:
        message["device_id"] = device_id
    await send(ws, message)
    ack = await recv(ws)
    assert ack["type"] == "subscribed", ack
    out = [ack]
    if topic == "fleet":
        out.append(await recv(ws))
    elif topic == "device":
        out.append(await recv(ws))  # device_state; telemetry follows only when the device has metrics
    return out


async def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of `kind`, skipping others (the caller knows which others may come first)."""
    while True:
        msg = await recv(ws)
        if msg["type"] == kind:
            return msg


async def closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as caught:
        await asyncio.wait_for(ws.recv(), timeout=WAIT_S)
    return caught.value.rcvd.code if caught.value.rcvd else None


# --- tickets -------------------------------------------------------------------------------------------------------

async def test_ticket_needs_a_tenant_user(server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        anonymous = await client.post(f"{server.base}/api/v2/ws/ticket")
    operator = await get_ticket(server, await token_for(engine, settings, tenant_id=None, roles=["operator"]))
    tenant = await make_tenant(engine)
    admin = await get_ticket(server, await token_for(engine, settings, tenant_id=tenant.tenant_id,
                                                     roles=["tenant-admin"]))

    assert anonymous.status_code == 401
    assert operator.status_code == 403, operator.text
    assert admin.status_code == 200
    assert admin.json()["expires_in"] == 30 and len(admin.json()["ticket"]) >= 32
    assert admin.headers["cache-control"] == "no-store"


async def test_socket_without_ticket_or_with_a_bad_one_is_closed_4401(server: LiveServer) -> None:
    for url in (server.ws, f"{server.ws}?ticket=", f"{server.ws}?ticket={secrets.token_urlsafe(32)}"):
        async with connect(url) as ws:
            assert await closed_with(ws) == 4401


async def test_ticket_works_once(server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    r = await get_ticket(server, await token_for(engine, settings, tenant_id=tenant.tenant_id))
    url = f"{server.ws}?ticket={r.json()['ticket']}"
    async with connect(url) as first:
        await send(first, {"op": "ping"})
        assert await recv(first) == {"type": "pong"}
        async with connect(url) as second:
            assert await closed_with(second) == 4401
        await send(first, {"op": "ping"})
        assert await recv(first) == {"type": "pong"}  # the first socket is unaffected


async def test_expired_ticket_is_refused(server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    r = await get_ticket(server, await token_for(engine, settings, tenant_id=tenant.tenant_id))
    server.clock.offset += 31
    try:
        async with connect(f"{server.ws}?ticket={r.json()['ticket']}") as ws:
            assert await closed_with(ws) == 4401
    finally:
        server.clock.offset -= 31


# --- updates -------------------------------------------------------------------------------------------------------

async def test_device_subscriber_gets_snapshot_then_telemetry_and_status(server: LiveServer, engine: AsyncEngine,
                                                                         settings: Settings) -> None:
    tenant = await make_tenant(engine)
    dev = await device(engine, tenant)
    async with await open_socket(server, engine, settings, tenant.tenant_id) as ws:
        ack, state = await subscribe(ws, "device", dev.device_id)
        await send_telemetry(server, dev, {"temp_c": 21.5, "door": "open"})
        telemetry = await until(ws, "telemetry")
        await Evaluator(engine).evaluate_devices([(tenant.tenant_id, dev.device_id)], datetime.now(UTC))
        online = await until(ws, "device_state")

    async with await open_socket(server, engine, settings, tenant.tenant_id) as late:
        _, late_state, late_telemetry = [*await subscribe(late, "device", dev.device_id), await recv(late)]

    assert ack == {"type": "subscribed", "topic": "device", "device_id": dev.device_id}
    assert state == {"type": "device_state", "device_id": dev.device_id, "status": "UNKNOWN", "changed_at": None}
    assert telemetry["device_id"] == dev.device_id
    assert telemetry["metrics"] == {"temp_c": 21.5, "door": "open"}
    assert datetime.fromisoformat(telemetry["time"]).tzinfo is not None
    assert online["device_id"] == dev.device_id and online["status"] == "ONLINE" and online["changed_at"]
    # a socket subscribing later starts from the current state
    assert late_state["status"] == "ONLINE"
    assert late_telemetry["type"] == "telemetry" and late_telemetry["metrics"]["temp_c"] == 21.5


async def test_alert_events_are_pushed(server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    dev = await device(engine, tenant)
    async with await open_socket(server, engine, settings, tenant.tenant_id) as ws:
        await subscribe(ws, "alerts")
        async with system_tx(engine) as conn:
            change = await raise_alert(conn, AlertSignal(
                tenant_id=tenant.tenant_id, fingerprint=f"T:{dev.device_id}", alert_type="THRESHOLD", severity=4,
                title="Temperature high", summary="temp_c above 30", device_id=dev.device_id, metric="temp_c",
                value=31.5), now=datetime.now(UTC))
        alert = await until(ws, "alert")

    assert alert == {"type": "alert", "alert_id": change.alert_id, "event_kind": "OPENED", "severity": 4,
                     "status": "OPEN", "title": "Temperature high", "device_id": dev.device_id}


async def open_operator_socket(server: LiveServer, engine: AsyncEngine, settings: Settings,
                               roles: list[str] | None = None) -> ClientConnection:
    token = await token_for(engine, settings, tenant_id=None, roles=roles or ["operator"])
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        r = await client.post(f"{server.base}/operator/live/ticket", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return await connect(f"{server.ws}?ticket={r.json()['ticket']}")


async def test_operators_follow_every_tenants_alerts_and_device_states_on_the_noc_topic(
        server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    first, second = await make_tenant(engine), await make_tenant(engine)
    devices = [await device(engine, t) for t in (first, second)]
    async with await open_operator_socket(server, engine, settings) as ws:
        await subscribe(ws, "noc")
        for dev in devices:
            async with system_tx(engine) as conn:
                await raise_alert(conn, AlertSignal(
                    tenant_id=dev.tenant.tenant_id, fingerprint=f"T:{dev.device_id}", alert_type="THRESHOLD",
                    severity=5, title=f"Pressure high on {dev.device_id}", summary="psi above 90",
                    device_id=dev.device_id, metric="psi", value=95), now=datetime.now(UTC))
        seen = [await until(ws, "alert") for _ in devices]
        await send_telemetry(server, devices[0], {"psi": 40})  # its first message: UNKNOWN -> ONLINE
        await Evaluator(engine).evaluate_devices([(first.tenant_id, devices[0].device_id)], datetime.now(UTC))
        states = await until(ws, "device_states")

    assert [(a["tenant_id"], a["device_id"], a["event_kind"], a["severity"]) for a in seen] == [
        (d.tenant.tenant_id, d.device_id, "OPENED", 5) for d in devices]
    assert [first.tenant_id, devices[0].device_id, "ONLINE"] in states["devices"]


async def test_the_noc_topic_is_for_operators_and_operators_follow_nothing_else(
        server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    dev = await device(engine, tenant)
    customer = await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"])
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        refused = await client.post(f"{server.base}/operator/live/ticket", headers=bearer(customer))
    assert refused.status_code == 403
    async with await open_socket(server, engine, settings, tenant.tenant_id, roles=["tenant-admin"]) as ws:
        await send(ws, {"op": "subscribe", "topic": "noc"})
        error = await recv(ws)
    assert (error["type"], error["code"], error["field"]) == ("error", "forbidden", "topic")
    async with system_tx(engine) as conn:
        audited_before = (await conn.execute(text("SELECT coalesce(max(audit_id), 0) FROM operator_audit_log"))
                          ).scalar_one()
    async with await open_operator_socket(server, engine, settings, roles=["operator-admin"]) as ws:
        for message in ({"op": "subscribe", "topic": "alerts"}, {"op": "subscribe", "topic": "fleet"},
                        {"op": "subscribe", "topic": "device", "device_id": dev.device_id}):
            await send(ws, message)
            error = await recv(ws)
            assert (error["type"], error["code"]) == ("error", "forbidden"), error
    async with system_tx(engine) as conn:  # the ticket request is an operator request: audited
        audited = (await conn.execute(text(
            "SELECT count(*) FROM operator_audit_log WHERE audit_id > :before "
            "AND action = 'POST /operator/live/ticket' AND 'operator-admin' = ANY(actor_roles)"),
            {"before": audited_before})).scalar_one()
    assert audited == 1


async def test_fleet_counts_follow_changes(server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    dev = await device(engine, tenant)
    await device(engine, tenant)
    async with await open_socket(server, engine, settings, tenant.tenant_id) as ws:
        _, snapshot = await subscribe(ws, "fleet")
        await send_telemetry(server, dev, {"temp_c": 20})
        await Evaluator(engine).evaluate_devices([(tenant.tenant_id, dev.device_id)], datetime.now(UTC))
        changed = await until(ws, "fleet")

    assert snapshot == {"type": "fleet", "counts": {"devices": 2, "online": 0, "stale": 0, "offline": 0,
                                                     "unknown": 2, "open_alerts": 0, "acknowledged_alerts": 0}}
    assert changed["counts"]["online"] == 1 and changed["counts"]["unknown"] == 1


async def test_a_tenant_never_sees_another_tenants_events(server: LiveServer, engine: AsyncEngine,
                                                          settings: Settings) -> None:
    tenant_a, tenant_b = await make_tenant(engine), await make_tenant(engine)
    dev_a, dev_b = await device(engine, tenant_a), await device(engine, tenant_b)
    async with await open_socket(server, engine, settings, tenant_b.tenant_id) as ws_b, \
            await open_socket(server, engine, settings, tenant_a.tenant_id) as ws_a:
        await subscribe(ws_a, "device", dev_a.device_id)
        await subscribe(ws_a, "alerts")
        await send(ws_b, {"op": "subscribe", "topic": "device", "device_id": dev_a.device_id})
        refused = await recv(ws_b)
        await subscribe(ws_b, "device", dev_b.device_id)
        await subscribe(ws_b, "alerts")
        await subscribe(ws_b, "fleet")

        # tenant A's telemetry, status change and alert, then tenant B's own: B's next frames are its own
        await send_telemetry(server, dev_a, {"temp_c": 99})
        await Evaluator(engine).evaluate_devices([(tenant_a.tenant_id, dev_a.device_id)], datetime.now(UTC))
        async with system_tx(engine) as conn:
            await raise_alert(conn, AlertSignal(tenant_id=tenant_a.tenant_id, fingerprint="A", alert_type="THRESHOLD",
                                                severity=5, title="A only", summary="", device_id=dev_a.device_id),
                              now=datetime.now(UTC))
            await raise_alert(conn, AlertSignal(tenant_id=tenant_b.tenant_id, fingerprint="B", alert_type="THRESHOLD",
                                                severity=2, title="B only", summary="", device_id=dev_b.device_id),
                              now=datetime.now(UTC))
        a_telemetry = await until(ws_a, "telemetry")
        a_alert = await until(ws_a, "alert")
        first = await recv(ws_b)
        await send_telemetry(server, dev_b, {"temp_c": 1})
        seen = [first]
        while not any(m["type"] == "telemetry" for m in seen):
            seen.append(await recv(ws_b))

    assert refused == {"type": "error", "code": "not_found", "message": f"device {dev_a.device_id} not found",
                       "field": "device_id"}
    assert a_telemetry["metrics"] == {"temp_c": 99} and a_alert["title"] == "A only"  # A's events did go out
    assert first["type"] in ("alert", "fleet")
    alerts = [m for m in seen if m["type"] == "alert"]
    assert [a["title"] for a in alerts] == ["B only"]
    assert all(m.get("device_id") in (None, dev_b.device_id) for m in seen)
    assert [m["metrics"] for m in seen if m["type"] == "telemetry"] == [{"temp_c": 1}]
    assert all(m["counts"]["devices"] == 1 for m in seen if m["type"] == "fleet")


async def test_bad_messages_get_error_frames_and_the_socket_stays_open(server: LiveServer, engine: AsyncEngine,
                                                                       settings: Settings) -> None:
    tenant = await make_tenant(engine)
    async with await open_socket(server, engine, settings, tenant.tenant_id) as ws:
        answers = []
        for raw in ("not json", "[1, 2]", json.dumps({"op": "dance"}), json.dumps({"topic": "alerts"}),
                    json.dumps({"op": "subscribe", "topic": "weather"}),
                    json.dumps({"op": "subscribe", "topic": "device"}),
                    json.dumps({"op": "subscribe", "topic": "device", "device_id": "no spaces"}),
                    json.dumps({"op": "subscribe", "topic": "alerts", "device_id": "x"}),
                    json.dumps({"op": "subscribe", "topic": "alerts", "tenant_id": "other"}),
                    json.dumps({"op": "subscribe", "topic": "device", "device_id": "nobody"}),
                    "x" * 5000):
            await ws.send(raw)
            answers.append(await recv(ws))
        await ws.send(b"\x00binary")
        answers.append(await recv(ws))
        await send(ws, {"op": "ping"})
        pong = await recv(ws)

    assert [(a["type"], a["code"], a.get("field")) for a in answers] == [
        ("error", "invalid_message", None), ("error", "invalid_message", None), ("error", "invalid_field", "op"),
        ("error", "invalid_field", "op"), ("error", "invalid_field", "topic"), ("error", "invalid_field", "device_id"),
        ("error", "invalid_field", "device_id"), ("error", "invalid_field", "device_id"),
        ("error", "invalid_field", "tenant_id"), ("error", "not_found", "device_id"),
        ("error", "invalid_message", None), ("error", "invalid_message", None)]
    assert all(a["message"] for a in answers)
    assert pong == {"type": "pong"}


async def test_unsubscribe_stops_messages(server: LiveServer, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    dev_1, dev_2 = await device(engine, tenant), await device(engine, tenant)
    async with await open_socket(server, engine, settings, tenant.tenant_id) as ws:
        await subscribe(ws, "device", dev_1.device_id)
        await subscribe(ws, "device", dev_2.device_id)
        await send(ws, {"op": "unsubscribe", "topic": "device", "device_id": dev_1.device_id})
        gone = await recv(ws)
        await send_telemetry(server, dev_1, {"n": 1})  # committed (and notified) before dev_2's
        await send_telemetry(server, dev_2, {"n": 2})
        nxt = await recv(ws)

    assert gone == {"type": "unsubscribed", "topic": "device", "device_id": dev_1.device_id}
    assert nxt["type"] == "telemetry" and nxt["device_id"] == dev_2.device_id and nxt["metrics"] == {"n": 2}


# --- limits (the hub itself) ---------------------------------------------------------------------------------------

async def test_slow_socket_drops_oldest_and_is_told_how_many() -> None:
    sock = LiveSocket(Principal(subject="s", email=None, tenant_id="t", roles=frozenset({"customer"})),
                      queue_limit=3)
    for n in range(5):
        sock.push(json.dumps({"n": n}))
    first = await sock.next_frames()
    sock.push(json.dumps({"n": 5}))
    second = await sock.next_frames()

    assert [json.loads(f) for f in first] == [{"type": "lagged", "dropped": 2}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert [json.loads(f) for f in second] == [{"n": 5}]


async def test_subscriptions_per_socket_are_limited(engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    devices = [await make_device(engine, tenant) for _ in range(3)]
    hub = LiveHub(engine, settings.require_database_url(), SystemClock(), max_subscriptions=2)
    sock = hub.connect(Principal(subject="s", email=None, tenant_id=tenant.tenant_id, roles=frozenset({"customer"})))
    for device_id in devices:
        await hub.handle_message(sock, json.dumps({"op": "subscribe", "topic": "device", "device_id": device_id}))
    await hub.handle_message(sock, json.dumps({"op": "unsubscribe", "topic": "device", "device_id": devices[0]}))
    await hub.handle_message(sock, json.dumps({"op": "subscribe", "topic": "device", "device_id": devices[2]}))
    frames = [json.loads(f) for f in await sock.next_frames(1000)]
    hub.disconnect(sock)

    kinds = [(f["type"], f.get("code")) for f in frames if f["type"] in ("subscribed", "unsubscribed", "error")]
    assert kinds == [("subscribed", None), ("subscribed", None), ("error", "too_many_subscriptions"),
                     ("unsubscribed", None), ("subscribed", None)]


async def test_tickets_are_one_time_and_bounded_per_subject(engine: AsyncEngine, settings: Settings) -> None:
    hub = LiveHub(engine, settings.require_database_url(), SystemClock())
    alice = Principal(subject="alice", email=None, tenant_id="t-a", roles=frozenset({"tenant-admin"}))
    tickets = [hub.tickets.issue(alice) for _ in range(25)]

    assert hub.tickets.redeem(tickets[-1]) == alice
    assert hub.tickets.redeem(tickets[-1]) is None
    assert hub.tickets.redeem(tickets[0]) is None  # a subject holds at most 20 unused tickets: the oldest went
    assert hub.tickets.redeem(tickets[-2]) == alice
