"""Subscription lifecycle with a controlled clock: each transition audited and announced to the tenant's admins,
reminders once per threshold, add-ons following their MAIN, renewal and conversion by operators, delivery."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse import scheduler
from pulse.clock import FrozenClock
from pulse.db import operator_tx, system_tx
from pulse.errors import Conflict, ValidationError
from pulse.fleet.lifecycle import SubscriptionState, next_step, reminder_due, run_lifecycle
from pulse.fleet.operator.subscriptions import create_subscription, update_subscription
from pulse.fleet.users import create_user
from pulse.notify.service import RetryPolicy
from pulse.notify.worker import Deliverer
from pulse.oncall.people.contacts import create_contact_method
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
EXPIRE_AFTER = 30


def state(**fields: Any) -> SubscriptionState:
    base = SubscriptionState(subscription_id="s", tenant_id="t", kind="MAIN", status="ACTIVE", term_end_at=T0,
                             grace_days=14, status_changed_at=T0 - 100 * DAY)
    return replace(base, **fields)


@pytest.mark.parametrize(("sub", "now", "expected"), [
    (state(), T0 - timedelta(seconds=1), None),
    (state(), T0, ("GRACE", "TERM_ENDED")),
    (state(kind="TEMPORARY"), T0, ("EXPIRED", "TERM_ENDED")),
    (state(kind="TRIAL", status="TRIAL"), T0, ("EXPIRED", "TRIAL_ENDED")),
    (state(status="GRACE"), T0 + 14 * DAY - timedelta(seconds=1), None),
    (state(status="GRACE"), T0 + 14 * DAY, ("SUSPENDED", "GRACE_ENDED")),
    (state(status="SUSPENDED"), T0 + 44 * DAY - timedelta(seconds=1), None),
    (state(status="SUSPENDED"), T0 + 44 * DAY, ("EXPIRED", "SUSPENSION_ENDED")),
    (state(status="SUSPENDED", term_end_at=T0 + 100 * DAY), T0 + 60 * DAY, None),  # operator's, term running
    (state(term_end_at=None), T0 + 1000 * DAY, None),
    (state(kind="ADDON", parent_status="SUSPENDED"), T0 - DAY, ("SUSPENDED", "PARENT_SUSPENDED")),
    (state(kind="ADDON", status="SUSPENDED", parent_status="EXPIRED"), T0 - DAY, ("EXPIRED", "PARENT_EXPIRED")),
    (state(kind="ADDON", parent_status="GRACE"), T0 - DAY, None),
])
def test_the_rules(sub: SubscriptionState, now: datetime, expected: tuple[str, str] | None) -> None:
    step = next_step(sub, now, expire_after_days=EXPIRE_AFTER)
    assert (None if step is None else (step.status, step.reason)) == expected


def test_reminders_fire_once_per_threshold_nearest_first() -> None:
    end = T0 + 40 * DAY
    assert reminder_due(state(term_end_at=end), T0) is None
    assert reminder_due(state(term_end_at=end), end - 30 * DAY) == 30
    assert reminder_due(state(term_end_at=end, last_reminder_days=30), end - 20 * DAY) is None
    assert reminder_due(state(term_end_at=end, last_reminder_days=30), end - 3 * DAY) == 7  # 14 was missed
    assert reminder_due(state(term_end_at=end, last_reminder_days=7), end - timedelta(hours=1)) == 1
    assert reminder_due(state(term_end_at=end, last_reminder_days=1), end - timedelta(hours=1)) is None
    assert reminder_due(state(term_end_at=end, status="GRACE"), end - DAY) is None
    short = state(term_start_at=end - 10 * DAY, term_end_at=end)  # a 10-day term: 30 and 14 were before it began
    assert reminder_due(short, end - 10 * DAY) is None
    assert reminder_due(short, end - 7 * DAY) == 7


# --- against the database ----------------------------------------------------------------------------------------

async def _tenant_with_admin(engine: AsyncEngine, settings: Settings, hook_url: str = "http://127.0.0.1:9/never-called",
                             **subscription: Any) -> tuple[TenantRef, str]:
    """A tenant whose MAIN subscription has the given fields, and a tenant admin with one webhook contact method
    (plus a customer with one, who must hear nothing). Returns the tenant and the admin's contact id."""
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        sets = ", ".join(f"{k} = :{k}" for k in subscription)
        if sets:
            await conn.execute(text(f"UPDATE subscriptions SET {sets} WHERE subscription_id = CAST(:s AS uuid)"),
                               {**subscription, "s": tenant.subscription_id})
        admin = await create_user(conn, tenant_id=tenant.tenant_id, email=f"admin@{tenant.tenant_id}.test",
                                  password="a-long-password", roles=["tenant-admin"])
        member = await create_user(conn, tenant_id=tenant.tenant_id, email=f"member@{tenant.tenant_id}.test",
                                   password="a-long-password", roles=["customer"])
        contact = await create_contact_method(conn, tenant.tenant_id, str(admin), kind="WEBHOOK", address=hook_url,
                                              secrets={"secret": "s" * 20}, settings=settings, now=T0)
        await create_contact_method(conn, tenant.tenant_id, str(member), kind="WEBHOOK", address=hook_url,
                                    secrets={"secret": "s" * 20}, settings=settings, now=T0)
    return tenant, contact


async def _run(engine: AsyncEngine, tenant: TenantRef, now: datetime) -> tuple[int, int]:
    async with system_tx(engine) as conn:
        run = await run_lifecycle(conn, now=now, expire_after_days=EXPIRE_AFTER, tenant_ids=[tenant.tenant_id])
    return run.transitions, run.reminders


async def _status(engine: AsyncEngine, subscription_id: str) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text("SELECT status FROM subscriptions WHERE subscription_id = CAST(:s AS "
                                            "uuid)"), {"s": subscription_id})).scalar_one())


async def _audit(engine: AsyncEngine, tenant: TenantRef) -> list[tuple[str, str, dict[str, Any]]]:
    async with system_tx(engine) as conn:
        rows = (await conn.execute(text("SELECT actor, action, details FROM tenant_audit_log WHERE tenant_id = :t "
                                        "ORDER BY audit_id"), {"t": tenant.tenant_id})).all()
    return [(r.actor, r.action, dict(r.details)) for r in rows]


async def _jobs(engine: AsyncEngine, tenant: TenantRef) -> list[tuple[str, str, dict[str, Any]]]:
    async with system_tx(engine) as conn:
        rows = (await conn.execute(text("SELECT contact_id::text, event_kind, payload FROM notification_jobs "
                                        "WHERE tenant_id = :t ORDER BY created_at, job_id"),
                                   {"t": tenant.tenant_id})).all()
    return [(r.contact_id, r.event_kind, dict(r.payload)) for r in rows]


async def test_main_subscription_walks_active_grace_suspended_expired_each_step_audited_and_announced(
        engine: AsyncEngine, settings: Settings) -> None:
    end = T0 + 40 * DAY
    tenant, contact = await _tenant_with_admin(engine, settings, term_end_at=end, grace_days=14)
    await make_device(engine, tenant)
    sub = tenant.subscription_id

    assert await _run(engine, tenant, end - 31 * DAY) == (0, 0)
    assert await _run(engine, tenant, end - 30 * DAY) == (0, 1)
    assert await _run(engine, tenant, end - 29 * DAY) == (0, 0), "a reminder is sent once"
    assert await _run(engine, tenant, end - 14 * DAY) == (0, 1)
    assert await _run(engine, tenant, end - 7 * DAY) == (0, 1)
    assert await _run(engine, tenant, end - DAY) == (0, 1)
    assert await _status(engine, sub) == "ACTIVE"

    assert await _run(engine, tenant, end) == (1, 0)
    assert await _status(engine, sub) == "GRACE"
    assert await _run(engine, tenant, end + 13 * DAY) == (0, 0)
    assert await _run(engine, tenant, end + 14 * DAY) == (1, 0)
    assert await _status(engine, sub) == "SUSPENDED"
    assert await _run(engine, tenant, end + 14 * DAY + (EXPIRE_AFTER - 1) * DAY) == (0, 0)
    assert await _run(engine, tenant, end + 14 * DAY + EXPIRE_AFTER * DAY) == (1, 0)
    assert await _status(engine, sub) == "EXPIRED"
    assert await _run(engine, tenant, end + 400 * DAY) == (0, 0)

    audit = await _audit(engine, tenant)
    assert [(a[1], a[2].get("days_before"), a[2].get("from"), a[2].get("to"), a[2].get("reason")) for a in audit] == [
        ("subscription.reminder_sent", 30, None, None, None),
        ("subscription.reminder_sent", 14, None, None, None),
        ("subscription.reminder_sent", 7, None, None, None),
        ("subscription.reminder_sent", 1, None, None, None),
        ("subscription.status_changed", None, "ACTIVE", "GRACE", "TERM_ENDED"),
        ("subscription.status_changed", None, "GRACE", "SUSPENDED", "GRACE_ENDED"),
        ("subscription.status_changed", None, "SUSPENDED", "EXPIRED", "SUSPENSION_ENDED"),
    ]
    assert {a[0] for a in audit} == {"pulse schedule"} and {a[2]["subscription_id"] for a in audit} == {sub}

    jobs = await _jobs(engine, tenant)
    assert [(j[0], j[1]) for j in jobs] == [(contact, "SUBSCRIPTION_REMINDER")] * 4 + [
        (contact, "SUBSCRIPTION_GRACE"), (contact, "SUBSCRIPTION_SUSPENDED"), (contact, "SUBSCRIPTION_EXPIRED")]
    grace = jobs[4][2]
    assert grace["alert_id"] == sub and grace["alert_type"] == "SUBSCRIPTION" and grace["status"] == "GRACE"
    assert "grace period until" in grace["title"] and "1 device(s)" in grace["summary"]
    assert "grace period ended without a renewal" in jobs[5][2]["summary"]


async def test_trial_expires_unless_converted_and_temporary_expires_without_grace(engine: AsyncEngine,
                                                                                   settings: Settings) -> None:
    end = T0 + 10 * DAY
    trial, _ = await _tenant_with_admin(engine, settings, kind="TRIAL", status="TRIAL", term_end_at=end)
    assert await _run(engine, trial, end) == (1, 0)
    assert await _status(engine, trial.subscription_id) == "EXPIRED"

    converted, _ = await _tenant_with_admin(engine, settings, kind="TRIAL", status="TRIAL", term_end_at=end)
    async with operator_tx(engine) as conn:
        sub = await update_subscription(conn, converted.subscription_id,
                                        {"kind": "MAIN", "expires_at": end + 365 * DAY}, now=T0, actor="op@x.test")
    assert (sub.kind, sub.status) == ("MAIN", "ACTIVE")
    assert await _run(engine, converted, end) == (0, 0)
    assert (await _audit(engine, converted))[-1][:2] == ("op@x.test", "subscription.status_changed")
    assert (await _audit(engine, converted))[-1][2]["reason"] == "CONVERTED"

    async with operator_tx(engine) as conn:
        temporary = await create_subscription(conn, trial.tenant_id, kind="TEMPORARY", device_limit=5,
                                              expires_at=end + DAY, now=T0)
    assert await _run(engine, trial, end + DAY) == (1, 0)
    assert await _status(engine, temporary.subscription_id) == "EXPIRED"


async def test_addon_follows_its_main_down_and_back_after_renewal(engine: AsyncEngine, settings: Settings) -> None:
    end = T0 + 20 * DAY
    tenant, _ = await _tenant_with_admin(engine, settings, term_end_at=end, grace_days=0)
    async with operator_tx(engine) as conn:
        addon = await create_subscription(conn, tenant.tenant_id, kind="ADDON", device_limit=10,
                                          parent_subscription_id=tenant.subscription_id, now=T0)
        own = await create_subscription(conn, tenant.tenant_id, kind="ADDON", device_limit=10,
                                        parent_subscription_id=tenant.subscription_id, now=T0)
    async with operator_tx(engine) as conn:  # an operator suspends one add-on on its own
        await update_subscription(conn, own.subscription_id, {"status": "SUSPENDED"}, now=T0 + DAY)

    assert await _run(engine, tenant, end) == (2, 0)  # MAIN ACTIVE → GRACE → SUSPENDED (0 grace days)
    assert await _status(engine, tenant.subscription_id) == "SUSPENDED"
    assert await _status(engine, addon.subscription_id) == "SUSPENDED"

    async with operator_tx(engine) as conn:  # renewal
        renewed = await update_subscription(conn, tenant.subscription_id, {"expires_at": end + 365 * DAY},
                                            now=end + DAY, actor="op@x.test")
    assert renewed.status == "ACTIVE"
    assert await _status(engine, addon.subscription_id) == "ACTIVE", "resumed with its parent"
    assert await _status(engine, own.subscription_id) == "SUSPENDED", "the operator's suspension stands"
    reasons = [(a[2]["subscription_id"], a[2]["to"], a[2]["reason"]) for a in await _audit(engine, tenant)
               if a[1] == "subscription.status_changed"]
    assert reasons == [
        (own.subscription_id, "SUSPENDED", "OPERATOR"),
        (tenant.subscription_id, "GRACE", "TERM_ENDED"), (tenant.subscription_id, "SUSPENDED", "GRACE_ENDED"),
        (addon.subscription_id, "SUSPENDED", "PARENT_SUSPENDED"),
        (tenant.subscription_id, "ACTIVE", "RENEWED"), (addon.subscription_id, "ACTIVE", "PARENT_RESUMED")]
    assert len([j for j in await _jobs(engine, tenant) if j[1] != "SUBSCRIPTION_REMINDER"]) == len(reasons)


async def test_operator_checks_on_kind_and_parent(engine: AsyncEngine, settings: Settings) -> None:
    tenant, _ = await _tenant_with_admin(engine, settings)
    async with operator_tx(engine) as conn:
        temporary = await create_subscription(conn, tenant.tenant_id, kind="TEMPORARY", device_limit=5,
                                              expires_at=T0 + DAY, now=T0)
    with pytest.raises(ValidationError) as exc:
        async with operator_tx(engine) as conn:
            await create_subscription(conn, tenant.tenant_id, kind="ADDON", device_limit=1, now=T0,
                                      parent_subscription_id=temporary.subscription_id)
    assert exc.value.field == "parent_subscription_id" and "MAIN" in exc.value.message
    with pytest.raises(ValidationError) as exc:
        async with operator_tx(engine) as conn:
            await update_subscription(conn, tenant.subscription_id, {"kind": "TRIAL"}, now=T0)
    assert exc.value.field == "kind"
    trial, _ = await _tenant_with_admin(engine, settings, kind="TRIAL", status="TRIAL")
    async with operator_tx(engine) as conn:
        await create_subscription(conn, trial.tenant_id, kind="MAIN", device_limit=5, now=T0)
    with pytest.raises(Conflict):
        async with operator_tx(engine) as conn:
            await update_subscription(conn, trial.subscription_id, {"kind": "MAIN"}, now=T0)


async def test_a_notice_reaches_the_admins_webhook_through_the_deliverer(engine: AsyncEngine, settings: Settings,
                                                                         receiver: Any) -> None:
    delivered = {"channel_type": "WEBHOOK", "outcome": "delivered"}
    sent_before = prometheus_client.REGISTRY.get_sample_value("pulse_deliver_attempts_total", delivered) or 0.0
    now = datetime.now(UTC)
    tenant, _ = await _tenant_with_admin(engine, settings, hook_url=receiver.url, term_end_at=now - DAY)
    assert await _run(engine, tenant, now) == (1, 0)
    deliverer = Deliverer(engine, settings, clock=FrozenClock(now + timedelta(seconds=1)),
                          retry=RetryPolicy(base_s=0.05))
    ours: list[dict[str, Any]] = []
    try:
        for _ in range(20):  # other tests' due jobs may share the queue; each round sends up to a batch
            await deliverer.deliver_once()
            ours = [b for b in (json.loads(body) for _, body in receiver.requests) if b["tenant_id"] == tenant.tenant_id]
            if ours:
                break
    finally:
        await deliverer.aclose()
    assert [(b["event"], b["alert"]["type"], b["alert"]["status"]) for b in ours] == [
        ("SUBSCRIPTION_GRACE", "SUBSCRIPTION", "GRACE")]
    assert (prometheus_client.REGISTRY.get_sample_value("pulse_deliver_attempts_total", delivered) or 0) > sent_before


async def test_the_scheduler_runs_the_lifecycle_job(engine: AsyncEngine, settings: Settings) -> None:
    job = next(j for j in scheduler.JOBS if j.name == "subscription_lifecycle")
    assert job.every == timedelta(minutes=10)
    tenant, _ = await _tenant_with_admin(engine, settings, term_end_at=datetime.now(UTC) - DAY)

    async def only_this_tenant(ctx: scheduler.JobContext) -> str:  # the job's body, kept to the test's tenant
        run = await run_lifecycle(ctx.conn, now=ctx.now, expire_after_days=ctx.settings.subscription_expire_after_days,
                                  tenant_ids=[tenant.tenant_id])
        return run.summary()

    status = await scheduler.run_job(engine, replace(job, name=f"lifecycle-{tenant.tenant_id}", body=only_this_tenant),
                                     settings, covers=datetime.now(UTC), clock=FrozenClock(datetime.now(UTC)))
    assert status == "ok"
    assert await _status(engine, tenant.subscription_id) == "GRACE"
    assert [j[1] for j in await _jobs(engine, tenant)] == ["SUBSCRIPTION_GRACE"]
