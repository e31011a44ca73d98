"""Account notices: messages about a tenant's account (not about an alert) to people's contact methods.

A notice travels the same outbox as alert notifications (`notification_jobs`, drained by `pulse deliver`, with its
retries and dead letters), carried as an AlertEventMessage so every channel renders it: `alert_type` names the
subject (e.g. SUBSCRIPTION), `event_kind` what happened (e.g. SUBSCRIPTION_GRACE), `alert_id` is the subject's id.
The job row itself refers to no alert (`alert_id` NULL), so a notice never waits behind an alert's other events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.notify.routing import enqueue_direct
from pulse.notify.schemas import AlertEventMessage


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
    return await enqueue_direct(conn, msg, key=key, contact_id=contact_id, now=now, of_alert=False)
