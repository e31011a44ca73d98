"""Report runs: make an SLA report for a period and store it in `report_runs`, list and read them, the daily job."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pulse.checks import check_aware, parse_uuid
from pulse.db import system_tx, tenant_tx
from pulse.errors import NotFound, ValidationError
from pulse.reports.schemas import ReportRun, ReportRunPage, ReportRunSummary, SlaReport
from pulse.reports.sla import compute_sla_report
from pulse.sql import check_page

log = logging.getLogger("pulse.reports")

KIND = "SLA"
DAILY = "daily"
MAX_PERIOD = timedelta(days=366)
MAX_PAGE = 200
_ERROR_MAX = 1000

_SUMMARY_COLUMNS = ("run_id::text, kind, status, period_start, period_end, requested_by, created_at, finished_at, "
                    "error, CAST(result -> 'availability' ->> 'percent' AS float8) AS availability_percent")


def check_period(start: Any, end: Any, *, now: datetime) -> tuple[datetime, datetime]:
    """A report period: times with an offset, start before end, end not in the future, at most 366 days."""
    start = check_aware(start, "period_start")
    end = check_aware(end, "period_end")
    if end <= start:
        raise ValidationError("must be after period_start", field="period_end")
    if end > now:
        raise ValidationError("must not be in the future", field="period_end")
    if end - start > MAX_PERIOD:
        raise ValidationError("a report covers at most 366 days", field="period_start")
    return start.astimezone(UTC), end.astimezone(UTC)


def _summary(row: Any) -> ReportRunSummary:
    return ReportRunSummary(**{k: v for k, v in row._mapping.items() if k != "result"})


async def _insert(conn: AsyncConnection, tenant_id: str, *, start: datetime, end: datetime, requested_by: str,
                  now: datetime, report: SlaReport | None, error: str | None = None) -> str:
    return str((await conn.execute(text(
        "INSERT INTO report_runs (tenant_id, kind, period_start, period_end, status, requested_by, result, error, "
        "  created_at, finished_at) "
        "VALUES (:t, :k, :s, :e, :st, :by, CAST(:r AS jsonb), :err, :now, :now) RETURNING run_id::text"),
        {"t": tenant_id, "k": KIND, "s": start, "e": end, "st": "FAILED" if report is None else "DONE",
         "by": requested_by, "r": None if report is None else msgspec.json.encode(report).decode(),
         "err": error, "now": now})).scalar_one())


async def create_sla_report(conn: AsyncConnection, tenant_id: str, *, start: datetime, end: datetime,
                            requested_by: str, now: datetime) -> ReportRun:
    """Compute the tenant's SLA report over [start, end) now and store it (status DONE); returns the run."""
    start, end = check_period(start, end, now=now)
    report = await compute_sla_report(conn, tenant_id, start=start, end=end, now=now)
    run_id = await _insert(conn, tenant_id, start=start, end=end, requested_by=requested_by, now=now, report=report)
    return await require_report_run(conn, tenant_id, run_id)


async def list_report_runs(conn: AsyncConnection, tenant_id: str, *, limit: int = 50,
                           offset: int = 0) -> ReportRunPage:
    """The tenant's report runs, newest first, without their content."""
    check_page(limit, offset, max_limit=MAX_PAGE)
    total = (await conn.execute(text("SELECT count(*) FROM report_runs WHERE tenant_id = :t"),
                                {"t": tenant_id})).scalar_one()
    rows = (await conn.execute(text(
        f"SELECT {_SUMMARY_COLUMNS} FROM report_runs WHERE tenant_id = :t "
        f"ORDER BY created_at DESC, run_id LIMIT :limit OFFSET :offset"),
        {"t": tenant_id, "limit": limit, "offset": offset})).all()
    return ReportRunPage(items=[_summary(r) for r in rows], total=int(total), limit=limit, offset=offset)


async def require_report_run(conn: AsyncConnection, tenant_id: str, run_id: str) -> ReportRun:
    """One report run with its report; another tenant's run is not found."""
    row = (await conn.execute(text(
        f"SELECT {_SUMMARY_COLUMNS}, result FROM report_runs WHERE tenant_id = :t AND run_id = CAST(:r AS uuid)"),
        {"t": tenant_id, "r": parse_uuid(run_id, "run_id")})).first()
    if row is None:
        raise NotFound(f"report {run_id} not found", details={"field": "run_id"})
    report = None if row.result is None else msgspec.convert(row.result, SlaReport, strict=False)
    return ReportRun(**msgspec.structs.asdict(_summary(row)), report=report)


def previous_local_day(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """Yesterday in the tenant's time zone, as a UTC [start, end): the daily report's period."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    today = now.astimezone(zone).date()
    start = datetime.combine(today - timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, datetime.combine(today, time(0), tzinfo=zone).astimezone(UTC)


async def run_daily_reports(engine: AsyncEngine, *, now: datetime, tenant_ids: list[str] | None = None) -> tuple[
        int, int]:
    """For every ACTIVE tenant (or `tenant_ids`), the SLA report of its previous local day unless it exists.

    Each tenant in a transaction of its own, as that tenant (row-level security); a tenant whose report fails gets
    a FAILED run with the error and the others go on. Returns (made, failed).
    """
    only = "" if tenant_ids is None else " AND tenant_id = ANY(CAST(:ids AS text[]))"
    async with system_tx(engine) as conn:
        tenants = (await conn.execute(text(
            f"SELECT tenant_id, timezone FROM tenants WHERE status = 'ACTIVE'{only} ORDER BY tenant_id"),
            {"ids": tenant_ids})).all()
    made = failed = 0
    for tenant_id, timezone in tenants:
        start, end = previous_local_day(now, timezone)
        async with tenant_tx(engine, tenant_id) as conn:
            exists = (await conn.execute(text(
                "SELECT 1 FROM report_runs WHERE tenant_id = :t AND kind = :k AND requested_by = :by "
                "AND period_start = :s AND period_end = :e"),
                {"t": tenant_id, "k": KIND, "by": DAILY, "s": start, "e": end})).first()
            if exists:
                continue
            try:
                async with conn.begin_nested():
                    report = await compute_sla_report(conn, tenant_id, start=start, end=end, now=now)
                    await _insert(conn, tenant_id, start=start, end=end, requested_by=DAILY, now=now, report=report)
                made += 1
            except Exception as exc:  # one tenant's failure is recorded on its run; the others still get theirs
                log.exception("daily SLA report failed", extra={"tenant_id": tenant_id})
                await _insert(conn, tenant_id, start=start, end=end, requested_by=DAILY, now=now, report=None,
                              error=f"{type(exc).__name__}: {exc}"[:_ERROR_MAX])
                failed += 1
    return made, failed
