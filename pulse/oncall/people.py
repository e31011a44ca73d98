"""A tenant's people: users, their contact methods and personal notification rules, and who is paged how.

A contact method is one way to reach one person (an email address, a signed webhook, a Slack or Teams incoming
webhook, a PagerDuty routing key); its credentials are encrypted at rest with the contact id bound in, and every
answer shows them as the mask. A personal notification rule says "when I am paged for an alert of at least this
severity, use this contact method after this delay". `get_paging_plan` turns them into the steps a page takes.

Async functions over a tenant-scoped connection; the caller owns the transaction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.crypto import encrypt_secret
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.fleet.users import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    OPERATOR_ROLES,
    TENANT_ROLES,
    _check_email,
    _check_roles,
    hash_password,
)
from pulse.notify.contacts import CONTACT_KINDS, check_contact
from pulse.notify.service import MASK, open_secrets
from pulse.settings import Settings

MAX_DISPLAY_NAME = 200
MAX_LABEL = 100
MAX_DELAY_MINUTES = 1440
DERIVED_ADDRESS_KINDS = ("SLACK", "TEAMS", "PAGERDUTY")
"""Kinds whose shown address is derived from their secrets; an address sent for them must match it."""


class User(msgspec.Struct, kw_only=True):
    """A person of the tenant as the API shows them; never the password hash."""

    user_id: str
    email: str
    display_name: str
    roles: list[str]
    timezone: str
    is_active: bool
    has_password: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


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


class NotificationRule(msgspec.Struct, kw_only=True):
    """"When I am paged for an alert of at least `min_severity`, use this contact method after `delay_minutes`."""

    notification_rule_id: str
    user_id: str
    contact_id: str
    kind: str
    delay_minutes: int
    min_severity: int
    created_at: datetime


class UserDetail(User, kw_only=True):
    """A user with their contact methods and notification rules."""

    contact_methods: list[ContactMethod]
    notification_rules: list[NotificationRule]


class PagingStep(msgspec.Struct, frozen=True, kw_only=True):
    """Send a page to this contact method `delay_minutes` after the person is paged.

    `notification_rule_id` is the rule that asked for it, None when the person has no rules and every enabled
    contact method is used at once.
    """

    contact_id: str
    kind: str
    delay_minutes: int
    notification_rule_id: str | None


# --- checks ----------------------------------------------------------------------------------------------------------

def _uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise ValidationError("must be a UUID", field=field) from None


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    """IANA zone names; the host's `localtime` link and tzdata's placeholder `Factory` are not zones."""
    return (frozenset(available_timezones()) | {"UTC"}) - {"localtime", "posixrules", "Factory"}


def check_timezone(value: Any) -> str:
    """An IANA time zone name such as Europe/Berlin; 400 naming `timezone` otherwise."""
    if not isinstance(value, str) or value not in _zones():
        raise ValidationError("must be an IANA time zone name such as Europe/Berlin or UTC", field="timezone")
    return value


def _check_display_name(value: Any) -> str:
    name = value.strip() if isinstance(value, str) else None
    if name is None or len(name) > MAX_DISPLAY_NAME or any(ord(ch) < 32 for ch in name):
        raise ValidationError(f"must be at most {MAX_DISPLAY_NAME} characters on one line", field="display_name")
    return name


def _check_tenant_roles(roles: Iterable[str]) -> list[str]:
    """Tenant users hold customer and/or tenant-admin; operator roles are never given from a tenant."""
    given = list(roles)
    operator = sorted(OPERATOR_ROLES.intersection(given))
    if operator:
        raise ValidationError(f"{operator[0]!r} is an operator role; tenant users may hold "
                              f"{' and '.join(sorted(TENANT_ROLES))}", field="roles")
    return _check_roles(given, "tenant")


def _check_label(value: Any) -> str | None:
    if value is None:
        return None
    label = value.strip() if isinstance(value, str) else None
    if label is None or len(label) > MAX_LABEL or any(ord(ch) < 32 for ch in label):
        raise ValidationError(f"must be at most {MAX_LABEL} characters on one line", field="label")
    return label or None


def _check_rule_numbers(delay_minutes: Any, min_severity: Any) -> None:
    if isinstance(delay_minutes, bool) or not isinstance(delay_minutes, int) \
            or not 0 <= delay_minutes <= MAX_DELAY_MINUTES:
        raise ValidationError(f"must be 0-{MAX_DELAY_MINUTES} minutes", field="delay_minutes")
    if isinstance(min_severity, bool) or not isinstance(min_severity, int) or not 1 <= min_severity <= 5:
        raise ValidationError("must be 1 (info) to 5 (critical)", field="min_severity")


# --- users -----------------------------------------------------------------------------------------------------------

_USER = ("user_id::text, email, display_name, roles, timezone, is_active, password_hash IS NOT NULL AS has_password, "
         "created_at, updated_at, last_login_at")


def _user(row: Any) -> User:
    return User(user_id=row.user_id, email=row.email, display_name=row.display_name, roles=sorted(row.roles),
                timezone=row.timezone, is_active=row.is_active, has_password=row.has_password,
                created_at=row.created_at, updated_at=row.updated_at, last_login_at=row.last_login_at)


async def list_users(conn: AsyncConnection, tenant_id: str, *, is_active: bool | None = None) -> list[User]:
    """The tenant's users by email, optionally only the active (or deactivated) ones."""
    rows = (await conn.execute(text(
        f"SELECT {_USER} FROM users WHERE tenant_id = :t AND (CAST(:a AS boolean) IS NULL OR is_active = :a) "
        "ORDER BY lower(email)"), {"t": tenant_id, "a": is_active})).all()
    return [_user(r) for r in rows]


async def get_user(conn: AsyncConnection, tenant_id: str, user_id: str) -> User | None:
    row = (await conn.execute(text(f"SELECT {_USER} FROM users WHERE tenant_id = :t AND user_id = CAST(:u AS uuid)"),
                              {"t": tenant_id, "u": _uuid(user_id, "user_id")})).first()
    return _user(row) if row else None


async def require_user(conn: AsyncConnection, tenant_id: str, user_id: str) -> User:
    """The tenant's user; another tenant's user is simply not found."""
    user = await get_user(conn, tenant_id, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", details={"field": "user_id"})
    return user


async def get_user_for_subject(conn: AsyncConnection, tenant_id: str, subject: str) -> User | None:
    """The user an access token's subject names: a Pulse user id, or an external identity provider's subject."""
    row = (await conn.execute(text(
        f"SELECT {_USER} FROM users WHERE tenant_id = :t AND (user_id::text = :s OR external_subject = :s) "
        "ORDER BY (user_id::text = :s) DESC LIMIT 1"), {"t": tenant_id, "s": subject})).first()
    return _user(row) if row else None


async def require_user_detail(conn: AsyncConnection, tenant_id: str, user_id: str, *,
                              settings: Settings) -> UserDetail:
    """A user with their contact methods and notification rules."""
    user = await require_user(conn, tenant_id, user_id)
    return UserDetail(**msgspec.structs.asdict(user),
                      contact_methods=await list_contact_methods(conn, tenant_id, user.user_id, settings=settings),
                      notification_rules=await list_notification_rules(conn, tenant_id, user.user_id))


async def create_user_in_tenant(conn: AsyncConnection, tenant_id: str, *, email: str, roles: Iterable[str],
                                display_name: str = "", timezone: str = "UTC", password: str | None = None,
                                now: datetime) -> str:
    """Add a person to the tenant; returns the user id.

    Only tenant roles (customer, tenant-admin) can be given. Email is unique across Pulse regardless of case
    (it is the login): a taken one is a Conflict naming `email`. Without a password the person cannot log in
    with Pulse's own identity (an external identity provider, or only being paged).
    """
    email = _check_email(email)
    role_list = _check_tenant_roles(roles)
    display_name = _check_display_name(display_name)
    timezone = check_timezone(timezone)
    password_hash = None
    if password is not None:
        if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise ValidationError(f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
                                  field="password")
        password_hash = await asyncio.to_thread(hash_password, password)
    taken = Conflict(f"a user with email {email} already exists", details={"field": "email"})
    # Row-level security hides other tenants' users, so the unique index is what finds an email taken there.
    try:
        async with conn.begin_nested():
            user_id = (await conn.execute(text(
                "INSERT INTO users (tenant_id, email, display_name, password_hash, roles, timezone, created_at, "
                "  updated_at) VALUES (:t, :e, :n, :h, :r, :tz, :now, :now) RETURNING user_id::text"),
                {"t": tenant_id, "e": email, "n": display_name, "h": password_hash, "r": role_list, "tz": timezone,
                 "now": now})).scalar_one()
    except IntegrityError as exc:
        if "users_email" in str(exc.orig):
            raise taken from None
        raise
    return str(user_id)


async def _keep_an_admin(conn: AsyncConnection, tenant_id: str, user_id: str, field: str) -> None:
    """Refuse to leave the tenant without an active tenant-admin (nobody could manage it any more).

    Changes that may remove an admin take a per-tenant lock first, so two admins demoting each other at the
    same time cannot both succeed.
    """
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('pulse-tenant-admins:' || :t))"),
                       {"t": tenant_id})
    others = (await conn.execute(text(
        "SELECT count(*) FROM users WHERE tenant_id = :t AND is_active AND 'tenant-admin' = ANY(roles) "
        "AND user_id <> CAST(:u AS uuid)"), {"t": tenant_id, "u": user_id})).scalar_one()
    if not others:
        raise Conflict("this is the tenant's last active tenant-admin; make someone else tenant-admin first",
                       details={"field": field})


async def _end_access(conn: AsyncConnection, tenant_id: str, user_id: str, now: datetime) -> None:
    """A deactivated person's sessions end and their pages not yet sent are cancelled."""
    await conn.execute(text("DELETE FROM refresh_tokens WHERE tenant_id = :t AND user_id = CAST(:u AS uuid)"),
                       {"t": tenant_id, "u": user_id})
    await conn.execute(text(
        "UPDATE notification_jobs SET status = 'CANCELLED', last_error = 'the user was deactivated', "
        "  updated_at = :now "
        "WHERE tenant_id = :t AND status = 'PENDING' AND contact_id IN "
        "  (SELECT contact_id FROM user_contact_methods WHERE tenant_id = :t AND user_id = CAST(:u AS uuid))"),
        {"t": tenant_id, "u": user_id, "now": now})


async def update_user(conn: AsyncConnection, tenant_id: str, user_id: str, *, now: datetime,
                      display_name: str | UnsetType = UNSET, roles: list[str] | UnsetType = UNSET,
                      timezone: str | UnsetType = UNSET, is_active: bool | UnsetType = UNSET) -> None:
    """Change what is given. Deactivating (is_active false) is `deactivate_user`; the last active tenant-admin
    cannot lose the role or be deactivated."""
    user_id = _uuid(user_id, "user_id")
    new_name = UNSET if isinstance(display_name, UnsetType) else _check_display_name(display_name)
    new_roles = UNSET if isinstance(roles, UnsetType) else _check_tenant_roles(roles)
    new_tz = UNSET if isinstance(timezone, UnsetType) else check_timezone(timezone)
    if not isinstance(is_active, UnsetType) and not isinstance(is_active, bool):
        raise ValidationError("must be true or false", field="is_active")
    row = (await conn.execute(text(
        "SELECT roles, is_active FROM users WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) FOR NO KEY UPDATE"),
        {"t": tenant_id, "u": user_id})).first()
    if row is None:
        raise NotFound(f"user {user_id} not found", details={"field": "user_id"})
    was_admin = row.is_active and "tenant-admin" in row.roles
    if was_admin and not isinstance(new_roles, UnsetType) and "tenant-admin" not in new_roles:
        await _keep_an_admin(conn, tenant_id, user_id, "roles")
    if is_active is False and row.is_active:
        await deactivate_user(conn, tenant_id, user_id, now=now)
    await conn.execute(text(
        "UPDATE users SET display_name = COALESCE(:n, display_name), roles = COALESCE(:r, roles), "
        "  timezone = COALESCE(:tz, timezone), is_active = COALESCE(:a, is_active), updated_at = :now "
        "WHERE tenant_id = :t AND user_id = CAST(:u AS uuid)"),
        {"n": None if isinstance(new_name, UnsetType) else new_name,
         "r": None if isinstance(new_roles, UnsetType) else new_roles,
         "tz": None if isinstance(new_tz, UnsetType) else new_tz,
         "a": None if isinstance(is_active, UnsetType) else is_active, "now": now, "t": tenant_id, "u": user_id})


async def deactivate_user(conn: AsyncConnection, tenant_id: str, user_id: str, *, now: datetime) -> None:
    """Deactivate a person: they can no longer log in or refresh a session and are no longer paged.

    The row stays (schedules, escalation policies and alert history keep referring to it) and a tenant-admin can
    reactivate it. Refresh tokens are removed; an access token already issued works until it expires.
    """
    user_id = _uuid(user_id, "user_id")
    row = (await conn.execute(text(
        "SELECT roles, is_active FROM users WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) FOR NO KEY UPDATE"),
        {"t": tenant_id, "u": user_id})).first()
    if row is None:
        raise NotFound(f"user {user_id} not found", details={"field": "user_id"})
    if row.is_active and "tenant-admin" in row.roles:
        await _keep_an_admin(conn, tenant_id, user_id, "is_active")
    await conn.execute(text(
        "UPDATE users SET is_active = false, updated_at = :now WHERE tenant_id = :t AND user_id = CAST(:u AS uuid)"),
        {"t": tenant_id, "u": user_id, "now": now})
    await _end_access(conn, tenant_id, user_id, now)


# --- contact methods -------------------------------------------------------------------------------------------------

_CONTACT = ("contact_id::text, user_id::text, kind, label, address, secrets_encrypted, is_enabled, created_at, "
            "updated_at")


def _contact(row: Any, key: bytes) -> ContactMethod:
    names = open_secrets(key, row.contact_id, row.secrets_encrypted)
    return ContactMethod(contact_id=row.contact_id, user_id=row.user_id, kind=row.kind, label=row.label,
                         address=row.address, secrets={k: MASK for k in sorted(names)}, is_enabled=row.is_enabled,
                         created_at=row.created_at, updated_at=row.updated_at)


async def _require_user_id(conn: AsyncConnection, tenant_id: str, user_id: str) -> str:
    user_id = _uuid(user_id, "user_id")
    found = (await conn.execute(text("SELECT 1 FROM users WHERE tenant_id = :t AND user_id = CAST(:u AS uuid)"),
                                {"t": tenant_id, "u": user_id})).first()
    if not found:
        raise NotFound(f"user {user_id} not found", details={"field": "user_id"})
    return user_id


async def list_contact_methods(conn: AsyncConnection, tenant_id: str, user_id: str, *,
                               settings: Settings) -> list[ContactMethod]:
    """A user's contact methods, oldest first, secrets masked."""
    user_id = await _require_user_id(conn, tenant_id, user_id)
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
        {"t": tenant_id, "u": _uuid(user_id, "user_id"), "c": _uuid(contact_id, "contact_id")})).first()
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
    user_id = await _require_user_id(conn, tenant_id, user_id)
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
    user_id, contact_id = _uuid(user_id, "user_id"), _uuid(contact_id, "contact_id")
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
        merged = {}
        for name, value in secrets.items():
            if value == MASK:
                if name not in stored:
                    raise ValidationError("is the mask, but the contact method has no such secret to keep",
                                          field=f"secrets.{name}")
                merged[name] = stored[name]
            else:
                merged[name] = value
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
    user_id, contact_id = _uuid(user_id, "user_id"), _uuid(contact_id, "contact_id")
    found = (await conn.execute(text(
        "SELECT 1 FROM user_contact_methods WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) "
        "AND contact_id = CAST(:c AS uuid) FOR UPDATE"), {"t": tenant_id, "u": user_id, "c": contact_id})).first()
    if not found:
        raise NotFound(f"contact method {contact_id} not found", details={"field": "contact_id"})
    await _cancel_pages(conn, tenant_id, contact_id, ("PENDING", "IN_PROGRESS"), "the contact method was deleted",
                        now)
    await conn.execute(text("DELETE FROM user_contact_methods WHERE tenant_id = :t AND contact_id = CAST(:c AS uuid)"),
                       {"t": tenant_id, "c": contact_id})


# --- personal notification rules -------------------------------------------------------------------------------------

_RULE = ("r.notification_rule_id::text, r.user_id::text, r.contact_id::text, m.kind, r.delay_minutes, "
         "r.min_severity, r.created_at")
_RULE_FROM = "user_notification_rules r JOIN user_contact_methods m ON m.contact_id = r.contact_id"


def _rule(row: Any) -> NotificationRule:
    return NotificationRule(notification_rule_id=row.notification_rule_id, user_id=row.user_id,
                            contact_id=row.contact_id, kind=row.kind, delay_minutes=row.delay_minutes,
                            min_severity=row.min_severity, created_at=row.created_at)


async def list_notification_rules(conn: AsyncConnection, tenant_id: str, user_id: str) -> list[NotificationRule]:
    """A user's notification rules in the order they fire: by delay, then severity."""
    user_id = await _require_user_id(conn, tenant_id, user_id)
    rows = (await conn.execute(text(
        f"SELECT {_RULE} FROM {_RULE_FROM} WHERE r.tenant_id = :t AND r.user_id = CAST(:u AS uuid) "
        "ORDER BY r.delay_minutes, r.min_severity, r.created_at, r.notification_rule_id"),
        {"t": tenant_id, "u": user_id})).all()
    return [_rule(r) for r in rows]


async def require_notification_rule(conn: AsyncConnection, tenant_id: str, user_id: str,
                                    rule_id: str) -> NotificationRule:
    row = (await conn.execute(text(
        f"SELECT {_RULE} FROM {_RULE_FROM} WHERE r.tenant_id = :t AND r.user_id = CAST(:u AS uuid) "
        "AND r.notification_rule_id = CAST(:r AS uuid)"),
        {"t": tenant_id, "u": _uuid(user_id, "user_id"), "r": _uuid(rule_id, "rule_id")})).first()
    if row is None:
        raise NotFound(f"notification rule {rule_id} not found", details={"field": "rule_id"})
    return _rule(row)


async def _check_rule_target(conn: AsyncConnection, tenant_id: str, user_id: str, contact_id: Any,
                             delay_minutes: int, *, rule_id: str | None = None) -> str:
    """The rule's contact method must be the same person's, and one contact method fires once per delay."""
    contact_id = _uuid(contact_id, "contact_id")
    owner = (await conn.execute(text(
        "SELECT user_id::text FROM user_contact_methods WHERE tenant_id = :t AND contact_id = CAST(:c AS uuid)"),
        {"t": tenant_id, "c": contact_id})).scalar()
    if owner != user_id:
        raise ValidationError("is not one of this user's contact methods", field="contact_id")
    twin = (await conn.execute(text(
        "SELECT 1 FROM user_notification_rules WHERE tenant_id = :t AND contact_id = CAST(:c AS uuid) "
        "AND delay_minutes = :d AND notification_rule_id IS DISTINCT FROM CAST(:r AS uuid)"),
        {"t": tenant_id, "c": contact_id, "d": delay_minutes, "r": rule_id})).first()
    if twin:
        raise Conflict(f"a rule already uses this contact method after {delay_minutes} minutes; change that one",
                       details={"field": "delay_minutes"})
    return contact_id


async def create_notification_rule(conn: AsyncConnection, tenant_id: str, user_id: str, *, contact_id: str,
                                   delay_minutes: int = 0, min_severity: int = 1) -> str:
    """Add "use this contact method after `delay_minutes` for alerts of at least `min_severity`"."""
    user_id = await _require_user_id(conn, tenant_id, user_id)
    _check_rule_numbers(delay_minutes, min_severity)
    contact_id = await _check_rule_target(conn, tenant_id, user_id, contact_id, delay_minutes)
    return str((await conn.execute(text(
        "INSERT INTO user_notification_rules (tenant_id, user_id, contact_id, delay_minutes, min_severity) "
        "VALUES (:t, CAST(:u AS uuid), CAST(:c AS uuid), :d, :s) RETURNING notification_rule_id::text"),
        {"t": tenant_id, "u": user_id, "c": contact_id, "d": delay_minutes, "s": min_severity})).scalar_one())


async def update_notification_rule(conn: AsyncConnection, tenant_id: str, user_id: str, rule_id: str, *,
                                   contact_id: str | UnsetType = UNSET, delay_minutes: int | UnsetType = UNSET,
                                   min_severity: int | UnsetType = UNSET) -> None:
    """Change what is given; the rule is checked as a whole again."""
    user_id, rule_id = _uuid(user_id, "user_id"), _uuid(rule_id, "rule_id")
    row = (await conn.execute(text(
        "SELECT contact_id::text, delay_minutes, min_severity FROM user_notification_rules "
        "WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) AND notification_rule_id = CAST(:r AS uuid) "
        "FOR UPDATE"), {"t": tenant_id, "u": user_id, "r": rule_id})).first()
    if row is None:
        raise NotFound(f"notification rule {rule_id} not found", details={"field": "rule_id"})
    delay = row.delay_minutes if isinstance(delay_minutes, UnsetType) else delay_minutes
    severity = row.min_severity if isinstance(min_severity, UnsetType) else min_severity
    _check_rule_numbers(delay, severity)
    contact = await _check_rule_target(conn, tenant_id, user_id,
                                       row.contact_id if isinstance(contact_id, UnsetType) else contact_id, delay,
                                       rule_id=rule_id)
    await conn.execute(text(
        "UPDATE user_notification_rules SET contact_id = CAST(:c AS uuid), delay_minutes = :d, min_severity = :s "
        "WHERE notification_rule_id = CAST(:r AS uuid)"), {"c": contact, "d": delay, "s": severity, "r": rule_id})


async def delete_notification_rule(conn: AsyncConnection, tenant_id: str, user_id: str, rule_id: str) -> None:
    deleted = await conn.execute(text(
        "DELETE FROM user_notification_rules WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) "
        "AND notification_rule_id = CAST(:r AS uuid)"),
        {"t": tenant_id, "u": _uuid(user_id, "user_id"), "r": _uuid(rule_id, "rule_id")})
    if not deleted.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"notification rule {rule_id} not found", details={"field": "rule_id"})


# --- paging ----------------------------------------------------------------------------------------------------------

async def get_paging_plan(conn: AsyncConnection, tenant_id: str, user_id: str, severity: int) -> list[PagingStep]:
    """How to reach a person paged for an alert of `severity`: the contact methods to use and when.

    The person's notification rules with `min_severity <= severity` whose contact method is enabled; a person
    with no rules at all gets every enabled contact method at once (having contact methods is enough to be
    paged). A deactivated or unknown person gets an empty plan. Ordered by delay.
    """
    try:
        user_id = str(uuid.UUID(str(user_id)))
    except ValueError:
        return []
    active = (await conn.execute(text(
        "SELECT is_active FROM users WHERE tenant_id = :t AND user_id = CAST(:u AS uuid)"),
        {"t": tenant_id, "u": user_id})).scalar()
    if not active:
        return []
    has_rules = (await conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM user_notification_rules WHERE tenant_id = :t AND user_id = CAST(:u AS uuid))"),
        {"t": tenant_id, "u": user_id})).scalar()
    if has_rules:
        rows = (await conn.execute(text(
            "SELECT m.contact_id::text, m.kind, r.delay_minutes, r.notification_rule_id::text "
            f"FROM {_RULE_FROM} WHERE r.tenant_id = :t AND r.user_id = CAST(:u AS uuid) AND m.is_enabled "
            "AND r.min_severity <= :sev ORDER BY r.delay_minutes, m.created_at, r.notification_rule_id"),
            {"t": tenant_id, "u": user_id, "sev": severity})).all()
    else:
        rows = (await conn.execute(text(
            "SELECT contact_id::text, kind, 0 AS delay_minutes, NULL AS notification_rule_id "
            "FROM user_contact_methods WHERE tenant_id = :t AND user_id = CAST(:u AS uuid) AND is_enabled "
            "ORDER BY created_at, contact_id"), {"t": tenant_id, "u": user_id})).all()
    return [PagingStep(contact_id=r.contact_id, kind=r.kind, delay_minutes=r.delay_minutes,
                       notification_rule_id=r.notification_rule_id) for r in rows]
