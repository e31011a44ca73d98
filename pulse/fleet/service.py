"""Fleet registry rules: tenants, device registration within subscription limits, activation and credentials."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.crypto import encrypt_secret, hash_token, new_token
from pulse.errors import Conflict, LimitExceeded, NotFound, ValidationError
from pulse.fleet.schemas import DeviceCredentials

TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O/1/I: codes are typed by people
DEVICE_CHANGED_CHANNEL = "pulse_device_changed"
BROKER_SYNC_CHANNEL = "pulse_broker_sync"


def check_tenant_id(tenant_id: str, field: str = "tenant_id") -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID_RE.match(tenant_id):
        raise ValidationError("must be 2-63 lowercase letters, digits or '-', starting with a letter or digit",
                              field=field)
    return tenant_id


def check_device_id(device_id: str, field: str = "device_id") -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise ValidationError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", field=field)
    return device_id


def mqtt_username(tenant_id: str, device_id: str) -> str:
    """A device's broker username; '/' appears in neither id, so the pair is unambiguous."""
    return f"{tenant_id}/{device_id}"


def topic_prefix(tenant_id: str, device_id: str) -> str:
    return f"tenant/{tenant_id}/device/{device_id}/"


async def create_tenant(conn: AsyncConnection, tenant_id: str, name: str, *, device_limit: int = 1000,
                        timezone: str = "UTC", subscription_kind: str = "MAIN", term_days: int = 365,
                        grace_days: int = 14, now: datetime) -> str:
    """Create a tenant with its first subscription; returns the subscription id."""
    check_tenant_id(tenant_id)
    exists = (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t"), {"t": tenant_id})).first()
    if exists:
        raise Conflict(f"tenant {tenant_id} already exists", details={"field": "tenant_id"})
    await conn.execute(text("INSERT INTO tenants (tenant_id, name, timezone) VALUES (:t, :n, :tz)"),
                       {"t": tenant_id, "n": name, "tz": timezone})
    status = "TRIAL" if subscription_kind == "TRIAL" else "ACTIVE"
    sub_id = (await conn.execute(text(
        "INSERT INTO subscriptions (tenant_id, kind, status, device_limit, term_start_at, term_end_at, grace_days) "
        "VALUES (:t, :k, :s, :l, :start, :end, :g) RETURNING subscription_id"),
        {"t": tenant_id, "k": subscription_kind, "s": status, "l": device_limit, "start": now,
         "end": now + timedelta(days=term_days), "g": grace_days})).scalar_one()
    return str(sub_id)


async def _pick_subscription(conn: AsyncConnection, tenant_id: str) -> tuple[str, int, int, str]:
    """The tenant's usable subscription with room, as (id, limit, used, kind); raises when there is none."""
    rows = (await conn.execute(text(
        "SELECT s.subscription_id, s.kind, s.status, s.device_limit, "
        "  (SELECT count(*) FROM devices d WHERE d.subscription_id = s.subscription_id "
        "     AND d.status <> 'DECOMMISSIONED') AS used "
        "FROM subscriptions s WHERE s.tenant_id = :t "
        "ORDER BY (s.kind = 'MAIN') DESC, s.created_at"), {"t": tenant_id})).all()
    usable = [r for r in rows if r.status in ("TRIAL", "ACTIVE", "GRACE")]
    if not usable:
        state = ", ".join(f"{r.kind} {r.status}" for r in rows) or "none"
        raise LimitExceeded(f"tenant {tenant_id} has no active subscription (subscriptions: {state})")
    for r in usable:
        if r.used < r.device_limit:
            return str(r.subscription_id), r.device_limit, r.used, r.kind
    first = usable[0]
    raise LimitExceeded(
        f"{first.kind} subscription {first.subscription_id} allows {first.device_limit} devices and "
        f"{first.used} are registered", details={"subscription_id": str(first.subscription_id),
                                                  "device_limit": first.device_limit})


async def register_device(conn: AsyncConnection, tenant_id: str, device_id: str, *, name: str | None = None,
                          device_type: str | None = None, site_id: str | None = None, tags: Iterable[str] = (),
                          attributes: dict[str, Any] | None = None, now: datetime) -> None:
    """Add a device to the registry under a subscription with room, with an UNKNOWN liveness state."""
    check_tenant_id(tenant_id)
    check_device_id(device_id)
    tag_list = [str(t) for t in tags]
    if any(not t or len(t) > 64 for t in tag_list):
        raise ValidationError("each tag must be 1-64 characters", field="tags")
    tenant = (await conn.execute(text("SELECT status FROM tenants WHERE tenant_id = :t"), {"t": tenant_id})).first()
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    if site_id is not None:
        site = (await conn.execute(text("SELECT 1 FROM sites WHERE tenant_id = :t AND site_id = :s"),
                                   {"t": tenant_id, "s": site_id})).first()
        if site is None:
            raise ValidationError(f"site {site_id} does not exist", field="site_id")
    # Serialise registrations per tenant so two concurrent requests cannot both take the last slot.
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('pulse-devices:' || :t))"), {"t": tenant_id})
    existing = (await conn.execute(text("SELECT 1 FROM devices WHERE tenant_id = :t AND device_id = :d"),
                                   {"t": tenant_id, "d": device_id})).first()
    if existing:
        raise Conflict(f"device {device_id} already exists", details={"field": "device_id"})
    subscription_id, _, _, _ = await _pick_subscription(conn, tenant_id)
    await conn.execute(text(
        "INSERT INTO devices (tenant_id, device_id, site_id, subscription_id, name, device_type, tags, attributes,"
        " created_at, updated_at) "
        "VALUES (:t, :d, :site, :sub, :name, :dtype, :tags, CAST(:attrs AS jsonb), :now, :now)"),
        {"t": tenant_id, "d": device_id, "site": site_id, "sub": subscription_id, "name": name or device_id,
         "dtype": device_type, "tags": tag_list, "attrs": msgspec.json.encode(attributes or {}).decode(), "now": now})
    await conn.execute(text("INSERT INTO device_state (tenant_id, device_id, updated_at) VALUES (:t, :d, :now)"),
                       {"t": tenant_id, "d": device_id, "now": now})


def _new_activation_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
    return f"ACT-{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def _normalise_code(code: str) -> str:
    return code.strip().upper()


async def issue_activation_code(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime,
                                ttl_s: int = 7 * 86400) -> tuple[str, datetime]:
    """A one-time code a device (or installer) exchanges for credentials; only its hash is stored."""
    device = (await conn.execute(text("SELECT status FROM devices WHERE tenant_id = :t AND device_id = :d"),
                                 {"t": tenant_id, "d": device_id})).first()
    if device is None:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    if device.status != "ACTIVE":
        raise Conflict(f"device {device_id} is {device.status}", details={"field": "device_id"})
    code = _new_activation_code()
    expires_at = now + timedelta(seconds=ttl_s)
    await conn.execute(text(
        "INSERT INTO device_activation_codes (code_hash, tenant_id, device_id, created_at, expires_at) "
        "VALUES (:h, :t, :d, :now, :exp)"),
        {"h": hash_token(_normalise_code(code)), "t": tenant_id, "d": device_id, "now": now, "exp": expires_at})
    return code, expires_at


async def activate_device(conn: AsyncConnection, code: str, *, now: datetime,
                          secret_key: bytes | None = None) -> DeviceCredentials:
    """Exchange an activation code for a provision token and broker credentials (once)."""
    if not isinstance(code, str) or not code.strip():
        raise ValidationError("activation_code is required", field="activation_code")
    row = (await conn.execute(text(
        "SELECT tenant_id, device_id, expires_at, used_at FROM device_activation_codes WHERE code_hash = :h "
        "FOR UPDATE"), {"h": hash_token(_normalise_code(code))})).first()
    if row is None:
        raise NotFound("activation code not found", details={"field": "activation_code"})
    if row.used_at is not None:
        raise ValidationError("activation code was already used", field="activation_code")
    if row.expires_at <= now:
        raise ValidationError("activation code has expired", field="activation_code")
    await conn.execute(text("UPDATE device_activation_codes SET used_at = :now WHERE code_hash = :h"),
                       {"now": now, "h": hash_token(_normalise_code(code))})
    return await issue_credentials(conn, row.tenant_id, row.device_id, now=now, secret_key=secret_key)


async def issue_credentials(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime,
                            secret_key: bytes | None = None) -> DeviceCredentials:
    """Revoke a device's current credentials and issue new ones (rotation); tells ingest to drop its cache.

    With `secret_key`, the new MQTT password is kept encrypted until the broker sync has applied it
    (pulse.fleet.broker_sync); it is erased once the broker confirmed.
    """
    device = (await conn.execute(text("SELECT status FROM devices WHERE tenant_id = :t AND device_id = :d"),
                                 {"t": tenant_id, "d": device_id})).first()
    if device is None:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    if device.status != "ACTIVE":
        raise Conflict(f"device {device_id} is {device.status}; credentials are issued to ACTIVE devices only")
    await _revoke_credentials(conn, tenant_id, device_id, now)
    token = new_token("pt")
    password = secrets.token_urlsafe(24)
    username = mqtt_username(tenant_id, device_id)
    await conn.execute(text(
        "INSERT INTO device_credentials (tenant_id, device_id, kind, secret_hash, hint, mqtt_username, created_at, "
        "  broker_secret_encrypted, broker_synced_at) "
        "VALUES (:t, :d, 'PROVISION_TOKEN', :th, :thint, NULL, :now, NULL, :now), "
        "       (:t, :d, 'MQTT_PASSWORD', :ph, :phint, :u, :now, :sealed, NULL)"),
        {"t": tenant_id, "d": device_id, "th": hash_token(token), "thint": token[:7],
         "ph": hash_token(password), "phint": password[:3], "u": username, "now": now,
         "sealed": encrypt_secret(secret_key, password, context=username) if secret_key else None})
    await notify_device_changed(conn, tenant_id, device_id)
    return DeviceCredentials(tenant_id=tenant_id, device_id=device_id, provision_token=token,
                             mqtt_username=username, mqtt_password=password, mqtt_client_id=username,
                             topic_prefix=topic_prefix(tenant_id, device_id))


async def revoke_device(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime) -> None:
    """Cut a device off: status REVOKED, every credential revoked, ingest caches told at commit."""
    result = await conn.execute(text("UPDATE devices SET status = 'REVOKED', updated_at = :now "
                                     "WHERE tenant_id = :t AND device_id = :d"),
                                {"t": tenant_id, "d": device_id, "now": now})
    if result.rowcount == 0:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    await _revoke_credentials(conn, tenant_id, device_id, now)
    await notify_device_changed(conn, tenant_id, device_id)


async def _revoke_credentials(conn: AsyncConnection, tenant_id: str, device_id: str, now: datetime) -> None:
    """Revoke every live credential; revoked broker accounts become pending for the broker sync."""
    await conn.execute(text(
        "UPDATE device_credentials SET revoked_at = :now, broker_secret_encrypted = NULL, "
        "  broker_synced_at = CASE WHEN kind = 'MQTT_PASSWORD' THEN NULL ELSE broker_synced_at END "
        "WHERE tenant_id = :t AND device_id = :d AND revoked_at IS NULL"),
        {"t": tenant_id, "d": device_id, "now": now})
    await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": BROKER_SYNC_CHANNEL, "p": f"{tenant_id}/{device_id}"})


async def notify_device_changed(conn: AsyncConnection, tenant_id: str, device_id: str) -> None:
    """Delivered at commit to every ingest instance, which drops the device from its auth cache."""
    await conn.execute(text("SELECT pg_notify(:c, :p)"),
                       {"c": DEVICE_CHANGED_CHANNEL, "p": f"{tenant_id}/{device_id}"})
