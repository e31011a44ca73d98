"""A tenant's users: who they are, their roles and time zone, and deactivating them (never the last tenant-admin)."""

from __future__ import annotations

import asyncio
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

from pulse.checks import parse_uuid
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

MAX_DISPLAY_NAME = 200


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


# --- checks ----------------------------------------------------------------------------------------------------------

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
                              {"t": tenant_id, "u": parse_uuid(user_id, "user_id")})).first()
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
    user_id = parse_uuid(user_id, "user_id")
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
    user_id = parse_uuid(user_id, "user_id")
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


async def require_user_id(conn: AsyncConnection, tenant_id: str, user_id: str) -> str:
    """The user's canonical id; NotFound unless the tenant has this user."""
    user_id = parse_uuid(user_id, "user_id")
    found = (await conn.execute(text("SELECT 1 FROM users WHERE tenant_id = :t AND user_id = CAST(:u AS uuid)"),
                                {"t": tenant_id, "u": user_id})).first()
    if not found:
        raise NotFound(f"user {user_id} not found", details={"field": "user_id"})
    return user_id
