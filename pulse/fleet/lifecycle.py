"""Subscription lifecycle: the status rules over a subscription's term, status changes, term-end reminders.

Statuses and what moves a subscription between them (`next_step`, run by `pulse schedule` every few minutes):

- TRIAL → EXPIRED when the trial's term ends (TRIAL_ENDED), unless an operator converted it to MAIN first.
- ACTIVE → GRACE when the term ends (TERM_ENDED); a TEMPORARY subscription goes straight to EXPIRED instead.
- GRACE → SUSPENDED `grace_days` after the term end (GRACE_ENDED): ingest refuses its devices from then on.
- SUSPENDED → EXPIRED `expire_after_days` after the grace period ended (SUSPENSION_ENDED). An operator's
  suspension of a subscription whose term has not ended never expires by itself.
- An ADDON follows its MAIN parent down: it is suspended with it (PARENT_SUSPENDED) and expires with it
  (PARENT_EXPIRED); when the parent is usable again, an add-on that its suspension suspended is resumed
  (PARENT_RESUMED). An add-on suspended on its own stays suspended.

Every status change, by the job or an operator, goes through `change_status`: one UPDATE, `pulse_device_changed`
for the subscription's devices (ingest drops its cached records at commit), a tenant_audit_log row, and a notice
to every tenant admin (pulse.fleet.notices). Reminders go out 30, 14, 7 and 1 days before the term ends, each once
per term (`last_reminder_days`, reset when the term changes; the notice key includes the term end).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import NotFound
from pulse.fleet.notices import announce_to_admins, subscription_notice, write_tenant_audit
from pulse.fleet.service import DEVICE_CHANGED_CHANNEL

log = logging.getLogger("pulse.fleet.lifecycle")

REMINDER_DAYS = (30, 14, 7, 1)
USABLE_STATUSES = ("TRIAL", "ACTIVE", "GRACE")  # ingest accepts devices of these (see pulse.ingest.validate)
JOB_ACTOR = "pulse schedule"
MAX_STEPS = 4
"""Steps one subscription may take in one run: a run after a long pause catches up (ACTIVE → GRACE → SUSPENDED)."""


@dataclass(frozen=True)
class SubscriptionState:
    """What the lifecycle rules look at; `parent_status` is the ADDON parent's status (None without a parent)."""

    subscription_id: str
    tenant_id: str
    kind: str
    status: str
    term_end_at: datetime | None
    grace_days: int
    status_changed_at: datetime
    last_reminder_days: int | None = None
    term_start_at: datetime | None = None
    parent_status: str | None = None
    device_count: int = 0

    @property
    def grace_end_at(self) -> datetime | None:
        return None if self.term_end_at is None else self.term_end_at + timedelta(days=self.grace_days)


@dataclass(frozen=True)
class Step:
    """A status change the rules call for, and why."""

    status: str
    reason: str


def next_step(sub: SubscriptionState, now: datetime, *, expire_after_days: int) -> Step | None:
    """The status change due at `now`, or None. Parent-driven changes of an ADDON come first."""
    if sub.kind == "ADDON" and sub.parent_status is not None:
        if sub.parent_status == "EXPIRED" and sub.status != "EXPIRED":
            return Step("EXPIRED", "PARENT_EXPIRED")
        if sub.parent_status == "SUSPENDED" and sub.status in USABLE_STATUSES:
            return Step("SUSPENDED", "PARENT_SUSPENDED")
    end, grace_end = sub.term_end_at, sub.grace_end_at
    if end is None or grace_end is None:
        return None
    if sub.status == "TRIAL" and now >= end:
        return Step("EXPIRED", "TRIAL_ENDED")
    if sub.status == "ACTIVE" and now >= end:
        return Step("EXPIRED" if sub.kind == "TEMPORARY" else "GRACE", "TERM_ENDED")
    if sub.status == "GRACE" and now >= grace_end:
        return Step("SUSPENDED", "GRACE_ENDED")
    if sub.status == "SUSPENDED" and now >= grace_end + timedelta(days=expire_after_days):
        return Step("EXPIRED", "SUSPENSION_ENDED")
    return None


def reminder_due(sub: SubscriptionState, now: datetime) -> int | None:
    """The reminder (days before the term end) to send now, or None: the nearest threshold passed, once per term.
    Thresholds before the term started do not count (a 10-day trial is reminded 7 and 1 days before its end)."""
    if sub.status not in ("TRIAL", "ACTIVE") or sub.term_end_at is None or now >= sub.term_end_at:
        return None
    end = sub.term_end_at
    passed = [d for d in REMINDER_DAYS if end - timedelta(days=d) <= now
              and (sub.term_start_at is None or end - timedelta(days=d) > sub.term_start_at)]
    if not passed:
        return None
    days = min(passed)
    if sub.last_reminder_days is not None and sub.last_reminder_days <= days:
        return None
    return days


# --- status changes ----------------------------------------------------------------------------------------------

_STATE_SQL = text(
    "SELECT s.subscription_id::text, s.tenant_id, s.kind, s.status, s.term_end_at, s.grace_days, "
    "  s.status_changed_at, s.last_reminder_days, s.term_start_at, p.status AS parent_status, "
    "  (SELECT count(*) FROM devices d WHERE d.subscription_id = s.subscription_id "
    "     AND d.status <> 'DECOMMISSIONED') AS device_count "
    "FROM subscriptions s LEFT JOIN subscriptions p ON p.subscription_id = s.parent_subscription_id "
    "WHERE s.subscription_id = CAST(:s AS uuid) FOR UPDATE OF s")


async def load_state(conn: AsyncConnection, subscription_id: str) -> SubscriptionState:
    """The subscription's state, its row locked until the caller's transaction ends; NotFound when unknown."""
    row = (await conn.execute(_STATE_SQL, {"s": subscription_id})).first()
    if row is None:
        raise NotFound(f"subscription {subscription_id} not found", details={"field": "subscription_id"})
    return SubscriptionState(**row._mapping)


async def notify_devices_changed(conn: AsyncConnection, *, tenant_id: str | None = None,
                                 subscription_id: str | None = None) -> int:
    """Announce every device of a tenant (or of one subscription) on `pulse_device_changed`; returns how many.

    One statement, not a round trip per device; PostgreSQL delivers the notifications at commit and every
    ingest instance drops those devices from its auth cache.
    """
    if subscription_id is not None:
        where, params = "subscription_id = CAST(:s AS uuid)", {"s": subscription_id}
    elif tenant_id is not None:
        where, params = "tenant_id = :t", {"t": tenant_id}
    else:
        raise ValueError("notify_devices_changed needs a tenant_id or a subscription_id")
    result = await conn.execute(text(
        f"WITH sent AS (SELECT pg_notify(:c, tenant_id || '/' || device_id) FROM devices WHERE {where}) "
        f"SELECT count(*) FROM sent"), {**params, "c": DEVICE_CHANGED_CHANNEL})
    return int(result.scalar_one())


def _utc(at: datetime | None) -> str:
    return "never" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"


def _describe(sub: SubscriptionState, status: str, reason: str, expire_after_days: int) -> tuple[int, str, str]:
    """(severity, title, summary) of the notice announcing `status`."""
    name = f"{sub.kind} subscription {sub.subscription_id}"
    devices = f"{sub.device_count} device(s)"
    if status == "GRACE":
        return 3, f"{name}: term ended, grace period until {_utc(sub.grace_end_at)}", (
            f"The term ended on {_utc(sub.term_end_at)}. Its {devices} keep working until the grace period ends; "
            f"renew before then, or the subscription is suspended and their messages are refused.")
    if status == "SUSPENDED":
        why = {"GRACE_ENDED": "the grace period ended without a renewal",
               "PARENT_SUSPENDED": "its MAIN subscription was suspended"}.get(reason, "the operator suspended it")
        until = ""
        if sub.grace_end_at is not None and reason == "GRACE_ENDED":
            until = f" It expires on {_utc(sub.grace_end_at + timedelta(days=expire_after_days))} unless renewed."
        return 4, f"{name} suspended", f"Suspended because {why}. Messages from its {devices} are refused.{until}"
    if status == "EXPIRED":
        why = {"TRIAL_ENDED": "the trial ended without being converted",
               "TERM_ENDED": "its term ended", "SUSPENSION_ENDED": "it stayed suspended past its renewal period",
               "PARENT_EXPIRED": "its MAIN subscription expired"}.get(reason, "the operator ended it")
        return 4, f"{name} expired", f"Expired because {why}. Messages from its {devices} are refused."
    why = {"RENEWED": "its term was renewed", "CONVERTED": "the trial was converted",
           "PARENT_RESUMED": "its MAIN subscription is active again"}.get(reason, "the operator resumed it")
    return 1, f"{name} is {status}", f"{name} is {status} because {why}; term ends {_utc(sub.term_end_at)}."


async def change_status(conn: AsyncConnection, subscription_id: str, status: str, *, reason: str, actor: str,
                        now: datetime, expire_after_days: int = 30) -> bool:
    """Move a subscription to `status`: audited, announced to the tenant's admins, ingest told at commit, and
    add-ons following a MAIN parent. Returns False (and does nothing) when it is in that status already."""
    sub = await load_state(conn, subscription_id)
    if sub.status == status:
        return False
    await conn.execute(text(
        "UPDATE subscriptions SET status = :st, status_changed_at = :now, updated_at = :now "
        "WHERE subscription_id = CAST(:s AS uuid)"), {"st": status, "now": now, "s": subscription_id})
    await notify_devices_changed(conn, subscription_id=subscription_id)
    await write_tenant_audit(conn, sub.tenant_id, actor=actor, action="subscription.status_changed",
                             resource=f"subscriptions/{subscription_id}", at=now, details={
                                 "subscription_id": subscription_id, "kind": sub.kind, "from": sub.status,
                                 "to": status, "reason": reason})
    severity, title, summary = _describe(sub, status, reason, expire_after_days)
    msg = subscription_notice(tenant_id=sub.tenant_id, subscription_id=subscription_id, kind=sub.kind, event=status,
                              severity=severity, status=status, title=title, summary=summary, now=now,
                              value={"from": sub.status, "to": status, "reason": reason,
                                     "expires_at": sub.term_end_at.isoformat() if sub.term_end_at else None})
    await announce_to_admins(conn, msg, key=f"subscription:{subscription_id}:status:{status}:{now.isoformat()}",
                             now=now)
    log.info("subscription %s: %s -> %s (%s)", subscription_id, sub.status, status, reason,
             extra={"tenant_id": sub.tenant_id, "actor": actor})
    if sub.kind != "ADDON":
        await _cascade_to_addons(conn, sub, status, actor=actor, now=now, expire_after_days=expire_after_days)
    return True


async def _cascade_to_addons(conn: AsyncConnection, parent: SubscriptionState, status: str, *, actor: str,
                             now: datetime, expire_after_days: int) -> None:
    """Suspend or expire the add-ons with their parent; resume those its suspension suspended (same instant)."""
    if status in ("SUSPENDED", "EXPIRED"):
        follows = ("status IN ('TRIAL', 'ACTIVE', 'GRACE')" if status == "SUSPENDED" else "status <> 'EXPIRED'")
        params: dict[str, Any] = {"p": parent.subscription_id}
        step = Step(status, f"PARENT_{status}")
    elif status in USABLE_STATUSES and parent.status == "SUSPENDED":
        follows = "status = 'SUSPENDED' AND status_changed_at = :since"
        params = {"p": parent.subscription_id, "since": parent.status_changed_at}
        step = Step("ACTIVE", "PARENT_RESUMED")
    else:
        return
    addons = (await conn.execute(text(
        f"SELECT subscription_id::text FROM subscriptions WHERE parent_subscription_id = CAST(:p AS uuid) "
        f"AND kind = 'ADDON' AND {follows} ORDER BY created_at"), params)).scalars().all()
    for addon in addons:
        await change_status(conn, addon, step.status, reason=step.reason, actor=actor, now=now,
                            expire_after_days=expire_after_days)


# --- the periodic job --------------------------------------------------------------------------------------------

@dataclass
class LifecycleRun:
    """What one run did."""

    transitions: int = 0
    reminders: int = 0

    def summary(self) -> str:
        return f"{self.transitions} status change(s), {self.reminders} reminder(s)"


async def _send_reminder(conn: AsyncConnection, sub: SubscriptionState, days: int, now: datetime) -> None:
    assert sub.term_end_at is not None  # reminder_due checked it
    await conn.execute(text(
        "UPDATE subscriptions SET last_reminder_days = :d WHERE subscription_id = CAST(:s AS uuid)"),
        {"d": days, "s": sub.subscription_id})
    left = sub.term_end_at - now
    what = "trial" if sub.status == "TRIAL" else "term"
    await write_tenant_audit(conn, sub.tenant_id, actor=JOB_ACTOR, action="subscription.reminder_sent",
                             resource=f"subscriptions/{sub.subscription_id}", at=now, details={
                                 "subscription_id": sub.subscription_id, "kind": sub.kind, "days_before": days,
                                 "expires_at": sub.term_end_at.isoformat()})
    msg = subscription_notice(
        tenant_id=sub.tenant_id, subscription_id=sub.subscription_id, kind=sub.kind, event="REMINDER", severity=2,
        status=sub.status, now=now, value={"days_before": days, "expires_at": sub.term_end_at.isoformat()},
        title=f"{sub.kind} subscription {sub.subscription_id}: {what} ends in {max(left.days, 0)} day(s)",
        summary=f"The {what} ends on {_utc(sub.term_end_at)} ({sub.device_count} device(s)). Renew it to keep "
                f"your devices connected.")
    await announce_to_admins(conn, msg, now=now, key=(
        f"subscription:{sub.subscription_id}:reminder:{days}:{sub.term_end_at.isoformat()}"))


async def run_lifecycle(conn: AsyncConnection, *, now: datetime, expire_after_days: int,
                        tenant_ids: list[str] | None = None) -> LifecycleRun:
    """Apply every due status change and send due reminders, MAIN and other parents before add-ons; only for
    `tenant_ids` when given.

    Caller owns the transaction; rows are locked one subscription at a time as they are handled.
    """
    only = "" if tenant_ids is None else " AND s.tenant_id = ANY(CAST(:tenants AS text[]))"
    candidates = (await conn.execute(text(
        "SELECT s.subscription_id::text FROM subscriptions s JOIN tenants t USING (tenant_id) "
        "WHERE t.status <> 'DELETED' AND s.status <> 'EXPIRED' "
        "  AND (s.kind = 'ADDON' OR (s.term_end_at IS NOT NULL AND s.term_end_at <= :soon))" + only +
        " ORDER BY (s.kind = 'ADDON'), s.created_at, s.subscription_id"),
        {"soon": now + timedelta(days=max(REMINDER_DAYS)), "tenants": tenant_ids})).scalars().all()
    run = LifecycleRun()
    for subscription_id in candidates:
        for _ in range(MAX_STEPS):
            sub = await load_state(conn, subscription_id)
            step = next_step(sub, now, expire_after_days=expire_after_days)
            if step is None:
                break
            await change_status(conn, subscription_id, step.status, reason=step.reason, actor=JOB_ACTOR, now=now,
                                expire_after_days=expire_after_days)
            run.transitions += 1
        sub = await load_state(conn, subscription_id)
        days = reminder_due(sub, now)
        if days is not None:
            await _send_reminder(conn, sub, days, now)
            run.reminders += 1
    return run
