"""MQTT channel against real Mosquitto brokers on loopback (anonymous, password-protected, TLS): subscribers
receive the webhook body on the rendered topic with the configured retain flag; refusals decide retries."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gmqtt
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.errors import ValidationError
from pulse.notify.channels import mqtt as mqtt_channel
from pulse.notify.routing import create_route
from pulse.notify.schemas import AlertEventMessage, SendResult
from pulse.notify.service import create_channel
from pulse.settings import Settings
from tests.conftest import free_port, make_device, make_tenant, run_mosquitto
from tests.notify.test_delivery import _alert, _attempts, _settle_job
from tests.notify.test_email_channel import _self_signed

LOOPBACK = ("loopback",)
USER = ("alerts-bot", "broker-pass-123")


def _mosquitto(tmp: Path, listener: str) -> Iterator[int]:
    """A private Mosquitto on a free loopback port; `listener` holds the listener's extra lines."""
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\n{listener}\npersistence false\nlog_dest stderr\n"
                    f"user {subprocess.run(['id', '-un'], capture_output=True, text=True).stdout.strip()}\n")
    for _ in run_mosquitto(conf, port):
        yield port


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    yield from _mosquitto(tmp_path, "allow_anonymous true")


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[int]:
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), *USER], check=True, capture_output=True)
    passwords.chmod(0o600)
    yield from _mosquitto(tmp_path, f"allow_anonymous false\npassword_file {passwords}")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, str]]:
    _context, pem = _self_signed(tmp_path)
    for port in _mosquitto(tmp_path, f"allow_anonymous true\ncertfile {tmp_path / 'cert.pem'}\n"
                                     f"keyfile {tmp_path / 'key.pem'}"):
        yield port, pem


class Subscriber:
    """A real MQTT subscriber: what arrived as (topic, JSON payload, retain flag, user properties)."""

    def __init__(self, port: int, topic_filter: str, **tls: Any) -> None:
        self.port, self.topic_filter, self.tls = port, topic_filter, tls
        self.got: list[tuple[str, dict[str, Any], bool, dict[str, str]]] = []
        self.client = gmqtt.Client(f"pulse-test-sub-{secrets.token_hex(4)}")
        self.client.on_message = self._on_message
        self.subscribed = asyncio.Event()
        self.client.on_subscribe = lambda *_args: self.subscribed.set()

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, properties: dict[str, Any]) -> int:
        self.got.append((topic, json.loads(payload), bool(properties.get("retain")),
                         dict(properties.get("user_property", []))))
        return 0

    async def __aenter__(self) -> Subscriber:
        await self.client.connect("127.0.0.1", self.port, **self.tls)
        self.client.subscribe(self.topic_filter, qos=1)
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.client.disconnect()

    async def wait(self, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


def _message(device_id: str | None = "freezer-7") -> AlertEventMessage:
    now = datetime.now(UTC)
    return AlertEventMessage(tenant_id="acme", alert_id="a-1", event_id=7, event_kind="OPENED", fingerprint="f",
                             alert_type="THRESHOLD", severity=3, status="OPEN", title="too warm", device_id=device_id,
                             metric="temp_c", value=31, opened_at=now, occurred_at=now)


async def _send(config: dict[str, Any], secrets_: dict[str, str] | None = None,
                msg: AlertEventMessage | None = None) -> SendResult:
    clean = mqtt_channel.validate_config(config, secrets_ or {}, LOOPBACK)
    async with httpx.AsyncClient() as http:
        return await mqtt_channel.send(msg or _message(), clean, secrets_ or {}, delivery_id="7:route-1", http=http,
                                       allow=LOOPBACK)


async def test_alert_reaches_live_and_late_subscribers_through_the_deliverer(engine: AsyncEngine, settings: Settings,
                                                                             broker: int) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "bus", "MQTT", {
            "url": f"mqtt://127.0.0.1:{broker}", "topic_template": "alerts/{tenant_id}/{device_id}", "qos": 1,
            "retain": True}, {}, settings=settings)
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel)
    async with Subscriber(broker, f"alerts/{tenant.tenant_id}/#") as live:
        alert_id = await _alert(engine, tenant, device, severity=5)
        job = await _settle_job(engine, settings, tenant)
        assert job.status == "DELIVERED" and len(await _attempts(engine, job.job_id)) == 1
        await live.wait()
    [(topic, body, _retain, props)] = live.got
    assert topic == f"alerts/{tenant.tenant_id}/{device}"
    assert body["version"] == "1" and body["event"] == "OPENED" and body["tenant_id"] == tenant.tenant_id
    assert body["alert"]["alert_id"] == alert_id and body["alert"]["device_id"] == device
    assert body["alert"]["severity"] == 5 and body["alert"]["severity_name"] == "critical"
    assert props["pulse-delivery"] == job.idempotency_key
    async with Subscriber(broker, "alerts/#") as late:  # connected after the publish: sees it only if retained
        await late.wait()
    assert [(t, b, r) for t, b, r, _p in late.got] == [(topic, body, True)]


@pytest.mark.parametrize("qos", [0, 2])
async def test_unretained_message_at_other_qos_reaches_only_live_subscribers(broker: int, qos: int) -> None:
    config = {"url": f"mqtt://127.0.0.1:{broker}", "topic_template": "site/{device_id}/alarm", "qos": qos}
    async with Subscriber(broker, "site/+/alarm") as live:
        assert (await _send(config)).delivered
        await live.wait()
    assert [(t, b["alert"]["title"], r) for t, b, r, _p in live.got] == [("site/freezer-7/alarm", "too warm", False)]
    async with Subscriber(broker, "site/#") as late:
        await late.wait(timeout=0.5)
    assert late.got == []


async def test_credentials_are_used_and_a_refused_connack_is_not_retried(auth_broker: int) -> None:
    config = {"url": f"mqtt://127.0.0.1:{auth_broker}", "topic_template": "alerts/x", "username": USER[0]}
    wrong = await _send(config, {"password": "not-the-password"})
    assert not wrong.delivered and not wrong.retryable and "refused" in (wrong.error or "")
    anonymous = await _send({k: v for k, v in config.items() if k != "username"})
    assert not anonymous.delivered and not anonymous.retryable
    assert (await _send(config, {"password": USER[1]})).delivered


async def test_mqtts_trusts_the_configured_ca_only(tls_broker: tuple[int, str]) -> None:
    port, pem = tls_broker
    config = {"url": f"mqtts://127.0.0.1:{port}", "topic_template": "alerts/{device_id}", "retain": True}
    untrusted = await _send(config)
    assert not untrusted.delivered and not untrusted.retryable and "certificate" in (untrusted.error or "")
    assert (await _send({**config, "ca_pem": pem})).delivered
    async with Subscriber(port, "alerts/#", ssl=ssl.create_default_context(cadata=pem)) as late:
        await late.wait()
    assert [(t, r) for t, _b, r, _p in late.got] == [("alerts/freezer-7", True)]


async def test_unreachable_broker_is_retried_and_an_empty_topic_is_not(broker: int) -> None:
    gone = await _send({"url": f"mqtt://127.0.0.1:{free_port()}", "topic_template": "a/b"})
    assert not gone.delivered and gone.retryable
    empty = await _send({"url": f"mqtt://127.0.0.1:{broker}", "topic_template": "{device_id}"}, msg=_message(None))
    assert not empty.delivered and not empty.retryable and "empty" in (empty.error or "")


@pytest.mark.parametrize(("config", "secrets_", "field"), [
    ({"url": "http://127.0.0.1:1883", "topic_template": "a"}, {}, "config.url"),
    ({"url": "mqtt://u:p@127.0.0.1:1883", "topic_template": "a"}, {}, "config.url"),
    ({"url": "mqtt://127.0.0.1:1883/alerts", "topic_template": "a"}, {}, "config.url"),
    ({"url": "mqtt://127.0.0.1:1883"}, {}, "config.topic_template"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "alerts/#"}, {}, "config.topic_template"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "alerts/+/x"}, {}, "config.topic_template"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "$SYS/x"}, {}, "config.topic_template"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "a/{nope}"}, {}, "config.topic_template"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "a", "qos": 3}, {}, "config.qos"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "a", "qos": True}, {}, "config.qos"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "a", "retain": "yes"}, {}, "config.retain"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "a", "client_id_prefix": "bad id"}, {},
     "config.client_id_prefix"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "a"}, {"password": "p"}, "config.username"),
    ({"url": "mqtt://127.0.0.1:1883", "topic_template": "a", "ca_pem": "x"}, {}, "config.url"),
    ({"url": "mqtts://127.0.0.1:8883", "topic_template": "a", "ca_pem": "x"}, {}, "config.ca_pem"),
    ({"url": "mqtt://169.254.169.254:1883", "topic_template": "a"}, {}, "config.url"),
    ({"url": "mqtt://10.1.2.3:1883", "topic_template": "a"}, {}, "config.url"),
])
async def test_bad_mqtt_settings_name_the_field(engine: AsyncEngine, settings: Settings, config: dict[str, Any],
                                                secrets_: dict[str, str], field: str) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        with pytest.raises(ValidationError) as caught:
            await create_channel(conn, tenant.tenant_id, "bad", "MQTT", config, secrets_, settings=settings)
    assert caught.value.field == field
