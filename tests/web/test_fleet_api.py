"""/api/v2 fleet reads through the real app: device lists (filters, sort, paging, text search), device detail,
fleet summary, raw telemetry with a cursor, latest values, downsampled history, the CSV export, field-named
400s, tenant isolation (another tenant's device is a 404 everywhere and never listed) and who may read."""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx, tenant_tx
from pulse.fleet.telemetry import iter_telemetry_csv
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.web.conftest import bearer, insert_alert, login, make_user, token_for

API = "/api/v2"
DEVICES = f"{API}/devices"
SUMMARY = f"{API}/fleet/summary"

# Two days of telemetry for one device, both days inside the partitions the migration created.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
STEP = timedelta(minutes=10)
ROWS = 2 * 24 * 6  # every 10 minutes for two days


def iso(moment: datetime) -> str:
    return quote(moment.isoformat())


def temp_of(i: int) -> Any:
    """Row i's temp: i, except every sixth row reports the text "n/a" (not a number)."""
    return "n/a" if i % 6 == 0 else i


@dataclass
class Fleet:
    tenant: TenantRef
    headers: dict[str, str]
    group_id: str


async def _sql(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with system_tx(engine) as conn:
        await conn.execute(text(sql), params)


async def _device(engine: AsyncEngine, tenant: TenantRef, device_id: str, *, name: str | None, site: str | None,
                  tags: list[str], lifecycle: str = "ACTIVE", state: str = "UNKNOWN",
                  seen_ago: timedelta | None = None) -> None:
    await make_device(engine, tenant, device_id, name=name or device_id, tags=tags)
    await _sql(engine, "UPDATE devices SET site_id = :s, status = :l, name = :n WHERE tenant_id = :t AND device_id = :d",
               t=tenant.tenant_id, d=device_id, s=site, l=lifecycle, n=name)
    seen = datetime.now(UTC) - seen_ago if seen_ago is not None else None
    await _sql(engine, "UPDATE device_state SET status = :st, last_seen_at = :seen, last_state_change_at = :seen "
               "WHERE tenant_id = :t AND device_id = :d", t=tenant.tenant_id, d=device_id, st=state, seen=seen)


async def make_fleet(engine: AsyncEngine, settings: Settings, *, roles: tuple[str, ...] = ("tenant-admin",)) -> Fleet:
    """Five devices in two sites (and none), one group, alerts on pump-01."""
    tenant = await make_tenant(engine)
    t = tenant.tenant_id
    for site, name in (("plant-a", "Plant A"), ("plant-b", "Plant B"), ("plant-c", "Plant C (empty)")):
        await _sql(engine, "INSERT INTO sites (tenant_id, site_id, name) VALUES (:t, :s, :n)", t=t, s=site, n=name)
    await _device(engine, tenant, "pump-01", name="Boiler Pump", site="plant-a", tags=["pump", "boiler"],
                  state="ONLINE", seen_ago=timedelta(minutes=1))
    await _device(engine, tenant, "pump-02", name="Feed 100% pump", site="plant-a", tags=["pump"],
                  state="STALE", seen_ago=timedelta(minutes=10))
    await _device(engine, tenant, "sensor_1", name="Temp sensor", site="plant-b", tags=["temp"],
                  state="OFFLINE", seen_ago=timedelta(days=1))
    await _device(engine, tenant, "sensor01", name="Spare", site=None, tags=[], lifecycle="DISABLED")
    await _device(engine, tenant, "old-1", name=None, site="plant-b", tags=["pump"], lifecycle="DECOMMISSIONED",
                  state="OFFLINE", seen_ago=timedelta(days=30))
    async with system_tx(engine) as conn:
        group_id = (await conn.execute(text(
            "INSERT INTO device_groups (tenant_id, name) VALUES (:t, 'Boiler room') RETURNING group_id"),
            {"t": t})).scalar_one()
        await conn.execute(text(
            "INSERT INTO device_group_members (tenant_id, group_id, device_id) "
            "VALUES (:t, :g, 'pump-01'), (:t, :g, 'sensor_1')"), {"t": t, "g": group_id})
    await insert_alert(engine, t, severity=5, device_id="pump-01")
    await insert_alert(engine, t, severity=3, status="ACKNOWLEDGED", device_id="pump-01")
    await insert_alert(engine, t, severity=2, status="CLOSED", device_id="pump-01")
    await insert_alert(engine, t, severity=3, device_id="sensor_1")
    headers = bearer(await token_for(engine, settings, tenant_id=t, roles=list(roles)))
    return Fleet(tenant, headers, str(group_id))


async def seed_telemetry(engine: AsyncEngine, tenant_id: str, device_id: str) -> None:
    """Every 10 minutes for two days from DAY0: telemetry with seq i, temp (see temp_of) and mode; plus a
    heartbeat without seq or metrics at each full hour (the same time as a telemetry row)."""
    rows = []
    for i in range(ROWS):
        moment = DAY0 + i * STEP
        rows.append({"time": moment, "seq": i, "msg_type": "telemetry",
                     "metrics": json.dumps({"temp": temp_of(i), "mode": "auto" if i % 2 else "eco"})})
        if moment.minute == 0:
            rows.append({"time": moment, "seq": None, "msg_type": "heartbeat", "metrics": "{}"})
    async with system_tx(engine) as conn:
        await conn.execute(text("SELECT pulse_ensure_telemetry_partitions(CAST(:a AS date), CAST(:b AS date))"),
                           {"a": DAY0.date(), "b": (DAY0 + timedelta(days=2)).date()})
        await conn.execute(text(
            "INSERT INTO telemetry (time, tenant_id, device_id, msg_type, seq, metrics) "
            "VALUES (:time, :t, :d, :msg_type, :seq, CAST(:metrics AS jsonb))"),
            [{**r, "t": tenant_id, "d": device_id} for r in rows])


def expected_rows(start: datetime, end: datetime) -> list[tuple[datetime, int | None, str, dict[str, Any]]]:
    """The seeded rows in [start, end), oldest first, heartbeat after telemetry at the same time."""
    out: list[tuple[datetime, int | None, str, dict[str, Any]]] = []
    for i in range(ROWS):
        moment = DAY0 + i * STEP
        if not start <= moment < end:
            continue
        out.append((moment, i, "telemetry", {"temp": temp_of(i), "mode": "auto" if i % 2 else "eco"}))
        if moment.minute == 0:
            out.append((moment, None, "heartbeat", {}))
    return out


def ids(body: dict[str, Any]) -> list[str]:
    return [item["device_id"] for item in body["items"]]


async def get_ok(client: AsyncTestClient[Litestar], url: str, headers: dict[str, str]) -> Any:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# --- devices -------------------------------------------------------------------------------------------------


async def test_device_list_items_carry_device_fields_and_state(client: AsyncTestClient[Litestar],
                                                               engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    await _sql(engine, "UPDATE device_state SET latest_metrics = '{\"temp\": 21.5}' "
               "WHERE tenant_id = :t AND device_id = 'pump-01'", t=fleet.tenant.tenant_id)

    body = await get_ok(client, DEVICES, fleet.headers)

    assert ids(body) == ["old-1", "pump-01", "pump-02", "sensor01", "sensor_1"]
    assert body["total"] == 5 and body["limit"] == 50 and body["offset"] == 0
    pump = body["items"][1]
    assert pump["name"] == "Boiler Pump" and pump["site_id"] == "plant-a" and pump["lifecycle"] == "ACTIVE"
    assert sorted(pump["tags"]) == ["boiler", "pump"] and pump["device_type"] == "sensor"
    assert pump["state"]["status"] == "ONLINE" and pump["state"]["latest_metrics"] == {"temp": 21.5}
    assert pump["state"]["last_seen_at"] and pump["state"]["last_state_change_at"]
    assert body["items"][3]["state"] == {"status": "UNKNOWN", "last_seen_at": None, "last_state_change_at": None,
                                         "latest_metrics": {}}


async def test_device_list_filters(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                   settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)

    async def listed(query: str) -> list[str]:
        return ids(await get_ok(client, f"{DEVICES}?{query}", fleet.headers))

    assert await listed("state=ONLINE") == ["pump-01"]
    assert await listed("state=online,stale") == ["pump-01", "pump-02"]
    assert await listed("state=OFFLINE&state=UNKNOWN") == ["old-1", "sensor01", "sensor_1"]
    assert await listed("lifecycle=DISABLED&lifecycle=decommissioned") == ["old-1", "sensor01"]
    assert await listed("state=OFFLINE&lifecycle=ACTIVE") == ["sensor_1"]
    assert await listed("site_id=plant-a") == ["pump-01", "pump-02"]
    assert await listed("site_id=plant-c") == []
    assert await listed("tag=pump") == ["old-1", "pump-01", "pump-02"]
    assert await listed("tag=pump&tag=boiler") == ["pump-01"]
    assert await listed(f"group_id={fleet.group_id}") == ["pump-01", "sensor_1"]
    assert await listed(f"group_id={fleet.group_id}&tag=temp") == ["sensor_1"]
    assert await listed("tag=pump&site_id=plant-b") == ["old-1"]


async def test_text_search_is_a_case_insensitive_substring_with_literal_wildcards(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)

    async def found(q: str) -> list[str]:
        return ids(await get_ok(client, f"{DEVICES}?q={quote(q)}", fleet.headers))

    assert await found("PUMP") == ["pump-01", "pump-02"]  # ids and the names "Boiler Pump", "Feed 100% pump"
    assert await found("pump-0") == ["pump-01", "pump-02"]
    assert await found("boiler") == ["pump-01"]  # by name
    assert await found("sensor_") == ["sensor_1"]  # "_" is not "any character": sensor01 does not match
    assert await found("100%") == ["pump-02"]
    assert await found("%") == ["pump-02"]  # only a name holding a literal percent sign
    assert await found("_") == ["sensor_1"]
    assert await found("\\") == []
    assert await found("Spare") == ["sensor01"]


async def test_sort_and_paging(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)

    async def listed(query: str) -> list[str]:
        return ids(await get_ok(client, f"{DEVICES}?{query}", fleet.headers))

    assert await listed("sort=-device_id") == ["sensor_1", "sensor01", "pump-02", "pump-01", "old-1"]
    assert await listed("sort=name") == ["pump-01", "pump-02", "sensor01", "sensor_1", "old-1"]  # no name: last
    assert await listed("sort=-name") == ["sensor_1", "sensor01", "pump-02", "pump-01", "old-1"]
    assert await listed("sort=-last_seen_at") == ["pump-01", "pump-02", "sensor_1", "old-1", "sensor01"]
    assert await listed("sort=last_seen_at") == ["old-1", "sensor_1", "pump-02", "pump-01", "sensor01"]
    assert await listed("sort=status") == ["pump-01", "pump-02", "old-1", "sensor_1", "sensor01"]
    assert await listed("sort=-status") == ["sensor01", "sensor_1", "old-1", "pump-02", "pump-01"]

    pages = [await get_ok(client, f"{DEVICES}?sort=name&limit=2&offset={o}", fleet.headers) for o in (0, 2, 4)]
    assert [ids(p) for p in pages] == [["pump-01", "pump-02"], ["sensor01", "sensor_1"], ["old-1"]]
    assert all(p["total"] == 5 and p["limit"] == 2 for p in pages)
    filtered = await get_ok(client, f"{DEVICES}?tag=pump&limit=1&offset=1", fleet.headers)
    assert ids(filtered) == ["pump-01"] and filtered["total"] == 3 and filtered["offset"] == 1
    beyond = await get_ok(client, f"{DEVICES}?offset=10", fleet.headers)
    assert beyond["items"] == [] and beyond["total"] == 5


async def test_device_detail(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    t = fleet.tenant.tenant_id
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with system_tx(engine) as conn:
        for i in range(25):
            await conn.execute(text(
                "INSERT INTO device_state_history (tenant_id, device_id, status, previous_status, changed_at) "
                "VALUES (:t, 'pump-01', :s, :p, :at)"),
                {"t": t, "s": "ONLINE" if i % 2 else "STALE", "p": "STALE" if i % 2 else "ONLINE",
                 "at": start + timedelta(minutes=i)})

    body = await get_ok(client, f"{DEVICES}/pump-01", fleet.headers)

    assert body["device_id"] == "pump-01" and body["name"] == "Boiler Pump" and body["lifecycle"] == "ACTIVE"
    assert body["site_id"] == "plant-a" and body["site_name"] == "Plant A"
    assert body["state"]["status"] == "ONLINE" and body["state"]["latest_metrics_at"] == {}
    assert [g["name"] for g in body["groups"]] == ["Boiler room"] and body["groups"][0]["group_id"] == fleet.group_id
    assert body["open_alert_count"] == 2  # OPEN and ACKNOWLEDGED; the CLOSED one and sensor_1's do not count
    history = body["state_history"]
    assert len(history) == 20
    assert [datetime.fromisoformat(h["changed_at"]) for h in history] == [
        start + timedelta(minutes=i) for i in range(24, 4, -1)]
    assert history[0] == {"status": "STALE", "previous_status": "ONLINE",
                          "changed_at": history[0]["changed_at"]}

    spare = await get_ok(client, f"{DEVICES}/sensor01", fleet.headers)
    assert spare["groups"] == [] and spare["open_alert_count"] == 0 and spare["state_history"] == []
    assert spare["site_id"] is None and spare["site_name"] is None and spare["lifecycle"] == "DISABLED"


async def test_fleet_summary(client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)

    body = await get_ok(client, SUMMARY, fleet.headers)

    assert body["total"] == 5
    # Connectivity of ACTIVE devices only: the disabled and the decommissioned one are not watched.
    assert body["by_state"] == {"ONLINE": 1, "STALE": 1, "OFFLINE": 1, "UNKNOWN": 0}
    assert body["by_lifecycle"] == {"ACTIVE": 3, "DISABLED": 1, "REVOKED": 0, "DECOMMISSIONED": 1}
    sites = {s["site_id"]: s for s in body["by_site"]}
    assert [s["site_id"] for s in body["by_site"]] == ["plant-a", "plant-b", "plant-c", None]
    assert sites["plant-a"]["name"] == "Plant A" and sites["plant-a"]["total"] == 2
    assert sites["plant-a"]["by_state"] == {"ONLINE": 1, "STALE": 1, "OFFLINE": 0, "UNKNOWN": 0}
    assert sites["plant-b"]["total"] == 2
    assert sites["plant-b"]["by_state"] == {"ONLINE": 0, "STALE": 0, "OFFLINE": 1, "UNKNOWN": 0}
    assert sites["plant-c"]["total"] == 0
    assert sites[None]["total"] == 1 and sites[None]["name"] is None
    assert body["open_alerts"] == {"total": 3, "acknowledged": 1,
                                   "by_severity": {"1": 0, "2": 0, "3": 2, "4": 0, "5": 1}}


# --- telemetry -----------------------------------------------------------------------------------------------


async def test_raw_telemetry_pages_through_a_range_with_the_cursor(client: AsyncTestClient[Litestar],
                                                                    engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    await seed_telemetry(engine, fleet.tenant.tenant_id, "pump-01")
    start, end = DAY0 + timedelta(hours=23), DAY0 + timedelta(hours=25)
    expected = expected_rows(start, end)
    expected_newest_first = sorted(expected, key=lambda r: (-r[0].timestamp(), r[1] is None))
    url = f"{DEVICES}/pump-01/telemetry?from={iso(start)}&to={iso(end)}&limit=5"

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await get_ok(client, url + (f"&cursor={cursor}" if cursor else ""), fleet.headers)
        pages += 1
        assert len(page["items"]) <= 5
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(expected) == 14 and pages == 3  # 12 telemetry rows and 2 heartbeats over two days' boundary
    assert [(datetime.fromisoformat(r["time"]), r["seq"], r["msg_type"], r["metrics"]) for r in seen] == \
        expected_newest_first
    assert datetime.fromisoformat(page["from"]) == start and datetime.fromisoformat(page["to"]) == end


async def test_raw_telemetry_metric_filter_and_default_range(client: AsyncTestClient[Litestar],
                                                             engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    t = fleet.tenant.tenant_id
    await seed_telemetry(engine, t, "pump-01")
    now = datetime.now(UTC)
    await _sql(engine, "INSERT INTO telemetry (time, tenant_id, device_id, msg_type, seq, metrics) VALUES "
               "(:a, :t, 'pump-02', 'telemetry', 1, '{\"rpm\": 900}'), "
               "(:b, :t, 'pump-02', 'telemetry', 2, '{\"rpm\": 950}')",
               t=t, a=now - timedelta(hours=2), b=now - timedelta(minutes=5))

    only_mode = await get_ok(client, f"{DEVICES}/pump-01/telemetry?from={iso(DAY0)}"
                             f"&to={iso(DAY0 + timedelta(hours=1))}&metric=mode", fleet.headers)
    recent = await get_ok(client, f"{DEVICES}/pump-02/telemetry", fleet.headers)

    assert [r["metrics"] for r in only_mode["items"]] == [{"mode": "auto" if i % 2 else "eco"}
                                                          for i in range(5, -1, -1)]
    assert {r["msg_type"] for r in only_mode["items"]} == {"telemetry"}  # heartbeats hold no "mode"
    assert [r["metrics"] for r in recent["items"]] == [{"rpm": 950}]  # the last hour only
    assert recent["next_cursor"] is None


async def test_latest_values_of_each_metric(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                            settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    await _sql(engine, "UPDATE device_state SET latest_metrics = '{\"temp\": 287, \"mode\": \"auto\"}', "
               "latest_metrics_at = '{\"temp\": \"2026-01-02T10:00:00+00:00\", \"mode\": \"2026-01-01T08:30:00Z\"}', "
               "last_telemetry_at = '2026-01-02T10:00:01Z' WHERE tenant_id = :t AND device_id = 'pump-01'",
               t=fleet.tenant.tenant_id)

    body = await get_ok(client, f"{DEVICES}/pump-01/telemetry/latest", fleet.headers)
    empty = await get_ok(client, f"{DEVICES}/sensor01/telemetry/latest", fleet.headers)

    assert body["device_id"] == "pump-01"
    assert datetime.fromisoformat(body["last_telemetry_at"]) == datetime(2026, 1, 2, 10, 0, 1, tzinfo=UTC)
    assert list(body["metrics"]) == ["mode", "temp"]
    assert body["metrics"]["temp"]["value"] == 287
    assert datetime.fromisoformat(body["metrics"]["temp"]["time"]) == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert body["metrics"]["mode"]["value"] == "auto"
    assert datetime.fromisoformat(body["metrics"]["mode"]["time"]) == datetime(2026, 1, 1, 8, 30, tzinfo=UTC)
    assert empty == {"device_id": "sensor01", "last_telemetry_at": None, "metrics": {}}


async def test_history_buckets_hold_avg_min_max_count_of_numbers(client: AsyncTestClient[Litestar],
                                                                 engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    await seed_telemetry(engine, fleet.tenant.tenant_id, "pump-01")
    start, end = DAY0, DAY0 + timedelta(days=2)

    body = await get_ok(client, f"{DEVICES}/pump-01/telemetry/history?metric=temp&from={iso(start)}"
                        f"&to={iso(end)}&points=48", fleet.headers)

    assert body["metric"] == "temp" and body["points"] == 48 and body["bucket_seconds"] == 3600
    buckets = body["buckets"]
    assert len(buckets) == 48
    assert [datetime.fromisoformat(b["time"]) for b in buckets] == [start + timedelta(hours=h) for h in range(48)]
    # Hour 1 holds rows 6..11; row 6 reports "n/a", so the numbers are 7, 8, 9, 10, 11.
    assert buckets[1] == {"time": buckets[1]["time"], "avg": 9.0, "min": 7.0, "max": 11.0, "count": 5}
    for hour, bucket in enumerate(buckets):
        numbers = [i for i in range(hour * 6, hour * 6 + 6) if not isinstance(temp_of(i), str)]
        assert bucket["count"] == len(numbers) == 5
        assert bucket["min"] == min(numbers) and bucket["max"] == max(numbers)
        assert bucket["avg"] == pytest.approx(sum(numbers) / len(numbers))

    # 3 points over 90 minutes: 30-minute buckets from `from`, which need not be on a full hour.
    odd_start = DAY0 + timedelta(minutes=5)
    small = await get_ok(client, f"{DEVICES}/pump-01/telemetry/history?metric=temp&from={iso(odd_start)}"
                         f"&to={iso(odd_start + timedelta(minutes=90))}&points=3", fleet.headers)
    assert small["bucket_seconds"] == 1800
    # rows at :10 :20 :30 | :40 :50 1:00 (row 6: "n/a") | 1:10 1:20 1:30
    assert [(b["min"], b["max"], b["count"]) for b in small["buckets"]] == [(1, 3, 3), (4, 5, 2), (7, 9, 3)]
    assert datetime.fromisoformat(small["buckets"][2]["time"]) == odd_start + timedelta(minutes=60)

    text_only = await get_ok(client, f"{DEVICES}/pump-01/telemetry/history?metric=mode&from={iso(start)}"
                             f"&to={iso(end)}", fleet.headers)
    assert text_only["buckets"] == [] and text_only["points"] == 500


async def test_csv_export_streams_every_metric_of_every_row(client: AsyncTestClient[Litestar],
                                                            engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    t = fleet.tenant.tenant_id
    await seed_telemetry(engine, t, "pump-01")
    start, end = DAY0 + timedelta(hours=23, minutes=30), DAY0 + timedelta(hours=25)

    response = await client.get(f"{DEVICES}/pump-01/telemetry/export.csv?from={iso(start)}&to={iso(end)}",
                                headers=fleet.headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="pump-01-telemetry.csv"'
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == ["time", "seq", "msg_type", "metric", "value"]
    expected: list[list[str]] = []
    for moment, seq, msg_type, metrics in expected_rows(start, end):
        if not metrics:
            expected.append([moment.isoformat(), "", msg_type, "", ""])
        for key in sorted(metrics):
            expected.append([moment.isoformat(), str(seq), msg_type, key, str(metrics[key])])
    assert lines[1:] == expected
    assert ["n/a", "eco"] == [row[4] for row in lines[1:] if row[1] == "144"][::-1]  # strings unquoted

    # The export reads in batches: a small batch size gives the same text, in more pieces.
    async with tenant_tx(engine, t) as conn:
        chunks = [c async for c in iter_telemetry_csv(conn, t, "pump-01", start=start, end=end, batch_rows=4)]
    assert "".join(chunks) == response.text and len(chunks) > 3


# --- validation, isolation, access ---------------------------------------------------------------------------

LONG = "x" * 129


def cursor_of(*position: Any) -> str:
    """A cursor as a client might forge it."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(("path", "field"), [
    ("/devices?state=BROKEN", "state"), ("/devices?state=ONLINE,nope", "state"),
    ("/devices?lifecycle=GONE", "lifecycle"), ("/devices?sort=colour", "sort"), ("/devices?sort=-tags", "sort"),
    ("/devices?limit=0", "limit"), ("/devices?limit=501", "limit"), ("/devices?limit=ten", "limit"),
    ("/devices?offset=-1", "offset"), ("/devices?group_id=not-a-uuid", "group_id"),
    ("/devices?site_id=no%20spaces", "site_id"), (f"/devices?q={LONG}", "q"), (f"/devices?tag={'t' * 129}", "tag"),
    ("/devices/bad!id", "device_id"),
    ("/devices/pump-01/telemetry?from=2026-01-01T00:00:00", "from"),
    ("/devices/pump-01/telemetry?to=yesterday", "to"),
    ("/devices/pump-01/telemetry?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ("/devices/pump-01/telemetry?from=2026-01-01T00:00:00Z&to=2026-02-02T00:00:00Z", "from"),
    ("/devices?q=a%00b", "q"), ("/devices?tag=a%00b", "tag"), ("/devices?offset=99999999999999999999", "offset"),
    ("/devices/pump-01/telemetry?limit=5001", "limit"), ("/devices/pump-01/telemetry?cursor=garbage", "cursor"),
    (f"/devices/pump-01/telemetry?cursor={cursor_of('2026-01-01T00:00:00Z', 2**63, 'telemetry')}", "cursor"),
    ("/devices/pump-01/telemetry?cursor=" + cursor_of("2026-01-01T00:00:00Z", 1, "tele\x00metry"), "cursor"),
    (f"/devices/pump-01/telemetry?cursor={cursor_of('2026-01-01T00:00:00', 1, 'telemetry')}", "cursor"),
    ("/devices/pump-01/telemetry?metric=a%01b", "metric"),
    ("/devices/pump-01/telemetry/history?metric=temp&to=0001-01-01T00:30:00Z", "to"),
    (f"/devices/pump-01/telemetry?metric={LONG}", "metric"),
    ("/devices/pump-01/telemetry/history", "metric"),
    ("/devices/pump-01/telemetry/history?metric=temp&points=0", "points"),
    ("/devices/pump-01/telemetry/history?metric=temp&points=2001", "points"),
    ("/devices/pump-01/telemetry/history?metric=temp&from=2025-01-01T00:00:00Z&to=2026-02-06T00:00:00Z", "from"),
    ("/devices/pump-01/telemetry/history?metric=temp&to=2026-01-01", "to"),
    ("/devices/pump-01/telemetry/export.csv?from=2026-01-01T00:00:00", "from"),
    ("/devices/pump-01/telemetry/export.csv?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", "from"),
])
async def test_bad_parameters_are_400_naming_the_field(client: AsyncTestClient[Litestar], engine: AsyncEngine,
                                                       settings: Settings, path: str, field: str) -> None:
    tenant = await make_tenant(engine)
    await make_device(engine, tenant, "pump-01")
    headers = bearer(await token_for(engine, settings, tenant_id=tenant.tenant_id))

    response = await client.get(API + path, headers=headers)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"]["field"] == field
    assert field in error["message"]


async def test_times_accept_z_offsets_and_a_plus_sign_lost_in_the_query(client: AsyncTestClient[Litestar],
                                                                         engine: AsyncEngine,
                                                                         settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    await seed_telemetry(engine, fleet.tenant.tenant_id, "pump-01")
    start = DAY0.strftime("%Y-%m-%dT%H:%M:%S")
    end = (DAY0 + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S")

    with_z = await get_ok(client, f"{DEVICES}/pump-01/telemetry?from={start}Z&to={end}Z", fleet.headers)
    encoded = await get_ok(client, f"{DEVICES}/pump-01/telemetry?from={start}%2B00:00&to={end}-00:00",
                           fleet.headers)
    lost_plus = await get_ok(client, f"{DEVICES}/pump-01/telemetry?from={start}+00:00&to={end}+0000",
                             fleet.headers)
    shifted = await get_ok(client, f"{DEVICES}/pump-01/telemetry?from={start}%2B01:00&to={end}%2B01:00",
                           fleet.headers)

    assert [r["seq"] for r in with_z["items"]] == [1, 0, None]
    assert encoded["items"] == lost_plus["items"] == with_z["items"]
    assert shifted["items"] == []  # an hour earlier in UTC: before the first row


async def test_another_tenants_device_is_not_found_anywhere_and_never_listed(
        client: AsyncTestClient[Litestar], engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    other = await make_tenant(engine)
    await make_device(engine, other, "theirs-1", name="Their pump", tags=["pump"])
    await make_device(engine, other, "pump-01", name="Their pump-01", tags=["pump"])  # the same id as ours
    await seed_telemetry(engine, other.tenant_id, "theirs-1")
    await seed_telemetry(engine, other.tenant_id, "pump-01")
    await insert_alert(engine, other.tenant_id, severity=1, device_id="pump-01")
    window = f"from={iso(DAY0)}&to={iso(DAY0 + timedelta(days=2))}"

    for path in ("", "/telemetry", "/telemetry/latest", "/telemetry/history?metric=temp", "/telemetry/export.csv"):
        response = await client.get(f"{DEVICES}/theirs-1{path}", headers=fleet.headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    for path in ("/nobody", "/nobody/telemetry", "/nobody/telemetry/latest"):
        assert (await client.get(f"{DEVICES}{path}", headers=fleet.headers)).status_code == 404

    listed = await get_ok(client, f"{DEVICES}?q=pump&limit=500", fleet.headers)
    assert ids(listed) == ["pump-01", "pump-02"] and listed["total"] == 2
    assert listed["items"][0]["name"] == "Boiler Pump"
    assert ids(await get_ok(client, f"{DEVICES}?q=their", fleet.headers)) == []
    summary = await get_ok(client, SUMMARY, fleet.headers)
    assert summary["total"] == 5 and summary["open_alerts"]["by_severity"]["1"] == 0
    ours = await get_ok(client, f"{DEVICES}/pump-01/telemetry?{window}", fleet.headers)
    assert ours["items"] == [] and ours["next_cursor"] is None  # their pump-01's rows are not ours
    history = await get_ok(client, f"{DEVICES}/pump-01/telemetry/history?metric=temp&{window}", fleet.headers)
    assert history["buckets"] == []
    export = await client.get(f"{DEVICES}/pump-01/telemetry/export.csv?{window}", headers=fleet.headers)
    assert export.status_code == 200 and export.text.strip() == "time,seq,msg_type,metric,value"
    detail = await get_ok(client, f"{DEVICES}/pump-01", fleet.headers)
    assert detail["open_alert_count"] == 2


async def test_customers_and_tenant_admins_read_and_no_token_is_401(client: AsyncTestClient[Litestar],
                                                                    engine: AsyncEngine, settings: Settings) -> None:
    fleet = await make_fleet(engine, settings)
    email, _ = await make_user(engine, fleet.tenant.tenant_id, roles=("customer",))
    customer = bearer((await login(client, email))["access_token"])
    operator = bearer(await token_for(engine, settings, tenant_id=fleet.tenant.tenant_id, roles=["operator"]))
    paths = [DEVICES, f"{DEVICES}/pump-01", SUMMARY, f"{DEVICES}/pump-01/telemetry",
             f"{DEVICES}/pump-01/telemetry/latest", f"{DEVICES}/pump-01/telemetry/history?metric=temp",
             f"{DEVICES}/pump-01/telemetry/export.csv"]

    for path in paths:
        assert (await client.get(path, headers=customer)).status_code == 200, path
        assert (await client.get(path, headers=fleet.headers)).status_code == 200, path
        assert (await client.get(path)).status_code == 401, path
        assert (await client.get(path, headers=operator)).status_code == 403, path
    assert ids(await get_ok(client, f"{DEVICES}?tag=boiler", customer)) == ["pump-01"]


def test_fleet_routes_are_documented_under_the_fleet_tag(settings: Settings) -> None:
    from pulse.web.app import create_app

    schema = create_app(settings).openapi_schema.to_schema()
    paths = schema["paths"]
    for path in ("/api/v2/devices", "/api/v2/devices/{device_id}", "/api/v2/fleet/summary",
                 "/api/v2/devices/{device_id}/telemetry", "/api/v2/devices/{device_id}/telemetry/latest",
                 "/api/v2/devices/{device_id}/telemetry/history",
                 "/api/v2/devices/{device_id}/telemetry/export.csv"):
        assert paths[path]["get"]["tags"] == ["fleet"], path
    names = {p["name"] for p in paths["/api/v2/devices/{device_id}/telemetry"]["get"]["parameters"]}
    assert {"from", "to", "metric", "limit", "cursor"} <= names
