"""The SLA report of one tenant over [start, end): availability, alert handling, notifications, top alerting devices.

Definitions (docs/api-reports.md):

- A device is observed from the later of the period start and its registration, to the earlier of the period end
  and its decommissioning; time in a maintenance window that covers it (its enabled windows, as configured when the
  report is made) is excluded. Its liveness at any moment is the last `device_state_history` transition before it
  (UNKNOWN before the first). Availability = time ONLINE / observed time; the fleet's sums both over devices.
- Alerts are counted as opened (opened_at in the period) and closed (closed_at in the period) by severity.
  MTTA is the mean of acknowledged_at - opened_at over alerts opened in the period and acknowledged before its end;
  MTTR the mean of closed_at - opened_at over those closed before its end. Time to alert is detected_at (when
  Pulse committed the alert) - triggered_at (the time of the message that tripped it), p50 and p99 by linear
  interpolation (PostgreSQL percentile_cont), negative values (device clocks ahead) counted as 0.
- Notifications are the jobs created in the period: sent (DELIVERED), failed (DEAD), pending, cancelled.

Every query names the tenant, so it is correct in a tenant transaction (row-level security) and a platform one.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.maintenance import MaintenanceDevice, covers, enabled_windows
from pulse.notify.schemas import SEVERITY_NAMES
from pulse.reports.schemas import (
    AlertingDevice,
    AlertStats,
    Availability,
    DeviceAvailability,
    NotificationStats,
    SeverityCount,
    SlaReport,
)
from pulse.reports.spans import Span, clip, subtract, total_seconds, union, window_occurrences

TOP_DEVICES = 10

_DEVICES = text(
    "SELECT d.device_id, d.name, d.site_id, d.device_type, d.created_at, "
    "  CASE WHEN d.status = 'DECOMMISSIONED' THEN coalesce(d.decommissioned_at, d.updated_at) END AS gone_at, "
    "  coalesce(array(SELECT m.group_id::text FROM device_group_members m "
    "    WHERE m.tenant_id = d.tenant_id AND m.device_id = d.device_id), '{}') AS groups "
    "FROM devices d WHERE d.tenant_id = :t AND d.created_at < :end "
    "  AND (d.status <> 'DECOMMISSIONED' OR coalesce(d.decommissioned_at, d.updated_at) > :start) "
    "ORDER BY d.device_id")

# Each device's status when the period starts (its last transition before it), then its transitions inside it.
_HISTORY = text(
    "(SELECT DISTINCT ON (device_id) device_id, status, CAST(:start AS timestamptz) AS changed_at, 0 AS k, history_id "
    " FROM device_state_history WHERE tenant_id = :t AND changed_at < :start "
    " ORDER BY device_id, changed_at DESC, history_id DESC) "
    "UNION ALL "
    "(SELECT device_id, status, changed_at, 1 AS k, history_id FROM device_state_history "
    " WHERE tenant_id = :t AND changed_at >= :start AND changed_at < :end) "
    "ORDER BY device_id, changed_at, k, history_id")

_ALERTS_BY_SEVERITY = text(
    "SELECT severity, count(*) FILTER (WHERE opened_at >= :start AND opened_at < :end) AS opened, "
    "  count(*) FILTER (WHERE closed_at >= :start AND closed_at < :end) AS closed "
    "FROM alerts WHERE tenant_id = :t AND ((opened_at >= :start AND opened_at < :end) "
    "  OR (closed_at >= :start AND closed_at < :end)) GROUP BY severity")

_ALERT_TIMES = text(
    "SELECT count(*) FILTER (WHERE acknowledged_at < :end) AS acknowledged, "
    "  avg(extract(epoch FROM acknowledged_at - opened_at)) FILTER (WHERE acknowledged_at < :end) AS mtta, "
    "  count(*) FILTER (WHERE closed_at < :end) AS resolved, "
    "  avg(extract(epoch FROM closed_at - opened_at)) FILTER (WHERE closed_at < :end) AS mttr, "
    "  percentile_cont(0.5) WITHIN GROUP (ORDER BY greatest(extract(epoch FROM detected_at - triggered_at), 0)) "
    "    FILTER (WHERE triggered_at IS NOT NULL) AS tta_p50, "
    "  percentile_cont(0.99) WITHIN GROUP (ORDER BY greatest(extract(epoch FROM detected_at - triggered_at), 0)) "
    "    FILTER (WHERE triggered_at IS NOT NULL) AS tta_p99 "
    "FROM alerts WHERE tenant_id = :t AND opened_at >= :start AND opened_at < :end")

_TOP_DEVICES = text(
    "SELECT a.device_id, max(d.name) AS name, count(*) AS alerts, max(a.severity) AS max_severity "
    "FROM alerts a LEFT JOIN devices d ON d.tenant_id = a.tenant_id AND d.device_id = a.device_id "
    "WHERE a.tenant_id = :t AND a.opened_at >= :start AND a.opened_at < :end AND a.device_id IS NOT NULL "
    "GROUP BY a.device_id ORDER BY count(*) DESC, max(a.severity) DESC, a.device_id LIMIT :n")

_NOTIFICATIONS = text(
    "SELECT count(*) AS total, count(*) FILTER (WHERE status = 'DELIVERED') AS sent, "
    "  count(*) FILTER (WHERE status = 'DEAD') AS failed, "
    "  count(*) FILTER (WHERE status IN ('PENDING', 'IN_PROGRESS')) AS pending, "
    "  count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled "
    "FROM notification_jobs WHERE tenant_id = :t AND created_at >= :start AND created_at < :end")


def _percent(part: float, whole: float) -> float | None:
    return None if whole <= 0 else round(100.0 * part / whole, 6)


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def online_spans(transitions: list[tuple[str, datetime]], end: datetime) -> list[Span]:
    """The spans a device was ONLINE, from its (status, since) transitions in time order, up to `end`."""
    spans: list[Span] = []
    for i, (status, since) in enumerate(transitions):
        until = transitions[i + 1][1] if i + 1 < len(transitions) else end
        if status == "ONLINE" and since < until:
            spans.append((since, until))
    return union(spans)


async def _availability(conn: AsyncConnection, tenant_id: str, start: datetime,
                        end: datetime) -> tuple[Availability, list[DeviceAvailability]]:
    params = {"t": tenant_id, "start": start, "end": end}
    devices = (await conn.execute(_DEVICES, params)).all()
    history: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for r in (await conn.execute(_HISTORY, params)).all():
        history[r.device_id].append((r.status, r.changed_at))
    windows = [(w, occ) for w in await enabled_windows(conn, tenant_id, start)
               if (occ := window_occurrences(w, start, end))]
    rows: list[DeviceAvailability] = []
    online_total = observed_total = maintenance_total = 0.0
    for d in devices:
        since, until = max(start, d.created_at), min(end, d.gone_at or end)
        observed: list[Span] = [(since, until)] if since < until else []
        target = MaintenanceDevice(d.device_id, d.site_id, d.device_type, frozenset(d.groups or ()))
        holes = union(span for w, occ in windows if covers(w, target) for span in occ)
        counted = subtract(observed, holes)
        online = subtract(clip(online_spans(history.get(d.device_id, []), end), since, until), holes)
        online_s, observed_s = total_seconds(online), total_seconds(counted)
        maintenance_s = total_seconds(observed) - observed_s
        online_total, observed_total = online_total + online_s, observed_total + observed_s
        maintenance_total += maintenance_s
        rows.append(DeviceAvailability(device_id=d.device_id, name=d.name, online_s=online_s, observed_s=observed_s,
                                       maintenance_s=maintenance_s,
                                       availability_percent=_percent(online_s, observed_s)))
    return Availability(percent=_percent(online_total, observed_total), online_s=online_total,
                        observed_s=observed_total, maintenance_s=maintenance_total, devices=len(rows)), rows


async def _alerts(conn: AsyncConnection, tenant_id: str, start: datetime, end: datetime) -> AlertStats:
    params = {"t": tenant_id, "start": start, "end": end}
    counts = {r.severity: r for r in (await conn.execute(_ALERTS_BY_SEVERITY, params)).all()}
    by_severity = [SeverityCount(severity=s, severity_name=SEVERITY_NAMES[s],
                                 opened=int(counts[s].opened) if s in counts else 0,
                                 closed=int(counts[s].closed) if s in counts else 0) for s in sorted(SEVERITY_NAMES)]
    t = (await conn.execute(_ALERT_TIMES, params)).one()
    return AlertStats(opened=sum(c.opened for c in by_severity), closed=sum(c.closed for c in by_severity),
                      by_severity=by_severity, acknowledged=int(t.acknowledged), mtta_s=_seconds(t.mtta),
                      resolved=int(t.resolved), mttr_s=_seconds(t.mttr), time_to_alert_p50_s=_seconds(t.tta_p50),
                      time_to_alert_p99_s=_seconds(t.tta_p99))


async def compute_sla_report(conn: AsyncConnection, tenant_id: str, *, start: datetime, end: datetime,
                             now: datetime) -> SlaReport:
    """The tenant's SLA report over [start, end) (times in UTC); the caller checked the period."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    params = {"t": tenant_id, "start": start, "end": end}
    availability, devices = await _availability(conn, tenant_id, start, end)
    n = (await conn.execute(_NOTIFICATIONS, params)).one()
    top = (await conn.execute(_TOP_DEVICES, {**params, "n": TOP_DEVICES})).all()
    return SlaReport(
        tenant_id=tenant_id, period_start=start, period_end=end, generated_at=now, availability=availability,
        alerts=await _alerts(conn, tenant_id, start, end),
        notifications=NotificationStats(total=int(n.total), sent=int(n.sent), failed=int(n.failed),
                                        pending=int(n.pending), cancelled=int(n.cancelled)),
        top_alerting_devices=[AlertingDevice(device_id=r.device_id, name=r.name, alerts=int(r.alerts),
                                             max_severity=int(r.max_severity)) for r in top],
        devices=devices)
