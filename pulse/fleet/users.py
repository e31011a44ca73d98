"""Built-in identity: users with argon2 password hashes, login checks and rotating refresh tokens."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.crypto import hash_token, new_token
from pulse.errors import Conflict, NotFound, ValidationError

TENANT_ROLES = frozenset({"customer", "tenant-admin"})
OPERATOR_ROLES = frozenset({"operator", "operator-admin"})
ROLES = TENANT_ROLES | OPERATOR_ROLES

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 hashes anything, but a megabyte "password" is a denial of service
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
_REFRESH_PREFIX = "rt"

_hasher = PasswordHasher()


class UserRow(msgspec.Struct, frozen=True, kw_only=True):
    """A login as the identity code sees it (no password hash)."""

    user_id: uuid.UUID
    tenant_id: str | None
    email: str
    display_name: str
    roles: tuple[str, ...]
    is_active: bool


def hash_password(password: str) -> str:
    """An argon2id hash (salted, parameters embedded) of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches `password_hash`; a malformed hash is a mismatch, not an error."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so both paths cost one argon2 run."""
    return hash_password("pulse-no-such-user-" + uuid.uuid4().hex)


_USER_COLUMNS = "u.user_id, u.tenant_id, u.email, u.display_name, u.roles, u.is_active"


def _user(row: Any) -> UserRow:
    return UserRow(user_id=row.user_id, tenant_id=row.tenant_id, email=row.email, display_name=row.display_name,
                   roles=tuple(row.roles), is_active=row.is_active)


def _check_email(email: str) -> str:
    e = email.strip() if isinstance(email, str) else ""
    if not e or len(e) > 254 or not _EMAIL_RE.match(e):
        raise ValidationError("must be an email address", field="email")
    return e


def _check_roles(roles: Iterable[str], tenant_id: str | None) -> list[str]:
    out = sorted(set(roles))
    if not out:
        raise ValidationError("a user needs at least one role", field="roles")
    unknown = [r for r in out if r not in ROLES]
    if unknown:
        raise ValidationError(f"unknown role {unknown[0]!r}; roles are {', '.join(sorted(ROLES))}", field="roles")
    if tenant_id is None and TENANT_ROLES.intersection(out):
        raise ValidationError("customer and tenant-admin users belong to a tenant", field="tenant_id")
    return out


async def create_user(conn: AsyncConnection, *, tenant_id: str | None, email: str, password: str,
                      roles: Iterable[str], display_name: str = "", now: datetime | None = None) -> uuid.UUID:
    """Add a login; email is unique regardless of case. Returns the new user id."""
    email = _check_email(email)
    role_list = _check_roles(roles, tenant_id)
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValidationError(f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters", field="password")
    if tenant_id is not None:
        tenant = (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t"), {"t": tenant_id})).first()
        if tenant is None:
            raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    taken = (await conn.execute(text("SELECT 1 FROM users WHERE lower(email) = lower(:e)"), {"e": email})).first()
    if taken:
        raise Conflict(f"a user with email {email} already exists", details={"field": "email"})
    password_hash = await asyncio.to_thread(hash_password, password)
    user_id = (await conn.execute(text(
        "INSERT INTO users (tenant_id, email, display_name, password_hash, roles, created_at, updated_at) "
        "VALUES (:t, :e, :n, :h, :r, coalesce(:now, now()), coalesce(:now, now())) RETURNING user_id"),
        {"t": tenant_id, "e": email, "n": display_name, "h": password_hash, "r": role_list, "now": now})).scalar_one()
    return uuid.UUID(str(user_id))


async def get_user(conn: AsyncConnection, user_id: uuid.UUID | str) -> UserRow | None:
    row = (await conn.execute(text(f"SELECT {_USER_COLUMNS} FROM users u WHERE u.user_id = :u"),
                              {"u": str(user_id)})).first()
    return _user(row) if row else None


async def authenticate(conn: AsyncConnection, email: str, password: str, *,
                       now: datetime | None = None) -> UserRow | None:
    """The active user with this email and password, or None.

    An unknown email costs the same argon2 verification as a wrong password, so response time does
    not reveal which emails have accounts. Users of a DELETED tenant cannot log in. With `now`,
    records the login time.
    """
    if not isinstance(email, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        await asyncio.to_thread(verify_password, _dummy_hash(), "")
        return None
    row = (await conn.execute(text(
        f"SELECT {_USER_COLUMNS}, u.password_hash FROM users u LEFT JOIN tenants t ON t.tenant_id = u.tenant_id "
        "WHERE lower(u.email) = lower(:e) AND u.is_active AND (u.tenant_id IS NULL OR t.status <> 'DELETED')"),
        {"e": email.strip()})).first()
    if row is None or row.password_hash is None:
        await asyncio.to_thread(verify_password, _dummy_hash(), password)
        return None
    if not await asyncio.to_thread(verify_password, row.password_hash, password):
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        new_hash = await asyncio.to_thread(hash_password, password)
        await conn.execute(text("UPDATE users SET password_hash = :h WHERE user_id = :u"),
                           {"h": new_hash, "u": row.user_id})
    if now is not None:
        await conn.execute(text("UPDATE users SET last_login_at = :now WHERE user_id = :u"),
                           {"now": now, "u": row.user_id})
    return _user(row)


async def _insert_refresh_token(conn: AsyncConnection, user_id: uuid.UUID | str, tenant_id: str | None,
                                expires_at: datetime, now: datetime) -> tuple[str, Any]:
    token = new_token(_REFRESH_PREFIX)
    token_id = (await conn.execute(text(
        "INSERT INTO refresh_tokens (tenant_id, user_id, token_hash, created_at, expires_at) "
        "VALUES (:t, :u, :h, :now, :exp) RETURNING token_id"),
        {"t": tenant_id, "u": str(user_id), "h": hash_token(token), "now": now, "exp": expires_at})).scalar_one()
    return token, token_id


async def issue_refresh_token(conn: AsyncConnection, user_id: uuid.UUID | str, tenant_id: str | None, ttl_s: int,
                              now: datetime) -> str:
    """A new opaque refresh token valid for `ttl_s`; only its SHA-256 is stored."""
    token, _ = await _insert_refresh_token(conn, user_id, tenant_id, now + timedelta(seconds=ttl_s), now)
    return token


async def revoke_refresh_tokens(conn: AsyncConnection, user_id: uuid.UUID | str, now: datetime) -> int:
    """End every session of a user (all unrevoked refresh tokens); returns how many were revoked."""
    result = await conn.execute(text("UPDATE refresh_tokens SET revoked_at = :now "
                                     "WHERE user_id = :u AND revoked_at IS NULL"), {"now": now, "u": str(user_id)})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def revoke_refresh_token(conn: AsyncConnection, token: str, now: datetime) -> bool:
    """End the one session this refresh token belongs to (sign-out); True when a live token was revoked.

    Unlike presenting a spent token to `rotate_refresh_token`, this never touches the user's other sessions:
    signing out of one browser leaves the others signed in. An unknown, expired or already revoked token is
    simply False, so callers can answer alike whatever was presented.
    """
    if not isinstance(token, str) or not token.startswith(_REFRESH_PREFIX + "_") or len(token) > 256:
        return False
    result = await conn.execute(text(
        "UPDATE refresh_tokens SET revoked_at = :now "
        "WHERE token_hash = :h AND revoked_at IS NULL AND expires_at > :now"), {"now": now, "h": hash_token(token)})
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def rotate_refresh_token(conn: AsyncConnection, token: str, now: datetime, *,
                               ttl_s: int | None = None) -> tuple[UserRow, str] | None:
    """Exchange a refresh token for a new one (the old one is revoked); None when it is not usable.

    Presenting a token that was already rotated means a copy exists elsewhere: every session of
    that user is revoked. A token revoked without a successor (signed out, or its sessions ended)
    is only refused, so a signed-out token never ends the user's other sessions. This returns None
    instead of raising so that the caller commits the revocation. The new token lives `ttl_s`
    (default: as long as the old one did).
    """
    if not isinstance(token, str) or not token.startswith(_REFRESH_PREFIX + "_") or len(token) > 256:
        return None
    row = (await conn.execute(text(
        "SELECT token_id, user_id, tenant_id, created_at, expires_at, revoked_at, replaced_by FROM refresh_tokens "
        "WHERE token_hash = :h FOR UPDATE"), {"h": hash_token(token)})).first()
    if row is None:
        return None
    if row.revoked_at is not None:
        if row.replaced_by is not None:
            await revoke_refresh_tokens(conn, row.user_id, now)
        return None
    if row.expires_at <= now:
        return None
    user_row = (await conn.execute(text(
        f"SELECT {_USER_COLUMNS} FROM users u LEFT JOIN tenants t ON t.tenant_id = u.tenant_id "
        "WHERE u.user_id = :u AND u.is_active AND (u.tenant_id IS NULL OR t.status <> 'DELETED')"),
        {"u": row.user_id})).first()
    if user_row is None:
        await revoke_refresh_tokens(conn, row.user_id, now)
        return None
    lifetime = timedelta(seconds=ttl_s) if ttl_s is not None else row.expires_at - row.created_at
    new, new_id = await _insert_refresh_token(conn, row.user_id, row.tenant_id, now + lifetime, now)
    await conn.execute(text("UPDATE refresh_tokens SET revoked_at = :now, replaced_by = :n WHERE token_id = :id"),
                       {"now": now, "n": new_id, "id": row.token_id})
    return _user(user_row), new
