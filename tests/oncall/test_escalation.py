"""Escalation on a clock under test control: each level pages the right people once, through their real contact
methods, in order; acknowledgement stops it, silence pauses it; every page says who was resolved and why."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, acknowledge_alert, raise_alert, silence_alert, unsilence_alert
from pulse.crypto import encrypt_secret
from pulse.db import system_tx
from pulse.notify.channels.webhook import verify_signature
from pulse.notify.worker import Deliverer
from pulse.oncall.service import fire_due_escalations
from pulse.settings import Settings
from tests.conftest import TenantRef, free_port, make_device, make_tenant
from tests.notify.test_delivery import FAST, Receiver
from tests.notify.test_email_channel import Inbox

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # a Monday
SECRET = "contact-signing-secret"


async def _user(engine: AsyncEngine, tenant: TenantRef, name: str, *, active: bool = True) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO users (tenant_id, email, display_name, is_active) VALUES (:t, :e, :n, :a) "
            "RETURNING user_id::text"),
            {"t": tenant.tenant_id, "e": f"{name}-{uuid.uuid4().hex[:6]}@example.test", "n": name,
             "a": active})).scalar_one())


async def _contact(engine: AsyncEngine, settings: Settings, tenant: TenantRef, user_id: str, kind: str,
                   address: str, secrets: dict[str, str], *, delay: int | None = None, min_severity: int = 1) -> str:
    """A contact method (secrets sealed as the API seals them) and, when `delay` is given, a notification rule."""
    contact_id = str(uuid.uuid4())
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO user_contact_methods (contact_id, tenant_id, user_id, kind, address, secrets_encrypted) "
            "VALUES (CAST(:c AS uuid), :t, CAST(:u AS uuid), :k, :a, :s)"),
            {"c": contact_id, "t": tenant.tenant_id, "u": user_id, "k": kind, "a": address,
             "s": encrypt_secret(settings.secret_key_bytes, json.dumps(secrets), context=contact_id)})
        if delay is not None:
            await conn.execute(text(
                "INSERT INTO user_notification_rules (tenant_id, user_id, contact_id, delay_minutes, min_severity) "
                "VALUES (:t, CAST(:u AS uuid), CAST(:c AS uuid), :d, :s)"),
                {"t": tenant.tenant_id, "u": user_id, "c": contact_id, "d": delay, "s": min_severity})
    return contact_id


async def _schedule(engine: AsyncEngine, tenant: TenantRef, participants: list[str], *,
                    overrides: list[tuple[str, datetime, datetime]] = ()) -> str:  # type: ignore[assignment]
    """A Europe/Berlin schedule with one weekly layer handing off Mondays 09:00, starting the week before T0."""
    async with system_tx(engine) as conn:
        schedule_id = str((await conn.execute(text(
            "INSERT INTO oncall_schedules (tenant_id, name, timezone) VALUES (:t, :n, 'Europe/Berlin') "
            "RETURNING schedule_id::text"), {"t": tenant.tenant_id, "n": f"ops-{uuid.uuid4().hex[:6]}"})).scalar_one())
        await conn.execute(text(
            "INSERT INTO oncall_layers (tenant_id, schedule_id, position, name, rotation_type, rotation_start, "
            "  handoff_time, participants) VALUES (:t, CAST(:s AS uuid), 1, 'Primary', 'WEEKLY', :start, '09:00', "
            "  CAST(:p AS uuid[]))"),
            {"t": tenant.tenant_id, "s": schedule_id, "start": date(2026, 11, 16), "p": participants})
        for user_id, starts, ends in overrides:
            await conn.execute(text(
                "INSERT INTO oncall_overrides (tenant_id, schedule_id, user_id, starts_at, ends_at, reason) "
                "VALUES (:t, CAST(:s AS uuid), CAST(:u AS uuid), :a, :b, 'swap with a colleague')"),
                {"t": tenant.tenant_id, "s": schedule_id, "u": user_id, "a": starts, "b": ends})
    return schedule_id


async def _policy(engine: AsyncEngine, tenant: TenantRef, levels: list[tuple[int, list[dict[str, str]]]], *,
                  repeat: int = 0) -> str:
    async with system_tx(engine) as conn:
        policy_id = (await conn.execute(text(
            "INSERT INTO escalation_policies (tenant_id, name, repeat_count, is_default) VALUES (:t, 'default', :r, true) "
            "RETURNING policy_id::text"), {"t": tenant.tenant_id, "r": repeat})).scalar_one()
        for i, (delay, targets) in enumerate(levels, 1):
            await conn.execute(text(
                "INSERT INTO escalation_levels (tenant_id, policy_id, position, delay_minutes, targets) "
                "VALUES (:t, CAST(:p AS uuid), :i, :d, CAST(:targets AS jsonb))"),
                {"t": tenant.tenant_id, "p": policy_id, "i": i, "d": delay, "targets": json.dumps(targets)})
    return str(policy_id)


async def _open(engine: AsyncEngine, tenant: TenantRef, device: str, at: datetime = T0) -> str:
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=f"RULE:test:{device}", alert_type="THRESHOLD", severity=5,
            title="boiler pressure", summary="pressure too high", device_id=device), now=at)
    return change.alert_id


async def _events(engine: AsyncEngine, alert_id: str, kind: str) -> list[Any]:
    async with system_tx(engine) as conn:
        return [r[0] for r in await conn.execute(text(
            "SELECT details FROM alert_events WHERE alert_id = CAST(:a AS uuid) AND kind = :k ORDER BY event_id"),
            {"a": alert_id, "k": kind})]


async def _levels(engine: AsyncEngine, alert_id: str) -> list[int]:
    return [d["level"] for d in await _events(engine, alert_id, "ESCALATED")]


async def _paged(engine: AsyncEngine, alert_id: str) -> list[tuple[int, str]]:
    return [(d["level"], d["user_id"]) for d in await _events(engine, alert_id, "PAGED")]


async def _fire(engine: AsyncEngine, at: datetime) -> int:
    async with system_tx(engine) as conn:
        return await fire_due_escalations(conn, at)


async def _page_jobs(engine: AsyncEngine, alert_id: str) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT contact_id::text, event_kind, status, next_attempt_at, last_error FROM notification_jobs "
            "WHERE alert_id = CAST(:a AS uuid) AND contact_id IS NOT NULL ORDER BY created_at, next_attempt_at"),
            {"a": alert_id})).all())


async def _deliver_all(engine: AsyncEngine, settings: Settings, until: Any) -> None:
    d = Deliverer(engine, settings, retry=FAST)
    try:
        for _ in range(200):
            await d.deliver_once()
            if await until():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("pages not delivered in time")
    finally:
        await d.aclose()


async def test_three_levels_page_the_right_people_and_acknowledging_stops_the_third(
        engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    alice, bob, carol, dave = [await _user(engine, tenant, n) for n in ("alice", "bob", "carol", "dave")]
    for user in (alice, bob, carol, dave):
        await _contact(engine, settings, tenant, user, "WEBHOOK", receiver.url, {"secret": SECRET})
    schedule = await _schedule(engine, tenant, [dave, bob])  # week of 2026-11-16: dave; from 11-23 09:00: bob
    await _policy(engine, tenant, [(0, [{"type": "user", "id": alice}]),
                                   (5, [{"type": "schedule", "id": schedule}]),
                                   (10, [{"type": "user", "id": carol}])])
    alert_id = await _open(engine, tenant, device)

    assert await _fire(engine, T0) == 1
    assert await _paged(engine, alert_id) == [(1, alice)]
    await _fire(engine, T0 + timedelta(minutes=4, seconds=59))
    assert await _levels(engine, alert_id) == [1]
    await _fire(engine, T0 + timedelta(minutes=5))
    # 02:05 UTC Monday is 03:05 in Berlin, before the 09:00 handoff: still dave's week
    assert await _paged(engine, alert_id) == [(1, alice), (2, dave)]
    via = (await _events(engine, alert_id, "PAGED"))[1]["via"]
    assert via["type"] == "schedule" and via["schedule_id"] == schedule and via["layer_name"] == "Primary"
    assert via["on_call_until"].startswith("2026-11-23T08:00:00")  # Monday 09:00 Berlin (CET, UTC+1)


    async def two_delivered() -> bool:
        return sum(1 for j in await _page_jobs(engine, alert_id) if j.status == "DELIVERED") == 2
    await _deliver_all(engine, settings, two_delivered)
    async with system_tx(engine) as conn:
        await acknowledge_alert(conn, tenant.tenant_id, alert_id, actor="dave@example.test",
                                now=T0 + timedelta(minutes=7))
    await _fire(engine, T0 + timedelta(minutes=30))
    assert await _levels(engine, alert_id) == [1, 2]
    assert all(user != carol for _, user in await _paged(engine, alert_id))

    bodies = [json.loads(body) for _, body in receiver.requests]
    assert [b["event"] for b in bodies] == ["PAGED", "PAGED"]
    assert {b["alert"]["alert_id"] for b in bodies} == {alert_id}
    for headers, body in receiver.requests:
        assert verify_signature(SECRET, headers["x-pulse-timestamp"], body, headers["x-pulse-signature"],
                                now=datetime.fromtimestamp(int(headers["x-pulse-timestamp"]), UTC))


async def test_schedule_target_pages_the_override_and_says_so(engine: AsyncEngine, settings: Settings,
                                                              receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    dave, erin = await _user(engine, tenant, "dave"), await _user(engine, tenant, "erin")
    await _contact(engine, settings, tenant, erin, "WEBHOOK", receiver.url, {"secret": SECRET})
    schedule = await _schedule(engine, tenant, [dave], overrides=[(erin, T0 - timedelta(hours=1),
                                                                    T0 + timedelta(hours=3))])
    await _policy(engine, tenant, [(0, [{"type": "schedule", "id": schedule}])])
    alert_id = await _open(engine, tenant, device)
    await _fire(engine, T0)
    [paged] = await _events(engine, alert_id, "PAGED")
    assert paged["user_id"] == erin and paged["via"]["source"] == "OVERRIDE"
    assert paged["via"]["on_call_until"].startswith("2026-11-23T05:00:00")
    async with system_tx(engine) as conn:
        reason = (await conn.execute(text(
            "SELECT reason FROM alert_events WHERE alert_id = CAST(:a AS uuid) AND kind = 'PAGED'"),
            {"a": alert_id})).scalar_one()
    assert "override" in reason.lower() and "swap with a colleague" in reason


async def test_nobody_on_call_and_no_contact_are_recorded_not_silently_dropped(engine: AsyncEngine,
                                                                                settings: Settings) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    frank = await _user(engine, tenant, "frank")  # no contact methods
    async with system_tx(engine) as conn:
        empty = str((await conn.execute(text(
            "INSERT INTO oncall_schedules (tenant_id, name, timezone) VALUES (:t, 'empty', 'UTC') "
            "RETURNING schedule_id::text"), {"t": tenant.tenant_id})).scalar_one())
    await _policy(engine, tenant, [(0, [{"type": "schedule", "id": empty}, {"type": "user", "id": frank}])])
    alert_id = await _open(engine, tenant, device)
    await _fire(engine, T0)
    [escalated] = await _events(engine, alert_id, "ESCALATED")
    assert escalated["unresolved"] == [{"type": "schedule", "id": empty, "name": "empty",
                                        "reason": "nobody is on call"}]
    async with system_tx(engine) as conn:
        reason = (await conn.execute(text(
            "SELECT reason FROM alert_events WHERE alert_id = CAST(:a AS uuid) AND kind = 'PAGED'"),
            {"a": alert_id})).scalar_one()
    assert "nobody was notified" in reason
    assert await _page_jobs(engine, alert_id) == []


async def test_personal_rules_delay_a_contact_and_acknowledgement_cancels_what_is_not_sent(
        engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    gina = await _user(engine, tenant, "gina")
    now_hook = await _contact(engine, settings, tenant, gina, "WEBHOOK", receiver.url, {"secret": SECRET}, delay=0)
    later_hook = await _contact(engine, settings, tenant, gina, "WEBHOOK", receiver.url + "?later",
                                {"secret": SECRET}, delay=5)
    await _contact(engine, settings, tenant, gina, "WEBHOOK", receiver.url + "?minor", {"secret": SECRET},
                   delay=0, min_severity=5)
    await _policy(engine, tenant, [(0, [{"type": "user", "id": gina}])])
    alert_id = await _open(engine, tenant, device)
    await _fire(engine, T0)
    jobs = await _page_jobs(engine, alert_id)
    assert len(jobs) == 3  # severity 5 passes all three rules
    by_contact = {j.contact_id: j for j in jobs}
    assert by_contact[now_hook].next_attempt_at == T0
    assert by_contact[later_hook].next_attempt_at == T0 + timedelta(minutes=5)
    async with system_tx(engine) as conn:
        await acknowledge_alert(conn, tenant.tenant_id, alert_id, actor="gina", now=T0 + timedelta(minutes=2))
    jobs = {j.contact_id: j for j in await _page_jobs(engine, alert_id)}
    assert jobs[later_hook].status == "CANCELLED" and "acknowledged" in jobs[later_hook].last_error


async def test_silence_pauses_the_clock_and_unsilence_resumes_it(engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    user = await _user(engine, tenant, "hank")
    await _policy(engine, tenant, [(0, [{"type": "user", "id": user}]), (5, [{"type": "user", "id": user}]),
                                   (5, [{"type": "user", "id": user}])])
    alert_id = await _open(engine, tenant, device)
    await _fire(engine, T0)
    async with system_tx(engine) as conn:  # 4 minutes left to level 2 when silenced for an hour
        await silence_alert(conn, tenant.tenant_id, alert_id, until=T0 + timedelta(minutes=61), actor="hank",
                            now=T0 + timedelta(minutes=1))
    await _fire(engine, T0 + timedelta(minutes=30))
    assert await _levels(engine, alert_id) == [1]
    async with system_tx(engine) as conn:
        await unsilence_alert(conn, tenant.tenant_id, alert_id, actor="hank", now=T0 + timedelta(minutes=40))
    await _fire(engine, T0 + timedelta(minutes=43, seconds=59))
    assert await _levels(engine, alert_id) == [1]
    await _fire(engine, T0 + timedelta(minutes=44))
    assert await _levels(engine, alert_id) == [1, 2]
    async with system_tx(engine) as conn:  # a silence left to run out resumes by itself
        await silence_alert(conn, tenant.tenant_id, alert_id, until=T0 + timedelta(minutes=50), actor="hank",
                            now=T0 + timedelta(minutes=45))
    await _fire(engine, T0 + timedelta(minutes=53, seconds=59))
    assert await _levels(engine, alert_id) == [1, 2]
    await _fire(engine, T0 + timedelta(minutes=54))
    assert await _levels(engine, alert_id) == [1, 2, 3]


async def test_two_escalators_racing_fire_each_level_once(engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    user = await _user(engine, tenant, "ivy")
    await _contact(engine, settings, tenant, user, "WEBHOOK", "http://127.0.0.1:9/never", {"secret": SECRET})
    devices = [await make_device(engine, tenant) for _ in range(10)]
    await _policy(engine, tenant, [(0, [{"type": "user", "id": user}]), (5, [{"type": "user", "id": user}])])
    alert_ids = [await _open(engine, tenant, d) for d in devices]
    await asyncio.gather(*(_fire(engine, T0) for _ in range(4)))
    await asyncio.gather(*(_fire(engine, T0 + timedelta(minutes=5)) for _ in range(4)))
    for alert_id in alert_ids:
        assert await _levels(engine, alert_id) == [1, 2]
        assert len(await _page_jobs(engine, alert_id)) == 2


async def test_policy_repeats_the_levels(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    user = await _user(engine, tenant, "jack")
    await _policy(engine, tenant, [(0, [{"type": "user", "id": user}]), (5, [{"type": "user", "id": user}])],
                  repeat=1)
    alert_id = await _open(engine, tenant, device)
    for minutes in (0, 5, 5, 10, 15, 60):
        await _fire(engine, T0 + timedelta(minutes=minutes))
    assert await _levels(engine, alert_id) == [1, 2, 1, 2]


async def test_a_page_reaches_a_users_email_through_the_smtp_relay(engine: AsyncEngine, settings: Settings) -> None:
    from aiosmtpd.controller import Controller

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        relay = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{port}", smtp_from="pages@pulse.test")
        tenant = await make_tenant(engine)
        device = await make_device(engine, tenant)
        kim = await _user(engine, tenant, "kim")
        await _contact(engine, relay, tenant, kim, "EMAIL", "kim@example.test", {})
        await _policy(engine, tenant, [(0, [{"type": "user", "id": kim}])])
        alert_id = await _open(engine, tenant, device, at=datetime.now(UTC))
        await _fire(engine, datetime.now(UTC))

        async def delivered() -> bool:
            return [j.status for j in await _page_jobs(engine, alert_id)] == ["DELIVERED"]
        await _deliver_all(engine, relay, delivered)
        [(sender, recipients, mail)] = inbox.messages
        assert sender == "pages@pulse.test" and recipients == ["kim@example.test"]
        assert "boiler pressure" in mail["Subject"] and mail["X-Pulse-Event"] == "PAGED"
    finally:
        controller.stop()
