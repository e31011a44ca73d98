"""Platform metrics and /operator/system: the 5-second sampler, tenants' hourly activity, the quarantine counter
rollup, and the NOC endpoints (service health, metric history, capacity, tenant health matrix, jobs) with audit."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.fleet.maintenance import rollup_quarantine_counters
from pulse.fleet.system_metrics import METRICS, record_tenant_activity, sample_system_metrics
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.web.conftest import bearer, insert_alert, token_for
from tests.web.test_operator_api import audit_rows, operator

Client = AsyncTestClient[Litestar]
SYSTEM = "/operator/system"


async def _telemetry_rows_total(engine: AsyncEngine) -> float:
    async with system_tx(engine) as conn:
        return float((await conn.execute(text(
            "SELECT coalesce(sum(s.n_tup_ins), 0) FROM pg_stat_user_tables s JOIN pg_inherits i "
            "ON i.inhrelid = s.relid WHERE i.inhparent = 'telemetry'::regclass"))).scalar_one())


async def _insert_telemetry(engine: AsyncEngine, tenant_id: str, device: str, at: datetime, n: int) -> None:
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO telemetry (time, tenant_id, device_id, msg_type, seq, metrics) "
            "SELECT CAST(:at AS timestamptz) + make_interval(secs => g), :t, :d, 'telemetry', g, '{}' "
            "FROM generate_series(0, :n - 1) g"), {"at": at, "t": tenant_id, "d": device, "n": n})


async def test_the_sampler_records_counts_and_a_message_rate(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await insert_alert(engine, tenant.tenant_id, device_id=device)
    t1 = datetime.now(UTC) - timedelta(seconds=120)  # samples in the past: never inside a later test's window
    async with system_tx(engine) as conn:
        first = await sample_system_metrics(conn, now=t1)
    assert first["alerts.open"] >= 1 and first["devices.active"] >= 1 and first["db.connections"] >= 1
    assert first["db.size_bytes"] > 1_000_000

    before = await _telemetry_rows_total(engine)
    await _insert_telemetry(engine, tenant.tenant_id, device, t1 - timedelta(minutes=5), 120)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30  # PostgreSQL publishes a backend's insert counts within a few seconds
    while await _telemetry_rows_total(engine) < before + 120:
        assert loop.time() < deadline, "PostgreSQL's statistics never counted the inserted rows"
        await asyncio.sleep(0.2)

    t2 = t1 + timedelta(seconds=60)  # the sampler's rate window: this sample's rate is against the one at t1
    async with system_tx(engine) as conn:
        second = await sample_system_metrics(conn, now=t2)
    assert second["ingest.telemetry_rows_total"] - first["ingest.telemetry_rows_total"] >= 120
    assert second["ingest.messages_per_s"] >= round(120 / 60, 3)
    async with system_tx(engine) as conn:
        written = (await conn.execute(text("SELECT metric FROM system_metrics WHERE time = :t"), {"t": t2})).scalars()
        assert {"ingest.messages_per_s", "alerts.open", "devices.online", "notifications.queue_due",
                "escalations.due", "db.connections", "db.size_bytes"} <= set(written)


async def test_tenant_activity_counts_an_hours_messages(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    a, b = await make_device(engine, tenant), await make_device(engine, tenant)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    await _insert_telemetry(engine, tenant.tenant_id, a, hour + timedelta(minutes=1), 30)
    await _insert_telemetry(engine, tenant.tenant_id, b, hour + timedelta(minutes=59, seconds=50), 20)  # 10 spill
    for _ in range(2):  # recounting an hour replaces its row
        async with system_tx(engine) as conn:
            assert await record_tenant_activity(conn, hour_start=hour, tenant_ids=[tenant.tenant_id]) == 1
    async with system_tx(engine) as conn:
        rows = (await conn.execute(text(
            "SELECT value FROM system_metrics WHERE metric = 'tenant.messages' AND labels ->> 'tenant_id' = :t"),
            {"t": tenant.tenant_id})).scalars().all()
    assert rows == [40.0]


async def test_quarantine_counters_older_than_two_days_fold_into_hours(engine: AsyncEngine) -> None:
    tenant_id = f"q-{secrets.token_hex(4)}"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old = (now - timedelta(days=3)).replace(minute=0)
    counts = [(old, "BAD", 1), (old + timedelta(minutes=5), "BAD", 2), (old + timedelta(minutes=30), "BAD", 3),
              (old + timedelta(minutes=30), "OTHER", 7), (old + timedelta(hours=1, minutes=15), "BAD", 4),
              (now - timedelta(days=1, minutes=7), "BAD", 5)]
    async with system_tx(engine) as conn:
        for minute, reason, n in counts:
            await conn.execute(text("INSERT INTO quarantine_counters (tenant_id, minute, reason, count) "
                                    "VALUES (:t, :m, :r, :n)"), {"t": tenant_id, "m": minute, "r": reason, "n": n})
        folded = await rollup_quarantine_counters(conn, now=now)
        rows = (await conn.execute(text("SELECT minute, reason, count FROM quarantine_counters WHERE tenant_id = :t "
                                        "ORDER BY minute, reason"), {"t": tenant_id})).all()
    assert folded >= 4
    assert [(r.minute, r.reason, r.count) for r in rows] == [
        (old, "BAD", 6), (old, "OTHER", 7), (old + timedelta(hours=1), "BAD", 4),
        (now - timedelta(days=1, minutes=7), "BAD", 5)]


async def test_the_noc_endpoints(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    actor, auth = await operator(engine, settings)
    tenant = await make_tenant(engine)
    online, silent = await make_device(engine, tenant), await make_device(engine, tenant)
    await insert_alert(engine, tenant.tenant_id, device_id=silent, severity=5)
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    # two days back: `pulse schedule` processes of other tests sample alerts.open into this database right now
    minute = now.replace(second=0, microsecond=0) - timedelta(days=2)
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE device_state SET status = 'ONLINE' WHERE tenant_id = :t AND device_id = :d"),
                           {"t": tenant.tenant_id, "d": online})
        await conn.execute(text(
            "INSERT INTO system_metrics (time, metric, value, labels) VALUES "
            "(:h, 'tenant.messages', 42, CAST(:l AS jsonb)), (:a, 'alerts.open', 3, '{}'), (:b, 'alerts.open', 5, '{}')"),
            {"h": hour, "l": f'{{"tenant_id": "{tenant.tenant_id}"}}', "a": minute + timedelta(seconds=10),
             "b": minute + timedelta(seconds=12)})

    r = await client.get(f"{SYSTEM}/tenants", headers=auth, params={"tenant_id": tenant.tenant_id})
    assert r.status_code == 200, r.text
    (row,) = r.json()["items"]
    assert (row["devices"], row["devices_online"], row["online_percent"], row["open_alerts"],
            row["max_open_severity"], row["subscription_status"]) == (2, 1, 50.0, 1, 5, "ACTIVE")
    assert [s["subscription_id"] for s in row["subscriptions"]] == [tenant.subscription_id]
    assert len(row["activity"]) == 24 and row["activity"][-1]["hour"] != row["activity"][0]["hour"]
    assert [p["messages"] for p in row["activity"] if p["hour"] == hour.isoformat().replace("+00:00", "Z")] == [42]
    assert sum(p["messages"] for p in row["activity"]) == 42

    r = await client.get(f"{SYSTEM}/metrics/alerts.open", headers=auth, params={
        "from": (minute - timedelta(minutes=2)).isoformat(), "to": (minute + timedelta(minutes=2)).isoformat(),
        "step_s": 60})
    assert r.status_code == 200, r.text
    history = r.json()
    assert history["step_s"] == 60 and len(history["series"]) == 1
    points = history["series"][0]["points"]
    assert any(p["value"] == 4.0 and p["max"] == 5.0 for p in points), points  # 3 and 5 share a minute bucket

    catalogue = (await client.get(f"{SYSTEM}/metrics", headers=auth)).json()["items"]
    assert {m["metric"] for m in catalogue} == set(METRICS)
    assert next(m for m in catalogue if m["metric"] == "alerts.open")["latest_value"] is not None

    capacity = (await client.get(f"{SYSTEM}/capacity", headers=auth)).json()
    assert capacity["database_bytes"] > 0 and capacity["connections"]["total"] >= 1
    assert capacity["connections"]["max_connections"] >= capacity["connections"]["total"]
    assert any(p["day"] == now.date().isoformat() for p in capacity["telemetry_partitions"])
    sizes = [t["total_bytes"] for t in capacity["largest_tables"]]
    assert sizes and sizes == sorted(sizes, reverse=True) and "telemetry" not in {t["name"] for t in
                                                                                   capacity["largest_tables"]}

    health = (await client.get(f"{SYSTEM}/health", headers=auth)).json()
    assert health["database_latency_ms"] >= 0 and "notifications" in health["system"]
    assert isinstance(health["jobs"], list)
    assert (await client.get(f"{SYSTEM}/jobs", headers=auth)).status_code == 200

    for params, field in (({"step_s": 1}, "step_s"), ({"from": "yesterday"}, "from"),
                          ({"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()}, "to"),
                          ({"from": (now - timedelta(days=40)).isoformat()}, "from"),
                          ({"label": "no spaces allowed"}, "label")):
        r = await client.get(f"{SYSTEM}/metrics/alerts.open", headers=auth, params=params)
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == field, (params, r.text)
    r = await client.get(f"{SYSTEM}/metrics/no.such.metric", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "metric"

    customer = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id, roles=["tenant-admin"]))
    assert (await client.get(f"{SYSTEM}/capacity", headers=customer)).status_code == 403
    actions = [(a.action, a.tenant_id) for a in await audit_rows(engine, actor)]
    assert actions[0] == ("GET /operator/system/tenants", tenant.tenant_id)
    assert ("GET /operator/system/capacity", None) in actions and len(actions) == 12
