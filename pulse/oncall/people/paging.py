"""Personal notification rules, the paging plan they make, and a person with everything that says how to page them.

A rule says "when I am paged for an alert of at least this severity, use this contact method after this delay".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import canonical_uuid, is_whole_number, parse_uuid
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.oncall.people.contacts import ContactMethod, list_contact_methods
from pulse.oncall.people.users import User, require_user, require_user_id
from pulse.settings import Settings

MAX_DELAY_MINUTES = 1440


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


def _check_rule_numbers(delay_minutes: Any, min_severity: Any) -> None:
    if not is_whole_number(delay_minutes, 0, MAX_DELAY_MINUTES):
        raise ValidationError(f"must be 0-{MAX_DELAY_MINUTES} minutes", field="delay_minutes")
    if not is_whole_number(min_severity, 1, 5):
        raise ValidationError("must be 1 (info) to 5 (critical)", field="min_severity")


_RULE = ("r.notification_rule_id::text, r.user_id::text, r.contact_id::text, m.kind, r.delay_minutes, "
         "r.min_severity, r.created_at")
_RULE_FROM = "user_notification_rules r JOIN user_contact_methods m ON m.contact_id = r.contact_id"


def _rule(row: Any) -> NotificationRule:
    return NotificationRule(notification_rule_id=row.notification_rule_id, user_id=row.user_id,
                            contact_id=row.contact_id, kind=row.kind, delay_minutes=row.delay_minutes,
                            min_severity=row.min_severity, created_at=row.created_at)


async def list_notification_rules(conn: AsyncConnection, tenant_id: str, user_id: str) -> list[NotificationRule]:
    """A user's notification rules in the order they fire: by delay, then severity."""
    user_id = await require_user_id(conn, tenant_id, user_id)
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
        {"t": tenant_id, "u": parse_uuid(user_id, "user_id"), "r": parse_uuid(rule_id, "rule_id")})).first()
    if row is None:
        raise NotFound(f"notification rule {rule_id} not found", details={"field": "rule_id"})
    return _rule(row)


async def _check_rule_target(conn: AsyncConnection, tenant_id: str, user_id: str, contact_id: Any,
                             delay_minutes: int, *, rule_id: str | None = None) -> str:
    """The rule's contact method must be the same person's, and one contact method fires once per delay."""
    contact_id = parse_uuid(contact_id, "contact_id")
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
    user_id = await require_user_id(conn, tenant_id, user_id)
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
    user_id, rule_id = parse_uuid(user_id, "user_id"), parse_uuid(rule_id, "rule_id")
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
        {"t": tenant_id, "u": parse_uuid(user_id, "user_id"), "r": parse_uuid(rule_id, "rule_id")})
    if not deleted.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"notification rule {rule_id} not found", details={"field": "rule_id"})


# --- paging ----------------------------------------------------------------------------------------------------------

async def get_paging_plan(conn: AsyncConnection, tenant_id: str, user_id: str, severity: int) -> list[PagingStep]:
    """How to reach a person paged for an alert of `severity`: the contact methods to use and when.

    The person's notification rules with `min_severity <= severity` whose contact method is enabled; a person
    with no rules at all gets every enabled contact method at once (having contact methods is enough to be
    paged). A deactivated or unknown person gets an empty plan. Ordered by delay.
    """
    canonical = canonical_uuid(user_id)
    if canonical is None:
        return []
    user_id = canonical
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


async def require_user_detail(conn: AsyncConnection, tenant_id: str, user_id: str, *,
                              settings: Settings) -> UserDetail:
    """A user with their contact methods and notification rules."""
    user = await require_user(conn, tenant_id, user_id)
    return UserDetail(**msgspec.structs.asdict(user),
                      contact_methods=await list_contact_methods(conn, tenant_id, user.user_id, settings=settings),
                      notification_rules=await list_notification_rules(conn, tenant_id, user.user_id))
