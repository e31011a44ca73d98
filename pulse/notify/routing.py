"""Routing: an alert change becomes notification jobs for every matching route, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import NotFound, ValidationError
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


async def create_route(conn: AsyncConnection, tenant_id: str, *, name: str, channel_id: str, position: int = 0,
                       min_severity: int = 1, alert_types: list[str] | None = None,
                       event_kinds: list[str] | None = None, site_ids: list[str] | None = None,
                       group_ids: list[str] | None = None, tags: list[str] | None = None,
                       device_id_prefix: str | None = None, repeat_interval_s: int = 0,
                       is_final: bool = False) -> str:
    """Add a routing rule; errors name the field."""
    if not name or len(name) > 200:
        raise ValidationError("must be 1-200 characters", field="name")
    if not 1 <= min_severity <= 5:
        raise ValidationError("must be 1 (info) to 5 (critical)", field="min_severity")
    kinds = event_kinds if event_kinds is not None else ["OPENED", "ACKNOWLEDGED", "ESCALATED", "CLOSED"]
    unknown = [k for k in kinds if k not in EVENT_KINDS]
    if unknown:
        raise ValidationError(f"unknown event kind {unknown[0]}; use {', '.join(EVENT_KINDS)}", field="event_kinds")
    if repeat_interval_s < 0:
        raise ValidationError("must be >= 0", field="repeat_interval_s")
    exists = (await conn.execute(text(
        "SELECT 1 FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid)"),
        {"t": tenant_id, "c": channel_id})).first()
    if not exists:
        raise NotFound(f"channel {channel_id} not found", details={"field": "channel_id"})
    return str((await conn.execute(text(
        "INSERT INTO notification_routing_rules (tenant_id, name, position, channel_id, min_severity, alert_types, "
        "  event_kinds, site_ids, group_ids, tags, device_id_prefix, repeat_interval_s, is_final) "
        "VALUES (:t, :n, :pos, CAST(:c AS uuid), :sev, :types, :kinds, :sites, CAST(:groups AS uuid[]), :tags, "
        "  :prefix, :rep, :final) RETURNING route_id::text"),
        {"t": tenant_id, "n": name, "pos": position, "c": channel_id, "sev": min_severity,
         "types": alert_types or [], "kinds": kinds, "sites": site_ids or [], "groups": group_ids or [],
         "tags": tags or [], "prefix": device_id_prefix, "rep": repeat_interval_s, "final": is_final})).scalar_one())
