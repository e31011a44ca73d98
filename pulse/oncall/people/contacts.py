"""A person's contact methods: one way each to reach them, credentials sealed at rest and shown as the mask.

A contact method is an email address, a signed webhook, a Slack or Teams incoming webhook or a PagerDuty routing
key; its credentials are encrypted with the contact id bound in.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import parse_uuid
from pulse.crypto import encrypt_secret
from pulse.errors import NotFound, ValidationError
from pulse.notify.contacts import CONTACT_KINDS, check_contact
from pulse.notify.service import MASK, keep_masked_secrets, open_secrets
from pulse.oncall.people.users import require_user_id
from pulse.settings import Settings

MAX_LABEL = 100
DERIVED_ADDRESS_KINDS = ("SLACK", "TEAMS", "PAGERDUTY")
"""Kinds whose shown address is derived from their secrets; an address sent for them must match it."""


class ContactMethod(msgspec.Struct, kw_only=True):
    """One way to reach a person; every secret value is shown as the mask."""

    contact_id: str
    user_id: str
    kind: str
    label: str | None
    address: str
    secrets: dict[str, str]
    is_enabled: bool
    created_at: datetime
    updated_at: datetime


def _check_label(value: Any) -> str | None:
    if value is None:
        return None
    label = value.strip() if isinstance(value, str) else None
    if label is None or len(label) > MAX_LABEL or any(ord(ch) < 32 for ch in label):
        raise ValidationError(f"must be at most {MAX_LABEL} characters on one line", field="label")
    return label or None


_CONTACT = ("contact_id::text, user_id::text, kind, label, address, secrets_encrypted, is_enabled, created_at, "
            "updated_at")


def _contact(row: Any, key: bytes) -> ContactMethod:
    names = open_secrets(key, row.contact_id, row.secrets_encrypted)
    return ContactMethod(contact_id=row.contact_id, user_id=row.user_id, kind=row.kind, label=row.label,
                         address=row.address, secrets={k: MASK for k in sorted(names)}, is_enabled=row.is_enabled,
                         created_at=row.created_at, updated_at=row.updated_at)


async def list_contact_methods(conn: AsyncConnection, tenant_id: str, user_id: str, *,
                               settings: Settings) -> list[ContactMethod]:
    """A user's contact methods, oldest first, secrets masked."""
    user_id = await require_user_id(conn, tenant_id, user_id)
    rows = (await conn.execute(text(
        f"SELECT {_CONTACT} FROM user_contact_methods WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) "
        "ORDER BY created_at, contact_id"), {"t": tenant_id, "u": user_id})).all()
    return [_contact(r, settings.secret_key_bytes) for r in rows]


async def require_contact_method(conn: AsyncConnection, tenant_id: str, user_id: str, contact_id: str, *,
                                 settings: Settings) -> ContactMethod:
    """One of the user's contact methods, secrets masked; another user's is not found."""
    row = (await conn.execute(text(
        f"SELECT {_CONTACT} FROM user_contact_methods WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) "
        "AND contact_id = CAST(:c AS uuid)"),
        {"t": tenant_id, "u": parse_uuid(user_id, "user_id"), "c": parse_uuid(contact_id, "contact_id")})).first()
    if row is None:
        raise NotFound(f"contact method {contact_id} not found", details={"field": "contact_id"})
    return _contact(row, settings.secret_key_bytes)


def _checked_address(kind: str, address: str | None, secrets: dict[str, str], settings: Settings) -> str:
    """Validate with the contact rules (SSRF checks included); the address to store and show."""
    if address is not None and not isinstance(address, str):
        raise ValidationError("must be a string", field="address")
    given = address.strip() if isinstance(address, str) else None
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        raise ValidationError("must be an object of string values", field="secrets")
    shown = check_contact(kind, None if kind in DERIVED_ADDRESS_KINDS else given, secrets, settings)
    if kind in DERIVED_ADDRESS_KINDS and given and given != shown:
        raise ValidationError(f"a {kind} contact method's address is derived from its secrets ({shown!r}); "
                              "leave it out", field="address")
    return shown


async def create_contact_method(conn: AsyncConnection, tenant_id: str, user_id: str, *, kind: str,
                                address: str | None = None, secrets: dict[str, str] | None = None,
                                label: str | None = None, is_enabled: bool = True, settings: Settings,
                                now: datetime) -> str:
    """Validate (SSRF checks included), seal the secrets with the new contact id bound in, and store."""
    user_id = await require_user_id(conn, tenant_id, user_id)
    if not isinstance(kind, str) or kind not in CONTACT_KINDS:
        raise ValidationError(f"must be one of {', '.join(CONTACT_KINDS)}", field="kind")
    secrets = dict(secrets or {})
    label = _check_label(label)
    shown = _checked_address(kind, address, secrets, settings)
    contact_id = str(uuid.uuid4())
    sealed = encrypt_secret(settings.secret_key_bytes, json.dumps(secrets), context=contact_id)
    await conn.execute(text(
        "INSERT INTO user_contact_methods (contact_id, tenant_id, user_id, kind, label, address, secrets_encrypted, "
        "  is_enabled, created_at, updated_at) "
        "VALUES (CAST(:c AS uuid), :t, CAST(:u AS uuid), :k, :l, :a, :s, :on, :now, :now)"),
        {"c": contact_id, "t": tenant_id, "u": user_id, "k": kind, "l": label, "a": shown, "s": sealed,
         "on": is_enabled, "now": now})
    return contact_id


async def _cancel_pages(conn: AsyncConnection, tenant_id: str, contact_id: str, statuses: tuple[str, ...],
                        reason: str, now: datetime) -> None:
    await conn.execute(text(
        "UPDATE notification_jobs SET status = 'CANCELLED', lease_owner = NULL, lease_expires_at = NULL, "
        "  last_error = :why, updated_at = :now "
        "WHERE tenant_id = :t AND contact_id = CAST(:c AS uuid) AND status = ANY(:st)"),
        {"t": tenant_id, "c": contact_id, "st": list(statuses), "why": reason, "now": now})


async def update_contact_method(conn: AsyncConnection, tenant_id: str, user_id: str, contact_id: str, *,
                                settings: Settings, now: datetime, address: str | UnsetType | None = UNSET,
                                secrets: dict[str, str] | UnsetType = UNSET,
                                label: str | UnsetType | None = UNSET,
                                is_enabled: bool | UnsetType = UNSET) -> None:
    """Change what is given; the result is validated as a whole again (SSRF checks included).

    `secrets`, when given, is the full set: a value equal to the mask keeps the stored secret of that name, any
    other value replaces it (re-sealed), a name left out is removed. The kind cannot change. Disabling a contact
    method cancels the pages to it not yet sent.
    """
    user_id, contact_id = parse_uuid(user_id, "user_id"), parse_uuid(contact_id, "contact_id")
    row = (await conn.execute(text(
        f"SELECT {_CONTACT} FROM user_contact_methods WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) "
        "AND contact_id = CAST(:c AS uuid) FOR NO KEY UPDATE"),
        {"t": tenant_id, "u": user_id, "c": contact_id})).first()
    if row is None:
        raise NotFound(f"contact method {contact_id} not found", details={"field": "contact_id"})
    stored = open_secrets(settings.secret_key_bytes, row.contact_id, row.secrets_encrypted)
    merged = stored
    if not isinstance(secrets, UnsetType):
        if not isinstance(secrets, dict):
            raise ValidationError("must be an object of string values", field="secrets")
        merged = keep_masked_secrets(stored, secrets, "contact method")
    new_address = row.address if isinstance(address, UnsetType) else address
    if row.kind in DERIVED_ADDRESS_KINDS and isinstance(address, UnsetType):
        new_address = None
    shown = _checked_address(row.kind, new_address, merged, settings)
    new_label = row.label if isinstance(label, UnsetType) else _check_label(label)
    if not isinstance(is_enabled, UnsetType) and not isinstance(is_enabled, bool):
        raise ValidationError("must be true or false", field="is_enabled")
    sealed = row.secrets_encrypted
    if merged != stored or not sealed:
        sealed = encrypt_secret(settings.secret_key_bytes, json.dumps(merged), context=row.contact_id)
    await conn.execute(text(
        "UPDATE user_contact_methods SET address = :a, label = :l, secrets_encrypted = :s, "
        "  is_enabled = COALESCE(:on, is_enabled), updated_at = :now WHERE contact_id = CAST(:c AS uuid)"),
        {"a": shown, "l": new_label, "s": sealed, "now": now, "c": contact_id,
         "on": None if isinstance(is_enabled, UnsetType) else is_enabled})
    if is_enabled is False and row.is_enabled:
        await _cancel_pages(conn, tenant_id, contact_id, ("PENDING",), "the contact method was disabled", now)


async def delete_contact_method(conn: AsyncConnection, tenant_id: str, user_id: str, contact_id: str, *,
                                now: datetime) -> None:
    """Delete a contact method and the notification rules that use it; pages to it not yet sent are cancelled,
    the delivery log keeps the ones that were."""
    user_id, contact_id = parse_uuid(user_id, "user_id"), parse_uuid(contact_id, "contact_id")
    found = (await conn.execute(text(
        "SELECT 1 FROM user_contact_methods WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) "
        "AND contact_id = CAST(:c AS uuid) FOR UPDATE"), {"t": tenant_id, "u": user_id, "c": contact_id})).first()
    if not found:
        raise NotFound(f"contact method {contact_id} not found", details={"field": "contact_id"})
    await _cancel_pages(conn, tenant_id, contact_id, ("PENDING", "IN_PROGRESS"), "the contact method was deleted",
                        now)
    await conn.execute(text("DELETE FROM user_contact_methods WHERE tenant_id = :t AND contact_id = CAST(:c AS uuid)"),
                       {"t": tenant_id, "c": contact_id})
