"""/customer/reports through the real app: make an SLA report for the fixture period, list and read it, download it
as CSV (formula cells quoted) and JSON, field-named errors, tenant isolation and the audit row."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import make_tenant
from tests.reports.test_sla import AVAILABILITY, MTTA, MTTR, NAME_A, P0, P1, build_fixture
from tests.web.conftest import bearer, token_for

REPORTS = "/customer/reports"
Client = AsyncTestClient[Litestar]


async def _member(engine: AsyncEngine, settings: Settings, tenant_id: str) -> dict[str, str]:
    return bearer(await token_for(engine, settings, tenant_id=tenant_id, roles=["customer"],
                                  email="analyst@example.test"))


async def test_make_list_read_and_download_a_report(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    fx = await build_fixture(engine, settings)
    auth = await _member(engine, settings, fx.tenant.tenant_id)

    r = await client.post(REPORTS, headers=auth, json={"period_start": P0.isoformat(), "period_end": P1.isoformat()})
    assert r.status_code == 201, r.text
    run = r.json()
    report = run["report"]
    assert (run["kind"], run["status"], run["requested_by"]) == ("SLA", "DONE", "analyst@example.test")
    assert run["availability_percent"] == report["availability"]["percent"] == AVAILABILITY
    assert (report["alerts"]["mtta_s"], report["alerts"]["mttr_s"]) == (MTTA, MTTR)
    assert report["notifications"]["sent"] == 2 and report["notifications"]["failed"] == 1

    listed = (await client.get(REPORTS, headers=auth)).json()
    assert listed["total"] == 1 and listed["items"][0]["run_id"] == run["run_id"]
    assert listed["items"][0]["availability_percent"] == AVAILABILITY and "report" not in listed["items"][0]
    assert (await client.get(f"{REPORTS}/{run['run_id']}", headers=auth)).json() == run

    r = await client.get(f"{REPORTS}/{run['run_id']}/csv", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == f'attachment; filename="sla-report-{run["run_id"]}.csv"'
    rows = list(csv.reader(io.StringIO(r.text)))
    assert ["availability", "percent", str(AVAILABILITY)] in rows
    assert ["alerts", "mtta_s", str(MTTA)] in rows and ["alerts", "mttr_s", str(MTTR)] in rows
    names = {row[1] for row in rows if len(row) == 6 and row[0] in fx.devices.values()}
    assert names == {"'" + NAME_A, "b", "'-e"}, "cells starting with = or - are quoted"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row if cell)

    r = await client.get(f"{REPORTS}/{run['run_id']}/json", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert "attachment" in r.headers["content-disposition"] and r.json() == run

    async with system_tx(engine) as conn:
        audit = (await conn.execute(text("SELECT actor, action FROM tenant_audit_log WHERE tenant_id = :t"),
                                    {"t": fx.tenant.tenant_id})).all()
    assert [(a.actor, a.action) for a in audit] == [("analyst@example.test", "POST /customer/reports")]


async def test_default_period_is_the_last_day(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    r = await client.post(REPORTS, headers=await _member(engine, settings, tenant.tenant_id))
    assert r.status_code == 201, r.text
    start, end = (datetime.fromisoformat(r.json()[k]) for k in ("period_start", "period_end"))
    assert end - start == timedelta(days=1) and abs(datetime.now(UTC) - end) < timedelta(minutes=5)


async def test_bad_periods_are_400_naming_the_field(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    auth = await _member(engine, settings, tenant.tenant_id)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"period_start": P1.isoformat(), "period_end": P0.isoformat()}, "period_end"),
        ({"period_start": P0.isoformat(), "period_end": future}, "period_end"),
        ({"period_start": "2026-11-01T00:00:00", "period_end": P1.isoformat()}, "period_start"),
        ({"period_start": (P0 - timedelta(days=400)).isoformat(), "period_end": P1.isoformat()}, "period_start"),
        ({"period_start": "yesterday"}, "period_start"),
        ({"period": "last week"}, "period"),
    ]
    for body, field in cases:
        r = await client.post(REPORTS, headers=auth, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["details"]["field"] == field, (body, r.json())


async def test_another_tenants_report_is_not_found(client: Client, engine: AsyncEngine, settings: Settings) -> None:
    mine, theirs = await make_tenant(engine), await make_tenant(engine)
    r = await client.post(REPORTS, headers=await _member(engine, settings, theirs.tenant_id))
    run_id = r.json()["run_id"]
    auth = await _member(engine, settings, mine.tenant_id)
    for path in (f"{REPORTS}/{run_id}", f"{REPORTS}/{run_id}/csv", f"{REPORTS}/{run_id}/json"):
        assert (await client.get(path, headers=auth)).status_code == 404
    assert (await client.get(REPORTS, headers=auth)).json()["total"] == 0
    r = await client.get(f"{REPORTS}/not-a-uuid", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "run_id"
    operator = bearer(await token_for(engine, settings, tenant_id=None, roles=["operator"]))
    assert (await client.get(REPORTS, headers=operator)).status_code == 403
    assert (await client.get(REPORTS)).status_code == 401
