"""What the operator NOC reads: platform metric history from `system_metrics`, and the tenant health matrix."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import ValidationError
from pulse.fleet.operator.common import check_operator_page, member
from pulse.fleet.service import check_tenant_id
from pulse.fleet.system_metrics import METRICS

MAX_RANGE = timedelta(days=31)
MAX_POINTS = 5000
DEFAULT_POINTS = 300
MIN_STEP_S = 5
ACTIVITY_HOURS = 24
_LABEL_RE = re.compile(r"^([a-z_]{1,32})=([A-Za-z0-9._:-]{1,128})$")


class MetricInfo(msgspec.Struct, kw_only=True):
    """A metric the platform records, its meaning, and its newest sample (null before the first)."""

    metric: str
    description: str
    latest_at: datetime | None
    latest_value: float | None


class MetricCatalogue(msgspec.Struct, kw_only=True):
    items: list[MetricInfo]


class MetricPoint(msgspec.Struct, kw_only=True):
    """One bucket: `time` is its start; `value` the mean of its samples, `max` the largest."""

    time: datetime
    value: float
    max: float


class MetricSeries(msgspec.Struct, kw_only=True):
    labels: dict[str, str]
    points: list[MetricPoint]


class MetricHistory(msgspec.Struct, kw_only=True):
    metric: str
    since: datetime
    until: datetime
    step_s: int
    series: list[MetricSeries]


class ActivityPoint(msgspec.Struct, kw_only=True):
    hour: datetime
    messages: int


class TenantSubscriptionState(msgspec.Struct, kw_only=True):
    subscription_id: str
    kind: str
    status: str
    expires_at: datetime | None


class TenantHealth(msgspec.Struct, kw_only=True):
    """One row of the matrix; `online_percent` is null without devices, `subscription_status` is the MAIN's (else
    the newest subscription's) status, `activity` the messages of each of the last 24 whole hours (oldest first)."""

    tenant_id: str
    name: str
    status: str
    devices: int
    devices_online: int
    online_percent: float | None
    open_alerts: int
    max_open_severity: int | None
    subscription_status: str | None
    subscriptions: list[TenantSubscriptionState]
    activity: list[ActivityPoint]


class TenantHealthPage(msgspec.Struct, kw_only=True):
    items: list[TenantHealth]
    total: int
    limit: int
    offset: int


async def metric_catalogue(conn: AsyncConnection) -> MetricCatalogue:
    """Every metric with its description and newest sample."""
    rows = {r.metric: r for r in (await conn.execute(text(
        "SELECT m AS metric, l.time, l.value FROM unnest(CAST(:names AS text[])) AS m "
        "LEFT JOIN LATERAL (SELECT time, value FROM system_metrics WHERE metric = m ORDER BY time DESC LIMIT 1) l "
        "ON true"), {"names": list(METRICS)})).all()}
    return MetricCatalogue(items=[MetricInfo(metric=name, description=doc, latest_at=rows[name].time,
                                             latest_value=rows[name].value) for name, doc in METRICS.items()])


def _label(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    match = _LABEL_RE.match(value)
    if match is None:
        raise ValidationError("must be name=value, e.g. process_type=ingest or tenant_id=acme", field="label")
    return match.group(1), match.group(2)


async def metric_history(conn: AsyncConnection, metric: str, *, now: datetime, since: datetime | None = None,
                         until: datetime | None = None, step_s: int | None = None,
                         label: str | None = None) -> MetricHistory:
    """A metric's samples in [since, until) (default: the last hour), averaged per `step_s` bucket aligned to the
    epoch (default: about 300 buckets, at least 5 s), one series per label set; `label` keeps one label value."""
    if metric not in METRICS:
        raise ValidationError(f"unknown metric {metric!r}; GET /operator/system/metrics lists them", field="metric")
    until = until or now
    since = since or until - timedelta(hours=1)
    if until <= since:
        raise ValidationError("must be after from", field="to")
    if until - since > MAX_RANGE:
        raise ValidationError("a history covers at most 31 days", field="from")
    span_s = (until - since).total_seconds()
    if step_s is None:
        step_s = max(MIN_STEP_S, math.ceil(span_s / DEFAULT_POINTS))
    if not MIN_STEP_S <= step_s <= 86400:
        raise ValidationError(f"must be {MIN_STEP_S}-86400 seconds", field="step_s")
    if span_s / step_s > MAX_POINTS:
        raise ValidationError(f"gives more than {MAX_POINTS} points; use a larger step", field="step_s")
    wanted = _label(label)
    rows = (await conn.execute(text(
        "SELECT labels, date_bin(make_interval(secs => :step), time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket, "
        "  avg(value) AS value, max(value) AS max FROM system_metrics "
        "WHERE metric = :m AND time >= :since AND time < :until "
        "  AND (CAST(:lk AS text) IS NULL OR labels ->> CAST(:lk AS text) = :lv) "
        "GROUP BY labels, bucket ORDER BY labels::text, bucket"),
        {"m": metric, "since": since, "until": until, "step": step_s, "lk": wanted and wanted[0],
         "lv": wanted and wanted[1]})).all()
    series: dict[str, MetricSeries] = {}
    for r in rows:
        key = msgspec.json.encode(r.labels).decode()
        target = series.setdefault(key, MetricSeries(labels={k: str(v) for k, v in r.labels.items()}, points=[]))
        target.points.append(MetricPoint(time=r.bucket, value=round(float(r.value), 6), max=float(r.max)))
    return MetricHistory(metric=metric, since=since, until=until, step_s=step_s, series=list(series.values()))


_MATRIX = (
    "SELECT t.tenant_id, t.name, t.status, "
    "  (SELECT count(*) FROM devices d WHERE d.tenant_id = t.tenant_id AND d.status <> 'DECOMMISSIONED') AS devices, "
    "  (SELECT count(*) FROM device_state s JOIN devices d USING (tenant_id, device_id) WHERE s.tenant_id = "
    "     t.tenant_id AND s.status = 'ONLINE' AND d.status <> 'DECOMMISSIONED') AS devices_online, "
    "  (SELECT count(*) FROM alerts a WHERE a.tenant_id = t.tenant_id AND a.status IN ('OPEN', 'ACKNOWLEDGED')) "
    "     AS open_alerts, "
    "  (SELECT max(a.severity) FROM alerts a WHERE a.tenant_id = t.tenant_id "
    "     AND a.status IN ('OPEN', 'ACKNOWLEDGED')) AS max_open_severity "
    "FROM tenants t {where} ORDER BY t.tenant_id LIMIT :limit OFFSET :offset")


async def _activity(conn: AsyncConnection, tenant_ids: list[str], now: datetime) -> dict[str, list[ActivityPoint]]:
    this_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [this_hour - timedelta(hours=ACTIVITY_HOURS - i) for i in range(ACTIVITY_HOURS)]
    counts: dict[tuple[str, datetime], float] = {(r.tenant_id, r.time): r.value for r in (await conn.execute(text(
        "SELECT labels ->> 'tenant_id' AS tenant_id, time, value FROM system_metrics "
        "WHERE metric = 'tenant.messages' AND time >= :since AND time < :until "
        "  AND labels ->> 'tenant_id' = ANY(CAST(:ids AS text[]))"),
        {"since": hours[0], "until": this_hour, "ids": tenant_ids})).all()}
    return {t: [ActivityPoint(hour=h, messages=int(counts.get((t, h), 0))) for h in hours] for t in tenant_ids}


async def tenant_health_matrix(conn: AsyncConnection, *, now: datetime, status: str | None = None,
                               tenant_id: str | None = None, limit: int = 50, offset: int = 0) -> TenantHealthPage:
    """Per tenant (by id): devices, online share, open alerts, subscriptions and the last 24 hours' messages;
    `status` and `tenant_id` narrow the tenants."""
    check_operator_page(limit, offset)
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status is not None:
        conditions.append("t.status = :status")
        params["status"] = member(status, ("ACTIVE", "SUSPENDED", "DELETED"), "status")
    if tenant_id is not None:
        conditions.append("t.tenant_id = :tenant")
        params["tenant"] = check_tenant_id(tenant_id)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    total = (await conn.execute(text(f"SELECT count(*) FROM tenants t {where}"), params)).scalar_one()
    rows = (await conn.execute(text(_MATRIX.format(where=where)), params)).all()
    ids = [r.tenant_id for r in rows]
    subs: dict[str, list[TenantSubscriptionState]] = {t: [] for t in ids}
    main: dict[str, str] = {}
    for s in (await conn.execute(text(
            "SELECT tenant_id, subscription_id::text, kind, status, term_end_at FROM subscriptions "
            "WHERE tenant_id = ANY(CAST(:ids AS text[])) ORDER BY tenant_id, (kind = 'MAIN') DESC, "
            "(status = 'EXPIRED'), created_at DESC"), {"ids": ids})).all():
        main.setdefault(s.tenant_id, s.status)
        if s.status != "EXPIRED":
            subs[s.tenant_id].append(TenantSubscriptionState(subscription_id=s.subscription_id, kind=s.kind,
                                                             status=s.status, expires_at=s.term_end_at))
    activity = await _activity(conn, ids, now)
    items: list[TenantHealth] = []
    for r in rows:
        m: dict[str, Any] = dict(r._mapping)
        online = None if r.devices == 0 else round(100.0 * r.devices_online / r.devices, 2)
        items.append(TenantHealth(**m, online_percent=online, subscription_status=main.get(r.tenant_id),
                                  subscriptions=subs[r.tenant_id], activity=activity[r.tenant_id]))
    return TenantHealthPage(items=items, total=int(total), limit=limit, offset=offset)
