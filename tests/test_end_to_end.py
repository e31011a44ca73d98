"""The first end-to-end path, real at every step, with `pulse` processes as an operator would run them:

provision a device over HTTP → activate it → it publishes telemetry over MQTT → the row is committed and
device_state updated → a threshold rule opens exactly one alert → a webhook receives it, HMAC-signed →
the alert API shows it to its tenant's token and not to another tenant's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gmqtt
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.users import create_user
from pulse.notify.channels.webhook import verify_signature
from pulse.notify.routing import create_route
from pulse.notify.service import create_channel
from pulse.settings import DEV_ADMIN_KEY, Settings
from tests.conftest import free_port, make_tenant

WEBHOOK_SECRET = "e2e-webhook-secret"


class Receiver:
    """A local HTTP server standing in for a customer's webhook endpoint."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, Any] = {}

    def start(self, name: str, *args: str, extra: dict[str, str] | None = None) -> None:
        import tempfile

        log = tempfile.TemporaryFile("w+")
        self.logs[name] = log
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "pulse", *args], env={**self.env, **(extra or {})},
                                            stdout=log, stderr=subprocess.STDOUT, text=True)

    def output(self, name: str) -> str:
        log = self.logs[name]
        log.seek(0)
        return str(log.read())

    def stop_all(self) -> dict[str, int]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for name, p in self.procs.items():
            try:
                codes[name] = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = -9
        return codes


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _publish(mqtt_url: str, username: str, password: str, topic: str, payload: dict[str, Any]) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(mqtt_url)
    client = gmqtt.Client(f"e2e-device-{time.monotonic_ns()}")
    client.set_auth_credentials(username, password)
    await client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.publish(topic, json.dumps(payload), qos=1)
    await asyncio.sleep(0.3)
    await client.disconnect()


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with system_tx(engine) as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def test_device_to_signed_webhook_and_tenant_scoped_api(
        engine: AsyncEngine, settings: Settings, database_url: str, mqtt_url: str, receiver: Receiver) -> None:
    tenant = await make_tenant(engine, prefix="e2e")
    other = await make_tenant(engine, prefix="e2e-other")
    async with system_tx(engine) as conn:
        channel_id = await create_channel(conn, tenant.tenant_id, "ops webhook", "WEBHOOK",
                                          {"url": receiver.url}, {"secret": WEBHOOK_SECRET}, settings=settings)
        await create_route(conn, tenant.tenant_id, name="everything", channel_id=channel_id, min_severity=1)
        await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition) VALUES "
            "(:t, 'Too warm', 'THRESHOLD', 4, '{\"metric\": \"temp_c\", \"op\": \"GT\", \"value\": 30}')"),
            {"t": tenant.tenant_id})
        await create_user(conn, tenant_id=tenant.tenant_id, email=f"ops@{tenant.tenant_id}.example",
                          password="correct horse battery", roles=["customer"])
        await create_user(conn, tenant_id=other.tenant_id, email=f"ops@{other.tenant_id}.example",
                          password="correct horse battery", roles=["customer"])

    http_port = free_port()
    group = f"e2e-{http_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_ENV": "test", "PULSE_DATABASE_URL": database_url, "PULSE_MQTT_URL": mqtt_url,
                "PULSE_HTTP_PORT": str(http_port), "PULSE_HEALTH_PORT": "0", "PULSE_ALLOW_PRIVATE_URLS": "loopback",
                "PULSE_INGEST_SHARED_GROUP": group, "PULSE_INGEST_FLUSH_MS": "50"})
    procs = Processes(env)
    base = f"http://127.0.0.1:{http_port}"
    try:
        for name in ("web", "ingest", "evaluate", "deliver"):
            procs.start(name, name)

        def web_up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(web_up, "pulse web to answer /healthz")
        await asyncio.sleep(2)  # ingest subscribes and evaluate listens

        # 1. provision → activation code → credentials
        r = httpx.post(f"{base}/api/admin/devices", headers={"X-Admin-Key": DEV_ADMIN_KEY},
                       json={"tenant_id": tenant.tenant_id, "device_id": "fridge-7", "name": "Fridge 7"})
        assert r.status_code == 201, r.text
        code = r.json()["activation_code"]
        r = httpx.post(f"{base}/api/device/activate", json={"activation_code": code})
        assert r.status_code == 200, r.text
        creds = r.json()
        assert creds["provision_token"].startswith("pt_")
        topic = f"{creds['mqtt']['topic_prefix']}telemetry"
        assert topic == f"tenant/{tenant.tenant_id}/device/fridge-7/telemetry"

        # 2. the device publishes a breaching value over MQTT
        sent_at = datetime.now(UTC)
        await _publish(mqtt_url, creds["mqtt"]["username"], creds["mqtt"]["password"], topic,
                       {"version": "1", "seq": 1, "metrics": {"temp_c": 31.5, "door_open": False}})

        # 3. committed telemetry and device state
        async def stored() -> Any:
            return await _scalar(engine, "SELECT metrics->>'temp_c' FROM telemetry WHERE tenant_id = :t "
                                 "AND device_id = 'fridge-7'", t=tenant.tenant_id)

        for _ in range(100):
            if await stored():
                break
            await asyncio.sleep(0.1)
        assert await stored() == "31.5", procs.output("ingest")[-3000:]
        state = await _scalar(engine, "SELECT latest_metrics->>'temp_c' FROM device_state WHERE tenant_id = :t "
                              "AND device_id = 'fridge-7' AND last_seen_at >= :s", t=tenant.tenant_id, s=sent_at)
        assert state == "31.5"

        # 4. exactly one alert, 5. delivered to the webhook with a valid signature
        hit = await asyncio.to_thread(wait_for, lambda: receiver.requests, "the webhook", 30)
        headers, body = hit[0]
        assert verify_signature(WEBHOOK_SECRET, headers["x-pulse-timestamp"], body, headers["x-pulse-signature"],
                                now=datetime.now(UTC))
        assert not verify_signature("wrong-secret", headers["x-pulse-timestamp"], body,
                                    headers["x-pulse-signature"], now=datetime.now(UTC))
        payload = json.loads(body)
        assert payload["event"] == "OPENED" and payload["alert"]["device_id"] == "fridge-7"
        assert payload["alert"]["severity"] == 4

        await _publish(mqtt_url, creds["mqtt"]["username"], creds["mqtt"]["password"], topic,
                       {"version": "1", "seq": 2, "metrics": {"temp_c": 32.0}})
        for _ in range(50):
            if await _scalar(engine, "SELECT max(occurrence_count) FROM alerts WHERE tenant_id = :t",
                             t=tenant.tenant_id) == 2:
                break
            await asyncio.sleep(0.1)
        assert await _scalar(engine, "SELECT count(*) FROM alerts WHERE tenant_id = :t", t=tenant.tenant_id) == 1
        assert await _scalar(engine, "SELECT occurrence_count FROM alerts WHERE tenant_id = :t",
                             t=tenant.tenant_id) == 2
        await asyncio.sleep(1)
        assert len([h for h, _ in receiver.requests if h.get("x-pulse-event") == "OPENED"]) == 1

        # 6. the tenant's token sees the alert; another tenant's token does not
        def token(tenant_id: str) -> str:
            r = httpx.post(f"{base}/auth/login", json={"email": f"ops@{tenant_id}.example",
                                                       "password": "correct horse battery"})
            assert r.status_code == 200, r.text
            return str(r.json()["access_token"])

        mine = httpx.get(f"{base}/api/v2/alerts", headers={"Authorization": f"Bearer {token(tenant.tenant_id)}"})
        assert mine.status_code == 200, mine.text
        [alert] = mine.json()["items"]
        assert alert["device_id"] == "fridge-7" and alert["status"] == "OPEN" and alert["severity"] == 4
        theirs_token = token(other.tenant_id)
        theirs = httpx.get(f"{base}/api/v2/alerts", headers={"Authorization": f"Bearer {theirs_token}"})
        assert theirs.status_code == 200 and theirs.json()["items"] == []
        one = httpx.get(f"{base}/api/v2/alerts/{alert['alert_id']}",
                        headers={"Authorization": f"Bearer {theirs_token}"})
        assert one.status_code == 404
    finally:
        codes = procs.stop_all()
    assert codes == {"web": 0, "ingest": 0, "evaluate": 0, "deliver": 0}, {n: procs.output(n)[-2000:] for n in codes}
