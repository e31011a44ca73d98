"""Credential changes reach the broker: activation creates the account, rotation and revocation retire it."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.broker_accounts import BrokerAdmin
from pulse.fleet.broker_sync import sync_pending
from pulse.fleet.service import activate_device, issue_activation_code, issue_credentials, register_device
from pulse.fleet.service import revoke_device as revoke_in_registry
from pulse.notify import worker as deliver
from pulse.settings import Settings
from tests.conftest import make_tenant
from tests.fleet.conftest import admin_url

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None or shutil.which("mosquitto_ctrl") is None,
                                reason="mosquitto and mosquitto_ctrl are installed by `make test`")


async def _connects(port: int, username: str, password: str) -> gmqtt.Client | None:
    client = gmqtt.Client(username)  # a device account connects with its username as client id
    client.set_config({"reconnect_retries": 0})
    client.set_auth_credentials(username, password)
    try:
        await asyncio.wait_for(client.connect("127.0.0.1", port, version=MQTTv50), 5)
    except (gmqtt.mqtt.handler.MQTTConnectError, ConnectionError, TimeoutError):
        return None
    return client


async def _activated(engine: AsyncEngine, settings: Settings, tenant_id: str, device_id: str) -> tuple[str, str]:
    now = datetime.now(UTC)
    async with system_tx(engine) as conn:
        await register_device(conn, tenant_id, device_id, now=now)
        code, _ = await issue_activation_code(conn, tenant_id, device_id, now=now)
        creds = await activate_device(conn, code, now=now, secret_key=settings.secret_key_bytes)
    return creds.mqtt_username, creds.mqtt_password


async def test_activation_rotation_and_revocation_reach_the_broker(engine: AsyncEngine, settings: Settings,
                                                                   broker: int) -> None:
    tenant = await make_tenant(engine)
    username, password = await _activated(engine, settings, tenant.tenant_id, "pump-1")
    assert await _connects(broker, username, password) is None  # not at the broker until synced
    async with BrokerAdmin(admin_url(broker), client_id=f"sync-{time.monotonic_ns()}") as admin:
        await sync_pending(engine, admin, settings.secret_key_bytes, now=datetime.now(UTC))
        client = await _connects(broker, username, password)
        assert client is not None
        await client.disconnect()
        async with system_tx(engine) as conn:
            left = (await conn.execute(text(
                "SELECT count(*) FROM device_credentials WHERE tenant_id = :t AND broker_secret_encrypted IS NOT NULL"),
                {"t": tenant.tenant_id})).scalar_one()
        assert left == 0, "the stored password is erased once the broker has it"

        async with system_tx(engine) as conn:
            rotated = await issue_credentials(conn, tenant.tenant_id, "pump-1", now=datetime.now(UTC),
                                              secret_key=settings.secret_key_bytes)
        await sync_pending(engine, admin, settings.secret_key_bytes, now=datetime.now(UTC))
        assert await _connects(broker, username, password) is None
        client = await _connects(broker, username, rotated.mqtt_password)
        assert client is not None
        await client.disconnect()

        async with system_tx(engine) as conn:
            await revoke_in_registry(conn, tenant.tenant_id, "pump-1", now=datetime.now(UTC))
        await sync_pending(engine, admin, settings.secret_key_bytes, now=datetime.now(UTC))
        assert await _connects(broker, username, rotated.mqtt_password) is None
        assert await sync_pending(engine, admin, settings.secret_key_bytes, now=datetime.now(UTC)) == 0


async def test_pulse_deliver_cuts_off_a_revoked_device_within_two_seconds(engine: AsyncEngine, settings: Settings,
                                                                          broker: int) -> None:
    tenant = await make_tenant(engine)
    username, password = await _activated(engine, settings, tenant.tenant_id, "pump-2")
    stop = asyncio.Event()
    task = asyncio.create_task(deliver.run(settings.replace(mqtt_admin_url=admin_url(broker)), stop))
    try:
        client = None
        for _ in range(50):  # the account appears once deliver has synced the activation
            client = await _connects(broker, username, password)
            if client is not None:
                break
            await asyncio.sleep(0.1)
        assert client is not None, "pulse deliver did not create the device's broker account"
        gone = asyncio.Event()
        client.on_disconnect = lambda *_: gone.set()
        started = time.monotonic()
        async with system_tx(engine) as conn:
            await revoke_in_registry(conn, tenant.tenant_id, "pump-2", now=datetime.now(UTC))
        await asyncio.wait_for(gone.wait(), 2.0)
        assert time.monotonic() - started < 2.0
        assert await _connects(broker, username, password) is None
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


async def test_an_unreadable_password_fails_closed_and_does_not_stop_other_devices(
        engine: AsyncEngine, settings: Settings, broker: int) -> None:
    tenant = await make_tenant(engine)
    username, password = await _activated(engine, settings, tenant.tenant_id, "pump-3")
    async with BrokerAdmin(admin_url(broker)) as admin:
        await sync_pending(engine, admin, settings.secret_key_bytes, now=datetime.now(UTC))
        client = await _connects(broker, username, password)
        assert client is not None
        await client.disconnect()
        async with system_tx(engine) as conn:  # rotated by a process that had another PULSE_SECRET_KEY
            await issue_credentials(conn, tenant.tenant_id, "pump-3", now=datetime.now(UTC), secret_key=b"k" * 32)
        other_user, other_password = await _activated(engine, settings, tenant.tenant_id, "pump-4")
        await sync_pending(engine, admin, settings.secret_key_bytes, now=datetime.now(UTC))
        assert await _connects(broker, username, password) is None, "the revoked password must stop working"
        other = await _connects(broker, other_user, other_password)
        assert other is not None
        await other.disconnect()
