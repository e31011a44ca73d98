"""A schedule's overrides: someone on call for a while over every layer."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_range, parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.oncall.schedules.common import (
    check_text,
    instant,
    optional_instant,
    require_schedule_id,
    users_by_id,
)
from pulse.oncall.schedules.schemas import ScheduleOverride

MAX_OVERRIDE = timedelta(days=90)
_OVERRIDE_COLUMNS = ("o.override_id::text, o.schedule_id::text, o.user_id::text, u.email AS user_email, "
                     "u.display_name AS user_name, o.starts_at, o.ends_at, o.reason, o.created_by, o.created_at")


def _override(row: Any) -> ScheduleOverride:
    return ScheduleOverride(
        override_id=row.override_id, schedule_id=row.schedule_id, user_id=row.user_id, user_email=row.user_email,
        user_name=row.user_name, starts_at=row.starts_at, ends_at=row.ends_at, reason=row.reason,
        created_by=row.created_by, created_at=row.created_at)


async def list_overrides(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, start: datetime | None = None,
                         end: datetime | None = None) -> list[ScheduleOverride]:
    """A schedule's overrides overlapping [start, end) (either bound may be open), in start order."""
    sid = await require_schedule_id(conn, tenant_id, schedule_id)
    start, end = optional_instant(start, "from"), optional_instant(end, "to")
    check_range(start, end)
    rows = (await conn.execute(text(
        f"SELECT {_OVERRIDE_COLUMNS} FROM oncall_overrides o LEFT JOIN users u ON u.user_id = o.user_id "
        "WHERE o.tenant_id = :t AND o.schedule_id = CAST(:s AS uuid) "
        "  AND (CAST(:lo AS timestamptz) IS NULL OR o.ends_at > :lo) "
        "  AND (CAST(:hi AS timestamptz) IS NULL OR o.starts_at < :hi) "
        "ORDER BY o.starts_at, o.created_at"), {"t": tenant_id, "s": sid, "lo": start, "hi": end})).all()
    return [_override(r) for r in rows]


async def require_override(conn: AsyncConnection, tenant_id: str, schedule_id: str,
                           override_id: str) -> ScheduleOverride:
    sid = parse_uuid(schedule_id, "schedule_id")
    oid = parse_uuid(override_id, "override_id")
    row = (await conn.execute(text(
        f"SELECT {_OVERRIDE_COLUMNS} FROM oncall_overrides o LEFT JOIN users u ON u.user_id = o.user_id "
        "WHERE o.tenant_id = :t AND o.schedule_id = CAST(:s AS uuid) AND o.override_id = CAST(:o AS uuid)"),
        {"t": tenant_id, "s": sid, "o": oid})).first()
    if row is None:
        raise NotFound(f"override {override_id} not found in this schedule", details={"field": "override_id"})
    return _override(row)


async def create_override(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, user_id: str,
                          starts_at: datetime, ends_at: datetime, created_by: str | None, now: datetime,
                          reason: str | None = None) -> str:
    """Put `user_id` on call for [starts_at, ends_at) over every layer (at most 90 days).

    Overlapping overrides are allowed; where they overlap, the one created last wins. The user must be an
    active member of the tenant: an override for a deactivated user would page nobody.
    """
    sid = await require_schedule_id(conn, tenant_id, schedule_id)
    uid = parse_uuid(user_id, "user_id")
    starts, ends = instant(starts_at, "starts_at"), instant(ends_at, "ends_at")
    check_range(starts, ends, start_field="starts_at", end_field="ends_at")
    if ends - starts > MAX_OVERRIDE:
        raise ValidationError("an override lasts at most 90 days", field="ends_at")
    if reason is not None:
        check_text(reason, "reason", max_len=500, required=False)
    user = (await users_by_id(conn, tenant_id, [uid])).get(uid)
    if user is None:
        raise ValidationError(f"no user {user_id} in this tenant", field="user_id")
    if not user.is_active:
        raise ValidationError("this user is deactivated and cannot be put on call", field="user_id")
    return str((await conn.execute(text(
        "INSERT INTO oncall_overrides (tenant_id, schedule_id, user_id, starts_at, ends_at, reason, created_by, "
        "  created_at) VALUES (:t, CAST(:s AS uuid), CAST(:u AS uuid), :a, :b, :r, :by, :now) "
        "RETURNING override_id::text"),
        {"t": tenant_id, "s": sid, "u": uid, "a": starts, "b": ends, "r": reason, "by": created_by,
         "now": now})).scalar_one())


async def delete_override(conn: AsyncConnection, tenant_id: str, schedule_id: str, override_id: str) -> None:
    sid = parse_uuid(schedule_id, "schedule_id")
    oid = parse_uuid(override_id, "override_id")
    gone = await conn.execute(text(
        "DELETE FROM oncall_overrides WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) "
        "AND override_id = CAST(:o AS uuid)"), {"t": tenant_id, "s": sid, "o": oid})
    if gone.rowcount == 0:
        raise NotFound(f"override {override_id} not found in this schedule", details={"field": "override_id"})
