"""Routing: an alert change becomes notification jobs for every matching route, in the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.fleet.scopes import check_group_ids, require_scope
from pulse.notify.schemas import AlertEventMessage

JOBS_CHANNEL = "pulse_jobs"
EVENT_KINDS = ("OPENED", "UPDATED", "ACKNOWLEDGED", "ESCALATED", "CLOSED", "FLAPPING")

_ROUTES = text(
    "SELECT r.route_id::text, r.channel_id::text, r.min_severity, r.alert_types, r.event_kinds, r.site_ids, "
    "  r.group_ids::text[] AS group_ids, r.tags, r.device_id_prefix, r.repeat_interval_s, r.is_final "
    "FROM notification_routing_rules r JOIN notification_channels c ON c.channel_id = r.channel_id "
    "WHERE r.tenant_id = :t AND r.is_enabled AND c.is_enabled ORDER BY r.position, r.created_at")


def route_matches(route: Any, msg: AlertEventMessage) -> bool:
    """Every filter a route sets must match; an empty list means 'any'."""
    if msg.severity < route.min_severity:
        return False
    if route.event_kinds and msg.event_kind not in route.event_kinds:
        return False
    if route.alert_types and msg.alert_type not in route.alert_types:
        return False
    if route.site_ids and msg.site_id not in route.site_ids:
        return False
    if route.group_ids and not set(route.group_ids).intersection(msg.group_ids):
        return False
    if route.tags and not set(route.tags).intersection(msg.tags):
        return False
    return not (route.device_id_prefix and not (msg.device_id or "").startswith(route.device_id_prefix))


async def enqueue_for_event(conn: AsyncConnection, msg: AlertEventMessage, *, now: datetime) -> list[str]:
    """Write one job per matching route (ordered; a final route stops matching). Returns the new job ids."""
    payload = msgspec.json.encode(msg).decode()
    job_ids: list[str] = []
    for route in (await conn.execute(_ROUTES, {"t": msg.tenant_id})).all():
        if not route_matches(route, msg):
            continue
        if msg.event_kind == "UPDATED" and not await _take_repeat_slot(conn, msg, route, now):
            continue
        job_id = (await conn.execute(text(
            "INSERT INTO notification_jobs (tenant_id, channel_id, route_id, alert_id, event_id, event_kind, payload, "
            "  idempotency_key, next_attempt_at, created_at, updated_at) "
            "VALUES (:t, CAST(:c AS uuid), CAST(:r AS uuid), CAST(:a AS uuid), :e, :k, CAST(:p AS jsonb), :key, "
            "  :now, :now, :now) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING job_id::text"),
            {"t": msg.tenant_id, "c": route.channel_id, "r": route.route_id, "a": msg.alert_id, "e": msg.event_id,
             "k": msg.event_kind, "p": payload, "key": f"{msg.event_id}:{route.route_id}", "now": now})).scalar()
        if job_id:
            job_ids.append(job_id)
        if route.is_final:
            break
    if job_ids:
        await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": JOBS_CHANNEL})
    return job_ids


_INSERT_JOB = text(
    "INSERT INTO notification_jobs (tenant_id, channel_id, contact_id, alert_id, event_id, event_kind, payload, "
    "  idempotency_key, next_attempt_at, created_at, updated_at) "
    "VALUES (:t, CAST(:c AS uuid), CAST(:m AS uuid), CAST(:a AS uuid), :e, :k, CAST(:p AS jsonb), :key, :due, "
    "  :now, :now) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING job_id::text")


async def enqueue_direct(conn: AsyncConnection, msg: AlertEventMessage, *, key: str, now: datetime,
                         channel_id: str | None = None, contact_id: str | None = None,
                         due_at: datetime | None = None, of_alert: bool = True) -> str | None:
    """One job to a named channel or to a person's contact method (escalation), bypassing routing rules.

    `key` makes it idempotent: the same step enqueued twice is one job. `due_at` delays it (a personal
    notification rule such as "Slack after 5 minutes"). `of_alert=False` for a message about no alert (an account
    notice): the job refers to no alert. Returns the new job id, None when the key existed.
    """
    job_id = (await conn.execute(_INSERT_JOB, {
        "t": msg.tenant_id, "c": channel_id, "m": contact_id, "a": msg.alert_id if of_alert else None,
        "e": msg.event_id,
        "k": msg.event_kind, "p": msgspec.json.encode(msg).decode(), "key": key, "due": due_at or now,
        "now": now})).scalar()
    if job_id:
        await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": JOBS_CHANNEL})
    return str(job_id) if job_id else None


async def settle_pages(conn: AsyncConnection, msg: AlertEventMessage, *, now: datetime) -> None:
    """An alert was acknowledged or closed: its pages not yet sent are cancelled, and every PagerDuty contact
    method it paged hears the acknowledge or resolve (so the person's PagerDuty incident follows Pulse)."""
    paged = (await conn.execute(text(  # one statement: the pages cancelled are PENDING, those read are not
        "WITH cancelled AS ("
        "  UPDATE notification_jobs SET status = 'CANCELLED', updated_at = :now, "
        "    last_error = 'the alert was ' || lower(:k) || ' before this page was sent' "
        "  WHERE alert_id = CAST(:a AS uuid) AND contact_id IS NOT NULL AND event_kind = 'PAGED' "
        "    AND status = 'PENDING') "
        "SELECT DISTINCT j.contact_id::text FROM notification_jobs j "
        "JOIN user_contact_methods m ON m.contact_id = j.contact_id "
        "WHERE j.alert_id = CAST(:a AS uuid) AND j.event_kind = 'PAGED' AND m.kind = 'PAGERDUTY' "
        "  AND j.status IN ('IN_PROGRESS', 'DELIVERED')"),
        {"a": msg.alert_id, "k": msg.event_kind, "now": now})).scalars().all()
    for contact_id in paged:
        await enqueue_direct(conn, msg, key=f"{msg.event_id}:contact:{contact_id}", contact_id=contact_id, now=now)


async def _take_repeat_slot(conn: AsyncConnection, msg: AlertEventMessage, route: Any, now: datetime) -> bool:
    """Updates of one alert reach a route at most once per repeat interval (0: never repeat)."""
    if route.repeat_interval_s <= 0:
        return False
    taken = (await conn.execute(text(
        "INSERT INTO notification_log (tenant_id, route_id, fingerprint, last_sent_at) "
        "VALUES (:t, CAST(:r AS uuid), :fp, :now) ON CONFLICT (route_id, fingerprint) DO UPDATE "
        "SET last_sent_at = EXCLUDED.last_sent_at WHERE notification_log.last_sent_at <= :due RETURNING 1"),
        {"t": msg.tenant_id, "r": route.route_id, "fp": msg.fingerprint, "now": now,
         "due": now - timedelta(seconds=route.repeat_interval_s)})).scalar()
    return bool(taken)


def _check_route(*, name: str, min_severity: int, event_kinds: list[str], repeat_interval_s: int,
                 group_ids: list[str], position: int) -> None:
    if not name or len(name) > 200:
        raise ValidationError("must be 1-200 characters", field="name")
    if not 1 <= min_severity <= 5:
        raise ValidationError("must be 1 (info) to 5 (critical)", field="min_severity")
    unknown = [k for k in event_kinds if k not in EVENT_KINDS]
    if unknown:
        raise ValidationError(f"unknown event kind {unknown[0]}; use {', '.join(EVENT_KINDS)}", field="event_kinds")
    if repeat_interval_s < 0:
        raise ValidationError("must be >= 0", field="repeat_interval_s")
    if not -1_000_000 <= position <= 1_000_000:
        raise ValidationError("must be between -1000000 and 1000000", field="position")
    for group_id in group_ids:
        try:
            uuid.UUID(group_id)
        except (ValueError, AttributeError, TypeError):
            raise ValidationError(f"{group_id!r} is not a group UUID", field="group_ids") from None


async def _require_channel(conn: AsyncConnection, tenant_id: str, channel_id: str) -> None:
    parse_uuid(channel_id, "channel_id")
    exists = (await conn.execute(text(
        "SELECT 1 FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid)"),
        {"t": tenant_id, "c": channel_id})).first()
    if not exists:
        raise NotFound(f"channel {channel_id} not found", details={"field": "channel_id"})


async def create_route(conn: AsyncConnection, tenant_id: str, *, name: str, channel_id: str, position: int = 0,
                       min_severity: int = 1, alert_types: list[str] | None = None,
                       event_kinds: list[str] | None = None, site_ids: list[str] | None = None,
                       group_ids: list[str] | None = None, tags: list[str] | None = None,
                       device_id_prefix: str | None = None, repeat_interval_s: int = 0,
                       is_final: bool = False) -> str:
    """Add a routing rule; errors name the field."""
    kinds = event_kinds if event_kinds is not None else ["OPENED", "ACKNOWLEDGED", "ESCALATED", "CLOSED"]
    _check_route(name=name, min_severity=min_severity, event_kinds=kinds, repeat_interval_s=repeat_interval_s,
                 group_ids=group_ids or [], position=position)
    await require_scope(conn, tenant_id, {"site_ids": site_ids, "group_ids": check_group_ids(group_ids or [])},
                        ("site_ids", "group_ids"))
    await _require_channel(conn, tenant_id, channel_id)
    return str((await conn.execute(text(
        "INSERT INTO notification_routing_rules (tenant_id, name, position, channel_id, min_severity, alert_types, "
        "  event_kinds, site_ids, group_ids, tags, device_id_prefix, repeat_interval_s, is_final) "
        "VALUES (:t, :n, :pos, CAST(:c AS uuid), :sev, :types, :kinds, :sites, CAST(:groups AS uuid[]), :tags, "
        "  :prefix, :rep, :final) RETURNING route_id::text"),
        {"t": tenant_id, "n": name, "pos": position, "c": channel_id, "sev": min_severity,
         "types": alert_types or [], "kinds": kinds, "sites": site_ids or [], "groups": group_ids or [],
         "tags": tags or [], "prefix": device_id_prefix, "rep": repeat_interval_s, "final": is_final})).scalar_one())


_ROUTE_FIELDS = ("name", "position", "channel_id", "min_severity", "alert_types", "event_kinds", "site_ids",
                 "group_ids", "tags", "device_id_prefix", "repeat_interval_s", "is_final", "is_enabled")


async def update_route(conn: AsyncConnection, tenant_id: str, route_id: str, changes: dict[str, Any], *,
                       now: datetime) -> None:
    """Change the given fields of a routing rule (names as in create_route, plus is_enabled); errors name the field."""
    unknown = [k for k in changes if k not in _ROUTE_FIELDS]
    if unknown:
        raise ValidationError("is not a field of a routing rule", field=unknown[0])
    row = (await conn.execute(text(
        "SELECT name, position, channel_id::text, min_severity, event_kinds, group_ids::text[] AS group_ids, "
        "  repeat_interval_s FROM notification_routing_rules "
        "WHERE tenant_id = :t AND route_id = CAST(:r AS uuid) FOR NO KEY UPDATE"),
        {"t": tenant_id, "r": route_id})).first()
    if row is None:
        raise NotFound(f"routing rule {route_id} not found", details={"field": "route_id"})
    merged = {**dict(row._mapping), **changes}
    _check_route(name=merged["name"], min_severity=merged["min_severity"], event_kinds=merged["event_kinds"],
                 repeat_interval_s=merged["repeat_interval_s"], group_ids=merged["group_ids"],
                 position=merged["position"])
    await require_scope(conn, tenant_id, {"site_ids": changes.get("site_ids"),
                                          "group_ids": check_group_ids(changes.get("group_ids") or [])},
                        tuple(k for k in ("site_ids", "group_ids") if k in changes))
    if "channel_id" in changes:
        await _require_channel(conn, tenant_id, changes["channel_id"])
    casts = {"channel_id": "CAST(:channel_id AS uuid)", "group_ids": "CAST(:group_ids AS uuid[])"}
    sets = [f"{k} = {casts.get(k, ':' + k)}" for k in changes]
    await conn.execute(text(
        f"UPDATE notification_routing_rules SET {', '.join([*sets, 'updated_at = :now'])} "
        "WHERE tenant_id = :t AND route_id = CAST(:r AS uuid)"),
        {**changes, "t": tenant_id, "r": route_id, "now": now})


async def delete_route(conn: AsyncConnection, tenant_id: str, route_id: str) -> None:
    """Delete a routing rule; jobs it already made stay in the queue and the delivery log."""
    deleted = await conn.execute(text(
        "DELETE FROM notification_routing_rules WHERE tenant_id = :t AND route_id = CAST(:r AS uuid)"),
        {"t": tenant_id, "r": route_id})
    if deleted.rowcount == 0:
        raise NotFound(f"routing rule {route_id} not found", details={"field": "route_id"})
