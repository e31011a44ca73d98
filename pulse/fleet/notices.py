"""What a tenant hears about its subscriptions: a tenant_audit_log row and a notice to each tenant admin.

Recipients are the tenant's active users with the `tenant-admin` role, through each of their enabled contact methods
(email, webhook, Slack, Teams, PagerDuty), as jobs in the notification outbox that `pulse deliver` sends. Every
notice has an idempotency key per contact method, so a run repeated after a crash sends nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.notify.notices import enqueue_notice, notice_message
from pulse.notify.schemas import AlertEventMessage

SUBJECT = "SUBSCRIPTION"

_ADMIN_CONTACTS = text(
    "SELECT m.contact_id::text FROM users u JOIN user_contact_methods m ON m.user_id = u.user_id "
    "WHERE u.tenant_id = :t AND u.is_active AND 'tenant-admin' = ANY(u.roles) AND m.is_enabled "
    "ORDER BY m.contact_id")


async def write_tenant_audit(conn: AsyncConnection, tenant_id: str, *, actor: str, action: str, resource: str,
                             details: dict[str, Any], at: datetime) -> None:
    """One tenant_audit_log row (shown to the tenant in GET /customer/audit-log) in the caller's transaction."""
    await conn.execute(text(
        "INSERT INTO tenant_audit_log (tenant_id, at, actor, action, resource, details) "
        "VALUES (:t, :at, :actor, :action, :resource, CAST(:details AS jsonb))"),
        {"t": tenant_id, "at": at, "actor": actor, "action": action, "resource": resource,
         "details": msgspec.json.encode(details).decode()})


async def announce_to_admins(conn: AsyncConnection, msg: AlertEventMessage, *, key: str, now: datetime) -> list[str]:
    """Queue `msg` to every enabled contact method of the tenant's admins; returns the new job ids.

    `key` identifies the notice; each contact method's job key is `key` plus the contact id.
    """
    contacts = (await conn.execute(_ADMIN_CONTACTS, {"t": msg.tenant_id})).scalars().all()
    jobs = [await enqueue_notice(conn, msg, contact_id=contact_id, key=f"{key}:contact:{contact_id}", now=now)
            for contact_id in contacts]
    return [job for job in jobs if job is not None]


def subscription_notice(*, tenant_id: str, subscription_id: str, kind: str, event: str, severity: int, status: str,
                        title: str, summary: str, now: datetime, value: dict[str, Any]) -> AlertEventMessage:
    """A notice about one subscription; `event` becomes the event kind `SUBSCRIPTION_<event>`."""
    return notice_message(tenant_id=tenant_id, subject_type=SUBJECT, subject_id=subscription_id,
                          event_kind=f"{SUBJECT}_{event}", severity=severity, status=status,
                          title=title, summary=summary, now=now, value={"kind": kind, **value})
