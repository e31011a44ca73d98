"""Report messages: an SLA report's content and a stored report run."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Availability(msgspec.Struct, kw_only=True):
    """Fleet availability: time ONLINE over observed time, maintenance excluded; null when nothing was observed."""

    percent: float | None
    online_s: float
    observed_s: float
    maintenance_s: float
    devices: int


class SeverityCount(msgspec.Struct, kw_only=True):
    severity: int
    severity_name: str
    opened: int
    closed: int


class AlertStats(msgspec.Struct, kw_only=True):
    """Alerts opened in the period and how fast they were handled (seconds; null when none qualified)."""

    opened: int
    closed: int
    by_severity: list[SeverityCount]
    acknowledged: int
    mtta_s: float | None
    resolved: int
    mttr_s: float | None
    time_to_alert_p50_s: float | None
    time_to_alert_p99_s: float | None


class NotificationStats(msgspec.Struct, kw_only=True):
    """Notification jobs created in the period, by outcome."""

    total: int
    sent: int
    failed: int
    pending: int
    cancelled: int


class AlertingDevice(msgspec.Struct, kw_only=True):
    device_id: str
    name: str | None
    alerts: int
    max_severity: int


class DeviceAvailability(msgspec.Struct, kw_only=True):
    device_id: str
    name: str | None
    online_s: float
    observed_s: float
    maintenance_s: float
    availability_percent: float | None


class SlaReport(msgspec.Struct, kw_only=True):
    """One tenant's SLA report over [period_start, period_end)."""

    tenant_id: str
    period_start: datetime
    period_end: datetime
    generated_at: datetime
    availability: Availability
    alerts: AlertStats
    notifications: NotificationStats
    top_alerting_devices: list[AlertingDevice]
    devices: list[DeviceAvailability]


class ReportRunSummary(msgspec.Struct, kw_only=True):
    """A stored report run as listed; `requested_by` is the user's email, or `daily` for the daily job."""

    run_id: str
    kind: str
    status: str
    period_start: datetime
    period_end: datetime
    requested_by: str | None
    availability_percent: float | None
    created_at: datetime
    finished_at: datetime | None
    error: str | None


class ReportRun(ReportRunSummary, kw_only=True):
    """A stored report run with its report (null unless status is DONE)."""

    report: SlaReport | None


class ReportRunPage(msgspec.Struct, kw_only=True):
    items: list[ReportRunSummary]
    total: int
    limit: int
    offset: int
