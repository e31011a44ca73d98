"""Escalation steps: claim due alerts, fire the next level once, schedule the one after."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.service import record_event

log = logging.getLogger("pulse.escalate")

_CLAIM = text(
    "SELECT alert_id, tenant_id, fingerprint, alert_type, rule_id, device_id, site_id, severity, status, title, "
    "  summary, metric, last_value, opened_at, escalation_policy_id, escalation_level, escalation_repeat, "
    "  escalation_generation "
    "FROM alerts WHERE next_escalation_at <= :now AND status = 'OPEN' "
    "  AND (silenced_until IS NULL OR silenced_until <= :now) "
    "ORDER BY next_escalation_at LIMIT :limit FOR UPDATE SKIP LOCKED")


async def fire_due_escalations(conn: AsyncConnection, now: datetime, *, limit: int = 100,
                               actor: str = "escalation", base_url: str = "") -> int:
    """Fire every due step visible now; caller commits. Rows stay locked until then, so a twin skips them."""
    alerts = (await conn.execute(_CLAIM, {"now": now, "limit": limit})).all()
    for alert in alerts:
        await _fire_step(conn, alert, now, actor=actor, base_url=base_url)
    return len(alerts)


async def _fire_step(conn: AsyncConnection, alert: Any, now: datetime, *, actor: str, base_url: str) -> None:
    levels = (await conn.execute(text(
        "SELECT position, delay_minutes, targets FROM escalation_levels WHERE policy_id = :p ORDER BY position"),
        {"p": alert.escalation_policy_id})).all()
    policy = (await conn.execute(text("SELECT repeat_count FROM escalation_policies WHERE policy_id = :p"),
                                 {"p": alert.escalation_policy_id})).first()
    if not levels or policy is None:
        await conn.execute(text("UPDATE alerts SET next_escalation_at = NULL WHERE alert_id = :a"),
                           {"a": alert.alert_id})
        return
    level_no, repeat = alert.escalation_level + 1, alert.escalation_repeat
    if level_no > len(levels):
        level_no, repeat = 1, repeat + 1
    level = levels[level_no - 1]
    if level_no < len(levels):
        next_delay: int | None = levels[level_no].delay_minutes
    elif repeat < policy.repeat_count:
        next_delay = levels[0].delay_minutes
    else:
        next_delay = None
    await conn.execute(text(
        "UPDATE alerts SET escalation_level = :lvl, escalation_repeat = :rep, "
        "  escalation_generation = escalation_generation + 1, updated_at = :now, "
        "  next_escalation_at = CASE WHEN CAST(:delay AS integer) IS NULL THEN NULL "
        "    ELSE CAST(:now AS timestamptz) + make_interval(mins => CAST(:delay AS integer)) END "
        "WHERE alert_id = :a AND escalation_generation = :gen"),
        {"lvl": level_no, "rep": repeat, "now": now, "delay": next_delay, "a": alert.alert_id,
         "gen": alert.escalation_generation})
    await record_event(conn, alert, "ESCALATED", actor=actor, reason=f"level {level_no} reached",
                       details={"level": level_no, "repeat": repeat, "targets": level.targets}, now=now,
                       base_url=base_url)
