"""SLA reports on a fixture with a known liveness history, maintenance windows, alerts and notification jobs: exactly
the expected availability, MTTA, MTTR, time to alert, counts; the daily job makes each day's report once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.maintenance import create_window
from pulse.db import system_tx, tenant_tx
from pulse.notify.service import create_channel
from pulse.reports.service import previous_local_day, run_daily_reports
from pulse.reports.sla import compute_sla_report
from pulse.settings import Settings
from tests.conftest import TenantRef, make_tenant

P0 = datetime(2026, 11, 1, tzinfo=UTC)  # a Sunday
P1 = P0 + timedelta(days=1)
H = timedelta(hours=1)
NAME_A = "=HYPERLINK(\"http://evil.example\",\"a\")"


def at(hours: float, minutes: float = 0, seconds: float = 0) -> datetime:
    return P0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


@dataclass
class Fixture:
    tenant: TenantRef
    devices: dict[str, str]


async def _device(conn: object, tenant_id: str, device_id: str, name: str, created_at: datetime,
                  status: str = "ACTIVE", decommissioned_at: datetime | None = None) -> None:
    await conn.execute(text(  # type: ignore[attr-defined]
        "INSERT INTO devices (tenant_id, device_id, name, status, created_at, updated_at, decommissioned_at) "
        "VALUES (:t, :d, :n, :s, :c, :c, :gone)"),
        {"t": tenant_id, "d": device_id, "n": name, "s": status, "c": created_at, "gone": decommissioned_at})


async def build_fixture(engine: AsyncEngine, settings: Settings) -> Fixture:
    """Four devices over the day P0..P1 (UTC):

    - a: ONLINE since the day before; STALE 05:59, OFFLINE 06:00; ONLINE 08:00 to the end → 22 h - 60 s online
    - b: registered 12:00, ONLINE 12:00-18:00, then STALE; its own window 17:00-19:00  → observed 10 h, online 5 h
    - e: registered long ago, never heard (UNKNOWN)                                    → online 0
    - gone: decommissioned before the day                                              → not counted
    - a weekly window for every device, Sundays 02:00 Europe/Berlin (01:00 UTC in November) for 60 min, takes
      1 h from a (online then) and from e.
    """
    tenant = await make_tenant(engine, prefix="sla")
    t = tenant.tenant_id
    d = {k: f"{k}-{secrets.token_hex(3)}" for k in ("a", "b", "e", "gone")}
    async with system_tx(engine) as conn:
        await _device(conn, t, d["a"], NAME_A, P0 - timedelta(days=30))
        await _device(conn, t, d["b"], "b", at(12))
        await _device(conn, t, d["e"], "-e", P0 - timedelta(days=30))
        await _device(conn, t, d["gone"], "gone", P0 - timedelta(days=30), status="DECOMMISSIONED",
                      decommissioned_at=P0 - timedelta(days=10))
        for device, status, changed in ((d["a"], "ONLINE", P0 - timedelta(hours=12)), (d["a"], "STALE", at(5, 59)),
                                        (d["a"], "OFFLINE", at(6)), (d["a"], "ONLINE", at(8)),
                                        (d["b"], "ONLINE", at(12)), (d["b"], "STALE", at(18)),
                                        (d["gone"], "ONLINE", P0 - timedelta(days=20))):
            await conn.execute(text("INSERT INTO device_state_history (tenant_id, device_id, status, changed_at) "
                                    "VALUES (:t, :d, :s, :c)"), {"t": t, "d": device, "s": status, "c": changed})
        await create_window(conn, t, name="sunday patching", recurrence="WEEKLY", weekdays=[7], start_time="02:00",
                            duration_minutes=60, timezone="Europe/Berlin", now=P0 - timedelta(days=40))
        await create_window(conn, t, name="b rewiring", recurrence="ONCE", starts_at=at(17), ends_at=at(19),
                            device_ids=[d["b"]], now=P0 - timedelta(days=40))
        await create_window(conn, t, name="disabled", recurrence="ONCE", starts_at=at(0), ends_at=at(23),
                            is_enabled=False, now=P0 - timedelta(days=40))
        alerts = (
            # severity, device, opened, triggered, detected, acknowledged, closed
            (4, d["a"], at(6, 0, 30), at(6), at(6, 0, 10), at(6, 10, 30), at(8, 0, 30)),
            (3, d["b"], at(18), at(17, 59), at(18), at(18, 30), P1 + H),
            (5, d["a"], at(20), at(20), at(20, 0, 2), None, at(21)),
            (2, d["e"], P0 - H, P0 - H, P0 - H, None, at(1)),  # opened the day before, closed in the period
        )
        for i, (sev, device, opened, triggered, detected, acked, closed) in enumerate(alerts):
            await conn.execute(text(
                "INSERT INTO alerts (tenant_id, fingerprint, alert_type, device_id, severity, status, title, "
                "  opened_at, last_seen_at, triggered_at, detected_at, acknowledged_at, closed_at) "
                "VALUES (:t, :fp, 'THRESHOLD', :d, :sev, 'CLOSED', 'x', :o, :o, :trig, :det, :ack, :closed)"),
                {"t": t, "fp": f"fp-{i}", "d": device, "sev": sev, "o": opened, "trig": triggered, "det": detected,
                 "ack": acked, "closed": closed})
        channel = await create_channel(conn, t, "hook", "WEBHOOK", {"url": "http://127.0.0.1:9/x"},
                                       {"secret": "s" * 20}, settings=settings)
        for i, (status, created) in enumerate((("DELIVERED", at(1)), ("DELIVERED", at(2)), ("DEAD", at(3)),
                                               ("PENDING", at(4)), ("CANCELLED", at(5)),
                                               ("DELIVERED", P0 - H), ("DEAD", P1))):
            await conn.execute(text(
                "INSERT INTO notification_jobs (tenant_id, channel_id, event_kind, payload, idempotency_key, status, "
                "  created_at) VALUES (:t, CAST(:c AS uuid), 'OPENED', '{}', :k, :s, :at)"),
                {"t": t, "c": channel, "k": f"{t}-{i}", "s": status, "at": created})
    return Fixture(tenant, d)


# What the fixture must give, worked out by hand.
ONLINE = {"a": 22 * 3600 - 60 - 3600, "b": 5 * 3600, "e": 0}
OBSERVED = {"a": 24 * 3600 - 3600, "b": 10 * 3600, "e": 24 * 3600 - 3600}
MAINTENANCE = {"a": 3600, "b": 2 * 3600, "e": 3600}
AVAILABILITY = round(100 * sum(ONLINE.values()) / sum(OBSERVED.values()), 6)  # 93540 / 201600
MTTA = (600 + 1800) / 2
MTTR = (7200 + 3600) / 2
TTA_P50 = 10.0
TTA_P99 = 10 + 0.98 * (60 - 10)  # percentile_cont over [2, 10, 60]


async def test_the_fixture_gives_exactly_the_expected_report(engine: AsyncEngine, settings: Settings) -> None:
    fx = await build_fixture(engine, settings)
    async with tenant_tx(engine, fx.tenant.tenant_id) as conn:
        report = await compute_sla_report(conn, fx.tenant.tenant_id, start=P0, end=P1, now=P1 + H)

    assert report.availability.percent == AVAILABILITY == 46.39881
    assert (report.availability.online_s, report.availability.observed_s, report.availability.maintenance_s,
            report.availability.devices) == (sum(ONLINE.values()), sum(OBSERVED.values()),
                                             sum(MAINTENANCE.values()), 3)
    by_id = {dev.device_id: dev for dev in report.devices}
    assert set(by_id) == {fx.devices[k] for k in ("a", "b", "e")}, "the decommissioned device is not counted"
    for key in ("a", "b", "e"):
        row = by_id[fx.devices[key]]
        assert (row.online_s, row.observed_s, row.maintenance_s) == (ONLINE[key], OBSERVED[key], MAINTENANCE[key])
    assert by_id[fx.devices["b"]].availability_percent == 50.0
    assert by_id[fx.devices["e"]].availability_percent == 0.0

    alerts = report.alerts
    assert (alerts.mtta_s, alerts.mttr_s) == (MTTA, MTTR) == (1200.0, 5400.0)
    assert (alerts.acknowledged, alerts.resolved) == (2, 2)
    assert alerts.time_to_alert_p50_s == TTA_P50 and alerts.time_to_alert_p99_s == round(TTA_P99, 6) == 59.0
    assert (alerts.opened, alerts.closed) == (3, 3)
    assert [(s.severity, s.severity_name, s.opened, s.closed) for s in alerts.by_severity] == [
        (1, "info", 0, 0), (2, "low", 0, 1), (3, "medium", 1, 0), (4, "high", 1, 1), (5, "critical", 1, 1)]
    assert [(x.device_id, x.alerts, x.max_severity) for x in report.top_alerting_devices] == [
        (fx.devices["a"], 2, 5), (fx.devices["b"], 1, 3)]
    n = report.notifications
    assert (n.total, n.sent, n.failed, n.pending, n.cancelled) == (5, 2, 1, 1, 1)


async def test_an_empty_period_has_no_availability_and_no_means(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        report = await compute_sla_report(conn, tenant.tenant_id, start=P0, end=P1, now=P1)
    assert report.availability.percent is None and report.availability.devices == 0
    assert report.alerts.mtta_s is None and report.alerts.mttr_s is None
    assert report.alerts.time_to_alert_p50_s is None and report.notifications.total == 0


async def test_the_daily_job_makes_each_local_day_once(engine: AsyncEngine, settings: Settings) -> None:
    fx = await build_fixture(engine, settings)
    t = fx.tenant.tenant_id
    assert previous_local_day(P1 + H, "UTC") == (P0, P1)
    # New York's 1 November 2026 has 25 hours (clocks went back)
    assert previous_local_day(P1 + 12 * H, "America/New_York") == (P0 + 4 * H, P1 + 5 * H)

    assert await run_daily_reports(engine, now=P1 + H, tenant_ids=[t]) == (1, 0)
    assert await run_daily_reports(engine, now=P1 + 2 * H, tenant_ids=[t]) == (0, 0), "one report per day"
    async with system_tx(engine) as conn:
        rows = (await conn.execute(text(
            "SELECT status, requested_by, period_start, period_end, result -> 'availability' ->> 'percent' AS pct "
            "FROM report_runs WHERE tenant_id = :t"), {"t": t})).all()
    assert [(r.status, r.requested_by, r.period_start, r.period_end, float(r.pct)) for r in rows] == [
        ("DONE", "daily", P0, P1, AVAILABILITY)]
