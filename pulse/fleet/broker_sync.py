"""Broker sync: apply pending device-credential changes to the broker's accounts after they committed.

A credential change marks the device's MQTT_PASSWORD rows pending (`broker_synced_at IS NULL`; a new
password is kept encrypted until applied). The sync reads a device's rows, changes the broker with no
transaction open, then marks exactly the rows it saw as applied and erases the stored password. Broker
operations are idempotent, so a repeated or concurrent sync does no harm.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import Clock, SystemClock
from pulse.crypto import decrypt_secret
from pulse.db import connect_raw, system_tx
from pulse.fleet.broker_accounts import BrokerAccountError, BrokerAdmin
from pulse.fleet.service import BROKER_SYNC_CHANNEL
from pulse.runtime import TRANSIENT_DB_ERRORS, wait_or_stop

log = logging.getLogger("pulse.broker")

POLL_S = 5.0


async def pending_devices(engine: AsyncEngine, limit: int = 100) -> list[tuple[str, str]]:
    async with system_tx(engine) as conn:
        rows = await conn.execute(text(
            "SELECT DISTINCT tenant_id, device_id FROM device_credentials "
            "WHERE kind = 'MQTT_PASSWORD' AND broker_synced_at IS NULL LIMIT :limit"), {"limit": limit})
        return [(r[0], r[1]) for r in rows]


async def sync_device(engine: AsyncEngine, admin: BrokerAdmin, secret_key: bytes, tenant_id: str, device_id: str,
                      *, now: datetime) -> str:
    """Bring the broker in line with the device's credentials; returns what was done."""
    async with system_tx(engine) as conn:
        creds = (await conn.execute(text(
            "SELECT c.credential_id, c.mqtt_username, c.revoked_at, c.broker_secret_encrypted, c.broker_synced_at, "
            "  d.status AS device_status "
            "FROM device_credentials c JOIN devices d USING (tenant_id, device_id) "
            "WHERE c.tenant_id = :t AND c.device_id = :d AND c.kind = 'MQTT_PASSWORD' ORDER BY c.created_at DESC"),
            {"t": tenant_id, "d": device_id})).all()
    pending = [c for c in creds if c.broker_synced_at is None]
    if not pending:
        return "nothing"
    active = next((c for c in creds if c.revoked_at is None and c.device_status == "ACTIVE"), None)
    password = _password(secret_key, active) if active is not None and active.broker_synced_at is None else None
    if password is not None and active is not None:
        await admin.ensure_device(tenant_id, device_id, active.mqtt_username, password)
        action = "applied"
    elif active is not None and active.broker_synced_at is None:
        # Fail closed: the old password is revoked in Pulse, and the new one cannot be given to the broker.
        log.error("credential cannot be given to the broker (no readable password); device cut off until its "
                  "credentials are rotated", extra={"tenant_id": tenant_id, "device_id": device_id})
        await admin.revoke_device(active.mqtt_username)
        action = "unusable"
    elif active is None:
        await admin.revoke_device(creds[0].mqtt_username)
        action = "revoked"
    else:
        action = "retired"  # only older, revoked passwords pending: the newest one already replaced them
    async with system_tx(engine) as conn:
        for c in pending:
            await conn.execute(text(
                "UPDATE device_credentials SET broker_synced_at = :now, broker_secret_encrypted = NULL "
                "WHERE credential_id = :id AND broker_synced_at IS NULL AND revoked_at IS NOT DISTINCT FROM :r"),
                {"now": now, "id": c.credential_id, "r": c.revoked_at})
    return action


def _password(secret_key: bytes, cred: Any) -> str | None:
    if not cred.broker_secret_encrypted:
        return None
    try:
        return decrypt_secret(secret_key, cred.broker_secret_encrypted, context=cred.mqtt_username)
    except (ValueError, InvalidTag):  # sealed under another PULSE_SECRET_KEY, or damaged
        return None


async def sync_pending(engine: AsyncEngine, admin: BrokerAdmin, secret_key: bytes, *, now: datetime) -> int:
    """Apply every pending change; returns how many devices were handled.

    Each device is synced under a session advisory lock held on a connection with no transaction open, so
    two syncers never interleave one device's changes (an older password cannot win over a newer one).
    """
    devices = await pending_devices(engine)
    handled = 0
    async with engine.connect() as lock_conn:
        for tenant_id, device_id in devices:
            key = {"k": f"pulse-broker-sync:{tenant_id}/{device_id}"}
            got = (await lock_conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), key)).scalar()
            await lock_conn.commit()
            if not got:
                continue  # another syncer is on this device now
            try:
                action = await sync_device(engine, admin, secret_key, tenant_id, device_id, now=now)
                handled += 1
                log.info("broker account synced",
                         extra={"tenant_id": tenant_id, "device_id": device_id, "action": action})
            except BrokerAccountError as exc:  # this device stays pending; the others go on
                log.warning("broker refused a device's change; will retry",
                            extra={"tenant_id": tenant_id, "device_id": device_id, "error": exc.message})
            finally:
                await lock_conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
                await lock_conn.commit()
    return handled


async def run_broker_sync(engine: AsyncEngine, database_url: str, admin_url: str, secret_key: bytes,
                          stop: asyncio.Event, *, clock: Clock | None = None) -> None:
    """Keep the broker in line until `stop`: at once on a credential change (NOTIFY), else every few seconds."""
    clock = clock or SystemClock()
    wake = asyncio.Event()
    delay = 0.5
    while not stop.is_set():
        listener = None
        try:
            listener = await connect_raw(database_url, "pulse-broker-sync")
            await listener.add_listener(BROKER_SYNC_CHANNEL, lambda *_: wake.set())
            async with BrokerAdmin(admin_url) as admin:
                delay = 0.5
                while not stop.is_set() and not listener.is_closed():
                    await sync_pending(engine, admin, secret_key, now=clock.now())
                    await wait_or_stop(stop, wake, POLL_S)
        except (BrokerAccountError, *TRANSIENT_DB_ERRORS) as exc:  # type: ignore[misc]
            log.warning("broker sync failed; retrying", extra={"error": str(exc)[:300], "retry_in_s": delay})
            await wait_or_stop(stop, None, delay)
            delay = min(delay * 2, 30.0)
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()
