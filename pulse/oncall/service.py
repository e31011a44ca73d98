"""Escalation steps: claim due alerts, page whoever the level's targets resolve to now, schedule the next step.

A step is one transaction: the alert row moves to its next level (fenced by `escalation_generation`), the
ESCALATED and PAGED events are written, and every notification job the step creates is inserted with an
idempotency key derived from the step. A twin `pulse escalate` skips rows this one holds (SKIP LOCKED); a crash
before commit leaves nothing behind, so the step is done again, once, by whoever claims it next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.service import alert_message, record_event
from pulse.notify.routing import enqueue_direct
from pulse.oncall.people.paging import get_paging_plan
from pulse.oncall.rotation import on_call_at
from pulse.oncall.schedules.common import load_schedule

log = logging.getLogger("pulse.escalate")

_ALERT = (
    "alert_id, tenant_id, fingerprint, alert_type, rule_id, device_id, site_id, severity, status, title, "
    "summary, metric, last_value, opened_at, escalation_policy_id, escalation_level, escalation_repeat, "
    "escalation_generation")
_CLAIM = text(
    f"SELECT {_ALERT} FROM alerts WHERE next_escalation_at <= :now AND status = 'OPEN' "
    "  AND (silenced_until IS NULL OR silenced_until <= :now) "
    "ORDER BY next_escalation_at LIMIT :limit FOR UPDATE SKIP LOCKED")
_NEXT_DUE = text(
    "SELECT min(greatest(next_escalation_at, coalesce(silenced_until, next_escalation_at))) FROM alerts "
    "WHERE next_escalation_at IS NOT NULL AND status = 'OPEN'")


@dataclass
class Recipient:
    """A person a step pages, and how the step found them (kept in the PAGED event: the audit trail)."""

    user_id: str
    via: dict[str, Any]
    reason: str


@dataclass
class Resolution:
    recipients: list[Recipient] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    unresolved: list[dict[str, Any]] = field(default_factory=list)

    def add(self, recipient: Recipient) -> None:
        if all(r.user_id != recipient.user_id for r in self.recipients):  # one page per person per step
            self.recipients.append(recipient)


async def fire_due_escalations(conn: AsyncConnection, now: datetime, *, limit: int = 100,
                               actor: str = "escalation", base_url: str = "") -> int:
    """Fire every due step visible now; caller commits. Rows stay locked until then, so a twin skips them."""
    alerts = (await conn.execute(_CLAIM, {"now": now, "limit": limit})).all()
    for alert in alerts:
        await _fire_step(conn, alert, now, actor=actor, base_url=base_url)
    return len(alerts)


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    """When the earliest pending step falls due (after any silence), or None when nothing is pending."""
    due: datetime | None = (await conn.execute(_NEXT_DUE)).scalar()
    return due


async def _fire_step(conn: AsyncConnection, alert: Any, now: datetime, *, actor: str, base_url: str) -> None:
    levels = (await conn.execute(text(
        "SELECT p.name, p.repeat_count, l.delay_minutes, l.targets FROM escalation_policies p "
        "JOIN escalation_levels l ON l.policy_id = p.policy_id WHERE p.policy_id = :p ORDER BY l.position"),
        {"p": alert.escalation_policy_id})).all()
    if not levels:
        await conn.execute(text("UPDATE alerts SET next_escalation_at = NULL WHERE alert_id = :a"),
                           {"a": alert.alert_id})
        return
    level_no, repeat = alert.escalation_level + 1, alert.escalation_repeat
    if level_no > len(levels):
        level_no, repeat = 1, repeat + 1
    level = levels[level_no - 1]
    if level_no < len(levels):
        next_delay: int | None = levels[level_no].delay_minutes
    elif repeat < levels[0].repeat_count:
        next_delay = levels[0].delay_minutes
    else:
        next_delay = None
    generation = alert.escalation_generation + 1
    moved = await conn.execute(text(
        "UPDATE alerts SET escalation_level = :lvl, escalation_repeat = :rep, "
        "  escalation_generation = :next_gen, updated_at = :now, "
        "  next_escalation_at = CASE WHEN CAST(:delay AS integer) IS NULL THEN NULL "
        "    ELSE CAST(:now AS timestamptz) + make_interval(mins => CAST(:delay AS integer)) END "
        "WHERE alert_id = :a AND escalation_generation = :gen"),
        {"lvl": level_no, "rep": repeat, "now": now, "delay": next_delay, "a": alert.alert_id,
         "gen": alert.escalation_generation, "next_gen": generation})
    if moved.rowcount == 0:
        return  # another escalator did this step
    targets = level.targets if isinstance(level.targets, list) else []
    found = await _resolve(conn, alert.tenant_id, targets, now, level_no)
    step = f"level {level_no}" + (f" (repeat {repeat})" if repeat else "")
    event_id = await record_event(conn, alert, "ESCALATED", actor=actor, reason=f"{step} of policy '{levels[0].name}'",
                                  details={"level": level_no, "repeat": repeat, "targets": targets,
                                           "paged_users": [r.user_id for r in found.recipients],
                                           "channels": found.channels, "unresolved": found.unresolved},
                                  now=now, base_url=base_url)
    if found.channels:
        msg = await alert_message(conn, alert, "ESCALATED", event_id, now=now, base_url=base_url)
        for channel_id in found.channels:
            await enqueue_direct(conn, msg, key=f"{event_id}:channel:{channel_id}", channel_id=channel_id, now=now)
    for recipient in found.recipients:
        await _page(conn, alert, recipient, now=now, level=level_no, repeat=repeat, generation=generation,
                    actor=actor, base_url=base_url)


async def _resolve(conn: AsyncConnection, tenant_id: str, targets: list[Any], now: datetime,
                   level_no: int) -> Resolution:
    """Who and what a level's targets mean right now: users as named, schedules by who is on call, channels."""
    found = Resolution()
    for target in targets:
        kind = target.get("type") if isinstance(target, dict) else None
        target_id = str(target.get("id")) if isinstance(target, dict) else ""
        if kind == "user":
            found.add(Recipient(target_id, {"type": "user"}, f"named as a target of level {level_no}"))
        elif kind == "schedule":
            schedule = await load_schedule(conn, tenant_id, target_id, around=now)
            if schedule is None:
                found.unresolved.append({"type": "schedule", "id": target_id, "reason": "schedule not found"})
                continue
            shift = on_call_at(schedule.layers, schedule.overrides, schedule.timezone, now)
            if shift is None:
                found.unresolved.append({"type": "schedule", "id": target_id, "name": schedule.name,
                                         "reason": "nobody is on call"})
                continue
            found.add(Recipient(shift.user_id, {
                "type": "schedule", "schedule_id": schedule.schedule_id, "schedule_name": schedule.name,
                "source": shift.source, "layer_id": shift.layer_id, "layer_name": shift.layer_name,
                "override_id": shift.override_id, "on_call_until": shift.ends_at.isoformat()},
                f"on call in schedule '{schedule.name}' until {shift.ends_at.isoformat()}: {shift.reason}"))
        elif kind == "channel":
            if target_id not in found.channels:
                found.channels.append(target_id)
        else:
            found.unresolved.append({"target": target, "reason": "not a user, schedule or channel target"})
    if found.channels:  # a channel deleted since the policy was saved is reported, not paged
        live = set((await conn.execute(text(
            "SELECT channel_id::text FROM notification_channels WHERE tenant_id = :t AND is_enabled "
            "AND channel_id::text = ANY(:ids)"), {"t": tenant_id, "ids": found.channels})).scalars())
        for channel_id in [c for c in found.channels if c not in live]:
            found.unresolved.append({"type": "channel", "id": channel_id, "reason": "channel missing or disabled"})
        found.channels = [c for c in found.channels if c in live]
    return found


async def _page(conn: AsyncConnection, alert: Any, recipient: Recipient, *, now: datetime, level: int, repeat: int,
                generation: int, actor: str, base_url: str) -> None:
    """Record who is paged and why, then one job per contact method their notification rules call for."""
    user = (await conn.execute(text(
        "SELECT email, display_name, is_active FROM users WHERE tenant_id = :t AND user_id::text = :u"),
        {"t": alert.tenant_id, "u": recipient.user_id})).first()
    plan = (await get_paging_plan(conn, alert.tenant_id, recipient.user_id, alert.severity)
            if user is not None and user.is_active else [])
    contacts = [{"contact_id": str(p.contact_id), "kind": p.kind, "delay_minutes": p.delay_minutes} for p in plan]
    reason = recipient.reason
    if user is None:
        reason += "; no such user in this tenant, nobody was notified"
    elif not user.is_active:
        reason += "; the user is deactivated, nobody was notified"
    elif not plan:
        reason += f"; no enabled contact method for severity {alert.severity}, nobody was notified"
    event_id = await record_event(conn, alert, "PAGED", actor=actor, reason=reason, details={
        "level": level, "repeat": repeat, "user_id": recipient.user_id, "user_email": user.email if user else None,
        "user_name": user.display_name if user else None, "via": recipient.via, "contacts": contacts},
        now=now, base_url=base_url)
    if not plan:
        log.warning("page reached nobody", extra={"alert_id": str(alert.alert_id), "user_id": recipient.user_id,
                                                  "level": level})
        return
    msg = await alert_message(conn, alert, "PAGED", event_id, now=now, base_url=base_url)
    for p in plan:
        rule = p.notification_rule_id or "default"
        await enqueue_direct(conn, msg, key=f"page:{alert.alert_id}:{generation}:{p.contact_id}:{rule}",
                             contact_id=str(p.contact_id), now=now,
                             due_at=now + timedelta(minutes=p.delay_minutes))
