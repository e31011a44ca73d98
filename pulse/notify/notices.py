"""Account notices: messages about a tenant's account (not about an alert) to people's contact methods.

A notice travels the same outbox as alert notifications (`notification_jobs`, drained by `pulse deliver`, with its
retries and dead letters), carried as an AlertEventMessage so every channel renders it: `alert_type` names the
subject (e.g. SUBSCRIPTION), `event_kind` what happened (e.g. SUBSCRIPTION_GRACE), `alert_id` is the subject's id.
The job row itself refers to no alert (`alert_id` NULL), so a notice never waits behind an alert's other events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.notify.routing import JOBS_CHANNEL
from pulse.notify.schemas import AlertEventMessage

_INSERT_NOTICE = text(
    "INSERT INTO notification_jobs (tenant_id, contact_id, event_id, event_kind, payload, idempotency_key, "
    "  next_attempt_at, created_at, updated_at) "
    "VALUES (:t, CAST(:m AS uuid), 0, :k, CAST(:p AS jsonb), :key, :now, :now, :now) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING job_id::text")


def notice_message(*, tenant_id: str, subject_type: str, subject_id: str, event_kind: str, severity: int,
                   status: str, title: str, summary: str, now: datetime, since: datetime | None = None,
                   value: Any = None) -> AlertEventMessage:
    """The message of one notice: `subject_type`/`subject_id` say what it is about (a subscription, say)."""
    return AlertEventMessage(
        tenant_id=tenant_id, alert_id=subject_id, event_id=0, event_kind=event_kind,
        fingerprint=f"{subject_type}:{subject_id}", alert_type=subject_type, severity=severity, status=status,
        title=title, summary=summary, value=value, opened_at=since or now, occurred_at=now)


async def enqueue_notice(conn: AsyncConnection, msg: AlertEventMessage, *, contact_id: str, key: str,
                         now: datetime) -> str | None:
    """One job sending `msg` to a person's contact method; `key` makes it once-only (None when it existed)."""
    job_id = (await conn.execute(_INSERT_NOTICE, {
        "t": msg.tenant_id, "m": contact_id, "k": msg.event_kind, "p": msgspec.json.encode(msg).decode(),
        "key": key, "now": now})).scalar()
    if job_id:
        await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": JOBS_CHANNEL})
    return str(job_id) if job_id else None
